// CPU CCA kernels for AVX-512 (64-byte vectors), selected at run time by cca_cpu.cpp when the CPU has them.
// Only this file's functions are compiled for the extension (GCC target pragma), so the build needs no -march.
#include <cmath>
#include <cstdint>

#include "ops/cpu/cca_cpu_task.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")
namespace pyretro {
namespace cca_cpu {
namespace avx512 {
#define CCA_VBYTES 64
#include "ops/cpu/cca_cpu_kernels.h"
#undef CCA_VBYTES
}  // namespace avx512
}  // namespace cca_cpu
}  // namespace pyretro
#pragma GCC pop_options
namespace pyretro {
namespace cca_cpu {
namespace avx512 {
bool available() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
}
}  // namespace avx512
}  // namespace cca_cpu
}  // namespace pyretro
#else
namespace pyretro {
namespace cca_cpu {
namespace avx512 {
bool available() { return false; }
void fwd_tasks(const TaskArgs&, int64_t, int64_t, void*) {}
void bwd_tasks(const TaskArgs&, int64_t, int64_t, void*) {}
}  // namespace avx512
}  // namespace cca_cpu
}  // namespace pyretro
#endif
