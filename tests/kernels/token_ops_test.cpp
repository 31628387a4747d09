// The per-token ops (kernels/src/token_ops_*.cpp): exp_fp32's accuracy; RMSNorm, RoPE, SwiGLU and
// the embedding lookup on every _fast path against _ref with derived tolerances; the YaRN
// frequencies and table against an independent computation; entry checks; work_of by hand.
#include "kernels/token_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numbers>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/quant_blocks.h"
#include "kernels/work.h"

namespace deepfit::kernels {
namespace {

using detail::OpIsa;
using ::testing::HasSubstr;

constexpr double kU = 0x1p-24;  // unit roundoff of fp32

double gamma(double n) { return n * kU / (1 - n * kU); }

std::vector<OpIsa> host_paths() {
  std::vector<OpIsa> out;
  for (const OpIsa isa : {OpIsa::kPortable, OpIsa::kAvx512}) {
    if (detail::cpu_has(isa)) out.push_back(isa);
  }
  return out;
}

const char* isa_name(OpIsa isa) { return isa == OpIsa::kPortable ? "portable" : "avx512"; }

std::vector<float> random_values(std::size_t n, float mean, float stddev, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "no error";
}

// DeepSeek-V3.2's rope settings (data/models/deepseek-v3.2.json: qk_rope_head_dim 64, rope_theta
// 10000, rope_scaling {factor 40, original_max_position_embeddings 4096, beta_fast 32,
// beta_slow 1, mscale 1.0, mscale_all_dim 1.0}).
constexpr RopeYarnConfig kV32Rope{64, 10000.0, 40.0, 4096, 32.0, 1.0, 1.0, 1.0};

// A V3.2 table of num_positions rows with only the rows of `positions` computed (slices), so the
// tests can use positions up to 163839 without computing 10 million sines.
std::vector<float> sparse_rope_table(std::int64_t rope_dim, std::int64_t num_positions,
                                     const std::vector<std::int64_t>& positions) {
  RopeYarnConfig c = kV32Rope;
  c.rope_dim = rope_dim;
  std::vector<float> table(static_cast<std::size_t>(num_positions * rope_dim));
  for (const std::int64_t p : positions) rope_yarn_table(c, num_positions, table, p, p + 1);
  return table;
}

// ---- exp_fp32.

TEST(ExpFp32, IsWithin3UlpsOfExpOverTheNormalRange) {
  // token_ops.h: <= 3u relative for -86.5 <= t <= 88.72 (argument reduction exact by Cody-Waite
  // plus u|r| <= 0.35u, Taylor remainder 0.12u, Horner rounding about 1.7u, coefficient rounding
  // below 0.1u; the final scaling by 2^(n-1) is exact).
  for (double t = -86.5; t <= 88.72; t += 1.0 / 512 + 1e-7) {
    const auto tf = static_cast<float>(t);
    const double exact = std::exp(static_cast<double>(tf));
    ASSERT_LE(std::fabs(detail::exp_fp32(tf) - exact), 3 * kU * exact) << "t = " << tf;
  }
  EXPECT_EQ(detail::exp_fp32(0.0f), 1.0f);
  EXPECT_EQ(detail::exp_fp32(-86.6f), 0.0f);
  EXPECT_EQ(detail::exp_fp32(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(detail::exp_fp32(88.8f), std::numeric_limits<float>::infinity());
  EXPECT_EQ(detail::exp_fp32(std::numeric_limits<float>::infinity()), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(detail::exp_fp32(std::numeric_limits<float>::quiet_NaN())));
}

// ---- RMSNorm.

std::vector<std::byte> weight_bytes(const std::vector<float>& w, NormWeightType type) {
  std::vector<std::byte> out(w.size() * (type == NormWeightType::kBf16 ? 2 : 4));
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (type == NormWeightType::kBf16) {
      const std::uint16_t b = fp32_to_bf16(w[i]);
      out[2 * i] = static_cast<std::byte>(b & 0xFF);
      out[2 * i + 1] = static_cast<std::byte>(b >> 8);
    } else {
      std::memcpy(out.data() + 4 * i, &w[i], 4);  // x86 is little-endian, as the contract's layout
    }
  }
  return out;
}

TEST(RmsNormRef, NormalizesAHandComputedRow) {
  // x = (3, 4), w = (1, 1), eps = 0: mean(x^2) = 12.5, so y = x / sqrt(12.5).
  const std::vector<float> x = {3.0f, 4.0f};
  for (const NormWeightType type : {NormWeightType::kBf16, NormWeightType::kFp32}) {
    const std::vector<std::byte> w = weight_bytes({1.0f, 1.0f}, type);
    std::vector<float> y(2);
    rms_norm_ref({1, 2, type}, x, w, 0.0f, y, 0, 1);
    EXPECT_FLOAT_EQ(y[0], static_cast<float>(3.0 / std::sqrt(12.5)));
    EXPECT_FLOAT_EQ(y[1], static_cast<float>(4.0 / std::sqrt(12.5)));
  }
  // A zero row stays zero (eps keeps the divisor finite), and eps enters under the root:
  // x = (1), eps = 3: y = 1 / sqrt(1 + 3) = 0.5.
  std::vector<float> y(2, 7.0f);
  rms_norm_ref({1, 2, NormWeightType::kFp32}, std::vector<float>{0.0f, 0.0f},
               weight_bytes({1.0f, 1.0f}, NormWeightType::kFp32), 1e-6f, y, 0, 1);
  EXPECT_THAT(y, ::testing::ElementsAre(0.0f, 0.0f));
  std::vector<float> one(1);
  rms_norm_ref({1, 1, NormWeightType::kFp32}, std::vector<float>{1.0f}, weight_bytes({1.0f}, NormWeightType::kFp32),
               3.0f, one, 0, 1);
  EXPECT_EQ(one[0], 0.5f);
}

TEST(RmsNormFast, MatchesReferenceOnOddShapes) {
  std::uint64_t seed = 1;
  for (const std::int64_t D : {1, 7, 16, 63, 64, 65, 127, 512, 1536, 7168}) {
    for (const NormWeightType type : {NormWeightType::kBf16, NormWeightType::kFp32}) {
      const std::int64_t rows = 3;
      const std::vector<float> x = random_values(static_cast<std::size_t>(rows * D), 0.0f, 2.0f, seed++);
      const std::vector<std::byte> w = weight_bytes(random_values(static_cast<std::size_t>(D), 1.0f, 0.3f, seed++), type);
      const RmsNormShape shape{rows, D, type};
      std::vector<float> ref(x.size());
      rms_norm_ref(shape, x, w, 1e-6f, ref, 0, rows);
      // token_ops.h: |y - y_ref| <= (gamma(m + 7) / 2 + 5u) |y_ref|, m = ceil(D / 64).
      const double rel = gamma(static_cast<double>((D + 63) / 64 + 7)) / 2 + 5 * kU;
      for (const OpIsa isa : host_paths()) {
        std::vector<float> y(x.size(), std::numeric_limits<float>::quiet_NaN());
        detail::rms_norm_fast_on(isa, shape, x, w, 1e-6f, y, 0, 1);
        detail::rms_norm_fast_on(isa, shape, x, w, 1e-6f, y, 1, rows);
        for (std::size_t i = 0; i < y.size(); ++i) {
          ASSERT_LE(std::fabs(y[i] - ref[i]), rel * std::fabs(ref[i]))
              << isa_name(isa) << " D " << D << " bf16 " << (type == NormWeightType::kBf16) << " at " << i;
        }
        // In place gives the same bits.
        std::vector<float> in_place = x;
        detail::rms_norm_fast_on(isa, shape, in_place, w, 1e-6f, in_place, 0, rows);
        for (std::size_t i = 0; i < y.size(); ++i) {
          ASSERT_EQ(std::bit_cast<std::uint32_t>(in_place[i]), std::bit_cast<std::uint32_t>(y[i])) << isa_name(isa);
        }
      }
    }
  }
}

TEST(RmsNormFast, RejectsBadInput) {
  std::vector<float> x(14, 1.0f);
  const std::vector<std::byte> w = weight_bytes(std::vector<float>(7, 1.0f), NormWeightType::kBf16);
  const RmsNormShape shape{2, 7, NormWeightType::kBf16};
  EXPECT_THAT(error_of([&] { rms_norm_fast(shape, x, w, -1.0f, x, 0, 2); }), HasSubstr("eps"));
  EXPECT_THAT(error_of([&] { rms_norm_fast(shape, std::span<const float>(x).first(13), w, 1e-6f, std::span<float>(x).subspan(1), 0, 2); }),
              HasSubstr("x has 13"));
  EXPECT_THAT(error_of([&] { rms_norm_fast(shape, std::span<const float>(x).first(7), w, 1e-6f, std::span<float>(x).subspan(3, 7), 0, 1); }),
              HasSubstr("x has 7"));
  std::vector<float> big(21, 1.0f);
  EXPECT_THAT(error_of([&] { rms_norm_fast(shape, std::span<const float>(big).first(14), w, 1e-6f, std::span<float>(big).subspan(7), 0, 2); }),
              HasSubstr("overlaps x"));
  EXPECT_THAT(error_of([&] { rms_norm_ref(shape, x, std::span<const std::byte>(w).first(13), 1e-6f, x, 0, 2); }),
              HasSubstr("weight (bytes) has 13"));
  EXPECT_THAT(error_of([&] { rms_norm_ref(shape, x, w, 1e-6f, x, 1, 3); }), HasSubstr("row slice [1, 3)"));
}

TEST(RmsNormWork, CountsByHand) {
  // [64][7168] with BF16 weights: 64 * (4 * 7168 + 4) flops; 8 * 64 * 7168 + 2 * 7168 bytes.
  const Work w = work_of(RmsNormShape{64, 7168, NormWeightType::kBf16});
  EXPECT_EQ(w.flops, 1835264.0);
  EXPECT_EQ(w.bytes, 3684352.0);
  EXPECT_EQ(work_of(RmsNormShape{1, 512, NormWeightType::kFp32}).bytes, 8.0 * 512 + 4.0 * 512);
}

// ---- RoPE with YaRN.

TEST(RopeYarn, InverseFrequenciesFollowTheYarnFormula) {
  // V3.2 by hand: corr(n) = 64 ln(4096 / (2 pi n)) / (2 ln 10000);
  //   corr(32) = 64 * 3.01416 / 18.42068 = 10.47 -> low = 10;
  //   corr(1)  = 64 * 6.47997 / 18.42068 = 22.51 -> high = 23.
  // theta_i = 10000^(-i/32); ramp_i = clamp((i - 10) / 13, 0, 1);
  // inv_freq_i = theta_i / 40 * ramp_i + theta_i * (1 - ramp_i).
  std::vector<double> inv(32);
  rope_yarn_inv_freq(kV32Rope, inv);
  for (std::size_t i = 0; i < 32; ++i) {
    const double theta = std::pow(10000.0, -static_cast<double>(i) / 32.0);
    const double ramp = std::clamp((static_cast<double>(i) - 10.0) / 13.0, 0.0, 1.0);
    const double expected = theta / 40.0 * ramp + theta * (1.0 - ramp);
    EXPECT_NEAR(inv[i], expected, 1e-15 * expected) << "pair " << i;
  }
  // Values worked out by hand: i = 0 keeps 1 rad per position; i = 16 sits on the ramp (6/13 of
  // the way): 0.01 * 7/13 + 0.01/40 * 6/13 = 0.0055; i = 31 is interpolated: 10^-3.875 / 40.
  EXPECT_NEAR(inv[0], 1.0, 1e-15);
  EXPECT_NEAR(inv[10], std::pow(10000.0, -10.0 / 32.0), 1e-16);
  EXPECT_NEAR(inv[16], 0.0055, 1e-15);
  EXPECT_NEAR(inv[31], 3.3338035804083097e-06, 1e-19);
  // factor 1 is plain RoPE.
  RopeYarnConfig plain = kV32Rope;
  plain.factor = 1.0;
  rope_yarn_inv_freq(plain, inv);
  for (std::size_t i = 0; i < 32; ++i) EXPECT_NEAR(inv[i], std::pow(10000.0, -static_cast<double>(i) / 32.0), 1e-16);
}

TEST(RopeYarn, AttentionScaleMatchesDeepSeek) {
  // 0.1 * 1.0 * ln 40 + 1 = 1.3688879454113936; squared: 1.8738542070926265.
  EXPECT_DOUBLE_EQ(yarn_get_mscale(40.0, 1.0), 1.3688879454113936);
  EXPECT_DOUBLE_EQ(yarn_softmax_scale_factor(kV32Rope), 1.8738542070926265);
  EXPECT_EQ(yarn_get_mscale(1.0, 1.0), 1.0);
  EXPECT_EQ(yarn_get_mscale(0.5, 0.707), 1.0);
}

TEST(RopeYarn, TableHoldsCosAndSinOfPositionTimesFrequency) {
  const std::int64_t num_positions = 163840;  // max_position_embeddings
  const std::vector<std::int64_t> checked = {0, 1, 2, 4095, 4096, 100000, 163839};
  const std::vector<float> table = sparse_rope_table(64, num_positions, checked);
  std::vector<double> inv(32);
  rope_yarn_inv_freq(kV32Rope, inv);
  for (const std::int64_t p : checked) {
    for (std::size_t i = 0; i < 32; ++i) {
      const double angle = static_cast<double>(p) * inv[i];
      const float c = table[static_cast<std::size_t>(p) * 64 + 2 * i];
      const float s = table[static_cast<std::size_t>(p) * 64 + 2 * i + 1];
      // fp32 rounding of the double value (u relative) plus 1e-9 for the double angle at large p.
      EXPECT_LE(std::fabs(c - std::cos(angle)), kU * std::fabs(std::cos(angle)) + 1e-9) << p << " " << i;
      EXPECT_LE(std::fabs(s - std::sin(angle)), kU * std::fabs(std::sin(angle)) + 1e-9) << p << " " << i;
    }
  }
  EXPECT_EQ(table[0], 1.0f);
  EXPECT_EQ(table[1], 0.0f);
  EXPECT_EQ(table[64], static_cast<float>(std::cos(1.0)));  // position 1, pair 0: 1 rad
  // A slice writes only its rows, the same values as the whole table.
  std::vector<float> whole(10 * 64);
  rope_yarn_table(kV32Rope, 10, whole, 0, 10);
  std::vector<float> part(10 * 64, -5.0f);
  rope_yarn_table(kV32Rope, 10, part, 3, 5);
  EXPECT_EQ(part[3 * 64 - 1], -5.0f);
  EXPECT_EQ(0, std::memcmp(part.data() + 3 * 64, whole.data() + 3 * 64, 2 * 64 * sizeof(float)));
  EXPECT_EQ(part[5 * 64], -5.0f);
  // mscale != mscale_all_dim scales every entry by their ratio (HF's _mscale).
  RopeYarnConfig scaled = kV32Rope;
  scaled.mscale = 0.707;
  std::vector<float> small(2 * 64);
  rope_yarn_table(scaled, 2, small, 0, 2);
  const double ratio = yarn_get_mscale(40.0, 0.707) / yarn_get_mscale(40.0, 1.0);
  EXPECT_FLOAT_EQ(small[64], static_cast<float>(ratio * std::cos(1.0)));
}

struct RopeCase {
  std::int64_t rope_dim;
  std::int64_t num_heads;
  std::int64_t rope_offset;
  std::int64_t head_stride;
};

RopeYarnConfig rope_config(std::int64_t rope_dim) {
  RopeYarnConfig c = kV32Rope;
  c.rope_dim = rope_dim;
  return c;
}

std::vector<float> rope_table(std::int64_t rope_dim, std::int64_t num_positions) {
  std::vector<float> table(static_cast<std::size_t>(num_positions * rope_dim));
  rope_yarn_table(rope_config(rope_dim), num_positions, table, 0, num_positions);
  return table;
}

std::vector<std::int64_t> random_positions(std::size_t n, std::int64_t num_positions, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> pick(0, num_positions - 1);
  std::vector<std::int64_t> p(n);
  for (auto& v : p) v = pick(rng);
  return p;
}

// MLA's q (offset 128 of 192, 128 heads -> 3 here), k_pe (offset 512 of 576), the indexer's heads
// (offset 0 of 128), and odd rope_dims: 2, 6, 30, 34 (not whole vectors, odd half for the split
// layout), 96.
std::vector<RopeCase> rope_cases() {
  return {{64, 3, 128, 192}, {64, 1, 512, 576}, {64, 2, 0, 128}, {2, 2, 1, 5}, {6, 1, 0, 6},
          {30, 3, 3, 40},    {32, 1, 0, 32},    {34, 2, 7, 45}, {96, 2, 0, 96}};
}

TEST(RopeApplyFast, MatchesReferenceOnOddShapes) {
  const std::int64_t num_positions = 5000;
  std::uint64_t seed = 1;
  for (const RopeCase& c : rope_cases()) {
    const std::vector<float> table = rope_table(c.rope_dim, num_positions);
    for (const RopeLayout layout : {RopeLayout::kInterleaved, RopeLayout::kHalfSplit}) {
      const std::int64_t T = 5;
      const RopeShape shape{T, c.num_heads, c.head_stride, c.rope_offset, c.rope_dim, num_positions, layout};
      const std::vector<float> x = random_values(static_cast<std::size_t>(T * c.num_heads * c.head_stride), 0.0f, 3.0f, seed++);
      const std::vector<std::int64_t> pos = random_positions(static_cast<std::size_t>(T), num_positions, seed++);
      std::vector<float> ref = x;
      rope_apply_ref(shape, table, pos, ref, 0, T);
      for (const OpIsa isa : host_paths()) {
        std::vector<float> y = x;
        detail::rope_apply_fast_on(isa, shape, table, pos, y, 0, 2);
        detail::rope_apply_fast_on(isa, shape, table, pos, y, 2, T);
        const auto S = static_cast<std::size_t>(c.head_stride);
        const auto D = static_cast<std::size_t>(c.rope_dim);
        for (std::size_t th = 0; th < static_cast<std::size_t>(T * c.num_heads); ++th) {
          const float* row = table.data() + static_cast<std::size_t>(pos[th / static_cast<std::size_t>(c.num_heads)]) * D;
          for (std::size_t k = 0; k < S; ++k) {
            const std::size_t i = th * S + k;
            const bool rotated = k >= static_cast<std::size_t>(c.rope_offset) && k < static_cast<std::size_t>(c.rope_offset) + D;
            if (!rotated) {
              ASSERT_EQ(std::bit_cast<std::uint32_t>(y[i]), std::bit_cast<std::uint32_t>(x[i])) << "touched outside the rope part";
              continue;
            }
            // token_ops.h: |a' - a'_ref| <= 3u(1 + u) (|a c| + |b s|), for the pair (a, b) of k.
            const std::size_t r = k - static_cast<std::size_t>(c.rope_offset);
            const std::size_t half = D / 2;
            const std::size_t pair = layout == RopeLayout::kInterleaved ? r / 2 : r % half;
            const bool first = layout == RopeLayout::kInterleaved ? r % 2 == 0 : r < half;
            const float* head = x.data() + th * S + static_cast<std::size_t>(c.rope_offset);
            const double a = layout == RopeLayout::kInterleaved ? head[2 * pair] : head[pair];
            const double b = layout == RopeLayout::kInterleaved ? head[2 * pair + 1] : head[pair + half];
            const double cs = row[2 * pair];
            const double sn = row[2 * pair + 1];
            const double bound = first ? std::fabs(a * cs) + std::fabs(b * sn) : std::fabs(a * sn) + std::fabs(b * cs);
            ASSERT_LE(std::fabs(static_cast<double>(y[i]) - ref[i]), 3 * kU * (1 + kU) * bound)
                << isa_name(isa) << " rope_dim " << D << " layout " << static_cast<int>(layout) << " at " << i;
          }
        }
      }
    }
  }
}

TEST(RopeApply, LeavesPositionZeroUnchanged) {
  const std::vector<float> table = rope_table(64, 4);
  for (const RopeLayout layout : {RopeLayout::kInterleaved, RopeLayout::kHalfSplit}) {
    const RopeShape shape{3, 4, 64, 0, 64, 4, layout};
    std::vector<float> x = random_values(3 * 4 * 64, 0.0f, 1.0f, 42);
    for (float& v : x) v = v == 0.0f ? 1.0f : v;  // -0 may become +0 (a - (+-0)); keep zeros out
    const std::vector<std::int64_t> pos(3, 0);
    std::vector<float> y = x;
    rope_apply_ref(shape, table, pos, y, 0, 3);
    EXPECT_EQ(0, std::memcmp(y.data(), x.data(), x.size() * sizeof(float))) << "ref";
    for (const OpIsa isa : host_paths()) {
      y = x;
      detail::rope_apply_fast_on(isa, shape, table, pos, y, 0, 3);
      EXPECT_EQ(0, std::memcmp(y.data(), x.data(), x.size() * sizeof(float))) << isa_name(isa);
    }
  }
}

TEST(RopeApply, PreservesTheNormOfEveryPair) {
  // |(c, s)| = 1 within u (fp32 cos and sin), and each output is within 2u(1 + u)(|a c| + |b s|)
  // <= 2u(1 + u) sqrt(2) |(a, b)| of the exact rotation, so the pair's norm moves by at most
  // (u + 4u(1 + u)^2) |(a, b)| <= 5.01u |(a, b)|.
  const std::int64_t num_positions = 163840;
  const std::vector<std::int64_t> pos = {1, 4095, 4096, 77777, 163839};
  const std::vector<float> table = sparse_rope_table(64, num_positions, pos);
  for (const RopeLayout layout : {RopeLayout::kInterleaved, RopeLayout::kHalfSplit}) {
    const RopeShape shape{5, 2, 64, 0, 64, num_positions, layout};
    const std::vector<float> x = random_values(5 * 2 * 64, 0.0f, 1.0f, 7);
    std::vector<std::vector<float>> outputs;
    std::vector<float> y = x;
    rope_apply_ref(shape, table, pos, y, 0, 5);
    outputs.push_back(y);
    for (const OpIsa isa : host_paths()) {
      y = x;
      detail::rope_apply_fast_on(isa, shape, table, pos, y, 0, 5);
      outputs.push_back(y);
    }
    for (const std::vector<float>& out : outputs) {
      for (std::size_t head = 0; head < 10; ++head) {
        for (std::size_t i = 0; i < 32; ++i) {
          const std::size_t ia = head * 64 + (layout == RopeLayout::kInterleaved ? 2 * i : i);
          const std::size_t ib = head * 64 + (layout == RopeLayout::kInterleaved ? 2 * i + 1 : i + 32);
          const double before = std::hypot(static_cast<double>(x[ia]), static_cast<double>(x[ib]));
          const double after = std::hypot(static_cast<double>(out[ia]), static_cast<double>(out[ib]));
          ASSERT_LE(std::fabs(after - before), 5.01 * kU * before) << "head " << head << " pair " << i;
        }
      }
    }
  }
}

TEST(RopeApply, HalfSplitIsInterleavedOnReorderedPairs) {
  // The indexer's layout pairs (i, i + 32); putting those pairs side by side gives MLA's layout,
  // and the rotation must then agree bit for bit on every path.
  const std::vector<float> table = rope_table(64, 100);
  const std::vector<std::int64_t> pos = {3, 99, 50};
  const std::vector<float> split = random_values(3 * 64, 0.0f, 2.0f, 8);
  std::vector<float> inter(split.size());
  for (std::size_t t = 0; t < 3; ++t) {
    for (std::size_t i = 0; i < 32; ++i) {
      inter[t * 64 + 2 * i] = split[t * 64 + i];
      inter[t * 64 + 2 * i + 1] = split[t * 64 + i + 32];
    }
  }
  const auto run = [&](RopeLayout layout, std::vector<float> x, int path) {
    const RopeShape shape{3, 1, 64, 0, 64, 100, layout};
    if (path < 0) {
      rope_apply_ref(shape, table, pos, x, 0, 3);
    } else {
      detail::rope_apply_fast_on(static_cast<OpIsa>(path), shape, table, pos, x, 0, 3);
    }
    return x;
  };
  std::vector<int> paths = {-1};
  for (const OpIsa isa : host_paths()) paths.push_back(static_cast<int>(isa));
  for (const int path : paths) {
    const std::vector<float> a = run(RopeLayout::kHalfSplit, split, path);
    const std::vector<float> b = run(RopeLayout::kInterleaved, inter, path);
    for (std::size_t t = 0; t < 3; ++t) {
      for (std::size_t i = 0; i < 32; ++i) {
        ASSERT_EQ(a[t * 64 + i], b[t * 64 + 2 * i]) << "path " << path;
        ASSERT_EQ(a[t * 64 + i + 32], b[t * 64 + 2 * i + 1]) << "path " << path;
      }
    }
  }
}

TEST(RopeApply, RejectsPositionsOutsideTheTable) {
  const std::vector<float> table = rope_table(64, 10);
  std::vector<float> x(2 * 64, 1.0f);
  const RopeShape shape{2, 1, 64, 0, 64, 10, RopeLayout::kInterleaved};
  const std::vector<std::int64_t> pos = {3, 10};
  EXPECT_THAT(error_of([&] { rope_apply_fast(shape, table, pos, x, 0, 1); }), HasSubstr("position 10 of token 1"));
  EXPECT_THAT(x, ::testing::Each(1.0f));
  const std::vector<std::int64_t> negative = {-1, 0};
  EXPECT_THAT(error_of([&] { rope_apply_ref(shape, table, negative, x, 0, 2); }), HasSubstr("position -1 of token 0"));
  RopeShape narrow = shape;
  narrow.rope_offset = 1;
  EXPECT_THAT(error_of([&] { rope_apply_ref(narrow, table, std::vector<std::int64_t>{0, 0}, x, 0, 2); }),
              HasSubstr("head_stride 64"));
  RopeYarnConfig bad = kV32Rope;
  bad.beta_slow = 40.0;
  std::vector<double> inv(32);
  EXPECT_THAT(error_of([&] { rope_yarn_inv_freq(bad, inv); }), HasSubstr("beta_fast"));
}

TEST(RopeWork, CountsByHand) {
  // 2 tokens x 128 heads x 64: 3 * 2 * 128 * 64 flops; 8 * 2 * 128 * 64 + 4 * 2 * 64 + 8 * 2 bytes.
  const Work w = work_of(RopeShape{2, 128, 192, 128, 64, 163840, RopeLayout::kInterleaved});
  EXPECT_EQ(w.flops, 49152.0);
  EXPECT_EQ(w.bytes, 131600.0);
}

// ---- SwiGLU.

TEST(SwigluRef, ComputesSiluOfGateTimesUp) {
  // One token, ffn_dim 3: gate (0, 1, -2), up (5, 2, 3).
  // silu(0) * 5 = 0; silu(1) * 2 = 2 / (1 + e^-1) = 1.4621171572600098; silu(-2) * 3 = -6 / (1 + e^2).
  const std::vector<float> gate_up = {0.0f, 1.0f, -2.0f, 5.0f, 2.0f, 3.0f};
  std::vector<float> h(3);
  swiglu_ref({1, 3}, gate_up, h, 0, 1);
  EXPECT_EQ(h[0], 0.0f);
  EXPECT_EQ(h[1], static_cast<float>(1.4621171572600098));
  EXPECT_EQ(h[2], static_cast<float>(-6.0 / (1.0 + std::exp(2.0))));
}

TEST(SwigluFast, MatchesReferenceOnOddShapes) {
  std::uint64_t seed = 1;
  const std::vector<float> edges = {-100.0f, -89.0f, -88.0f, -87.0f, -86.6f, -50.0f, -0.0f, 1e-30f, 50.0f, 100.0f};
  for (const std::int64_t F : {1, 15, 16, 17, 100, 2048}) {
    const std::int64_t T = 3;
    std::vector<float> gate_up = random_values(static_cast<std::size_t>(T * 2 * F), 0.0f, 4.0f, seed++);
    for (std::size_t i = 0; i < edges.size() && i < static_cast<std::size_t>(F); ++i) gate_up[i] = edges[i];
    const SwigluShape shape{T, F};
    std::vector<float> ref(static_cast<std::size_t>(T * F));
    swiglu_ref(shape, gate_up, ref, 0, T);
    for (const OpIsa isa : host_paths()) {
      std::vector<float> h(ref.size(), std::numeric_limits<float>::quiet_NaN());
      detail::swiglu_fast_on(isa, shape, gate_up, h, 0, 1);
      detail::swiglu_fast_on(isa, shape, gate_up, h, 1, T);
      for (std::size_t i = 0; i < h.size(); ++i) {
        const std::size_t t = i / static_cast<std::size_t>(F);
        const double g = gate_up[t * 2 * static_cast<std::size_t>(F) + i % static_cast<std::size_t>(F)];
        const double u = gate_up[t * 2 * static_cast<std::size_t>(F) + static_cast<std::size_t>(F) + i % static_cast<std::size_t>(F)];
        // token_ops.h: 8u |h_ref| + 2^-126, plus |g u| 2^-123 where g < -86.5.
        const double tol = 8 * kU * std::fabs(ref[i]) + 0x1p-126 + (g < -86.5 ? std::fabs(g * u) * 0x1p-123 : 0.0);
        ASSERT_LE(std::fabs(static_cast<double>(h[i]) - ref[i]), tol)
            << isa_name(isa) << " F " << F << " at " << i << " g " << g << " u " << u;
      }
    }
  }
}

TEST(SwigluFast, RejectsOverlappingOutput) {
  std::vector<float> buf(12, 1.0f);
  EXPECT_THAT(error_of([&] { swiglu_fast({2, 2}, std::span<const float>(buf).first(8), std::span<float>(buf).subspan(6, 4), 0, 2); }),
              HasSubstr("overlaps"));
  EXPECT_THAT(error_of([&] { swiglu_fast({2, 2}, std::span<const float>(buf).first(7), std::span<float>(buf).subspan(8, 4), 0, 2); }),
              HasSubstr("gate_up has 7"));
}

TEST(SwigluWork, CountsByHand) {
  // 4 tokens x 2048: 4 flops and 12 bytes per output.
  const Work w = work_of(SwigluShape{4, 2048});
  EXPECT_EQ(w.flops, 32768.0);
  EXPECT_EQ(w.bytes, 98304.0);
}

// ---- Embedding lookup.

TEST(EmbeddingLookupFast, GathersRowsExactly) {
  std::uint64_t seed = 1;
  for (const std::int64_t D : {1, 15, 16, 64, 100, 7168}) {
    const std::int64_t V = 37;
    const std::vector<float> values = random_values(static_cast<std::size_t>(V * D), 0.0f, 0.1f, seed++);
    std::vector<std::uint16_t> table(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) table[i] = fp32_to_bf16(values[i]);
    const std::vector<std::int32_t> ids = {36, 0, 5, 5, 17};
    const EmbeddingShape shape{5, V, D};
    std::vector<float> ref(static_cast<std::size_t>(5 * D));
    embedding_lookup_ref(shape, table, ids, ref, 0, 5);
    for (std::size_t t = 0; t < 5; ++t) {
      for (std::size_t i = 0; i < static_cast<std::size_t>(D); ++i) {
        ASSERT_EQ(ref[t * static_cast<std::size_t>(D) + i],
                  bf16_to_fp32(table[static_cast<std::size_t>(ids[t]) * static_cast<std::size_t>(D) + i]));
      }
    }
    for (const OpIsa isa : host_paths()) {
      std::vector<float> out(ref.size(), -1.0f);
      detail::embedding_lookup_fast_on(isa, shape, table, ids, out, 0, 3);
      detail::embedding_lookup_fast_on(isa, shape, table, ids, out, 3, 5);
      EXPECT_EQ(0, std::memcmp(out.data(), ref.data(), ref.size() * sizeof(float))) << isa_name(isa) << " D " << D;
    }
  }
}

TEST(EmbeddingLookupFast, RejectsAnIdOutsideTheVocabularyNamingIt) {
  const std::vector<std::uint16_t> table(10 * 4, 0x3F80);  // 1.0 everywhere
  std::vector<float> out(3 * 4, -1.0f);
  const EmbeddingShape shape{3, 10, 4};
  EXPECT_THAT(error_of([&] { embedding_lookup_fast(shape, table, std::vector<std::int32_t>{1, 2, 10}, out, 0, 1); }),
              HasSubstr("token id 10 at position 2"));
  EXPECT_THAT(error_of([&] { embedding_lookup_ref(shape, table, std::vector<std::int32_t>{-3, 2, 1}, out, 0, 3); }),
              HasSubstr("token id -3 at position 0"));
  EXPECT_THAT(out, ::testing::Each(-1.0f)) << "written before an entry check failed";
}

TEST(EmbeddingWork, CountsByHand) {
  // 3 tokens of V3.2 (hidden 7168): 2 * 3 * 7168 (rows) + 4 * 3 (ids) + 4 * 3 * 7168 (out) bytes.
  const Work w = work_of(EmbeddingShape{3, 129280, 7168});
  EXPECT_EQ(w.flops, 0.0);
  EXPECT_EQ(w.bytes, 129036.0);
}

TEST(LmHead, IsABf16MatvecOverTheVocabulary) {
  // V3.2, one token: 2 * 129280 * 7168 flops; 129280 * 7168 * 2 (weights) + 4 * 7168 + 4 * 129280 bytes.
  const Work w = work_of(lm_head_shape(1, 129280, 7168));
  EXPECT_EQ(w.flops, 1853358080.0);
  EXPECT_EQ(w.bytes, 1853903872.0);
}

}  // namespace
}  // namespace deepfit::kernels
