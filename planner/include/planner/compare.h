// `deepfit compare`: devices x counts x quantizations x parallel layouts that fit, each priced by
// `predict` at every concurrency, filtered by SLOs, sorted, with the cost/latency Pareto front.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "planner/predict.h"

namespace deepfit::planner {

struct CompareOptions {
  std::string model;
  std::vector<std::string> devices;  // empty: every device
  std::vector<std::string> quants;   // empty: a standard set
  std::int64_t max_count = 8;
  std::vector<std::int64_t> concurrency = {1, 8, 64};
  ServingOptions serving;
  std::string sort = "cost";         // cost, throughput, latency
  std::optional<double> slo_ttft_ms, slo_tpot_ms;
  // Requests per second the setup must sustain: completions per second at a concurrency are
  // output_tok_s_total / output_tokens; rows below the rate are dropped.
  std::optional<double> request_rate;
  bool count_auto = false;  // per device and quant, keep only the fewest devices that qualify
};

struct CompareRow {
  std::string device, quant, framework, parallel;
  std::int64_t count = 1, concurrency = 1;
  Speed speed;
  double requests_per_s = 0;  // completions per second at this concurrency
  bool pareto = false;  // no other row is both cheaper and faster per user
};

struct Comparison {
  std::vector<CompareRow> rows;
  std::size_t configs_tried = 0, configs_fit = 0;
  std::vector<std::string> notes;
};

Comparison compare_setups(const Catalog& cat, const CalibrationDb& cal, const CompareOptions& opt);

}  // namespace deepfit::planner
