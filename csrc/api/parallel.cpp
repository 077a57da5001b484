#include "pyretro/parallel.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace pyretro {
namespace {

thread_local bool t_in_region = false;

class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    { std::lock_guard<std::mutex> g(m_); stop_ = true; }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int workers() const { return static_cast<int>(threads_.size()); }

  // Runs task() on `n` workers plus the caller, returns when all are done.
  void run(int n, const std::function<void()>& task) {
    std::lock_guard<std::mutex> region(region_m_);  // one region at a time
    {
      std::lock_guard<std::mutex> g(m_);
      task_ = &task;
      active_ = n;
      pending_ = n;
      ++generation_;
    }
    cv_.notify_all();
    task();
    std::unique_lock<std::mutex> g(m_);
    done_cv_.wait(g, [this] { return pending_ == 0; });
    task_ = nullptr;
  }

 private:
  void loop() {
    t_in_region = true;  // a nested parallel_for from a worker runs inline
    uint64_t seen = 0;
    int index = 0;
    for (;;) {
      const std::function<void()>* task;
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        // Only the first `active_` workers to wake take part in this region.
        if (active_ == 0) continue;
        --active_;
        task = task_;
        (void)index;
      }
      (*task)();
      {
        std::lock_guard<std::mutex> g(m_);
        if (--pending_ == 0) done_cv_.notify_one();
      }
    }
  }

  std::vector<std::thread> threads_;
  std::mutex m_, region_m_;
  std::condition_variable cv_, done_cv_;
  const std::function<void()>* task_ = nullptr;
  uint64_t generation_ = 0;
  int active_ = 0, pending_ = 0;
  bool stop_ = false;
};

std::mutex g_pool_m;
Pool* g_pool = nullptr;
pid_t g_pool_pid = 0;
std::atomic<int> g_threads{0};

int default_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

Pool* pool_for(int threads) {
  std::lock_guard<std::mutex> g(g_pool_m);
  if (g_pool && g_pool_pid != getpid()) g_pool = nullptr;  // forked child: parent's threads are gone; leak it
  if (!g_pool || g_pool->workers() != threads - 1) {
    delete g_pool;
    g_pool = new Pool(threads - 1);
    g_pool_pid = getpid();
  }
  return g_pool;
}

}  // namespace

void set_num_threads(int n) { g_threads = n <= 0 ? default_threads() : n; }

int get_num_threads() {
  int n = g_threads.load();
  return n > 0 ? n : default_threads();
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int threads = static_cast<int>(std::min<int64_t>(get_num_threads(), (n + grain - 1) / grain));
  if (threads <= 1 || t_in_region) { f(0, n); return; }

  // Dynamic scheduling over blocks of `grain` (at least 4 blocks a thread to balance uneven work).
  int64_t block = std::max<int64_t>(grain, n / (int64_t(threads) * 4));
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_m;
  std::function<void()> task = [&] {
    bool outer = t_in_region;
    t_in_region = true;
    try {
      for (;;) {
        int64_t b = next.fetch_add(block);
        if (b >= n) break;
        f(b, std::min(n, b + block));
      }
    } catch (...) {
      std::lock_guard<std::mutex> g(error_m);
      if (!error) error = std::current_exception();
      next = n;
    }
    t_in_region = outer;
  };
  pool_for(threads)->run(threads - 1, task);
  if (error) std::rethrow_exception(error);
}

}  // namespace pyretro
