"""The search space of a sweep -> Optuna: suggestions on a trial, samplers, pruners, grids."""

from __future__ import annotations

import itertools

import optuna

from .config import ParamSpec, SweepSpec

__all__ = ["param_names", "suggest", "make_sampler", "make_pruner", "grid_search_space"]


def _expanded(spec: SweepSpec):
    """(optuna param name, ParamSpec) pairs, per-layer parameters expanded to name_0 .. name_{L-1}."""
    for name, param in spec.space.items():
        if param.per_layer:
            for i in range(spec.n_layers):
                yield f"{name}_{i}", param
        else:
            yield name, param


def param_names(spec: SweepSpec) -> list[str]:
    return [name for name, _ in _expanded(spec)]


def suggest(trial: optuna.Trial, spec: SweepSpec) -> dict:
    """Ask the trial for every parameter of the space; returns {optuna name: value}."""
    params = {}
    for name, p in _expanded(spec):
        if p.kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.kind == "int":
            params[name] = trial.suggest_int(name, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            params[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return params


def _grid_values(p: ParamSpec) -> list:
    if p.kind == "categorical":
        return list(p.choices)
    n = int(round((p.high - p.low) / p.step)) + 1
    values = [p.low + i * p.step for i in range(n) if p.low + i * p.step <= p.high + 1e-12]
    return [int(v) for v in values] if p.kind == "int" else [round(v, 12) for v in values]


def grid_search_space(spec: SweepSpec) -> dict[str, list]:
    return {name: _grid_values(p) for name, p in _expanded(spec)}


def grid_size(spec: SweepSpec) -> int:
    return len(list(itertools.product(*grid_search_space(spec).values())))


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose after_trial does not call `study.stop()` (which raises outside `study.optimize`); the
    driver stops at its trial count, and a rerun after a platform fault repeats a grid point on purpose."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    options = {k: v for k, v in spec.sampler.items() if k != "name"}
    name = spec.sampler["name"]
    if name == "tpe":
        # constant_liar keeps concurrent TPE suggestions apart while several trials are running.
        options.setdefault("constant_liar", True)
        return optuna.samplers.TPESampler(**options)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(**options)
    if name == "random":
        return optuna.samplers.RandomSampler(**options)
    if name == "grid":
        return AskTellGridSampler(grid_search_space(spec), **options)
    raise ValueError(f"unknown sampler {name!r}")  # config.py validated it already


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.pruner is None or spec.multi_objective:
        return optuna.pruners.NopPruner()
    options = {k: v for k, v in spec.pruner.items() if k != "name"}
    return {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    }[spec.pruner["name"]](**options)
