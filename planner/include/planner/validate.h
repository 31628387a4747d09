// `deepfit validate --reference FILE.jsonl`: every published scenario evaluated against the
// performance model, with each prediction calibrated leave-one-out (the efficiency of its
// framework/metric/device-class group fitted on the other rows only), so the error reported is
// the error a user would see. Scenarios the model cannot evaluate are listed with the reason.
#pragma once

#include <cstdint>
#include <optional>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "planner/catalog.h"

namespace deepfit::planner {

struct ValidationRow {
  std::string id, metric, framework, group;
  double predicted = 0, measured = 0, error_pct = 0;  // error = predicted / measured - 1
  double roofline = 0;                                  // uncalibrated (datasheet) prediction
  std::string basis;
};

struct Skipped {
  std::string id;
  std::string reason;
};

struct Summary {
  std::size_t n = 0;
  double median_abs_error_pct = 0, p90_abs_error_pct = 0;
};

struct Validation {
  std::vector<ValidationRow> rows;
  std::vector<Skipped> skipped;
  std::vector<std::string> malformed;  // "line N: reason"
  Summary summary;
  std::vector<std::pair<std::string, Summary>> by_framework, by_metric;
  // Per group, fitted on all its rows (what a prediction for a new setup would use): time =
  // roofline_factor x datasheet roofline time + per-layer overhead x layers.
  struct GroupFit {
    double roofline_factor = 1, per_layer_overhead_s = 0;
    std::size_t rows = 0;
    std::optional<double> loo_median_abs_error_pct;  // each member predicted from the others
    std::vector<std::string> ids;                    // the measurements it was fitted from
  };
  std::vector<std::pair<std::string, GroupFit>> fitted;
};

// `progress(done, total, id)` after each evaluated scenario's leave-one-out fit, when given.
Validation validate_reference(const Catalog& cat, const std::string& path,
                              const std::function<void(std::size_t, std::size_t, const std::string&)>& progress = {});
nlohmann::json validation_to_json(const Validation& v);
// The fitted groups as data/calibration.json (what `predict` reads), with the rows behind each.
nlohmann::json calibration_to_json(const Validation& v, const std::string& reference_path);
Summary summarize(std::vector<double> abs_errors);

}  // namespace deepfit::planner
