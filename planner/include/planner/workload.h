// Named request-length workloads (data/workloads.json): mean input and output tokens of public
// datasets and fixed benchmark shapes, each with its source, for `predict --workload NAME`.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace deepfit::planner {

struct Workload {
  std::string id, name, source;
  std::int64_t input_tokens = 0, output_tokens = 0;  // means, rounded to whole tokens
};

class WorkloadDb {
 public:
  static WorkloadDb load(const std::string& path);  // strict; InputError with the JSON path
  // InputError listing the known names when `id` is unknown.
  const Workload& get(const std::string& id) const;
  std::vector<std::string> ids() const;

 private:
  std::map<std::string, Workload> items_;
};

}  // namespace deepfit::planner
