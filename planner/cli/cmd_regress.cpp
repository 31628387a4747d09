// `deepfit regress BASE.json NEW.json`: a CI gate on Google Benchmark results (exit 1 on a
// significant regression) and on prediction drift between two deepfit records.
#include <cmath>
#include <memory>

#include "cli_common.h"
#include "commands.h"
#include "kernels/error.h"
#include "regress/compare.h"
#include "reports/table.h"

namespace deepfit::cli {
namespace {

std::string pct(double v) { return (v > 0 ? "+" : "") + reports::fixed(v, 1) + "%"; }
std::string opt_pct(const std::optional<double>& v) { return v ? pct(*v) : std::string("n/a"); }
std::string time_text(double ns) {
  if (ns >= 1e9) return reports::fixed(ns / 1e9, 3) + " s";
  if (ns >= 1e6) return reports::fixed(ns / 1e6, 3) + " ms";
  if (ns >= 1e3) return reports::fixed(ns / 1e3, 3) + " us";
  return reports::fixed(ns, 1) + " ns";
}

int render_bench(const regress::Report& r, const regress::CompareOptions& o, reports::Format f) {
  using nlohmann::json;
  if (f == reports::Format::kJson) {
    json rows = json::array();
    for (const auto& c : r.rows)
      rows.push_back({{"name", c.name}, {"verdict", regress::to_string(c.verdict)}, {"n_base", c.n_base}, {"n_new", c.n_new},
                      {"base_median_ns", c.base_median_ns}, {"new_median_ns", c.new_median_ns}, {"change_pct", c.change_pct},
                      {"ci_low_pct", c.ci_low_pct ? json(*c.ci_low_pct) : json(nullptr)},
                      {"ci_high_pct", c.ci_high_pct ? json(*c.ci_high_pct) : json(nullptr)},
                      {"p_value", c.p_value ? json(*c.p_value) : json(nullptr)}, {"base_cv_pct", c.base_cv_pct},
                      {"new_cv_pct", c.new_cv_pct}, {"note", c.note}});
    emit(json{{"benchmarks", rows}, {"only_in_base", r.only_in_base}, {"only_in_new", r.only_in_new},
              {"summary", {{"regressions", r.regressions}, {"improvements", r.improvements}, {"errors", r.errors},
                           {"threshold_pct", o.threshold_pct}, {"alpha", o.alpha}}}}
             .dump(2) + "\n");
  } else {
    reports::Table t;
    t.headers = {"benchmark", "base", "new", "change", "95% CI", "p", "noise base/new", "n", "verdict"};
    t.right_align = {false, true, true, true, true, true, true, true, false};
    for (const auto& c : r.rows) {
      const bool timed = c.verdict != regress::Verdict::kError && c.n_base > 0;
      t.rows.push_back({c.name, timed ? time_text(c.base_median_ns) : "n/a", timed ? time_text(c.new_median_ns) : "n/a",
                        timed ? pct(c.change_pct) : "n/a",
                        c.ci_low_pct ? opt_pct(c.ci_low_pct) + " .. " + opt_pct(c.ci_high_pct) : "n/a",
                        c.p_value ? reports::fixed(*c.p_value, 4) : "n/a",
                        timed ? reports::fixed(c.base_cv_pct, 1) + "/" + reports::fixed(c.new_cv_pct, 1) + "%" : "n/a",
                        std::to_string(c.n_base) + "/" + std::to_string(c.n_new),
                        std::string(regress::to_string(c.verdict)) + (c.note.empty() ? "" : " (" + c.note + ")")});
    }
    std::string out = reports::render(t, f);
    const std::string bullet = f == reports::Format::kMarkdown ? "- " : "";
    for (const auto& n : r.only_in_base) out += bullet + "only in base: " + n + "\n";
    for (const auto& n : r.only_in_new) out += bullet + "only in new: " + n + "\n";
    if (f != reports::Format::kCsv)
      out += bullet + std::to_string(r.regressions) + " regression(s), " + std::to_string(r.improvements) + " improvement(s), " +
             std::to_string(r.errors) + " error(s); threshold " + reports::fixed(o.threshold_pct, 1) + "%, alpha " +
             reports::fixed(o.alpha, 3) + "\n";
    emit(out);
  }
  return r.regressions > 0 || r.errors > 0 ? 1 : 0;
}

int render_drift(const regress::DriftReport& d, double tol, reports::Format f) {
  using nlohmann::json;
  if (f == reports::Format::kJson) {
    json rows = json::array();
    for (const auto& x : d.changed) rows.push_back({{"path", x.path}, {"base", x.base}, {"new", x.cand}, {"change_pct", x.change_pct}});
    emit(json{{"drift", rows}, {"only_in_base", d.only_in_base}, {"only_in_new", d.only_in_new},
              {"summary", {{"compared", d.compared}, {"changed", d.changed.size()}, {"tolerance_pct", tol}}}}
             .dump(2) + "\n");
  } else {
    reports::Table t;
    t.headers = {"value", "base", "new", "change"};
    t.right_align = {false, true, true, true};
    for (const auto& x : d.changed) t.rows.push_back({x.path, reports::fixed(x.base, 4), reports::fixed(x.cand, 4), pct(x.change_pct)});
    emit(reports::render(t, f) + std::to_string(d.changed.size()) + " of " + std::to_string(d.compared) +
         " values changed by more than " + reports::fixed(tol, 2) + "%\n");
  }
  return d.changed.empty() && d.only_in_base.empty() && d.only_in_new.empty() ? 0 : 1;
}

}  // namespace

Command add_regress_command(CLI::App& root) {
  struct Args {
    std::string base, cand, threshold = "5", alpha = "0.05", drift_tolerance = "1", format = "table";
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("regress", "compare two benchmark runs (Google Benchmark JSON) or two deepfit records; exit 1 on a regression");
  app->add_option("base", a->base, "baseline JSON")->required();
  app->add_option("new", a->cand, "candidate JSON")->required();
  app->add_option("--threshold", a->threshold, "smallest slowdown that counts, percent (default 5)");
  app->add_option("--alpha", a->alpha, "significance level of the Mann-Whitney test (default 0.05)");
  app->add_option("--drift-tolerance", a->drift_tolerance, "records: relative change that counts as drift, percent (default 1)");
  app->add_option("--format", a->format, "table, json, md, csv");
  return {app, [a]() {
            const reports::Format f = reports::parse_format(a->format);
            regress::CompareOptions o;
            o.threshold_pct = parse_positive(a->threshold, "--threshold");
            o.alpha = parse_positive(a->alpha, "--alpha");
            if (o.alpha >= 0.5) throw InputError("--alpha: " + a->alpha + " is too large (expected a level below 0.5, e.g. 0.05)");
            const double tol = parse_positive(a->drift_tolerance, "--drift-tolerance");
            const regress::BenchFile base = regress::read_bench_file(a->base);
            const regress::BenchFile cand = regress::read_bench_file(a->cand);
            if (base.is_records != cand.is_records)
              throw InputError("regress: " + a->base + " and " + a->cand + " are of different kinds (one Google Benchmark JSON, one deepfit record)");
            if (base.is_records) return render_drift(regress::drift(base.records, cand.records, tol), tol, f);
            return render_bench(regress::compare(base, cand, o), o, f);
          }};
}

}  // namespace deepfit::cli
