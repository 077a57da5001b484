#include <atomic>
#include <thread>
#include <vector>

#include "api/registry.h"
#include "pyretro/errors.h"
#include "pyretro/parallel.h"
#ifdef PYRETRO_WITH_CUDA
#include "pyretro/cuda_info.h"
#endif

namespace py = pybind11;

namespace pyretro {

void register_info(py::module_& m) {
  m.def("build_info", [] {
    py::dict d;
    d["version"] = PYRETRO_VERSION_INFO;
    d["build_type"] = PYRETRO_BUILD_TYPE;
    d["compiler"] = PYRETRO_CXX_COMPILER;
    d["cxx_standard"] = static_cast<long>(__cplusplus);
    d["sanitize"] = PYRETRO_SANITIZE_INFO;
    d["threading"] = "pyretro thread pool (std::thread)";
    d["hardware_threads"] = std::thread::hardware_concurrency();
#ifdef PYRETRO_WITH_CUDA
    d["cuda_compiled"] = true;
    d["cuda_archs"] = PYRETRO_CUDA_ARCHS_INFO;
    d["cuda_runtime_version"] = cuda_runtime_version();
    d["cuda_device_count"] = cuda_device_count();
#else
    d["cuda_compiled"] = false;
    d["cuda_archs"] = "";
    d["cuda_runtime_version"] = 0;
    d["cuda_device_count"] = 0;
#endif
#ifdef PYRETRO_HAVE_CUTLASS
    d["cutlass_version"] = PYRETRO_CUTLASS_VERSION_INFO;
#else
    d["cutlass_version"] = py::none();
#endif
    return d;
  });
  m.def("set_num_threads", &set_num_threads, py::arg("n"), "Threads used by the CPU paths (<= 0: all cores).");
  m.def("get_num_threads", &get_num_threads);
  // Test hook: checks that a C++ exception of each kind reaches Python as the matching exception.
  m.def("_raise", [](const std::string& kind, const std::string& msg) {
    if (kind == "value") throw ValueError(msg);
    if (kind == "type") throw TypeError(msg);
    if (kind == "os") throw OSError(msg);
    if (kind == "index") throw IndexError(msg);
  });
  // Test hook: sums 0..n-1 with parallel_for, so the pool is exercised from Python.
  m.def("_parallel_sum", [](int64_t n, int64_t grain) {
    std::atomic<int64_t> total{0};
    parallel_for(n, grain, [&](int64_t b, int64_t e) {
      int64_t s = 0;
      for (int64_t i = b; i < e; ++i) s += i;
      total += s;
    });
    return total.load();
  });
}

}  // namespace pyretro
