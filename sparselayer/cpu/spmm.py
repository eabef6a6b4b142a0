"""CPU sparselayer::spmm: y = x @ W^T with W in CSR form."""

import torch

from ._matrix import activation_result, csr_matrix, without_autocast


@without_autocast
def spmm(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, x: torch.Tensor, n_out: int) -> torch.Tensor:
    n_in = x.shape[1]
    w = csr_matrix(crow, col, values, (n_out, n_in))
    # bf16 x with fp32 values: torch's CSR kernels take no bf16, and the contract accumulates in fp32 anyway.
    xt = x.t().to(values.dtype)  # (n_in, batch)
    # W @ x^T is the CSR-times-dense product torch implements natively; y is its transpose, in x's layout.
    return activation_result(w @ xt, x)  # (batch, n_out)
