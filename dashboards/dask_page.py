"""A "sweep" page in the Dask dashboard: each sweep's progress, beside the cluster's own pages.

Dask builds its scheduler's HTTP server from the modules listed in the config key
`distributed.scheduler.http.routes`; each module has `routes`, a list of (path, tornado handler, kwargs). This module
is one of them. The driver announces a sweep with `announce(client, name, storage)` (scheduler metadata), and
http://SCHEDULER:8787/sweep then shows its trial counts, best trials and running trials, refreshed every few
seconds. The page reads the Optuna storage itself, so it shows the same numbers as `sweep status`.

    with sweep_page():                       # before the scheduler starts (LocalCluster runs it in-process)
        cluster = LocalCluster(...)
    client = Client(cluster); announce(client, "quickstart", "sqlite:///sweeps.db")
    print(page_url(client))                  # http://127.0.0.1:8787/sweep

An external scheduler gets the page by listing this module in its own config (see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import html

import dask
import optuna
from distributed.http.utils import RequestHandler

MODULE = __name__
PATH = "sweep"
METADATA_KEY = ("sparsesweep", "sweeps")
REFRESH_S = 5
SHOWN = 10


def sweep_page():
    """A dask.config context that adds this page to the scheduler's HTTP routes."""
    routes = list(dask.config.get("distributed.scheduler.http.routes"))
    if MODULE in routes:
        return contextlib.nullcontext()
    return dask.config.set({"distributed.scheduler.http.routes": routes + [MODULE]})


def announce(client, name: str, storage: str) -> None:
    """Tell the scheduler's sweep page which study to show (idempotent)."""
    client.set_metadata([*METADATA_KEY, name], storage)


def page_url(client) -> str | None:
    link = client.dashboard_link
    if not link:
        return None
    return link.rsplit("/", 1)[0] + "/" + PATH


def _fmt(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{html.escape(str(k))}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.5g}"
    return html.escape(str(value))


def _sweep_section(name: str, storage: str) -> str:
    """HTML for one sweep (runs in a thread: Optuna's storage calls block)."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
    except Exception as exc:  # noqa: BLE001 - the page must render even if one storage is unreachable
        return f"<h2>{html.escape(name)}</h2><p>cannot read {html.escape(storage)}: {html.escape(str(exc))}</p>"
    states = {s: 0 for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    target = study.user_attrs.get("sweep", {}).get("n_trials") if isinstance(study.user_attrs.get("sweep"), dict) \
        else None
    directions = [d.name.lower() for d in study.directions]
    metrics = study.metric_names or [f"value {i}" for i in range(len(directions))]
    finished = states["COMPLETE"] + states["PRUNED"] + states["FAIL"]
    progress = f"{finished} of {target} finished" if target else f"{finished} finished"
    counts = ", ".join(f"{n} {s.lower()}" for s, n in states.items())
    parts = [f"<h2 id='sweep-{html.escape(name)}'>{html.escape(name)}</h2>",
             f"<p><b>{progress}</b> ({counts}) &middot; storage <code>{html.escape(storage)}</code></p>"]
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.values]
    if complete:
        sign = -1 if directions[0] == "maximize" else 1
        best = sorted(complete, key=lambda t: sign * t.values[0])[:SHOWN]
        header = "".join(f"<th>{html.escape(m)} ({d[:3]})</th>" for m, d in zip(metrics, directions))
        rows = "".join(
            f"<tr><td>#{t.number}</td>{''.join(f'<td>{_fmt(v)}</td>' for v in t.values)}"
            f"<td>{_fmt(t.params)}</td></tr>" for t in best
        )
        parts.append(f"<h3>Best trials</h3><table><tr><th>trial</th>{header}<th>params</th></tr>{rows}</table>")
    running = [t for t in trials if t.state.name == "RUNNING"]
    if running:
        rows = "".join(
            f"<tr><td>#{t.number}</td><td>{_fmt(t.user_attrs.get('worker', ''))}</td>"
            f"<td>{_fmt(t.datetime_start.strftime('%H:%M:%S') if t.datetime_start else '')}</td>"
            f"<td>{_fmt(t.params)}</td></tr>" for t in running
        )
        parts.append(f"<h3>Running</h3><table><tr><th>trial</th><th>worker</th><th>started</th><th>params</th></tr>"
                     f"{rows}</table>")
    return "\n".join(parts)


_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;"
          "font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left}th{background:#f4f4f4}")


class SweepPage(RequestHandler):
    async def get(self) -> None:
        sweeps = self.server.get_metadata(list(METADATA_KEY), default={}) or {}
        sections = await asyncio.gather(*(asyncio.to_thread(_sweep_section, n, s) for n, s in sorted(sweeps.items())))
        body = "\n".join(sections) or "<p>No sweep announced to this scheduler yet (`sweep run` announces it).</p>"
        now = dt.datetime.now().strftime("%H:%M:%S")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='{REFRESH_S}'>"
            f"<title>Sweeps</title><style>{_STYLE}</style></head><body><h1>Sweeps on this cluster</h1>"
            f"<p><a href='status'>&larr; Dask dashboard</a> &middot; refreshed {now}, every {REFRESH_S} s</p>"
            f"{body}</body></html>"
        )


routes = [(PATH, SweepPage, {})]
