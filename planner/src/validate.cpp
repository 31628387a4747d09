// Reference validation with leave-one-out calibration (see validate.h).
#include "planner/validate.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <variant>

#include "hwdb/json_check.h"
#include "kernels/error.h"
#include "planner/perf_model.h"
#include "planner/serving.h"

namespace deepfit::planner {
namespace {

using nlohmann::json;

constexpr std::size_t kMinGroupRows = 3;  // fewer other rows: fall back to a wider group

std::optional<std::int64_t> opt_int(const json& j, const char* k) {
  if (!j.contains(k) || !j.at(k).is_number()) return std::nullopt;
  return static_cast<std::int64_t>(j.at(k).get<double>());
}
std::string str(const json& j, const char* k) { return j.contains(k) && j.at(k).is_string() ? j.at(k).get<std::string>() : ""; }

struct Candidate {
  std::string id, metric, framework, kind, phase;
  double measured = 0;
  MetricTerms terms;  // the metric as t = a * roofline + o * layer passes + fixed
};

// Calibration of one group: (a, o) fitted by least squares on the relative error of the interval,
// with a >= 1 (no faster than the datasheet roofline) and o >= 0. (Weighting rows by confidence,
// 1/0.5/0.25, was tried: the leave-one-out median rose from 20.3 to 20.3-20.5 %, so rows count equally.)
struct Fit {
  double a = 1, b = 0;
  std::size_t rows = 0;
};

Fit fit_group(const std::vector<const Candidate*>& g) {
  // Residual of a row: (a R + b Lp + F) / t - 1 = a u + b v - y with u = R/t, v = Lp/t, y = 1 - F/t.
  double suu = 0, suv = 0, svv = 0, suy = 0, svy = 0;
  for (const Candidate* c : g) {
    const double t = c->terms.seconds_of(c->measured);
    const double u = c->terms.t.roofline_s / t, v = c->terms.t.layer_passes / t, y = 1 - c->terms.t.fixed_s / t;
    suu += u * u;
    suv += u * v;
    svv += v * v;
    suy += u * y;
    svy += v * y;
  }
  auto loss = [&](double a, double b) { return a * a * suu + 2 * a * b * suv + b * b * svv - 2 * a * suy - 2 * b * svy; };
  Fit best{1, 0, g.size()};
  double best_loss = loss(1, 0);
  auto consider = [&](double a, double b) {
    if (!(a >= 1) || !(b >= 0) || !std::isfinite(a) || !std::isfinite(b)) return;
    const double l = loss(a, b);
    if (l < best_loss) {
      best_loss = l;
      best = Fit{a, b, g.size()};
    }
  };
  const double det = suu * svv - suv * suv;
  if (det > 0) consider((suy * svv - svy * suv) / det, (svy * suu - suy * suv) / det);
  if (suu > 0) consider(suy / suu, 0);
  if (svv > 0) consider(1, (svy - suv) / svv);
  return best;
}

double predict_with(const Fit& f, const Candidate& c) { return c.terms.value(f.a, f.b); }

bool flag(const json& j, const char* k) { return j.contains(k) && j.at(k).is_boolean() && j.at(k).get<bool>(); }

// DeepSeek-V3 technical report (arXiv 2412.19437, section 5.4.3): the second token is accepted
// 85-90 % of the time; rows with MTP on are priced at the lower figure with one draft token.
constexpr double kMtpAcceptance = 0.85;

// Maps one scenario to its metric's roofline terms, or says why it cannot.
std::variant<Candidate, std::string> evaluate(const Catalog& cat, const json& r) {
  Candidate c;
  c.id = str(r, "id");
  c.metric = str(r, "metric");
  c.framework = str(r, "framework");
  const auto phase = calibration_phase(c.metric);
  if (!phase) return "metric " + c.metric + " is a memory or size figure (`deepfit fit` predicts it; validate checks speeds)";
  c.phase = *phase;
  const std::string offload = str(r, "offload");
  if (offload == "partial_layers") return "offload 'partial_layers': the run does not state how many layers stayed on the GPU";
  const auto ids = cat.model_ids();
  const std::string model_id = str(r, "model");
  if (std::find(ids.begin(), ids.end(), model_id) == ids.end()) return "model '" + model_id + "' is not shipped";
  const hwdb::Device* dev = cat.devices.find(str(r, "device"));
  if (!dev) return "device '" + str(r, "device") + "' is not in the device database";
  const hwdb::Device* host = nullptr;
  if (offload == "experts_to_cpu") {
    host = cat.devices.find(str(r, "host_device"));
    if (!host) return "host CPU '" + str(r, "host_device") + "' of the hybrid run is not in the device database";
  }
  c.kind = hwdb::to_string(dev->kind);
  std::string quant = str(r, "quant");
  const bool gguf_fw = c.framework == "llamacpp" || c.framework == "ik_llamacpp";
  if (gguf_fw && (quant == "fp16" || quant == "bf16")) quant = quant == "fp16" ? "f16-gguf" : "bf16-gguf";
  const Scheme* scheme = nullptr;
  for (const auto& s : cat.quants.schemes())
    if (s.id == quant) scheme = &s;
  if (!scheme) return "quantization '" + quant + "' has no scheme (e.g. unsloth's UD mixes have no published rule)";
  std::string fw_id = c.framework == "ik_llamacpp" ? "llamacpp" : c.framework;
  const Framework* fw = nullptr;
  for (const auto& f : cat.frameworks.all())
    if (f.id == fw_id) fw = &f;
  if (!fw) return "framework '" + c.framework + "' has no profile";
  const ModelSpec m = cat.model(model_id);
  const StoredModel stored = store_model(m, *scheme, cat.quants);
  FitSetup s;
  s.model = &m;
  s.stored = &stored;
  s.scheme = scheme;
  s.device = dev;
  s.framework = fw;
  s.count = opt_int(r, "count").value_or(1);
  const json par = r.contains("parallel") && r.at("parallel").is_object() ? r.at("parallel") : json::object();
  s.parallel = default_parallel(s.count, fw_id);
  if (opt_int(par, "tp") || opt_int(par, "pp")) {
    s.parallel.tp = opt_int(par, "tp").value_or(1);
    s.parallel.pp = opt_int(par, "pp").value_or(1);
    s.parallel.ep = opt_int(par, "ep").value_or(1);
    s.parallel.dp = 1;
  }
  if (flag(par, "dp_attention") && opt_int(par, "dp").value_or(1) > 1 && s.parallel.tp == s.count) {
    // DP attention: each rank attends its own sequences; the MoE stays expert-parallel.
    s.parallel.dp = s.parallel.tp;
    s.parallel.tp = 1;
  }
  if (s.parallel.tp < 1 || m.num_heads % s.parallel.tp != 0) return "tp does not divide the heads";
  if (host) s.offload.kind = Offload::Kind::kExperts;
  std::string kv = str(r, "kv_dtype");
  if (kv == "fp16") kv = "f16";
  if (kv.empty() || (kv != "bf16" && kv != "f16" && kv != "fp8" && kv != "q8_0" && kv != "q4_0"))
    kv = m.dsa ? fw->kv.default_dtype_dsa : fw->kv.default_dtype;
  try {
    s.kv_dtype = normalize_kv_dtype(kv, *fw);
  } catch (const InputError& e) {
    return std::string("kv dtype: ") + e.what();
  }
  if (!compute_peak(*dev, "bf16")) return "device record has no compute peak";
  const std::optional<LinkModel> link = s.count > 1 ? link_model(*dev, s.count, cat.links) : std::nullopt;
  if (s.count > 1 && !link) return "device record gives no link bandwidth for a " + std::to_string(s.count) + "-device split";
  ServingRequest rq;
  const auto in = opt_int(r, "input_tokens"), out = opt_int(r, "output_tokens"), ctx = opt_int(r, "context_tokens");
  const bool prefill_side = c.phase == "prefill_tok_s_total";
  if (prefill_side && (!in || *in < 1)) return "prefill scenario without input_tokens";
  rq.input_tokens = in && *in >= 1 ? *in : 512;
  rq.output_tokens = out && *out >= 1 ? *out : 128;
  if (!str(r, "workload").empty() && !in && !out) {
    // A named length distribution stands for the lengths (its means).
    try {
      const Workload& w = cat.workloads.get(str(r, "workload"));
      rq.input_tokens = w.input_tokens;
      rq.output_tokens = w.output_tokens;
    } catch (const InputError&) {
      return "workload '" + str(r, "workload") + "' is not in data/workloads.json";
    }
  }
  rq.prefill_context = ctx.value_or(0);
  // llama-bench's tg at depth d: decode from d to d + n; serving runs: the request's own history.
  if (ctx || !in) rq.decode_context = ctx.value_or(0) + rq.output_tokens / 2;
  rq.disaggregated = flag(par, "disaggregated");
  if (flag(r, "mtp")) {
    s.mtp = true;
    rq.mtp_acceptance = kMtpAcceptance;
  }
  const auto conc = opt_int(r, "concurrency");
  const bool single_user_tool = c.framework == "llamacpp" || c.framework == "ik_llamacpp" || c.framework == "mlx";
  if (conc && *conc >= 1) {
    rq.concurrency = *conc;
  } else if (single_user_tool) {
    rq.concurrency = 1;
  } else if (prefill_side) {
    rq.concurrency = s.parallel.dp;  // peak prefill: every rank busy
  } else {
    // Peak throughput: as many sequences as the KV cache holds, up to the framework's batch limit
    // on each DP rank.
    const FitResult fr = fit_one(s, device_load(s), kv_of(s), 1, rq.input_tokens + rq.output_tokens);
    if (!fr.max_concurrency || *fr.max_concurrency < 1) return "the model does not fit this setup at its context";
    rq.concurrency = std::min(*fr.max_concurrency, fw->memory.max_num_seqs * s.parallel.dp);
  }
  const ServingTerms t = serving_terms(s, rq, link, host);
  const std::int64_t nodes = opt_int(r, "nodes").value_or((s.count + dev->devices_per_node - 1) / dev->devices_per_node);
  const auto terms = metric_terms(c.metric, t, rq, s.count, std::max<std::int64_t>(1, nodes));
  if (!terms) return "metric " + c.metric + " has no serving formula";
  c.terms = *terms;
  c.measured = r.at("value").get<double>();
  if (!(c.measured > 0)) return "measured value is not positive";
  return c;
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

Summary summarize(std::vector<double> e) {
  Summary s;
  s.n = e.size();
  if (e.empty()) return s;
  std::sort(e.begin(), e.end());
  s.median_abs_error_pct = median_of(e);
  // p90 by the nearest-rank rule.
  s.p90_abs_error_pct = e[static_cast<std::size_t>(std::ceil(0.9 * static_cast<double>(e.size()))) - 1];
  return s;
}

Validation validate_reference(const Catalog& cat, const std::string& path,
                              const std::function<void(std::size_t, std::size_t, const std::string&)>& progress) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open the reference file");
  Validation v;
  std::vector<Candidate> cands;
  std::string line;
  int no = 0;
  while (std::getline(in, line)) {
    ++no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json r;
    try {
      r = json::parse(line);
    } catch (const json::parse_error& e) {
      v.malformed.push_back("line " + std::to_string(no) + ": malformed JSON");
      continue;
    }
    if (!r.is_object() || !r.contains("id") || !r.at("id").is_string() || !r.contains("metric") || !r.contains("value") ||
        !r.at("value").is_number()) {
      v.malformed.push_back("line " + std::to_string(no) + ": expected an object with string id, metric and numeric value");
      continue;
    }
    auto res = evaluate(cat, r);
    if (auto* reason = std::get_if<std::string>(&res)) v.skipped.push_back({str(r, "id"), *reason});
    else cands.push_back(std::get<Candidate>(res));
  }
  // Leave-one-out: each row's efficiency comes from the other rows of its group (framework,
  // metric, device class), widening to (framework, metric), then (metric) when too few remain.
  auto key3 = [](const Candidate& c) { return c.framework + "/" + c.phase + "/" + c.kind; };
  auto key2 = [](const Candidate& c) { return c.framework + "/" + c.phase; };
  auto key1 = [](const Candidate& c) { return c.phase; };
  std::vector<std::function<std::string(const Candidate&)>> keys = {key3, key2, key1};
  for (std::size_t i = 0; i < cands.size(); ++i) {
    const Candidate& c = cands[i];
    if (progress) progress(i + 1, cands.size(), c.id);
    ValidationRow row{c.id, c.metric, c.framework, "", 0, c.measured, 0, c.terms.value(1, 0), ""};
    for (const auto& key : keys) {
      std::vector<const Candidate*> others;
      for (std::size_t j = 0; j < cands.size(); ++j)
        if (j != i && key(cands[j]) == key(c)) others.push_back(&cands[j]);
      if (others.size() < kMinGroupRows) continue;
      const Fit f = fit_group(others);
      row.group = key(c);
      row.predicted = predict_with(f, c);
      row.basis = "roofline x " + std::to_string(f.a).substr(0, 5) + " + " + std::to_string(f.b * 1e6).substr(0, 6) +
                  " us per layer, fitted on " + std::to_string(others.size()) + " other published measurements (" + row.group + ")";
      break;
    }
    if (row.group.empty()) {
      row.predicted = c.terms.value(1, 0);
      row.basis = "datasheet roofline only";
    }
    row.error_pct = (row.predicted / row.measured - 1) * 100;
    v.rows.push_back(row);
  }
  std::vector<double> all;
  std::map<std::string, std::vector<double>> fw, mt;
  for (const auto& r : v.rows) {
    all.push_back(std::fabs(r.error_pct));
    fw[r.framework].push_back(std::fabs(r.error_pct));
    mt[r.metric].push_back(std::fabs(r.error_pct));
  }
  v.summary = summarize(all);
  for (auto& [k, e] : fw) v.by_framework.push_back({k, summarize(e)});
  for (auto& [k, e] : mt) v.by_metric.push_back({k, summarize(e)});
  // Every group at every level, fitted on all its members, with its own leave-one-out error.
  std::map<std::string, std::vector<const Candidate*>> groups;
  for (const auto& c : cands)
    for (const auto& key : keys) groups[key(c)].push_back(&c);
  for (auto& [k, g] : groups) {
    const Fit f = fit_group(g);
    Validation::GroupFit gf{f.a, f.b, std::nullopt, std::nullopt, f.rows, std::nullopt, {}};
    for (const Candidate* c : g) gf.ids.push_back(c->id);
    if (g.size() > kMinGroupRows) {
      std::vector<double> errs;
      for (std::size_t i = 0; i < g.size(); ++i) {
        std::vector<const Candidate*> others;
        for (std::size_t j = 0; j < g.size(); ++j)
          if (j != i) others.push_back(g[j]);
        errs.push_back(std::fabs(predict_with(fit_group(others), *g[i]) / g[i]->measured - 1) * 100);
      }
      gf.loo_median_abs_error_pct = median_of(errs);
    }
    v.fitted.push_back({k, gf});
  }
  return v;
}

json validation_to_json(const Validation& v) {
  auto sj = [](const Summary& s) {
    return json{{"n", s.n}, {"median_abs_error_pct", s.median_abs_error_pct}, {"p90_abs_error_pct", s.p90_abs_error_pct}};
  };
  json rows = json::array(), skipped = json::array(), fw = json::object(), mt = json::object(), fitted = json::object();
  for (const auto& r : v.rows)
    rows.push_back({{"id", r.id}, {"metric", r.metric}, {"predicted", r.predicted}, {"measured", r.measured}, {"error_pct", r.error_pct},
                    {"framework", r.framework}, {"roofline", r.roofline}, {"basis", r.basis}});
  for (const auto& s : v.skipped) skipped.push_back({{"id", s.id}, {"reason", s.reason}});
  for (const auto& [k, s] : v.by_framework) fw[k] = sj(s);
  for (const auto& [k, s] : v.by_metric) mt[k] = sj(s);
  for (const auto& [k, f] : v.fitted) {
    fitted[k] = {{"roofline_factor", f.roofline_factor}, {"per_layer_overhead_us", f.per_layer_overhead_s * 1e6}, {"rows", f.rows},
                 {"loo_median_abs_error_pct", f.loo_median_abs_error_pct ? json(*f.loo_median_abs_error_pct) : json(nullptr)}};
    if (f.compute_factor) fitted[k]["compute_factor"] = *f.compute_factor;
    if (f.attention_factor) fitted[k]["attention_factor"] = *f.attention_factor;
  }
  return json{{"rows", rows}, {"skipped", skipped}, {"malformed", v.malformed}, {"summary", sj(v.summary)},
              {"by_framework", fw}, {"by_metric", mt}, {"fitted_efficiency", fitted}};
}

}  // namespace deepfit::planner

namespace deepfit::planner {

nlohmann::json calibration_to_json(const Validation& v, const std::string& reference_path) {
  json groups = json::object();
  for (const auto& [k, f] : v.fitted)
    groups[k] = {{"roofline_factor", f.roofline_factor}, {"per_layer_overhead_us", f.per_layer_overhead_s * 1e6},
                 {"rows", f.rows},
                 {"loo_median_abs_error_pct", f.loo_median_abs_error_pct ? json(*f.loo_median_abs_error_pct) : json(nullptr)},
                 {"ids", f.ids}};
  return json{{"_comment", "written by `deepfit validate --reference " + reference_path +
                               " --write-calibration`; time = roofline_factor x datasheet roofline + per_layer_overhead_us x layers"},
              {"reference", reference_path},
              {"groups", groups}};
}

}  // namespace deepfit::planner
