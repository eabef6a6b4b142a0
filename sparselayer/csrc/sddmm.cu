// sparselayer::sddmm on CUDA: grad_values[k] = sum_b grad_y[b, row_k] * x[b, col_k] for W's nonzeros.
//
// fp32: one block owns a tile of W (R rows x P columns) and streams the whole batch through it 32 rows at
// a time: per batch tile it stages grad_y[b-tile, R rows] and x[b-tile, P columns] in shared memory (read
// from their own (batch, n) layouts), and each thread keeps running sums for up to kSlots nonzeros of the
// tile, one nonzero per thread and slot, summing 32 batch values per tile from the two staged columns. A
// staged x column serves every nonzero of the tile in that column (R * density on average), a staged
// grad_y column every nonzero in that row (P * density): R and P are sized from the density so that a tile
// holds about as many nonzeros as there are slots. Lanes read the 8 chunks of a staged column starting at
// chunk (lane % 8), so an 8-lane phase never hits one bank twice, whatever columns and rows the lanes want.
// On large matrices both operands are first copied feature-major (feature_major), so a tile column is 128
// contiguous bytes and the tiles arrive by 16-byte cp.async copies instead of transposing loads (v8: the
// staging was about half the kernel's instructions). Where the matrix gives too few tiles to fill the GPU,
// the batch is split across blocks and the per-split
// sums are added afterwards in split order. Each nonzero is summed in a fixed order: deterministic, no
// atomics. Measured limits (benchmarks/README.md): shared-memory reads (8 bytes per multiply-add) and one
// block per SM, so tile loads and compute alternate.
// bfloat16 activations are converted to fp32 as they are staged (or copied); the sums are fp32 as always.
// fp64: one thread per nonzero, a plain loop over the batch.
#include "common.cuh"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>

namespace sparselayer {
namespace {

constexpr int kMaxTile = 1024;  // R, P <= kMaxTile (R fits 16 bits in the packed slot)
constexpr int kFmMinStagings = 4;

// T threads per block: 512 threads with 8 slots each hold the same 4096 slots as 256 with 16, at twice the warps.
// In: the activations' type (float, or bf16: converted while staged; the sums and the output stay fp32).
template <int kSlotsPerThread, int T, typename In>
__global__ void __launch_bounds__(T, kSlotsPerThread <= 8 && T == kThreads ? 2 : 1)
sddmm_tile_kernel(const int32_t* __restrict__ pp, const int64_t* __restrict__ col,
                  const In* __restrict__ dy, int64_t sdb, int64_t sdc, bool dvec,
                  const In* __restrict__ x, int64_t sxb, int64_t sxc, bool xvec,
                  const float* __restrict__ dyt, int64_t lddt, const float* __restrict__ xt, int64_t ldxt,
                  int batch, int n_out, int n_in, int R, int P, int rows_per_split, int64_t nnz,
                  float* __restrict__ out) {
  constexpr int kSlots = T * kSlotsPerThread;
  extern __shared__ float4 smem4[];
  float* xs = reinterpret_cast<float*>(smem4);                 // [P][32]
  float* ds = xs + P * kBt;                                    // [R][32]
  int* slot_k = reinterpret_cast<int*>(ds + R * kBt);          // [kSlots] nonzero position
  int* slot_rc = slot_k + kSlots;                              // [kSlots] (column << 16) | row, tile-local
  int* start = slot_rc + kSlots;                               // [R] segment start of each row
  int* off = start + R;                                        // [R + 1] exclusive scan of segment lengths
  int* warp_sum = off + R + 1;                                 // [T / 32]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int o0 = blockIdx.x * R, p = blockIdx.y, c0 = p * P;
  // Batch split z sums batch rows [b_begin, b_end) into its own slice of out (reduced afterwards).
  const int b_begin = blockIdx.z * rows_per_split;
  const int b_end = min(batch, b_begin + rows_per_split);
  out += blockIdx.z * nnz;

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
  int incl = total;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, incl, d);
    if (lane >= d) incl += n;
  }
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
    for (int q = tid; q < kSlots; q += T) {
      const int s = base + q;
      if (s < S) {
        int lo = 0, hi = R - 1;  // the row r with off[r] <= s < off[r + 1]
        while (lo < hi) {
          const int mid = (lo + hi + 1) >> 1;
          if (off[mid] <= s) lo = mid; else hi = mid - 1;
        }
        const int k = start[lo] + (s - off[lo]);
        slot_k[q] = k;
        slot_rc[q] = ((static_cast<int>(col[k]) - c0) << 16) | lo;
      }
    }
    float acc[kSlotsPerThread];
#pragma unroll
    for (int m = 0; m < kSlotsPerThread; ++m) acc[m] = 0.f;
    __syncthreads();

    for (int b0 = b_begin; b0 < b_end; b0 += kBt) {
      if (xt) {  // feature-major copies: 16-byte copies, no transpose
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
        const int q = m * T + tid;
        if (base + q < S) {
          const int rc = slot_rc[q];
          const float4* xc = reinterpret_cast<const float4*>(xs + (rc >> 16) * kBt);
          const float4* dc = reinterpret_cast<const float4*>(ds + (rc & 0xffff) * kBt);
          float a = acc[m];
#pragma unroll
          for (int t = 0; t < 8; ++t) {
            const int ch = (t + lane) & 7;  // lanes of an 8-lane phase read 8 distinct bank quads
            const float4 u = xc[ch], w = dc[ch];
            a = fmaf(u.x, w.x, a);
            a = fmaf(u.y, w.y, a);
            a = fmaf(u.z, w.z, a);
            a = fmaf(u.w, w.w, a);
          }
          acc[m] = a;
        }
      }
      __syncthreads();
    }

#pragma unroll
    for (int m = 0; m < kSlotsPerThread; ++m) {
      const int q = m * T + tid;
      if (base + q < S) out[slot_k[q]] = acc[m];
    }
    __syncthreads();  // the slot arrays are rewritten by the next pass
  }
}

// out[k] = sum over splits z (in order) of partial[z, k]: a deterministic second stage.
__global__ void sum_splits_kernel(const float* __restrict__ partial, int n_splits, int64_t nnz,
                                  float* __restrict__ out) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= nnz) return;
  float acc = 0.f;
  for (int z = 0; z < n_splits; ++z) acc += partial[z * nnz + k];
  out[k] = acc;
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

// Sizes the tile for S slots per thread, launches the tile kernel; target receives the per-split sums.
template <int S, int T, typename In>
void launch_tiles(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& grad_y, const at::Tensor& x,
                  const at::Tensor& out, int64_t nnz, int device, cudaStream_t stream, int64_t& splits_out,
                  at::Tensor& target) {
  // Tile of about 3/4 kSlots nonzeros on average; square where the matrix allows.
  constexpr int kSlots = T * S;
  const double density = static_cast<double>(nnz) / (static_cast<double>(crow.numel() - 1) * x.size(1));
  const double area = 0.75 * kSlots / density;
  const int rows32 = static_cast<int>(std::min<int64_t>((crow.numel() - 1 + 31) / 32 * 32, kMaxTile));
  const int cols32 = static_cast<int>(std::min<int64_t>((x.size(1) + 31) / 32 * 32, kMaxTile));
  int R = std::min(rows32, round32(std::sqrt(area)));
  int P = std::min(cols32, round32(area / R));
  R = std::min(rows32, round32(area / P));  // grow R again if P was capped by n_in
  const int fixed = 2 * kSlots * 4 + 8 * T / 32 + 16;
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
  allow_smem(reinterpret_cast<const void*>(sddmm_tile_kernel<S, T, In>), device);
  const int64_t tiles_r = (n_out + R - 1) / R, tiles_c = (n_in + P - 1) / P;
  // Stage the tiles from feature-major copies of x and grad_y (16-byte cp.async copies, no transposing loads)
  // where each operand is staged at least kFmMinStagings times, so that the two copies pay for themselves
  // (SPARSELAYER_SDDMM_FM: 1 always, 2 never). Measured on an H100 (benchmarks/kernels-notes.md, v8): faster on
  // every 4096^2 and 16384^2 case, 1.46 vs 2.38 ms at 16384^2 b1024 99%, 0.54 vs 0.72 at 4096^2 b4096.
  const int fm_env = env_int("SPARSELAYER_SDDMM_FM");
  const bool fm = fm_env == 1 || (fm_env != 2 && tiles_r >= kFmMinStagings && tiles_c >= kFmMinStagings);
  const at::Tensor xt = feature_major(x, fm), dyt = feature_major(grad_y, fm);
  TORCH_CHECK(tiles_c <= 65535, "sparselayer: too many column panels");
  // Small matrices with a long batch: split the batch so that every SM gets work, and sum the splits after.
  const int64_t batch_tiles = (batch + kBt - 1) / kBt;
  const int64_t want = 2 * static_cast<int64_t>(num_sms(device));
  int64_t splits = std::min<int64_t>({batch_tiles, (want + tiles_r * tiles_c - 1) / (tiles_r * tiles_c), 65535});
  const int64_t tiles_per_split = (batch_tiles + splits - 1) / splits;
  splits = (batch_tiles + tiles_per_split - 1) / tiles_per_split;
  target = splits > 1 ? at::empty({splits, nnz}, out.options()) : out;
  splits_out = splits;
  const dim3 grid(static_cast<unsigned>(tiles_r), static_cast<unsigned>(tiles_c), static_cast<unsigned>(splits));
  sddmm_tile_kernel<S, T, In><<<grid, T, smem, stream>>>(
      pp.data_ptr<int32_t>(), col.data_ptr<int64_t>(), reinterpret_cast<const In*>(grad_y.const_data_ptr()),
      grad_y.stride(0), grad_y.stride(1), can_vectorise(grad_y), reinterpret_cast<const In*>(x.const_data_ptr()),
      x.stride(0), x.stride(1), can_vectorise(x), dyt.defined() ? dyt.data_ptr<float>() : nullptr,
      dyt.defined() ? dyt.stride(0) : 0, xt.defined() ? xt.data_ptr<float>() : nullptr,
      xt.defined() ? xt.stride(0) : 0,
      static_cast<int>(batch), static_cast<int>(n_out), static_cast<int>(n_in), R, P,
      static_cast<int>(tiles_per_split * kBt), nnz, target.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

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

  int64_t splits_out = 1;
  at::Tensor target;
  // Below 5% density 512 threads with 8 slots each (same tile, twice the warps), measured on an H100
  // (benchmarks/results/history/tune-v7c.log): 16384^2 b1024 2.54 -> 2.44 ms at 99%, 5.39 -> 4.90 at 97%; slower
  // at 90% (11.5 -> 13.7). Tuning overrides (benchmarks/tune.py): SPARSELAYER_SDDMM_SLOTS 8 or 16 (256 threads),
  // SPARSELAYER_SDDMM_T 256 or 512.
  const double density = static_cast<double>(nnz) / (static_cast<double>(n_out) * n_in);
  const int slots_per_thread = env_int("SPARSELAYER_SDDMM_SLOTS") == 8 ? 8 : 16;
  const int t_env = env_int("SPARSELAYER_SDDMM_T");
  const bool wide = t_env == 512 || (t_env != 256 && env_int("SPARSELAYER_SDDMM_SLOTS") == 0 && density < 0.05);
  auto launch = [&](auto in) {
    using In = decltype(in);
    if (wide) launch_tiles<8, 2 * kThreads, In>(crow, col, grad_y, x, out, nnz, device, stream, splits_out, target);
    else if (slots_per_thread == 8)
      launch_tiles<8, kThreads, In>(crow, col, grad_y, x, out, nnz, device, stream, splits_out, target);
    else launch_tiles<16, kThreads, In>(crow, col, grad_y, x, out, nnz, device, stream, splits_out, target);
  };
  if (bf16_act) launch(bf16{});
  else launch(float{});
  const int64_t splits = splits_out;
  if (splits > 1) {
    sum_splits_kernel<<<static_cast<unsigned>((nnz + 255) / 256), 256, 0, stream>>>(
        target.data_ptr<float>(), static_cast<int>(splits), nnz, out.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return out;
}

}  // namespace sparselayer
