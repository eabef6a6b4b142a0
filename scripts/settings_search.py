"""Pick "settings of our choosing" for `sweep reproduce table4`: train candidate settings (optimizer, loss,
evolution) with the same epoch budget and record them in results/settings-search.{md,json}.

    python scripts/settings_search.py --data-dir /work/shared/data --train-rows 10000 --epochs 10
    python scripts/settings_search.py --data-dir /work/shared/data --dataset fashion-mnist --train-rows 0 \\
        --epochs 60 --sparsity 0.99 --only 'ours' --jobs 2 --append 'Stability on all rows, 60 epochs'

--append adds a section (and its runs) to the existing files instead of replacing them. Each run is one
process with one thread (--jobs of them at a time), so runs on a shared CPU do not fight over threads.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import shlex
import sys
import time
from pathlib import Path

import torch

from sweep.data import load_dataset
from sweep.reproduce.common import OUR_SETTINGS, THESIS_SETTINGS, subset
from sweep.trainer import train

_CE = dict(THESIS_SETTINGS, loss="cross_entropy")
CANDIDATES = {
    "thesis (mse sum, sgd, lr 1/1024)": dict(THESIS_SETTINGS),
    "ours": dict(OUR_SETTINGS),
    "ce sum, sgd, lr 1/1024": dict(_CE),
    "ce sum, momentum 0.9, lr 1e-4": dict(_CE, optimizer="momentum", lr=1e-4),
    "ce sum, adam, lr 1e-3": dict(_CE, optimizer="adam", lr=1e-3),
    "ce sum, adam, lr 1e-3, ttp 1%": dict(_CE, optimizer="adam", lr=1e-3, ttp=0.01),
    "mse sum, adam, lr 1e-3": dict(THESIS_SETTINGS, optimizer="adam", lr=1e-3),
    "ce sum, sgd, lr 4/1024": dict(_CE, lr=4 / 1024),
    "ce sum, momentum 0.9, lr 5e-4": dict(_CE, optimizer="momentum", lr=5e-4),
    "ce sum, momentum 0.9, lr 5e-4, ttp 1%": dict(_CE, optimizer="momentum", lr=5e-4, ttp=0.01),
    "ce sum, momentum 0.9, lr 1e-3, ttp 1%": dict(_CE, optimizer="momentum", lr=1e-3, ttp=0.01),
    "ce sum, momentum 0.9, lr 5e-4, ttp 1%, prune dead": dict(_CE, optimizer="momentum", lr=5e-4, ttp=0.01,
                                                             prune_dead=True),
    "ce sum, momentum 0.9, lr 2e-4, ttp 1%, prune dead": dict(_CE, optimizer="momentum", lr=2e-4, ttp=0.01,
                                                             prune_dead=True),
    "ce sum, momentum 0.9, lr 2e-4, ttp 1%": dict(_CE, optimizer="momentum", lr=2e-4, ttp=0.01),
    "ce mean, adam, lr 1e-3, ttp 1%": dict(_CE, loss_reduction="mean", optimizer="adam", lr=1e-3, ttp=0.01),
    "ce mean, adam, lr 1e-3, ttp 1%, prune dead": dict(_CE, loss_reduction="mean", optimizer="adam", lr=1e-3,
                                                      ttp=0.01, prune_dead=True),
    "ce mean, adam, lr 2e-3, ttp 1%, prune dead": dict(_CE, loss_reduction="mean", optimizer="adam", lr=2e-3,
                                                      ttp=0.01, prune_dead=True),
    "ce mean, adam, lr 1e-3, ttp 3%, prune dead": dict(_CE, loss_reduction="mean", optimizer="adam", lr=1e-3,
                                                      ttp=0.03, prune_dead=True),
    "dense: ce sum, momentum 0.9, lr 1e-4": dict(_CE, optimizer="momentum", lr=1e-4),
    "dense: ce sum, momentum 0.9, lr 5e-4": dict(_CE, optimizer="momentum", lr=5e-4),
    "dense: thesis (mse sum, sgd, lr 1e-4)": dict(THESIS_SETTINGS, lr=1e-4),
    "ce sum, adam, lr 3e-3": dict(_CE, optimizer="adam", lr=3e-3),
    "ce sum, adam, lr 1e-2": dict(_CE, optimizer="adam", lr=1e-2),
}


def _run(task: dict) -> dict:
    torch.set_num_threads(1)
    data = subset(load_dataset(task["dataset"], task["data_dir"]), task["train_rows"], None)
    start = time.perf_counter()
    m = train(task["config"], dataset=data)
    return {"candidate": task["candidate"], "dataset": task["dataset"], "sparsity": task["config"]["sparsity"],
            "config": task["config"], "status": m["status"], "reason": m["reason"],
            "final": m["final_test_accuracy"], "best": m["best_test_accuracy"], "curve": m["test_accuracy"],
            "train_loss": m["train_loss"], "data": data.source, "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", nargs="+", default=["mnist"])
    parser.add_argument("--train-rows", type=int, default=10000, help="0: all of them")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.9, 0.99], help="0: dense")
    parser.add_argument("--only", nargs="*", default=None, help="candidate names to run (default: all)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--append", default=None, metavar="TITLE",
                        help="add a section with this title to the existing results instead of replacing them")
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    names = args.only or list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidate(s) {unknown}; known: {list(CANDIDATES)}")
    tasks = [{"candidate": name, "dataset": dataset, "data_dir": args.data_dir, "train_rows": args.train_rows or None,
              "config": dict(CANDIDATES[name], dataset=dataset, sparsity=sparsity or None, epochs=args.epochs,
                             device="cpu")}
             for dataset in args.dataset for sparsity in args.sparsity for name in names]
    rows = []
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        for row in pool.map(_run, tasks):
            rows.append(row)
            print(f"{row['dataset']} {row['sparsity']} {row['candidate']}: final {row['final']:.4f} best "
                  f"{row['best']:.4f} {row['status']} {row['seconds']} s", file=sys.stderr, flush=True)
    command = "python " + shlex.join(sys.argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "settings-search.json", out / "settings-search.md"
    section = {"title": args.append, "command": command, "epochs": args.epochs, "torch": torch.__version__,
               "rows": rows}
    lines = [f"Command: `{command}`  ",
             f"{args.epochs} epochs, batch 512, 256-256-256 hidden, CPU (one thread per run), seed 0. Data: "
             + "; ".join(sorted({r["data"] for r in rows})), "",
             "| data | sparsity | candidate | final | best | status |", "|---|---|---|---|---|---|"]
    for r in rows:
        sparsity = "dense" if r["sparsity"] is None else f"{r['sparsity']:.0%}"
        lines.append(f"| {r['dataset']} | {sparsity} | {r['candidate']} | {r['final'] * 100:.2f}% | "
                     f"{r['best'] * 100:.2f}% | {r['status']} |")
    if args.append and json_path.exists():
        saved = json.loads(json_path.read_text())
        saved.setdefault("sections", []).append(section)
        json_path.write_text(json.dumps(saved, indent=2) + "\n")
        md_path.write_text(md_path.read_text().rstrip("\n") + f"\n\n## {args.append}\n\n" + "\n".join(lines) + "\n")
    else:
        json_path.write_text(json.dumps(section, indent=2) + "\n")
        md_path.write_text("# Choosing our settings for Table 4\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
