// `deepfit compare` (see compare.h).
#include "planner/compare.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "kernels/error.h"

namespace deepfit::planner {

Comparison compare_setups(const Catalog& cat, const CalibrationDb& cal, const CompareOptions& opt) {
  if (opt.sort != "cost" && opt.sort != "throughput" && opt.sort != "latency")
    throw InputError("--sort: unknown key '" + opt.sort + "' (expected cost, throughput or latency)");
  const ModelSpec m = cat.model(opt.model);
  std::vector<std::string> quants = opt.quants;
  if (quants.empty()) quants = {m.released_format == "mxfp4" ? "mxfp4" : "fp8", "bf16", "nvfp4", "awq-int4", "q4_k_m"};
  std::vector<const hwdb::Device*> devices;
  if (opt.devices.empty()) {
    for (const auto& d : cat.devices.all()) devices.push_back(&d);
  } else {
    for (const auto& id : opt.devices) devices.push_back(&cat.devices.get(id));
  }
  Comparison out;
  for (const auto& q : quants) {
    const Scheme& scheme = cat.quants.scheme(q);
    const StoredModel stored = store_model(m, scheme, cat.quants);
    for (const hwdb::Device* d : devices) {
      for (std::int64_t n = 1; n <= opt.max_count; n *= 2) {
        const std::string fw = default_framework(scheme, d);
        std::vector<std::string> layouts = {to_string(default_parallel(n, fw))};
        if (m.is_moe() && n > 1 && fw != "llamacpp" && m.num_experts % n == 0)
          layouts.push_back("tp1ep" + std::to_string(n) + "dp" + std::to_string(n));
        for (const auto& layout : layouts) {
          ++out.configs_tried;
          FitOptions fo;
          fo.model = opt.model;
          fo.count = std::to_string(n);
          fo.parallel = layout;
          fo.context_tokens = opt.serving.input_tokens + opt.serving.output_tokens;
          fo.concurrency = opt.concurrency;
          FitRecord rec;
          try {
            rec = plan_fit_stored(cat, fo, d, m, stored, scheme);
          } catch (const InputError&) {
            continue;  // this split does not suit the model (heads, experts): not a candidate
          }
          if (!rec.results.front().max_concurrency || *rec.results.front().max_concurrency < 1) continue;
          ++out.configs_fit;
          FitSetup s;
          s.model = &m;
          s.stored = &stored;
          s.scheme = &scheme;
          s.device = d;
          s.framework = &cat.frameworks.get(rec.framework);
          s.count = rec.count;
          s.parallel = rec.parallel;
          s.kv_dtype = rec.kv_dtype;
          predict_speed(cat, cal, rec, opt.serving, s);
          for (const auto& r : rec.results) {
            if (!r.speed || !r.speed->tpot_ms) continue;
            const Speed& sp = *r.speed;
            if (opt.slo_ttft_ms && *sp.ttft_ms > *opt.slo_ttft_ms) continue;
            if (opt.slo_tpot_ms && *sp.tpot_ms > *opt.slo_tpot_ms) continue;
            const double rps = *sp.output_tok_s_total / static_cast<double>(opt.serving.output_tokens);
            if (opt.request_rate && rps < *opt.request_rate) continue;
            out.rows.push_back({d->id, q, rec.framework, to_string(rec.parallel), rec.count, r.concurrency, sp, rps, false});
          }
        }
      }
    }
  }
  if (opt.count_auto) {
    // The fewest devices of each (device, quant) that meet the rate and the SLOs.
    std::map<std::string, std::int64_t> fewest;
    for (const auto& r : out.rows) {
      auto [it, fresh] = fewest.emplace(r.device + "/" + r.quant, r.count);
      if (!fresh) it->second = std::min(it->second, r.count);
    }
    std::erase_if(out.rows, [&](const CompareRow& r) { return r.count != fewest.at(r.device + "/" + r.quant); });
    out.notes.push_back("--count auto: per device and quantization, only the fewest devices meeting the request rate and SLOs");
  }
  if (opt.request_rate)
    out.notes.push_back("request rate: rows complete at least " + std::to_string(*opt.request_rate).substr(0, 6) +
                        " requests/s (output_tok_s_total / output tokens) at their concurrency");
  // Pareto front over (cost, per-user speed): rows without a price cannot be on it.
  for (auto& a : out.rows) {
    if (!a.speed.cost_usd_per_mtok_output) continue;
    bool dominated = false;
    for (const auto& b : out.rows)
      if (b.speed.cost_usd_per_mtok_output && *b.speed.cost_usd_per_mtok_output <= *a.speed.cost_usd_per_mtok_output &&
          *b.speed.decode_tok_s_per_user >= *a.speed.decode_tok_s_per_user &&
          (*b.speed.cost_usd_per_mtok_output < *a.speed.cost_usd_per_mtok_output ||
           *b.speed.decode_tok_s_per_user > *a.speed.decode_tok_s_per_user))
        dominated = true;
    a.pareto = !dominated;
  }
  auto key = [&](const CompareRow& r) {
    if (opt.sort == "throughput") return -*r.speed.output_tok_s_per_gpu;
    if (opt.sort == "latency") return *r.speed.tpot_ms;
    return r.speed.cost_usd_per_mtok_output.value_or(INFINITY);
  };
  std::stable_sort(out.rows.begin(), out.rows.end(), [&](const CompareRow& a, const CompareRow& b) { return key(a) < key(b); });
  if (opt.sort == "cost") out.notes.push_back("rows without a public price sort last (no cost)");
  out.notes.push_back("counts are powers of two up to --max-count; MoE models also try attention data parallelism (tp1epNdpN)");
  return out;
}

}  // namespace deepfit::planner
