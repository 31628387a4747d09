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
              std::vector<std::int64_t> conc, const std::string& parallel = "", const std::string& framework = "") {
  FitOptions o;
  if (!framework.empty()) o.framework = framework;
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
  ASSERT_EQ(r.results.size(), 2u);
  std::vector<double> own_prefill_share;
  for (const auto& res : r.results) {
    ASSERT_TRUE(res.speed && res.speed->tpot_ms);
    const Speed& s = *res.speed;
    // Over `output` steps a rank of b sequences also prefills b prompts; a user's TPOT excludes its
    // own prefill. So served / total - TPOT = one prefill / output, whatever the concurrency.
    own_prefill_share.push_back(static_cast<double>(s.served_concurrency) / *s.output_tok_s_total - *s.tpot_ms / 1e3);
    EXPECT_GT(own_prefill_share.back(), 0);
    // prefill = total x input/output; per GPU = total / count (one GPU).
    EXPECT_NEAR(*s.prefill_tok_s_total, *s.output_tok_s_total * 512 / 128, 1e-9 * *s.prefill_tok_s_total);
    EXPECT_DOUBLE_EQ(*s.output_tok_s_per_gpu, *s.output_tok_s_total);
  }
  EXPECT_NEAR(own_prefill_share[0], own_prefill_share[1], 1e-9 * own_prefill_share[0]);
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
  // MLX has two published rows, too few for a held-out error.
  FitRecord r = one("llama-3-8b", "mlx-4bit", "m3-ultra", "1", {1}, "", "mlx");
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

TEST(Predict, HostCalibrationPricesTheDecodeStepWithItsThreeFactors) {
  // The host fit prices any model on the CPU record it was fitted on. A fit of
  // bytes x 2, FLOPs x 3, attention x 0.5 on an EPYC 9654 record; at one user and context 0
  // TPOT is the step alone: 2 x weight bytes / 460.8 GB/s + 3 x weight FLOPs / peak.
  HostCalibration hc;
  hc.weight_bytes = 2;
  hc.weight_flops = 3;
  hc.attention = 0.5;
  hc.host_id = "epyc-9654";
  hc.cpu = "test";
  hc.matrix_format = "q8_0";
  hc.points = 7;
  hc.loo_median_abs_error_pct = 6.1;
  FitOptions o;
  o.model = "llama-3.1-8b";
  o.quants = {"q8_0"};
  o.framework = "deepfit";
  o.concurrency = {1};
  ServingOptions so;
  so.input_tokens = 1;
  so.output_tokens = 1;
  so.decode_context = 0;
  so.host_calibration = &hc;
  const hwdb::Device& d = catalog().devices.get("epyc-9654");
  const FitRecord r = plan_predict(catalog(), calibration(), o, so, d).front();
  ASSERT_TRUE(r.results.at(0).speed && r.results.at(0).speed->tpot_ms);
  // Q8_0: 34 bytes per 32 weights; every matrix but the embedding, 2 FLOPs per weight.
  const double weights = 8030261248.0 - 128256.0 * 4096 - (32 * 2 + 1) * 4096.0;  // matrices only (norms are vectors)
  const double bytes_s = weights * 34.0 / 32.0 / 460.8e9;
  const double flops_s = 2.0 * weights / (*compute_peak(d, "q8_0")).second / 1e12;
  EXPECT_NEAR(*r.results[0].speed->tpot_ms, (2 * bytes_s + 3 * flops_s) * 1e3, 1e-3 * *r.results[0].speed->tpot_ms);
  EXPECT_EQ(r.results[0].speed->expected_error_pct, 6.1);
  EXPECT_THAT(r.results[0].speed->basis, testing::HasSubstr("host decode loop on test"));
  // Only on the record it was fitted on, and only for deepfit's own loop.
  o.framework = "llamacpp";
  EXPECT_THAT([&] { plan_predict(catalog(), calibration(), o, so, d); },
              testing::ThrowsMessage<InputError>(testing::HasSubstr("pass --framework deepfit")));
  o.framework = "deepfit";
  EXPECT_THAT([&] { plan_predict(catalog(), calibration(), o, so, catalog().devices.get("epyc-9755")); },
              testing::ThrowsMessage<InputError>(testing::HasSubstr("fitted on 'epyc-9654'")));
}

TEST(Calibration, HostCalibrationLoaderIsStrict) {
  const std::string dir = std::string(DEEPFIT_SOURCE_DIR) + "/data/calibration.json";
  EXPECT_THAT([&] { HostCalibration::load(dir); },
              testing::ThrowsMessage<InputError>(testing::HasSubstr("/kind: expected \"host_decode_loop\"")));
}

TEST(Calibration, StrictLoader) {
  EXPECT_THAT([] { CalibrationDb::load(std::string(DEEPFIT_SOURCE_DIR) + "/tests/fixtures/reference/calibration_bad.json"); },
              testing::ThrowsMessage<InputError>(testing::HasSubstr("unknown key 'factor'")));
}

}  // namespace
}  // namespace deepfit::planner
