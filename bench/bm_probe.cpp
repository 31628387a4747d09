// Cross-checks of the host probe: deepfit's STREAM-like triad (kernels/triad.h through the pinned
// pool) against an independent triad written here with plain std::thread loops, and the FMA probe
// against an independent FMA loop. Run both in one process, interleaved; compare the medians.
#include <benchmark/benchmark.h>

#include "harness/provenance.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <thread>
#include <vector>

#include "hwdb/topology.h"
#include "kernels/peak.h"
#include "kernels/triad.h"
#include "kernels/work.h"
#include "planner/thread_pool.h"

namespace {

namespace k = deepfit::kernels;
using deepfit::planner::ThreadPool;
using deepfit::planner::slice_of;

struct Arrays {
  std::vector<double> a, b, c;
};

// 3 arrays of 2x the LLC each (>= 4x the LLC in all, STYLE B6), first touched below by their users.
std::size_t array_elems() {
  static const std::size_t n = [] {
    auto llc = deepfit::hwdb::Topology::host().summary().llc_bytes.value_or(32LL << 20);
    return static_cast<std::size_t>(std::max<std::int64_t>(2 * llc, 64LL << 20)) / sizeof(double);
  }();
  return n;
}

int num_cores() {
  auto s = deepfit::hwdb::Topology::host().summary();
  return std::max(1, s.num_cores > 0 ? s.num_cores : s.num_pus);
}

void BM_triad_probe(benchmark::State& state) {
  deepfit::hwdb::Topology topo = deepfit::hwdb::Topology::host();
  ThreadPool pool(topo, num_cores());
  const std::size_t n = array_elems();
  std::vector<double> a(n), b(n, 2.0), c(n, 0.5);
  const auto policy = k::StorePolicy::kCached;  // as the probe's headline figure
  auto body = [&](int i, int t) {
    auto [lo, hi] = slice_of(n, i, t);
    k::triad_simd(a, b, c, 3.0, lo, hi, policy);
  };
  pool.run(body);
  for (auto _ : state) {
    auto secs = pool.run(body);
    state.SetIterationTime(*std::max_element(secs.begin(), secs.end()));
  }
  benchmark::DoNotOptimize(a.data());
  if (a[n / 2] != 2.0 + 3.0 * 0.5) state.SkipWithError("triad result wrong");
  state.SetBytesProcessed(static_cast<std::int64_t>(k::work_of(k::BandwidthShape{k::BandwidthOp::kTriad, static_cast<std::int64_t>(n)}).bytes) *
                          state.iterations());
}
BENCHMARK(BM_triad_probe)->Name("BM_triad/deepfit_probe/threads:all")->UseManualTime()->MinWarmUpTime(0.1);

// Independent: unpinned std::threads, a plain indexed loop, threads created outside the timer.
void BM_triad_independent(benchmark::State& state) {
  const std::size_t n = array_elems();
  const int t = num_cores();
  std::vector<double> a(n), b(n, 2.0), c(n, 0.5);
  auto run = [&] {
    std::vector<std::thread> ts;
    for (int i = 0; i < t; ++i)
      ts.emplace_back([&, i] {
        const std::size_t lo = n * static_cast<std::size_t>(i) / static_cast<std::size_t>(t);
        const std::size_t hi = n * static_cast<std::size_t>(i + 1) / static_cast<std::size_t>(t);
        double* __restrict pa = a.data();
        const double* __restrict pb = b.data();
        const double* __restrict pc = c.data();
        for (std::size_t x = lo; x < hi; ++x) pa[x] = pb[x] + 3.0 * pc[x];
      });
    for (auto& th : ts) th.join();
  };
  run();
  for (auto _ : state) run();
  benchmark::DoNotOptimize(a.data());
  if (a[n / 3] != 2.0 + 3.0 * 0.5) state.SkipWithError("triad result wrong");
  state.SetBytesProcessed(static_cast<std::int64_t>(24 * n) * state.iterations());
}
BENCHMARK(BM_triad_independent)->Name("BM_triad/independent/threads:all")->UseRealTime()->MinWarmUpTime(0.1);

void BM_fma_probe(benchmark::State& state) {
  const std::int64_t iters = state.range(0);
  double proof = 0;
  if (!k::have_avx512f()) {
    state.SkipWithError("no AVX-512F");
    return;
  }
  for (auto _ : state) proof += *k::fma_fp32_probe(iters, 1.0f);
  benchmark::DoNotOptimize(proof);
  state.counters["flops"] = benchmark::Counter(k::work_of_fma_fp32(iters).flops * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}
BENCHMARK(BM_fma_probe)->Name("BM_fma_fp32/deepfit_probe/iters:1000000")->Arg(1000000);

// Independent: 16 chains of 16-lane fp32 FMAs written with GCC vector extensions (one thread).
typedef float v16 __attribute__((vector_size(64)));
__attribute__((target("avx512f,fma"), noinline)) float fma_loop(std::int64_t iters, float seed) {
  v16 acc[16];
  v16 x, y;
  for (int l = 0; l < 16; ++l) {
    x[l] = 1.0f + seed * 1e-7f * static_cast<float>(l);
    y[l] = 1e-7f;
  }
  for (int c = 0; c < 16; ++c) acc[c] = x * static_cast<float>(c + 1);
  for (std::int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < 16; ++c) acc[c] = acc[c] * x + y;
  float s = 0;
  for (int c = 0; c < 16; ++c)
    for (int l = 0; l < 16; ++l) s += acc[c][l];
  return s;
}
void BM_fma_independent(benchmark::State& state) {
  if (!k::have_avx512f()) {
    state.SkipWithError("no AVX-512F");
    return;
  }
  const std::int64_t iters = state.range(0);
  float proof = 0;
  float seed = 1.0f;
  std::int64_t n = iters;
  for (auto _ : state) {
    benchmark::DoNotOptimize(seed);
    benchmark::DoNotOptimize(n);
    proof += fma_loop(n, seed);
  }
  benchmark::DoNotOptimize(proof);
  state.counters["flops"] = benchmark::Counter(2.0 * 16 * 16 * static_cast<double>(iters) * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}
BENCHMARK(BM_fma_independent)->Name("BM_fma_fp32/independent/iters:1000000")->Arg(1000000);

}  // namespace

int main(int argc, char** argv) { return deepfit::bench::run_benchmarks(argc, argv); }
