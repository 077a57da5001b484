#include "api/registry.h"

namespace pyretro {
void register_store(pybind11::module_& m) {}  // filled by the store work
}  // namespace pyretro
