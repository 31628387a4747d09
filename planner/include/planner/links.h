// Links between devices: per-direction bandwidth from the device record and a per-collective
// latency per fabric kind from data/links.json (each figure with its source).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "hwdb/device.h"

namespace deepfit::planner {

// Per-collective latency of each fabric kind (data/links.json), with its source.
struct LinkLatency {
  double collective_latency_s = 0;
  std::string source;
};

class LinkDb {
 public:
  static LinkDb load(const std::string& path);  // strict; InputError with the JSON path
  const LinkLatency* find(const std::string& fabric) const;

 private:
  std::map<std::string, LinkLatency> fabrics_;
};

// The link between the devices of a split: per-direction bandwidth and per-collective latency.
struct LinkModel {
  double gbps = 0;
  std::optional<double> latency_s;  // nullopt: no published figure for this fabric
  std::string fabric;
};
// Per-direction bandwidth of a PCIe x16 link of generation `gen` (3 and later) in GB/s: 8, 16, 32,
// 64 GT/s per lane for gen 3-6 (PCI-SIG), 128b/130b coding.
double pcie_x16_gbps(int gen);

// Inside a node: the scale-up fabric; beyond it: the NIC ("infiniband"); else PCIe x16 from its
// generation. nullopt when the record gives no bandwidth for a `count`-device split.
std::optional<LinkModel> link_model(const hwdb::Device& d, std::int64_t count, const LinkDb& links);

}  // namespace deepfit::planner
