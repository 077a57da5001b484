// Argument validation shared by the CPU and CUDA rope paths (the Python wrapper checks first; this is the
// core's own guard so a direct _C call can never read out of bounds).
#include "ops/rope.h"

namespace pyretro {

void validate_rope(const RopeArgs& a) {
  PYRETRO_CHECK(!a.xs.empty() && a.xs.size() == a.outs.size() && a.xs.size() <= 2, ValueError,
                "rope: expected 1 or 2 input tensors and as many outputs");
  const TensorView& x0 = a.xs[0];
  const TensorView& pos = a.positions;
  for (size_t j = 0; j < a.xs.size(); ++j) {
    const TensorView& x = a.xs[j];
    const TensorView& o = a.outs[j];
    check_ndim(x, 4);
    check_ndim(o, 4);
    PYRETRO_CHECK(x.dtype == DType::Float32 || x.dtype == DType::Float64 || x.dtype == DType::BFloat16 ||
                      x.dtype == DType::Float16,
                  TypeError, x.name, ": dtype must be float16, bfloat16, float32 or float64, got ",
                  dtype_name(x.dtype));
    check_dtype(x, x0.dtype);
    check_dtype(o, x0.dtype);
    check_same_device(x, x0);
    check_same_device(o, x0);
    for (int d = 0; d < 4; ++d) check_dim(o, d, x.shape[d]);
    check_dim(x, 0, x0.shape[0]);
    check_dim(x, 1, x0.shape[1]);
    check_dim(x, 3, x0.shape[3]);
    PYRETRO_CHECK(x.shape[3] <= 1 || x.stride[3] == 1, ValueError, x.name, ": last dimension must be contiguous");
    PYRETRO_CHECK(o.shape[3] <= 1 || o.stride[3] == 1, ValueError, o.name, ": last dimension must be contiguous");
  }
  const int64_t R = a.p.rotary_dim, D = x0.shape[3];
  PYRETRO_CHECK(R > 0 && R <= D && R % 2 == 0, ValueError, "rotary_dim: must be even and in (0, D=", D, "], got ",
                R);
  PYRETRO_CHECK(a.p.theta > 0, ValueError, "theta: must be > 0, got ", a.p.theta);
  check_ndim(pos, 2);
  PYRETRO_CHECK(pos.dtype == DType::Int32 || pos.dtype == DType::Int64, TypeError,
                "positions: dtype must be int32 or int64, got ", dtype_name(pos.dtype));
  check_same_device(pos, x0);
  PYRETRO_CHECK(pos.shape[0] == 1 || pos.shape[0] == x0.shape[0], ValueError, "positions: shape ", pos.shape_str(),
                " must be [1, S] or [B, S] for x of shape ", x0.shape_str());
  check_dim(pos, 1, x0.shape[1]);
}

}  // namespace pyretro
