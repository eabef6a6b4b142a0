"""SparseLinear: an nn.Linear whose weight exists only as CSR (row pointers, column indices, values).

Mixed precision: a float32 layer also takes bfloat16 inputs ("bf16-activation mode"): the weights stay
float32, the output and the input's gradient are bfloat16, the weight gradients float32, and every product
accumulates in float32. Under `torch.autocast(..., dtype=torch.bfloat16)` the layer casts float32 inputs to
bfloat16 itself, as nn.Linear does.
"""

from __future__ import annotations

import torch
from torch import nn

from . import ops
from .csr import CSRError, transpose_index, validate_csr
from .init import INITS, check_sparsity, init_std, init_values, sparse_topology

__all__ = ["SparseLinear"]


class SparseLinear(nn.Module):
    """y = x @ W^T + b with W (out_features, in_features) stored as CSR; inputs (..., in_features).

    `values` (nnz,) is the only weight Parameter, so optimizers keep state for the nonzeros only;
    `crow_indices` / `col_indices` are persistent buffers, `csc_*` the transposed index used by the backward
    (rebuilt by `set_topology`, not saved). No dense (out, in) tensor is created except by `to_dense`.

    Initialisation follows the thesis (3.2.1, see `sparselayer.init`); the bias starts at zero.

    Mixed precision: a float32 layer given bfloat16 inputs, or float32 inputs under bfloat16 autocast for
    their device, runs in bf16-activation mode (bfloat16 output, float32 weight gradients, float32
    accumulation; see `sparselayer.ops`). There are no float16 kernels: under float16 autocast the layer runs
    in float32 (float16 inputs are cast up, the output is float32). A float64 layer ignores autocast.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        sparsity: float,
        bias: bool = True,
        init: str = "sparse_xavier",
        device=None,
        dtype=None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_features(in_features, out_features)
        sparsity = check_sparsity(sparsity)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.in_features = in_features
        self.out_features = out_features
        self.init = init
        crow, col = sparse_topology(in_features, out_features, sparsity, device=device, generator=generator)
        std = init_std(in_features, out_features, sparsity, init)
        values = init_values(col.numel(), std, device=device, dtype=dtype, generator=generator)
        self.values = nn.Parameter(values)
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None
        self.register_buffer("crow_indices", crow)
        self.register_buffer("col_indices", col)
        self.register_buffer("csc_col_ptr", None, persistent=False)
        self.register_buffer("csc_row", None, persistent=False)
        self.register_buffer("csc_perm", None, persistent=False)
        self._rebuild_transpose()

    # ------------------------------------------------------------------------------------------------
    # Construction from explicit weights

    @classmethod
    def from_csr(
        cls,
        crow_indices: torch.Tensor,
        col_indices: torch.Tensor,
        values: torch.Tensor,
        shape: tuple[int, int],
        bias: torch.Tensor | None = None,
    ) -> "SparseLinear":
        """A layer with exactly this CSR weight (validated: sorted, unique, in-range indices) of shape (out, in)."""
        n_out, n_in = _shape(shape)
        validate_csr(crow_indices, col_indices, (n_out, n_in), values)
        if values.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"values must be float32 or float64, got {values.dtype}")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features, layer.init = n_in, n_out, "given"
        layer.values = nn.Parameter(values.detach().clone())
        layer.bias = None
        if bias is not None:
            bias = _check_bias(bias, n_out, values)
            layer.bias = nn.Parameter(bias.detach().clone())
        layer.register_buffer("crow_indices", crow_indices.detach().clone())
        layer.register_buffer("col_indices", col_indices.detach().clone())
        layer.register_buffer("csc_col_ptr", None, persistent=False)
        layer.register_buffer("csc_row", None, persistent=False)
        layer.register_buffer("csc_perm", None, persistent=False)
        layer._rebuild_transpose()
        return layer

    @classmethod
    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> "SparseLinear":
        """A layer keeping the nonzeros of a dense (out, in) weight (the given tensor is dense already)."""
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ValueError(f"weight must be a 2-D (out_features, in_features) tensor, got {getattr(weight, 'shape', weight)}")
        csr = weight.detach().to_sparse_csr()
        return cls.from_csr(
            csr.crow_indices().long(), csr.col_indices().long(), csr.values(), tuple(weight.shape), bias
        )

    def to_dense(self) -> torch.Tensor:
        """The (out, in) dense weight: for tests and inspection only, never used in training."""
        dense = self.values.new_zeros((self.out_features, self.in_features))
        rows = torch.repeat_interleave(
            torch.arange(self.out_features, device=self.values.device), self.crow_indices.diff(), output_size=self.nnz
        )
        dense[rows, self.col_indices] = self.values.detach()
        return dense

    # ------------------------------------------------------------------------------------------------
    # Topology

    @property
    def nnz(self) -> int:
        return self.col_indices.numel()

    @property
    def sparsity(self) -> float:
        """The current fraction of zero weights."""
        return 1.0 - self.nnz / (self.out_features * self.in_features)

    def set_topology(
        self, crow_indices: torch.Tensor, col_indices: torch.Tensor, values: torch.Tensor, validate: bool = True
    ) -> None:
        """Replace the CSR weight (nnz may change). The `values` Parameter object is kept (its .data is
        swapped), so optimizers still hold it; their per-weight state must be remapped by the caller
        (sparselayer.evolution does). validate=False skips the index check (one device sync) for callers
        that build CSR correctly by construction."""
        if validate:
            validate_csr(crow_indices, col_indices, (self.out_features, self.in_features), values)
        if values.dtype != self.values.dtype:
            raise TypeError(f"values are {values.dtype} but the layer is {self.values.dtype}")
        device = self.values.device
        self.crow_indices = crow_indices.to(device)
        self.col_indices = col_indices.to(device)
        self.values.data = values.detach().to(device)
        self._rebuild_transpose()

    def _rebuild_transpose(self) -> None:
        ccol, row, perm = transpose_index(self.crow_indices, self.col_indices, self.in_features)
        self.csc_col_ptr, self.csc_row, self.csc_perm = ccol, row, perm

    # ------------------------------------------------------------------------------------------------
    # nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"SparseLinear expects inputs (..., {self.in_features}), got shape {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        x = _autocast_input(x, self.values.dtype)
        y = ops.linear(
            self.crow_indices,
            self.col_indices,
            self.csc_col_ptr,
            self.csc_row,
            self.csc_perm,
            self.values,
            x.reshape(-1, self.in_features),
            self.out_features,
            self.bias,
        )  # (batch, out)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"sparsity={self.sparsity:.4f}, nnz={self.nnz}, bias={self.bias is not None}"
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # A saved layer may have evolved to another topology (even another nnz): adopt the saved one first,
        # so the default loader then copies into buffers of matching shapes.
        keys = [prefix + k for k in ("crow_indices", "col_indices", "values")]
        if all(k in state_dict for k in keys):
            crow, col, values = (state_dict[k] for k in keys)
            try:
                validate_csr(crow, col, (self.out_features, self.in_features), values)
            except CSRError as e:
                error_msgs.append(f"the saved CSR weight for {prefix or 'the layer'} is invalid: {e}")
                return
            with torch.no_grad():
                self.set_topology(crow, col, values.to(self.values.dtype), validate=False)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )



_AUTOCAST_DEVICES = ("cpu", "cuda")  # where the ops have kernels; torch.is_autocast_enabled raises for "meta"


def _autocast_input(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x as autocast would hand it to a float32 op of a layer whose values are `dtype`."""
    device = x.device.type
    # A tuple test, not torch.amp.is_autocast_available: Dynamo (torch 2.11) cannot trace that one.
    if dtype != torch.float32 or device not in _AUTOCAST_DEVICES or not torch.is_autocast_enabled(device):
        return x  # autocast leaves float64 alone, as it does for nn.Linear
    fast = torch.get_autocast_dtype(device)
    if fast == torch.bfloat16 and x.dtype == torch.float32:
        return x.to(torch.bfloat16)  # bf16-activation mode, the analogue of nn.Linear's bf16 matmul
    if fast == torch.float16 and x.dtype == torch.float16:
        return x.to(torch.float32)  # no float16 kernels: run in float32, as autocast does for its fp32 ops
    return x


def _check_features(in_features, out_features) -> None:
    for name, v in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def _shape(shape) -> tuple[int, int]:
    try:
        n_out, n_in = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (out_features, in_features), got {shape!r}") from None
    _check_features(n_in, n_out)
    return n_out, n_in


def _check_bias(bias: torch.Tensor, n_out: int, values: torch.Tensor) -> torch.Tensor:
    if not isinstance(bias, torch.Tensor) or bias.shape != (n_out,):
        raise ValueError(f"bias must be a tensor of shape ({n_out},), got {getattr(bias, 'shape', bias)!r}")
    return bias.to(device=values.device, dtype=values.dtype)
