// KV-cache sizes checked by hand from the models' configs and the frameworks' layouts.
#include "planner/kv_cache.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "test_data.h"

namespace deepfit::planner {
namespace {

using test::catalog;

TEST(KvCache, DeepSeekV32Bf16LatentPlusIndexer) {
  // 61 layers x (576 latent values x 2 bytes + 128 fp8 indexer keys + one fp32 scale).
  ModelSpec m = catalog().model("deepseek-v3.2");
  KvPerToken kv = kv_per_token(m, catalog().frameworks.get("vllm"), "bf16");
  EXPECT_EQ(kv.bytes_per_token(), 61 * (576 * 2 + 132));
  EXPECT_EQ(kv.bytes_per_token(), 78324);
}

TEST(KvCache, DeepSeekV32VllmFp8Layout) {
  // vLLM fp8_ds_mla: 512 fp8 + 4 fp32 scales + 64 bf16 rope = 656 bytes, plus the 132-byte indexer key.
  ModelSpec m = catalog().model("deepseek-v3.2");
  KvPerToken kv = kv_per_token(m, catalog().frameworks.get("vllm"), "fp8");
  EXPECT_EQ(kv.attention_bytes_per_layer, 656);
  EXPECT_EQ(kv.bytes_per_token(), 61 * (656 + 132));
  EXPECT_EQ(kv.bytes_per_token(), 48068);
}

TEST(KvCache, LlamaCppCachesTheIndexerKeyInTheCacheType) {
  ModelSpec m = catalog().model("deepseek-v3.2");
  KvPerToken kv = kv_per_token(m, catalog().frameworks.get("llamacpp"), "f16");
  EXPECT_EQ(kv.bytes_per_token(), 61 * (576 + 128) * 2);
}

TEST(KvCache, GqaAndQuantizedCacheTypes) {
  // Llama-3-8B: 32 layers x K and V x 8 heads x 128 dims.
  ModelSpec m = catalog().model("llama-3-8b");
  EXPECT_EQ(kv_per_token(m, catalog().frameworks.get("vllm"), "bf16").bytes_per_token(), 32 * 2 * 8 * 128 * 2);
  // q8_0: 128 values = 4 blocks of 34 bytes.
  EXPECT_EQ(kv_per_token(m, catalog().frameworks.get("llamacpp"), "q8_0").bytes_per_token(), 32 * 2 * 8 * 4 * 34);
  EXPECT_EQ(kv_per_token(m, catalog().frameworks.get("llamacpp"), "q4_0").bytes_per_token(), 32 * 2 * 8 * 4 * 18);
}

TEST(KvCache, SlidingWindowLayersStopGrowingAtTheWindow) {
  // gpt-oss-120b: 18 full and 18 sliding (128-token window) layers, 8 KV heads of 64.
  ModelSpec m = catalog().model("gpt-oss-120b");
  KvPerToken kv = kv_per_token(m, catalog().frameworks.get("vllm"), "bf16");
  const std::int64_t per_layer = 2 * 8 * 64 * 2;
  EXPECT_EQ(kv.num_full_layers, 18);
  EXPECT_EQ(kv.num_window_layers, 18);
  // 4096 tokens: full layers hold 4096, window layers 128 (both whole 16-token blocks).
  EXPECT_EQ(kv_bytes_per_sequence(kv, 4096, 1, 1.0), per_layer * (18 * 4096 + 18 * 128));
  // llama.cpp keeps every position on every layer in this profile.
  KvPerToken full = kv_per_token(m, catalog().frameworks.get("llamacpp"), "f16");
  EXPECT_EQ(kv_bytes_per_sequence(full, 4096, 1, 1.0), per_layer * 36 * 4096);
}

TEST(KvCache, BlocksRoundUpAndTensorParallelSplitsGqaHeads) {
  ModelSpec m = catalog().model("llama-3-8b");
  KvPerToken kv = kv_per_token(m, catalog().frameworks.get("vllm"), "bf16");
  const std::int64_t per_token = 32 * 2 * 8 * 128 * 2;
  EXPECT_EQ(kv_bytes_per_sequence(kv, 17, 1, 1.0), 32 * per_token);     // two 16-token blocks
  EXPECT_EQ(kv_bytes_per_sequence(kv, 32, 4, 1.0), 32 * per_token / 4);  // 2 of 8 heads per rank
  EXPECT_EQ(kv_bytes_per_sequence(kv, 32, 16, 1.0), 32 * per_token / 8); // more ranks than heads: one head each
}

TEST(KvCache, MlaLatentIsReplicatedAcrossTensorParallelRanks) {
  ModelSpec m = catalog().model("deepseek-v3");
  KvPerToken kv = kv_per_token(m, catalog().frameworks.get("vllm"), "bf16");
  EXPECT_EQ(kv_bytes_per_sequence(kv, 64, 8, 1.0), kv_bytes_per_sequence(kv, 64, 1, 1.0));
}

TEST(KvCache, RejectsUnknownAndMismatchedCacheTypes) {
  ModelSpec m = catalog().model("llama-3-8b");
  EXPECT_THAT([] { kv_value_bytes("int3", 1); }, testing::ThrowsMessage<InputError>(testing::HasSubstr("--kv-dtype")));
  EXPECT_THAT([] { normalize_kv_dtype("q8_0", catalog().frameworks.get("vllm")); },
              testing::ThrowsMessage<InputError>(testing::HasSubstr("llama.cpp cache type")));
}

}  // namespace
}  // namespace deepfit::planner
