"""The trainer's configuration: a plain dict of known keys with the thesis's defaults, validated early."""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from .data.registry import DATASETS
from .graph_step import PRECISIONS

LOSSES = ("mse", "cross_entropy")
REDUCTIONS = ("sum", "mean")
OPTIMIZERS = ("sgd", "momentum", "adam")
GROWTHS = ("gradient", "random", "none")
INITS = ("sparse_xavier", "xavier")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class ConfigError(ValueError):
    """A trainer configuration key is unknown or has a bad value; the message names the key and the fix."""


@dataclass
class TrainConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    sparsity: float | list[float | None] | None = 0.9
    loss: str = "mse"
    # The thesis's sparse lr = 1/(2*batch) is a mean-gradient step of order 1 only on a loss summed over the
    # batch (and the outputs); on a mean-reduced loss the same lr is orders of magnitude too small.
    loss_reduction: str = "sum"
    optimizer: str = "sgd"
    lr: float | None = None  # None -> 1/(2*batch) with any sparse layer, 1e-4 for a dense network
    batch_size: int = 512
    epochs: int = 10
    growth: str = "gradient"  # "none": the topology never changes (no evolution at all)
    ttp: float = 0.001
    tau: float = 0.01
    tau_factor: float | None = None  # None -> the evolver's default
    k: int | None = None  # None -> thesis equation 1, k = sqrt(N_t)
    evolve_every: int = 1
    prune_dead: bool = False
    regrow: float = 1.0
    init: str = "sparse_xavier"
    seed: int = 0
    device: str = "auto"
    # Replay each training iteration from a CUDA graph (sweep/graph_step.py); ignored on the CPU.
    cuda_graph: bool = True
    # "bf16": forward pass, loss and evaluation under bfloat16 autocast (float32 weights, gradients and loss).
    precision: str = "fp32"

    @classmethod
    def from_any(cls, config: "TrainConfig | dict[str, Any] | None") -> "TrainConfig":
        if config is None:
            return cls().validated()
        if isinstance(config, TrainConfig):
            return dataclasses.replace(config).validated()
        if not isinstance(config, dict):
            raise ConfigError(f"a trainer config must be a dict or TrainConfig, not {type(config).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in config if k not in known]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"unknown trainer config key(s): {', '.join(hints)}; known keys: {', '.join(sorted(known))}")
        return cls(**config).validated()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # --- derived values -------------------------------------------------------------------------------------
    def layer_sparsities(self) -> list[float]:
        """One sparsity per weight layer (len(hidden) + 1); 0.0 means dense."""
        n_layers = len(self.hidden) + 1
        if isinstance(self.sparsity, list):
            return [float(s or 0.0) for s in self.sparsity]
        return [float(self.sparsity or 0.0)] * n_layers

    @property
    def is_sparse(self) -> bool:
        return any(s > 0 for s in self.layer_sparsities())

    def effective_lr(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 1.0 / (2 * self.batch_size) if self.is_sparse else 1e-4

    # --- validation -----------------------------------------------------------------------------------------
    def validated(self) -> "TrainConfig":
        def choice(key: str, options: tuple[str, ...]) -> None:
            value = getattr(self, key)
            if value not in options:
                raise ConfigError(f"{key} must be one of {', '.join(options)}, not {value!r}")

        def integer(key: str, minimum: int, optional: bool = False) -> None:
            value = getattr(self, key)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{key} must be an integer >= {minimum}, not {value!r}")

        def number(key: str, low: float, high: float | None = None, optional: bool = False,
                   low_open: bool = True) -> None:
            value = getattr(self, key)
            if optional and value is None:
                return
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                value = float(value)
                ok = (value > low if low_open else value >= low) and (high is None or value < high)
            if not ok:
                bounds = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high is not None else "")
                raise ConfigError(f"{key} must be a number {bounds}, not {getattr(self, key)!r}")

        choice("dataset", tuple(DATASETS))
        choice("loss", LOSSES)
        choice("loss_reduction", REDUCTIONS)
        choice("optimizer", OPTIMIZERS)
        choice("growth", GROWTHS)
        choice("init", INITS)
        choice("precision", PRECISIONS)
        if not isinstance(self.hidden, (list, tuple)) or any(
                isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ConfigError(f"hidden must be a list of positive layer sizes, e.g. [256, 256, 256], not {self.hidden!r}")
        self.hidden = list(self.hidden)
        self._validate_sparsity()
        number("lr", 0.0, optional=True)
        integer("batch_size", 1)
        integer("epochs", 1)
        number("ttp", 0.0, 1.0)
        number("tau", 0.0)
        number("tau_factor", 1.0, optional=True)
        integer("k", 1, optional=True)
        integer("evolve_every", 1)
        number("regrow", 0.0, low_open=False)
        if not isinstance(self.prune_dead, bool):
            raise ConfigError(f"prune_dead must be true or false, not {self.prune_dead!r}")
        if self.prune_dead and self.growth == "none":
            raise ConfigError("prune_dead changes the topology, so it needs growth gradient or random, not none")
        if not isinstance(self.cuda_graph, bool):
            raise ConfigError(f"cuda_graph must be true or false, not {self.cuda_graph!r}")
        integer("seed", 0)
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            self.data_dir = str(self.data_dir)
        return self

    def _validate_sparsity(self) -> None:
        def ok(s: Any) -> bool:
            return s is None or (isinstance(s, (int, float)) and not isinstance(s, bool) and 0.0 <= s < 1.0)

        n_layers = len(self.hidden) + 1
        if isinstance(self.sparsity, (list, tuple)):
            if len(self.sparsity) == 1:
                self.sparsity = self.sparsity[0]
            elif len(self.sparsity) != n_layers or not all(ok(s) for s in self.sparsity):
                raise ConfigError(
                    f"sparsity must be one value in [0, 1) or a list of {n_layers} (one per weight layer of hidden="
                    f"{self.hidden}), each in [0, 1) or None for dense; got {self.sparsity!r}")
            else:
                self.sparsity = [None if not s else float(s) for s in self.sparsity]  # 0 -> None: dense
                return
        if not ok(self.sparsity):
            raise ConfigError(f"sparsity must be in [0, 1) (0 or None = dense), not {self.sparsity!r}")
        self.sparsity = float(self.sparsity) if self.sparsity else None


DEFAULTS = TrainConfig().to_dict()
