#pragma once
namespace pyretro {
// Implemented in csrc/ops/cuda/cuda_info.cu (CUDA builds only).
int cuda_runtime_version();  // e.g. 13000
int cuda_device_count();     // 0 when there is no driver or device (never throws)
}  // namespace pyretro
