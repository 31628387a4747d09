// Link bandwidth and latency (see links.h).
#include "planner/links.h"

#include <cmath>

#include "hwdb/json_check.h"

namespace deepfit::planner {

LinkDb LinkDb::load(const std::string& path) {
  using hwdb::Json;
  const Json j = hwdb::parse_json_file(path);
  const hwdb::JsonWhere w{path, ""};
  hwdb::check_keys(j, w, {"_comment", "fabrics"});
  const Json& f = hwdb::required(j, w, "fabrics");
  hwdb::require_object(f, w / "fabrics");
  LinkDb db;
  for (const auto& [k, v] : f.items()) {
    const hwdb::JsonWhere fw = w / "fabrics" / k;
    hwdb::check_keys(v, fw, {"collective_latency_us", "source", "notes"});
    LinkLatency l;
    l.collective_latency_s = hwdb::get_number(v, fw, "collective_latency_us", 0, 1e6, "us") * 1e-6;
    l.source = hwdb::get_string(v, fw, "source");
    db.fabrics_[k] = l;
  }
  return db;
}

const LinkLatency* LinkDb::find(const std::string& fabric) const {
  auto it = fabrics_.find(fabric);
  return it == fabrics_.end() ? nullptr : &it->second;
}

double pcie_x16_gbps(int gen) { return 8.0 * std::pow(2.0, static_cast<double>(gen - 3)) * 16 * 128.0 / 130.0 / 8.0; }

std::optional<LinkModel> link_model(const hwdb::Device& d, std::int64_t count, const LinkDb& links) {
  LinkModel l;
  if (count <= d.devices_per_node && d.scale_up) {
    l.gbps = d.scale_up->bandwidth_gbps / (d.scale_up->bidirectional.value_or(true) ? 2.0 : 1.0);
    l.fabric = d.scale_up->kind;
  } else if (count > d.devices_per_node && d.scale_out_gbps) {
    l.gbps = *d.scale_out_gbps;
    l.fabric = "infiniband";
  } else if (d.pcie_gen && *d.pcie_gen >= 3) {
    l.gbps = pcie_x16_gbps(*d.pcie_gen);
    l.fabric = "pcie";
  } else {
    return std::nullopt;
  }
  if (const LinkLatency* lat = links.find(l.fabric)) l.latency_s = lat->collective_latency_s;
  return l;
}

}  // namespace deepfit::planner
