"""CPU sparselayer::spmm_t: grad_x = grad_y @ W, through W's CSC index (W^T in CSR form)."""

import torch

from ._matrix import csr_matrix


def spmm_t(
    ccol: torch.Tensor,
    row: torch.Tensor,
    perm: torch.Tensor,
    values: torch.Tensor,
    grad_y: torch.Tensor,
    n_in: int,
) -> torch.Tensor:
    n_out = grad_y.shape[1]
    w_t = csr_matrix(ccol, row, values[perm], (n_in, n_out))
    return (w_t @ grad_y.t()).t().contiguous()  # (batch, n_in)
