"""Overhead of the sweep platform per trial (scheduling + database), measured with no-op trials.

A sweep of `sweep.payloads:noop` trials (each returns at once) runs on a real LocalCluster with a real SQLite
file; with the payload taking no time, the wall time per trial is what the platform itself costs: ask + suggest +
user attrs (driver, SQLite), the Dask round trip (submit -> worker -> result), and tell. The driver's share is
also timed on its own (the same database work without Dask). Target (issue 5): under 50 ms per trial.

    python benchmarks/platform_overhead.py                 # 200 trials, 1 worker, TPE
    python benchmarks/platform_overhead.py --trials 500 --workers 2 --sampler random
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import optuna

from sweep.cluster import SweepWorkerPlugin, start_cluster
from sweep.config import parse_sweeps
from sweep.runner import SweepRunner
from sweep.space import make_sampler, suggest
from sweep.study import open_storage, set_user_attrs

TARGET_MS = 50.0
RESULTS = Path(__file__).resolve().parent / "results"


def noop_spec(n_trials: int, sampler: str, name: str = "overhead"):
    body = {
        "dataset": "digits", "epochs": 1, "payload": "sweep.payloads:noop",
        # the shape of a real search space, so the sampler does representative work
        "space": {"x": {"low": 0.0, "high": 1.0}, "ttp": {"low": 1e-4, "high": 1e-2, "log": True},
                  "k": {"low": 1, "high": 64, "log": True, "type": "int"}, "g": {"choices": ["a", "b"]}},
        "objectives": [{"metric": "score", "direction": "maximize"}],
        "sampler": {"name": sampler, "seed": 0}, "n_trials": n_trials, "trials_per_gpu": 1,
    }
    return parse_sweeps({"sweeps": {name: body}}).sweeps[name]


def driver_only_ms(spec, url: str, n: int) -> dict[str, float]:
    """The database side alone, per step (ms per trial): ask, suggest, the runner's user attrs, tell (no Dask)."""
    study = optuna.create_study(storage=open_storage(url), study_name=spec.name + "-driver",
                                sampler=make_sampler(spec), direction="maximize")
    attrs = {"worker": "tcp://127.0.0.1:1", "host": "h", "pid": 1, "started_at": 0.0, "finished_at": 0.0,
             "score": 0.0, "best_test_accuracy": 0.0, "ms_per_iteration": 0.0}
    steps = {"ask": 0.0, "suggest": 0.0, "user_attrs": 0.0, "tell": 0.0}
    for _ in range(n):
        t0 = time.perf_counter()
        trial = study.ask()
        t1 = time.perf_counter()
        params = suggest(trial, spec)
        t2 = time.perf_counter()
        set_user_attrs(study, trial._trial_id, {"config": spec.trial_config(params), "attempt": 1, "run_id": "r"})
        set_user_attrs(study, trial._trial_id, attrs)
        t3 = time.perf_counter()
        study.tell(trial, 0.0)
        t4 = time.perf_counter()
        for step, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            steps[step] += dt * 1e3 / n
    steps["total"] = sum(steps.values())
    return steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sampler", default="tpe", choices=["tpe", "random", "nsga2"])
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", default=None, help="results file (default benchmarks/results/platform_overhead-<host>.json)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'overhead.db'}"
        spec = noop_spec(args.trials, args.sampler)
        with start_cluster(n_workers=args.workers, threads_per_worker=1, force_cpu=True,
                           plugin=SweepWorkerPlugin(torch_threads=1, warm_up=False), timeout=120) as (client, _):
            runner = SweepRunner(spec, url, progress=not args.no_progress)
            runner.prepare()
            start, cpu_start = time.perf_counter(), time.process_time()
            result = runner.run(client)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            # Dask alone: submit a no-op and wait for it, one at a time
            t0 = time.perf_counter()
            for i in range(50):
                client.submit(_noop, i, pure=False).result(timeout=60)
            dask_ms = (time.perf_counter() - t0) * 1e3 / 50
        db_ms = driver_only_ms(spec, url, min(args.trials, 200))
    per_trial_ms = wall * 1e3 / result.trials_this_run
    cpu_ms = cpu * 1e3 / result.trials_this_run
    load = os.getloadavg()[0]
    record = {
        "benchmark": "platform_overhead", "host": platform.node(), "python": sys.version.split()[0],
        "cpus": os.cpu_count(), "trials": result.trials_this_run, "workers": args.workers, "sampler": args.sampler,
        "wall_s": wall, "per_trial_ms": per_trial_ms, "driver_cpu_ms_per_trial": cpu_ms,
        "driver_db_ms_per_trial": db_ms, "load_average_1min": load,
        "dask_round_trip_ms": dask_ms, "idle_between_trials": result.idle.as_dict(), "target_ms": TARGET_MS,
        "ratio_to_target": per_trial_ms / TARGET_MS, "cpu_ratio_to_target": cpu_ms / TARGET_MS,
        "command": "python benchmarks/platform_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(f"{result.trials_this_run} no-op trials on {args.workers} worker(s), {args.sampler}: {wall:.2f} s -> "
          f"{per_trial_ms:.1f} ms per trial ({per_trial_ms / TARGET_MS:.2f} x the {TARGET_MS:.0f} ms target)")
    print(f"  driver process CPU time (driver + scheduler threads) per trial: {cpu_ms:.1f} ms "
          f"(wall time suffers from other load: 1-min load average {load:.1f} on {os.cpu_count()} CPUs)")
    print("  the database side alone, ms per trial: " + ", ".join(f"{k} {v:.1f}" for k, v in db_ms.items())
          + f"; a sequential Dask round trip: {dask_ms:.1f} ms")
    print(f"  {result.idle.describe()}")
    out = Path(args.out) if args.out else RESULTS / f"platform_overhead-{platform.node()}-{args.sampler}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")
    return 0


def _noop(i):
    return i


if __name__ == "__main__":
    sys.exit(main())
