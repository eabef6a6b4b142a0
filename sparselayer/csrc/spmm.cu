// sparselayer::spmm on CUDA: y = x @ W^T, x (batch, n_in) -> y (batch, n_out), W in CSR.
//
// Large products go to the row-sorted kernel (spmm_sorted.cu, chosen in csr_times_dense); this file holds the
// panel kernels that run the rest, and every product while a CUDA graph is being captured.
//
// fp32: one block owns R = 32 * J output rows and NB tiles of 32 batch rows, and walks the input columns in
// panels of P. Per panel it stages x[b-tiles, panel] in shared memory (read straight from x's own layout,
// coalesced along the columns) together with the block's nonzeros of that panel, then each 8-lane group
// multiplies its J rows' nonzeros with the staged columns: lane l holds batch values 4l..4l+3 of each batch
// tile, one float4 shared-memory read per nonzero and tile. Staging x pays when the block's rows reuse a
// column, R * density times on average, so R grows to 512 (the accumulators, 4 J NB registers per thread,
// bound it). The nonzeros are packed (pack_panels_kernel, once per topology: cache.cu) in (row block, panel,
// row) order as (byte offset of the column in the swizzled x tile, value position) pairs, so a block stages a
// panel's nonzeros with one coalesced copy instead of chasing each row's segment through global memory (a chain of
// dependent loads that made the first version latency-bound); the value position is k, or perm[k] for spmm_t, and the values
// are read through it every call. Two variants: spmm_panel_kernel stages each panel then computes it;
// spmm_panel_db_kernel fetches panel p + 1 with cp.async while computing panel p (faster at 90%, slower at
// 97-99%: benchmarks/kernels-notes.md, v6; no longer a default). spmm_panel_kernel stages x either with
// transposing loads from x's own layout or, on large sparse products (choose_config), by 16-byte cp.async copies
// from a feature-major copy made per call (feature_major; an x that is a feature-major view is used in place):
// the transposing loads were a third of the kernel's instructions at 99% (v8).
// bf16 activations (x, y bfloat16; values fp32): the same kernels, x converted to fp32 as it is staged (or
// copied), the fp32 sums rounded once into y.
// fp64: one thread per output element; simple and exact, for gradcheck and references.
#include "common.cuh"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <type_traits>

namespace sparselayer {
namespace {

// The double-buffered kernel is the default from this density and this many multiply-adds (nnz x batch) up;
// the single-buffered one below (measured, benchmarks/kernels-notes.md, v6: the double-buffered kernel's
// narrower panels cost more than its overlap wins at 97-99%, and it lost on the 4096^2 b512 forward).
constexpr double kDbMinDensity = 0.05;
constexpr double kDbMinWork = 2e9;
constexpr double kSortedMinWork = 2e8;  // the row-sorted kernel's smallest products from kDbMinDensity up

// Packs the nonzeros of row block b, panel p at packed[q[(b * n_panels + p) * R + i] ...] for its rows i,
// as (byte offset of the column in the swizzled x tile for lane 0, position of the value in `vals`: k, or perm[k]
// for spmm_t). Index only: the layout is cached per topology, the values are read through it per call. Block b's nonzeros stay within its own CSR range [ptr[o0], ptr[o0 + R]),
// panel after panel: the rows' nonzeros before panel p number sum_r (pp[p][r] - ptr[r]).
__global__ void __launch_bounds__(kThreads)
pack_panels_kernel(const int32_t* __restrict__ pp, const int64_t* __restrict__ ptr, const int64_t* __restrict__ idx,
                   const int64_t* __restrict__ perm, int n_rows, int n_panels,
                   int P, int R, int32_t* __restrict__ q, int2* __restrict__ packed) {
  __shared__ int warp_scan[kThreads / 32];
  __shared__ int warp_before[kThreads / 32];
  const int b = blockIdx.x, p = blockIdx.y, o0 = b * R;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int per = (R + kThreads - 1) / kThreads;  // <= 4 since R <= 1024
  int start[4], len[4];
  int sum_len = 0, before = 0;
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const int i = tid * per + u, o = o0 + i;
    start[u] = len[u] = 0;
    if (u < per && i < R && o < n_rows) {
      const int s = pp[static_cast<int64_t>(p) * n_rows + o];
      const int e = pp[static_cast<int64_t>(p + 1) * n_rows + o];
      start[u] = s;
      len[u] = e - s;
      sum_len += e - s;
      before += s - static_cast<int>(ptr[o]);
    }
  }
  int incl = sum_len;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, incl, d);
    if (lane >= d) incl += n;
  }
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) before += __shfl_xor_sync(0xffffffffu, before, d);
  if (lane == 31) warp_scan[warp] = incl;
  if (lane == 0) warp_before[warp] = before;
  __syncthreads();
  int prefix = 0, before_all = 0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) {
    if (w < warp) prefix += warp_scan[w];
    before_all += warp_before[w];
  }
  int dest = static_cast<int>(ptr[o0]) + before_all + prefix + incl - sum_len;
  int32_t* qrow = q + (static_cast<int64_t>(b) * n_panels + p) * R;
  const int c0 = p * P;
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const int i = tid * per + u;
    if (u < per && i < R) {
      qrow[i] = dest;
      for (int t = 0; t < len[u]; ++t) {
        const int64_t k = start[u] + t;
        const int src = perm ? static_cast<int>(perm[k]) : static_cast<int>(k);
        const int c = static_cast<int>(idx[k]) - c0;  // column within the panel -> its swizzled tile offset
        packed[dest + t] = make_int2(4 * (c * kBt + (((c >> 2) & 7) << 2)), src);  // in bytes
      }
      dest += len[u];
    }
  }
  if (b == gridDim.x - 1 && p == gridDim.y - 1 && tid == 0)
    q[static_cast<int64_t>(gridDim.x) * n_panels * R] = static_cast<int32_t>(ptr[n_rows]);
}

// Blocks per SM the register budget is shaped for: 64 accumulator registers per thread at J * NB = 16 with 256
// threads; 512-thread blocks hold the same rows with half the accumulators per thread (J = 8), two blocks per SM.
template <int J, int NB, int T>
constexpr int min_blocks() { return T > kThreads ? 2 : (J * NB >= 16 ? 2 : 3); }

// Entries of a row multiplied in flight at once. The 512-thread kernel with 8 rows per thread has 64 registers (two
// blocks per SM), 32 of them accumulators: four in flight spilled 184 bytes (10.2 M local loads in one 16384^2
// b1024 99% forward, Nsight Compute), two spill 4 bytes (1.0 M): 1.27 -> 1.15 ms under ncu, 1.37 -> 1.29 ms timed
// (v9, benchmarks/results/history/tune-v9-unroll.log).
template <int J, int T>
__host__ __device__ constexpr int entries_in_flight() { return T > kThreads && J >= 8 ? 2 : 4; }

// p advanced by `bytes` bytes: the packed entries hold byte offsets, so an entry's x chunk is addressed with one
// XOR (and the load's register + uniform-register addressing), no shift.
__device__ __forceinline__ const float* byte_offset(const float* p, int bytes) {
  return reinterpret_cast<const float*>(reinterpret_cast<const char*>(p) + bytes);
}

// The multiply-adds of one staged panel, shared by both kernels: row group g's rows j * G + g take their nonzeros
// sw[seg[r] - base, seg[r + 1] - base) against the staged x tiles xs (NB sub-tiles of `sub` floats). Entries past
// `cap` (a panel with more nonzeros than were staged; n is the panel's count) come from global memory instead:
// packed[cb + k] for the column and vals[packed_vals ? cb + k : packed[cb + k].y] for the value. Unroll: entries
// of a row in flight at once (each holds 6 registers; see entries_in_flight).
template <int J, int NB, int G, int Unroll>
__device__ __forceinline__ void multiply_panel(float4 (&acc)[J][NB], const int2* sw, const int* seg, int base, int n,
                                               int cap, const float* xs, int sub, int lane_bytes, int g,
                                               const int2* __restrict__ packed, int cb,
                                               const float* __restrict__ vals, bool packed_vals) {
  if (n <= cap) {  // block-uniform: every nonzero of the panel is staged
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int r = j * G + g;
      const int s = seg[r] - base, e = seg[r + 1] - base;
#pragma unroll Unroll
      for (int k = s; k < e; ++k) {
        const int2 w = sw[k];
        const float v = __int_as_float(w.y);
        const float* xc = byte_offset(xs, w.x ^ lane_bytes);
#pragma unroll
        for (int h = 0; h < NB; ++h) fma4(acc[j][h], v, *reinterpret_cast<const float4*>(xc + h * sub));
      }
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < J; ++j) {
    const int r = j * G + g;
    const int s = seg[r] - base, e = seg[r + 1] - base;
    for (int k = s; k < e; ++k) {
      int2 w;
      if (k < cap) {
        w = sw[k];
      } else {
        w = __ldg(packed + cb + k);
        w.y = __float_as_int(__ldg(vals + (packed_vals ? cb + k : w.y)));
      }
      const float v = __int_as_float(w.y);
      const float* xc = byte_offset(xs, w.x ^ lane_bytes);
#pragma unroll
      for (int h = 0; h < NB; ++h) fma4(acc[j][h], v, *reinterpret_cast<const float4*>(xc + h * sub));
    }
  }
}

// y[b0 + h * 32 + i, o0 + j * G + g] = acc[j][h] component i (b0: this lane's first batch row), within bounds. ldy > 0:
// y is feature-major (y^T in rows of ldy values; the lane's 4 values are consecutive there), 0: row-major.
template <int J, int NB, int G, typename Out>
__device__ __forceinline__ void store_rows(const float4 (&acc)[J][NB], Out* __restrict__ y, int64_t ldy, int o0, int g,
                                           int b0, int batch, int n_rows) {
#pragma unroll
  for (int j = 0; j < J; ++j) {
    const int o = o0 + j * G + g;
    if (o >= n_rows) continue;
#pragma unroll
    for (int h = 0; h < NB; ++h) {
      const int b = b0 + h * kBt;
      const int64_t step = ldy > 0 ? 1 : n_rows;
      Out* out = ldy > 0 ? y + o * ldy + b : y + static_cast<int64_t>(b) * n_rows + o;
      if (b < batch) store_as(out, acc[j][h].x);
      if (b + 1 < batch) store_as(out + step, acc[j][h].y);
      if (b + 2 < batch) store_as(out + 2 * step, acc[j][h].z);
      if (b + 3 < batch) store_as(out + 3 * step, acc[j][h].w);
    }
  }
}

// NB batch sub-tiles of 32 per block: lane l of a row group holds batch values 4l..4l+3 of each sub-tile,
// so one staged nonzero feeds 4 NB multiply-adds (NB = 2 halves the instructions per multiply-add).
// T threads per block (256, or 512 to double the warps per SM for the same rows per block).
// In: the activations' type, float or bf16 (x and y; the values and the accumulation stay fp32).
template <int J, int NB, int T, typename In>
__global__ void __launch_bounds__(T, (min_blocks<J, NB, T>()))
spmm_panel_kernel(const int32_t* __restrict__ q, const int2* __restrict__ packed, const float* __restrict__ vals,
                  const In* __restrict__ x, int64_t sxb, int64_t sxc, bool vec, const float* __restrict__ xt,
                  int64_t ldt, int batch, int n_cols, int n_rows, int n_panels, int P,
                  int cap, bool packed_vals, In* __restrict__ y, int64_t ldy) {
  constexpr int G = T / kLanes;  // row groups per block
  constexpr int R = G * J;              // rows per block
  extern __shared__ float4 smem4[];
  float* xs = reinterpret_cast<float*>(smem4);              // NB x [P][32] swizzled
  int2* sw = reinterpret_cast<int2*>(xs + NB * P * kBt);    // [cap] staged nonzeros of the panel
  int* seg = reinterpret_cast<int*>(sw + cap);              // [R + 1] row segments, relative to the chunk
  const int tid = threadIdx.x, g = tid / kLanes, l = tid % kLanes;
  const int b0 = blockIdx.y * kBt * NB;
  const int lane_bytes = l << 4;  // 4 * swizzled_chunk(c, l) == packed byte offset ^ (l << 4)
  const int sub = P * kBt;       // floats per sub-tile
  constexpr int U = T > kThreads ? 2 : 4;  // loads in flight per thread while staging (the same per block)

  float4 acc[J][NB];
#pragma unroll
  for (int j = 0; j < J; ++j)
#pragma unroll
    for (int h = 0; h < NB; ++h) acc[j][h] = make_float4(0.f, 0.f, 0.f, 0.f);

  for (int p = 0; p < n_panels; ++p) {
    const int32_t* qp = q + (static_cast<int64_t>(blockIdx.x) * n_panels + p) * R;
    const int cb = __ldg(qp), n = __ldg(qp + R) - cb;  // this panel's chunk: packed[cb, cb + n)
    const int c0 = p * P;
    const int staged = min(n, cap);
    if (xt) {  // feature-major copy: the x tiles fly (cp.async) while the nonzeros are staged below
#pragma unroll
      for (int h = 0; h < NB; ++h) copy_tile_swizzled<T>(xs + h * sub, xt, ldt, batch, n_cols, b0 + h * kBt, c0, P);
      cp_async_commit();
    }
    for (int t0 = tid; t0 < staged; t0 += U * T) {
      int2 w[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int t = t0 + u * T;
        if (t < staged) w[u] = __ldg(packed + cb + t);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int t = t0 + u * T;
        if (t < staged) w[u].y = __float_as_int(__ldg(vals + (packed_vals ? cb + t : w[u].y)));
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int t = t0 + u * T;
        if (t < staged) sw[t] = w[u];
      }
    }
    for (int i = tid; i <= R; i += T) seg[i] = __ldg(qp + i) - cb;
    if (xt) {
      cp_async_wait<0>();
    } else {
#pragma unroll
      for (int h = 0; h < NB; ++h)
        load_tile_swizzled<U, T>(xs + h * sub, x, sxb, sxc, vec, batch, n_cols, b0 + h * kBt, c0, P);
    }
    __syncthreads();
    multiply_panel<J, NB, G, entries_in_flight<J, T>()>(acc, sw, seg, 0, n, cap, xs, sub, lane_bytes, g, packed, cb,
                                                        vals, packed_vals);
    __syncthreads();
  }

  store_rows<J, NB, G>(acc, y, ldy, blockIdx.x * R, g, b0 + 4 * l, batch, n_rows);
}

// Floats per stage of the double-buffered kernel: NB x tiles, cap staged entries (2 words each), R + 1 raw
// panel pointers; a multiple of 4 so that the second stage's tiles stay 16-byte aligned.
__host__ __device__ inline int db_stage_floats(int P, int cap, int R, int NB) {
  return (NB * P * kBt + 2 * cap + R + 1 + 3) / 4 * 4;
}

// pvals[t] = vals[packed[t].y]: the values in packed order, gathered once per call for the cp.async stages.
__global__ void gather_values_kernel(const int2* __restrict__ packed, const float* __restrict__ vals, int64_t nnz,
                                     float* __restrict__ pvals) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < nnz) pvals[t] = __ldg(vals + __ldg(&packed[t].y));
}

// The same computation as spmm_panel_kernel with two shared-memory stages: while the block multiplies panel p,
// the copy engine of cp.async fetches panel p + 1 (x tile, packed entries, panel pointers), so tile loads
// overlap compute instead of alternating with it at a barrier (v2-v5 spent most of each panel waiting on
// L2 round trips). P is a power of two (1 << log2P).
template <int J, int NB>
__global__ void __launch_bounds__(kThreads, 2)
spmm_panel_db_kernel(const int32_t* __restrict__ q, const int2* __restrict__ packed, const float* __restrict__ pvals,
                     const float* __restrict__ x, int64_t sxb, int64_t sxc, int batch, int n_cols, int n_rows,
                     int n_panels, int log2P, int cap, float* __restrict__ y, int64_t ldy) {
  constexpr int G = kThreads / kLanes;  // row groups per block
  constexpr int R = G * J;              // rows per block
  extern __shared__ float4 smem4[];
  float* const smem = reinterpret_cast<float*>(smem4);
  const int P = 1 << log2P;
  const int sub = P * kBt;  // floats per sub-tile
  const int stage_floats = db_stage_floats(P, cap, R, NB);
  const int tid = threadIdx.x, g = tid / kLanes, l = tid % kLanes;
  const int warp = tid >> 5, lane = tid & 31;
  const int b0 = blockIdx.y * kBt * NB;
  const int lane_bytes = l << 4;
  const int32_t* qblock = q + static_cast<int64_t>(blockIdx.x) * n_panels * R;

  auto stage = [&](int p, int s) {
    float* xs = smem + s * stage_floats;
    int2* sw = reinterpret_cast<int2*>(xs + NB * sub);
    int* seg = reinterpret_cast<int*>(sw + cap);
    const int32_t* qp = qblock + static_cast<int64_t>(p) * R;
    const int cb = __ldg(qp), staged = min(__ldg(qp + R) - cb, cap);
    for (int t = tid; t < staged; t += kThreads) {
      cp_async4(&sw[t].x, &packed[cb + t].x, true);
      cp_async4(&sw[t].y, pvals + cb + t, true);
    }
    for (int i = tid; i <= R; i += kThreads) cp_async4(seg + i, qp + i, true);
    // x[b-tiles, panel p]: per step k a warp copies a 4 (batch) x 32 (column) block, lane -> batch row
    // 4 (wb % 8) + lane % 4, column 32 (wb / 8) + 4 (lane / 4) + k: 32 distinct banks of the swizzled tile.
    const int c0 = p << log2P;
    const int blocks = (kBt / 4) * (P / 32);  // 4 x 32 blocks per sub-tile
#pragma unroll
    for (int h = 0; h < NB; ++h) {
      for (int wb = warp; wb < blocks; wb += kThreads / 32) {
        const int b = 4 * (wb & 7) + (lane & 3);
        const int gb = b0 + h * kBt + b;
        const int cbase = 32 * (wb >> 3) + 4 * (lane >> 2);
        const float* xrow = x + static_cast<int64_t>(gb) * sxb;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int c = cbase + k, gc = c0 + c;
          const bool ok = gb < batch && gc < n_cols;
          cp_async4(xs + h * sub + swizzled_chunk(c, b >> 2) + (b & 3), ok ? xrow + gc * sxc : x, ok);
        }
      }
    }
    cp_async_commit();
  };

  float4 acc[J][NB];
#pragma unroll
  for (int j = 0; j < J; ++j)
#pragma unroll
    for (int h = 0; h < NB; ++h) acc[j][h] = make_float4(0.f, 0.f, 0.f, 0.f);

  stage(0, 0);
  for (int p = 0; p < n_panels; ++p) {
    if (p + 1 < n_panels) stage(p + 1, (p + 1) & 1);
    else cp_async_commit();  // an empty group keeps "all but the newest group" meaning panel p
    cp_async_wait<1>();
    __syncthreads();
    const float* xs = smem + (p & 1) * stage_floats;
    const int2* sw = reinterpret_cast<const int2*>(xs + NB * sub);
    const int* seg = reinterpret_cast<const int*>(sw + cap);
    const int cb = seg[0], n = seg[R] - cb;  // this panel's chunk: packed[cb, cb + n)
    multiply_panel<J, NB, G, 4>(acc, sw, seg, cb, n, cap, xs, sub, lane_bytes, g, packed, cb, pvals, true);
    __syncthreads();  // stage p & 1 is refilled with panel p + 2 next
  }

  store_rows<J, NB, G>(acc, y, ldy, blockIdx.x * R, g, b0 + 4 * l, batch, n_rows);
}

template <typename scalar_t>
__global__ void spmm_simple_kernel(const int64_t* __restrict__ ptr, const int64_t* __restrict__ idx,
                                   const scalar_t* __restrict__ val, const scalar_t* __restrict__ x, int64_t sxb,
                                   int64_t sxc, int64_t batch, int64_t n_rows, scalar_t* __restrict__ y, int64_t syb,
                                   int64_t syo) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= n_rows) return;
  const int64_t s = ptr[o], e = ptr[o + 1];
  for (int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
    scalar_t acc = 0;
    for (int64_t k = s; k < e; ++k) acc += val[k] * x[b * sxb + idx[k] * sxc];
    y[b * syb + o * syo] = acc;
  }
}

// One launch configuration of the fp32 panel kernels (chosen in csr_times_dense).
struct PanelConfig {
  int J, NB, P, cap, smem;  // J: rows per block / 32
  bool db;                  // double-buffered kernel (P a power of two)
  bool fm;                  // single-buffered kernel staging x from a feature-major copy (16-byte cp.async)
  int threads;              // threads per block of the single-buffered kernel: 256, or 512 where has_wide
};

// 512-thread blocks exist for the single-buffered kernel with one batch tile and 256 or 512 rows per block.
constexpr bool has_wide(int J, int NB) { return NB == 1 && (J == 8 || J == 16); }

// In: float, or bf16 for bfloat16 activations (single-buffered kernel only: choose_config never picks the
// double-buffered one for them).
template <int J, int NB, typename In>
void launch_panel(const PanelConfig& c, const at::Tensor& q, const at::Tensor& packed, const at::Tensor& vals,
                  const at::Tensor& pvals, const at::Tensor& x, const FmRows& xt, int64_t n_rows, int n_panels,
                  at::Tensor& y) {
  constexpr int R = (kThreads / kLanes) * J;
  const int64_t batch = x.size(0);
  const dim3 grid(static_cast<unsigned>((n_rows + R - 1) / R),
                  static_cast<unsigned>((batch + kBt * NB - 1) / (kBt * NB)));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int2* pk = reinterpret_cast<const int2*>(packed.data_ptr<int32_t>());
  const In* xp = reinterpret_cast<const In*>(x.const_data_ptr());
  In* yp = reinterpret_cast<In*>(y.data_ptr());
  if constexpr (std::is_same_v<In, float>) {
    if (c.db) {
      allow_smem(reinterpret_cast<const void*>(spmm_panel_db_kernel<J, NB>), x.get_device());
      int log2P = 0;
      while ((1 << log2P) < c.P) ++log2P;
      spmm_panel_db_kernel<J, NB><<<grid, kThreads, c.smem, stream>>>(
          q.data_ptr<int32_t>(), pk, pvals.data_ptr<float>(), xp, x.stride(0), x.stride(1),
          static_cast<int>(batch), static_cast<int>(x.size(1)), static_cast<int>(n_rows), n_panels, log2P, c.cap, yp,
          result_ld(y));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
  }
  // The single-buffered kernel reads the values in packed order when they were gathered (pvals), else through
  // each packed entry's position.
  const at::Tensor& sv = pvals.defined() ? pvals : vals;
  if (c.threads == 2 * kThreads) {
    if constexpr (has_wide(J, NB)) {  // the same R rows over twice the row groups
      allow_smem(reinterpret_cast<const void*>(spmm_panel_kernel<J / 2, NB, 2 * kThreads, In>), x.get_device());
      spmm_panel_kernel<J / 2, NB, 2 * kThreads, In><<<grid, 2 * kThreads, c.smem, stream>>>(
          q.data_ptr<int32_t>(), pk, sv.data_ptr<float>(), xp, x.stride(0), x.stride(1), can_vectorise(x),
          xt.ptr<float>(), xt.ld, static_cast<int>(batch),
          static_cast<int>(x.size(1)), static_cast<int>(n_rows), n_panels, c.P, c.cap, pvals.defined(), yp,
          result_ld(y));
    }
  } else {
    allow_smem(reinterpret_cast<const void*>(spmm_panel_kernel<J, NB, kThreads, In>), x.get_device());
    spmm_panel_kernel<J, NB, kThreads, In><<<grid, kThreads, c.smem, stream>>>(
        q.data_ptr<int32_t>(), pk, sv.data_ptr<float>(), xp, x.stride(0), x.stride(1), can_vectorise(x),
        xt.ptr<float>(), xt.ld, static_cast<int>(batch),
        static_cast<int>(x.size(1)), static_cast<int>(n_rows), n_panels, c.P, c.cap, pvals.defined(), yp,
          result_ld(y));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Every launch configuration choose_config can pick, for activations of type In (bfloat16: one batch tile per block).
template <typename In>
void launch_config(const PanelConfig& c, const at::Tensor& q, const at::Tensor& packed, const at::Tensor& vals,
                   const at::Tensor& pvals, const at::Tensor& x, const FmRows& xt, int64_t n_rows, int n_panels,
                   at::Tensor& y) {
#define SPARSELAYER_LAUNCH(J, NB) launch_panel<J, NB, In>(c, q, packed, vals, pvals, x, xt, n_rows, n_panels, y)
  if constexpr (std::is_same_v<In, float>) {
    if (c.NB == 2) {
      switch (c.J) {
        case 8: SPARSELAYER_LAUNCH(8, 2); break;
        case 4: SPARSELAYER_LAUNCH(4, 2); break;
        case 2: SPARSELAYER_LAUNCH(2, 2); break;
        default: SPARSELAYER_LAUNCH(1, 2); break;
      }
      return;
    }
  }
  switch (c.J) {
    case 16: SPARSELAYER_LAUNCH(16, 1); break;
    case 8: SPARSELAYER_LAUNCH(8, 1); break;
    case 4: SPARSELAYER_LAUNCH(4, 1); break;
    case 2: SPARSELAYER_LAUNCH(2, 1); break;
    default: SPARSELAYER_LAUNCH(1, 1); break;
  }
#undef SPARSELAYER_LAUNCH
}

// Threads per block of the single-buffered kernel when SPARSELAYER_SPMM_T does not say: 512 wherever that kernel
// exists. Measured on an H100 (benchmarks/kernels-notes.md, v7), forward ms 256 -> 512 threads: 16384^2 b1024 99%
// 1.78 -> 1.60, 97% (one batch tile) 3.26 -> 3.16; 4096^2 b4096 99% 0.47 -> 0.41; 256-row blocks 2.17 -> 2.08.
int default_threads(const PanelConfig& c) { return has_wide(c.J, c.NB) ? 2 * kThreads : kThreads; }

// Shared memory of a panel block: NB x tiles, `cap` staged nonzeros, R + 1 segment bounds.
int panel_smem(int P, int cap, int R, int NB) { return NB * P * kBt * 4 + cap * 8 + (R + 1) * 4; }

// Staged nonzeros per panel: 1.25x the block's expected count, within what `budget` bytes leave after `fixed`.
int staged_cap(int R, int P, double density, int budget, int fixed) {
  const int expected = static_cast<int>((1.25 * R * P * density + 64) / 64 + 1) * 64;
  return std::max(64, std::min(expected, (budget - fixed) / 8));
}

// Measured on an H100 (benchmarks/tune.py, notes in benchmarks/kernels-notes.md): below 2% density one batch
// tile of 32 per block (NB = 1) and 512-row blocks over 512-column panels (the x reuse, R * density, is what
// pays for staging); above it two batch tiles per block (NB = 2) and 256-row blocks over 256-column panels.
// Row blocks shrink further until every SM gets two blocks. The double-buffered kernel (two stages) keeps
// two blocks per SM with narrower panels (64 columns at 90%). Nonzeros past `cap` (the staged share of a panel) are read from
// global memory instead: an unlucky panel is slower, never wrong.
// v7 (benchmarks/results/history/tune-v7*.log): on large products (nnz x batch >= 2e9) from 2% density, the
// 512-thread single-buffered kernel with one batch tile per block beats both NB = 2 and the double-buffered kernel
// with 256-row blocks (90%: 8.61 -> 7.80 and 2.15 -> 2.04). v8 (tune-v8.log, x staged from a feature-major copy):
// between 2% and 5% density 256-row blocks over 512-column panels (16384^2 b1024 97%: 3.06 -> 2.80 ms; 4096^2
// b4096: 0.90 -> 0.76) instead of v7's 512 x 256.
PanelConfig choose_config(int64_t n_out, int64_t n_cols, int64_t batch, int64_t nnz, int device, bool bf16_act) {
  PanelConfig c{};
  const double density = static_cast<double>(nnz) / (static_cast<double>(n_out) * n_cols);
  const bool large = static_cast<double>(nnz) * batch >= kDbMinWork;
  const bool wide_dense = large && density >= 0.02;
  const int nb_env = env_int("SPARSELAYER_SPMM_NB");  // tuning overrides, see benchmarks/tune.py
  c.NB = nb_env == 1 || nb_env == 2 ? nb_env : (density >= 0.02 && batch > kBt && !wide_dense ? 2 : 1);
  const int db_env = env_int("SPARSELAYER_SPMM_DB");  // 1: double-buffered kernel, 2: single-buffered
  c.db = db_env == 1 ? true : db_env == 2 ? false : density >= kDbMinDensity && large && !wide_dense;
  if (bf16_act) c.NB = 1, c.db = false;  // the only bfloat16 kernels (the build stays short)
  // x staged from a feature-major copy (16-byte cp.async, no transposing loads) where the copy pays: below 5%
  // density (above it the multiply-adds dominate each panel) with at least kFmMinUses nonzeros per column.
  const int fm_env = env_int("SPARSELAYER_SPMM_FM");  // 1: always, 2: never (x's own layout)
  c.fm = !c.db && (fm_env == 1 || (fm_env != 2 && density < kDbMinDensity && nnz >= kFmMinUses * n_cols));
  const int64_t batch_tiles = (batch + kBt * c.NB - 1) / (kBt * c.NB);
  const int64_t want = 2 * static_cast<int64_t>(num_sms(device));
  c.J = wide_dense && c.NB == 1 ? 8 : 16 / c.NB;
  while (c.J > 1 && ((n_out + 32 * c.J - 1) / (32 * c.J)) * batch_tiles < want) c.J /= 2;
  const int j_env = env_int("SPARSELAYER_SPMM_J"), p_env = env_int("SPARSELAYER_SPMM_P");
  if (j_env == 1 || j_env == 2 || j_env == 4 || j_env == 8 || (j_env == 16 && c.NB == 1)) c.J = j_env;
  const int R = 32 * c.J;
  const int t_env = env_int("SPARSELAYER_SPMM_T");
  c.threads = t_env == 512 ? 2 * kThreads : t_env == 256 ? kThreads : default_threads(c);
  if (c.db || !has_wide(c.J, c.NB)) c.threads = kThreads;
  const int blocks_per_sm = c.J * c.NB >= 16 || c.threads > kThreads ? 2 : 3;
  // Shared memory per block that keeps blocks_per_sm blocks on an SM (228 KB per SM, 1 KB reserved each).
  const int budget = std::min((228 / blocks_per_sm - 1) * 1024, max_smem_optin(device));
  if (!c.db) {
    const int cols32 = static_cast<int>(std::min<int64_t>((n_cols + 31) / 32 * 32, 512));
    c.P = std::min(density < 0.02 || (wide_dense && density < kDbMinDensity) ? 512 : 256, cols32);
    if (p_env >= 32 && p_env % 32 == 0) c.P = std::min(p_env, cols32);
    c.cap = staged_cap(R, c.P, density, budget, panel_smem(c.P, 0, R, c.NB));
    c.smem = panel_smem(c.P, c.cap, R, c.NB);
    return c;
  }
  // Double-buffered: the widest power-of-two panel whose two stages fit the budget with the expected count.
  int pow2 = 32;
  while (pow2 < n_cols && pow2 < 512) pow2 *= 2;
  c.P = pow2;
  if (p_env >= 32) {
    int p = 32;
    while (p * 2 <= p_env && p * 2 <= pow2) p *= 2;
    c.P = p;
  } else {
    while (c.P > 32) {
      const int cap = staged_cap(R, c.P, density, 1 << 30, 0);
      if (2 * 4 * db_stage_floats(c.P, cap, R, c.NB) <= budget) break;
      c.P /= 2;
    }
  }
  const int fixed = 4 * db_stage_floats(c.P, 0, R, c.NB) + 16;
  c.cap = std::max(64, std::min(staged_cap(R, c.P, density, 1 << 30, 0), (budget / 2 - fixed) / 8));
  c.smem = 2 * 4 * db_stage_floats(c.P, c.cap, R, c.NB);
  return c;
}

// The cached index layout of (ptr, idx[, perm]) for row blocks of R and panels of P: {q, packed}.
std::vector<at::Tensor> panel_layout(const at::Tensor& ptr_in, const at::Tensor& idx_in, const at::Tensor& perm_in,
                                     int64_t n_out, int64_t n_cols, int P, int R) {
  std::vector<at::Tensor> index{ptr_in, idx_in};
  if (perm_in.defined()) index.push_back(perm_in);
  return cached_layout("spmm_pack", index, {n_out, n_cols, P, R}, [&]() {
    const auto ptr = ptr_in.contiguous(), idx = idx_in.contiguous();
    const auto perm = perm_in.defined() ? perm_in.contiguous() : perm_in;
    const int n_panels = static_cast<int>((n_cols + P - 1) / P);
    const auto pp = panel_pointers(ptr, idx, n_out, n_cols, P);
    const int64_t n_blocks = (n_out + R - 1) / R;
    auto q = at::empty({n_blocks * n_panels * R + 1}, ptr.options().dtype(at::kInt));
    auto packed = at::empty({idx.numel(), 2}, ptr.options().dtype(at::kInt));
    const dim3 grid(static_cast<unsigned>(n_blocks), static_cast<unsigned>(n_panels));
    pack_panels_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        pp.data_ptr<int32_t>(), ptr.data_ptr<int64_t>(), idx.data_ptr<int64_t>(),
        perm.defined() ? perm.data_ptr<int64_t>() : nullptr, static_cast<int>(n_out), n_panels, P, R,
        q.data_ptr<int32_t>(), reinterpret_cast<int2*>(packed.data_ptr<int32_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return std::vector<at::Tensor>{q, packed};
  });
}

}  // namespace

at::Tensor csr_times_dense(const at::Tensor& ptr_in, const at::Tensor& idx_in, const at::Tensor& vals_in,
                           const at::Tensor& perm_in, const at::Tensor& x, int64_t n_out) {
  TORCH_CHECK(x.dim() == 2, "sparselayer: the dense operand must be 2-D (batch, n), got ", x.dim(), " dimensions");
  TORCH_CHECK(ptr_in.numel() == n_out + 1, "sparselayer: pointer array has ", ptr_in.numel(), " entries, expected ",
              n_out + 1);
  TORCH_CHECK(idx_in.numel() == vals_in.numel(), "sparselayer: ", idx_in.numel(), " indices but ", vals_in.numel(),
              " values");
  const bool bf16_act = x.scalar_type() == at::kBFloat16;
  TORCH_CHECK(vals_in.scalar_type() == (bf16_act ? at::kFloat : x.scalar_type()),
              "sparselayer: values are ", vals_in.scalar_type(), " but the dense operand is ", x.scalar_type(),
              " (bfloat16 activations need float32 values)");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t batch = x.size(0), n_cols = x.size(1);
  if (batch == 0 || n_out == 0) return empty_activation(x, n_out);
  if (idx_in.numel() == 0 || n_cols == 0) return empty_activation(x, n_out).zero_();
  TORCH_CHECK(batch < (int64_t{1} << 31) && n_out < (int64_t{1} << 31) && n_cols < (int64_t{1} << 31),
              "sparselayer: dimensions must be below 2^31");
  const int device = x.get_device();

  // Every kernel writes y in either layout (the op contract's Layouts: x's).
  if (x.scalar_type() == at::kDouble) {
    auto y = empty_activation(x, n_out);
    const auto ptr = ptr_in.contiguous(), idx = idx_in.contiguous();
    const auto vals = perm_in.defined() ? vals_in.index_select(0, perm_in) : vals_in.contiguous();
    const dim3 grid(static_cast<unsigned>((n_out + 127) / 128), static_cast<unsigned>(std::min<int64_t>(batch, 65535)));
    spmm_simple_kernel<double><<<grid, 128, 0, c10::cuda::getCurrentCUDAStream()>>>(
        ptr.data_ptr<int64_t>(), idx.data_ptr<int64_t>(), vals.data_ptr<double>(), x.data_ptr<double>(), x.stride(0),
        x.stride(1), batch, n_out, y.data_ptr<double>(), y.stride(0), y.stride(1));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
  }

  const int64_t nnz = idx_in.numel();
  TORCH_CHECK(nnz < std::numeric_limits<int32_t>::max(), "sparselayer: more than 2^31 nonzeros");
  const auto vals = vals_in.contiguous();
  // The row-sorted kernel wherever the panel kernel would stage x from a feature-major copy, on every large product,
  // and from 5% density on products of 2e8 multiply-adds (v11, benchmarks/kernels-notes.md: 16384^2 b1024 forward
  // 7.9 -> 5.0 ms at 90%, 2.8 -> 2.1 at 97%; 4096^2 b512 at 90% 0.58 -> 0.28, 784x512 b10000 0.26 -> 0.17; slower
  // than the panel kernel at 99% on the small shapes, where a row's segment of a panel holds one or two entries),
  // and on long rows (v16, long_rows). The panel kernel's configuration (its overrides read from the environment) is
  // only worked out where the other rules leave the choice to it: host time per call.
  const double work = static_cast<double>(nnz) * batch;
  const bool dense_enough = static_cast<double>(nnz) >= kDbMinDensity * static_cast<double>(n_out) * n_cols;
  const bool sorted_anyway =
      work >= kDbMinWork || (dense_enough && work >= kSortedMinWork) || long_rows(nnz, n_out, batch);
  std::optional<PanelConfig> config;
  if (!sorted_anyway) config = choose_config(n_out, n_cols, batch, nnz, device, bf16_act);
  if (sorted_kernel_applies("SPARSELAYER_SPMM_SORTED", sorted_anyway || config->fm, batch))
    return sorted_csr_times_dense(ptr_in, idx_in, vals, perm_in, x, n_out);
  if (!config) config = choose_config(n_out, n_cols, batch, nnz, device, bf16_act);
  const PanelConfig& c = *config;
  auto y = empty_activation(x, n_out);
  const int n_panels = static_cast<int>((n_cols + c.P - 1) / c.P);
  const auto layout = panel_layout(ptr_in, idx_in, perm_in, n_out, n_cols, c.P, 32 * c.J);
  const at::Tensor& q = layout[0];
  const at::Tensor& packed = layout[1];
  // The values in packed order, gathered once per call: the double-buffered kernel copies them with cp.async, and
  // for spmm_t (perm: the values of a CSC position are scattered) one coalesced gather pass beats a dependent
  // random read per staged entry (v7: spmm_t at 90%, 16384^2 b1024, 12.9 ms without it vs 7.9 forward).
  const int pvals_env = env_int("SPARSELAYER_SPMM_PVALS");  // 1: gather for every kernel, 2: only where needed
  at::Tensor pvals;
  if (c.db || perm_in.defined() || pvals_env == 1) {
    pvals = at::empty({nnz}, vals.options());
    gather_values_kernel<<<static_cast<unsigned>((nnz + 255) / 256), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const int2*>(packed.data_ptr<int32_t>()), vals.data_ptr<float>(), nnz,
        pvals.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // spmm_t (perm defined): x is the layer's incoming gradient, whose copy sddmm then reuses.
  const FmRows xt = c.db || !c.fm ? FmRows{} : perm_in.defined() ? feature_major_shared(x, true)
                                                                  : feature_major(x, true);
  if (bf16_act) launch_config<bf16>(c, q, packed, vals, pvals, x, xt, n_out, n_panels, y);
  else launch_config<float>(c, q, packed, vals, pvals, x, xt, n_out, n_panels, y);
  return y;
}

at::Tensor spmm_cuda(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values, const at::Tensor& x,
                     int64_t n_out) {
  check_index(crow, "crow");
  check_index(col, "col");
  check_dense(values, "values", crow);
  check_dense(x, "x", crow);
  TORCH_CHECK(col.device() == crow.device(), "sparselayer: crow and col are on different devices");
  return csr_times_dense(crow, col, values, at::Tensor(), x, n_out);
}

}  // namespace sparselayer
