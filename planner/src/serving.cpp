// Serving arithmetic shared by predict and validate (see serving.h).
#include "planner/serving.h"

#include <algorithm>
#include <cmath>

#include "hwdb/json_check.h"
#include "kernels/error.h"

namespace deepfit::planner {
namespace {

// Link time for `tokens` tokens through every layer: TP all-reduces (two per layer, ring), EP
// dispatch (fp8) and combine (bf16) per MoE layer, PP hand-offs; each collective also pays the
// fabric's latency once.
double comm_seconds(const FitSetup& s, double tokens, const LinkModel& link) {
  const ModelSpec& m = *s.model;
  const ParallelPlan& p = s.parallel;
  const double H = static_cast<double>(m.hidden_dim), L = static_cast<double>(m.num_layers);
  const double moe_layers = static_cast<double>(m.num_moe_layers());
  double bytes = 0, collectives = 0;
  if (p.tp > 1) {
    bytes += L * 2 * 2.0 * (static_cast<double>(p.tp) - 1) / static_cast<double>(p.tp) * tokens * H * 2;
    collectives += 2 * L;
  }
  if (p.ep > 1) {
    bytes += moe_layers * tokens * static_cast<double>(m.top_k) * H * 3 * (static_cast<double>(p.ep) - 1) / static_cast<double>(p.ep);
    collectives += 2 * moe_layers;
  }
  if (p.pp > 1) {
    bytes += (static_cast<double>(p.pp) - 1) * tokens * H * 2;
    collectives += static_cast<double>(p.pp) - 1;
  }
  return bytes / (link.gbps * 1e9) + collectives * link.latency_s.value_or(0.0);
}

}  // namespace

ServingTerms serving_terms(const FitSetup& s, const ServingRequest& rq, const std::optional<LinkModel>& link,
                           const hwdb::Device* host, const ServingTerms* same_prefill) {
  DEEPFIT_ASSERT(rq.concurrency >= 1 && rq.input_tokens >= 1 && rq.output_tokens >= 1, "serving needs a request");
  DEEPFIT_ASSERT(s.count == 1 || link, "a split needs a link");
  const ModelSpec& m = *s.model;
  ServingTerms t;
  t.dp = s.parallel.dp;
  t.per_rank = (rq.concurrency + s.parallel.dp - 1) / s.parallel.dp;
  const std::int64_t ctx = rq.decode_context.value_or(rq.input_tokens + rq.output_tokens / 2);
  StepShape shape;
  shape.tokens_per_sequence = rq.mtp_acceptance ? 2 : 1;
  StepShape hshape = shape;  // the host CPU's side of a hybrid run
  const bool layer_split = s.offload.kind == Offload::Kind::kLayers;
  DEEPFIT_ASSERT(!layer_split || host, "a layer split needs the host CPU's record");
  if (layer_split) {
    // llama.cpp -ngl: the first layers on the GPU, the last N (weights and KV) in host RAM.
    shape.end_layer = m.num_layers - s.offload.num_layers;
    hshape.first_layer = shape.end_layer;
  } else if (host) {
    shape.part = WeightPart::kExceptRoutedExperts;
    hshape.part = WeightPart::kRoutedExpertsOnly;
  }
  const PerfParams pp = perf_params(s);
  t.dec = decode_step(s, pp, t.per_rank, ctx, shape);
  if (same_prefill) t.pre = same_prefill->pre;
  else t.pre = prefill(s, pp, rq.input_tokens, rq.prefill_context, shape);
  double host_pre = 0;
  if (host) {
    // The host's share runs on the host CPU from host RAM, one copy, after the GPU part.
    FitSetup hs = s;
    hs.device = host;
    hs.parallel = ParallelPlan{};
    t.host_step_s = decode_step(hs, PerfParams{}, t.per_rank, ctx, hshape).seconds;
    if (same_prefill) {
      t.host_prefill_on_gpu = same_prefill->host_prefill_on_gpu;
    } else {
      // llama.cpp multiplies micro-batches of at least `offload_min_batch` tokens on the GPU, copying
      // the host's weights over PCIe for each; a shorter last micro-batch stays on the host CPU.
      const std::int64_t min_batch = s.framework ? s.framework->compute.offload_min_batch : 0;
      const std::int64_t ubatch = s.framework ? std::max<std::int64_t>(1, s.framework->memory.activation_tokens) : 1;
      const std::int64_t rest = rq.input_tokens % ubatch;
      const std::int64_t on_host = rest < min_batch ? rest : 0, on_gpu = rq.input_tokens - on_host;
      if (min_batch > 0 && on_gpu > 0 && s.device->pcie_gen && *s.device->pcie_gen >= 3) {
        t.host_prefill_on_gpu = true;
        const PhaseCost g = prefill(s, pp, on_gpu, rq.prefill_context, hshape);
        const double copies = std::ceil(static_cast<double>(on_gpu) / static_cast<double>(ubatch));
        host_pre = g.seconds + copies * g.weight_bytes / (pcie_x16_gbps(*s.device->pcie_gen) * 1e9);
        if (on_host > 0) host_pre += prefill(hs, PerfParams{}, on_host, rq.prefill_context + on_gpu, hshape).seconds;
      } else {
        host_pre = prefill(hs, PerfParams{}, rq.input_tokens, rq.prefill_context, hshape).seconds;
      }
    }
  }
  if (s.count > 1) {
    t.comm_step_s = comm_seconds(s, static_cast<double>(t.per_rank * shape.tokens_per_sequence), *link);
    t.comm_prefill_s = same_prefill ? same_prefill->comm_prefill_s : comm_seconds(s, static_cast<double>(rq.input_tokens), *link);
  }
  const double layers = static_cast<double>(m.num_layers) + (rq.mtp_acceptance ? 1.0 : 0.0);
  t.tokens_per_step = 1.0 + rq.mtp_acceptance.value_or(0.0);
  t.step = TimeTerms{t.dec.seconds + t.host_step_s, layers, t.comm_step_s};
  t.prefill = same_prefill ? same_prefill->prefill : TimeTerms{t.pre.seconds + host_pre, static_cast<double>(m.num_layers), t.comm_prefill_s};
  return t;
}

namespace {
TimeTerms with_prefill_share(const ServingTerms& t, double prefills, const ServingRequest& rq) {
  const double k = rq.disaggregated ? 0.0 : prefills / static_cast<double>(rq.output_tokens);
  return TimeTerms{(t.step.roofline_s + k * t.prefill.roofline_s) / t.tokens_per_step,
                   (t.step.layer_passes + k * t.prefill.layer_passes) / t.tokens_per_step,
                   (t.step.fixed_s + k * t.prefill.fixed_s) / t.tokens_per_step};
}
}  // namespace

TimeTerms cycle_terms(const ServingTerms& t, const ServingRequest& rq) {
  return with_prefill_share(t, static_cast<double>(t.per_rank), rq);
}

TimeTerms tpot_terms(const ServingTerms& t, const ServingRequest& rq) {
  return with_prefill_share(t, static_cast<double>(t.per_rank - 1), rq);
}

double prefill_wait_factor(const ServingTerms& t, const ServingRequest& rq, double prefill_s, double step_s) {
  if (rq.disaggregated || t.per_rank <= 1) return 0.0;
  const double n = static_cast<double>(t.per_rank);
  const double share = n * prefill_s / static_cast<double>(rq.output_tokens);  // prefill time per step
  const double rho = share / (step_s + share);  // the rank's time spent prefilling
  const double seen = rho * (n - 1) / n;                 // what an arriving request sees (arrival theorem)
  return seen / (2 * (1 - seen));
}

TimeTerms ttft_terms(const ServingTerms& t, const ServingRequest& rq) {
  const double k = 1 + prefill_wait_factor(t, rq, t.prefill.at(1, 0), t.step.at(1, 0));
  return TimeTerms{k * t.prefill.roofline_s + t.step.roofline_s, k * t.prefill.layer_passes + t.step.layer_passes,
                   k * t.prefill.fixed_s + t.step.fixed_s};
}

std::optional<std::string> calibration_phase(const std::string& metric) {
  if (metric == "decode_tok_s_per_user" || metric == "tpot_ms" || metric.rfind("output_tok_s_", 0) == 0)
    return std::string("decode_tok_s_per_user");
  if (metric == "ttft_ms" || metric.rfind("prefill_tok_s_", 0) == 0) return std::string("prefill_tok_s_total");
  return std::nullopt;
}

std::optional<MetricTerms> metric_terms(const std::string& metric, const ServingTerms& t, const ServingRequest& rq,
                                        std::int64_t count, std::int64_t nodes) {
  const double c = static_cast<double>(rq.concurrency), n = static_cast<double>(count), nn = static_cast<double>(nodes);
  const TimeTerms tpot = tpot_terms(t, rq), cycle = cycle_terms(t, rq);
  // Prompts prefilled side by side: one per DP rank, up to the requests in flight.
  const double in = static_cast<double>(std::min(rq.concurrency, t.dp) * rq.input_tokens);
  if (metric == "decode_tok_s_per_user") return MetricTerms{tpot, 1, false};
  if (metric == "tpot_ms") return MetricTerms{tpot, 1e3, true};
  if (metric == "output_tok_s_total") return MetricTerms{cycle, c, false};
  if (metric == "output_tok_s_per_gpu") return MetricTerms{cycle, c / n, false};
  if (metric == "output_tok_s_per_node") return MetricTerms{cycle, c / nn, false};
  if (metric == "ttft_ms") return MetricTerms{ttft_terms(t, rq), 1e3, true};
  if (metric == "prefill_tok_s_total") return MetricTerms{t.prefill, in, false};
  if (metric == "prefill_tok_s_per_gpu") return MetricTerms{t.prefill, in / n, false};
  if (metric == "prefill_tok_s_per_node") return MetricTerms{t.prefill, in / nn, false};
  return std::nullopt;
}

}  // namespace deepfit::planner
