// Host helpers shared by the ops, and the panel-pointer pass: where each CSR row enters each column panel.
#include "common.cuh"

#include <ATen/ops/empty.h>

#include <cstdlib>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

namespace sparselayer {

void check_index(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "sparselayer: ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kLong, "sparselayer: ", name, " must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1, "sparselayer: ", name, " must be 1-D, got ", t.dim(), " dimensions");
}

void check_dense(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.is_cuda(), "sparselayer: ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.device() == like.device(), "sparselayer: ", name, " is on ", t.device(), " but the index on ",
              like.device(), "; move both to one GPU");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "sparselayer: CUDA kernels support float32 and float64, got ", t.scalar_type(), " for ", name);
}

namespace {
constexpr int kMaxDevices = 64;
int g_sms[kMaxDevices];
int g_smem[kMaxDevices];
std::once_flag g_once[kMaxDevices];

void read_props(int device) {
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&g_sms[device], cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&g_smem[device], cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
}
}  // namespace

int num_sms(int device) {
  TORCH_CHECK(device >= 0 && device < kMaxDevices, "sparselayer: device index ", device, " out of range");
  std::call_once(g_once[device], read_props, device);
  return g_sms[device];
}

int max_smem_optin(int device) {
  num_sms(device);
  return g_smem[device];
}

bool can_vectorise(const at::Tensor& m) {
  return m.stride(1) == 1 && m.size(1) % 4 == 0 && (m.size(0) <= 1 || m.stride(0) % 4 == 0) &&
         reinterpret_cast<uintptr_t>(m.data_ptr()) % 16 == 0;
}

void allow_smem(const void* kernel, int device) {
  static std::mutex mu;
  static std::vector<std::pair<const void*, int>>* done = new std::vector<std::pair<const void*, int>>();
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& d : *done)
    if (d.first == kernel && d.second == device) return;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem_optin(device)));
  done->emplace_back(kernel, device);
}

int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : 0;
}

namespace {

__global__ void panel_pointer_kernel(const int64_t* __restrict__ ptr, const int64_t* __restrict__ idx,
                                     int n_rows, int P, int n_panels, int32_t* __restrict__ pp) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  const int p = blockIdx.y;
  if (r >= n_rows) return;
  int64_t lo = ptr[r], hi = ptr[r + 1];
  if (p < n_panels) {  // lower bound of p * P among the row's sorted columns
    const int64_t target = static_cast<int64_t>(p) * P;
    while (lo < hi) {
      const int64_t mid = (lo + hi) >> 1;
      if (idx[mid] < target) lo = mid + 1; else hi = mid;
    }
  } else {
    lo = hi;
  }
  pp[static_cast<int64_t>(p) * n_rows + r] = static_cast<int32_t>(lo);
}

}  // namespace

at::Tensor panel_pointers(const at::Tensor& ptr, const at::Tensor& idx, int64_t n_rows, int64_t n_cols, int P) {
  const int64_t n_panels = (n_cols + P - 1) / P;
  TORCH_CHECK(n_panels + 1 <= 65535, "sparselayer: ", n_cols, " columns is too wide for panels of ", P);
  TORCH_CHECK(idx.numel() < std::numeric_limits<int32_t>::max(), "sparselayer: more than 2^31 nonzeros");
  auto pp = at::empty({n_panels + 1, n_rows}, ptr.options().dtype(at::kInt));
  if (n_rows == 0) return pp;
  const dim3 grid(static_cast<unsigned>((n_rows + 255) / 256), static_cast<unsigned>(n_panels + 1));
  panel_pointer_kernel<<<grid, 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
      ptr.data_ptr<int64_t>(), idx.data_ptr<int64_t>(), static_cast<int>(n_rows), P, static_cast<int>(n_panels),
      pp.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return pp;
}

}  // namespace sparselayer
