// sparselayer::sddmm on CUDA for large products: the row-sorted kernel.
//
// Why another kernel: the tile kernel (sddmm.cu) keeps each nonzero's running sum in a register, so a block holds
// about 1500 nonzeros and its tiles are small (224 x 224 at 97%, 384 x 384 at 99%); every staged column of x and of
// grad_y then serves only 4-7 nonzeros, and staging both operands (from L2 through shared memory, every batch tile)
// is most of its time at 97%. Here the running sums live in shared memory, so a block takes a whole (row block,
// panel) of a row-sorted pack (sorted.cuh): each staged x column serves R * density nonzeros, and each lane reads its
// row's 32 grad_y values of the batch tile once into registers for all of the row's entries in the panel.
//
// Block: one (row block, panel) x a range of batch tiles; T threads = W warps, W = 16 over 1024-row blocks where the
// panels' sums fit beside the rest in panels of at least 256 columns (97-99%), else W = 8 over 512-row blocks; the
// panel width from a cost model of the grid (sddmm_grid). Shared memory: two x tiles [P][32] (16-byte cp.async from
// the feature-major copy of x, the next batch tile's while the current one is multiplied), one grad_y stage [32][32]
// per warp, the panel's column offsets [S] and running sums [S] (S = its padded slots, at most the pack's max_bp).
// Warp w owns chunks w and 2 W - 1 - w (chunks come longest first, so every warp gets one long and one short) for
// every batch tile, and they take the warp's stage in turn: a lane reads its row of the long chunk from the stage,
// the warp copies the short chunk's rows of the tile into it (coalesced: 4 whole 128-byte lines per instruction),
// which arrive while the long chunk is multiplied; then the short chunk's rows are read, and the long chunk's rows of
// the next tile copied while the short one is multiplied. (v21: one stage per chunk took twice the shared memory, so
// panels were at most 256 columns at 99%; benchmarks/kernels-notes.md.)
// tile to arrive. Per entry and batch tile: the column offset and the running sum from shared memory, 8 lane-rotated
// float4 reads of the x column (conflict-free, as in spmm_sorted.cu), 32 multiply-adds in 4 chains. Each sum adds its
// batch tiles in order, and batch splits (where the grid is short of blocks) are added in split order by the group's
// last block to finish (last_of_splits): deterministic. The pack ranks rows of equal length in row order, so a row
// always has the same lane, whose rotated chunk order sets the rounding of each of its sums.
//
// Measured on an H100 (benchmarks/kernels-notes.md, v12), 16384^2 b1024: 1.04 ms at 99% (256 threads: 1.18, the tile
// kernel 1.26), 2.13 at 97% (tile 2.94); 4096^2 b4096 0.38 and 0.66 (tile 0.50 and 0.97); v21 (one stage per warp,
// wider panels): 0.79-0.81 and 1.72-1.78 ms on 16384^2, 0.255 and 0.50 on 4096^2 b4096. A first version had each
// lane load its own grad_y row into registers (one load instruction touching 32 cache lines): 25% slower than the
// tile kernel at 99%, its L1 busier with those loads than with the x reads. sddmm.cu picks this kernel on products
// of 1e8 multiply-adds and more; it declines (returns false) where the densest panel's sums fit neither block shape.
#include "sorted.cuh"

#include <ATen/ops/empty.h>

#include <algorithm>

namespace sparselayer {
namespace {

constexpr int kGroup = 4;  // entries multiplied together (4 x 4 independent chains)

// sums[s] += d . x[column of slot s] over the batch tile, for the lane's slots s = s0 + 32 t, t < L (L is the chunk's
// longest row, so the loop is warp-uniform; a shorter row's extra slots read column 0 into sums never written out).
__device__ __forceinline__ void multiply_rows(const float4 (&d)[8], const int (&rot)[8], const char* xs,
                                              const int* offs, float* sums, int s0, int L) {
  for (int t0 = 0; t0 < L; t0 += kGroup) {
    float part[kGroup];
#pragma unroll
    for (int u = 0; u < kGroup; ++u) {
      part[u] = 0.f;
      if (t0 + u < L) {
        const char* xc = xs + offs[s0 + kChunk * (t0 + u)];
        float4 q = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const float4 v = *reinterpret_cast<const float4*>(xc + rot[k]);
          q.x = fmaf(v.x, d[k].x, q.x);
          q.y = fmaf(v.y, d[k].y, q.y);
          q.z = fmaf(v.z, d[k].z, q.z);
          q.w = fmaf(v.w, d[k].w, q.w);
        }
        part[u] = (q.x + q.y) + (q.z + q.w);
      }
    }
#pragma unroll
    for (int u = 0; u < kGroup; ++u)
      if (t0 + u < L) sums[s0 + kChunk * (t0 + u)] += part[u];
  }
}

constexpr int kChunksPerWarp = 2;  // a long and a short one

// One chunk's grad_y rows of the batch tile from b0 into the warp's stage [32][32] (row j of the chunk at 128 j bytes,
// natural batch order), by 16-byte cp.async: lane l copies quad l % 8 of rows 4 i + l / 8 (i < 8), so every instruction
// covers 4 whole 128-byte lines; row[i] is that row's offset in the feature-major grad_y dyt (-1: zeros), and batch
// values past the end are zeros too.
__device__ __forceinline__ void stage_rows(float* stage, const int (&row)[8], const float* __restrict__ dyt, int b0,
                                           int batch, int lane) {
  const int q = lane & 7, b = b0 + 4 * q;
  const int bytes = b < batch ? 4 * min(4, batch - b) : 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int n = row[i] >= 0 ? bytes : 0;
    cp_async16(stage + (4 * i + (lane >> 3)) * kBt + 4 * q, n ? dyt + row[i] + b : dyt, n);
  }
}

// items, chunks, n_chunks, off, src: the pack (sorted.cuh) for row blocks of R <= 64 W rows and panels of P; xt, dyt:
// x and grad_y feature-major (row c holds column c over the batch, rows of ldx / ldd floats; n_out * ldd < 2^31);
// max_slots: the pack's max_bp. Block (row block, panel, split) sums its panel's nonzeros over batch tiles
// [split * tiles_per_split, ...): into out[k] where the batch is not split (partial null), else into partial[split *
// nnz + k], and the group's last block to finish writes their sums to out (last_of_splits; arrivals: per bp). T
// threads = W warps; warp w owns chunks w and 2 W - 1 - w.
template <int T>
__global__ void __launch_bounds__(T, 1)
sddmm_sorted_kernel(const int32_t* __restrict__ items, const int2* __restrict__ chunks,
                    const int32_t* __restrict__ n_chunks, const int32_t* __restrict__ off,
                    const int32_t* __restrict__ src, const float* __restrict__ xt, int64_t ldx,
                    const float* __restrict__ dyt, int ldd, int batch, int n_in, int n_panels, int P, int R,
                    int max_slots, int tiles_per_split, int64_t nnz, float* __restrict__ out,
                    float* __restrict__ partial, int* __restrict__ arrivals) {
  constexpr int W = T / 32, K = kChunksPerWarp;
  static_assert(K == 2, "the loop below passes the warp's stage from its long chunk to its short one and back");
  extern __shared__ float4 smem4[];
  float* xbuf = reinterpret_cast<float*>(smem4);          // 2 x [P][32]
  float* stages = xbuf + 2 * P * kBt;                      // [W][32][32]
  float* sums = stages + W * kChunk * kBt;                 // [max_slots]
  int* offs = reinterpret_cast<int*>(sums + max_slots);   // [max_slots]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int p = blockIdx.y, o0 = blockIdx.x * R;
  const int64_t bp = static_cast<int64_t>(blockIdx.x) * n_panels + p;
  const int nc = __ldg(n_chunks + bp);
  if (nc == 0) return;  // block-uniform: no nonzeros in this panel
  const int2* bch = chunks + bp * (R / kChunk);
  const int base = __ldg(&bch[0].x);
  const int2 last = __ldg(bch + nc - 1);
  const int S = last.x + kChunk * last.y - base;
  const int n_tiles = (batch + kBt - 1) / kBt;
  const int t_begin = blockIdx.z * tiles_per_split, t_end = min(n_tiles, t_begin + tiles_per_split);
  float* dst = partial ? partial + blockIdx.z * nnz : out;
  float* stage = stages + warp * kChunk * kBt;

  copy_tile<T>(xbuf, xt, ldx, batch, n_in, t_begin * kBt, p * P, P);
  int L[K], first[K], len[K];
  int rows[K][8];  // [r][i]: the grad_y row offset this lane copies into the stage row 4 i + lane / 8 for chunk r
#pragma unroll
  for (int r = 0; r < K; ++r) {
    const int ci = r * W + ((r & 1) ? W - 1 - warp : warp);
    L[r] = first[r] = len[r] = 0;
    int mine = -1;
    if (ci < nc) {  // warp-uniform
      const int2 ch = __ldg(bch + ci);
      const int item = __ldg(items + bp * R + ci * kChunk + lane);
      L[r] = ch.y;
      first[r] = ch.x - base + lane;
      len[r] = item >> 16;
      if (len[r] > 0) mine = (o0 + (item & 0xffff)) * ldd;
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) rows[r][i] = __shfl_sync(0xffffffffu, mine, 4 * i + (lane >> 3));
  }
  if (L[0] > 0) stage_rows(stage, rows[0], dyt, t_begin * kBt, batch, lane);
  cp_async_commit();
  for (int i = tid; i < S; i += T) {
    sums[i] = 0.f;
    offs[i] = __ldg(off + base + i);
  }
  int rot[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) rot[k] = ((k + lane) & 7) * 16;

  // One stage per warp, taken in turn by its two chunks: the short chunk's rows arrive while the long one is
  // multiplied, and the long one's rows of the next batch tile while the short one is (and while the warps meet at
  // the barrier). Copy groups per thread, in order: the short chunk's rows, then the next x tile, then the long
  // chunk's next rows, so that waiting for the first leaves the x tile in flight.
  for (int t = t_begin; t < t_end; ++t) {
    cp_async_wait<0>();
    __syncthreads();  // tile t and the long chunk's rows are in (and the block's arrays); every warp is done with
                      // tile t - 1
    float4 d[8];      // the lane's grad_y row, batch chunk (k + lane) mod 8 in d[k]
    if (L[0] > 0) {   // warp-uniform
#pragma unroll
      for (int k = 0; k < 8; ++k)
        d[k] = *reinterpret_cast<const float4*>(reinterpret_cast<const char*>(stage + lane * kBt) + rot[k]);
      __syncwarp();  // the warp's reads of the stage come before the copies into it
      if (L[1] > 0) stage_rows(stage, rows[1], dyt, t * kBt, batch, lane);
    }
    cp_async_commit();
    if (t + 1 < t_end) copy_tile<T>(xbuf + ((t + 1 - t_begin) & 1) * P * kBt, xt, ldx, batch, n_in, (t + 1) * kBt,
                                    p * P, P);
    cp_async_commit();
    const char* xs = reinterpret_cast<const char*>(xbuf + ((t - t_begin) & 1) * P * kBt);
    if (L[0] > 0) multiply_rows(d, rot, xs, offs, sums, first[0], L[0]);
    if (L[1] > 0) {  // warp-uniform
      cp_async_wait<1>();  // this lane's copies of the short chunk's rows (the x tile may still be in flight)
      __syncwarp();        // and every lane's, visible to the warp
#pragma unroll
      for (int k = 0; k < 8; ++k)
        d[k] = *reinterpret_cast<const float4*>(reinterpret_cast<const char*>(stage + lane * kBt) + rot[k]);
      __syncwarp();
    }
    if (t + 1 < t_end && L[0] > 0) stage_rows(stage, rows[0], dyt, (t + 1) * kBt, batch, lane);
    cp_async_commit();
    if (L[1] > 0) multiply_rows(d, rot, xs, offs, sums, first[1], L[1]);
  }
#pragma unroll
  for (int r = 0; r < K; ++r)
    for (int t = 0; t < len[r]; ++t) dst[__ldg(src + base + first[r] + kChunk * t)] = sums[first[r] + kChunk * t];
  // The stages are free once every warp is past the loop (last_of_splits synchronises the block first).
  if (partial && last_of_splits(arrivals + bp, reinterpret_cast<int*>(stages))) {
#pragma unroll
    for (int r = 0; r < K; ++r)
      for (int t = 0; t < len[r]; ++t) {
        const int k = __ldg(src + base + first[r] + kChunk * t);
        out[k] = sum_of_splits(partial, nnz, k);
      }
  }
}

// x tiles, grad_y stages (one per warp), sums and column offsets of a T-thread block.
int sorted_sddmm_smem(const SortedConfig& c, int threads, int64_t max_slots) {
  return static_cast<int>(2 * c.P * kBt * 4 + threads / 32 * kChunk * kBt * 4 + 8 * max_slots);
}

// Batch splits for a grid of `blocks` blocks (one per SM): the fewest (up to 8, keeping at least 4 batch tiles each)
// whose last wave is at least 90% full, else the fullest.
int64_t choose_splits(int64_t blocks, int64_t n_tiles, int sms) {
  int64_t best = 1;
  double best_fill = 0.0;
  for (int64_t s = 1; s <= 8 && (s == 1 || n_tiles / s >= 4); ++s) {
    const int64_t n = blocks * s, waves = (n + sms - 1) / sms;
    const double fill = static_cast<double>(n) / static_cast<double>(waves * sms);
    if (fill >= 0.9) return s;
    if (fill > best_fill + 1e-9) best = s, best_fill = fill;
  }
  return best;
}

// Panels of P columns evened out: the widest narrower ones whose last panel is at least half full (no sliver).
int even_panel_width(int64_t n_in, int P) {
  if (P < 64) return P;
  for (int64_t n = (n_in + P - 1) / P;; ++n) {
    const int even = static_cast<int>(((n_in + n - 1) / n + 31) / 32 * 32);
    if (even <= 32 || n_in - (n_in + even - 1) / even * even + even >= even / 2) return even;
  }
}

struct SddmmGrid {
  int P = 0;
  int64_t n_panels = 0, splits = 1, tiles_per_split = 0;
};

// Wider panels amortise each chunk's grad_y stage over more entries, but make fewer blocks, so the batch is split more
// ways or the last wave is emptier. Model, in shared-memory wavefronts of one block per batch tile: 32 chunks, each
// its stage (32 written, 32 read) and its longest row's entries, one more than the average, at 35 each (the column
// offset, the x column, the running sum read and written): 32 (99 + 35 P density); the grid runs waves x tiles per
// split of that. The cheapest panel width, from the widest whose sums fit (up to kMaxPanel, or
// SPARSELAYER_SDDMM_SORTED_MAX_P) down to 128 columns (or the block shape's narrowest), each as is and evened out
// (even_panel_width), among those whose last wave is at least 90% full and whose batch is unsplit or split into
// parts of at least kMinSplitTiles tiles (a split pays the block's fixed work again: its first tiles, the sums'
// zeroing and writing, the reduction); where none is, the widest, evened out. Measured on an H100
// (benchmarks/kernels-notes.md, v21; results/history/ab-v21-sddmm.log, feature-major operands, two rounds):
// 16384^2 b1024 99% 0.80-0.81 ms over the chosen 416 columns (40 panels, no split), 0.86 over 352, 0.95 over 256,
// 1.03-1.04 over 384 (2 splits of 16 tiles); 4096^2 b4096 99% 0.24-0.245 over the chosen 384 (3 splits of 43 tiles),
// 0.26 over 256 and 416; 16384^2 97% 1.72-1.74 over the chosen 288, 1.80-1.83 over 256.
constexpr int kMaxPanel = 512, kMinSearchPanel = 128;
constexpr int64_t kMinSplitTiles = 32;
SddmmGrid sddmm_grid(int64_t n_in, int64_t n_blocks, int64_t n_tiles, int fit, int narrowest, double density, int sms) {
  const auto grid_of = [&](int P) {
    SddmmGrid g;
    g.P = P;
    g.n_panels = (n_in + P - 1) / P;
    g.splits = choose_splits(n_blocks * g.n_panels, n_tiles, sms);
    g.tiles_per_split = (n_tiles + g.splits - 1) / g.splits;
    g.splits = (n_tiles + g.tiles_per_split - 1) / g.tiles_per_split;
    return g;
  };
  const int cols32 = static_cast<int>(std::min<int64_t>((n_in + 31) / 32 * 32, kMaxSortedP));
  const int p_env = env_int("SPARSELAYER_SORTED_P"), cap_env = env_int("SPARSELAYER_SDDMM_SORTED_MAX_P");
  if (p_env >= 32 && p_env <= kMaxSortedP && p_env % 32 == 0) return grid_of(std::min({p_env, cols32, fit}));
  const int widest = std::min({cap_env >= 32 && cap_env % 32 == 0 ? cap_env : kMaxPanel, cols32, fit}) / 32 * 32;
  if (widest < 32) return SddmmGrid{};
  SddmmGrid best;
  double best_cost = 0.0;
  for (int cap = widest; cap >= std::max(narrowest, kMinSearchPanel); cap -= 32) {
    for (const int P : {cap, even_panel_width(n_in, cap)}) {
      if (P < std::max(narrowest, kMinSearchPanel)) continue;
      const SddmmGrid g = grid_of(P);
      const int64_t blocks = n_blocks * g.n_panels * g.splits, waves = (blocks + sms - 1) / sms;
      if (10 * blocks < 9 * waves * sms || (g.splits > 1 && g.tiles_per_split < kMinSplitTiles)) continue;
      const double cost = static_cast<double>(waves * g.tiles_per_split) * (99.0 + 35.0 * g.P * density);
      if (best.P == 0 || cost < best_cost) best = g, best_cost = cost;
    }
  }
  return best.P > 0 ? best : grid_of(even_panel_width(n_in, widest));
}

}  // namespace

bool sorted_sddmm(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& grad_y, const at::Tensor& x,
                  const at::Tensor& out) {
  const int64_t batch = x.size(0), n_in = x.size(1), n_out = crow.numel() - 1, nnz = col.numel();
  const int device = x.get_device();
  const int limit = max_smem_optin(device);
  const double density = static_cast<double>(nnz) / (static_cast<double>(n_out) * n_in);
  // 512 threads over 1024-row blocks where panels of at least 256 columns fit their sums (16 warps: 97-99%), else 256
  // threads over 512-row blocks; the panel width from sddmm_grid. Each shape is tried in turn until the densest
  // panel's sums fit. Measured on an H100 (benchmarks/kernels-notes.md, v12-v13, v21: at 97% 16 warps over 288
  // columns, 1.72-1.78 ms on 16384^2, against 8 warps over wider panels, 1.97). Tuning overrides:
  // SPARSELAYER_SDDMM_SORTED_T (256 or 512), SPARSELAYER_SDDMM_SORTED_MIN_P (the narrowest panel the 16-warp kernel
  // takes, default 256), SPARSELAYER_SDDMM_SORTED_MAX_P (the widest panel tried), SPARSELAYER_SORTED_P (the width).
  const int t_env = env_int("SPARSELAYER_SDDMM_SORTED_T"), min_p_env = env_int("SPARSELAYER_SDDMM_SORTED_MIN_P");
  const bool forced = env_int("SPARSELAYER_SDDMM_SORTED") == 1;
  SortedConfig c{};
  int threads = 0, n_panels = 0;
  int64_t n_blocks = 0, n_tiles = (batch + kBt - 1) / kBt, tiles_per_split = 0, max_slots = 0, splits = 1;
  std::vector<at::Tensor> layout;
  for (const int t : {512, 256}) {
    if (t_env != 0 && t_env != t) continue;
    SortedConfig k = choose_sorted(n_out, n_in, batch, device);
    k.R = std::min(k.R, 2 * t);
    if (t == 512 && k.R < 1024 && t_env != 512) continue;  // fewer than 32 chunks: warps of one chunk, unbalanced
    // The widest panels whose average sums, with 10% for the padding and the spread between panels, fit.
    const double per_column = 2 * kBt * 4 + 8 * 1.1 * density * k.R;
    const int fit = static_cast<int>((limit - sorted_sddmm_smem(SortedConfig{k.R, 0, 0}, t, 0)) / per_column) / 32 * 32;
    const int min_p = t == 512 ? (min_p_env > 0 ? min_p_env : 256) : 32;
    n_blocks = (n_out + k.R - 1) / k.R;
    const SddmmGrid g = sddmm_grid(n_in, n_blocks, n_tiles, fit, min_p, density, num_sms(device));
    k.P = g.P;
    if (k.P < min_p) continue;
    // Where an average panel's sums would not fit, neither will the densest's: no pack built only to be dropped.
    if (sorted_sddmm_smem(k, t, static_cast<int64_t>(density * k.R * k.P)) > limit) continue;
    n_panels = static_cast<int>(g.n_panels);
    splits = g.splits;
    tiles_per_split = g.tiles_per_split;
    // A grid that leaves most SMs idle (a matrix of a few row blocks and panels, 784 x 512 at 97%: 16 blocks with
    // the batch split 8 ways) runs 2-3x slower than the tile kernel: declined unless forced.
    if (2 * n_blocks * n_panels * splits < num_sms(device) && !forced) continue;
    layout = sorted_layout(crow, col, at::Tensor(), n_out, n_in, k);
    max_slots = layout[5].item<int64_t>();
    if (max_slots > 0 && sorted_sddmm_smem(k, t, max_slots) <= limit) {  // the densest panel's sums fit
      c = k;
      threads = t;
      break;
    }
  }
  if (threads == 0) return false;
  const int smem = sorted_sddmm_smem(c, threads, max_slots);
  TORCH_CHECK(n_panels <= 65535, "sparselayer: too many column panels");
  const FmRows dyt = feature_major_shared(grad_y, false);  // spmm_t's copy, in a layer's backward
  // The kernel's grad_y row offsets are int32: larger products go to the tile kernel.
  if (static_cast<double>(n_out) * dyt.ld >= 2147483647.0) return false;
  const FmRows xt = feature_major(x, true);
  const at::Tensor partial = splits > 1 ? at::empty({splits, nnz}, out.options()) : at::Tensor();
  const at::Tensor arrivals =
      splits > 1 ? split_arrivals("sddmm_sorted_arrivals", crow, col, n_blocks * n_panels, splits) : at::Tensor();
  const dim3 grid(static_cast<unsigned>(n_blocks), static_cast<unsigned>(n_panels), static_cast<unsigned>(splits));
  auto launch = [&](auto kernel) {
    allow_smem(reinterpret_cast<const void*>(kernel), device);
    kernel<<<grid, threads, smem, c10::cuda::getCurrentCUDAStream()>>>(
        layout[0].data_ptr<int32_t>(), reinterpret_cast<const int2*>(layout[1].data_ptr<int32_t>()),
        layout[2].data_ptr<int32_t>(), layout[3].data_ptr<int32_t>(), layout[4].data_ptr<int32_t>(),
        xt.ptr<float>(), xt.ld, dyt.ptr<float>(), static_cast<int>(dyt.ld),
        static_cast<int>(batch), static_cast<int>(n_in), n_panels, c.P, c.R, static_cast<int>(max_slots),
        static_cast<int>(tiles_per_split), nnz, out.data_ptr<float>(),
        partial.defined() ? partial.data_ptr<float>() : nullptr,
        arrivals.defined() ? arrivals.data_ptr<int32_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (threads == 512) launch(sddmm_sorted_kernel<512>);
  else launch(sddmm_sorted_kernel<256>);
  return true;
}

}  // namespace sparselayer
