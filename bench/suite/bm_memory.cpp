// STREAM-like bandwidth cases (copy, scale, add, triad, read-only sum; kernels/triad.h) over
// >= 4x the LLC, and the register-resident compute probes (fp32 FMA, bf16 and int8 dot products;
// kernels/peak.h), on one thread and on every core. `deepfit bench` rates the other cases against
// these, measured in the same run.
#include <atomic>
#include <optional>
#include <vector>

#include "kernels/peak.h"
#include "kernels/triad.h"
#include "suite/suite_common.h"

namespace deepfit::bench {
namespace {

namespace k = kernels;

struct StreamOp {
  const char* name;
  k::BandwidthOp op;
};

void bm_stream(benchmark::State& state, SuiteContext& ctx, k::BandwidthOp op, int threads) {
  // Three arrays of 2x the LLC (at least 64 MiB each): >= 4x the LLC per pass (STYLE B6).
  const auto n = static_cast<std::size_t>(std::max<std::int64_t>(2 * ctx.llc_bytes(), 64LL << 20)) / sizeof(double);
  std::vector<double> a(n, 1.0), b(n, 2.0), c(n, 0.5);
  std::vector<double> partial(static_cast<std::size_t>(threads), 0.0);
  constexpr double q = 3.0;
  constexpr auto kPolicy = k::StorePolicy::kCached;  // ordinary stores, as the probe's headline figure
  auto body = [&](int i, int t) {
    const auto [lo64, hi64] = slice(static_cast<std::int64_t>(n), i, t);
    const auto lo = static_cast<std::size_t>(lo64), hi = static_cast<std::size_t>(hi64);
    switch (op) {
      case k::BandwidthOp::kCopy: k::copy_simd(c, a, lo, hi, kPolicy); break;
      case k::BandwidthOp::kScale: k::scale_simd(b, c, q, lo, hi, kPolicy); break;
      case k::BandwidthOp::kAdd: k::add_simd(c, a, b, lo, hi, kPolicy); break;
      case k::BandwidthOp::kTriad: k::triad_simd(a, b, c, q, lo, hi, kPolicy); break;
      case k::BandwidthOp::kSum: partial[static_cast<std::size_t>(i)] = k::sum_simd(a, lo, hi); break;
    }
  };
  timed_pool_loop(state, ctx.pool(threads), body);
  benchmark::DoNotOptimize(a.data());
  benchmark::DoNotOptimize(partial.data());
  benchmark::ClobberMemory();
  // The arrays hold fixed points of each op (a = 1, b = 2, c = 0.5 -> copy: c = 1; scale: b = 3c;
  // add: c = a + b; triad: a = b + 3c): one element checked per op (B1: no elided work).
  const std::size_t m = n / 2;
  bool ok = true;
  switch (op) {
    case k::BandwidthOp::kCopy: ok = c[m] == a[m]; break;
    case k::BandwidthOp::kScale: ok = b[m] == q * c[m]; break;
    case k::BandwidthOp::kAdd: ok = c[m] == a[m] + b[m]; break;
    case k::BandwidthOp::kTriad: ok = a[m] == b[m] + q * c[m]; break;
    case k::BandwidthOp::kSum: {
      double s = 0;
      for (double p : partial) s += p;
      ok = s == static_cast<double>(n);  // every a[i] = 1: exact in double up to 2^53
      break;
    }
  }
  if (!ok) state.SkipWithError("stream kernel produced a wrong value");
  const k::Work w = k::work_of(k::BandwidthShape{op, static_cast<std::int64_t>(n)});
  set_work_counters(state, w, w.bytes);
}

enum class Probe { kFmaFp32, kDotBf16, kDotInt8 };

void bm_peak(benchmark::State& state, SuiteContext& ctx, Probe probe, int threads) {
  constexpr std::int64_t kIters = 200000;
  std::vector<double> proof(static_cast<std::size_t>(threads), 0.0);
  std::atomic<bool> missing{false};
  auto body = [&](int i, int) {
    const float seed = 1.0f + 0.001f * static_cast<float>(i);
    double r = 0;
    switch (probe) {
      case Probe::kFmaFp32: {
        const std::optional<double> v = k::fma_fp32_probe(kIters, seed);
        if (v) r = *v; else missing = true;
        break;
      }
      case Probe::kDotBf16: {
        const std::optional<double> v = k::dot_bf16_probe(kIters, seed);
        if (v) r = *v; else missing = true;
        break;
      }
      case Probe::kDotInt8: {
        const std::optional<std::int64_t> v = k::dot_int8_probe(kIters, static_cast<std::uint32_t>(i + 1));
        if (v) r = static_cast<double>(*v); else missing = true;
        break;
      }
    }
    proof[static_cast<std::size_t>(i)] += r;
  };
  std::vector<double> secs = ctx.pool(threads).run(body);
  if (missing) {
    state.SkipWithError("unavailable: this CPU lacks the instructions of this probe");
    for (auto _ : state) state.SetIterationTime(0);
    return;
  }
  timed_pool_loop(state, ctx.pool(threads), body);
  benchmark::DoNotOptimize(proof.data());
  k::Work w{};
  switch (probe) {
    case Probe::kFmaFp32: w = k::work_of_fma_fp32(kIters); break;
    case Probe::kDotBf16: w = k::work_of_dot_bf16(kIters); break;
    case Probe::kDotInt8: w = k::work_of_dot_int8(kIters); break;
  }
  w.flops *= threads;
  set_work_counters(state, w, 0);
}

}  // namespace

void register_memory(SuiteContext& ctx) {
  const StreamOp ops[] = {{"copy", k::BandwidthOp::kCopy}, {"scale", k::BandwidthOp::kScale},
                          {"add", k::BandwidthOp::kAdd}, {"triad", k::BandwidthOp::kTriad}, {"sum", k::BandwidthOp::kSum}};
  std::vector<int> thread_counts{1};
  if (ctx.max_threads() > 1) thread_counts.push_back(ctx.max_threads());
  for (const int t : thread_counts) {
    for (const StreamOp& op : ops) {
      if (ctx.config().quick && op.op != k::BandwidthOp::kTriad && op.op != k::BandwidthOp::kSum) continue;
      add_case(ctx, std::string("BM_stream_") + op.name + "/fp64" + threads_arg(t),
               [&ctx, o = op.op, t](benchmark::State& s) { bm_stream(s, ctx, o, t); });
    }
    const std::pair<const char*, Probe> probes[] = {
        {"BM_peak_fma/fp32", Probe::kFmaFp32}, {"BM_peak_dot/bf16", Probe::kDotBf16}, {"BM_peak_dot/int8", Probe::kDotInt8}};
    for (const auto& [name, p] : probes)
      add_case(ctx, name + threads_arg(t), [&ctx, p = p, t](benchmark::State& s) { bm_peak(s, ctx, p, t); });
  }
}

}  // namespace deepfit::bench
