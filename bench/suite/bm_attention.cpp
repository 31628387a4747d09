// Attention cases at DeepSeek-V3.2's shapes: absorbed MLA decode (kernels/attention.h) over bf16
// and fp8 latent caches at 1K..128K positions, the DSA lightning indexer over 4K..128K positions
// and its top-2048 selection (kernels/dsa.h). Batch 1 (one sequence, 128 MLA heads, 64 indexer
// heads), threads over head blocks (MLA) or positions (indexer). Each case is checked against its
// reference kernel on a subset before timing.
#include <cmath>
#include <vector>

#include "kernels/attention.h"
#include "kernels/dsa.h"
#include "kernels/quant_blocks.h"
#include "suite/suite_common.h"

namespace deepfit::bench {
namespace {

namespace k = kernels;

const k::MlaDims kDims{128, 512, 128, 64, 128};  // data/models/deepseek-v3.2.json
constexpr std::int64_t kIndexHeads = 64, kTopk = 2048;

std::vector<std::uint16_t> bf16_random(std::int64_t n, std::uint64_t seed, float stddev) {
  std::vector<float> f(static_cast<std::size_t>(n));
  fill_normal(f, seed, stddev);
  std::vector<std::uint16_t> out(f.size());
  for (std::size_t i = 0; i < f.size(); ++i) out[i] = k::fp32_to_bf16(f[i]);
  return out;
}

void bm_mla_decode(benchmark::State& state, SuiteContext& ctx, k::MlaCacheFormat fmt, std::int64_t positions, int threads) {
  const std::int64_t H = kDims.num_heads, L = kDims.kv_lora_rank, R = kDims.qk_rope_head_dim;
  const std::int64_t row = k::mla_cache_token_bytes(fmt, L, R);
  std::vector<std::byte> cache(static_cast<std::size_t>(positions * row));
  {
    constexpr std::int64_t kChunk = 1024;
    std::vector<float> lat(static_cast<std::size_t>(kChunk * L)), rope(static_cast<std::size_t>(kChunk * R));
    for (std::int64_t p = 0; p < positions; p += kChunk) {
      const std::int64_t n = std::min(kChunk, positions - p);
      fill_normal(lat, 7 + static_cast<std::uint64_t>(p), 1.0f);
      fill_normal(rope, 8 + static_cast<std::uint64_t>(p), 1.0f);
      k::quantize_mla_cache_ref(fmt, L, R, std::span<const float>(lat).first(static_cast<std::size_t>(n * L)),
                                std::span<const float>(rope).first(static_cast<std::size_t>(n * R)),
                                std::span<std::byte>(cache).subspan(static_cast<std::size_t>(p * row), static_cast<std::size_t>(n * row)));
    }
  }
  const std::vector<std::uint16_t> w_uk = bf16_random(H * kDims.qk_nope_head_dim * L, 1, 0.044f);
  const std::vector<std::uint16_t> w_uv = bf16_random(H * kDims.v_head_dim * L, 2, 0.044f);
  std::vector<float> q_nope(static_cast<std::size_t>(H * kDims.qk_nope_head_dim)), q_rope(static_cast<std::size_t>(H * R));
  fill_normal(q_nope, 3, 1.0f);
  fill_normal(q_rope, 4, 1.0f);
  std::vector<float> out(static_cast<std::size_t>(H * kDims.v_head_dim)), ref(out.size());
  const k::MlaLayer layer{kDims, fmt, 0.135f, w_uk, w_uv};  // sigma: 192^-1/2 x YaRN's 1.874
  const std::vector<k::MlaSequence> seqs{{cache, positions, {}}};
  const std::int64_t units = k::mla_head_units(kDims);
  std::vector<std::vector<float>> scratch(static_cast<std::size_t>(threads),
                                          std::vector<float>(static_cast<std::size_t>(k::mla_fast_scratch_floats(kDims))));
  // Validate the first head block against the reference (B1); the derived bound is the test's.
  std::vector<double> ref_scratch(static_cast<std::size_t>(k::mla_ref_scratch_doubles(kDims)));
  k::mla_decode_ref(layer, q_nope, q_rope, seqs, ref, 0, 1, ref_scratch);
  k::mla_decode_fast(layer, q_nope, q_rope, seqs, out, 0, units, scratch[0]);
  double err = 0, mag = 0;
  for (std::int64_t i = 0; i < k::kMlaHeadsPerUnit * kDims.v_head_dim; ++i) {
    err = std::max(err, static_cast<double>(std::fabs(out[static_cast<std::size_t>(i)] - ref[static_cast<std::size_t>(i)])));
    mag = std::max(mag, static_cast<double>(std::fabs(ref[static_cast<std::size_t>(i)])));
  }
  if (!(err <= 0.02 * mag + 1e-6)) {
    state.SkipWithError("validation against mla_decode_ref failed");
    for (auto _ : state) state.SetIterationTime(0);
    return;
  }
  timed_pool_loop(state, ctx.pool(threads), [&](int i, int t) {
    const auto [lo, hi] = slice(units, i, t);
    k::mla_decode_fast(layer, q_nope, q_rope, seqs, out, lo, hi, scratch[static_cast<std::size_t>(i)]);
  });
  benchmark::DoNotOptimize(out.data());
  const k::Work w = k::work_of(k::mla_decode_shape(kDims, fmt, seqs));
  set_work_counters(state, w, static_cast<double>(cache.size()));
}

void bm_dsa_indexer(benchmark::State& state, SuiteContext& ctx, std::int64_t positions, int threads, bool with_topk) {
  constexpr std::int64_t D = k::kIndexHeadDim;
  std::vector<float> keys_f(static_cast<std::size_t>(positions * D));
  fill_normal(keys_f, 11, 1.0f);
  std::vector<std::uint8_t> keys(keys_f.size());
  std::vector<float> key_scales(static_cast<std::size_t>(positions));
  k::quantize_index_rows(keys_f, k::IndexScaleFormat::kUe8m0, keys, key_scales);
  keys_f.clear();
  keys_f.shrink_to_fit();
  std::vector<float> q(static_cast<std::size_t>(kIndexHeads * D)), gates(static_cast<std::size_t>(kIndexHeads));
  fill_normal(q, 12, 1.0f);
  fill_normal(gates, 13, 1.0f);
  std::vector<std::uint8_t> q_codes(q.size());
  std::vector<float> head_w(gates.size()), scores(static_cast<std::size_t>(positions)), ref(scores.size());
  k::quantize_index_query(q, gates, k::IndexScaleFormat::kUe8m0, q_codes, head_w);
  const k::IndexerShape shape{1, kIndexHeads, positions};
  const std::int64_t check = std::min<std::int64_t>(positions, 256);
  k::dsa_index_ref(shape, q_codes, head_w, keys, key_scales, ref, 0, check);
  k::dsa_index_fast(shape, q_codes, head_w, keys, key_scales, scores, 0, positions);
  for (std::int64_t i = 0; i < check; ++i) {
    const auto j = static_cast<std::size_t>(i);
    if (!(std::fabs(scores[j] - ref[j]) <= 1e-3f * (std::fabs(ref[j]) + 1.0f))) {
      state.SkipWithError("validation against dsa_index_ref failed");
      for (auto _ : state) state.SetIterationTime(0);
      return;
    }
  }
  const k::TopkShape ts{positions, kTopk};
  std::vector<std::int32_t> chosen(static_cast<std::size_t>(std::min(positions, kTopk)));
  std::vector<std::uint32_t> topk_scratch(static_cast<std::size_t>(k::dsa_topk_scratch_size(ts)));
  if (with_topk) {
    timed_pool_loop(state, ctx.pool(1), [&](int, int) { k::dsa_topk_fast(scores, kTopk, chosen, topk_scratch); });
    benchmark::DoNotOptimize(chosen.data());
    set_work_counters(state, k::work_of(ts), 4.0 * static_cast<double>(positions));
    return;
  }
  timed_pool_loop(state, ctx.pool(threads), [&](int i, int t) {
    const auto [lo, hi] = slice(positions, i, t);
    k::dsa_index_fast(shape, q_codes, head_w, keys, key_scales, scores, lo, hi);
  });
  benchmark::DoNotOptimize(scores.data());
  set_work_counters(state, k::work_of(shape), static_cast<double>(keys.size() + 4 * key_scales.size()));
}

}  // namespace

void register_attention(SuiteContext& ctx) {
  const int t = ctx.max_threads();
  std::vector<std::int64_t> contexts{1024, 4096, 32768, 131072};
  if (ctx.config().quick) contexts = {4096, 32768};
  for (const auto& [name, fmt] : {std::pair{"bf16", k::MlaCacheFormat::kBf16}, std::pair{"fp8", k::MlaCacheFormat::kFp8}}) {
    for (const std::int64_t c : contexts)
      add_case(ctx, std::string("BM_mla_decode/") + name + "/ctx:" + std::to_string(c) + threads_arg(t),
               [&ctx, f = fmt, c, t](benchmark::State& s) { bm_mla_decode(s, ctx, f, c, t); });
    add_case(ctx, std::string("BM_mla_decode/") + name + "/ctx:64/small",
             [&ctx, f = fmt](benchmark::State& s) { bm_mla_decode(s, ctx, f, 64, 1); });
  }
  std::vector<std::int64_t> index_contexts{4096, 32768, 131072};
  if (ctx.config().quick) index_contexts = {32768, 131072};
  for (const std::int64_t c : index_contexts)
    add_case(ctx, "BM_dsa_indexer/fp8/ctx:" + std::to_string(c) + threads_arg(t),
             [&ctx, c, t](benchmark::State& s) { bm_dsa_indexer(s, ctx, c, t, false); });
  add_case(ctx, "BM_dsa_indexer/fp8/ctx:256/small", [&ctx](benchmark::State& s) { bm_dsa_indexer(s, ctx, 256, 1, false); });
  add_case(ctx, "BM_dsa_topk/fp32/ctx:131072/k:2048", [&ctx](benchmark::State& s) { bm_dsa_indexer(s, ctx, 131072, 1, true); });
  add_case(ctx, "BM_dsa_topk/fp32/ctx:4096/k:2048/small", [&ctx](benchmark::State& s) { bm_dsa_indexer(s, ctx, 4096, 1, true); });
}

}  // namespace deepfit::bench
