// data/quants.json loader and the size of a tensor in a storage format.
#include "planner/quant.h"

#include <algorithm>
#include <map>
#include <utility>

#include "hwdb/device_db.h"
#include "hwdb/json_check.h"
#include "kernels/error.h"

namespace deepfit::planner {
namespace {

using hwdb::Json;
using hwdb::JsonWhere;

StorageFormat read_format(const std::string& id, const Json& j, const JsonWhere& w) {
  hwdb::check_keys(j, w, {"block_weights", "block_bits", "row_must_divide", "tile_rows", "tile_cols", "tile_scale_bytes",
                          "row_overhead_bytes", "input_overhead_bytes", "tensor_overhead_bytes", "ggml_type", "source", "note"});
  StorageFormat f;
  f.id = id;
  f.block_weights = hwdb::get_int(j, w, "block_weights", 1, 4096, "weights");
  f.block_bits = hwdb::get_int(j, w, "block_bits", 1, 1 << 20, "bits");
  f.row_must_divide = j.contains("row_must_divide") && hwdb::get_bool(j, w, "row_must_divide");
  auto opt = [&](const char* k) { return hwdb::get_int_opt(j, w, k, 0, 1 << 20, "").value_or(0); };
  f.tile_rows = opt("tile_rows");
  f.tile_cols = opt("tile_cols");
  f.tile_scale_bytes = opt("tile_scale_bytes");
  if ((f.tile_rows > 0) != (f.tile_cols > 0) || (f.tile_rows > 0) != (f.tile_scale_bytes > 0))
    hwdb::json_fail(w, "tile_rows, tile_cols and tile_scale_bytes go together");
  f.row_overhead_bytes = opt("row_overhead_bytes");
  f.input_overhead_bytes = opt("input_overhead_bytes");
  f.tensor_overhead_bytes = opt("tensor_overhead_bytes");
  f.ggml_type = hwdb::get_int_opt(j, w, "ggml_type", 0, 1023, "");
  f.source = hwdb::get_string(j, w, "source");
  return f;
}

Scheme read_scheme(const std::string& id, const Json& j, const JsonWhere& w, const std::map<std::string, StorageFormat>& formats) {
  Scheme s;
  s.id = id;
  s.kind = hwdb::get_string(j, w, "kind");
  s.description = hwdb::get_string(j, w, "description");
  auto known_format = [&](const std::string& f, const JsonWhere& fw) {
    if (!formats.count(f)) hwdb::json_fail(fw, "unknown storage format '" + f + "' (see /formats)");
    return f;
  };
  if (s.kind == "gguf") {
    hwdb::check_keys(j, w, {"kind", "ftype", "imatrix", "description"});
    s.ftype = hwdb::get_string(j, w, "ftype");
    s.imatrix = hwdb::get_bool(j, w, "imatrix");
    return s;
  }
  if (s.kind != "roles") hwdb::json_fail(w / "kind", "expected \"roles\" or \"gguf\", got \"" + s.kind + "\"");
  hwdb::check_keys(j, w, {"kind", "matrix", "vector", "include_mtp", "roles", "tensor_overrides", "description"});
  s.matrix_format = known_format(hwdb::get_string(j, w, "matrix"), w / "matrix");
  s.vector_format = known_format(hwdb::get_string(j, w, "vector"), w / "vector");
  s.include_mtp = hwdb::get_bool(j, w, "include_mtp");
  if (j.contains("roles")) {
    static const std::vector<std::string> roles = {"embedding", "head", "norm", "attention", "indexer", "dense_ffn",
                                                   "routed_expert", "shared_expert", "router", "mtp"};
    for (const auto& [k, v] : j.at("roles").items()) {
      std::string role = k.substr(0, k.find('@'));
      std::string cond = k.find('@') == std::string::npos ? "" : k.substr(k.find('@') + 1);
      if (std::find(roles.begin(), roles.end(), role) == roles.end() || (!cond.empty() && cond != "mla"))
        hwdb::json_fail(w / "roles" / k, "unknown role '" + k + "' (expected a tensor role, optionally with @mla)");
      if (!v.is_string()) hwdb::json_fail(w / "roles" / k, "expected a storage format id");
      s.role_formats[k] = known_format(v.get<std::string>(), w / "roles" / k);
    }
  }
  if (j.contains("tensor_overrides")) {
    const Json& a = j.at("tensor_overrides");
    if (!a.is_array()) hwdb::json_fail(w / "tensor_overrides", "expected an array of {suffix, format}");
    for (std::size_t i = 0; i < a.size(); ++i) {
      JsonWhere ow = w / "tensor_overrides" / i;
      hwdb::check_keys(a[i], ow, {"suffix", "format"});
      s.tensor_overrides.push_back({hwdb::get_string(a[i], ow, "suffix"), known_format(hwdb::get_string(a[i], ow, "format"), ow / "format")});
    }
  }
  return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

QuantDb QuantDb::load(const std::string& path) {
  Json j = hwdb::parse_json_file(path);
  JsonWhere w{path, ""};
  hwdb::check_keys(j, w, {"_comment", "formats", "schemes"});
  QuantDb db;
  const Json& formats = hwdb::required(j, w, "formats");
  hwdb::require_object(formats, w / "formats");
  for (const auto& [id, f] : formats.items()) db.formats_[id] = read_format(id, f, w / "formats" / id);
  const Json& schemes = hwdb::required(j, w, "schemes");
  hwdb::require_object(schemes, w / "schemes");
  for (const auto& [id, s] : schemes.items()) db.schemes_.push_back(read_scheme(id, s, w / "schemes" / id, db.formats_));
  return db;
}

const StorageFormat& QuantDb::format(const std::string& id) const {
  auto it = formats_.find(id);
  if (it == formats_.end()) throw InputError("unknown storage format '" + id + "'");
  return it->second;
}

const StorageFormat* QuantDb::format_by_ggml_type(std::int64_t ggml_type) const {
  for (const auto& [id, f] : formats_)
    if (f.ggml_type && *f.ggml_type == ggml_type) return &f;
  return nullptr;
}

const Scheme& QuantDb::scheme(const std::string& id) const {
  for (const auto& s : schemes_)
    if (s.id == id) return s;
  std::vector<std::string> ids;
  for (const auto& s : schemes_) ids.push_back(s.id);
  throw InputError("--quant: unknown quantization '" + id + "' (hint: " + hwdb::did_you_mean(id, ids) +
                   "`deepfit quants` lists all)");
}

std::int64_t tensor_bytes(const Tensor& t, const StorageFormat& f) {
  const std::int64_t cols = t.row_len();
  const std::int64_t rows = t.num_rows();
  if (f.row_must_divide && cols % f.block_weights != 0)
    throw InputError("tensor " + t.name + ": row of " + std::to_string(cols) + " weights is not a whole number of " +
                     f.id + " blocks (" + std::to_string(f.block_weights) + " weights)");
  const std::int64_t blocks_per_row = (cols + f.block_weights - 1) / f.block_weights;
  // Formats whose blocks are not whole bytes (AWQ/GPTQ pack zeros across outputs) are exact over
  // the whole tensor; GGUF blocks are whole bytes, so this equals rows x row bytes there.
  std::int64_t bytes = (rows * blocks_per_row * f.block_bits + 7) / 8;
  if (t.is_matrix()) {
    // Stacked experts (3-D) are separate matrices for per-matrix scales.
    const std::int64_t mats = t.shape.size() >= 3 ? t.shape[0] : 1;
    const std::int64_t mrows = rows / mats;
    if (f.tile_rows > 0)
      bytes += mats * ((mrows + f.tile_rows - 1) / f.tile_rows) * ((cols + f.tile_cols - 1) / f.tile_cols) * f.tile_scale_bytes;
    bytes += rows * f.row_overhead_bytes + mats * cols * f.input_overhead_bytes + mats * f.tensor_overhead_bytes;
  }
  return bytes;
}

std::int64_t gguf_padded(std::int64_t bytes, std::int64_t alignment) {
  return (bytes + alignment - 1) / alignment * alignment;
}

StoredModel store_model(const ModelSpec& m, const Scheme& s, const QuantDb& q) {
  StoredModel out;
  std::vector<Tensor> inventory = tensor_inventory(m);
  out.params = count_params(m, inventory);
  if (s.is_gguf()) {
    out.gguf = true;
    std::vector<Tensor> tensors = gguf_tensor_layout(m, std::move(inventory));
    std::vector<std::string> types = gguf_tensor_types(m, tensors, s, q, &out.num_fallbacks);
    out.tensors.reserve(tensors.size());
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      std::int64_t b = tensor_bytes(tensors[i], q.format(types[i]));
      out.bytes += gguf_padded(b);
      out.tensors.push_back({std::move(tensors[i]), std::move(types[i]), b});
    }
    if (m.num_mtp_layers > 0 && m.arch != Arch::kDeepseekV32)
      out.notes.push_back("llama.cpp's converter leaves the MTP layer out of " + std::string(to_string(m.arch)) + " GGUF files");
    return out;
  }
  // The format of a tensor depends on its role and whether it is a matrix, then on name overrides:
  // resolve each (role, matrix) pair once (a model has thousands of tensors and a dozen roles).
  std::map<std::pair<TensorRole, bool>, std::string> by_role;
  auto role_format = [&](const Tensor& t) -> const std::string& {
    const auto key = std::make_pair(t.role, t.is_matrix());
    auto it = by_role.find(key);
    if (it != by_role.end()) return it->second;
    std::string f = t.is_matrix() ? s.matrix_format : s.vector_format;
    auto role = s.role_formats.find(to_string(t.role));
    if (role != s.role_formats.end() && (t.is_matrix() || t.role == TensorRole::kRoutedExpert)) f = role->second;
    auto mla_role = s.role_formats.find(std::string(to_string(t.role)) + "@mla");
    if (m.mla && mla_role != s.role_formats.end() && t.is_matrix()) f = mla_role->second;
    return by_role.emplace(key, std::move(f)).first->second;
  };
  std::map<std::string, const StorageFormat*> formats;
  out.tensors.reserve(inventory.size());
  for (auto& t : inventory) {
    if (t.mtp && !s.include_mtp) continue;
    const std::string* f = &role_format(t);
    for (const auto& o : s.tensor_overrides)
      if (ends_with(t.name, o.suffix)) f = &o.format;
    const StorageFormat*& sf = formats[*f];
    if (!sf) sf = &q.format(*f);
    const std::int64_t b = tensor_bytes(t, *sf);
    out.bytes += b;
    out.tensors.push_back({std::move(t), *f, b});
  }
  if (m.num_mtp_layers > 0 && !s.include_mtp)
    out.notes.push_back("this format's checkpoints leave the MTP module out");
  return out;
}

}  // namespace deepfit::planner
