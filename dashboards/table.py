"""The table of the best configurations: parameters, metrics and the command that reruns each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .study import ACCURACY, TIME, SweepData, TrialRecord

# (user attr, column title, formatter) for the metrics shown beside the objectives.
METRICS = [
    (ACCURACY, "best acc. (%)", lambda v: f"{100 * v:.2f}"),
    ("final_test_accuracy", "final acc. (%)", lambda v: f"{100 * v:.2f}"),
    (TIME, "ms / iteration", lambda v: f"{v:.3f}"),
    ("overall_sparsity", "sparsity (%)", lambda v: f"{100 * v:.1f}"),
    ("nnz", "nnz", lambda v: f"{int(v):,}"),
    ("peak_memory_bytes", "peak memory (MiB)", lambda v: f"{v / 2**20:.1f}"),
    ("epochs_run", "epochs", lambda v: f"{int(v)}"),
]


@dataclass
class Cell:
    text: str
    sort: str | float  # what the column sorts by: numbers numerically, the rest as text
    kind: str = "text"  # "number", "text" or "command"


@dataclass
class Table:
    columns: list[str]
    numeric: list[bool]
    rows: list[list[Cell]]


def _format_param(value: Any) -> Cell:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return Cell(str(value), str(value))
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return Cell(text, float(value), "number")


def _metric_cell(trial: TrialRecord, key: str, fmt) -> Cell:
    value = trial.metric(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Cell(fmt(value), float(value), "number")
    return Cell("", float("-inf"), "number")


def best_table(data: SweepData, limit: int) -> Table:
    trials = data.best_trials(limit)
    params = sorted({name for t in trials for name in t.params})
    metrics = [m for m in METRICS if any(t.metric(m[0]) is not None for t in trials)]
    objectives = [f"{o.metric} ({'max' if o.direction == 'maximize' else 'min'})" for o in data.objectives]
    columns = ["rank", "trial"] + objectives + [title for _, title, _ in metrics] + params + ["rerun command"]
    rows = []
    for rank, trial in enumerate(trials, start=1):
        cells = [Cell(str(rank), rank, "number"), Cell(f"#{trial.number}", trial.number, "number")]
        cells += [Cell(f"{v:.5g}", v, "number") for v in trial.values or []]
        cells += [_metric_cell(trial, key, fmt) for key, _, fmt in metrics]
        cells += [_format_param(trial.params[p]) if p in trial.params else Cell("", "") for p in params]
        command = str(trial.metric("command") or "")
        cells.append(Cell(command, command, "command"))
        rows.append(cells)
    numeric = [all(r[i].kind == "number" for r in rows) if rows else False for i in range(len(columns))]
    return Table(columns, numeric, rows)
