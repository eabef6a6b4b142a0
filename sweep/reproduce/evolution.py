"""`sweep reproduce evolution`: gradient growth vs random growth vs no evolution on MNIST at 90/97/99 %
sparsity (the thesis's Figures 8 and 10), as a table and a plot of the test-accuracy curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import thesis
from . import common

GROWTHS = ("gradient", "random", "none")
SPARSITIES = (0.9, 0.97, 0.99)


def run_evolution(*, data_dir: str | None = None, device: str = "auto", epochs: int = common.EPOCHS, quick: bool = False,
                  out_dir: str | Path = "results", dataset: str = "mnist", seed: int = 0, jobs: int = 1,
                  hidden: list[int] | None = None, progress: bool = True) -> dict[str, Any]:
    hidden = list(hidden or thesis.HIDDEN)
    torch_device = common.pick_device(device)
    clock = common.Stopwatch()
    data = common.load(dataset, data_dir, torch.device("cpu"), quick)
    payload: dict[str, Any] = {
        "figure": "8 and 10",
        **common.run_header(clock, quick, epochs=epochs, seed=seed, jobs=jobs),
        "settings": common.THESIS_SETTINGS,
        "hidden": hidden,
        "environment": common.environment(torch_device),
        "data": data.describe(),
        "runs": [],
    }
    del data
    tasks = []
    for sparsity in SPARSITIES:
        for growth in GROWTHS:
            config = dict(common.THESIS_SETTINGS, dataset=dataset, hidden=list(hidden), sparsity=sparsity,
                          growth=growth, epochs=epochs, seed=seed, device=str(torch_device))
            tasks.append({"data": dataset, "data_dir": data_dir, "quick": quick, "config": config,
                          "label": f"evolution {sparsity:.0%} {growth}", "sparsity": sparsity, "growth": growth})
    out_dir = Path(out_dir)

    def record(i: int, metrics: dict[str, Any]) -> None:
        task = tasks[i]
        payload["runs"].append({"sparsity": task["sparsity"], "growth": task["growth"], "config": task["config"],
                                **metrics})
        payload["wall_s"] = round(clock.seconds, 1)
        common.save(out_dir, "evolution", payload, markdown(payload))
        plot(payload, out_dir / "evolution.png")  # after every run, so an interrupted run still has its plot

    bar = tqdm(total=len(tasks), desc="evolution", unit="run", disable=not progress)
    common.run_trials(tasks, jobs=jobs, on_result=record, bar=bar)
    bar.close()
    payload["runs"].sort(key=lambda r: (r["sparsity"], GROWTHS.index(r["growth"])))
    payload["complete"] = True
    payload["wall_s"] = round(clock.seconds, 1)
    payload["gradient_beats_others_at_99"] = gradient_wins(payload, 0.99)
    common.save(out_dir, "evolution", payload, markdown(payload))
    plot(payload, out_dir / "evolution.png")
    return payload


def _run(payload: dict[str, Any], sparsity: float, growth: str) -> dict[str, Any] | None:
    for run in payload["runs"]:
        if run["sparsity"] == sparsity and run["growth"] == growth:
            return run
    return None


def gradient_wins(payload: dict[str, Any], sparsity: float) -> bool | None:
    runs = {g: _run(payload, sparsity, g) for g in GROWTHS}
    if any(r is None for r in runs.values()):
        return None
    if any("final_test_accuracy" not in r for r in runs.values()):
        return None
    return all(runs["gradient"]["final_test_accuracy"] > runs[g]["final_test_accuracy"] for g in ("random", "none"))


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Topology evolution: gradient vs random growth vs none (thesis Figures 8 and 10)"
        + (" (QUICK: data subset)" if payload["quick"] else ""),
        "",
        f"Command: `{payload['command']}`  ",
        f"Started {payload['started']}, wall time {payload.get('wall_s', 0):.0f} s"
        + ("" if payload["complete"] else " (INCOMPLETE)") + ".  ",
        f"Device: {payload['environment']['device']}, torch {payload['environment']['torch']}.  ",
        f"Data: {payload['data']['dataset']}, {payload['data']['train_rows']} train / {payload['data']['test_rows']} "
        f"test rows ({payload['data']['source']}).  ",
        f"Epoch budget: **{payload['epochs']} epochs**; the thesis's settings (MSE summed, SGD, lr = 1/(2*batch), "
        f"TTP 0.1 %, tau 0.01, k by equation 1); 'none' = fixed topology.  ",
        "Cells: test accuracy after the last epoch (best epoch in brackets).",
        "",
        "| Sparsity | " + " | ".join(f"growth = {g}" for g in GROWTHS) + " |",
        "|---|" + "---|" * len(GROWTHS),
    ]
    for sparsity in SPARSITIES:
        cells = []
        for growth in GROWTHS:
            run = _run(payload, sparsity, growth)
            if run is None or "final_test_accuracy" not in run:
                cells.append("-" if run is None else run["status"])
            else:
                cells.append(f"{common.pct(run['final_test_accuracy'])} ({common.pct(run['best_test_accuracy'])})"
                             + ("" if run["status"] == "ok" else f" {run['status']}"))
        lines.append(f"| {sparsity:.0%} | " + " | ".join(cells) + " |")
    wins = payload.get("gradient_beats_others_at_99")
    if wins is not None:
        lines += ["", f"Gradient growth beats random growth and no evolution at 99 % (final accuracy): **{'yes' if wins else 'no'}**."]
    lines += ["", "![test accuracy per epoch](evolution.png)", ""]
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(SPARSITIES), figsize=(5 * len(SPARSITIES), 4), sharey=False)
    for ax, sparsity in zip(axes, SPARSITIES):
        for growth in GROWTHS:
            run = _run(payload, sparsity, growth)
            if run and run.get("test_accuracy"):
                epochs = range(1, len(run["test_accuracy"]) + 1)
                ax.plot(epochs, [a * 100 for a in run["test_accuracy"]], label=growth, linewidth=1.5)
        ax.set_title(f"{payload['data']['dataset']}, {sparsity:.0%} sparse")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(title="growth")
    fig.suptitle("Topology evolution: gradient vs random growth vs none")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
