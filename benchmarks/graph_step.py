"""Training with and without CUDA graphs, same configurations, same run: time per iteration and per epoch.

`sweep train` replays each iteration from a CUDA graph on a GPU (sweep/graph_step.py). This trains the same
configurations both ways, one after the other on an otherwise idle GPU, and prints the speedups and that the
accuracy is the same.

    python benchmarks/graph_step.py --data-dir .data            # MNIST, 784-1000-1000-1000-10 and 784-256-256-256-10
    python benchmarks/graph_step.py --dataset digits --epochs 3  # anywhere with a GPU, no data files
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweep.trainer import train  # noqa: E402

THESIS = {"loss": "mse", "loss_reduction": "sum", "optimizer": "sgd", "ttp": 0.001}
OURS = {"loss": "cross_entropy", "loss_reduction": "mean", "optimizer": "adam", "lr": 2e-3, "ttp": 0.01,
        "prune_dead": True}


def cases(dataset: str) -> list[tuple[str, dict]]:
    wide, narrow = [1000, 1000, 1000], [256, 256, 256]
    out = []
    for hidden in (wide, narrow):
        for sparsity in (None, 0.9, 0.99):
            settings = THESIS if sparsity is not None else {**THESIS, "lr": 1e-4}
            out.append((f"{'-'.join(map(str, hidden))} {'dense' if sparsity is None else f'{sparsity:.0%}'} thesis",
                        {"dataset": dataset, "hidden": hidden, "sparsity": sparsity, **settings}))
    out.append((f"1000-1000-1000 99% ours", {"dataset": dataset, "hidden": wide, "sparsity": 0.99, **OURS}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/graph_step.py needs a CUDA GPU")
    gpu = torch.cuda.get_device_name(0)
    rows = []
    for label, config in cases(args.dataset):
        row = {"case": label, "config": config}
        for graphed in (False, True):
            metrics = train({**config, "epochs": args.epochs, "data_dir": args.data_dir, "device": "cuda",
                             "cuda_graph": graphed})
            row["graph" if graphed else "eager"] = {k: metrics[k] for k in (
                "status", "ms_per_iteration", "s_per_epoch", "final_test_accuracy", "train_loss", "nnz")}
        row["iteration_speedup"] = row["eager"]["ms_per_iteration"] / row["graph"]["ms_per_iteration"]
        row["epoch_speedup"] = row["eager"]["s_per_epoch"] / row["graph"]["s_per_epoch"]
        rows.append(row)
        print(f"{label:32s} eager {row['eager']['ms_per_iteration']:.3f} ms/it  graph {row['graph']['ms_per_iteration']:.3f}"
              f" ms/it  x{row['iteration_speedup']:.2f}  (epoch x{row['epoch_speedup']:.2f});  accuracy "
              f"{row['eager']['final_test_accuracy']:.4f} / {row['graph']['final_test_accuracy']:.4f}", flush=True)
    command = "python " + " ".join(sys.argv)
    payload = {"gpu": gpu, "torch": torch.__version__, "command": command, "epochs": args.epochs,
               "dataset": args.dataset, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    stem = "graph_step-" + gpu.lower().replace(" ", "-")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        f"# Training iterations eager vs replayed from a CUDA graph ({gpu}, torch {torch.__version__})", "",
        f"Command: `{command}` ({payload['date']}). {args.epochs} epochs of {args.dataset} per run, batch 512; "
        "ms per iteration = median over epochs of the synchronised epoch time / batches (the capture after each "
        "evolution included); s per epoch adds the evolution step. Both runs of a row use the same seed.", "",
        "| case | eager ms/iteration | graph ms/iteration | speedup | eager s/epoch | graph s/epoch | speedup | "
        "final accuracy eager / graph |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        e, g = row["eager"], row["graph"]
        lines.append(f"| {row['case']} | {e['ms_per_iteration']:.3f} | {g['ms_per_iteration']:.3f} | "
                     f"{row['iteration_speedup']:.2f}x | {e['s_per_epoch']:.3f} | {g['s_per_epoch']:.3f} | "
                     f"{row['epoch_speedup']:.2f}x | {e['final_test_accuracy']:.4f} / {g['final_test_accuracy']:.4f} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
