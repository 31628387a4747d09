// data/frameworks/<id>.json loader (strict).
#include "planner/framework.h"

#include <algorithm>
#include <filesystem>

#include "hwdb/device_db.h"
#include "hwdb/json_check.h"
#include "kernels/error.h"

namespace deepfit::planner {
namespace {

using hwdb::Json;
using hwdb::JsonWhere;

constexpr std::int64_t kMaxBytes = 1LL << 40;

void read_sources(const Json& obj, const JsonWhere& w, std::map<std::string, std::string>& out) {
  if (!obj.contains("sources")) return;
  hwdb::require_object(obj.at("sources"), w / "sources");
  for (const auto& [k, v] : obj.at("sources").items()) {
    if (!v.is_string() || v.get<std::string>().empty()) hwdb::json_fail(w / "sources" / k, "expected a non-empty string");
    out[k] = v.get<std::string>();
  }
}

}  // namespace

Framework load_framework_file(const std::string& path) {
  Json j = hwdb::parse_json_file(path);
  JsonWhere w{path, ""};
  hwdb::check_keys(j, w, {"id", "name", "version_basis", "memory", "kv", "compute", "notes"});
  Framework f;
  f.id = hwdb::get_string(j, w, "id");
  if (f.id != std::filesystem::path(path).stem().string())
    hwdb::json_fail(w / "id", "id '" + f.id + "' does not match the file name");
  f.name = hwdb::get_string(j, w, "name");
  f.version_basis = hwdb::get_string(j, w, "version_basis");

  const Json& m = hwdb::required(j, w, "memory");
  JsonWhere mw = w / "memory";
  hwdb::check_keys(m, mw, {"fraction_of", "memory_fraction", "margin_bytes", "activation_tokens", "max_num_seqs",
                           "cuda_graph_bytes", "non_torch_bytes", "sources"});
  f.memory.fraction_of = hwdb::get_string(m, mw, "fraction_of");
  if (f.memory.fraction_of != "total" && f.memory.fraction_of != "free_after_weights" && f.memory.fraction_of != "none")
    hwdb::json_fail(mw / "fraction_of", "expected \"total\", \"free_after_weights\" or \"none\"");
  f.memory.memory_fraction = hwdb::get_number(m, mw, "memory_fraction", 0.05, 1.0, "(share)");
  f.memory.margin_bytes = hwdb::get_int_opt(m, mw, "margin_bytes", 0, kMaxBytes, "bytes").value_or(0);
  f.memory.activation_tokens = hwdb::get_int(m, mw, "activation_tokens", 1, 1 << 22, "tokens");
  f.memory.max_num_seqs = hwdb::get_int(m, mw, "max_num_seqs", 1, 1 << 20, "sequences");
  f.memory.cuda_graph_bytes = hwdb::get_int(m, mw, "cuda_graph_bytes", 0, kMaxBytes, "bytes");
  f.memory.non_torch_bytes = hwdb::get_int(m, mw, "non_torch_bytes", 0, kMaxBytes, "bytes");
  read_sources(m, mw, f.sources);

  const Json& k = hwdb::required(j, w, "kv");
  JsonWhere kw = w / "kv";
  hwdb::check_keys(k, kw, {"block_tokens", "mla_block_tokens", "default_dtype", "default_dtype_dsa", "mla_fp8_layout",
                           "indexer", "sliding_window", "sources"});
  f.kv.block_tokens = hwdb::get_int(k, kw, "block_tokens", 1, 4096, "tokens");
  f.kv.mla_block_tokens = hwdb::get_int(k, kw, "mla_block_tokens", 1, 4096, "tokens");
  f.kv.default_dtype = hwdb::get_string(k, kw, "default_dtype");
  f.kv.default_dtype_dsa = hwdb::get_string(k, kw, "default_dtype_dsa");
  if (k.contains("mla_fp8_layout")) {
    const Json& l = k.at("mla_fp8_layout");
    JsonWhere lw = kw / "mla_fp8_layout";
    hwdb::check_keys(l, lw, {"latent_value_bytes", "scale_bytes_per_128", "rope_value_bytes"});
    f.kv.has_mla_fp8_layout = true;
    f.kv.mla_latent_value_bytes = hwdb::get_int(l, lw, "latent_value_bytes", 1, 8, "bytes");
    f.kv.mla_scale_bytes_per_128 = hwdb::get_int(l, lw, "scale_bytes_per_128", 0, 64, "bytes");
    f.kv.mla_rope_value_bytes = hwdb::get_int(l, lw, "rope_value_bytes", 1, 8, "bytes");
  }
  const Json& ix = hwdb::required(k, kw, "indexer");
  JsonWhere iw = kw / "indexer";
  hwdb::check_keys(ix, iw, {"value_bytes", "scale_bytes_per_128"});
  f.kv.indexer_value_bytes = hwdb::get_int(ix, iw, "value_bytes", 0, 8, "bytes");
  f.kv.indexer_scale_bytes_per_128 = hwdb::get_int(ix, iw, "scale_bytes_per_128", 0, 64, "bytes");
  f.kv.sliding_window = hwdb::get_bool(k, kw, "sliding_window");
  read_sources(k, kw, f.sources);

  if (j.contains("compute")) {
    const Json& c = j.at("compute");
    JsonWhere cw = w / "compute";
    hwdb::check_keys(c, cw, {"fp16_accumulate", "offload_min_batch", "sources"});
    f.compute.fp16_accumulate = hwdb::get_bool(c, cw, "fp16_accumulate");
    f.compute.offload_min_batch = hwdb::get_int_opt(c, cw, "offload_min_batch", 1, 1 << 20, "tokens").value_or(0);
    read_sources(c, cw, f.sources);
  }

  const Json& notes = hwdb::required(j, w, "notes");
  if (!notes.is_array()) hwdb::json_fail(w / "notes", "expected an array of strings");
  for (std::size_t i = 0; i < notes.size(); ++i) {
    if (!notes[i].is_string()) hwdb::json_fail(w / "notes" / i, "expected a string");
    f.notes.push_back(notes[i].get<std::string>());
  }
  return f;
}

FrameworkDb FrameworkDb::load_dir(const std::string& dir) {
  FrameworkDb db;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) throw InputError(dir + ": framework directory not found");
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".json") db.frameworks_.push_back(load_framework_file(e.path().string()));
  std::sort(db.frameworks_.begin(), db.frameworks_.end(), [](const Framework& a, const Framework& b) { return a.id < b.id; });
  return db;
}

const Framework& FrameworkDb::get(const std::string& id) const {
  std::vector<std::string> ids;
  for (const auto& f : frameworks_) {
    if (f.id == id) return f;
    ids.push_back(f.id);
  }
  throw InputError("--framework: unknown framework '" + id + "' (hint: " + hwdb::did_you_mean(id, ids) +
                   "`deepfit frameworks` lists all)");
}

}  // namespace deepfit::planner
