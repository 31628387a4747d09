// A minimal GGUF v3 writer for tests: metadata and tensor infos as the format specifies
// (ggml docs/gguf.md), tensor data as zeros. Lets tests build real files byte for byte.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace deepfit::planner::test {

struct GgufKv {
  std::string key;
  enum class Kind { kU32, kU64, kI32, kF32, kBool, kString, kStringArray, kI32Array } kind = Kind::kU32;
  std::uint64_t u = 0;
  std::int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<std::string> strings;
  std::vector<std::int32_t> ints;
};

struct GgufTensorSpec {
  std::string name;
  std::vector<std::uint64_t> ne;  // ne[0] innermost
  std::uint32_t ggml_type = 0;
  std::uint64_t nbytes = 0;       // data bytes (the writer pads each to the alignment)
};

GgufKv kv_u32(const std::string& k, std::uint32_t v);
GgufKv kv_str(const std::string& k, const std::string& v);
GgufKv kv_strings(const std::string& k, std::vector<std::string> v);

// Serialized file: header, metadata, tensor infos, padding, zero data. Offsets are computed here.
std::string gguf_bytes(const std::vector<GgufKv>& kvs, const std::vector<GgufTensorSpec>& tensors, std::uint32_t alignment = 32);
void write_file(const std::string& path, const std::string& bytes);

}  // namespace deepfit::planner::test
