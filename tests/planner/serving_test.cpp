// Serving arithmetic (serving.h): MTP, link latency, hybrid CPU+GPU experts, metric mapping, and
// the strict loaders of data/links.json and data/workloads.json. Expected values come from the
// definitions written in each test, or from the sources the data files cite.
#include "planner/serving.h"

#include <cmath>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "test_data.h"

namespace deepfit::planner {
namespace {

using test::catalog;

// A DeepSeek-V3.2 setup on a device, kept alive together with the model and its storage.
struct V32 {
  ModelSpec m;
  StoredModel st;
  FitSetup s;
  V32(const std::string& quant, const std::string& device, const std::string& parallel, std::int64_t count)
      : m(catalog().model("deepseek-v3.2")), st(store_model(m, catalog().quants.scheme(quant), catalog().quants)) {
    s.model = &m;
    s.stored = &st;
    s.device = &catalog().devices.get(device);
    s.framework = &catalog().frameworks.get("vllm");
    s.parallel = parse_parallel(parallel);
    s.count = count;
    s.kv_dtype = "fp8";
  }
};

TEST(Serving, MtpDividesTheStepByTokensPerStepAndVerifiesTwoTokens) {
  V32 x("fp8", "h200-sxm", "tp8", 8);
  x.s.mtp = true;
  const auto link = link_model(*x.s.device, 8, catalog().links);
  ServingRequest rq;
  rq.concurrency = 1;
  const ServingTerms plain = serving_terms(x.s, rq, link, nullptr);
  rq.mtp_acceptance = 0.85;
  const ServingTerms mtp = serving_terms(x.s, rq, link, nullptr);
  EXPECT_DOUBLE_EQ(mtp.tokens_per_step, 1.85);
  // The verification step multiplies two tokens per sequence: twice the FLOPs, one KV read.
  EXPECT_NEAR(mtp.dec.flops, 2 * plain.dec.flops, 1e-9 * mtp.dec.flops);
  EXPECT_DOUBLE_EQ(mtp.dec.kv_bytes, plain.dec.kv_bytes);
  // At concurrency 1 there is no other prefill: TPOT = step / tokens per step.
  const TimeTerms t = tpot_terms(mtp, rq);
  EXPECT_NEAR(t.roofline_s, mtp.step.roofline_s / 1.85, 1e-15);
  EXPECT_NEAR(t.fixed_s, mtp.step.fixed_s / 1.85, 1e-15);
  // Memory-bound at batch 1: the draft costs little, so MTP is faster per token.
  EXPECT_LT(t.roofline_s, tpot_terms(plain, rq).roofline_s);
}

TEST(Serving, EveryCollectivePaysTheFabricLatencyOnce) {
  V32 x("fp8", "h200-sxm", "tp8", 8);
  const auto link = link_model(*x.s.device, 8, catalog().links);
  ASSERT_TRUE(link && link->latency_s);
  EXPECT_EQ(link->fabric, "nvlink4");
  EXPECT_DOUBLE_EQ(*link->latency_s, 5.9e-6);  // data/links.json: sglang PR #2904, TP8 on H100
  LinkModel no_latency = *link;
  no_latency.latency_s.reset();
  ServingRequest rq;
  rq.concurrency = 4;
  const ServingTerms with = serving_terms(x.s, rq, link, nullptr), without = serving_terms(x.s, rq, no_latency, nullptr);
  // TP 8 alone: two all-reduces in each of the 61 layers.
  EXPECT_NEAR(with.comm_step_s - without.comm_step_s, 2 * 61 * 5.9e-6, 1e-12);
  EXPECT_NEAR(with.comm_prefill_s - without.comm_prefill_s, 2 * 61 * 5.9e-6, 1e-12);
  // Beyond one node the NIC carries the split.
  const auto out = link_model(*x.s.device, 16, catalog().links);
  ASSERT_TRUE(out);
  EXPECT_EQ(out->fabric, "infiniband");
}

TEST(Serving, HybridSplitsTheWeightsBetweenGpuAndHostCpu) {
  V32 x("q4_k_m", "rtx-4090", "tp1", 1);
  x.s.kv_dtype = "bf16";
  x.s.framework = &catalog().frameworks.get("ktransformers");
  const hwdb::Device& host = catalog().devices.get("xeon-gold-6454s");
  ServingRequest rq;
  rq.concurrency = 1;
  const ServingTerms t = serving_terms(x.s, rq, std::nullopt, &host);
  // GPU part + routed experts on the host = every weight the step reads.
  const PhaseCost all = decode_step(x.s, PerfParams{}, 1, rq.input_tokens + rq.output_tokens / 2);
  FitSetup hs = x.s;
  hs.device = &host;
  StepShape experts;
  experts.part = WeightPart::kRoutedExpertsOnly;
  const PhaseCost host_part = decode_step(hs, PerfParams{}, 1, rq.input_tokens + rq.output_tokens / 2, experts);
  EXPECT_NEAR(t.dec.weight_bytes + host_part.weight_bytes, all.weight_bytes, 1e-9 * all.weight_bytes);
  // Batch 1 on the CPU is bandwidth-bound: expert bytes over the host's memory bandwidth.
  EXPECT_NEAR(t.host_step_s, host_part.weight_bytes / (host.memory_bandwidth_gbps * 1e9), 1e-12);
  EXPECT_DOUBLE_EQ(t.step.roofline_s, t.dec.seconds + t.host_step_s);
  EXPECT_GT(t.host_step_s, t.dec.seconds);  // host RAM is the slow side
}


TEST(Serving, LayerSplitPricesTheLastLayersOnTheHostCpu) {
  // Llama-3.1-8B bf16 on an RTX 4090 with its last 8 of 32 layers in the RAM of an EPYC 9654
  // (--offload layers:8). One layer: q and o 4096 x 4096, k and v 4096 x 1024, gate/up/down
  // 3 x 4096 x 14336 = 218,103,808 weights, plus two 4096-wide norms, all 2 bytes.
  test::Rig x("llama-3.1-8b", "bf16", "rtx-4090", "llamacpp");
  x.s.kv_dtype = "f16";
  x.s.offload = parse_offload("layers:8");
  const hwdb::Device& host = catalog().devices.get("epyc-9654");
  const double layer_bytes = 218103808.0 * 2 + 2 * 4096 * 2, host_bytes = 8 * layer_bytes;
  ServingRequest rq;
  rq.concurrency = 1;
  rq.input_tokens = 512;
  rq.decode_context = 0;  // no KV: the step is the weights alone
  const ServingTerms t = serving_terms(x.s, rq, std::nullopt, &host);
  // Batch 1 is bandwidth-bound on both sides: 8 layers over the host's 460.8 GB/s ...
  EXPECT_NEAR(t.host_step_s, host_bytes / 460.8e9, 1e-6 * t.host_step_s);
  // ... and everything else but the embedding (a gather) on the GPU.
  const double all_bytes = 2.0 * (8030261248.0 - 128256.0 * 4096);
  EXPECT_NEAR(t.dec.weight_bytes, all_bytes - host_bytes, 1e-6 * all_bytes);
  EXPECT_DOUBLE_EQ(t.step.roofline_s, t.dec.seconds + t.host_step_s);
  // KV splits with the layers: at 4096 positions the host side reads 8/32 of the f16 cache
  // (8 KV heads x 128 x 2 (K, V) x 2 bytes per layer and position).
  rq.decode_context = 4096;
  const ServingTerms k = serving_terms(x.s, rq, std::nullopt, &host);
  EXPECT_NEAR(k.dec.kv_bytes, 24 * 4096 * 8 * 128 * 2 * 2.0, 1.0);
  // Prefill: llama.cpp multiplies the 512-token micro-batch on the GPU and copies the host's
  // layers over PCIe 4.0 x16 (16 GT/s x 16 lanes x 128/130 / 8 = 31.51 GB/s) once.
  ASSERT_TRUE(t.host_prefill_on_gpu);
  StepShape hshape;
  hshape.first_layer = 24;
  const PhaseCost g = prefill(x.s, perf_params(x.s), 512, 0, hshape);
  EXPECT_NEAR(g.weight_bytes, host_bytes, 1e-6 * host_bytes);
  const double copy = host_bytes / (16e9 * 16 * 128 / 130 / 8);
  EXPECT_NEAR(t.prefill.roofline_s, t.pre.seconds + g.seconds + copy, 1e-9);
  // 530 tokens: a second micro-batch of 18 tokens, under the 32-token threshold, stays on the CPU.
  rq.input_tokens = 530;
  const ServingTerms u = serving_terms(x.s, rq, std::nullopt, &host);
  FitSetup hs = x.s;
  hs.device = &host;
  hs.parallel = ParallelPlan{};
  const double cpu18 = prefill(hs, PerfParams{}, 18, 512, hshape).seconds;
  EXPECT_NEAR(u.prefill.roofline_s, u.pre.seconds + g.seconds + copy + cpu18, 1e-9);
  // A framework without op offload (ktransformers) computes the host's share on the CPU.
  x.s.framework = &catalog().frameworks.get("ktransformers");
  rq.input_tokens = 512;
  const ServingTerms v = serving_terms(x.s, rq, std::nullopt, &host);
  EXPECT_FALSE(v.host_prefill_on_gpu);
  EXPECT_NEAR(v.prefill.roofline_s, v.pre.seconds + prefill(hs, PerfParams{}, 512, 0, hshape).seconds, 1e-9);
}

TEST(Serving, MetricsMapToTheirIntervals) {
  V32 x("fp8", "h200-sxm", "tp8", 8);
  const auto link = link_model(*x.s.device, 8, catalog().links);
  ServingRequest rq;
  rq.concurrency = 16;
  rq.input_tokens = 1000;
  rq.output_tokens = 100;
  const ServingTerms t = serving_terms(x.s, rq, link, nullptr);
  const double a = 1.3, o = 20e-6;
  const double cycle = cycle_terms(t, rq).at(a, o), tpot = tpot_terms(t, rq).at(a, o);
  // One prefill of the 16 per rank is the user's own, outside its TPOT.
  EXPECT_NEAR(cycle - tpot, t.prefill.at(a, o) / 100, 1e-12);
  EXPECT_NEAR(metric_terms("output_tok_s_total", t, rq, 8, 1)->value(a, o), 16 / cycle, 1e-9);
  EXPECT_NEAR(metric_terms("output_tok_s_per_gpu", t, rq, 8, 1)->value(a, o), 2 / cycle, 1e-9);
  EXPECT_NEAR(metric_terms("tpot_ms", t, rq, 8, 1)->value(a, o), tpot * 1e3, 1e-9);
  // 16 users on one rank: a prompt waits for the others' prefills. By hand from the definition:
  // share = 16 P / 100, rho = share / (S + share), seen = rho 15/16, wait = seen / (2 (1 - seen)).
  const double P = t.prefill.at(1, 0), S = t.step.at(1, 0), share = 16 * P / 100, rho = share / (S + share);
  const double seen = rho * 15 / 16, wait = seen / (2 * (1 - seen));
  EXPECT_NEAR(prefill_wait_factor(t, rq, P, S), wait, 1e-12);
  EXPECT_GT(wait, 0.0);
  EXPECT_NEAR(metric_terms("ttft_ms", t, rq, 8, 1)->value(a, o), ((1 + wait) * t.prefill.at(a, o) + t.step.at(a, o)) * 1e3, 1e-9);
  // One user: nothing to wait for.
  ServingRequest one = rq;
  one.concurrency = 1;
  const ServingTerms t1 = serving_terms(x.s, one, link, nullptr);
  EXPECT_EQ(prefill_wait_factor(t1, one, t1.prefill.at(a, o), t1.step.at(a, o)), 0.0);
  EXPECT_NEAR(metric_terms("ttft_ms", t1, one, 8, 1)->value(a, o), (t1.prefill.at(a, o) + t1.step.at(a, o)) * 1e3, 1e-9);
  // TP: one prompt at a time over all 8 GPUs.
  EXPECT_NEAR(metric_terms("prefill_tok_s_per_gpu", t, rq, 8, 1)->value(a, o), 1000 / t.prefill.at(a, o) / 8, 1e-9);
  const MetricTerms m = *metric_terms("decode_tok_s_per_user", t, rq, 8, 1);
  EXPECT_NEAR(m.seconds_of(m.value(a, o)), tpot, 1e-15);
  EXPECT_FALSE(metric_terms("file_bytes", t, rq, 8, 1).has_value());
  EXPECT_EQ(calibration_phase("output_tok_s_per_node"), "decode_tok_s_per_user");
  EXPECT_EQ(calibration_phase("ttft_ms"), "prefill_tok_s_total");
  EXPECT_FALSE(calibration_phase("min_devices").has_value());
  // Disaggregated: no prefill on the decode devices.
  rq.disaggregated = true;
  EXPECT_DOUBLE_EQ(cycle_terms(t, rq).at(a, o), t.step.at(a, o));
}

TEST(Serving, ReusedPrefillEqualsAFreshOne) {
  V32 x("fp8", "h200-sxm", "tp8", 8);
  const auto link = link_model(*x.s.device, 8, catalog().links);
  ServingRequest one, many;
  many.concurrency = 64;
  const ServingTerms first = serving_terms(x.s, one, link, nullptr);
  const ServingTerms fresh = serving_terms(x.s, many, link, nullptr), reused = serving_terms(x.s, many, link, nullptr, &first);
  EXPECT_DOUBLE_EQ(reused.prefill.at(1.3, 20e-6), fresh.prefill.at(1.3, 20e-6));
  EXPECT_DOUBLE_EQ(reused.comm_prefill_s, fresh.comm_prefill_s);
  EXPECT_DOUBLE_EQ(reused.step.at(1.3, 20e-6), fresh.step.at(1.3, 20e-6));
}

TEST(Workloads, ShippedMeansAndUnknownNames) {
  // vLLM paper (Kwon et al., SOSP 2023), Figure 11: ShareGPT input mean 161.31, output 337.99.
  const Workload& w = catalog().workloads.get("sharegpt");
  EXPECT_EQ(w.input_tokens, 161);
  EXPECT_EQ(w.output_tokens, 338);
  EXPECT_THAT([] { catalog().workloads.get("shargpt"); },
              testing::ThrowsMessage<InputError>(testing::AllOf(testing::HasSubstr("unknown workload 'shargpt'"),
                                                                testing::HasSubstr("sharegpt"))));
}

TEST(Links, StrictLoader) {
  const std::string path = testing::TempDir() + "/links_bad.json";
  std::ofstream(path) << R"({"fabrics": {"nvlink4": {"latency_us": 5}}})";
  EXPECT_THAT([&] { LinkDb::load(path); }, testing::ThrowsMessage<InputError>(testing::HasSubstr("latency_us")));
  std::ofstream(path) << R"({"fabrics": {"nvlink4": {"collective_latency_us": -1, "source": "x"}}})";
  EXPECT_THAT([&] { LinkDb::load(path); }, testing::ThrowsMessage<InputError>(testing::HasSubstr("collective_latency_us")));
}

}  // namespace
}  // namespace deepfit::planner
