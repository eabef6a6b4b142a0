"""`sweep report`: one folder with a self-contained HTML page (bokeh JS inline) and PNG copies of its figures."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from markupsafe import Markup
from bokeh.embed import components
from bokeh.embed.bundle import bundle_for_objs_and_resources
from bokeh.resources import INLINE

from . import figures, interactive, series
from .importance import Importances, param_importances
from .study import DEFAULT_STORAGE, SweepData, load_sweep
from .table import best_table

INDEX = "index.html"
# True in a browser once every bokeh figure of the page has rendered (for screenshots and the tests).
PAGE_READY_JS = "Array.from(document.querySelectorAll('[data-root-id]')).every(d => d.childElementCount > 0)"
DEFAULT_TOP = 20
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("dashboards", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


@dataclass
class Report:
    folder: Path
    index: Path
    pngs: list[Path]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Figure:
    id: str
    title: str
    model: object  # a bokeh model
    notes: list[str]
    div: str = ""


def _page(figure_id: str, title: str, draw, notes: list[str], missing: str | None = None) -> _Figure:
    """A figure section; with `missing` (what no trial reported), a message instead of the figure."""
    if missing is not None:
        return _Figure(figure_id, title, None, [f"No completed trial reported {missing}: nothing to draw."] + notes)
    return _Figure(figure_id, title, draw(), notes)


def _figures(data: SweepData, importances: list[Importances], folder: Path) -> tuple[list[_Figure], list[Path]]:
    """The page's figures (bokeh) and their PNG copies (matplotlib), in series.FIGURES order."""
    time = series.time_tradeoff(data)
    memory = series.memory_tradeoff(data)
    ours, thesis = series.accuracy_by_sparsity(data)
    curves = series.learning_curves(data)
    drawable = [i for i in importances if not i.message]
    thesis_note = (
        "Diamonds: the thesis's table 4 for the same data set (fully trained networks; this sweep may train "
        "for fewer epochs)." if thesis else
        f"The thesis's table 4 has no results for the data set {data.dataset!r} (it has MNIST, Fashion-MNIST "
        "and HIGGS), so only this sweep's points are drawn."
    )
    time_title, memory_title = "Pareto front: accuracy vs time per iteration", "Pareto front: accuracy vs memory"
    pages = [
        _page("pareto_time", "Accuracy against training time per iteration",
              lambda: interactive.tradeoff_figure(time, time_title),
              ["Each dot is a completed trial, coloured by its sparsity; the red staircase is the Pareto front "
               "(no other trial is both faster and more accurate)."],
              None if time.points else "its accuracy and time per iteration"),
        _page("pareto_memory", "Accuracy against memory", lambda: interactive.tradeoff_figure(memory, memory_title),
              [memory.note] if memory.note else [], None if memory.points else "its accuracy and memory"),
        _page("accuracy_sparsity", "Accuracy against sparsity, beside the thesis",
              lambda: interactive.accuracy_sparsity_figure(ours, thesis, data.dataset), [thesis_note],
              None if ours else "its accuracy and sparsity"),
        _page("importance", "Hyperparameter importances", lambda: interactive.importance_figure(drawable),
              [f"{i.objective}: {i.message}" for i in importances if i.message]
              or ["fANOVA importances (computed in-process), normalised to sum to 1."],
              None if drawable else "enough to rank the hyperparameters"),
        _page("learning_curves", "Learning curves of the best trials",
              lambda: interactive.learning_curves_figure(curves),
              ["Test accuracy after each epoch; click a legend entry to hide its curve."],
              None if curves else "a learning curve (test_accuracy per epoch)"),
    ]
    png = {name: folder / f"{name}.png" for name in series.FIGURES}
    pngs = [
        figures.tradeoff_png(time, time_title, png["pareto_time"]),
        figures.tradeoff_png(memory, memory_title, png["pareto_memory"]),
        figures.accuracy_sparsity_png(ours, thesis, data.dataset, png["accuracy_sparsity"]),
        figures.importance_png(importances, png["importance"]),
        figures.learning_curves_png(curves, png["learning_curves"]),
    ]
    return pages, pngs


def render(data: SweepData, folder: Path, top: int = DEFAULT_TOP) -> Report:
    """Write the page and its PNGs into the existing, empty `folder`."""
    counts = data.state_counts()
    has_results = bool([t for t in data.completed if t.values])
    pages: list[_Figure] = []
    pngs: list[Path] = []
    script, resources = "", ""
    if has_results:
        importances = param_importances(data, data.study) if data.study is not None else []
        pages, pngs = _figures(data, importances, folder)
        models = {f.id: f.model for f in pages if f.model is not None}
        if models:
            script, divs = components(models)
            # Only the bokeh bundles these figures use (1.3 MB instead of 4 MB of every extension), inline: the
            # page must open from disk with no network.
            resources = bundle_for_objs_and_resources(list(models.values()), INLINE).scripts()
            for page in pages:
                page.div = Markup(divs.get(page.id, ""))  # bokeh's own HTML, not to be escaped
    html = _TEMPLATES.get_template("report.html").render(
        data=data,
        counts=counts,
        has_results=has_results,
        figures=pages,
        table=best_table(data, top),
        failures=data.failure_reasons(),
        spec_text=json.dumps(data.spec, indent=2, sort_keys=True, default=str) if data.spec else "",
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        bokeh_resources=Markup(resources),
        bokeh_script=Markup(script),
    )
    index = folder / INDEX
    index.write_text(html, encoding="utf-8")
    return Report(folder, index, pngs, counts)


def _check_replaceable(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / INDEX).exists())):
        raise FileExistsError(
            f"{out} exists and is not a sweep report (no {INDEX} in it); choose another output folder with --out"
        )


def build_report(name: str, storage: str = DEFAULT_STORAGE, out: str | os.PathLike | None = None,
                 top: int = DEFAULT_TOP) -> Report:
    """Read sweep `name` from `storage` and write its report to `out` (default reports/NAME).

    The folder is written beside its destination and swapped in at the end, so an error never leaves a half-written
    report, and an older report stays in place until the new one is complete.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    data = load_sweep(name, storage)
    out = Path(out) if out is not None else Path("reports") / name
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        report = render(data, staging, top)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Report(out, out / INDEX, [out / p.name for p in report.pngs], report.counts)
