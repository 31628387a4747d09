// Expert matrix-vector products y[b][n] = sum_k W[n][k] * x[b][k] over stored weight formats
// (BF16, GGUF Q8_0 and Q4_K), sliced over output rows, plus the int8 activation quantizer the
// Q8_0/Q4_K kernels read. Routing tokens to experts, threads and timing belong to the caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/work.h"

namespace deepfit::kernels {

// ---- Quantized activations (the int8 side of the Q8_0 and Q4_K dot products).
// Each activation vector is cut into groups of 32 consecutive values; group g of vector b gets
//   scale[b][g] = amax / 127 (fp32), amax = max |x| over the group,
//   qs[b][32g + i] = round-half-away(x * (1 / scale)) in -127..127 (0 when scale = 0),
//   sums[b][g] = sum over the group of qs (the Q4_K kernels' min term: sum_i (d*sc*q_i - dmin*m) a_i
//   needs sum_i a_i).
// Like llama.cpp's q8_0 activations but with an fp32 scale, and per 32 where its q8_K (used for
// k-quants) has one scale per 256: per 32 keeps one outlier from coarsening 255 neighbours.
// Error: |scale * qs - x| <= scale / 2 per value, up to fp32 rounding of x * (1 / scale).
// qs never holds -128, which the Q8_0 kernels rely on (see src/moe_gemm_avx512.inc).
inline constexpr std::int64_t kActivationGroup = 32;

// Read-only view of caller-owned quantized activations; spans must have exactly the sizes below.
struct ActivationsQ8 {
  std::int64_t batch;                  // activation vectors
  std::int64_t cols;                   // values per vector, a multiple of kActivationGroup
  std::span<const std::int8_t> qs;     // [batch][cols]
  std::span<const float> scales;       // [batch][cols / 32]
  std::span<const std::int32_t> sums;  // [batch][cols / 32]
};

// Quantizes x [batch][cols] (fp32, row-major) into qs, scales and sums (layouts as in
// ActivationsQ8). Entry checks (InputError, before writing): batch >= 0, cols >= 0 and a multiple
// of 32, every span exactly its size, x finite. Calling thread only; O(batch * cols), no allocation.
// Deterministic: the same bytes on every ISA (plain scalar fp32 operations).
void quantize_activations_q8(std::span<const float> x, std::int64_t batch, std::int64_t cols,
                             std::span<std::int8_t> qs, std::span<float> scales, std::span<std::int32_t> sums);

// ---- Matrix-vector products.
// Common contract.
//   Math: y[b][n] = sum over k < cols of W[n][k] * x[b][k] for b < batch and n in [n_begin, n_end).
//   Shapes and layout (shape = MatvecShape{batch, rows, cols, weight_format} of the whole matrix):
//     weights  [rows][weight_row_bytes(format, cols)] bytes: row n is its cols weights as BF16
//              values (little-endian) or as cols / 32 Q8_0 or cols / 256 Q4_K blocks
//              (kernels/quant_blocks.h), so W[n][k] is the dequantized weight;
//     x        [batch][cols] fp32;  y  [batch][rows] fp32 (y[b * rows + n]).
//   Slice: writes exactly y[b][n] for every b and n in [n_begin, n_end), and nothing else, so a
//     caller's thread pool splits the rows into disjoint slices and calls concurrently. Runs on the
//     calling thread; no allocation, no shared state.
//   Entry checks (InputError, before anything is written): dimensions >= 0, cols a whole number of
//     blocks, every span exactly its size, 0 <= n_begin <= n_end <= rows, y not overlapping x.
//   Work per call: work_of(MatvecShape{batch, n_end - n_begin, cols, format}) (kernels/work.h).
//   Blocked variants: 4 rows at a time; with batch > 1 each group of rows is read from memory
//   once and reused from cache for every vector. A row's arithmetic does not depend on the slice
//   or its place in it, so any split of the rows gives the same bits.

// The specification: every weight dequantized by the reference codecs of quant_blocks.h (bf16 ->
// fp32 for BF16), products and sums in double, rounded to fp32 once at the end. Every format.
void moe_gemm_ref(const MatvecShape& shape, std::span<const std::byte> weights, std::span<const float> x,
                  std::span<float> y, std::int64_t n_begin, std::int64_t n_end);

// BF16 weights times fp32 activations (no activation rounding), fp32 FMA accumulation in a fixed
// blocked order. Other formats: InputError (use moe_gemm_blocked_q8).
// Tolerance against moe_gemm_ref: |y - y_ref| <= gamma(cols + 2) * sum_k |W[n][k] x[b][k]|, with
// gamma(m) = m u / (1 - m u), u = 2^-24 (fp32 dot product in any summation order, plus the final
// rounding of the reference).
void moe_gemm_blocked(const MatvecShape& shape, std::span<const std::byte> weights, std::span<const float> x,
                      std::span<float> y, std::int64_t n_begin, std::int64_t n_end);

// Q8_0 or Q4_K weights times quantized activations (from quantize_activations_q8 on the x that
// moe_gemm_ref receives): exact int32 dot products per 32 weights (VPDPBUSD where the CPU has
// AVX512_VNNI), then fp32 scaling and accumulation. BF16: InputError (use moe_gemm_blocked).
// Tolerance against moe_gemm_ref on that x, with s_k the activation scale of k's group and
// c_k = |W[n][k]| (Q8_0) or |W[n][k]| + 2 dmin m (Q4_K, the magnitudes before the min cancels):
//   |y - y_ref| <= sum_k |W[n][k]| s_k / 2                      (activation rounding)
//                + gamma(cols / 32 + 8) * sum_k c_k (|x_k| + s_k / 2)   (fp32 scaling and sums).
void moe_gemm_blocked_q8(const MatvecShape& shape, std::span<const std::byte> weights, const ActivationsQ8& xq,
                         std::span<float> y, std::int64_t n_begin, std::int64_t n_end);

namespace detail {
// The code paths of the blocked kernels. The public functions take the best one the CPU has; the
// tests force each in turn so every path is checked on one AVX-512 host.
enum class MatvecIsa {
  kPortable,    // plain C++, any CPU
  kAvx512,      // AVX-512 F/BW/DQ/VL plus F16C
  kAvx512Vnni,  // the above plus AVX512_VNNI (VPDPBUSD)
};
MatvecIsa best_matvec_isa();
bool cpu_has(MatvecIsa isa);
// As the public functions, on a forced path; InputError if the CPU lacks it.
void moe_gemm_blocked_on(MatvecIsa isa, const MatvecShape& shape, std::span<const std::byte> weights,
                         std::span<const float> x, std::span<float> y, std::int64_t n_begin, std::int64_t n_end);
void moe_gemm_blocked_q8_on(MatvecIsa isa, const MatvecShape& shape, std::span<const std::byte> weights,
                            const ActivationsQ8& xq, std::span<float> y, std::int64_t n_begin, std::int64_t n_end);
// Entry checks shared by every variant (InputError naming `kernel`): the shape, the weight and
// output sizes, the slice. The fp32 activations are checked by check_matvec_x, the quantized ones
// by check_matvec_xq.
void check_matvec(const char* kernel, const MatvecShape& shape, std::size_t weight_bytes, std::span<const float> y,
                  std::int64_t n_begin, std::int64_t n_end);
void check_matvec_x(const char* kernel, const MatvecShape& shape, std::span<const float> x, std::span<const float> y);
void check_matvec_xq(const char* kernel, const MatvecShape& shape, const ActivationsQ8& xq, std::span<const float> y);
}  // namespace detail

}  // namespace deepfit::kernels
