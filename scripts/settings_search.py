"""Pick "settings of our choosing" for `sweep reproduce table4`: train candidate settings (optimizer, loss,
evolution) on an MNIST subset with the same epoch budget and write results/settings-search.{md,json}.

    python scripts/settings_search.py --data-dir /work/shared/data --train-rows 10000 --epochs 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sweep.data import load_dataset
from sweep.reproduce.common import THESIS_SETTINGS, subset
from sweep.trainer import train

CANDIDATES = {
    "thesis (mse sum, sgd, lr 1/1024)": dict(THESIS_SETTINGS),
    "ce sum, sgd, lr 1/1024": dict(THESIS_SETTINGS, loss="cross_entropy"),
    "ce sum, momentum 0.9, lr 1e-4": dict(THESIS_SETTINGS, loss="cross_entropy", optimizer="momentum", lr=1e-4),
    "ce sum, adam, lr 1e-3": dict(THESIS_SETTINGS, loss="cross_entropy", optimizer="adam", lr=1e-3),
    "ce sum, adam, lr 1e-3, ttp 1%": dict(THESIS_SETTINGS, loss="cross_entropy", optimizer="adam", lr=1e-3, ttp=0.01),
    "mse sum, adam, lr 1e-3": dict(THESIS_SETTINGS, optimizer="adam", lr=1e-3),
    "ce sum, sgd, lr 4/1024": dict(THESIS_SETTINGS, loss="cross_entropy", lr=4 / 1024),
    "ce sum, momentum 0.9, lr 5e-4": dict(THESIS_SETTINGS, loss="cross_entropy", optimizer="momentum", lr=5e-4),
    "ce sum, momentum 0.9, lr 5e-4, ttp 1%": dict(THESIS_SETTINGS, loss="cross_entropy", optimizer="momentum",
                                                 lr=5e-4, ttp=0.01),
    "ce sum, momentum 0.9, lr 1e-3, ttp 1%": dict(THESIS_SETTINGS, loss="cross_entropy", optimizer="momentum",
                                                 lr=1e-3, ttp=0.01),
    "ce sum, momentum 0.9, lr 5e-4, ttp 1%, prune dead": dict(THESIS_SETTINGS, loss="cross_entropy",
                                                             optimizer="momentum", lr=5e-4, ttp=0.01, prune_dead=True),
    "dense: ce sum, momentum 0.9, lr 1e-4": dict(THESIS_SETTINGS, loss="cross_entropy", optimizer="momentum", lr=1e-4),
    "dense: ce sum, momentum 0.9, lr 5e-4": dict(THESIS_SETTINGS, loss="cross_entropy", optimizer="momentum", lr=5e-4),
    "dense: thesis (mse sum, sgd, lr 1e-4)": dict(THESIS_SETTINGS, lr=1e-4),
    "ce sum, adam, lr 3e-3": dict(THESIS_SETTINGS, loss="cross_entropy", optimizer="adam", lr=3e-3),
    "ce sum, adam, lr 1e-2": dict(THESIS_SETTINGS, loss="cross_entropy", optimizer="adam", lr=1e-2),
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--train-rows", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.9, 0.99])
    parser.add_argument("--only", nargs="*", default=None, help="candidate names to run (default: all)")
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    data = subset(load_dataset(args.dataset, args.data_dir), args.train_rows, None)
    rows = []
    names = args.only or list(CANDIDATES)
    for sparsity in args.sparsity:
        for name in names:
            config = dict(CANDIDATES[name], dataset=args.dataset, sparsity=sparsity, epochs=args.epochs, device="cpu")
            start = time.perf_counter()
            m = train(config, dataset=data)
            rows.append({"candidate": name, "sparsity": sparsity, "config": config, "status": m["status"],
                         "final": m["final_test_accuracy"], "best": m["best_test_accuracy"],
                         "curve": m["test_accuracy"], "seconds": round(time.perf_counter() - start, 1)})
            print(f"{sparsity} {name}: final {m['final_test_accuracy']:.4f} best {m['best_test_accuracy']:.4f} "
                  f"{m['status']} {rows[-1]['seconds']} s", file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(sys.argv)
    (out / "settings-search.json").write_text(json.dumps({"command": command, "data": data.source, "rows": rows,
                                                           "torch": torch.__version__}, indent=2))
    lines = ["# Choosing our settings for Table 4", "", f"Command: `{command}`  ",
             f"Data: {data.source}; {args.epochs} epochs, batch 512, 256-256-256 hidden, CPU, seed 0.", "",
             "| sparsity | candidate | final | best |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sparsity']} | {r['candidate']} | {r['final'] * 100:.2f}% | {r['best'] * 100:.2f}% |")
    (out / "settings-search.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
