// The DSA specification (see dsa.h): the index quantizers, dsa_index_ref and dsa_topk_ref, the
// entry checks every variant shares, and the work_of overloads. Plain loops: obviously right, not
// fast; the vector indexer and the one-pass top-k are in dsa_fast.cpp.
#include "kernels/dsa.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <string>

#include "entry_checks.h"
#include "kernels/error.h"
#include "kernels/quant_blocks.h"

namespace deepfit::kernels {
namespace {

using entry::fail;
using entry::checked_product;
using entry::expect_size;
using entry::overlaps;

constexpr std::int64_t kMaxPositions = std::int64_t{1} << 31;  // positions are int32

void expect_finite(const char* kernel, const char* what, std::span<const float> v, std::size_t offset = 0) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      fail(kernel, std::string(what) + "[" + std::to_string(offset + i) + "] is " + std::to_string(v[i]) +
                       " (expected a finite value)");
    }
  }
}

bool is_nan_code(std::uint8_t c) { return (c & 0x7Fu) == 0x7Fu; }

// The block scale of act_quant (see IndexScaleFormat) for amax already floored at 1e-4.
float block_scale(float amax, IndexScaleFormat fmt) {
  constexpr float kInvFp8Max = 1.0f / kFp8E4m3Max;
  const float ratio = amax * kInvFp8Max;
  if (fmt == IndexScaleFormat::kFp32) return ratio;
  // ceil(log2(ratio)) from the bits of a normal float (ratio >= 1e-4 / 448 is normal): the
  // unbiased exponent, plus one when the value is not a power of two.
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(ratio);
  const int exponent = static_cast<int>((bits >> 23) & 0xFFu) - 127 + ((bits & 0x7FFFFFu) != 0 ? 1 : 0);
  return std::bit_cast<float>(static_cast<std::uint32_t>(exponent + 127) << 23);
}

}  // namespace

// ---- Quantizers

void quantize_index_rows(std::span<const float> x, IndexScaleFormat fmt, std::span<std::uint8_t> codes,
                         std::span<float> scales) {
  constexpr const char* kKernel = "quantize_index_rows";
  constexpr auto kBlock = static_cast<std::size_t>(kIndexHeadDim);
  if (x.size() % kBlock != 0) {
    fail(kKernel, "x has " + std::to_string(x.size()) + " values (expected a multiple of 128)");
  }
  const std::size_t rows = x.size() / kBlock;
  expect_size(kKernel, "codes", codes.size(), static_cast<std::int64_t>(x.size()));
  expect_size(kKernel, "scales", scales.size(), static_cast<std::int64_t>(rows));
  expect_finite(kKernel, "x", x);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * kBlock;
    float amax = 0.0f;
    for (std::size_t j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(xr[j]));
    const float s = block_scale(std::max(amax, 1e-4f), fmt);
    for (std::size_t j = 0; j < kBlock; ++j) {
      codes[r * kBlock + j] = fp32_to_fp8_e4m3(std::clamp(xr[j] / s, -kFp8E4m3Max, kFp8E4m3Max));
    }
    scales[r] = s;
  }
}

void quantize_index_query(std::span<const float> q, std::span<const float> head_gates, IndexScaleFormat fmt,
                          std::span<std::uint8_t> q_codes, std::span<float> head_weights) {
  constexpr const char* kKernel = "quantize_index_query";
  const auto num_heads = static_cast<std::int64_t>(head_gates.size());
  if (num_heads < 1 || num_heads > kMaxIndexHeads) {
    fail(kKernel, "head_gates has " + std::to_string(num_heads) + " heads (expected 1.." +
                      std::to_string(kMaxIndexHeads) + ")");
  }
  expect_size(kKernel, "q", q.size(), num_heads * kIndexHeadDim);
  expect_size(kKernel, "q_codes", q_codes.size(), num_heads * kIndexHeadDim);
  expect_size(kKernel, "head_weights", head_weights.size(), num_heads);
  expect_finite(kKernel, "head_gates", head_gates);
  expect_finite(kKernel, "q", q);
  if (overlaps(head_gates, std::span<const float>(head_weights))) {
    fail(kKernel, "head_weights overlaps head_gates (expected separate arrays)");
  }
  quantize_index_rows(q, fmt, q_codes, head_weights);  // head_weights holds the q scales for now
  // The reference: weights_proj(x) * n_heads ** -0.5, then * q_scale * softmax_scale, with
  // softmax_scale = head_dim ** -0.5; the Python doubles enter the fp32 arithmetic as floats.
  const auto head_factor = static_cast<float>(1.0 / std::sqrt(static_cast<double>(num_heads)));
  const auto softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(kIndexHeadDim)));
  for (std::size_t h = 0; h < head_gates.size(); ++h) {
    head_weights[h] = ((head_gates[h] * head_factor) * head_weights[h]) * softmax_scale;
  }
}

// ---- Work

Work work_of(const IndexerSlice& s) {
  const IndexerShape& sh = s.shape;
  DEEPFIT_ASSERT(sh.num_queries >= 0 && sh.num_heads >= 1 && sh.ctx_len >= sh.num_queries,
                 "work_of(IndexerSlice): shape out of range");
  DEEPFIT_ASSERT(0 <= s.t_begin && s.t_begin <= s.t_end && s.t_end <= sh.ctx_len,
                 "work_of(IndexerSlice): slice out of range");
  const std::int64_t width = s.t_end - s.t_begin;
  const std::int64_t prefix = sh.ctx_len - sh.num_queries;
  double seen_pairs = 0.0;
  for (std::int64_t i = 0; i < sh.num_queries; ++i) {
    // Query i sees positions 0..prefix+i, i.e. [t_begin, min(t_end, prefix + i + 1)) of the slice.
    seen_pairs += static_cast<double>(std::clamp<std::int64_t>(prefix + i + 1 - s.t_begin, 0, width));
  }
  const double heads = static_cast<double>(sh.num_heads);
  const double queries = static_cast<double>(sh.num_queries);
  const double dim = static_cast<double>(kIndexHeadDim);
  constexpr double kFloatBytes = sizeof(float);
  const double flops = seen_pairs * (2.0 * heads * dim + 2.0 * heads + 1.0);
  const double bytes = static_cast<double>(width) * (dim + kFloatBytes) + queries * heads * (dim + kFloatBytes) +
                       kFloatBytes * queries * static_cast<double>(width);
  return {flops, bytes};
}

Work work_of(const IndexerShape& s) { return work_of(IndexerSlice{s, 0, s.ctx_len}); }

Work work_of(const TopkShape& s) {
  DEEPFIT_ASSERT(s.ctx_len >= 0 && s.k >= 0, "work_of(TopkShape): negative count");
  constexpr double kWordBytes = 4.0;
  const auto n = static_cast<double>(s.ctx_len);
  return {n, kWordBytes * n + kWordBytes * static_cast<double>(std::min(s.k, s.ctx_len))};
}

std::int64_t dsa_topk_scratch_size(const TopkShape& s) {
  if (s.ctx_len < 0 || s.ctx_len >= kMaxPositions || s.k < 0) {
    fail("dsa_topk_scratch_size", "shape {ctx_len " + std::to_string(s.ctx_len) + ", k " + std::to_string(s.k) +
                                      "} (expected 0 <= ctx_len < 2^31, k >= 0)");
  }
  return std::max(s.ctx_len, 6 * std::min(s.k, s.ctx_len) + 4096);
}

// ---- Entry checks

namespace detail {

void check_index(const char* kernel, const IndexerShape& shape, std::span<const std::uint8_t> q_codes,
                 std::span<const float> head_weights, std::span<const std::uint8_t> keys,
                 std::span<const float> key_scales, std::span<const float> scores, std::int64_t t_begin,
                 std::int64_t t_end) {
  const std::int64_t T = shape.num_queries;
  const std::int64_t H = shape.num_heads;
  const std::int64_t N = shape.ctx_len;
  if (T < 0 || H < 1 || H > kMaxIndexHeads || N < T || N >= kMaxPositions) {
    fail(kernel, "shape {num_queries " + std::to_string(T) + ", num_heads " + std::to_string(H) + ", ctx_len " +
                     std::to_string(N) + "} (expected num_queries >= 0, 1 <= num_heads <= " +
                     std::to_string(kMaxIndexHeads) + ", num_queries <= ctx_len < 2^31)");
  }
  expect_size(kernel, "q_codes", q_codes.size(), T * H * kIndexHeadDim);
  expect_size(kernel, "head_weights", head_weights.size(), T * H);
  expect_size(kernel, "keys", keys.size(), N * kIndexHeadDim);
  expect_size(kernel, "key_scales", key_scales.size(), N);
  expect_size(kernel, "scores", scores.size(), checked_product(kernel, T, N, "scores size"));
  if (t_begin < 0 || t_begin > t_end || t_end > N) {
    fail(kernel, "position slice [" + std::to_string(t_begin) + ", " + std::to_string(t_end) +
                     ") (expected 0 <= t_begin <= t_end <= ctx_len = " + std::to_string(N) + ")");
  }
  expect_finite(kernel, "head_weights", head_weights);
  const auto tb = static_cast<std::size_t>(t_begin);
  expect_finite(kernel, "key_scales", key_scales.subspan(tb, static_cast<std::size_t>(t_end) - tb), tb);
  for (std::size_t j = 0; j < q_codes.size(); ++j) {
    if (is_nan_code(q_codes[j])) {
      fail(kernel, "q_codes[" + std::to_string(j) + "] is the e4m3 NaN code " + std::to_string(q_codes[j]) +
                       " (quantize_index_query never writes it)");
    }
  }
  if (overlaps(scores, head_weights) || overlaps(scores, key_scales) || overlaps(scores, q_codes) ||
      overlaps(scores, keys)) {
    fail(kernel, "scores overlaps an input (expected separate arrays)");
  }
}

void check_topk(const char* kernel, std::span<const float> scores, std::int64_t k,
                std::span<const std::int32_t> positions, std::span<const std::uint32_t> scratch) {
  const auto n = static_cast<std::int64_t>(scores.size());
  if (k < 0) fail(kernel, "k " + std::to_string(k) + " (expected k >= 0)");
  if (n >= kMaxPositions) fail(kernel, "ctx_len " + std::to_string(n) + " (expected < 2^31: positions are int32)");
  expect_size(kernel, "positions", positions.size(), std::min(k, n));
  const std::int64_t need = dsa_topk_scratch_size(TopkShape{n, k});
  if (static_cast<std::int64_t>(scratch.size()) < need) {
    fail(kernel, "scratch has " + std::to_string(scratch.size()) + " elements (expected at least " +
                     std::to_string(need) + " = dsa_topk_scratch_size({ctx_len " + std::to_string(n) + ", k " +
                     std::to_string(k) + "}))");
  }
  if (overlaps(positions, scores) || overlaps(positions, scratch) || overlaps(scratch, scores)) {
    fail(kernel, "positions, scores and scratch must be separate arrays");
  }
}

}  // namespace detail

// ---- Indexer

void dsa_index_ref(const IndexerShape& shape, std::span<const std::uint8_t> q_codes,
                   std::span<const float> head_weights, std::span<const std::uint8_t> keys,
                   std::span<const float> key_scales, std::span<float> scores, std::int64_t t_begin,
                   std::int64_t t_end) {
  detail::check_index("dsa_index_ref", shape, q_codes, head_weights, keys, key_scales, scores, t_begin, t_end);
  std::array<double, 256> value{};
  for (unsigned c = 0; c < 256; ++c) value[c] = fp8_e4m3_to_fp32(static_cast<std::uint8_t>(c));
  const auto H = static_cast<std::size_t>(shape.num_heads);
  const auto N = static_cast<std::size_t>(shape.ctx_len);
  const auto D = static_cast<std::size_t>(kIndexHeadDim);
  const std::int64_t prefix = shape.ctx_len - shape.num_queries;
  for (std::int64_t i = 0; i < shape.num_queries; ++i) {
    const auto qi = static_cast<std::size_t>(i);
    for (std::int64_t t = t_begin; t < t_end; ++t) {
      const auto ti = static_cast<std::size_t>(t);
      if (t > prefix + i) {
        scores[qi * N + ti] = -std::numeric_limits<float>::infinity();
        continue;
      }
      double sum = 0.0;
      for (std::size_t h = 0; h < H; ++h) {
        const std::uint8_t* q = q_codes.data() + (qi * H + h) * D;
        const std::uint8_t* k = keys.data() + ti * D;
        double dot = 0.0;
        for (std::size_t d = 0; d < D; ++d) dot += value[q[d]] * value[k[d]];
        const double relu = dot < 0.0 ? 0.0 : dot;  // a NaN dot stays NaN
        sum += static_cast<double>(head_weights[qi * H + h]) * relu;
      }
      scores[qi * N + ti] = static_cast<float>(static_cast<double>(key_scales[ti]) * sum);
    }
  }
}

// ---- Top-k

void dsa_topk_ref(std::span<const float> scores, std::int64_t k, std::span<std::int32_t> positions,
                  std::span<std::uint32_t> scratch) {
  constexpr const char* kKernel = "dsa_topk_ref";
  detail::check_topk(kKernel, scores, k, positions, scratch);
  for (std::size_t t = 0; t < scores.size(); ++t) {
    if (std::isnan(scores[t])) fail(kKernel, "scores[" + std::to_string(t) + "] is NaN (expected a number)");
  }
  const std::size_t n = scores.size();
  const std::span<std::uint32_t> order = scratch.first(n);
  for (std::size_t t = 0; t < n; ++t) order[t] = static_cast<std::uint32_t>(t);
  std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    if (scores[a] != scores[b]) return scores[a] > scores[b];  // -0 == +0: a tie
    return a < b;
  });
  const std::span<std::uint32_t> kept = order.first(positions.size());
  std::sort(kept.begin(), kept.end());
  for (std::size_t j = 0; j < kept.size(); ++j) positions[j] = static_cast<std::int32_t>(kept[j]);
}

}  // namespace deepfit::kernels
