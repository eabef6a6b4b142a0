"""`sweep reproduce table3`: inference and training-iteration times (the thesis's Table 3) for our sparse
layer, dense PyTorch (cuBLAS on a GPU) and torch.sparse CSR (cuSPARSE on a GPU), measured in one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import thesis
from ..graph_step import GraphedTrainStep, train_step
from ..timing import DeviceTimer, synchronize
from . import common
from .torch_sparse import TorchSparseMLP

ROWS = ("dense", "90%", "97%", "99%")


def _time_ms(fn: Callable[[], object], device: torch.device, *, calls: int, repeats: int, warmup: int) -> float:
    """Median over `repeats` of the synchronised time of `calls` back-to-back calls, per call, in ms."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        timer = DeviceTimer(device)
        with timer:
            for _ in range(calls):
                fn()
        samples.append(timer.seconds * 1e3 / calls)
    return sorted(samples)[len(samples) // 2]


def _measure(row: dict[str, Any], key: str, fn: Callable[[], object], timing: dict[str, Any]) -> None:
    """Time a baseline column; a baseline this torch build cannot run is recorded, not fatal."""
    try:
        row[key] = _time_ms(fn, **timing)
    except (RuntimeError, NotImplementedError) as exc:
        row[key.replace("_ms", "_error")] = f"{type(exc).__name__}: {exc}"


def _model(sizes: list[int], sparsity: float | None, device: torch.device, seed: int):
    import sparselayer

    gen = torch.Generator().manual_seed(seed)
    return sparselayer.SparseMLP(sizes, sparsity=sparsity, hidden_activation="relu", output_activation="sigmoid",
                                 generator=gen).to(device)


def _summed_mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output, target, reduction="sum")  # the thesis's loss and lr reading


def _time_inference(row: dict[str, Any], model: torch.nn.Module, x: torch.Tensor, timing: dict[str, Any]) -> None:
    model.eval()
    with torch.no_grad():
        row["inference_ms"] = _time_ms(lambda: model(x).argmax(dim=1), **timing)
    if row["sparsity"] is not None:
        baseline = TorchSparseMLP(model, lr=thesis.SPARSE_LR)
        _measure(row, "torch_sparse_inference_ms", lambda: baseline.predict(x), timing)


def _time_training(row: dict[str, Any], model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                   timing: dict[str, Any]) -> None:
    """One training iteration of the thesis's kind (batch 512, MSE summed, plain SGD) in each implementation."""
    model.train()
    lr = thesis.SPARSE_LR if row["sparsity"] is not None else thesis.DENSE_LR
    if row["sparsity"] is not None:
        baseline = TorchSparseMLP(model, lr=lr)  # copies the weights before ours trains them
        _measure(row, "torch_sparse_training_ms", lambda: baseline.train_step(x, target), timing)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    row["training_ms"] = _time_ms(lambda: train_step(model, _summed_mse, optimizer, x, target), **timing)
    if x.device.type == "cuda":  # the same iteration replayed from a CUDA graph, as `sweep train` runs it
        step = GraphedTrainStep(model, _summed_mse, optimizer, x.device)
        with step.on_stream():
            row["graph_training_ms"] = _time_ms(lambda: step(x, target), **timing)


def run_table3(*, data_dir: str | None = None, device: str = "auto", quick: bool = False,
               out_dir: str | Path = "results", seed: int = 0, progress: bool = True) -> dict[str, Any]:
    torch_device = common.pick_device(device)
    clock = common.Stopwatch()
    data = common.load_dataset_for_timing(data_dir, torch_device)
    repeats, calls, warmup = (3, 2, 1) if quick else (7, 20, 5)
    batch = thesis.BATCH_SIZE
    x_test = data.x_test  # (10000, 784), all of the thesis's test samples even with --quick
    index = torch.randperm(data.x_train.shape[0], generator=torch.Generator().manual_seed(seed))[:batch].to(torch_device)
    x_batch = data.x_train[index]  # (512, 784)
    target = F.one_hot(data.y_train[index], data.n_classes).float()  # (512, 10)
    n_in, n_out = data.n_features, data.n_classes
    inference_sizes = [n_in, *thesis.TABLE3_INFERENCE_HIDDEN, n_out]
    training_sizes = [n_in, *thesis.TABLE3_TRAINING_HIDDEN, n_out]

    payload: dict[str, Any] = {
        "table": "3",
        **common.run_header(clock, quick),
        "environment": common.environment(torch_device),
        "data": data.describe(),
        "inference_network": inference_sizes,
        "training_network": training_sizes,
        "batch_size": batch,
        "timing": f"median over {repeats} repeats of {calls} back-to-back calls, synchronised, after {warmup} warm-up "
                  "calls; inference = forward + argmax of all test samples in one batch; training = forward, "
                  "backward and SGD update of one batch (no topology evolution)",
        "rows": [],
    }
    bar = tqdm(total=len(ROWS), desc="table3", unit="row", disable=not progress)
    for label in ROWS:
        bar.set_description(f"table3 {label}")
        sparsity = thesis.SPARSITY_OF_ROW[label]
        row: dict[str, Any] = {"row": label, "sparsity": sparsity, "thesis": thesis.TABLE3[label]}
        timing = dict(device=torch_device, calls=calls, repeats=repeats, warmup=warmup)

        _time_inference(row, _model(inference_sizes, sparsity, torch_device, seed), x_test, timing)
        _time_training(row, _model(training_sizes, sparsity, torch_device, seed), x_batch, target, timing)
        payload["rows"].append(row)
        _add_speedups(payload)
        payload["wall_s"] = round(clock.seconds, 1)
        common.save(Path(out_dir), "table3", payload, markdown(payload))  # rows so far survive an interruption
        bar.update(1)
    bar.close()
    payload["complete"] = True
    payload["wall_s"] = round(clock.seconds, 1)
    common.save(Path(out_dir), "table3", payload, markdown(payload))
    return payload


def _add_speedups(payload: dict[str, Any]) -> None:
    dense = payload["rows"][0]
    for row in payload["rows"]:
        for key in ("inference_ms", "torch_sparse_inference_ms"):
            if key in row:
                row[key.replace("_ms", "_speedup")] = dense["inference_ms"] / row[key]
        for key in ("training_ms", "torch_sparse_training_ms"):
            if key in row:
                row[key.replace("_ms", "_speedup")] = dense["training_ms"] / row[key]
        if "graph_training_ms" in row and "graph_training_ms" in dense:
            row["graph_training_speedup"] = dense["graph_training_ms"] / row["graph_training_ms"]


def _ms(value: float | None, speedup: float | None = None, error: str | None = None) -> str:
    if error:
        return "error (see JSON)"
    if value is None:
        return "-"
    text = f"{value:.3g}" if value < 100 else f"{value:.0f}"
    return text + (f" ({speedup:.1f}x)" if speedup is not None else "")


def markdown(payload: dict[str, Any]) -> str:
    env = payload["environment"]
    dense_t = thesis.TABLE3["dense"]
    lines = [
        "# Thesis Table 3, reproduced: inference and training-iteration times" + (" (QUICK)" if payload["quick"] else ""),
        "",
        f"Command: `{payload['command']}`  ",
        f"Started {payload['started']}, wall time {payload['wall_s']:.0f} s"
        + ("" if payload.get("complete") else " (INCOMPLETE: still running or interrupted)")
        + f". Device: {env['device']}, torch {env['torch']}.  ",
        f"Data: {payload['data']['dataset']} ({payload['data']['test_rows']} test samples for inference; one batch of "
        f"{payload['batch_size']} training samples).  ",
        f"Inference: {'-'.join(map(str, payload['inference_network']))}; training: "
        f"{'-'.join(map(str, payload['training_network']))} at batch {payload['batch_size']}.  ",
        f"Timing: {payload['timing']}.  ",
        "Speedups are against the dense PyTorch row measured in this run (nn.Linear: cuBLAS on a GPU). "
        "The thesis's times are from its own GPU (2020), so compare speedups, not milliseconds.",
        "",
        "| Network | Thesis inference ms | sparselayer inference ms | torch.sparse CSR inference ms | "
        "Thesis training ms | sparselayer training ms | torch.sparse CSR training ms | "
        "sparselayer training ms, CUDA graph |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["rows"]:
        t = row["thesis"]
        t_inf = _ms(t["inference_ms"], dense_t["inference_ms"] / t["inference_ms"])
        t_train = _ms(t["training_ms"], dense_t["training_ms"] / t["training_ms"])
        name = "dense (PyTorch nn.Linear)" if row["sparsity"] is None else f"sparse {row['row']}"
        lines.append(
            f"| {name} | {t_inf} | {_ms(row['inference_ms'], row.get('inference_speedup'))} | "
            f"{_ms(row.get('torch_sparse_inference_ms'), row.get('torch_sparse_inference_speedup'), row.get('torch_sparse_inference_error'))} | {t_train} | "
            f"{_ms(row['training_ms'], row.get('training_speedup'))} | "
            f"{_ms(row.get('torch_sparse_training_ms'), row.get('torch_sparse_training_speedup'), row.get('torch_sparse_training_error'))} | "
            f"{_ms(row.get('graph_training_ms'), row.get('graph_training_speedup'))} |")
    cublas = thesis.TABLE3["dense cuBLAS"]
    lines += ["", "The CUDA-graph column replays the whole training iteration (forward, loss, backward, SGD step) from "
              "one CUDA graph (`sweep/graph_step.py`, what `sweep train` does on a GPU); its speedups are against the "
              "dense network replayed the same way in this run.",
              "", f"The thesis's dense cuBLAS network took {cublas['inference_ms']:.0f} ms for inference (1.0x its own "
              "dense); our dense row is PyTorch's nn.Linear, i.e. cuBLAS on a GPU.", ""]
    return "\n".join(lines)
