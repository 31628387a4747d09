// Shared helpers for planner tests: the shipped catalog, loaded once per process.
#pragma once

#include <string>

#include "planner/catalog.h"
#include "planner/parallel.h"
#include "planner/predict.h"

namespace deepfit::planner::test {

inline const Catalog& catalog() {
  static const Catalog cat = Catalog::load(DEEPFIT_SOURCE_DIR);
  return cat;
}

inline const CalibrationDb& calibration() {
  static const CalibrationDb cal = CalibrationDb::load(std::string(DEEPFIT_SOURCE_DIR) + "/data/calibration.json");
  return cal;
}

// A model stored in a scheme on one device under a framework (one device, the framework's default
// split, a bf16 cache); FitSetup points into it, so it is not copyable.
struct Rig {
  Rig(const std::string& model, const std::string& quant, const std::string& device, const std::string& fw)
      : m(catalog().model(model)), st(store_model(m, catalog().quants.scheme(quant), catalog().quants)) {
    s.model = &m;
    s.stored = &st;
    s.device = &catalog().devices.get(device);
    s.framework = &catalog().frameworks.get(fw);
    s.parallel = default_parallel(1, fw);
    s.kv_dtype = "bf16";
  }
  Rig(const Rig&) = delete;
  ModelSpec m;
  StoredModel st;
  FitSetup s;
};

}  // namespace deepfit::planner::test
