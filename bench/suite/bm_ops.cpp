// The remaining ops at DeepSeek-V3.2's shapes: the grouped routed-expert FFN (kernels/expert_ffn.h)
// for a decode batch, FP8 block-scaled GEMV (kernels/moe_gemm_fp8.h), the BF16 dot-product GEMM
// (kernels/moe_gemm_bf16.h) for prefill-sized batches, the router (kernels/router.h) and RMSNorm
// (kernels/token_ops.h). Validated against the references before timing.
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/expert_ffn.h"
#include "kernels/moe_gemm.h"
#include "kernels/moe_gemm_bf16.h"
#include "kernels/moe_gemm_fp8.h"
#include "kernels/quant_blocks.h"
#include "kernels/router.h"
#include "kernels/token_ops.h"
#include "suite/suite_common.h"

namespace deepfit::bench {
namespace {

namespace k = kernels;

constexpr std::int64_t kHidden = 7168, kExpertFfn = 2048, kExperts = 256, kTopK = 8;

bool close(std::span<const float> got, std::span<const float> want, float rel) {
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= rel * (std::fabs(want[i]) + 1.0f))) return false;
  return true;
}

void skip(benchmark::State& state, const char* why) {
  state.SkipWithError(why);
  for (auto _ : state) state.SetIterationTime(0);
}

// FP8 weights [rows][cols] with one scale per 128x128 tile.
struct Fp8Matrix {
  std::vector<std::byte> w;
  std::vector<float> scales;
};
Fp8Matrix fp8_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  Fp8Matrix m;
  std::vector<float> f(static_cast<std::size_t>(cols));
  m.w.resize(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    fill_normal(f, seed + static_cast<std::uint64_t>(r), 100.0f);
    for (std::int64_t c = 0; c < cols; ++c)
      m.w[static_cast<std::size_t>(r * cols + c)] = static_cast<std::byte>(k::fp32_to_fp8_e4m3(f[static_cast<std::size_t>(c)]));
  }
  m.scales.assign(static_cast<std::size_t>(k::fp8_scale_tiles(rows) * k::fp8_scale_tiles(cols)), 1e-4f);
  return m;
}

void bm_fp8_gemv(benchmark::State& state, SuiteContext& ctx, std::int64_t batch, int threads, bool small) {
  const std::int64_t rows = small ? 128 : batch >= 64 ? kExpertFfn : (4 * ctx.llc_bytes() + kHidden - 1) / kHidden;
  const Fp8Matrix m = fp8_matrix(rows, kHidden, 5);
  std::vector<float> x(static_cast<std::size_t>(batch * kHidden)), y(static_cast<std::size_t>(batch * rows)), ref(y.size());
  fill_normal(x, 6, 1.0f);
  const k::Fp8MatvecShape shape{batch, rows, kHidden};
  k::moe_gemm_fp8_ref(shape, m.w, m.scales, x, ref, 0, std::min<std::int64_t>(rows, 8));
  k::moe_gemm_fp8_blocked(shape, m.w, m.scales, x, y, 0, rows);
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t n = 0; n < std::min<std::int64_t>(rows, 8); ++n) {
      const auto i = static_cast<std::size_t>(b * rows + n);
      if (!(std::fabs(y[i] - ref[i]) <= 1e-3f * (std::fabs(ref[i]) + 1.0f))) return skip(state, "validation against moe_gemm_fp8_ref failed");
    }
  timed_pool_loop(state, ctx.pool(threads), [&](int i, int t) {
    const auto [lo, hi] = slice(rows, i, t);
    k::moe_gemm_fp8_blocked(shape, m.w, m.scales, x, y, lo, hi);
  });
  benchmark::DoNotOptimize(y.data());
  const k::Work w = k::work_of(shape);
  set_work_counters(state, w, w.bytes);
}

void bm_bf16dot_gemm(benchmark::State& state, SuiteContext& ctx, std::int64_t batch, int threads, std::int64_t rows) {
  std::vector<float> wf(static_cast<std::size_t>(rows * kHidden)), x(static_cast<std::size_t>(batch * kHidden));
  fill_normal(wf, 21, 0.02f);
  fill_normal(x, 22, 1.0f);
  std::vector<std::byte> w(wf.size() * 2);
  for (std::size_t i = 0; i < wf.size(); ++i) {
    const std::uint16_t b = k::fp32_to_bf16(wf[i]);
    std::memcpy(w.data() + 2 * i, &b, 2);
  }
  const k::MatvecShape shape{batch, rows, kHidden, k::WeightFormat::kBf16};
  std::vector<std::uint16_t> packed(static_cast<std::size_t>(k::packed_activations_bf16_size(batch, kHidden)));
  std::vector<float> y(static_cast<std::size_t>(batch * rows)), ref(y.size());
  k::moe_gemm_ref(shape, w, x, ref, 0, 4);
  k::pack_activations_bf16(x, batch, kHidden, packed);
  const k::ActivationsBf16 xa{batch, kHidden, packed};
  k::moe_gemm_bf16dot(shape, w, xa, y, 0, rows);
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t n = 0; n < 4; ++n) {
      const auto i = static_cast<std::size_t>(b * rows + n);
      if (!(std::fabs(y[i] - ref[i]) <= 0.02f * (std::fabs(ref[i]) + 1.0f))) return skip(state, "validation against moe_gemm_ref failed");
    }
  // The activations are packed once per product (part of the work, on the first thread's clock).
  timed_pool_loop(state, ctx.pool(threads), [&](int i, int t) {
    if (i == 0 && t == 1) k::pack_activations_bf16(x, batch, kHidden, packed);
    const auto [lo, hi] = slice(rows, i, t);
    k::moe_gemm_bf16dot(shape, w, xa, y, lo, hi);
  });
  benchmark::DoNotOptimize(y.data());
  const k::Work wk = k::work_of(shape);
  set_work_counters(state, wk, wk.bytes);
}

// The routed experts of one MoE layer for a decode batch: 16 experts of V3.2's shape (enough
// weights to stream from memory; which 8 of 256 a token picks does not change the per-expert
// work), each token routed to 8 of them.
void bm_expert_ffn(benchmark::State& state, SuiteContext& ctx, k::ExpertWeightFormat fmt, std::int64_t batch, int threads,
                   std::int64_t experts, std::int64_t hidden, std::int64_t ffn) {
  std::vector<std::vector<std::byte>> store;
  std::vector<std::vector<float>> scales;
  std::vector<k::ExpertWeights> views;
  std::vector<float> row;
  auto matrix = [&](std::int64_t rows, std::int64_t cols, std::uint64_t seed) -> k::ExpertMatrix {
    std::vector<std::byte> bytes(static_cast<std::size_t>(k::expert_matrix_weight_bytes(fmt, rows, cols)));
    std::vector<float> sc(static_cast<std::size_t>(k::expert_matrix_num_scales(fmt, rows, cols)), 1e-3f);
    row.resize(static_cast<std::size_t>(cols));
    const std::int64_t rb = static_cast<std::int64_t>(bytes.size()) / rows;
    for (std::int64_t r = 0; r < rows; ++r) {
      fill_normal(row, seed * 100003 + static_cast<std::uint64_t>(r), 0.02f);
      std::span<std::byte> out(bytes.data() + r * rb, static_cast<std::size_t>(rb));
      if (fmt == k::ExpertWeightFormat::kQ4_K) k::quantize_row_q4_K_ref(row, out);
      else if (fmt == k::ExpertWeightFormat::kQ8_0) k::quantize_row_q8_0_ref(row, out);
      else
        for (std::int64_t c = 0; c < cols; ++c) out[static_cast<std::size_t>(c)] = static_cast<std::byte>(k::fp32_to_fp8_e4m3(row[static_cast<std::size_t>(c)] * 1e3f));
    }
    store.push_back(std::move(bytes));
    scales.push_back(std::move(sc));
    return {store.back(), scales.back()};
  };
  store.reserve(static_cast<std::size_t>(3 * experts));
  scales.reserve(static_cast<std::size_t>(3 * experts));
  // The first expert's matrices are quantized from seeded values; the others are copies of them in
  // their own memory (what is timed is streaming distinct weights; quantizing gigabytes with the
  // reference quantizers would take longer than the benchmark).
  const k::ExpertMatrix g0 = matrix(ffn, hidden, 1), u0 = matrix(ffn, hidden, 2), d0 = matrix(hidden, ffn, 3);
  views.push_back({g0, u0, d0});
  for (std::int64_t e = 1; e < experts; ++e) {
    k::ExpertMatrix m3[3];
    const k::ExpertMatrix* src[3] = {&views[0].gate, &views[0].up, &views[0].down};
    for (int j = 0; j < 3; ++j) {
      store.emplace_back(src[j]->weights.begin(), src[j]->weights.end());
      scales.emplace_back(src[j]->scales.begin(), src[j]->scales.end());
      m3[j] = {store.back(), scales.back()};
    }
    views.push_back({m3[0], m3[1], m3[2]});
  }
  const std::int64_t top_k = std::min(kTopK, experts);
  const k::ExpertFfnShape shape{batch, top_k, experts, hidden, ffn, fmt};
  std::vector<float> x(static_cast<std::size_t>(batch * hidden)), out(x.size()), ref(x.size(), 0.0f);
  fill_normal(x, 31, 1.0f);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(batch * top_k));
  std::vector<float> weights(ids.size(), 1.0f / static_cast<float>(top_k));
  for (std::size_t i = 0; i < ids.size(); ++i)
    ids[i] = static_cast<std::int32_t>((i / static_cast<std::size_t>(top_k) * 7 + i % static_cast<std::size_t>(top_k) * 3) % static_cast<std::size_t>(experts));
  std::vector<std::int64_t> offsets(static_cast<std::size_t>(experts + 1));
  std::vector<std::int32_t> pair_tokens(ids.size()), active(static_cast<std::size_t>(experts));
  std::vector<float> pair_weights(ids.size());
  k::RoutingPlan plan{offsets, pair_tokens, pair_weights, active, 0};
  const k::ExpertFfnScratchSizes sz = k::expert_ffn_scratch_sizes(shape);
  std::vector<float> x_routed(static_cast<std::size_t>(sz.x_routed)), h(static_cast<std::size_t>(sz.h)),
      xq_scales(static_cast<std::size_t>(sz.xq_groups)), hq_scales(static_cast<std::size_t>(sz.hq_groups));
  std::vector<std::int8_t> xq(static_cast<std::size_t>(sz.xq)), hq(static_cast<std::size_t>(sz.hq));
  std::vector<std::int32_t> xq_sums(static_cast<std::size_t>(sz.xq_groups)), hq_sums(static_cast<std::size_t>(sz.hq_groups));
  const k::ExpertFfnScratch scratch{x_routed, xq, xq_scales, xq_sums, h, hq, hq_scales, hq_sums};
  k::build_routing_plan(shape, ids, weights, plan);
  // Validate the first token against the reference (the test derives the tolerance).
  {
    const k::ExpertFfnShape one{1, top_k, experts, hidden, ffn, fmt};
    std::vector<double> rs(static_cast<std::size_t>(k::expert_ffn_ref_scratch_size(one)));
    k::expert_ffn_ref(one, views, std::span<const std::int32_t>(ids).first(static_cast<std::size_t>(top_k)),
                      std::span<const float>(weights).first(static_cast<std::size_t>(top_k)),
                      std::span<const float>(x).first(static_cast<std::size_t>(hidden)), std::span<float>(ref).first(static_cast<std::size_t>(hidden)), rs);
    std::fill(out.begin(), out.end(), 0.0f);
    k::expert_ffn_grouped(shape, views, ids, weights, x, plan, scratch, out);
    // A loose check that catches a broken path (the kernel tests hold the derived bound): the
    // 8-bit activations of Q8_0/Q4_K, quantized again between gate/up and down, leave errors of
    // about 1 % of the largest output at these sizes, so compare against that scale.
    double err = 0, scale = 0;
    for (std::int64_t i = 0; i < hidden; ++i) {
      err = std::max(err, static_cast<double>(std::fabs(out[static_cast<std::size_t>(i)] - ref[static_cast<std::size_t>(i)])));
      scale = std::max(scale, static_cast<double>(std::fabs(ref[static_cast<std::size_t>(i)])));
    }
    if (!(err <= 0.05 * scale)) return skip(state, "validation against expert_ffn_ref failed");
  }
  const std::int64_t g_units = k::expert_ffn_gather_units(shape), u_units = k::expert_ffn_gate_up_units(shape, plan),
                     d_units = k::expert_ffn_down_units(shape);
  planner::ThreadPool& pool = ctx.pool(threads);
  // Three phases with a pool hand-off between each, as the decode loop runs them.
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.run([&](int i, int t) { const auto [lo, hi] = slice(g_units, i, t); k::expert_ffn_gather(shape, plan, x, scratch, lo, hi); });
    pool.run([&](int i, int t) { const auto [lo, hi] = slice(u_units, i, t); k::expert_ffn_gate_up(shape, views, plan, scratch, lo, hi); });
    pool.run([&](int i, int t) { const auto [lo, hi] = slice(d_units, i, t); k::expert_ffn_down(shape, views, plan, scratch, out, lo, hi); });
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  benchmark::DoNotOptimize(out.data());
  state.counters["threads"] = threads;
  const k::Work w = k::work_of(k::ExpertFfnWorkShape{shape, plan.num_active_experts});
  set_work_counters(state, w, w.bytes);
}

void bm_router(benchmark::State& state, SuiteContext& ctx, std::int64_t tokens) {
  std::vector<float> logits(static_cast<std::size_t>(tokens * kExperts)), bias(static_cast<std::size_t>(kExperts));
  fill_normal(logits, 41, 1.0f);
  fill_normal(bias, 42, 0.1f);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(tokens * kTopK)), ref_ids(ids.size());
  std::vector<float> w(ids.size()), ref_w(ids.size());
  const k::RouterShape shape{tokens, kExperts, 8, 4, kTopK};  // data/models/deepseek-v3.2.json
  const k::RouterWeighting weighting{true, 2.5f};
  k::router_ref(shape, weighting, logits, bias, ref_ids, ref_w, 0, tokens);
  k::router_fast(shape, weighting, logits, bias, ids, w, 0, tokens);
  if (ids != ref_ids) return skip(state, "validation against router_ref failed");
  timed_pool_loop(state, ctx.pool(1), [&](int, int) { k::router_fast(shape, weighting, logits, bias, ids, w, 0, tokens); });
  benchmark::DoNotOptimize(w.data());
  set_work_counters(state, k::work_of(shape, weighting), static_cast<double>(4 * logits.size()));
}

void bm_rms_norm(benchmark::State& state, SuiteContext& ctx, std::int64_t rows) {
  std::vector<float> x(static_cast<std::size_t>(rows * kHidden)), y(x.size()), ref(x.size()), wv(static_cast<std::size_t>(kHidden));
  fill_normal(x, 51, 1.0f);
  fill_normal(wv, 52, 0.1f);
  const k::RmsNormShape shape{rows, kHidden, k::NormWeightType::kFp32};
  const auto wb = std::as_bytes(std::span<const float>(wv));
  k::rms_norm_ref(shape, x, wb, 1e-6f, ref, 0, rows);
  k::rms_norm_fast(shape, x, wb, 1e-6f, y, 0, rows);
  if (!close(y, ref, 1e-5f)) return skip(state, "validation against rms_norm_ref failed");
  timed_pool_loop(state, ctx.pool(1), [&](int, int) { k::rms_norm_fast(shape, x, wb, 1e-6f, y, 0, rows); });
  benchmark::DoNotOptimize(y.data());
  set_work_counters(state, k::work_of(shape), static_cast<double>(8 * x.size()));
}

}  // namespace

void register_ops(SuiteContext& ctx) {
  const int t = ctx.max_threads();
  std::vector<std::int64_t> batches{1, 8, 64};
  if (ctx.config().quick) batches = {1, 64};
  for (const std::int64_t b : batches) {
    const std::string op = b >= 64 ? "BM_expert_gemm/fp8/batch:" : "BM_expert_gemv/fp8/batch:";
    add_case(ctx, op + std::to_string(b) + threads_arg(t), [&ctx, b, t](benchmark::State& s) { bm_fp8_gemv(s, ctx, b, t, false); });
  }
  add_case(ctx, "BM_expert_gemv/fp8/batch:1/small", [&ctx](benchmark::State& s) { bm_fp8_gemv(s, ctx, 1, 1, true); });
  for (const std::int64_t b : {64, 256})
    for (const int th : {1, t})
      if (th == 1 || t > 1)
        add_case(ctx, "BM_expert_gemm_dot/bf16/batch:" + std::to_string(b) + threads_arg(th),
                 [&ctx, b, th](benchmark::State& s) { bm_bf16dot_gemm(s, ctx, b, th, kExpertFfn); });
  add_case(ctx, "BM_expert_gemm_dot/bf16/batch:16/small", [&ctx](benchmark::State& s) { bm_bf16dot_gemm(s, ctx, 16, 1, 64); });
  for (const auto& [name, f] : {std::pair{"q4_k", k::ExpertWeightFormat::kQ4_K}, std::pair{"fp8", k::ExpertWeightFormat::kFp8E4m3}})
    for (const std::int64_t b : batches)
      add_case(ctx, std::string("BM_expert_ffn/") + name + "/batch:" + std::to_string(b) + threads_arg(t),
               [&ctx, f = f, b, t](benchmark::State& s) { bm_expert_ffn(s, ctx, f, b, t, 16, kHidden, kExpertFfn); });
  add_case(ctx, "BM_expert_ffn/q4_k/batch:2/small",
           [&ctx](benchmark::State& s) { bm_expert_ffn(s, ctx, k::ExpertWeightFormat::kQ4_K, 2, 1, 4, 256, 256); });
  add_case(ctx, "BM_router/fp32/tokens:64", [&ctx](benchmark::State& s) { bm_router(s, ctx, 64); });
  add_case(ctx, "BM_router/fp32/tokens:1/small", [&ctx](benchmark::State& s) { bm_router(s, ctx, 1); });
  add_case(ctx, "BM_rms_norm/fp32/rows:64", [&ctx](benchmark::State& s) { bm_rms_norm(s, ctx, 64); });
  add_case(ctx, "BM_rms_norm/fp32/rows:1/small", [&ctx](benchmark::State& s) { bm_rms_norm(s, ctx, 1); });
}

}  // namespace deepfit::bench
