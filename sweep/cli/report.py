"""`sweep report NAME`: a folder with a self-contained HTML page of the sweep's trade-offs and PNG copies."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._base import Command, UsageError


def _sweep_storage(name: str) -> str | None:
    """The storage sweeps.yaml gives sweep `name`, if it defines one (a report may outlive the file)."""
    from ..config import ConfigError, load_sweeps

    try:
        return load_sweeps().get(name).storage
    except ConfigError:
        return None


class ReportCommand(Command):
    name = "report"
    help = "Write a sweep's report: an HTML page (opens from disk) with its trade-off figures and best configurations, plus PNGs."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("sweep", metavar="NAME", help="the sweep (= Optuna study) name")
        parser.add_argument("--storage", default=None,
                            help="storage URL (default: $SPARSESWEEP_STORAGE, else the sweep's own in sweeps.yaml, "
                                 "else sqlite:///sweeps.db)")
        parser.add_argument("--out", default=None, help="output folder (default: reports/NAME); replaced if it holds "
                                                        "an older report")
        parser.add_argument("--top", type=int, default=20, help="rows in the table of best configurations "
                                                                 "(default: %(default)s)")

    def run(self, args: argparse.Namespace) -> int:
        from dashboards import StudyNotFound, build_report

        from ..study import storage_url_from

        if args.top < 1:
            raise UsageError(f"--top must be at least 1, got {args.top}")
        storage = storage_url_from(args.storage, None if args.storage else _sweep_storage(args.sweep))
        try:
            report = build_report(args.sweep, storage, args.out, top=args.top)
        except StudyNotFound as exc:
            raise UsageError(str(exc)) from None
        except FileExistsError as exc:
            raise UsageError(str(exc)) from None
        c = report.counts
        print(f"{args.sweep}: {sum(c.values())} trials ({c['COMPLETE']} completed, {c['PRUNED']} pruned, "
              f"{c['FAIL']} failed, {c['RUNNING'] + c['WAITING']} running or waiting)")
        print(f"wrote {report.index} and {len(report.pngs)} PNGs; open {Path(report.index).resolve().as_uri()}")
        return 0


command = ReportCommand()
