"""The numbers behind each figure, computed once and drawn twice (matplotlib PNGs, bokeh page)."""

from __future__ import annotations

from dataclasses import dataclass

from .study import ACCURACY, TIME, SweepData, TrialRecord, pareto_front_2d
from .thesis import ThesisPoint, thesis_points

# Figure ids: the PNG file stems and the page's section anchors.
FIGURES = ("pareto_time", "pareto_memory", "accuracy_sparsity", "importance", "learning_curves")
CURVES_SHOWN = 5


@dataclass
class Point:
    number: int
    accuracy: float  # fraction
    x: float
    sparsity: float | None


@dataclass
class Tradeoff:
    """Accuracy against a cost (x) for the completed trials, and its Pareto staircase."""

    x_label: str
    points: list[Point]
    front: list[tuple[float, float]]  # (x, accuracy), cost ascending
    note: str | None = None


@dataclass
class Curve:
    number: int
    label: str
    accuracy: list[float]  # per epoch, fraction


def _accuracy(trial: TrialRecord) -> float | None:
    value = trial.metric(ACCURACY)
    return float(value) if isinstance(value, (int, float)) else None


def _tradeoff(data: SweepData, metric: str, x_label: str, scale: float, note: str | None) -> Tradeoff:
    points = []
    for trial in data.completed:
        accuracy, cost = _accuracy(trial), trial.metric(metric)
        if accuracy is not None and isinstance(cost, (int, float)):
            points.append(Point(trial.number, accuracy, float(cost) * scale, trial.sparsity))
    front = pareto_front_2d([(p.x, p.accuracy) for p in points])
    return Tradeoff(x_label, points, front, note)


def time_tradeoff(data: SweepData) -> Tradeoff:
    return _tradeoff(data, TIME, "training time per iteration (ms)", 1.0, None)


def memory_tradeoff(data: SweepData) -> Tradeoff:
    """Against the device's peak memory where the trainer measured one (CUDA), else the parameters' bytes."""
    has_peak = any(isinstance(t.metric("peak_memory_bytes"), (int, float)) for t in data.completed)
    if has_peak:
        return _tradeoff(data, "peak_memory_bytes", "peak device memory (MiB)", 2.0**-20, None)
    return _tradeoff(
        data, "param_bytes", "parameter memory (KiB)", 2.0**-10,
        "No trial measured a device memory peak (CPU trials report none): drawn against the bytes of the "
        "model's parameters instead.",
    )


def accuracy_by_sparsity(data: SweepData) -> tuple[list[Point], list[ThesisPoint]]:
    ours = [
        Point(t.number, a, t.sparsity, t.sparsity)
        for t in data.completed
        if (a := _accuracy(t)) is not None and t.sparsity is not None
    ]
    return ours, thesis_points(data.dataset)


def learning_curves(data: SweepData, limit: int = CURVES_SHOWN) -> list[Curve]:
    curves = []
    for trial in data.best_trials(limit):
        curve = trial.metric("test_accuracy")
        if isinstance(curve, list) and curve:
            label = f"#{trial.number}"
            if trial.sparsity is not None:
                label += f" (sparsity {trial.sparsity:.1%})"
            curves.append(Curve(trial.number, label, [float(v) for v in curve]))
    return curves
