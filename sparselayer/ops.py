"""Typed wrappers for the sparselayer ops, plus their fake (meta) and autograd registrations.

The device-specific kernels register elsewhere against the schemas in `_library.py` (CPU: `cpu/`, CUDA:
`csrc/`, loaded by `_cuda.ensure_loaded()`); the dispatcher picks one by the tensors' device. What lives
here is device independent:

* `spmm`, `spmm_t`, `sddmm`: the three products (schemas in `_library.py`), each with `register_fake` (so
  `torch.compile` can trace them) and `register_autograd` in terms of the other two, so gradients of any
  order are sparse products too.
* `linear`: `spmm` plus bias that also takes W's transposed (CSC) index, so its backward uses the index
  the layer keeps instead of re-sorting it every step. `SparseLinear` calls this one.

Mixed precision ("bf16-activation mode", the dtype contract in `_library.py`): float32 values (and bias)
with bfloat16 activations give bfloat16 outputs and activation gradients, float32 weight (and bias)
gradients, every product accumulated in float32.
"""

from __future__ import annotations

import torch

from . import _cuda
from ._library import empty_activation, is_feature_major, sddmm_dtype  # importing _library defines the schemas
from ._library import to_feature_major
from .csr import pointers, row_indices, transpose_index

__all__ = ["spmm", "spmm_t", "sddmm", "linear"]

# The overloads, looked up once: every call pays for what it looks up (host time per op, kernels-notes.md v20).
_SPMM = torch.ops.sparselayer.spmm.default
_SPMM_T = torch.ops.sparselayer.spmm_t.default
_SDDMM = torch.ops.sparselayer.sddmm.default
_below_autograd = torch._C._AutoDispatchBelowAutograd
_functorch_active = torch._C._are_functorch_transforms_active


def _ensure_backend(a: torch.Tensor, b: torch.Tensor) -> None:
    # While torch.compile traces, the fake implementations below do this instead (they run as plain
    # Python during tracing), which keeps this branch out of the traced graph.
    if not _cuda._loaded and (a.is_cuda or b.is_cuda) and not torch.compiler.is_compiling():
        _cuda.ensure_loaded()


def _call(op: torch._ops.OpOverload, *args):
    """op(*args), dispatched past its autograd kernel where there is no graph to record.

    The autograd kernel that `torch.library.register_autograd` installs is Python: even with nothing to record it
    re-dispatches in Python, about 60 us of host time per call on the lent H100's host, three times per layer step,
    while the GPU waits for the host at a step's start and between its forward and backward
    (benchmarks/kernels-notes.md, v19).
    With grad mode off (an autograd.Function's forward, a backward without create_graph) or no input requiring grad,
    the call goes straight to the device kernel, as that autograd kernel itself would. While torch.compile traces
    or a functorch transform is active, the call keeps the normal path (those transforms live at the keys skipped)."""
    if torch.is_grad_enabled():
        for a in args:
            if isinstance(a, torch.Tensor) and a.requires_grad:
                return op(*args)
    if torch.compiler.is_compiling() or _functorch_active():
        return op(*args)
    with _below_autograd():
        return op(*args)


def _check_dense(name: str, t: torch.Tensor, width: int | None, what: str) -> None:
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch, {what}), got shape {tuple(t.shape)}")
    if width is not None and t.shape[1] != width:
        raise ValueError(f"{name} has {t.shape[1]} columns but the weight has {width} {what}")


_ALLOWED = "activations of the values' dtype (float32 or float64), or bfloat16 activations with float32 values"


def _check_activation(name: str, t: torch.Tensor, values: torch.Tensor) -> None:
    """The dtype contract of `_library.py`: values float32/float64; activations of their dtype, or bf16 with fp32."""
    dtype = values.dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"the weight values are {dtype}; allowed: float32 or float64 values ({_ALLOWED}); "
            "cast the values to float32 (and the activations to bfloat16 for mixed precision)"
        )
    if t.dtype == dtype or (t.dtype == torch.bfloat16 and dtype == torch.float32):
        return
    fix = f"cast {name} to {dtype}" + (
        " or torch.bfloat16" if dtype == torch.float32 else ", or use bfloat16 activations with float32 values"
    )
    raise TypeError(f"{name} is {t.dtype} but the weight values are {dtype}; allowed: {_ALLOWED}; {fix}")


def _check_sddmm_dtypes(grad_y: torch.Tensor, x: torch.Tensor) -> None:
    if grad_y.dtype != x.dtype:
        raise TypeError(
            f"grad_y is {grad_y.dtype} but x is {x.dtype}; allowed: grad_y and x of one dtype (float32, float64, "
            f"or bfloat16 for a float32 result); cast grad_y to {x.dtype}"
        )
    if x.dtype not in (torch.float32, torch.float64, torch.bfloat16):
        raise TypeError(
            f"grad_y and x are {x.dtype}; allowed: float32, float64, or bfloat16 (float32 result); "
            "cast both to float32 or torch.bfloat16"
        )


def _check_index(crow: torch.Tensor, idx: torch.Tensor, values: torch.Tensor | None) -> None:
    if crow.dtype != torch.int64 or idx.dtype != torch.int64:
        raise TypeError(f"CSR indices must be int64, got {crow.dtype} and {idx.dtype}")
    if values is not None and values.shape != idx.shape:
        raise ValueError(f"values has shape {tuple(values.shape)} but the index has {tuple(idx.shape)} nonzeros")


# ----------------------------------------------------------------------------------------------------------
# Wrappers


def spmm(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, x: torch.Tensor, n_out: int) -> torch.Tensor:
    """y = x @ W^T for W = CSR(crow, col, values) of shape (n_out, x.shape[1]). x: (batch, n_in) -> (batch, n_out).

    y has x's dtype: bfloat16 x with float32 values is accumulated in float32 and rounded once."""
    _check_index(crow, col, values)
    _check_dense("x", x, None, "inputs")
    _check_activation("x", x, values)
    if crow.shape[0] != n_out + 1:
        raise ValueError(f"crow has {crow.shape[0]} entries but n_out = {n_out} needs {n_out + 1}")
    _ensure_backend(values, x)
    return _call(_SPMM, crow, col, values, x, n_out)


def spmm_t(
    ccol: torch.Tensor, row: torch.Tensor, perm: torch.Tensor, values: torch.Tensor, grad_y: torch.Tensor, n_in: int
) -> torch.Tensor:
    """grad_x = grad_y @ W through W's CSC index (ccol, row, perm). grad_y: (batch, n_out) -> (batch, n_in).

    grad_x has grad_y's dtype (bfloat16 with float32 values: float32 accumulation, rounded once)."""
    _check_index(ccol, row, values)
    _check_dense("grad_y", grad_y, None, "outputs")
    _check_activation("grad_y", grad_y, values)
    if ccol.shape[0] != n_in + 1:
        raise ValueError(f"ccol has {ccol.shape[0]} entries but n_in = {n_in} needs {n_in + 1}")
    _ensure_backend(values, grad_y)
    return _call(_SPMM_T, ccol, row, perm, values, grad_y, n_in)


def sddmm(crow: torch.Tensor, col: torch.Tensor, grad_y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad_values[j] = <grad_y[:, row_j], x[:, col_j]>: grad_y^T @ x at W's nonzeros only. -> (nnz,).

    grad_y and x share one dtype; the result has it, except bfloat16 inputs give float32 (the gradient of
    float32 values, accumulated in float32)."""
    _check_index(crow, col, None)
    _check_dense("grad_y", grad_y, crow.shape[0] - 1, "outputs")
    _check_dense("x", x, None, "inputs")
    _check_sddmm_dtypes(grad_y, x)
    if grad_y.shape[0] != x.shape[0]:
        raise ValueError(f"grad_y has batch {grad_y.shape[0]} but x has batch {x.shape[0]}")
    _ensure_backend(grad_y, x)
    return _call(_SDDMM, crow, col, grad_y, x)


# ----------------------------------------------------------------------------------------------------------
# Fake implementations: output metadata only (nnz is col's length, so no data-dependent shapes).


@torch.library.register_fake("sparselayer::spmm")
def _spmm_fake(crow, col, values, x, n_out):
    _ensure_backend_fake(x)
    return empty_activation(x, n_out)


@torch.library.register_fake("sparselayer::spmm_t")
def _spmm_t_fake(ccol, row, perm, values, grad_y, n_in):
    _ensure_backend_fake(grad_y)
    return empty_activation(grad_y, n_in)


@torch.library.register_fake("sparselayer::sddmm")
def _sddmm_fake(crow, col, grad_y, x):
    _ensure_backend_fake(x)
    return x.new_empty((col.shape[0],), dtype=sddmm_dtype(x.dtype))


def _ensure_backend_fake(t: torch.Tensor) -> None:
    # A compiled graph calls the ops without going through the wrappers, so the CUDA kernels must be
    # loaded by the time tracing is done; tracing always runs the fake implementations first.
    if t.device.type == "cuda":
        from . import _cuda

        _cuda.ensure_loaded()


# ----------------------------------------------------------------------------------------------------------
# Autograd: every derivative is again one of the three sparse products.
#
# The dtype rules close over these formulas in bf16-activation mode, so nothing here casts: spmm's grad_x is
# spmm_t(fp32 values, bf16 grad) -> bf16 and its grad_values sddmm(bf16, bf16) -> fp32; sddmm's fp32 cotangent
# acts as fp32 values against bf16 activations, so its grad_grad_y and grad_x come out bf16.


def _csr_from_csc(ccol, row, perm, n_out):
    """CSR (crow, col) of W from its CSC index: the inverse of csr.transpose_index."""
    nnz = row.shape[0]
    col = torch.empty_like(row)
    col[perm] = row_indices(ccol, nnz)  # the column of each nonzero, scattered back to CSR order
    return pointers(row, n_out), col


def _spmm_setup(ctx, inputs, output):
    crow, col, values, x, n_out = inputs
    ctx.save_for_backward(crow, col, values, x)


def _in_layout_of(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The output's gradient, feature-major where the input x is. The loss hands a row-major gradient to a network
    whose activations are feature-major (SparseMLP's): one copy here, which spmm_t and sddmm would each need anyway,
    makes grad_x feature-major too, so the layers below get their gradients in their activations' layout."""
    return to_feature_major(grad) if is_feature_major(x) else grad


def _spmm_backward(ctx, grad):
    crow, col, values, x = ctx.saved_tensors
    grad = _in_layout_of(grad, x)
    grad_values = grad_x = None
    if ctx.needs_input_grad[3]:
        # Standalone spmm has no CSC index at hand; SparseLinear uses `linear`, which keeps one.
        ccol, row, perm = transpose_index(crow, col, x.shape[1])
        grad_x = spmm_t(ccol, row, perm, values, grad, x.shape[1])
    if ctx.needs_input_grad[2]:
        grad_values = sddmm(crow, col, grad, x)
    return None, None, grad_values, grad_x, None


def _spmm_t_setup(ctx, inputs, output):
    ccol, row, perm, values, grad_y, n_in = inputs
    ctx.save_for_backward(ccol, row, perm, values, grad_y)


def _spmm_t_backward(ctx, grad):  # grad: (batch, n_in), the cotangent of grad_x = grad_y @ W
    ccol, row, perm, values, grad_y = ctx.saved_tensors
    crow, col = _csr_from_csc(ccol, row, perm, grad_y.shape[1])
    grad_values = grad_grad_y = None
    if ctx.needs_input_grad[4]:
        grad_grad_y = spmm(crow, col, values, grad, grad_y.shape[1])  # grad @ W^T
    if ctx.needs_input_grad[3]:
        grad_values = sddmm(crow, col, grad_y, grad)
    return None, None, None, grad_values, grad_grad_y, None


def _sddmm_setup(ctx, inputs, output):
    crow, col, grad_y, x = inputs
    ctx.save_for_backward(crow, col, grad_y, x)


def _sddmm_backward(ctx, grad):  # grad: (nnz,), read as the values of a CSR matrix G with W's pattern
    crow, col, grad_y, x = ctx.saved_tensors
    grad_grad_y = grad_x = None
    if ctx.needs_input_grad[2]:
        grad_grad_y = spmm(crow, col, grad, x, grad_y.shape[1])  # x @ G^T
    if ctx.needs_input_grad[3]:
        ccol, row, perm = transpose_index(crow, col, x.shape[1])
        grad_x = spmm_t(ccol, row, perm, grad, grad_y, x.shape[1])  # grad_y @ G
    return None, None, grad_grad_y, grad_x


torch.library.register_autograd("sparselayer::spmm", _spmm_backward, setup_context=_spmm_setup)
torch.library.register_autograd("sparselayer::spmm_t", _spmm_t_backward, setup_context=_spmm_t_setup)
torch.library.register_autograd("sparselayer::sddmm", _sddmm_backward, setup_context=_sddmm_setup)


# ----------------------------------------------------------------------------------------------------------
# linear: y = x @ W^T + b for SparseLinear, reusing the layer's cached CSC index in the backward.
#
# An autograd.Function rather than another registered op: it adds no schema for the CUDA side to implement,
# costs less Python per call than a custom_op's autograd wrapper, and torch.compile traces it into the graph
# (forward and backward are nothing but the registered ops above, which have fake implementations).


class _SparseLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, crow, col, ccol, row, perm, values, bias, x, n_out):
        y = _call(_SPMM, crow, col, values, x, n_out)  # (batch, n_out), fresh
        ctx.save_for_backward(crow, col, ccol, row, perm, values, x)  # after the launch: host work the GPU overlaps
        # In bf16-activation mode y is bf16 and the bias fp32: the in-place add computes each bf16 y + fp32
        # bias in fp32 and rounds it once into y, so the bias is never rounded on its own (y.add_(bias.bfloat16())
        # would be). On CUDA the cast happens inside the add kernel, with no full-size fp32 temporary (the CPU
        # makes one; it is the test path). Adding the bias to spmm's fp32 accumulator would round once fewer,
        # but the schema has no bias: the extra rounding is that of x @ W^T alone (half a bf16 ulp of it).
        if bias is None:
            return y
        if torch.compiler.is_compiling():
            # Out of place while tracing: under torch 2.11 a compiled graph gets all-zero gradients when this
            # forward returns y mutated in place, or any alias (even a no-op .to); 2.13 is fine. The same
            # arithmetic, and Inductor fuses the add with the cast, so no fp32 (batch, n_out) tensor is stored.
            out = y + bias  # (batch, n_out), in the promoted dtype: fp32 in bf16-activation mode
            return out if out.dtype == y.dtype else out.to(y.dtype)
        return y.add_(bias)

    @staticmethod
    def backward(ctx, grad):  # grad: (batch, n_out)
        crow, col, ccol, row, perm, values, x = ctx.saved_tensors
        grad = _in_layout_of(grad, x)
        grad_values = grad_bias = grad_x = None
        if ctx.needs_input_grad[7]:  # grad_x: (batch, n_in)
            grad_x = _call(_SPMM_T, ccol, row, perm, values, grad, x.shape[1])
        if ctx.needs_input_grad[5]:
            grad_values = _call(_SDDMM, crow, col, grad, x)  # (nnz,)
        if ctx.needs_input_grad[6]:
            # bias has the values' dtype (checked in `linear`); a bf16 grad is summed in that dtype, not in bf16
            grad_bias = grad.sum(0, dtype=values.dtype)  # (n_out,)
        return None, None, None, None, None, grad_values, grad_bias, grad_x, None


def linear(
    crow: torch.Tensor,
    col: torch.Tensor,
    ccol: torch.Tensor,
    row: torch.Tensor,
    perm: torch.Tensor,
    values: torch.Tensor,
    x: torch.Tensor,
    n_out: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = x @ W^T (+ bias) like `spmm`, differentiable in values, x and bias; the backward uses W's CSC
    index (ccol, row, perm) instead of rebuilding it. bias has the values' dtype, also when x is bfloat16."""
    _check_index(crow, col, values)
    _check_index(ccol, row, values)
    _check_dense("x", x, ccol.shape[0] - 1, "inputs")
    _check_activation("x", x, values)
    if crow.shape[0] != n_out + 1:
        raise ValueError(f"crow has {crow.shape[0]} entries but n_out = {n_out} needs {n_out + 1}")
    if bias is not None and (bias.shape != (n_out,) or bias.dtype != values.dtype):
        raise ValueError(f"bias must be ({n_out},) {values.dtype}, got {tuple(bias.shape)} {bias.dtype}")
    _ensure_backend(values, x)
    return _SparseLinearFunction.apply(crow, col, ccol, row, perm, values, bias, x, n_out)
