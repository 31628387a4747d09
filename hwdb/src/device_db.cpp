// Device record loader, validator and serializer (schema in data/README.md, "Device records").
#include "hwdb/device_db.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>
#include <sstream>

#include "hwdb/json_check.h"
#include "kernels/error.h"

namespace deepfit::hwdb {
namespace {

// Bounds are sanity limits that catch unit mistakes (bytes given as GB, Gb/s for GB/s), not
// statements about any device.
constexpr double kMaxMemoryBytes = 1e14;
constexpr double kMaxBandwidthGbps = 1e5;
constexpr double kMaxTflops = 1e5;

const std::vector<std::string> kTopKeys = {
    "id", "name", "vendor", "kind", "memory_bytes", "memory_bandwidth_gbps", "peak_tflops", "tdp_w",
    "scale_up", "scale_out_gbps", "pcie_gen", "devices_per_node", "launch_year", "price",
    "memory_configs", "gpu_memory_fraction", "sources", "notes", "measurements"};

DeviceKind parse_kind(const Json& j, const JsonWhere& w) {
  std::string s = get_string(j, w, "kind");
  static const std::pair<const char*, DeviceKind> kinds[] = {
      {"gpu", DeviceKind::kGpu},     {"tpu", DeviceKind::kTpu}, {"npu", DeviceKind::kNpu},
      {"apple", DeviceKind::kApple}, {"cpu", DeviceKind::kCpu}, {"apu", DeviceKind::kApu}};
  for (auto& [name, kind] : kinds)
    if (s == name) return kind;
  json_fail(w / "kind", "unknown kind '" + s + "' (expected one of gpu, tpu, npu, apple, cpu, apu)");
}

}  // namespace

const char* to_string(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kGpu: return "gpu";
    case DeviceKind::kTpu: return "tpu";
    case DeviceKind::kNpu: return "npu";
    case DeviceKind::kApple: return "apple";
    case DeviceKind::kCpu: return "cpu";
    case DeviceKind::kApu: return "apu";
  }
  return "?";
}

Device device_from_json(const Json& j, const std::string& origin, const std::string& expected_id) {
  JsonWhere w{origin, ""};
  check_keys(j, w, kTopKeys);
  Device d;
  d.origin = origin;
  d.id = get_string(j, w, "id");
  static const std::regex id_re("[a-z0-9][a-z0-9.+-]*");
  if (!std::regex_match(d.id, id_re))
    json_fail(w / "id", "id '" + d.id + "' must be lowercase letters, digits, '.', '+' or '-'");
  if (!expected_id.empty() && d.id != expected_id)
    json_fail(w / "id", "id '" + d.id + "' does not match the file name (expected '" + expected_id + "')");
  d.name = get_string(j, w, "name");
  d.vendor = get_string(j, w, "vendor");
  d.kind = parse_kind(j, w);
  d.memory_bytes = get_int(j, w, "memory_bytes", 1, static_cast<std::int64_t>(kMaxMemoryBytes), "bytes");
  d.memory_bandwidth_gbps = get_number(j, w, "memory_bandwidth_gbps", 1e-3, kMaxBandwidthGbps, "GB/s");

  const Json& pt = required(j, w, "peak_tflops");
  JsonWhere pw = w / "peak_tflops";
  check_keys(pt, pw, {"fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4", "fp16_acc16"});
  auto peak = [&](const char* k) { return get_number_or_null(pt, pw, k, 1e-3, kMaxTflops, "TFLOP/s (dense)"); };
  d.peak_tflops = {peak("fp32"), peak("tf32"), peak("bf16"), peak("fp16"), peak("fp8"), peak("int8"), peak("fp4"), std::nullopt};
  if (pt.contains("fp16_acc16")) {
    d.peak_tflops.fp16_acc16 = peak("fp16_acc16");
    if (!d.peak_tflops.fp16 || !d.peak_tflops.fp16_acc16 || *d.peak_tflops.fp16_acc16 <= *d.peak_tflops.fp16)
      json_fail(pw / "fp16_acc16", "expected a rate above fp16 (record it only where FP16 accumulation is faster than FP32 accumulation)");
  }

  d.tdp_w = get_number_or_null(j, w, "tdp_w", 1, 1e5, "W");
  const Json& su = required(j, w, "scale_up");
  if (!su.is_null()) {
    JsonWhere sw = w / "scale_up";
    check_keys(su, sw, {"kind", "bandwidth_gbps", "bidirectional"});
    d.scale_up = ScaleUp{get_string(su, sw, "kind"), get_number(su, sw, "bandwidth_gbps", 1e-3, kMaxBandwidthGbps, "GB/s"),
                         std::nullopt};
    if (!required(su, sw, "bidirectional").is_null()) d.scale_up->bidirectional = get_bool(su, sw, "bidirectional");
  }
  d.scale_out_gbps = get_number_or_null(j, w, "scale_out_gbps", 1e-3, kMaxBandwidthGbps, "GB/s");
  if (!required(j, w, "pcie_gen").is_null()) d.pcie_gen = get_int(j, w, "pcie_gen", 1, 7, "");
  d.devices_per_node = get_int(j, w, "devices_per_node", 1, 1024, "devices");
  if (!required(j, w, "launch_year").is_null()) d.launch_year = get_int(j, w, "launch_year", 1990, 2100, "");

  const Json& pr = required(j, w, "price");
  if (!pr.is_null()) {
    JsonWhere prw = w / "price";
    check_keys(pr, prw, {"usd_per_hour", "date", "source"});
    d.price = Price{get_number(pr, prw, "usd_per_hour", 1e-4, 1e4, "USD per device-hour"),
                    get_string(pr, prw, "date"), get_string(pr, prw, "source")};
  }

  if (j.contains("memory_configs")) {
    const Json& mc = j.at("memory_configs");
    JsonWhere mw = w / "memory_configs";
    if (!mc.is_array() || mc.empty()) json_fail(mw, "expected a non-empty array of {memory_bytes, memory_bandwidth_gbps}");
    bool matches_top = false;
    for (std::size_t i = 0; i < mc.size(); ++i) {
      JsonWhere ew = mw / i;
      check_keys(mc[i], ew, {"memory_bytes", "memory_bandwidth_gbps"});
      MemoryConfig c{get_int(mc[i], ew, "memory_bytes", 1, static_cast<std::int64_t>(kMaxMemoryBytes), "bytes"),
                     get_number(mc[i], ew, "memory_bandwidth_gbps", 1e-3, kMaxBandwidthGbps, "GB/s")};
      matches_top = matches_top || (c.memory_bytes == d.memory_bytes && c.memory_bandwidth_gbps == d.memory_bandwidth_gbps);
      d.memory_configs.push_back(c);
    }
    if (!matches_top)
      json_fail(mw, "memory_bytes/memory_bandwidth_gbps at the top level must equal one of the memory_configs");
  }
  if (j.contains("gpu_memory_fraction"))
    d.gpu_memory_fraction = get_number(j, w, "gpu_memory_fraction", 0.05, 1.0, "(share of memory)");

  const Json& src = required(j, w, "sources");
  JsonWhere srcw = w / "sources";
  require_object(src, srcw);
  if (src.empty()) json_fail(srcw, "expected at least one source (field -> where the number comes from)");
  for (const auto& [k, v] : src.items()) {
    if (std::find(kTopKeys.begin(), kTopKeys.end(), k) == kTopKeys.end())
      json_fail(srcw / k, "source given for unknown field '" + k + "'");
    if (!v.is_string() || v.get<std::string>().empty()) json_fail(srcw / k, "expected a non-empty string");
    d.sources[k] = v.get<std::string>();
  }
  for (const char* k : {"memory_bytes", "memory_bandwidth_gbps", "peak_tflops"})
    if (!d.sources.count(k)) json_fail(srcw, std::string("missing the source of '") + k + "'");

  if (j.contains("measurements")) {
    require_object(j.at("measurements"), w / "measurements");
    d.measurements = j.at("measurements");
  }
  const Json& notes = required(j, w, "notes");
  if (!notes.is_array()) json_fail(w / "notes", "expected an array of strings");
  for (std::size_t i = 0; i < notes.size(); ++i) {
    if (!notes[i].is_string()) json_fail(w / "notes" / i, "expected a string");
    d.notes.push_back(notes[i].get<std::string>());
  }
  return d;
}

Device load_device_file(const std::string& path, bool id_must_match_file_name) {
  Json j = parse_json_file(path);
  std::string stem = std::filesystem::path(path).stem().string();
  return device_from_json(j, path, id_must_match_file_name ? stem : "");
}

Json device_to_json(const Device& d) {
  auto opt = [](const std::optional<double>& v) { return v ? Json(*v) : Json(nullptr); };
  Json j;
  j["id"] = d.id;
  j["name"] = d.name;
  j["vendor"] = d.vendor;
  j["kind"] = to_string(d.kind);
  j["memory_bytes"] = d.memory_bytes;
  j["memory_bandwidth_gbps"] = d.memory_bandwidth_gbps;
  const auto& p = d.peak_tflops;
  j["peak_tflops"] = {{"fp32", opt(p.fp32)}, {"tf32", opt(p.tf32)}, {"bf16", opt(p.bf16)}, {"fp16", opt(p.fp16)},
                      {"fp8", opt(p.fp8)},   {"int8", opt(p.int8)}, {"fp4", opt(p.fp4)}};
  if (p.fp16_acc16) j["peak_tflops"]["fp16_acc16"] = *p.fp16_acc16;
  j["tdp_w"] = opt(d.tdp_w);
  j["scale_up"] = d.scale_up ? Json{{"kind", d.scale_up->kind}, {"bandwidth_gbps", d.scale_up->bandwidth_gbps},
                                    {"bidirectional", d.scale_up->bidirectional ? Json(*d.scale_up->bidirectional) : Json(nullptr)}}
                             : Json(nullptr);
  j["scale_out_gbps"] = opt(d.scale_out_gbps);
  j["pcie_gen"] = d.pcie_gen ? Json(*d.pcie_gen) : Json(nullptr);
  j["devices_per_node"] = d.devices_per_node;
  j["launch_year"] = d.launch_year ? Json(*d.launch_year) : Json(nullptr);
  j["price"] = d.price ? Json{{"usd_per_hour", d.price->usd_per_hour}, {"date", d.price->date}, {"source", d.price->source}}
                       : Json(nullptr);
  if (!d.memory_configs.empty()) {
    Json a = Json::array();
    for (const auto& c : d.memory_configs)
      a.push_back({{"memory_bytes", c.memory_bytes}, {"memory_bandwidth_gbps", c.memory_bandwidth_gbps}});
    j["memory_configs"] = a;
  }
  if (d.gpu_memory_fraction) j["gpu_memory_fraction"] = *d.gpu_memory_fraction;
  j["sources"] = d.sources;
  j["notes"] = d.notes;
  if (d.measurements.is_object()) j["measurements"] = d.measurements;
  if (!d.overrides.empty()) j["overrides"] = d.overrides;
  return j;
}

DeviceDb DeviceDb::load_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  DeviceDb db;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw InputError(dir + ": device directory not found");
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".json") continue;
    db.devices_.push_back(load_device_file(e.path().string(), true));
  }
  std::sort(db.devices_.begin(), db.devices_.end(), [](const Device& a, const Device& b) { return a.id < b.id; });
  return db;
}

void DeviceDb::add(Device d) {
  for (auto& x : devices_)
    if (x.id == d.id) {
      x = std::move(d);
      return;
    }
  devices_.push_back(std::move(d));
}

const Device* DeviceDb::find(const std::string& id) const {
  for (const auto& d : devices_)
    if (d.id == id) return &d;
  return nullptr;
}

const Device& DeviceDb::get(const std::string& id) const {
  if (const Device* d = find(id)) return *d;
  std::vector<std::string> ids;
  for (const auto& d : devices_) ids.push_back(d.id);
  throw InputError("--device: unknown device '" + id + "' (hint: " + did_you_mean(id, ids) +
                   "`deepfit devices` lists all)");
}

void override_price(Device& d, double usd_per_hour) {
  if (!std::isfinite(usd_per_hour) || usd_per_hour <= 0)
    throw InputError("--price-per-hour: expected a positive number of USD per device-hour");
  std::ostringstream s;
  s << "price overridden for this run: " << usd_per_hour << " USD per device-hour";
  d.price = Price{usd_per_hour, "user override", "--price-per-hour"};
  d.overrides.push_back(s.str());
}

void select_memory_gb(Device& d, double memory_gb) {
  if (!std::isfinite(memory_gb) || memory_gb <= 0) throw InputError("--memory-gb: expected a positive number of GB");
  if (d.memory_configs.empty()) {
    // Discrete accelerators have one memory size; a different one is the user's own claim.
    d.memory_bytes = static_cast<std::int64_t>(std::llround(memory_gb * 1e9));
    d.overrides.push_back("memory overridden for this run: " + std::to_string(d.memory_bytes) + " bytes (--memory-gb)");
    return;
  }
  std::string listed;
  for (const auto& c : d.memory_configs) {
    double gb = static_cast<double>(c.memory_bytes) / 1e9;
    double gib = static_cast<double>(c.memory_bytes) / static_cast<double>(1ULL << 30);
    if (std::fabs(gb - memory_gb) < 0.5 || std::fabs(gib - memory_gb) < 0.5) {
      d.memory_bytes = c.memory_bytes;
      d.memory_bandwidth_gbps = c.memory_bandwidth_gbps;
      d.overrides.push_back("memory configuration selected: " + std::to_string(c.memory_bytes) + " bytes (--memory-gb)");
      return;
    }
    std::ostringstream s;
    s << std::llround(gib);
    listed += (listed.empty() ? "" : ", ") + s.str();
  }
  throw InputError("--memory-gb: " + d.id + " has no " + std::to_string(std::llround(memory_gb)) +
                   " GB configuration (expected one of: " + listed + ")");
}

std::string did_you_mean(const std::string& name, const std::vector<std::string>& candidates) {
  std::string hint;
  for (const auto& c : closest_names(name, candidates)) hint += (hint.empty() ? "" : ", ") + c;
  return hint.empty() ? "" : "closest: " + hint + "; ";
}

std::vector<std::string> closest_names(const std::string& name, const std::vector<std::string>& candidates,
                                       std::size_t max_results) {
  auto dist = [](const std::string& a, const std::string& b) {
    std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      cur[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j)
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      std::swap(prev, cur);
    }
    return prev[b.size()];
  };
  // Rank: names that start with the query, then names containing it (or contained in it), then
  // by edit distance; ties by name.
  std::vector<std::pair<std::size_t, std::string>> scored;
  for (const auto& c : candidates) {
    std::size_t d = dist(name, c) + 2;
    if (c.find(name) != std::string::npos || name.find(c) != std::string::npos) d = 1;
    if (c.rfind(name, 0) == 0) d = 0;
    scored.emplace_back(d, c);
  }
  std::sort(scored.begin(), scored.end());
  std::vector<std::string> out;
  std::size_t limit = std::max<std::size_t>(3, name.size() / 2) + 2;
  for (const auto& [d, c] : scored)
    if (out.size() < max_results && d <= limit) out.push_back(c);
  return out;
}

}  // namespace deepfit::hwdb
