// Shared pieces of the sparselayer CUDA kernels: argument checks, launch helpers, and the two ways a
// (batch tile x column panel) slice of a dense (batch, n) matrix is staged in shared memory.
//
// The bf16-activation mode: activations (x, grad_y, and the products' outputs) in bfloat16, the weight values in
// fp32, every product accumulated in fp32 from exactly widened activations and rounded once on output. Most kernels
// widen while staging (their shared tiles hold fp32, so the compute loops are the fp32 ones); the row-sorted spmm
// keeps bf16 tiles and widens as it reads them (spmm_sorted_bf16.cu: half the shared-memory reads).
//
// Every fp32 kernel works on batch tiles of kBt = 32 rows of the dense operand: a tile column (32 batch
// values) is 128 bytes, i.e. 8 float4 chunks, one per lane of an 8-lane group. Dense operands arrive as
// (batch, n) with any strides; tiles are read straight from that layout (no transpose copy).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <functional>
#include <vector>

namespace sparselayer {

constexpr int kThreads = 256;  // threads per block of every fp32 kernel
constexpr int kBt = 32;        // batch tile
constexpr int kLanes = 8;      // lanes per row group: 8 x float4 = 32 batch values

// --- host helpers -----------------------------------------------------------------------------------

void check_index(const at::Tensor& t, const char* name);
void check_dense(const at::Tensor& t, const char* name, const at::Tensor& like);
int num_sms(int device);
// Largest dynamic shared memory (bytes) a block may opt into on this device.
int max_smem_optin(int device);
// The device's compute capability major version (9 on Hopper).
int compute_major(int device);
// Four-element vector loads are legal (float4 for float32, 8 bytes for bfloat16): unit column stride, rows
// aligned to four elements.
bool can_vectorise(const at::Tensor& m);
// Raises kernel's dynamic shared memory limit to the device's opt-in maximum, once per kernel and device
// (cudaFuncSetAttribute per call cost host time on small shapes).
void allow_smem(const void* kernel, int device);
// The tensors make() returns, computed once per (kind, params, device, stream) and index tensors' identity
// and version, then served from a cache while the index tensors are alive and unmodified (cache.cu). kind
// must be a string literal.
std::vector<at::Tensor> cached_layout(const char* kind, const std::vector<at::Tensor>& index,
                                      std::array<int64_t, 4> params,
                                      const std::function<std::vector<at::Tensor>()>& make);
// The cached value for (kind, index, params) if there is a live one (as cached_layout), else an empty vector.
std::vector<at::Tensor> find_cached_layout(const char* kind, const std::vector<at::Tensor>& index,
                                           std::array<int64_t, 4> params);
// Integer value of an environment variable, 0 when unset (tuning overrides for benchmarks/tune.py).
int env_int(const char* name);

// pp[p * n_rows + r] = first position k in row r (of the CSR ptr/idx) with idx[k] >= p * P, for
// p = 0 .. n_panels (the last entry is the row end).  int32 (n_panels + 1, n_rows).
at::Tensor panel_pointers(const at::Tensor& ptr, const at::Tensor& idx, int64_t n_rows, int64_t n_cols, int P);

// spmm stages x from a feature-major copy when each x element feeds at least this many multiply-adds (nonzeros
// per column): measured on an H100 (benchmarks/kernels-notes.md, v8), the 16384^2 b1024 forward at 99% (164 per
// column) is 13% faster with it, the 4096^2 b4096 one (41) 1-7% slower.
constexpr double kFmMinUses = 100.0;

// The row-sorted kernels (spmm, spmm_t and sddmm) also take products of kLongRowsMinWork multiply-adds (nnz x batch)
// and more whose rows average kLongRowsMinLength nonzeros: measured on an H100 (benchmarks/kernels-notes.md, v16,
// tune-v16-*-select.log), 4096^2 at 99% (41 per row) row-sorted vs panel kernel, ms: b4096 forward 0.36-0.39 vs
// 0.41-0.44, spmm_t 0.31-0.33 vs 0.41-0.44; b512 forward 0.10 vs 0.12-0.13, sddmm 0.10 vs 0.11; slower on the
// 784 x 512 and 512 x 512 products at 99% (5-8 per row: 0.12 vs 0.09 ms forward).
constexpr double kLongRowsMinLength = 32.0;
constexpr double kLongRowsMinWork = 5e7;
inline bool long_rows(int64_t nnz, int64_t n_rows, int64_t batch) {
  return static_cast<double>(nnz) >= kLongRowsMinLength * static_cast<double>(n_rows) &&
         static_cast<double>(nnz) * static_cast<double>(batch) >= kLongRowsMinWork;
}

// The rows a kernel stages a dense operand from: row c (column c of the (batch, n) operand, over the batch) starts
// at element c * ld of `data`. Either the operand's own memory, where it is feature-major already (no view is made:
// aten::t is two dispatcher calls, about 2 us of host time per op on the lent H100's host, benchmarks/kernels-notes.md
// v20), or a copy that `owner` keeps alive. data is null where no rows were asked for.
struct FmRows {
  at::Tensor owner;
  const void* data = nullptr;
  int64_t ld = 0;
  bool defined() const { return data != nullptr; }
  template <typename T>
  const T* ptr() const { return static_cast<const T*>(data); }
};

// The (batch, n) float32 or bfloat16 matrix m as float32 (n, ld) rows, ld >= batch a multiple of 4 (m's own memory
// when m is a feature-major float32 view already), for tiles staged with 16-byte copies; undefined when !enabled.
FmRows feature_major(const at::Tensor& m, bool enabled);
// The (batch, n) bfloat16 matrix m as bfloat16 (n, ld) rows, ld >= batch a multiple of 8 (m's own memory when m is
// such a feature-major view already): the bf16 row-sorted spmm kernel's 64-value tile columns are 128 contiguous bytes.
FmRows feature_major_bf16(const at::Tensor& m);
// feature_major(m, true), shared through the layout cache while m lives unmodified: spmm_t stores the copy of its
// gradient operand (store), and sddmm looks it up for the same gradient (store false: copies its own on a miss), so
// a layer's backward copies its incoming gradient once. The copy lives as long as that gradient does.
FmRows feature_major_shared(const at::Tensor& m, bool store);

// The layouts of the op contract (sparselayer/_library.py, Layouts): spmm's and spmm_t's (batch, n) result is
// feature-major (the transposed view of an (n, batch) tensor) where their dense operand is, row-major elsewhere.
bool result_feature_major(const at::Tensor& operand, int64_t n);
// An uninitialised (batch, n) result in operand's layout, and the row-major result y in operand's layout (y itself,
// or a transposed copy).
at::Tensor empty_activation(const at::Tensor& operand, int64_t n);
at::Tensor in_layout_of(const at::Tensor& y, const at::Tensor& operand);
// What a kernel writing either layout takes: y^T's row length where y is feature-major, 0 where it is row-major.
inline int64_t result_ld(const at::Tensor& y) {
  return y.size(0) > 1 && y.size(1) > 1 && y.stride(0) == 1 ? y.stride(1) : 0;
}

// y (batch, n_out) = x (batch, n_cols) @ A^T for the CSR matrix A = (ptr, idx, vals[perm]) of n_out rows
// (perm undefined: vals in index order). spmm calls it with W's CSR, spmm_t with W's CSC index and perm.
at::Tensor csr_times_dense(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& vals,
                           const at::Tensor& perm, const at::Tensor& x, int64_t n_out);

// Whether a row-sorted kernel runs: where the environment variable `override` says so (1 always, 2 never), else
// where `default_here`; never while the current stream captures a CUDA graph (its pack copies sizes to the host),
// nor for batches whose tile offsets would pass 2^31. SPARSELAYER_SPMM_SORTED for csr_times_dense's product
// (spmm_sorted.cu), SPARSELAYER_SDDMM_SORTED for sddmm (sddmm_sorted.cu).
bool sorted_kernel_applies(const char* override, bool default_here, int64_t batch);
at::Tensor sorted_csr_times_dense(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& vals,
                                  const at::Tensor& perm, const at::Tensor& x, int64_t n_out);

// The row-sorted sddmm (sddmm_sorted.cu), where sorted_kernel_applies("SPARSELAYER_SDDMM_SORTED", ..): writes the
// float32 sums to out (batch splits added in split order within the launch: last_of_splits), and returns false,
// launching nothing, where the densest panel's running sums do not fit in shared memory.
bool sorted_sddmm(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& grad_y, const at::Tensor& x,
                  const at::Tensor& out);

// --- device helpers ----------------------------------------------------------------------------------

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void store_as(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_as(bf16* p, float v) { *p = __float2bfloat16_rn(v); }

// Four consecutive elements as float4: one 16-byte load of float32, one 8-byte load of bfloat16 (a bfloat16 is
// the high half of the float32 with the same bits, so widening is a shift or a mask).
__device__ __forceinline__ float4 load4(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }
__device__ __forceinline__ float4 load4(const bf16* p) {
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
  return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                     __uint_as_float(u.y & 0xffff0000u));
}

// Swizzled tile [P][32]: column c of the panel holds its 32 batch values as 8 float4 chunks, chunk q stored
// at slot q ^ ((c >> 2) & 7). An 8-lane group reading one column (lane l -> chunk l) touches 8 distinct
// bank quads, and the transposing stores of load_tile_swizzled are conflict-free too.
__device__ __forceinline__ int swizzled_chunk(int c, int q) {
  return c * kBt + (((q ^ (c >> 2)) & 7) << 2);
}

// Both tile loaders issue U independent loads per thread before storing any (U loads in flight: a load
// loop that waits on each load in turn was latency-bound, ~600 cycles per L2 round trip).

// Stage m[b0 : b0+32, c0 : c0+P] (zero outside the matrix) into the swizzled tile ts. P % 32 == 0.
// m is (nrows, ncols) float32 or bfloat16 with strides (sb, sc); vec: sc == 1, ncols % 4 == 0, rows aligned to
// four elements (can_vectorise).
// T: threads of the block.
template <int U, int T = kThreads, typename In = float>
__device__ __forceinline__ void load_tile_swizzled(float* __restrict__ ts, const In* __restrict__ m,
                                                   int64_t sb, int64_t sc, bool vec, int nrows, int ncols,
                                                   int b0, int c0, int P) {
  if (vec) {
    // Item i: 8 consecutive lanes read 8 consecutive float4 (128 contiguous bytes) of one batch row.
    const int n4 = kBt * (P / 4);
    for (int i0 = threadIdx.x; i0 < n4; i0 += U * T) {
      float4 v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = i0 + u * T;
        const int cq = ((i >> 8) << 3) | (i & 7);  // column quad within the panel
        const int gb = b0 + ((i >> 3) & (kBt - 1)), gc = c0 + 4 * cq;
        v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (i < n4 && gb < nrows && gc < ncols) v[u] = load4(m + gb * sb + gc);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = i0 + u * T;
        if (i < n4) {
          const int cq = ((i >> 8) << 3) | (i & 7);
          const int b = (i >> 3) & (kBt - 1);
          float* dst = ts + swizzled_chunk(4 * cq, b >> 2) + (b & 3);
          dst[0] = v[u].x;
          dst[kBt] = v[u].y;
          dst[2 * kBt] = v[u].z;
          dst[3 * kBt] = v[u].w;
        }
      }
    }
  } else {
    const int n = kBt * P;
    for (int i0 = threadIdx.x; i0 < n; i0 += U * T) {
      float v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = i0 + u * T;
        const int gb = b0 + (i & (kBt - 1)), gc = c0 + (i >> 5);
        v[u] = (i < n && gb < nrows && gc < ncols) ? to_float(m[gb * sb + gc * sc]) : 0.f;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = i0 + u * T;
        const int b = i & (kBt - 1);
        if (i < n) ts[swizzled_chunk(i >> 5, b >> 2) + (b & 3)] = v[u];
      }
    }
  }
}

// Stage m[b0 : b0+32, c0 : c0+W] into the plain tile ts [W][32] (column c at ts + 32 c). Consecutive lanes
// take consecutive batch rows, so the transposing stores hit 32 distinct banks. W % 4 == 0.
template <int U, int T = kThreads, typename In = float>
__device__ __forceinline__ void load_tile_plain(float* __restrict__ ts, const In* __restrict__ m,
                                                int64_t sb, int64_t sc, bool vec, int nrows, int ncols,
                                                int b0, int c0, int W) {
  if (vec) {
    const int n4 = kBt * (W / 4);
    for (int i0 = threadIdx.x; i0 < n4; i0 += U * T) {
      float4 v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = i0 + u * T;
        const int gb = b0 + (i & (kBt - 1)), gc = c0 + 4 * (i >> 5);
        v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (i < n4 && gb < nrows && gc < ncols) v[u] = load4(m + gb * sb + gc);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = i0 + u * T;
        if (i < n4) {
          float* dst = ts + 4 * (i >> 5) * kBt + (i & (kBt - 1));
          dst[0] = v[u].x;
          dst[kBt] = v[u].y;
          dst[2 * kBt] = v[u].z;
          dst[3 * kBt] = v[u].w;
        }
      }
    }
  } else {
    const int n = kBt * W;
    for (int i0 = threadIdx.x; i0 < n; i0 += U * T) {
      float v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = i0 + u * T;
        const int gb = b0 + (i & (kBt - 1)), gc = c0 + (i >> 5);
        v[u] = (i < n && gb < nrows && gc < ncols) ? to_float(m[gb * sb + gc * sc]) : 0.f;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = i0 + u * T;
        if (i < n) ts[i] = v[u];  // ts[c * 32 + b] with c = i >> 5, b = i & 31
      }
    }
  }
}

// 4-byte asynchronous copy global -> shared (cp.async, Ampere and later); valid == false writes a zero.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async8(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(s), "l"(gmem) : "memory");
}
// 16-byte asynchronous copy global -> shared, bypassing L1; the last 16 - src_bytes bytes are zero-filled.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed copy groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// Stage the same tile from a feature-major copy mt (row c holds m[:, c], rows of ld floats, ld % 4 == 0, 16-byte
// aligned): each tile column is 128 contiguous bytes there, so the tile is 8 P 16-byte cp.async copies with no
// transpose and no registers (all in flight at once). The caller commits and waits.
template <int T>
__device__ __forceinline__ void copy_tile_swizzled(float* __restrict__ ts, const float* __restrict__ mt, int64_t ld,
                                                   int nrows, int ncols, int b0, int c0, int P) {
  for (int i = threadIdx.x; i < 8 * P; i += T) {
    const int c = i >> 3, qd = i & 7;  // 8 consecutive threads copy one column: 128 contiguous bytes
    const int gc = c0 + c, gb = b0 + 4 * qd;
    const int bytes = gc < ncols && gb < nrows ? 4 * min(4, nrows - gb) : 0;
    cp_async16(ts + swizzled_chunk(c, qd), bytes ? mt + gc * ld + gb : mt, bytes);
  }
}

// The plain tile [W][32] of load_tile_plain from a feature-major copy mt (as copy_tile_swizzled): rows
// b0 .. nrows - 1 of m, 16-byte cp.async copies; the caller commits and waits.
template <int T>
__device__ __forceinline__ void copy_tile_plain(float* __restrict__ ts, const float* __restrict__ mt, int64_t ld,
                                                int nrows, int ncols, int b0, int c0, int W) {
  for (int i = threadIdx.x; i < 8 * W; i += T) {
    const int c = i >> 3, qd = i & 7;
    const int gc = c0 + c, gb = b0 + 4 * qd;
    const int bytes = gc < ncols && gb < nrows ? 4 * min(4, nrows - gb) : 0;
    cp_async16(ts + c * kBt + 4 * qd, bytes ? mt + gc * ld + gb : mt, bytes);
  }
}

// sddmm's batch splits (blockIdx.z), summed without a second kernel launch (v20: a launch is 6-8 us of host time on
// the lent H100's host, benchmarks/kernels-notes.md). A block that has written its split's partial sums (slice z of
// `partial`, nnz floats each) counts itself in at its group's counter; the last block of the group to arrive then
// adds the slices in split order, the sum the separate pass made, bit for bit, and leaves the counter at zero for the
// next launch. Call with every thread of the block after its partial writes; flag: an int of shared memory that no
// thread uses at the time. Returns whether this block is that last one.
__device__ __forceinline__ bool last_of_splits(int* __restrict__ arrivals, int* flag) {
  __threadfence();  // this thread's partial sums are visible to the whole device before the block counts in
  __syncthreads();
  if (threadIdx.x == 0) {
    const bool last = atomicAdd(arrivals, 1) == static_cast<int>(gridDim.z) - 1;
    if (last) *arrivals = 0;  // every block of the group has counted in
    *flag = last;
  }
  __syncthreads();
  const bool last = *flag != 0;
  if (last) __threadfence();
  return last;
}

// The sum over the splits of nonzero k's partial sums, in split order (read through L2: other blocks wrote them).
__device__ __forceinline__ float sum_of_splits(const float* __restrict__ partial, int64_t nnz, int64_t k) {
  float acc = 0.f;
  for (int z = 0; z < static_cast<int>(gridDim.z); ++z) acc += __ldcg(partial + z * nnz + k);
  return acc;
}

// Zeroed counters for last_of_splits, one per block group, cached with the index (each launch leaves them at zero).
at::Tensor split_arrivals(const char* kind, const at::Tensor& crow, const at::Tensor& col, int64_t groups,
                          int64_t splits);

// Inclusive prefix sum of v over the lanes of a (full) warp.
__device__ __forceinline__ int warp_inclusive_sum(int v, int lane) {
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, v, d);
    if (lane >= d) v += n;
  }
  return v;
}

__device__ __forceinline__ void fma4(float4& acc, float v, const float4& x) {
  acc.x = fmaf(v, x.x, acc.x);
  acc.y = fmaf(v, x.y, acc.y);
  acc.z = fmaf(v, x.z, acc.z);
  acc.w = fmaf(v, x.w, acc.w);
}

}  // namespace sparselayer
