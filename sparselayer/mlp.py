"""SparseMLP: the thesis's networks (sparse hidden layers, ReLU, sigmoid output)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from ._library import to_feature_major
from .init import check_sparsity, init_std
from .layer import SparseLinear

__all__ = ["SparseMLP"]

_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, None: nn.Identity}


class SparseMLP(nn.Module):
    """Fully connected network sizes[0] -> sizes[1] -> ... -> sizes[-1] of SparseLinear layers.

    sparsity: one float for every layer, a list with one entry per layer (len(sizes) - 1), or None; a layer
    whose sparsity is None or 0 is a dense nn.Linear (initialised with the thesis's plain Xavier sigma, the
    sparse formula at sparsity 0). Inputs (batch, ...) are flattened to (batch, sizes[0]).

    Under `torch.autocast(device, dtype=torch.bfloat16)` every layer runs with bf16 activations (the dense ones
    by autocast, the sparse ones in their bf16-activation mode) and float32 weights and gradients.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        sparsity: float | Sequence[float | None] | None = 0.9,
        hidden_activation: str | None = "relu",
        output_activation: str | None = "sigmoid",
        bias: bool = True,
        init: str = "sparse_xavier",
        device=None,
        dtype=None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes] if _is_int_list(sizes) else None
        if not sizes or len(sizes) < 2 or min(sizes) <= 0:
            raise ValueError(f"sizes must list at least 2 positive layer widths, e.g. [784, 256, 10]; got {sizes!r}")
        n_layers = len(sizes) - 1
        per_layer = _per_layer_sparsity(sparsity, n_layers)
        for name, act in (("hidden_activation", hidden_activation), ("output_activation", output_activation)):
            if act not in _ACTIVATIONS:
                raise ValueError(f"{name} must be one of {sorted(k for k in _ACTIVATIONS if k)} or None, got {act!r}")
        self.sizes = sizes
        layers: list[nn.Module] = []
        for i, s in enumerate(per_layer):
            n_in, n_out = sizes[i], sizes[i + 1]
            if s is None:
                layers.append(_dense_linear(n_in, n_out, bias, init, device, dtype, generator))
            else:
                layers.append(SparseLinear(n_in, n_out, s, bias, init, device, dtype, generator))
        self.layers = nn.ModuleList(layers)
        self.hidden_activation = _ACTIVATIONS[hidden_activation]()
        self.output_activation = _ACTIVATIONS[output_activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1) if x.dim() > 2 else x
        if x.dim() != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"SparseMLP expects inputs (batch, {self.sizes[0]}), got shape {tuple(x.shape)}")
        if any(isinstance(m, SparseLinear) for m in self.layers):
            # Activations stay feature-major from layer to layer (the op contract's Layouts, `_library.py`): the
            # sparse products then read them and write their results, gradients included, without a transposed
            # copy per call. One copy in, one out, so callers see a row-major result as from any nn.Module.
            x = to_feature_major(x)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            x = self.output_activation(x) if i == len(self.layers) - 1 else self.hidden_activation(x)
        return x.contiguous()  # (batch, sizes[-1])

    def sparse_layers(self) -> list[SparseLinear]:
        return [m for m in self.layers if isinstance(m, SparseLinear)]

    @property
    def nnz(self) -> int:
        """Stored weights (nonzeros of sparse layers, every weight of dense ones), biases excluded."""
        return sum(m.nnz if isinstance(m, SparseLinear) else m.weight.numel() for m in self.layers)

    @property
    def overall_sparsity(self) -> float:
        """Fraction of zero weights over all layers, as if every layer were dense."""
        full = sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        return 1.0 - self.nnz / full


def _is_int_list(sizes) -> bool:
    return isinstance(sizes, Sequence) and all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes
    )


def _per_layer_sparsity(sparsity, n_layers: int) -> list[float | None]:
    if sparsity is None or isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool):
        per_layer = [sparsity] * n_layers
    elif isinstance(sparsity, Sequence) and not isinstance(sparsity, str):
        per_layer = list(sparsity)
        if len(per_layer) != n_layers:
            raise ValueError(
                f"sparsity lists {len(per_layer)} values but the network has {n_layers} layers "
                f"(len(sizes) - 1); give one per layer or a single float"
            )
    else:
        raise TypeError(f"sparsity must be a float, a list of floats/None (one per layer) or None, got {sparsity!r}")
    return [None if s is None or s == 0 else check_sparsity(s) for s in per_layer]


def _dense_linear(n_in, n_out, bias, init, device, dtype, generator) -> nn.Linear:
    layer = nn.Linear(n_in, n_out, bias=bias, device=device, dtype=dtype)
    std = init_std(n_in, n_out, 0.0, init)
    with torch.no_grad():
        gen_device = generator.device if generator is not None else layer.weight.device
        w = torch.empty(layer.weight.shape, device=gen_device, dtype=layer.weight.dtype)
        layer.weight.copy_(w.normal_(0.0, std, generator=generator))
        if bias:
            layer.bias.zero_()
    return layer
