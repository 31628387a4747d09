// `deepfit regress`: per benchmark, the median change with a confidence interval, the two-sided
// Mann-Whitney U test over repetitions, and each side's noise; a regression is a change worse
// than the threshold that is also significant. Also prediction drift between two deepfit records.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "regress/gbench.h"

namespace deepfit::regress {

enum class Verdict { kRegression, kImprovement, kNoChange, kNotEnoughRepetitions, kError };
const char* to_string(Verdict v);

struct Comparison {
  std::string name;
  std::size_t n_base = 0, n_new = 0;
  double base_median_ns = 0, new_median_ns = 0;
  double change_pct = 0;                    // new median / base median - 1, in percent (time: + is slower)
  std::optional<double> ci_low_pct, ci_high_pct;  // Hodges-Lehmann interval of the ratio, in percent
  std::optional<double> p_value;
  double base_cv_pct = 0, new_cv_pct = 0;
  Verdict verdict = Verdict::kNoChange;
  std::string note;
};

struct CompareOptions {
  double threshold_pct = 5.0;
  double alpha = 0.05;
};

struct Report {
  std::vector<Comparison> rows;
  std::vector<std::string> only_in_base, only_in_new;
  int regressions = 0, improvements = 0, errors = 0;
};

Report compare(const BenchFile& base, const BenchFile& cand, const CompareOptions& opt);
Comparison compare_samples(const std::string& name, const std::vector<double>& base, const std::vector<double>& cand,
                           const CompareOptions& opt);

// Prediction drift: every numeric value at the same JSON path, relative change beyond tolerance.
struct Drift {
  std::string path;
  double base = 0, cand = 0, change_pct = 0;
};
struct DriftReport {
  std::vector<Drift> changed;
  std::vector<std::string> only_in_base, only_in_new;
  std::size_t compared = 0;
};
DriftReport drift(const nlohmann::json& base, const nlohmann::json& cand, double tolerance_pct);

}  // namespace deepfit::regress
