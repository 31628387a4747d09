// Tensor inventory and parameter counts, checked against per-tensor formulas written out here from
// each model's published config.json and modeling code (not from the inventory code).
#include "planner/model_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "test_data.h"

namespace deepfit::planner {
namespace {

using test::catalog;

// DeepSeek-V3 family dimensions from config.json: hidden 7168, 61 layers (3 dense), 128 heads,
// q_lora 1536, kv_lora 512, rope 64, nope 128, v 128, 256 experts of 2048 + 1 shared, dense 18432,
// vocab 129280.
constexpr std::int64_t H = 7168, V = 129280, L = 61, Ld = 3, NH = 128, QL = 1536, KVL = 512, R = 64, NOPE = 128, VH = 128;
constexpr std::int64_t E = 256, F = 2048, FD = 18432, K = 8;

std::int64_t mla_attention() {
  return H * QL + QL /*q_a_norm*/ + QL * NH * (NOPE + R) + H * (KVL + R) + KVL /*kv_a_norm*/ + KVL * NH * (NOPE + VH) +
         NH * VH * H;
}
std::int64_t layer_norms() { return 2 * H; }
std::int64_t dense_ffn() { return 3 * H * FD; }
std::int64_t moe_ffn() { return E * 3 * H * F + 3 * H * F /*shared*/ + E * H /*router*/ + E /*score bias*/; }
// DeepSeek-V3.2 lightning indexer: wq_b [64*128, 1536], wk [128, 7168], k_norm weight+bias, weights_proj [64, 7168].
std::int64_t indexer() { return 64 * 128 * QL + 128 * H + 2 * 128 + 64 * H; }

TEST(ModelSpec, DeepSeekV31MainParametersFollowThePerTensorFormulas) {
  ModelSpec m = catalog().model("deepseek-v3");
  ParamCounts p = count_params(m, tensor_inventory(m));
  const std::int64_t main = V * H /*embed*/ + H /*final norm*/ + V * H /*head*/ +
                            L * (mla_attention() + layer_norms()) + Ld * dense_ffn() + (L - Ld) * moe_ffn();
  EXPECT_EQ(p.main, main);
  EXPECT_NEAR(static_cast<double>(p.main) / 1e9, 671.0, 0.1);  // "about 671.0B main"
}

TEST(ModelSpec, DeepSeekV32AddsTheIndexerAndAnMtpModule) {
  ModelSpec m = catalog().model("deepseek-v3.2");
  EXPECT_TRUE(m.dsa);
  EXPECT_EQ(m.index_top_k, 2048);
  ParamCounts p = count_params(m, tensor_inventory(m));
  const std::int64_t main = 2 * V * H + H + L * (mla_attention() + layer_norms() + indexer()) + Ld * dense_ffn() +
                            (L - Ld) * moe_ffn();
  // MTP (model.layers.61): one MoE decoder layer with indexer, enorm, hnorm, eh_proj [H, 2H],
  // shared_head norm and head, and its own embedding copy.
  const std::int64_t mtp = mla_attention() + layer_norms() + indexer() + moe_ffn() + 2 * H + 2 * H * H + H + 2 * V * H;
  EXPECT_EQ(p.main, main);
  EXPECT_EQ(p.mtp, mtp);
  EXPECT_NEAR(static_cast<double>(p.main) / 1e9, 671.9, 0.1);
  EXPECT_NEAR(static_cast<double>(p.mtp) / 1e9, 13.5, 0.1);
  EXPECT_NEAR(static_cast<double>(p.total) / 1e9, 685.4, 0.1);  // "685B" as released
  // Active: everything but the embedding table and 248 of 256 routed experts per MoE layer.
  const std::int64_t active = main - V * H - (L - Ld) * (E - K) * 3 * H * F;
  EXPECT_EQ(p.active_per_token, active);
  EXPECT_NEAR(static_cast<double>(p.active_per_token) / 1e9, 37.5, 0.1);
}

TEST(ModelSpec, Llama31EightBMatchesItsPublishedSize) {
  // hidden 4096, 32 layers, 32 heads, 8 KV heads of 128, FFN 14336, vocab 128256, untied.
  ModelSpec m = catalog().model("llama-3.1-8b");
  ParamCounts p = count_params(m, tensor_inventory(m));
  const std::int64_t h = 4096, v = 128256, f = 14336;
  const std::int64_t layer = h * 4096 + 2 * h * 1024 + 4096 * h + 3 * h * f + 2 * h;
  EXPECT_EQ(p.total, 2 * v * h + h + 32 * layer);
  EXPECT_NEAR(static_cast<double>(p.total) / 1e9, 8.03, 0.01);
}

TEST(ModelSpec, TiedEmbeddingsAreCountedOnceAndAreActive) {
  ModelSpec m = catalog().model("llama-3.2-3b");
  ASSERT_TRUE(m.tie_embeddings);
  ParamCounts p = count_params(m, tensor_inventory(m));
  // 3.21B as published by Meta for Llama 3.2 3B.
  EXPECT_NEAR(static_cast<double>(p.total) / 1e9, 3.21, 0.01);
  EXPECT_EQ(p.active_per_token, p.total);  // dense and tied: the table is the head, read whole
}

TEST(ModelSpec, MoeActiveParametersScaleWithTopK) {
  ModelSpec m = catalog().model("mixtral-8x7b");
  ParamCounts p = count_params(m, tensor_inventory(m));
  EXPECT_NEAR(static_cast<double>(p.total) / 1e9, 46.7, 0.1);             // Mistral's "46.7B total"
  // Per layer: attention 2*4096^2 + 2*4096*1024, two of eight experts 2*3*4096*14336, router, norms;
  // plus the head. Mistral's "12.9B active" also counts the 32000 x 4096 input table (12.88B).
  const std::int64_t h = 4096, layer = 2 * h * h + 2 * h * 1024 + 2 * 3 * h * 14336 + 8 * h + 2 * h;
  EXPECT_EQ(p.active_per_token, 32 * layer + 32000 * h + h);
  EXPECT_NEAR(static_cast<double>(p.active_per_token + 32000 * h) / 1e9, 12.9, 0.05);
}

TEST(ModelSpec, GptOssSlidingLayersAlternate) {
  ModelSpec m = catalog().model("gpt-oss-120b");
  ASSERT_EQ(m.layer_sliding.size(), 36u);
  EXPECT_TRUE(m.layer_is_sliding(0));
  EXPECT_FALSE(m.layer_is_sliding(1));
  EXPECT_EQ(m.sliding_window, 128);
  ParamCounts p = count_params(m, tensor_inventory(m));
  EXPECT_NEAR(static_cast<double>(p.total) / 1e9, 116.8, 0.1);  // OpenAI's model card: 116.8B
}

TEST(ModelSpec, UnknownArchitectureListsTheSupportedOnes) {
  nlohmann::json c = {{"architectures", {"FooForCausalLM"}}, {"hidden_size", 64}};
  try {
    model_from_config(c, "x.json", false);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("unsupported architecture 'FooForCausalLM'"));
    EXPECT_THAT(e.what(), testing::HasSubstr("DeepseekV32ForCausalLM"));
  }
}

TEST(ModelSpec, BadNumbersNameTheKey) {
  nlohmann::json c = {{"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 64}, {"num_hidden_layers", -3}};
  EXPECT_THAT([&] { model_from_config(c, "x.json", false); },
              testing::ThrowsMessage<InputError>(testing::HasSubstr("x.json: /num_hidden_layers")));
}

TEST(ModelSpec, EveryShippedModelLoads) {
  const auto ids = catalog().model_ids();
  EXPECT_GE(ids.size(), 24u);
  for (const auto& id : ids) {
    ModelSpec m = catalog().model(id);
    EXPECT_EQ(m.id, id);
    EXPECT_GT(count_params(m, tensor_inventory(m)).total, 0) << id;
  }
}

}  // namespace
}  // namespace deepfit::planner
