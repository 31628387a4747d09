// moe_gemm_ref, the specification of the expert matrix-vector product (see moe_gemm.h), with the
// entry checks every variant shares and the int8 activation quantizer. Plain loops: obviously right,
// not fast; the vector kernels are in moe_gemm_blocked.cpp.
#include "kernels/moe_gemm.h"

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
namespace detail {
namespace {

using entry::fail;
using entry::checked_product;
using entry::expect_size;
using entry::overlaps;

const char* format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::kBf16: return "BF16";
    case WeightFormat::kQ8_0: return "Q8_0";
    case WeightFormat::kQ4_K: return "Q4_K";
  }
  return "unknown";
}

}  // namespace

void check_matvec(const char* kernel, const MatvecShape& shape, std::size_t weight_bytes, std::span<const float> y,
                  std::int64_t n_begin, std::int64_t n_end) {
  if (shape.batch < 0 || shape.rows < 0 || shape.cols < 0) {
    fail(kernel, "negative dimension in shape {batch " + std::to_string(shape.batch) + ", rows " +
                     std::to_string(shape.rows) + ", cols " + std::to_string(shape.cols) + "} (expected >= 0)");
  }
  const WeightBlockGeometry g = block_geometry(shape.weight_format);
  if (shape.cols % g.weights != 0) {
    fail(kernel, "cols " + std::to_string(shape.cols) + " is not a whole number of " +
                     format_name(shape.weight_format) + " blocks (expected a multiple of " + std::to_string(g.weights) +
                     ")");
  }
  const std::int64_t row_bytes = checked_product(kernel, shape.cols / g.weights, g.bytes, "row bytes");
  expect_size(kernel, "weights (bytes)", weight_bytes, checked_product(kernel, shape.rows, row_bytes, "weight bytes"));
  expect_size(kernel, "y", y.size(), checked_product(kernel, shape.batch, shape.rows, "y size"));
  if (n_begin < 0 || n_begin > n_end || n_end > shape.rows) {
    fail(kernel, "row slice [" + std::to_string(n_begin) + ", " + std::to_string(n_end) +
                     ") (expected 0 <= n_begin <= n_end <= rows = " + std::to_string(shape.rows) + ")");
  }
}

void check_matvec_x(const char* kernel, const MatvecShape& shape, std::span<const float> x, std::span<const float> y) {
  expect_size(kernel, "x", x.size(), checked_product(kernel, shape.batch, shape.cols, "x size"));
  if (overlaps(x, y)) fail(kernel, "y overlaps x (expected separate arrays)");
}

void check_matvec_xq(const char* kernel, const MatvecShape& shape, const ActivationsQ8& xq, std::span<const float> y) {
  if (xq.batch != shape.batch || xq.cols != shape.cols) {
    fail(kernel, "quantized activations are [" + std::to_string(xq.batch) + "][" + std::to_string(xq.cols) +
                     "] (expected [batch " + std::to_string(shape.batch) + "][cols " + std::to_string(shape.cols) +
                     "])");
  }
  const std::int64_t num_values = checked_product(kernel, shape.batch, shape.cols, "x size");
  expect_size(kernel, "xq.qs", xq.qs.size(), num_values);
  expect_size(kernel, "xq.scales", xq.scales.size(), num_values / kActivationGroup);
  expect_size(kernel, "xq.sums", xq.sums.size(), num_values / kActivationGroup);
  if (overlaps(xq.qs, y) || overlaps(xq.scales, y) || overlaps(xq.sums, y)) {
    fail(kernel, "y overlaps the quantized activations (expected separate arrays)");
  }
}

}  // namespace detail

void quantize_activations_q8(std::span<const float> x, std::int64_t batch, std::int64_t cols,
                             std::span<std::int8_t> qs, std::span<float> scales, std::span<std::int32_t> sums) {
  constexpr const char* kKernel = "quantize_activations_q8";
  if (batch < 0 || cols < 0 || cols % kActivationGroup != 0) {
    throw InputError(std::string(kKernel) + ": shape [" + std::to_string(batch) + "][" + std::to_string(cols) +
                     "] (expected batch >= 0 and cols >= 0 a multiple of 32)");
  }
  const std::int64_t num_values = detail::checked_product(kKernel, batch, cols, "x size");
  detail::expect_size(kKernel, "x", x.size(), num_values);
  detail::expect_size(kKernel, "qs", qs.size(), num_values);
  detail::expect_size(kKernel, "scales", scales.size(), num_values / kActivationGroup);
  detail::expect_size(kKernel, "sums", sums.size(), num_values / kActivationGroup);
  const auto bad = std::find_if(x.begin(), x.end(), [](float v) { return !std::isfinite(v); });
  if (bad != x.end()) {
    throw InputError(std::string(kKernel) + ": x[" + std::to_string(bad - x.begin()) + "] = " + std::to_string(*bad) +
                     " is not finite");
  }
  const auto num_groups = static_cast<std::size_t>(num_values / kActivationGroup);
  constexpr auto kGroup = static_cast<std::size_t>(kActivationGroup);
  for (std::size_t g = 0; g < num_groups; ++g) {
    const float* xg = x.data() + g * kGroup;
    float amax = 0.0f;
    for (std::size_t i = 0; i < kGroup; ++i) amax = std::max(amax, std::fabs(xg[i]));
    const float scale = amax / 127.0f;
    const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
    std::int32_t sum = 0;
    for (std::size_t i = 0; i < kGroup; ++i) {
      // |x * inverse| <= 127 * (1 + 2^-23)^2 < 127.5, so the rounded value is within -127..127.
      const auto q = static_cast<std::int8_t>(std::round(xg[i] * inverse));
      qs[g * kGroup + i] = q;
      sum += q;
    }
    scales[g] = scale;
    sums[g] = sum;
  }
}

void moe_gemm_ref(const MatvecShape& shape, std::span<const std::byte> weights, std::span<const float> x,
                  std::span<float> y, std::int64_t n_begin, std::int64_t n_end) {
  detail::check_matvec("moe_gemm_ref", shape, weights.size(), y, n_begin, n_end);
  detail::check_matvec_x("moe_gemm_ref", shape, x, y);
  const auto K = static_cast<std::size_t>(shape.cols);  // K: weights per row
  const auto N = static_cast<std::size_t>(shape.rows);  // N: rows of the whole matrix
  const auto row_bytes = static_cast<std::size_t>(weight_row_bytes(shape.weight_format, shape.cols));
  const WeightBlockGeometry g = block_geometry(shape.weight_format);
  const auto block_weights = static_cast<std::size_t>(g.weights);
  const auto block_bytes = static_cast<std::size_t>(g.bytes);
  // One dequantized block at a time (at most 256 weights), through the reference codecs.
  std::array<float, kQ4_KBlockWeights> w{};
  for (std::int64_t b = 0; b < shape.batch; ++b) {
    const float* xb = x.data() + static_cast<std::size_t>(b) * K;
    for (auto n = static_cast<std::size_t>(n_begin); n < static_cast<std::size_t>(n_end); ++n) {
      const std::byte* row = weights.data() + n * row_bytes;
      double acc = 0.0;
      for (std::size_t k0 = 0; k0 < K; k0 += block_weights) {
        const std::span<const std::byte> block(row + k0 / block_weights * block_bytes, block_bytes);
        const std::span<float> out(w.data(), block_weights);
        switch (shape.weight_format) {
          case WeightFormat::kBf16: {
            const auto bits = static_cast<std::uint16_t>(std::to_integer<unsigned>(block[0]) |
                                                         std::to_integer<unsigned>(block[1]) << 8);
            out[0] = bf16_to_fp32(bits);
            break;
          }
          case WeightFormat::kQ8_0: dequantize_row_q8_0_ref(block, out); break;
          case WeightFormat::kQ4_K: dequantize_row_q4_K_ref(block, out); break;
        }
        for (std::size_t i = 0; i < block_weights; ++i) {
          acc += static_cast<double>(out[i]) * static_cast<double>(xb[k0 + i]);
        }
      }
      y[static_cast<std::size_t>(b) * N + n] = static_cast<float>(acc);
    }
  }
}

}  // namespace deepfit::kernels
