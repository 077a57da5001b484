// Smallest CUDA translation unit: proves the CUDA toolchain builds and links (static cudart), and lets
// build_info() report the runtime. Must not fail on a machine with no driver.
#include <cuda_runtime.h>

#include "pyretro/cuda_info.h"

namespace pyretro {

int cuda_runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

}  // namespace pyretro
