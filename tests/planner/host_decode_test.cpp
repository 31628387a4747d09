// The host decode loop (planner/src/host_decode.cpp): the whole fast step against the same step
// built from every op's reference kernel, on a tiny DeepSeek-V3.2-structured config
// (tests/fixtures/models/tiny-deepseek-v32.json: 3 layers, 1 dense then 2 MoE with 8 experts,
// MLA with 4 heads, the DSA indexer with top-k 16), dense and sparse attention, every format;
// plus scaling and bad input.
#include "planner/host_decode.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "hwdb/topology.h"
#include "kernels/error.h"
#include "planner/catalog.h"

namespace deepfit::planner {
namespace {

using ::testing::HasSubstr;

ModelSpec tiny() {
  const Catalog cat = Catalog::load(data_root());
  return cat.model(std::string(DEEPFIT_SOURCE_DIR) + "/tests/fixtures/models/tiny-deepseek-v32.json");
}

double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s / static_cast<double>(v.size()));
}

// Tolerance on the logits: rms(fast - ref) <= tol * rms(ref). Each fast op's error relative to its
// output is bounded in its kernel's header; the largest per-op terms are the activation
// quantization of the Q8_0/Q4_K products (half a step of 8 bits: <= 1/254 of a group's largest
// value per input, about 2^-9 of the output's size for unit-variance inputs), the bf16 rounding of
// MLA's softmax weights and values (2^-8 relative each) and of the indexer head weights, and fp32
// accumulation (K u, negligible). About 12 sequential ops per layer over 3 layers plus the head
// give n = 37 terms of at most e = 2^-7 each (bf16: two roundings); independent rounding errors add
// in quadrature, sqrt(n) e = 0.048, and a residual stream carries each layer's error forward
// unamplified (RMSNorm renormalizes), so tol = 0.05. Formats that round activations add their
// 8-bit term in quadrature: sqrt(n) * sqrt(2^-14 + 2^-18) = 0.049 (Q8_0, Q4_K), within the same tol.
void expect_step_matches_reference(const std::string& quant, std::int64_t context, const std::string& cache,
                                   std::int64_t batch = 3) {
  hwdb::Topology topo = hwdb::Topology::host();
  ThreadPool pool(topo, 2);
  HostDecodeOptions opt;
  opt.quant = quant;
  opt.kv_cache = cache;
  opt.batch = batch;
  opt.context = context;
  const DecodeLogits l = host_decode_logits(tiny(), opt, pool);
  ASSERT_EQ(l.fast.size(), l.reference.size());
  ASSERT_EQ(l.fast.size(), static_cast<std::size_t>(batch) * 300u);
  std::vector<float> diff(l.fast.size());
  for (std::size_t i = 0; i < diff.size(); ++i) {
    ASSERT_TRUE(std::isfinite(l.fast[i])) << i;
    diff[i] = l.fast[i] - l.reference[i];
  }
  EXPECT_GT(rms(l.reference), 0.0);
  if (context + 1 > 16) {
    // Top-k: every (layer, sequence) selection has one boundary, the 16th against the 17th score;
    // the fast step's scores differ from the reference's by the upstream error above, far below
    // the typical gap between neighbouring scores of 61 random ones, so at most one pair per
    // boundary may swap: at most 3 layers x batch pairs differ.
    EXPECT_EQ(l.total_positions, 3 * batch * 16);
    EXPECT_GE(l.same_positions, l.total_positions - 3 * batch);
  }
  EXPECT_LE(rms(diff), 0.05 * rms(l.reference)) << quant << " context " << context << " cache " << cache;
}

TEST(HostDecode, FastStepMatchesReferenceStepDenseAttention) {
  // context 9: 10 positions <= top-k 16, so every position is attended.
  for (const char* q : {"bf16", "q8_0", "q4_k", "fp8"}) expect_step_matches_reference(q, 9, "bf16");
}

TEST(HostDecode, FastStepMatchesReferenceStepAtBatch16) {
  // Batch 16: BF16 products switch to the AVX512_BF16 dot-product GEMM (bf16-rounded activations,
  // 2^-9 relative per input, inside the per-op term of the tolerance above).
  expect_step_matches_reference("bf16", 9, "bf16", 16);
}

TEST(HostDecode, FastStepMatchesReferenceStepSparseAttention) {
  // context 60: the indexer picks 16 of 61 positions; an fp8 latent cache.
  expect_step_matches_reference("q8_0", 60, "fp8");
  expect_step_matches_reference("bf16", 60, "bf16");
}

TEST(HostDecode, ReportsTimesPerOpAndTokensPerSecond) {
  hwdb::Topology topo = hwdb::Topology::host();
  ThreadPool pool(topo, 2);
  HostDecodeOptions opt;
  opt.batch = 2;
  opt.context = 40;
  opt.steps = 2;
  const HostDecodeResult r = run_host_decode(tiny(), opt, pool);
  ASSERT_EQ(r.step_ms.size(), 2u);
  EXPECT_GT(r.decode_tok_s, 0.0);
  EXPECT_DOUBLE_EQ(r.decode_tok_s, 2.0 / (r.step_ms_median / 1e3));
  std::vector<std::string> names;
  for (const auto& o : r.ops) names.push_back(o.op);
  for (const char* op : {"mla_decode", "dsa_indexer", "dsa_topk", "expert_ffn", "shared_expert", "dense_ffn", "router", "lm_head"})
    EXPECT_THAT(names, ::testing::Contains(std::string(op)));
  // Calls per step: one MLA per layer; the dense FFN in layer 0 only (first_k_dense_replace 1).
  for (const auto& o : r.ops) {
    if (o.op == "mla_decode") {
      EXPECT_EQ(o.calls, 3);
    }
    if (o.op == "dense_ffn") {
      EXPECT_EQ(o.calls, 1);
    }
    if (o.op == "expert_ffn") {
      EXPECT_EQ(o.calls, 2);
    }
  }
  // The latent cache: 3 layers x 2 sequences x 41 rows x 2 (128 + 64) bytes, plus the indexer's
  // keys: 41 rows x (128 + 4) bytes per layer and sequence.
  EXPECT_DOUBLE_EQ(r.kv_cache_bytes, 3.0 * 2 * 41 * (2 * (128 + 64) + 132));
}

TEST(HostDecode, ScalesLayersAndExperts) {
  const ModelSpec s = scale_for_host(tiny(), 2, 4);
  EXPECT_EQ(s.num_layers, 2);
  EXPECT_EQ(s.num_experts, 4);
  EXPECT_EQ(s.layer_moe.size(), 2u);
  EXPECT_FALSE(s.layer_moe[0]);
  EXPECT_TRUE(s.layer_moe[1]);
}

TEST(HostDecode, RefusesWhatItCannotRun) {
  hwdb::Topology topo = hwdb::Topology::host();
  ThreadPool pool(topo, 1);
  HostDecodeOptions opt;
  try {
    scale_for_host(tiny(), 2, 3);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("--experts: 3 must be between top_k 2 and 8 and a multiple of the 2 router groups"));
  }
  opt.quant = "q5_k";
  EXPECT_THROW(run_host_decode(tiny(), opt, pool), InputError);
  opt.quant = "q4_k";
  opt.context = 5000;
  EXPECT_THROW(run_host_decode(tiny(), opt, pool), InputError);
  const Catalog cat = Catalog::load(data_root());
  try {
    run_host_decode(cat.model("llama-3.1-8b"), HostDecodeOptions{}, pool);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("the host kernels cover DeepSeek MLA"));
  }
  // The whole of DeepSeek-V3.2 (about 380 GB at Q4_K) does not fit this test machine.
  try {
    run_host_decode(cat.model("deepseek-v3.2"), HostDecodeOptions{}, pool);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("hint: scale it, e.g. --layers 4 --experts 16"));
  }
}

}  // namespace
}  // namespace deepfit::planner
