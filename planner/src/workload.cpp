// Named workloads (see workload.h).
#include "planner/workload.h"

#include "hwdb/json_check.h"
#include "kernels/error.h"

namespace deepfit::planner {

WorkloadDb WorkloadDb::load(const std::string& path) {
  using hwdb::Json;
  const Json j = hwdb::parse_json_file(path);
  const hwdb::JsonWhere w{path, ""};
  hwdb::check_keys(j, w, {"_comment", "workloads"});
  const Json& all = hwdb::required(j, w, "workloads");
  hwdb::require_object(all, w / "workloads");
  WorkloadDb db;
  for (const auto& [k, v] : all.items()) {
    const hwdb::JsonWhere ww = w / "workloads" / k;
    hwdb::check_keys(v, ww, {"name", "input_tokens_mean", "output_tokens_mean", "input_tokens_median", "output_tokens_median",
                             "tokenizer", "source", "notes"});
    Workload x;
    x.id = k;
    x.name = hwdb::get_string(v, ww, "name");
    x.source = hwdb::get_string(v, ww, "source");
    x.input_tokens = hwdb::get_int(v, ww, "input_tokens_mean", 1, 1LL << 24, "tokens");
    x.output_tokens = hwdb::get_int(v, ww, "output_tokens_mean", 1, 1LL << 24, "tokens");
    db.items_[k] = x;
  }
  return db;
}

const Workload& WorkloadDb::get(const std::string& id) const {
  auto it = items_.find(id);
  if (it != items_.end()) return it->second;
  std::string known;
  for (const auto& [k, v] : items_) known += (known.empty() ? "" : ", ") + k;
  throw InputError("--workload: unknown workload '" + id + "' (known: " + known + ")");
}

std::vector<std::string> WorkloadDb::ids() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : items_) out.push_back(k);
  return out;
}

}  // namespace deepfit::planner
