// Everything deepfit ships as data, loaded once: models, quantization formats and schemes,
// serving frameworks and devices. Data lives under $DEEPFIT_HOME, else the source tree it was
// built from.
#pragma once

#include <string>
#include <vector>

#include "hwdb/device_db.h"
#include "planner/framework.h"
#include "planner/links.h"
#include "planner/workload.h"
#include "planner/model_spec.h"
#include "planner/quant.h"

namespace deepfit::planner {

std::string data_root();  // $DEEPFIT_HOME or the build's source directory

class Catalog {
 public:
  static Catalog load(const std::string& root);
  const std::string& root() const { return root_; }
  std::vector<std::string> model_ids() const;
  // A shipped id (data/models/<id>.json) or a path to any config.json. Unknown ids: InputError
  // with the closest ids.
  ModelSpec model(const std::string& id_or_path) const;

  hwdb::DeviceDb devices;
  QuantDb quants;
  FrameworkDb frameworks;
  LinkDb links;
  WorkloadDb workloads;

 private:
  std::string root_;
};

}  // namespace deepfit::planner
