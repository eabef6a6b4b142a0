// sparselayer::spmm / spmm_t on CUDA in the bf16-activation mode: the row-sorted kernel with bfloat16 x tiles.
//
// Why a kernel of its own: the fp32 row-sorted kernel (spmm_sorted.cu) is bound by shared-memory bandwidth
// (benchmarks/kernels-notes.md, v13), two thirds of it the x tile reads, 4 bytes per multiply-add. Staging bf16 x
// instead of widened fp32 halves those reads, but only with 64 batch values per tile column: a column must stay 128
// bytes for the 8 lanes of a shared-memory phase to hit 8 distinct bank quads (with 32 bf16 values per 64-byte
// column, any two lanes whose random columns share a parity would collide).
//
// So the batch tile is 64 and two lanes share a row, lane 2 r + h taking batch half h (32 fp32 accumulators in
// registers, as in the fp32 kernel). A warp takes half a chunk of the pack (16 of its 32 rows) at a time from a shared
// counter, longest first; an entry costs its lane 4 x 16-byte reads (32 bf16) for 32 multiply-adds.
//
// Block: R output rows (512) x one batch tile of 64, T = 512 threads (640 below 5% density: sorted_threads), shared
// memory = accumulators [R][64] floats
// (half h of row i at byte 256 i + 128 h, its float4 quad q at slot q ^ h), two x tiles [P][64] bfloat16 (column c at
// 128 c bytes, batch values in natural order) of 352 columns and two panel descriptors, the next panel's tile and
// descriptor copied (cp.async, from a bf16 feature-major copy of x) while the current one is multiplied.
// Bank quads of one phase (lanes 2 r + h, r = 0..3): step k of an entry reads x chunk j = k ^ r of half h (quad
// 4 h + j: 8 distinct), into accumulator quads 2 j, 2 j + 1 of the half, stored at slots 2 j ^ h, (2 j + 1) ^ h
// (8 distinct for one register). Addresses are 32-bit shared ones, the lane's first chunk XOR a constant of the step.
// Measured on an H100 (benchmarks/kernels-notes.md, v14): 16384^2 b1024 forward 0.86-0.90 ms at 99% against
// 1.0-1.07 with widened fp32 tiles, 1.40-1.43 against 1.78 at 97%, 3.31-3.33 against 4.50 at 90%.
//
// Each output element is the same fixed-order sum of exactly widened bf16 values as the fp32 kernels make (entries
// in column order, panel after panel): deterministic, and bit-identical to the fp32 product of x.float() rounded
// once to bf16.
#include "sorted.cuh"

#include <ATen/ops/empty.h>

namespace sparselayer {
namespace {

constexpr int kBt16 = 64;         // batch tile: a tile column is 64 bfloat16, 128 bytes
constexpr int kMaxRows16 = 512;   // rows per block: [512][64] fp32 accumulators are 128 KB

// The tile [P][64] of the bf16 feature-major x^T rows c0 .. c0 + P - 1, batch b0 .. b0 + 63, zero outside x:
// 8 16-byte cp.async copies per column (copy_tile of sorted.cuh for bf16; kept apart so that the fp32 kernels'
// code, tuned and measured with copy_tile as it is, stays unchanged).
template <int T>
__device__ __forceinline__ void copy_tile_bf16(bf16* __restrict__ ts, const bf16* __restrict__ xt, int64_t ld,
                                               int batch, int n_cols, int b0, int c0, int P) {
  constexpr int kColsPerStep = T / 8;
  const int c = threadIdx.x >> 3, quad = threadIdx.x & 7;
  if (b0 + kBt16 <= batch && c0 + P <= n_cols) {  // block-uniform
    const bf16* src = xt + static_cast<int64_t>(c0 + c) * ld + b0 + 8 * quad;
    bf16* dst = ts + c * kBt16 + 8 * quad;
    const int64_t step = kColsPerStep * ld;
    for (int i = c; i < P; i += kColsPerStep, src += step, dst += kColsPerStep * kBt16) cp_async16(dst, src, 16);
    return;
  }
  const int gb = b0 + 8 * quad;
  for (int i = c; i < P; i += kColsPerStep) {
    const int gc = c0 + i;
    const int bytes = gc < n_cols && gb < batch ? 2 * min(8, batch - gb) : 0;
    cp_async16(ts + i * kBt16 + 8 * quad, bytes ? xt + static_cast<int64_t>(gc) * ld + gb : xt, bytes);
  }
}

__device__ __forceinline__ float low_bf16(unsigned w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float high_bf16(unsigned w) { return __uint_as_float(w & 0xffff0000u); }

// items, chunks, n_chunks, off, pv: the pack of spmm_sorted.cu for row blocks of R and panels of P (off: the
// column's byte offset 128 c, which is a 64-value bf16 column here); xt: x feature-major in bfloat16 (row c holds
// x[:, c], rows of ldt values, ldt % 8 == 0).
template <int T>
__global__ void __launch_bounds__(T, 1)
spmm_sorted_bf16_kernel(const int32_t* __restrict__ items, const int2* __restrict__ chunks,
                        const int32_t* __restrict__ n_chunks, const int32_t* __restrict__ off,
                        const float* __restrict__ pv, const bf16* __restrict__ xt, int64_t ldt, int batch,
                        int n_cols, int n_rows, int n_panels, int P, int R, bf16* __restrict__ y, int64_t ldy) {
  extern __shared__ __align__(128) float4 smem4[];  // 128-aligned: chunk addresses are XORed within 128-byte lines
  float* acc = reinterpret_cast<float*>(smem4);                      // [R][64]
  bf16* xbuf = reinterpret_cast<bf16*>(acc + R * kBt16);            // 2 x [P][64]
  int* next_unit = reinterpret_cast<int*>(xbuf + 2 * P * kBt16);    // [2] (+2 padding)
  int* desc = next_unit + 4;                                         // 2 x [desc_ints(R)]
  const int D = desc_ints(R);
  const int tid = threadIdx.x, lane = tid & 31, h = lane & 1, r = lane >> 1;
  const int b0 = blockIdx.y * kBt16, o0 = blockIdx.x * R;
  // Step k of an entry reads x chunk j = k ^ (r & 3) of half h, whose accumulators (logical quads 2 j + e of the half)
  // sit at slots (2 j + e) ^ h = (2 k + e) ^ m: both are the lane's own chunk XOR a constant of the step.
  const int m = 2 * (r & 3) + h;
  const int x_lane = 64 * h + 16 * (r & 3), acc_lane = 128 * h + 16 * m;
  const uint32_t acc_base = static_cast<uint32_t>(__cvta_generic_to_shared(acc));

  for (int i = tid; i < R * kBt16 / 4; i += T) smem4[i] = make_float4(0.f, 0.f, 0.f, 0.f);
  if (tid < 2) next_unit[tid] = 0;
  copy_tile_bf16<T>(xbuf, xt, ldt, batch, n_cols, b0, 0, P);
  copy_descriptor<T>(desc, items, chunks, n_chunks, static_cast<int64_t>(blockIdx.x) * n_panels, R);
  cp_async_commit();
  for (int p = 0; p < n_panels; ++p) {
    cp_async_wait<0>();
    __syncthreads();  // tile p is in; every warp is done with panel p - 1 (its buffers and counter are free)
    const int64_t bp = static_cast<int64_t>(blockIdx.x) * n_panels + p;
    if (p + 1 < n_panels) {
      copy_tile_bf16<T>(xbuf + ((p + 1) & 1) * P * kBt16, xt, ldt, batch, n_cols, b0, (p + 1) * P, P);
      copy_descriptor<T>(desc + ((p + 1) & 1) * D, items, chunks, n_chunks, bp + 1, R);
      cp_async_commit();
    }
    if (tid == 0) next_unit[(p + 1) & 1] = 0;
    const uint32_t xl = static_cast<uint32_t>(__cvta_generic_to_shared(xbuf + (p & 1) * P * kBt16)) + x_lane;
    const int* d_items = desc + (p & 1) * D;
    const int2* d_chunks = reinterpret_cast<const int2*>(d_items + R);
    const int n_units = 2 * d_items[R + 2 * (R / kChunk)];  // two halves per chunk
    for (;;) {
      int u = 0;
      if (lane == 0) u = atomicAdd(&next_unit[p & 1], 1);
      u = __shfl_sync(0xffffffffu, u, 0);
      if (u >= n_units) break;
      const int ci = u >> 1, j = (u & 1) * 16 + r;  // chunk, and the lane's item in it
      const int item = d_items[ci * kChunk + j];
      const int len = item >> 16, L = __reduce_max_sync(0xffffffffu, len);
      const int first = d_chunks[ci].x + j;
      // Past the last row (len 0) item is 0: the lane reads row 0's sums and does not write them back.
      const uint32_t arow = acc_base + (item & 0xffff) * (kBt16 * 4) + acc_lane;
      float4 a[8];
      load_sums(a, arow, p == 0);
      // a[2 k], a[2 k + 1] hold the batch values of the x chunk at xl + off ^ 16 k for a column at byte off
      walk_segment(off + first, pv + first, L, len, [&](int oc, float v) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const uint4 w = lds16((xl + oc) ^ (16 * k));
          fma4(a[2 * k], v, make_float4(low_bf16(w.x), high_bf16(w.x), low_bf16(w.y), high_bf16(w.y)));
          fma4(a[2 * k + 1], v, make_float4(low_bf16(w.z), high_bf16(w.z), low_bf16(w.w), high_bf16(w.w)));
        }
      });
      if (len > 0) {
#pragma unroll
        for (int k = 0; k < 8; ++k) sts16f(arow ^ (16 * k), a[k]);
      }
    }
  }
  __syncthreads();
  store_sums<2, T>(acc_base, R, y, ldy, o0, b0, batch, n_rows);
}

}  // namespace

at::Tensor sorted_csr_times_dense_bf16(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& vals,
                                       const at::Tensor& perm, const at::Tensor& x, int64_t n_out) {
  const int64_t batch = x.size(0), n_cols = x.size(1);
  const int device = x.get_device();
  // Beside the accumulators and x tiles: the counters (16 bytes) and two panel descriptors.
  const SortedConfig c =
      choose_sorted(n_out, n_cols, batch, device, 16 + 2 * desc_ints(kMaxRows16) * 4, kBt16, kMaxRows16);
  const auto layout = sorted_layout(ptr, idx, perm, n_out, n_cols, c, true);
  const auto pv = slot_values(layout[4], vals, values_buffer_of(layout));
  // Not shared with sddmm as spmm_t's fp32 copy is (feature_major_shared): the bf16 sddmm, whose tiles are fp32,
  // copies the gradient again; the bf16 layer step still gains (16384^2 b1024 99%: 2.84-2.90 vs 2.97 ms,
  // benchmarks/results/history/tune-v14-bf16-tiles.log).
  const FmRows xt = feature_major_bf16(x);
  auto y = empty_activation(x, n_out);
  // 20 warps (92 registers) where a row's segment of a panel is a few entries (under 5% density): more warps to hide
  // the latency of each unit's first loads. Measured on an H100 (benchmarks/kernels-notes.md, v15): 16384^2 b1024
  // 0.85 vs 0.87 ms at 99%, 1.39 vs 1.41 at 97%; 4096^2 b4096 0.36 vs 0.38 at 99%; but 3.42 vs 3.30 at 90% (16 warps
  // stay there). Override: SPARSELAYER_SORTED_BF16_T=512 or 640.
  const int threads = sorted_threads(idx.numel(), n_out, n_cols, "SPARSELAYER_SORTED_BF16_T");
  const auto kernel = threads == kSortedThreadsSparse ? spmm_sorted_bf16_kernel<kSortedThreadsSparse>
                                                      : spmm_sorted_bf16_kernel<kSortedThreads>;
  allow_smem(reinterpret_cast<const void*>(kernel), device);
  const int n_panels = static_cast<int>((n_cols + c.P - 1) / c.P);
  const dim3 grid(static_cast<unsigned>((n_out + c.R - 1) / c.R), static_cast<unsigned>((batch + kBt16 - 1) / kBt16));
  kernel<<<grid, threads, c.smem, c10::cuda::getCurrentCUDAStream()>>>(
      layout[0].data_ptr<int32_t>(), reinterpret_cast<const int2*>(layout[1].data_ptr<int32_t>()),
      layout[2].data_ptr<int32_t>(), layout[3].data_ptr<int32_t>(), pv.data_ptr<float>(),
      xt.ptr<bf16>(), xt.ld, static_cast<int>(batch),
      static_cast<int>(n_cols), static_cast<int>(n_out), n_panels, c.P, c.R, reinterpret_cast<bf16*>(y.data_ptr()),
      result_ld(y));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

}  // namespace sparselayer
