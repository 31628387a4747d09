// What the suite's cases share: the pinned thread pools (created once, outside any timer), the
// LLC size for memory-bound working sets, registration with a name list, the timed loop over a
// pool, and counters from work_of. Internal to bench/suite.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "suite/suite.h"
#include "hwdb/topology.h"
#include "kernels/work.h"
#include "planner/thread_pool.h"

namespace deepfit::bench {

class SuiteContext {
 public:
  explicit SuiteContext(const SuiteConfig& cfg);
  // A pinned pool of `threads` workers (1, or the configured multi-thread count), made on first use.
  planner::ThreadPool& pool(int threads);
  int max_threads() const { return max_threads_; }
  // Bytes of the last-level cache (hwloc), 32 MiB when hwloc reports none.
  std::int64_t llc_bytes() const { return llc_bytes_; }
  const SuiteConfig& config() const { return cfg_; }
  std::vector<std::string>& names() { return names_; }

 private:
  SuiteConfig cfg_;
  hwdb::Topology topo_;
  int max_threads_ = 1;
  std::int64_t llc_bytes_ = 0;
  std::vector<std::unique_ptr<planner::ThreadPool>> pools_;
  std::vector<std::string> names_;
};

// Registers `fn` under `name` (kept in ctx.names()) with manual timing, warm-up and ms units.
benchmark::internal::Benchmark* add_case(SuiteContext& ctx, const std::string& name,
                                         std::function<void(benchmark::State&)> fn);

// The timed loop (STYLE B2, B7, B12): each iteration runs body(thread_idx, num_threads) on every
// worker of `pool` `inner` times in one pool job (inner > 1 for microsecond ops, so the pool's
// hand-off does not count) and reports the slowest worker's time / inner as the iteration time.
// `inner` is chosen once so that one job lasts about a millisecond.
void timed_pool_loop(benchmark::State& state, planner::ThreadPool& pool, const std::function<void(int, int)>& body);

// bytes_per_second and the `flops` rate from the declared work of one iteration, plus the
// working set (STYLE B5).
void set_work_counters(benchmark::State& state, const kernels::Work& work, double working_set_bytes);

// Seeded normal fill (STYLE B3: inputs the compiler cannot see).
void fill_normal(std::span<float> out, std::uint64_t seed, float stddev);

// Slice [0, n) into `parts` nearly equal parts; part `idx`.
std::pair<std::int64_t, std::int64_t> slice(std::int64_t n, int idx, int parts);

// "/threads:N" for names.
std::string threads_arg(int threads);

// The register functions of each area (one file each).
void register_memory(SuiteContext& ctx);
void register_gemv(SuiteContext& ctx);
void register_attention(SuiteContext& ctx);
void register_ops(SuiteContext& ctx);

}  // namespace deepfit::bench
