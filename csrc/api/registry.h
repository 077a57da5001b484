// One registration function per binding file; module.cpp calls them all. A new op adds its own
// csrc/api/bind_<op>.cpp and one line here and in module.cpp.
#pragma once
#include <pybind11/pybind11.h>

namespace pyretro {
void register_info(pybind11::module_& m);
void register_store(pybind11::module_& m);
void register_cca(pybind11::module_& m);
void register_rope(pybind11::module_& m);
void register_gather(pybind11::module_& m);
}  // namespace pyretro
