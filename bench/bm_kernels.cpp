// Expert GEMV/GEMM benchmarks (kernels/moe_gemm.h) at DeepSeek-V3.2's expert width (K = 7168),
// one thread. Each case is validated against moe_gemm_ref on its first rows before timing, and
// its output checksum is checked after. Memory-bound cases hold >= 4x the LLC of weights.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "harness/provenance.h"
#include "hwdb/topology.h"
#include "kernels/moe_gemm.h"
#include "kernels/quant_blocks.h"
#include "kernels/work.h"

namespace {

namespace k = deepfit::kernels;

constexpr std::int64_t kCols = 7168;  // DeepSeek-V3.2 hidden size: an expert's gate/up rows

struct Case {
  std::vector<std::byte> w;
  std::vector<float> x, y, ref;
  std::vector<std::int8_t> qs;
  std::vector<float> scales;
  std::vector<std::int32_t> sums;
  k::MatvecShape shape{};
};

std::int64_t rows_for(k::WeightFormat f, bool small) {
  if (small) return 64;
  const auto llc = deepfit::hwdb::Topology::host().summary().llc_bytes.value_or(32LL << 20);
  return (4 * llc + k::weight_row_bytes(f, kCols) - 1) / k::weight_row_bytes(f, kCols);
}

// Random rows encoded in the format (bf16 by truncation-free rounding, GGUF blocks by the
// reference quantizers), random activations; seeded.
Case make(k::WeightFormat f, std::int64_t batch, bool small) {
  Case c;
  c.shape = {batch, rows_for(f, small), kCols, f};
  std::mt19937 rng(1234);
  std::normal_distribution<float> d(0.f, 1.f);
  const std::int64_t row_bytes = k::weight_row_bytes(f, kCols);
  c.w.resize(static_cast<std::size_t>(row_bytes * c.shape.rows));
  std::vector<float> row(kCols);
  for (std::int64_t n = 0; n < c.shape.rows; ++n) {
    for (auto& v : row) v = d(rng) * 0.02f;
    std::span<std::byte> out(c.w.data() + n * row_bytes, static_cast<std::size_t>(row_bytes));
    if (f == k::WeightFormat::kBf16) {
      for (std::int64_t i = 0; i < kCols; ++i) {
        const std::uint16_t b = k::fp32_to_bf16(row[static_cast<std::size_t>(i)]);
        std::memcpy(out.data() + 2 * i, &b, 2);
      }
    } else if (f == k::WeightFormat::kQ8_0) {
      k::quantize_row_q8_0_ref(row, out);
    } else {
      k::quantize_row_q4_K_ref(row, out);
    }
  }
  c.x.resize(static_cast<std::size_t>(batch * kCols));
  for (auto& v : c.x) v = d(rng);
  c.y.assign(static_cast<std::size_t>(batch * c.shape.rows), 0.f);
  c.qs.resize(c.x.size());
  c.scales.resize(c.x.size() / 32);
  c.sums.resize(c.x.size() / 32);
  k::quantize_activations_q8(c.x, batch, kCols, c.qs, c.scales, c.sums);
  return c;
}

void run(Case& c, std::int64_t lo, std::int64_t hi) {
  if (c.shape.weight_format == k::WeightFormat::kBf16) {
    k::moe_gemm_blocked(c.shape, c.w, c.x, c.y, lo, hi);
  } else {
    k::ActivationsQ8 xq{c.shape.batch, kCols, c.qs, c.scales, c.sums};
    k::moe_gemm_blocked_q8(c.shape, c.w, xq, c.y, lo, hi);
  }
}

void BM_expert_gemv(benchmark::State& state, k::WeightFormat f, std::int64_t batch, bool small) {
  Case c = make(f, batch, small);
  // Validate before timing: the first rows against the reference (a loose bound here; the tests
  // hold the derived tolerances).
  const std::int64_t check = std::min<std::int64_t>(8, c.shape.rows);
  std::vector<float> ref(static_cast<std::size_t>(c.shape.batch * c.shape.rows), 0.f);
  k::moe_gemm_ref(c.shape, c.w, c.x, ref, 0, check);
  run(c, 0, c.shape.rows);
  for (std::int64_t b = 0; b < c.shape.batch; ++b)
    for (std::int64_t n = 0; n < check; ++n) {
      const float got = c.y[static_cast<std::size_t>(b * c.shape.rows + n)], want = ref[static_cast<std::size_t>(b * c.shape.rows + n)];
      if (!(std::fabs(got - want) <= 0.05f * (std::fabs(want) + 1.f))) {
        state.SkipWithError("validation against moe_gemm_ref failed");
        return;
      }
    }
  const double before = c.y[0];
  for (auto _ : state) {
    run(c, 0, c.shape.rows);
    benchmark::DoNotOptimize(c.y.data());
    benchmark::ClobberMemory();
  }
  if (c.y[0] != before) state.SkipWithError("output changed between identical calls");
  const k::Work w = k::work_of(c.shape);
  state.SetBytesProcessed(static_cast<std::int64_t>(w.bytes) * state.iterations());
  state.counters["flops"] = benchmark::Counter(w.flops * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["working_set_bytes"] = w.bytes;
}

void register_all() {
  const std::pair<const char*, k::WeightFormat> formats[] = {
      {"bf16", k::WeightFormat::kBf16}, {"q8_0", k::WeightFormat::kQ8_0}, {"q4_k", k::WeightFormat::kQ4_K}};
  for (auto [name, f] : formats) {
    for (std::int64_t batch : {1, 8, 64}) {
      std::string n = std::string("BM_expert_gemv/") + name;
      benchmark::RegisterBenchmark((n + "/batch:" + std::to_string(batch)).c_str(),
                                   [f = f, batch](benchmark::State& s) { BM_expert_gemv(s, f, batch, false); })
          ->MinWarmUpTime(0.1)->Unit(benchmark::kMillisecond);
    }
    benchmark::RegisterBenchmark((std::string("BM_expert_gemv/") + name + "/batch:1/small").c_str(),
                                 [f = f](benchmark::State& s) { BM_expert_gemv(s, f, 1, true); });
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  return deepfit::bench::run_benchmarks(argc, argv);
}
