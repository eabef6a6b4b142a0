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

Layouts. spmm's y and spmm_t's grad_x take the layout of their dense operand (x, grad_y), as a convolution's
output takes a channels_last input's: row-major for a row-major operand, feature-major (the transposed view of an
(n, batch) tensor, strides (1, batch)) for a feature-major one (`is_feature_major`). A network that keeps its
activations feature-major (SparseMLP does, between its layers) then never copies them: the CUDA kernels stage
activations feature-major and use such an operand in place, where a row-major one costs a transposed copy per call.
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


def is_feature_major(t: torch.Tensor) -> bool:
    """Whether the 2-D activation t (batch, n) is laid out feature-major (stride 1 along the batch), so that spmm and
    spmm_t return their result feature-major too. A single row or column is row-major (both layouts coincide)."""
    return t.shape[0] > 1 and t.shape[1] > 1 and t.stride(0) == 1


def result_feature_major(like: torch.Tensor, n: int) -> bool:
    """Whether spmm / spmm_t's (batch, n) result for the operand `like` is feature-major (see Layouts above)."""
    return is_feature_major(like) and n > 1


def empty_activation(like: torch.Tensor, n: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised (batch, n) result in the layout of the operand `like` (batch, ...): see Layouts above."""
    batch = like.shape[0]
    if result_feature_major(like, n):
        return like.new_empty((n, batch), dtype=dtype).t()
    return like.new_empty((batch, n), dtype=dtype)


def to_feature_major(t: torch.Tensor) -> torch.Tensor:
    """t (batch, n) as a feature-major tensor of the same values (t itself if it already is one)."""
    return t if is_feature_major(t) else t.t().contiguous().t()
