// expert_ffn_ref, the specification of the routed SwiGLU experts (see expert_ffn.h), with the entry
// checks that the grouped phases share. Plain loops in double: obviously right, not fast; the
// grouped variant is in expert_ffn.cpp.
#include "kernels/expert_ffn.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "entry_checks.h"
#include "kernels/error.h"
#include "kernels/quant_blocks.h"

namespace deepfit::kernels {
namespace {

using entry::fail;
using entry::overlaps;

const char* format_name(ExpertWeightFormat f) {
  switch (f) {
    case ExpertWeightFormat::kBf16: return "BF16";
    case ExpertWeightFormat::kQ8_0: return "Q8_0";
    case ExpertWeightFormat::kQ4_K: return "Q4_K";
    case ExpertWeightFormat::kFp8E4m3: return "FP8 e4m3";
  }
  return "unknown";
}

// The weights per block that hidden_dim and ffn_dim must be a multiple of.
std::int64_t block_weights(ExpertWeightFormat f) {
  switch (f) {
    case ExpertWeightFormat::kQ8_0: return block_geometry(WeightFormat::kQ8_0).weights;
    case ExpertWeightFormat::kQ4_K: return block_geometry(WeightFormat::kQ4_K).weights;
    case ExpertWeightFormat::kBf16:
    case ExpertWeightFormat::kFp8E4m3: return 1;
  }
  return 1;
}

// sum over k < cols of W[row][k] * v[k] in double, W one matrix [rows][cols] of the layer's
// format decoded by the reference codecs, one block (at most 256 weights) at a time.
template <typename V>
double dot_row_ref(ExpertWeightFormat f, const ExpertMatrix& m, std::int64_t cols, std::int64_t row, const V* v) {
  const auto K = static_cast<std::size_t>(cols);
  const auto n = static_cast<std::size_t>(row);
  double acc = 0.0;
  switch (f) {
    case ExpertWeightFormat::kBf16: {
      const std::byte* w = m.weights.data() + n * 2 * K;
      for (std::size_t k = 0; k < K; ++k) {
        const auto bits = static_cast<std::uint16_t>(std::to_integer<unsigned>(w[2 * k]) |
                                                     std::to_integer<unsigned>(w[2 * k + 1]) << 8);
        acc += static_cast<double>(bf16_to_fp32(bits)) * static_cast<double>(v[k]);
      }
      return acc;
    }
    case ExpertWeightFormat::kFp8E4m3: {
      const std::byte* w = m.weights.data() + n * K;
      const auto tile = static_cast<std::size_t>(kFp8ScaleTile);
      const float* scale_row = m.scales.data() + n / tile * static_cast<std::size_t>(fp8_scale_tiles(cols));
      for (std::size_t k = 0; k < K; ++k) {
        const double wk = static_cast<double>(fp8_e4m3_to_fp32(std::to_integer<std::uint8_t>(w[k]))) *
                          static_cast<double>(scale_row[k / tile]);
        acc += wk * static_cast<double>(v[k]);
      }
      return acc;
    }
    case ExpertWeightFormat::kQ8_0:
    case ExpertWeightFormat::kQ4_K: {
      const WeightFormat wf = f == ExpertWeightFormat::kQ8_0 ? WeightFormat::kQ8_0 : WeightFormat::kQ4_K;
      const WeightBlockGeometry g = block_geometry(wf);
      const auto bw = static_cast<std::size_t>(g.weights);
      const auto bb = static_cast<std::size_t>(g.bytes);
      const std::byte* w = m.weights.data() + n * static_cast<std::size_t>(weight_row_bytes(wf, cols));
      std::array<float, kQ4_KBlockWeights> block{};
      for (std::size_t k0 = 0; k0 < K; k0 += bw) {
        const std::span<const std::byte> in(w + k0 / bw * bb, bb);
        const std::span<float> out(block.data(), bw);
        if (wf == WeightFormat::kQ8_0) {
          dequantize_row_q8_0_ref(in, out);
        } else {
          dequantize_row_q4_K_ref(in, out);
        }
        for (std::size_t i = 0; i < bw; ++i) acc += static_cast<double>(out[i]) * static_cast<double>(v[k0 + i]);
      }
      return acc;
    }
  }
  return acc;
}

}  // namespace

namespace detail {

void check_expert_ffn_shape(const char* kernel, const ExpertFfnShape& s) {
  constexpr std::int64_t kInt32Max = std::numeric_limits<std::int32_t>::max();
  if (s.num_tokens < 0 || s.num_tokens > kInt32Max || s.top_k < 1 || s.num_experts < 1 ||
      s.num_experts > kInt32Max || s.hidden_dim < 1 || s.ffn_dim < 1) {
    fail(kernel, "shape {num_tokens " + std::to_string(s.num_tokens) + ", top_k " + std::to_string(s.top_k) +
                     ", num_experts " + std::to_string(s.num_experts) + ", hidden_dim " + std::to_string(s.hidden_dim) +
                     ", ffn_dim " + std::to_string(s.ffn_dim) +
                     "} (expected num_tokens >= 0, the others >= 1, num_tokens and num_experts < 2^31)");
  }
  const std::int64_t block = block_weights(s.weight_format);
  if (s.hidden_dim % block != 0 || s.ffn_dim % block != 0) {
    fail(kernel, std::string(format_name(s.weight_format)) + " needs hidden_dim and ffn_dim multiples of " +
                     std::to_string(block) + " (got hidden_dim " + std::to_string(s.hidden_dim) + ", ffn_dim " +
                     std::to_string(s.ffn_dim) + ")");
  }
  // Every count below (P * hidden_dim, the matrix bytes, ...) must fit an int64 with room to spare.
  constexpr double kLimit = 0x1p62;
  const double pairs = static_cast<double>(s.num_tokens) * static_cast<double>(s.top_k);
  const double widest = static_cast<double>(std::max(s.hidden_dim, s.ffn_dim));
  if (pairs * widest * 4.0 > kLimit || static_cast<double>(s.hidden_dim) * static_cast<double>(s.ffn_dim) * 2.0 > kLimit) {
    fail(kernel, "sizes overflow: num_tokens * top_k = " + std::to_string(pairs) + " pairs of hidden_dim " +
                     std::to_string(s.hidden_dim) + ", ffn_dim " + std::to_string(s.ffn_dim));
  }
}

void check_expert_weights(const char* kernel, const ExpertFfnShape& s, std::span<const ExpertWeights> experts) {
  if (experts.size() != static_cast<std::size_t>(s.num_experts)) {
    fail(kernel, "experts has " + std::to_string(experts.size()) + " entries (expected num_experts = " +
                     std::to_string(s.num_experts) + ")");
  }
  const auto check = [&](const ExpertMatrix& m, std::int64_t rows, std::int64_t cols, const char* which,
                         std::size_t e) {
    const std::int64_t bytes = expert_matrix_weight_bytes(s.weight_format, rows, cols);
    const std::int64_t num_scales = expert_matrix_num_scales(s.weight_format, rows, cols);
    if (m.weights.size() != static_cast<std::size_t>(bytes) || m.scales.size() != static_cast<std::size_t>(num_scales)) {
      fail(kernel, "expert " + std::to_string(e) + " " + which + ": " + std::to_string(m.weights.size()) +
                       " weight bytes and " + std::to_string(m.scales.size()) + " scales (expected " +
                       std::to_string(bytes) + " and " + std::to_string(num_scales) + " for " +
                       format_name(s.weight_format) + " [" + std::to_string(rows) + "][" + std::to_string(cols) + "])");
    }
  };
  for (std::size_t e = 0; e < experts.size(); ++e) {
    check(experts[e].gate, s.ffn_dim, s.hidden_dim, "gate", e);
    check(experts[e].up, s.ffn_dim, s.hidden_dim, "up", e);
    check(experts[e].down, s.hidden_dim, s.ffn_dim, "down", e);
  }
}

void check_topk(const char* kernel, const ExpertFfnShape& s, std::span<const std::int32_t> topk_ids,
                std::span<const float> topk_weights) {
  const auto pairs = static_cast<std::size_t>(s.num_tokens * s.top_k);
  if (topk_ids.size() != pairs || topk_weights.size() != pairs) {
    fail(kernel, "topk_ids has " + std::to_string(topk_ids.size()) + " and topk_weights " +
                     std::to_string(topk_weights.size()) + " elements (expected num_tokens * top_k = " +
                     std::to_string(pairs) + " each)");
  }
  for (std::size_t i = 0; i < pairs; ++i) {
    if (topk_ids[i] < 0 || topk_ids[i] >= s.num_experts) {
      fail(kernel, "topk_ids[" + std::to_string(i / static_cast<std::size_t>(s.top_k)) + "][" +
                       std::to_string(i % static_cast<std::size_t>(s.top_k)) + "] = " + std::to_string(topk_ids[i]) +
                       " (expected an expert id in [0, " + std::to_string(s.num_experts) + "))");
    }
    if (!std::isfinite(topk_weights[i])) {
      fail(kernel, "topk_weights[" + std::to_string(i / static_cast<std::size_t>(s.top_k)) + "][" +
                       std::to_string(i % static_cast<std::size_t>(s.top_k)) + "] = " +
                       std::to_string(topk_weights[i]) + " is not finite");
    }
  }
}

void check_fp8_scale_row(const char* kernel, const ExpertMatrix& m, std::int64_t cols, std::int64_t tile_row,
                         const char* which, std::int64_t expert) {
  const std::int64_t tile_cols = fp8_scale_tiles(cols);
  for (std::int64_t j = 0; j < tile_cols; ++j) {
    const float v = m.scales[static_cast<std::size_t>(tile_row * tile_cols + j)];
    if (!(std::fabs(v) <= kFp8MaxScale)) {  // also catches NaN
      fail(kernel, "expert " + std::to_string(expert) + " " + which + " scale [" + std::to_string(tile_row) + "][" +
                       std::to_string(j) + "] = " + std::to_string(v) + " (expected finite, |scale| <= 2^119)");
    }
  }
}

}  // namespace detail

std::int64_t expert_ffn_ref_scratch_size(const ExpertFfnShape& shape) {
  detail::check_expert_ffn_shape("expert_ffn_ref_scratch_size", shape);
  return shape.ffn_dim + shape.hidden_dim;
}

void expert_ffn_ref(const ExpertFfnShape& shape, std::span<const ExpertWeights> experts,
                    std::span<const std::int32_t> topk_ids, std::span<const float> topk_weights,
                    std::span<const float> x, std::span<float> out, std::span<double> scratch) {
  constexpr const char* kKernel = "expert_ffn_ref";
  detail::check_expert_ffn_shape(kKernel, shape);
  detail::check_expert_weights(kKernel, shape, experts);
  detail::check_topk(kKernel, shape, topk_ids, topk_weights);
  const auto T = static_cast<std::size_t>(shape.num_tokens);
  const auto H = static_cast<std::size_t>(shape.hidden_dim);
  const auto F = static_cast<std::size_t>(shape.ffn_dim);
  const auto top_k = static_cast<std::size_t>(shape.top_k);
  if (x.size() != T * H || out.size() != T * H) {
    fail(kKernel, "x has " + std::to_string(x.size()) + " and out " + std::to_string(out.size()) +
                      " elements (expected num_tokens * hidden_dim = " + std::to_string(T * H) + " each)");
  }
  if (overlaps(x, out)) fail(kKernel, "out overlaps x (expected separate arrays)");
  if (scratch.size() != F + H) {
    fail(kKernel, "scratch has " + std::to_string(scratch.size()) + " elements (expected ffn_dim + hidden_dim = " +
                      std::to_string(F + H) + ")");
  }
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) fail(kKernel, "x[" + std::to_string(i / H) + "][" + std::to_string(i % H) + "] is not finite");
  }
  const ExpertWeightFormat f = shape.weight_format;
  if (f == ExpertWeightFormat::kFp8E4m3) {
    for (const std::int32_t e : topk_ids) {
      const ExpertWeights& w = experts[static_cast<std::size_t>(e)];
      for (std::int64_t i = 0; i < fp8_scale_tiles(shape.ffn_dim); ++i) {
        detail::check_fp8_scale_row(kKernel, w.gate, shape.hidden_dim, i, "gate", e);
        detail::check_fp8_scale_row(kKernel, w.up, shape.hidden_dim, i, "up", e);
      }
      for (std::int64_t i = 0; i < fp8_scale_tiles(shape.hidden_dim); ++i) {
        detail::check_fp8_scale_row(kKernel, w.down, shape.ffn_dim, i, "down", e);
      }
    }
  }
  double* h = scratch.data();
  double* acc = scratch.data() + F;
  for (std::size_t t = 0; t < T; ++t) {
    const float* xt = x.data() + t * H;
    for (std::size_t c = 0; c < H; ++c) acc[c] = 0.0;
    for (std::size_t j = 0; j < top_k; ++j) {
      const ExpertWeights& w = experts[static_cast<std::size_t>(topk_ids[t * top_k + j])];
      const double weight = static_cast<double>(topk_weights[t * top_k + j]);
      for (std::size_t r = 0; r < F; ++r) {
        const auto row = static_cast<std::int64_t>(r);
        const double g = dot_row_ref(f, w.gate, shape.hidden_dim, row, xt);
        const double u = dot_row_ref(f, w.up, shape.hidden_dim, row, xt);
        h[r] = g / (1.0 + std::exp(-g)) * u;
      }
      for (std::size_t c = 0; c < H; ++c) {
        acc[c] += weight * dot_row_ref(f, w.down, shape.ffn_dim, static_cast<std::int64_t>(c), h);
      }
    }
    for (std::size_t c = 0; c < H; ++c) {
      out[t * H + c] = static_cast<float>(static_cast<double>(out[t * H + c]) + acc[c]);
    }
  }
}

}  // namespace deepfit::kernels
