// Shared pieces of the suite (see suite_common.h).
#include "suite/suite_common.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "hwdb/counters.h"

namespace deepfit::bench {

SuiteContext::SuiteContext(const SuiteConfig& cfg) : cfg_(cfg), topo_(hwdb::Topology::host()) {
  const hwdb::TopologySummary s = topo_.summary();
  const int cores = s.num_cores > 0 ? s.num_cores : std::max(1, s.num_pus);
  max_threads_ = cfg.threads > 0 ? cfg.threads : cores;
  llc_bytes_ = s.llc_bytes.value_or(32LL << 20);
}

planner::ThreadPool& SuiteContext::pool(int threads) {
  for (auto& p : pools_)
    if (p->size() == threads) return *p;
  pools_.push_back(std::make_unique<planner::ThreadPool>(topo_, threads));
  return *pools_.back();
}

benchmark::internal::Benchmark* add_case(SuiteContext& ctx, const std::string& name,
                                         std::function<void(benchmark::State&)> fn) {
  ctx.names().push_back(name);
  return benchmark::RegisterBenchmark(name.c_str(), [fn = std::move(fn)](benchmark::State& s) { fn(s); })
      ->UseManualTime()
      ->MinWarmUpTime(0.1)
      ->Unit(benchmark::kMicrosecond);
}

void timed_pool_loop(benchmark::State& state, planner::ThreadPool& pool, const std::function<void(int, int)>& body) {
  // Hardware counters per worker thread (STYLE B11): each worker counts itself; where the kernel
  // refuses them nothing is recorded here (the run's context says "unavailable" once).
  std::vector<std::optional<hwdb::CounterGroup>> counters(static_cast<std::size_t>(pool.size()));
  pool.run([&](int i, int) { counters[static_cast<std::size_t>(i)] = hwdb::CounterGroup::open({"cycles", "instructions"}); });
  const bool counting = std::all_of(counters.begin(), counters.end(), [](const auto& g) { return g->available(); });
  // One untimed job first: first touch is done, and its time picks `inner`.
  std::vector<double> secs = pool.run(body);
  const double once = *std::max_element(secs.begin(), secs.end());
  constexpr double kJobSeconds = 1e-3;  // >= 1000x steady_clock's resolution (ns) and the pool's hand-off
  const int inner = once >= kJobSeconds ? 1 : static_cast<int>(std::min(1e6, std::ceil(kJobSeconds / std::max(once, 1e-9))));
  const std::function<void(int, int)> job = [&](int i, int n) {
    for (int r = 0; r < inner; ++r) body(i, n);
  };
  if (counting) pool.run([&](int i, int) { counters[static_cast<std::size_t>(i)]->start(); });
  for (auto _ : state) {
    secs = pool.run(job);
    state.SetIterationTime(*std::max_element(secs.begin(), secs.end()) / inner);
  }
  state.counters["threads"] = pool.size();
  if (counting) {
    double cycles = 0, instructions = 0;
    bool complete = true;
    pool.run([&](int i, int) { counters[static_cast<std::size_t>(i)]->stop(); });
    for (const auto& g : counters) {
      const std::vector<hwdb::CounterReading> r = g->read();
      complete = complete && r.size() == 2 && r[0].value && r[1].value;
      if (complete) {
        cycles += static_cast<double>(*r[0].value);
        instructions += static_cast<double>(*r[1].value);
      }
    }
    const double calls = static_cast<double>(state.iterations()) * inner;
    if (complete && calls > 0) {
      state.counters["cycles"] = cycles / calls;  // per call, summed over the threads
      state.counters["instructions"] = instructions / calls;
    }
  }
}

void set_work_counters(benchmark::State& state, const kernels::Work& work, double working_set_bytes) {
  const auto iters = static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(work.bytes * iters));
  state.counters["flops"] = benchmark::Counter(work.flops * iters, benchmark::Counter::kIsRate);
  state.counters["working_set_bytes"] = working_set_bytes;
}

void fill_normal(std::span<float> out, std::uint64_t seed, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  for (float& v : out) v = d(rng);
}

std::pair<std::int64_t, std::int64_t> slice(std::int64_t n, int idx, int parts) {
  return {n * idx / parts, n * (idx + 1) / parts};
}

std::string threads_arg(int threads) { return "/threads:" + std::to_string(threads); }

Suite register_suite(const SuiteConfig& cfg) {
  auto ctx = std::make_shared<SuiteContext>(cfg);
  register_memory(*ctx);
  register_gemv(*ctx);
  register_attention(*ctx);
  register_ops(*ctx);
  return {ctx, ctx->names()};
}

}  // namespace deepfit::bench
