// Interface between the CPU CCA dispatcher (cca_cpu.cpp) and the per-ISA task kernels
// (cca_cpu_kernels.h, compiled once per instruction set). Plain data only: the ISA translation units must
// not instantiate std templates (their COMDAT copies could be compiled for the wrong ISA).
#pragma once
#include <cstdint>

namespace pyretro {
namespace cca_cpu {

enum class Storage : int { F32 = 0, F64 = 1, BF16 = 2, F16 = 3 };

constexpr int64_t kQBlock = 64;    // query rows per tile
constexpr int64_t kKBlock = 128;   // keys per score tile (online softmax step)
constexpr int64_t kPad = 32;       // key counts are padded to this (covers every ISA's column block)
constexpr int64_t kSkew = 16;     // extra leading-dim elements: no power-of-two strides (cache-set conflicts)
constexpr int64_t kDPad = 16;     // head dim is padded to this (a whole number of vectors)
constexpr int64_t kMaxD = 128;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

struct TaskArgs {
  int64_t B, N, H, D, L, K, R, C;
  int64_t G;         // key/value heads; query head h reads kv head h / (H / G)
  int64_t Dp;        // D padded to kDPad with zeros (vector loops run over whole vectors)
  double scale;
  bool rotary;
  Storage st;
  const void* q; const void* k; const void* v; const uint8_t* mask;
  void* out; void* lse;  // lse: float, or double for F64
  const void* dout; void* dq; void* dk; void* dv;
  // rotary tables [P][D/2] of cos then sin, P = max(C, R): float for 32/16-bit storage, double for F64
  const void* rope_cos; const void* rope_sin;
  // position bias [H][C][R] and its gradient (compute type: float, double for F64); null = none.
  // dbias is a per-thread accumulator during the backward (cca_cpu.cpp sums them).
  const void* bias; void* dbias;
};

// Scratch bytes one thread needs for one task (compute type: 4 or 8 bytes).
inline int64_t scratch_bytes(const TaskArgs& a, bool bwd) {
  const int64_t es = a.st == Storage::F64 ? 8 : 4;
  const int64_t kr = a.K * a.R, krp = round_up(kr, kPad) + kSkew, qb = kQBlock, kb = kKBlock + kSkew;
  int64_t n = krp * a.Dp * 2 + qb * a.Dp * 2 + qb * kb + 2 * qb;  // Kt, V, Q, O, S, m, l
  if (bwd) n += krp * a.Dp * 3 + qb * a.Dp * 2 + qb * kb;         // K rows, dK, dV, dO, dQ, dP
  return n * es + kr * 8 + 256;  // + valid-key index and key positions (int32 each), alignment slack
}

// Each processes tasks [begin, end): forward of the B*L*H (b, u, h) tasks, backward of the B*L*G (b, u, g)
// tasks (g = kv head; the task loops over its H/G query heads); `scratch` holds scratch_bytes().
#define PYRETRO_CCA_DECLARE(ns)                                                             \
  namespace ns {                                                                            \
  void fwd_tasks(const TaskArgs& a, int64_t begin, int64_t end, void* scratch);             \
  void bwd_tasks(const TaskArgs& a, int64_t begin, int64_t end, void* scratch);             \
  bool available();                                                                         \
  }
PYRETRO_CCA_DECLARE(generic)
PYRETRO_CCA_DECLARE(avx2)
PYRETRO_CCA_DECLARE(avx512)
#undef PYRETRO_CCA_DECLARE

}  // namespace cca_cpu
}  // namespace pyretro
