// The row-sorted layout, shared by the row-sorted spmm / spmm_t kernel (spmm_sorted.cu, which builds it) and the
// row-sorted sddmm kernel (sddmm_sorted.cu). For row blocks of R rows and column panels of P columns, each
// (row block, panel) = bp lists the block's rows with a nonempty segment in the panel, sorted by segment length
// (longest first), in chunks of kChunk = 32 rows: one row per lane of a warp, so that a warp's lanes walk segments of
// nearly equal length. Slot t of the row taken by lane j of a chunk whose first slot is s0 is s0 + 32 t + j, so a
// warp's loads of one step are coalesced and its shared-memory accesses of one step hit 32 distinct banks.
#pragma once

#include "common.cuh"

namespace sparselayer {

constexpr int kSortedThreads = 512;  // threads of the row-sorted spmm kernel (sddmm_sorted.cu picks 256 or 512)
constexpr int kMaxSortedR = 1024;    // rows per block (the pack keeps 4 per thread; 32 chunks for 16 warps)
constexpr int kMaxSortedP = 1024;    // columns per panel (segment lengths up to P)
constexpr int kChunk = 32;           // rows per chunk: one per lane

struct SortedConfig {
  int R, P;  // rows per block, columns per panel
  int smem;  // dynamic shared memory of spmm_sorted_kernel (bytes)
};

// The pack's blocks and panels for (n_out, n_cols) products of this batch on this device (environment overrides:
// SPARSELAYER_SORTED_R, _P): the widest panels of which two x tiles fit beside R rows of accumulators and
// reserve_bytes more.
SortedConfig choose_sorted(int64_t n_out, int64_t n_cols, int64_t batch, int device, int reserve_bytes = 0);

// The pack of the CSR (ptr, idx[, perm]) for c.R and c.P, cached per topology (cache.cu):
//   items    int32 [n_bp * R]           per bp, its rows as rank-ordered items i | len << 16 (0 past the last)
//   chunks   int32 [n_bp * R / 32, 2]   per bp and chunk: (global first slot, length L of its longest row)
//   n_chunks int32 [n_bp]               chunks per bp (bp = row block * n_panels + panel)
//   off      int32 [slots]              per slot, the entry's column as a byte offset into an x tile (128 c)
//   src      int32 [slots]              per slot, the entry's value position (k, or perm[k] for spmm_t)
//   max_bp   int64 scalar on the host   the most padded slots of one bp (32 * sum of its chunks' L)
// Slots past a row's length hold (0, 0). Building it copies two sizes to the host (a stream synchronisation).
std::vector<at::Tensor> sorted_layout(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& perm,
                                      int64_t n_out, int64_t n_cols, const SortedConfig& c);

// The tile [P][32] of x^T rows c0 .. c0 + P - 1, batch b0 .. b0 + 31 (copy_tile_plain), with the per-copy index
// arithmetic hoisted where the tile lies inside x: thread t copies quad t % 8 of columns t / 8 + T / 8 * i (the
// general loader's arithmetic was a quarter of spmm_sorted_kernel's instructions).
template <int T>
__device__ __forceinline__ void copy_tile(float* __restrict__ ts, const float* __restrict__ xt, int64_t ld,
                                          int batch, int n_cols, int b0, int c0, int P) {
  if (b0 + kBt > batch || c0 + P > n_cols) {  // block-uniform
    copy_tile_plain<T>(ts, xt, ld, batch, n_cols, b0, c0, P);
    return;
  }
  constexpr int kColsPerStep = T / 8;
  const int c = threadIdx.x >> 3, quad = threadIdx.x & 7;
  const float* src = xt + static_cast<int64_t>(c0 + c) * ld + b0 + 4 * quad;
  float* dst = ts + c * kBt + 4 * quad;
  const int64_t step = kColsPerStep * ld;
  for (int i = c; i < P; i += kColsPerStep, src += step, dst += kColsPerStep * kBt) cp_async16(dst, src, 16);
}


}  // namespace sparselayer
