"""`sweep reproduce table4`: the thesis's accuracies (Table 4) beside ours, with its settings and with ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import thesis
from ..data import DATASETS, DataError, resolve_data_dir
from ..train_config import ConfigError
from . import common

HIGGS_SAMPLES = ("higgs-sas-11k", "higgs-h2o-5k")
HIGGS_CHOICES = ("auto", "full", "samples", "skip")
SETTINGS = {"thesis": common.THESIS_SETTINGS, "ours": common.OUR_SETTINGS}


def higgs_datasets(choice: str, data_dir: str | None) -> list[str]:
    """Which HIGGS data to run: the thesis's 600k rows when present (or asked for), else the labelled samples."""
    if choice == "skip":
        return []
    if choice == "samples":
        return list(HIGGS_SAMPLES)
    if choice == "full":
        return ["higgs"]
    full = resolve_data_dir(data_dir) / DATASETS["higgs"].files["csv"].relpath
    return ["higgs"] if full.exists() else list(HIGGS_SAMPLES)


def plan(datasets: list[str], higgs: str, data_dir: str | None) -> list[dict[str, Any]]:
    """One entry per (data, row) of Table 4."""
    rows = []
    for name in datasets:
        data_names = higgs_datasets(higgs, data_dir) if name == "higgs" else [name]
        for data_name in data_names:
            for label, value in thesis.TABLE4[name].items():
                rows.append({"table_dataset": name, "data": data_name, "row": label,
                             "sparsity": thesis.SPARSITY_OF_ROW[label], "thesis_accuracy": value / 100})
    return rows


def trial_config(row: dict[str, Any], settings_name: str, epochs: int, seed: int, device: str,
                 hidden: list[int] | None = None) -> dict[str, Any]:
    config = dict(SETTINGS[settings_name], dataset=row["data"], hidden=list(hidden or thesis.HIDDEN),
                  sparsity=row["sparsity"],
                  epochs=epochs, seed=seed, device=device)
    if row["sparsity"] is None and settings_name == "ours" and common.OUR_DENSE_LR is not None:
        config["lr"] = common.OUR_DENSE_LR
    return config


def run_table4(*, data_dir: str | None = None, device: str = "auto", epochs: int = common.EPOCHS, quick: bool = False,
               out_dir: str | Path = "results", datasets: list[str] | None = None, higgs: str = "auto",
               seed: int = 0, settings: list[str] | None = None, jobs: int = 1, hidden: list[int] | None = None,
               progress: bool = True) -> dict[str, Any]:
    datasets = datasets or list(thesis.TABLE4)
    settings = settings or list(SETTINGS)
    hidden = list(hidden or thesis.HIDDEN)
    mixed = thesis.SPARSITY_OF_ROW["95-99-99-90%"]
    if "higgs" in datasets and higgs != "skip" and len(hidden) + 1 != len(mixed):
        raise ConfigError(f"the HIGGS row 95-99-99-90% sets {len(mixed)} weight layers, so it needs "
                          f"{len(mixed) - 1} hidden widths, not {len(hidden)} ({hidden}); give {len(mixed) - 1} widths to "
                          f"--hidden, or leave HIGGS out (--datasets mnist fashion-mnist, or --higgs skip)")
    torch_device = common.pick_device(device)
    clock = common.Stopwatch()
    rows = plan(datasets, higgs, data_dir)
    payload: dict[str, Any] = {
        "table": "4",
        **common.run_header(clock, quick, epochs=epochs, seed=seed, jobs=jobs),
        "accuracy": "test accuracy after the last epoch (final) and the best over the epochs (best), fractions",
        "settings": {name: SETTINGS[name] for name in settings},
        "our_dense_lr": common.OUR_DENSE_LR,
        "hidden": hidden,
        "environment": common.environment(torch_device),
        "data": {},
        "rows": rows,
    }
    # Load every dataset once here: its description goes into the results, and a missing one is reported.
    for name in dict.fromkeys(row["data"] for row in rows):
        try:
            payload["data"][name] = common.load(name, data_dir, torch.device("cpu"), quick).describe()
        except DataError as exc:
            payload["data"][name] = {"error": str(exc)}
    tasks = []
    for index, row in enumerate(rows):
        info = payload["data"][row["data"]]
        row["comparable_with_thesis"] = bool(info.get("comparable_with_thesis"))
        for name in settings:
            if "error" in info:
                row[name] = {"status": "no data", "reason": info["error"]}
                continue
            tasks.append({"row": index, "settings": name, "data": row["data"], "data_dir": data_dir, "quick": quick,
                          "label": f"table4 {row['data']} {row['row']} {name}",
                          "config": trial_config(row, name, epochs, seed, str(torch_device), hidden)})
    out_dir = Path(out_dir)

    def record(i: int, metrics: dict[str, Any]) -> None:
        task = tasks[i]
        rows[task["row"]][task["settings"]] = {"config": task["config"], **metrics}
        payload["wall_s"] = round(clock.seconds, 1)
        common.save(out_dir, "table4", payload, markdown(payload))  # partial results survive an interruption

    bar = tqdm(total=len(tasks), desc="table4", unit="run", disable=not progress)
    common.run_trials(tasks, jobs=jobs, on_result=record, bar=bar)
    bar.close()
    payload["complete"] = True
    payload["wall_s"] = round(clock.seconds, 1)
    common.save(out_dir, "table4", payload, markdown(payload))
    return payload


def _cell(result: dict[str, Any] | None) -> str:
    if not result:
        return "-"
    if result.get("status") in ("no data", "error"):
        return result["status"]
    text = f"{common.pct(result['final_test_accuracy'])} ({common.pct(result['best_test_accuracy'])})"
    return text if result["status"] == "ok" else f"{text} {result['status']}"


def _delta(row: dict[str, Any], result: dict[str, Any] | None) -> str:
    if not result or "final_test_accuracy" not in result:
        return "-"
    if not row.get("comparable_with_thesis"):
        return "n/a"
    return f"{(result['final_test_accuracy'] - row['thesis_accuracy']) * 100:+.2f}"


def markdown(payload: dict[str, Any]) -> str:
    settings = list(payload["settings"])
    lines = [
        "# Thesis Table 4, reproduced" + (" (QUICK: data subsets, not a comparison)" if payload["quick"] else ""),
        "",
        f"Command: `{payload['command']}`  ",
        f"Started {payload['started']}, wall time {payload.get('wall_s', 0):.0f} s"
        + ("" if payload["complete"] else " (INCOMPLETE: still running or interrupted)") + ".  ",
        f"Device: {payload['environment']['device']}, torch {payload['environment']['torch']}.  ",
        f"Epoch budget: **{payload['epochs']} epochs** for every run (both settings); network "
        f"{'-'.join(str(h) for h in payload['hidden'])} hidden, seed {payload['seed']}.  ",
        "Cells: test accuracy after the last epoch (best epoch in brackets); delta = final minus the thesis, in points.",
        "",
    ]
    header = "| Dataset | Sparsity | Data | Thesis |"
    rule = "|---|---|---|---|"
    for name in settings:
        header += f" Ours, {name} settings | delta |"
        rule += "---|---|"
    lines += [header, rule]
    for row in payload["rows"]:
        comparable = row.get("comparable_with_thesis")
        thesis_cell = common.pct(row["thesis_accuracy"]) if comparable else (
            f"({common.pct(row['thesis_accuracy'])} on other data)")
        if comparable:
            data_cell = row["data"]
        elif row["data"] in DATASETS and not DATASETS[row["data"]].comparable_with_thesis:
            data_cell = f"{row['data']} (sample, NOT the thesis's rows)"
        else:
            data_cell = f"{row['data']} (subset, not a comparison)"
        if payload["quick"]:
            data_cell += " (quick)"
        line = f"| {row['table_dataset']} | {row['row']} | {data_cell} | {thesis_cell} |"
        for name in settings:
            line += f" {_cell(row.get(name))} | {_delta(row, row.get(name))} |"
        lines.append(line)
    diverged = [(row, name, row[name]["reason"]) for row in payload["rows"] for name in settings
                if (row.get(name) or {}).get("status") == "diverged"]
    if diverged:
        lines += ["", "## Runs that diverged", ""]
        lines += [f"- {row['data']} {row['row']}, {name} settings: {reason}" for row, name, reason in diverged]
    lines += ["", "## Data used", ""]
    for name, info in payload["data"].items():
        if "error" in info:
            lines.append(f"- **{name}**: not available: {info['error']}")
        else:
            comparable = "comparable with the thesis" if info["comparable_with_thesis"] else (
                "NOT comparable with the thesis")
            lines.append(f"- **{name}** ({comparable}): {info['train_rows']} train / {info['test_rows']} test rows; "
                         f"{info['source']}")
    lines += ["", "## Settings", ""]
    for name, values in payload["settings"].items():
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        lines.append(f"- **{name}**: {shown}" + (" (lr=None: 1/(2*batch) sparse, 1e-4 dense)" if values.get("lr") is None else ""))
    if payload.get("our_dense_lr") is not None and "ours" in payload["settings"]:
        lines.append(f"- our dense rows use lr={payload['our_dense_lr']}")
    lines.append("")
    return "\n".join(lines)
