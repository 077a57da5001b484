// Rotary position embedding, CUDA: one launch on the caller's stream for x (or q and k together).
// The per-thread body, launch plan and vector width live in rope_kernel.cuh (shared with the host simulator).
#include <cuda_runtime.h>

#include <mutex>

#include "ops/cuda/rope_kernel.cuh"
#include "ops/rope.h"

namespace pyretro {
namespace {

using rope_kernel::KernelArgs;

template <class T, class P, int VEC>
__global__ void rope_kernel_launch(const KernelArgs a) {
  const rope_kernel::ThreadIndex ti{threadIdx.x, threadIdx.y, blockIdx.x, blockDim.x, blockDim.y, gridDim.x};
  rope_kernel::rope_thread<T, P, VEC>(a, ti);
}

int sm_count(int device) {
  static std::mutex mu;
  static int cache[64] = {};
  std::lock_guard<std::mutex> lock(mu);
  if (device < 0 || device >= 64) return 132;
  if (!cache[device]) {
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0) n = 132;
    cache[device] = n;
  }
  return cache[device];
}

template <class T, class P, int VEC>
void launch(const RopeArgs& ra, KernelArgs ka, cudaStream_t stream) {
  const rope_kernel::LaunchShape ls = rope_kernel::plan(ka, ra.xs[0].shape[3], VEC, sm_count(ra.xs[0].device_index));
  rope_kernel_launch<T, P, VEC><<<ls.grid, dim3(ls.bx, ls.by), 0, stream>>>(ka);
  const cudaError_t err = cudaGetLastError();
  PYRETRO_CHECK(err == cudaSuccess, ValueError, "rope: CUDA launch failed: ", cudaGetErrorString(err));
}

template <class T, class P>
void dispatch_vec(const RopeArgs& ra, const KernelArgs& ka, cudaStream_t stream) {
  switch (rope_kernel::pick_vec<T>(ra)) {
    case 8: launch<T, P, 8>(ra, ka, stream); break;
    case 4: launch<T, P, 4>(ra, ka, stream); break;
    case 2: launch<T, P, 2>(ra, ka, stream); break;
    default: launch<T, P, 1>(ra, ka, stream); break;
  }
}

template <class T>
void dispatch_pos(const RopeArgs& ra, const KernelArgs& ka, cudaStream_t stream) {
  if (ra.positions.dtype == DType::Int32) dispatch_vec<T, int32_t>(ra, ka, stream);
  else dispatch_vec<T, int64_t>(ra, ka, stream);
}

// Makes x's device current for the launch and restores the caller's device afterwards (also on error).
struct DeviceGuard {
  int prev = 0;
  bool changed = false;
  explicit DeviceGuard(int device) {
    cudaGetDevice(&prev);
    changed = device >= 0 && device != prev;
    if (changed) cudaSetDevice(device);
  }
  ~DeviceGuard() {
    if (changed) cudaSetDevice(prev);
  }
};

}  // namespace

void rope_cuda(const RopeArgs& ra, int64_t stream_handle) {
  validate_rope(ra);
  for (const auto& x : ra.xs) check_device(x, DeviceType::CUDA);
  if (ra.xs[0].numel() == 0) return;
  const KernelArgs ka = rope_kernel::make_args(ra);
  DeviceGuard guard(ra.xs[0].device_index);
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  switch (ra.xs[0].dtype) {
    case DType::Float32: dispatch_pos<float>(ra, ka, stream); break;
    case DType::Float64: dispatch_pos<double>(ra, ka, stream); break;
    case DType::BFloat16: dispatch_pos<__nv_bfloat16>(ra, ka, stream); break;
    case DType::Float16: dispatch_pos<__half>(ra, ka, stream); break;
    default: break;  // rejected by validate_rope
  }
}

}  // namespace pyretro
