// Rotary position embedding, CPU. One pass over x: for each (position row, token) the R/2 sin/cos pairs are
// computed once (angle formed and reduced mod 2*pi in float64, sin/cos in the compute type) and applied to
// every head of every tensor (q and k) and every batch row sharing that position row.
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/cpu/half_convert.h"
#include "ops/rope.h"
#include "pyretro/parallel.h"

namespace pyretro {
namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

template <class T> struct Io;  // load/store between storage type T and compute type
template <> struct Io<float> {
  using C = float;
  static C ld(float v) { return v; }
  static float st(C v) { return v; }
};
template <> struct Io<double> {
  using C = double;
  static C ld(double v) { return v; }
  static double st(C v) { return v; }
};
template <> struct Io<BFloat16> {
  using C = float;
  static C ld(BFloat16 v) { return to_float(v); }
  static BFloat16 st(C v) { return to_bf16(v); }
};
template <> struct Io<Half> {
  using C = float;
  static C ld(Half v) { return to_float(v); }
  static Half st(C v) { return to_half(v); }
};

inline void sin_cos(double a, float* s, float* c) {
  const float f = static_cast<float>(a);
  *s = std::sin(f);
  *c = std::cos(f);
}
inline void sin_cos(double a, double* s, double* c) {
  *s = std::sin(a);
  *c = std::cos(a);
}

// Rotates one head vector (D elements) from `in` to `out` (distinct buffers: restrict lets it vectorize).
template <class T, class C>
inline void rotate_head(const T* __restrict in, T* __restrict out, const C* __restrict cs, const C* __restrict sn,
                        int64_t half, int64_t rdim, int64_t d, bool interleaved) {
  if (interleaved) {
    for (int64_t i = 0; i < half; ++i) {
      const C a = Io<T>::ld(in[2 * i]), b = Io<T>::ld(in[2 * i + 1]);
      out[2 * i] = Io<T>::st(a * cs[i] - b * sn[i]);
      out[2 * i + 1] = Io<T>::st(b * cs[i] + a * sn[i]);
    }
  } else {
    for (int64_t i = 0; i < half; ++i) {
      const C a = Io<T>::ld(in[i]), b = Io<T>::ld(in[i + half]);
      out[i] = Io<T>::st(a * cs[i] - b * sn[i]);
      out[i + half] = Io<T>::st(b * cs[i] + a * sn[i]);
    }
  }
  if (d > rdim) std::memcpy(out + rdim, in + rdim, sizeof(T) * (d - rdim));
}

template <class T, class P>
void run(const RopeArgs& a) {
  using C = typename Io<T>::C;
  const TensorView& x0 = a.xs[0];
  const int64_t B = x0.shape[0], S = x0.shape[1], D = x0.shape[3];
  const int64_t R = a.p.rotary_dim, half = R / 2;
  const int64_t Bp = a.positions.shape[0];
  const int64_t ps0 = a.positions.stride[0], ps1 = a.positions.stride[1];
  const P* pos = a.positions.ptr<P>();

  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(a.p.theta, -2.0 * static_cast<double>(i) / R);
  const double sign = a.p.inverse ? -1.0 : 1.0;

  int64_t heads = 0;
  for (const auto& x : a.xs) heads += x.shape[2];
  const int64_t per_item = (Bp == 1 ? B : 1) * heads * D;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(per_item, 1));

  parallel_for(Bp * S, grain, [&](int64_t begin, int64_t end) {
    std::vector<C> cs(half), sn(half);
    std::vector<T> scratch(static_cast<size_t>(R));  // in-place: the rotated part of one head, staged in L1
    for (int64_t it = begin; it < end; ++it) {
      const int64_t pb = it / S, s = it % S;
      const double p = static_cast<double>(pos[pb * ps0 + s * ps1]);
      for (int64_t i = 0; i < half; ++i) {
        double ang = p * inv_freq[i];
        ang -= kTwoPi * std::nearbyint(ang / kTwoPi);
        sin_cos(sign * ang, &sn[i], &cs[i]);
      }
      const int64_t b0 = Bp == 1 ? 0 : pb, b1 = Bp == 1 ? B : pb + 1;
      for (size_t j = 0; j < a.xs.size(); ++j) {
        const TensorView& x = a.xs[j];
        const TensorView& o = a.outs[j];
        const T* xp = x.ptr<T>();
        T* op = o.ptr<T>();
        for (int64_t b = b0; b < b1; ++b) {
          for (int64_t h = 0; h < x.shape[2]; ++h) {
            const T* in = xp + b * x.stride[0] + s * x.stride[1] + h * x.stride[2];
            T* out = op + b * o.stride[0] + s * o.stride[1] + h * o.stride[2];
            if (in == out) {  // rotate the staged copy back into x; pass-through dims stay as they are
              std::memcpy(scratch.data(), in, sizeof(T) * R);
              rotate_head<T, C>(scratch.data(), out, cs.data(), sn.data(), half, R, R, a.p.interleaved);
            } else {
              rotate_head<T, C>(in, out, cs.data(), sn.data(), half, R, D, a.p.interleaved);
            }
          }
        }
      }
    }
  });
}

template <class T>
void run_pos(const RopeArgs& a) {
  if (a.positions.dtype == DType::Int32) run<T, int32_t>(a);
  else run<T, int64_t>(a);
}

}  // namespace

void rope_cpu(const RopeArgs& a) {
  validate_rope(a);
  for (const auto& x : a.xs) check_device(x, DeviceType::CPU);
  if (a.xs[0].numel() == 0) return;
  switch (a.xs[0].dtype) {
    case DType::Float32: run_pos<float>(a); break;
    case DType::Float64: run_pos<double>(a); break;
    case DType::BFloat16: run_pos<BFloat16>(a); break;
    case DType::Float16: run_pos<Half>(a); break;
    default: throw TypeError(str("x: unsupported dtype ", dtype_name(a.xs[0].dtype)));
  }
}

}  // namespace pyretro
