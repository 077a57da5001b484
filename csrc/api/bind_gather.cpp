#include "api/registry.h"

namespace pyretro {
void register_gather(pybind11::module_& m) {}  // filled by the gather work
}  // namespace pyretro
