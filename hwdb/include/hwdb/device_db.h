// Loads and validates device records strictly (unknown keys, missing fields, out-of-range values
// are one InputError line naming the file and JSON path) and serializes them back to JSON.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hwdb/device.h"

namespace deepfit::hwdb {

// Parses one record; `origin` names the file in messages. The id must match `expected_id` when given.
Device device_from_json(const nlohmann::json& j, const std::string& origin, const std::string& expected_id = "");
Device load_device_file(const std::string& path, bool id_must_match_file_name);
nlohmann::json device_to_json(const Device& d);

class DeviceDb {
 public:
  // Every *.json file in `dir`, sorted by id. Throws InputError on the first bad record.
  static DeviceDb load_dir(const std::string& dir);
  void add(Device d);  // a user's --device-file; replaces a shipped record of the same id
  const Device& get(const std::string& id) const;  // unknown id: InputError suggesting close ids
  const Device* find(const std::string& id) const;
  const std::vector<Device>& all() const { return devices_; }

 private:
  std::vector<Device> devices_;
};

// Apply one-run overrides; each is recorded in Device::overrides. Values are checked.
void override_price(Device& d, double usd_per_hour);
void select_memory_gb(Device& d, double memory_gb);

// Closest ids by edit distance, for "did you mean" hints.
std::vector<std::string> closest_names(const std::string& name, const std::vector<std::string>& candidates,
                                       std::size_t max_results = 3);
// "closest: a, b; " or "" when nothing is close; for hints in error messages.
std::string did_you_mean(const std::string& name, const std::vector<std::string>& candidates);

}  // namespace deepfit::hwdb
