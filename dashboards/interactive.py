"""Interactive figures for the report page (bokeh; embedded with its JS inline, see report.py)."""

from __future__ import annotations

from bokeh.layouts import row
from bokeh.models import ColorBar, ColumnDataSource, HoverTool, LinearColorMapper
from bokeh.palettes import Category10_10, Viridis256
from bokeh.plotting import figure

from .importance import Importances
from .series import Curve, Point, Tradeoff
from .thesis import ThesisPoint

WIDTH, HEIGHT = 600, 380
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


def _figure(title: str, x_label: str, y_label: str, **kwargs) -> figure:
    kwargs.setdefault("width", WIDTH)
    fig = figure(title=title, height=HEIGHT, tools=TOOLS, **kwargs)
    fig.xaxis.axis_label = x_label
    fig.yaxis.axis_label = y_label
    return fig


def _points_source(points: list[Point]) -> ColumnDataSource:
    return ColumnDataSource(
        {
            "trial": [p.number for p in points],
            "x": [p.x for p in points],
            "accuracy": [100 * p.accuracy for p in points],
            # NaN draws in the mapper's nan_color: trials that did not report a sparsity.
            "sparsity": [100 * p.sparsity if p.sparsity is not None else float("nan") for p in points],
        }
    )


def tradeoff_figure(tradeoff: Tradeoff, title: str) -> figure:
    fig = _figure(title, tradeoff.x_label, "best test accuracy (%)")
    source = _points_source(tradeoff.points)
    known = [100 * p.sparsity for p in tradeoff.points if p.sparsity is not None] or [0.0, 100.0]
    mapper = LinearColorMapper(palette=Viridis256, low=min(known), high=max(known) if max(known) > min(known)
                               else min(known) + 1, nan_color="gray")
    xs, ys = zip(*tradeoff.front)
    fig.step(list(xs), [100 * y for y in ys], mode="after", color="crimson", line_width=2, legend_label="Pareto front")
    dots = fig.scatter("x", "accuracy", source=source, size=9, line_color="black",
                       fill_color={"field": "sparsity", "transform": mapper})
    fig.add_tools(HoverTool(renderers=[dots], tooltips=[("trial", "#@trial"), ("accuracy", "@accuracy{0.00}%"),
                                                        ("cost", "@x{0.000}"), ("sparsity", "@sparsity{0.0}%")]))
    fig.add_layout(ColorBar(color_mapper=mapper, title="sparsity (%)"), "right")
    fig.legend.location = "bottom_right"
    return fig


def accuracy_sparsity_figure(ours: list[Point], thesis: list[ThesisPoint], dataset: str | None) -> figure:
    fig = _figure(f"Accuracy against sparsity ({dataset or 'unknown data set'})", "sparsity (%)",
                  "best test accuracy (%)")
    source = ColumnDataSource({"trial": [p.number for p in ours], "sparsity": [100 * p.x for p in ours],
                               "accuracy": [100 * p.accuracy for p in ours]})
    dots = fig.scatter("sparsity", "accuracy", source=source, size=9, color="#1f77b4", line_color="black",
                       legend_label="this sweep")
    fig.add_tools(HoverTool(renderers=[dots], tooltips=[("trial", "#@trial"), ("accuracy", "@accuracy{0.00}%"),
                                                        ("sparsity", "@sparsity{0.0}%")]))
    if thesis:
        table = ColumnDataSource({"sparsity": [100 * p.sparsity for p in thesis],
                                  "accuracy": [100 * p.accuracy for p in thesis], "label": [p.label for p in thesis]})
        marks = fig.scatter("sparsity", "accuracy", source=table, marker="diamond", size=14, color="#ff7f0e",
                            line_color="black", legend_label="thesis, table 4")
        fig.add_tools(HoverTool(renderers=[marks], tooltips=[("thesis", "@label"), ("accuracy", "@accuracy{0.00}%")]))
    fig.legend.location = "bottom_left"
    return fig


def importance_figure(importances: list[Importances]):
    figures = []
    for imp in importances:
        names = list(imp.values)[::-1]
        fig = _figure(f"Importance: {imp.objective}", "importance (fANOVA, normalised)", "", y_range=names,
                      width=WIDTH if len(importances) == 1 else WIDTH // 2 + 80)
        fig.hbar(y=names, right=[imp.values[n] for n in names], height=0.7, color="#2ca02c")
        figures.append(fig)
    return figures[0] if len(figures) == 1 else row(*figures)


def learning_curves_figure(curves: list[Curve]) -> figure:
    fig = _figure("Learning curves of the best trials", "epoch", "test accuracy (%)")
    for curve, colour in zip(curves, Category10_10):
        epochs = list(range(1, len(curve.accuracy) + 1))
        values = [100 * a for a in curve.accuracy]
        fig.line(epochs, values, color=colour, line_width=2, legend_label=curve.label)
        fig.scatter(epochs, values, color=colour, size=5)
    fig.legend.location = "bottom_right"
    fig.legend.click_policy = "hide"
    return fig
