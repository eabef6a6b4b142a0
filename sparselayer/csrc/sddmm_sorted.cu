// sparselayer::sddmm on CUDA for large products: the row-sorted kernel.
//
// Why another kernel: the tile kernel (sddmm.cu) keeps each nonzero's running sum in a register, so a block holds
// about 1500 nonzeros and its tiles are small (224 x 224 at 97%, 384 x 384 at 99%); every staged column of x and of
// grad_y then serves only 4-7 nonzeros, and staging both operands (from L2 through shared memory, every batch tile)
// is most of its time at 97%. Here the running sums live in shared memory, so a block takes a whole (row block,
// panel) of a row-sorted pack (sorted.cuh): each staged x column serves R * density nonzeros, and each lane reads its
// row's 32 grad_y values of the batch tile once into registers for all of the row's entries in the panel.
//
// Block: one (row block, panel) x a range of batch tiles; T threads = W warps, W = 16 over 1024-row blocks and
// 256-column panels where the panel's sums fit beside the rest (about 99%), else W = 8 over 512-row blocks and
// panels of up to 384 columns (on an H100), narrower where the sums need the room. Shared memory: two x tiles
// [P][32] (16-byte cp.async from the feature-major copy of x, the next batch tile's while the current one is
// multiplied), each warp's grad_y stages [2][32][32] (4 KB per chunk), the panel's column offsets [S] and running sums [S] (S = its padded slots, at most
// the pack's max_bp). Warp w owns chunks w and 2 W - 1 - w (chunks come longest first, so every warp gets one long
// and one short) for every batch tile. A lane reads its row of a chunk from the stage, and the warp then copies the
// next tile's rows into that stage (coalesced: 4 whole 128-byte lines per instruction), which have the rest of the
// tile to arrive. Per entry and batch tile: the column offset and the running sum from shared memory, 8 lane-rotated
// float4 reads of the x column (conflict-free, as in spmm_sorted.cu), 32 multiply-adds in 4 chains. Each sum adds its
// batch tiles in order, and batch splits (where the grid is short of blocks) are added in split order by the group's
// last block to finish (last_of_splits): deterministic. The pack ranks rows of equal length in row order, so a row
// always has the same lane, whose rotated chunk order sets the rounding of each of its sums.
//
// Measured on an H100 (benchmarks/kernels-notes.md, v12), 16384^2 b1024: 1.04 ms at 99% (256 threads: 1.18, the tile
// kernel 1.26), 2.13 at 97% (tile 2.94); 4096^2 b4096 0.38 and 0.66 (tile 0.50 and 0.97). A first version had each
// lane load its own grad_y row into registers (one load instruction touching 32 cache lines): 25% slower than the
// tile kernel at 99%, its L1 busier with those loads than with the x reads. sddmm.cu picks this kernel on products
// of 1e8 multiply-adds and more, with panels narrowed until a panel's sums fit (224 columns at 90%); it declines
// (returns false) where the densest panel's sums fit neither block shape.
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
  extern __shared__ float4 smem4[];
  float* xbuf = reinterpret_cast<float*>(smem4);          // 2 x [P][32]
  float* stages = xbuf + 2 * P * kBt;                      // [W][K][32][32]
  float* sums = stages + W * K * kChunk * kBt;             // [max_slots]
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
  float* stage = stages + warp * K * kChunk * kBt;

  copy_tile<T>(xbuf, xt, ldx, batch, n_in, t_begin * kBt, p * P, P);
  int L[K], first[K], len[K];
  int rows[K][8];  // [r][i]: the grad_y row offset this lane copies into chunk r's stage row 4 i + lane / 8
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
    if (L[r] > 0) stage_rows(stage + r * kChunk * kBt, rows[r], dyt, t_begin * kBt, batch, lane);
  }
  cp_async_commit();
  for (int i = tid; i < S; i += T) {
    sums[i] = 0.f;
    offs[i] = __ldg(off + base + i);
  }
  int rot[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) rot[k] = ((k + lane) & 7) * 16;

  for (int t = t_begin; t < t_end; ++t) {
    cp_async_wait<0>();
    __syncthreads();  // tile t and the stages are in (and the block's arrays); every warp is done with tile t - 1
    if (t + 1 < t_end) copy_tile<T>(xbuf + ((t + 1 - t_begin) & 1) * P * kBt, xt, ldx, batch, n_in, (t + 1) * kBt,
                                    p * P, P);
    const char* xs = reinterpret_cast<const char*>(xbuf + ((t - t_begin) & 1) * P * kBt);
#pragma unroll
    for (int r = 0; r < K; ++r) {
      if (L[r] > 0) {  // warp-uniform
        float* rs = stage + r * kChunk * kBt;
        float4 d[8];  // the lane's grad_y row, batch chunk (k + lane) mod 8 in d[k]
#pragma unroll
        for (int k = 0; k < 8; ++k)
          d[k] = *reinterpret_cast<const float4*>(reinterpret_cast<const char*>(rs + lane * kBt) + rot[k]);
        __syncwarp();  // the warp's reads of this stage come before the copies of the next tile into it, which then
                       // have the rest of this tile to arrive
        if (t + 1 < t_end) stage_rows(rs, rows[r], dyt, (t + 1) * kBt, batch, lane);
        multiply_rows(d, rot, xs, offs, sums, first[r], L[r]);
      }
    }
    cp_async_commit();
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

// x tiles, grad_y stages, sums and column offsets of a T-thread block.
int sorted_sddmm_smem(const SortedConfig& c, int threads, int64_t max_slots) {
  return static_cast<int>(2 * c.P * kBt * 4 + threads / 32 * kChunksPerWarp * kChunk * kBt * 4 + 8 * max_slots);
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

}  // namespace

bool sorted_sddmm(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& grad_y, const at::Tensor& x,
                  const at::Tensor& out) {
  const int64_t batch = x.size(0), n_in = x.size(1), n_out = crow.numel() - 1, nnz = col.numel();
  const int device = x.get_device();
  const int limit = max_smem_optin(device);
  const double density = static_cast<double>(nnz) / (static_cast<double>(n_out) * n_in);
  // 512 threads over 1024-row blocks and 256-column panels (16 warps; where their sums fit: about 99%), else 256
  // threads over 512-row blocks and the widest panels, up to 384 columns on an H100, whose sums fit (384 up to about
  // 97%, 224 at 90%). Each shape is tried in turn until the densest panel's sums fit. Measured on an H100
  // (benchmarks/kernels-notes.md, v12; v13: 16 warps over panels narrowed to 192 columns at 97% were slower than 8
  // warps over 384, 16384^2 2.15 vs 2.05 ms). Tuning overrides: SPARSELAYER_SDDMM_SORTED_T (256 or 512),
  // SPARSELAYER_SDDMM_SORTED_MIN_P (the narrowest panel the 16-warp kernel takes, default 256).
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
    k.P = std::min(k.P, t == 512 ? std::min(256, fit) : fit);
    if (k.P < min_p) continue;
    // Where an average panel's sums would not fit, neither will the densest's: no pack built only to be dropped.
    if (sorted_sddmm_smem(k, t, static_cast<int64_t>(density * k.R * k.P)) > limit) continue;
    n_panels = static_cast<int>((n_in + k.P - 1) / k.P);
    n_blocks = (n_out + k.R - 1) / k.R;
    splits = choose_splits(n_blocks * n_panels, n_tiles, num_sms(device));
    tiles_per_split = (n_tiles + splits - 1) / splits;
    splits = (n_tiles + tiles_per_split - 1) / tiles_per_split;
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
