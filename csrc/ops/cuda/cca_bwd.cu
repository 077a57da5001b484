// Portable CUDA backward of chunked cross-attention (sm_80+): one launch, one block per (b, chunk u, head h).
// The keys of chunk u are attended only by that chunk's queries, so a block owns all of dK/dV of its keys and
// all of dQ of its query rows: no atomics, no workspace. Two passes recompute P = exp(S - lse):
//   A) 64 key rows in registers, query/dO tiles streamed through shared memory -> dK, dV;
//   B) 64 query rows in registers, key/value tiles streamed -> dQ.
// dS = P * (dP - delta), delta = rowsum(dO * O). Scores are in the log2 domain like the forward.
#include "ops/cuda/cca_common.cuh"

namespace pyretro {
namespace cca_cuda {

template <int D, class T>
__global__ void __launch_bounds__(kThreads) cca_bwd_kernel(Params p) {
  constexpr int NE = D / 4;
  static_assert(kOwnerRows * D == 2 * kTile * D, "staging buffer must cover the owner rows");
  __shared__ __align__(16) float buf[2 * kTile * D];
  __shared__ float lse_s[kTile], delta_s[kTile];
  __shared__ bool valid[kTile];
  float* ta = buf;
  float* tb = buf + kTile * D;

  const int tid = threadIdx.x, r = tid / 4, s = tid % 4;
  const int64_t task = blockIdx.x;
  const int64_t h = task % p.H, u = (task / p.H) % p.L, b = task / (p.H * p.L);
  const int64_t HD = p.H * D, KR = p.K * p.R;
  const int64_t t0 = u * p.C + p.C - 1;
  const int64_t nq = max(int64_t(0), min(p.C, p.N - t0));
  const int64_t row0 = b * p.N * HD + h * D;
  const int64_t key0 = (b * p.L + u) * KR * HD + h * D;
  const T* q = static_cast<const T*>(p.q) + row0;
  const T* o = static_cast<const T*>(p.out) + row0;
  const T* dout = static_cast<const T*>(p.dout) + row0;
  const T* kb = static_cast<const T*>(p.k) + key0;
  const T* vb = static_cast<const T*>(p.v) + key0;
  T* dq = static_cast<T*>(p.dq) + row0;
  T* dk = static_cast<T*>(p.dk) + key0;
  T* dv = static_cast<T*>(p.dv) + key0;
  const float* lse = p.lse + b * p.N * p.H + h;
  const uint8_t* mk = p.mask + (b * p.L + u) * KR;
  const float inf = __int_as_float(0x7f800000);
  const T zero = from_f<T>(0.f);

  if (u == 0) {
    const int64_t pre = min(p.C - 1, p.N);
    for (int64_t e = tid; e < pre * D; e += kThreads) dq[(e / D) * HD + e % D] = zero;
  }
  int any = 0;
  if (nq > 0)
    for (int64_t j = tid; j < KR; j += kThreads) any |= mk[j];
  any = __syncthreads_or(any);
  if (!any) {  // nothing attends these keys / these rows attend nothing: exact zeros
    for (int64_t e = tid; e < nq * D; e += kThreads) dq[(t0 + e / D) * HD + e % D] = zero;
    for (int64_t e = tid; e < KR * D; e += kThreads) {
      dk[(e / D) * HD + e % D] = zero;
      dv[(e / D) * HD + e % D] = zero;
    }
    return;
  }
  const float qmul = p.scale * kLog2e;

  // ---- pass A: dK, dV ----------------------------------------------------------------------------
  for (int64_t kt0 = 0; kt0 < KR; kt0 += kOwnerRows) {
    const int64_t j = kt0 + r;
    const bool inside = j < KR;
    const bool active = inside && mk[j];
    float kr[NE], vr[NE], dkr[NE], dvr[NE];
#pragma unroll
    for (int e = 0; e < NE; ++e) {
      const int d = slice_elem<D>(s, e);
      kr[e] = active ? load_rot<D>(kb + j * HD, d, p.rotary, j % p.R, p.theta, 1.f) : 0.f;
      vr[e] = active ? to_f(vb[j * HD + d]) : 0.f;
      dkr[e] = 0.f;
      dvr[e] = 0.f;
    }
    for (int64_t i0 = 0; i0 < nq; i0 += kTile) {
      __syncthreads();  // previous tile (or the staging buffer) is consumed
      for (int e = tid; e < kTile * D; e += kThreads) {
        const int ii = e / D, d = e % D;
        const int64_t i = i0 + ii;
        const bool ok = i < nq;
        ta[e] = ok ? load_rot<D>(q + (t0 + i) * HD, d, p.rotary, i, p.theta, qmul) : 0.f;
        tb[e] = ok ? to_f(dout[(t0 + i) * HD + d]) : 0.f;
      }
      {  // delta and lse of the tile's rows: 8 lanes per row
        const int row = tid / 8, part = tid % 8;
        const int64_t i = i0 + row;
        const bool ok = i < nq;
        float acc = 0.f;
        if (ok)
          for (int d = part; d < D; d += 8) acc += to_f(dout[(t0 + i) * HD + d]) * to_f(o[(t0 + i) * HD + d]);
        acc += __shfl_xor_sync(0xffffffffu, acc, 1);
        acc += __shfl_xor_sync(0xffffffffu, acc, 2);
        acc += __shfl_xor_sync(0xffffffffu, acc, 4);
        if (part == 0) {
          delta_s[row] = acc;
          lse_s[row] = ok ? lse[(t0 + i) * p.H] * kLog2e : inf;  // +inf: padding rows get P = 0
        }
      }
      __syncthreads();
#pragma unroll 4
      for (int ii = 0; ii < kTile; ++ii) {
        const bool row_ok = active && i0 + ii < nq;
        const float s2 = dot_row<D>(kr, ta + ii * D, s) + (row_ok ? bias2(p, h, i0 + ii, j) : 0.f);
        const float pj = active ? exp2f(s2 - lse_s[ii]) : 0.f;
        const float dp = dot_row<D>(vr, tb + ii * D, s);
        const float ds = pj * (dp - delta_s[ii]);
        if (p.dbias && row_ok && s == 0) atomicAdd(p.dbias + (h * p.C + i0 + ii) * p.R + j % p.R, ds);
        axpy_row<D>(dvr, pj, tb + ii * D, s);
        axpy_row<D>(dkr, ds, ta + ii * D, s);
      }
    }
    // The tile holds Q * scale * log2(e): dK = dS^T (Q * scale) needs a factor ln 2.
    __syncthreads();
#pragma unroll
    for (int e = 0; e < NE; ++e) buf[r * D + slice_elem<D>(s, e)] = dkr[e] * kLn2;
    __syncthreads();
    if (inside) {
#pragma unroll
      for (int e = 0; e < NE; ++e) {
        const int d = slice_elem<D>(s, e);
        dk[j * HD + d] = active ? from_f<T>(grad_unrot<D>(buf + r * D, d, p.rotary, j % p.R, p.theta)) : zero;
        dv[j * HD + d] = active ? from_f<T>(dvr[e]) : zero;
      }
    }
  }

  // ---- pass B: dQ --------------------------------------------------------------------------------
  for (int64_t q0 = 0; q0 < nq; q0 += kOwnerRows) {
    const int64_t i = q0 + r;
    const bool active = i < nq;
    const int64_t t = t0 + i;
    float qr[NE], dor[NE], dqr[NE];
    float delta = 0.f;
#pragma unroll
    for (int e = 0; e < NE; ++e) {
      const int d = slice_elem<D>(s, e);
      qr[e] = active ? load_rot<D>(q + t * HD, d, p.rotary, i, p.theta, qmul) : 0.f;
      dor[e] = active ? to_f(dout[t * HD + d]) : 0.f;
      delta += active ? dor[e] * to_f(o[t * HD + d]) : 0.f;
      dqr[e] = 0.f;
    }
    delta += __shfl_xor_sync(0xffffffffu, delta, 1);
    delta += __shfl_xor_sync(0xffffffffu, delta, 2);
    const float lse2 = active ? lse[t * p.H] * kLog2e : inf;
    for (int64_t j0 = 0; j0 < KR; j0 += kTile) {
      __syncthreads();
      for (int e = tid; e < kTile * D; e += kThreads) {
        const int jj = e / D, d = e % D;
        const int64_t j = j0 + jj;
        const bool ok = j < KR;
        ta[e] = ok ? load_rot<D>(kb + j * HD, d, p.rotary, j % p.R, p.theta, 1.f) : 0.f;
        tb[e] = ok ? to_f(vb[j * HD + d]) : 0.f;
      }
      if (tid < kTile) valid[tid] = j0 + tid < KR && mk[j0 + tid];
      __syncthreads();
#pragma unroll 4
      for (int jj = 0; jj < kTile; ++jj) {
        const float s2 = dot_row<D>(qr, ta + jj * D, s) + (active && valid[jj] ? bias2(p, h, i, j0 + jj) : 0.f);
        const float pj = valid[jj] ? exp2f(s2 - lse2) : 0.f;
        const float dp = dot_row<D>(dor, tb + jj * D, s);
        axpy_row<D>(dqr, pj * (dp - delta), ta + jj * D, s);
      }
    }
    __syncthreads();
#pragma unroll
    for (int e = 0; e < NE; ++e) buf[r * D + slice_elem<D>(s, e)] = dqr[e] * p.scale;
    __syncthreads();
    if (active) {
#pragma unroll
      for (int e = 0; e < NE; ++e) {
        const int d = slice_elem<D>(s, e);
        dq[t * HD + d] = from_f<T>(grad_unrot<D>(buf + r * D, d, p.rotary, i, p.theta));
      }
    }
  }
}

template <class T>
void launch_bwd(const CcaDims& d, const Params& p, cudaStream_t st) {
  const dim3 grid(unsigned(d.B * d.L * d.H));
  switch (d.D) {
    case 32: cca_bwd_kernel<32, T><<<grid, kThreads, 0, st>>>(p); break;
    case 64: cca_bwd_kernel<64, T><<<grid, kThreads, 0, st>>>(p); break;
    case 80: cca_bwd_kernel<80, T><<<grid, kThreads, 0, st>>>(p); break;
    case 96: cca_bwd_kernel<96, T><<<grid, kThreads, 0, st>>>(p); break;
    case 128: cca_bwd_kernel<128, T><<<grid, kThreads, 0, st>>>(p); break;
    default: throw ValueError(str("cca (CUDA): head dim ", d.D, " not supported (32, 64, 80, 96, 128)"));
  }
  check_launch("cca_bwd");
}

}  // namespace cca_cuda

void cca_bwd_cuda(const CcaDims& d, const TensorView& dout, const TensorView& q, const TensorView& k,
                  const TensorView& v, const TensorView& mask, const TensorView& out, const TensorView& lse,
                  const TensorView& dq, const TensorView& dk, const TensorView& dv, const TensorView* bias,
                  const TensorView* dbias, int64_t stream, int variant) {
  using namespace cca_cuda;
  // Variant 1 (tc) has no backward of its own yet: the portable backward runs (same lse convention).
  PYRETRO_CHECK(variant == 0 || variant == 1, ValueError, "cca (CUDA): unknown kernel variant ", variant,
                " (0 = portable, 1 = tc)");
  Params p = make_params(d, q, k, v, mask, out, lse, bias);
  p.dout = dout.data; p.dq = dq.data; p.dk = dk.data; p.dv = dv.data;
  p.dbias = dbias ? static_cast<float*>(dbias->data) : nullptr;
  if (d.B * d.L * d.H == 0) return;
  DeviceGuard guard(q.device_index);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  switch (q.dtype) {
    case DType::Float32: launch_bwd<float>(d, p, st); break;
    case DType::BFloat16: launch_bwd<__nv_bfloat16>(d, p, st); break;
    case DType::Float16: launch_bwd<__half>(d, p, st); break;
    default: throw TypeError(str("cca (CUDA): dtype ", dtype_name(q.dtype), " not supported"));
  }
}

}  // namespace pyretro
