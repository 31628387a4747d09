// Pinned worker pool (see thread_pool.h).
#include "planner/thread_pool.h"

#include <algorithm>
#include <chrono>

#include "kernels/error.h"

namespace deepfit::planner {

namespace {
// Polls `done` with sched yields for up to 200 us (checked every 64 polls).
template <class Done>
void wait_briefly(const Done& done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
  for (int i = 0; !done(); ++i) {
    std::this_thread::yield();
    if (i % 64 == 63 && std::chrono::steady_clock::now() > until) return;
  }
}
}  // namespace

std::pair<std::size_t, std::size_t> slice_of(std::size_t n, int idx, int parts) {
  const std::size_t p = static_cast<std::size_t>(parts), i = static_cast<std::size_t>(idx);
  return {n * i / p, n * (i + 1) / p};
}

ThreadPool::ThreadPool(const hwdb::Topology& topo, int num_threads)
    : start_barrier_(num_threads), topo_(topo) {
  DEEPFIT_ASSERT(num_threads >= 1, "thread pool needs at least one thread");
  const std::vector<int> order = topo.pu_os_indices();
  for (int i = 0; i < num_threads; ++i) pus_.push_back(order.empty() ? -1 : order[static_cast<std::size_t>(i) % order.size()]);
  pin_notes_.resize(static_cast<std::size_t>(num_threads));
  seconds_.assign(static_cast<std::size_t>(num_threads), 0.0);
  for (int i = 0; i < num_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  // Wait until every worker has pinned itself (a no-op job), so pin_notes() is complete.
  run([](int, int) {});
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::worker_loop(int idx) {
  const int pu = pus_[static_cast<std::size_t>(idx)];
  if (pu >= 0) {
    hwdb::BindResult r = topo_.bind_this_thread_to_pu(pu);
    if (!r.ok) pin_notes_[static_cast<std::size_t>(idx)] = r.reason;
  } else {
    pin_notes_[static_cast<std::size_t>(idx)] = "unavailable: the topology lists no PUs";
  }
  std::uint64_t seen = 0;
  while (true) {
    // The ops of a decode step come back to back, and a condition-variable wake costs tens of
    // microseconds: look for the next job for a short while (yielding the core, which the caller
    // may need) before sleeping.
    wait_briefly([&] { return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen; });
    const std::function<void(int, int)>* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
      if (stop_.load()) return;
      seen = generation_.load();
      job = job_;
    }
    start_barrier_.arrive_and_wait();
    const auto t0 = std::chrono::steady_clock::now();
    (*job)(idx, size());
    const auto t1 = std::chrono::steady_clock::now();
    seconds_[static_cast<std::size_t>(idx)] = std::chrono::duration<double>(t1 - t0).count();
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
  }
}

std::vector<double> ThreadPool::run(const std::function<void(int, int)>& fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    remaining_.store(size(), std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  wait_briefly([&] { return remaining_.load(std::memory_order_acquire) == 0; });
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return remaining_.load() == 0; });
    job_ = nullptr;
  }
  return seconds_;
}

}  // namespace deepfit::planner
