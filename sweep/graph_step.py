"""Training iterations replayed from a CUDA graph, captured once per topology.

Why: the thesis's networks (and most sweep trials) are small, so an eager iteration on a GPU is bound by host
work: Python, the autograd engine and some thirty kernel launches for a four-layer sparse MLP, each a few
microseconds of GPU time. A CUDA graph launches the whole iteration (forward, loss, backward, optimizer step) at
once. What keeps a replayed iteration equal to an eager one:

- The graph is captured after `warmup` eager iterations on the capture stream, on real batches: they are training
  steps like any other, and they create what the capture must not (the optimizer's lazy state, cuBLAS workspaces,
  the sparse ops' per-topology layouts, which are cached per stream).
- Topology evolution replaces the weights, their optimizer state and the layouts, so `reset()` drops the graph and
  the next full batch starts warming up and capturing again.
- A batch of another size than the captured one (the last, partial batch of an epoch) runs eagerly.
- Adam must be built with capturable=True (its step counter then lives on the GPU).
- The evolver's hooks run once, at capture, and keep the graph's own input and cost buffers; every replay rewrites
  those buffers, so after an epoch they hold its last full batch, as after eager training.
- A capture must not overlap GPU work of other threads of the process (a Dask worker that runs two trials per
  GPU runs them in two threads; such a run hung on the H100). Every training run on a GPU registers itself with
  `gpu_training()`, and a step captures only while its run is the only one in the process, holding the lock
  that registration takes: a run that starts meanwhile waits for the capture to end, and while several runs
  are active every step runs eagerly (graphs captured earlier keep replaying; a replay is an ordinary launch).
- precision "bf16" runs the forward pass and the loss under bfloat16 autocast with its weight-cast cache off, as
  torch asks of autocast around graph captures: a cast cached during a capture lives in the graph's private memory
  pool and could be handed out after it. The cache would save nothing anyway: each iteration casts the weights
  the optimizer just changed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn


_LOCK = threading.Lock()
_active_runs = 0  # training runs on a GPU in this process (any thread), eager or graphed


@contextlib.contextmanager
def gpu_training() -> Iterator[None]:
    """Register one training run on a GPU for its duration (see the module docstring)."""
    global _active_runs
    with _LOCK:
        _active_runs += 1
    try:
        yield
    finally:
        with _LOCK:
            _active_runs -= 1


def active_gpu_trainings() -> int:
    return _active_runs


PRECISIONS = ("fp32", "bf16")


def precision_context(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """Where a forward pass runs: as is ("fp32"), or under bfloat16 autocast ("bf16": float32 weights and
    gradients, bf16 activations; sparselayer's layers follow autocast). No cast cache: see the module docstring."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=False)
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def forward_loss(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 x: torch.Tensor, y: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """loss_fn(model(x), y) under `precision`; in bf16 the output is cast to float32 first, so the loss (often
    a sum over the batch) is computed and returned in float32 whatever autocast's op lists say about it."""
    with precision_context(x.device.type, precision):
        out = model(x)  # (batch, n_classes)
        return loss_fn(out if precision == "fp32" else out.float(), y)


def train_step(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               precision: str = "fp32") -> torch.Tensor:
    """One eager training iteration on the batch (x, y); returns its loss, detached."""
    loss = forward_loss(model, loss_fn, x, y, precision)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


class GraphedTrainStep:
    """`step(x, y)` trains on one batch and returns its loss; use it inside `with step.on_stream():`."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 optimizer: torch.optim.Optimizer, device: torch.device, warmup: int = 2,
                 precision: str = "fp32") -> None:
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}; train eagerly on the CPU")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 eager iteration before a capture, not {warmup}")
        precision_context(device.type, precision)  # rejects an unknown precision now, not at the first step
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.precision = precision
        self.warmup = warmup
        self.stream = torch.cuda.Stream(device)
        self.captures = 0  # how many graphs were captured (one per topology)
        self.replays = 0
        self.skipped_captures = 0  # iterations run eagerly because other training runs shared the process
        self.reset()

    def reset(self) -> None:
        """Forget the graph: call it whenever the parameters or the optimizer's state tensors are replaced."""
        self._graph: torch.cuda.CUDAGraph | None = None
        self._x = self._y = self._loss = None
        self._eager_since_reset = 0

    @contextlib.contextmanager
    def on_stream(self) -> Iterator[None]:
        """Run the enclosed iterations on the capture stream, ordered after and before the caller's stream."""
        caller = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(caller)
        try:
            with torch.cuda.stream(self.stream):
                yield
        finally:
            caller.wait_stream(self.stream)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._graph is not None:
            if x.shape != self._x.shape or y.shape != self._y.shape:
                return self._eager(x, y)
            return self._replay(x, y)
        if self._eager_since_reset < self.warmup:
            self._eager_since_reset += 1
            return self._eager(x, y)
        with _LOCK:
            if _active_runs <= 1:
                self._capture(x, y)
        if self._graph is None:
            self.skipped_captures += 1
            return self._eager(x, y)
        return self._replay(x, y)

    def _eager(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return train_step(self.model, self.loss_fn, self.optimizer, x, y, self.precision)

    def _replay(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._x.copy_(x)
        self._y.copy_(y)
        self._graph.replay()
        self.replays += 1
        return self._loss

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._x, self._y = x.clone(), y.clone()  # the graph's input buffers, filled before each replay
        self.optimizer.zero_grad(set_to_none=True)  # the graph allocates the gradients it writes
        graph = torch.cuda.CUDAGraph()
        # thread_local: trials that share a process (threads of a Dask worker) keep using the GPU meanwhile.
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            loss = forward_loss(self.model, self.loss_fn, self._x, self._y, self.precision)
            loss.backward()
            self.optimizer.step()
        self._loss = loss.detach()
        self._graph = graph
        self.captures += 1
