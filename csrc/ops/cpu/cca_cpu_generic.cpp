// Portable CPU CCA kernels (16-byte vectors: SSE2 on x86-64, NEON elsewhere). Always available.
#include <cmath>
#include <cstdint>

#include "ops/cpu/cca_cpu_task.h"

namespace pyretro {
namespace cca_cpu {
namespace generic {
#define CCA_VBYTES 16
#include "ops/cpu/cca_cpu_kernels.h"
#undef CCA_VBYTES
bool available() { return true; }
}  // namespace generic
}  // namespace cca_cpu
}  // namespace pyretro
