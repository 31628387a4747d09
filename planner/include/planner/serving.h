// Serving arithmetic shared by `predict` and `validate`. Requests in flight become decode steps
// and prefills priced on the roofline (perf_model.h), plus link terms (bandwidth and per-collective
// latency), MTP speculative decoding, and hybrid CPU+GPU runs whose routed experts live in host
// RAM. Every metric is one timed interval of the form
//     t = a * roofline_s + o * layer_passes + fixed_s
// so one calibration (a, o) per framework and phase, fitted on published measurements of any
// metric, prices every metric the same way.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "hwdb/device.h"
#include "planner/links.h"
#include "planner/perf_model.h"

namespace deepfit::planner {

struct ServingRequest {
  std::int64_t concurrency = 1;  // requests in flight (already capped by the KV capacity)
  std::int64_t input_tokens = 1024, output_tokens = 256;
  std::optional<std::int64_t> decode_context;  // KV position of decode (default input + output / 2)
  std::int64_t prefill_context = 0;             // tokens already cached when the prompt is prefilled
  bool disaggregated = false;                   // prefill on other devices: no prefill share in decode
  std::optional<double> mtp_acceptance;         // MTP with one draft token accepted at this rate
};

// One timed interval: t = a * roofline_s + o * layer_passes + fixed_s.
struct TimeTerms {
  double roofline_s = 0, layer_passes = 0, fixed_s = 0;
  double at(double a, double o) const { return a * roofline_s + o * layer_passes + fixed_s; }
};

struct ServingTerms {
  std::int64_t dp = 1;         // data-parallel (attention) ranks, each with its own sequences
  std::int64_t per_rank = 1;   // sequences per DP rank
  TimeTerms step;              // one decode step of a rank (verification of drafts included)
  TimeTerms prefill;           // one request's prefill
  double tokens_per_step = 1;  // 1 + the expected accepted draft tokens
  PhaseCost dec, pre;          // the accelerator's roofline detail
  double comm_step_s = 0, comm_prefill_s = 0;  // link time (inside fixed_s)
  double host_step_s = 0;                      // hybrid: routed experts on the host CPU (inside roofline_s)
  bool host_prefill_on_gpu = false;            // hybrid prefill: host weights copied to the GPU per micro-batch
};

// `host`: the CPU of a hybrid run (nullptr: none), computing from host RAM either the routed
// experts, or with s.offload layers:N the last N layers and their KV (llama.cpp's -ngl split). `link`: required
// when s.count > 1. `same_prefill`: terms of the same setup and prompt at another concurrency,
// whose prefill is reused (it does not depend on the concurrency; a sweep prices it once).
ServingTerms serving_terms(const FitSetup& s, const ServingRequest& rq, const std::optional<LinkModel>& link,
                           const hwdb::Device* host, const ServingTerms* same_prefill = nullptr);

// Continuous batching: over `output` steps a rank also prefills each of its sequences once.
// Throughput interval per step: (step + per_rank * prefill / output) / tokens per step. A user's
// TPOT excludes its own prefill (it comes before the first token): (per_rank - 1) prefills.
// No prefill share when disaggregated.
TimeTerms cycle_terms(const ServingTerms& t, const ServingRequest& rq);
TimeTerms tpot_terms(const ServingTerms& t, const ServingRequest& rq);

// Queueing of prompts on a rank: with `per_rank` users in a closed loop, a finished request is
// replaced at once, so prompts arrive while other prompts are being prefilled and wait their turn.
// The rank spends a fraction rho = share / (step + share) of its time prefilling (share: per_rank
// prefills per `output` steps); an arriving prompt sees the other per_rank - 1 users only (the
// arrival theorem of closed queues), rho' = rho (n - 1) / n, and waits rho' / (2 (1 - rho'))
// prefill times on average (M/D/1: Poisson arrivals, fixed prefill time; an approximation, since
// a closed loop's arrivals are not Poisson). Returned in prefill times; 0 for one user per rank or
// disaggregated prefill (its own pool, not modelled). `prefill_s` and `step_s` are the calibrated
// prefill and decode-step times.
double prefill_wait_factor(const ServingTerms& t, const ServingRequest& rq, double prefill_s, double step_s);
// TTFT: the prefill, the expected wait for other prompts' prefills, and the first step. The wait
// factor is taken at the uncalibrated roofline (a = 1, o = 0) so that the interval stays linear in
// the calibration; `predict` uses the calibrated times instead.
TimeTerms ttft_terms(const ServingTerms& t, const ServingRequest& rq);

// Phase whose calibration prices a metric: "decode_tok_s_per_user" for the decode-side metrics
// (tpot, output throughput), "prefill_tok_s_total" for the prefill side (ttft, prefill throughput).
std::optional<std::string> calibration_phase(const std::string& metric);

// A published metric as an interval: value = scale / t for rates, t * scale for times.
struct MetricTerms {
  TimeTerms t;
  double scale = 1;
  bool is_time = false;
  double value(double a, double o) const { return is_time ? t.at(a, o) * scale : scale / t.at(a, o); }
  double seconds_of(double measured) const { return is_time ? measured / scale : scale / measured; }
};
// nullopt for metrics that are not speeds (file_bytes, memory, ...).
std::optional<MetricTerms> metric_terms(const std::string& metric, const ServingTerms& t, const ServingRequest& rq,
                                        std::int64_t count, std::int64_t nodes);

}  // namespace deepfit::planner
