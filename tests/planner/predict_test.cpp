// predict: serving arithmetic checked against its own definitions by hand, capacity capping,
// basis and expected error, and that the shipped calibration matches the shipped reference.
#include "planner/predict.h"

#include <cmath>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hwdb/json_check.h"
#include "kernels/error.h"
#include "planner/validate.h"
#include "test_data.h"

namespace deepfit::planner {
namespace {

using test::calibration;
using test::catalog;

FitRecord one(const std::string& model, const std::string& quant, const std::string& device, const std::string& count,
              std::vector<std::int64_t> conc, const std::string& parallel = "") {
  FitOptions o;
  o.model = model;
  o.quants = {quant};
  o.count = count;
  o.concurrency = std::move(conc);
  if (!parallel.empty()) o.parallel = parallel;
  ServingOptions so;
  so.input_tokens = 512;
  so.output_tokens = 128;
  return plan_predict(catalog(), calibration(), o, so, catalog().devices.get(device)).front();
}

TEST(Predict, ThroughputCostAndLatencyAreConsistent) {
  FitRecord r = one("llama-3-8b", "q4_k_m", "rtx-4090", "1", {1, 4});
  for (const auto& res : r.results) {
    ASSERT_TRUE(res.speed && res.speed->tpot_ms);
    const Speed& s = *res.speed;
    // total = served / TPOT; per GPU = total / count; prefill = total x input/output; cost = price x count / total.
    EXPECT_NEAR(*s.output_tok_s_total, static_cast<double>(s.served_concurrency) / (*s.tpot_ms / 1e3), 1e-9 * *s.output_tok_s_total);
    EXPECT_NEAR(*s.prefill_tok_s_total, *s.output_tok_s_total * 512 / 128, 1e-9 * *s.prefill_tok_s_total);
  }
  const Speed& s = *r.results.front().speed;
  EXPECT_NEAR(*s.cost_usd_per_mtok_output, catalog().devices.get("rtx-4090").price->usd_per_hour / 3600.0 / *s.output_tok_s_total * 1e6,
              1e-9);
  EXPECT_EQ(s.bottleneck, "memory bandwidth");
  // Calibrated on published llama.cpp GPU runs, so it states a held-out error.
  EXPECT_TRUE(s.expected_error_pct.has_value());
  EXPECT_THAT(s.basis, testing::HasSubstr("llamacpp/decode_tok_s_per_user/gpu"));
  // More concurrent users never make a user faster.
  EXPECT_LE(*r.results[1].speed->decode_tok_s_per_user, *r.results[0].speed->decode_tok_s_per_user);
}

TEST(Predict, KvCapacityCapsConcurrency) {
  FitRecord r = one("llama-3.1-8b", "bf16", "l4", "1", {100000});
  const auto& res = r.results.front();
  ASSERT_TRUE(res.speed.has_value());
  EXPECT_LT(res.speed->served_concurrency, 100000);
  EXPECT_EQ(res.speed->served_concurrency, *res.max_concurrency);
  EXPECT_EQ(res.speed->bottleneck, "kv capacity");
}

TEST(Predict, WithoutCalibrationTheErrorIsNullAndTheBasisSaysDatasheet) {
  FitRecord r = one("deepseek-v3.2", "fp8", "h200-sxm", "8", {64}, "tp1ep8dp8");
  const Speed& s = *r.results.front().speed;
  EXPECT_FALSE(s.expected_error_pct.has_value());
  EXPECT_THAT(s.basis, testing::HasSubstr("datasheet roofline only"));
}

TEST(Predict, DsaKeepsDecodeNearlyFlatOverContextWhileMlaGrows) {
  // DeepSeek's V3.2 paper: V3.1-Terminus decode cost grows with position, V3.2's stays nearly flat.
  auto tpot = [](const std::string& model, std::int64_t ctx) {
    Catalog const& cat = catalog();
    ModelSpec m = cat.model(model);
    StoredModel st = store_model(m, cat.quants.scheme("fp8"), cat.quants);
    FitSetup s;
    s.model = &m;
    s.stored = &st;
    s.device = &cat.devices.get("h800-sxm");
    s.framework = &cat.frameworks.get("vllm");
    s.parallel = parse_parallel("tp1ep8dp8");
    s.count = 8;
    s.kv_dtype = "fp8";
    return decode_step(s, PerfParams{}, 32, ctx).seconds;
  };
  const double v31_growth = tpot("deepseek-v3.1", 131072) / tpot("deepseek-v3.1", 4096);
  const double v32_growth = tpot("deepseek-v3.2", 131072) / tpot("deepseek-v3.2", 4096);
  EXPECT_GT(v31_growth, 2 * v32_growth);
}

TEST(Calibration, ShippedFileMatchesTheShippedReference) {
  Validation v = validate_reference(catalog(), std::string(DEEPFIT_SOURCE_DIR) + "/data/reference/public.jsonl");
  nlohmann::json fresh = calibration_to_json(v, "data/reference/public.jsonl");
  nlohmann::json shipped = hwdb::parse_json_file(std::string(DEEPFIT_SOURCE_DIR) + "/data/calibration.json");
  ASSERT_EQ(fresh.at("groups").size(), shipped.at("groups").size())
      << "regenerate: deepfit validate --reference data/reference/public.jsonl --write-calibration data/calibration.json";
  for (const auto& [k, g] : fresh.at("groups").items()) {
    ASSERT_TRUE(shipped.at("groups").contains(k)) << k;
    EXPECT_NEAR(g.at("roofline_factor").get<double>(), shipped.at("groups").at(k).at("roofline_factor").get<double>(), 1e-9) << k;
  }
}

TEST(Calibration, StrictLoader) {
  EXPECT_THAT([] { CalibrationDb::load(std::string(DEEPFIT_SOURCE_DIR) + "/tests/fixtures/reference/calibration_bad.json"); },
              testing::ThrowsMessage<InputError>(testing::HasSubstr("unknown key 'factor'")));
}

}  // namespace
}  // namespace deepfit::planner
