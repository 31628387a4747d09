// config.json -> ModelSpec. Fields follow Hugging Face's config classes; where a key is optional in
// Hugging Face, its documented default applies (noted at each use).
#include "planner/model_spec.h"

#include <algorithm>

#include "hwdb/json_check.h"
#include "kernels/error.h"

namespace deepfit::planner {
namespace {

using hwdb::Json;
using hwdb::JsonWhere;
using hwdb::get_int;
using hwdb::get_int_opt;
using hwdb::get_string;
using hwdb::json_fail;

constexpr std::int64_t kMaxDim = 1 << 24;

struct ArchName {
  const char* hf;
  Arch arch;
};
constexpr ArchName kArchs[] = {
    {"DeepseekV3ForCausalLM", Arch::kDeepseekV3}, {"DeepseekV32ForCausalLM", Arch::kDeepseekV32},
    {"LlamaForCausalLM", Arch::kLlama},           {"MistralForCausalLM", Arch::kMistral},
    {"Qwen2ForCausalLM", Arch::kQwen2},           {"Qwen3ForCausalLM", Arch::kQwen3},
    {"Qwen3MoeForCausalLM", Arch::kQwen3Moe},     {"MixtralForCausalLM", Arch::kMixtral},
    {"GptOssForCausalLM", Arch::kGptOss}};

bool has(const Json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

std::int64_t dim(const Json& j, const JsonWhere& w, const char* key) { return get_int(j, w, key, 1, kMaxDim, ""); }

void read_metadata(const Json& meta, const JsonWhere& w, ModelSpec& m) {
  hwdb::check_keys(meta, w, {"id", "display_name", "hf_repo", "release_date", "params_as_released", "source"});
  m.id = get_string(meta, w, "id");
  m.display_name = get_string(meta, w, "display_name");
  m.hf_repo = get_string(meta, w, "hf_repo");
  m.release_date = get_string(meta, w, "release_date");
  m.source = get_string(meta, w, "source");
  m.params_as_released = hwdb::get_number_or_null(meta, w, "params_as_released", 1e6, 1e14, "parameters");
}

void read_deepseek(const Json& c, const JsonWhere& w, ModelSpec& m) {
  m.mla = true;
  m.q_lora_rank = has(c, "q_lora_rank") ? dim(c, w, "q_lora_rank") : 0;
  m.kv_lora_rank = dim(c, w, "kv_lora_rank");
  m.rope_head_dim = dim(c, w, "qk_rope_head_dim");
  m.nope_head_dim = dim(c, w, "qk_nope_head_dim");
  m.v_head_dim = dim(c, w, "v_head_dim");
  m.head_dim = m.nope_head_dim + m.rope_head_dim;
  m.num_kv_heads = m.num_heads;  // MLA: every head has its own (decompressed) key and value
  m.num_experts = get_int(c, w, "n_routed_experts", 1, 65536, "experts");
  m.top_k = get_int(c, w, "num_experts_per_tok", 1, m.num_experts, "experts");
  m.num_shared_experts = get_int(c, w, "n_shared_experts", 0, 64, "experts");
  m.moe_ffn_dim = dim(c, w, "moe_intermediate_size");
  std::int64_t first_dense = get_int(c, w, "first_k_dense_replace", 0, m.num_layers, "layers");
  std::int64_t freq = has(c, "moe_layer_freq") ? get_int(c, w, "moe_layer_freq", 1, m.num_layers, "") : 1;
  for (std::int64_t l = 0; l < m.num_layers; ++l) m.layer_moe.push_back(l >= first_dense && l % freq == 0);
  m.num_mtp_layers = has(c, "num_nextn_predict_layers") ? get_int(c, w, "num_nextn_predict_layers", 0, 16, "layers") : 0;
  if (has(c, "n_group") && has(c, "topk_group") && has(c, "routed_scaling_factor")) {
    ModelSpec::RouterConfig r;
    r.num_groups = get_int(c, w, "n_group", 1, m.num_experts, "groups");
    r.num_groups_kept = get_int(c, w, "topk_group", 1, r.num_groups, "groups");
    r.normalize = has(c, "norm_topk_prob") ? hwdb::get_bool(c, w, "norm_topk_prob") : false;
    r.routed_scaling_factor = hwdb::get_number(c, w, "routed_scaling_factor", 1e-6, 1e6, "");
    if (m.num_experts % r.num_groups != 0) json_fail(w / "n_group", "must divide n_routed_experts");
    m.router = r;
  }
  if (has(c, "rope_theta")) {
    ModelSpec::RopeConfig r;
    r.rope_theta = hwdb::get_number(c, w, "rope_theta", 1.0 + 1e-9, 1e12, "");
    if (has(c, "rope_scaling") && c.at("rope_scaling").is_object()) {
      const Json& s = c.at("rope_scaling");
      const JsonWhere sw = w / "rope_scaling";
      r.factor = hwdb::get_number(s, sw, "factor", 1.0, 1e6, "");
      r.original_max_position_embeddings = get_int(s, sw, "original_max_position_embeddings", 1, kMaxDim, "tokens");
      r.beta_fast = hwdb::get_number(s, sw, "beta_fast", 0, 1e6, "");
      r.beta_slow = hwdb::get_number(s, sw, "beta_slow", 0, 1e6, "");
      r.mscale = hwdb::get_number(s, sw, "mscale", 0, 1e6, "");
      r.mscale_all_dim = hwdb::get_number(s, sw, "mscale_all_dim", 0, 1e6, "");
    }
    m.rope = r;
  }
  if (has(c, "rms_norm_eps")) m.rms_norm_eps = hwdb::get_number(c, w, "rms_norm_eps", 1e-12, 1.0, "");
  if (m.arch == Arch::kDeepseekV32) {
    m.dsa = true;
    m.index_num_heads = dim(c, w, "index_n_heads");
    m.index_head_dim = dim(c, w, "index_head_dim");
    m.index_top_k = dim(c, w, "index_topk");
    if (m.q_lora_rank == 0) json_fail(w / "q_lora_rank", "DeepSeek-V3.2's indexer projects from the q LoRA latent; q_lora_rank is required");
  }
}

void read_sliding(const Json& c, const JsonWhere& w, ModelSpec& m) {
  if (m.arch == Arch::kGptOss) {
    m.sliding_window = dim(c, w, "sliding_window");
    const Json& lt = hwdb::required(c, w, "layer_types");
    if (!lt.is_array() || static_cast<std::int64_t>(lt.size()) != m.num_layers)
      json_fail(w / "layer_types", "expected an array of " + std::to_string(m.num_layers) + " layer types");
    for (std::size_t i = 0; i < lt.size(); ++i) {
      std::string t = lt[i].is_string() ? lt[i].get<std::string>() : "";
      if (t != "sliding_attention" && t != "full_attention")
        json_fail(w / "layer_types" / i, "expected \"sliding_attention\" or \"full_attention\"");
      m.layer_sliding.push_back(t == "sliding_attention");
    }
    return;
  }
  // Qwen2/Qwen3 ship a sliding_window value that is off unless use_sliding_window is true;
  // Mistral applies its window to every layer.
  bool on = m.arch == Arch::kMistral ||
            ((m.arch == Arch::kQwen2 || m.arch == Arch::kQwen3 || m.arch == Arch::kQwen3Moe) &&
             has(c, "use_sliding_window") && c.at("use_sliding_window").is_boolean() &&
             c.at("use_sliding_window").get<bool>());
  if (!on || !has(c, "sliding_window")) return;
  m.sliding_window = dim(c, w, "sliding_window");
  std::int64_t from = 0;  // Qwen: layers >= max_window_layers use the window
  if (m.arch != Arch::kMistral && has(c, "max_window_layers"))
    from = get_int(c, w, "max_window_layers", 0, m.num_layers, "layers");
  for (std::int64_t l = 0; l < m.num_layers; ++l) m.layer_sliding.push_back(l >= from);
}

void read_moe(const Json& c, const JsonWhere& w, ModelSpec& m) {
  if (m.arch == Arch::kMixtral || m.arch == Arch::kGptOss) {
    m.num_experts = get_int(c, w, "num_local_experts", 1, 65536, "experts");
    const char* k = (m.arch == Arch::kGptOss && !c.contains("num_experts_per_tok")) ? "experts_per_token" : "num_experts_per_tok";
    m.top_k = get_int(c, w, k, 1, m.num_experts, "experts");
    m.moe_ffn_dim = dim(c, w, "intermediate_size");
    m.layer_moe.assign(static_cast<std::size_t>(m.num_layers), true);
  } else if (m.arch == Arch::kQwen3Moe) {
    m.num_experts = get_int(c, w, "num_experts", 1, 65536, "experts");
    m.top_k = get_int(c, w, "num_experts_per_tok", 1, m.num_experts, "experts");
    m.moe_ffn_dim = dim(c, w, "moe_intermediate_size");
    std::int64_t step = has(c, "decoder_sparse_step") ? get_int(c, w, "decoder_sparse_step", 1, m.num_layers, "") : 1;
    std::vector<std::int64_t> dense_only;
    if (has(c, "mlp_only_layers")) {
      const Json& a = c.at("mlp_only_layers");
      if (!a.is_array()) json_fail(w / "mlp_only_layers", "expected an array of layer indices");
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (!a[i].is_number_integer()) json_fail(w / "mlp_only_layers" / i, "expected a layer index");
        dense_only.push_back(a[i].get<std::int64_t>());
      }
    }
    for (std::int64_t l = 0; l < m.num_layers; ++l)
      m.layer_moe.push_back(std::find(dense_only.begin(), dense_only.end(), l) == dense_only.end() && (l + 1) % step == 0);
  }
}

std::string released_format_of(const Json& c) {
  if (c.contains("quantization_config") && c.at("quantization_config").is_object()) {
    const Json& q = c.at("quantization_config");
    if (q.contains("quant_method") && q.at("quant_method").is_string()) {
      std::string method = q.at("quant_method").get<std::string>();
      if (method == "fp8" || method == "mxfp4") return method;
      return "quantized:" + method;
    }
  }
  std::string dtype = c.contains("torch_dtype") && c.at("torch_dtype").is_string() ? c.at("torch_dtype").get<std::string>() : "";
  if (dtype == "float16") return "fp16";
  if (dtype == "float32") return "f32";
  return "bf16";
}

}  // namespace

const char* to_string(Arch arch) {
  for (const auto& a : kArchs)
    if (a.arch == arch) return a.hf;
  return "?";
}

std::string supported_architectures() {
  std::string s;
  for (const auto& a : kArchs) s += (s.empty() ? "" : ", ") + std::string(a.hf);
  return s;
}

std::int64_t ModelSpec::num_moe_layers() const {
  return std::count(layer_moe.begin(), layer_moe.end(), true);
}

ModelSpec model_from_config(const Json& c, const std::string& origin, bool with_metadata) {
  JsonWhere w{origin, ""};
  hwdb::require_object(c, w);
  ModelSpec m;
  m.id = origin;
  if (with_metadata || c.contains("deepfit")) read_metadata(hwdb::required(c, w, "deepfit"), w / "deepfit", m);

  const Json& archs = hwdb::required(c, w, "architectures");
  if (!archs.is_array() || archs.empty() || !archs[0].is_string())
    json_fail(w / "architectures", "expected a non-empty array of architecture names");
  m.hf_architecture = archs[0].get<std::string>();
  bool known = false;
  for (const auto& a : kArchs)
    if (m.hf_architecture == a.hf) {
      m.arch = a.arch;
      known = true;
    }
  if (!known)
    json_fail(w / "architectures" / std::size_t{0},
              "unsupported architecture '" + m.hf_architecture + "' (supported: " + supported_architectures() + ")");
  if (m.display_name.empty()) m.display_name = m.hf_architecture;

  m.hidden_dim = dim(c, w, "hidden_size");
  m.num_layers = get_int(c, w, "num_hidden_layers", 1, 4096, "layers");
  m.num_heads = get_int(c, w, "num_attention_heads", 1, 65536, "heads");
  // Hugging Face default: num_key_value_heads = num_attention_heads (plain MHA).
  m.num_kv_heads = has(c, "num_key_value_heads") ? get_int(c, w, "num_key_value_heads", 1, m.num_heads, "heads") : m.num_heads;
  if (m.num_heads % m.num_kv_heads != 0)
    json_fail(w / "num_key_value_heads", "must divide num_attention_heads (" + std::to_string(m.num_heads) + ")");
  m.head_dim = has(c, "head_dim") ? dim(c, w, "head_dim") : m.hidden_dim / m.num_heads;
  m.vocab_size = dim(c, w, "vocab_size");
  m.ffn_dim = dim(c, w, "intermediate_size");
  m.max_ctx_len = get_int(c, w, "max_position_embeddings", 1, 1LL << 26, "tokens");
  // Hugging Face default for these model classes: untied embeddings.
  m.tie_embeddings = has(c, "tie_word_embeddings") && hwdb::get_bool(c, w, "tie_word_embeddings");
  m.qkv_bias = m.arch == Arch::kQwen2 || m.arch == Arch::kGptOss ||
               (has(c, "attention_bias") && c.at("attention_bias").is_boolean() && c.at("attention_bias").get<bool>());
  m.qk_norm = m.arch == Arch::kQwen3 || m.arch == Arch::kQwen3Moe;
  m.released_format = released_format_of(c);

  if (m.arch == Arch::kDeepseekV3 || m.arch == Arch::kDeepseekV32) {
    read_deepseek(c, w, m);
  } else {
    read_moe(c, w, m);
    read_sliding(c, w, m);
  }
  if (m.layer_moe.empty()) m.layer_moe.assign(static_cast<std::size_t>(m.num_layers), false);
  // The scaled-rope context (YaRN etc.) is what the model accepts; max_position_embeddings already
  // states it in every shipped config, so no factor is applied here.
  return m;
}

std::int64_t Tensor::num_elements() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

const char* to_string(TensorRole role) {
  switch (role) {
    case TensorRole::kEmbedding: return "embedding";
    case TensorRole::kHead: return "head";
    case TensorRole::kNorm: return "norm";
    case TensorRole::kAttention: return "attention";
    case TensorRole::kIndexer: return "indexer";
    case TensorRole::kDenseFfn: return "dense_ffn";
    case TensorRole::kRoutedExpert: return "routed_expert";
    case TensorRole::kSharedExpert: return "shared_expert";
    case TensorRole::kRouter: return "router";
    case TensorRole::kMtp: return "mtp";
  }
  return "?";
}

}  // namespace deepfit::planner
