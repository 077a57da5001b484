// A non-owning view of a tensor passed from Python as raw pointer + shape + strides + dtype + device.
// The core never links libtorch: torch tensors and numpy arrays are both described this way
// (pyretro/_tensor.py builds the tuple), which is what lets one wheel serve every torch version.
#pragma once
#include <cstdint>
#include <string>

#include "pyretro/errors.h"

namespace pyretro {

// Codes shared with pyretro/_tensor.py (DTYPE_CODES). Never renumber.
enum class DType : int32_t {
  Bool = 0, UInt8 = 1, Int8 = 2, Int16 = 3, Int32 = 4, Int64 = 5,
  Float16 = 6, BFloat16 = 7, Float32 = 8, Float64 = 9, UInt16 = 10, UInt32 = 11,
};
enum class DeviceType : int32_t { CPU = 0, CUDA = 1 };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::Bool: return "bool";       case DType::UInt8: return "uint8";
    case DType::Int8: return "int8";       case DType::Int16: return "int16";
    case DType::Int32: return "int32";     case DType::Int64: return "int64";
    case DType::Float16: return "float16"; case DType::BFloat16: return "bfloat16";
    case DType::Float32: return "float32"; case DType::Float64: return "float64";
    case DType::UInt16: return "uint16";   case DType::UInt32: return "uint32";
  }
  return "unknown";
}

inline int dtype_size(DType d) {
  switch (d) {
    case DType::Bool: case DType::UInt8: case DType::Int8: return 1;
    case DType::Int16: case DType::UInt16: case DType::Float16: case DType::BFloat16: return 2;
    case DType::Int32: case DType::UInt32: case DType::Float32: return 4;
    case DType::Int64: case DType::Float64: return 8;
  }
  return 0;
}

constexpr int kMaxDims = 8;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::Float32;
  DeviceType device = DeviceType::CPU;
  int32_t device_index = -1;
  int32_t ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};  // in elements, like torch
  std::string name;               // argument name, for error messages

  int64_t size(int d) const { return shape[d < 0 ? d + ndim : d]; }
  int64_t numel() const { int64_t n = 1; for (int i = 0; i < ndim; ++i) n *= shape[i]; return n; }
  bool is_contiguous() const {
    if (numel() == 0) return true;  // numpy gives empty arrays stride 0
    int64_t expect = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && stride[i] != expect) return false;
      expect *= shape[i];
    }
    return true;
  }
  template <class T> T* ptr() const { return static_cast<T*>(data); }
  std::string shape_str() const {
    std::string s = "[";
    for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

// --- argument checks: each names the argument and what was expected --------------------------------
inline void check_ndim(const TensorView& t, int ndim) {
  PYRETRO_CHECK(t.ndim == ndim, ValueError, t.name, ": expected ", ndim, " dimensions, got shape ", t.shape_str());
}
inline void check_dtype(const TensorView& t, DType d) {
  PYRETRO_CHECK(t.dtype == d, TypeError, t.name, ": expected dtype ", dtype_name(d), ", got ", dtype_name(t.dtype));
}
inline void check_contiguous(const TensorView& t) {
  PYRETRO_CHECK(t.is_contiguous(), ValueError, t.name, ": must be contiguous (shape ", t.shape_str(), ")");
}
inline void check_device(const TensorView& t, DeviceType dev) {
  PYRETRO_CHECK(t.device == dev, ValueError, t.name, ": expected a ", dev == DeviceType::CPU ? "CPU" : "CUDA",
                " tensor");
}
inline void check_same_device(const TensorView& a, const TensorView& b) {
  PYRETRO_CHECK(a.device == b.device && a.device_index == b.device_index, ValueError, a.name, " and ", b.name,
                " are on different devices");
}
inline void check_dim(const TensorView& t, int d, int64_t expect) {
  PYRETRO_CHECK(t.size(d) == expect, ValueError, t.name, ": dimension ", d, " must be ", expect, ", got shape ",
                t.shape_str());
}

}  // namespace pyretro
