// `deepfit validate --reference FILE.jsonl`: predicted vs measured for every published scenario,
// calibrated leave-one-out; median and p90 absolute error per framework, per metric and overall.
#include <cstdio>
#include <memory>

#include <unistd.h>

#include "cli_common.h"
#include "commands.h"
#include "kernels/error.h"
#include "planner/validate.h"
#include "reports/table.h"

namespace deepfit::cli {

Command add_validate_command(CLI::App& root) {
  struct Args {
    std::string reference, format = "table", write_calibration, html;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("validate", "check the performance model against published measurements (leave-one-out)");
  app->add_option("--reference", a->reference, "scenarios, one JSON object per line (schema: ../shared/reference/README.md)")->required();
  app->add_option("--format", a->format, "table, json, md, csv");
  app->add_option("--write-calibration", a->write_calibration, "write the fitted groups (what predict uses), e.g. data/calibration.json");
  app->add_option("--html", a->html, "also write an HTML report with the predicted-vs-measured chart");
  return {app, [a]() {
            const reports::Format f = reports::parse_format(a->format);
            planner::Catalog cat = planner::Catalog::load(planner::data_root());
            Progress progress("validate", 0);
            std::size_t last = 0;
            const planner::Validation v = planner::validate_reference(cat, a->reference, [&](std::size_t done, std::size_t total, const std::string& id) {
              if (last == 0) progress = Progress("validate", total);
              // Every scenario on a terminal; every 50th (and the last) in a log.
              if (isatty(fileno(stderr)) || done % 50 == 0 || done == total) progress.step(done, id);
              last = done;
            });
            if (last > 0) progress.finish();
            if (!a->write_calibration.empty())
              write_file_atomically(a->write_calibration, planner::calibration_to_json(v, a->reference).dump(1) + "\n");
            if (!a->html.empty())
              write_html(a->html, {"deepfit validate: " + a->reference, {}, {{a->reference, planner::validation_to_json(v)}}});
            for (const auto& m : v.malformed) std::fprintf(stderr, "error: %s: %s\n", a->reference.c_str(), m.c_str());
            if (f == reports::Format::kJson) {
              emit(planner::validation_to_json(v).dump(2) + "\n");
            } else {
              reports::Table t;
              t.headers = {"id", "metric", "framework", "predicted", "measured", "error"};
              t.right_align = {false, false, false, true, true, true};
              for (const auto& r : v.rows)
                t.rows.push_back({r.id, r.metric, r.framework, reports::fixed(r.predicted, 1), reports::fixed(r.measured, 1),
                                  (r.error_pct > 0 ? "+" : "") + reports::fixed(r.error_pct, 1) + "%"});
              reports::Table s;
              s.headers = {"group", "n", "median |error|", "p90 |error|"};
              s.right_align = {false, true, true, true};
              auto add = [&](const std::string& name, const planner::Summary& x) {
                s.rows.push_back({name, std::to_string(x.n), reports::fixed(x.median_abs_error_pct, 1) + "%",
                                  reports::fixed(x.p90_abs_error_pct, 1) + "%"});
              };
              for (const auto& [k, x] : v.by_framework) add("framework " + k, x);
              for (const auto& [k, x] : v.by_metric) add("metric " + k, x);
              add("overall", v.summary);
              std::string out = reports::render(t, f);
              if (f != reports::Format::kCsv) {
                out += "\n" + reports::render(s, f) + "\n" + std::to_string(v.skipped.size()) +
                       " scenario(s) skipped (--format json lists each with its reason)\n";
              }
              emit(out);
            }
            return v.malformed.empty() ? 0 : 1;
          }};
}

}  // namespace deepfit::cli
