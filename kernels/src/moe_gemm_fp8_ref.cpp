// moe_gemm_fp8_ref, the specification of the FP8 block-scaled matrix-vector product (see
// moe_gemm_fp8.h), and the entry checks every variant shares. Plain loops: obviously right, not
// fast; the vector kernels are in moe_gemm_fp8_blocked.cpp.
#include "kernels/moe_gemm_fp8.h"

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

}  // namespace

void check_fp8_matvec(const char* kernel, const Fp8MatvecShape& shape, std::span<const std::byte> weights,
                      std::span<const float> scales, std::span<const float> x, std::span<const float> y,
                      std::int64_t n_begin, std::int64_t n_end) {
  if (shape.batch < 0 || shape.rows < 0 || shape.cols < 0) {
    fail(kernel, "negative dimension in shape {batch " + std::to_string(shape.batch) + ", rows " +
                     std::to_string(shape.rows) + ", cols " + std::to_string(shape.cols) + "} (expected >= 0)");
  }
  expect_size(kernel, "weights (bytes)", weights.size(), checked_product(kernel, shape.rows, shape.cols, "weight bytes"));
  const std::int64_t tile_cols = fp8_scale_tiles(shape.cols);
  expect_size(kernel, "scales", scales.size(), checked_product(kernel, fp8_scale_tiles(shape.rows), tile_cols, "scales"));
  expect_size(kernel, "x", x.size(), checked_product(kernel, shape.batch, shape.cols, "x size"));
  expect_size(kernel, "y", y.size(), checked_product(kernel, shape.batch, shape.rows, "y size"));
  if (n_begin < 0 || n_begin > n_end || n_end > shape.rows) {
    fail(kernel, "row slice [" + std::to_string(n_begin) + ", " + std::to_string(n_end) +
                     ") (expected 0 <= n_begin <= n_end <= rows = " + std::to_string(shape.rows) + ")");
  }
  if (overlaps(x, y)) fail(kernel, "y overlaps x (expected separate arrays)");
  if (overlaps(scales, y)) fail(kernel, "y overlaps the scales (expected separate arrays)");
  if (n_begin == n_end) return;
  // The tile rows the slice touches: [n_begin / 128, ceil(n_end / 128)).
  const std::int64_t first = n_begin / kFp8ScaleTile * tile_cols;
  const std::int64_t last = fp8_scale_tiles(n_end) * tile_cols;
  for (std::int64_t i = first; i < last; ++i) {
    const float s = scales[static_cast<std::size_t>(i)];
    if (!(std::fabs(s) <= kFp8MaxScale)) {  // also catches NaN
      fail(kernel, "scale [" + std::to_string(i / tile_cols) + "][" + std::to_string(i % tile_cols) + "] = " +
                       std::to_string(s) + " (expected finite, |scale| <= 2^119)");
    }
  }
}

}  // namespace detail

void moe_gemm_fp8_ref(const Fp8MatvecShape& shape, std::span<const std::byte> weights, std::span<const float> scales,
                      std::span<const float> x, std::span<float> y, std::int64_t n_begin, std::int64_t n_end) {
  detail::check_fp8_matvec("moe_gemm_fp8_ref", shape, weights, scales, x, y, n_begin, n_end);
  const auto K = static_cast<std::size_t>(shape.cols);  // K: weights per row
  const auto N = static_cast<std::size_t>(shape.rows);  // N: rows of the whole matrix
  const auto tile = static_cast<std::size_t>(kFp8ScaleTile);
  const auto tile_cols = static_cast<std::size_t>(fp8_scale_tiles(shape.cols));
  for (std::size_t b = 0; b < static_cast<std::size_t>(shape.batch); ++b) {
    const float* xb = x.data() + b * K;
    for (auto n = static_cast<std::size_t>(n_begin); n < static_cast<std::size_t>(n_end); ++n) {
      const std::byte* row = weights.data() + n * K;
      const float* scale_row = scales.data() + n / tile * tile_cols;
      double acc = 0.0;
      for (std::size_t k = 0; k < K; ++k) {
        // e4m3 (4 significant bits) * fp32 scale (24) * fp32 x (24): 52 bits, exact in double.
        const double w = static_cast<double>(fp8_e4m3_to_fp32(std::to_integer<std::uint8_t>(row[k]))) *
                         static_cast<double>(scale_row[k / tile]);
        acc += w * static_cast<double>(xb[k]);
      }
      y[b * N + n] = static_cast<float>(acc);
    }
  }
}

}  // namespace deepfit::kernels
