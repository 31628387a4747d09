// Expert GEMV/GEMM cases (kernels/moe_gemm.h) at DeepSeek-V3.2's expert shapes (K = 7168), on
// one thread and on every core, rows sliced over the pool. Memory-bound cases (small batches) hold
// >= 4x the LLC of weights; compute-bound ones (batch >= 64) one expert's 2048 rows. Each case is
// validated against moe_gemm_ref on its first rows before timing and checked after it.
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/moe_gemm.h"
#include "kernels/quant_blocks.h"
#include "suite/suite_common.h"

namespace deepfit::bench {
namespace {

namespace k = kernels;

constexpr std::int64_t kCols = 7168;          // DeepSeek-V3.2 hidden size: an expert's gate/up rows
constexpr std::int64_t kExpertRows = 2048;    // moe_intermediate_size
constexpr std::int64_t kSmallRows = 64;

struct Case {
  std::vector<std::byte> w;
  std::vector<float> x, y;
  std::vector<std::int8_t> qs;
  std::vector<float> scales;
  std::vector<std::int32_t> sums;
  k::MatvecShape shape{};
};

std::int64_t rows_for(const SuiteContext& ctx, k::WeightFormat f, std::int64_t batch, bool small) {
  if (small) return kSmallRows;
  if (batch >= 64) return kExpertRows;
  const std::int64_t row_bytes = k::weight_row_bytes(f, kCols);
  return (4 * ctx.llc_bytes() + row_bytes - 1) / row_bytes;
}

// Random rows encoded in the format (bf16 rounding, GGUF blocks by the reference quantizers) and
// random activations; seeded.
Case make(const SuiteContext& ctx, k::WeightFormat f, std::int64_t batch, bool small) {
  Case c;
  c.shape = {batch, rows_for(ctx, f, batch, small), kCols, f};
  const std::int64_t row_bytes = k::weight_row_bytes(f, kCols);
  c.w.resize(static_cast<std::size_t>(row_bytes * c.shape.rows));
  std::vector<float> row(kCols);
  for (std::int64_t n = 0; n < c.shape.rows; ++n) {
    fill_normal(row, 1234 + static_cast<std::uint64_t>(n), 0.02f);
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
  fill_normal(c.x, 99, 1.0f);
  c.y.assign(static_cast<std::size_t>(batch * c.shape.rows), 0.f);
  c.qs.resize(c.x.size());
  c.scales.resize(c.x.size() / k::kActivationGroup);
  c.sums.resize(c.x.size() / k::kActivationGroup);
  k::quantize_activations_q8(c.x, batch, kCols, c.qs, c.scales, c.sums);
  return c;
}

void run_rows(Case& c, std::int64_t lo, std::int64_t hi) {
  if (c.shape.weight_format == k::WeightFormat::kBf16) {
    k::moe_gemm_blocked(c.shape, c.w, c.x, c.y, lo, hi);
  } else {
    const k::ActivationsQ8 xq{c.shape.batch, kCols, c.qs, c.scales, c.sums};
    k::moe_gemm_blocked_q8(c.shape, c.w, xq, c.y, lo, hi);
  }
}

// The first rows against the reference: a loose bound here (the kernel tests hold the derived
// tolerances); it catches a broken build or path, not rounding.
bool validate(Case& c) {
  const std::int64_t check = std::min<std::int64_t>(8, c.shape.rows);
  std::vector<float> ref(c.y.size(), 0.f);
  k::moe_gemm_ref(c.shape, c.w, c.x, ref, 0, check);
  run_rows(c, 0, c.shape.rows);
  for (std::int64_t b = 0; b < c.shape.batch; ++b)
    for (std::int64_t n = 0; n < check; ++n) {
      const auto i = static_cast<std::size_t>(b * c.shape.rows + n);
      if (!(std::fabs(c.y[i] - ref[i]) <= 0.05f * (std::fabs(ref[i]) + 1.f))) return false;
    }
  return true;
}

void bm_matvec(benchmark::State& state, SuiteContext& ctx, k::WeightFormat f, std::int64_t batch, int threads, bool small) {
  Case c = make(ctx, f, batch, small);
  if (!validate(c)) {
    state.SkipWithError("validation against moe_gemm_ref failed");
    for (auto _ : state) state.SetIterationTime(0);
    return;
  }
  const std::vector<float> first = c.y;
  timed_pool_loop(state, ctx.pool(threads), [&](int i, int t) {
    const auto [lo, hi] = slice(c.shape.rows, i, t);
    run_rows(c, lo, hi);
  });
  benchmark::DoNotOptimize(c.y.data());
  benchmark::ClobberMemory();
  if (c.y != first) state.SkipWithError("output changed between identical calls");
  const k::Work w = k::work_of(c.shape);
  set_work_counters(state, w, w.bytes);
}

}  // namespace

void register_gemv(SuiteContext& ctx) {
  const std::pair<const char*, k::WeightFormat> formats[] = {
      {"bf16", k::WeightFormat::kBf16}, {"q8_0", k::WeightFormat::kQ8_0}, {"q4_k", k::WeightFormat::kQ4_K}};
  std::vector<std::int64_t> batches{1, 8, 64, 256};
  if (ctx.config().quick) batches = {1, 64};
  std::vector<int> thread_counts{1};
  if (ctx.max_threads() > 1) thread_counts.push_back(ctx.max_threads());
  for (const auto& [name, f] : formats) {
    for (const int t : thread_counts)
      for (const std::int64_t batch : batches) {
        const std::string op = batch >= 64 ? "BM_expert_gemm/" : "BM_expert_gemv/";
        add_case(ctx, op + name + "/batch:" + std::to_string(batch) + threads_arg(t),
                 [&ctx, f = f, batch, t](benchmark::State& s) { bm_matvec(s, ctx, f, batch, t, false); });
      }
    add_case(ctx, std::string("BM_expert_gemv/") + name + "/batch:1/small",
             [&ctx, f = f](benchmark::State& s) { bm_matvec(s, ctx, f, 1, 1, true); });
  }
}

}  // namespace deepfit::bench
