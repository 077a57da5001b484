// Exceptions of the C++ core. The bindings translate each into the Python exception of the same name,
// so a bad argument surfaces as ValueError/TypeError/OSError/IndexError with the message built here.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace pyretro {

struct ValueError : std::runtime_error { using std::runtime_error::runtime_error; };
struct TypeError : std::runtime_error { using std::runtime_error::runtime_error; };
struct OSError : std::runtime_error { using std::runtime_error::runtime_error; };
struct IndexError : std::runtime_error { using std::runtime_error::runtime_error; };

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... R>
void append(std::ostringstream& os, const T& v, const R&... rest) { os << v; append(os, rest...); }
}  // namespace detail

template <class... A>
std::string str(const A&... a) { std::ostringstream os; detail::append(os, a...); return os.str(); }

}  // namespace pyretro

// PYRETRO_CHECK(cond, ErrorType, message parts...) : throw ErrorType(message) unless cond.
#define PYRETRO_CHECK(cond, Err, ...) \
  do { if (!(cond)) throw ::pyretro::Err(::pyretro::str(__VA_ARGS__)); } while (0)
