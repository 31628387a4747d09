// The memory planner: the verdicts the project promises, and invariants that must hold for any
// model (more memory never hurts, longer context never admits more sequences).
#include "planner/capacity.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "planner/fit.h"
#include "test_data.h"

namespace deepfit::planner {
namespace {

using test::catalog;

FitRecord fit(const std::string& model, const std::string& quant, const std::string& device, const std::string& count,
              std::int64_t context, std::int64_t concurrency, const std::string& parallel = "",
              const std::string& framework = "") {
  FitOptions o;
  o.model = model;
  o.quants = {quant};
  o.count = count;
  o.context_tokens = context;
  o.concurrency = {concurrency};
  if (!parallel.empty()) o.parallel = parallel;
  if (!framework.empty()) o.framework = framework;
  const hwdb::Device& d = catalog().devices.get(device);
  return plan_fit(catalog(), o, &d).front();
}

TEST(Capacity, DeepSeekV32Q4KMDoesNotFitOneH100AndSaysHowManyAreNeeded) {
  FitRecord r = fit("deepseek-v3.2", "q4_k_m", "h100-sxm", "1", 4096, 1);
  EXPECT_EQ(r.results.front().fits, false);
  ASSERT_TRUE(r.min_devices.has_value());
  // ~404 GB of weights over 80 GiB devices cannot take fewer than 5.
  EXPECT_GE(*r.min_devices, 5);
  EXPECT_THAT(r.notes.front(), testing::HasSubstr("needs at least"));
}

TEST(Capacity, DeepSeekV32Fp8DoesNotFitEightH100) {
  EXPECT_EQ(fit("deepseek-v3.2", "fp8", "h100-sxm", "8", 4096, 1).results.front().fits, false);
}

TEST(Capacity, TensorParallelReplicatesTheLatentCacheAndDataParallelAttentionDividesIt) {
  const auto tp2k = fit("deepseek-v3.2", "fp8", "h200-sxm", "8", 2048, 128, "tp8", "vllm");
  const auto tp8k = fit("deepseek-v3.2", "fp8", "h200-sxm", "8", 8192, 128, "tp8", "vllm");
  const auto dp8k = fit("deepseek-v3.2", "fp8", "h200-sxm", "8", 8192, 128, "tp1ep8dp8", "vllm");
  EXPECT_EQ(tp2k.results.front().fits, true);
  EXPECT_EQ(tp8k.results.front().fits, false);
  EXPECT_EQ(dp8k.results.front().fits, true);
  // Each TP rank holds all 128 sequences' latents; each DP rank 16 of them.
  EXPECT_EQ(tp8k.results.front().memory.kv_cache_bytes, 128LL * 8192 * 48068);
  EXPECT_EQ(dp8k.results.front().memory.kv_cache_bytes, 16LL * 8192 * 48068);
}

TEST(Capacity, MoreMemoryNeverTurnsAFitIntoAMiss) {
  FitOptions o;
  o.model = "qwen3-32b";
  o.quants = {"bf16"};
  o.context_tokens = 32768;
  o.concurrency = {4};
  hwdb::Device small = catalog().devices.get("h100-sxm");
  hwdb::Device big = small;
  big.memory_bytes *= 2;
  auto a = plan_fit(catalog(), o, &small).front().results.front();
  auto b = plan_fit(catalog(), o, &big).front().results.front();
  EXPECT_GE(*b.max_concurrency, *a.max_concurrency);
  EXPECT_GE(*b.max_context_tokens, *a.max_context_tokens);
  if (a.fits == true) {
    EXPECT_EQ(b.fits, true);
  }
}

TEST(Capacity, MaxConcurrencyFallsAsContextGrows) {
  std::int64_t prev = INT64_MAX;
  for (std::int64_t ctx : {1024, 4096, 16384, 65536}) {
    auto r = fit("llama-3.1-8b", "bf16", "h100-sxm", "1", ctx, 1).results.front();
    EXPECT_LE(*r.max_concurrency, prev) << ctx;
    prev = *r.max_concurrency;
  }
}

TEST(Capacity, MaxContextIsTheLargestThatFits) {
  auto r = fit("llama-3.1-8b", "bf16", "l4", "1", 4096, 2).results.front();
  ASSERT_TRUE(r.max_context_tokens.has_value());
  const std::int64_t L = *r.max_context_tokens;
  ASSERT_GT(L, 0);
  EXPECT_EQ(fit("llama-3.1-8b", "bf16", "l4", "1", L, 2).results.front().fits, true);
  if (L < 131072) {
    EXPECT_EQ(fit("llama-3.1-8b", "bf16", "l4", "1", L + 16, 2).results.front().fits, false);
  }
}

TEST(Capacity, ExpertOffloadMovesRoutedExpertsToHostRam) {
  FitOptions o;
  o.model = "deepseek-v3";
  o.quants = {"q4_k_m"};
  o.offload = "experts";
  const hwdb::Device& d = catalog().devices.get("rtx-4090");
  FitRecord r = plan_fit(catalog(), o, &d).front();
  // Routed experts are ~96 % of DeepSeek's weights: the device keeps a small share.
  EXPECT_LT(r.load.weights_bytes, r.weights_loaded_bytes / 10);
  EXPECT_GT(r.load.host_bytes, r.weights_loaded_bytes * 9 / 10);
}

TEST(Capacity, CountAutoFindsTheFewestDevices) {
  FitRecord r = fit("llama-3.1-70b", "bf16", "h100-sxm", "auto", 8192, 16);
  EXPECT_TRUE(r.count_was_auto);
  EXPECT_EQ(r.results.front().fits, true);
  if (r.count > 1) {
    FitRecord fewer = fit("llama-3.1-70b", "bf16", "h100-sxm", std::to_string(r.count / 2), 8192, 16);
    EXPECT_EQ(fewer.results.front().fits, false);
  }
}

TEST(Parallel, ParsesComponentsAndRejectsJunk) {
  ParallelPlan p = parse_parallel("tp1ep8dp8");
  EXPECT_EQ(p.tp, 1);
  EXPECT_EQ(p.ep, 8);
  EXPECT_EQ(p.dp, 8);
  EXPECT_EQ(p.num_devices(), 8);
  EXPECT_EQ(parse_parallel("pp2tp8").num_devices(), 16);
  for (const char* bad : {"", "tp", "tp0", "xx8", "tp8tp8", "tp8 ", "tp-1"})
    EXPECT_THROW(parse_parallel(bad), InputError) << bad;
  ModelSpec m = catalog().model("deepseek-v3.2");
  EXPECT_THAT([&] { check_parallel(parse_parallel("tp7"), m, 7); },
              testing::ThrowsMessage<InputError>(testing::HasSubstr("does not divide the 128 attention heads")));
  EXPECT_THROW(check_parallel(parse_parallel("tp8"), m, 4), InputError);
}

TEST(Capacity, ContextBeyondTheModelMaximumIsRejected) {
  EXPECT_THAT([] { fit("llama-3-8b", "bf16", "h100-sxm", "1", 100000, 1); },
              testing::ThrowsMessage<InputError>(testing::HasSubstr("beyond")));
}

}  // namespace
}  // namespace deepfit::planner
