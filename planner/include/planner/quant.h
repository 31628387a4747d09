// Storage formats (bits per block, scales) and quantization schemes from data/quants.json, and
// the assignment of a format to every tensor: role rules for Hugging Face-style schemes, and
// llama.cpp's per-tensor rules for GGUF schemes (gguf_rules.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "planner/model_spec.h"

namespace deepfit::planner {

struct StorageFormat {
  std::string id;
  std::int64_t block_weights = 1;  // consecutive weights along a row that share a block
  std::int64_t block_bits = 0;     // bits one block occupies, scales included
  bool row_must_divide = false;    // GGUF: a row must be a whole number of blocks
  std::int64_t tile_rows = 0, tile_cols = 0, tile_scale_bytes = 0;  // 2-D block scales (FP8 128x128)
  std::int64_t row_overhead_bytes = 0;     // per output row (per-channel scales)
  std::int64_t input_overhead_bytes = 0;   // per input column (GPTQ g_idx)
  std::int64_t tensor_overhead_bytes = 0;  // per matrix (global scales)
  std::optional<std::int64_t> ggml_type;
  std::string source;

  double bits_per_weight() const { return static_cast<double>(block_bits) / static_cast<double>(block_weights); }
};

struct TensorOverride {
  std::string suffix;
  std::string format;
};

struct Scheme {
  std::string id;
  std::string kind;  // "roles" or "gguf"
  std::string description;
  // roles: format of matrices and of 1-D tensors, per-role overrides ("role" or "role@mla"), name suffixes
  std::string matrix_format, vector_format;
  std::map<std::string, std::string> role_formats;
  std::vector<TensorOverride> tensor_overrides;
  bool include_mtp = false;
  // gguf: llama.cpp ftype name (MOSTLY_Q4_K_M) and whether the usual imatrix is assumed
  std::string ftype;
  bool imatrix = false;

  bool is_gguf() const { return kind == "gguf"; }
};

class QuantDb {
 public:
  static QuantDb load(const std::string& path);  // strict; InputError with the JSON path
  const StorageFormat& format(const std::string& id) const;
  const StorageFormat* format_by_ggml_type(std::int64_t ggml_type) const;
  const Scheme& scheme(const std::string& id) const;  // unknown: InputError with close ids
  const std::vector<Scheme>& schemes() const { return schemes_; }
  const std::map<std::string, StorageFormat>& formats() const { return formats_; }

 private:
  std::map<std::string, StorageFormat> formats_;
  std::vector<Scheme> schemes_;
};

// Bytes a tensor occupies in a format. Throws InputError when a GGUF row is not whole blocks.
std::int64_t tensor_bytes(const Tensor& t, const StorageFormat& f);

// A tensor as stored: its format and size.
struct StoredTensor {
  Tensor tensor;
  std::string format;
  std::int64_t bytes = 0;
};

struct StoredModel {
  std::vector<StoredTensor> tensors;  // what the checkpoint holds
  std::int64_t bytes = 0;             // sum of tensor bytes (GGUF: with per-tensor alignment padding)
  std::int64_t num_fallbacks = 0;     // GGUF rows that needed a fallback type
  bool gguf = false;
  ParamCounts params;                 // of the model (MTP included), or of what a real file holds
  std::vector<std::string> notes;
};

// The tensors as the scheme stores them. GGUF schemes use the llama.cpp converter's layout
// (kv_b split into k_b/v_b; deepseek2 drops the MTP layer, deepseek32 keeps it).
StoredModel store_model(const ModelSpec& m, const Scheme& s, const QuantDb& q);

// llama.cpp's GGUF tensor list and per-tensor types (gguf_rules.cpp).
std::vector<Tensor> gguf_tensor_layout(const ModelSpec& m);
// The same from an inventory already built (tensor_inventory(m)), which it consumes.
std::vector<Tensor> gguf_tensor_layout(const ModelSpec& m, std::vector<Tensor> inventory);
std::vector<std::string> gguf_tensor_types(const ModelSpec& m, const std::vector<Tensor>& tensors, const Scheme& s,
                                           const QuantDb& q, std::int64_t* num_fallbacks);
std::int64_t gguf_padded(std::int64_t bytes, std::int64_t alignment = 32);

}  // namespace deepfit::planner
