// The memory planner: per-device weights (sharded by the parallel plan, offloaded to host RAM on
// request), KV cache, activation workspace and framework reserve, against a device's capacity;
// solves fits, max concurrency at a context, max context at a concurrency, and the fewest devices.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hwdb/device.h"
#include "planner/framework.h"
#include "planner/kv_cache.h"
#include "planner/model_spec.h"
#include "planner/parallel.h"
#include "planner/quant.h"

namespace deepfit::planner {

struct Offload {
  enum class Kind { kNone, kExperts, kLayers } kind = Kind::kNone;
  std::int64_t num_layers = 0;  // kLayers: layers (and their KV) kept in host RAM
};
Offload parse_offload(const std::string& text);  // none | experts | layers:N
std::string to_string(const Offload& o);

struct FitSetup {
  const ModelSpec* model = nullptr;
  const StoredModel* stored = nullptr;
  const Scheme* scheme = nullptr;
  const hwdb::Device* device = nullptr;  // nullptr: memory needed only, no verdict
  const Framework* framework = nullptr;
  std::int64_t count = 1;
  ParallelPlan parallel;
  std::string kv_dtype;
  Offload offload;
  bool mtp = false;  // load the MTP module (speculative decoding)
};

struct DeviceLoad {
  std::int64_t weights_bytes = 0;     // on the busiest device
  std::int64_t host_bytes = 0;        // weights kept in host RAM (offload)
  std::int64_t activation_bytes = 0;  // estimated workspace of the largest forward pass
  std::int64_t reserve_bytes = 0;     // framework reserve: unused fraction, CUDA graphs, runtime
  std::int64_t capacity_bytes = 0;    // usable device memory (unified memory: the GPU's share)
  double layer_share = 1.0;           // share of the layers' KV the busiest device holds
  std::int64_t kv_budget_bytes = 0;   // capacity - weights - activations - reserve (may be negative)
};

struct Memory {
  std::int64_t weights_bytes = 0, kv_cache_bytes = 0, activation_bytes = 0, overhead_bytes = 0;
  std::int64_t total_bytes_per_device = 0;
  std::optional<std::int64_t> capacity_bytes_per_device;
};

// Serving speed and cost at one concurrency (filled by `predict`; absent in `fit`).
struct Speed {
  std::optional<double> decode_tok_s_per_user, output_tok_s_total, output_tok_s_per_gpu, prefill_tok_s_total;
  std::optional<double> ttft_ms, tpot_ms, cost_usd_per_mtok_output, cost_usd_per_mtok_input, energy_usd_per_mtok_output;
  std::string bottleneck;
  std::string basis;
  std::optional<double> expected_error_pct;
  std::int64_t served_concurrency = 0;  // concurrency actually running (capped by KV capacity)
};

struct FitResult {
  std::int64_t concurrency = 1;
  std::int64_t context_tokens = 0;
  std::optional<bool> fits;
  Memory memory;
  std::optional<std::int64_t> headroom_bytes;
  std::optional<std::int64_t> max_concurrency;     // at this context
  std::optional<std::int64_t> max_context_tokens;  // at this concurrency
  std::int64_t host_bytes = 0;
  std::optional<Speed> speed;
  std::vector<std::string> notes;
};

// Share of a tensor that one device of its pipeline stage holds (and reads) under the plan.
double device_share(const Tensor& t, const ModelSpec& m, const ParallelPlan& p);

DeviceLoad device_load(const FitSetup& s);
KvPerToken kv_of(const FitSetup& s);
FitResult fit_one(const FitSetup& s, const DeviceLoad& load, const KvPerToken& kv, std::int64_t concurrency,
                  std::int64_t context_tokens);

// Fewest devices (1..max_count) on which (concurrency, context) fits with the framework's default
// split; nullopt when none up to max_count does.
std::optional<std::int64_t> min_devices(FitSetup s, std::int64_t concurrency, std::int64_t context_tokens,
                                        std::int64_t max_count);

}  // namespace deepfit::planner
