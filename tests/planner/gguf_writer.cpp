// Test-only GGUF writer (see gguf_writer.h).
#include "gguf_writer.h"

#include <cstring>
#include <fstream>

namespace deepfit::planner::test {
namespace {

template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void put_str(std::string& out, const std::string& s) {
  put<std::uint64_t>(out, s.size());
  out += s;
}

}  // namespace

GgufKv kv_u32(const std::string& k, std::uint32_t v) {
  GgufKv kv;
  kv.key = k;
  kv.kind = GgufKv::Kind::kU32;
  kv.u = v;
  return kv;
}
GgufKv kv_str(const std::string& k, const std::string& v) {
  GgufKv kv;
  kv.key = k;
  kv.kind = GgufKv::Kind::kString;
  kv.s = v;
  return kv;
}
GgufKv kv_strings(const std::string& k, std::vector<std::string> v) {
  GgufKv kv;
  kv.key = k;
  kv.kind = GgufKv::Kind::kStringArray;
  kv.strings = std::move(v);
  return kv;
}

std::string gguf_bytes(const std::vector<GgufKv>& kvs, const std::vector<GgufTensorSpec>& tensors, std::uint32_t alignment) {
  std::string out = "GGUF";
  put<std::uint32_t>(out, 3);
  put<std::uint64_t>(out, tensors.size());
  put<std::uint64_t>(out, kvs.size());
  for (const auto& kv : kvs) {
    put_str(out, kv.key);
    switch (kv.kind) {
      case GgufKv::Kind::kU32: put<std::uint32_t>(out, 4); put<std::uint32_t>(out, static_cast<std::uint32_t>(kv.u)); break;
      case GgufKv::Kind::kU64: put<std::uint32_t>(out, 10); put<std::uint64_t>(out, kv.u); break;
      case GgufKv::Kind::kI32: put<std::uint32_t>(out, 5); put<std::int32_t>(out, static_cast<std::int32_t>(kv.i)); break;
      case GgufKv::Kind::kF32: put<std::uint32_t>(out, 6); put<float>(out, static_cast<float>(kv.f)); break;
      case GgufKv::Kind::kBool: put<std::uint32_t>(out, 7); put<std::uint8_t>(out, kv.u ? 1 : 0); break;
      case GgufKv::Kind::kString: put<std::uint32_t>(out, 8); put_str(out, kv.s); break;
      case GgufKv::Kind::kStringArray:
        put<std::uint32_t>(out, 9);
        put<std::uint32_t>(out, 8);
        put<std::uint64_t>(out, kv.strings.size());
        for (const auto& s : kv.strings) put_str(out, s);
        break;
      case GgufKv::Kind::kI32Array:
        put<std::uint32_t>(out, 9);
        put<std::uint32_t>(out, 5);
        put<std::uint64_t>(out, kv.ints.size());
        for (auto v : kv.ints) put<std::int32_t>(out, v);
        break;
    }
  }
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    put_str(out, t.name);
    put<std::uint32_t>(out, static_cast<std::uint32_t>(t.ne.size()));
    for (auto d : t.ne) put<std::uint64_t>(out, d);
    put<std::uint32_t>(out, t.ggml_type);
    put<std::uint64_t>(out, offset);
    offset += (t.nbytes + alignment - 1) / alignment * alignment;
  }
  out.append((alignment - out.size() % alignment) % alignment, '\0');
  out.append(offset, '\0');
  return out;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace deepfit::planner::test
