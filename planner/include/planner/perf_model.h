// The performance model's core: time of a decode step and of a prefill pass from the roofline of
// each device (bytes over bandwidth, FLOPs over the peak of the compute dtype, each times an
// achievable fraction) plus a per-step overhead. Work is counted from the stored tensors, so the
// quantization, sharding and MoE expert reuse of `fit` apply unchanged.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "planner/capacity.h"

namespace deepfit::planner {

// Achievable fractions of peak and a fixed cost per step; 1, 1, 0 is the pure datasheet roofline.
struct PerfParams {
  double bandwidth_fraction = 1.0;
  double compute_fraction = 1.0;
  double step_overhead_s = 0.0;
  // The framework's 16-bit GEMMs accumulate in FP16 (FrameworkCompute::fp16_accumulate).
  bool fp16_accumulate = false;
};

// The parameters a setup's framework implies (the datasheet roofline otherwise).
PerfParams perf_params(const FitSetup& s);

struct PhaseCost {
  double seconds = 0;
  double weight_bytes = 0;   // read per device per step (busiest device, summed over pipeline stages)
  double kv_bytes = 0;
  double flops = 0;          // per device, attention included
  double attention_flops = 0;  // the part of `flops` over the KV cache (scores, values, DSA indexer)
  // Weights and attention are two rooflines run one after the other: each takes the longer of its
  // bytes over the bandwidth and its FLOPs over its peak, and the step takes their sum.
  double weight_seconds = 0, attention_seconds = 0;
  double memory_seconds = 0, compute_seconds = 0;  // the memory and compute sides, summed over both
  std::string bottleneck;    // "memory" or "compute"
  std::string compute_dtype; // peak used for the weights' FLOPs
  std::string attention_dtype;  // peak used for attention's FLOPs (16-bit where the device has it)
};

// Expected distinct experts a layer reads when `batch` tokens each pick k of E uniformly:
// E * (1 - (1 - k/E)^batch).
double expected_experts(std::int64_t num_experts, std::int64_t top_k, std::int64_t batch);

// Which peak the device uses for this weight format, and its TFLOP/s; nullopt when the record has
// no usable peak (then compute time is unknown). With `fp16_accumulate`, weights multiplied in FP16
// on a GPU (fp16, and GGUF quants dequantized to fp16) run at the record's `fp16_acc16` rate.
std::optional<std::pair<std::string, double>> compute_peak(const hwdb::Device& d, const std::string& weight_format,
                                                           bool fp16_accumulate = false);

// Which weights a phase prices: all, or the split of a hybrid CPU+GPU run (routed experts on the
// host CPU, everything else on the GPU).
enum class WeightPart { kAll, kExceptRoutedExperts, kRoutedExpertsOnly };

struct StepShape {
  std::int64_t tokens_per_sequence = 1;  // MTP verification: the token and its draft, one KV read
  WeightPart part = WeightPart::kAll;    // kRoutedExpertsOnly has no attention and no KV
  // Layers [first_layer, end_layer) with their weights, KV and attention: a layer split between
  // GPU and CPU (--offload layers:N) prices each side's layers on its device. Tensors outside the
  // layers (LM head, final norm, MTP module) belong to the side that starts at layer 0.
  std::int64_t first_layer = 0;
  std::int64_t end_layer = std::numeric_limits<std::int64_t>::max();
};

// One decode step for `batch` sequences at `context_tokens` positions each, on the busiest DP rank.
PhaseCost decode_step(const FitSetup& s, const PerfParams& p, std::int64_t batch, std::int64_t context_tokens,
                      const StepShape& shape = {});
// A step's three times as the host decode loop's calibration prices them: weight bytes over the
// device's bandwidth, weight FLOPs over its peak for `matrix_format`, and attention's roofline.
// InputError when the record has no peak for the format.
std::array<double, 3> loop_terms(const PhaseCost& c, const hwdb::Device& d, const std::string& matrix_format);
// The format of the matrices a stored model multiplies through (its FFN/expert weights).
std::string matrix_format(const StoredModel& st);

// Prefill of `tokens` new tokens (one sequence, after `context_tokens` already cached);
// `shape.tokens_per_sequence` is not used.
PhaseCost prefill(const FitSetup& s, const PerfParams& p, std::int64_t tokens, std::int64_t context_tokens,
                  const StepShape& shape = {});

}  // namespace deepfit::planner
