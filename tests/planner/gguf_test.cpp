// GGUF header reading on files the tests write themselves, byte for byte, and the reader's
// behaviour on malformed files (one InputError, no crash, no huge allocation).
#include "planner/gguf.h"

#include <cstring>
#include <filesystem>

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "gguf_writer.h"
#include "kernels/error.h"
#include "test_data.h"

namespace deepfit::planner {
namespace {

using test::GgufKv;
using test::GgufTensorSpec;
using testing::HasSubstr;

constexpr std::uint32_t kF32 = 0, kQ8_0 = 8;

// Q8_0: 34 bytes per 32 weights (fp16 scale + 32 int8), so a row of 64 is 68 bytes.
std::uint64_t q8_bytes(std::uint64_t row, std::uint64_t rows) { return rows * (row / 32) * 34; }

// A two-layer llama: hidden 64, 4 heads (head_dim 16), 2 KV heads, FFN 128, vocab 256.
std::vector<GgufTensorSpec> tiny_llama_tensors() {
  std::vector<GgufTensorSpec> t = {{"token_embd.weight", {64, 256}, kQ8_0, q8_bytes(64, 256)},
                                   {"output_norm.weight", {64}, kF32, 64 * 4},
                                   {"output.weight", {64, 256}, kQ8_0, q8_bytes(64, 256)}};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    t.push_back({p + "attn_norm.weight", {64}, kF32, 256});
    t.push_back({p + "attn_q.weight", {64, 64}, kQ8_0, q8_bytes(64, 64)});
    t.push_back({p + "attn_k.weight", {64, 32}, kQ8_0, q8_bytes(64, 32)});
    t.push_back({p + "attn_v.weight", {64, 32}, kQ8_0, q8_bytes(64, 32)});
    t.push_back({p + "attn_output.weight", {64, 64}, kQ8_0, q8_bytes(64, 64)});
    t.push_back({p + "ffn_norm.weight", {64}, kF32, 256});
    t.push_back({p + "ffn_gate.weight", {64, 128}, kQ8_0, q8_bytes(64, 128)});
    t.push_back({p + "ffn_up.weight", {64, 128}, kQ8_0, q8_bytes(64, 128)});
    t.push_back({p + "ffn_down.weight", {128, 64}, kQ8_0, q8_bytes(128, 64)});
  }
  return t;
}

std::vector<GgufKv> tiny_llama_kvs() {
  return {test::kv_str("general.architecture", "llama"), test::kv_str("general.name", "tiny"),
          test::kv_u32("general.file_type", 7),          test::kv_u32("llama.embedding_length", 64),
          test::kv_u32("llama.block_count", 2),           test::kv_u32("llama.attention.head_count", 4),
          test::kv_u32("llama.attention.head_count_kv", 2), test::kv_u32("llama.feed_forward_length", 128),
          test::kv_u32("llama.context_length", 2048),
          test::kv_strings("tokenizer.ggml.tokens", std::vector<std::string>(256, "tok"))};
}

class GgufFile : public testing::Test {
 protected:
  std::string path(const std::string& name) {
    auto dir = std::filesystem::temp_directory_path() / ("deepfit_gguf_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    dirs_.push_back(dir.string());
    return (dir / name).string();
  }
  std::string write(const std::string& name, const std::string& bytes) {
    std::string p = path(name);
    test::write_file(p, bytes);
    return p;
  }
  void TearDown() override {
    for (const auto& d : dirs_) std::filesystem::remove_all(d);
  }
  std::vector<std::string> dirs_;
};

TEST_F(GgufFile, TinyLlamaSizesMatchTheBlockArithmetic) {
  const std::string bytes = test::gguf_bytes(tiny_llama_kvs(), tiny_llama_tensors());
  const std::string p = write("tiny.gguf", bytes);
  GgufModel g = read_gguf_model(p, test::catalog().quants);
  // Hand sum: embedding and head 256 x 68 each; per layer q 64x68, k and v 32x68, o 64x68,
  // gate/up 128x68, down 64 rows of 128 weights = 64x136, three norms... of 64 fp32.
  const std::int64_t layer = 256 + 64 * 68 + 2 * 32 * 68 + 64 * 68 + 256 + 2 * 128 * 68 + 64 * 136;
  const std::int64_t data = 2 * 256 * 68 + 256 + 2 * layer;
  std::int64_t sum = 0;
  for (const auto& t : g.stored.tensors) sum += t.bytes;
  EXPECT_EQ(sum, data);
  EXPECT_EQ(g.stored.bytes, static_cast<std::int64_t>(bytes.size()));  // every size here is a multiple of 32
  EXPECT_EQ(g.file_bytes, static_cast<std::int64_t>(bytes.size()));
  EXPECT_EQ(g.model.num_layers, 2);
  EXPECT_EQ(g.model.num_kv_heads, 2);
  EXPECT_EQ(g.model.head_dim, 16);
  EXPECT_EQ(g.scheme.id, "gguf:Q8_0");
  EXPECT_EQ(g.stored.tensors[1].format, "f32");
}

TEST_F(GgufFile, HeaderKeepsMetadataAndTensorOffsets) {
  const std::string p = write("h.gguf", test::gguf_bytes(tiny_llama_kvs(), tiny_llama_tensors()));
  GgufHeader h = read_gguf_header(p);
  EXPECT_EQ(h.version, 3u);
  EXPECT_EQ(std::get<std::string>(h.metadata.at("general.architecture")), "llama");
  EXPECT_EQ(std::get<GgufArray>(h.metadata.at("tokenizer.ggml.tokens")).length, 256u);
  ASSERT_EQ(h.tensors.size(), 21u);
  EXPECT_EQ(h.tensors[1].offset, 256u * 68u);  // after the 17408-byte embedding
  EXPECT_EQ(h.data_offset % 32, 0u);
}

TEST_F(GgufFile, WrongMagicIsRejected) {
  std::string b = test::gguf_bytes(tiny_llama_kvs(), tiny_llama_tensors());
  b[3] = 'X';
  EXPECT_THAT([&] { read_gguf_header(write("m.gguf", b)); }, testing::ThrowsMessage<InputError>(HasSubstr("not a GGUF file")));
}

TEST_F(GgufFile, EveryTruncationIsOneClearError) {
  const std::string b = test::gguf_bytes(tiny_llama_kvs(), tiny_llama_tensors());
  // Cut inside the header, the metadata, the tensor infos and the data.
  for (std::size_t cut : {std::size_t{3}, std::size_t{10}, std::size_t{30}, std::size_t{200}, std::size_t{2000},
                          b.size() / 2, b.size() - 1}) {
    const std::string p = write("t" + std::to_string(cut) + ".gguf", b.substr(0, cut));
    EXPECT_THROW(read_gguf_model(p, test::catalog().quants), InputError) << "cut at " << cut;
  }
}

TEST_F(GgufFile, AbsurdCountsAreRejectedBeforeAllocating) {
  std::string b = test::gguf_bytes(tiny_llama_kvs(), tiny_llama_tensors());
  const std::uint64_t huge = 1ULL << 60;
  std::string t = b;
  std::memcpy(t.data() + 8, &huge, 8);  // tensor count
  EXPECT_THAT([&] { read_gguf_header(write("c.gguf", t)); },
              testing::ThrowsMessage<InputError>(HasSubstr("more than the file can hold")));
  std::string k = b;
  std::memcpy(k.data() + 24, &huge, 8);  // length of the first key
  EXPECT_THAT([&] { read_gguf_header(write("k.gguf", k)); }, testing::ThrowsMessage<InputError>(HasSubstr("exceeds the limit")));
}

TEST_F(GgufFile, UnknownValueTypeAndTensorTypeAreNamed) {
  std::string b = test::gguf_bytes(tiny_llama_kvs(), tiny_llama_tensors());
  const std::uint32_t bad = 99;
  // First key "general.architecture" (20 bytes) starts at 24 + 8; its value type follows.
  std::memcpy(b.data() + 24 + 8 + 20, &bad, 4);
  EXPECT_THAT([&] { read_gguf_header(write("v.gguf", b)); }, testing::ThrowsMessage<InputError>(HasSubstr("unknown value type 99")));

  auto tensors = tiny_llama_tensors();
  tensors[0].ggml_type = 200;
  EXPECT_THAT([&] { read_gguf_model(write("g.gguf", test::gguf_bytes(tiny_llama_kvs(), tensors)), test::catalog().quants); },
              testing::ThrowsMessage<InputError>(HasSubstr("ggml type 200")));
}

TEST_F(GgufFile, TooManyDimensionsAndBadAlignmentAreRejected) {
  auto tensors = tiny_llama_tensors();
  tensors[1].ne = {4, 4, 2, 1, 2};
  EXPECT_THAT([&] { read_gguf_header(write("d.gguf", test::gguf_bytes(tiny_llama_kvs(), tensors))); },
              testing::ThrowsMessage<InputError>(HasSubstr("5 dimensions")));
  auto kvs = tiny_llama_kvs();
  kvs.push_back(test::kv_u32("general.alignment", 4096));  // the writer aligns to 32
  EXPECT_THAT([&] { read_gguf_header(write("a.gguf", test::gguf_bytes(kvs, tiny_llama_tensors()))); },
              testing::ThrowsMessage<InputError>(HasSubstr("not aligned")));
}

TEST_F(GgufFile, UnsupportedArchitectureIsNamed) {
  auto kvs = tiny_llama_kvs();
  kvs[0] = test::kv_str("general.architecture", "mamba");
  EXPECT_THAT([&] { read_gguf_model(write("u.gguf", test::gguf_bytes(kvs, tiny_llama_tensors())), test::catalog().quants); },
              testing::ThrowsMessage<InputError>(HasSubstr("'mamba' is not supported")));
}

TEST_F(GgufFile, MissingShardOfASplitFileIsNamed) {
  const std::string p = write("model-00001-of-00002.gguf", test::gguf_bytes(tiny_llama_kvs(), tiny_llama_tensors()));
  EXPECT_THAT([&] { read_gguf_model(p, test::catalog().quants); },
              testing::ThrowsMessage<InputError>(HasSubstr("model-00002-of-00002.gguf")));
}

}  // namespace
}  // namespace deepfit::planner
