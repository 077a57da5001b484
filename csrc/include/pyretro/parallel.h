// A small persistent thread pool for the CPU paths. The thread count is set from Python
// (default torch.get_num_threads()). Fork-safe: a child process (e.g. a DataLoader worker) that calls
// in gets a fresh pool instead of waiting on threads that did not survive the fork.
#pragma once
#include <cstdint>
#include <functional>

namespace pyretro {

void set_num_threads(int n);  // n <= 0: hardware concurrency
int get_num_threads();

// Calls f(begin, end) on disjoint sub-ranges covering [0, n), each at least `grain` long (except the last),
// on up to get_num_threads() threads including the caller. Runs inline when n <= grain, when called from
// inside a parallel region, or with one thread. Exceptions from f are rethrown on the caller.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f);

}  // namespace pyretro
