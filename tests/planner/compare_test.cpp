// compare: every row fits and meets the SLOs, rows are sorted, and the Pareto marks are exactly
// the rows no other row beats on both cost and per-user speed.
#include "planner/compare.h"

#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "test_data.h"

namespace deepfit::planner {
namespace {

using test::calibration;
using test::catalog;

CompareOptions options() {
  CompareOptions o;
  o.model = "llama-3.1-70b";
  o.devices = {"h100-sxm", "h200-sxm", "l40s", "rtx-4090"};
  o.quants = {"bf16", "awq-int4"};
  o.concurrency = {1, 16};
  return o;
}

TEST(Compare, RowsAreSortedByCostAndMeetTheSlo) {
  CompareOptions o = options();
  o.slo_tpot_ms = 50;
  Comparison c = compare_setups(catalog(), calibration(), o);
  ASSERT_FALSE(c.rows.empty());
  for (std::size_t i = 0; i < c.rows.size(); ++i) {
    EXPECT_LE(*c.rows[i].speed.tpot_ms, 50.0);
    if (i > 0 && c.rows[i].speed.cost_usd_per_mtok_output && c.rows[i - 1].speed.cost_usd_per_mtok_output) {
      EXPECT_LE(*c.rows[i - 1].speed.cost_usd_per_mtok_output, *c.rows[i].speed.cost_usd_per_mtok_output);
    }
  }
  EXPECT_LT(c.configs_fit, c.configs_tried);  // 70B in bf16 does not fit one 24 GB card
}

TEST(Compare, ParetoMarksAreExactlyTheUndominatedRows) {
  Comparison c = compare_setups(catalog(), calibration(), options());
  for (const auto& a : c.rows) {
    if (!a.speed.cost_usd_per_mtok_output) {
      EXPECT_FALSE(a.pareto);
      continue;
    }
    bool dominated = false;
    for (const auto& b : c.rows)
      if (b.speed.cost_usd_per_mtok_output && *b.speed.cost_usd_per_mtok_output <= *a.speed.cost_usd_per_mtok_output &&
          *b.speed.decode_tok_s_per_user >= *a.speed.decode_tok_s_per_user &&
          (*b.speed.cost_usd_per_mtok_output < *a.speed.cost_usd_per_mtok_output ||
           *b.speed.decode_tok_s_per_user > *a.speed.decode_tok_s_per_user))
        dominated = true;
    EXPECT_EQ(a.pareto, !dominated) << a.device << " " << a.quant << " " << a.count;
  }
}

TEST(Compare, CountAutoKeepsTheFewestDevicesMeetingTheRequestRate) {
  CompareOptions o = options();
  o.request_rate = 2.0;
  const Comparison all = compare_setups(catalog(), calibration(), o);
  ASSERT_FALSE(all.rows.empty());
  std::map<std::string, std::int64_t> fewest;
  for (const auto& r : all.rows) {
    // Completions per second = output tokens per second / output tokens per request.
    EXPECT_NEAR(r.requests_per_s, *r.speed.output_tok_s_total / static_cast<double>(o.serving.output_tokens), 1e-9 * r.requests_per_s);
    EXPECT_GE(r.requests_per_s, 2.0);
    auto [it, fresh] = fewest.emplace(r.device + "/" + r.quant, r.count);
    if (!fresh) it->second = std::min(it->second, r.count);
  }
  o.count_auto = true;
  const Comparison few = compare_setups(catalog(), calibration(), o);
  std::size_t expected = 0;
  for (const auto& r : all.rows) expected += r.count == fewest.at(r.device + "/" + r.quant);
  EXPECT_EQ(few.rows.size(), expected);
  for (const auto& r : few.rows) EXPECT_EQ(r.count, fewest.at(r.device + "/" + r.quant)) << r.device;
}

TEST(Compare, UnknownSortKeyIsRejected) {
  CompareOptions o = options();
  o.sort = "vibes";
  EXPECT_THAT([&] { compare_setups(catalog(), calibration(), o); }, testing::ThrowsMessage<InputError>(testing::HasSubstr("--sort")));
}

}  // namespace
}  // namespace deepfit::planner
