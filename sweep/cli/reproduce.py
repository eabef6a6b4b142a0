"""`sweep reproduce table4|table3|evolution`: rerun the thesis's experiments, ours beside its numbers."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

from ..data import DataError
from ..reproduce.common import EPOCHS
from ..thesis import HIDDEN
from ..train_config import ConfigError
from ._base import Command, UsageError, positive_int

TABLE4_DATASETS = ("mnist", "fashion-mnist", "higgs")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class ReproduceCommand(Command):
    name = "reproduce"
    help = "Reproduce the thesis's Table 4 (accuracy), Table 3 (timings) or Figures 8/10 (evolution)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
        for name, help_text in (
            ("table4", "accuracy of dense and 90/97/99 %% sparse networks, thesis settings and ours"),
            ("table3", "inference and training-iteration times: sparselayer vs dense PyTorch vs torch.sparse"),
            ("evolution", "gradient vs random growth vs no evolution at 90/97/99 %% on MNIST, table and plot"),
        ):
            p = sub.add_parser(name, help=help_text, description=help_text.replace("%%", "%"))
            p.add_argument("--data-dir", default=None, help="data directory (default: $SPARSESWEEP_DATA_DIR or "
                                                            "~/.cache/sparsesweep/data)")
            p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
            p.add_argument("--out", default="results", help="results folder (default: %(default)s)")
            p.add_argument("--quick", action="store_true", help="small data subsets / few repeats: minutes on a CPU")
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--no-progress", action="store_true")
            if name != "table3":
                p.add_argument("--epochs", type=positive_int, default=None,
                               help="epoch budget of every run (default: 150, or 3 with --quick)")
            if name != "table3":
                p.add_argument("--jobs", type=positive_int, default=1,
                               help="training processes sharing the device (default: 1); accuracy is unaffected, "
                                    "per-iteration times then include contention")
            if name != "table3":
                p.add_argument("--hidden", type=positive_int, nargs="+", default=None, metavar="WIDTH",
                               help=f"hidden layer widths (default: {' '.join(map(str, HIDDEN))}; the mixed HIGGS "
                                    "row needs exactly three)")
            if name == "table4":
                p.add_argument("--datasets", nargs="+", choices=TABLE4_DATASETS, default=list(TABLE4_DATASETS))
                p.add_argument("--higgs", choices=("auto", "full", "samples", "skip"), default="auto",
                               help="auto: the thesis's 600k rows if <data-dir>/higgs/HIGGS.csv.gz exists, else the "
                                    "two real HIGGS samples, labelled as not comparable (default: auto)")
                p.add_argument("--settings", nargs="+", choices=("thesis", "ours"), default=["thesis", "ours"])

    def run(self, args: argparse.Namespace) -> int:
        from .. import reproduce

        # A time limit (timeout, a batch system) stops us with SIGTERM: end like Ctrl-C, so the worker processes
        # are stopped and the results so far stay on disk, marked incomplete.
        signal.signal(signal.SIGTERM, _interrupt)
        start = time.perf_counter()
        common = dict(data_dir=args.data_dir, device=args.device, quick=args.quick, out_dir=args.out, seed=args.seed,
                      progress=not args.no_progress)
        epochs = getattr(args, "epochs", None) or (3 if args.quick else EPOCHS)
        try:
            if args.what == "table4":
                reproduce.run_table4(epochs=epochs, datasets=args.datasets, higgs=args.higgs, settings=args.settings,
                                     jobs=args.jobs, hidden=args.hidden, **common)
            elif args.what == "table3":
                reproduce.run_table3(**common)
            else:
                reproduce.run_evolution(epochs=epochs, jobs=args.jobs, hidden=args.hidden, **common)
        except (ConfigError, DataError) as exc:
            raise UsageError(str(exc)) from exc
        markdown = (Path(args.out) / f"{args.what}.md").read_text()
        print(markdown)
        print(f"sweep reproduce {args.what}: results in {args.out}/{args.what}.md and .json; "
              f"total wall time {time.perf_counter() - start:.1f} s")
        return 0


command = ReproduceCommand()
