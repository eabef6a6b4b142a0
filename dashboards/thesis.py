"""The thesis's table 4 (sweep/thesis.py holds the numbers) as points on the report's accuracy/sparsity axes."""

from __future__ import annotations

from dataclasses import dataclass

from sweep import thesis

# Inputs and classes of the thesis's data sets (its table 1), to weigh a per-layer sparsity row by layer size.
_IO_SIZES = {"mnist": (784, 10), "fashion-mnist": (784, 10), "higgs": (28, 2)}


@dataclass(frozen=True)
class ThesisPoint:
    sparsity: float  # overall fraction of zero weights, 0 for dense
    accuracy: float  # test accuracy, fraction
    label: str


def _overall_sparsity(setting: float | list[float] | None, dataset: str) -> float:
    """One number for a row's sparsity: per-layer settings weighed by the weights of the thesis's network."""
    if setting is None:
        return 0.0
    if isinstance(setting, (int, float)):
        return float(setting)
    n_in, n_out = _IO_SIZES[dataset]
    sizes = [n_in, *thesis.HIDDEN, n_out]
    weights = [a * b for a, b in zip(sizes, sizes[1:])]
    return sum(s * w for s, w in zip(setting, weights)) / sum(weights)


def thesis_points(dataset: str | None) -> list[ThesisPoint]:
    """Table 4's rows for `dataset`; none for the data sets the thesis did not use (digits, HIGGS samples)."""
    rows = thesis.TABLE4.get(dataset or "", {})
    return [
        ThesisPoint(_overall_sparsity(thesis.SPARSITY_OF_ROW[label], dataset), percent / 100, label)
        for label, percent in rows.items()
    ]
