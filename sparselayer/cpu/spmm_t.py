"""CPU sparselayer::spmm_t: grad_x = grad_y @ W, through W's CSC index (W^T in CSR form)."""

import torch

from ._matrix import activation_result, csr_matrix, without_autocast


@without_autocast
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
    gt = grad_y.t().to(values.dtype)  # (n_out, batch); bf16 grad_y is computed in fp32 (see spmm)
    return activation_result(w_t @ gt, grad_y)  # (batch, n_in), in grad_y's layout
