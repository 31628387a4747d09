// A model's architecture as deepfit needs it, read from a Hugging Face config.json (shipped in
// data/models/<id>.json with a "deepfit" metadata object, or any user file), and its tensor
// inventory: every weight tensor with shape and role. Parameter counts derive from the inventory.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace deepfit::planner {

enum class Arch { kDeepseekV3, kDeepseekV32, kLlama, kMistral, kQwen2, kQwen3, kQwen3Moe, kMixtral, kGptOss };

struct ModelSpec {
  std::string id;            // data id, or the file path for a user config
  std::string display_name;
  std::string hf_architecture;  // config "architectures"[0]
  std::string source;
  Arch arch = Arch::kLlama;

  std::int64_t hidden_dim = 0;
  std::int64_t num_layers = 0;
  std::int64_t num_heads = 0;
  std::int64_t num_kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t vocab_size = 0;
  std::int64_t ffn_dim = 0;  // dense FFN intermediate size
  std::int64_t max_ctx_len = 0;
  bool tie_embeddings = false;
  bool qkv_bias = false;      // Qwen2, gpt-oss
  bool qk_norm = false;       // Qwen3: per-head RMSNorm on q and k

  // Mixture of experts (num_experts == 0: dense model).
  std::int64_t num_experts = 0;
  std::int64_t top_k = 0;
  std::int64_t num_shared_experts = 0;
  std::int64_t moe_ffn_dim = 0;
  std::vector<bool> layer_moe;        // per layer: routed experts (true) or a dense FFN

  // Multi-head latent attention (DeepSeek).
  bool mla = false;
  std::int64_t q_lora_rank = 0;  // 0: queries projected directly
  std::int64_t kv_lora_rank = 0;
  std::int64_t rope_head_dim = 0;
  std::int64_t nope_head_dim = 0;
  std::int64_t v_head_dim = 0;

  // DeepSeek Sparse Attention lightning indexer.
  bool dsa = false;
  std::int64_t index_num_heads = 0;
  std::int64_t index_head_dim = 0;
  std::int64_t index_top_k = 0;

  std::int64_t num_mtp_layers = 0;  // multi-token-prediction modules shipped with the checkpoint

  // DeepSeek router and RoPE settings, read from DeepSeek configs where present (the host decode
  // loop runs them; the memory and speed models do not need them). nullopt: absent from the config.
  struct RouterConfig {
    std::int64_t num_groups = 1;       // n_group
    std::int64_t num_groups_kept = 1;  // topk_group
    bool normalize = true;             // norm_topk_prob
    double routed_scaling_factor = 1;  // routed_scaling_factor
  };
  std::optional<RouterConfig> router;
  struct RopeConfig {
    double rope_theta = 0;
    double factor = 1;  // rope_scaling.factor; 1 without YaRN
    std::int64_t original_max_position_embeddings = 0;
    double beta_fast = 0, beta_slow = 0, mscale = 0, mscale_all_dim = 0;
  };
  std::optional<RopeConfig> rope;
  std::optional<double> rms_norm_eps;

  // Sliding-window attention: window length and which layers use it (empty: none).
  std::int64_t sliding_window = 0;
  std::vector<bool> layer_sliding;

  std::string released_format;  // scheme id of the published checkpoint: fp8, bf16, mxfp4, ...
  std::optional<double> params_as_released;  // publisher's headline figure, when stated
  std::string release_date;
  std::string hf_repo;

  bool is_moe() const { return num_experts > 0; }
  bool layer_is_moe(std::int64_t layer) const {
    return is_moe() && layer_moe[static_cast<std::size_t>(layer)];
  }
  std::int64_t num_moe_layers() const;
  bool layer_is_sliding(std::int64_t layer) const {
    return !layer_sliding.empty() && layer_sliding[static_cast<std::size_t>(layer)];
  }
};

const char* to_string(Arch arch);
std::string supported_architectures();  // for error messages

// Parses a config.json object. `origin` names the file in messages; `with_metadata` requires the
// "deepfit" metadata object (shipped files), otherwise it is optional.
ModelSpec model_from_config(const nlohmann::json& config, const std::string& origin, bool with_metadata);

enum class TensorRole {
  kEmbedding, kHead, kNorm, kAttention, kIndexer, kDenseFfn, kRoutedExpert, kSharedExpert, kRouter, kMtp
};
const char* to_string(TensorRole role);

// One weight tensor. shape is outermost first; the last dimension is the row (the dimension a
// block format runs along, GGUF's ne[0]). Routed-expert tensors are stacked: shape[0] = experts.
struct Tensor {
  std::string name;  // GGUF-style name: blk.3.ffn_gate_exps.weight
  std::vector<std::int64_t> shape;
  TensorRole role = TensorRole::kAttention;
  std::int64_t layer = -1;  // -1 outside the blocks
  bool mtp = false;         // part of the multi-token-prediction module

  std::int64_t num_elements() const;
  std::int64_t row_len() const { return shape.back(); }
  std::int64_t num_rows() const { return num_elements() / row_len(); }
  bool is_matrix() const { return shape.size() >= 2; }
};

// Every weight tensor of the model, MTP module included (flagged). Names follow llama.cpp's GGUF
// naming so quantization rules and real GGUF files line up.
std::vector<Tensor> tensor_inventory(const ModelSpec& m);

struct ParamCounts {
  std::int64_t total = 0;            // everything stored, MTP included
  std::int64_t main = 0;             // without the MTP module
  std::int64_t mtp = 0;
  std::int64_t active_per_token = 0; // main model: all but the embedding table and unselected experts
};
ParamCounts count_params(const ModelSpec& m, const std::vector<Tensor>& tensors);

}  // namespace deepfit::planner
