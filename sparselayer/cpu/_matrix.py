"""Helpers of the CPU kernels: CSR buffers as a torch sparse CSR tensor (for torch's vectorised MKL or native
CPU kernels), the result in the operand's layout, and running with autocast off."""

import functools
import warnings

import torch

from .._library import empty_activation, result_feature_major


def csr_matrix(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    # The buffers are validated when they enter a layer (sparselayer.csr.validate_csr), so torch's own
    # per-call invariant check would only repeat that work; the "beta" notice is noise for our users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def activation_result(product_t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The product W @ operand^T, (n, batch), as the (batch, n) result in `like`'s dtype and layout (the op
    contract's Layouts, `_library.py`): a feature-major result is the product's transpose itself (no copy when the
    dtype matches), a row-major one takes one copy that also rounds to the dtype."""
    if result_feature_major(like, product_t.shape[0]):  # the product's own layout
        return product_t.to(like.dtype).contiguous().t()
    return empty_activation(like, product_t.shape[0], like.dtype).copy_(product_t.t())


def without_autocast(kernel):
    """Run `kernel` with CPU autocast off. A kernel registered for the CPU key still sees autocast's state, so
    under bf16 autocast the torch products inside it would run in bf16, against the fp32 accumulation the op
    contract promises (`sparselayer/_library.py`)."""

    @functools.wraps(kernel)
    def run(*args):
        with torch.autocast("cpu", enabled=False):
            return kernel(*args)

    return run
