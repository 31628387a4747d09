// Compute-bound BF16 expert GEMM for prefill and large decode batches: BF16 weights times
// activations rounded to bf16, fp32 accumulation by VDPBF16PS, plus the activation packer it reads.
// Routing, threads and timing belong to the caller; memory-bound small batches use moe_gemm.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/work.h"

namespace deepfit::kernels {

// ---- Packed bf16 activations.
// The kernel reads the activations as bf16 pairs (x[b][2p], x[b][2p+1]), one 32-bit word per
// vector b and pair p, p < num_pairs = ceil(cols / 2). Vectors are padded with zeros to a multiple
// of 16 (batch_padded) and cut into panels of up to 64 consecutive vectors (the last one keeps the
// rest: 16, 32, 48 or 64 of them). Panel j holds vectors [64 j, 64 j + width) and is laid out
// [num_pairs][width][2] bf16, so one 64-byte load gives pair p of 16 vectors; it starts at element
// 2 * num_pairs * 64 j. Odd cols: the missing x[b][cols] is a zero, as are padded vectors, so
// neither adds anything to a dot product.
//   packed[...] = fp32_to_bf16(x[b][k]) (kernels/quant_blocks.h: round to nearest even, NaN stays
//   NaN; subnormals are kept), bit-identical on every code path.
// Error: |bf16(x) - x| <= 2^-8 |x| for every x whose bf16 is finite.
inline constexpr std::int64_t kBf16PanelVectors = 64;

// Elements (uint16) of a packed buffer: 2 * ceil(cols / 2) * batch_padded. InputError when batch or
// cols is negative or the size overflows an int64.
std::int64_t packed_activations_bf16_size(std::int64_t batch, std::int64_t cols);

// Rounds x [batch][cols] (fp32, row-major) to bf16 and writes the packed layout above into
// `packed` (exactly packed_activations_bf16_size elements, caller-owned). Call once per product,
// before the row slices of moe_gemm_bf16dot; its cost is part of that product's work. Entry checks
// (InputError, before writing): batch, cols >= 0, x and packed exactly their sizes, no overlap.
// Calling thread only; no allocation. Non-finite x is passed on (the reference propagates it too).
void pack_activations_bf16(std::span<const float> x, std::int64_t batch, std::int64_t cols,
                           std::span<std::uint16_t> packed);

// Read-only view of packed activations for moe_gemm_bf16dot.
struct ActivationsBf16 {
  std::int64_t batch;                    // activation vectors
  std::int64_t cols;                     // values per vector
  std::span<const std::uint16_t> packed; // packed_activations_bf16_size(batch, cols) elements
};

// ---- The product.
//   Math: y[b][n] = sum over k < cols of W[n][k] * bf16(x[b][k]) for b < batch and n in
//     [n_begin, n_end): moe_gemm_ref's product with the activations rounded to bf16.
//   Shapes and layout: shape = MatvecShape{batch, rows, cols, WeightFormat::kBf16} of the whole
//     matrix (other formats: InputError); weights [rows][cols] BF16 little-endian, row-major, any
//     cols >= 0 (odd too); xp from pack_activations_bf16 on x [batch][cols];
//     y [batch][rows] fp32 (y[b * rows + n]).
//   Arithmetic: each y[b][n] is one fp32 accumulator that starts at 0 and takes the products
//     W[n][k] bf16(x[b][k]) (exact in fp32) in order of k, a pair at a time. AVX512_BF16 path: VDPBF16PS, which
//     treats subnormal inputs as zero and flushes subnormal results (round to nearest even, MXCSR
//     ignored). Portable path: plain fp32 multiply and add, k in order.
//   Tolerance against moe_gemm_ref on the unrounded x (derived in moe_gemm_bf16_test.cpp), with
//     S = sum_k |W[n][k] x[b][k]| and gamma(m) = m u / (1 - m u), u = 2^-24:
//       |y - y_ref| <= 2^-8 S + (1 + 2^-8) gamma(cols + 2) S + sum_k (|W[n][k]| + 2 |x[b][k]| + 2) 2^-126
//     (activation rounding, fp32 sums in any order, flushed subnormals). Against moe_gemm_ref on
//     the rounded activations bf16(x) the first term drops out.
//   Slice: writes exactly y[b][n] for every b and n in [n_begin, n_end), and nothing else. A row's
//     arithmetic does not depend on the slice, its place in it or the batch size, so any split of
//     the rows gives the same bits. Runs on the calling thread; no allocation, no shared state.
//   Entry checks (InputError, before anything is written): those of moe_gemm.h (shape, sizes,
//     slice), BF16 format, xp [batch][cols] with exactly its packed size, y not overlapping xp.
//   Work per call: work_of(MatvecShape{batch, n_end - n_begin, cols, WeightFormat::kBf16})
//     (kernels/work.h). The packed copy is derived from the fp32 x that work_of counts, as with the
//     Q8 activations of moe_gemm.h, so its bytes are not counted again.
//   Blocking (AVX512_BF16): a tile of 6 rows x 64 vectors (more rows for narrower panels) keeps 24
//     accumulators in registers; each dot broadcasts one weight pair of a row and multiplies it by
//     the pair of 16 vectors; the columns are cut into blocks of at most 4096 so a panel's block
//     (at most 512 KiB) can stay in L2 while every row of the slice passes over it.
void moe_gemm_bf16dot(const MatvecShape& shape, std::span<const std::byte> weights, const ActivationsBf16& xp,
                      std::span<float> y, std::int64_t n_begin, std::int64_t n_end);

namespace detail {
// Code paths of moe_gemm_bf16dot and pack_activations_bf16. The public functions take the best the
// CPU has; tests force each.
enum class GemmBf16Isa {
  kPortable,    // plain C++, any CPU
  kAvx512Bf16,  // AVX-512 F/BW plus AVX512_BF16 (VDPBF16PS)
};
GemmBf16Isa best_gemm_bf16_isa();
bool cpu_has(GemmBf16Isa isa);
// As the public functions, on a forced path; InputError if the CPU lacks it.
void pack_activations_bf16_on(GemmBf16Isa isa, std::span<const float> x, std::int64_t batch, std::int64_t cols,
                              std::span<std::uint16_t> packed);
void moe_gemm_bf16dot_on(GemmBf16Isa isa, const MatvecShape& shape, std::span<const std::byte> weights,
                         const ActivationsBf16& xp, std::span<float> y, std::int64_t n_begin, std::int64_t n_end);
}  // namespace detail

}  // namespace deepfit::kernels
