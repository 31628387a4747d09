// Compute-throughput probes (kernels/src/peak.cpp): each probe against a scalar model of the
// recurrence peak.h defines, the ISA checks, and the work_of_* FLOPs by hand. No timing here.
#include "kernels/peak.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/error.h"
#include "kernels/work.h"

namespace deepfit::kernels {
namespace {

// ---- Scalar models, written from the recurrences in peak.h, one value at a time.

// FMA fp32 with `lanes` x `num_acc` values. std::fma rounds once, as VFMADD does, so the model and
// the probe agree bit for bit for any seed.
double fma_model(std::int64_t lanes, std::int64_t num_acc, std::int64_t iterations, float seed) {
  std::vector<float> x(static_cast<std::size_t>(lanes * num_acc));
  for (std::size_t j = 0; j < x.size(); ++j) x[j] = seed + static_cast<float>(j) * 0x1p-10f;
  for (std::int64_t i = 0; i < iterations; ++i) {
    for (float& v : x) v = std::fma(v, 1.0f - 0x1p-12f, seed * 0x1p-12f);
  }
  double s = 0.0;
  for (const float v : x) s += static_cast<double>(v);
  return s;
}

// fp32 -> bf16 -> fp32, rounding to nearest even (finite inputs only).
float round_to_bf16(float f) {
  std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return std::bit_cast<float>(bits & 0xFFFF0000u);
}

double dot_bf16_model(std::int64_t iterations, float seed) {
  float u[32];
  float v[32];
  for (int i = 0; i < 32; ++i) {
    u[i] = round_to_bf16(seed + static_cast<float>(i) * 0x1p-3f);
    v[i] = round_to_bf16(seed - static_cast<float>(i) * 0x1p-4f);
  }
  std::vector<float> x(static_cast<std::size_t>(16 * kDotBf16Accumulators));
  for (std::size_t j = 0; j < x.size(); ++j) x[j] = seed + static_cast<float>(j) * 0x1p-7f;
  for (std::int64_t i = 0; i < iterations; ++i) {
    for (std::size_t j = 0; j < x.size(); ++j) {
      const std::size_t l = j % 16;
      x[j] += u[2 * l] * v[2 * l] + u[2 * l + 1] * v[2 * l + 1];
    }
  }
  double s = 0.0;
  for (const float f : x) s += static_cast<double>(f);
  return s;
}

std::int64_t dot_int8_model(std::int64_t iterations, std::uint32_t seed) {
  std::uint8_t u[64];
  std::int8_t s[64];
  for (std::uint32_t i = 0; i < 64; ++i) {
    u[i] = static_cast<std::uint8_t>(seed + 7u * i);
    s[i] = static_cast<std::int8_t>(static_cast<std::uint8_t>((seed >> 8) + 5u * i));
  }
  // uint32 arithmetic wraps mod 2^32, as VPDPBUSD's int32 lanes do.
  std::vector<std::uint32_t> x(static_cast<std::size_t>(16 * kDotInt8Accumulators));
  for (std::size_t j = 0; j < x.size(); ++j) x[j] = seed + static_cast<std::uint32_t>(j);
  // The operands never change, so each lane adds the same 4-product dot every iteration.
  std::uint32_t dot[16] = {};
  for (std::size_t l = 0; l < 16; ++l) {
    for (std::size_t q = 0; q < 4; ++q) dot[l] += static_cast<std::uint32_t>(u[4 * l + q] * s[4 * l + q]);
  }
  for (std::int64_t i = 0; i < iterations; ++i) {
    for (std::size_t j = 0; j < x.size(); ++j) x[j] += dot[j % 16];
  }
  std::int64_t total = 0;
  for (const std::uint32_t v : x) total += static_cast<std::int32_t>(v);
  return total;
}

const std::int64_t kIterations[] = {0, 1, 7, 1000};

// ---- Probes against their models.

TEST(FmaFp32Probe, MatchesScalarModel) {
  const std::optional<double> probe = fma_fp32_probe(1, 0.5f);
  if (!have_avx512f()) {
    EXPECT_FALSE(probe.has_value());
    GTEST_SKIP() << "this CPU has no AVX-512F";
  }
  for (const float seed : {0.5f, -1.25f, 3.0f / 7.0f}) {
    for (const std::int64_t it : kIterations) {
      EXPECT_EQ(fma_fp32_probe(it, seed), fma_model(16, kFmaFp32Avx512Accumulators, it, seed))
          << "seed " << seed << ", " << it << " iterations";
    }
  }
}

TEST(FmaFp32ProbeAvx2, MatchesScalarModel) {
  const std::optional<double> probe = fma_fp32_probe_avx2(1, 0.5f);
  if (!have_avx2_fma()) {
    EXPECT_FALSE(probe.has_value());
    GTEST_SKIP() << "this CPU has no AVX2 with FMA";
  }
  for (const float seed : {0.5f, -1.25f, 3.0f / 7.0f}) {
    for (const std::int64_t it : kIterations) {
      EXPECT_EQ(fma_fp32_probe_avx2(it, seed), fma_model(8, kFmaFp32Avx2Accumulators, it, seed))
          << "seed " << seed << ", " << it << " iterations";
    }
  }
}

TEST(FmaFp32ProbeScalar, MatchesScalarModel) {
  for (const float seed : {0.5f, -1.25f, 3.0f / 7.0f}) {
    for (const std::int64_t it : kIterations) {
      EXPECT_EQ(fma_fp32_probe_scalar(it, seed), fma_model(1, kFmaFp32ScalarAccumulators, it, seed))
          << "seed " << seed << ", " << it << " iterations";
    }
  }
}

TEST(FmaFp32Probe, StaysNearTheSeedOverLongRuns) {
  // The recurrence pulls each value towards the seed, until the step (x - seed) * 2^-12 drops
  // below half an ulp of x. For x in [2, 4) the ulp is 2^-22, so each value ends within
  // 2^11 * 2^-22 = 2^-11 of 2, and the sum of the chains within num_chains * 2^-11 of 2 * num_chains.
  const double r = fma_fp32_probe_scalar(1000000, 2.0f);
  const double chains = static_cast<double>(kFmaFp32ScalarAccumulators);
  EXPECT_NEAR(r, 2.0 * chains, chains * 0x1p-11);
}

// The seeds are chosen so the model is exact whatever order VDPBF16PS adds in. With |seed| < 2 and
// a multiple of 2^-4, u and v are multiples of 2^-4 with |u| < 6 and |v| < 4: at most 7 significant
// bits, so exact in bf16. Their products are multiples of 2^-8 below 24 in magnitude. The
// accumulators start as multiples of 2^-8 below 4 and move by less than 48 per iteration, so after
// 1000 iterations they stay below 48004 < 2^16: every partial sum is a multiple of 2^-8 below
// 2^16, which fp32's 24-bit significand holds exactly.
TEST(DotBf16Probe, MatchesScalarModel) {
  const std::optional<double> probe = dot_bf16_probe(1, 0.5f);
  if (!have_avx512_bf16()) {
    EXPECT_FALSE(probe.has_value());
    GTEST_SKIP() << "this CPU has no AVX512_BF16";
  }
  for (const float seed : {0.5f, -1.25f, 1.9375f}) {
    for (const std::int64_t it : kIterations) {
      EXPECT_EQ(dot_bf16_probe(it, seed), dot_bf16_model(it, seed)) << "seed " << seed << ", " << it << " iterations";
    }
  }
}

TEST(DotInt8Probe, MatchesScalarModel) {
  const std::optional<std::int64_t> probe = dot_int8_probe(1, 1u);
  if (!have_avx512_vnni()) {
    EXPECT_FALSE(probe.has_value());
    GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  }
  // After 100000 iterations 72, 120 and 108 of the 192 lanes (for these seeds) have moved past the
  // int32 range, so the model checks the wrap-around as well.
  for (const std::uint32_t seed : {0u, 12345u, 0xDEADBEEFu}) {
    for (const std::int64_t it : {std::int64_t{0}, std::int64_t{1}, std::int64_t{7}, std::int64_t{100000}}) {
      EXPECT_EQ(dot_int8_probe(it, seed), dot_int8_model(it, seed)) << "seed " << seed << ", " << it << " iterations";
    }
  }
}

TEST(Probes, RejectNegativeIterations) {
  EXPECT_THROW(fma_fp32_probe(-1, 1.0f), InputError);
  EXPECT_THROW(fma_fp32_probe_avx2(-1, 1.0f), InputError);
  EXPECT_THROW(fma_fp32_probe_scalar(-1, 1.0f), InputError);
  EXPECT_THROW(dot_bf16_probe(-1, 1.0f), InputError);
  EXPECT_THROW(dot_int8_probe(-1, 1u), InputError);
}

TEST(IsaChecks, ExtensionsImplyAvx512f) {
  if (have_avx512_bf16() || have_avx512_vnni()) {
    EXPECT_TRUE(have_avx512f());
  }
}

// ---- Work by hand: iterations x chains x lanes x multiply-adds per lane x 2.

TEST(WorkOf, ComputeProbeShapeByHand) {
  const Work w = work_of(ComputeProbeShape{1000, 12, 16, 1});
  EXPECT_EQ(w.flops, 384000.0);  // 1000 x 12 x 16 x 1 x 2
  EXPECT_EQ(w.bytes, 0.0);
  EXPECT_EQ(work_of(ComputeProbeShape{1000, 12, 16, 2}).flops, 768000.0);   // bf16 pairs
  EXPECT_EQ(work_of(ComputeProbeShape{1000, 12, 16, 4}).flops, 1536000.0);  // int8 quads
  EXPECT_EQ(work_of(ComputeProbeShape{0, 12, 16, 4}).flops, 0.0);
}

TEST(WorkOf, ProbesCountTheirOwnChainsAndLanes) {
  // One zmm FMA is 16 lanes x 2 = 32 FLOPs; one VDPBF16PS 16 x 2 x 2 = 64; one VPDPBUSD 16 x 4 x 2 = 128 ops.
  EXPECT_EQ(work_of_fma_fp32(1000).flops, 1000.0 * static_cast<double>(kFmaFp32Avx512Accumulators) * 32);
  EXPECT_EQ(work_of_fma_fp32_avx2(1000).flops, 1000.0 * static_cast<double>(kFmaFp32Avx2Accumulators) * 16);
  EXPECT_EQ(work_of_fma_fp32_scalar(1000).flops, 1000.0 * static_cast<double>(kFmaFp32ScalarAccumulators) * 2);
  EXPECT_EQ(work_of_dot_bf16(1000).flops, 1000.0 * static_cast<double>(kDotBf16Accumulators) * 64);
  EXPECT_EQ(work_of_dot_int8(1000).flops, 1000.0 * static_cast<double>(kDotInt8Accumulators) * 128);
  EXPECT_EQ(work_of_dot_int8(1000).bytes, 0.0);
}

}  // namespace
}  // namespace deepfit::kernels
