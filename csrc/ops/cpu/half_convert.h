// float16 / bfloat16 <-> float32 conversions for the CPU kernels (round to nearest even), portable C++.
#pragma once
#include <cstdint>
#include <cstring>

namespace pyretro {

struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float f32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline float to_float(BFloat16 h) { return f32_from_bits(static_cast<uint32_t>(h.bits) << 16); }
inline BFloat16 to_bf16(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  const uint32_t nan = u | 0x400000u;  // quiet NaN keeps its sign and payload top bits
  // Branch-free select so the rope loops vectorize.
  return BFloat16{static_cast<uint16_t>(((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded) >> 16)};
}

inline float to_float(Half h) {
  const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1fu, mant = h.bits & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (mant << 13));
  return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline Half to_half(float f) {
  uint32_t u = f32_bits(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint16_t o;
  if (u >= (143u << 23)) {  // |f| >= 65536, inf: inf; NaN: quiet NaN
    o = u > (255u << 23) ? 0x7e00 : 0x7c00;
  } else if (u < (113u << 23)) {  // result is subnormal or zero: let the FPU round via a magic add
    const float magic = f32_from_bits(((127u - 15u) + (23u - 10u) + 1u) << 23);
    o = static_cast<uint16_t>(f32_bits(f32_from_bits(u) + magic) - f32_bits(magic));
  } else {  // normal: rebias the exponent and round the mantissa to nearest even
    const uint32_t odd = (u >> 13) & 1u;
    u += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + odd;
    o = static_cast<uint16_t>(u >> 13);
  }
  return Half{static_cast<uint16_t>(o | (sign >> 16))};
}

}  // namespace pyretro
