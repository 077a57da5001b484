// The CUDA rope kernel's per-thread body, launch shape and vector-width choice, kept free of CUDA built-ins
// (thread/block indices are arguments) so the same code also compiles as host C++: tests/cuda_sim runs every
// simulated thread of a launch on the CPU and compares with the CPU kernel, which is how the indexing is
// tested on machines without a GPU. Used by rope_cuda.cu.
//
// Work unit: VEC rotation pairs of one head row, read as two aligned VEC-element vectors (NeoX: elements
// [f0, f0+VEC) and [R/2+f0, ...); GPT-J: [2*f0, 2*f0 + 2*VEC)). A thread owns unit column g and walks token
// rows (b, s) with a grid stride; per row it computes its VEC angles once and applies them to every head of
// x (and of k). Pass-through dims (rotary_dim < D, out of place) are extra copy-only unit columns.
//
// Precision: angle = p * theta^(-2i/R) formed and reduced mod 2*pi in float64, then sincosf on the reduced
// float32 angle (full-accuracy sincosf, not __sincosf: its fast path is cheap on |a| <= pi, and __sincosf's
// absolute error ~2^-21 would make fp32 outputs differ from the CPU path); float64 inputs use sincos.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "ops/rope.h"

#if defined(__CUDACC__)
#define PYRETRO_HD __host__ __device__
#else
#define PYRETRO_HD
#endif

namespace pyretro {
namespace rope_kernel {

constexpr double kTwoPi = 6.283185307179586476925286766559;
constexpr double kInvTwoPi = 0.15915494309189533576888376337251;

struct TensorArgs {
  const void* x;
  void* out;
  int64_t xs[3], os[3];  // strides of B, S, H (elements)
  int64_t heads;
  bool copy_rest;  // out != x and D > R: pass-through dims must be copied
};

struct KernelArgs {
  TensorArgs t[2];
  int nt;
  const void* pos;
  int64_t ps0, ps1, bp;  // positions strides and leading size (1 or B)
  int64_t B, S, R;
  int64_t rot_units, copy_units;
  double theta;
  double sign;
  bool interleaved;
};

struct ThreadIndex {  // threadIdx.x/.y, blockIdx.x, blockDim.x/.y, gridDim.x
  int64_t tx, ty, bx, bdx, bdy, gdx;
};

template <class T> struct Cvt;
template <> struct Cvt<float> {
  using C = float;
  static PYRETRO_HD C ld(float v) { return v; }
  static PYRETRO_HD float st(C v) { return v; }
};
template <> struct Cvt<double> {
  using C = double;
  static PYRETRO_HD C ld(double v) { return v; }
  static PYRETRO_HD double st(C v) { return v; }
};
template <> struct Cvt<__half> {
  using C = float;
  static PYRETRO_HD C ld(__half v) { return __half2float(v); }
  static PYRETRO_HD __half st(C v) { return __float2half_rn(v); }
};
template <> struct Cvt<__nv_bfloat16> {
  using C = float;
  static PYRETRO_HD C ld(__nv_bfloat16 v) { return __bfloat162float(v); }
  static PYRETRO_HD __nv_bfloat16 st(C v) { return __float2bfloat16_rn(v); }
};

PYRETRO_HD inline void sin_cos(double a, float* s, float* c) { sincosf(static_cast<float>(a), s, c); }
PYRETRO_HD inline void sin_cos(double a, double* s, double* c) { sincos(a, s, c); }

template <class T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

template <class T, class P, int VEC>
PYRETRO_HD inline void rope_thread(const KernelArgs& a, const ThreadIndex& ti) {
  using C = typename Cvt<T>::C;
  using V = Vec<T, VEC>;
  const int64_t rows = a.B * a.S;
  const int64_t half = a.R / 2;
  const int64_t row0 = ti.bx * ti.bdy + ti.ty;
  const int64_t row_stride = ti.gdx * ti.bdy;
  const int64_t units = a.rot_units + a.copy_units;
  for (int64_t g = ti.tx; g < units; g += ti.bdx) {
    if (g >= a.rot_units) {  // pass-through copy column
      const int64_t e0 = a.R + (g - a.rot_units) * VEC;
      for (int64_t row = row0; row < rows; row += row_stride) {
        const int64_t b = row / a.S, s = row % a.S;
        for (int j = 0; j < a.nt; ++j) {
          const TensorArgs& t = a.t[j];
          if (!t.copy_rest) continue;
          const T* x = static_cast<const T*>(t.x) + b * t.xs[0] + s * t.xs[1] + e0;
          T* o = static_cast<T*>(t.out) + b * t.os[0] + s * t.os[1] + e0;
          for (int64_t h = 0; h < t.heads; ++h)
            *reinterpret_cast<V*>(o + h * t.os[2]) = *reinterpret_cast<const V*>(x + h * t.xs[2]);
        }
      }
      continue;
    }
    // Rotation column: VEC pairs starting at frequency index f0.
    const int64_t f0 = g * VEC;
    double inv_freq[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) inv_freq[k] = pow(a.theta, -2.0 * static_cast<double>(f0 + k) / a.R);
    const int64_t off_u = a.interleaved ? 2 * f0 : f0;
    const int64_t off_w = a.interleaved ? 2 * f0 + VEC : half + f0;
    for (int64_t row = row0; row < rows; row += row_stride) {
      const int64_t b = row / a.S, s = row % a.S;
      const int64_t pb = a.bp == 1 ? 0 : b;
      const double p = static_cast<double>(static_cast<const P*>(a.pos)[pb * a.ps0 + s * a.ps1]);
      C cs[VEC], sn[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        double ang = p * inv_freq[k];
        ang -= kTwoPi * rint(ang * kInvTwoPi);
        sin_cos(a.sign * ang, &sn[k], &cs[k]);
      }
      for (int j = 0; j < a.nt; ++j) {
        const TensorArgs& t = a.t[j];
        const T* x = static_cast<const T*>(t.x) + b * t.xs[0] + s * t.xs[1];
        T* o = static_cast<T*>(t.out) + b * t.os[0] + s * t.os[1];
        for (int64_t h = 0; h < t.heads; ++h) {
          const V u = *reinterpret_cast<const V*>(x + h * t.xs[2] + off_u);
          const V w = *reinterpret_cast<const V*>(x + h * t.xs[2] + off_w);
          V ru, rw;
          if (a.interleaved) {
            // pairs (2k, 2k+1) across the 2*VEC consecutive elements u ++ w
#pragma unroll
            for (int k = 0; k < VEC; ++k) {
              const int e = 2 * k;
              const C xa = Cvt<T>::ld(e < VEC ? u.v[e] : w.v[e - VEC]);
              const C xb = Cvt<T>::ld(e + 1 < VEC ? u.v[e + 1] : w.v[e + 1 - VEC]);
              const T oa = Cvt<T>::st(xa * cs[k] - xb * sn[k]);
              const T ob = Cvt<T>::st(xb * cs[k] + xa * sn[k]);
              if (e < VEC) ru.v[e] = oa; else rw.v[e - VEC] = oa;
              if (e + 1 < VEC) ru.v[e + 1] = ob; else rw.v[e + 1 - VEC] = ob;
            }
          } else {
#pragma unroll
            for (int k = 0; k < VEC; ++k) {
              const C xa = Cvt<T>::ld(u.v[k]), xb = Cvt<T>::ld(w.v[k]);
              ru.v[k] = Cvt<T>::st(xa * cs[k] - xb * sn[k]);
              rw.v[k] = Cvt<T>::st(xb * cs[k] + xa * sn[k]);
            }
          }
          *reinterpret_cast<V*>(o + h * t.os[2] + off_u) = ru;
          *reinterpret_cast<V*>(o + h * t.os[2] + off_w) = rw;
        }
      }
    }
  }
}

// Host side: kernel arguments from validated RopeArgs.
inline KernelArgs make_args(const RopeArgs& ra) {
  KernelArgs ka{};
  ka.nt = static_cast<int>(ra.xs.size());
  for (int j = 0; j < ka.nt; ++j) {
    const TensorView& x = ra.xs[j];
    const TensorView& o = ra.outs[j];
    TensorArgs& t = ka.t[j];
    t.x = x.data;
    t.out = o.data;
    for (int d = 0; d < 3; ++d) {
      t.xs[d] = x.stride[d];
      t.os[d] = o.stride[d];
    }
    t.heads = x.shape[2];
    t.copy_rest = o.data != x.data && x.shape[3] > ra.p.rotary_dim;
  }
  ka.pos = ra.positions.data;
  ka.ps0 = ra.positions.stride[0];
  ka.ps1 = ra.positions.stride[1];
  ka.bp = ra.positions.shape[0];
  ka.B = ra.xs[0].shape[0];
  ka.S = ra.xs[0].shape[1];
  ka.R = ra.p.rotary_dim;
  ka.theta = ra.p.theta;
  ka.sign = ra.p.inverse ? -1.0 : 1.0;
  ka.interleaved = ra.p.interleaved;
  return ka;
}

// Largest VEC (<= 16 bytes) such that every vector access is aligned and no unit straddles the halves.
template <class T>
int pick_vec(const RopeArgs& ra) {
  const int64_t R = ra.p.rotary_dim, D = ra.xs[0].shape[3];
  for (int vec = 16 / static_cast<int>(sizeof(T)); vec > 1; vec /= 2) {
    bool ok = (ra.p.interleaved ? R % (2 * vec) == 0 : (R / 2) % vec == 0) && D % vec == 0;
    for (size_t j = 0; ok && j < ra.xs.size(); ++j) {
      for (const TensorView* v : {&ra.xs[j], &ra.outs[j]}) {
        ok = ok && reinterpret_cast<uintptr_t>(v->data) % (sizeof(T) * vec) == 0;
        for (int d = 0; d < 3; ++d) ok = ok && (v->shape[d] == 1 || v->stride[d] % vec == 0);
      }
    }
    if (ok) return vec;
  }
  return 1;
}

struct LaunchShape {
  int bx, by;
  unsigned grid;
};

// Fills rot_units/copy_units for VEC and returns the block/grid shape: up to 256 threads, unit columns on x,
// token rows on y; at most 16 blocks per SM (the threads then loop over rows, reusing their inv_freq).
inline LaunchShape plan(KernelArgs& ka, int64_t D, int vec, int sm_count) {
  ka.rot_units = ka.R / 2 / vec;
  bool any_copy = false;
  for (int j = 0; j < ka.nt; ++j) any_copy = any_copy || ka.t[j].copy_rest;
  ka.copy_units = any_copy ? (D - ka.R) / vec : 0;
  const int64_t units = ka.rot_units + ka.copy_units;
  LaunchShape ls{};
  ls.bx = static_cast<int>(std::min<int64_t>(units, 256));
  ls.by = std::max(1, 256 / ls.bx);
  const int64_t want = (ka.B * ka.S + ls.by - 1) / ls.by;
  const int64_t cap = static_cast<int64_t>(sm_count) * 16;
  ls.grid = static_cast<unsigned>(std::max<int64_t>(1, std::min(want, cap)));
  return ls;
}

}  // namespace rope_kernel
}  // namespace pyretro
