"""Thesis 3.2.1 initialisation: an even, partitioned random topology and a sparsity-aware Xavier sigma.

Topology: every output neuron gets exactly n_w = round(in_features * (1 - sparsity)) inputs (at least one,
so no neuron starts disconnected). The input range [0, in_features) is cut into n_w equal partitions
(boundaries floor(p * in_features / n_w)) and each neuron draws one input uniformly inside each partition,
so columns come out sorted and unique per row without any sort.

Values: N(0, sigma) with
  "sparse_xavier": sigma = 2 / sqrt((N_in + N_out) * (1 - sparsity))   (the thesis's choice)
  "xavier":        sigma = 2 / sqrt(N_in + N_out)                       (the thesis's plain Xavier)
"""

from __future__ import annotations

import math

import torch

__all__ = ["INITS", "check_sparsity", "weights_per_row", "init_std", "sparse_topology", "init_values"]

INITS = ("sparse_xavier", "xavier")


def check_sparsity(sparsity) -> float:
    """Return sparsity as a float, or raise ValueError unless it is a number in [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"sparsity must be a number in [0, 1), got {type(sparsity).__name__} {sparsity!r}")
    sparsity = float(sparsity)
    if not 0.0 <= sparsity < 1.0 or math.isnan(sparsity):
        raise ValueError(
            f"sparsity must be in [0, 1) (the fraction of weights that are zero), got {sparsity}; "
            "e.g. 0.9 keeps 10% of the weights"
        )
    return sparsity


def weights_per_row(in_features: int, sparsity: float) -> int:
    """n_w: how many inputs each output neuron gets (thesis 3.2.1), at least 1."""
    return max(1, min(in_features, round(in_features * (1.0 - check_sparsity(sparsity)))))


def init_std(in_features: int, out_features: int, sparsity: float, init: str = "sparse_xavier") -> float:
    """The standard deviation of the initial weights (see the module docstring)."""
    sparsity = check_sparsity(sparsity)
    if init == "sparse_xavier":
        return 2.0 / math.sqrt((in_features + out_features) * (1.0 - sparsity))
    if init == "xavier":
        return 2.0 / math.sqrt(in_features + out_features)
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def sparse_topology(
    in_features: int,
    out_features: int,
    sparsity: float,
    *,
    device=None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The thesis's initial topology as CSR indices (crow (out+1,), col (out * n_w,)), both int64."""
    n_w = weights_per_row(in_features, sparsity)
    gen_device = generator.device if generator is not None else device
    bounds = torch.arange(n_w + 1, device=gen_device) * in_features // n_w  # (n_w + 1,) partition edges
    starts, sizes = bounds[:-1], bounds.diff()  # (n_w,), every size >= 1 since n_w <= in_features
    u = torch.rand((out_features, n_w), generator=generator, device=gen_device, dtype=torch.float64)
    offsets = (u * sizes).long().clamp_max_(sizes - 1)  # (out, n_w), uniform in [0, size)
    col = (starts + offsets).reshape(-1).to(device)
    crow = (torch.arange(out_features + 1, device=gen_device) * n_w).to(device)
    return crow, col


def init_values(
    nnz: int,
    std: float,
    *,
    device=None,
    dtype=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """nnz draws from N(0, std)."""
    gen_device = generator.device if generator is not None else device
    values = torch.empty(nnz, device=gen_device, dtype=dtype)
    values.normal_(0.0, std, generator=generator)
    return values.to(device)
