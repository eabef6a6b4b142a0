// sparselayer::spmm_t on CUDA: grad_x = grad_y @ W through W's CSC index (ccol, row, perm).
//
// The CSC index is the CSR index of W^T, so this is the forward kernel run on W^T, with the values read
// through perm by its packing pass (values change every step, the index only when the topology evolves).
// Each output element is a fixed-order sum: deterministic, no atomics.
#include "common.cuh"

namespace sparselayer {

at::Tensor spmm_t_cuda(const at::Tensor& ccol, const at::Tensor& row, const at::Tensor& perm,
                       const at::Tensor& values, const at::Tensor& grad_y, int64_t n_in) {
  check_index(ccol, "ccol");
  check_index(row, "row");
  check_index(perm, "perm");
  check_dense(values, "values", ccol);
  check_dense(grad_y, "grad_y", ccol);
  TORCH_CHECK(perm.numel() == row.numel(), "sparselayer: perm has ", perm.numel(), " entries but row has ",
              row.numel());
  TORCH_CHECK(values.numel() == row.numel(), "sparselayer: values has ", values.numel(), " entries but row has ",
              row.numel());
  const c10::cuda::CUDAGuard guard(grad_y.device());
  return csr_times_dense(ccol, row, values, perm, grad_y, n_in);
}

}  // namespace sparselayer
