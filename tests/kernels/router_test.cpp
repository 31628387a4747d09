// The MoE router (kernels/src/router_*.cpp): hand-made cases for the group limit, ties, the bias
// and the weights; every router_fast path bit for bit against router_ref; an independent
// double-precision implementation of DeepSeek's Gate; the entry checks; work_of by hand.
#include "kernels/router.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/token_ops.h"

namespace deepfit::kernels {
namespace {

using detail::OpIsa;
using ::testing::HasSubstr;

constexpr double kU = 0x1p-24;  // unit roundoff of fp32

std::vector<OpIsa> host_paths() {
  std::vector<OpIsa> out;
  for (const OpIsa isa : {OpIsa::kPortable, OpIsa::kAvx512}) {
    if (detail::cpu_has(isa)) out.push_back(isa);
  }
  return out;
}

const char* isa_name(OpIsa isa) { return isa == OpIsa::kPortable ? "portable" : "avx512"; }

// DeepSeek-V3.2's router (config.json in data/models/deepseek-v3.2.json: n_routed_experts 256,
// n_group 8, topk_group 4, num_experts_per_tok 8, norm_topk_prob true, routed_scaling_factor 2.5).
constexpr RouterShape kV32{1, 256, 8, 4, 8};
constexpr RouterWeighting kV32Weighting{true, 2.5f};

struct Routed {
  std::vector<std::int32_t> ids;
  std::vector<float> weights;
};

Routed route_ref(const RouterShape& s, const RouterWeighting& w, const std::vector<float>& logits,
                 const std::vector<float>& bias) {
  const auto n = static_cast<std::size_t>(s.num_tokens * s.top_k);
  Routed r{std::vector<std::int32_t>(n, -1), std::vector<float>(n, std::numeric_limits<float>::quiet_NaN())};
  router_ref(s, w, logits, bias, r.ids, r.weights, 0, s.num_tokens);
  return r;
}

std::vector<float> random_values(std::size_t n, float stddev, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

TEST(RouterSigmoid, IsWithin5UlpsOfTheExactSigmoid) {
  // router.h: relative error <= 5u where the result is >= 2^-124 (exp_fp32's 3u, then the add and
  // the divide round once each, and e / (1 + e) <= 1 scales exp's share).
  for (double x = -88.0; x <= 30.0; x += 1.0 / 1024 + 1e-7) {
    const auto xf = static_cast<float>(x);
    const double exact = sigmoid(xf);
    if (exact < 0x1p-124) continue;
    const double got = detail::router_sigmoid(xf);
    ASSERT_LE(std::fabs(got - exact), 5 * kU * exact) << "x = " << xf;
  }
  EXPECT_EQ(detail::router_sigmoid(0.0f), 0.5f);
  EXPECT_EQ(detail::router_sigmoid(100.0f), 1.0f);
  EXPECT_EQ(detail::router_sigmoid(-100.0f), 0.0f);
  EXPECT_EQ(detail::router_sigmoid(-std::numeric_limits<float>::infinity()), 0.0f);
}

// With one group, top_k = num_experts, no normalization and a scale of 1, the weights are the
// fp32 scores themselves (s * 1.0 in double is exact), so every path's sigmoid is visible.
TEST(RouterFast, ComputesScoresWithTheSameBitsAsRouterSigmoid) {
  const RouterShape s{4, 37, 1, 1, 37};
  std::vector<float> logits = random_values(4 * 37, 6.0f, 11);
  logits[0] = -87.0f;  // near exp_fp32's edges
  logits[1] = 86.7f;
  logits[2] = -88.9f;
  logits[3] = 0.0f;
  const std::vector<float> bias(37, 0.0f);
  for (const OpIsa isa : host_paths()) {
    std::vector<std::int32_t> ids(4 * 37);
    std::vector<float> weights(4 * 37);
    detail::router_fast_on(isa, s, {false, 1.0f}, logits, bias, ids, weights, 0, 4);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const float expected = detail::router_sigmoid(logits[i / 37 * 37 + static_cast<std::size_t>(ids[i])]);
      ASSERT_EQ(std::bit_cast<std::uint32_t>(weights[i]), std::bit_cast<std::uint32_t>(expected))
          << isa_name(isa) << " token " << i / 37 << " expert " << ids[i];
    }
  }
}

// 4 groups of 4 experts, 2 groups kept, 2 experts chosen, no bias.
//   group 0: logits 5, -5, -5, -5   top-2 sum of scores = s(5) + s(-5) = 1.0
//   group 1: logits 2, 2, -4, -4    s(2) + s(2) = 1.76
//   group 2: 1.5, 1.5, -4, -4       1.64
//   group 3: -3, -3, -3, -3         0.09
// Groups 1 and 2 are kept. Expert 0 has the highest score of all (s(5) = 0.993) but its group is
// dropped, so the choice is experts 4 and 5, with equal weights 2.5 / 2.
TEST(RouterRef, NeverChoosesAnExpertOfADroppedGroup) {
  const RouterShape s{1, 16, 4, 2, 2};
  const std::vector<float> logits = {5, -5, -5, -5, 2, 2, -4, -4, 1.5f, 1.5f, -4, -4, -3, -3, -3, -3};
  const std::vector<float> bias(16, 0.0f);
  const Routed r = route_ref(s, {true, 2.5f}, logits, bias);
  EXPECT_THAT(r.ids, ::testing::ElementsAre(4, 5));
  EXPECT_THAT(r.weights, ::testing::ElementsAre(1.25f, 1.25f));
  // Without the group limit expert 0 wins.
  const Routed plain = route_ref({1, 16, 1, 1, 2}, {true, 2.5f}, logits, bias);
  EXPECT_THAT(plain.ids, ::testing::ElementsAre(0, 4));
}

TEST(RouterRef, BreaksTiesTowardTheLowerIndex) {
  // All equal: groups 0 and 1 of 4 are kept, experts 0, 1, 2 chosen in index order.
  const std::vector<float> flat(16, 0.25f);
  const std::vector<float> bias(16, 0.0f);
  EXPECT_THAT(route_ref({1, 16, 4, 2, 3}, {true, 1.0f}, flat, bias).ids, ::testing::ElementsAre(0, 1, 2));
  // Groups 1 and 3 tie for first place (0 and 2 tie for last); with one group kept it is group 1.
  std::vector<float> logits = {0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0};
  EXPECT_THAT(route_ref({1, 16, 4, 1, 2}, {true, 1.0f}, logits, bias).ids, ::testing::ElementsAre(4, 5));
  // Within the kept groups, equal choices come out in index order after larger ones.
  logits = {0, 3, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_THAT(route_ref({1, 16, 1, 1, 4}, {true, 1.0f}, logits, bias).ids, ::testing::ElementsAre(1, 3, 0, 2));
}

TEST(RouterRef, CountsARepeatedMaximumTwiceInAGroupScore) {
  // Group 0: choices 0.5 + 0.5 (sum 1.0); group 1: 0.6 and 0.3 (0.9). Group 0 is kept.
  const std::vector<float> logits(8, 0.0f);  // s = 0.5 everywhere; the bias sets the choices
  const std::vector<float> bias = {0, 0, -0.4f, -0.4f, 0.1f, -0.2f, -0.4f, -0.4f};
  EXPECT_THAT(route_ref({1, 8, 2, 1, 1}, {true, 1.0f}, logits, bias).ids, ::testing::ElementsAre(0));
}

TEST(RouterRef, ChoosesByScorePlusBiasButWeighsByScoreAlone) {
  // Expert 2 has the lowest score but a bias that makes it the top choice.
  const std::vector<float> logits = {2.0f, 1.0f, -1.0f, 0.0f};
  const std::vector<float> bias = {0.0f, 0.0f, 1.0f, 0.0f};
  const Routed r = route_ref({1, 4, 1, 1, 2}, {true, 2.5f}, logits, bias);
  EXPECT_THAT(r.ids, ::testing::ElementsAre(2, 0));
  const double s2 = detail::router_sigmoid(-1.0f);
  const double s0 = detail::router_sigmoid(2.0f);
  EXPECT_EQ(r.weights[0], static_cast<float>(s2 / (s2 + s0) * 2.5));
  EXPECT_EQ(r.weights[1], static_cast<float>(s0 / (s2 + s0) * 2.5));
  const Routed raw = route_ref({1, 4, 1, 1, 2}, {false, 2.5f}, logits, bias);
  EXPECT_EQ(raw.weights[0], static_cast<float>(s2 * 2.5));
  EXPECT_EQ(raw.weights[1], static_cast<float>(s0 * 2.5));
}

TEST(RouterRef, SplitsTheScaleEvenlyWhenTheChosenScoresAreAllZero) {
  // sigmoid(-100) is 0 in fp32 (exp_fp32(100) overflows): the sum is 0, so each weight is 2.5 / 2.
  const Routed r = route_ref({1, 4, 1, 1, 2}, {true, 2.5f}, std::vector<float>(4, -100.0f), std::vector<float>(4, 0.0f));
  EXPECT_THAT(r.ids, ::testing::ElementsAre(0, 1));
  EXPECT_THAT(r.weights, ::testing::ElementsAre(1.25f, 1.25f));
}

// DeepSeek's Gate.forward (V3.2-Exp inference/model.py), written independently in double: mask
// the dropped groups' choices to -inf, then take the top_k, normalize and scale. Random logits and
// biases make near-ties (within the sigmoid's 5u) vanishingly unlikely, and the seeds are fixed,
// so the ids must agree exactly; the weights within 11u relative (5u for each fp32 score, 5u for
// their sum, u for the rounding).
TEST(RouterRef, AgreesWithAnIndependentDoublePrecisionGate) {
  const std::int64_t T = 64;
  const RouterShape s{T, 256, 8, 4, 8};
  const std::vector<float> logits = random_values(static_cast<std::size_t>(T * 256), 2.0f, 21);
  const std::vector<float> bias = random_values(256, 0.05f, 22);
  const Routed r = route_ref(s, kV32Weighting, logits, bias);
  for (std::int64_t t = 0; t < T; ++t) {
    std::vector<double> score(256);
    std::vector<double> choice(256);
    for (std::size_t e = 0; e < 256; ++e) {
      score[e] = sigmoid(logits[static_cast<std::size_t>(t) * 256 + e]);
      choice[e] = score[e] + bias[e];
    }
    std::vector<double> group_score(8);
    for (std::size_t g = 0; g < 8; ++g) {
      std::vector<double> v(choice.begin() + static_cast<std::ptrdiff_t>(32 * g),
                            choice.begin() + static_cast<std::ptrdiff_t>(32 * g + 32));
      std::sort(v.rbegin(), v.rend());
      group_score[g] = v[0] + v[1];
    }
    std::vector<std::size_t> groups(8);
    std::iota(groups.begin(), groups.end(), 0);
    std::sort(groups.begin(), groups.end(), [&](std::size_t a, std::size_t b) { return group_score[a] > group_score[b]; });
    for (std::size_t j = 4; j < 8; ++j) {
      for (std::size_t e = 32 * groups[j]; e < 32 * groups[j] + 32; ++e) choice[e] = -INFINITY;
    }
    std::vector<std::size_t> experts(256);
    std::iota(experts.begin(), experts.end(), 0);
    std::sort(experts.begin(), experts.end(), [&](std::size_t a, std::size_t b) { return choice[a] > choice[b]; });
    double sum = 0.0;
    for (std::size_t j = 0; j < 8; ++j) sum += score[experts[j]];
    for (std::size_t j = 0; j < 8; ++j) {
      const auto i = static_cast<std::size_t>(t * 8) + j;
      ASSERT_EQ(r.ids[i], static_cast<std::int32_t>(experts[j])) << "token " << t << " rank " << j;
      const double expected = score[experts[j]] / sum * 2.5;
      EXPECT_LE(std::fabs(r.weights[i] - expected), 11 * kU * expected) << "token " << t << " rank " << j;
    }
  }
}

// Shapes: plain top-k (1 group), one expert, primes, groups of 2 and of 6 (not a vector width),
// groups larger than a vector, top_k up to everything the kept groups hold, the V3.2 shape and
// the largest supported expert count.
TEST(RouterFast, MatchesRouterRefBitForBit) {
  const std::vector<RouterShape> shapes = {
      {5, 1, 1, 1, 1},    {7, 13, 1, 1, 5},    {3, 17, 1, 1, 17},  {9, 30, 5, 2, 7},  {4, 30, 15, 15, 30},
      {6, 96, 3, 1, 32},  {5, 256, 8, 4, 8},   {3, 256, 8, 8, 1},  {3, 256, 1, 1, 8}, {4, 160, 8, 3, 6},
      {2, 1024, 16, 4, 16}, {3, 384, 1, 1, 8}, {2, 1024, 512, 3, 6}};
  std::uint64_t seed = 100;
  for (const RouterShape& s : shapes) {
    for (const bool normalize : {true, false}) {
      const auto E = static_cast<std::size_t>(s.num_experts);
      std::vector<float> logits = random_values(static_cast<std::size_t>(s.num_tokens) * E, 3.0f, seed++);
      std::vector<float> bias = random_values(E, 0.1f, seed++);
      for (float& b : bias) b = std::round(b * 20.0f) / 20.0f;  // few distinct values: exact ties
      // Exact ties in the first token: every logit equal.
      std::fill_n(logits.begin(), E, 0.75f);
      // Quantized logits in the second token (if any): many equal choices and group scores.
      for (std::size_t e = 0; s.num_tokens > 1 && e < E; ++e) logits[E + e] = std::round(logits[E + e]);
      const RouterWeighting w{normalize, 2.5f};
      const Routed ref = route_ref(s, w, logits, bias);
      for (const OpIsa isa : host_paths()) {
        std::vector<std::int32_t> ids(ref.ids.size(), -1);
        std::vector<float> weights(ref.weights.size(), std::numeric_limits<float>::quiet_NaN());
        const std::int64_t a = s.num_tokens / 3;  // three slices, one possibly empty
        detail::router_fast_on(isa, s, w, logits, bias, ids, weights, 0, a);
        detail::router_fast_on(isa, s, w, logits, bias, ids, weights, a, s.num_tokens - 1);
        detail::router_fast_on(isa, s, w, logits, bias, ids, weights, s.num_tokens - 1, s.num_tokens);
        for (std::size_t i = 0; i < ids.size(); ++i) {
          ASSERT_EQ(ids[i], ref.ids[i]) << isa_name(isa) << " E " << s.num_experts << " G " << s.num_groups << " at " << i;
          ASSERT_EQ(std::bit_cast<std::uint32_t>(weights[i]), std::bit_cast<std::uint32_t>(ref.weights[i]))
              << isa_name(isa) << " E " << s.num_experts << " G " << s.num_groups << " at " << i;
        }
      }
    }
  }
}

TEST(RouterFast, WritesOnlyItsSlice) {
  const RouterShape s{6, 256, 8, 4, 8};
  const std::vector<float> logits = random_values(6 * 256, 2.0f, 5);
  const std::vector<float> bias(256, 0.0f);
  for (const OpIsa isa : host_paths()) {
    std::vector<std::int32_t> ids(48, -7);
    std::vector<float> weights(48, -7.0f);
    detail::router_fast_on(isa, s, kV32Weighting, logits, bias, ids, weights, 2, 4);
    for (std::size_t i = 0; i < 48; ++i) {
      const bool inside = i >= 16 && i < 32;
      EXPECT_EQ(ids[i] == -7, !inside) << isa_name(isa) << " " << i;
      EXPECT_EQ(weights[i] == -7.0f, !inside) << isa_name(isa) << " " << i;
    }
  }
}

TEST(RouterFast, WeightsOfAV32TokenSumToTheScalingFactor) {
  const std::vector<float> logits = random_values(256, 2.0f, 9);
  const std::vector<float> bias = random_values(256, 0.05f, 10);
  std::vector<std::int32_t> ids(8);
  std::vector<float> weights(8);
  router_fast(kV32, kV32Weighting, logits, bias, ids, weights, 0, 1);
  // Each weight is its double value (exact to ~2^-52) rounded to fp32, within u of it, and the
  // exact values sum to 2.5: the fp32 weights sum to 2.5 within u * 2.5 plus ~2^-50.
  const double sum = std::accumulate(weights.begin(), weights.end(), 0.0);
  EXPECT_NEAR(sum, 2.5, kU * 2.5 + 0x1p-50);
  std::vector<std::int32_t> groups;
  for (const std::int32_t id : ids) groups.push_back(id / 32);
  std::sort(groups.begin(), groups.end());
  groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
  EXPECT_LE(groups.size(), 4u) << "more groups than topk_group";
}

TEST(RouterRef, RejectsBadShapesAndInputs) {
  const std::vector<float> logits(256, 0.0f);
  const std::vector<float> bias(256, 0.0f);
  std::vector<std::int32_t> ids(8);
  std::vector<float> weights(8);
  const auto message = [&](RouterShape s, RouterWeighting w, std::span<const float> l, std::span<const float> b) {
    try {
      router_ref(s, w, l, b, ids, weights, 0, 1);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(message({1, 256, 7, 4, 8}, kV32Weighting, logits, bias), HasSubstr("divide num_experts"));
  EXPECT_THAT(message({1, 256, 256, 4, 8}, kV32Weighting, logits, bias), HasSubstr("expected >= 2 experts per group"));
  EXPECT_THAT(message({1, 256, 8, 9, 8}, kV32Weighting, logits, bias), HasSubstr("num_groups_kept out of range"));
  std::vector<std::int32_t> many_ids(200);
  std::vector<float> many_weights(200);
  EXPECT_THROW(router_ref({1, 256, 8, 4, 129}, kV32Weighting, logits, bias, many_ids, many_weights, 0, 1), InputError);
  EXPECT_THAT(message({1, 2048, 1, 1, 8}, kV32Weighting, logits, bias), HasSubstr("num_experts out of range"));
  EXPECT_THAT(message(kV32, {true, 0.0f}, logits, bias), HasSubstr("routed_scaling_factor"));
  EXPECT_THAT(message(kV32, kV32Weighting, std::span<const float>(logits).first(255), bias), HasSubstr("logits has 255"));
  std::vector<float> bad = logits;
  bad[17] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(message(kV32, kV32Weighting, bad, bias), HasSubstr("logits[0][17]"));
  EXPECT_THAT(message(kV32, kV32Weighting, logits, bad), HasSubstr("bias[17]"));
  EXPECT_THROW(router_fast(kV32, kV32Weighting, logits, bias, ids, weights, 0, 2), InputError);
  EXPECT_THAT(weights, ::testing::Each(0.0f)) << "written before an entry check failed";
}

TEST(RouterRef, HandlesNoTokens) {
  std::vector<std::int32_t> ids;
  std::vector<float> weights;
  EXPECT_NO_THROW(router_ref({0, 256, 8, 4, 8}, kV32Weighting, {}, std::vector<float>(256, 0.0f), ids, weights, 0, 0));
  EXPECT_NO_THROW(router_fast({0, 256, 8, 4, 8}, kV32Weighting, {}, std::vector<float>(256, 0.0f), ids, weights, 0, 0));
}

TEST(RouterWork, CountsByHand) {
  // One V3.2 token: 4 * 256 (sigmoid and bias) + 8 (group sums) + 3 * 8 - 1 (weights) = 1055 flops;
  // 4 * 256 (logits) + 4 * 256 (bias) + 8 * 8 (ids and weights) = 2112 bytes.
  const Work one = work_of(kV32);
  EXPECT_EQ(one.flops, 1055.0);
  EXPECT_EQ(one.bytes, 2112.0);
  // 64 tokens: 64 * 1055 flops; 64 * 1024 + 1024 + 64 * 64 bytes.
  const Work batch = work_of(RouterShape{64, 256, 8, 4, 8}, kV32Weighting);
  EXPECT_EQ(batch.flops, 67520.0);
  EXPECT_EQ(batch.bytes, 70656.0);
  // Plain top-2 of 16 without normalization: 4 * 16 + 0 + 2 = 66 flops per token.
  EXPECT_EQ(work_of(RouterShape{1, 16, 1, 1, 2}, RouterWeighting{false, 1.0f}).flops, 66.0);
}

}  // namespace
}  // namespace deepfit::kernels
