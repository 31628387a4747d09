// KV-cache sizes (see kv_cache.h). Layouts follow each framework's cache code, recorded in
// data/frameworks/<id>.json.
#include "planner/kv_cache.h"

#include <algorithm>
#include <cmath>

#include "kernels/error.h"

namespace deepfit::planner {

std::int64_t kv_value_bytes(const std::string& dtype, std::int64_t n) {
  if (dtype == "bf16" || dtype == "f16") return 2 * n;
  if (dtype == "fp8") return n;
  if (dtype == "q8_0") return (n + 31) / 32 * 34;  // ggml block_q8_0: fp16 scale + 32 int8
  if (dtype == "q4_0") return (n + 31) / 32 * 18;  // ggml block_q4_0: fp16 scale + 16 bytes
  throw InputError("--kv-dtype: unknown cache dtype '" + dtype + "' (expected bf16, fp16, fp8, q8_0 or q4_0)");
}

std::string normalize_kv_dtype(const std::string& dtype, const Framework& fw) {
  std::string d = dtype == "fp16" || dtype == "f16" ? "f16" : dtype == "fp8_e4m3" ? "fp8" : dtype;
  kv_value_bytes(d, 1);  // validates the name
  if ((d == "q8_0" || d == "q4_0") && fw.id != "llamacpp")
    throw InputError("--kv-dtype: " + d + " is a llama.cpp cache type; " + fw.id + " caches in bf16, fp16 or fp8");
  return d;
}

KvPerToken kv_per_token(const ModelSpec& m, const Framework& fw, const std::string& dtype) {
  KvPerToken kv;
  kv.dtype = dtype;
  kv.block_tokens = m.mla ? fw.kv.mla_block_tokens : fw.kv.block_tokens;
  if (m.mla) {
    // Absorbed MLA caches one latent per token per layer: kv_lora_rank values plus the shared rope key.
    kv.replicated_across_tp = true;
    if (dtype == "fp8" && fw.kv.has_mla_fp8_layout) {
      kv.attention_bytes_per_layer = m.kv_lora_rank * fw.kv.mla_latent_value_bytes +
                                     (m.kv_lora_rank + 127) / 128 * fw.kv.mla_scale_bytes_per_128 +
                                     m.rope_head_dim * fw.kv.mla_rope_value_bytes;
      kv.layout = "MLA latent " + std::to_string(m.kv_lora_rank) + " fp8 with fp32 scales per 128 + rope " +
                  std::to_string(m.rope_head_dim) + " in 16 bits (" + fw.id + ")";
    } else {
      kv.attention_bytes_per_layer = kv_value_bytes(dtype, m.kv_lora_rank + m.rope_head_dim);
      kv.layout = "MLA latent " + std::to_string(m.kv_lora_rank + m.rope_head_dim) + " values in " + dtype;
    }
    if (m.dsa) {
      if (fw.kv.indexer_value_bytes > 0)
        kv.indexer_bytes_per_layer = m.index_head_dim * fw.kv.indexer_value_bytes +
                                     (m.index_head_dim + 127) / 128 * fw.kv.indexer_scale_bytes_per_128;
      else
        kv.indexer_bytes_per_layer = kv_value_bytes(dtype, m.index_head_dim);
      kv.layout += " + DSA indexer key " + std::to_string(kv.indexer_bytes_per_layer) + " B";
    }
  } else {
    kv.num_kv_heads = m.num_kv_heads;
    kv.attention_bytes_per_layer = 2 * m.num_kv_heads * kv_value_bytes(dtype, m.head_dim);
    kv.layout = "K and V, " + std::to_string(m.num_kv_heads) + " heads x " + std::to_string(m.head_dim) + " in " + dtype;
  }
  for (std::int64_t l = 0; l < m.num_layers; ++l) {
    if (m.layer_is_sliding(l) && fw.kv.sliding_window) ++kv.num_window_layers;
    else ++kv.num_full_layers;
  }
  kv.window_tokens = m.sliding_window;
  return kv;
}

std::int64_t kv_bytes_per_sequence(const KvPerToken& kv, std::int64_t ctx_len, std::int64_t tp, double layer_share) {
  DEEPFIT_ASSERT(ctx_len >= 0 && tp >= 1 && layer_share > 0 && layer_share <= 1, "bad KV query");
  const std::int64_t b = kv.block_tokens;
  const std::int64_t full_tokens = (ctx_len + b - 1) / b * b;
  const std::int64_t window_tokens = std::min(full_tokens, (kv.window_tokens + b - 1) / b * b);
  // GQA heads split over TP ranks; with more ranks than heads each rank keeps one head (replicated).
  double head_share = 1.0;
  if (!kv.replicated_across_tp && kv.num_kv_heads > 0)
    head_share = static_cast<double>(std::max<std::int64_t>(1, kv.num_kv_heads / tp)) / static_cast<double>(kv.num_kv_heads);
  const double per_layer = static_cast<double>(kv.attention_bytes_per_layer) * head_share + static_cast<double>(kv.indexer_bytes_per_layer);
  const double total = per_layer * (static_cast<double>(kv.num_full_layers) * static_cast<double>(full_tokens) +
                                    static_cast<double>(kv.num_window_layers) * static_cast<double>(window_tokens));
  return static_cast<std::int64_t>(std::ceil(total * layer_share));
}

}  // namespace deepfit::planner
