"""CPU sparselayer::sddmm: grad_values = (grad_y^T @ x) sampled at W's nonzeros, in CSR order."""

import torch

from .._library import sddmm_dtype
from ._matrix import csr_matrix, without_autocast


@without_autocast
def sddmm(crow: torch.Tensor, col: torch.Tensor, grad_y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    n_out, n_in = grad_y.shape[1], x.shape[1]
    # bf16 inputs: computed and returned in fp32 (the gradient of fp32 values; bf16 products are exact in fp32).
    dtype = sddmm_dtype(x.dtype)
    grad_y, x = grad_y.to(dtype), x.to(dtype)
    pattern = csr_matrix(crow, col, grad_y.new_zeros(col.shape[0]), (n_out, n_in))
    # sampled_addmm keeps the pattern's (row, col) order, so .values() lines up with `values`.
    sampled = torch.sparse.sampled_addmm(pattern, grad_y.t(), x, beta=0.0, alpha=1.0)
    return sampled.values().contiguous()  # (nnz,)
