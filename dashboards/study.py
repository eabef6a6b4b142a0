"""Read a sweep's Optuna study (the format in docs/architecture.md, "Studies") into plain records for the report."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import optuna

from sweep.config import DEFAULT_STORAGE
from sweep.study import StorageError, load_study, open_storage, study_names

# The metrics a report draws; each is a trial user attr written by the runner (docs/architecture.md).
ACCURACY = "best_test_accuracy"
TIME = "ms_per_iteration"


# The storage or the study named does not exist (the message says which and what to do).
StudyNotFound = StorageError

@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "maximize" or "minimize"


@dataclass
class TrialRecord:
    number: int
    state: str  # COMPLETE, FAIL, PRUNED, RUNNING, WAITING
    values: list[float] | None
    params: dict[str, Any]
    attrs: dict[str, Any]
    duration_s: float | None

    def metric(self, name: str) -> Any:
        return self.attrs.get(name)

    @property
    def sparsity(self) -> float | None:
        """Overall sparsity as measured by the trainer; the sampled `sparsity` param when that is missing."""
        value = self.attrs.get("overall_sparsity", self.params.get("sparsity"))
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def fail_reason(self) -> str:
        reason = str(self.attrs.get("fail_reason") or self.attrs.get("reason") or "no reason recorded")
        if self.attrs.get("infra_fault") and not self.attrs.get("gave_up"):
            reason += " (platform fault: rerun as a new trial)"
        return reason


@dataclass
class SweepData:
    name: str
    storage: str
    objectives: list[Objective]
    spec: dict[str, Any]
    trials: list[TrialRecord] = field(default_factory=list)
    study: optuna.Study | None = field(default=None, repr=False)  # for the importance evaluator

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def by_state(self, state: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == state]

    @property
    def completed(self) -> list[TrialRecord]:
        return self.by_state("COMPLETE")

    @property
    def failed(self) -> list[TrialRecord]:
        return self.by_state("FAIL")

    def state_counts(self) -> dict[str, int]:
        counts = collections.Counter(t.state for t in self.trials)
        return {state: counts.get(state, 0) for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}

    def failure_reasons(self) -> list[tuple[str, int, list[int]]]:
        """(reason, count, trial numbers), most frequent first."""
        numbers: dict[str, list[int]] = collections.defaultdict(list)
        for trial in self.failed:
            numbers[trial.fail_reason].append(trial.number)
        return sorted(((r, len(n), n) for r, n in numbers.items()), key=lambda item: (-item[1], item[0]))

    @property
    def dataset(self) -> str | None:
        """The data set most trials trained on (a sweep normally uses one)."""
        names = collections.Counter(
            t.attrs["config"]["dataset"]
            for t in self.trials
            if isinstance(t.attrs.get("config"), dict) and "dataset" in t.attrs["config"]
        )
        if names:
            return names.most_common(1)[0][0]
        dataset = self.spec.get("dataset")
        return dataset if isinstance(dataset, str) else None

    def best_trials(self, limit: int) -> list[TrialRecord]:
        """Completed trials, best first: the Pareto front (multi-objective) then the rest, by the first objective."""
        completed = [t for t in self.completed if t.values]
        first = self.objectives[0]
        sign = -1.0 if first.direction == "maximize" else 1.0
        front = {t.number for t in pareto_front(completed, self.objectives)} if self.multi_objective else set()
        ranked = sorted(completed, key=lambda t: (t.number not in front, sign * t.values[0], t.number))
        return ranked[:limit]


def pareto_front(trials: list[TrialRecord], objectives: list[Objective]) -> list[TrialRecord]:
    """The non-dominated trials under `objectives` (values taken from each trial's `values`)."""
    signs = [1.0 if o.direction == "maximize" else -1.0 for o in objectives]

    def key(trial: TrialRecord) -> list[float]:
        return [s * v for s, v in zip(signs, trial.values)]

    keyed = [(t, key(t)) for t in trials if t.values and len(t.values) == len(objectives)]
    return [
        t
        for t, k in keyed
        if not any(all(a >= b for a, b in zip(o, k)) and any(a > b for a, b in zip(o, k)) for _, o in keyed)
    ]


def pareto_front_2d(points: list[tuple[float, float]], maximize_y: bool = True) -> list[tuple[float, float]]:
    """Non-dominated (x, y) points for minimising x and maximising y, sorted by x (the staircase to draw)."""
    sign = 1.0 if maximize_y else -1.0
    front: list[tuple[float, float]] = []
    best = float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if sign * y > best:
            front.append((x, y))
            best = sign * y
    return front


def list_sweeps(storage: str) -> list[str]:
    return sorted(study_names(open_storage(storage, create=False)))


def _open_study(name: str, storage: str) -> optuna.Study:
    # create=False: a mistyped SQLite path is an error, not a new empty database.
    return load_study(open_storage(storage, create=False), name)


def _objectives(study: optuna.Study) -> list[Objective]:
    declared = study.user_attrs.get("objectives")
    if isinstance(declared, list) and declared and all(isinstance(o, dict) for o in declared):
        return [Objective(str(o["metric"]), str(o.get("direction", "maximize"))) for o in declared]
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    return [Objective(n, d.name.lower()) for n, d in zip(names, study.directions)]


def load_sweep(name: str, storage: str = DEFAULT_STORAGE) -> SweepData:
    """Every trial of sweep `name` in `storage`, with its params, metrics and state."""
    study = _open_study(name, storage)
    spec = study.user_attrs.get("sweep")
    trials = [
        TrialRecord(
            number=t.number,
            state=t.state.name,
            values=list(t.values) if t.values is not None else None,
            params=dict(t.params),
            attrs=dict(t.user_attrs),
            duration_s=t.duration.total_seconds() if t.duration is not None else None,
        )
        for t in study.get_trials(deepcopy=False)
    ]
    return SweepData(
        name=name,
        storage=storage,
        objectives=_objectives(study),
        spec=spec if isinstance(spec, dict) else {},
        trials=trials,
        study=study,
    )
