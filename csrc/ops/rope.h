// Rotary position embedding kernels (CPU: csrc/ops/cpu/rope_cpu.cpp, CUDA: csrc/ops/cuda/rope_cuda.cu).
// Semantics: pyretro/ops/reference/rope.py. Arguments are validated by validate_rope() before a launch.
#pragma once
#include <cstdint>
#include <vector>

#include "pyretro/tensor_view.h"

namespace pyretro {

struct RopeParams {
  double theta = 10000.0;
  int64_t rotary_dim = 0;  // even, 0 < rotary_dim <= D
  bool interleaved = false;  // GPT-J pairs (2i, 2i+1); otherwise GPT-NeoX pairs (i, i + R/2)
  bool inverse = false;      // rotate by -angle (the backward pass)
};

// xs[j], outs[j]: [B, S, H_j, D] (any strides, unit-stride last dim), same dtype/device; outs[j] may alias
// xs[j] exactly (in place). positions: [Bp, S] int32/int64 with Bp == 1 (shared) or Bp == B.
struct RopeArgs {
  std::vector<TensorView> xs, outs;
  TensorView positions;
  RopeParams p;
};

void validate_rope(const RopeArgs& a);  // throws ValueError/TypeError naming the argument
void rope_cpu(const RopeArgs& a);
#ifdef PYRETRO_WITH_CUDA
void rope_cuda(const RopeArgs& a, int64_t stream);
#endif

}  // namespace pyretro
