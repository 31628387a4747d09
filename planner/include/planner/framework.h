// Serving-framework profiles (data/frameworks/<id>.json): the memory a framework reserves and
// how it lays out the KV cache. Every number carries its source in the file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace deepfit::planner {

struct FrameworkMemory {
  std::string fraction_of;       // "total", "free_after_weights" or "none"
  double memory_fraction = 1.0;  // share of device memory (or of free memory) the framework uses
  std::int64_t margin_bytes = 0;           // free memory kept back (llama.cpp --fit)
  std::int64_t activation_tokens = 0;      // tokens in the largest forward pass (activation peak)
  std::int64_t max_num_seqs = 1;           // sequences sampled at once (logits buffer)
  std::int64_t cuda_graph_bytes = 0;
  std::int64_t non_torch_bytes = 0;        // context, communication and library workspaces
};

struct FrameworkKv {
  std::int64_t block_tokens = 1;      // paged-cache block size (tokens)
  std::int64_t mla_block_tokens = 1;  // block size for MLA models
  std::string default_dtype;          // KV dtype when the user gives none
  std::string default_dtype_dsa;      // ... for DeepSeek Sparse Attention models
  bool has_mla_fp8_layout = false;    // latent fp8 with per-128 scales and a 16-bit rope part
  std::int64_t mla_latent_value_bytes = 0, mla_scale_bytes_per_128 = 0, mla_rope_value_bytes = 0;
  std::int64_t indexer_value_bytes = 0;  // 0: indexer keys in the KV cache dtype
  std::int64_t indexer_scale_bytes_per_128 = 0;
  bool sliding_window = true;  // whether sliding-window layers keep only the window
};

// How the framework's kernels compute; optional in the profile.
struct FrameworkCompute {
  // 16-bit GEMMs accumulate in FP16 (cuBLAS CUBLAS_COMPUTE_16F): on GPUs whose record has an
  // `fp16_acc16` rate (GeForce), that rate is the peak.
  bool fp16_accumulate = false;
  // Batches of at least this many tokens whose weights sit in host RAM are multiplied on the GPU,
  // the weights copied over PCIe for every micro-batch (llama.cpp's op offload); 0: the host CPU
  // computes them.
  std::int64_t offload_min_batch = 0;
};

struct Framework {
  std::string id;
  std::string name;
  std::string version_basis;
  FrameworkMemory memory;
  FrameworkKv kv;
  FrameworkCompute compute;
  std::map<std::string, std::string> sources;
  std::vector<std::string> notes;
};

Framework load_framework_file(const std::string& path);

class FrameworkDb {
 public:
  static FrameworkDb load_dir(const std::string& dir);
  const Framework& get(const std::string& id) const;  // unknown: InputError with close ids
  const std::vector<Framework>& all() const { return frameworks_; }

 private:
  std::vector<Framework> frameworks_;
};

}  // namespace deepfit::planner
