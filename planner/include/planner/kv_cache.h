// KV-cache bytes per token and per sequence for every attention type (MHA/GQA/MQA, sliding
// window, MLA latent, DSA indexer keys), in a cache dtype and a framework's layout.
// The single source of truth for KV sizes: fit, predict and the benchmarks call it.
#pragma once

#include <cstdint>
#include <string>

#include "planner/framework.h"
#include "planner/model_spec.h"

namespace deepfit::planner {

// Cache dtypes: bf16, fp16 (f16), fp8, q8_0, q4_0. Returns bytes for `n` values (q8_0/q4_0 in
// blocks of 32). Unknown names are an InputError naming --kv-dtype.
std::int64_t kv_value_bytes(const std::string& dtype, std::int64_t n);
std::string normalize_kv_dtype(const std::string& dtype, const Framework& fw);

struct KvPerToken {
  std::string dtype;
  std::int64_t attention_bytes_per_layer = 0;  // one token, one layer, whole model (all KV heads)
  std::int64_t indexer_bytes_per_layer = 0;    // DSA lightning-indexer key, one token, one layer
  std::int64_t num_full_layers = 0;            // layers that keep every position
  std::int64_t num_window_layers = 0;          // layers that keep only the sliding window
  std::int64_t window_tokens = 0;
  std::int64_t block_tokens = 1;               // allocation granularity per sequence
  bool replicated_across_tp = false;           // MLA: every TP rank holds the whole latent
  std::int64_t num_kv_heads = 0;               // GQA heads that TP can split
  std::string layout;                          // human-readable: "MLA latent 512 fp8 + 4x fp32 scale + 64 bf16 rope"

  // All layers, one token (what users quote as "KV bytes per token").
  std::int64_t bytes_per_token() const {
    return (attention_bytes_per_layer + indexer_bytes_per_layer) * (num_full_layers + num_window_layers);
  }
};

KvPerToken kv_per_token(const ModelSpec& m, const Framework& fw, const std::string& dtype);

// Bytes one sequence of `ctx_len` tokens holds on one device that owns `layer_share` of the layers
// (fraction in (0,1]) and `tp` tensor-parallel ranks' share of the heads. Rounds to whole blocks.
std::int64_t kv_bytes_per_sequence(const KvPerToken& kv, std::int64_t ctx_len, std::int64_t tp, double layer_share);

}  // namespace deepfit::planner
