// `deepfit predict`: for each concurrency, the memory verdict of `fit` plus serving speed and
// cost from the performance model, calibrated with data/calibration.json (fitted by `validate`
// from published measurements). Every result states its basis and its expected error.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "planner/fit.h"
#include "planner/perf_model.h"

namespace deepfit::planner {

struct CalibrationGroup {
  double roofline_factor = 1, per_layer_overhead_s = 0;
  std::size_t rows = 0;
  std::optional<double> loo_median_abs_error_pct;
};

class CalibrationDb {
 public:
  static CalibrationDb load(const std::string& path);  // strict; InputError with the JSON path
  // The narrowest group with a leave-one-out error: framework/metric/device-kind, then
  // framework/metric, then metric. nullopt: datasheet roofline only. `key` receives the group name.
  std::optional<CalibrationGroup> find(const std::string& framework, const std::string& metric, const std::string& kind,
                                       std::string* key) const;

 private:
  std::map<std::string, CalibrationGroup> groups_;
};

// This machine's decode efficiencies, fitted by `deepfit validate --write-calibration FILE`
// without --reference on the host decode loop: a decode step takes
//   weight_bytes x bytes / bandwidth + weight_flops x FLOPs / peak + attention x attention roofline
// (loop_terms in perf_model.h), on the probe's record of this host.
struct HostCalibration {
  double weight_bytes = 1, weight_flops = 1, attention = 1;
  std::string host_id, cpu, matrix_format;  // the record it was fitted on and the loop's format
  std::size_t points = 0;
  double loo_median_abs_error_pct = 0;
  static HostCalibration load(const std::string& path);  // strict; InputError with the JSON path
};

struct ServingOptions {
  std::int64_t input_tokens = 1024;
  std::int64_t output_tokens = 256;
  // Price decode at this KV position instead of the request's average (input + output/2): the
  // cost-per-token-position view of DeepSeek's V3.2 paper (Figure 3).
  std::optional<std::int64_t> decode_context;
  std::optional<double> mtp_acceptance;    // MTP speculative decoding (one draft token)
  std::optional<double> usd_per_kwh;       // energy cost at TDP
  const hwdb::Device* host = nullptr;      // hybrid CPU+GPU: the CPU computing the routed experts
  // Decode on this host priced with the host loop's fit (--device host --framework deepfit).
  const HostCalibration* host_calibration = nullptr;
};

// Fills the speed fields of each result of `rec` (computed by plan_fit with a device).
void predict_speed(const Catalog& cat, const CalibrationDb& cal, FitRecord& rec, const ServingOptions& so,
                   const FitSetup& setup);

// fit + speed for every quantization asked for.
std::vector<FitRecord> plan_predict(const Catalog& cat, const CalibrationDb& cal, const FitOptions& opt, const ServingOptions& so,
                                    const hwdb::Device& device);

}  // namespace deepfit::planner
