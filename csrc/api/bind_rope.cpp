#include "api/registry.h"

namespace pyretro {
void register_rope(pybind11::module_& m) {}  // filled by the rope work
}  // namespace pyretro
