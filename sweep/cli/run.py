"""`sweep run NAME`: run (or resume) a sweep on every GPU of this machine, a CPU cluster, or a Dask scheduler."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

from ..cluster import ClusterError, SweepWorkerPlugin, parse_gpus, start_cluster
from ..config import ConfigError
from ..runner import RunnerError, SweepRunner
from ..study import StorageError, sqlite_path
from ._base import Command, UsageError, positive_int
from ._sweeps import add_file_argument, add_storage_argument, load_file, resolve_storage


class RunCommand(Command):
    name = "run"
    help = "run or resume a sweep from sweeps.yaml (Optuna study in an RDB storage, trials on Dask workers)"

    def add_arguments(self, parser):
        parser.add_argument("name", help="sweep name (see `sweep list`)")
        parser.add_argument("--n-trials", type=positive_int, default=None,
                            help="total trials the study should reach (default: the sweep's n_trials)")
        parser.add_argument("--gpus", default=None, help="GPUs to use, e.g. 0,1 (default: every visible GPU)")
        parser.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                            help="use an existing Dask cluster (workers started with `dask cuda worker`)")
        add_storage_argument(parser)
        parser.add_argument("--data-dir", default=None,
                            help="data directory for the trainer (default: the sweep's data_dir, $SPARSESWEEP_DATA_DIR)")
        add_file_argument(parser)
        parser.add_argument("--trials-per-gpu", type=positive_int, default=None,
                            help="concurrent trials per GPU/worker (default: the sweep's trials_per_gpu)")
        parser.add_argument("--workers", type=positive_int, default=None,
                            help="CPU-only machines: number of worker processes (default: cores, at most 4)")
        parser.add_argument("--cpu", action="store_true", help="use a CPU LocalCluster even if GPUs are visible")
        parser.add_argument("--host", default="127.0.0.1", help="address the scheduler and dashboard listen on")
        parser.add_argument("--dashboard-address", default=None, help="Dask dashboard address (default: HOST:random)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(self, args):
        sweeps = load_file(args)  # everything is validated before any database is touched
        try:
            spec = sweeps.get(args.name)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        try:
            gpus = parse_gpus(args.gpus)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.scheduler and not args.scheduler.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
            raise UsageError(f"--scheduler must look like tcp://HOST:PORT, got {args.scheduler!r}")
        data_dir = args.data_dir or spec.data_dir or os.environ.get("SPARSESWEEP_DATA_DIR")
        if data_dir:
            path = Path(data_dir).expanduser().resolve()
            if not path.is_dir():
                raise UsageError(f"data directory {path} does not exist; pass --data-dir DIR with the data set files")
            data_dir = str(path)
        changes = {"data_dir": data_dir}
        if args.trials_per_gpu:
            changes["trials_per_gpu"] = args.trials_per_gpu
        spec = spec.replace(**changes)
        storage_url = resolve_storage(args, spec.storage)

        runner = SweepRunner(spec, storage_url, n_trials=args.n_trials, progress=not args.no_progress)
        try:
            counts = runner.prepare()
        except (StorageError, RunnerError) as exc:
            raise UsageError(str(exc)) from None
        print(f"sweep {spec.name}: {counts.counted} of {runner.target} trials done in {storage_url}", file=sys.stderr)
        for note in runner.notes:
            print(note, file=sys.stderr)
        runner.notes.clear()
        if counts.counted >= runner.target:
            print(f"nothing to do; `sweep run {spec.name} --n-trials {runner.target * 2}` runs more, "
                  f"`sweep best {spec.name}` shows the best", file=sys.stderr)
            return 0

        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            plugin = SweepWorkerPlugin(dataset=spec.dataset if spec.payload.startswith("sweep.trainer") else None,
                                       data_dir=data_dir, torch_threads=_torch_threads(args, spec))
            with _sweep_page(), start_cluster(gpus=gpus, scheduler=args.scheduler, n_workers=args.workers,
                                              threads_per_worker=spec.trials_per_gpu, host=args.host,
                                              dashboard_address=args.dashboard_address, plugin=plugin,
                                              force_cpu=args.cpu) as (client, info):
                _announce(client, spec.name, storage_url)
                result = runner.run(client)
        except ClusterError as exc:
            raise UsageError(str(exc)) from None
        except KeyboardInterrupt:
            print(f"sweep {spec.name}: interrupted; running trials were marked FAIL and will be rerun by "
                  f"`sweep run {spec.name}`", file=sys.stderr)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        c = result.counts
        print(f"sweep {spec.name}: {c.counted}/{result.target} trials ({c.complete} complete, {c.pruned} pruned, "
              f"{c.failed} failed, {c.retried} rerun after a platform fault) in {result.wall_s:.1f} s "
              f"({result.trials_per_hour:.0f} trials/hour this run)")
        print(result.idle.describe())
        print(f"best: sweep best {spec.name}" + (f" --storage {args.storage}" if args.storage else ""))
        return 0


def _sweep_page():
    """The dashboards' /sweep page on the Dask dashboard (docs/architecture.md), when that package is usable."""
    try:
        import dashboards

        return dashboards.sweep_page()
    except Exception:
        return contextlib.nullcontext()


def _announce(client, name: str, storage_url: str) -> None:
    path = sqlite_path(storage_url)
    if path is not None:  # the page may be read from another working directory
        storage_url = f"sqlite:///{path.resolve()}"
    try:
        import dashboards

        dashboards.announce(client, name, storage_url)
        url = dashboards.page_url(client)
    except Exception as exc:
        print(f"note: no sweep page on the Dask dashboard ({type(exc).__name__}: {exc})", file=sys.stderr)
        return
    if url:
        print(f"sweep page: {url}", file=sys.stderr, flush=True)


def _torch_threads(args, spec) -> int:
    cores = os.cpu_count() or 1
    workers = args.workers or max(1, min(cores, 4))
    return max(1, cores // (workers * spec.trials_per_gpu))


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


command = RunCommand()
