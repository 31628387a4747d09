// `deepfit fit` as a pure function: selectors in, one record per quantization out. Defaults
// (framework, KV dtype, split) are chosen as a user of that hardware and format would, and every
// choice is stated in the record.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "planner/capacity.h"
#include "planner/catalog.h"

namespace deepfit::planner {

struct FitOptions {
  std::string model;                 // id or config.json path (ignored when `gguf` is set)
  std::optional<std::string> device;
  std::string count = "1";           // N or "auto"
  std::vector<std::string> quants;   // empty: a standard list
  std::optional<std::string> kv_dtype;
  std::int64_t context_tokens = 4096;
  std::vector<std::int64_t> concurrency = {1};
  std::optional<std::string> framework;
  std::optional<std::string> parallel;
  std::string offload = "none";
  bool mtp = false;
  std::int64_t max_count = 1024;     // search limit for --count auto and "needs N devices"
};

struct FitRecord {
  std::string model_id, model_name, quant, framework, kv_dtype, kv_layout;
  std::optional<std::string> device;
  std::int64_t count = 1;
  ParallelPlan parallel;
  Offload offload;
  ParamCounts params;
  std::int64_t weights_bytes = 0;         // whole model as stored by this format
  std::int64_t weights_loaded_bytes = 0;  // what is loaded (MTP only with --mtp)
  std::int64_t kv_bytes_per_token = 0;    // all layers, one token
  DeviceLoad load;
  std::optional<std::int64_t> min_devices;
  bool count_was_auto = false;
  std::vector<FitResult> results;
  std::vector<std::string> notes;
};

// Fills in defaults and evaluates every (quant, concurrency). InputError on bad selectors.
std::vector<FitRecord> plan_fit(const Catalog& cat, const FitOptions& opt, const hwdb::Device* device);

// The same for a model whose tensors and types are known (a GGUF header).
FitRecord plan_fit_stored(const Catalog& cat, const FitOptions& opt, const hwdb::Device* device, const ModelSpec& m,
                          const StoredModel& stored, const Scheme& scheme);

std::string default_framework(const Scheme& s, const hwdb::Device* device);
std::vector<std::string> default_quants(const ModelSpec& m);

}  // namespace deepfit::planner
