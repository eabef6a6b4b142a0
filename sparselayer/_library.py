"""The `sparselayer` operator library: every op schema is declared here, once.

Implementations register against these schemas per dispatch key: the CPU ones in
`sparselayer/cpu/`, the CUDA ones in `sparselayer/csrc/*.cu` (TORCH_LIBRARY_IMPL(sparselayer, CUDA, m)),
so the dispatcher picks the device and no Python code branches on `x.is_cuda`.

Notation. W is the (n_out, n_in) weight held in CSR form:
  crow    int64 (n_out + 1,)  row pointers, crow[0] == 0, crow[-1] == nnz, non-decreasing
  col     int64 (nnz,)        column index of each nonzero, sorted and unique within a row
  values  float (nnz,)        the nonzeros, in CSR order
The transposed index (CSC of W, i.e. CSR of W^T), rebuilt only when the topology changes:
  ccol    int64 (n_in + 1,)   column pointers
  row     int64 (nnz,)        row index of each nonzero in CSC order, sorted within a column
  perm    int64 (nnz,)        position in `values` of each nonzero in CSC order

Dtypes. `values` (the master weights) are float32 or float64. The activations (x, grad_y) have the values'
dtype, or are bfloat16 with float32 values ("bf16-activation mode", what autocast to bfloat16 gives a dense
nn.Linear): products are accumulated in float32 and spmm / spmm_t round their result to bfloat16 once, while
sddmm, the gradient of the float32 values, returns float32. The Python wrappers in `ops.py` reject every other
mixture (float16 anywhere included) before a kernel runs.
"""

import torch

LIBRARY = torch.library.Library("sparselayer", "DEF")

# y = x @ W^T.  x: (batch, n_in) -> y: (batch, n_out)
LIBRARY.define("spmm(Tensor crow, Tensor col, Tensor values, Tensor x, int n_out) -> Tensor")

# grad_x = grad_y @ W, computed through the transposed index.  grad_y: (batch, n_out) -> (batch, n_in)
LIBRARY.define(
    "spmm_t(Tensor ccol, Tensor row, Tensor perm, Tensor values, Tensor grad_y, int n_in) -> Tensor"
)

# grad_values[j] = sum_b grad_y[b, row_of(j)] * x[b, col[j]]: the dense product grad_y^T @ x sampled
# at W's nonzeros only.  grad_y: (batch, n_out), x: (batch, n_in) -> (nnz,)
LIBRARY.define("sddmm(Tensor crow, Tensor col, Tensor grad_y, Tensor x) -> Tensor")


def sddmm_dtype(activation: torch.dtype) -> torch.dtype:
    """sddmm's result dtype for grad_y and x of `activation`: the values' dtype, float32 in bf16-activation mode."""
    return torch.float32 if activation == torch.bfloat16 else activation
