"""Hyperparameter importances per objective, with fANOVA (in-process, scikit-learn's random forest)."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.importance import FanovaImportanceEvaluator, get_param_importances

from .study import SweepData

MIN_TRIALS = 3


@dataclass
class Importances:
    objective: str
    values: dict[str, float]  # param -> importance, summing to 1, largest first; empty when `message` says why
    message: str | None = None


def _varying_params(data: SweepData) -> list[str]:
    """Params present in every completed trial and taking more than one value (fANOVA needs a shared space)."""
    completed = [t for t in data.completed if t.values]
    if not completed:
        return []
    shared = set.intersection(*(set(t.params) for t in completed))
    return sorted(p for p in shared if len({repr(t.params[p]) for t in completed}) > 1)


def param_importances(data: SweepData, study: optuna.Study) -> list[Importances]:
    """One entry per objective; an explanation instead of numbers where fANOVA cannot say anything."""
    completed = [t for t in data.completed if t.values]
    params = _varying_params(data)
    results = []
    for index, objective in enumerate(data.objectives):
        if len(completed) < MIN_TRIALS:
            message = f"needs at least {MIN_TRIALS} completed trials (this sweep has {len(completed)})"
        elif not params:
            message = "no hyperparameter took more than one value across the completed trials"
        else:
            message = None
        if message is not None:
            results.append(Importances(objective.metric, {}, message))
            continue
        try:
            values = get_param_importances(
                study,
                evaluator=FanovaImportanceEvaluator(seed=0),
                params=params,
                target=lambda t, i=index: t.values[i],
                normalize=True,
            )
        except (ValueError, RuntimeError) as exc:  # e.g. a search space that changed between trials
            results.append(Importances(objective.metric, {}, f"fANOVA could not evaluate this sweep: {exc}"))
            continue
        results.append(Importances(objective.metric, dict(sorted(values.items(), key=lambda kv: -kv[1]))))
    return results
