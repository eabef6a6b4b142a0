// sparselayer::spmm / spmm_t on CUDA (fp32, Hopper): the window kernel. Each lane keeps one output row's sums in
// registers for a whole row block and batch tile, while x streams through a ring of panels.
//
// Why: the row-sorted kernel (spmm_sorted.cu) deals each (row block, panel)'s segments to lanes anew, so a lane loads
// and stores its row's 32 sums from shared memory at every panel. At 99% (3.5 entries per row and 352-column panel)
// that is a third of its shared-memory traffic, and shared memory bounds it. Here x arrives in a ring of K panels of P
// columns. A lane multiplies its next entry whenever that entry's panel is resident, so the lanes of a warp drift up
// to K - 1 panels apart instead of meeting at every panel boundary. Rows are sorted by length within the block, so
// a warp's lanes still finish together. A simulation of 16384^2 at 99% (benchmarks/kernels-notes.md, v16) keeps 85%
// of the lanes busy with a 1536-column window.
//
// Status (v16): opt-in (SPARSELAYER_SPMM_WINDOW=1), not a default. At 16384^2 b1024 99% it moves 25% fewer
// shared-memory wavefronts than the row-sorted kernel (105 M against 141 M), but it runs 40% slower (1.37-1.41 ms
// against 0.99). It executes 50% more instructions per multiply-add, and its warps stall on the loads of their next
// entries. benchmarks/kernels-notes.md (v16) has the measurements and what is left to try.
//
// Block: kWinWarps consumer warps (R = 32 * kWinWarps rows, one per lane) and one producer warp. The grid is
// persistent (one block per SM), and each block takes items (row block, batch tile) in turn. Shared memory holds the
// ring [K][P][32] floats, then the mbarriers full[K] and empty[K].
// The producer streams panel g (numbered across the block's items, g = item_count * n_panels + p) into ring slot
// g % K. It waits until every consumer warp has released panel g - K (empty[g % K]), copies the panel with 16-byte
// cp.async (one cp.async.bulk of 128 bytes per column was 5x slower: tune-v16-window-bulk-copies.log), and
// each producer lane arrives on full[g % K] once its copies have landed. n_panels is a
// multiple of K, so panel p of any item sits in slot p % K and the pack stores each entry's byte offset in the ring.
// A consumer warp releases the panels below the lowest one its lanes still need. It waits on a panel's full barrier
// before releasing it, so no copy into a slot is ever in flight twice. It blocks only when none of its lanes has a
// resident panel. A lane's 32 sums are the same fixed-order sum as in spmm.cu (column order): bit-identical to the
// other fp32 kernels.
#include "sorted.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <limits>

namespace sparselayer {
namespace {

constexpr int kWinWarps = 16;
constexpr int kWinR = 32 * kWinWarps;         // rows per block: one per consumer lane
constexpr int kWinThreads = kWinR + 32;       // + the producer warp
constexpr int kWinOffsetBits = 18;            // an entry: panel << 18 | byte offset in the ring (< 256 KB)
constexpr int kNoPanel = std::numeric_limits<int>::max();

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("{\n .reg .b64 state;\n mbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(bar) : "memory");
}
// True once the phase of this parity has completed (the barrier is never two phases ahead of a waiter here).
__device__ __forceinline__ bool mbar_done(uint32_t bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(bar), "r"(parity)
      : "memory");
  return done != 0;
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
// Arrives on the mbarrier once this thread's cp.async copies issued so far have landed (counted in its arrivals).
__device__ __forceinline__ void cp_async_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
#endif

// The pack's first pass, per row block rb (kWinR threads, one per row): ranks the block's rows by length
// (descending, ties by row: a bitonic sort of (length, row) keys). Rank r is lane r % 32 of chunk r / 32, whose
// slots interleave its lanes' entries in groups of four (entry t of lane j at 128 (t / 4) + 4 j + t % 4, for t below
// the chunk's longest length rounded up to 4), so that the lanes' 16-byte loads of one group are contiguous. Writes
// per rank its row (-1 past n_rows) and (its first slot within the block, its length), per block the slots it takes.
__global__ void __launch_bounds__(kWinR)
window_rank_kernel(const int64_t* __restrict__ ptr, int n_rows, int32_t* __restrict__ rows, int2* __restrict__ spans,
                   int64_t* __restrict__ block_slots) {
  __shared__ int64_t key[kWinR];
  __shared__ int chunk_slots[kWinWarps];
  const int i = threadIdx.x, lane = i & 31, chunk = i >> 5;
  const int64_t o = static_cast<int64_t>(blockIdx.x) * kWinR + i;
  const int64_t len1 = o < n_rows ? ptr[o + 1] - ptr[o] + 1 : 0;  // length + 1, 0 past the last row
  key[i] = (len1 << 32) | static_cast<uint32_t>(kWinR - 1 - i);  // longer first; among equals, the lower row
  __syncthreads();
  for (int k = 2; k <= kWinR; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      const int ixj = i ^ j;
      if (ixj > i) {
        const int64_t a = key[i], b = key[ixj];
        if (((i & k) == 0) == (a < b)) key[i] = b, key[ixj] = a;  // descending overall
      }
      __syncthreads();
    }
  }
  const int64_t mine = key[i];
  const int row = kWinR - 1 - static_cast<int>(mine & 0xffffffff);
  const int n = max(0, static_cast<int>(mine >> 32) - 1);
  if (lane == 0) chunk_slots[chunk] = 32 * ((n + 3) & ~3);  // the chunk's longest row is its first
  __syncthreads();
  int before = 0, total = 0;
  for (int c = 0; c < kWinWarps; ++c) {
    before += c < chunk ? chunk_slots[c] : 0;
    total += chunk_slots[c];
  }
  const int64_t slot = static_cast<int64_t>(blockIdx.x) * kWinR + i;
  rows[slot] = (mine >> 32) == 0 ? -1 : static_cast<int>(blockIdx.x) * kWinR + row;
  spans[slot] = make_int2(before + 4 * lane, n);
  if (i == 0) block_slots[blockIdx.x] = total;
}

// The second pass: each warp fills its ranks' entries (lanes along a row: coalesced reads of idx), and rewrites
// spans[r].x from within-block to global (block_end: inclusive sum of block_slots).
// word = panel << 18 | byte offset of the entry's column in the ring (column c of panel p at (p % K) * P + c - p P),
// src = the entry's value position (k, or perm[k] for spmm_t); padding slots stay (0, 0) and are never multiplied.
__global__ void __launch_bounds__(kWinR)
window_fill_kernel(const int64_t* __restrict__ ptr, const int64_t* __restrict__ idx,
                   const int64_t* __restrict__ perm, const int32_t* __restrict__ rows, int2* __restrict__ spans,
                   const int64_t* __restrict__ block_slots, const int64_t* __restrict__ block_end, int P, int K,
                   int32_t* __restrict__ word, int32_t* __restrict__ src) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t first = block_end[blockIdx.x] - block_slots[blockIdx.x];
  for (int r = warp; r < kWinR; r += kWinWarps) {
    const int64_t rank = static_cast<int64_t>(blockIdx.x) * kWinR + r;
    const int2 span = spans[rank];
    const int64_t s0 = first + span.x;
    const int n = span.y;
    const int64_t k0 = n > 0 ? ptr[rows[rank]] : 0;
    for (int t = lane; t < n; t += 32) {
      const int64_t k = k0 + t, c = idx[k], p = c / P, s = s0 + 128 * (t >> 2) + (t & 3);
      word[s] = static_cast<int32_t>((p << kWinOffsetBits) | (((p % K) * P + c - p * P) * (kBt * 4)));
      src[s] = static_cast<int32_t>(perm ? perm[k] : k);
    }
    __syncwarp();
    if (lane == 0) spans[rank].x = static_cast<int>(s0);
  }
}

// rows, spans: the pack (per rank of each row block: the row, its first slot and length); word, pv: per slot the
// entry (panel << 18 | ring byte offset) and its value, padded by kSlotPad; xt: x feature-major (row c holds x[:, c],
// rows of ldt floats, ldt a multiple of 4). n_panels = a multiple of K panels of P columns. y: (batch, n_rows).
__global__ void __launch_bounds__(kWinThreads, 1)
spmm_window_kernel(const int32_t* __restrict__ rows, const int2* __restrict__ spans, const int32_t* __restrict__ word,
                   const float* __restrict__ pv, const float* __restrict__ xt, int64_t ldt, int batch, int n_cols,
                   int n_rows, int n_panels, int P, int K, int n_row_blocks, int n_items, float* __restrict__ y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) float4 smem4[];
  const uint32_t ring = static_cast<uint32_t>(__cvta_generic_to_shared(smem4));
  const uint32_t full = ring + K * P * (kBt * 4), empty = full + 8 * K;  // mbarriers, 8 bytes each
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (tid == 0) {
    for (int s = 0; s < K; ++s) {
      mbar_init(full + 8 * s, 32);          // one per producer lane, once its copies have landed
      mbar_init(empty + 8 * s, kWinWarps);  // one release per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (warp == kWinWarps) {  // producer: lane l copies chunks l % 8 of every fourth column (conflict-free stores)
    float* ring_f = reinterpret_cast<float*>(smem4);
    const int quad = lane & 7;
    // slot s = g % K; from the second round on, wait for the release of the panel K before (empty phase g / K - 1)
    int s = 0;
    bool first_round = true;
    uint32_t empty_parity = 0;
    for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
      const int b0 = (item / n_row_blocks) * kBt;
      const int bytes = max(0, min(16, static_cast<int>(min(ldt, static_cast<int64_t>(batch)) - b0 - 4 * quad) * 4));
      for (int p = 0; p < n_panels; ++p) {
        if (!first_round) mbar_wait(empty + 8 * s, empty_parity);
        const int c0 = p * P, n = max(0, min(P, n_cols - c0));
        const float* src = xt + static_cast<int64_t>(c0 + (lane >> 3)) * ldt + b0 + 4 * quad;
        float* dst = ring_f + (s * P + (lane >> 3)) * kBt + 4 * quad;
        for (int c = lane >> 3; c < n; c += 4, src += 4 * ldt, dst += 4 * kBt) cp_async16(dst, bytes ? src : xt, bytes);
        cp_async_arrive(full + 8 * s);
        if (++s == K) {
          s = 0;
          if (first_round) first_round = false;
          else empty_parity ^= 1;
        }
      }
    }
    return;
  }

  // consumer: lane's accumulator k holds batch chunk k ^ (lane & 7), read at (ring + offset) ^ 16 k ^ lx
  const uint32_t lx = 16 * (lane & 7);
  int64_t gbase = 0;
  for (int item = blockIdx.x; item < n_items; item += gridDim.x, gbase += n_panels) {
    const int rb = item % n_row_blocks, b0 = (item / n_row_blocks) * kBt;
    const int64_t rank = static_cast<int64_t>(rb) * kWinR + tid;
    const int2 span = __ldg(spans + rank);
    const int o = __ldg(rows + rank), len = span.y;
    const int32_t* wp = word + span.x;
    const float* vp = pv + span.x;
    // entries t .. t + 3 (t = 0 mod 4) of the lane at wp + 32 t: the current group and the next
    int4 cw = __ldg(reinterpret_cast<const int4*>(wp)), nw = __ldg(reinterpret_cast<const int4*>(wp + 128));
    float4 cv = __ldg(reinterpret_cast<const float4*>(vp)), nv = __ldg(reinterpret_cast<const float4*>(vp + 128));
    float4 a[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) a[k] = make_float4(0.f, 0.f, 0.f, 0.f);
    // Panels [0, released) released; [0, seen) seen complete (warp-uniform). The slots and phase parities of the
    // next panel to see and to release advance with them (no division in the loop: it was half the instructions).
    int pos = 0, released = 0, released_slot = 0, seen = 0, seen_slot = 0;
    uint32_t seen_parity = static_cast<uint32_t>((gbase / K) & 1);
    auto see = [&](bool wait) {
      if (wait) mbar_wait(full + 8 * seen_slot, seen_parity);
      ++seen;
      if (++seen_slot == K) seen_slot = 0, seen_parity ^= 1;
    };
    auto release_below = [&](int end) {
      for (; released < end; ++released) {
        if (released == seen) see(true);
        if (lane == 0) mbar_arrive(empty + 8 * released_slot);
        if (++released_slot == K) released_slot = 0;
      }
    };
    for (;;) {
      const int i = pos & 3;
      const int w = i == 0 ? cw.x : i == 1 ? cw.y : i == 2 ? cw.z : cw.w;
      const float v = i == 0 ? cv.x : i == 1 ? cv.y : i == 2 ? cv.z : cv.w;
      const int q = pos < len ? static_cast<int>(static_cast<uint32_t>(w) >> kWinOffsetBits) : kNoPanel;
      const int qmin = __reduce_min_sync(0xffffffffu, q);
      if (qmin == kNoPanel) break;
      release_below(qmin);  // no lane needs these panels again
      while (seen <= qmin) see(true);
      if (seen < n_panels && __any_sync(0xffffffffu, q != kNoPanel && q >= seen) &&
          mbar_done(full + 8 * seen_slot, seen_parity))
        see(false);
      if (q < seen) {
        const uint32_t xa = (ring + (static_cast<uint32_t>(w) & ((1u << kWinOffsetBits) - 1))) ^ lx;
#pragma unroll
        for (int k = 0; k < 8; ++k) fma4(a[k], v, lds16f(xa ^ (16 * k)));
        if ((++pos & 3) == 0) {
          cw = nw, cv = nv;
          nw = __ldg(reinterpret_cast<const int4*>(wp + 32 * (pos + 4)));
          nv = __ldg(reinterpret_cast<const float4*>(vp + 32 * (pos + 4)));
        }
      }
    }
    release_below(n_panels);
    // a[k] <- a[k ^ (lane & 7)] (three conditional swap stages; a select by a computed index would put a in local
    // memory), so that a[j] holds batch chunk j and a warp's lanes store along rows of y.
#pragma unroll
    for (int bit = 1; bit < 8; bit <<= 1) {
      const bool flip = (lane & bit) != 0;
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        if (k & bit) continue;
        const float4 lo = a[k], hi = a[k | bit];
        a[k] = flip ? hi : lo;
        a[k | bit] = flip ? lo : hi;
      }
    }
    if (o >= 0) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int b = b0 + 4 * j;
        const float e[4] = {a[j].x, a[j].y, a[j].z, a[j].w};
#pragma unroll
        for (int u = 0; u < 4; ++u)
          if (b + u < batch) y[static_cast<int64_t>(b + u) * n_rows + o] = e[u];
      }
    }
  }
#endif
}

struct WindowConfig {
  int P, K, n_panels;
};

// The ring: K slots (default 14, override SPARSELAYER_WINDOW_K, 2..32) of the widest panels that fit in shared memory
// (at most SPARSELAYER_WINDOW_P columns when set), n_panels a multiple of K.
WindowConfig choose_window(int64_t n_cols, int device) {
  WindowConfig c{};
  const int k_env = env_int("SPARSELAYER_WINDOW_K"), p_env = env_int("SPARSELAYER_WINDOW_P");
  c.K = k_env >= 2 && k_env <= 32 ? k_env : 14;
  int p_max = (max_smem_optin(device) - 16 * c.K) / (kBt * 4) / c.K;
  if (p_env >= 1) p_max = std::min(p_max, p_env);
  TORCH_CHECK(p_max >= 1, "sparselayer: a ring of ", c.K, " panels does not fit in shared memory");
  const int64_t rounds = (n_cols + static_cast<int64_t>(c.K) * p_max - 1) / (static_cast<int64_t>(c.K) * p_max);
  c.n_panels = static_cast<int>(std::min<int64_t>(rounds * c.K, std::numeric_limits<int>::max()));
  c.P = static_cast<int>((n_cols + c.n_panels - 1) / c.n_panels);
  return c;
}

// The pack, cached per topology: rows int32 [n_row_blocks * kWinR], spans int2 [same] (first slot, length),
// word int32 [slots + kSlotPad], src int32 [slots] (the slots of each chunk of 32 ranks interleaved in groups of 4).
std::vector<at::Tensor> window_layout(const at::Tensor& ptr_in, const at::Tensor& idx_in, const at::Tensor& perm_in,
                                      int64_t n_out, const WindowConfig& c) {
  std::vector<at::Tensor> index{ptr_in, idx_in};
  if (perm_in.defined()) index.push_back(perm_in);
  return cached_layout("spmm_window", index, {n_out, c.P, c.K, 0}, [&]() {
    const auto ptr = ptr_in.contiguous(), idx = idx_in.contiguous();
    const auto perm = perm_in.defined() ? perm_in.contiguous() : perm_in;
    const int64_t n_blocks = (n_out + kWinR - 1) / kWinR;
    const auto opts = ptr.options();
    auto rows = at::empty({n_blocks * kWinR}, opts.dtype(at::kInt));
    auto spans = at::empty({n_blocks * kWinR, 2}, opts.dtype(at::kInt));
    auto block_slots = at::empty({n_blocks}, opts.dtype(at::kLong));
    const auto stream = c10::cuda::getCurrentCUDAStream();
    window_rank_kernel<<<static_cast<unsigned>(n_blocks), kWinR, 0, stream>>>(
        ptr.data_ptr<int64_t>(), static_cast<int>(n_out), rows.data_ptr<int32_t>(),
        reinterpret_cast<int2*>(spans.data_ptr<int32_t>()), block_slots.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const auto block_end = block_slots.cumsum(0);
    const int64_t total = block_end[n_blocks - 1].item<int64_t>();  // one copy to the host
    TORCH_CHECK(total < std::numeric_limits<int32_t>::max() - kSlotPad, "sparselayer: ", total,
                " padded nonzeros in the window layout, more than 2^31");
    auto word = at::zeros({total + kSlotPad}, opts.dtype(at::kInt));
    auto src = at::zeros({std::max<int64_t>(total, 1)}, opts.dtype(at::kInt));
    window_fill_kernel<<<static_cast<unsigned>(n_blocks), kWinR, 0, stream>>>(
        ptr.data_ptr<int64_t>(), idx.data_ptr<int64_t>(), perm.defined() ? perm.data_ptr<int64_t>() : nullptr,
        rows.data_ptr<int32_t>(), reinterpret_cast<int2*>(spans.data_ptr<int32_t>()), block_slots.data_ptr<int64_t>(),
        block_end.data_ptr<int64_t>(), c.P, c.K, word.data_ptr<int32_t>(), src.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return std::vector<at::Tensor>{rows, spans, word, src.narrow(0, 0, total)};
  });
}

}  // namespace

bool window_kernel_applies(const at::Tensor& x, int64_t n_cols) {
  const int env = env_int("SPARSELAYER_SPMM_WINDOW");  // 1: the window kernel, 2: never; default: never (v16)
  if (env != 1 || x.scalar_type() != at::kFloat) return false;
  if (compute_major(x.get_device()) < 9) return false;  // mbarrier try_wait (sm_90)
  const WindowConfig c = choose_window(n_cols, x.get_device());
  return c.n_panels < (1 << (31 - kWinOffsetBits)) - 1;
}

at::Tensor window_csr_times_dense(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& vals,
                                  const at::Tensor& perm, const at::Tensor& x, int64_t n_out) {
  const int64_t batch = x.size(0), n_cols = x.size(1);
  const int device = x.get_device();
  const WindowConfig c = choose_window(n_cols, device);
  const auto layout = window_layout(ptr, idx, perm, n_out, c);
  const auto pv = slot_values(layout[3], vals);
  const FmRows xt = perm.defined() ? feature_major_shared(x, true) : feature_major(x, true);
  auto y = at::empty({batch, n_out}, x.options());
  const int n_row_blocks = static_cast<int>((n_out + kWinR - 1) / kWinR);
  const int64_t n_items = static_cast<int64_t>(n_row_blocks) * ((batch + kBt - 1) / kBt);
  TORCH_CHECK(n_items < std::numeric_limits<int>::max(), "sparselayer: too many (row block, batch tile) items");
  const int smem = c.K * c.P * kBt * 4 + 16 * c.K;
  allow_smem(reinterpret_cast<const void*>(spmm_window_kernel), device);
  // One block per SM (override SPARSELAYER_WINDOW_GRID: fewer blocks, each taking more items; for tests).
  const int grid_env = env_int("SPARSELAYER_WINDOW_GRID");
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(n_items, grid_env >= 1 ? grid_env : num_sms(device)));
  spmm_window_kernel<<<grid, kWinThreads, smem, c10::cuda::getCurrentCUDAStream()>>>(
      layout[0].data_ptr<int32_t>(), reinterpret_cast<const int2*>(layout[1].data_ptr<int32_t>()),
      layout[2].data_ptr<int32_t>(), pv.data_ptr<float>(), xt.ptr<float>(), xt.ld,
      static_cast<int>(batch), static_cast<int>(n_cols), static_cast<int>(n_out), c.n_panels, c.P, c.K, n_row_blocks,
      static_cast<int>(n_items), y.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

}  // namespace sparselayer
