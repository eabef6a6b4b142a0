// sparselayer::spmm on CUDA: y = x @ W^T, x (batch, n_in) -> y (batch, n_out), W in CSR.
//
// fp32: one block owns R = 32 * J output rows and NB tiles of 32 batch rows, and walks the input columns in
// panels of P. Per panel it stages x[b-tiles, panel] in shared memory (read straight from x's own layout,
// coalesced along the columns) together with the block's nonzeros of that panel, then each 8-lane group
// multiplies its J rows' nonzeros with the staged columns: lane l holds batch values 4l..4l+3 of each batch
// tile, one float4 shared-memory read per nonzero and tile. Staging x pays when the block's rows reuse a
// column, R * density times on average, so R grows to 512 (the accumulators, 4 J NB registers per thread,
// bound it). The nonzeros are first packed per call (pack_panels_kernel) in (row block, panel, row) order
// as (swizzled column offset, value) pairs, so a block stages a panel's nonzeros with one coalesced copy
// instead of chasing each row's segment through global memory (a chain of dependent loads that made the
// first version latency-bound). The same pass gathers the values through perm for spmm_t.
// fp64: one thread per output element; simple and exact, for gradcheck and references.
#include "common.cuh"

#include <ATen/ops/empty.h>

namespace sparselayer {
namespace {

// Packs the nonzeros of row block b, panel p at packed[q[(b * n_panels + p) * R + i] ...] for its rows i,
// as (offset of the column in the swizzled x tile for lane 0, value bits). Block b's nonzeros stay within its own CSR range [ptr[o0], ptr[o0 + R]),
// panel after panel: the rows' nonzeros before panel p number sum_r (pp[p][r] - ptr[r]).
__global__ void __launch_bounds__(kThreads)
pack_panels_kernel(const int32_t* __restrict__ pp, const int64_t* __restrict__ ptr, const int64_t* __restrict__ idx,
                   const float* __restrict__ vals, const int64_t* __restrict__ perm, int n_rows, int n_panels,
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
        const float v = perm ? vals[perm[k]] : vals[k];
        const int c = static_cast<int>(idx[k]) - c0;  // column within the panel -> its swizzled tile offset
        packed[dest + t] = make_int2(c * kBt + (((c >> 2) & 7) << 2), __float_as_int(v));
      }
      dest += len[u];
    }
  }
  if (b == gridDim.x - 1 && p == gridDim.y - 1 && tid == 0)
    q[static_cast<int64_t>(gridDim.x) * n_panels * R] = static_cast<int32_t>(ptr[n_rows]);
}

// Blocks per SM the register budget is shaped for: 64 accumulator registers per thread at J * NB = 16.
template <int J, int NB>
constexpr int min_blocks() { return J * NB >= 16 ? 2 : 3; }

// NB batch sub-tiles of 32 per block: lane l of a row group holds batch values 4l..4l+3 of each sub-tile,
// so one staged nonzero feeds 4 NB multiply-adds (NB = 2 halves the instructions per multiply-add).
template <int J, int NB>
__global__ void __launch_bounds__(kThreads, (min_blocks<J, NB>()))
spmm_panel_kernel(const int32_t* __restrict__ q, const int2* __restrict__ packed, const float* __restrict__ x,
                  int64_t sxb, int64_t sxc, bool vec, int batch, int n_cols, int n_rows, int n_panels, int P,
                  int cap, float* __restrict__ y) {
  constexpr int G = kThreads / kLanes;  // row groups per block
  constexpr int R = G * J;              // rows per block
  extern __shared__ float4 smem4[];
  float* xs = reinterpret_cast<float*>(smem4);              // NB x [P][32] swizzled
  int2* sw = reinterpret_cast<int2*>(xs + NB * P * kBt);    // [cap] staged nonzeros of the panel
  int* seg = reinterpret_cast<int*>(sw + cap);              // [R + 1] row segments, relative to the chunk
  const int tid = threadIdx.x, g = tid / kLanes, l = tid % kLanes;
  const int b0 = blockIdx.y * kBt * NB;
  const int lane_bits = l << 2;  // swizzled_chunk(c, l) == packed column offset ^ (l << 2)
  const int sub = P * kBt;       // floats per sub-tile

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
    for (int t0 = tid; t0 < staged; t0 += 4 * kThreads) {
      int2 w[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int t = t0 + u * kThreads;
        if (t < staged) w[u] = __ldg(packed + cb + t);
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int t = t0 + u * kThreads;
        if (t < staged) sw[t] = w[u];
      }
    }
    for (int i = tid; i <= R; i += kThreads) seg[i] = __ldg(qp + i) - cb;
#pragma unroll
    for (int h = 0; h < NB; ++h)
      load_tile_swizzled<4>(xs + h * sub, x, sxb, sxc, vec, batch, n_cols, b0 + h * kBt, c0, P);
    __syncthreads();
    if (n <= cap) {  // block-uniform: every nonzero of the panel is staged
#pragma unroll
      for (int j = 0; j < J; ++j) {
        const int r = j * G + g;
        const int s = seg[r], e = seg[r + 1];
#pragma unroll 4
        for (int k = s; k < e; ++k) {
          const int2 w = sw[k];
          const float v = __int_as_float(w.y);
          const float* xc = xs + (w.x ^ lane_bits);
#pragma unroll
          for (int h = 0; h < NB; ++h) fma4(acc[j][h], v, *reinterpret_cast<const float4*>(xc + h * sub));
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < J; ++j) {
        const int r = j * G + g;
        const int s = seg[r], e = seg[r + 1];
        for (int k = s; k < e; ++k) {
          const int2 w = k < cap ? sw[k] : __ldg(packed + cb + k);
          const float v = __int_as_float(w.y);
          const float* xc = xs + (w.x ^ lane_bits);
#pragma unroll
          for (int h = 0; h < NB; ++h) fma4(acc[j][h], v, *reinterpret_cast<const float4*>(xc + h * sub));
        }
      }
    }
    __syncthreads();
  }

  const int o0 = blockIdx.x * R;
#pragma unroll
  for (int j = 0; j < J; ++j) {
    const int o = o0 + j * G + g;
    if (o >= n_rows) continue;
#pragma unroll
    for (int h = 0; h < NB; ++h) {
      const int b = b0 + h * kBt + 4 * l;
      float* out = y + static_cast<int64_t>(b) * n_rows + o;
      if (b < batch) out[0] = acc[j][h].x;
      if (b + 1 < batch) out[n_rows] = acc[j][h].y;
      if (b + 2 < batch) out[2 * static_cast<int64_t>(n_rows)] = acc[j][h].z;
      if (b + 3 < batch) out[3 * static_cast<int64_t>(n_rows)] = acc[j][h].w;
    }
  }
}

template <typename scalar_t>
__global__ void spmm_simple_kernel(const int64_t* __restrict__ ptr, const int64_t* __restrict__ idx,
                                   const scalar_t* __restrict__ val, const scalar_t* __restrict__ x, int64_t sxb,
                                   int64_t sxc, int64_t batch, int64_t n_rows, scalar_t* __restrict__ y) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= n_rows) return;
  const int64_t s = ptr[o], e = ptr[o + 1];
  for (int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
    scalar_t acc = 0;
    for (int64_t k = s; k < e; ++k) acc += val[k] * x[b * sxb + idx[k] * sxc];
    y[b * n_rows + o] = acc;
  }
}

template <int J, int NB>
void launch_panel(const at::Tensor& q, const at::Tensor& packed, const at::Tensor& x, bool vec, int64_t n_rows,
                  int n_panels, int P, int cap, int smem, at::Tensor& y) {
  constexpr int R = (kThreads / kLanes) * J;
  C10_CUDA_CHECK(
      cudaFuncSetAttribute(spmm_panel_kernel<J, NB>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const int64_t batch = x.size(0);
  const dim3 grid(static_cast<unsigned>((n_rows + R - 1) / R),
                  static_cast<unsigned>((batch + kBt * NB - 1) / (kBt * NB)));
  spmm_panel_kernel<J, NB><<<grid, kThreads, smem, c10::cuda::getCurrentCUDAStream()>>>(
      q.data_ptr<int32_t>(), reinterpret_cast<const int2*>(packed.data_ptr<int32_t>()), x.data_ptr<float>(),
      x.stride(0), x.stride(1), vec, static_cast<int>(batch), static_cast<int>(x.size(1)), static_cast<int>(n_rows),
      n_panels, P, cap, y.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Shared memory of a panel block: NB x tiles, `cap` staged nonzeros, R + 1 segment bounds.
int panel_smem(int P, int cap, int R, int NB) { return NB * P * kBt * 4 + cap * 8 + (R + 1) * 4; }

}  // namespace

at::Tensor csr_times_dense(const at::Tensor& ptr_in, const at::Tensor& idx_in, const at::Tensor& vals_in,
                           const at::Tensor& perm_in, const at::Tensor& x, int64_t n_out) {
  TORCH_CHECK(x.dim() == 2, "sparselayer: the dense operand must be 2-D (batch, n), got ", x.dim(), " dimensions");
  TORCH_CHECK(ptr_in.numel() == n_out + 1, "sparselayer: pointer array has ", ptr_in.numel(), " entries, expected ",
              n_out + 1);
  TORCH_CHECK(idx_in.numel() == vals_in.numel(), "sparselayer: ", idx_in.numel(), " indices but ", vals_in.numel(),
              " values");
  TORCH_CHECK(vals_in.scalar_type() == x.scalar_type(), "sparselayer: values are ", vals_in.scalar_type(),
              " but the dense operand is ", x.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t batch = x.size(0), n_cols = x.size(1);
  auto y = at::empty({batch, n_out}, x.options());
  if (batch == 0 || n_out == 0) return y;
  if (idx_in.numel() == 0 || n_cols == 0) return y.zero_();
  TORCH_CHECK(batch < (int64_t{1} << 31) && n_out < (int64_t{1} << 31) && n_cols < (int64_t{1} << 31),
              "sparselayer: dimensions must be below 2^31");
  const auto ptr = ptr_in.contiguous(), idx = idx_in.contiguous();
  const auto perm = perm_in.defined() ? perm_in.contiguous() : perm_in;
  const int device = x.get_device();

  if (x.scalar_type() == at::kDouble) {
    const auto vals = perm.defined() ? vals_in.index_select(0, perm) : vals_in.contiguous();
    const dim3 grid(static_cast<unsigned>((n_out + 127) / 128), static_cast<unsigned>(std::min<int64_t>(batch, 65535)));
    spmm_simple_kernel<double><<<grid, 128, 0, c10::cuda::getCurrentCUDAStream()>>>(
        ptr.data_ptr<int64_t>(), idx.data_ptr<int64_t>(), vals.data_ptr<double>(), x.data_ptr<double>(), x.stride(0),
        x.stride(1), batch, n_out, y.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
  }

  const auto vals = vals_in.contiguous();
  // Measured on an H100 (benchmarks/tune.py, notes in benchmarks/kernels-notes.md): below 2% density one
  // batch tile of 32 per block (NB = 1) and 512-row blocks over 512-column panels (the x reuse, R * density,
  // is what pays for staging); above it two batch tiles per block (NB = 2) and 256-row blocks over 256-column
  // panels. Row blocks shrink further until every SM gets two blocks. Nonzeros past `cap` (the staged share
  // of a panel) are read from global memory instead: an unlucky panel is slower, never wrong.
  const double density = static_cast<double>(idx.numel()) / (static_cast<double>(n_out) * n_cols);
  const int nb_env = env_int("SPARSELAYER_SPMM_NB");  // tuning overrides, see benchmarks/tune.py
  const int NB = nb_env == 1 || nb_env == 2 ? nb_env : (density >= 0.02 && batch > kBt ? 2 : 1);
  const int64_t batch_tiles = (batch + kBt * NB - 1) / (kBt * NB);
  const int64_t want = 2 * static_cast<int64_t>(num_sms(device));
  const int cols32 = static_cast<int>(std::min<int64_t>((n_cols + 31) / 32 * 32, 512));
  int J = 16 / NB;
  int P = std::min(density < 0.02 ? 512 : 256, cols32);
  while (J > 1 && ((n_out + 32 * J - 1) / (32 * J)) * batch_tiles < want) J /= 2;
  const int j_env = env_int("SPARSELAYER_SPMM_J"), p_env = env_int("SPARSELAYER_SPMM_P");
  if (j_env == 1 || j_env == 2 || j_env == 4 || j_env == 8 || (j_env == 16 && NB == 1)) J = j_env;
  if (p_env >= 32 && p_env % 32 == 0) P = std::min(p_env, cols32);
  // Shared memory per block that keeps min_blocks blocks on an SM (228 KB per SM, 1 KB reserved each).
  const int budget = std::min((228 / (J * NB >= 16 ? 2 : 3) - 1) * 1024, max_smem_optin(device));
  const int expected = static_cast<int>((1.25 * 32 * J * P * density + 64) / 64 + 1) * 64;
  const int cap = std::max(64, std::min(expected, (budget - panel_smem(P, 0, 32 * J, NB)) / 8));
  const int R = 32 * J;
  const int n_panels = static_cast<int>((n_cols + P - 1) / P);
  const auto pp = panel_pointers(ptr, idx, n_out, n_cols, P);
  const int64_t n_blocks = (n_out + R - 1) / R;
  auto q = at::empty({n_blocks * n_panels * R + 1}, ptr.options().dtype(at::kInt));
  auto packed = at::empty({idx.numel(), 2}, ptr.options().dtype(at::kInt));
  {
    const dim3 grid(static_cast<unsigned>(n_blocks), static_cast<unsigned>(n_panels));
    pack_panels_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        pp.data_ptr<int32_t>(), ptr.data_ptr<int64_t>(), idx.data_ptr<int64_t>(), vals.data_ptr<float>(),
        perm.defined() ? perm.data_ptr<int64_t>() : nullptr, static_cast<int>(n_out), n_panels, P, R,
        q.data_ptr<int32_t>(), reinterpret_cast<int2*>(packed.data_ptr<int32_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const bool vec = can_vectorise(x);
  const int smem = panel_smem(P, cap, R, NB);
  if (NB == 2) {
    switch (J) {
      case 8: launch_panel<8, 2>(q, packed, x, vec, n_out, n_panels, P, cap, smem, y); break;
      case 4: launch_panel<4, 2>(q, packed, x, vec, n_out, n_panels, P, cap, smem, y); break;
      case 2: launch_panel<2, 2>(q, packed, x, vec, n_out, n_panels, P, cap, smem, y); break;
      default: launch_panel<1, 2>(q, packed, x, vec, n_out, n_panels, P, cap, smem, y); break;
    }
  } else {
    switch (J) {
      case 16: launch_panel<16, 1>(q, packed, x, vec, n_out, n_panels, P, cap, smem, y); break;
      case 8: launch_panel<8, 1>(q, packed, x, vec, n_out, n_panels, P, cap, smem, y); break;
      case 4: launch_panel<4, 1>(q, packed, x, vec, n_out, n_panels, P, cap, smem, y); break;
      case 2: launch_panel<2, 1>(q, packed, x, vec, n_out, n_panels, P, cap, smem, y); break;
      default: launch_panel<1, 1>(q, packed, x, vec, n_out, n_panels, P, cap, smem, y); break;
    }
  }
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
