"""Helpers of the CPU kernels: CSR buffers as a torch sparse CSR tensor (for torch's vectorised MKL or native
CPU kernels), the row-major result copy, and running with autocast off."""

import functools
import warnings

import torch


def csr_matrix(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    # The buffers are validated when they enter a layer (sparselayer.csr.validate_csr), so torch's own
    # per-call invariant check would only repeat that work; the "beta" notice is noise for our users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def contiguous_as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t (a transposed product) row-major in `dtype`, in one copy. (t.to(dtype, memory_format=contiguous)
    returns the strided t itself when the dtype already matches.)"""
    return torch.empty(t.shape, dtype=dtype, device=t.device).copy_(t)


def without_autocast(kernel):
    """Run `kernel` with CPU autocast off. A kernel registered for the CPU key still sees autocast's state, so
    under bf16 autocast the torch products inside it would run in bf16, against the fp32 accumulation the op
    contract promises (`sparselayer/_library.py`)."""

    @functools.wraps(kernel)
    def run(*args):
        with torch.autocast("cpu", enabled=False):
            return kernel(*args)

    return run
