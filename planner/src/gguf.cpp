// GGUF header reader (layout per ggml's docs/gguf.md: little-endian; v2+ uses 64-bit counts) and
// its mapping to deepfit's model description.
#include "planner/gguf.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include "kernels/error.h"

namespace deepfit::planner {
namespace {

constexpr std::uint32_t kTypeUint8 = 0, kTypeInt8 = 1, kTypeUint16 = 2, kTypeInt16 = 3, kTypeUint32 = 4, kTypeInt32 = 5,
                        kTypeFloat32 = 6, kTypeBool = 7, kTypeString = 8, kTypeArray = 9, kTypeUint64 = 10,
                        kTypeInt64 = 11, kTypeFloat64 = 12;
constexpr std::uint64_t kMaxStringBytes = 64ULL << 20;  // no sane key or value is longer
constexpr std::uint64_t kMaxNameBytes = 256;
constexpr std::uint64_t kMaxNumericArray = 1ULL << 20;  // kept in memory; longer numeric arrays are skipped

class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    if (!in_) throw InputError(path + ": cannot open file (expected a readable .gguf file)");
    in_.seekg(0, std::ios::end);
    size_ = static_cast<std::uint64_t>(in_.tellg());
    in_.seekg(0);
  }
  std::uint64_t size() const { return size_; }
  std::uint64_t pos() const { return pos_; }
  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(path_ + ": byte " + std::to_string(pos_) + ": " + what);
  }
  void need(std::uint64_t n, const char* what) {
    if (n > size_ - pos_) fail(std::string("truncated file: ") + what + " needs " + std::to_string(n) + " bytes, " +
                               std::to_string(size_ - pos_) + " remain");
  }
  void bytes(void* out, std::uint64_t n, const char* what) {
    need(n, what);
    in_.read(static_cast<char*>(out), static_cast<std::streamsize>(n));
    if (!in_) fail(std::string("read error in ") + what);
    pos_ += n;
  }
  void skip(std::uint64_t n, const char* what) {
    need(n, what);
    pos_ += n;
    in_.seekg(static_cast<std::streamoff>(pos_));
  }
  template <class T>
  T num(const char* what) {
    unsigned char b[sizeof(T)];
    bytes(b, sizeof(T), what);
    T v;
    std::memcpy(&v, b, sizeof(T));  // GGUF is little-endian, as are deepfit's targets
    return v;
  }
  std::string str(const char* what, std::uint64_t max_len) {
    const auto len = num<std::uint64_t>(what);
    if (len > max_len) fail(std::string(what) + ": string length " + std::to_string(len) + " exceeds the limit of " + std::to_string(max_len));
    need(len, what);
    std::string s(len, '\0');
    bytes(s.data(), len, what);
    return s;
  }
  void skip_str(const char* what) {
    const auto len = num<std::uint64_t>(what);
    skip(len, what);
  }

 private:
  std::string path_;
  std::ifstream in_;
  std::uint64_t size_ = 0;
  std::uint64_t pos_ = 0;
};

std::uint64_t scalar_bytes(std::uint32_t t) {
  switch (t) {
    case kTypeUint8: case kTypeInt8: case kTypeBool: return 1;
    case kTypeUint16: case kTypeInt16: return 2;
    case kTypeUint32: case kTypeInt32: case kTypeFloat32: return 4;
    case kTypeUint64: case kTypeInt64: case kTypeFloat64: return 8;
    default: return 0;
  }
}

GgufValue read_scalar(Reader& r, std::uint32_t t) {
  switch (t) {
    case kTypeUint8: return std::uint64_t{r.num<std::uint8_t>("uint8 value")};
    case kTypeInt8: return std::int64_t{r.num<std::int8_t>("int8 value")};
    case kTypeUint16: return std::uint64_t{r.num<std::uint16_t>("uint16 value")};
    case kTypeInt16: return std::int64_t{r.num<std::int16_t>("int16 value")};
    case kTypeUint32: return std::uint64_t{r.num<std::uint32_t>("uint32 value")};
    case kTypeInt32: return std::int64_t{r.num<std::int32_t>("int32 value")};
    case kTypeFloat32: return double{r.num<float>("float32 value")};
    case kTypeBool: return r.num<std::uint8_t>("bool value") != 0;
    case kTypeUint64: return r.num<std::uint64_t>("uint64 value");
    case kTypeInt64: return r.num<std::int64_t>("int64 value");
    case kTypeFloat64: return r.num<double>("float64 value");
    default: r.fail("unknown metadata value type " + std::to_string(t) + " (expected 0..12)");
  }
}

GgufValue read_value(Reader& r, std::uint32_t t, const std::string& key) {
  if (t == kTypeString) return r.str(("value of " + key).c_str(), kMaxStringBytes);
  if (t != kTypeArray) return read_scalar(r, t);
  GgufArray a;
  a.type = r.num<std::uint32_t>("array element type");
  a.length = r.num<std::uint64_t>("array length");
  if (a.type == kTypeString) {
    // Each string needs at least its 8-byte length: a length beyond that is a corrupt file.
    if (a.length > (r.size() - r.pos()) / 8) r.fail("array '" + key + "' claims " + std::to_string(a.length) + " strings, more than the file can hold");
    for (std::uint64_t i = 0; i < a.length; ++i) r.skip_str("array string");
    return a;
  }
  const std::uint64_t eb = scalar_bytes(a.type);
  if (eb == 0) r.fail("array '" + key + "' has unsupported element type " + std::to_string(a.type));
  if (a.length > (r.size() - r.pos()) / eb) r.fail("array '" + key + "' claims " + std::to_string(a.length) + " elements, more than the file can hold");
  if (a.length > kMaxNumericArray || a.type == kTypeFloat32 || a.type == kTypeFloat64) {
    r.skip(a.length * eb, "array data");
    return a;
  }
  a.ints.reserve(a.length);
  for (std::uint64_t i = 0; i < a.length; ++i) {
    GgufValue v = read_scalar(r, a.type);
    if (auto* u = std::get_if<std::uint64_t>(&v)) a.ints.push_back(static_cast<std::int64_t>(*u));
    else if (auto* s = std::get_if<std::int64_t>(&v)) a.ints.push_back(*s);
    else if (auto* b = std::get_if<bool>(&v)) a.ints.push_back(*b ? 1 : 0);
  }
  return a;
}

}  // namespace

GgufHeader read_gguf_header(const std::string& path) {
  Reader r(path);
  GgufHeader h;
  h.path = path;
  h.file_bytes = r.size();
  char magic[4];
  r.bytes(magic, 4, "magic");
  if (std::memcmp(magic, "GGUF", 4) != 0) throw InputError(path + ": not a GGUF file (expected the magic bytes 'GGUF' at offset 0)");
  h.version = r.num<std::uint32_t>("version");
  if (h.version < 2 || h.version > 3)
    throw InputError(path + ": GGUF version " + std::to_string(h.version) + " is not supported (expected 2 or 3)");
  const auto n_tensors = r.num<std::uint64_t>("tensor count");
  const auto n_kv = r.num<std::uint64_t>("metadata count");
  // Smallest possible records: a tensor info is 8+1+4+8+4+8 bytes, a key/value 8+1+4+1.
  if (n_tensors > r.size() / 33) r.fail("tensor count " + std::to_string(n_tensors) + " is more than the file can hold");
  if (n_kv > r.size() / 14) r.fail("metadata count " + std::to_string(n_kv) + " is more than the file can hold");
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.str("metadata key", kMaxNameBytes);
    const auto type = r.num<std::uint32_t>("metadata value type");
    if (type > kTypeFloat64) r.fail("metadata '" + key + "' has unknown value type " + std::to_string(type) + " (expected 0..12)");
    h.metadata[key] = read_value(r, type, key);
  }
  if (auto it = h.metadata.find("general.alignment"); it != h.metadata.end()) {
    const auto* a = std::get_if<std::uint64_t>(&it->second);
    if (!a || *a == 0 || (*a & (*a - 1)) != 0 || *a > 65536) throw InputError(path + ": general.alignment must be a power of two");
    h.alignment = *a;
  }
  h.tensors.reserve(static_cast<std::size_t>(n_tensors));
  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = r.str("tensor name", kMaxNameBytes);
    const auto n_dims = r.num<std::uint32_t>("tensor dimension count");
    if (n_dims < 1 || n_dims > 4) r.fail("tensor '" + t.name + "' has " + std::to_string(n_dims) + " dimensions (expected 1..4)");
    std::uint64_t elements = 1;
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      const auto ne = r.num<std::uint64_t>("tensor dimension");
      if (ne == 0 || ne > (1ULL << 40) || elements > (1ULL << 50) / ne)
        r.fail("tensor '" + t.name + "' has an absurd dimension " + std::to_string(ne));
      elements *= ne;
      t.ne.push_back(ne);
    }
    t.ggml_type = r.num<std::uint32_t>("tensor type");
    t.offset = r.num<std::uint64_t>("tensor offset");
    if (t.offset % h.alignment != 0) r.fail("tensor '" + t.name + "' offset " + std::to_string(t.offset) + " is not aligned to " + std::to_string(h.alignment));
    h.tensors.push_back(std::move(t));
  }
  h.data_offset = (r.pos() + h.alignment - 1) / h.alignment * h.alignment;
  return h;
}

std::string gguf_ftype_name(std::uint32_t ftype) {
  static const std::map<std::uint32_t, const char*> names = {
      {0, "F32"},      {1, "F16"},     {2, "Q4_0"},    {3, "Q4_1"},     {7, "Q8_0"},     {8, "Q5_0"},    {9, "Q5_1"},
      {10, "Q2_K"},    {11, "Q3_K_S"}, {12, "Q3_K_M"}, {13, "Q3_K_L"},  {14, "Q4_K_S"},  {15, "Q4_K_M"}, {16, "Q5_K_S"},
      {17, "Q5_K_M"},  {18, "Q6_K"},   {19, "IQ2_XXS"}, {20, "IQ2_XS"}, {21, "Q2_K_S"},  {22, "IQ3_XS"}, {23, "IQ3_XXS"},
      {24, "IQ1_S"},   {25, "IQ4_NL"}, {26, "IQ3_S"},  {27, "IQ3_M"},   {28, "IQ2_S"},   {29, "IQ2_M"},  {30, "IQ4_XS"},
      {31, "IQ1_M"},   {32, "BF16"},   {36, "TQ1_0"},  {37, "TQ2_0"},   {38, "MXFP4_MOE"}};
  auto it = names.find(ftype);
  return it != names.end() ? it->second : "unknown(" + std::to_string(ftype) + ")";
}

}  // namespace deepfit::planner
