"""`sweep status`: the studies in a storage with their trial counts by state."""

from __future__ import annotations

import optuna

from ..study import count_trials
from ._base import Command
from ._sweeps import add_storage_argument, dump_json, open_existing_storage, resolve_storage, table


class StatusCommand(Command):
    name = "status"
    help = "list the studies in the storage with trial counts by state"

    def add_arguments(self, parser):
        add_storage_argument(parser)
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def run(self, args):
        url = resolve_storage(args)
        storage = open_existing_storage(url)
        rows, records = [], []
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            trials = study.get_trials(deepcopy=False)
            counts = count_trials(trials)
            target = (study.user_attrs.get("sweep") or {}).get("n_trials")
            objectives = study.metric_names or [d.name.lower() for d in study.directions]
            best = None
            if counts.complete and len(study.directions) == 1:
                best = study.best_value
            elif counts.complete:
                best = f"{len(study.best_trials)} on the Pareto front"
            records.append({"study": summary.study_name, "objectives": objectives, "n_trials": target,
                            "counts": counts.as_dict(), "best": best})
            rows.append([summary.study_name, ", ".join(objectives), f"{counts.counted}/{target or '?'}",
                         counts.complete, counts.pruned, counts.failed, counts.retried, counts.running,
                         counts.waiting, best])
        if args.json:
            print(dump_json({"storage": url, "studies": records}))
            return 0
        if not rows:
            print(f"no studies in {url}")
            return 0
        print(f"studies in {url}:")
        print(table(["study", "objectives", "done", "complete", "pruned", "failed", "rerun", "running", "waiting",
                     "best"], rows))
        return 0


command = StatusCommand()
