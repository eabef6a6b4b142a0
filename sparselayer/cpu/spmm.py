"""CPU sparselayer::spmm: y = x @ W^T with W in CSR form."""

import torch

from ._matrix import contiguous_as, csr_matrix, without_autocast


@without_autocast
def spmm(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, x: torch.Tensor, n_out: int) -> torch.Tensor:
    n_in = x.shape[1]
    w = csr_matrix(crow, col, values, (n_out, n_in))
    # bf16 x with fp32 values: torch's CSR kernels take no bf16, and the contract accumulates in fp32 anyway.
    xt = x.t().to(values.dtype)  # (n_in, batch)
    # W @ x^T is the CSR-times-dense product torch implements natively; transpose back to (batch, n_out),
    # rounding to x's dtype in the same copy.
    return contiguous_as((w @ xt).t(), x.dtype)  # (batch, n_out)
