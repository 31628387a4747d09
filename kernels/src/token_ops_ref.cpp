// The specifications of the per-token ops (token_ops.h): plain loops in double, the entry checks
// every variant shares, the YaRN frequency and table setup, and the scalar exp_fp32. The vector
// code is in token_ops_fast.cpp.
#include "kernels/token_ops.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <numbers>
#include <string>

#include "entry_checks.h"
#include "kernels/error.h"
#include "kernels/quant_blocks.h"

namespace deepfit::kernels {
namespace detail {
namespace {

using entry::fail;

std::string str(std::int64_t v) { return std::to_string(v); }

std::string str(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

template <typename A, typename B>
bool spans_overlap(std::span<A> a, std::span<B> b) {
  return ranges_overlap(a.data(), a.size_bytes(), b.data(), b.size_bytes());
}

void check_rope_config(const char* kernel, const RopeYarnConfig& c) {
  if (c.rope_dim < 2 || c.rope_dim % 2 != 0) fail(kernel, "rope_dim " + str(c.rope_dim) + " (expected even and >= 2)");
  if (!std::isfinite(c.rope_theta) || c.rope_theta <= 1.0) {
    fail(kernel, "rope_theta " + str(c.rope_theta) + " (expected finite and > 1)");
  }
  if (!std::isfinite(c.factor) || c.factor < 1.0) fail(kernel, "factor " + str(c.factor) + " (expected finite and >= 1)");
  if (c.original_max_position_embeddings < 1) {
    fail(kernel, "original_max_position_embeddings " + str(c.original_max_position_embeddings) + " (expected >= 1)");
  }
  if (!std::isfinite(c.beta_fast) || !std::isfinite(c.beta_slow) || !(c.beta_slow > 0.0) ||
      !(c.beta_fast > c.beta_slow)) {
    fail(kernel, "beta_fast " + str(c.beta_fast) + ", beta_slow " + str(c.beta_slow) +
                     " (expected finite, beta_fast > beta_slow > 0)");
  }
  if (!std::isfinite(c.mscale) || c.mscale < 0.0 || !std::isfinite(c.mscale_all_dim) || c.mscale_all_dim < 0.0) {
    fail(kernel, "mscale " + str(c.mscale) + ", mscale_all_dim " + str(c.mscale_all_dim) +
                     " (expected finite and >= 0)");
  }
}

}  // namespace

void check_slice_bounds(const char* kernel, const char* what, std::int64_t begin, std::int64_t end,
                        std::int64_t count) {
  if (begin < 0 || begin > end || end > count) {
    fail(kernel, std::string(what) + " slice [" + str(begin) + ", " + str(end) + ") (expected 0 <= begin <= end <= " +
                     str(count) + ")");
  }
}

std::int64_t checked_count(const char* kernel, std::int64_t a, std::int64_t b, const char* what) {
  if (a < 0 || b < 0) fail(kernel, std::string(what) + ": negative count " + str(a) + " x " + str(b));
  if (a != 0 && b > std::numeric_limits<std::int64_t>::max() / a) {
    fail(kernel, std::string(what) + " overflows: " + str(a) + " x " + str(b));
  }
  return a * b;
}

void check_span_size(const char* kernel, const char* what, std::size_t got, std::int64_t expected) {
  if (got != static_cast<std::size_t>(expected)) {
    fail(kernel, std::string(what) + " has " + std::to_string(got) + " elements (expected " + str(expected) + ")");
  }
}

bool ranges_overlap(const void* a, std::size_t a_bytes, const void* b, std::size_t b_bytes) {
  if (a_bytes == 0 || b_bytes == 0) return false;
  const auto* a0 = static_cast<const std::byte*>(a);
  const auto* b0 = static_cast<const std::byte*>(b);
  const std::less<const std::byte*> less;  // a total order even on unrelated pointers
  return less(a0, b0 + b_bytes) && less(b0, a0 + a_bytes);
}

void check_rms_norm(const char* kernel, const RmsNormShape& shape, std::span<const float> x,
                    std::span<const std::byte> weight, float eps, std::span<const float> y, std::int64_t row_begin,
                    std::int64_t row_end) {
  if (shape.num_rows < 0 || shape.hidden_dim < 1) {
    fail(kernel, "shape [" + str(shape.num_rows) + "][" + str(shape.hidden_dim) +
                     "] (expected num_rows >= 0, hidden_dim >= 1)");
  }
  if (shape.weight_type != NormWeightType::kBf16 && shape.weight_type != NormWeightType::kFp32) {
    fail(kernel, "unknown weight_type");
  }
  const std::int64_t n = checked_count(kernel, shape.num_rows, shape.hidden_dim, "x size");
  check_span_size(kernel, "x", x.size(), n);
  check_span_size(kernel, "y", y.size(), n);
  const std::int64_t value_bytes = shape.weight_type == NormWeightType::kBf16 ? 2 : 4;
  check_span_size(kernel, "weight (bytes)", weight.size(), checked_count(kernel, shape.hidden_dim, value_bytes, "weight"));
  if (!std::isfinite(eps) || eps < 0.0f) fail(kernel, "eps " + str(static_cast<double>(eps)) + " (expected finite and >= 0)");
  if (x.data() != y.data() && spans_overlap(x, y)) fail(kernel, "y overlaps x without being x (expected in place or separate)");
  if (spans_overlap(weight, y)) fail(kernel, "y overlaps the weight");
  check_slice_bounds(kernel, "row", row_begin, row_end, shape.num_rows);
}

void check_rope(const char* kernel, const RopeShape& shape, std::span<const float> table,
                std::span<const std::int64_t> positions, std::span<const float> x, std::int64_t t_begin,
                std::int64_t t_end) {
  if (shape.num_tokens < 0 || shape.num_heads < 1 || shape.rope_dim < 2 || shape.rope_dim % 2 != 0 ||
      shape.rope_offset < 0 || shape.num_positions < 0) {
    fail(kernel, "shape {num_tokens " + str(shape.num_tokens) + ", num_heads " + str(shape.num_heads) + ", rope_dim " +
                     str(shape.rope_dim) + ", rope_offset " + str(shape.rope_offset) + ", num_positions " +
                     str(shape.num_positions) +
                     "} (expected num_tokens >= 0, num_heads >= 1, rope_dim even and >= 2, rope_offset >= 0, "
                     "num_positions >= 0)");
  }
  if (shape.layout != RopeLayout::kInterleaved && shape.layout != RopeLayout::kHalfSplit) fail(kernel, "unknown layout");
  if (shape.rope_offset > std::numeric_limits<std::int64_t>::max() - shape.rope_dim ||
      shape.head_stride < shape.rope_offset + shape.rope_dim) {
    fail(kernel, "head_stride " + str(shape.head_stride) + " (expected >= rope_offset + rope_dim = " +
                     str(shape.rope_offset) + " + " + str(shape.rope_dim) + ")");
  }
  const std::int64_t token_floats = checked_count(kernel, shape.num_heads, shape.head_stride, "token size");
  check_span_size(kernel, "x", x.size(), checked_count(kernel, shape.num_tokens, token_floats, "x size"));
  check_span_size(kernel, "table", table.size(), checked_count(kernel, shape.num_positions, shape.rope_dim, "table size"));
  check_span_size(kernel, "positions", positions.size(), shape.num_tokens);
  if (spans_overlap(x, table) || spans_overlap(x, positions)) fail(kernel, "x overlaps the table or the positions");
  check_slice_bounds(kernel, "token", t_begin, t_end, shape.num_tokens);
  for (std::size_t t = 0; t < positions.size(); ++t) {
    if (positions[t] < 0 || positions[t] >= shape.num_positions) {
      fail(kernel, "position " + str(positions[t]) + " of token " + std::to_string(t) +
                       " is outside the table (expected 0 <= position < num_positions = " + str(shape.num_positions) +
                       ")");
    }
  }
}

void check_swiglu(const char* kernel, const SwigluShape& shape, std::span<const float> gate_up,
                  std::span<const float> h, std::int64_t t_begin, std::int64_t t_end) {
  if (shape.num_tokens < 0 || shape.ffn_dim < 1) {
    fail(kernel, "shape [" + str(shape.num_tokens) + "][" + str(shape.ffn_dim) +
                     "] (expected num_tokens >= 0, ffn_dim >= 1)");
  }
  const std::int64_t n = checked_count(kernel, shape.num_tokens, shape.ffn_dim, "h size");
  check_span_size(kernel, "h", h.size(), n);
  check_span_size(kernel, "gate_up", gate_up.size(), checked_count(kernel, n, 2, "gate_up size"));
  if (spans_overlap(gate_up, h)) fail(kernel, "h overlaps gate_up (expected separate arrays)");
  check_slice_bounds(kernel, "token", t_begin, t_end, shape.num_tokens);
}

void check_embedding(const char* kernel, const EmbeddingShape& shape, std::span<const std::uint16_t> table,
                     std::span<const std::int32_t> ids, std::span<const float> out, std::int64_t t_begin,
                     std::int64_t t_end) {
  if (shape.num_tokens < 0 || shape.vocab_size < 1 || shape.hidden_dim < 1) {
    fail(kernel, "shape {num_tokens " + str(shape.num_tokens) + ", vocab_size " + str(shape.vocab_size) +
                     ", hidden_dim " + str(shape.hidden_dim) + "} (expected num_tokens >= 0, vocab_size >= 1, "
                     "hidden_dim >= 1)");
  }
  check_span_size(kernel, "table", table.size(), checked_count(kernel, shape.vocab_size, shape.hidden_dim, "table size"));
  check_span_size(kernel, "ids", ids.size(), shape.num_tokens);
  check_span_size(kernel, "out", out.size(), checked_count(kernel, shape.num_tokens, shape.hidden_dim, "out size"));
  if (spans_overlap(out, table) || spans_overlap(out, ids)) fail(kernel, "out overlaps the table or the ids");
  check_slice_bounds(kernel, "token", t_begin, t_end, shape.num_tokens);
  for (std::size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= shape.vocab_size) {
      fail(kernel, "token id " + str(static_cast<std::int64_t>(ids[t])) + " at position " + std::to_string(t) +
                       " is outside the vocabulary (expected 0 <= id < vocab_size = " + str(shape.vocab_size) + ")");
    }
  }
}

float exp_fp32(float t) {
  if (std::isnan(t)) return t;
  if (t < -86.5f) return 0.0f;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693147182464599609375f;  // fp32(ln 2)
  constexpr float kLn2Lo = -1.90465429995e-09f;       // fp32(ln 2 - kLn2Hi)
  const float tc = std::min(t, 89.0f);
  const float n = std::nearbyint(tc * kLog2e);
  float r = std::fma(-n, kLn2Hi, tc);
  r = std::fma(-n, kLn2Lo, r);
  float p = 1.0f / 5040.0f;
  p = std::fma(p, r, 1.0f / 720.0f);
  p = std::fma(p, r, 1.0f / 120.0f);
  p = std::fma(p, r, 1.0f / 24.0f);
  p = std::fma(p, r, 1.0f / 6.0f);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  // n - 1 is in [-126, 127]: 2^(n-1) is a normal float built from its exponent bits.
  const auto bits = static_cast<std::uint32_t>(static_cast<std::int32_t>(n) - 1 + 127) << 23;
  return (p + p) * std::bit_cast<float>(bits);
}

}  // namespace detail

// ---- RMSNorm.

void rms_norm_ref(const RmsNormShape& shape, std::span<const float> x, std::span<const std::byte> weight, float eps,
                  std::span<float> y, std::int64_t row_begin, std::int64_t row_end) {
  detail::check_rms_norm("rms_norm_ref", shape, x, weight, eps, y, row_begin, row_end);
  const auto D = static_cast<std::size_t>(shape.hidden_dim);  // D: elements per row
  const auto w = [&](std::size_t i) -> double {
    if (shape.weight_type == NormWeightType::kBf16) {
      const auto bits = static_cast<std::uint16_t>(std::to_integer<unsigned>(weight[2 * i]) |
                                                   std::to_integer<unsigned>(weight[2 * i + 1]) << 8);
      return bf16_to_fp32(bits);
    }
    std::uint32_t bits = 0;
    for (std::size_t b = 0; b < 4; ++b) bits |= std::to_integer<std::uint32_t>(weight[4 * i + b]) << (8 * b);
    return std::bit_cast<float>(bits);
  };
  for (auto r = static_cast<std::size_t>(row_begin); r < static_cast<std::size_t>(row_end); ++r) {
    const float* xr = x.data() + r * D;
    double sum_sq = 0.0;
    for (std::size_t i = 0; i < D; ++i) sum_sq += static_cast<double>(xr[i]) * static_cast<double>(xr[i]);
    const double inv_rms = 1.0 / std::sqrt(sum_sq / static_cast<double>(D) + static_cast<double>(eps));
    float* yr = y.data() + r * D;  // may be xr (in place): xr[i] is read before yr[i] is written
    for (std::size_t i = 0; i < D; ++i) yr[i] = static_cast<float>(static_cast<double>(xr[i]) * inv_rms * w(i));
  }
}

// ---- RoPE.

double yarn_get_mscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

double yarn_softmax_scale_factor(const RopeYarnConfig& config) {
  const double m = yarn_get_mscale(config.factor, config.mscale_all_dim);
  return m * m;
}

void rope_yarn_inv_freq(const RopeYarnConfig& config, std::span<double> inv_freq) {
  constexpr const char* kKernel = "rope_yarn_inv_freq";
  detail::check_rope_config(kKernel, config);
  detail::check_span_size(kKernel, "inv_freq", inv_freq.size(), config.rope_dim / 2);
  const auto dim = static_cast<double>(config.rope_dim);
  const double log_base = std::log(config.rope_theta);
  const double original = static_cast<double>(config.original_max_position_embeddings);
  // The pair index at which a frequency makes `rotations` turns over the original context.
  const auto correction_dim = [&](double rotations) {
    return dim * std::log(original / (rotations * 2.0 * std::numbers::pi)) / (2.0 * log_base);
  };
  const double low = std::max(std::floor(correction_dim(config.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(config.beta_slow)), dim - 1.0);
  if (low == high) high += 0.001;
  for (std::size_t i = 0; i < inv_freq.size(); ++i) {
    const double theta = std::pow(config.rope_theta, -2.0 * static_cast<double>(i) / dim);
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    inv_freq[i] = theta / config.factor * ramp + theta * (1.0 - ramp);
  }
}

void rope_yarn_table(const RopeYarnConfig& config, std::int64_t num_positions, std::span<float> table,
                     std::int64_t pos_begin, std::int64_t pos_end) {
  constexpr const char* kKernel = "rope_yarn_table";
  detail::check_rope_config(kKernel, config);
  if (num_positions < 0) throw InputError(std::string(kKernel) + ": num_positions " + std::to_string(num_positions) + " (expected >= 0)");
  detail::check_span_size(kKernel, "table", table.size(),
                          detail::checked_count(kKernel, num_positions, config.rope_dim, "table size"));
  detail::check_slice_bounds(kKernel, "position", pos_begin, pos_end, num_positions);
  constexpr std::size_t kMaxPairs = 512;  // rope_dim up to 1024: the frequencies fit on the stack
  if (config.rope_dim / 2 > static_cast<std::int64_t>(kMaxPairs)) {
    throw InputError(std::string(kKernel) + ": rope_dim " + std::to_string(config.rope_dim) + " (expected <= 1024)");
  }
  const auto pairs = static_cast<std::size_t>(config.rope_dim / 2);
  std::array<double, kMaxPairs> inv_freq{};
  rope_yarn_inv_freq(config, std::span<double>(inv_freq.data(), pairs));
  const double m = yarn_get_mscale(config.factor, config.mscale) / yarn_get_mscale(config.factor, config.mscale_all_dim);
  for (auto p = static_cast<std::size_t>(pos_begin); p < static_cast<std::size_t>(pos_end); ++p) {
    float* row = table.data() + p * 2 * pairs;
    for (std::size_t i = 0; i < pairs; ++i) {
      const double angle = static_cast<double>(p) * inv_freq[i];
      row[2 * i] = static_cast<float>(m * std::cos(angle));
      row[2 * i + 1] = static_cast<float>(m * std::sin(angle));
    }
  }
}

void rope_apply_ref(const RopeShape& shape, std::span<const float> table, std::span<const std::int64_t> positions,
                    std::span<float> x, std::int64_t t_begin, std::int64_t t_end) {
  detail::check_rope("rope_apply_ref", shape, table, positions, x, t_begin, t_end);
  const auto H = static_cast<std::size_t>(shape.num_heads);     // heads per token
  const auto S = static_cast<std::size_t>(shape.head_stride);   // floats per head
  const auto D = static_cast<std::size_t>(shape.rope_dim);      // rotated floats per head
  const auto half = D / 2;
  for (auto t = static_cast<std::size_t>(t_begin); t < static_cast<std::size_t>(t_end); ++t) {
    const float* row = table.data() + static_cast<std::size_t>(positions[t]) * D;
    for (std::size_t h = 0; h < H; ++h) {
      float* xp = x.data() + (t * H + h) * S + static_cast<std::size_t>(shape.rope_offset);
      for (std::size_t i = 0; i < half; ++i) {
        const std::size_t ia = shape.layout == RopeLayout::kInterleaved ? 2 * i : i;
        const std::size_t ib = shape.layout == RopeLayout::kInterleaved ? 2 * i + 1 : i + half;
        const double a = xp[ia];
        const double b = xp[ib];
        const double c = row[2 * i];
        const double s = row[2 * i + 1];
        xp[ia] = static_cast<float>(a * c - b * s);
        xp[ib] = static_cast<float>(a * s + b * c);
      }
    }
  }
}

// ---- SwiGLU.

void swiglu_ref(const SwigluShape& shape, std::span<const float> gate_up, std::span<float> h, std::int64_t t_begin,
                std::int64_t t_end) {
  detail::check_swiglu("swiglu_ref", shape, gate_up, h, t_begin, t_end);
  const auto F = static_cast<std::size_t>(shape.ffn_dim);  // F: outputs per token
  for (auto t = static_cast<std::size_t>(t_begin); t < static_cast<std::size_t>(t_end); ++t) {
    const float* g = gate_up.data() + t * 2 * F;
    const float* u = g + F;
    for (std::size_t i = 0; i < F; ++i) {
      const double gi = g[i];
      h[t * F + i] = static_cast<float>(gi * static_cast<double>(u[i]) / (1.0 + std::exp(-gi)));
    }
  }
}

// ---- Embedding lookup.

void embedding_lookup_ref(const EmbeddingShape& shape, std::span<const std::uint16_t> table,
                          std::span<const std::int32_t> ids, std::span<float> out, std::int64_t t_begin,
                          std::int64_t t_end) {
  detail::check_embedding("embedding_lookup_ref", shape, table, ids, out, t_begin, t_end);
  const auto D = static_cast<std::size_t>(shape.hidden_dim);  // D: elements per row
  for (auto t = static_cast<std::size_t>(t_begin); t < static_cast<std::size_t>(t_end); ++t) {
    const std::uint16_t* row = table.data() + static_cast<std::size_t>(ids[t]) * D;
    for (std::size_t i = 0; i < D; ++i) out[t * D + i] = bf16_to_fp32(row[i]);
  }
}

}  // namespace deepfit::kernels
