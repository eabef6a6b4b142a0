"""Which network width and epoch budget reproduce Table 4 with the thesis's own settings.

The thesis states neither the hidden width of its Table 4 networks nor how many epochs it trained. This reads
`sweep reproduce table4` results files (one per width, each with per-epoch test accuracies) and writes, for every
epoch budget, how far each cell is from the thesis (README.md table) and a plot of the curves against the thesis's
numbers (width-budget.png).

    python -m sweep reproduce table4 --settings thesis --datasets mnist fashion-mnist \\
        --hidden 256 256 256 --epochs 200 --jobs 8 --out results/width-budget/w256     # and 1000 1000 1000
    python scripts/width_budget.py results/width-budget/table4-256-200epochs.json \\
        results/width-budget/table4-1000-200epochs.json --out results/width-budget
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BUDGETS = (30, 60, 100, 150, 200)


def load(path: Path) -> dict:
    payload = json.loads(path.read_text())
    payload["path"] = path
    return payload


def deltas(payload: dict, epochs: int) -> list[float]:
    """Test accuracy after `epochs` epochs minus the thesis, in points, for every row."""
    return [(row["thesis"]["test_accuracy"][epochs - 1] - row["thesis_accuracy"]) * 100 for row in payload["rows"]]


def markdown(payloads: list[dict]) -> str:
    rows = payloads[0]["rows"]
    labels = [f"{row['data']} {row['row']}" for row in rows]
    lines = [
        "# Table 4 with the thesis's settings: network width and epoch budget",
        "",
        "The thesis states neither the width of its Table 4 networks (only that the mixed HIGGS row has four weight",
        "layers) nor its epoch budget. Two widths, trained once each for 200 epochs with the thesis's settings",
        "(MSE summed over the batch, plain SGD, lr 1/(2*batch) sparse and 1e-4 dense, TTP 0.1 %, tau 0.01, k by",
        "equation 1), all 60,000 training rows, seed 0; every run records its test accuracy after each epoch, so one",
        "run answers every budget up to 200.",
        "",
        "Commands (H100, 2026-11-24):",
        "",
    ]
    lines += [f"- `{p['command']}` ({p['wall_s']:.0f} s)" for p in payloads]
    lines += [
        "- `python scripts/width_budget.py results/width-budget/table4-256-200epochs.json "
        "results/width-budget/table4-1000-200epochs.json --out results/width-budget`",
        "",
        "Cells: test accuracy after that many epochs minus the thesis's Table 4 value, in points.",
        "",
    ]
    header = "| width | epochs | " + " | ".join(labels) + " | max shortfall |"
    lines += [header, "|" + "---|" * (len(labels) + 3)]
    for payload in payloads:
        width = "-".join(str(h) for h in payload["hidden"])
        for epochs in BUDGETS:
            if epochs > payload["epochs"]:
                continue
            d = deltas(payload, epochs)
            cells = " | ".join(f"{x:+.2f}" for x in d)
            lines.append(f"| {width} | {epochs} | {cells} | {max(0.0, -min(d)):.2f} |")
    lines += [
        "",
        "Reading: on 256-256-256 the thesis's settings stay 3.8-4.1 points short at 99 % even after 200 epochs (and",
        "more than 0.5 short on three other cells), so that is not the thesis's network. On 1000-1000-1000 (the width of",
        "SET's MLP, the method the thesis builds on) every cell is within 0.5 points of the thesis or above it from",
        "150 epochs on. `sweep reproduce table4` therefore uses 1000-1000-1000 and 150 epochs by default; its results",
        "(`results/table4.md`) come from a separate run with those defaults, whose thesis-settings cells equal the",
        "150-epoch row here to the last digit (the GPU training is deterministic for a seed).",
        "",
        "![test accuracy per epoch, thesis settings, against Table 4](width-budget.png)",
        "",
    ]
    return "\n".join(lines)


def plot(payloads: list[dict], path: Path) -> None:
    datasets = list(dict.fromkeys(row["data"] for row in payloads[0]["rows"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    colours = {"dense": "black", "90%": "tab:blue", "97%": "tab:orange", "99%": "tab:red"}
    styles = ["--", "-"]
    for ax, dataset in zip(axes[0], datasets):
        for style, payload in zip(styles, payloads):
            width = "-".join(str(h) for h in payload["hidden"])
            for row in payload["rows"]:
                if row["data"] != dataset:
                    continue
                acc = [a * 100 for a in row["thesis"]["test_accuracy"]]
                ax.plot(range(1, len(acc) + 1), acc, style, color=colours.get(row["row"], "grey"), lw=1,
                        label=f"{row['row']} {width}")
        for row in payloads[0]["rows"]:
            if row["data"] == dataset:
                ax.axhline(row["thesis_accuracy"] * 100, color=colours.get(row["row"], "grey"), lw=0.8, alpha=0.5,
                           ls=":")
        ax.set_title(f"{dataset}: thesis settings (dotted: thesis Table 4)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        low = min(row["thesis_accuracy"] for row in payloads[0]["rows"] if row["data"] == dataset) * 100
        ax.set_ylim(low - 8, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="table4.json files, one per width")
    parser.add_argument("--out", type=Path, default=Path("results/width-budget"))
    args = parser.parse_args()
    payloads = [load(p) for p in args.results]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "README.md").write_text(markdown(payloads))
    plot(payloads, args.out / "width-budget.png")
    print((args.out / "README.md").read_text())


if __name__ == "__main__":
    main()
