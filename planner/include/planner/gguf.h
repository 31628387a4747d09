// GGUF header reader (magic, version, metadata, tensor infos; never tensor data) and its mapping
// to a ModelSpec plus the file's real per-tensor storage. Every count, length and offset is
// bounds-checked against the file before anything is allocated.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "planner/model_spec.h"
#include "planner/quant.h"

namespace deepfit::planner {

// A metadata value. Arrays keep their element type and length; numeric arrays keep values,
// string arrays only their count (tokenizer vocabularies are not needed).
struct GgufArray {
  std::uint32_t type = 0;
  std::uint64_t length = 0;
  std::vector<std::int64_t> ints;
};
using GgufValue = std::variant<std::uint64_t, std::int64_t, double, bool, std::string, GgufArray>;

struct GgufTensorInfo {
  std::string name;
  std::vector<std::uint64_t> ne;  // ne[0] is the row (innermost) dimension
  std::uint32_t ggml_type = 0;
  std::uint64_t offset = 0;
};

struct GgufHeader {
  std::string path;
  std::uint32_t version = 0;
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensorInfo> tensors;
  std::uint64_t alignment = 32;
  std::uint64_t data_offset = 0;  // where tensor data starts
  std::uint64_t file_bytes = 0;
};

// Throws InputError naming the file, the byte offset and what was expected.
GgufHeader read_gguf_header(const std::string& path);

struct GgufModel {
  ModelSpec model;
  StoredModel stored;  // the file's tensors with their real types and sizes
  Scheme scheme;       // describes the file ("gguf:Q4_K_M")
  std::int64_t file_bytes = 0;  // all shards
  std::int64_t header_bytes = 0;
};

// Reads one file, or every shard of a split file (name-0000N-of-0000M.gguf).
GgufModel read_gguf_model(const std::string& path, const QuantDb& quants);

// llama_ftype id (general.file_type) to its name, e.g. 15 -> "Q4_K_M"; "unknown(N)" otherwise.
std::string gguf_ftype_name(std::uint32_t ftype);

}  // namespace deepfit::planner
