// Fused chunked cross-attention (Retro CCA): shared declarations of the CPU and CUDA paths.
// Semantics: docs/ops_cca.md. Layouts (all contiguous): q/out/dout/dq [B,N,H,D], k/v/dk/dv [B,L,K,R,G,D]
// (G = key/value heads, H % G == 0: query head h reads kv head h / (H / G), grouped-query attention),
// mask [B,L,K,R] bool, lse [B,N,H] (float32; float64 for float64 inputs) = log-sum-exp of the scaled
// scores of each query row, +inf for rows that attend to nothing (their output is exactly 0).
// Optional position bias [H,C,R] (and its gradient dbias, same shape; float32, float64 for float64 inputs):
// added to the score of query row i of an attending chunk and the key at position r of every neighbour.
#pragma once
#include <cstdint>

#include "pyretro/tensor_view.h"

namespace pyretro {

struct CcaDims {
  int64_t B = 0, N = 0, H = 0, D = 0, L = 0, K = 0, R = 0, C = 0;  // C = chunk_len
  int64_t G = 0;  // key/value heads (== H without grouped-query attention)
  double scale = 1.0;
  bool rotary = false;
  double theta = 10000.0;
};

// Checks ranks, shapes, dtypes, devices and contiguity of every view (throws ValueError/TypeError naming
// the argument) and returns the dims. `lse`/`out` etc. may be null for the inputs-only check.
CcaDims cca_check(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& mask,
                  const TensorView* out, const TensorView* lse, int64_t chunk_len, double scale, bool rotary,
                  double theta, const TensorView* bias = nullptr);
// Checks a bias-shaped view (bias or dbias) against the dims and q.
void cca_check_bias(const CcaDims& d, const TensorView& q, const TensorView& bias);

// bias / dbias: null when the call has no position bias. dbias is zeroed and filled by the backward.
void cca_fwd_cpu(const CcaDims& d, const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& mask, const TensorView& out, const TensorView& lse, const TensorView* bias);
void cca_bwd_cpu(const CcaDims& d, const TensorView& dout, const TensorView& q, const TensorView& k,
                 const TensorView& v, const TensorView& mask, const TensorView& out, const TensorView& lse,
                 const TensorView& dq, const TensorView& dk, const TensorView& dv, const TensorView* bias,
                 const TensorView* dbias);
const char* cca_cpu_isa();  // which CPU kernel variant the dispatcher picked ("avx512", "avx2", "generic")

#ifdef PYRETRO_WITH_CUDA
// One kernel launch each on `stream` (a cudaStream_t as integer). variant: 0 = portable (sm_80+).
// The CUDA kernels need G == H (the Python wrapper expands grouped kv heads before calling them).
void cca_fwd_cuda(const CcaDims& d, const TensorView& q, const TensorView& k, const TensorView& v,
                  const TensorView& mask, const TensorView& out, const TensorView& lse, const TensorView* bias,
                  int64_t stream, int variant);
// dbias must be zero-filled by the caller (the kernel accumulates into it with atomics).
void cca_bwd_cuda(const CcaDims& d, const TensorView& dout, const TensorView& q, const TensorView& k,
                  const TensorView& v, const TensorView& mask, const TensorView& out, const TensorView& lse,
                  const TensorView& dq, const TensorView& dk, const TensorView& dv, const TensorView* bias,
                  const TensorView* dbias, int64_t stream, int variant);
#endif

}  // namespace pyretro
