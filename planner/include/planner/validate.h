// `deepfit validate --reference FILE.jsonl`: every published scenario evaluated against the
// performance model, with each prediction calibrated leave-one-out (the efficiency of its
// framework/metric/device-class group fitted on the other rows only), so the error reported is
// the error a user would see. Scenarios the model cannot evaluate are listed with the reason.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "planner/catalog.h"
#include "planner/host_decode.h"

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
    // Host mode: roofline_factor multiplies the weights' bytes over the bandwidth; these the
    // weights' FLOPs over the format's peak and attention's roofline.
    std::optional<double> compute_factor, attention_factor;
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

// `deepfit validate` without a reference: the host decode loop (host_decode.h) at several (batch,
// context) points against the performance model's decode step for the same scaled model on this
// host's probe record. Each point's prediction is the planner's work (weight bytes over the probe's
// triad, weight FLOPs over the probe's peak for the format, attention's roofline
// over the KV bytes and the bf16 peak) times efficiencies fitted leave-one-out on the other points'
// measured steps: t = a x bytes + c x FLOPs + a_a x attention + o x layers, each >= 0, least
// squares on the relative error.
struct HostPoint {
  std::int64_t batch = 1, context = 4096;
};
struct HostValidationOptions {
  std::string model = "deepseek-v3.2";
  std::int64_t layers = 4, experts = 32;  // the scaled model the loop runs (scale_for_host)
  std::string quant = "q4_k", kv_cache = "bf16";
  std::vector<HostPoint> points;          // empty: default_host_points()
  int steps = 8;
  std::uint64_t seed = 1;
};
// The loop's storage as a scheme: every matrix in `quant` (bf16, q8_0, q4_k, fp8); kv_b, the
// router and the indexer's head weights in bf16; the embedding in bf16; vectors in f32.
Scheme host_loop_scheme(const std::string& quant);
constexpr std::size_t kMinHostPoints = 5;  // each point is fitted on >= 4 others for 3 parameters
std::vector<HostPoint> default_host_points();
// InputError "<where>: N point(s); at least kMinHostPoints are needed ..." when n is too few.
void require_host_points(std::size_t n, const std::string& where);
// "BxL,BxL,...", contexts with an optional K suffix (1x4K). InputError names the bad item.
std::vector<HostPoint> parse_host_points(const std::string& text);

// One point as the loop ran it: the median step, or why it could not run.
struct HostMeasurement {
  HostPoint point;
  double step_s = 0;
  // The triad measured right after the point (0: none), reported with it. Not used in the terms:
  // on this shared VM it moved between 27 and 65 GB/s while the loop's own weight streaming held
  // within +-10 %, so it added noise instead of removing it.
  double triad_gbps = 0;
  std::string skipped;    // non-empty: the reason
};

// The planner's three terms of a point, in seconds: weight bytes over the record's bandwidth,
// weight FLOPs over its peak for the format, and attention's roofline.
std::array<double, 3> host_point_terms(const Catalog& cat, const hwdb::Device& host, const HostValidationOptions& opt,
                                       const HostPoint& point);

// The pure part: planner predictions for measured points, fitted leave-one-out.
Validation validate_host_measurements(const Catalog& cat, const hwdb::Device& host, const HostValidationOptions& opt,
                                      const std::vector<HostMeasurement>& measured);
// The fit on all points of a host validation as the file `predict --host-calibration` reads
// (HostCalibration in predict.h).
nlohmann::json host_calibration_to_json(const Validation& v, const hwdb::Device& host, const HostValidationOptions& opt);
// Runs the loop at every point on `pool` (progress(done, total, id) before each), then the above.
Validation validate_host(const Catalog& cat, const hwdb::Device& host, const HostValidationOptions& opt, ThreadPool& pool,
                         const std::function<void(std::size_t, std::size_t, const std::string&)>& progress = {});

}  // namespace deepfit::planner
