// sparselayer::spmm / spmm_t on CUDA for large sparse products: the row-sorted kernel.
//
// Why another kernel: the panel kernel (spmm.cu) gives each 8-lane group fixed rows whose accumulators live in
// registers, so a warp's four groups walk four rows' segments of a panel in lockstep (random lengths: 26 of 32
// lanes busy at 99%) and pay the entry load, its address and the loop for every 4 multiply-adds; Nsight Compute put
// it at 680 M instructions for 2.75 G multiply-adds, issue-bound (benchmarks/kernels-notes.md, v10). Here the
// accumulators live in shared memory, so a lane can take any row in any panel: per panel the pack sorts the row
// block's segments by length and deals them in chunks of 32 rows to whole warps, one row per lane, so a warp's
// lanes walk segments of nearly equal length. A lane loads its row's 32 accumulators (one batch tile) at the start
// of a segment and stores them at its end, and an entry costs one column offset and one value (coalesced loads from
// global memory, prefetched a group ahead) for 32 multiply-adds.
//
// Block: R output rows (1024) x one batch tile of 32, T = 512 threads (640 below 5% density: sorted_threads), shared
// memory = accumulators [R][32] floats, two x tiles [P][32] of 352 columns (column c of the panel at 128 c bytes, 32
// batch values in natural order) and two panel descriptors (the pack's items and chunks of the (row block, panel)),
// the next panel's tile and descriptor copied (16-byte cp.async; x from its feature-major copy) while the current one
// is multiplied.
// Warps take the panel's chunks longest first from a shared counter. Lane l reads the 8 float4 chunks of a column
// in the order l ^ 0, l ^ 1, .. l ^ 7 (l mod 8), so the 8 lanes of a shared-memory phase hit 8 distinct bank quads
// (for x and for the accumulators), with no swizzle; its accumulator k holds batch chunk k ^ l. The addresses are
// 32-bit shared ones, each the lane's first chunk XOR a constant of the step (one instruction, no per-lane table).
//
// Each output element is the same fixed-order sum as in spmm.cu (entries in column order, panel after panel):
// deterministic, and bit-identical to the panel kernel. The pack needs one device-to-host copy (its sizes),
// so it is not used while a CUDA graph is being captured (the panel kernel is).
#include "sorted.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>

#include <algorithm>
#include <limits>
#include <type_traits>

namespace sparselayer {
namespace {

constexpr int kPackThreads = 256;

// Per (row block b, panel p) = bp, R rows o0 + i: sorts the rows with a nonempty segment in panel p by length
// (descending, counting sort), writes them as items[bp * R + rank] = i | len << 16 (0 past the last, up to a whole
// chunk), and per chunk of C = kChunk items its (first slot within bp, length L of its longest row):
// chunks[bp * R / C + c]. n_chunks[bp] and bp_slots[bp] (C * sum of L: the padded slots) complete it. Ties keep row
// order (a stable sort), so the same index always gives the same pack: the row-sorted sddmm adds a nonzero's batch
// chunks in an order rotated by its lane, and ties ranked by the order of shared-memory atomics gave other bits
// whenever the pack was rebuilt (another stream, an evicted cache entry; v20, benchmarks/kernels-notes.md).
__global__ void __launch_bounds__(kPackThreads)
sorted_rank_kernel(const int32_t* __restrict__ pp, int n_rows, int n_panels, int R, int P,
                   int32_t* __restrict__ items, int2* __restrict__ chunks, int32_t* __restrict__ n_chunks,
                   int64_t* __restrict__ bp_slots) {
  __shared__ int count[kMaxSortedP + 1];  // rows per length, then the next rank of each length
  __shared__ int sorted[kMaxSortedR];
  __shared__ int warp_total[kPackThreads / 32];
  __shared__ int chunk_len[kMaxSortedR / kChunk];
  __shared__ int n_items;
  constexpr int C = kChunk;
  const int p = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t bp = static_cast<int64_t>(blockIdx.x) * n_panels + p;
  const int o0 = blockIdx.x * R;
  for (int l = tid; l <= P; l += kPackThreads) count[l] = 0;
  __syncthreads();
  int len[kMaxSortedR / kPackThreads];
#pragma unroll
  for (int u = 0; u < kMaxSortedR / kPackThreads; ++u) {
    const int i = tid + u * kPackThreads, o = o0 + i;
    len[u] = 0;
    if (i < R && o < n_rows) {
      len[u] = pp[static_cast<int64_t>(p + 1) * n_rows + o] - pp[static_cast<int64_t>(p) * n_rows + o];
      if (len[u] > 0) atomicAdd(&count[min(len[u], P)], 1);  // <= P for a valid index (unique columns)
    }
  }
  __syncthreads();
  // First rank of each length = rows longer than it: an exclusive scan over lengths P, P - 1, .., 1, each thread
  // owning `per` consecutive ones.
  const int per = (P + kPackThreads - 1) / kPackThreads;
  int mine = 0;
  for (int u = 0; u < per; ++u) {
    const int d = tid * per + u;
    if (d < P) mine += count[P - d];
  }
  const int incl = warp_inclusive_sum(mine, lane);
  if (lane == 31) warp_total[warp] = incl;
  __syncthreads();
  int run = incl - mine;
  for (int w = 0; w < warp; ++w) run += warp_total[w];
  for (int u = 0; u < per; ++u) {
    const int d = tid * per + u;
    if (d < P) {
      const int c = count[P - d];
      count[P - d] = run;
      run += c;
    }
  }
  if (tid == kPackThreads - 1) n_items = run;
  __syncthreads();
  // Rows in index order, warp by warp: the lanes of one length take consecutive ranks from that length's next one,
  // whose first lane then advances it.
#pragma unroll
  for (int u = 0; u < kMaxSortedR / kPackThreads; ++u) {
    for (int w = 0; w < kPackThreads / 32; ++w) {
      if (warp == w) {
        const int l = min(len[u], P);
        const unsigned peers = __match_any_sync(0xffffffffu, l), below = peers & ((1u << lane) - 1u);
        const int first = l > 0 ? count[l] : 0;
        __syncwarp();
        if (l > 0) {
          sorted[first + __popc(below)] = (tid + u * kPackThreads) | (len[u] << 16);
          if (below == 0) count[l] = first + __popc(peers);
        }
      }
      __syncthreads();
    }
  }
  const int m = n_items, nch = (m + C - 1) / C;
  for (int r = tid; r < nch * C; r += kPackThreads) items[bp * R + r] = r < m ? sorted[r] : 0;
  for (int c = tid; c < nch; c += kPackThreads) {  // the first item's length, unless an index broke the contract
    int L = 0;
    for (int q = c * C; q < min(c * C + C, m); ++q) L = max(L, sorted[q] >> 16);
    chunk_len[c] = L;
  }
  __syncthreads();
  if (tid == 0) {
    int first = 0;
    for (int c = 0; c < nch; ++c) {
      chunks[bp * (R / C) + c] = make_int2(first, chunk_len[c]);
      first += C * chunk_len[c];
    }
    n_chunks[bp] = nch;
    bp_slots[bp] = first;
  }
}

// Fills the slots of every chunk: slot t of item j in a chunk starting at slot s0 is s0 + t * C + j (a warp's
// loads of one step are coalesced), holding the entry's column as a byte offset into the x tile (128 c) and its
// value position (k, or perm[k] for spmm_t); slots past a row's length hold (0, 0) and are never multiplied.
// Rewrites each chunk's first slot from within-bp to global (bp_end: inclusive prefix sum of bp_slots).
__global__ void __launch_bounds__(kPackThreads)
sorted_fill_kernel(const int32_t* __restrict__ pp, const int64_t* __restrict__ idx, const int64_t* __restrict__ perm,
                   const int32_t* __restrict__ items, int2* __restrict__ chunks, const int32_t* __restrict__ n_chunks,
                   const int64_t* __restrict__ bp_slots, const int64_t* __restrict__ bp_end, int n_rows, int n_panels,
                   int R, int P, int32_t* __restrict__ off, int32_t* __restrict__ src) {
  constexpr int C = kChunk;
  __shared__ int2 chunk_s[kMaxSortedR / C];
  const int p = blockIdx.y, tid = threadIdx.x;
  const int64_t bp = static_cast<int64_t>(blockIdx.x) * n_panels + p;
  const int o0 = blockIdx.x * R, nch = n_chunks[bp];
  const int64_t first = bp_end[bp] - bp_slots[bp];
  for (int c = tid; c < nch; c += kPackThreads) chunk_s[c] = chunks[bp * (R / C) + c];
  __syncthreads();
  for (int r = tid; r < nch * C; r += kPackThreads) {
    const int2 ch = chunk_s[r / C];
    const int j = r % C;
    const int item = items[bp * R + r], len = item >> 16;
    const int64_t start = len > 0 ? pp[static_cast<int64_t>(p) * n_rows + o0 + (item & 0xffff)] : 0;
    const int64_t s0 = first + ch.x + j;
    for (int t = 0; t < ch.y; ++t) {
      const int64_t s = s0 + static_cast<int64_t>(t) * C;
      if (t < len) {
        const int64_t k = start + t;
        off[s] = static_cast<int32_t>(idx[k] - static_cast<int64_t>(p) * P) * (kBt * 4);
        src[s] = static_cast<int32_t>(perm ? perm[k] : k);
      } else {
        off[s] = 0;
        src[s] = 0;
      }
    }
  }
  __syncthreads();
  for (int c = tid; c < nch; c += kPackThreads)
    chunks[bp * (R / C) + c].x = static_cast<int>(first + chunk_s[c].x);
}

// items, chunks, n_chunks: the pack (sorted_rank_kernel, sorted_fill_kernel) for row blocks of R and panels of P;
// off, pv: column byte offsets and values per slot; xt: x feature-major (row c holds x[:, c], rows of ldt floats).
// A panel's descriptor arrives in shared memory with its x tile (staged: by Nsight Compute, a quarter of the warps'
// stalls were the two dependent global loads of a chunk's descriptor and then its first entries); staged false reads
// it from global memory (tuning override SPARSELAYER_SORTED_DESC=2).
template <typename Out, int T>
__global__ void __launch_bounds__(T, 1)
spmm_sorted_kernel(const int32_t* __restrict__ items, const int2* __restrict__ chunks,
                   const int32_t* __restrict__ n_chunks, const int32_t* __restrict__ off,
                   const float* __restrict__ pv, const float* __restrict__ xt, int64_t ldt, int batch, int n_cols,
                   int n_rows, int n_panels, int P, int R, bool staged, Out* __restrict__ y, int64_t ldy) {
  extern __shared__ __align__(128) float4 smem4[];  // 128-aligned: chunk addresses are XORed within 128-byte lines
  float* acc = reinterpret_cast<float*>(smem4);  // [R][32]
  float* xbuf = acc + R * kBt;                    // 2 x [P][32]
  int* next_chunk = reinterpret_cast<int*>(xbuf + 2 * P * kBt);  // [2] (+2 padding; no static shared memory:
                                                                 // allow_smem opts every kernel into the maximum)
  int* desc = next_chunk + 4;                                    // 2 x [desc_ints(R)]
  const int D = desc_ints(R);
  const int tid = threadIdx.x, lane = tid & 31;
  const int b0 = blockIdx.y * kBt, o0 = blockIdx.x * R;
  const uint32_t acc_base = static_cast<uint32_t>(__cvta_generic_to_shared(acc));

  for (int i = tid; i < R * kBt / 4; i += T) smem4[i] = make_float4(0.f, 0.f, 0.f, 0.f);
  if (tid < 2) next_chunk[tid] = 0;
  copy_tile<T>(xbuf, xt, ldt, batch, n_cols, b0, 0, P);
  if (staged) copy_descriptor<T>(desc, items, chunks, n_chunks, static_cast<int64_t>(blockIdx.x) * n_panels, R);
  cp_async_commit();
  for (int p = 0; p < n_panels; ++p) {
    cp_async_wait<0>();
    __syncthreads();  // tile p is in; every warp is done with panel p - 1 (its buffers and counter are free)
    const int64_t bp = static_cast<int64_t>(blockIdx.x) * n_panels + p;
    if (p + 1 < n_panels) {
      copy_tile<T>(xbuf + ((p + 1) & 1) * P * kBt, xt, ldt, batch, n_cols, b0, (p + 1) * P, P);
      if (staged) copy_descriptor<T>(desc + ((p + 1) & 1) * D, items, chunks, n_chunks, bp + 1, R);
      cp_async_commit();
    }
    if (tid == 0) next_chunk[(p + 1) & 1] = 0;
    const uint32_t xs = static_cast<uint32_t>(__cvta_generic_to_shared(xbuf + (p & 1) * P * kBt));
    const int* d_items = desc + (p & 1) * D;
    const int2* d_chunks = reinterpret_cast<const int2*>(d_items + R);
    const int nc = staged ? d_items[R + 2 * (R / kChunk)] : __ldg(n_chunks + bp);
    for (;;) {
      int ci = 0;
      if (lane == 0) ci = atomicAdd(&next_chunk[p & 1], 1);
      ci = __shfl_sync(0xffffffffu, ci, 0);
      if (ci >= nc) break;
      // (first slot, longest segment), and the lane's row | length << 16
      const int2 ch = staged ? d_chunks[ci] : __ldg(chunks + bp * (R / kChunk) + ci);
      const int item = staged ? d_items[ci * kChunk + lane] : __ldg(items + bp * R + ci * kChunk + lane);
      const int len = item >> 16;
      // Past the last row (len 0) item is 0: the lane reads row 0's sums and does not write them back.
      const uint32_t arow = acc_base + (item & 0xffff) * (kBt * 4) + 16 * (lane & 7);
      float4 a[8];
      load_sums(a, arow, p == 0);
      // a[k] holds batch chunk k ^ (lane & 7), read at xl + off ^ 16 k for a column at byte off of the tile
      const uint32_t xl = xs + 16 * (lane & 7);
      walk_segment(off + ch.x + lane, pv + ch.x + lane, ch.y, len, [&](int oc, float v) {
#pragma unroll
        for (int k = 0; k < 8; ++k) fma4(a[k], v, lds16f((xl + oc) ^ (16 * k)));
      });
      if (len > 0) {
#pragma unroll
        for (int k = 0; k < 8; ++k) sts16f(arow ^ (16 * k), a[k]);
      }
    }
  }
  __syncthreads();
  store_sums<1, T>(acc_base, R, y, ldy, o0, b0, batch, n_rows);
}

template <typename Out, int T>
void launch_sorted(const SortedConfig& c, const std::vector<at::Tensor>& layout, const at::Tensor& pv,
                   const FmRows& xt, int64_t batch, int64_t n_cols, int64_t n_out, at::Tensor& y) {
  const auto kernel = spmm_sorted_kernel<Out, T>;
  allow_smem(reinterpret_cast<const void*>(kernel), y.get_device());
  const int n_panels = static_cast<int>((n_cols + c.P - 1) / c.P);
  const dim3 grid(static_cast<unsigned>((n_out + c.R - 1) / c.R), static_cast<unsigned>((batch + kBt - 1) / kBt));
  kernel<<<grid, T, c.smem, c10::cuda::getCurrentCUDAStream()>>>(
      layout[0].data_ptr<int32_t>(), reinterpret_cast<const int2*>(layout[1].data_ptr<int32_t>()),
      layout[2].data_ptr<int32_t>(), layout[3].data_ptr<int32_t>(), pv.data_ptr<float>(), xt.ptr<float>(), xt.ld,
      static_cast<int>(batch), static_cast<int>(n_cols), static_cast<int>(n_out), n_panels, c.P, c.R,
      env_int("SPARSELAYER_SORTED_DESC") != 2, reinterpret_cast<Out*>(y.data_ptr()), result_ld(y));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

// Four slots per thread, with 16-byte loads of src and stores of pv where src is 16-byte aligned (the pack's is: it
// starts its allocation), so that each thread has four independent gathers in flight.
__global__ void gather_slot_values_kernel(const int32_t* __restrict__ src, const float* __restrict__ vals,
                                          int64_t n, int64_t n_padded, float* __restrict__ pv) {
  const int64_t s = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (s + 4 <= n && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
    const int4 i = __ldg(reinterpret_cast<const int4*>(src + s));
    *reinterpret_cast<float4*>(pv + s) =
        make_float4(__ldg(vals + i.x), __ldg(vals + i.y), __ldg(vals + i.z), __ldg(vals + i.w));
    return;
  }
  for (int64_t t = s; t < s + 4 && t < n_padded; ++t) pv[t] = t < n ? __ldg(vals + __ldg(src + t)) : 0.f;
}

at::Tensor slot_values(const at::Tensor& src, const at::Tensor& vals, const at::Tensor& buffer) {
  const int64_t n_padded = src.numel() + kSlotPad;
  // 16-byte aligned either way (the start of an allocation)
  auto pv = buffer.defined() && buffer.numel() == n_padded ? buffer : at::empty({n_padded}, vals.options());
  const int64_t threads = (n_padded + 3) / 4;
  gather_slot_values_kernel<<<static_cast<unsigned>((threads + 255) / 256), 256, 0,
                              c10::cuda::getCurrentCUDAStream()>>>(src.data_ptr<int32_t>(), vals.data_ptr<float>(),
                                                                   src.numel(), n_padded, pv.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return pv;
}

// 1024-row blocks (32 chunks per panel for 16 warps, so taking them longest first balances the warps) over the
// widest panels, up to 512 columns, two tiles of which fit beside the accumulators and the reserve (the forward's
// two panel descriptors: 352 columns on an H100, 227 KB, one block per SM); fewer rows where the grid would not fill
// the GPU. Measured on an H100 (benchmarks/kernels-notes.md, v11): 16384^2 b1024 forward 1.11 vs 1.15-1.20 ms
// (512 x 512) at 99%, 1.89 vs 2.02 at 97%, 1024 x 352 as fast as 1024 x 384; 768 or 384 rows and 256-column panels
// were slower. Overrides: SPARSELAYER_SORTED_R, _P (multiples of 32 up to 1024).
SortedConfig choose_sorted(int64_t n_out, int64_t n_cols, int64_t batch, int device, int reserve_bytes,
                           int batch_tile, int max_rows) {
  SortedConfig c{};
  const int cols32 = static_cast<int>(std::min<int64_t>((n_cols + 31) / 32 * 32, kMaxSortedP));
  c.R = static_cast<int>(std::min<int64_t>((n_out + 31) / 32 * 32, max_rows));
  const int64_t tiles = (batch + batch_tile - 1) / batch_tile;
  while (c.R > 128 && ((n_out + c.R - 1) / c.R) * tiles < num_sms(device)) c.R = (c.R / 2 + 31) / 32 * 32;
  const int r_env = env_int("SPARSELAYER_SORTED_R"), p_env = env_int("SPARSELAYER_SORTED_P");
  if (r_env >= 32 && r_env <= max_rows && r_env % 32 == 0) c.R = r_env;
  // columns (128 bytes each) of two tiles beside R rows and the reserve
  const int acc_bytes = c.R * batch_tile * 4;
  const int fit = (max_smem_optin(device) - reserve_bytes - acc_bytes) / 128 / 2 / 32 * 32;
  c.P = std::min({512, cols32, fit});
  if (p_env >= 32 && p_env <= kMaxSortedP && p_env % 32 == 0) c.P = std::min({p_env, cols32, fit});
  TORCH_CHECK(c.P >= 32, "sparselayer: ", c.R, "-row blocks leave no room for the x tiles in shared memory");
  c.smem = acc_bytes + 2 * c.P * 128 + reserve_bytes;
  return c;
}

std::vector<at::Tensor> sorted_layout(const at::Tensor& ptr_in, const at::Tensor& idx_in, const at::Tensor& perm_in,
                                      int64_t n_out, int64_t n_cols, const SortedConfig& c, bool values_buffer) {
  std::vector<at::Tensor> index{ptr_in, idx_in};
  if (perm_in.defined()) index.push_back(perm_in);
  return cached_layout("spmm_sorted", index, {n_out, n_cols, c.P, c.R}, [&]() {
    const auto ptr = ptr_in.contiguous(), idx = idx_in.contiguous();
    const auto perm = perm_in.defined() ? perm_in.contiguous() : perm_in;
    const int n_panels = static_cast<int>((n_cols + c.P - 1) / c.P);
    const int64_t n_blocks = (n_out + c.R - 1) / c.R, n_bp = n_blocks * n_panels;
    const auto pp = panel_pointers(ptr, idx, n_out, n_cols, c.P);
    const auto opts = ptr.options();
    auto items = at::empty({n_bp * c.R}, opts.dtype(at::kInt));
    auto chunks = at::empty({n_bp * (c.R / kChunk), 2}, opts.dtype(at::kInt));
    auto n_chunks = at::empty({n_bp}, opts.dtype(at::kInt));
    auto bp_slots = at::empty({n_bp}, opts.dtype(at::kLong));
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const dim3 grid(static_cast<unsigned>(n_blocks), static_cast<unsigned>(n_panels));
    sorted_rank_kernel<<<grid, kPackThreads, 0, stream>>>(
        pp.data_ptr<int32_t>(), static_cast<int>(n_out), n_panels, c.R, c.P, items.data_ptr<int32_t>(),
        reinterpret_cast<int2*>(chunks.data_ptr<int32_t>()), n_chunks.data_ptr<int32_t>(),
        bp_slots.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const auto bp_end = bp_slots.cumsum(0);
    // The padded total (to size off and src) and the largest block's slots (sddmm_sorted's shared memory): one copy.
    const auto sizes = at::stack({bp_end[n_bp - 1], bp_slots.max()}).cpu();
    const int64_t total = sizes[0].item<int64_t>();
    TORCH_CHECK(total < std::numeric_limits<int32_t>::max(), "sparselayer: ", total,
                " padded nonzeros in the row-sorted layout, more than 2^31");
    auto off = at::empty({total + kSlotPad}, opts.dtype(at::kInt));
    off.narrow(0, total, kSlotPad).zero_();
    auto src = at::empty({std::max<int64_t>(total, 1)}, opts.dtype(at::kInt));
    sorted_fill_kernel<<<grid, kPackThreads, 0, stream>>>(
        pp.data_ptr<int32_t>(), idx.data_ptr<int64_t>(), perm.defined() ? perm.data_ptr<int64_t>() : nullptr,
        items.data_ptr<int32_t>(), reinterpret_cast<int2*>(chunks.data_ptr<int32_t>()), n_chunks.data_ptr<int32_t>(),
        bp_slots.data_ptr<int64_t>(), bp_end.data_ptr<int64_t>(), static_cast<int>(n_out), n_panels, c.R, c.P,
        off.data_ptr<int32_t>(), src.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    std::vector<at::Tensor> layout{items, chunks, n_chunks, off, src.narrow(0, 0, total), sizes[1]};
    if (values_buffer) layout.push_back(at::zeros({total + kSlotPad}, opts.dtype(at::kFloat)));
    return layout;
  });
}

bool sorted_kernel_applies(const char* override, bool default_here, int64_t batch) {
  const int env = env_int(override);
  if (env == 2 || batch >= (int64_t{1} << 31) / kBt) return false;
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) return false;
  return env == 1 || default_here;
}

at::Tensor sorted_csr_times_dense(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& vals,
                                  const at::Tensor& perm, const at::Tensor& x, int64_t n_out) {
  // bf16 x: bf16 tiles of 64 batch values (half the shared-memory reads); SPARSELAYER_SORTED_BF16=2 (tuning
  // override) widens x to fp32 tiles for this kernel instead.
  if (x.scalar_type() == at::kBFloat16 && env_int("SPARSELAYER_SORTED_BF16") != 2)
    return sorted_csr_times_dense_bf16(ptr, idx, vals, perm, x, n_out);
  if (window_kernel_applies(x, x.size(1)))
    return in_layout_of(window_csr_times_dense(ptr, idx, vals, perm, x, n_out), x);
  const int64_t batch = x.size(0), n_cols = x.size(1);
  // Beside the accumulators and x tiles: the chunk counters (16 bytes) and two panel descriptors.
  const SortedConfig c = choose_sorted(n_out, n_cols, batch, x.get_device(), 16 + 2 * desc_ints(kMaxSortedR) * 4);
  const auto layout = sorted_layout(ptr, idx, perm, n_out, n_cols, c, true);
  const auto pv = slot_values(layout[4], vals, values_buffer_of(layout));
  // spmm_t (perm defined): x is the layer's incoming gradient, whose copy sddmm then reuses.
  const FmRows xt = perm.defined() ? feature_major_shared(x, true) : feature_major(x, true);
  auto y = empty_activation(x, n_out);
  // 20 warps where rows are sparse (sorted.cuh, sorted_threads): measured on an H100 (benchmarks/kernels-notes.md,
  // v19), 16384^2 b1024 99% forward 0.950-0.954 vs 0.973-0.978 ms, spmm_t 0.897-0.900 vs 0.918-0.924, 4096^2 b4096 99%
  // layer step 0.898-0.902 vs 0.934-0.937; even at 97%, slower at 90% (4096^2 spmm_t 1.18 vs 1.14).
  if (x.scalar_type() == at::kBFloat16)  // x widened to fp32 tiles (tuning override SPARSELAYER_SORTED_BF16=2)
    launch_sorted<bf16, kSortedThreads>(c, layout, pv, xt, batch, n_cols, n_out, y);
  else if (sorted_threads(vals.numel(), n_out, n_cols, "SPARSELAYER_SORTED_T") == kSortedThreadsSparse)
    launch_sorted<float, kSortedThreadsSparse>(c, layout, pv, xt, batch, n_cols, n_out, y);
  else
    launch_sorted<float, kSortedThreads>(c, layout, pv, xt, batch, n_cols, n_out, y);
  return y;
}

}  // namespace sparselayer
