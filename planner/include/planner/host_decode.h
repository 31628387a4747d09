// The host decode loop: one decode step of a DeepSeek-V3/V3.2-structured model (MLA attention, the
// DSA indexer and sparse MLA where the config has them, routed and shared experts, dense FFN
// layers, LM head) with seeded random weights, run by the kernels of kernels/ on a pinned thread
// pool, with a time per op. Scaled by layers and routed experts so that variants fit in memory.
// Other attention types (GQA, sliding windows) have no host kernels yet and are refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "planner/model_spec.h"
#include "planner/thread_pool.h"

namespace deepfit::planner {

struct HostDecodeOptions {
  std::int64_t layers = 0;        // 0: the config's; else the first `layers` (dense/MoE pattern kept)
  std::int64_t experts = 0;       // 0: the config's routed experts; else this many (>= top_k)
  std::string quant = "q4_k";     // matrices: bf16, q8_0, q4_k, fp8 (128x128 block scales)
  std::string kv_cache = "bf16";  // MLA latent cache: bf16 or fp8 (FlashMLA's 656-byte rows)
  std::int64_t batch = 1;         // sequences decoded together
  std::int64_t context = 4096;    // tokens already cached per sequence
  int steps = 5;                  // timed steps after one untimed warm-up step
  std::uint64_t seed = 1;
  double max_memory_fraction = 0.8;  // refuse a variant needing more of physical memory than this
};

// The model as the loop runs it: the config with `layers` and `experts` applied (num_experts,
// layer_moe and num_layers changed; the MTP module is not run).
ModelSpec scale_for_host(const ModelSpec& m, std::int64_t layers, std::int64_t experts);

struct HostOpTime {
  std::string op;       // e.g. "mla_decode", "expert_ffn", "q_b_proj"
  double ms = 0;        // per step, summed over the layers (median over the timed steps)
  std::int64_t calls = 0;  // per step
  double bytes = 0, flops = 0;  // declared work per step (kernels' work_of)
};

struct HostDecodeResult {
  ModelSpec model;  // as run (scale_for_host)
  HostDecodeOptions options;
  int threads = 1;
  std::vector<double> step_ms;  // each timed step, wall clock
  double step_ms_median = 0;
  double decode_tok_s = 0;      // batch / median step time: tokens per second over the batch
  std::vector<HostOpTime> ops;  // in first-call order
  double weights_bytes = 0;     // allocated weights (all layers, embedding, head)
  double kv_cache_bytes = 0;    // latent cache (and indexer keys) of all sequences and layers
  double bytes_per_step = 0, flops_per_step = 0;  // declared work of one step, all ops
  std::vector<std::string> notes;
};

// Builds the scaled model, fills weights and caches from `seed`, runs one warm-up and `steps`
// timed decode steps on `pool`. InputError: a non-MLA config, a missing router/RoPE setting, an
// unknown quant or cache format, shapes a format cannot hold, or a variant that needs more memory
// than max_memory_fraction of this host's (with the figure and a --layers/--experts hint).
HostDecodeResult run_host_decode(const ModelSpec& model, const HostDecodeOptions& opt, ThreadPool& pool);

// The same step with every op's reference kernel (double accumulation) on the calling thread, and
// the fast step on `pool`, from the same weights, caches and tokens; returns both final logits
// [batch][vocab] (for tests: the whole step against its specification). With DSA top-k selection,
// the fast step counts how many of its chosen positions the reference also chose, then attends the
// reference's positions: near-ties in the indexer scores may flip a choice, which would otherwise
// make the two steps attend different tokens.
struct DecodeLogits {
  std::vector<float> fast, reference;
  std::int64_t same_positions = 0, total_positions = 0;
};
DecodeLogits host_decode_logits(const ModelSpec& model, const HostDecodeOptions& opt, ThreadPool& pool);

nlohmann::json host_decode_to_json(const HostDecodeResult& r);

}  // namespace deepfit::planner
