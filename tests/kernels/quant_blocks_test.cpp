// GGUF block codecs (kernels/src/quant_blocks.cpp): fp16/bf16 conversions against hand-worked
// bits and rounding properties, Q8_0 and Q4_K golden bytes computed by hand, the 12-byte scale
// packing, and round-trip error bounds. No timing here.
#include "kernels/quant_blocks.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "kernels/error.h"
#include "kernels/work.h"

namespace deepfit::kernels {
namespace {

std::uint16_t u16_at(const std::vector<std::byte>& b, std::size_t i) {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(b[i]) | std::to_integer<unsigned>(b[i + 1]) << 8);
}

std::int8_t s8_at(const std::vector<std::byte>& b, std::size_t i) {
  return static_cast<std::int8_t>(std::to_integer<std::uint8_t>(b[i]));
}

// ---- fp16

TEST(Fp16, ConvertsHandWorkedValues) {
  EXPECT_EQ(fp32_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(fp32_to_fp16(-2.0f), 0xC000);
  EXPECT_EQ(fp32_to_fp16(0.5f), 0x3800);
  EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);  // largest finite fp16
  EXPECT_EQ(fp32_to_fp16(0x1p-14f), 0x0400);  // smallest normal
  EXPECT_EQ(fp32_to_fp16(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(fp32_to_fp16(1023 * 0x1p-24f), 0x03FF);  // largest subnormal
  EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-std::numeric_limits<float>::infinity()), 0xFC00);
  // 1/127 = 2^-7 * 1.00787...: mantissa 0.00787 * 1024 = 8.06 rounds to 8, exponent -7 + 15 = 8.
  EXPECT_EQ(fp32_to_fp16(1.0f / 127.0f), (8 << 10) | 8);
}

TEST(Fp16, RoundsTiesToEven) {
  // fp16 has 10 mantissa bits: 1 + 2^-11 is halfway between 1 (even) and 1 + 2^-10 (odd).
  EXPECT_EQ(fp32_to_fp16(1.0f + 0x1p-11f), 0x3C00);
  EXPECT_EQ(fp32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3C02);  // halfway between odd 0x3C01 and even 0x3C02
  EXPECT_EQ(fp32_to_fp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3C01);  // just past halfway
  // 65520 is halfway between 65504 (mantissa all ones, odd) and 65536 (infinity, even).
  EXPECT_EQ(fp32_to_fp16(65519.996f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);
  // Subnormal ties: 2^-25 is halfway between 0 (even) and 2^-24; 3 * 2^-25 between 2^-24 and 2^-23.
  EXPECT_EQ(fp32_to_fp16(0x1p-25f), 0x0000);
  EXPECT_EQ(fp32_to_fp16(3 * 0x1p-25f), 0x0002);
  EXPECT_EQ(fp32_to_fp16(0x1p-25f + 0x1p-40f), 0x0001);
  EXPECT_EQ(fp32_to_fp16(0x1p-30f), 0x0000);
  EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(Fp16, RoundTripsEveryFp16Value) {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float f = fp16_to_fp32(bits);
    if ((bits & 0x7C00) == 0x7C00 && (bits & 0x03FF) != 0) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << h;
      const std::uint16_t back = fp32_to_fp16(f);
      EXPECT_EQ(back & 0x7C00, 0x7C00) << std::hex << h;
      EXPECT_NE(back & 0x03FF, 0) << std::hex << h;  // still a NaN
    } else {
      EXPECT_EQ(fp32_to_fp16(f), bits) << std::hex << h;
    }
  }
}

TEST(Fp16, PicksTheNearestValueOnRandomFloats) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> any_bits;
  for (int i = 0; i < 200000; ++i) {
    // Magnitudes up to 2^17 and down to fp32 subnormals: every fp16 regime, plus overflow.
    const std::uint32_t bits = any_bits(rng) & 0x87FFFFFFu;
    const float f = std::bit_cast<float>(bits);
    const std::uint16_t h = fp32_to_fp16(f);
    const double got = static_cast<double>(fp16_to_fp32(h));
    const double x = static_cast<double>(f);
    // The neighbours on either side (same sign) must not be strictly closer.
    const std::uint16_t magnitude = h & 0x7FFF;
    const std::uint16_t sign = h & 0x8000;
    if (magnitude < 0x7C00) {
      const double up = static_cast<double>(fp16_to_fp32(static_cast<std::uint16_t>(sign | (magnitude + 1))));
      EXPECT_LE(std::fabs(got - x), std::fabs(up - x)) << std::hex << bits;
    }
    if (magnitude > 0) {
      const double down = static_cast<double>(fp16_to_fp32(static_cast<std::uint16_t>(sign | (magnitude - 1))));
      EXPECT_LE(std::fabs(got - x), std::fabs(down - x)) << std::hex << bits;
    }
  }
}

TEST(Fp16, KeepsNaNsAsNaNs) {
  const std::uint16_t h = fp32_to_fp16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(h & 0x7C00, 0x7C00);
  EXPECT_NE(h & 0x03FF, 0);
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7E00)));
  EXPECT_EQ(fp16_to_fp32(0x7C00), std::numeric_limits<float>::infinity());
}

// ---- bf16

TEST(Bf16, ConvertsAndRoundsTiesToEven) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(bf16_to_fp32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_fp32(0xC040), -3.0f);
  // bf16 keeps 7 mantissa bits: 1 + 2^-8 is halfway between 1 (even) and 1 + 2^-7 (odd).
  EXPECT_EQ(fp32_to_bf16(1.0f + 0x1p-8f), 0x3F80);
  EXPECT_EQ(fp32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3F82);
  EXPECT_EQ(fp32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3F81);
  // FLT_MAX is past the largest bf16 plus half an ulp, so it rounds to infinity.
  EXPECT_EQ(fp32_to_bf16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload sits only in the low 16 bits must not become infinity.
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(std::bit_cast<float>(0x7F800001u)))));
}

// ---- Q8_0

TEST(QuantBlocks, GeometryMatchesGgml) {
  EXPECT_EQ(kQ8_0BlockWeights, 32u);
  EXPECT_EQ(kQ8_0BlockBytes, 34u);
  EXPECT_EQ(kQ4_KBlockWeights, 256u);
  EXPECT_EQ(kQ4_KBlockBytes, 144u);  // 2 + 2 + 12 + 128
  EXPECT_EQ(kQ4_KQsOffset + kQ4_KBlockWeights / 2, kQ4_KBlockBytes);
}

TEST(QuantizeQ8_0, WritesHandComputedGoldenBytes) {
  // x[j] = (3j - 48 + e_j) / 8 for j < 31 with |e_j| < 1/2, and x[31] = 15.875 = 127/8, so
  // amax = 15.875, d = amax / 127 = 0.125 exactly (fp16 0x3000), 1/d = 8, x * 8 = 3j - 48 + e_j
  // exactly, and round() gives qs[j] = 3j - 48 (from -48 to 42), qs[31] = 127.
  const float e[5] = {0.0f, 0.25f, -0.25f, 0.375f, -0.375f};
  std::vector<float> x(32);
  for (int j = 0; j < 31; ++j) x[static_cast<std::size_t>(j)] = (static_cast<float>(3 * j - 48) + e[j % 5]) / 8.0f;
  x[31] = 15.875f;
  std::vector<std::byte> out(34);
  quantize_row_q8_0_ref(x, out);
  EXPECT_EQ(u16_at(out, 0), 0x3000);
  for (int j = 0; j < 31; ++j) EXPECT_EQ(s8_at(out, 2 + static_cast<std::size_t>(j)), 3 * j - 48) << j;
  EXPECT_EQ(s8_at(out, 33), 127);

  std::vector<float> back(32);
  dequantize_row_q8_0_ref(out, back);
  for (int j = 0; j < 31; ++j) EXPECT_EQ(back[static_cast<std::size_t>(j)], 0.125f * static_cast<float>(3 * j - 48));
  EXPECT_EQ(back[31], 15.875f);
}

TEST(QuantizeQ8_0, StoresTheScaleRoundedToFp16) {
  // amax = 1: d = 1/127, stored as fp16 0x2008 = 2^-7 * (1 + 8/1024) (see Fp16 above); the
  // quants use the unrounded d, as llama.cpp does: qs[0] = round(1 * 127) = 127, qs[1] =
  // round(-0.5 * 127) = round(-63.5) = -64 (half away from zero), the rest 0.
  std::vector<float> x(32, 0.0f);
  x[0] = 1.0f;
  x[1] = -0.5f;
  std::vector<std::byte> out(34);
  quantize_row_q8_0_ref(x, out);
  EXPECT_EQ(u16_at(out, 0), 0x2008);
  EXPECT_EQ(s8_at(out, 2), 127);
  EXPECT_EQ(s8_at(out, 3), -64);
  for (std::size_t j = 2; j < 32; ++j) EXPECT_EQ(s8_at(out, 2 + j), 0);
}

TEST(QuantizeQ8_0, ZeroBlockHasZeroScale) {
  std::vector<float> x(64, 0.0f);
  std::vector<std::byte> out(68, std::byte{0xAB});
  quantize_row_q8_0_ref(x, out);
  for (const std::byte b : out) EXPECT_EQ(b, std::byte{0});
}

TEST(QuantizeQ8_0, RoundTripErrorWithinDerivedBound) {
  // Bound (quant_blocks.h): |dequant - x| <= d/2 + 127 |d16 - d| + fp32 rounding of x * (1/d),
  // the last at most |x| * 2^-22 (two roundings: 1/d and the product). d, d16 from the block.
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const float magnitude : {1e-6f, 1e-3f, 1.0f, 300.0f}) {
    std::vector<float> x(32 * 64);
    for (float& v : x) v = magnitude * normal(rng);
    std::vector<std::byte> q(34 * 64);
    quantize_row_q8_0_ref(x, q);
    std::vector<float> back(x.size());
    dequantize_row_q8_0_ref(q, back);
    for (std::size_t blk = 0; blk < 64; ++blk) {
      float amax = 0.0f;
      for (std::size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[blk * 32 + j]));
      const double d = static_cast<double>(amax / 127.0f);
      const double d16 = static_cast<double>(fp16_to_fp32(u16_at(q, blk * 34)));
      for (std::size_t j = 0; j < 32; ++j) {
        const double xi = static_cast<double>(x[blk * 32 + j]);
        const double bound = d / 2 + 127 * std::fabs(d16 - d) + std::fabs(xi) * 0x1p-22;
        EXPECT_LE(std::fabs(static_cast<double>(back[blk * 32 + j]) - xi), bound) << magnitude << " " << blk;
      }
    }
  }
}

TEST(QuantizeQ8_0, RejectsBadInput) {
  std::vector<float> x(32, 1.0f);
  std::vector<std::byte> out(34);
  std::vector<float> x_odd(33, 1.0f);
  std::vector<std::byte> out_short(33);
  EXPECT_THROW(quantize_row_q8_0_ref(x_odd, out), InputError);
  EXPECT_THROW(quantize_row_q8_0_ref(x, out_short), InputError);
  EXPECT_THROW(dequantize_row_q8_0_ref(out_short, x), InputError);
  x[5] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(quantize_row_q8_0_ref(x, out), InputError);
  x[5] = 1e10f;  // d = 1e10 / 127 is past the largest fp16
  EXPECT_THAT([&] { quantize_row_q8_0_ref(x, out); }, testing::ThrowsMessage<InputError>(testing::HasSubstr("fp16")));
}

// ---- Q4_K

TEST(Q4KScales, PacksByHandWorkedBytes) {
  // sc = {1, 2, 3, 63, 17, 32, 48, 5}, m = {0, 63, 7, 8, 16, 33, 40, 12}. With the rule
  //   s[j] = sc[j] | (sc[j+4] >> 4) << 6, s[j+4] = m[j] | (m[j+4] >> 4) << 6,
  //   s[j+8] = (sc[j+4] & 15) | (m[j+4] & 15) << 4:
  //   j=0: 1 | 1<<6 = 0x41,  0 | 1<<6 = 0x40,   1 | 0<<4 = 0x01
  //   j=1: 2 | 2<<6 = 0x82, 63 | 2<<6 = 0xBF,   0 | 1<<4 = 0x10
  //   j=2: 3 | 3<<6 = 0xC3,  7 | 2<<6 = 0x87,   0 | 8<<4 = 0x80
  //   j=3: 63 | 0   = 0x3F,  8 | 0    = 0x08,   5 | 12<<4 = 0xC5
  const Q4KScales values{{1, 2, 3, 63, 17, 32, 48, 5}, {0, 63, 7, 8, 16, 33, 40, 12}};
  const std::array<std::uint8_t, 12> golden = {0x41, 0x82, 0xC3, 0x3F, 0x40, 0xBF, 0x87, 0x08, 0x01, 0x10, 0x80, 0xC5};
  std::array<std::byte, 12> packed{};
  pack_q4_K_scales(values, packed);
  for (std::size_t i = 0; i < 12; ++i) EXPECT_EQ(std::to_integer<unsigned>(packed[i]), golden[i]) << i;
  const Q4KScales back = unpack_q4_K_scales(packed);
  EXPECT_EQ(back.scales, values.scales);
  EXPECT_EQ(back.mins, values.mins);
}

TEST(Q4KScales, RoundTripEveryValueInEverySlot) {
  for (std::uint8_t v = 0; v < 64; ++v) {
    for (std::size_t slot = 0; slot < 8; ++slot) {
      Q4KScales s{};
      s.scales[slot] = v;
      s.mins[7 - slot] = static_cast<std::uint8_t>(63 - v);
      std::array<std::byte, 12> packed{};
      pack_q4_K_scales(s, packed);
      const Q4KScales back = unpack_q4_K_scales(packed);
      EXPECT_EQ(back.scales, s.scales);
      EXPECT_EQ(back.mins, s.mins);
    }
  }
}

TEST(DequantizeQ4K, DecodesAHandBuiltBlock) {
  // d = 1 (fp16 0x3C00), dmin = 0.5 (0x3800), the scales of PacksByHandWorkedBytes, and quant
  // byte l of every chunk = (l % 16) | (15 - l % 16) << 4: sub-block 2c gets q = l % 16 and
  // sub-block 2c+1 gets q = 15 - l % 16. Weight = d * sc[b] * q - dmin * m[b].
  const Q4KScales s{{1, 2, 3, 63, 17, 32, 48, 5}, {0, 63, 7, 8, 16, 33, 40, 12}};
  std::vector<std::byte> block(144);
  block[0] = std::byte{0x00};
  block[1] = std::byte{0x3C};
  block[2] = std::byte{0x00};
  block[3] = std::byte{0x38};
  pack_q4_K_scales(s, std::span<std::byte, 12>(block.data() + 4, 12));
  for (std::size_t c = 0; c < 4; ++c) {
    for (std::size_t l = 0; l < 32; ++l) {
      block[16 + 32 * c + l] = static_cast<std::byte>((l % 16) | (15 - l % 16) << 4);
    }
  }
  std::vector<float> y(256);
  dequantize_row_q4_K_ref(block, y);
  EXPECT_EQ(y[0], 0.0f);      // b0: 1 * 0 - 0.5 * 0
  EXPECT_EQ(y[37], -11.5f);   // weight 37: chunk 0, high nibble, l = 5 -> b1: 2 * 10 - 0.5 * 63
  EXPECT_EQ(y[67], 5.5f);     // weight 67: chunk 1, low nibble, l = 3 -> b2: 3 * 3 - 0.5 * 7
  EXPECT_EQ(y[100], 689.0f);  // weight 100: chunk 1, high nibble, l = 4 -> b3: 63 * 11 - 0.5 * 8
  EXPECT_EQ(y[255], -6.0f);   // weight 255: chunk 3, high, l = 31 -> b7: 5 * 0 - 0.5 * 12
  for (std::size_t b = 0; b < 8; ++b) {
    for (std::size_t l = 0; l < 32; ++l) {
      const float q = static_cast<float>(b % 2 == 0 ? l % 16 : 15 - l % 16);
      EXPECT_EQ(y[32 * b + l], static_cast<float>(s.scales[b]) * q - 0.5f * static_cast<float>(s.mins[b]))
          << b << " " << l;
    }
  }
}

// Per sub-block step d * sc[b] and offset dmin * m[b] of block `blk`, decoded from its bytes.
struct SubBlockParams {
  double step;
  double offset;
};

SubBlockParams q4_K_params(const std::vector<std::byte>& q, std::size_t blk, std::size_t b) {
  const std::byte* p = q.data() + blk * 144;
  const double d = static_cast<double>(fp16_to_fp32(u16_at(q, blk * 144)));
  const double dmin = static_cast<double>(fp16_to_fp32(u16_at(q, blk * 144 + 2)));
  const Q4KScales s = unpack_q4_K_scales(std::span<const std::byte, 12>(p + 4, 12));
  return {d * s.scales[b], dmin * s.mins[b]};
}

TEST(QuantizeQ4K, RoundTripErrorWithinHalfAStep) {
  // Bound (quant_blocks.h): every weight of sub-block b lies in [-offset, -offset + 15 step], so
  // round() is off by at most step / 2; the fp32 dequantization adds two roundings, at most
  // 2^-23 * (15 step + offset).
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  constexpr std::size_t kBlocks = 48;
  std::vector<float> x(256 * kBlocks);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::size_t blk = i / 256;
    const std::size_t sub = i / 32 % 8;
    switch (blk % 6) {
      case 0: x[i] = normal(rng); break;                                                  // centred
      case 1: x[i] = 3.0f + uniform(rng); break;                                          // all positive
      case 2: x[i] = -2.0f - uniform(rng); break;                                         // all negative
      case 3: x[i] = sub == 3 ? 0.25f : 0.0f; break;                                      // constant, zeros
      case 4: x[i] = normal(rng) * std::ldexp(1.0f, static_cast<int>(sub) * 3 - 12); break;  // 2^21 dynamic range
      default: x[i] = 1e-4f * normal(rng); break;                                         // subnormal fp16 scales
    }
  }
  std::vector<std::byte> q(144 * kBlocks);
  quantize_row_q4_K_ref(x, q);
  std::vector<float> back(x.size());
  dequantize_row_q4_K_ref(q, back);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const SubBlockParams p = q4_K_params(q, i / 256, i / 32 % 8);
    const double bound = p.step / 2 + 0x1p-23 * (15 * p.step + p.offset);
    EXPECT_LE(std::fabs(static_cast<double>(back[i]) - static_cast<double>(x[i])), bound) << "weight " << i;
  }
}

TEST(QuantizeQ4K, ZeroBlockDecodesToZeros) {
  std::vector<float> x(256, 0.0f);
  std::vector<std::byte> q(144);
  quantize_row_q4_K_ref(x, q);
  std::vector<float> back(256, 1.0f);
  dequantize_row_q4_K_ref(q, back);
  for (const float v : back) EXPECT_EQ(v, 0.0f);
}

TEST(QuantizeQ4K, RejectsBadInput) {
  std::vector<float> x(256, 1.0f);
  std::vector<std::byte> q(144);
  std::vector<float> x_short(255, 1.0f);
  std::vector<std::byte> q_long(145);
  EXPECT_THROW(quantize_row_q4_K_ref(x_short, q), InputError);
  EXPECT_THROW(quantize_row_q4_K_ref(x, q_long), InputError);
  EXPECT_THROW(dequantize_row_q4_K_ref(q_long, x), InputError);
  x[200] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(quantize_row_q4_K_ref(x, q), InputError);
  x[200] = 1e9f;  // needs d = 1e9 / 945, past the largest fp16
  EXPECT_THAT([&] { quantize_row_q4_K_ref(x, q); }, testing::ThrowsMessage<InputError>(testing::HasSubstr("fp16")));
}


// ---- FP8 e4m3: decoded values from the format's definition (OCP FP8 spec, e4m3fn), and the
// encoder checked against a brute-force nearest search over all 254 finite codes.
TEST(Fp8E4m3, DecodesTheSpecificationsValues) {
  EXPECT_EQ(fp8_e4m3_to_fp32(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(fp8_e4m3_to_fp32(0x80)));
  EXPECT_EQ(fp8_e4m3_to_fp32(0x01), 0x1p-9f);       // smallest subnormal: 1/8 * 2^-6
  EXPECT_EQ(fp8_e4m3_to_fp32(0x07), 7 * 0x1p-9f);   // largest subnormal
  EXPECT_EQ(fp8_e4m3_to_fp32(0x08), 0x1p-6f);       // smallest normal
  EXPECT_EQ(fp8_e4m3_to_fp32(0x38), 1.0f);          // exponent 7 = bias
  EXPECT_EQ(fp8_e4m3_to_fp32(0x3C), 1.5f);
  EXPECT_EQ(fp8_e4m3_to_fp32(0x7E), 448.0f);        // 2^8 * 1.75
  EXPECT_EQ(fp8_e4m3_to_fp32(0xFE), -448.0f);
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_fp32(0x7F)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_fp32(0xFF)));
}

TEST(Fp8E4m3, EncoderRoundsToNearestEvenAndSaturates) {
  for (unsigned v = 0; v < 256; ++v) {
    const auto code = static_cast<std::uint8_t>(v);
    if ((v & 0x7F) == 0x7F) continue;
    EXPECT_EQ(fp32_to_fp8_e4m3(fp8_e4m3_to_fp32(code)), code) << "code " << v;
  }
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> exponent(-12.0f, 9.5f);
  for (int i = 0; i < 20000; ++i) {
    const float x = std::exp2(exponent(rng)) * (i % 2 ? -1.0f : 1.0f);
    // Brute force: the nearest finite code, ties to the even code (mantissa bit 0 clear); past 448
    // every value saturates.
    std::uint8_t best = 0;
    float best_err = INFINITY;
    for (unsigned v = 0; v < 256; ++v) {
      if ((v & 0x7F) == 0x7F) continue;
      const float err = std::fabs(fp8_e4m3_to_fp32(static_cast<std::uint8_t>(v)) - x);
      if (err < best_err || (err == best_err && (v & 1u) == 0)) {
        best_err = err;
        best = static_cast<std::uint8_t>(v);
      }
    }
    if (std::fabs(x) == 0.0f) continue;
    EXPECT_EQ(fp8_e4m3_to_fp32(fp32_to_fp8_e4m3(x)), fp8_e4m3_to_fp32(best)) << x;
  }
  // The rounding edges: every midpoint between two adjacent finite codes, and the floats just
  // below and above it, against the same brute force (round-half-even is decided exactly there).
  for (unsigned v = 0; v < 0x7E; ++v) {
    const float lo = fp8_e4m3_to_fp32(static_cast<std::uint8_t>(v)), hi = fp8_e4m3_to_fp32(static_cast<std::uint8_t>(v + 1));
    const float mid = 0.5f * (lo + hi);  // exact: both have at most 4 significant bits
    for (const float x : {std::nextafter(mid, 0.0f), mid, std::nextafter(mid, INFINITY)}) {
      const bool to_hi = x > mid || (x == mid && ((v + 1) & 1u) == 0);
      const std::uint8_t want = static_cast<std::uint8_t>(to_hi ? v + 1 : v);
      EXPECT_EQ(fp32_to_fp8_e4m3(x), want) << x;
      EXPECT_EQ(fp32_to_fp8_e4m3(-x), want | 0x80) << -x;
    }
  }
  EXPECT_EQ(fp32_to_fp8_e4m3(std::nextafter(464.0f, 0.0f)), 0x7E);  // just below the saturation point
  EXPECT_EQ(fp32_to_fp8_e4m3(0.0f), 0x00);
  EXPECT_EQ(fp32_to_fp8_e4m3(-0.0f), 0x80);
  EXPECT_EQ(fp32_to_fp8_e4m3(NAN) & 0x7F, 0x7F);
  EXPECT_EQ(fp32_to_fp8_e4m3(1e-30f), 0x00);  // far below half the smallest subnormal
  EXPECT_EQ(fp32_to_fp8_e4m3(1e6f), 0x7E);
  EXPECT_EQ(fp32_to_fp8_e4m3(-INFINITY), 0xFE);
  EXPECT_EQ(fp32_to_fp8_e4m3(0.5f * 0x1p-9f), 0x00);  // halfway to the smallest subnormal: even (0)
  EXPECT_EQ(fp32_to_fp8_e4m3(1.5f * 0x1p-9f), 0x02);  // halfway between 1 and 2: even (2)
  EXPECT_EQ(fp32_to_fp8_e4m3(1.0625f), 0x38);         // halfway between 1 and 1.125: even (1.0)
}

}  // namespace
}  // namespace deepfit::kernels
