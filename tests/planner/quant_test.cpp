// Storage-format arithmetic checked by hand, llama.cpp's per-tensor rules on DeepSeek checked
// against the rules as documented, and predicted GGUF sizes against published files.
#include "planner/quant.h"

#include <fstream>
#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "test_data.h"

namespace deepfit::planner {
namespace {

using test::catalog;

Tensor matrix(std::vector<std::int64_t> shape) { return Tensor{"t.weight", std::move(shape), TensorRole::kAttention, 0, false}; }

TEST(StorageFormat, GgufBlocksHaveTheirSpecifiedByteSizes) {
  const QuantDb& q = catalog().quants;
  // ggml-common.h: block_q4_K = 2+2+12+128 bytes per 256, block_q8_0 = 2+32 per 32, block_q6_K =
  // 128+64+16+2 per 256, block_iq4_xs = 2+2+4+128 per 256, block_iq1_s = 2+32+16 per 256.
  EXPECT_EQ(tensor_bytes(matrix({3, 512}), q.format("q4_k")), 3 * 2 * 144);
  EXPECT_EQ(tensor_bytes(matrix({5, 64}), q.format("q8_0")), 5 * 2 * 34);
  EXPECT_EQ(tensor_bytes(matrix({1, 256}), q.format("q6_k")), 210);
  EXPECT_EQ(tensor_bytes(matrix({1, 256}), q.format("iq4_xs")), 136);
  EXPECT_EQ(tensor_bytes(matrix({1, 256}), q.format("iq1_s")), 50);
  EXPECT_DOUBLE_EQ(q.format("q4_k").bits_per_weight(), 4.5);
  EXPECT_DOUBLE_EQ(q.format("q2_k").bits_per_weight(), 2.625);
}

TEST(StorageFormat, GgufRowsMustBeWholeBlocks) {
  EXPECT_THAT([] { tensor_bytes(matrix({2, 100}), catalog().quants.format("q4_k")); },
              testing::ThrowsMessage<InputError>(testing::HasSubstr("not a whole number of q4_k blocks")));
}

TEST(StorageFormat, Fp8BlockScalesCountPartialTiles) {
  // 300 x 260 fp8 bytes plus ceil(300/128) * ceil(260/128) = 3 x 3 fp32 scales.
  EXPECT_EQ(tensor_bytes(matrix({300, 260}), catalog().quants.format("fp8_e4m3_b128")), 300 * 260 + 9 * 4);
  // Stacked experts keep one scale grid each: 4 experts of 128 x 256 -> 4 x (1 x 2) scales.
  EXPECT_EQ(tensor_bytes(matrix({4, 128, 256}), catalog().quants.format("fp8_e4m3_b128")), 4 * 128 * 256 + 4 * 2 * 4);
}

TEST(StorageFormat, MicroscaledAndGroupFormats) {
  const QuantDb& q = catalog().quants;
  // NVFP4: 16 fp4 values + one e4m3 scale = 9 bytes per 16, plus a fp32 tensor scale.
  EXPECT_EQ(tensor_bytes(matrix({16, 32}), q.format("nvfp4")), 16 * 2 * 9 + 4);
  // MXFP4: 32 fp4 values + one e8m0 scale = 17 bytes.
  EXPECT_EQ(tensor_bytes(matrix({2, 64}), q.format("mxfp4")), 2 * 2 * 17);
  // AWQ g128: per 128 inputs per output 64 bytes of int4, a fp16 scale and a 4-bit zero = 66.5 bytes.
  EXPECT_EQ(tensor_bytes(matrix({256, 128}), q.format("awq_int4_g128")), 256 * 665 / 10);
}

// DeepSeek-V3 under Q4_K_M, by llama.cpp's documented rules (n_layer 61, 256 experts): output
// Q6_K, token_embd keeps Q4_K, ffn_down(_exps/_shexp) Q6_K where use_more_bits(layer, 61)
// (layers 0-6, 53-60 and 9, 12, ..., 51), attn_k_b falls back to Q5_0 (rows of 128), norms and
// routers stay F32.
TEST(GgufRules, DeepSeekQ4KMTypesFollowTheDocumentedRules) {
  ModelSpec m = catalog().model("deepseek-v3");
  StoredModel s = store_model(m, catalog().quants.scheme("q4_k_m"), catalog().quants);
  std::map<std::string, std::string> type;
  for (const auto& t : s.tensors) type[t.tensor.name] = t.format;
  EXPECT_EQ(type["output.weight"], "q6_k");
  EXPECT_EQ(type["token_embd.weight"], "q4_k");
  EXPECT_EQ(type["blk.3.ffn_down_exps.weight"], "q6_k");   // 3 < 61/8
  EXPECT_EQ(type["blk.8.ffn_down_exps.weight"], "q4_k");   // (8-7) % 3 == 1
  EXPECT_EQ(type["blk.9.ffn_down_exps.weight"], "q6_k");   // (9-7) % 3 == 2
  EXPECT_EQ(type["blk.53.ffn_down_shexp.weight"], "q6_k"); // 53 >= 7*61/8
  EXPECT_EQ(type["blk.10.ffn_gate_exps.weight"], "q4_k");
  EXPECT_EQ(type["blk.10.attn_k_b.weight"], "q5_0");
  EXPECT_EQ(type["blk.10.attn_v_b.weight"], "q4_k");
  EXPECT_EQ(type["blk.10.ffn_gate_inp.weight"], "f32");
  EXPECT_EQ(type["blk.10.exp_probs_b.bias"], "f32");
  EXPECT_EQ(type["blk.10.attn_norm.weight"], "f32");
  EXPECT_EQ(s.num_fallbacks, 61);
  EXPECT_EQ(s.tensors.size(), 1086u);  // 3 + 3 x 13 + 58 x 18 in llama.cpp's current layout
}

TEST(GgufRules, Llama70BGetsTheSeventyBAttnVBump) {
  // llama.cpp bumps attn_v from Q3_K/Q4_K to Q5_K on 80-layer GQA llamas; Q4_K_S otherwise gives
  // Q5_K only to the first 4 attn_v.
  ModelSpec m = catalog().model("llama-3.1-70b");
  StoredModel s = store_model(m, catalog().quants.scheme("q3_k_s"), catalog().quants);
  int n = 0;
  for (const auto& t : s.tensors) {
    if (t.tensor.name.find("attn_v.weight") == std::string::npos) continue;
    EXPECT_EQ(t.format, "q5_k") << t.tensor.name;
    ++n;
  }
  EXPECT_EQ(n, 80);
}

// Published file sizes (data/reference/gguf_sizes.jsonl) against the predicted tensor data:
// within 0.5 %, the target. The published figure also holds ~10 MB of metadata.
TEST(GgufRules, PredictedSizesMatchPublishedFiles) {
  std::ifstream in(std::string(DEEPFIT_SOURCE_DIR) + "/data/reference/gguf_sizes.jsonl");
  ASSERT_TRUE(in);
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    const std::string model = j.at("config_model");
    const auto ids = catalog().model_ids();
    if (std::find(ids.begin(), ids.end(), model) == ids.end()) {
      ADD_FAILURE() << "reference row " << j.at("id") << " names a model that is not shipped: " << model;
      continue;
    }
    ModelSpec m = catalog().model(model);
    StoredModel s = store_model(m, catalog().quants.scheme(j.at("quant")), catalog().quants);
    const double published = j.at("file_bytes").get<double>();
    EXPECT_NEAR(static_cast<double>(s.bytes), published, published * 0.005) << j.at("id");
    ++checked;
  }
  EXPECT_GE(checked, 6);
}

// The seed table's 59.8 GB for DeepSeek-V3.2 at Q4_K_M is physically impossible: 685B weights at
// ~4.8 bits each are ~400 GB.
TEST(GgufRules, DeepSeekV32AtQ4KMNeedsAboutFourHundredGB) {
  ModelSpec m = catalog().model("deepseek-v3.2");
  StoredModel s = store_model(m, catalog().quants.scheme("q4_k_m"), catalog().quants);
  EXPECT_GT(static_cast<double>(s.bytes), 395e9);
  EXPECT_GT(static_cast<double>(s.bytes) / 59.8e9, 6.5);
}

TEST(Schemes, Fp8ReleaseMatchesDeepSeeksCheckpointLayout) {
  // FP8 linear weights with 128x128 fp32 scales; embedding, head and router in bf16; MTP kept.
  ModelSpec m = catalog().model("deepseek-v3.2");
  StoredModel s = store_model(m, catalog().quants.scheme("fp8"), catalog().quants);
  std::map<std::string, std::string> type;
  for (const auto& t : s.tensors) type[t.tensor.name] = t.format;
  EXPECT_EQ(type["token_embd.weight"], "bf16");
  EXPECT_EQ(type["blk.5.ffn_gate_inp.weight"], "bf16");
  EXPECT_EQ(type["blk.5.ffn_up_exps.weight"], "fp8_e4m3_b128");
  EXPECT_EQ(type["blk.61.nextn.eh_proj.weight"], "fp8_e4m3_b128");
  // About 1 byte per parameter plus bf16 tables: the release is ~690 GB.
  EXPECT_NEAR(static_cast<double>(s.bytes) / 1e9, 689.5, 1.5);
}

TEST(Schemes, UnknownSchemeSuggestsCloseIds) {
  EXPECT_THAT([] { catalog().quants.scheme("q4_k_x"); },
              testing::ThrowsMessage<InputError>(testing::HasSubstr("q4_k_m")));
}

}  // namespace
}  // namespace deepfit::planner
