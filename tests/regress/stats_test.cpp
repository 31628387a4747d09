// Statistics checked against values computed by hand and against the gate's promised error rates
// on synthetic samples with a fixed seed (never on wall time).
#include "regress/stats.h"

#include <random>

#include <gtest/gtest.h>

#include "regress/compare.h"

namespace deepfit::regress {
namespace {

TEST(Stats, UDistributionCountsArrangements) {
  // n1 = n2 = 2: the 6 arrangements give U = 0, 1, 2, 2, 3, 4.
  EXPECT_EQ(u_distribution(2, 2), (std::vector<double>{1, 1, 2, 1, 1}));
  // n1 = 1: each of the n2 + 1 positions once.
  EXPECT_EQ(u_distribution(1, 3), (std::vector<double>{1, 1, 1, 1}));
  double total = 0;
  for (double c : u_distribution(5, 4)) total += c;
  EXPECT_DOUBLE_EQ(total, 126);  // C(9, 4)
}

TEST(Stats, ExactMannWhitneyOnCompleteSeparation) {
  // 3 vs 3 fully separated: U = 0, P(U <= 0) = 1/20, two-sided 0.1.
  UTest t = mann_whitney({1, 2, 3}, {4, 5, 6});
  EXPECT_TRUE(t.exact);
  EXPECT_DOUBLE_EQ(t.u, 0);
  EXPECT_DOUBLE_EQ(t.p_value, 0.1);
  EXPECT_NEAR(min_p_value(3, 3), 0.1, 1e-12);  // computed through lgamma
  EXPECT_NEAR(min_p_value(4, 4), 2.0 / 70, 1e-12);
  // Identical samples: no evidence.
  EXPECT_DOUBLE_EQ(mann_whitney({1, 2, 3, 4}, {1, 2, 3, 4}).p_value, 1.0);
}

TEST(Stats, TiesUseTheNormalApproximation) {
  UTest t = mann_whitney({1, 1, 2, 2, 3}, {2, 3, 3, 4, 4});
  EXPECT_FALSE(t.exact);
  EXPECT_GT(t.p_value, 0.0);
  EXPECT_LT(t.p_value, 1.0);
}

TEST(Stats, HodgesLehmannRecoversAShift) {
  std::vector<double> a = {10, 11, 12, 13, 14, 15, 16, 17, 18}, b;
  for (double x : a) b.push_back(x + 2);
  Shift s = hodges_lehmann(a, b, 0.05);
  EXPECT_DOUBLE_EQ(s.estimate, 2);
  ASSERT_TRUE(s.has_interval);
  EXPECT_LE(s.low, 2);
  EXPECT_GE(s.high, 2);
}

TEST(Stats, MedianMadCv) {
  EXPECT_DOUBLE_EQ(median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(median({4, 1, 2, 3}), 2.5);
  EXPECT_DOUBLE_EQ(mad({1, 2, 3, 4, 100}), 1);
  EXPECT_NEAR(cv({1, 1, 1}), 0, 1e-15);
  EXPECT_NEAR(cv({2, 4}), std::sqrt(2.0) / 3, 1e-12);  // sd sqrt(2), mean 3
}

// The gate's promised properties, on synthetic timings: 9 repetitions with 3 % Gaussian noise.
std::vector<double> sample(std::mt19937_64& rng, double mean, int n) {
  std::normal_distribution<double> d(mean, 0.03 * mean);
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back(d(rng));
  return v;
}

TEST(Gate, FalseAlarmsOnAATrialsStayUnderFivePercent) {
  std::mt19937_64 rng(20261124);
  int alarms = 0;
  for (int trial = 0; trial < 1000; ++trial)
    if (compare_samples("aa", sample(rng, 100, 9), sample(rng, 100, 9), CompareOptions{}).verdict == Verdict::kRegression) ++alarms;
  EXPECT_LE(alarms, 50);
}

TEST(Gate, CatchesATenPercentSlowdownInNinetyFivePercentOfTrials) {
  std::mt19937_64 rng(42);
  int caught = 0;
  for (int trial = 0; trial < 1000; ++trial)
    if (compare_samples("slow", sample(rng, 100, 9), sample(rng, 110, 9), CompareOptions{}).verdict == Verdict::kRegression) ++caught;
  EXPECT_GE(caught, 950);
}

TEST(Gate, TooFewRepetitionsNeverFail) {
  Comparison c = compare_samples("few", {100, 101, 99}, {150, 151, 149}, CompareOptions{});
  EXPECT_EQ(c.verdict, Verdict::kNotEnoughRepetitions);
}

TEST(Drift, ReportsChangedValuesByPath) {
  nlohmann::json a = {{"results", {{{"tpot_ms", 10.0}, {"fits", true}}}}, {"weights_bytes", 100}};
  nlohmann::json b = {{"results", {{{"tpot_ms", 10.5}, {"fits", true}}}}, {"weights_bytes", 100}};
  DriftReport d = drift(a, b, 1.0);
  ASSERT_EQ(d.changed.size(), 1u);
  EXPECT_EQ(d.changed[0].path, "/results/0/tpot_ms");
  EXPECT_NEAR(d.changed[0].change_pct, 5.0, 1e-9);
  EXPECT_TRUE(drift(a, b, 10.0).changed.empty());
}

}  // namespace
}  // namespace deepfit::regress
