// CPU CCA kernels for AVX2 + FMA (32-byte vectors), selected at run time by cca_cpu.cpp when the CPU has them.
// Only this file's functions are compiled for the extension (GCC target pragma), so the build needs no -march.
#include <cmath>
#include <cstdint>

#include "ops/cpu/cca_cpu_task.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace pyretro {
namespace cca_cpu {
namespace avx2 {
#define CCA_VBYTES 32
#include "ops/cpu/cca_cpu_kernels.h"
#undef CCA_VBYTES
}  // namespace avx2
}  // namespace cca_cpu
}  // namespace pyretro
#pragma GCC pop_options
namespace pyretro {
namespace cca_cpu {
namespace avx2 {
bool available() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
}  // namespace avx2
}  // namespace cca_cpu
}  // namespace pyretro
#else
namespace pyretro {
namespace cca_cpu {
namespace avx2 {
bool available() { return false; }
void fwd_tasks(const TaskArgs&, int64_t, int64_t, void*) {}
void bwd_tasks(const TaskArgs&, int64_t, int64_t, void*) {}
}  // namespace avx2
}  // namespace cca_cpu
}  // namespace pyretro
#endif
