// `deepfit predict` (see predict.h): serving speed and cost per concurrency.
#include "planner/predict.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "hwdb/json_check.h"
#include "kernels/error.h"

namespace deepfit::planner {
namespace {

using hwdb::Json;
using hwdb::JsonWhere;

// Per-direction link bandwidth between the devices of a split, in GB/s. Inside a node: the
// scale-up fabric (records give bidirectional totals); beyond it: the NIC; else PCIe x16 from its
// generation (PCI-SIG: 8, 16, 32, 64 GT/s per lane for gen 3-6, 128b/130b coding).
std::optional<double> link_gbps(const hwdb::Device& d, std::int64_t count) {
  if (count <= d.devices_per_node && d.scale_up)
    return d.scale_up->bandwidth_gbps / (d.scale_up->bidirectional.value_or(true) ? 2.0 : 1.0);
  if (count > d.devices_per_node && d.scale_out_gbps) return *d.scale_out_gbps;
  if (d.pcie_gen && *d.pcie_gen >= 3) return 8.0 * std::pow(2.0, static_cast<double>(*d.pcie_gen - 3)) * 16 * 128.0 / 130.0 / 8.0;
  return std::nullopt;
}

// Collective time for `tokens` tokens through every layer: TP all-reduces (two per layer, ring),
// EP dispatch (fp8) and combine (bf16) per MoE layer, PP hand-offs. Bandwidth terms only.
double comm_seconds(const FitSetup& s, double tokens, double link) {
  const ModelSpec& m = *s.model;
  const ParallelPlan& p = s.parallel;
  const double H = static_cast<double>(m.hidden_dim), L = static_cast<double>(m.num_layers);
  double bytes = 0;
  if (p.tp > 1) bytes += L * 2 * 2.0 * (static_cast<double>(p.tp) - 1) / static_cast<double>(p.tp) * tokens * H * 2;
  if (p.ep > 1)
    bytes += static_cast<double>(m.num_moe_layers()) * tokens * static_cast<double>(m.top_k) * H * 3 *
             (static_cast<double>(p.ep) - 1) / static_cast<double>(p.ep);
  if (p.pp > 1) bytes += (static_cast<double>(p.pp) - 1) * tokens * H * 2;
  return bytes / (link * 1e9);
}

}  // namespace

CalibrationDb CalibrationDb::load(const std::string& path) {
  Json j = hwdb::parse_json_file(path);
  JsonWhere w{path, ""};
  hwdb::check_keys(j, w, {"_comment", "reference", "groups"});
  const Json& g = hwdb::required(j, w, "groups");
  hwdb::require_object(g, w / "groups");
  CalibrationDb db;
  for (const auto& [k, v] : g.items()) {
    JsonWhere gw = w / "groups" / k;
    hwdb::check_keys(v, gw, {"roofline_factor", "per_layer_overhead_us", "rows", "loo_median_abs_error_pct", "ids"});
    CalibrationGroup c;
    c.roofline_factor = hwdb::get_number(v, gw, "roofline_factor", 1.0, 1e4, "");
    c.per_layer_overhead_s = hwdb::get_number(v, gw, "per_layer_overhead_us", 0, 1e9, "us") * 1e-6;
    c.rows = static_cast<std::size_t>(hwdb::get_int(v, gw, "rows", 1, 1 << 20, "measurements"));
    c.loo_median_abs_error_pct = hwdb::get_number_or_null(v, gw, "loo_median_abs_error_pct", 0, 1e6, "%");
    db.groups_[k] = c;
  }
  return db;
}

std::optional<CalibrationGroup> CalibrationDb::find(const std::string& framework, const std::string& metric,
                                                    const std::string& kind, std::string* key) const {
  for (const std::string& k : {framework + "/" + metric + "/" + kind, framework + "/" + metric}) {
    auto it = groups_.find(k);
    // Only groups with a held-out error can stand behind a prediction.
    if (it != groups_.end() && it->second.loo_median_abs_error_pct) {
      if (key) *key = k;
      return it->second;
    }
  }
  return std::nullopt;
}

void predict_speed(const Catalog& cat, const CalibrationDb& cal, FitRecord& rec, const ServingOptions& so, const FitSetup& s) {
  (void)cat;
  const hwdb::Device& d = *s.device;
  const ModelSpec& m = *s.model;
  const double layers = static_cast<double>(m.num_layers);
  std::string dec_key, pre_key;
  const std::string kind = hwdb::to_string(d.kind);
  const auto dec_cal = cal.find(rec.framework, "decode_tok_s_per_user", kind, &dec_key);
  const auto pre_cal = cal.find(rec.framework, "prefill_tok_s_total", kind, &pre_key);
  const auto link = s.count > 1 ? link_gbps(d, s.count) : std::optional<double>(1.0);
  // Prefill of one request does not depend on the concurrency: price it once.
  std::optional<PhaseCost> pre;
  for (auto& r : rec.results) {
    Speed sp;
    const std::int64_t want = r.concurrency;
    const std::int64_t cap = r.max_concurrency.value_or(0);
    if (cap < 1) {
      r.notes.push_back("no speed: the model does not fit this setup at this context");
      r.speed = sp;
      continue;
    }
    sp.served_concurrency = std::min(want, cap);
    if (sp.served_concurrency < want)
      r.notes.push_back("KV capacity admits " + std::to_string(cap) + " sequences at this context; the other " +
                        std::to_string(want - sp.served_concurrency) + " requests wait");
    if (!link) {
      r.notes.push_back("no speed: the device record gives no link bandwidth for a " + std::to_string(s.count) + "-device split");
      r.speed = sp;
      continue;
    }
    const std::int64_t b = (sp.served_concurrency + s.parallel.dp - 1) / s.parallel.dp;
    const std::int64_t ctx = so.decode_context.value_or(so.input_tokens + so.output_tokens / 2);
    const PhaseCost dec = decode_step(s, PerfParams{}, b, ctx);
    if (!pre) pre = prefill(s, PerfParams{}, so.input_tokens, 0);
    const double a_d = dec_cal ? dec_cal->roofline_factor : 1.0, o_d = dec_cal ? dec_cal->per_layer_overhead_s : 0.0;
    const double a_p = pre_cal ? pre_cal->roofline_factor : 1.0, o_p = pre_cal ? pre_cal->per_layer_overhead_s : 0.0;
    const double comm_d = s.count > 1 ? comm_seconds(s, static_cast<double>(b), *link) : 0.0;
    const double comm_p = s.count > 1 ? comm_seconds(s, static_cast<double>(so.input_tokens), *link) : 0.0;
    const double t_dec = a_d * dec.seconds + o_d * layers + comm_d;
    const double t_pre = a_p * pre->seconds + o_p * layers + comm_p;
    // Continuous batching: each of the b sequences of a rank needs one prefill per output_tokens
    // steps, and prefill shares the device, so a user's token cadence includes that share.
    const double tpot = t_dec + static_cast<double>(b) * t_pre / static_cast<double>(so.output_tokens);
    sp.tpot_ms = tpot * 1e3;
    sp.ttft_ms = (t_pre + t_dec) * 1e3;
    sp.decode_tok_s_per_user = 1.0 / tpot;
    sp.output_tok_s_total = static_cast<double>(sp.served_concurrency) / tpot;
    sp.output_tok_s_per_gpu = *sp.output_tok_s_total / static_cast<double>(s.count);
    sp.prefill_tok_s_total = *sp.output_tok_s_total * static_cast<double>(so.input_tokens) / static_cast<double>(so.output_tokens);
    if (d.price) sp.cost_usd_per_mtok_output = d.price->usd_per_hour * static_cast<double>(s.count) / 3600.0 / *sp.output_tok_s_total * 1e6;
    else r.notes.push_back("cost: " + d.id + " has no public price per hour (pass --price-per-hour)");
    sp.bottleneck = sp.served_concurrency < want ? "kv capacity"
                    : comm_d > a_d * dec.seconds ? "communication"
                    : dec.bottleneck == "memory" ? "memory bandwidth" : "compute";
    if (dec_cal) {
      sp.basis = "roofline calibrated on " + std::to_string(dec_cal->rows) + " published measurements (" + dec_key + ")";
      sp.expected_error_pct = dec_cal->loo_median_abs_error_pct;
      if (b > 1) r.notes.push_back("calibration comes from single-stream measurements; batched decode is roofline-extrapolated");
    } else {
      sp.basis = "datasheet roofline only: no published measurements of " + rec.framework + " on " + kind + " devices";
      r.notes.push_back("expected_error_pct is null: no held-out check exists for this framework and device class");
    }
    if (!pre_cal) r.notes.push_back("prefill/TTFT: datasheet roofline only (no calibration group)");
    r.notes.push_back("TTFT is at light load (queueing is not modelled); TPOT includes the prefill share of continuous batching");
    if (s.count > 1) r.notes.push_back("communication: bandwidth terms only (no link latency)");
    DEEPFIT_ASSERT(std::isfinite(tpot) && tpot > 0, "non-finite TPOT");
    r.speed = sp;
  }
}

std::vector<FitRecord> plan_predict(const Catalog& cat, const CalibrationDb& cal, const FitOptions& opt, const ServingOptions& so,
                                    const hwdb::Device& device) {
  const ModelSpec m = cat.model(opt.model);
  if (so.input_tokens + so.output_tokens > m.max_ctx_len)
    throw InputError("--input/--output: " + std::to_string(so.input_tokens + so.output_tokens) + " tokens exceed " + m.display_name +
                     "'s maximum context of " + std::to_string(m.max_ctx_len));
  FitOptions fo = opt;
  fo.context_tokens = std::max(so.input_tokens + so.output_tokens, so.decode_context.value_or(0));
  std::vector<std::string> quants = opt.quants.empty() ? std::vector<std::string>{m.released_format == "mxfp4" ? "mxfp4" : m.released_format == "fp8" ? "fp8" : "bf16"}
                                                       : opt.quants;
  std::vector<FitRecord> out;
  for (const auto& q : quants) {
    const Scheme& scheme = cat.quants.scheme(q);
    const StoredModel stored = store_model(m, scheme, cat.quants);
    FitRecord rec = plan_fit_stored(cat, fo, &device, m, stored, scheme);
    FitSetup s;
    s.model = &m;
    s.stored = &stored;
    s.scheme = &scheme;
    s.device = &device;
    s.framework = &cat.frameworks.get(rec.framework);
    s.count = rec.count;
    s.parallel = rec.parallel;
    s.kv_dtype = rec.kv_dtype;
    s.offload = rec.offload;
    s.mtp = opt.mtp;
    if (s.offload.kind != Offload::Kind::kNone) throw InputError("--offload: hybrid CPU+GPU speed is not modelled yet (fit works)");
    predict_speed(cat, cal, rec, so, s);
    out.push_back(std::move(rec));
  }
  return out;
}

}  // namespace deepfit::planner
