"""Which reading of the thesis's learning rates reproduces its training: lr applied to a loss summed over the
batch (and outputs), or to PyTorch's default mean-reduced MSE? Trains both readings on an MNIST subset with
the thesis's settings and writes results/lr-reading.{md,json}.

    python scripts/lr_reading.py --data-dir /work/shared/data --train-rows 10000 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sweep.data import load_dataset
from sweep.trainer import train


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-rows", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--growth", default="gradient")
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    full = load_dataset("mnist", args.data_dir)
    data = type(full)(full.name, full.x_train[: args.train_rows], full.y_train[: args.train_rows], full.x_test,
                      full.y_test, full.n_classes, f"MNIST, first {args.train_rows} train rows, all 10,000 test rows",
                      False)
    rows = []
    for sparsity in (None, 0.9, 0.99):
        for reduction in ("sum", "mean"):
            config = dict(dataset="mnist", sparsity=sparsity, loss="mse", loss_reduction=reduction, optimizer="sgd",
                          epochs=args.epochs, growth=args.growth, device="cpu")
            start = time.perf_counter()
            m = train(config, dataset=data)
            rows.append({"sparsity": sparsity, "loss_reduction": reduction, "lr": m["lr"],
                         "test_accuracy": m["test_accuracy"], "train_loss": m["train_loss"],
                         "status": m["status"], "seconds": round(time.perf_counter() - start, 1)})
            print(rows[-1], file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(sys.argv)
    (out / "lr-reading.json").write_text(json.dumps({"command": command, "data": data.source, "rows": rows,
                                                      "torch": torch.__version__}, indent=2))
    lines = [
        "# Which reading of the thesis's learning rate reproduces its training",
        "",
        f"Command: `{command}`  ",
        f"Data: {data.source}. Thesis settings: batch 512, MSE, sigmoid output, plain SGD, lr = 1/(2*512) sparse, "
        f"1e-4 dense; growth = {args.growth}; CPU.",
        "",
        "| sparsity | loss reduction | lr | test accuracy per epoch | train loss (per sample) per epoch |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        acc = ", ".join(f"{a * 100:.2f}%" for a in r["test_accuracy"])
        loss = ", ".join(f"{v:.4f}" for v in r["train_loss"])
        lines.append(f"| {'dense' if r['sparsity'] is None else r['sparsity']} | {r['loss_reduction']} | "
                     f"{r['lr']:.3g} | {acc} | {loss} |")
    (out / "lr-reading.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
