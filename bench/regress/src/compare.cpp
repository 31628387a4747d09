// Benchmark comparison and prediction drift (see compare.h).
#include "regress/compare.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "regress/stats.h"

namespace deepfit::regress {

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::kRegression: return "regression";
    case Verdict::kImprovement: return "improvement";
    case Verdict::kNoChange: return "no change";
    case Verdict::kNotEnoughRepetitions: return "not enough repetitions";
    case Verdict::kError: return "error";
  }
  return "?";
}

Comparison compare_samples(const std::string& name, const std::vector<double>& base, const std::vector<double>& cand,
                           const CompareOptions& opt) {
  Comparison c;
  c.name = name;
  c.n_base = base.size();
  c.n_new = cand.size();
  c.base_median_ns = median(base);
  c.new_median_ns = median(cand);
  c.change_pct = (c.new_median_ns / c.base_median_ns - 1) * 100;
  c.base_cv_pct = cv(base) * 100;
  c.new_cv_pct = cv(cand) * 100;
  if (base.size() < 2 || cand.size() < 2 || min_p_value(base.size(), cand.size()) >= opt.alpha) {
    c.verdict = Verdict::kNotEnoughRepetitions;
    c.note = "no outcome of " + std::to_string(base.size()) + " vs " + std::to_string(cand.size()) +
             " repetitions can be significant at alpha " + std::to_string(opt.alpha).substr(0, 4) + "; use 5 or more";
    return c;
  }
  const UTest t = mann_whitney(base, cand);
  c.p_value = t.p_value;
  // The interval is for the ratio: a shift of log-times.
  std::vector<double> lb, lc;
  for (double x : base) lb.push_back(std::log(x));
  for (double x : cand) lc.push_back(std::log(x));
  const Shift s = hodges_lehmann(lb, lc, opt.alpha);
  if (s.has_interval) {
    c.ci_low_pct = (std::exp(s.low) - 1) * 100;
    c.ci_high_pct = (std::exp(s.high) - 1) * 100;
  }
  const bool significant = t.p_value < opt.alpha;
  if (significant && c.change_pct > opt.threshold_pct) c.verdict = Verdict::kRegression;
  else if (significant && c.change_pct < -opt.threshold_pct) c.verdict = Verdict::kImprovement;
  else c.verdict = Verdict::kNoChange;
  return c;
}

Report compare(const BenchFile& base, const BenchFile& cand, const CompareOptions& opt) {
  Report r;
  std::map<std::string, const Series*> b, n;
  for (const auto& s : base.series) b[s.name] = &s;
  for (const auto& s : cand.series) n[s.name] = &s;
  for (const auto& s : base.series)
    if (!n.count(s.name)) r.only_in_base.push_back(s.name);
  for (const auto& s : cand.series) {
    auto it = b.find(s.name);
    if (it == b.end()) {
      r.only_in_new.push_back(s.name);
      continue;
    }
    const Series& x = *it->second;
    Comparison c;
    if (x.error || s.error) {
      c.name = s.name;
      c.verdict = Verdict::kError;
      c.note = s.error ? "candidate: " + s.error_message : "baseline: " + x.error_message;
      ++r.errors;
      r.rows.push_back(c);
      continue;
    }
    auto samples = [](const Series& q) {
      if (!q.real_ns.empty()) return q.real_ns;
      return q.aggregate_median_ns ? std::vector<double>{*q.aggregate_median_ns} : std::vector<double>{};
    };
    const auto xs = samples(x), ys = samples(s);
    if (xs.empty() || ys.empty()) {
      c.name = s.name;
      c.verdict = Verdict::kNotEnoughRepetitions;
      c.note = "no timing rows";
      r.rows.push_back(c);
      continue;
    }
    c = compare_samples(s.name, xs, ys, opt);
    if (x.real_ns.empty() || s.real_ns.empty()) c.note = "only aggregate rows: rerun without --benchmark_report_aggregates_only";
    if (c.verdict == Verdict::kRegression) ++r.regressions;
    if (c.verdict == Verdict::kImprovement) ++r.improvements;
    r.rows.push_back(c);
  }
  return r;
}

namespace {

void flatten(const nlohmann::json& j, const std::string& path, std::map<std::string, double>& out) {
  if (j.is_number()) {
    out[path] = j.get<double>();
  } else if (j.is_object()) {
    for (const auto& [k, v] : j.items()) flatten(v, path + "/" + k, out);
  } else if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i) flatten(j[i], path + "/" + std::to_string(i), out);
  }
}

}  // namespace

DriftReport drift(const nlohmann::json& base, const nlohmann::json& cand, double tolerance_pct) {
  std::map<std::string, double> a, b;
  flatten(base, "", a);
  flatten(cand, "", b);
  DriftReport r;
  for (const auto& [path, x] : a) {
    auto it = b.find(path);
    if (it == b.end()) {
      r.only_in_base.push_back(path);
      continue;
    }
    ++r.compared;
    const double y = it->second;
    const double denom = std::max(std::fabs(x), 1e-300);
    const double change = (y - x) / denom * 100;
    if (std::fabs(change) > tolerance_pct && !(x == 0 && y == 0)) r.changed.push_back({path, x, y, change});
  }
  for (const auto& [path, y] : b)
    if (!a.count(path)) r.only_in_new.push_back(path);
  return r;
}

}  // namespace deepfit::regress
