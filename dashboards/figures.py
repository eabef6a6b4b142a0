"""Static copies of the report's figures (matplotlib, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, never need a display
import matplotlib.pyplot as plt  # noqa: E402

from .importance import Importances  # noqa: E402
from .series import Curve, Point, Tradeoff  # noqa: E402
from .thesis import ThesisPoint  # noqa: E402

SIZE = (7.0, 4.5)
DPI = 110
CMAP = "viridis"


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _message(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, color="0.3")
    ax.set_axis_off()


def _scatter_by_sparsity(fig: plt.Figure, ax: plt.Axes, points: list[Point]) -> None:
    coloured = [p for p in points if p.sparsity is not None]
    plain = [p for p in points if p.sparsity is None]
    if coloured:
        sc = ax.scatter(
            [p.x for p in coloured], [100 * p.accuracy for p in coloured],
            c=[100 * p.sparsity for p in coloured], cmap=CMAP, s=36, edgecolors="k", linewidths=0.4, zorder=3,
        )
        fig.colorbar(sc, ax=ax, label="sparsity (%)")
    if plain:
        ax.scatter([p.x for p in plain], [100 * p.accuracy for p in plain], c="0.5", s=36, zorder=3)


def tradeoff_png(tradeoff: Tradeoff, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=SIZE)
    if not tradeoff.points:
        _message(ax, "No completed trial reported this metric.")
    else:
        _scatter_by_sparsity(fig, ax, tradeoff.points)
        xs, ys = zip(*tradeoff.front)
        ax.step(xs, [100 * y for y in ys], where="post", color="crimson", lw=1.5, label="Pareto front", zorder=2)
        ax.set_xlabel(tradeoff.x_label)
        ax.set_ylabel("best test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    ax.set_title(title)
    return _save(fig, path)


def accuracy_sparsity_png(ours: list[Point], thesis: list[ThesisPoint], dataset: str | None, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=SIZE)
    if not ours and not thesis:
        _message(ax, "No completed trial reported its accuracy and sparsity.")
    else:
        if ours:
            ax.scatter([100 * p.x for p in ours], [100 * p.accuracy for p in ours], s=36, color="tab:blue",
                       edgecolors="k", linewidths=0.4, label="this sweep", zorder=3)
        if thesis:
            ax.plot([100 * p.sparsity for p in thesis], [100 * p.accuracy for p in thesis], "D", ms=8,
                    color="tab:orange", markeredgecolor="k", label="thesis, table 4", zorder=4)
            for p in thesis:
                ax.annotate(p.label, (100 * p.sparsity, 100 * p.accuracy), textcoords="offset points",
                            xytext=(6, 4), fontsize=8, color="tab:orange")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("best test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
    ax.set_title(f"Accuracy against sparsity ({dataset or 'unknown data set'})")
    return _save(fig, path)


def importance_png(importances: list[Importances], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(importances), figsize=(SIZE[0] * max(1, len(importances)) * 0.8, SIZE[1]),
                             squeeze=False)
    for ax, imp in zip(axes[0], importances):
        if imp.message:
            _message(ax, imp.message)
        else:
            names = list(imp.values)[::-1]
            ax.barh(names, [imp.values[n] for n in names], color="tab:green")
            ax.set_xlabel("importance (fANOVA, normalised)")
            ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"Hyperparameter importance: {imp.objective}")
    return _save(fig, path)


def learning_curves_png(curves: list[Curve], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=SIZE)
    if not curves:
        _message(ax, "No completed trial recorded a learning curve.")
    else:
        for curve in curves:
            epochs = range(1, len(curve.accuracy) + 1)
            ax.plot(epochs, [100 * a for a in curve.accuracy], marker="o", ms=3, label=curve.label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Learning curves of the best trials")
    return _save(fig, path)
