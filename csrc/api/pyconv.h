// Python <-> core conversions, used only by the binding files (csrc/api/bind_*.cpp).
#pragma once
#include <pybind11/pybind11.h>

#include "pyretro/tensor_view.h"

namespace pyretro {
namespace py = pybind11;

// Builds a TensorView from the tuple made by pyretro._tensor.view():
// (data_ptr, shape, strides_in_elements, dtype_code, device_type, device_index).
inline TensorView to_view(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::tuple>(obj))
    throw TypeError(str(name, ": expected a tensor view tuple (use pyretro._tensor.view)"));
  auto t = obj.cast<py::tuple>();
  PYRETRO_CHECK(t.size() == 6, TypeError, name, ": malformed tensor view tuple");
  TensorView v;
  v.name = name;
  v.data = reinterpret_cast<void*>(t[0].cast<uintptr_t>());
  auto shape = t[1].cast<py::tuple>();
  auto stride = t[2].cast<py::tuple>();
  PYRETRO_CHECK(shape.size() <= kMaxDims, ValueError, name, ": at most ", kMaxDims, " dimensions supported");
  PYRETRO_CHECK(shape.size() == stride.size(), TypeError, name, ": shape and strides differ in length");
  v.ndim = static_cast<int32_t>(shape.size());
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = shape[i].cast<int64_t>();
    v.stride[i] = stride[i].cast<int64_t>();
  }
  int code = t[3].cast<int>();
  PYRETRO_CHECK(code >= 0 && code <= 11, TypeError, name, ": unsupported dtype code ", code);
  v.dtype = static_cast<DType>(code);
  int dev = t[4].cast<int>();
  PYRETRO_CHECK(dev == 0 || dev == 1, ValueError, name, ": unsupported device type ", dev);
  v.device = static_cast<DeviceType>(dev);
  v.device_index = t[5].cast<int32_t>();
  PYRETRO_CHECK(v.data != nullptr || v.numel() == 0, ValueError, name, ": null data pointer");
  return v;
}

}  // namespace pyretro
