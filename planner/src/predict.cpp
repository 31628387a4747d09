// `deepfit predict` (see predict.h): serving speed and cost per concurrency.
#include "planner/predict.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "hwdb/json_check.h"
#include "kernels/error.h"
#include "planner/serving.h"

namespace deepfit::planner {
namespace {

using hwdb::Json;
using hwdb::JsonWhere;

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

HostCalibration HostCalibration::load(const std::string& path) {
  Json j = hwdb::parse_json_file(path);
  JsonWhere w{path, ""};
  hwdb::require_object(j, w);
  if (!j.contains("kind") || j.at("kind") != "host_decode_loop")
    hwdb::json_fail(w / "kind", "expected \"host_decode_loop\" (a file written by `deepfit validate --write-calibration` without --reference)");
  hwdb::check_keys(j, w, {"_comment", "kind", "host_id", "cpu", "model", "layers", "experts", "quant", "matrix_format", "kv_cache",
                          "points", "efficiency", "loo_median_abs_error_pct", "p90_abs_error_pct"});
  HostCalibration c;
  c.host_id = hwdb::get_string(j, w, "host_id");
  c.cpu = hwdb::get_string(j, w, "cpu");
  c.matrix_format = hwdb::get_string(j, w, "matrix_format");
  const Json& e = hwdb::required(j, w, "efficiency");
  JsonWhere ew = w / "efficiency";
  hwdb::check_keys(e, ew, {"weight_bytes", "weight_flops", "attention"});
  c.weight_bytes = hwdb::get_number(e, ew, "weight_bytes", 0, 1e4, "(factor)");
  c.weight_flops = hwdb::get_number(e, ew, "weight_flops", 0, 1e4, "(factor)");
  c.attention = hwdb::get_number(e, ew, "attention", 0, 1e4, "(factor)");
  const Json& pts = hwdb::required(j, w, "points");
  if (!pts.is_array() || pts.empty()) hwdb::json_fail(w / "points", "expected a non-empty array of the points it was fitted on");
  c.points = pts.size();
  c.loo_median_abs_error_pct = hwdb::get_number(j, w, "loo_median_abs_error_pct", 0, 1e6, "%");
  return c;
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
  const hwdb::Device& d = *s.device;
  std::string dec_key, pre_key;
  const std::string kind = hwdb::to_string(d.kind);
  const HostCalibration* hc = so.host_calibration;
  // The host loop's fit stands in for the published groups (it prices the step itself).
  const auto dec_cal = hc ? std::nullopt : cal.find(rec.framework, "decode_tok_s_per_user", kind, &dec_key);
  const auto pre_cal = hc ? std::nullopt : cal.find(rec.framework, "prefill_tok_s_total", kind, &pre_key);
  const double a_d = dec_cal ? dec_cal->roofline_factor : 1.0, o_d = dec_cal ? dec_cal->per_layer_overhead_s : 0.0;
  const double a_p = pre_cal ? pre_cal->roofline_factor : 1.0, o_p = pre_cal ? pre_cal->per_layer_overhead_s : 0.0;
  const std::optional<LinkModel> link = s.count > 1 ? link_model(d, s.count, cat.links) : std::nullopt;
  if (hc) {
    if (d.kind != hwdb::DeviceKind::kCpu) throw InputError("--host-calibration: it calibrates a CPU's decode loop; " + d.id + " is not a CPU");
    if (d.id != hc->host_id)
      throw InputError("--host-calibration: fitted on '" + hc->host_id + "', not on --device " + d.id + " (use --device host)");
    if (rec.framework != "deepfit") throw InputError("--host-calibration: it is the fit of deepfit's own decode loop; pass --framework deepfit");
    if (s.offload.kind != Offload::Kind::kNone) throw InputError("--host-calibration: no offload on a CPU-only run");
  }
  std::optional<ServingTerms> first;  // the prompt's prefill does not depend on the concurrency: price it once
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
    if (s.count > 1 && !link) {
      r.notes.push_back("no speed: the device record gives no link bandwidth for a " + std::to_string(s.count) + "-device split");
      r.speed = sp;
      continue;
    }
    ServingRequest rq;
    rq.concurrency = sp.served_concurrency;
    rq.input_tokens = so.input_tokens;
    rq.output_tokens = so.output_tokens;
    rq.decode_context = so.decode_context;
    rq.mtp_acceptance = so.mtp_acceptance;
    ServingTerms t = serving_terms(s, rq, link, so.host, first ? &*first : nullptr);
    if (!first) first = t;
    if (hc) {
      // The host loop's fit replaces the decode step; prefill keeps the record's roofline.
      const auto x = loop_terms(t.dec, d, matrix_format(*s.stored));
      t.step = TimeTerms{hc->weight_bytes * x[0] + hc->weight_flops * x[1] + hc->attention * x[2], 0, 0};
    }
    const double tpot = tpot_terms(t, rq).at(a_d, o_d), cycle = cycle_terms(t, rq).at(a_d, o_d);
    const double t_pre = t.prefill.at(a_p, o_p);
    sp.tpot_ms = tpot * 1e3;
    sp.ttft_ms = (t_pre * (1 + prefill_wait_factor(t, rq, t_pre, t.step.at(a_d, o_d))) + t.step.at(a_d, o_d)) * 1e3;
    sp.decode_tok_s_per_user = 1.0 / tpot;
    sp.output_tok_s_total = static_cast<double>(sp.served_concurrency) / cycle;
    sp.output_tok_s_per_gpu = *sp.output_tok_s_total / static_cast<double>(s.count);
    sp.prefill_tok_s_total = *sp.output_tok_s_total * static_cast<double>(so.input_tokens) / static_cast<double>(so.output_tokens);
    const double device_hours_per_s = static_cast<double>(s.count) / 3600.0;
    if (d.price) {
      sp.cost_usd_per_mtok_output = d.price->usd_per_hour * device_hours_per_s / *sp.output_tok_s_total * 1e6;
      // Input tokens: the devices prefilling back to back, one prompt per DP rank at a time.
      const double prefill_capacity = static_cast<double>(std::min(sp.served_concurrency, s.parallel.dp) * so.input_tokens) / t_pre;
      sp.cost_usd_per_mtok_input = d.price->usd_per_hour * device_hours_per_s / prefill_capacity * 1e6;
    } else {
      r.notes.push_back("cost: " + d.id + " has no public price per hour (pass --price-per-hour)");
    }
    if (so.usd_per_kwh) {
      if (d.tdp_w) {
        // Upper bound: every device drawing its TDP the whole time.
        const double usd_per_s = *d.tdp_w * static_cast<double>(s.count) / 1000.0 * *so.usd_per_kwh / 3600.0;
        sp.energy_usd_per_mtok_output = usd_per_s / *sp.output_tok_s_total * 1e6;
      } else {
        r.notes.push_back("energy: " + d.id + " has no TDP in its record");
      }
    }
    const double busy = a_d * t.dec.seconds;
    sp.bottleneck = sp.served_concurrency < want       ? "kv capacity"
                    : t.host_step_s * a_d > busy        ? "host memory bandwidth"
                    : t.comm_step_s > busy              ? "communication"
                    : t.dec.bottleneck == "memory"      ? "memory bandwidth"
                                                        : "compute";
    if (hc) {
      sp.basis = "host decode loop on " + hc->cpu + ": weight bytes x " + std::to_string(hc->weight_bytes).substr(0, 4) +
                 " + weight FLOPs x " + std::to_string(hc->weight_flops).substr(0, 4) + " + attention x " +
                 std::to_string(hc->attention).substr(0, 4) + ", fitted on " + std::to_string(hc->points) + " measured points";
      sp.expected_error_pct = hc->loo_median_abs_error_pct;
      if (matrix_format(*s.stored) != hc->matrix_format)
        r.notes.push_back("host calibration: fitted with " + hc->matrix_format + " matrices, applied to " + matrix_format(*s.stored));
      r.notes.push_back("prefill/TTFT: the host record's roofline (the host loop measures decode only)");
    } else if (dec_cal) {
      sp.basis = "roofline calibrated on " + std::to_string(dec_cal->rows) + " published measurements (" + dec_key + ")";
      sp.expected_error_pct = dec_cal->loo_median_abs_error_pct;
    } else {
      sp.basis = "datasheet roofline only: no published measurements of " + rec.framework + " on " + kind + " devices";
      r.notes.push_back("expected_error_pct is null: no held-out check exists for this framework and device class");
    }
    if (!pre_cal && !hc) r.notes.push_back("prefill/TTFT: datasheet roofline only (no calibration group)");
    r.notes.push_back(sp.served_concurrency > s.parallel.dp
                          ? "TTFT includes the expected wait for other users' prompts (M/D/1 approximation of a closed loop); TPOT includes the prefill share of continuous batching"
                          : "TTFT: one user per rank, no prompt waits; TPOT includes the prefill share of continuous batching");
    if (rq.mtp_acceptance)
      r.notes.push_back("MTP: one draft token accepted at " + std::to_string(static_cast<int>(std::lround(*rq.mtp_acceptance * 100))) +
                        " %, so " + std::to_string(t.tokens_per_step).substr(0, 4) + " tokens per verification step");
    if (so.host && s.offload.kind == Offload::Kind::kLayers)
      r.notes.push_back("layer split: the last " + std::to_string(s.offload.num_layers) + " layers and their KV computed by " + so.host->id +
                        " from host RAM after the GPU's layers (no overlap)");
    else if (so.host)
      r.notes.push_back("hybrid: routed experts computed by " + so.host->id + " from host RAM after the GPU part (no overlap)");
    if (t.host_prefill_on_gpu)
      r.notes.push_back("prefill: " + rec.framework + " multiplies micro-batches of " + std::to_string(s.framework->compute.offload_min_batch) +
                        "+ tokens on the GPU, copying the host's weights over PCIe gen " + std::to_string(d.pcie_gen.value_or(0)) +
                        " x16 for each " + std::to_string(s.framework->memory.activation_tokens) + "-token micro-batch");
    if (link && !link->latency_s) r.notes.push_back("communication: no published collective latency for " + link->fabric + " (bandwidth terms only)");
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
    if (s.offload.kind == Offload::Kind::kExperts && !so.host)
      throw InputError("--offload experts: pass --host-device ID (the CPU that computes the experts from host RAM)");
    if (s.offload.kind == Offload::Kind::kLayers && !so.host)
      throw InputError("--offload " + to_string(s.offload) + ": pass --host-device ID (the CPU that computes the offloaded layers from host RAM)");
    predict_speed(cat, cal, rec, so, s);
    out.push_back(std::move(rec));
  }
  return out;
}

}  // namespace deepfit::planner
