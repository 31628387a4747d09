// The HTML report (see html_report.h). Reads result documents by their fixed keys (DESIGN.md);
// a missing or null value leaves its point out and the section text says how many were left out.
#include "reports/html_report.h"

#include <algorithm>
#include <map>
#include <set>

#include "kernels/error.h"
#include "regress/gbench.h"
#include "regress/summary.h"
#include "reports/svg_charts.h"
#include "reports/svg_plot.h"
#include "reports/table.h"

namespace deepfit::reports {
namespace {

using nlohmann::json;

bool is_number(const json& j, const char* key) { return j.contains(key) && j.at(key).is_number(); }
double number(const json& j, const char* key) { return j.at(key).get<double>(); }

// Fit/predict documents hold one record or {"records": [...]}.
std::vector<json> records_of(const json& doc) {
  if (doc.contains("records") && doc.at("records").is_array()) return doc.at("records").get<std::vector<json>>();
  return {doc};
}

std::vector<const ResultDoc*> of_kind(const ReportInput& in, DocKind k) {
  std::vector<const ResultDoc*> out;
  for (const auto& d : in.docs)
    if (classify(d) == k) out.push_back(&d);
  return out;
}

std::string origins(const std::vector<const ResultDoc*>& docs) {
  std::string s;
  for (const auto* d : docs) s += (s.empty() ? "" : ", ") + d->origin;
  return s;
}

// ---- 1. Roofline of the host from a bench run: roofs measured in the same run.
HtmlSection roofline_section(const ReportInput& in) {
  HtmlSection s{"1. Roofline of this host, with the kernels' measured points", "", ""};
  RooflineChart c;
  c.title = "Host roofline (measured roofs and kernels)";
  c.no_data_reason = "no bench results (deepfit bench --out FILE, then --from FILE)";
  const auto docs = of_kind(in, DocKind::kBench);
  if (!docs.empty()) {
    const regress::BenchSummary sum = regress::summarize(regress::parse_bench_json(docs.back()->doc, docs.back()->origin));
    int threads = 0;
    for (const auto& r : sum.rows) threads = std::max(threads, r.threads);
    std::size_t left_out = 0;
    for (const auto& r : sum.rows) {
      if (r.threads != threads) continue;
      if (r.op == "stream_triad" && r.bytes_per_second) c.bandwidth_gbps = *r.bytes_per_second / 1e9;
      else if ((r.op == "peak_fma" || r.op == "peak_dot") && r.flops_per_second && *r.flops_per_second > 0)
        c.roofs.push_back({r.format, *r.flops_per_second / 1e9});
      else if (r.op.rfind("stream_", 0) != 0 && r.intensity_flop_per_byte && r.flops_per_second && *r.flops_per_second > 0)
        c.points.push_back({r.name.substr(3), *r.intensity_flop_per_byte, *r.flops_per_second / 1e9});
      else if (r.op.rfind("stream_", 0) != 0 && r.op.rfind("peak_", 0) != 0)
        ++left_out;
    }
    c.bandwidth_label = "STREAM-like triad";
    if (!c.bandwidth_gbps || c.roofs.empty())
      c.no_data_reason = "the bench results hold no BM_stream_triad or BM_peak_* at " + std::to_string(threads) +
                         " threads: run deepfit bench without a --filter that drops them";
    s.text = "From " + origins(docs) + ": every case at " + std::to_string(threads) +
             " thread(s). Roofs are the STREAM-like triad (ordinary stores; write-allocate traffic not counted) and the "
             "compute probes measured in the same run; points are the kernels' declared FLOPs over their compulsory bytes.";
    if (left_out > 0) s.text += " " + std::to_string(left_out) + " case(s) without FLOPs or bytes are not drawn.";
  }
  s.svg = svg_roofline(c);
  return s;
}

// ---- 2 and 3. Throughput against concurrency, and cost per configuration, from compare.
std::string config_label(const json& r) {
  return r.at("device").get<std::string>() + " x" + std::to_string(r.at("count").get<long long>()) + " " +
         r.at("quant").get<std::string>() + " " + r.at("framework").get<std::string>() + " " + r.at("parallel").get<std::string>();
}

std::vector<HtmlSection> compare_sections(const ReportInput& in) {
  HtmlSection total{"2. Output tokens per second against concurrency", "", ""};
  HtmlSection cost{"3. Cost per million output tokens per configuration", "", ""};
  LineChart lt, lu;
  lt.title = "Output tokens/s, all users";
  lu.title = "Decode tokens/s per user";
  lt.x_label = lu.x_label = "concurrent requests";
  lt.y_label = "output tokens/s (total)";
  lu.y_label = "decode tokens/s per user";
  lt.log_x = lu.log_x = true;
  BarChart bars;
  bars.title = "Cheapest configurations";
  bars.value_label = "cost per million output tokens";
  bars.unit = "USD";
  bars.category_label = "configuration";
  const auto docs = of_kind(in, DocKind::kCompare);
  if (docs.empty()) {
    lt.title += " (no data: no compare results)";
    lu.title += " (no data: no compare results)";
    bars.no_data_reason = "no compare results: run `deepfit compare --model M --format json` and pass the file with --from";
    total.svg = svg_line_chart(lt) + svg_line_chart(lu);
    cost.svg = svg_bar_chart(bars);
    return {total, cost};
  }
  const json& doc = docs.back()->doc;
  // The configurations, ranked by their cheapest cost at any concurrency; the 8 cheapest drawn.
  std::map<std::string, std::vector<const json*>> by_config;
  std::map<std::string, double> cheapest;
  std::int64_t top_concurrency = 0;
  for (const auto& r : doc.at("rows")) {
    const std::string label = config_label(r);
    by_config[label].push_back(&r);
    top_concurrency = std::max<std::int64_t>(top_concurrency, r.at("concurrency").get<std::int64_t>());
    if (is_number(r, "cost_usd_per_mtok_output")) {
      const double v = number(r, "cost_usd_per_mtok_output");
      auto it = cheapest.find(label);
      if (it == cheapest.end() || v < it->second) cheapest[label] = v;
    }
  }
  std::vector<std::pair<double, std::string>> ranked;
  for (const auto& [label, v] : cheapest) ranked.push_back({v, label});
  std::sort(ranked.begin(), ranked.end());
  const std::size_t drawn = std::min<std::size_t>(8, ranked.size());
  for (std::size_t i = 0; i < drawn; ++i) {
    SeriesXY st{ranked[i].second, {}, {}}, su{ranked[i].second, {}, {}};
    std::vector<const json*> rows = by_config[ranked[i].second];
    std::sort(rows.begin(), rows.end(), [](const json* a, const json* b) { return a->at("concurrency") < b->at("concurrency"); });
    for (const json* r : rows) {
      const double conc = r->at("concurrency").get<double>();
      if (is_number(*r, "output_tok_s_total")) {
        st.x.push_back(conc);
        st.y.push_back(number(*r, "output_tok_s_total"));
      }
      if (is_number(*r, "decode_tok_s_per_user")) {
        su.x.push_back(conc);
        su.y.push_back(number(*r, "decode_tok_s_per_user"));
      }
    }
    if (!st.x.empty()) lt.series.push_back(st);
    if (!su.x.empty()) lu.series.push_back(su);
  }
  lt.log_y = lu.log_y = true;
  total.text = "From " + origins(docs) + " (" + doc.value("model", std::string("model")) + "): the " + std::to_string(drawn) +
               " configurations with the lowest cost per million output tokens at any concurrency, of " +
               std::to_string(by_config.size()) + " that fit. Predictions: each row's basis and expected error are in the JSON.";
  total.svg = svg_line_chart(lt) + svg_line_chart(lu);
  for (std::size_t i = 0; i < std::min<std::size_t>(20, ranked.size()); ++i) bars.bars.push_back({ranked[i].second, ranked[i].first});
  cost.text = "Each configuration at its cheapest concurrency (up to " + std::to_string(top_concurrency) +
              "), the 20 cheapest, cheapest first. Configurations without a price have no cost and are not drawn.";
  bars.no_data_reason = "no configuration has a price per device-hour";
  cost.svg = svg_bar_chart(bars);
  return {total, cost};
}

// ---- 4. Memory per device by quantization, from fit.
HtmlSection memory_section(const ReportInput& in) {
  HtmlSection s{"4. Memory per device by quantization", "", ""};
  StackedBarChart c;
  c.title = "Memory per device";
  c.value_label = "memory per device";
  c.unit = "GB";
  c.category_label = "quantization";
  c.segment_labels = {"weights", "KV cache", "activations", "reserve"};
  c.no_data_reason = "no fit results: run `deepfit fit --model M --device D --format json` and pass the file with --from";
  const auto docs = of_kind(in, DocKind::kFit);
  if (!docs.empty()) {
    std::string setup;
    for (const json& rec : records_of(docs.back()->doc)) {
      if (!rec.contains("results") || rec.at("results").empty()) continue;
      const json& r = rec.at("results").front();
      const json& m = r.at("memory");
      StackedBar b{rec.value("quant", std::string("?")),
                   {m.at("weights_bytes").get<double>() / 1e9, m.at("kv_cache_bytes").get<double>() / 1e9,
                    m.at("activation_bytes").get<double>() / 1e9, m.at("overhead_bytes").get<double>() / 1e9},
                   std::nullopt};
      if (is_number(m, "capacity_bytes_per_device")) b.capacity = number(m, "capacity_bytes_per_device") / 1e9;
      c.bars.push_back(b);
      if (setup.empty() && rec.at("device").is_string())
        setup = std::to_string(rec.at("count").get<long long>()) + " x " + rec.at("device").get<std::string>() + ", " +
                std::to_string(r.at("concurrency").get<long long>()) + " request(s) of " +
                std::to_string(r.at("context_tokens").get<long long>()) + " tokens";
    }
    s.text = "From " + origins(docs) + (setup.empty() ? "" : " (" + setup + ")") +
             ": what one device holds (GB = 1e9 bytes) against its capacity; a bar past its marker does not fit.";
  }
  s.svg = svg_stacked_bar_chart(c);
  return s;
}

// ---- 5. Cost against context position, from predict --context (one document per model).
HtmlSection position_section(const ReportInput& in) {
  HtmlSection s{"5. Cost per million output tokens against context position", "", ""};
  LineChart c;
  c.title = "Decode cost against token position";
  c.x_label = "context position (tokens)";
  c.y_label = "cost per million output tokens (USD)";
  c.log_x = true;
  const auto docs = of_kind(in, DocKind::kPosition);
  std::set<std::string> setups;
  for (const auto* d : docs) {
    std::map<std::string, SeriesXY> by_model;
    for (const json& rec : records_of(d->doc)) {
      const std::string model = rec.value("model_name", rec.value("model", std::string("?")));
      auto& series = by_model.emplace(model, SeriesXY{model, {}, {}}).first->second;
      for (const json& r : rec.at("results"))
        if (is_number(r, "cost_usd_per_mtok_output")) {
          series.x.push_back(r.at("context_tokens").get<double>());
          series.y.push_back(number(r, "cost_usd_per_mtok_output"));
        }
      if (rec.at("device").is_string())
        setups.insert(std::to_string(rec.at("count").get<long long>()) + " x " + rec.at("device").get<std::string>() + " " +
                      rec.at("parallel").at("text").get<std::string>());
    }
    for (auto& [model, series] : by_model)
      if (!series.x.empty()) c.series.push_back(series);
  }
  if (c.series.empty()) c.title += " (no data: no predict --context results)";
  std::string on;
  for (const auto& x : setups) on += (on.empty() ? "" : "; ") + x;
  s.text = docs.empty() ? "Run `deepfit predict --model M --device D --context 4K,32K,128K --format json` per model and pass the files with --from."
                        : "From " + origins(docs) + " on " + on +
                              ". DeepSeek's V3.2 paper (Figure 3) prices the same curves on H800 at $2 per GPU-hour: with "
                              "DSA the indexer scans every position but main attention reads only the top-k latents, so "
                              "V3.2's cost stays nearly flat while dense MLA's grows with position.";
  s.svg = svg_line_chart(c);
  return s;
}

// ---- 6. Predicted against measured, from validate.
HtmlSection validate_section(const ReportInput& in) {
  HtmlSection s{"6. Predicted against measured (published measurements, leave-one-out)", "", ""};
  ScatterChart c;
  c.title = "Predicted vs measured";
  c.quantity = "value";
  c.unit = "tok/s or ms, per metric";
  c.no_data_reason = "no validate results: run `deepfit validate --reference data/reference/public.jsonl --format json` and pass the file";
  const auto docs = of_kind(in, DocKind::kValidate);
  if (!docs.empty()) {
    const json& doc = docs.back()->doc;
    std::map<std::string, ScatterSeries> by_metric;
    std::size_t left_out = 0;
    for (const json& r : doc.at("rows")) {
      if (!is_number(r, "predicted") || !is_number(r, "measured") || number(r, "predicted") <= 0 || number(r, "measured") <= 0) {
        ++left_out;
        continue;
      }
      const std::string metric = r.value("metric", std::string("?"));
      auto& series = by_metric.emplace(metric, ScatterSeries{metric, {}}).first->second;
      series.points.push_back({number(r, "measured"), number(r, "predicted"), r.value("id", std::string(""))});
    }
    for (auto& [metric, series] : by_metric) c.series.push_back(series);
    const json& sum = doc.at("summary");
    if (is_number(sum, "median_abs_error_pct")) {
      c.error_fraction = number(sum, "median_abs_error_pct") / 100.0;
      c.error_label = "y = x +/- " + fixed(number(sum, "median_abs_error_pct"), 0) + "% (median error)";
    }
    s.text = "From " + origins(docs) + ": " + std::to_string(sum.value("n", 0)) + " scenarios evaluated, median absolute error " +
             (is_number(sum, "median_abs_error_pct") ? fixed(number(sum, "median_abs_error_pct"), 1) : std::string("n/a")) +
             " %, p90 " + (is_number(sum, "p90_abs_error_pct") ? fixed(number(sum, "p90_abs_error_pct"), 1) : std::string("n/a")) +
             " %. Each prediction leaves its own measurement out of the calibration.";
    if (doc.contains("skipped") && doc.at("skipped").is_array())
      s.text += " " + std::to_string(doc.at("skipped").size()) + " scenario(s) skipped (reasons in the JSON).";
    if (left_out > 0) s.text += " " + std::to_string(left_out) + " row(s) without a positive prediction are not drawn.";
  }
  s.svg = svg_scatter_chart(c);
  return s;
}

}  // namespace

std::string html_sections(const ReportInput& in);

const char* to_string(DocKind k) {
  switch (k) {
    case DocKind::kBench: return "bench";
    case DocKind::kCompare: return "compare";
    case DocKind::kFit: return "fit";
    case DocKind::kPosition: return "predict --context";
    case DocKind::kValidate: return "validate";
  }
  return "?";
}

DocKind classify(const ResultDoc& d) {
  const json& j = d.doc;
  if (!j.is_object()) throw InputError(d.origin + ": expected a JSON object (a deepfit result document)");
  if (j.contains("benchmarks")) return DocKind::kBench;
  if (j.contains("rows") && j.contains("configs_tried")) return DocKind::kCompare;
  if (j.contains("rows") && j.contains("summary")) return DocKind::kValidate;
  if (j.contains("results") || (j.contains("records") && j.at("records").is_array())) {
    std::set<double> positions;
    for (const json& rec : records_of(j)) {
      if (!rec.is_object() || !rec.contains("results") || !rec.at("results").is_array())
        throw InputError(d.origin + ": a fit/predict record without a \"results\" array");
      for (const json& r : rec.at("results"))
        if (r.is_object() && is_number(r, "context_tokens") && r.contains("cost_usd_per_mtok_output"))
          positions.insert(number(r, "context_tokens"));
    }
    return positions.size() > 1 ? DocKind::kPosition : DocKind::kFit;
  }
  throw InputError(d.origin + ": not a deepfit result document (expected bench, compare, fit, predict or validate JSON: "
                   "keys \"benchmarks\", \"rows\", \"results\" or \"records\")");
}

std::string html_report(const ReportInput& in) {
  for (const auto& d : in.docs) (void)classify(d);  // every document is one the report reads
  try {
    return html_sections(in);
  } catch (const nlohmann::json::exception& e) {
    // A document of a known kind with a missing or mistyped key: bad input, named with its path.
    throw InputError(std::string("a result document lacks a value the report reads: ") + e.what());
  }
}

std::string html_sections(const ReportInput& in) {
  std::vector<HtmlSection> sections;
  if (!in.intro.empty()) {
    std::string text;
    for (const auto& p : in.intro) text += (text.empty() ? "" : " ") + p;
    sections.push_back({"What this report holds", text, ""});
  }
  sections.push_back(roofline_section(in));
  for (auto& s : compare_sections(in)) sections.push_back(s);
  sections.push_back(memory_section(in));
  sections.push_back(position_section(in));
  sections.push_back(validate_section(in));
  return html_page(in.title, sections);
}

}  // namespace deepfit::reports
