// EXPERIMENTAL tensor-core forward of chunked cross-attention (variant 1, PYRETRO_CCA_CUDA_VARIANT=tc):
// bf16/fp16 only, sm_80+ (WMMA 16x16x16, fp32 accumulation). Not validated on a GPU yet: it stays opt-in
// until tests/test_cca.py's CUDA tests pass with it. Same semantics and lse as the portable kernel.
//
// Block: 4 warps, 64 query rows (16 per warp) of one (b, chunk u, head h). Per tile of 32 keys: S = Q K^T on
// tensor cores into shared memory, online softmax by the warp's lanes (2 lanes per row), P (16-bit) V on
// tensor cores accumulated into an fp32 O tile in shared memory (WMMA fragments have no row mapping, so O
// is rescaled in shared memory).
#include <mma.h>

#include "ops/cuda/cca_common.cuh"

namespace pyretro {
namespace cca_cuda {

namespace wmma = nvcuda::wmma;
constexpr int kTcThreads = 128;
constexpr int kTcRows = 64;
constexpr int kTcKeys = 32;
constexpr int kLdS = kTcKeys + 8;  // floats
constexpr int kLdP = kTcKeys + 8;  // 16-bit elements

template <int D>
struct TcSmem {
  static constexpr int ldh = D + 8;   // 16-bit row stride of Q/K/V tiles (multiple of 8)
  static constexpr int ldo = D + 8;   // float row stride of O
  static constexpr size_t q = size_t(kTcRows) * ldh * 2;
  static constexpr size_t k = size_t(kTcKeys) * ldh * 2;
  static constexpr size_t s = size_t(kTcRows) * kLdS * 4;
  static constexpr size_t p = size_t(kTcRows) * kLdP * 2;
  static constexpr size_t o = size_t(kTcRows) * ldo * 4;
  static constexpr size_t bytes = q + 2 * k + s + p + o + 64;  // + valid flags
};

template <int D, class T>
__global__ void __launch_bounds__(kTcThreads) cca_fwd_tc_kernel(Params p) {
  using S = TcSmem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  T* qs = reinterpret_cast<T*>(smem);
  T* ks = reinterpret_cast<T*>(smem + S::q);
  T* vs = reinterpret_cast<T*>(smem + S::q + S::k);
  float* ss = reinterpret_cast<float*>(smem + S::q + 2 * S::k);
  T* ps = reinterpret_cast<T*>(smem + S::q + 2 * S::k + S::s);
  float* os = reinterpret_cast<float*>(smem + S::q + 2 * S::k + S::s + S::p);
  bool* valid = reinterpret_cast<bool*>(smem + S::q + 2 * S::k + S::s + S::p + S::o);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t task = blockIdx.x;
  const int64_t h = task % p.H, u = (task / p.H) % p.L, b = task / (p.H * p.L);
  const int64_t HD = p.H * D, KR = p.K * p.R;
  const int64_t t0 = u * p.C + p.C - 1;
  const int64_t nq = min(p.C, p.N - t0);
  T* out = static_cast<T*>(p.out) + b * p.N * HD + h * D;
  float* lse = p.lse + b * p.N * p.H + h;
  const float inf = __int_as_float(0x7f800000);

  if (u == 0 && blockIdx.y == 0) {
    const int64_t pre = min(p.C - 1, p.N);
    for (int64_t e = tid; e < pre * D; e += kTcThreads) out[(e / D) * HD + e % D] = from_f<T>(0.f);
    for (int64_t t = tid; t < pre; t += kTcThreads) lse[t * p.H] = inf;
  }
  const int64_t row0 = int64_t(blockIdx.y) * kTcRows;
  if (nq <= row0) return;
  const int64_t nr = min(int64_t(kTcRows), nq - row0);

  const uint8_t* mk = p.mask + (b * p.L + u) * KR;
  int any = 0;
  for (int64_t j = tid; j < KR; j += kTcThreads) any |= mk[j];
  any = __syncthreads_or(any);
  if (!any) {
    for (int64_t e = tid; e < nr * D; e += kTcThreads) out[(t0 + row0 + e / D) * HD + e % D] = from_f<T>(0.f);
    for (int64_t i = tid; i < nr; i += kTcThreads) lse[(t0 + row0 + i) * p.H] = inf;
    return;
  }

  const T* q = static_cast<const T*>(p.q) + b * p.N * HD + h * D;
  const T* kb = static_cast<const T*>(p.k) + (b * p.L + u) * KR * HD + h * D;
  const T* vb = static_cast<const T*>(p.v) + (b * p.L + u) * KR * HD + h * D;
  for (int e = tid; e < kTcRows * D; e += kTcThreads) {
    const int r = e / D, d = e % D;
    const int64_t i = row0 + r;
    qs[r * S::ldh + d] =
        from_f<T>(i < nq ? load_rot<D>(q + (t0 + i) * HD, d, p.rotary, i, p.theta, p.scale * kLog2e) : 0.f);
    os[r * S::ldo + d] = 0.f;
  }
  // Row state: lanes 2r and 2r+1 of warp w own row 16w + r and half of its columns.
  const int myrow = warp * 16 + lane / 2, half = lane % 2;
  float m = -inf, l = 0.f;

  for (int64_t j0 = 0; j0 < KR; j0 += kTcKeys) {
    __syncthreads();  // previous tile consumed (and Q/O initialised)
    for (int e = tid; e < kTcKeys * D; e += kTcThreads) {
      const int jj = e / D, d = e % D;
      const int64_t j = j0 + jj;
      const bool ok = j < KR;
      ks[jj * S::ldh + d] = from_f<T>(ok ? load_rot<D>(kb + j * HD, d, p.rotary, j % p.R, p.theta, 1.f) : 0.f);
      vs[jj * S::ldh + d] = ok ? vb[j * HD + d] : from_f<T>(0.f);
    }
    if (tid < kTcKeys) valid[tid] = j0 + tid < KR && mk[j0 + tid];
    __syncthreads();

    // S[16w.., 0..32) = Q_w K^T
#pragma unroll
    for (int n = 0; n < kTcKeys / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, qs + (warp * 16) * S::ldh + kk * 16, S::ldh);
        wmma::load_matrix_sync(fb, ks + (n * 16) * S::ldh + kk * 16, S::ldh);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(ss + (warp * 16) * kLdS + n * 16, acc, kLdS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax on the warp's rows (log2 domain).
    float* srow = ss + myrow * kLdS + half * (kTcKeys / 2);
    float mx = -inf;
#pragma unroll
    for (int c = 0; c < kTcKeys / 2; ++c)
      if (valid[half * (kTcKeys / 2) + c]) mx = fmaxf(mx, srow[c]);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float mnew = fmaxf(m, mx);
    const bool none = mnew == -inf;  // no valid key so far: keep everything at zero
    const float corr = none ? 1.f : exp2f(m - mnew);
    float sum = 0.f;
    T* prow = ps + myrow * kLdP + half * (kTcKeys / 2);
#pragma unroll
    for (int c = 0; c < kTcKeys / 2; ++c) {
      const float pj = (!none && valid[half * (kTcKeys / 2) + c]) ? exp2f(srow[c] - mnew) : 0.f;
      sum += pj;
      prow[c] = from_f<T>(pj);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * corr + sum;
    m = none ? m : mnew;
    float* orow = os + myrow * S::ldo + half * (D / 2);
    for (int d = 0; d < D / 2; ++d) orow[d] *= corr;
    __syncwarp();

    // O_w += P_w V
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, os + (warp * 16) * S::ldo + n * 16, S::ldo, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kTcKeys / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, ps + (warp * 16) * kLdP + kk * 16, kLdP);
        wmma::load_matrix_sync(fb, vs + (kk * 16) * S::ldh + n * 16, S::ldh);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(os + (warp * 16) * S::ldo + n * 16, acc, S::ldo, wmma::mem_row_major);
    }
    __syncwarp();
  }
  // l >= 1 for every row: the chunk has a valid key, and the tile holding the row max contributes 1.
  const int64_t i = row0 + myrow;
  if (i < nq) {
    const float inv = 1.f / l;
    const float* orow = os + myrow * S::ldo + half * (D / 2);
    T* o = out + (t0 + i) * HD + half * (D / 2);
    for (int d = 0; d < D / 2; ++d) o[d] = from_f<T>(orow[d] * inv);
    if (half == 0) lse[(t0 + i) * p.H] = (m + log2f(l)) * kLn2;
  }
}

template <int D, class T>
void launch_tc_d(const CcaDims& d, const Params& p, cudaStream_t st) {
  const size_t bytes = TcSmem<D>::bytes;
  const cudaError_t e = cudaFuncSetAttribute(cca_fwd_tc_kernel<D, T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             int(bytes));
  PYRETRO_CHECK(e == cudaSuccess, ValueError, "cca_fwd (tc): shared memory request failed: ", cudaGetErrorString(e));
  const dim3 grid(unsigned(d.B * d.L * d.H), unsigned((d.C + kTcRows - 1) / kTcRows));
  cca_fwd_tc_kernel<D, T><<<grid, kTcThreads, bytes, st>>>(p);
}

template <class T>
void launch_tc(const CcaDims& d, const Params& p, cudaStream_t st) {
  switch (d.D) {
    case 32: launch_tc_d<32, T>(d, p, st); break;
    case 64: launch_tc_d<64, T>(d, p, st); break;
    case 80: launch_tc_d<80, T>(d, p, st); break;
    case 96: launch_tc_d<96, T>(d, p, st); break;
    case 128: launch_tc_d<128, T>(d, p, st); break;
    default: throw ValueError(str("cca (CUDA tc): head dim ", d.D, " not supported (32, 64, 80, 96, 128)"));
  }
  check_launch("cca_fwd (tc)");
}

bool cca_fwd_tc(const CcaDims& d, const Params& p, DType dtype, cudaStream_t st) {
  switch (dtype) {
    case DType::BFloat16: launch_tc<__nv_bfloat16>(d, p, st); return true;
    case DType::Float16: launch_tc<__half>(d, p, st); return true;
    default: return false;  // float32: the portable kernel runs
  }
}

}  // namespace cca_cuda
}  // namespace pyretro
