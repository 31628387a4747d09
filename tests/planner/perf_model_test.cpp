// The decode/prefill roofline checked by hand on simple cases, and the leave-one-out calibration
// recovering a known efficiency.
#include "planner/perf_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "planner/framework.h"
#include "planner/validate.h"
#include "test_data.h"

namespace deepfit::planner {
namespace {

using test::catalog;
using test::Rig;

TEST(PerfModel, ExpectedExpertsFollowsTheUniformFormula) {
  EXPECT_DOUBLE_EQ(expected_experts(256, 8, 1), 8.0);
  EXPECT_NEAR(expected_experts(256, 8, 2), 256 * (1 - std::pow(248.0 / 256, 2)), 1e-9);  // 15.75
  EXPECT_NEAR(expected_experts(256, 8, 1000), 256, 1e-6);
}


TEST(PerfModel, BatchOneDecodeReadsEveryWeightOnce) {
  // Llama-3.1-8B bf16 on one H100 SXM: batch 1 is memory-bound; the step reads all weights but
  // the embedding table (a gather) at 3350 GB/s, and no KV at context 0.
  Rig x("llama-3.1-8b", "bf16", "h100-sxm", "vllm");
  PhaseCost c = decode_step(x.s, PerfParams{}, 1, 0);
  const double weights = 2.0 * (8030261248.0 - 128256.0 * 4096);  // all params minus the embedding, 2 bytes each
  EXPECT_NEAR(c.weight_bytes, weights, 1e3);
  EXPECT_EQ(c.bottleneck, "memory");
  EXPECT_NEAR(c.seconds, weights / 3350e9, 1e-9);
}

TEST(PerfModel, MoeDecodeReadsOnlyTheExpectedExperts) {
  Rig x("deepseek-v3", "fp8", "h200-sxm", "vllm");
  PhaseCost one = decode_step(x.s, PerfParams{}, 1, 0);
  PhaseCost many = decode_step(x.s, PerfParams{}, 64, 0);
  // Batch 64 reads ~226 of 256 experts per layer instead of 8: far more bytes, but far less per token.
  EXPECT_GT(many.weight_bytes, 5 * one.weight_bytes);
  EXPECT_LT(many.weight_bytes / 64, one.weight_bytes);
}

TEST(PerfModel, LargePrefillIsComputeBound) {
  Rig x("llama-3.1-8b", "bf16", "h100-sxm", "vllm");
  PhaseCost c = prefill(x.s, PerfParams{}, 4096, 0);
  EXPECT_EQ(c.bottleneck, "compute");
  EXPECT_EQ(c.compute_dtype, "bf16");
  // At least the 2 FLOPs per weight per token of the linear layers.
  EXPECT_GT(c.flops, 2.0 * (8030261248.0 - 128256.0 * 4096) * 4096);
}

TEST(PerfModel, LlamaCppGemmsOnGeForceRunAtTheFp16AccumulateRate) {
  // llama.cpp's CUDA GEMMs ask cuBLAS for CUBLAS_COMPUTE_16F; the Ada whitepaper gives the RTX 4090
  // 330.3 dense TFLOP/s with FP16 accumulation and 165.2 with FP32. A 4096-token prefill of an 8B
  // model is compute-bound, so the weights' time is their FLOPs over that peak.
  Rig x("llama-3-8b", "q4_k_m", "rtx-4090", "llamacpp");
  ASSERT_TRUE(perf_params(x.s).fp16_accumulate);
  const PhaseCost c = prefill(x.s, perf_params(x.s), 4096, 0);
  EXPECT_EQ(c.compute_dtype, "fp16_acc16");
  EXPECT_NEAR(c.weight_seconds, (c.flops - c.attention_flops) / 330.3e12, 1e-12);
  // Without the framework's accumulation (vLLM, PyTorch): the FP32-accumulate rate.
  const PhaseCost v = prefill(x.s, PerfParams{}, 4096, 0);
  EXPECT_EQ(v.compute_dtype, "bf16");
  EXPECT_NEAR(v.weight_seconds, (v.flops - v.attention_flops) / 165.2e12, 1e-12);
  // A workstation Ada card runs FP32 accumulation at full rate: one peak either way.
  Rig w("llama-3-8b", "q4_k_m", "rtx-6000-ada", "llamacpp");
  EXPECT_EQ(prefill(w.s, perf_params(w.s), 4096, 0).compute_dtype, "bf16");
  // bf16 weights are not multiplied in FP16.
  EXPECT_EQ(compute_peak(catalog().devices.get("rtx-4090"), "bf16", true)->first, "bf16");
}

TEST(Frameworks, ComputeSectionIsStrict) {
  // The shipped llama.cpp profile with one defect at a time in its optional "compute" section.
  const auto dir = std::filesystem::temp_directory_path() / ("deepfit_fw_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "llamacpp.json").string();
  auto error_of = [&](const nlohmann::json& compute) {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(std::string(DEEPFIT_SOURCE_DIR) + "/data/frameworks/llamacpp.json"));
    j["compute"] = compute;
    std::ofstream(path) << j.dump(1);
    try {
      load_framework_file(path);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("loaded");
  };
  EXPECT_THAT(error_of({{"fp16_accumulate", "yes"}}), testing::HasSubstr("/compute/fp16_accumulate"));
  EXPECT_THAT(error_of({{"fp16_accumulate", true}, {"fp32_accumulate", false}}), testing::HasSubstr("unknown key 'fp32_accumulate'"));
  EXPECT_EQ(error_of({{"fp16_accumulate", false}}), "loaded");
  EXPECT_TRUE(catalog().frameworks.get("llamacpp").compute.fp16_accumulate);
  EXPECT_FALSE(catalog().frameworks.get("vllm").compute.fp16_accumulate);
  std::filesystem::remove_all(dir);
}

class Validate : public testing::Test {
 protected:
  std::string write(const std::vector<std::string>& lines) {
    path_ = std::filesystem::temp_directory_path() / ("deepfit_validate_" + std::to_string(::getpid()) + ".jsonl");
    std::ofstream out(path_);
    for (const auto& l : lines) out << l << "\n";
    return path_.string();
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::filesystem::path path_;
};

// Rows whose measured decode speed is exactly half the roofline: calibration on the others
// recovers the factor, so every leave-one-out prediction is exact.
TEST_F(Validate, LeaveOneOutRecoversAKnownEfficiency) {
  std::vector<std::string> lines;
  const char* devices[] = {"rtx-4090", "rtx-3090", "l40s", "a100-sxm-80g", "h100-pcie"};
  for (int i = 0; i < 5; ++i) {
    Rig x("llama-3-8b", "q4_k_m", devices[i], "llamacpp");
    x.s.kv_dtype = "f16";
    const double roofline = 1.0 / decode_step(x.s, perf_params(x.s), 1, 64).seconds;
    nlohmann::json r = {{"id", "T-" + std::to_string(i)}, {"model", "llama-3-8b"}, {"quant", "q4_k_m"}, {"kv_dtype", "fp16"},
                        {"device", devices[i]}, {"count", 1}, {"framework", "llamacpp"}, {"offload", "none"},
                        {"concurrency", 1}, {"output_tokens", 128}, {"context_tokens", 0},
                        {"metric", "decode_tok_s_per_user"}, {"value", roofline / 2}};
    lines.push_back(r.dump());
  }
  lines.push_back("{\"id\": \"T-bad\", \"metric\": ");  // line 6: malformed
  lines.push_back(R"({"id": "T-skip", "model": "no-such-model", "metric": "decode_tok_s_per_user", "value": 1, "framework": "llamacpp", "offload": "none", "concurrency": 1})");
  Validation v = validate_reference(catalog(), write(lines));
  ASSERT_EQ(v.rows.size(), 5u);
  for (const auto& r : v.rows) EXPECT_NEAR(r.error_pct, 0.0, 1e-6) << r.id;
  ASSERT_EQ(v.malformed.size(), 1u);
  EXPECT_THAT(v.malformed[0], testing::HasSubstr("line 6"));
  ASSERT_EQ(v.skipped.size(), 1u);
  EXPECT_THAT(v.skipped[0].reason, testing::HasSubstr("not shipped"));
}

TEST(Summaries, MedianAndNearestRankP90) {
  Summary s = summarize({1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  EXPECT_DOUBLE_EQ(s.median_abs_error_pct, 5.5);
  EXPECT_DOUBLE_EQ(s.p90_abs_error_pct, 9);
}

}  // namespace
}  // namespace deepfit::planner
