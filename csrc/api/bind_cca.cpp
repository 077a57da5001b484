#include "api/registry.h"

namespace pyretro {
void register_cca(pybind11::module_& m) {}  // filled by the cca work
}  // namespace pyretro
