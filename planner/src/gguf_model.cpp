// GGUF header -> ModelSpec and the file's real tensor storage.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <regex>

#include "kernels/error.h"
#include "planner/gguf.h"

namespace deepfit::planner {
namespace {

class Meta {
 public:
  Meta(const GgufHeader& h, std::string arch) : h_(h), arch_(std::move(arch)) {}
  bool has(const std::string& key) const { return h_.metadata.count(arch_ + "." + key) > 0; }
  std::int64_t get(const std::string& key) const {
    const std::string full = arch_ + "." + key;
    auto it = h_.metadata.find(full);
    if (it == h_.metadata.end()) throw InputError(h_.path + ": metadata key '" + full + "' is missing (required for " + arch_ + ")");
    return as_int(full, it->second);
  }
  std::int64_t get_or(const std::string& key, std::int64_t fallback) const { return has(key) ? get(key) : fallback; }

 private:
  std::int64_t as_int(const std::string& key, const GgufValue& v) const {
    std::int64_t x = -1;
    if (auto* u = std::get_if<std::uint64_t>(&v)) x = *u > (1ULL << 40) ? -1 : static_cast<std::int64_t>(*u);
    else if (auto* s = std::get_if<std::int64_t>(&v)) x = *s;
    else throw InputError(h_.path + ": metadata key '" + key + "' must be an integer");
    if (x < 0 || x > (1LL << 40)) throw InputError(h_.path + ": metadata key '" + key + "' has an absurd value " + std::to_string(x));
    return x;
  }
  const GgufHeader& h_;
  std::string arch_;
};

std::string meta_string(const GgufHeader& h, const std::string& key) {
  auto it = h.metadata.find(key);
  if (it == h.metadata.end() || !std::holds_alternative<std::string>(it->second))
    throw InputError(h.path + ": metadata key '" + key + "' is missing or not a string");
  return std::get<std::string>(it->second);
}

TensorRole role_of(const std::string& n) {
  auto has = [&](const char* s) { return n.find(s) != std::string::npos; };
  if (n == "token_embd.weight") return TensorRole::kEmbedding;
  if (n == "output.weight") return TensorRole::kHead;
  if (has("nextn.")) return TensorRole::kMtp;
  if (has("_norm.") || has("norm.weight")) return TensorRole::kNorm;
  if (has("indexer.")) return TensorRole::kIndexer;
  if (has("ffn_gate_inp") || has("exp_probs_b")) return TensorRole::kRouter;
  if (has("_exps")) return TensorRole::kRoutedExpert;
  if (has("_shexp")) return TensorRole::kSharedExpert;
  if (has("ffn_")) return TensorRole::kDenseFfn;
  return TensorRole::kAttention;
}

ModelSpec spec_from_meta(const GgufHeader& h) {
  const std::string arch = meta_string(h, "general.architecture");
  static const std::pair<const char*, Arch> archs[] = {{"deepseek2", Arch::kDeepseekV3}, {"deepseek32", Arch::kDeepseekV32},
                                                       {"llama", Arch::kLlama},          {"qwen2", Arch::kQwen2},
                                                       {"qwen3", Arch::kQwen3},          {"qwen3moe", Arch::kQwen3Moe},
                                                       {"gpt-oss", Arch::kGptOss}};
  ModelSpec m;
  bool known = false;
  for (auto& [name, a] : archs)
    if (arch == name) {
      m.arch = a;
      known = true;
    }
  if (!known)
    throw InputError(h.path + ": GGUF architecture '" + arch +
                     "' is not supported (supported: deepseek2, deepseek32, llama, qwen2, qwen3, qwen3moe, gpt-oss)");
  Meta g(h, arch);
  m.id = h.path;
  m.hf_architecture = to_string(m.arch);
  m.display_name = h.metadata.count("general.name") && std::holds_alternative<std::string>(h.metadata.at("general.name"))
                       ? std::get<std::string>(h.metadata.at("general.name"))
                       : arch;
  m.source = h.path;
  m.hidden_dim = g.get("embedding_length");
  const std::int64_t blocks = g.get("block_count");
  m.num_heads = g.get("attention.head_count");
  m.num_kv_heads = g.get_or("attention.head_count_kv", m.num_heads);
  m.head_dim = g.get_or("attention.key_length", m.num_heads > 0 ? m.hidden_dim / m.num_heads : 0);
  m.ffn_dim = g.get_or("feed_forward_length", 0);
  m.max_ctx_len = g.get("context_length");
  m.num_experts = g.get_or("expert_count", 0);
  m.top_k = g.get_or("expert_used_count", 0);
  m.num_shared_experts = g.get_or("expert_shared_count", 0);
  m.moe_ffn_dim = g.get_or("expert_feed_forward_length", m.ffn_dim);
  if (m.arch == Arch::kLlama && m.num_experts > 0) m.arch = Arch::kMixtral;
  m.qkv_bias = m.arch == Arch::kQwen2 || m.arch == Arch::kGptOss;
  m.qk_norm = m.arch == Arch::kQwen3 || m.arch == Arch::kQwen3Moe;
  m.num_mtp_layers = g.get_or("nextn_predict_layers", 0);
  m.num_layers = blocks - (m.arch == Arch::kDeepseekV32 ? m.num_mtp_layers : 0);
  if (m.num_layers < 1 || m.hidden_dim < 1 || m.num_heads < 1 || m.num_kv_heads < 1 || m.num_heads % m.num_kv_heads != 0)
    throw InputError(h.path + ": inconsistent model dimensions in the metadata");
  if (m.arch == Arch::kDeepseekV3 || m.arch == Arch::kDeepseekV32) {
    m.mla = true;
    m.kv_lora_rank = g.get("attention.kv_lora_rank");
    m.q_lora_rank = g.get_or("attention.q_lora_rank", 0);
    m.rope_head_dim = g.get("rope.dimension_count");
    // Files written since llama.cpp's MLA support carry *_mla lengths; older ones the per-head lengths.
    const std::int64_t k_len = g.has("attention.key_length_mla") ? g.get("attention.key_length_mla") : g.get("attention.key_length");
    m.v_head_dim = g.has("attention.value_length_mla") ? g.get("attention.value_length_mla") : g.get("attention.value_length");
    m.nope_head_dim = k_len - m.rope_head_dim;
    m.head_dim = k_len;
    m.num_kv_heads = m.num_heads;
    const std::int64_t dense = g.get_or("leading_dense_block_count", 0);
    for (std::int64_t l = 0; l < m.num_layers; ++l) m.layer_moe.push_back(l >= dense);
    if (m.arch == Arch::kDeepseekV32) {
      m.dsa = true;
      m.index_num_heads = g.get("attention.indexer.head_count");
      m.index_head_dim = g.get("attention.indexer.key_length");
      m.index_top_k = g.get("attention.indexer.top_k");
    }
  } else {
    m.layer_moe.assign(static_cast<std::size_t>(m.num_layers), m.num_experts > 0);
  }
  if (m.arch == Arch::kGptOss) {
    m.sliding_window = g.get("attention.sliding_window");
    for (std::int64_t l = 0; l < m.num_layers; ++l) m.layer_sliding.push_back(l % 2 == 0);  // gpt-oss alternates, sliding first
  }
  m.released_format = "gguf";
  return m;
}

std::vector<std::string> shard_paths(const std::string& path) {
  static const std::regex split_re("(.*)-([0-9]{5})-of-([0-9]{5})\\.gguf");
  std::smatch mt;
  if (!std::regex_match(path, mt, split_re)) return {path};
  const int count = std::stoi(mt[3].str());
  if (count < 1) throw InputError(path + ": split count must be at least 1");
  std::vector<std::string> out;
  for (int i = 1; i <= count; ++i) {
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, "-%05d-of-%05d.gguf", i, count);
    std::string p = mt[1].str() + suffix;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(p, ec)) throw InputError(path + ": shard " + p + " of the split file is missing");
    out.push_back(p);
  }
  return out;
}

}  // namespace

GgufModel read_gguf_model(const std::string& path, const QuantDb& quants) {
  GgufModel out;
  std::vector<GgufHeader> headers;
  for (const auto& p : shard_paths(path)) headers.push_back(read_gguf_header(p));
  out.model = spec_from_meta(headers.front());
  std::map<std::string, int> type_counts;
  for (const auto& h : headers) {
    out.file_bytes += static_cast<std::int64_t>(h.file_bytes);
    out.header_bytes += static_cast<std::int64_t>(h.data_offset);
    for (const auto& ti : h.tensors) {
      const StorageFormat* f = quants.format_by_ggml_type(ti.ggml_type);
      if (!f) throw InputError(h.path + ": tensor '" + ti.name + "' has ggml type " + std::to_string(ti.ggml_type) + ", unknown to deepfit");
      Tensor t;
      t.name = ti.name;
      t.shape.assign(ti.ne.rbegin(), ti.ne.rend());
      t.role = role_of(ti.name);
      if (ti.name.rfind("blk.", 0) == 0) {
        const std::string num = ti.name.substr(4, ti.name.find('.', 4) - 4);
        if (num.empty() || num.size() > 6 || num.find_first_not_of("0123456789") != std::string::npos)
          throw InputError(h.path + ": tensor name '" + ti.name + "' has no layer number");
        t.layer = std::stoll(num);
      }
      t.mtp = t.layer >= out.model.num_layers;
      const std::int64_t bytes = tensor_bytes(t, *f);
      if (h.data_offset + ti.offset + static_cast<std::uint64_t>(bytes) > h.file_bytes)
        throw InputError(h.path + ": tensor '" + ti.name + "' ends past the end of the file (truncated download?)");
      out.stored.tensors.push_back({t, f->id, bytes});
      out.stored.bytes += gguf_padded(bytes, static_cast<std::int64_t>(h.alignment));
      ++type_counts[f->id];
    }
  }
  out.stored.gguf = true;
  std::vector<Tensor> held;  // a real file: count what it holds
  for (const auto& t : out.stored.tensors) held.push_back(t.tensor);
  out.stored.params = count_params(out.model, held);
  out.stored.bytes += out.header_bytes;  // whole model as stored: the files
  std::string ft = "unknown";
  if (auto it = headers.front().metadata.find("general.file_type"); it != headers.front().metadata.end())
    if (auto* u = std::get_if<std::uint64_t>(&it->second)) ft = gguf_ftype_name(static_cast<std::uint32_t>(*u));
  out.scheme.id = "gguf:" + ft;
  out.scheme.kind = "gguf-file";
  std::string mix;
  for (const auto& [id, n] : type_counts) mix += (mix.empty() ? "" : ", ") + std::to_string(n) + " x " + id;
  out.scheme.description = "tensor types read from the file: " + mix;
  out.stored.notes.push_back("read from the GGUF header: " + std::to_string(out.stored.tensors.size()) + " tensors (" + mix + ")");
  return out;
}

}  // namespace deepfit::planner
