// `deepfit compare`: which hardware, at what cost, for a model and workload.
#include <chrono>
#include <memory>

#include "cli_common.h"
#include "commands.h"
#include "kernels/error.h"
#include "planner/compare.h"
#include "reports/fit_report.h"
#include "reports/table.h"

namespace deepfit::cli {
Command add_compare_command(CLI::App& root) {
  struct Args {
    std::string model, devices = "all", quants, max_count = "8", concurrency = "1,8,64", input = "1024", output = "256",
                       sort = "cost", slo_ttft, slo_tpot, format = "table", top = "40", html, request_rate, count;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("compare", "configurations that fit, priced per concurrency, sorted, with the Pareto front");
  app->add_option("--model", a->model, "model id or config.json path")->required();
  app->add_option("--devices", a->devices, "all, or device ids comma-separated");
  app->add_option("--quants", a->quants, "quantization schemes, comma-separated");
  app->add_option("--max-count", a->max_count, "largest device count tried (powers of two; default 8)");
  app->add_option("--concurrency", a->concurrency, "concurrent requests, comma-separated (default 1,8,64)");
  app->add_option("--input", a->input, "input tokens per request (default 1024)");
  app->add_option("--output", a->output, "output tokens per request (default 256)");
  app->add_option("--sort", a->sort, "cost, throughput or latency");
  app->add_option("--slo-ttft-ms", a->slo_ttft, "keep rows with TTFT at most this");
  app->add_option("--slo-tpot-ms", a->slo_tpot, "keep rows with TPOT at most this");
  app->add_option("--request-rate", a->request_rate, "requests per second to sustain: drops rows that complete fewer");
  app->add_option("--count", a->count, "auto: per device and quant, only the fewest devices that meet --request-rate and the SLOs");
  app->add_option("--top", a->top, "rows shown in text formats (default 40; JSON has all)");
  app->add_option("--format", a->format, "table, json, md, csv");
  app->add_option("--html", a->html, "also write an HTML report with the throughput and cost charts");
  return {app, [a]() {
            const reports::Format f = reports::parse_format(a->format);
            planner::Catalog cat = planner::Catalog::load(planner::data_root());
            planner::CompareOptions o;
            o.model = a->model;
            if (a->devices != "all") o.devices = split_list(a->devices);
            if (!a->quants.empty()) o.quants = split_list(a->quants);
            o.max_count = parse_tokens(a->max_count, "--max-count", 1, 4096);
            o.concurrency = parse_int_list(a->concurrency, "--concurrency", 1, 1 << 20);
            o.serving.input_tokens = parse_tokens(a->input, "--input", 1, 1LL << 24);
            o.serving.output_tokens = parse_tokens(a->output, "--output", 1, 1LL << 24);
            o.sort = a->sort;
            if (!a->slo_ttft.empty()) o.slo_ttft_ms = parse_positive(a->slo_ttft, "--slo-ttft-ms");
            if (!a->slo_tpot.empty()) o.slo_tpot_ms = parse_positive(a->slo_tpot, "--slo-tpot-ms");
            if (!a->request_rate.empty()) o.request_rate = parse_positive(a->request_rate, "--request-rate");
            if (!a->count.empty()) {
              if (a->count != "auto") throw InputError("--count: compare sweeps counts itself; only 'auto' is accepted (got '" + a->count + "')");
              if (!o.request_rate && !o.slo_ttft_ms && !o.slo_tpot_ms)
                throw InputError("--count auto: give --request-rate or an SLO (--slo-ttft-ms/--slo-tpot-ms) to meet");
              o.count_auto = true;
            }
            const std::int64_t top = parse_tokens(a->top, "--top", 1, 1 << 20);
            const planner::CalibrationDb cal = planner::CalibrationDb::load(cat.root() + "/data/calibration.json");
            const planner::Comparison c = planner::compare_setups(cat, cal, o);
            if (!a->html.empty())
              write_html(a->html, {"deepfit compare: " + a->model, {}, {{"deepfit compare --model " + a->model, reports::compare_to_json(a->model, c)}}});
            if (f == reports::Format::kJson) {
              emit(reports::compare_to_json(a->model, c).dump(2) + "\n");
              return 0;
            }
            reports::Table t;
            t.headers = {"", "device", "count", "quant", "framework", "split", "conc", "tok/s/user", "tok/s/GPU", "req/s", "TTFT ms",
                         "TPOT ms", "$/M out", "exp. error"};
            t.right_align = {false, false, true, false, false, false, true, true, true, true, true, true, true, true};
            auto fx = [](const std::optional<double>& v, int d) { return v ? reports::fixed(*v, d) : std::string("n/a"); };
            std::int64_t shown = 0;
            for (const auto& r : c.rows) {
              if (shown++ >= top) break;
              t.rows.push_back({r.pareto ? "*" : "", r.device, std::to_string(r.count), r.quant, r.framework, r.parallel,
                                std::to_string(r.concurrency), fx(r.speed.decode_tok_s_per_user, 1), fx(r.speed.output_tok_s_per_gpu, 1),
                                reports::fixed(r.requests_per_s, 2), fx(r.speed.ttft_ms, 0), fx(r.speed.tpot_ms, 1), fx(r.speed.cost_usd_per_mtok_output, 2),
                                r.speed.expected_error_pct ? "+/-" + reports::fixed(*r.speed.expected_error_pct, 0) + "%" : "n/a"});
            }
            std::string out = reports::render(t, f);
            if (f != reports::Format::kCsv) {
              out += std::to_string(c.rows.size()) + " rows from " + std::to_string(c.configs_fit) + " of " +
                     std::to_string(c.configs_tried) + " configurations that fit; * = Pareto front (cost vs tok/s/user)\n";
              for (const auto& n : c.notes) out += "note: " + n + "\n";
            }
            emit(out);
            return 0;
          }};
}

}  // namespace deepfit::cli
