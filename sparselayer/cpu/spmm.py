"""CPU sparselayer::spmm: y = x @ W^T with W in CSR form."""

import torch

from ._matrix import csr_matrix


def spmm(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, x: torch.Tensor, n_out: int) -> torch.Tensor:
    n_in = x.shape[1]
    w = csr_matrix(crow, col, values, (n_out, n_in))
    # W @ x^T is the CSR-times-dense product torch implements natively; transpose back to (batch, n_out).
    return (w @ x.t()).t().contiguous()  # (batch, n_out)
