// Portable CUDA forward of chunked cross-attention (sm_80+): one launch, grid (B*L*H, query tiles).
// A block owns 64 query rows of one (b, chunk u, head h) and streams the chunk's K*R keys/values through
// shared memory in tiles of 32 (fp32), with an online softmax in the log2 domain. No score tensor in
// global memory. Layout/semantics: csrc/ops/cca.h, docs/ops_cca.md.
#include "ops/cuda/cca_common.cuh"

namespace pyretro {
namespace cca_cuda {

template <int D, class T>
__global__ void __launch_bounds__(kThreads) cca_fwd_kernel(Params p) {
  constexpr int NE = D / 4;
  __shared__ __align__(16) float ks[kTile * D];
  __shared__ __align__(16) float vs[kTile * D];
  __shared__ bool valid[kTile];

  const int tid = threadIdx.x, r = tid / 4, s = tid % 4;
  const int64_t task = blockIdx.x;
  const int64_t h = task % p.H, u = (task / p.H) % p.L, b = task / (p.H * p.L);
  const int64_t HD = p.H * D, KR = p.K * p.R;
  const int64_t t0 = u * p.C + p.C - 1;
  const int64_t nq = min(p.C, p.N - t0);  // may be <= 0
  T* out = static_cast<T*>(p.out) + b * p.N * HD + h * D;
  float* lse = p.lse + b * p.N * p.H + h;
  const float inf = __int_as_float(0x7f800000);

  if (u == 0 && blockIdx.y == 0) {  // tokens t < C-1 attend to nothing
    const int64_t pre = min(p.C - 1, p.N);
    for (int64_t e = tid; e < pre * D; e += kThreads) out[(e / D) * HD + e % D] = from_f<T>(0.f);
    for (int64_t t = tid; t < pre; t += kThreads) lse[t * p.H] = inf;
  }
  const int64_t row0 = int64_t(blockIdx.y) * kOwnerRows;
  if (nq <= row0) return;  // uniform over the block

  const uint8_t* mk = p.mask + (b * p.L + u) * KR;
  int any = 0;
  for (int64_t j = tid; j < KR; j += kThreads) any |= mk[j];
  any = __syncthreads_or(any);

  const int64_t i = row0 + r;
  const bool active = i < nq;
  const int64_t t = t0 + i;
  if (!any) {
    if (active) {
#pragma unroll
      for (int j = 0; j < NE; ++j) out[t * HD + slice_elem<D>(s, j)] = from_f<T>(0.f);
      if (s == 0) lse[t * p.H] = inf;
    }
    return;
  }

  float qv[NE], o[NE];
  const T* q = static_cast<const T*>(p.q) + b * p.N * HD + h * D;
#pragma unroll
  for (int j = 0; j < NE; ++j) {
    qv[j] = active ? load_rot<D>(q + t * HD, slice_elem<D>(s, j), p.rotary, i, p.theta, p.scale * kLog2e) : 0.f;
    o[j] = 0.f;
  }
  float m = -inf, l = 0.f;
  const T* kb = static_cast<const T*>(p.k) + (b * p.L + u) * KR * HD + h * D;
  const T* vb = static_cast<const T*>(p.v) + (b * p.L + u) * KR * HD + h * D;

  for (int64_t j0 = 0; j0 < KR; j0 += kTile) {
    __syncthreads();  // the previous tile is consumed
    for (int e = tid; e < kTile * D; e += kThreads) {
      const int jj = e / D, d = e % D;
      const int64_t j = j0 + jj;
      const bool ok = j < KR;
      ks[e] = ok ? load_rot<D>(kb + j * HD, d, p.rotary, j % p.R, p.theta, 1.f) : 0.f;
      vs[e] = ok ? to_f(vb[j * HD + d]) : 0.f;
    }
    if (tid < kTile) valid[tid] = j0 + tid < KR && mk[j0 + tid];
    __syncthreads();

    float sc[kTile];
    float mx = -inf;
#pragma unroll
    for (int jj = 0; jj < kTile; ++jj) {
      const float d = dot_row<D>(qv, ks + jj * D, s);
      sc[jj] = valid[jj] ? d + (active ? bias2(p, h, i, j0 + jj) : 0.f) : -inf;
      mx = fmaxf(mx, sc[jj]);
    }
    if (mx == -inf) continue;  // the whole tile is masked (same for every thread): nothing to add
    const float mnew = fmaxf(m, mx);
    const float corr = exp2f(m - mnew);  // m = -inf -> 0
    l *= corr;
#pragma unroll
    for (int j = 0; j < NE; ++j) o[j] *= corr;
#pragma unroll
    for (int jj = 0; jj < kTile; ++jj) {
      const float pj = exp2f(sc[jj] - mnew);  // -inf -> 0
      l += pj;
      axpy_row<D>(o, pj, vs + jj * D, s);
    }
    m = mnew;
  }
  if (active) {
    const float inv = 1.f / l;  // l >= 1: the chunk has a valid key
#pragma unroll
    for (int j = 0; j < NE; ++j) out[t * HD + slice_elem<D>(s, j)] = from_f<T>(o[j] * inv);
    if (s == 0) lse[t * p.H] = (m + log2f(l)) * kLn2;
  }
}

template <class T>
void launch_fwd(const CcaDims& d, const Params& p, cudaStream_t st) {
  const dim3 grid(unsigned(d.B * d.L * d.H), unsigned((d.C + kOwnerRows - 1) / kOwnerRows));
  switch (d.D) {
    case 32: cca_fwd_kernel<32, T><<<grid, kThreads, 0, st>>>(p); break;
    case 64: cca_fwd_kernel<64, T><<<grid, kThreads, 0, st>>>(p); break;
    case 80: cca_fwd_kernel<80, T><<<grid, kThreads, 0, st>>>(p); break;
    case 96: cca_fwd_kernel<96, T><<<grid, kThreads, 0, st>>>(p); break;
    case 128: cca_fwd_kernel<128, T><<<grid, kThreads, 0, st>>>(p); break;
    default: throw ValueError(str("cca (CUDA): head dim ", d.D, " not supported (32, 64, 80, 96, 128)"));
  }
  check_launch("cca_fwd");
}

Params make_params(const CcaDims& d, const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& mask, const TensorView& out, const TensorView& lse,
                   const TensorView* bias) {
  PYRETRO_CHECK(q.device == DeviceType::CUDA, ValueError, "q: expected a CUDA tensor");
  PYRETRO_CHECK(q.dtype != DType::Float64, TypeError, "q: float64 is not supported on CUDA");
  PYRETRO_CHECK(d.B * d.L * d.H < (int64_t(1) << 31) && d.C <= int64_t(65535) * kOwnerRows, ValueError,
                "cca (CUDA): problem too large for one launch");
  Params p{};
  p.B = d.B; p.N = d.N; p.H = d.H; p.L = d.L; p.K = d.K; p.R = d.R; p.C = d.C;
  p.scale = float(d.scale); p.rotary = d.rotary; p.theta = float(d.theta);
  p.q = q.data; p.k = k.data; p.v = v.data; p.mask = static_cast<const uint8_t*>(mask.data);
  p.out = out.data; p.lse = static_cast<float*>(lse.data);
  p.bias = bias ? static_cast<const float*>(bias->data) : nullptr;
  return p;
}

}  // namespace cca_cuda

void cca_fwd_cuda(const CcaDims& d, const TensorView& q, const TensorView& k, const TensorView& v,
                  const TensorView& mask, const TensorView& out, const TensorView& lse, const TensorView* bias,
                  int64_t stream, int variant) {
  using namespace cca_cuda;
  PYRETRO_CHECK(variant == 0 || variant == 1, ValueError, "cca (CUDA): unknown kernel variant ", variant,
                " (0 = portable, 1 = tc)");
  const Params p = make_params(d, q, k, v, mask, out, lse, bias);
  if (d.B * d.L * d.H == 0) return;
  DeviceGuard guard(q.device_index);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  if (variant == 1 && !bias && cca_fwd_tc(d, p, q.dtype, st)) return;  // tc: no position bias yet
  switch (q.dtype) {
    case DType::Float32: launch_fwd<float>(d, p, st); break;
    case DType::BFloat16: launch_fwd<__nv_bfloat16>(d, p, st); break;
    case DType::Float16: launch_fwd<__half>(d, p, st); break;
    default: throw TypeError(str("cca (CUDA): dtype ", dtype_name(q.dtype), " not supported"));
  }
}

}  // namespace pyretro
