// sparselayer::sddmm on CUDA: grad_values[k] = sum_b grad_y[b, row_k] * x[b, col_k] for W's nonzeros.
//
// fp32: one block owns a tile of W (R rows x P columns) and streams the whole batch through it 32 rows at
// a time: per batch tile it stages grad_y[b-tile, R rows] and x[b-tile, P columns] in shared memory (read
// from their own (batch, n) layouts), and each thread keeps running sums for kSlotsPerThread consecutive
// nonzeros of the tile (its slots), summing 32 batch values per tile from the two staged columns. A
// staged x column serves every nonzero of the tile in that column (R * density on average), a staged
// grad_y column every nonzero in that row (P * density): R and P are sized from the density so that a tile
// holds about as many nonzeros as there are slots. Lanes read the 8 chunks of a staged column starting at
// chunk (lane % 8), so an 8-lane phase never hits one bank twice, whatever columns and rows the lanes want.
// On large matrices both operands are first copied feature-major (feature_major), so a tile column is 128
// contiguous bytes and the tiles arrive by 16-byte cp.async copies instead of transposing loads (v8: the
// staging was about half the kernel's instructions). Where the matrix gives too few tiles to fill the GPU,
// the batch is split across blocks and the last block of each tile to finish adds the per-split sums in split order
// (last_of_splits: an atomic counter decides which block, never the order). Each nonzero is summed in a fixed order:
// deterministic. Measured limits (benchmarks/README.md): shared-memory
// reads (about 4 bytes per multiply-add, plus the staging writes), and tile loads that alternate with compute
// within a block (two blocks per SM at 256 threads overlap them).
// bfloat16 activations are converted to fp32 as they are staged (or copied); the sums are fp32 as always.
// fp64: one thread per nonzero, a plain loop over the batch.
// Large products go to the row-sorted kernel instead where it fits (sddmm_sorted.cu; chosen in sddmm_cuda below).
#include "common.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>

namespace sparselayer {
namespace {

constexpr int kMaxTile = 1024;  // R, P <= kMaxTile (R fits 16 bits in the packed slot)
constexpr int kFmMinStagings = 4;
constexpr int kSlotsPerThread = 8;  // (16 at 256 threads: 166 registers, one block per SM, slower)

// The row-sorted kernel (sddmm_sorted.cu) is the default on products of kSortedMinWork multiply-adds (nnz x batch)
// and more whose grid fills the GPU (it declines otherwise, and where a panel's sums do not fit). Measured on an H100
// (benchmarks/results/history/tune-v12-sddmm-staged.log, tune-v12-narrow-panels.log), ms tile -> row-sorted:
// 16384^2 b1024 8.06 -> 5.56 at 90%, 2.94 -> 2.13 at 97%, 1.25-1.32 -> 1.15-1.23 at 99%; 4096^2 b4096 2.39 -> 1.63,
// 0.97 -> 0.64, 0.50 -> 0.38; 4096^2 b512 0.177 -> 0.138 at 97%; smaller products up to 2x slower. Also on long
// rows (common.cuh, long_rows).
constexpr double kSortedMinWork = 1e8;

// T threads per block of kSlotsPerThread slots: 512 (4096 slots, one block per SM) or 256 (two blocks per SM).
// In: the activations' type (float, or bf16: converted while staged; the sums and the output stay fp32).
// A thread's slots are consecutive nonzeros of the tile (row-major), so a run of them in one row reads that
// row's grad_y column from shared memory once per batch tile and keeps it in registers: about 4 + 4 / (run
// length) bytes of shared reads per multiply-add instead of 8 (v8 gave thread t the slots m * T + t). The
// slots' columns and rows stay in registers too, so shared memory holds only the two tiles and the segments.
template <int T, typename In>
__global__ void __launch_bounds__(T, T == kThreads ? 2 : 1)
sddmm_tile_kernel(const int32_t* __restrict__ pp, const int64_t* __restrict__ col,
                  const In* __restrict__ dy, int64_t sdb, int64_t sdc, bool dvec,
                  const In* __restrict__ x, int64_t sxb, int64_t sxc, bool xvec,
                  const float* __restrict__ dyt, int64_t lddt, const float* __restrict__ xt, int64_t ldxt,
                  int batch, int n_out, int n_in, int R, int P, int rows_per_split, int64_t nnz,
                  float* __restrict__ out, float* __restrict__ partial, int* __restrict__ arrivals) {
  constexpr int kSlots = T * kSlotsPerThread;
  extern __shared__ float4 smem4[];
  float* xs = reinterpret_cast<float*>(smem4);                 // [P][32]
  float* ds = xs + P * kBt;                                    // [R][32]
  int* start = reinterpret_cast<int*>(ds + R * kBt);           // [R] segment start of each row
  int* off = start + R;                                        // [R + 1] exclusive scan of segment lengths
  int* warp_sum = off + R + 1;                                 // [T / 32]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int o0 = blockIdx.x * R, p = blockIdx.y, c0 = p * P;
  // Batch split z sums batch rows [b_begin, b_end) into its own slice of partial (reduced by the last block).
  const int b_begin = blockIdx.z * rows_per_split;
  const int b_end = min(batch, b_begin + rows_per_split);
  float* dst = partial ? partial + blockIdx.z * nnz : out;

  // Segments of the tile's rows in this panel, and their exclusive scan (<= 4 rows per thread).
  const int per = (R + T - 1) / T;
  int len[4];
  int total = 0;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int i = tid * per + q;
    len[q] = 0;
    if (q < per && i < R) {
      const int o = o0 + i;
      int s = 0, e = 0;
      if (o < n_out) {
        s = pp[static_cast<int64_t>(p) * n_out + o];
        e = pp[static_cast<int64_t>(p + 1) * n_out + o];
      }
      start[i] = s;
      len[q] = e - s;
      total += e - s;
    }
  }
  const int incl = warp_inclusive_sum(total, lane);
  if (lane == 31) warp_sum[warp] = incl;
  __syncthreads();
  if (tid == 0) {
    int run = 0;
    for (int w = 0; w < T / 32; ++w) {
      const int t = warp_sum[w];
      warp_sum[w] = run;
      run += t;
    }
    off[R] = run;
  }
  __syncthreads();
  {
    int run = warp_sum[warp] + incl - total;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int i = tid * per + q;
      if (q < per && i < R) {
        off[i] = run;
        run += len[q];
      }
    }
  }
  __syncthreads();
  const int S = off[R];

  for (int base = 0; base < S; base += kSlots) {
    const int first = base + tid * kSlotsPerThread;
    const int count = max(0, min(kSlotsPerThread, S - first));
    int rc[kSlotsPerThread];  // (column << 16) | row, tile-local
    unsigned fresh = 0;       // bit m: slot m starts a run of this thread's slots in one row
    if (count > 0) {
      int row = 0, hi = R - 1;  // the row with off[row] <= first < off[row + 1]
      while (row < hi) {
        const int mid = (row + hi + 1) >> 1;
        if (off[mid] <= first) row = mid; else hi = mid - 1;
      }
      int prev = -1;
#pragma unroll
      for (int m = 0; m < kSlotsPerThread; ++m) {
        rc[m] = 0;
        if (m < count) {
          const int s = first + m;
          while (off[row + 1] <= s) ++row;
          const int k = start[row] + (s - off[row]);
          rc[m] = ((static_cast<int>(col[k]) - c0) << 16) | row;
          if (row != prev) fresh |= 1u << m;
          prev = row;
        }
      }
    }
    float acc[kSlotsPerThread];
#pragma unroll
    for (int m = 0; m < kSlotsPerThread; ++m) acc[m] = 0.f;
    float4 d[8];  // this lane's rotated chunks of the current row's grad_y column
#pragma unroll
    for (int t = 0; t < 8; ++t) d[t] = make_float4(0.f, 0.f, 0.f, 0.f);

    for (int b0 = b_begin; b0 < b_end; b0 += kBt) {
      if (xt) {
        copy_tile_plain<T>(xs, xt, ldxt, b_end, n_in, b0, c0, P);
        copy_tile_plain<T>(ds, dyt, lddt, b_end, n_out, b0, o0, R);
        cp_async_commit();
        cp_async_wait<0>();
      } else {
        load_tile_plain<8, T>(xs, x, sxb, sxc, xvec, b_end, n_in, b0, c0, P);
        load_tile_plain<8, T>(ds, dy, sdb, sdc, dvec, b_end, n_out, b0, o0, R);
      }
      __syncthreads();
#pragma unroll
      for (int m = 0; m < kSlotsPerThread; ++m) {
        if (m < count) {
          if ((fresh >> m) & 1u) {
            const float4* dc = reinterpret_cast<const float4*>(ds + (rc[m] & 0xffff) * kBt);
#pragma unroll
            for (int t = 0; t < 8; ++t) d[t] = dc[(t + lane) & 7];
          }
          const float4* xc = reinterpret_cast<const float4*>(xs + (rc[m] >> 16) * kBt);
          float a = acc[m];
#pragma unroll
          for (int t = 0; t < 8; ++t) {
            const float4 u = xc[(t + lane) & 7];  // lanes of an 8-lane phase read 8 distinct bank quads
            a = fmaf(u.x, d[t].x, a);
            a = fmaf(u.y, d[t].y, a);
            a = fmaf(u.z, d[t].z, a);
            a = fmaf(u.w, d[t].w, a);
          }
          acc[m] = a;
        }
      }
      __syncthreads();
    }

#pragma unroll
    for (int m = 0; m < kSlotsPerThread; ++m) {
      if (m < count) {
        const int row = rc[m] & 0xffff;
        dst[start[row] + (first + m - off[row])] = acc[m];
      }
    }
  }
  if (partial && last_of_splits(arrivals + blockIdx.x * gridDim.y + blockIdx.y, warp_sum)) {
    for (int i = warp; i < R; i += T / 32) {
      const int end = start[i] + off[i + 1] - off[i];  // row i's segment: [start[i], end)
      for (int k = start[i] + lane; k < end; k += 32) out[k] = sum_of_splits(partial, nnz, k);
    }
  }
}

template <typename scalar_t>
__global__ void sddmm_simple_kernel(const int64_t* __restrict__ crow, const int64_t* __restrict__ col,
                                    const scalar_t* __restrict__ dy, int64_t sdb, int64_t sdc,
                                    const scalar_t* __restrict__ x, int64_t sxb, int64_t sxc, int64_t batch,
                                    int64_t n_out, int64_t nnz, scalar_t* __restrict__ out) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= nnz) return;
  int64_t lo = 0, hi = n_out - 1;  // the row r with crow[r] <= k < crow[r + 1]
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) >> 1;
    if (crow[mid] <= k) lo = mid; else hi = mid - 1;
  }
  const int64_t c = col[k];
  scalar_t acc = 0;
  for (int64_t b = 0; b < batch; ++b) acc += dy[b * sdb + lo * sdc] * x[b * sxb + c * sxc];
  out[k] = acc;
}

int round32(double v) { return std::max(32, static_cast<int>(v / 32.0) * 32); }

// Sizes the tile for T threads of kSlotsPerThread slots and launches the tile kernel.
template <int T, typename In>
void launch_tiles(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& grad_y, const at::Tensor& x,
                  const at::Tensor& out, int64_t nnz, int device, cudaStream_t stream) {
  // Tile of about 3/4 kSlots nonzeros on average; square where the matrix allows.
  constexpr int kSlots = T * kSlotsPerThread;
  const double density = static_cast<double>(nnz) / (static_cast<double>(crow.numel() - 1) * x.size(1));
  const double area = 0.75 * kSlots / density;
  const int rows32 = static_cast<int>(std::min<int64_t>((crow.numel() - 1 + 31) / 32 * 32, kMaxTile));
  const int cols32 = static_cast<int>(std::min<int64_t>((x.size(1) + 31) / 32 * 32, kMaxTile));
  int R = std::min(rows32, round32(std::sqrt(area)));
  int P = std::min(cols32, round32(area / R));
  R = std::min(rows32, round32(area / P));  // grow R again if P was capped by n_in
  const int p_env = env_int("SPARSELAYER_SDDMM_P");  // tuning override: the tile's columns (R follows)
  if (p_env >= 32) {
    P = std::min(cols32, p_env / 32 * 32);
    R = std::min(rows32, round32(area / P));
  }
  const int fixed = 8 * T / 32 + 16;
  auto smem_of = [&](int r, int p) { return (r + p) * kBt * 4 + 8 * r + 4 + fixed; };
  const int limit = max_smem_optin(device);
  while (smem_of(R, P) > limit) {
    if (R >= P) R -= 32; else P -= 32;
  }
  const int smem = smem_of(R, P);
  const int64_t batch = x.size(0), n_out = crow.numel() - 1, n_in = x.size(1);
  // Panel pointers depend on the index only: cached per topology (cache.cu).
  const at::Tensor pp = cached_layout("sddmm_pp", {crow, col}, {n_out, n_in, P, 0}, [&]() {
    return std::vector<at::Tensor>{panel_pointers(crow, col, n_out, n_in, P)};
  })[0];
  allow_smem(reinterpret_cast<const void*>(sddmm_tile_kernel<T, In>), device);
  const int64_t tiles_r = (n_out + R - 1) / R, tiles_c = (n_in + P - 1) / P;
  // Stage the tiles from feature-major copies of x and grad_y (16-byte cp.async copies, no transposing loads)
  // where each operand is staged at least kFmMinStagings times, so that the two copies pay for themselves
  // (SPARSELAYER_SDDMM_FM: 1 always, 2 never). Measured on an H100 (benchmarks/kernels-notes.md, v8): faster on
  // every 4096^2 and 16384^2 case, 1.46 vs 2.38 ms at 16384^2 b1024 99%, 0.54 vs 0.72 at 4096^2 b4096.
  const int fm_env = env_int("SPARSELAYER_SDDMM_FM");
  const bool fm = fm_env == 1 || (fm_env != 2 && tiles_r >= kFmMinStagings && tiles_c >= kFmMinStagings);
  const FmRows xt = feature_major(x, fm), dyt = fm ? feature_major_shared(grad_y, false) : FmRows{};
  TORCH_CHECK(tiles_c <= 65535, "sparselayer: too many column panels");
  // Small matrices with a long batch: split the batch so that every SM gets work, and sum the splits after.
  const int64_t batch_tiles = (batch + kBt - 1) / kBt;
  const int64_t want = 2 * static_cast<int64_t>(num_sms(device));
  int64_t splits = std::min<int64_t>({batch_tiles, (want + tiles_r * tiles_c - 1) / (tiles_r * tiles_c), 65535});
  const int64_t tiles_per_split = (batch_tiles + splits - 1) / splits;
  splits = (batch_tiles + tiles_per_split - 1) / tiles_per_split;
  const at::Tensor partial = splits > 1 ? at::empty({splits, nnz}, out.options()) : at::Tensor();
  const at::Tensor arrivals = splits > 1 ? split_arrivals("sddmm_tile_arrivals", crow, col, tiles_r * tiles_c, splits)
                                         : at::Tensor();
  const dim3 grid(static_cast<unsigned>(tiles_r), static_cast<unsigned>(tiles_c), static_cast<unsigned>(splits));
  sddmm_tile_kernel<T, In><<<grid, T, smem, stream>>>(
      pp.data_ptr<int32_t>(), col.data_ptr<int64_t>(), reinterpret_cast<const In*>(grad_y.const_data_ptr()),
      grad_y.stride(0), grad_y.stride(1), can_vectorise(grad_y), reinterpret_cast<const In*>(x.const_data_ptr()),
      x.stride(0), x.stride(1), can_vectorise(x), dyt.ptr<float>(), dyt.ld, xt.ptr<float>(), xt.ld,
      static_cast<int>(batch), static_cast<int>(n_out), static_cast<int>(n_in), R, P,
      static_cast<int>(tiles_per_split * kBt), nnz, out.data_ptr<float>(),
      partial.defined() ? partial.data_ptr<float>() : nullptr,
      arrivals.defined() ? arrivals.data_ptr<int32_t>() : nullptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

at::Tensor split_arrivals(const char* kind, const at::Tensor& crow, const at::Tensor& col, int64_t groups,
                          int64_t splits) {
  return cached_layout(kind, {crow, col}, {groups, splits, 0, 0}, [&]() {
    return std::vector<at::Tensor>{at::zeros({groups}, crow.options().dtype(at::kInt))};
  })[0];
}

at::Tensor sddmm_cuda(const at::Tensor& crow_in, const at::Tensor& col_in, const at::Tensor& grad_y,
                      const at::Tensor& x) {
  check_index(crow_in, "crow");
  check_index(col_in, "col");
  check_dense(grad_y, "grad_y", crow_in);
  check_dense(x, "x", crow_in);
  TORCH_CHECK(grad_y.scalar_type() == x.scalar_type(), "sparselayer: grad_y is ", grad_y.scalar_type(),
              " but x is ", x.scalar_type());
  TORCH_CHECK(grad_y.dim() == 2 && x.dim() == 2, "sparselayer: grad_y and x must be 2-D (batch, n)");
  TORCH_CHECK(grad_y.size(0) == x.size(0), "sparselayer: grad_y has batch ", grad_y.size(0), " but x has ",
              x.size(0));
  const int64_t n_out = crow_in.numel() - 1, n_in = x.size(1), batch = x.size(0), nnz = col_in.numel();
  TORCH_CHECK(grad_y.size(1) == n_out, "sparselayer: grad_y has ", grad_y.size(1), " columns but crow describes ",
              n_out, " rows");
  const c10::cuda::CUDAGuard guard(x.device());
  // bfloat16 activations give the float32 gradient of float32 values.
  const bool bf16_act = x.scalar_type() == at::kBFloat16;
  auto out = at::empty({nnz}, x.options().dtype(bf16_act ? at::kFloat : x.scalar_type()));
  if (nnz == 0) return out;
  if (batch == 0) return out.zero_();
  TORCH_CHECK(nnz < (int64_t{1} << 31) && batch < (int64_t{1} << 31) && n_in < (int64_t{1} << 31),
              "sparselayer: dimensions must be below 2^31");
  const auto crow = crow_in.contiguous(), col = col_in.contiguous();
  const int device = x.get_device();
  auto stream = c10::cuda::getCurrentCUDAStream();

  if (x.scalar_type() == at::kDouble) {
    sddmm_simple_kernel<double><<<static_cast<unsigned>((nnz + 127) / 128), 128, 0, stream>>>(
        crow.data_ptr<int64_t>(), col.data_ptr<int64_t>(), grad_y.data_ptr<double>(), grad_y.stride(0),
        grad_y.stride(1), x.data_ptr<double>(), x.stride(0), x.stride(1), batch, n_out, nnz, out.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
  }

  // 512 threads (16 warps, one block per SM) below 5% density on matrices under 2^26 entries, else 256 (two blocks
  // per SM, so one block's tile loads overlap the other's multiply-adds), 8 slots per thread either way. Measured
  // on an H100 (benchmarks/results/history/tune-v10-sddmm.log), ms 512 -> 256 threads: 16384^2 b1024 99% 1.47 ->
  // 1.29, 97% 3.11 -> 3.08, 90% 10.4 -> 8.29; 4096^2 b4096 99% 0.50 -> 0.53, 97% 0.97 -> 1.14.
  // Tuning overrides (benchmarks/tune.py): SPARSELAYER_SDDMM_T 256 or 512, SPARSELAYER_SDDMM_P (tile columns).
  const double density = static_cast<double>(nnz) / (static_cast<double>(n_out) * n_in);
  const int t_env = env_int("SPARSELAYER_SDDMM_T");
  const bool wide = t_env == 512 ||
                    (t_env != 256 && density < 0.05 && static_cast<double>(n_out) * n_in < static_cast<double>(1 << 26));
  auto launch = [&](auto in) {
    using In = decltype(in);
    if (wide) launch_tiles<2 * kThreads, In>(crow, col, grad_y, x, out, nnz, device, stream);
    else launch_tiles<kThreads, In>(crow, col, grad_y, x, out, nnz, device, stream);
  };
  const bool sorted_default =
      static_cast<double>(nnz) * static_cast<double>(batch) >= kSortedMinWork || long_rows(nnz, n_out, batch);
  if (!(sorted_kernel_applies("SPARSELAYER_SDDMM_SORTED", sorted_default, batch) &&
        sorted_sddmm(crow, col, grad_y, x, out))) {
    if (bf16_act) launch(bf16{});
    else launch(float{});
  }
  return out;
}

}  // namespace sparselayer
