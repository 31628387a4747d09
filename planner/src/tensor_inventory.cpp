// Tensor inventory per architecture (the shapes of Hugging Face's modeling code, named as
// llama.cpp names them in GGUF files) and the parameter counts derived from it.
#include <string>

#include "kernels/error.h"
#include "planner/model_spec.h"

namespace deepfit::planner {
namespace {

using Shape = std::vector<std::int64_t>;

class Builder {
 public:
  explicit Builder(std::vector<Tensor>& out) : out_(out) {}
  void add(std::string name, Shape shape, TensorRole role, std::int64_t layer = -1) {
    DEEPFIT_ASSERT(!shape.empty(), "tensor without shape: " + name);
    for (auto d : shape) DEEPFIT_ASSERT(d > 0, "non-positive dimension in " + name);
    out_.push_back(Tensor{std::move(name), std::move(shape), role, layer, mtp_});
  }
  void set_mtp(bool mtp) { mtp_ = mtp; }

 private:
  std::vector<Tensor>& out_;
  bool mtp_ = false;
};

std::string blk(std::int64_t layer, const char* what) { return "blk." + std::to_string(layer) + "." + what; }

// MLA attention (DeepSeek-V3 modeling: q_a/q_b LoRA, kv_a with the shared rope key, kv_b up-projection).
void add_mla(Builder& b, const ModelSpec& m, std::int64_t l) {
  const std::int64_t H = m.hidden_dim, nh = m.num_heads, qk = m.nope_head_dim + m.rope_head_dim;
  if (m.q_lora_rank > 0) {
    b.add(blk(l, "attn_q_a.weight"), {m.q_lora_rank, H}, TensorRole::kAttention, l);
    b.add(blk(l, "attn_q_a_norm.weight"), {m.q_lora_rank}, TensorRole::kNorm, l);
    b.add(blk(l, "attn_q_b.weight"), {nh * qk, m.q_lora_rank}, TensorRole::kAttention, l);
  } else {
    b.add(blk(l, "attn_q.weight"), {nh * qk, H}, TensorRole::kAttention, l);
  }
  b.add(blk(l, "attn_kv_a_mqa.weight"), {m.kv_lora_rank + m.rope_head_dim, H}, TensorRole::kAttention, l);
  b.add(blk(l, "attn_kv_a_norm.weight"), {m.kv_lora_rank}, TensorRole::kNorm, l);
  b.add(blk(l, "attn_kv_b.weight"), {nh * (m.nope_head_dim + m.v_head_dim), m.kv_lora_rank}, TensorRole::kAttention, l);
  b.add(blk(l, "attn_output.weight"), {H, nh * m.v_head_dim}, TensorRole::kAttention, l);
  if (m.dsa) {
    // Lightning indexer (DeepSeek-V3.2 inference/model.py Indexer): wq_b from the q latent, one
    // shared key head wk with a LayerNorm (weight and bias), and per-head weights_proj.
    b.add(blk(l, "indexer.attn_q_b.weight"), {m.index_num_heads * m.index_head_dim, m.q_lora_rank}, TensorRole::kIndexer, l);
    b.add(blk(l, "indexer.attn_k.weight"), {m.index_head_dim, H}, TensorRole::kIndexer, l);
    b.add(blk(l, "indexer.k_norm.weight"), {m.index_head_dim}, TensorRole::kNorm, l);
    b.add(blk(l, "indexer.k_norm.bias"), {m.index_head_dim}, TensorRole::kNorm, l);
    b.add(blk(l, "indexer.proj.weight"), {m.index_num_heads, H}, TensorRole::kIndexer, l);
  }
}

void add_gqa(Builder& b, const ModelSpec& m, std::int64_t l) {
  const std::int64_t H = m.hidden_dim, q = m.num_heads * m.head_dim, kv = m.num_kv_heads * m.head_dim;
  b.add(blk(l, "attn_q.weight"), {q, H}, TensorRole::kAttention, l);
  b.add(blk(l, "attn_k.weight"), {kv, H}, TensorRole::kAttention, l);
  b.add(blk(l, "attn_v.weight"), {kv, H}, TensorRole::kAttention, l);
  if (m.qkv_bias) {
    b.add(blk(l, "attn_q.bias"), {q}, TensorRole::kAttention, l);
    b.add(blk(l, "attn_k.bias"), {kv}, TensorRole::kAttention, l);
    b.add(blk(l, "attn_v.bias"), {kv}, TensorRole::kAttention, l);
  }
  if (m.qk_norm) {
    b.add(blk(l, "attn_q_norm.weight"), {m.head_dim}, TensorRole::kNorm, l);
    b.add(blk(l, "attn_k_norm.weight"), {m.head_dim}, TensorRole::kNorm, l);
  }
  b.add(blk(l, "attn_output.weight"), {H, q}, TensorRole::kAttention, l);
  if (m.arch == Arch::kGptOss) {
    b.add(blk(l, "attn_output.bias"), {H}, TensorRole::kAttention, l);
    b.add(blk(l, "attn_sinks.weight"), {m.num_heads}, TensorRole::kAttention, l);
  }
}

void add_ffn(Builder& b, const ModelSpec& m, std::int64_t l) {
  const std::int64_t H = m.hidden_dim;
  if (!m.layer_is_moe(l)) {
    b.add(blk(l, "ffn_gate.weight"), {m.ffn_dim, H}, TensorRole::kDenseFfn, l);
    b.add(blk(l, "ffn_up.weight"), {m.ffn_dim, H}, TensorRole::kDenseFfn, l);
    b.add(blk(l, "ffn_down.weight"), {H, m.ffn_dim}, TensorRole::kDenseFfn, l);
    return;
  }
  const std::int64_t E = m.num_experts, F = m.moe_ffn_dim;
  b.add(blk(l, "ffn_gate_inp.weight"), {E, H}, TensorRole::kRouter, l);
  if (m.arch == Arch::kDeepseekV3 || m.arch == Arch::kDeepseekV32)
    b.add(blk(l, "exp_probs_b.bias"), {E}, TensorRole::kRouter, l);  // e_score_correction_bias
  if (m.arch == Arch::kGptOss) b.add(blk(l, "ffn_gate_inp.bias"), {E}, TensorRole::kRouter, l);
  b.add(blk(l, "ffn_gate_exps.weight"), {E, F, H}, TensorRole::kRoutedExpert, l);
  b.add(blk(l, "ffn_up_exps.weight"), {E, F, H}, TensorRole::kRoutedExpert, l);
  b.add(blk(l, "ffn_down_exps.weight"), {E, H, F}, TensorRole::kRoutedExpert, l);
  if (m.arch == Arch::kGptOss) {
    b.add(blk(l, "ffn_gate_exps.bias"), {E, F}, TensorRole::kRoutedExpert, l);
    b.add(blk(l, "ffn_up_exps.bias"), {E, F}, TensorRole::kRoutedExpert, l);
    b.add(blk(l, "ffn_down_exps.bias"), {E, H}, TensorRole::kRoutedExpert, l);
  }
  if (m.num_shared_experts > 0) {
    const std::int64_t S = m.num_shared_experts * F;  // shared experts are one wider FFN
    b.add(blk(l, "ffn_gate_shexp.weight"), {S, H}, TensorRole::kSharedExpert, l);
    b.add(blk(l, "ffn_up_shexp.weight"), {S, H}, TensorRole::kSharedExpert, l);
    b.add(blk(l, "ffn_down_shexp.weight"), {H, S}, TensorRole::kSharedExpert, l);
  }
}

void add_layer(Builder& b, const ModelSpec& m, std::int64_t l) {
  b.add(blk(l, "attn_norm.weight"), {m.hidden_dim}, TensorRole::kNorm, l);
  if (m.mla) add_mla(b, m, l); else add_gqa(b, m, l);
  // gpt-oss calls it post_attention_norm; the shape and role are the same.
  b.add(blk(l, "ffn_norm.weight"), {m.hidden_dim}, TensorRole::kNorm, l);
  add_ffn(b, m, l);
}

}  // namespace

std::vector<Tensor> tensor_inventory(const ModelSpec& m) {
  std::vector<Tensor> out;
  Builder b(out);
  const std::int64_t H = m.hidden_dim, V = m.vocab_size;
  b.add("token_embd.weight", {V, H}, TensorRole::kEmbedding);
  for (std::int64_t l = 0; l < m.num_layers; ++l) add_layer(b, m, l);
  b.add("output_norm.weight", {H}, TensorRole::kNorm);
  if (!m.tie_embeddings) b.add("output.weight", {V, H}, TensorRole::kHead);

  // DeepSeek's MTP module (modeling: model.layers.61): a full decoder layer plus enorm/hnorm, the
  // eh_proj that mixes embedding and hidden state, and its own copies of embedding and head.
  b.set_mtp(true);
  for (std::int64_t i = 0; i < m.num_mtp_layers; ++i) {
    const std::int64_t l = m.num_layers + i;
    ModelSpec moe_layer = m;
    moe_layer.layer_moe.assign(static_cast<std::size_t>(l + 1), true);  // MTP layers are MoE layers
    add_layer(b, moe_layer, l);
    b.add(blk(l, "nextn.enorm.weight"), {H}, TensorRole::kMtp, l);
    b.add(blk(l, "nextn.hnorm.weight"), {H}, TensorRole::kMtp, l);
    b.add(blk(l, "nextn.eh_proj.weight"), {H, 2 * H}, TensorRole::kMtp, l);
    b.add(blk(l, "nextn.shared_head_norm.weight"), {H}, TensorRole::kMtp, l);
    b.add(blk(l, "nextn.shared_head_head.weight"), {V, H}, TensorRole::kMtp, l);
    b.add(blk(l, "nextn.embed_tokens.weight"), {V, H}, TensorRole::kMtp, l);
  }
  return out;
}

ParamCounts count_params(const ModelSpec& m, const std::vector<Tensor>& tensors) {
  ParamCounts c;
  for (const auto& t : tensors) {
    const std::int64_t n = t.num_elements();
    c.total += n;
    if (t.mtp) {
      c.mtp += n;
      continue;
    }
    c.main += n;
    // A token reads one row of the embedding table; a tied table is also the head and is read whole.
    if (t.role == TensorRole::kEmbedding && !m.tie_embeddings) continue;
    if (t.role == TensorRole::kRoutedExpert) {
      c.active_per_token += n / m.num_experts * m.top_k;  // k of E experts per token
      continue;
    }
    c.active_per_token += n;
  }
  return c;
}

}  // namespace deepfit::planner
