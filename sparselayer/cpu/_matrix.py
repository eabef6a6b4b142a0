"""Wrap CSR index buffers as a torch sparse CSR tensor, for torch's vectorised (MKL or native) CPU kernels."""

import warnings

import torch


def csr_matrix(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    # The buffers are validated when they enter a layer (sparselayer.csr.validate_csr), so torch's own
    # per-call invariant check would only repeat that work; the "beta" notice is noise for our users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)
