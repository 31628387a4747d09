// compare: every row fits and meets the SLOs, rows are sorted, and the Pareto marks are exactly
// the rows no other row beats on both cost and per-user speed.
#include "planner/compare.h"

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

TEST(Compare, UnknownSortKeyIsRejected) {
  CompareOptions o = options();
  o.sort = "vibes";
  EXPECT_THAT([&] { compare_setups(catalog(), calibration(), o); }, testing::ThrowsMessage<InputError>(testing::HasSubstr("--sort")));
}

}  // namespace
}  // namespace deepfit::planner
