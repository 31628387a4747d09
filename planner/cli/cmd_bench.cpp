// `deepfit bench`: runs the host kernel suite (bench/suite) through Google Benchmark with a
// progress line on stderr, and writes Google Benchmark compatible JSON (plus deepfit's provenance
// in its context and efficiencies per benchmark) or a table. `deepfit bench decode` lives in
// cmd_bench_decode.cpp.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <regex>
#include <sstream>

#include "cli_common.h"
#include "commands.h"
#include "harness/provenance.h"
#include "hwdb/topology.h"
#include "planner/catalog.h"
#include "planner/host_decode.h"
#include "planner/thread_pool.h"
#include "kernels/error.h"
#include "regress/gbench.h"
#include "regress/summary.h"
#include "reports/table.h"
#include "suite/suite.h"

namespace deepfit::cli {
namespace {

// Google Benchmark JSON into a string, plus a progress line per finished benchmark.
class ProgressReporter : public benchmark::BenchmarkReporter {
 public:
  explicit ProgressReporter(std::size_t total) : progress_("bench", total) {
    json_.SetOutputStream(&out_);
    json_.SetErrorStream(&err_);
  }
  bool ReportContext(const Context& context) override { return json_.ReportContext(context); }
  void ReportRuns(const std::vector<Run>& runs) override {
    const std::vector<Run> named = bench::with_stable_names(runs);
    json_.ReportRuns(named);
    if (named.empty()) return;
    ++done_;
    progress_.step(done_, named.front().run_name.str());
  }
  void Finalize() override {
    json_.Finalize();
    progress_.finish();
  }
  std::string json() const { return out_.str(); }

 private:
  benchmark::JSONReporter json_;
  std::ostringstream out_, err_;
  Progress progress_;
  std::size_t done_ = 0;
};

std::string rate(const std::optional<double>& v, double scale, int decimals) {
  return v ? reports::fixed(*v / scale, decimals) : std::string("n/a");
}

std::string percent(const std::optional<double>& v) { return v ? reports::fixed(100.0 * *v, 0) + " %" : std::string(""); }

reports::Table bench_table(const regress::BenchSummary& s) {
  reports::Table t;
  t.headers = {"benchmark", "median time (us)", "cv", "GB/s", "GFLOP/s", "of triad", "of peak"};
  for (const regress::BenchRow& r : s.rows) {
    if (!r.error.empty()) {
      t.rows.push_back({r.name, r.error.rfind("unavailable", 0) == 0 ? r.error : "failed: " + r.error, "", "", "", "", ""});
      continue;
    }
    const bool moves_bytes = r.bytes_per_second && *r.bytes_per_second > 0;
    t.rows.push_back({r.name, rate(r.median_ns, 1e3, 1), reports::fixed(100.0 * r.cv, 1) + " %" + (r.unstable ? " unstable" : ""),
                      moves_bytes ? rate(r.bytes_per_second, 1e9, 1) : "", rate(r.flops_per_second, 1e9, 1), percent(r.bw_efficiency),
                      percent(r.compute_efficiency)});
  }
  return t;
}

template <class Args>
int run_bench_decode(const Args& d) {
  const reports::Format f = reports::parse_format(d.format);
  if (f != reports::Format::kTable && f != reports::Format::kJson)
    throw InputError("--format: bench decode prints table or json, got '" + d.format + "'");
  planner::Catalog cat = planner::Catalog::load(planner::data_root());
  const planner::ModelSpec model = cat.model(d.model);
  planner::HostDecodeOptions opt;
  opt.layers = parse_tokens(d.layers, "--layers", 0, 4096);
  opt.experts = parse_tokens(d.experts, "--experts", 0, 1 << 16);
  opt.quant = d.quant;
  opt.kv_cache = d.kv_cache;
  opt.batch = parse_tokens(d.batch, "--batch", 1, 4096);
  opt.context = parse_tokens(d.context, "--context", 1, 1LL << 24);
  opt.steps = static_cast<int>(parse_tokens(d.steps, "--steps", 1, 1000));
  const hwdb::Topology topo = hwdb::Topology::host();
  const hwdb::TopologySummary s = topo.summary();
  const int threads = d.threads > 0 ? d.threads : std::max(1, s.num_cores > 0 ? s.num_cores : s.num_pus);
  planner::ThreadPool pool(topo, threads);
  const planner::HostDecodeResult r = planner::run_host_decode(model, opt, pool);
  const nlohmann::json j = planner::host_decode_to_json(r);
  const std::string json_text = j.dump(2) + "\n";
  if (!d.out.empty()) write_file_atomically(d.out, json_text);
  if (f == reports::Format::kJson) {
    emit(json_text);
    return 0;
  }
  reports::Table t;
  t.headers = {"op", "ms per step", "share", "calls", "GB/s", "GFLOP/s"};
  t.right_align = {false, true, true, true, true, true};
  for (const auto& o : j.at("ops"))
    t.rows.push_back({o.at("op").get<std::string>(), reports::fixed(o.at("ms").get<double>(), 3),
                      reports::fixed(100 * o.at("share").get<double>(), 1) + " %", std::to_string(o.at("calls").get<long long>()),
                      reports::fixed(o.at("gbps").get<double>(), 1),
                      reports::fixed(o.at("ms").get<double>() > 0 ? o.at("flops").get<double>() / (o.at("ms").get<double>() * 1e6) : 0.0, 1)});
  char head[512];
  std::snprintf(head, sizeof head,
                "%s, %lld layers, %lld experts, %s weights, %s cache, batch %lld, context %lld, %d threads: %.2f tok/s "
                "(step %.1f ms, median of %zu; weights %.2f GB, cache %.2f GB)\n",
                r.model.id.c_str(), static_cast<long long>(r.model.num_layers), static_cast<long long>(r.model.num_experts),
                opt.quant.c_str(), opt.kv_cache.c_str(), static_cast<long long>(opt.batch), static_cast<long long>(opt.context),
                r.threads, r.decode_tok_s, r.step_ms_median, r.step_ms.size(), r.weights_bytes / 1e9, r.kv_cache_bytes / 1e9);
  std::string text = head + reports::render(t, f);
  for (const auto& n : r.notes) text += "note: " + n + "\n";
  emit(text);
  return 0;
}

}  // namespace

Command add_bench_command(CLI::App& root) {
  struct Args {
    std::string filter = ".";
    bool quick = false, list = false;
    std::string format = "table", out, html;
    int repetitions = 0, threads = 0;
    double min_time_s = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("bench", "run the host kernel suite (probes, expert GEMV/GEMM, attention, indexer, decode loop)");
  app->add_option("--filter", a->filter, "regular expression over benchmark names (Google Benchmark's --benchmark_filter)");
  app->add_flag("--quick", a->quick, "a subset of shapes, one repetition, short runs");
  app->add_flag("--list", a->list, "list the benchmark names and exit");
  app->add_option("--format", a->format, "table or json");
  app->add_option("--out", a->out, "also write the Google Benchmark JSON to this file");
  app->add_option("--html", a->html, "also write an HTML report with the host roofline and the kernels' points");
  app->add_option("--repetitions", a->repetitions, "repetitions per benchmark (default 5, --quick 1)")->check(CLI::Range(1, 100));
  app->add_option("--threads", a->threads, "threads of the multi-threaded cases (default: one per core)")->check(CLI::Range(1, 1024));
  app->add_option("--min-time", a->min_time_s, "minimum seconds per repetition (default 0.5, --quick 0.05)")->check(CLI::Range(0.001, 60.0));
  struct DecodeArgs {
    std::string model, quant = "q4_k", kv_cache = "bf16", format = "table", out;
    std::string layers = "0", experts = "0", batch = "1", context = "4096", steps = "5";
    int threads = 0;
  };
  auto d = std::make_shared<DecodeArgs>();
  CLI::App* dec = app->add_subcommand("decode", "one decode step of a DeepSeek-structured model on this host: tok/s and time per op");
  dec->add_option("--model", d->model, "model id or config.json path (DeepSeek MLA architectures)")->required();
  dec->add_option("--layers", d->layers, "run the first N layers (default: all)");
  dec->add_option("--experts", d->experts, "routed experts per MoE layer (default: the model's)");
  dec->add_option("--quant", d->quant, "weight format of the matrices: bf16, q8_0, q4_k (default), fp8");
  dec->add_option("--kv-cache", d->kv_cache, "MLA latent cache: bf16 (default) or fp8");
  dec->add_option("--batch", d->batch, "sequences decoded together (default 1)");
  dec->add_option("--context", d->context, "tokens already cached per sequence (default 4096; K suffix ok)");
  dec->add_option("--threads", d->threads, "threads (default: one per core)")->check(CLI::Range(1, 1024));
  dec->add_option("--steps", d->steps, "timed steps after one warm-up (default 5)");
  dec->add_option("--format", d->format, "table or json");
  dec->add_option("--out", d->out, "also write the JSON to this file");
  return {app, [a, d, dec]() {
            if (dec->parsed()) return run_bench_decode(*d);
            const reports::Format f = reports::parse_format(a->format);
            if (f != reports::Format::kTable && f != reports::Format::kJson)
              throw InputError("--format: bench prints table or json, got '" + a->format + "'");
            std::regex re;
            try {
              re = std::regex(a->filter);
            } catch (const std::regex_error& e) {
              throw InputError("--filter: '" + a->filter + "' is not a valid regular expression (" + e.what() + ")");
            }
            const bench::Suite suite = bench::register_suite({a->quick, a->threads});
            std::vector<std::string> selected;
            for (const auto& n : suite.names)
              if (std::regex_search(n, re)) selected.push_back(n);
            if (a->list) {
              std::string text;
              for (const auto& n : selected) text += n + "\n";
              emit(text);
              return 0;
            }
            if (selected.empty())
              throw InputError("--filter: '" + a->filter + "' matches none of the " + std::to_string(suite.names.size()) +
                               " benchmarks (hint: deepfit bench --list)");
            const int reps = a->repetitions > 0 ? a->repetitions : (a->quick ? 1 : 5);
            const double min_time = a->min_time_s > 0 ? a->min_time_s : (a->quick ? 0.05 : 0.5);
            std::vector<std::string> args = {"deepfit-bench", "--benchmark_filter=" + a->filter,
                                             "--benchmark_repetitions=" + std::to_string(reps),
                                             "--benchmark_min_time=" + std::to_string(min_time)};
            std::vector<char*> argv;
            for (auto& s : args) argv.push_back(s.data());
            int argc = static_cast<int>(argv.size());
            benchmark::Initialize(&argc, argv.data());
            bench::add_provenance();
            benchmark::AddCustomContext("deepfit_command", a->quick ? "deepfit bench --quick" : "deepfit bench");
            ProgressReporter reporter(selected.size());
            benchmark::RunSpecifiedBenchmarks(&reporter);
            benchmark::Shutdown();

            nlohmann::json doc = nlohmann::json::parse(reporter.json());
            const regress::BenchFile file = regress::parse_bench_json(doc, "deepfit bench");
            const regress::BenchSummary summary = regress::summarize(file);
            // Efficiencies beside Google Benchmark's own keys (readers ignore unknown keys).
            std::map<std::string, const regress::BenchRow*> by_name;
            for (const auto& r : summary.rows) by_name[r.name] = &r;
            for (auto& b : doc.at("benchmarks")) {
              const auto it = by_name.find(b.value("run_name", b.value("name", std::string())));
              if (it == by_name.end()) continue;
              if (it->second->bw_efficiency) b["bw_efficiency"] = *it->second->bw_efficiency;
              if (it->second->compute_efficiency) {
                b["compute_efficiency"] = *it->second->compute_efficiency;
                b["compute_reference"] = it->second->compute_reference;
              }
            }
            doc["deepfit_notes"] = summary.notes;
            const std::string json_text = doc.dump(2) + "\n";
            if (!a->out.empty()) write_file_atomically(a->out, json_text);
            if (!a->html.empty()) write_html(a->html, {"deepfit bench", {}, {{"deepfit bench", doc}}});
            if (f == reports::Format::kJson) {
              emit(json_text);
            } else {
              std::string text = reports::render(bench_table(summary), f);
              for (const auto& n : summary.notes) text += "note: " + n + "\n";
              emit(text);
            }
            // A case this CPU cannot run (e.g. a probe of an instruction set it lacks) is an
            // environment limit, shown as "unavailable: ..."; only failed cases set exit 1.
            std::size_t failed = 0;
            for (const auto& r : summary.rows)
              if (!r.error.empty() && r.error.rfind("unavailable", 0) != 0) ++failed;
            if (failed > 0) {
              std::fprintf(stderr, "error: %zu benchmark(s) failed validation or could not run (see the table)\n", failed);
              return 1;
            }
            return 0;
          }};
}

}  // namespace deepfit::cli
