// Bindings of the fused chunked cross-attention kernels. Outputs are allocated by torch in Python
// (pyretro/ops/_cca_lib.py) and passed in as views; CUDA calls take torch's current stream handle.
#include "api/pyconv.h"
#include "api/registry.h"
#include "ops/cca.h"

#include <optional>

namespace py = pybind11;

namespace pyretro {
namespace {

void same_shape(const TensorView& a, const TensorView& b) {
  PYRETRO_CHECK(a.ndim == b.ndim, ValueError, a.name, ": shape ", a.shape_str(), " != ", b.name, " ", b.shape_str());
  for (int i = 0; i < a.ndim; ++i)
    PYRETRO_CHECK(a.shape[i] == b.shape[i], ValueError, a.name, ": shape ", a.shape_str(), " != ", b.name, " ",
                  b.shape_str());
  check_dtype(a, b.dtype);
  check_contiguous(a);
  check_same_device(a, b);
}

// The CUDA kernels index k/v with the query head; pyretro.ops.chunked_cross_attention expands grouped
// kv heads (views + one copy) before calling them.
[[maybe_unused]] void check_full_heads(const CcaDims& d, const TensorView& k) {
  PYRETRO_CHECK(d.G == d.H, ValueError, k.name, ": the CUDA kernels need as many key/value heads as query heads (",
                d.H, "), got ", d.G, "; call pyretro.ops.chunked_cross_attention, which expands them");
}

// Optional tensor argument: None -> no view.
std::optional<TensorView> opt_view(py::handle x, const char* name) {
  if (x.is_none()) return std::nullopt;
  return to_view(x, name);
}
const TensorView* ptr(const std::optional<TensorView>& v) { return v ? &*v : nullptr; }

}  // namespace

void register_cca(py::module_& m) {
  m.def(
      "cca_fwd",
      [](py::handle q, py::handle k, py::handle v, py::handle mask, py::handle out, py::handle lse, int64_t chunk_len,
         double scale, bool rotary, double theta, int64_t stream, int variant, py::handle bias) {
        TensorView vq = to_view(q, "q"), vk = to_view(k, "k"), vv = to_view(v, "v"), vm = to_view(mask, "key_mask");
        TensorView vo = to_view(out, "out"), vl = to_view(lse, "lse");
        const std::optional<TensorView> vb = opt_view(bias, "bias");
        const CcaDims d = cca_check(vq, vk, vv, vm, &vo, &vl, chunk_len, scale, rotary, theta, ptr(vb));
        if (vq.device == DeviceType::CPU) {
          py::gil_scoped_release nogil;
          cca_fwd_cpu(d, vq, vk, vv, vm, vo, vl, ptr(vb));
          return;
        }
#ifdef PYRETRO_WITH_CUDA
        check_full_heads(d, vk);
        cca_fwd_cuda(d, vq, vk, vv, vm, vo, vl, ptr(vb), stream, variant);
#else
        throw ValueError("cca_fwd: this build of pyretro has no CUDA kernels");
#endif
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("key_mask"), py::arg("out"), py::arg("lse"),
      py::arg("chunk_len"), py::arg("scale"), py::arg("rotary"), py::arg("theta"), py::arg("stream") = 0,
      py::arg("variant") = 0, py::arg("bias") = py::none(),
      "Fused CCA forward into preallocated out [B,N,H,D] and lse [B,N,H] (views from pyretro._tensor.view); "
      "optional position bias [H,C,R].");
  m.def(
      "cca_bwd",
      [](py::handle dout, py::handle q, py::handle k, py::handle v, py::handle mask, py::handle out, py::handle lse,
         py::handle dq, py::handle dk, py::handle dv, int64_t chunk_len, double scale, bool rotary, double theta,
         int64_t stream, int variant, py::handle bias, py::handle dbias) {
        TensorView vq = to_view(q, "q"), vk = to_view(k, "k"), vv = to_view(v, "v"), vm = to_view(mask, "key_mask");
        TensorView vo = to_view(out, "out"), vl = to_view(lse, "lse"), vdo = to_view(dout, "grad_out");
        TensorView vdq = to_view(dq, "dq"), vdk = to_view(dk, "dk"), vdv = to_view(dv, "dv");
        const std::optional<TensorView> vb = opt_view(bias, "bias"), vdb = opt_view(dbias, "dbias");
        const CcaDims d = cca_check(vq, vk, vv, vm, &vo, &vl, chunk_len, scale, rotary, theta, ptr(vb));
        same_shape(vdo, vq);
        same_shape(vdq, vq);
        same_shape(vdk, vk);
        same_shape(vdv, vv);
        PYRETRO_CHECK(!vdb || vb, ValueError, "dbias: given without bias");
        if (vdb) cca_check_bias(d, vq, *vdb);
        if (vq.device == DeviceType::CPU) {
          py::gil_scoped_release nogil;
          cca_bwd_cpu(d, vdo, vq, vk, vv, vm, vo, vl, vdq, vdk, vdv, ptr(vb), ptr(vdb));
          return;
        }
#ifdef PYRETRO_WITH_CUDA
        check_full_heads(d, vk);
        cca_bwd_cuda(d, vdo, vq, vk, vv, vm, vo, vl, vdq, vdk, vdv, ptr(vb), ptr(vdb), stream, variant);
#else
        throw ValueError("cca_bwd: this build of pyretro has no CUDA kernels");
#endif
      },
      py::arg("grad_out"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("key_mask"), py::arg("out"),
      py::arg("lse"), py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("chunk_len"), py::arg("scale"),
      py::arg("rotary"), py::arg("theta"), py::arg("stream") = 0, py::arg("variant") = 0,
      py::arg("bias") = py::none(), py::arg("dbias") = py::none(),
      "Fused CCA backward into preallocated dq, dk, dv (same shapes as q, k, v) and, with a position bias, "
      "its gradient dbias [H,C,R] (zeroed and filled here; the CUDA path needs it zero-filled).");
  m.def("cca_cpu_isa", [] { return std::string(cca_cpu_isa()); },
        "The CPU CCA kernel variant in use (avx512, avx2 or generic; PYRETRO_CCA_CPU_ISA overrides).");
}

}  // namespace pyretro
