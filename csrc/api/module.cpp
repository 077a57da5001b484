// pyretro._C: the compiled core. C++ exceptions become the Python exceptions of the same name.
#include <pybind11/pybind11.h>

#include "api/registry.h"
#include "pyretro/errors.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyretro compiled core (chunk store, chunked cross-attention, rotary, neighbour gather)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const pyretro::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const pyretro::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const pyretro::OSError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const pyretro::IndexError& e) {
      PyErr_SetString(PyExc_IndexError, e.what());
    }
  });
  pyretro::register_info(m);
  pyretro::register_store(m);
  pyretro::register_cca(m);
  pyretro::register_rope(m);
  pyretro::register_gather(m);
}
