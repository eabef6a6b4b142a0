// Registers the CUDA kernels against the schemas declared once in Python (sparselayer/_library.py).
// Load this library only after `import sparselayer._library` (sparselayer._cuda.ensure_loaded does).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

namespace sparselayer {
at::Tensor spmm_cuda(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values, const at::Tensor& x,
                     int64_t n_out);
at::Tensor spmm_t_cuda(const at::Tensor& ccol, const at::Tensor& row, const at::Tensor& perm,
                       const at::Tensor& values, const at::Tensor& grad_y, int64_t n_in);
at::Tensor sddmm_cuda(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& grad_y, const at::Tensor& x);
}  // namespace sparselayer

TORCH_LIBRARY_IMPL(sparselayer, CUDA, m) {
  m.impl("spmm", &sparselayer::spmm_cuda);
  m.impl("spmm_t", &sparselayer::spmm_t_cuda);
  m.impl("sddmm", &sparselayer::sddmm_cuda);
}
