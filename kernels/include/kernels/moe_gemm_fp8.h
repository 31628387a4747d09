// Expert matrix-vector products over FP8 e4m3 weights with one fp32 scale per 128 x 128 tile (the
// layout of DeepSeek-V3's released weights), sliced over output rows. Quantizing weights to this
// format, routing and threads belong to the caller; BF16/Q8_0/Q4_K weights are in moe_gemm.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/error.h"
#include "kernels/moe_gemm.h"
#include "kernels/work.h"

namespace deepfit::kernels {

// ---- Layout
// weights  [rows][cols] bytes, row-major, each an e4m3 value (quant_blocks.h, fp8_e4m3_to_fp32);
// scales   [fp8_scale_tiles(rows)][fp8_scale_tiles(cols)] fp32, row-major: scale[i][j] covers the
//          tile of rows [128 i, 128 i + 128) and columns [128 j, 128 j + 128), clipped to the matrix
//          (rows and cols need not be multiples of 128: the last tiles are partial).
// The weight at [n][k] is W[n][k] = fp8_e4m3_to_fp32(weights[n][k]) * scale[n / 128][k / 128].
// (DeepSeek-V3's checkpoints call the scales `weight_scale_inv`: they multiply, as here.)
inline constexpr std::int64_t kFp8ScaleTile = 128;

// Tiles of kFp8ScaleTile covering a dimension of n >= 0 (the last one partial when n is not a multiple).
constexpr std::int64_t fp8_scale_tiles(std::int64_t n) { return (n + kFp8ScaleTile - 1) / kFp8ScaleTile; }

// Bound on the magnitude of a scale: the vector path multiplies each scale by 2^8 (see
// moe_gemm_fp8_blocked), which must stay finite. Real scales are amax / 448 of a tile, far below.
inline constexpr float kFp8MaxScale = 0x1p119f;

// y[b][n] = sum over k of W[n][k] * x[b][k], for b < batch, n < rows, k < cols: FP8 weights as
// above, `batch` fp32 activation vectors of `cols`, fp32 outputs. For a kernel call over the output
// rows [n_begin, n_end), rows = n_end - n_begin.
struct Fp8MatvecShape {
  std::int64_t batch;  // activation vectors, >= 0
  std::int64_t rows;   // output rows N, >= 0
  std::int64_t cols;   // reduction length K, >= 0 (any value; not tied to the 128-wide tiles)
};

// flops = 2 * batch * rows * cols (one multiply-add per weight and activation vector; the one
//         multiply per tile by its scale is not counted).
// bytes = rows * cols                                       the e4m3 weights, read once
//       + 4 * fp8_scale_tiles(rows) * fp8_scale_tiles(cols)  the fp32 scales of the tiles, read once
//       + 4 * batch * cols                                   the fp32 activations, read once
//       + 4 * batch * rows                                   the fp32 outputs, written once.
// Exact for a whole matrix and for a row slice that starts at a multiple of 128. A slice starting
// elsewhere can touch one more row of tiles (4 * fp8_scale_tiles(cols) bytes, under 0.03% of its
// weight bytes once it holds 128 rows) that this formula does not count. Write-allocate is excluded (see Work).
inline Work work_of(const Fp8MatvecShape& s) {
  DEEPFIT_ASSERT(s.batch >= 0 && s.rows >= 0 && s.cols >= 0, "work_of(Fp8MatvecShape): negative dimension");
  const double batch = static_cast<double>(s.batch);
  const double rows = static_cast<double>(s.rows);
  const double cols = static_cast<double>(s.cols);
  constexpr double kFloatBytes = sizeof(float);
  const double scale_bytes =
      kFloatBytes * static_cast<double>(fp8_scale_tiles(s.rows)) * static_cast<double>(fp8_scale_tiles(s.cols));
  return {2.0 * batch * rows * cols, rows * cols + scale_bytes + kFloatBytes * batch * (cols + rows)};
}

// ---- Matrix-vector products.
// Common contract.
//   Math: y[b][n] = sum over k < cols of W[n][k] * x[b][k] for b < batch and n in [n_begin, n_end).
//   Shapes and layout (shape = Fp8MatvecShape{batch, rows, cols} of the whole matrix):
//     weights [rows][cols] e4m3 bytes; scales [fp8_scale_tiles(rows)][fp8_scale_tiles(cols)] fp32
//     (see Layout); x [batch][cols] fp32; y [batch][rows] fp32 (y[b * rows + n]).
//   Slice: writes exactly y[b][n] for every b and n in [n_begin, n_end), and nothing else, so a
//     caller's thread pool splits the rows into disjoint slices and calls concurrently. Runs on the
//     calling thread; no allocation (a few KiB of stack), no shared state.
//   Entry checks (InputError, before anything is written): dimensions >= 0, every span exactly its
//     size, 0 <= n_begin <= n_end <= rows, y overlapping neither x nor scales, and every scale of the
//     tiles the slice touches finite with |scale| <= kFp8MaxScale.
//   Work per call: work_of(Fp8MatvecShape{batch, n_end - n_begin, cols}).
//   Weight bytes 0x7F and 0xFF are e4m3's NaN; real weights never hold them (quantizers saturate
//   at +-448), and the kernels do not look for them: moe_gemm_fp8_ref propagates the NaN into the
//   outputs of that row; moe_gemm_fp8_blocked reads them as +-480 (the value the bit pattern would
//   have if the format continued past 448) and stays finite.

// The specification: every weight decoded by fp8_e4m3_to_fp32 and multiplied by its tile scale,
// products and sums in double (each product e4m3 * scale * x is exact in double), rounded to fp32
// once at the end.
void moe_gemm_fp8_ref(const Fp8MatvecShape& shape, std::span<const std::byte> weights, std::span<const float> scales,
                      std::span<const float> x, std::span<float> y, std::int64_t n_begin, std::int64_t n_end);

// Blocked variant: 4 rows at a time share each activation load. Each 128-column tile's dot product
// is accumulated in fp32 (16 lanes of at most 8 terms), then multiplied by the tile scale and added
// to a 16-lane running sum, which is reduced at the end. AVX-512 path: a weight byte is decoded by
// placing its low 7 bits at bit 7 of an fp16 and its sign at bit 15, which is exactly the e4m3
// value times 2^-8 (e4m3 subnormals become fp16 subnormals), then VCVTPH2PS, which converts fp16
// subnormals exactly and does not apply MXCSR.DAZ; the 2^8 is folded into the tile scale. At
// batch 1 the weights stream from memory once, with a software prefetch a few KiB ahead on each
// row; the decode (one VCVTPH2PS and one FMA per 16 weights) rather than memory can be the limit.
// At batch > 1 each 4-row x 128-column tile is decoded once into a stack buffer and reused for up
// to 16 activation vectors at a time (4 rows x 4 vectors of accumulators in registers).
// Both paths do the same fp32 operations in the same order for each output, so y[b][n] does not
// depend on the batch size, on the other vectors, or on the slicing (identical bits).
// Tolerance against moe_gemm_fp8_ref, T = fp8_scale_tiles(cols), barring underflow:
//   |y - y_ref| <= gamma(T + 16) * sum_k |W[n][k] x[b][k]|,  gamma(m) = m u / (1 - m u), u = 2^-24.
// Derivation: each term passes through at most 9 roundings inside its tile (a product and up to
// 8 additions in its lane; one FMA each on the vector path), 1 for the scale product, T for the
// running sum over tiles, 4 for the 16-lane reduction: T + 14; the reference's rounding to fp32
// (u) and its double sum (< K 2^-53) fit in the two more.
void moe_gemm_fp8_blocked(const Fp8MatvecShape& shape, std::span<const std::byte> weights,
                          std::span<const float> scales, std::span<const float> x, std::span<float> y,
                          std::int64_t n_begin, std::int64_t n_end);

namespace detail {
// As moe_gemm_fp8_blocked on a forced code path (MatvecIsa of moe_gemm.h): kPortable is plain C++;
// kAvx512 and kAvx512Vnni both run the AVX-512 body (it needs no VNNI). InputError if the CPU
// lacks the path. Tests force each path the host has.
void moe_gemm_fp8_blocked_on(MatvecIsa isa, const Fp8MatvecShape& shape, std::span<const std::byte> weights,
                             std::span<const float> scales, std::span<const float> x, std::span<float> y,
                             std::int64_t n_begin, std::int64_t n_end);
// The entry checks shared by every variant (InputError naming `kernel`), see the common contract.
void check_fp8_matvec(const char* kernel, const Fp8MatvecShape& shape, std::span<const std::byte> weights,
                      std::span<const float> scales, std::span<const float> x, std::span<const float> y,
                      std::int64_t n_begin, std::int64_t n_end);
}  // namespace detail

}  // namespace deepfit::kernels
