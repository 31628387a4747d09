// `deepfit validate --reference FILE.jsonl`: predicted vs measured for every published scenario,
// calibrated leave-one-out; median and p90 absolute error per framework, per metric and overall.
// Without --reference: the host decode loop at several (batch, context) points against the
// performance model's prediction for this host (validate_host).
#include <cstdio>
#include <memory>

#include <unistd.h>

#include "cli_common.h"
#include "commands.h"
#include "hwdb/topology.h"
#include "kernels/error.h"
#include "planner/host_probe.h"
#include "planner/thread_pool.h"
#include "planner/validate.h"
#include "reports/table.h"

namespace deepfit::cli {

namespace {

// The predicted-vs-measured rows and the summaries, in any format.
void emit_validation(const planner::Validation& v, reports::Format f) {
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
      for (const auto& [k, g] : v.fitted)
        if (g.attention_factor && g.compute_factor)
          out += "fitted on all " + std::to_string(g.rows) + " points: weight bytes x " + reports::fixed(g.roofline_factor, 2) +
                 " + weight FLOPs x " + reports::fixed(*g.compute_factor, 2) + " + attention x " + reports::fixed(*g.attention_factor, 2) +
                 " over the host roofline\n";
    }
    emit(out);
  }
}

template <class Args>
int run_host_validation(const Args& a, const planner::Catalog& cat, reports::Format f) {
  planner::HostValidationOptions opt;
  if (!a.model.empty()) opt.model = a.model;
  if (!a.layers.empty()) opt.layers = parse_tokens(a.layers, "--layers", 0, 4096);
  if (!a.experts.empty()) opt.experts = parse_tokens(a.experts, "--experts", 0, 1 << 16);
  if (!a.quant.empty()) opt.quant = a.quant;
  if (!a.kv_cache.empty()) opt.kv_cache = a.kv_cache;
  if (!a.points.empty()) opt.points = planner::parse_host_points(a.points);
  if (!a.steps.empty()) opt.steps = static_cast<int>(parse_tokens(a.steps, "--steps", 1, 1000));
  const std::size_t n = opt.points.empty() ? planner::default_host_points().size() : opt.points.size();
  planner::require_host_points(n, "--points");  // before the probe or any point runs
  const hwdb::Device host = planner::host_device(false, progress_line);
  const hwdb::Topology topo = hwdb::Topology::host();
  const hwdb::TopologySummary ts = topo.summary();
  planner::ThreadPool pool(topo, a.threads > 0 ? a.threads : std::max(1, ts.num_cores > 0 ? ts.num_cores : ts.num_pus));
  Progress progress("validate", n);
  const planner::Validation v = planner::validate_host(cat, host, opt, pool, [&](std::size_t done, std::size_t, const std::string& id) {
    progress.step(done, id);
  });
  progress.finish();
  if (!a.html.empty()) write_html(a.html, {"deepfit validate: host decode loop", {}, {{"host", planner::validation_to_json(v)}}});
  if (!a.write_calibration.empty())
    write_file_atomically(a.write_calibration, planner::host_calibration_to_json(v, host, opt).dump(1) + "\n");
  emit_validation(v, f);
  return 0;
}

}  // namespace

Command add_validate_command(CLI::App& root) {
  struct Args {
    std::string reference, format = "table", write_calibration, html;
    std::string model, quant, kv_cache, points, layers, experts, steps;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("validate", "check the performance model against published measurements (--reference, "
                                                  "leave-one-out) or against the host decode loop (without it)");
  app->add_option("--reference", a->reference, "scenarios, one JSON object per line (schema: ../shared/reference/README.md)");
  app->add_option("--model", a->model, "host mode: model id or config.json path (default deepseek-v3.2)");
  app->add_option("--layers", a->layers, "host mode: run the first N layers (default 4)");
  app->add_option("--experts", a->experts, "host mode: routed experts per MoE layer (default 32)");
  app->add_option("--quant", a->quant, "host mode: matrices in bf16, q8_0, q4_k (default) or fp8");
  app->add_option("--kv-cache", a->kv_cache, "host mode: MLA latent cache bf16 (default) or fp8");
  app->add_option("--points", a->points, "host mode: BATCHxCONTEXT list (default 1x1K,1x16K,4x4K,8x1K,16x4K,4x32K,2x8K; at least 5)");
  app->add_option("--steps", a->steps, "host mode: timed steps per point (default 8)");
  app->add_option("--threads", a->threads, "host mode: threads (default: one per core)")->check(CLI::Range(1, 1024));
  app->add_option("--format", a->format, "table, json, md, csv");
  app->add_option("--write-calibration", a->write_calibration, "write the fit: with --reference the published groups (data/calibration.json); without, this host's (predict --host-calibration)");
  app->add_option("--html", a->html, "also write an HTML report with the predicted-vs-measured chart");
  return {app, [a]() {
            const reports::Format f = reports::parse_format(a->format);
            planner::Catalog cat = planner::Catalog::load(planner::data_root());
            if (a->reference.empty()) return run_host_validation(*a, cat, f);
            if (!a->model.empty() || !a->quant.empty() || !a->kv_cache.empty() || !a->points.empty() || !a->layers.empty() ||
                !a->experts.empty() || !a->steps.empty() || a->threads > 0)
              throw InputError("--model/--layers/--experts/--quant/--kv-cache/--points/--steps/--threads are for the host mode "
                               "(validate without --reference); --reference takes the models from its scenarios");
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
            emit_validation(v, f);
            return v.malformed.empty() ? 0 : 1;
          }};
}

}  // namespace deepfit::cli
