// `deepfit fit` views.
#include "reports/fit_report.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace deepfit::reports {
namespace {

using nlohmann::json;

template <class T>
json opt(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

// Speed and cost come from the performance model, which `fit` does not run.
constexpr const char* kSpeedNote = "speed, TTFT/TPOT and cost are computed by `deepfit predict`, not by `fit`";

json result_json(const planner::FitRecord& rec, const planner::FitResult& r) {
  json j;
  j["concurrency"] = r.concurrency;
  j["context_tokens"] = r.context_tokens;
  j["fits"] = opt(r.fits);
  j["memory"] = {{"weights_bytes", r.memory.weights_bytes},
                 {"kv_cache_bytes", r.memory.kv_cache_bytes},
                 {"activation_bytes", r.memory.activation_bytes},
                 {"overhead_bytes", r.memory.overhead_bytes},
                 {"total_bytes_per_device", r.memory.total_bytes_per_device},
                 {"capacity_bytes_per_device", opt(r.memory.capacity_bytes_per_device)}};
  j["headroom_bytes"] = opt(r.headroom_bytes);
  j["max_concurrency"] = opt(r.max_concurrency);
  j["max_context_tokens"] = opt(r.max_context_tokens);
  j["host_bytes"] = r.host_bytes;
  json notes = r.notes;
  if (r.speed) {
    const planner::Speed& sp = *r.speed;
    j["decode_tok_s_per_user"] = opt(sp.decode_tok_s_per_user);
    j["output_tok_s_total"] = opt(sp.output_tok_s_total);
    j["output_tok_s_per_gpu"] = opt(sp.output_tok_s_per_gpu);
    j["prefill_tok_s_total"] = opt(sp.prefill_tok_s_total);
    j["ttft_ms"] = opt(sp.ttft_ms);
    j["tpot_ms"] = opt(sp.tpot_ms);
    j["bottleneck"] = sp.bottleneck.empty() ? json(nullptr) : json(sp.bottleneck);
    j["cost_usd_per_mtok_output"] = opt(sp.cost_usd_per_mtok_output);
    j["cost_usd_per_mtok_input"] = opt(sp.cost_usd_per_mtok_input);
    j["energy_usd_per_mtok_output"] = opt(sp.energy_usd_per_mtok_output);
    j["served_concurrency"] = sp.served_concurrency;
    j["basis"] = "memory: tensor inventory x storage format, " + rec.framework + " KV layout and reserve; speed: " +
                 (sp.basis.empty() ? std::string("none") : sp.basis);
    j["expected_error_pct"] = opt(sp.expected_error_pct);
  } else {
    for (const char* k : {"decode_tok_s_per_user", "output_tok_s_total", "output_tok_s_per_gpu", "prefill_tok_s_total",
                          "ttft_ms", "tpot_ms", "bottleneck", "cost_usd_per_mtok_output"})
      j[k] = nullptr;
    j["basis"] = "memory: tensor inventory x storage format, " + rec.framework + " KV layout and reserve";
    j["expected_error_pct"] = nullptr;
    notes.push_back(kSpeedNote);
    notes.push_back("expected_error_pct is null: no held-out check of memory predictions exists yet");
  }
  if (!rec.device) notes.push_back("no --device given: memory needed only, no verdict");
  j["notes"] = notes;
  return j;
}

}  // namespace

json fit_to_json(const planner::FitRecord& r) {
  json j;
  j["model"] = r.model_id;
  j["model_name"] = r.model_name;
  j["quant"] = r.quant;
  j["device"] = opt(r.device);
  j["count"] = r.count;
  j["count_auto"] = r.count_was_auto;
  j["framework"] = r.framework;
  j["parallel"] = {{"tp", r.parallel.tp}, {"ep", r.parallel.ep}, {"pp", r.parallel.pp}, {"dp", r.parallel.dp},
                   {"dp_attention", r.parallel.dp_attention()}, {"text", planner::to_string(r.parallel)}};
  j["offload"] = planner::to_string(r.offload);
  j["kv_dtype"] = r.kv_dtype;
  j["kv_layout"] = r.kv_layout;
  j["params_total"] = r.params.total;
  j["params_main"] = r.params.main;
  j["params_mtp"] = r.params.mtp;
  j["params_active_per_token"] = r.params.active_per_token;
  j["weights_bytes"] = r.weights_bytes;
  j["weights_loaded_bytes"] = r.weights_loaded_bytes;
  j["kv_bytes_per_token"] = r.kv_bytes_per_token;
  j["per_device"] = {{"weights_bytes", r.load.weights_bytes},
                     {"activation_bytes", r.load.activation_bytes},
                     {"overhead_bytes", r.load.reserve_bytes},
                     {"capacity_bytes", r.device ? json(r.load.capacity_bytes) : json(nullptr)},
                     {"kv_budget_bytes", r.device ? json(r.load.kv_budget_bytes) : json(nullptr)},
                     {"host_bytes", r.load.host_bytes}};
  j["min_devices"] = opt(r.min_devices);
  json results = json::array();
  for (const auto& x : r.results) results.push_back(result_json(r, x));
  j["results"] = results;
  j["notes"] = r.notes;
  return j;
}

json fits_to_json(const std::vector<planner::FitRecord>& records) {
  if (records.size() == 1) return fit_to_json(records.front());
  json a = json::array();
  for (const auto& r : records) a.push_back(fit_to_json(r));
  return json{{"records", a}};
}

Table fit_table(const std::vector<planner::FitRecord>& records, bool colour) {
  Table t;
  const bool with_device = !records.empty() && records.front().device.has_value();
  if (with_device)
    t.headers = {"quant", "framework", "split", "count", "concurrency", "context", "weights GB", "KV GB", "act GB",
                 "reserve GB", "total GB", "capacity GB", "fits", "max conc", "max context"};
  else
    t.headers = {"quant", "stored GB", "loaded GB", "params B", "KV KB/token", "concurrency", "context", "KV GB",
                 "act GB", "reserve GB", "total GB"};
  t.right_align.assign(t.headers.size(), true);
  t.right_align[0] = false;
  if (with_device) {
    t.right_align[1] = false;
    t.right_align[2] = false;
  }
  auto n = [](std::int64_t v) { return std::to_string(v); };
  auto optn = [](const std::optional<std::int64_t>& v) { return v ? std::to_string(*v) : std::string("n/a"); };
  for (const auto& rec : records) {
    for (const auto& r : rec.results) {
      const auto& m = r.memory;
      if (with_device) {
        std::string fits = r.fits ? (*r.fits ? "yes" : "NO") : "n/a";
        if (colour && r.fits) fits = coloured(fits, *r.fits ? Colour::kGreen : Colour::kRed);
        t.rows.push_back({rec.quant, rec.framework, planner::to_string(rec.parallel), n(rec.count), n(r.concurrency),
                          n(r.context_tokens), gb(static_cast<double>(m.weights_bytes)), gb(static_cast<double>(m.kv_cache_bytes)),
                          gb(static_cast<double>(m.activation_bytes)), gb(static_cast<double>(m.overhead_bytes)),
                          gb(static_cast<double>(m.total_bytes_per_device)),
                          m.capacity_bytes_per_device ? gb(static_cast<double>(*m.capacity_bytes_per_device)) : "n/a", fits,
                          optn(r.max_concurrency), optn(r.max_context_tokens)});
        t.csv_rows.push_back({rec.quant, rec.framework, planner::to_string(rec.parallel), n(rec.count), n(r.concurrency),
                              n(r.context_tokens), n(m.weights_bytes), n(m.kv_cache_bytes), n(m.activation_bytes),
                              n(m.overhead_bytes), n(m.total_bytes_per_device),
                              m.capacity_bytes_per_device ? n(*m.capacity_bytes_per_device) : "", r.fits ? (*r.fits ? "true" : "false") : "",
                              r.max_concurrency ? n(*r.max_concurrency) : "", r.max_context_tokens ? n(*r.max_context_tokens) : ""});
      } else {
        t.rows.push_back({rec.quant, gb(static_cast<double>(rec.weights_bytes)), gb(static_cast<double>(rec.weights_loaded_bytes)),
                          fixed(static_cast<double>(rec.params.total) / 1e9, 1), fixed(static_cast<double>(rec.kv_bytes_per_token) / 1e3, 1),
                          n(r.concurrency), n(r.context_tokens), gb(static_cast<double>(m.kv_cache_bytes)),
                          gb(static_cast<double>(m.activation_bytes)), gb(static_cast<double>(m.overhead_bytes)),
                          gb(static_cast<double>(m.total_bytes_per_device))});
        t.csv_rows.push_back({rec.quant, n(rec.weights_bytes), n(rec.weights_loaded_bytes), n(rec.params.total),
                              n(rec.kv_bytes_per_token), n(r.concurrency), n(r.context_tokens), n(m.kv_cache_bytes),
                              n(m.activation_bytes), n(m.overhead_bytes), n(m.total_bytes_per_device)});
      }
    }
  }
  return t;
}

std::string render_fit(const std::vector<planner::FitRecord>& records, Format f, bool colour) {
  if (f == Format::kJson) return fits_to_json(records).dump(2) + "\n";
  Table t = fit_table(records, colour && f == Format::kTable);
  if (f == Format::kCsv) {
    for (auto& h : t.headers) {
      auto pos = h.find(" GB");
      if (pos != std::string::npos) h = h.substr(0, pos) + "_bytes";
      if (h == "KV KB/token") h = "kv_bytes_per_token";
      if (h == "params B") h = "params";
    }
  }
  std::ostringstream out;
  if (f == Format::kTable && !records.empty()) {
    const auto& r = records.front();
    out << r.model_name << " (" << r.model_id << "): " << std::fixed;
    out.precision(1);
    out << static_cast<double>(r.params.total) / 1e9 << "B parameters stored, "
        << static_cast<double>(r.params.active_per_token) / 1e9 << "B active per token";
    if (r.device) out << "; device " << *r.device;
    out << "\n\n";
  }
  out << render(t, f);
  if (f != Format::kCsv) {
    // Notes every record shares are printed once; the others carry their quantization.
    std::vector<std::string> lines;
    for (const auto& r : records)
      for (const auto& note : r.notes) {
        bool shared = true;
        for (const auto& other : records)
          shared = shared && std::find(other.notes.begin(), other.notes.end(), note) != other.notes.end();
        std::string line = (shared || records.size() == 1 ? std::string() : r.quant + ": ") + note;
        if (std::find(lines.begin(), lines.end(), line) == lines.end()) lines.push_back(line);
      }
    for (const auto& line : lines) out << (f == Format::kMarkdown ? "\n- " : "note: ") << line << (f == Format::kMarkdown ? "" : "\n");
    if (f == Format::kMarkdown && !lines.empty()) out << "\n";
  }
  return out.str();
}

std::string render_predict(const std::vector<planner::FitRecord>& records, Format f) {
  if (f == Format::kJson) return fits_to_json(records).dump(2) + "\n";
  Table t;
  t.headers = {"quant", "framework", "split", "count", "context", "concurrency", "served", "tok/s/user", "tok/s total", "tok/s/GPU",
               "TTFT ms", "TPOT ms", "$/M out", "bottleneck", "exp. error"};
  t.right_align = {false, false, false, true, true, true, true, true, true, true, true, true, true, false, true};
  auto o = [](const std::optional<double>& v, int d) { return v ? fixed(*v, d) : std::string("n/a"); };
  auto raw = [](const std::optional<double>& v) { return v ? fixed(*v, 6) : std::string(); };
  for (const auto& rec : records)
    for (const auto& r : rec.results) {
      const planner::Speed sp = r.speed.value_or(planner::Speed{});
      const std::string err = sp.expected_error_pct ? "+/-" + fixed(*sp.expected_error_pct, 0) + "%" : "n/a";
      t.rows.push_back({rec.quant, rec.framework, planner::to_string(rec.parallel), std::to_string(rec.count),
                        std::to_string(r.context_tokens), std::to_string(r.concurrency), std::to_string(sp.served_concurrency),
                        o(sp.decode_tok_s_per_user, 1),
                        o(sp.output_tok_s_total, 1), o(sp.output_tok_s_per_gpu, 1), o(sp.ttft_ms, 1), o(sp.tpot_ms, 2),
                        o(sp.cost_usd_per_mtok_output, 2), sp.bottleneck.empty() ? "n/a" : sp.bottleneck, err});
      t.csv_rows.push_back({rec.quant, rec.framework, planner::to_string(rec.parallel), std::to_string(rec.count),
                            std::to_string(r.context_tokens), std::to_string(r.concurrency), std::to_string(sp.served_concurrency),
                            raw(sp.decode_tok_s_per_user),
                            raw(sp.output_tok_s_total), raw(sp.output_tok_s_per_gpu), raw(sp.ttft_ms), raw(sp.tpot_ms),
                            raw(sp.cost_usd_per_mtok_output), sp.bottleneck, raw(sp.expected_error_pct)});
    }
  if (f == Format::kCsv) {
    t.headers = {"quant", "framework", "split", "count", "context_tokens", "concurrency", "served_concurrency", "decode_tok_s_per_user",
                 "output_tok_s_total", "output_tok_s_per_gpu", "ttft_ms", "tpot_ms", "cost_usd_per_mtok_output", "bottleneck",
                 "expected_error_pct"};
    return render(t, f);
  }
  std::string out = render(t, f);
  std::vector<std::string> lines;
  for (const auto& rec : records) {
    for (const auto& r : rec.results) {
      if (r.speed && !r.speed->basis.empty()) {
        std::string b = "basis (" + rec.quant + "): " + r.speed->basis;
        if (std::find(lines.begin(), lines.end(), b) == lines.end()) lines.push_back(b);
      }
      for (const auto& n : r.notes)
        if (std::find(lines.begin(), lines.end(), n) == lines.end()) lines.push_back(n);
    }
    for (const auto& n : rec.notes)
      if (std::find(lines.begin(), lines.end(), n) == lines.end()) lines.push_back(n);
  }
  for (const auto& l : lines) out += (f == Format::kMarkdown ? "- " : "note: ") + l + "\n";
  return out;
}

}  // namespace deepfit::reports

namespace deepfit::reports {

nlohmann::json compare_to_json(const std::string& model, const planner::Comparison& c) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : c.rows)
    rows.push_back({{"device", r.device}, {"quant", r.quant}, {"framework", r.framework}, {"parallel", r.parallel},
                    {"count", r.count}, {"concurrency", r.concurrency}, {"served_concurrency", r.speed.served_concurrency},
                    {"decode_tok_s_per_user", opt(r.speed.decode_tok_s_per_user)},
                    {"output_tok_s_total", opt(r.speed.output_tok_s_total)},
                    {"output_tok_s_per_gpu", opt(r.speed.output_tok_s_per_gpu)}, {"ttft_ms", opt(r.speed.ttft_ms)},
                    {"tpot_ms", opt(r.speed.tpot_ms)}, {"cost_usd_per_mtok_output", opt(r.speed.cost_usd_per_mtok_output)},
                    {"bottleneck", r.speed.bottleneck}, {"basis", r.speed.basis},
                    {"expected_error_pct", opt(r.speed.expected_error_pct)}, {"requests_per_s", r.requests_per_s}, {"pareto", r.pareto}});
  return {{"model", model}, {"rows", rows}, {"configs_tried", c.configs_tried}, {"configs_fit", c.configs_fit}, {"notes", c.notes}};
}

}  // namespace deepfit::reports
