// Host helpers shared by the ops, and the panel-pointer pass: where each CSR row enters each column panel.
#include "common.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>

#include <cstdlib>
#include <limits>
#include <mutex>
#include <type_traits>
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
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble || t.scalar_type() == at::kBFloat16,
              "sparselayer: CUDA kernels support float32, float64 and bfloat16 activations, got ", t.scalar_type(),
              " for ", name);
}

namespace {
constexpr int kMaxDevices = 64;
int g_sms[kMaxDevices];
int g_smem[kMaxDevices];
int g_major[kMaxDevices];
std::once_flag g_once[kMaxDevices];

void read_props(int device) {
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&g_sms[device], cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&g_smem[device], cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&g_major[device], cudaDevAttrComputeCapabilityMajor, device));
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

int compute_major(int device) {
  num_sms(device);
  return g_major[device];
}

bool can_vectorise(const at::Tensor& m) {
  return m.stride(1) == 1 && m.size(1) % 4 == 0 && (m.size(0) <= 1 || m.stride(0) % 4 == 0) &&
         reinterpret_cast<uintptr_t>(m.data_ptr()) % (4 * m.element_size()) == 0;
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

// xt[c * ld + b] = Out(m[b, c]) for float32 m: 32 x 32 tiles through shared memory, reads and writes both coalesced.
template <typename In, typename Out = float>
__global__ void feature_major_kernel(const In* __restrict__ m, int64_t sb, int64_t sc, int batch, int n_cols,
                                     Out* __restrict__ xt, int64_t ld) {
  __shared__ float tile[32][33];  // +1: the column reads below hit 32 distinct banks
  const int c0 = blockIdx.x * 32, b0 = blockIdx.y * 32, tx = threadIdx.x, ty = threadIdx.y;
  for (int i = ty; i < 32; i += 8) {
    const int b = b0 + i, c = c0 + tx;
    tile[i][tx] = b < batch && c < n_cols ? to_float(m[b * sb + c * sc]) : 0.f;
  }
  __syncthreads();
  for (int i = ty; i < 32; i += 8) {
    const int c = c0 + i, b = b0 + tx;
    if (c < n_cols && b < batch) store_as(xt + c * ld + b, tile[tx][i]);  // exact: a bf16 widened and narrowed
  }
}

// The same copy from bfloat16 (m as its 16-bit patterns) to bfloat16 (Out = uint16_t) or float (widened exactly):
// 64 x 64 tiles, two values per thread and access, so that a warp reads whole 128-byte rows (with 2-byte accesses the
// 32 x 32 kernel above read 64 bytes per warp access: 37 us for a 1024 x 16384 bf16 x on an H100, 1.7 TB/s, where
// the fp32 copy runs at 2.7).
template <typename Out>
__global__ void feature_major_bf16_kernel(const uint16_t* __restrict__ m, int64_t sb, int64_t sc, int batch,
                                          int n_cols, Out* __restrict__ xt, int64_t ld) {
  __shared__ uint16_t tile[64][65];  // tile[b][c]; the odd row length puts the column reads below in 32 banks
  const int c0 = blockIdx.x * 64, b0 = blockIdx.y * 64, tx = threadIdx.x, ty = threadIdx.y;
  // pairs of columns as one 4-byte load where they are adjacent and 4-byte aligned
  const bool pairs = sc == 1 && sb % 2 == 0 && reinterpret_cast<uintptr_t>(m) % 4 == 0;
  for (int i = ty; i < 64; i += 8) {
    const int b = b0 + i, c = c0 + 2 * tx;
    uint16_t lo = 0, hi = 0;
    if (b < batch) {
      const int64_t at = b * sb + c * sc;
      if (pairs && c + 1 < n_cols) {
        const uint32_t w = *reinterpret_cast<const uint32_t*>(m + at);
        lo = static_cast<uint16_t>(w & 0xffffu);
        hi = static_cast<uint16_t>(w >> 16);
      } else {
        if (c < n_cols) lo = m[at];
        if (c + 1 < n_cols) hi = m[at + sc];
      }
    }
    tile[i][2 * tx] = lo;
    tile[i][2 * tx + 1] = hi;
  }
  __syncthreads();
  for (int i = ty; i < 64; i += 8) {
    const int c = c0 + i, b = b0 + 2 * tx;
    if (c >= n_cols || b >= batch) continue;
    Out* dst = xt + c * ld + b;  // ld and b even: aligned to two values
    if constexpr (std::is_same_v<Out, float>) {
      const float2 v = make_float2(__uint_as_float(uint32_t{tile[2 * tx][i]} << 16),
                                   __uint_as_float(uint32_t{tile[2 * tx + 1][i]} << 16));
      if (b + 1 < batch) *reinterpret_cast<float2*>(dst) = v;
      else *dst = v.x;
    } else {
      if (b + 1 < batch) *reinterpret_cast<uint32_t*>(dst) = tile[2 * tx][i] | uint32_t{tile[2 * tx + 1][i]} << 16;
      else *dst = tile[2 * tx][i];
    }
  }
}

// Already feature-major in `type` (a transposed view, as an activation kept as x^T is: unit batch stride, rows of
// whole 16-byte chunks, 16-byte aligned): usable in place.
bool is_feature_major(const at::Tensor& m, at::ScalarType type) {
  const int64_t per_chunk = 16 / c10::elementSize(type);
  return m.scalar_type() == type && (m.stride(0) == 1 || m.size(0) == 1) && m.stride(1) % per_chunk == 0 &&
         reinterpret_cast<uintptr_t>(m.data_ptr()) % 16 == 0;
}

// m (batch, n) as `Out` (n, ld) rows, ld the batch rounded up to whole 16-byte chunks.
template <typename In, typename Out>
at::Tensor copy_feature_major(const at::Tensor& m, at::ScalarType out_type) {
  const int64_t batch = m.size(0), n_cols = m.size(1), per_chunk = 16 / sizeof(Out);
  const int64_t ld = (batch + per_chunk - 1) / per_chunk * per_chunk;
  auto xt = at::empty({n_cols, ld}, m.options().dtype(out_type));
  const dim3 grid(static_cast<unsigned>((n_cols + 31) / 32), static_cast<unsigned>((batch + 31) / 32));
  TORCH_CHECK(grid.y <= 65535, "sparselayer: batch ", batch, " is too large for the feature-major copy");
  if constexpr (std::is_same_v<In, bf16>) {
    using Bits = std::conditional_t<std::is_same_v<Out, bf16>, uint16_t, float>;
    const dim3 grid64(static_cast<unsigned>((n_cols + 63) / 64), static_cast<unsigned>((batch + 63) / 64));
    feature_major_bf16_kernel<Bits><<<grid64, dim3(32, 8), 0, c10::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const uint16_t*>(m.const_data_ptr()), m.stride(0), m.stride(1), static_cast<int>(batch),
        static_cast<int>(n_cols), reinterpret_cast<Bits*>(xt.data_ptr()), ld);
  } else {
    feature_major_kernel<In, Out><<<grid, dim3(32, 8), 0, c10::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const In*>(m.const_data_ptr()), m.stride(0), m.stride(1), static_cast<int>(batch),
        static_cast<int>(n_cols), reinterpret_cast<Out*>(xt.data_ptr()), ld);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return xt;
}

// The rows of a copy (n, ld), or of the feature-major operand m (batch, n) itself.
FmRows rows_of_copy(at::Tensor t) {
  FmRows r;
  r.data = t.const_data_ptr();
  r.ld = t.stride(0);
  r.owner = std::move(t);
  return r;
}
FmRows rows_in_place(const at::Tensor& m) {
  FmRows r;
  r.data = m.const_data_ptr();
  r.ld = m.stride(1);
  return r;
}

}  // namespace

FmRows feature_major(const at::Tensor& m, bool enabled) {
  if (!enabled) return FmRows{};
  if (is_feature_major(m, at::kFloat)) return rows_in_place(m);
  return rows_of_copy(m.scalar_type() == at::kBFloat16 ? copy_feature_major<bf16, float>(m, at::kFloat)
                                                       : copy_feature_major<float, float>(m, at::kFloat));
}

bool result_feature_major(const at::Tensor& operand, int64_t n) {
  return operand.size(0) > 1 && operand.size(1) > 1 && operand.stride(0) == 1 && n > 1;
}

at::Tensor empty_activation(const at::Tensor& operand, int64_t n) {
  const int64_t batch = operand.size(0);
  // One allocation call either way (a transposed view would be a second dispatcher call: host time per op).
  return result_feature_major(operand, n) ? at::empty_strided({batch, n}, {1, batch}, operand.options())
                                          : at::empty({batch, n}, operand.options());
}

at::Tensor in_layout_of(const at::Tensor& y, const at::Tensor& operand) {
  return result_feature_major(operand, y.size(1)) ? empty_activation(operand, y.size(1)).copy_(y) : y;
}

FmRows feature_major_bf16(const at::Tensor& m) {
  if (is_feature_major(m, at::kBFloat16)) return rows_in_place(m);
  return rows_of_copy(copy_feature_major<bf16, bf16>(m, at::kBFloat16));
}

FmRows feature_major_shared(const at::Tensor& m, bool store) {
  if (is_feature_major(m, at::kFloat)) return rows_in_place(m);
  if (env_int("SPARSELAYER_SHARE_FM") == 2) return feature_major(m, true);  // tuning override: never shared
  const std::array<int64_t, 4> params{m.size(0), m.size(1), m.stride(0) * 16 + m.element_size(), m.stride(1)};
  if (store) {
    return rows_of_copy(cached_layout("feature_major", {m}, params, [&]() {
      return std::vector<at::Tensor>{feature_major(m, true).owner};
    })[0]);
  }
  const auto hit = find_cached_layout("feature_major", {m}, params);
  return hit.empty() ? feature_major(m, true) : rows_of_copy(hit[0]);
}

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
