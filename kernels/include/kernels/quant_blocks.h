// GGUF weight blocks Q8_0 and Q4_K, byte for byte as llama.cpp's ggml-common.h lays them out, with
// reference quantizers and dequantizers, plus the fp16 and bf16 scalar conversions they need.
// No file I/O and no GGUF header parsing (planner/gguf.h reads files); the fast dot products live in moe_gemm.h.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/work.h"

namespace deepfit::kernels {

// ---- Scalar conversions. Bit-exact IEEE 754 conversions, independent of the FPU's rounding
// mode and of F16C, so the reference results do not depend on the build or the CPU.

// fp16 (binary16) bits -> fp32. Exact for every input: subnormals become normal floats, infinities
// stay infinite, NaNs stay NaNs with their payload shifted into the top mantissa bits.
float fp16_to_fp32(std::uint16_t h);
// fp32 -> fp16 bits, rounding to nearest, ties to even. Values whose magnitude rounds past 65504
// become infinities; magnitudes below 2^-14 become subnormals (or a signed zero); NaNs stay NaNs
// (quiet, top payload bits kept).
std::uint16_t fp32_to_fp16(float f);
// bf16 bits -> fp32: exact (bf16 is the top half of an fp32).
float bf16_to_fp32(std::uint16_t b);
// fp32 -> bf16 bits, rounding to nearest, ties to even; NaNs stay NaNs (quiet).
std::uint16_t fp32_to_bf16(float f);

// FP8 e4m3 ("e4m3fn" of the OCP FP8 spec, the format of DeepSeek's released weights and of FP8
// KV caches): sign, 4 exponent bits with bias 7, 3 mantissa bits; no infinities; S.1111.111 is
// NaN; the largest finite magnitude is 448 (S.1111.110); exponent 0 holds subnormals m/8 * 2^-6.
// fp8 -> fp32 is exact for every byte.
float fp8_e4m3_to_fp32(std::uint8_t v);
// fp32 -> e4m3, rounding to nearest, ties to even. Magnitudes that round past 448 saturate to
// +-448 (quantizers scale by amax / 448 first, so only rounding noise can reach it); NaN -> 0x7F
// (or 0xFF with the sign); infinities saturate like any large value.
std::uint8_t fp32_to_fp8_e4m3(float f);
inline constexpr float kFp8E4m3Max = 448.0f;

// ---- block_q8_0: 32 weights in 34 bytes.
//   bytes 0-1   d, fp16 little-endian
//   bytes 2-33  qs[32], int8
//   weight j = fp16_to_fp32(d) * qs[j]
inline constexpr std::size_t kQ8_0BlockWeights = block_geometry(WeightFormat::kQ8_0).weights;
inline constexpr std::size_t kQ8_0BlockBytes = block_geometry(WeightFormat::kQ8_0).bytes;
inline constexpr std::size_t kQ8_0QsOffset = 2;

// ---- block_q4_K: 256 weights (8 sub-blocks of 32) in 144 bytes.
//   bytes 0-1    d, fp16: the unit of the 6-bit sub-block scales
//   bytes 2-3    dmin, fp16: the unit of the 6-bit sub-block mins
//   bytes 4-15   scales[12]: 8 scales sc[0..7] and 8 mins m[0..7], 6 bits each (see pack_q4_K_scales)
//   bytes 16-143 qs[128]: 4-bit quants q in 0..15. Chunk c = 0..3 is qs[32c .. 32c+31]; its low
//                nibbles are weights 64c .. 64c+31 (sub-block 2c), its high nibbles weights
//                64c+32 .. 64c+63 (sub-block 2c+1).
//   weight i of sub-block b = (d * sc[b]) * q - (dmin * m[b]), each product rounded to fp32 first
//   (llama.cpp's dequantize_row_q4_K order).
inline constexpr std::size_t kQ4_KBlockWeights = block_geometry(WeightFormat::kQ4_K).weights;
inline constexpr std::size_t kQ4_KBlockBytes = block_geometry(WeightFormat::kQ4_K).bytes;
inline constexpr std::size_t kQ4_KSubBlockWeights = 32;
inline constexpr std::size_t kQ4_KScalesOffset = 4;
inline constexpr std::size_t kQ4_KScalesBytes = 12;
inline constexpr std::size_t kQ4_KQsOffset = 16;

// The 8 six-bit scales and 8 six-bit mins of one Q4_K block, each in 0..63.
struct Q4KScales {
  std::array<std::uint8_t, 8> scales;
  std::array<std::uint8_t, 8> mins;
};

// The 12-byte packing (s = the 12 bytes, j = 0..3):
//   s[j]   = sc[j] | (sc[j+4] >> 4) << 6      low 6 bits: sc[0..3]; top 2 bits: bits 4-5 of sc[4..7]
//   s[j+4] = m[j]  | (m[j+4]  >> 4) << 6      low 6 bits: m[0..3];  top 2 bits: bits 4-5 of m[4..7]
//   s[j+8] = (sc[j+4] & 15) | (m[j+4] & 15) << 4
// Values >= 64 are a bug in the caller (DEEPFIT_ASSERT).
void pack_q4_K_scales(const Q4KScales& values, std::span<std::byte, kQ4_KScalesBytes> packed);
Q4KScales unpack_q4_K_scales(std::span<const std::byte, kQ4_KScalesBytes> packed);

// Common contract of the row functions below.
//   Layout: x or y is [num_blocks * block weights] fp32; the blocks are [num_blocks * block bytes]
//     bytes, block after block. A weight matrix [rows][cols] is quantized by passing the whole
//     flat array: with cols a multiple of the block size, no block straddles two rows.
//   Entry checks (InputError, before anything is written): the float count is a multiple of the
//     block size, and the byte span is exactly num_blocks * block bytes. The quantizers also
//     reject non-finite inputs (a block scale cannot represent them).
//   Threading: the calling thread only; callers split large arrays at block boundaries.

// Q8_0 as llama.cpp's quantize_row_q8_0_ref: amax = max |x|, d = amax / 127 (fp32),
// qs = round-half-away(x * (1/d)) (0 when d = 0), d stored as fp16. The same fp32 operations in the
// same order, so the bytes match llama.cpp's reference quantizer.
// Error per weight: |dequant - x| <= d / 2 + 127 |d16 - d| plus fp32 rounding of x * (1/d), where
// d16 = fp16(d); |d16 - d| <= 2^-11 d when d >= 2^-14 (fp16 normal), <= 2^-25 below. For normal d
// that is <= (0.5 + 127 * 2^-11) d ~= 0.562 d = amax / 226. A block whose d overflows fp16
// (amax > 127 * 65504) is rejected with InputError rather than stored as an infinite scale.
void quantize_row_q8_0_ref(std::span<const float> x, std::span<std::byte> blocks);
void dequantize_row_q8_0_ref(std::span<const std::byte> blocks, std::span<float> y);

// Q4_K, a simple min/max quantizer. Only the layout is llama.cpp's: this is not its
// error-minimizing search (make_qkx2_quants), so for the same input the bytes differ from
// llama-quantize's and the error is larger. Per block of 256:
//   1. each sub-block b covers [lo_b, hi_b] with lo_b = min(0, min x), hi_b = max x;
//   2. dmin = fp16 rounded up of max_b(-lo_b) / 63; m[b] = ceil(-lo_b / dmin) (so the offset
//      -dmin*m[b] is at or below every weight of the sub-block);
//   3. d = fp16 rounded up of max_b(hi_b - lo_b + dmin) / (15 * 63); sc[b] = ceil((hi_b + dmin*m[b]) / (15 d))
//      (so 15 steps from the offset reach hi_b, and sc[b] <= 63);
//   4. q = round((x + dmin*m[b]) / (d*sc[b])) clamped to 0..15.
// Error: |dequant - x| <= (d * sc[b]) / 2 plus fp32 rounding (a few ulps of the block's largest
// magnitude) for every weight of sub-block b.
void quantize_row_q4_K_ref(std::span<const float> x, std::span<std::byte> blocks);
void dequantize_row_q4_K_ref(std::span<const std::byte> blocks, std::span<float> y);

}  // namespace deepfit::kernels
