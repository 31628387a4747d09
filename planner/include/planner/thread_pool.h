// A fixed pool of worker threads pinned through hwdb's topology (distinct cores first), handing
// kernels their (thread_idx, num_threads) slice. Created once, outside any timed region.
#pragma once

#include <atomic>
#include <barrier>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hwdb/topology.h"

namespace deepfit::planner {

class ThreadPool {
 public:
  // Starts `num_threads` workers (>= 1), worker i pinned to topology PU i in core-first order.
  // A pin that fails is an environment limit: recorded in pin_notes(), the worker still runs.
  ThreadPool(const hwdb::Topology& topo, int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Runs fn(thread_idx, num_threads) on every worker. All workers pass a barrier, then time
  // their call with steady_clock; returns each worker's seconds. The caller takes the slowest.
  std::vector<double> run(const std::function<void(int, int)>& fn);

  int size() const { return static_cast<int>(workers_.size()); }
  const std::vector<std::string>& pin_notes() const { return pin_notes_; }
  const std::vector<int>& pus() const { return pus_; }

 private:
  void worker_loop(int idx);

  std::vector<std::thread> workers_;
  std::vector<int> pus_;
  std::vector<std::string> pin_notes_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> remaining_{0};
  std::atomic<bool> stop_{false};
  std::vector<double> seconds_;
  std::barrier<> start_barrier_;
  const hwdb::Topology& topo_;
};

// Slices [0, n) into `parts` nearly equal contiguous ranges; returns range `idx`.
std::pair<std::size_t, std::size_t> slice_of(std::size_t n, int idx, int parts);

}  // namespace deepfit::planner
