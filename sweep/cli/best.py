"""`sweep best NAME`: the best trial (one objective) or the Pareto front (several), parameters and metrics."""

from __future__ import annotations

import optuna

from ..study import StorageError, load_study
from ._base import Command, UsageError
from ._sweeps import add_storage_argument, dump_json, open_existing_storage, resolve_storage, table

# Metrics shown next to the objectives (when the trial has them).
SHOWN_METRICS = ("best_test_accuracy", "final_test_accuracy", "ms_per_iteration", "inference_ms", "nnz",
                 "peak_memory_bytes", "device", "worker")


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    complete = [t for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])]
    if not complete:
        return []
    if len(study.directions) == 1:
        return [study.best_trial]
    return sorted(study.best_trials, key=lambda t: t.values[0],
                  reverse=study.directions[0] == optuna.study.StudyDirection.MAXIMIZE)


def trial_record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
    names = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
    attrs = trial.user_attrs
    metrics = {k: v for k, v in attrs.items()
               if isinstance(v, (int, float, str, bool)) and k not in ("command", "run_id", "traceback")}
    return {
        "number": trial.number,
        "values": dict(zip(names, trial.values)),
        "params": dict(trial.params),
        "metrics": metrics,
        "curves": {k: attrs[k] for k in ("test_accuracy", "train_loss") if k in attrs},
        "config": attrs.get("config"),
        "command": attrs.get("command"),
    }


class BestCommand(Command):
    name = "best"
    help = "print the best trial (single objective) or the Pareto front (multi-objective) of a sweep"

    def add_arguments(self, parser):
        parser.add_argument("name", help="sweep (study) name")
        add_storage_argument(parser)
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def run(self, args):
        storage = open_existing_storage(resolve_storage(args))
        try:
            study = load_study(storage, args.name)
        except StorageError as exc:
            raise UsageError(str(exc)) from None
        trials = best_trials(study)
        multi = len(study.directions) > 1
        directions = [d.name.lower() for d in study.directions]
        names = study.metric_names or [f"objective_{i}" for i in range(len(directions))]
        records = [trial_record(study, t) for t in trials]
        if args.json:
            print(dump_json({"study": study.study_name, "objectives": [{"metric": n, "direction": d}
                             for n, d in zip(names, directions)], "pareto_front" if multi else "best": records}))
            return 0 if records else 1
        if not records:
            print(f"study {args.name!r} has no completed trial yet; `sweep status` shows its trials")
            return 1
        params = sorted({p for r in records for p in r["params"]})
        shown = [m for m in SHOWN_METRICS if m not in names and any(m in r["metrics"] for r in records)]
        headers = ["trial"] + [f"{n} ({'max' if d == 'maximize' else 'min'})" for n, d in zip(names, directions)]
        headers += params + shown
        rows = [[r["number"]] + list(r["values"].values()) + [r["params"].get(p) for p in params]
                + [r["metrics"].get(m) for m in shown] for r in records]
        title = f"Pareto front of {args.name} ({len(records)} trials)" if multi else f"best trial of {args.name}"
        print(title + ":")
        print(table(headers, rows))
        if not multi and records[0]["command"]:
            print(f"rerun: {records[0]['command']}")
        return 0


command = BestCommand()
