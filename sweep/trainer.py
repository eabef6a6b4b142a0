"""One sweep trial: `train(config) -> metrics`. Builds the thesis's network, trains it on a device-resident
dataset batched by index, evolves its topology every `evolve_every` epochs, and measures accuracy, time and
memory. Everything returned is a plain JSON type (see docs/architecture.md, "Trainer")."""

from __future__ import annotations

import contextlib
import functools
import math
import shlex
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data import Dataset, load_dataset
from .graph_step import GraphedTrainStep, gpu_training, precision_context, train_step
from .metrics import device_name, model_size
from .timing import DeviceTimer, median_ms, synchronize
from .train_config import DEFAULTS, ConfigError, TrainConfig

__all__ = ["train", "collapse_reason", "config_to_command", "build_model", "resolve_device", "TrainConfig", "ConfigError", "DEFAULTS"]

Report = Callable[[int, float], None]
_EVAL_CHUNK = 16384
# A run "collapsed" when it first got this far above chance (fraction) ...
COLLAPSE_MIN_GAIN = 0.05
# ... then ended having lost more than this share of its best accuracy gain over chance ...
COLLAPSE_LOST_GAIN = 0.5
# ... while its train loss ended at least this many times its lowest (a blow-up, not overfitting).
COLLAPSE_LOSS_RISE = 1.5


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but this machine has no usable CUDA GPU; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    return device


@functools.lru_cache(maxsize=2)
def _cached_dataset(name: str, data_dir: str | None, device: str) -> Dataset:
    # Sweep workers run many trials on one dataset: load and move it to the device once per process.
    return load_dataset(name, data_dir, device=device, progress=False)


def build_model(cfg: TrainConfig, n_in: int, n_out: int, device: torch.device,
                generator: torch.Generator | None = None) -> nn.Module:
    import sparselayer

    sizes = [n_in, *cfg.hidden, n_out]
    sparsity = [s if s > 0 else None for s in cfg.layer_sparsities()]
    model = sparselayer.SparseMLP(
        sizes=sizes,
        sparsity=sparsity,
        hidden_activation="relu",
        output_activation="sigmoid" if cfg.loss == "mse" else None,
        init=cfg.init,
        generator=generator,
    )
    return model.to(device)


def _build_optimizer(cfg: TrainConfig, model: nn.Module, lr: float, graphed: bool) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if cfg.optimizer == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr, capturable=graphed)  # a graph replays the step: its counter on the GPU


def _build_evolver(cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                   generator: torch.Generator | None):
    if cfg.growth == "none" or not cfg.is_sparse:
        return None  # "none": a fixed topology, the thesis's "no evolution" baseline
    from sparselayer.evolution import TopologyEvolver

    options: dict[str, Any] = dict(optimizer=optimizer, growth=cfg.growth, ttp=cfg.ttp, tau=cfg.tau, k=cfg.k,
                                   regrow=cfg.regrow, prune_dead=cfg.prune_dead, evolve_every=cfg.evolve_every,
                                   generator=generator)
    if cfg.tau_factor is not None:
        options["tau_factor"] = cfg.tau_factor
    return TopologyEvolver(model, **options)


def _loss_fn(cfg: TrainConfig, n_classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if cfg.loss == "cross_entropy":
        return lambda logits, y: F.cross_entropy(logits, y, reduction=cfg.loss_reduction)

    def mse(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = F.one_hot(y, n_classes).to(output.dtype)  # (batch, n_classes)
        return F.mse_loss(output, target, reduction=cfg.loss_reduction)

    return mse


def _per_sample_scale(cfg: TrainConfig, batch: int, n_classes: int) -> float:
    """Factor turning one batch's loss into that batch's summed per-sample loss (MSE summed over outputs)."""
    if cfg.loss_reduction == "sum":
        return 1.0
    return float(batch * n_classes) if cfg.loss == "mse" else float(batch)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], _EVAL_CHUNK):
        out = model(x[start:start + _EVAL_CHUNK])  # (chunk, n_classes)
        correct += (out.argmax(dim=1) == y[start:start + _EVAL_CHUNK]).sum()
    return float(correct.item()) / x.shape[0]


def collapse_reason(test_accuracy: list[float], train_loss: list[float], chance: float) -> str | None:
    """Why a run with finite losses still counts as diverged, or None: it learned, then blew up and ended near
    chance (e.g. a dead ReLU network after too large a step), so its final accuracy is not a result.

    `chance` is the accuracy of always answering the test set's most frequent class."""
    if len(test_accuracy) < 2 or len(train_loss) < 2:
        return None
    best = max(test_accuracy)
    best_epoch = test_accuracy.index(best) + 1
    final, lowest = test_accuracy[-1], min(train_loss)
    lost_gain = best - chance >= COLLAPSE_MIN_GAIN and final - chance < (1 - COLLAPSE_LOST_GAIN) * (best - chance)
    loss_blew_up = train_loss[-1] >= COLLAPSE_LOSS_RISE * lowest
    if not (lost_gain and loss_blew_up):
        return None
    return (f"collapsed: test accuracy fell from {best:.2%} (epoch {best_epoch}) to {final:.2%} (chance "
            f"{chance:.2%}) while the train loss rose from {lowest:.4g} to {train_loss[-1]:.4g}; lower the lr")


def _chance_accuracy(y: torch.Tensor, n_classes: int) -> float:
    return float(torch.bincount(y, minlength=n_classes).max().item()) / max(y.shape[0], 1)


def train(config: TrainConfig | dict[str, Any] | None = None, *, report: Report | None = None,
          progress: bool = False, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train one configuration and return its metrics (see docs/architecture.md for keys and units).

    `report(epoch, test_accuracy)` is called after every epoch and may raise (e.g. optuna.TrialPruned).
    `dataset` overrides loading `config["dataset"]` (it is moved to the training device).
    """
    cfg = TrainConfig.from_any(config)
    device = resolve_device(cfg.device)
    with gpu_training() if device.type == "cuda" else contextlib.nullcontext():
        return _train(cfg, device, report, progress, dataset)


def _train(cfg: TrainConfig, device: torch.device, report: Report | None, progress: bool,
           dataset: Dataset | None) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    init_gen = torch.Generator().manual_seed(cfg.seed)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)
    evolve_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    data = dataset.to(device) if dataset is not None else _cached_dataset(cfg.dataset, cfg.data_dir, str(device))
    model = build_model(cfg, data.n_features, data.n_classes, device, init_gen)
    lr = cfg.effective_lr()
    graphed = cfg.cuda_graph and device.type == "cuda"
    optimizer = _build_optimizer(cfg, model, lr, graphed)
    evolver = _build_evolver(cfg, model, optimizer, evolve_gen)
    loss_fn = _loss_fn(cfg, data.n_classes)
    step = GraphedTrainStep(model, loss_fn, optimizer, device, precision=cfg.precision) if graphed else None
    in_precision = functools.partial(precision_context, device.type, cfg.precision)  # a fresh context per use

    n_train = data.x_train.shape[0]
    batch = min(cfg.batch_size, n_train)
    n_batches = math.ceil(n_train / batch)
    train_loss: list[float] = []
    test_accuracy: list[float] = []
    iteration_ms: list[float] = []
    epoch_s: list[float] = []
    status, reason = "ok", None

    epochs = tqdm(range(1, cfg.epochs + 1), desc=f"train {cfg.dataset}", unit="epoch", disable=not progress,
                  leave=False)
    for epoch in epochs:
        model.train()
        order = torch.randperm(n_train, generator=shuffle_gen).to(device)  # one small copy per epoch
        loss_total = torch.zeros((), dtype=torch.float64, device=device)
        train_timer, evolve_timer = DeviceTimer(device), DeviceTimer(device)
        with train_timer, (step.on_stream() if step else contextlib.nullcontext()):
            for b in range(n_batches):
                index = order[b * batch:(b + 1) * batch]
                x, y = data.x_train[index], data.y_train[index]  # (batch, n_in), (batch,)
                loss = step(x, y) if step is not None else train_step(model, loss_fn, optimizer, x, y, cfg.precision)
                loss_total += loss * _per_sample_scale(cfg, x.shape[0], data.n_classes)
            # Free the last batch's autograd graph before evolving: a live graph keeps the old-shape gradient
            # accumulator of each `values` Parameter, which the evolver may resize (nnz can change).
            del loss, x, y
        iteration_ms.append(train_timer.seconds * 1e3 / n_batches)
        epoch_loss = float(loss_total.item()) / n_train
        if not math.isfinite(epoch_loss):
            status, reason = "diverged", f"train loss became {epoch_loss} in epoch {epoch} (lr={lr:g}); lower the lr"
            epoch_s.append(train_timer.seconds)
            break
        train_loss.append(epoch_loss)
        if evolver is not None:
            with evolve_timer:
                if evolver.step(epoch, lr) and step is not None:
                    step.reset()  # new weights, optimizer state and layouts: capture again
        epoch_s.append(train_timer.seconds + evolve_timer.seconds)
        model.eval()
        with in_precision():
            accuracy = _accuracy(model, data.x_test, data.y_test)
        test_accuracy.append(accuracy)
        epochs.set_postfix(loss=f"{epoch_loss:.4g}", acc=f"{accuracy:.4f}")
        if report is not None:
            report(epoch, accuracy)

    finite = status == "ok"
    if finite:
        reason = collapse_reason(test_accuracy, train_loss, _chance_accuracy(data.y_test, data.n_classes))
        status = "ok" if reason is None else "diverged"
    model.eval()
    metrics: dict[str, Any] = {
        "status": status,
        "reason": reason,
        "epochs_run": len(train_loss),
        "train_loss": train_loss,
        "test_accuracy": test_accuracy,
        "best_test_accuracy": max(test_accuracy) if test_accuracy else 0.0,
        "final_test_accuracy": test_accuracy[-1] if test_accuracy else 0.0,
        # The median over epochs keeps first-epoch warm-up (kernel build, allocator) out of the per-iteration time.
        "ms_per_iteration": sorted(iteration_ms)[len(iteration_ms) // 2] if iteration_ms else None,
        "s_per_epoch": sum(epoch_s) / len(epoch_s) if epoch_s else None,
        "inference_ms": None,
        "peak_memory_bytes": None,
        **model_size(model),
        "device": device_name(device),
        "lr": lr,
    }
    if finite:  # a collapsed network still runs; a non-finite one is not worth timing
        with torch.no_grad(), in_precision():
            metrics["inference_ms"] = median_ms(lambda: model(data.x_test).argmax(dim=1), device)
    if device.type == "cuda":
        synchronize(device)
        metrics["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return metrics


def config_to_command(config: TrainConfig | dict[str, Any]) -> str:
    """The `sweep train ...` command line that reruns `config` (keys at their defaults are left out)."""
    cfg = TrainConfig.from_any(config)
    parts = ["sweep", "train"]
    for key, value in cfg.to_dict().items():
        if value == DEFAULTS[key] or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            parts.append(flag)
            parts.extend("0" if v is None else repr(v) if isinstance(v, float) else str(v) for v in value)
        else:
            parts.extend([flag, repr(value) if isinstance(value, float) else str(value)])
    return shlex.join(parts)
