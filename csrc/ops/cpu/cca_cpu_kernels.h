// CPU chunked cross-attention task kernels, written once and compiled per instruction set: each
// cca_cpu_<isa>.cpp includes this inside its own namespace after `#pragma GCC target(...)` and defines
// CCA_VBYTES (vector width in bytes). Uses GCC vector extensions (no intrinsics) so the same code gives
// SSE2, AVX2 or AVX-512 code. Everything here has internal linkage except fwd_tasks/bwd_tasks.
//
// One forward task = (b, chunk u, query head h): the <= chunk_len query rows attending chunk u and the K*R
// keys of its neighbours (kv head h / (H/G)). One backward task = (b, u, kv head g) and its H/G query heads. Only valid keys are copied (compacted) into the tile buffers, so the inner loops never test
// the mask. Scale (and rotary) are folded into the query tile. Forward: online softmax over key blocks of
// kKBlock, tiles S = Q K^T of [kQBlock x kKBlock]; lse saved per row. Backward recomputes P from lse.
#ifndef CCA_VBYTES
#error "define CCA_VBYTES before including cca_cpu_kernels.h"
#endif

namespace {

template <class A> struct VT;
template <> struct VT<float> {
  typedef float V __attribute__((vector_size(CCA_VBYTES)));
  typedef int32_t I __attribute__((vector_size(CCA_VBYTES)));
  static constexpr int W = CCA_VBYTES / 4;
};
template <> struct VT<double> {
  typedef double V __attribute__((vector_size(CCA_VBYTES)));
  typedef int64_t I __attribute__((vector_size(CCA_VBYTES)));
  static constexpr int W = CCA_VBYTES / 8;
};

// Accumulator registers a micro-tile may use (32 vector registers with AVX-512, 16 otherwise).
constexpr int kAccRegs = CCA_VBYTES == 64 ? 24 : 8;

template <class A> inline typename VT<A>::V vload(const A* p) {
  typename VT<A>::V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
template <class A> inline void vstore(A* p, typename VT<A>::V v) { __builtin_memcpy(p, &v, sizeof v); }
template <class A> inline typename VT<A>::V vbcast(A x) {
  return x - typename VT<A>::V{};  // x - 0 folds to a plain broadcast (0 + x would not: -0.0)
}

// exp for float vectors: Cody-Waite range reduction + degree-6 polynomial (rel. error ~1e-7);
// inputs below -87.3 (incl. -inf) give exactly 0.
inline VT<float>::V vexp(VT<float>::V x) {
  typedef VT<float>::V V;
  typedef VT<float>::I I;
  const V lo = vbcast(-87.3f), hi = vbcast(88.3f);
  V xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const V magic = vbcast(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  V n = (xc * 1.44269504088896341f + magic) - magic;
  V r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = vbcast(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  I e = (__builtin_convertvector(n, I) + 127) << 23;
  V s;
  __builtin_memcpy(&s, &e, sizeof s);
  V res = p * s;
  return x < lo ? vbcast(0.0f) : res;
}
inline VT<double>::V vexp(VT<double>::V x) {
  for (int i = 0; i < VT<double>::W; ++i) x[i] = std::exp(x[i]);
  return x;
}

template <class A> inline A hmax(typename VT<A>::V v) {
  A m = v[0];
  for (int i = 1; i < VT<A>::W; ++i) m = v[i] > m ? v[i] : m;
  return m;
}
template <class A> inline A hsum(typename VT<A>::V v) {
  A s = v[0];
  for (int i = 1; i < VT<A>::W; ++i) s += v[i];
  return s;
}

// ---- micro-kernels ---------------------------------------------------------------------------------
// s[m][n] = sum_{d<D} a[m*lda + d] * bt[d*ldb + n]   for m < MR, n < NV*W
template <class A, int MR, int NV>
inline void nt_tile(const A* a, int64_t lda, const A* bt, int64_t ldb, A* s, int64_t lds, int64_t D) {
  typedef typename VT<A>::V V;
  constexpr int W = VT<A>::W;
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = vbcast<A>(0);
  for (int64_t d = 0; d < D; ++d) {
    V bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = vload(bt + d * ldb + v * W);
    for (int r = 0; r < MR; ++r) {
      const V ar = vbcast(a[r * lda + d]);
      for (int v = 0; v < NV; ++v) acc[r][v] += ar * bv[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) vstore(s + r * lds + v * W, acc[r][v]);
}

// S[M][Np] = A[M][D] * Bt[D][Np]; Np a multiple of kPad.
template <class A>
void gemm_nt(const A* a, int64_t lda, const A* bt, int64_t ldb, A* s, int64_t lds, int64_t M, int64_t Np,
             int64_t D) {
  constexpr int W = VT<A>::W;
  constexpr int NV = kPad / W;
  constexpr int MR = kAccRegs / NV > 8 ? 8 : (kAccRegs / NV < 1 ? 1 : kAccRegs / NV);
  for (int64_t n0 = 0; n0 < Np; n0 += NV * W) {
    int64_t m = 0;
    for (; m + MR <= M; m += MR) nt_tile<A, MR, NV>(a + m * lda, lda, bt + n0, ldb, s + m * lds + n0, lds, D);
    for (; m < M; ++m) nt_tile<A, 1, NV>(a + m * lda, lda, bt + n0, ldb, s + m * lds + n0, lds, D);
  }
}

// c[m*ldc + e] += sum_{k<Kd} a[m*a_sm + k*a_sk] * b[k*ldb + e]   for m < MR, e < DV*W
template <class A, int MR, int DV>
inline void rows_tile(A* c, int64_t ldc, const A* a, int64_t a_sm, int64_t a_sk, const A* b, int64_t ldb,
                      int64_t Kd) {
  typedef typename VT<A>::V V;
  constexpr int W = VT<A>::W;
  V acc[MR][DV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < DV; ++v) acc[r][v] = vload(c + r * ldc + v * W);
  for (int64_t k = 0; k < Kd; ++k) {
    V bv[DV];
    for (int v = 0; v < DV; ++v) bv[v] = vload(b + k * ldb + v * W);
    for (int r = 0; r < MR; ++r) {
      const V ar = vbcast(a[r * a_sm + k * a_sk]);
      for (int v = 0; v < DV; ++v) acc[r][v] += ar * bv[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < DV; ++v) vstore(c + r * ldc + v * W, acc[r][v]);
}

template <class A, int DV>
void acc_rows_dv(A* c, int64_t ldc, const A* a, int64_t a_sm, int64_t a_sk, const A* b, int64_t ldb, int64_t M,
                 int64_t Kd) {
  constexpr int MR = kAccRegs / DV > 8 ? 8 : (kAccRegs / DV < 1 ? 1 : kAccRegs / DV);
  int64_t m = 0;
  for (; m + MR <= M; m += MR) rows_tile<A, MR, DV>(c + m * ldc, ldc, a + m * a_sm, a_sm, a_sk, b, ldb, Kd);
  for (; m < M; ++m) rows_tile<A, 1, DV>(c + m * ldc, ldc, a + m * a_sm, a_sm, a_sk, b, ldb, Kd);
}

// C[M][Dp] += A(m, k) * B[Kd][Dp], A(m, k) = a[m*a_sm + k*a_sk]; Dp a multiple of the vector width.
template <class A>
void acc_rows(A* c, int64_t ldc, const A* a, int64_t a_sm, int64_t a_sk, const A* b, int64_t ldb, int64_t M,
              int64_t Kd, int64_t Dp) {
  constexpr int W = VT<A>::W;
  if (Dp / W >= 8 && (Dp / W) % 2 == 0 && (Dp / W) <= 16) {
    // Wide rows: two column halves, so each micro-tile covers more rows (more reuse of each loaded b vector).
    const int64_t h = Dp / 2;
    acc_rows(c, ldc, a, a_sm, a_sk, b, ldb, M, Kd, h);
    acc_rows(c + h, ldc, a, a_sm, a_sk, b + h, ldb, M, Kd, h);
    return;
  }
  switch (Dp / W) {
#define CCA_DV_CASE(n) \
  case n: acc_rows_dv<A, n>(c, ldc, a, a_sm, a_sk, b, ldb, M, Kd); return;
    CCA_DV_CASE(1) CCA_DV_CASE(2) CCA_DV_CASE(3) CCA_DV_CASE(4) CCA_DV_CASE(5) CCA_DV_CASE(6)
    CCA_DV_CASE(7) CCA_DV_CASE(8) CCA_DV_CASE(10) CCA_DV_CASE(12) CCA_DV_CASE(14) CCA_DV_CASE(16)
#undef CCA_DV_CASE
    default:
      for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < Kd; ++k) {
          const A x = a[m * a_sm + k * a_sk];
          for (int64_t e = 0; e < Dp; ++e) c[m * ldc + e] += x * b[k * ldb + e];
        }
  }
}

// ---- storage conversions ---------------------------------------------------------------------------
inline float bits_f32(uint32_t u) { float f; __builtin_memcpy(&f, &u, 4); return f; }
inline uint32_t f32_bits(float f) { uint32_t u; __builtin_memcpy(&u, &f, 4); return u; }

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e == 0) {
    if (m == 0) return bits_f32(sign);
    float f = float(m) * (1.0f / 16777216.0f);  // subnormal: m * 2^-24, exact in float
    return sign ? -f : f;
  }
  if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
  return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}
inline uint16_t float_to_half(float f) {  // round to nearest even
  uint32_t x = f32_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00 : 0x7c00);
  if (x >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to inf
  if (x < 0x38800000u) {                       // < 2^-14: subnormal half, m = round(|f| * 2^24)
    const float s = bits_f32(x) * 16777216.0f;   // exact (power of two), < 1024
    uint32_t m = uint32_t(s);
    const float rem = s - float(m);
    if (rem > 0.5f || (rem == 0.5f && (m & 1))) ++m;
    return sign | uint16_t(m);
  }
  x += 0xc8000fffu + ((x >> 13) & 1);  // rebias exponent (-112 << 23) and round
  return sign | uint16_t(x >> 13);
}
inline float bf16_to_float(uint16_t h) { return bits_f32(uint32_t(h) << 16); }
inline uint16_t float_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1);
  return uint16_t(x >> 16);
}

struct BF16 { uint16_t x; };
struct F16 { uint16_t x; };
template <class T> struct Conv;
template <> struct Conv<float> {
  static float to(float x) { return x; }
  static float from(float x) { return x; }
};
template <> struct Conv<double> {
  static double to(double x) { return x; }
  static double from(double x) { return x; }
};
template <> struct Conv<BF16> {
  static float to(BF16 x) { return bf16_to_float(x.x); }
  static BF16 from(float x) { return BF16{float_to_bf16(x)}; }
};
template <> struct Conv<F16> {
  static float to(F16 x) { return half_to_float(x.x); }
  static F16 from(float x) { return F16{float_to_half(x)}; }
};

// ---- task helpers ----------------------------------------------------------------------------------
template <class A> struct Tables {
  const A* cos;
  const A* sin;
};

// dst[0..Dp) = rope(src[0..D)) * mul, zero-padded. NeoX half split; `inverse` applies the transpose.
template <class T, class A>
inline void load_row(const T* src, A* dst, int64_t D, int64_t Dp, bool rotary, const Tables<A>& tb, int64_t pos,
                     A mul) {
  for (int64_t d = 0; d < D; ++d) dst[d] = Conv<T>::to(src[d]) * mul;
  for (int64_t d = D; d < Dp; ++d) dst[d] = A(0);
  if (rotary) {
    const int64_t half = D / 2;
    const A* c = tb.cos + pos * half;
    const A* s = tb.sin + pos * half;
    for (int64_t i = 0; i < half; ++i) {
      const A x1 = dst[i], x2 = dst[i + half];
      dst[i] = x1 * c[i] - x2 * s[i];
      dst[i + half] = x2 * c[i] + x1 * s[i];
    }
  }
}
// dst[0..D) = rope^T(src) * mul (gradient w.r.t. the un-rotated input).
template <class T, class A>
inline void store_grad_row(const A* src, T* dst, int64_t D, bool rotary, const Tables<A>& tb, int64_t pos, A mul) {
  if (!rotary) {
    for (int64_t d = 0; d < D; ++d) dst[d] = Conv<T>::from(src[d] * mul);
    return;
  }
  const int64_t half = D / 2;
  const A* c = tb.cos + pos * half;
  const A* s = tb.sin + pos * half;
  for (int64_t i = 0; i < half; ++i) {
    const A g1 = src[i], g2 = src[i + half];
    dst[i] = Conv<T>::from((g1 * c[i] + g2 * s[i]) * mul);
    dst[i + half] = Conv<T>::from((g2 * c[i] - g1 * s[i]) * mul);
  }
}
template <class T> inline void zero_row(T* dst, int64_t D) {
  for (int64_t d = 0; d < D; ++d) dst[d] = Conv<T>::from(0);
}

// s[j] += bias_row[pos[j]] for the nb keys of a score block (pos: each valid key's position in its neighbour).
template <class A>
inline void add_bias(A* s, const A* bias_row, const int32_t* pos, int64_t nb) {
  for (int64_t j = 0; j < nb; ++j) s[j] += bias_row[pos[j]];
}
// pos[jj] = position within its neighbour of valid key jj (for the position bias), from its index in K*R.
inline void key_positions(const int32_t* idx, int64_t nv, int64_t R, int32_t* pos) {
  for (int64_t jj = 0; jj < nv; ++jj) pos[jj] = int32_t(idx[jj] % R);
}

// Rows of q/k/v/out (and their gradients) are strided by heads * D: a task touches one short row per 2 KiB
// (typical shapes), which the hardware prefetchers do not follow across pages. Each loop that walks such rows
// prefetches the row kAhead places ahead (the loads were the largest part of the forward's time).
constexpr int64_t kAhead = 8;
template <int RW, class T> inline void prefetch_row(const T* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < n * int64_t(sizeof(T)); b += 64) __builtin_prefetch(c + b, RW, 3);
}

inline char* align64(char* p) { return reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63)); }

struct TaskIdx {
  int64_t b, u, h, t0, nq;  // h: query head (forward) or kv head (backward)
};
inline TaskIdx task_index(const TaskArgs& a, int64_t task, int64_t heads) {
  TaskIdx t;
  t.h = task % heads;
  t.u = (task / heads) % a.L;
  t.b = task / (heads * a.L);
  t.t0 = t.u * a.C + a.C - 1;
  t.nq = a.N - t.t0 < a.C ? a.N - t.t0 : a.C;
  if (t.nq < 0) t.nq = 0;
  return t;
}

// Copies the valid keys (and values) of a task into the tile buffers; returns their count.
// kt: [D][nvp + kSkew] (transposed, rotated), kr: [nvp][Dp] rows (rotated) or null, vt: like kt or null,
// vr: [nvp][Dp] rows or null. Padding columns/rows are zero. Keys go through `tmp` ([kGroup][Dp]) in
// groups so the transposed stores write whole cache lines.
constexpr int64_t kGroup = 16;
template <class T, class A>
void load_group(const T* base, const int32_t* idx, int64_t jj0, int64_t nv, int64_t HD, int64_t D, int64_t Dp,
                bool rotary, int64_t R, const Tables<A>& tb, A* tmp) {
  for (int64_t g = 0; g < kGroup; ++g) {
    const int64_t jj = jj0 + g;
    if (jj + kAhead < nv) prefetch_row<0>(base + int64_t(idx[jj + kAhead]) * HD, D);
    if (jj < nv) {
      const int64_t j = idx[jj];
      load_row<T, A>(base + j * HD, tmp + g * Dp, D, Dp, rotary, tb, j % R, A(1));
    } else {
      for (int64_t d = 0; d < Dp; ++d) tmp[g * Dp + d] = A(0);
    }
  }
}
template <class A>
void store_group(const A* tmp, int64_t jj0, int64_t ldt, int64_t D, int64_t Dp, A* t_out, A* r_out) {
  if (t_out)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t g = 0; g < kGroup; ++g) t_out[d * ldt + jj0 + g] = tmp[g * Dp + d];
  if (r_out)
    for (int64_t g = 0; g < kGroup; ++g)
      for (int64_t d = 0; d < Dp; ++d) r_out[(jj0 + g) * Dp + d] = tmp[g * Dp + d];
}
template <class T, class A>
int64_t load_keys(const TaskArgs& a, const TaskIdx& ti, int64_t g, int32_t* idx, A* kt, A* kr, A* vt, A* vr,
                  A* tmp, const Tables<A>& tb) {
  static_assert(kPad % kGroup == 0, "groups must tile the padded key count");
  const int64_t KR = a.K * a.R, HD = a.G * a.D, D = a.D, Dp = a.Dp;  // HD: key row stride (G kv heads)
  const uint8_t* mk = a.mask + (ti.b * a.L + ti.u) * KR;
  int64_t nv = 0;
  for (int64_t j = 0; j < KR; ++j)
    if (mk[j]) idx[nv++] = int32_t(j);
  if (nv == 0) return 0;
  const int64_t nvp = round_up(nv, kPad), ldt = nvp + kSkew;
  const T* k = static_cast<const T*>(a.k) + (ti.b * a.L + ti.u) * KR * HD + g * D;
  const T* v = static_cast<const T*>(a.v) + (ti.b * a.L + ti.u) * KR * HD + g * D;
  for (int64_t jj0 = 0; jj0 < nvp; jj0 += kGroup) {
    load_group<T, A>(k, idx, jj0, nv, HD, D, Dp, a.rotary, a.R, tb, tmp);
    store_group<A>(tmp, jj0, ldt, D, Dp, kt, kr);
    if (vt || vr) {
      load_group<T, A>(v, idx, jj0, nv, HD, D, Dp, false, a.R, tb, tmp);
      store_group<A>(tmp, jj0, ldt, D, Dp, vt, vr);
    }
  }
  return nv;
}

// ---- forward -----------------------------------------------------------------------------------------
template <class T, class A>
void fwd_one(const TaskArgs& a, int64_t task, char* scratch) {
  typedef typename VT<A>::V V;
  constexpr int W = VT<A>::W;
  const TaskIdx ti = task_index(a, task, a.H);
  const int64_t D = a.D, Dp = a.Dp, H = a.H, HD = a.H * a.D, KR = a.K * a.R;
  T* out = static_cast<T*>(a.out) + ti.b * a.N * HD + ti.h * D;  // row t at out + t*HD
  A* lse = static_cast<A*>(a.lse) + ti.b * a.N * H + ti.h;       // row t at lse[t*H]
  const A inf = __builtin_huge_val();
  if (ti.u == 0)
    for (int64_t t = 0; t < a.C - 1 && t < a.N; ++t) {
      zero_row(out + t * HD, D);
      lse[t * H] = inf;
    }
  if (ti.nq <= 0) return;
  const Tables<A> tb{static_cast<const A*>(a.rope_cos), static_cast<const A*>(a.rope_sin)};
  const int64_t krp = round_up(KR, kPad) + kSkew, lds = kKBlock + kSkew;
  int32_t* idx = reinterpret_cast<int32_t*>(scratch);
  int32_t* kpos = idx + KR;  // key positions (position bias only)
  A* kt = reinterpret_cast<A*>(align64(scratch + KR * 8));
  A* vr = kt + krp * Dp;
  A* qb = vr + krp * Dp;
  A* ob = qb + kQBlock * Dp;
  A* s = ob + kQBlock * Dp;
  A* mrow = s + kQBlock * lds;
  A* lrow = mrow + kQBlock;
  A tmp[kGroup * (kMaxD + kDPad)];
  const int64_t nv = load_keys<T, A>(a, ti, ti.h / (a.H / a.G), idx, kt, nullptr, nullptr, vr, tmp, tb);
  if (a.bias) key_positions(idx, nv, a.R, kpos);
  if (nv == 0) {
    for (int64_t i = 0; i < ti.nq; ++i) {
      zero_row(out + (ti.t0 + i) * HD, D);
      lse[(ti.t0 + i) * H] = inf;
    }
    return;
  }
  const int64_t ldt = round_up(nv, kPad) + kSkew;
  const T* q = static_cast<const T*>(a.q) + ti.b * a.N * HD + ti.h * D;
  for (int64_t i0 = 0; i0 < ti.nq; i0 += kQBlock) {
    const int64_t nr = ti.nq - i0 < kQBlock ? ti.nq - i0 : kQBlock;
    for (int64_t i = 0; i < nr; ++i) {
      if (i + kAhead < nr) prefetch_row<0>(q + (ti.t0 + i0 + i + kAhead) * HD, D);
      load_row<T, A>(q + (ti.t0 + i0 + i) * HD, qb + i * Dp, D, Dp, a.rotary, tb, i0 + i, A(a.scale));
      for (int64_t d = 0; d < Dp; ++d) ob[i * Dp + d] = A(0);
      mrow[i] = -inf;
      lrow[i] = A(0);
    }
    for (int64_t j0 = 0; j0 < nv; j0 += kKBlock) {
      const int64_t nb = nv - j0 < kKBlock ? nv - j0 : kKBlock;
      const int64_t nbp = round_up(nb, kPad);
      gemm_nt(qb, Dp, kt + j0, ldt, s, lds, nr, nbp, D);
      for (int64_t i = 0; i < nr; ++i) {
        A* si = s + i * lds;
        if (a.bias) add_bias(si, static_cast<const A*>(a.bias) + (ti.h * a.C + i0 + i) * a.R, kpos + j0, nb);
        for (int64_t j = nb; j < nbp; ++j) si[j] = -inf;
        V vm = vbcast(-inf);
        for (int64_t j = 0; j < nbp; j += W) {
          const V x = vload(si + j);
          vm = x > vm ? x : vm;
        }
        const A mx = hmax<A>(vm);
        const A mnew = mx > mrow[i] ? mx : mrow[i];
        const A corr = mrow[i] == -inf ? A(0) : vexp(vbcast(mrow[i] - mnew))[0];
        V vs = vbcast(A(0));
        const V vmn = vbcast(mnew);
        for (int64_t j = 0; j < nbp; j += W) {
          const V p = vexp(vload(si + j) - vmn);
          vstore(si + j, p);
          vs += p;
        }
        lrow[i] = lrow[i] * corr + hsum<A>(vs);
        mrow[i] = mnew;
        if (corr != A(1))
          for (int64_t d = 0; d < Dp; ++d) ob[i * Dp + d] *= corr;
      }
      acc_rows(ob, Dp, s, lds, 1, vr + j0 * Dp, Dp, nr, nb, Dp);
    }
    for (int64_t i = 0; i < nr; ++i) {
      const A inv = A(1) / lrow[i];
      if (i + kAhead < nr) prefetch_row<1>(out + (ti.t0 + i0 + i + kAhead) * HD, D);
      T* o = out + (ti.t0 + i0 + i) * HD;
      for (int64_t d = 0; d < D; ++d) o[d] = Conv<T>::from(ob[i * Dp + d] * inv);
      lse[(ti.t0 + i0 + i) * H] = mrow[i] + std::log(lrow[i]);
    }
  }
}

// ---- backward ----------------------------------------------------------------------------------------
// One task = (b, chunk u, kv head g): the keys/values are loaded once, then every query head of the group
// adds its share to dK/dV (grouped-query attention; a group of one without it).
template <class T, class A>
void bwd_one(const TaskArgs& a, int64_t task, char* scratch) {
  typedef typename VT<A>::V V;
  constexpr int W = VT<A>::W;
  const TaskIdx ti = task_index(a, task, a.G);
  const int64_t D = a.D, Dp = a.Dp, H = a.H, HD = a.H * a.D, GD = a.G * a.D, KR = a.K * a.R;
  const int64_t grp = a.H / a.G, h0 = ti.h * grp;  // query heads h0 .. h0 + grp - 1
  const int64_t key0 = (ti.b * a.L + ti.u) * KR * GD + ti.h * D;  // + j*GD
  T* dk = static_cast<T*>(a.dk) + key0;
  T* dv = static_cast<T*>(a.dv) + key0;
  if (ti.u == 0)
    for (int64_t h = h0; h < h0 + grp; ++h) {
      T* dq = static_cast<T*>(a.dq) + ti.b * a.N * HD + h * D;
      for (int64_t t = 0; t < a.C - 1 && t < a.N; ++t) zero_row(dq + t * HD, D);
    }
  const uint8_t* mk = a.mask + (ti.b * a.L + ti.u) * KR;
  int64_t nv = 0;
  if (ti.nq > 0)
    for (int64_t j = 0; j < KR; ++j) nv += mk[j] != 0;
  // Keys no query row attends (masked, or a chunk without queries) get exactly zero gradient.
  for (int64_t j = 0; j < KR; ++j)
    if (nv == 0 || !mk[j]) {
      zero_row(dk + j * GD, D);
      zero_row(dv + j * GD, D);
    }
  if (nv == 0) {
    for (int64_t h = h0; h < h0 + grp; ++h) {
      T* dq = static_cast<T*>(a.dq) + ti.b * a.N * HD + h * D;
      for (int64_t i = 0; i < ti.nq; ++i) zero_row(dq + (ti.t0 + i) * HD, D);
    }
    return;
  }
  const Tables<A> tb{static_cast<const A*>(a.rope_cos), static_cast<const A*>(a.rope_sin)};
  const int64_t krp = round_up(KR, kPad) + kSkew, lds = kKBlock + kSkew;
  int32_t* idx = reinterpret_cast<int32_t*>(scratch);
  int32_t* kpos = idx + KR;  // key positions (position bias only)
  A* kt = reinterpret_cast<A*>(align64(scratch + KR * 8));
  A* vt = kt + krp * Dp;      // [D][nvp + kSkew]
  A* qb = vt + krp * Dp;
  A* dqb = qb + kQBlock * Dp;
  A* s = dqb + kQBlock * Dp;  // P
  A* delta = s + kQBlock * lds;
  A* lrow = delta + kQBlock;
  A* kr = lrow + kQBlock;     // [nvp][Dp]
  A* dkb = kr + krp * Dp;
  A* dvb = dkb + krp * Dp;
  A* dob = dvb + krp * Dp;
  A* dp = dob + kQBlock * Dp;
  A tmp[kGroup * (kMaxD + kDPad)];
  load_keys<T, A>(a, ti, ti.h, idx, kt, kr, vt, nullptr, tmp, tb);
  if (a.bias) key_positions(idx, nv, a.R, kpos);
  const int64_t nvp = round_up(nv, kPad), ldt = nvp + kSkew;
  for (int64_t e = 0; e < nvp * Dp; ++e) dkb[e] = dvb[e] = A(0);
  for (int64_t h = h0; h < h0 + grp; ++h) {
    const int64_t row0 = ti.b * a.N * HD + h * D;  // + t*HD
    T* dq = static_cast<T*>(a.dq) + row0;
    const T* q = static_cast<const T*>(a.q) + row0;
    const T* o = static_cast<const T*>(a.out) + row0;
    const T* dout = static_cast<const T*>(a.dout) + row0;
    const A* lse = static_cast<const A*>(a.lse) + ti.b * a.N * H + h;
    for (int64_t i0 = 0; i0 < ti.nq; i0 += kQBlock) {
      const int64_t nr = ti.nq - i0 < kQBlock ? ti.nq - i0 : kQBlock;
      for (int64_t i = 0; i < nr; ++i) {
        const int64_t t = ti.t0 + i0 + i;
        if (i + kAhead < nr) {
          prefetch_row<0>(q + (t + kAhead) * HD, D);
          prefetch_row<0>(dout + (t + kAhead) * HD, D);
          prefetch_row<0>(o + (t + kAhead) * HD, D);
        }
        load_row<T, A>(q + t * HD, qb + i * Dp, D, Dp, a.rotary, tb, i0 + i, A(a.scale));
        load_row<T, A>(dout + t * HD, dob + i * Dp, D, Dp, false, tb, 0, A(1));
        A acc = 0;
        for (int64_t d = 0; d < D; ++d) acc += dob[i * Dp + d] * Conv<T>::to(o[t * HD + d]);
        delta[i] = acc;
        lrow[i] = lse[t * H];
        for (int64_t d = 0; d < Dp; ++d) dqb[i * Dp + d] = A(0);
      }
      for (int64_t j0 = 0; j0 < nv; j0 += kKBlock) {
        const int64_t nb = nv - j0 < kKBlock ? nv - j0 : kKBlock;
        const int64_t nbp = round_up(nb, kPad);
        gemm_nt(qb, Dp, kt + j0, ldt, s, lds, nr, nbp, D);
        gemm_nt(dob, Dp, vt + j0, ldt, dp, lds, nr, nbp, D);
        for (int64_t i = 0; i < nr; ++i) {
          A* si = s + i * lds;
          A* dpi = dp + i * lds;
          const int64_t brow = (h * a.C + i0 + i) * a.R;  // position-bias row of this query
          if (a.bias) add_bias(si, static_cast<const A*>(a.bias) + brow, kpos + j0, nb);
          // lse is finite here (the chunk has a valid key); padded columns get P = 0.
          const V vl = vbcast(lrow[i]), vd = vbcast(delta[i]);
          for (int64_t j = 0; j < nbp; j += W) vstore(si + j, vexp(vload(si + j) - vl));
          for (int64_t j = nb; j < nbp; ++j) si[j] = A(0);
          // P stays in s for dV; dS goes to dp (and, summed over batch/chunks/neighbours, is dbias).
          for (int64_t j = 0; j < nbp; j += W) vstore(dpi + j, vload(si + j) * (vload(dpi + j) - vd));
          if (a.dbias) {
            A* db = static_cast<A*>(a.dbias) + brow;
            for (int64_t j = 0; j < nb; ++j) db[kpos[j0 + j]] += dpi[j];
          }
        }
        acc_rows(dvb + j0 * Dp, Dp, s, 1, lds, dob, Dp, nb, nr, Dp);     // dV += P^T dO
        acc_rows(dkb + j0 * Dp, Dp, dp, 1, lds, qb, Dp, nb, nr, Dp);     // dK += dS^T Qs
        acc_rows(dqb, Dp, dp, lds, 1, kr + j0 * Dp, Dp, nr, nb, Dp);     // dQs += dS K
      }
      for (int64_t i = 0; i < nr; ++i) {
        if (i + kAhead < nr) prefetch_row<1>(dq + (ti.t0 + i0 + i + kAhead) * HD, D);
        store_grad_row<T, A>(dqb + i * Dp, dq + (ti.t0 + i0 + i) * HD, D, a.rotary, tb, i0 + i, A(a.scale));
      }
    }
  }
  for (int64_t jj = 0; jj < nv; ++jj) {
    const int64_t j = idx[jj];
    if (jj + kAhead < nv) {
      prefetch_row<1>(dk + int64_t(idx[jj + kAhead]) * GD, D);
      prefetch_row<1>(dv + int64_t(idx[jj + kAhead]) * GD, D);
    }
    store_grad_row<T, A>(dkb + jj * Dp, dk + j * GD, D, a.rotary, tb, j % a.R, A(1));
    store_grad_row<T, A>(dvb + jj * Dp, dv + j * GD, D, false, tb, 0, A(1));
  }
}

template <class T, class A>
void run_tasks(const TaskArgs& a, int64_t begin, int64_t end, void* scratch, bool bwd) {
  for (int64_t t = begin; t < end; ++t) {
    if (bwd)
      bwd_one<T, A>(a, t, static_cast<char*>(scratch));
    else
      fwd_one<T, A>(a, t, static_cast<char*>(scratch));
  }
}

void dispatch(const TaskArgs& a, int64_t begin, int64_t end, void* scratch, bool bwd) {
  switch (a.st) {
    case Storage::F32: run_tasks<float, float>(a, begin, end, scratch, bwd); break;
    case Storage::F64: run_tasks<double, double>(a, begin, end, scratch, bwd); break;
    case Storage::BF16: run_tasks<BF16, float>(a, begin, end, scratch, bwd); break;
    case Storage::F16: run_tasks<F16, float>(a, begin, end, scratch, bwd); break;
  }
}

}  // namespace

void fwd_tasks(const TaskArgs& a, int64_t begin, int64_t end, void* scratch) {
  dispatch(a, begin, end, scratch, false);
}
void bwd_tasks(const TaskArgs& a, int64_t begin, int64_t end, void* scratch) {
  dispatch(a, begin, end, scratch, true);
}
