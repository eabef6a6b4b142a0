// The row-sorted layout, shared by the row-sorted spmm / spmm_t kernel (spmm_sorted.cu, which builds it) and the
// row-sorted sddmm kernel (sddmm_sorted.cu). For row blocks of R rows and column panels of P columns, each
// (row block, panel) = bp lists the block's rows with a nonempty segment in the panel, sorted by segment length
// (longest first), in chunks of kChunk = 32 rows: one row per lane of a warp, so that a warp's lanes walk segments of
// nearly equal length. Slot t of the row taken by lane j of a chunk whose first slot is s0 is s0 + 32 t + j, so a
// warp's loads of one step are coalesced and its shared-memory accesses of one step hit 32 distinct banks.
#pragma once

#include "common.cuh"

namespace sparselayer {

constexpr int kSortedThreads = 512;  // threads of the row-sorted spmm kernels (sddmm_sorted.cu picks 256 or 512)
constexpr int kSortedThreadsSparse = 640;  // ... below 5% density (sorted_threads)
constexpr int kMaxSortedR = 1024;    // rows per block (the pack keeps 4 per thread; 32 chunks for 16 warps)
constexpr int kMaxSortedP = 1024;    // columns per panel (segment lengths up to P)
constexpr int kChunk = 32;           // rows per chunk: one per lane

struct SortedConfig {
  int R, P;  // rows per block, columns per panel
  int smem;  // dynamic shared memory of the row-sorted spmm kernel (bytes)
};

// Threads of a row-sorted spmm kernel for nnz nonzeros in (n_out, n_cols): 20 warps below 5% density, where a row's
// segment of a panel is a few entries and more warps hide each chunk's first loads (measured on an H100 for the bf16
// kernel in v15 and the fp32 one in v19, benchmarks/kernels-notes.md), else 16. The environment variable `override`
// (512 or 640) forces one.
inline int sorted_threads(int64_t nnz, int64_t n_out, int64_t n_cols, const char* override) {
  const int env = env_int(override);
  if (env == kSortedThreads || env == kSortedThreadsSparse) return env;
  const bool sparse = static_cast<double>(nnz) < 0.05 * static_cast<double>(n_out) * static_cast<double>(n_cols);
  return sparse ? kSortedThreadsSparse : kSortedThreads;
}

// The pack's blocks and panels for (n_out, n_cols) products of this batch on this device (environment overrides:
// SPARSELAYER_SORTED_R, _P): the widest panels of which two x tiles (128 bytes per column) fit beside R rows of
// accumulators (4 * batch_tile bytes each) and reserve_bytes more, R up to max_rows. The fp32 kernels take batch
// tiles of kBt = 32 (a tile column is 32 floats), the bf16 spmm kernel tiles of 64 (64 bfloat16) and 512 rows.
SortedConfig choose_sorted(int64_t n_out, int64_t n_cols, int64_t batch, int device, int reserve_bytes = 0,
                           int batch_tile = kBt, int max_rows = kMaxSortedR);

// The pack of the CSR (ptr, idx[, perm]) for c.R and c.P, cached per topology (cache.cu):
//   items    int32 [n_bp * R]           per bp, its rows as rank-ordered items i | len << 16 (0 past the last)
//   chunks   int32 [n_bp * R / 32, 2]   per bp and chunk: (global first slot, length L of its longest row)
//   n_chunks int32 [n_bp]               chunks per bp (bp = row block * n_panels + panel)
//   off      int32 [slots + kSlotPad]   per slot, the entry's column as a byte offset into an x tile (128 c)
//   src      int32 [slots]              per slot, the entry's value position (k, or perm[k] for spmm_t)
//   max_bp   int64 scalar on the host   the most padded slots of one bp (32 * sum of its chunks' L)
//   pv       float32 [slots + kSlotPad] (values_buffer only) where slot_values gathers each call's values (zero
//                                       past the last slot), reused while the layout lives instead of allocated
//                                       per call (the spmm kernels; the stream order keeps one call's gather after
//                                       the previous call's product). One cache entry serves spmm and sddmm where
//                                       their blocks and panels coincide: whichever built it decides whether pv is
//                                       there (values_buffer_of).
// Slots past a row's length hold (0, 0). Building it copies two sizes to the host (a stream synchronisation).
std::vector<at::Tensor> sorted_layout(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& perm,
                                      int64_t n_out, int64_t n_cols, const SortedConfig& c,
                                      bool values_buffer = false);

// sorted_csr_times_dense for bfloat16 x: the row-sorted kernel with bf16 x tiles (spmm_sorted_bf16.cu).
at::Tensor sorted_csr_times_dense_bf16(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& vals,
                                       const at::Tensor& perm, const at::Tensor& x, int64_t n_out);

// The window kernel (spmm_window.cu, fp32 x on Hopper) where it applies (SPARSELAYER_SPMM_WINDOW=1), and the product.
bool window_kernel_applies(const at::Tensor& x, int64_t n_cols);
at::Tensor window_csr_times_dense(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& vals,
                                  const at::Tensor& perm, const at::Tensor& x, int64_t n_out);

// pv[s] = vals[src[s]] (float32 [slots + kSlotPad], zero past the last slot): the values in slot order, once per
// call (they change every step, the slots only with the topology), written into `buffer` where it is given (the
// layout's pv) else into a new tensor.
at::Tensor slot_values(const at::Tensor& src, const at::Tensor& vals, const at::Tensor& buffer = at::Tensor());
// A sorted_layout's pv buffer, undefined where the layout was built without one.
inline at::Tensor values_buffer_of(const std::vector<at::Tensor>& layout) {
  return layout.size() > 6 ? layout[6] : at::Tensor();
}

constexpr int kAhead = 4;                 // entries of a lane whose column offsets and values are in flight at once
constexpr int kSlotPad = kAhead * kChunk;  // zero slots past the last in off and pv: a group past a row's end loads

// o[u], v[u] = slot u of the lane (op[32 u], vp[32 u]), u < kAhead, where n > 0 (a warp-uniform test; slots past the
// lane's segment hold another row's entries or padding, never multiplied): one group of loads, none waiting on
// another; o, v unchanged where n <= 0.
__device__ __forceinline__ void load_slots(const int32_t* __restrict__ op, const float* __restrict__ vp, int n,
                                           int (&o)[kAhead], float (&v)[kAhead]) {
  if (n <= 0) return;
#pragma unroll
  for (int u = 0; u < kAhead; ++u) {
    o[u] = __ldg(op + u * kChunk);
    v[u] = __ldg(vp + u * kChunk);
  }
}

// Walks one lane's segment of a chunk: slot t of the lane at op[32 t], vp[32 t] for t < L (the warp's longest),
// calling entry(column byte offset, value) for t < len. Column offsets and values are loaded a group ahead (global
// memory: ~600 cycles away).
template <typename Entry>
__device__ __forceinline__ void walk_segment(const int32_t* __restrict__ op, const float* __restrict__ vp, int L,
                                             int len, Entry&& entry) {
  constexpr int D = kAhead;
  int oc[D];
  float vc[D];
  load_slots(op, vp, L, oc, vc);
  for (int t0 = 0; t0 < L; t0 += D) {
    op += D * kChunk;
    vp += D * kChunk;
    int on[D];
    float vn[D];
    load_slots(op, vp, L - t0 - D, on, vn);  // the next group, if any
#pragma unroll
    for (int u = 0; u < D; ++u)
      if (t0 + u < len) entry(oc[u], vc[u]);
#pragma unroll
    for (int u = 0; u < D; ++u) oc[u] = on[u], vc[u] = vn[u];
  }
}

// 16-byte shared-memory load and store at a 32-bit shared address (the XORed addresses below are computed on it).
__device__ __forceinline__ uint4 lds16(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}
__device__ __forceinline__ float4 lds16f(uint32_t addr) {
  const uint4 v = lds16(addr);
  return make_float4(__uint_as_float(v.x), __uint_as_float(v.y), __uint_as_float(v.z), __uint_as_float(v.w));
}
__device__ __forceinline__ void sts16f(uint32_t addr, const float4& v) {
  asm volatile("st.shared.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w)
               : "memory");
}
__device__ __forceinline__ void sts4f(uint32_t addr, float v) {
  asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(addr), "f"(v) : "memory");
}

// A lane's 8 float4 sums at the shared address arow (chunk k at arow ^ 16 k), or zeros in the first panel: a row has
// at most one segment per panel and the prologue zero-fills every row's sums, so the first panel need not read them
// (1 / n_panels of the sums' loads, 12 panels at 4096 columns).
__device__ __forceinline__ void load_sums(float4 (&a)[8], uint32_t arow, bool first_panel) {
#pragma unroll
  for (int k = 0; k < 8; ++k) a[k] = first_panel ? make_float4(0.f, 0.f, 0.f, 0.f) : lds16f(arow ^ (16 * k));
}

// p[0 .. 3] = v where n > 3 and vec (p 16-byte aligned for float, 8 for bfloat16: one store), else p[u] for u < n.
__device__ __forceinline__ void store4(float* p, const float4& v, int n, bool vec) {
  if (vec && n > 3) {
    *reinterpret_cast<float4*>(p) = v;
    return;
  }
  const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int u = 0; u < 4; ++u)
    if (u < n) p[u] = e[u];
}
__device__ __forceinline__ void store4(bf16* p, const float4& v, int n, bool vec) {
  if (vec && n > 3) {
    const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    *reinterpret_cast<uint2*>(p) = make_uint2(*reinterpret_cast<const unsigned*>(&lo), *reinterpret_cast<const unsigned*>(&hi));
    return;
  }
  const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int u = 0; u < 4; ++u)
    if (u < n) store_as(p + u, e[u]);
}

// The row-sorted spmm kernels' output: y[b0 + b, o + i] = the sums of block row r + i (i < 32) for batch value b of
// the tile, where rows is the shared address of row r's sums (H * 32 floats a row: H = 1 for the fp32 kernel's 32-value
// batch tiles, 2 for the bf16 kernel's 64; half h of a row at byte 128 h, its 16-byte chunk c holding batch values
// 32 h + 4 (c ^ h) .. + 3 when H = 2, 4 c .. + 3 when H = 1). The calling warp owns these 32 rows: it transposes each
// half in place (lane i reads row i, then writes its values to row b of the half, column i), so that it then stores
// along y's rows, 4 values per lane and 16-byte (fp32) or 8-byte (bf16) stores, 4 whole rows of 32 values per
// instruction. All shared accesses hit 32 distinct banks. vec: y's rows are 16-byte aligned (n_rows % 4 == 0).
// Why: the block-wide transpose through the x tiles that this replaces, with its passes, barriers and a division per
// element, was 11% of spmm_sorted_kernel's instructions, run while nothing else could overlap it. Nsight Compute
// (benchmarks/kernels-notes.md, v17): 369 M -> 342 M instructions and 1.07 -> 1.04 ms at 16384^2 b1024 99%, 124 M ->
// 91 M and 335 -> 291 us at 4096^2 b4096 99%.
template <int H, typename Out>
__device__ __forceinline__ void store_rows32(uint32_t rows, Out* __restrict__ y, int o, int b0, int batch, int n_rows,
                                             bool vec) {
  constexpr int kRowBytes = 128 * H;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int h = 0; h < H; ++h) {
    const uint32_t half = rows + 128 * h;
    float4 v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = lds16f(half + lane * kRowBytes + 16 * ((k + lane) & 7));
    __syncwarp();
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int q = ((k + lane) & 7) ^ (H == 2 ? h : 0);  // the batch quad of the chunk read at step k
      const uint32_t col = half + 4 * lane + 4 * q * kRowBytes;
      sts4f(col, v[k].x);
      sts4f(col + kRowBytes, v[k].y);
      sts4f(col + 2 * kRowBytes, v[k].z);
      sts4f(col + 3 * kRowBytes, v[k].w);
    }
    __syncwarp();
    const int q = lane & 7, n = n_rows - o - 4 * q;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int r = 4 * i + (lane >> 3), b = b0 + 32 * h + r;
      const float4 w = lds16f(half + r * kRowBytes + 16 * q);
      if (b < batch) store4(y + static_cast<int64_t>(b) * n_rows + o + 4 * q, w, n, vec);
    }
  }
}

// store_rows32 for a feature-major y (the transposed view of y^T, rows of ld values): row o + i of y^T is row i of
// the sums, so nothing is transposed. Lane l copies chunk l % 8 of rows 4 k + l / 8: 4 whole rows per instruction,
// 16-byte (fp32) or 8-byte (bf16) stores along them. vec: y^T's rows are 16-byte aligned (ld % 4 == 0).
template <int H, typename Out>
__device__ __forceinline__ void store_rows32_feature_major(uint32_t rows, Out* __restrict__ yt, int64_t ld, int o,
                                                           int b0, int batch, int n_rows, bool vec) {
  constexpr int kRowBytes = 128 * H;
  const int lane = threadIdx.x & 31, q = lane & 7;
#pragma unroll
  for (int h = 0; h < H; ++h) {
    const int b = b0 + 32 * h + 4 * (q ^ (H == 2 ? h : 0));  // the batch values of chunk q of half h
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int i = 4 * k + (lane >> 3);
      const float4 w = lds16f(rows + i * kRowBytes + 128 * h + 16 * q);
      if (o + i < n_rows && b < batch) store4(yt + (o + i) * ld + b, w, batch - b, vec);
    }
  }
}

// The whole block's sums (R rows from the shared address acc, H * 32 floats a row) to y[b0 ..][o0 ..]: warp w of the
// T threads writes rows 32 t .. 32 t + 31 for t = w, w + T / 32, .. (store_rows32), after the caller's last barrier.
// ld > 0: y is feature-major, y^T in rows of ld values (store_rows32_feature_major); 0: y is row-major.
template <int H, int T, typename Out>
__device__ __forceinline__ void store_sums(uint32_t acc, int R, Out* __restrict__ y, int64_t ld, int o0, int b0,
                                           int batch, int n_rows) {
  for (int t = threadIdx.x >> 5; t < R / 32 && o0 + 32 * t < n_rows; t += T / 32) {
    if (ld > 0)
      store_rows32_feature_major<H>(acc + t * 32 * (128 * H), y, ld, o0 + 32 * t, b0, batch, n_rows, ld % 4 == 0);
    else
      store_rows32<H>(acc + t * 32 * (128 * H), y, o0 + 32 * t, b0, batch, n_rows, n_rows % 4 == 0);
  }
}


// A (row block, panel)'s part of the pack in shared memory: its items [R], chunks [R / 32] (int2) and chunk count,
// padded to a multiple of 16 bytes (the second buffer's items take 16-byte copies).
__host__ __device__ constexpr int desc_ints(int R) { return (R + 2 * (R / kChunk) + 1 + 3) / 4 * 4; }

// Copies bp's descriptor (items, chunks, n_chunks) into dst with cp.async; the caller commits and waits.
template <int T>
__device__ __forceinline__ void copy_descriptor(int* dst, const int32_t* __restrict__ items,
                                                const int2* __restrict__ chunks, const int32_t* __restrict__ n_chunks,
                                                int64_t bp, int R) {
  const int tid = threadIdx.x;
  for (int i = tid; i < R / 4; i += T) cp_async16(dst + 4 * i, items + bp * R + 4 * i, 16);
  for (int i = tid; i < R / kChunk; i += T) cp_async8(dst + R + 2 * i, chunks + bp * (R / kChunk) + i);
  if (tid == 0) cp_async4(dst + R + 2 * (R / kChunk), n_chunks + bp, true);
}

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
