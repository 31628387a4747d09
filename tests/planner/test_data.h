// Shared helpers for planner tests: the shipped catalog, loaded once per process.
#pragma once

#include "planner/catalog.h"
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

}  // namespace deepfit::planner::test
