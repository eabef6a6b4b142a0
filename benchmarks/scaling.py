"""Scaling of a sweep over GPUs (issue 7): the same trials on 1 GPU and on all GPUs, 1/2/4 trials per GPU.

For every (GPUs, trials per GPU) it runs a fresh study of the same sweep with a seeded random sampler (so every
configuration trains the same trial configurations, in the same order) and reports: trials per hour (over the
span from the first trial's start to the last one's end), GPU utilisation (NVML, sampled every 0.5 s on the GPUs
in use), idle time between trials per worker, scaling efficiency (trials/hour on N GPUs / (N x the 1-GPU figure
at the same trials per GPU)), and whether every trial ran on the GPU its worker was pinned to (user attrs
`gpu_uuid` vs `pinned_gpu_uuid`). The table goes to benchmarks/results/scaling-<machine>.md (+ .json).

    python benchmarks/scaling.py --sweep fashion-tradeoff --trials 16 --data-dir .data
    python benchmarks/scaling.py --trials 8 --per-gpu 1 2 --epochs 3          # shorter
    python benchmarks/scaling.py --cpu --sweep quickstart --trials 6 --per-gpu 1   # smoke test without a GPU

On a one-GPU machine "all GPUs" is the same as one, so only the 1-GPU rows run (the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from sweep.cluster import WORKER_ENV, SweepWorkerPlugin, start_cluster, visible_gpus
from sweep.config import load_sweeps
from sweep.runner import SweepRunner

RESULTS = Path(__file__).resolve().parent / "results"

os.environ.update(WORKER_ENV)  # NVLink multicast off here too, and in every process the clusters start


class UtilisationSampler:
    """Mean NVML GPU utilisation (%) of some GPUs, sampled in a thread."""

    def __init__(self, indices: list[int], every_s: float = 0.5):
        self.indices, self.every_s = indices, every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.error = None

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in self.indices]
            while not self._stop.is_set():
                values = [pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles]
                self.samples.append(sum(values) / len(values))
                self._stop.wait(self.every_s)
            pynvml.nvmlShutdown()
        except Exception as exc:  # no NVML (CPU smoke test): utilisation is reported as unknown
            self.error = f"{type(exc).__name__}: {exc}"

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def machine_name(n_gpus: int, cpu: bool) -> str:
    if cpu or n_gpus == 0:
        return f"cpu-{os.cpu_count()}cores"
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        pynvml.nvmlShutdown()
        name = name.decode() if isinstance(name, bytes) else name
    except Exception:
        import torch

        name = torch.cuda.get_device_name(0)
    return f"{n_gpus}x-{name.replace('NVIDIA ', '').replace(' ', '-')}"


def run_one(spec, n_gpus: int, per_gpu: int, n_trials: int, args, storage_dir: Path) -> dict:
    name = f"{spec.name}-g{n_gpus}-t{per_gpu}"
    spec = spec.replace(name=name, trials_per_gpu=per_gpu, n_trials=n_trials,
                        sampler={"name": "random", "seed": args.seed}, pruner=None)
    url = f"sqlite:///{storage_dir / 'scaling.db'}"
    gpus = None if args.cpu else [str(i) for i in range(n_gpus)]
    plugin = SweepWorkerPlugin(dataset=spec.dataset if spec.payload.startswith("sweep.trainer") else None,
                               data_dir=spec.data_dir, torch_threads=max(1, (os.cpu_count() or 1) // (n_gpus * per_gpu)))
    runner = SweepRunner(spec, url, progress=not args.no_progress)
    runner.prepare()
    with start_cluster(gpus=gpus, n_workers=n_gpus if args.cpu else None, threads_per_worker=per_gpu,
                       plugin=plugin, force_cpu=args.cpu, timeout=300) as (client, info):
        with UtilisationSampler(list(range(n_gpus)) if not args.cpu else []) as util:
            result = runner.run(client)
    trials = [t for t in runner.study.get_trials() if t.user_attrs.get("run_id") == result.run_id]
    timed = [t for t in trials if "started_at" in t.user_attrs]
    span = max(t.user_attrs["finished_at"] for t in timed) - min(t.user_attrs["started_at"] for t in timed)
    placed = [t for t in timed if t.user_attrs.get("pinned_gpu_uuid")]
    wrong_gpu = [t.number for t in placed if t.user_attrs.get("gpu_uuid") != t.user_attrs["pinned_gpu_uuid"]]
    workers = {t.user_attrs.get("worker") for t in timed}
    return {
        "gpus": n_gpus, "trials_per_gpu": per_gpu, "trials": len(timed), "workers": len(workers),
        "complete": result.counts.complete, "failed": result.counts.failed,
        "span_s": span, "trials_per_hour": 3600.0 * len(timed) / span if span > 0 else None,
        "driver_wall_s": result.wall_s,
        "gpu_utilisation_pct": util.mean, "utilisation_note": util.error,
        "idle_mean_s": result.idle.mean if result.idle.all_gaps else None,
        "idle_max_s": result.idle.max if result.idle.all_gaps else None,
        "idle_per_worker": result.idle.as_dict()["per_worker"],
        "gpu_checked_trials": len(placed), "trials_on_wrong_gpu": wrong_gpu,
        "devices": sorted({str(t.user_attrs.get("device")) for t in timed}),
    }


def fmt(value, spec=".3g"):
    return "-" if value is None else format(value, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="fashion-tradeoff")
    parser.add_argument("--file", default=None, help="sweeps file (default: the usual lookup)")
    parser.add_argument("--trials", type=int, default=16, help="trials per configuration (same for all)")
    parser.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--epochs", type=int, default=None, help="override the sweep's epochs (shorter runs)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="smoke test on CPU workers (no GPU, no NVML)")
    parser.add_argument("--cpu-workers", type=int, default=2, help="with --cpu: the 'all GPUs' worker count")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", default=None, help="results file stem (default benchmarks/results/scaling-<machine>)")
    args = parser.parse_args(argv)

    spec = load_sweeps(args.file).get(args.sweep)
    changes = {}
    if args.epochs:
        changes["epochs"] = args.epochs
    data_dir = args.data_dir or spec.data_dir or os.environ.get("SPARSESWEEP_DATA_DIR")
    if data_dir:
        changes["data_dir"] = str(Path(data_dir).expanduser().resolve())
    spec = spec.replace(**changes)

    total = args.cpu_workers if args.cpu else visible_gpus()
    if total == 0:
        parser.error("no GPU visible; use --cpu for a smoke test")
    counts = [1] if total == 1 else [1, total]
    machine = machine_name(total, args.cpu)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for per_gpu in args.per_gpu:
            for n in counts:
                print(f"== {spec.name}: {n} GPU(s) x {per_gpu} trial(s) per GPU, {args.trials} trials", flush=True)
                row = run_one(spec, n, per_gpu, args.trials, args, Path(tmp))
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "idle_per_worker"}), flush=True)
    base = {r["trials_per_gpu"]: r["trials_per_hour"] for r in rows if r["gpus"] == 1}
    for r in rows:
        one = base.get(r["trials_per_gpu"])
        r["scaling_efficiency"] = (r["trials_per_hour"] / (r["gpus"] * one)) if one and r["trials_per_hour"] else None

    command = "python benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"# Sweep scaling: {spec.name} on {machine}",
        "",
        f"`{command}`: {args.trials} trials per row, random sampler (seed {args.seed}) so every row trains the same "
        f"configurations; {spec.epochs} epochs per trial. Trials per hour over the span first-trial-start to "
        "last-trial-end; efficiency = trials/hour on N GPUs / (N x the 1-GPU figure at the same trials per GPU).",
        "",
        "| GPUs | trials/GPU | trials | failed | trials/hour | efficiency | GPU util % | idle mean s | idle max s "
        "| wrong-GPU trials |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['gpus']} | {r['trials_per_gpu']} | {r['trials']} | {r['failed']} | {fmt(r['trials_per_hour'], '.1f')} "
            f"| {fmt(r['scaling_efficiency'], '.2f')} | {fmt(r['gpu_utilisation_pct'], '.0f')} "
            f"| {fmt(r['idle_mean_s'])} | {fmt(r['idle_max_s'])} "
            f"| {len(r['trials_on_wrong_gpu'])} of {r['gpu_checked_trials']} checked |")
    if total == 1 and not args.cpu:
        lines += ["", "One GPU visible: only the 1-GPU baseline rows; efficiency needs a machine with several GPUs."]
    table = "\n".join(lines) + "\n"
    print(table)
    stem = Path(args.out) if args.out else RESULTS / f"scaling-{machine}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(table)
    stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "command": command, "rows": rows}, indent=2))
    print(f"wrote {stem.with_suffix('.md')} and .json")
    bad = [r for r in rows if r["trials_on_wrong_gpu"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
