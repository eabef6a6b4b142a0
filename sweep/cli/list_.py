"""`sweep list`: the sweeps defined in sweeps.yaml."""

from __future__ import annotations

from ._base import Command
from ._sweeps import add_file_argument, dump_json, load_file, table


class ListCommand(Command):
    name = "list"
    help = "list the sweeps defined in sweeps.yaml"

    def add_arguments(self, parser):
        add_file_argument(parser)
        parser.add_argument("--json", action="store_true", help="print the validated sweeps as JSON")

    def run(self, args):
        sweeps = load_file(args)
        if args.json:
            print(dump_json({name: spec.to_dict() for name, spec in sweeps.sweeps.items()}))
            return 0
        rows = []
        for name, spec in sweeps.sweeps.items():
            objectives = ", ".join(f"{m} ({'max' if d == 'maximize' else 'min'})" for m, d in spec.objectives)
            space = ", ".join(f"{p}[layer]" if s.per_layer else p for p, s in spec.space.items())
            rows.append([name, spec.dataset, spec.epochs, spec.n_trials, spec.sampler["name"], objectives, space])
        print(f"sweeps in {sweeps.path}:")
        print(table(["name", "dataset", "epochs", "trials", "sampler", "objectives", "searches"], rows))
        return 0


command = ListCommand()
