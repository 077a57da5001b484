// _C.rope(xs, outs, positions, theta, rotary_dim, interleaved, inverse, stream): one kernel call rotating
// each xs[j] ([B, S, H_j, D] views) into outs[j] (may be the same tensor). Called by pyretro/ops/rope.py.
#include <pybind11/stl.h>

#include "api/pyconv.h"
#include "api/registry.h"
#include "ops/rope.h"

namespace py = pybind11;

namespace pyretro {

void register_rope(py::module_& m) {
  m.def(
      "rope",
      [](const py::list& xs, const py::list& outs, const py::handle& positions, double theta, int64_t rotary_dim,
         bool interleaved, bool inverse, int64_t stream) {
        RopeArgs a;
        const char* xn[2] = {"x", "k"};
        const char* on[2] = {"out", "out_k"};
        PYRETRO_CHECK(xs.size() >= 1 && xs.size() <= 2 && outs.size() == xs.size(), ValueError,
                      "rope: expected 1 or 2 tensors and as many outputs");
        for (size_t j = 0; j < xs.size(); ++j) {
          a.xs.push_back(to_view(xs[j], xs.size() == 2 && j == 0 ? "q" : xn[j]));
          a.outs.push_back(to_view(outs[j], on[j]));
        }
        a.positions = to_view(positions, "positions");
        a.p.theta = theta;
        a.p.rotary_dim = rotary_dim;
        a.p.interleaved = interleaved;
        a.p.inverse = inverse;
        validate_rope(a);
        if (a.xs[0].device == DeviceType::CPU) {
          py::gil_scoped_release nogil;
          rope_cpu(a);
          return;
        }
#ifdef PYRETRO_WITH_CUDA
        rope_cuda(a, stream);
#else
        throw ValueError("x: is a CUDA tensor but pyretro was built without CUDA");
#endif
      },
      py::arg("xs"), py::arg("outs"), py::arg("positions"), py::arg("theta"), py::arg("rotary_dim"),
      py::arg("interleaved"), py::arg("inverse"), py::arg("stream") = 0,
      "Rotary position embedding of each xs[j] into outs[j] (see pyretro.ops.rope).");
}

}  // namespace pyretro
