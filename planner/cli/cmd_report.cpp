// `deepfit report --html FILE`: the self-contained HTML report. Result documents come from --from
// files; every chart whose documents are missing is computed here for --model (compare over the
// device database, fit across quantizations, cost against context position beside the model it
// improves on, validation against the shipped reference set), except the roofline, which needs a
// `deepfit bench` run (minutes) and is only drawn from --from.
#include <cstdio>
#include <memory>

#include "cli_common.h"
#include "commands.h"
#include "hwdb/json_check.h"
#include "kernels/error.h"
#include "planner/compare.h"
#include "planner/predict.h"
#include "planner/validate.h"
#include "reports/fit_report.h"
#include "reports/html_report.h"

namespace deepfit::cli {

void write_html(const std::string& path, const reports::ReportInput& in) {
  write_file_atomically(path, reports::html_report(in));
  std::fprintf(stderr, "report: wrote %s\n", path.c_str());
}

namespace {

bool has_kind(const std::vector<reports::ResultDoc>& docs, reports::DocKind k) {
  for (const auto& d : docs)
    if (reports::classify(d) == k) return true;
  return false;
}

// The dense-attention model that DeepSeek's V3.2 paper prices V3.2 against (Figure 3: V3.1-Terminus,
// which shares DeepSeek-V3.1's architecture and config; data/models has V3.1).
std::string position_baseline(const std::string& model) {
  return model.rfind("deepseek-v3.2", 0) == 0 ? "deepseek-v3.1" : "";
}

}  // namespace

Command add_report_command(CLI::App& root) {
  struct Args {
    std::string html, model = "deepseek-v3.2", device = "h200-sxm", count = "8";
    std::vector<std::string> from;
    bool no_compute = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("report", "a self-contained HTML report with charts from result records");
  app->add_option("--html", a->html, "the HTML file to write")->required();
  app->add_option("--from", a->from, "result JSON files (bench, compare, fit, predict --context, validate); repeatable");
  app->add_option("--model", a->model, "model of the computed charts (default deepseek-v3.2)");
  app->add_option("--device", a->device, "device of the memory chart (default h200-sxm)");
  app->add_option("--count", a->count, "devices of the memory chart (default 8)");
  app->add_flag("--no-compute", a->no_compute, "draw only what --from holds");
  return {app, [a]() {
            reports::ReportInput in;
            in.title = "deepfit report: " + a->model;
            for (const auto& path : a->from) {
              reports::ResultDoc d{path, hwdb::parse_json_file(path)};
              (void)reports::classify(d);  // InputError naming the file for anything else
              in.docs.push_back(std::move(d));
            }
            if (!a->no_compute) {
              planner::Catalog cat = planner::Catalog::load(planner::data_root());
              const planner::CalibrationDb cal = planner::CalibrationDb::load(cat.root() + "/data/calibration.json");
              if (!has_kind(in.docs, reports::DocKind::kCompare)) {
                std::fprintf(stderr, "report: compare %s over the device database\n", a->model.c_str());
                planner::CompareOptions o;
                o.model = a->model;
                o.concurrency = {1, 2, 4, 8, 16, 32, 64, 128};
                in.docs.push_back({"deepfit compare --model " + a->model, reports::compare_to_json(a->model, planner::compare_setups(cat, cal, o))});
              }
              if (!has_kind(in.docs, reports::DocKind::kFit)) {
                planner::FitOptions opt;
                opt.model = a->model;
                opt.count = a->count;
                const hwdb::Device dev = cat.devices.get(a->device);
                in.docs.push_back({"deepfit fit --model " + a->model + " --device " + a->device + " --count " + a->count,
                                   reports::fits_to_json(planner::plan_fit(cat, opt, &dev))});
              }
              const std::string base = position_baseline(a->model);
              if (!has_kind(in.docs, reports::DocKind::kPosition) && !base.empty()) {
                // The V3.2 paper's setting (Figure 3): H800 at $2 per GPU-hour; 16 devices with
                // attention data parallelism, 32 concurrent requests.
                hwdb::Device h800 = cat.devices.get("h800-sxm");
                hwdb::override_price(h800, 2.0);
                for (const std::string& m : {a->model, base}) {
                  planner::FitOptions opt;
                  opt.model = m;
                  opt.count = "16";
                  opt.parallel = "tp1ep16dp16";
                  opt.concurrency = {32};
                  planner::ServingOptions so;
                  std::vector<planner::FitRecord> records;
                  for (const std::int64_t ctx : {4096, 8192, 16384, 32768, 65536, 131072}) {
                    so.decode_context = ctx;
                    for (auto& r : planner::plan_predict(cat, cal, opt, so, h800)) records.push_back(std::move(r));
                  }
                  in.docs.push_back({"deepfit predict --model " + m + " --device h800-sxm --count 16 --parallel tp1ep16dp16 "
                                     "--concurrency 32 --price-per-hour 2 --context 4K..128K",
                                     nlohmann::json::parse(reports::render_predict(records, reports::Format::kJson))});
                }
              }
              if (!has_kind(in.docs, reports::DocKind::kValidate)) {
                const std::string ref = cat.root() + "/data/reference/public.jsonl";
                in.docs.push_back({"deepfit validate --reference data/reference/public.jsonl",
                                   planner::validation_to_json(planner::validate_reference(cat, ref))});
              }
            }
            in.intro.push_back("Generated by deepfit from the result documents named under each chart. Predictions state "
                               "their basis and expected error in the JSON records; measured values come from this host or "
                               "from published measurements with sources (data/reference).");
            write_html(a->html, in);
            return 0;
          }};
}

}  // namespace deepfit::cli
