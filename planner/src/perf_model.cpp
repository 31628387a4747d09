// Decode/prefill roofline (see perf_model.h).
#include "planner/perf_model.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/error.h"

namespace deepfit::planner {
namespace {

// Dominant weight format (by bytes) of the matrices a token multiplies.
std::string dominant_format(const StoredModel& st) {
  // A handful of formats over thousands of tensors: a short list beats a map's allocations.
  std::vector<std::pair<const std::string*, double>> by;
  for (const auto& t : st.tensors) {
    if (!t.tensor.is_matrix() || t.tensor.role == TensorRole::kEmbedding) continue;
    auto it = std::find_if(by.begin(), by.end(), [&](const auto& e) { return *e.first == t.format; });
    if (it == by.end()) it = by.emplace(by.end(), &t.format, 0.0);
    it->second += static_cast<double>(t.bytes);
  }
  // The most bytes; ties go to the alphabetically first format, as a map's order gave.
  const std::string* best = nullptr;
  double most = -1;
  for (const auto& [f, b] : by)
    if (b > most || (b == most && *f < *best)) {
      most = b;
      best = f;
    }
  return best ? *best : std::string();
}

bool in_part(const Tensor& t, const StepShape& sh) {
  const bool outside_layers = t.layer < 0 || t.mtp;
  if (outside_layers ? sh.first_layer > 0 : (t.layer < sh.first_layer || t.layer >= sh.end_layer)) return false;
  const bool routed = t.role == TensorRole::kRoutedExpert;
  return sh.part == WeightPart::kAll || (sh.part == WeightPart::kRoutedExpertsOnly) == routed;
}

// Share of the model's layers in the shape's layer range (attention and KV scale with it).
double layer_share(const ModelSpec& m, const StepShape& sh) {
  const std::int64_t hi = std::min(sh.end_layer, m.num_layers), lo = std::min(sh.first_layer, hi);
  return static_cast<double>(hi - lo) / static_cast<double>(m.num_layers);
}

// Active parameters a token multiplies with (embedding rows are gathers, not products).
double matmul_params(const StoredModel& st, const ModelSpec& m, bool mtp, const StepShape& sh) {
  double n = 0;
  for (const auto& t : st.tensors) {
    if (!t.tensor.is_matrix() || t.tensor.role == TensorRole::kEmbedding || (t.tensor.mtp && !mtp) || !in_part(t.tensor, sh)) continue;
    const double e = static_cast<double>(t.tensor.num_elements());
    n += t.tensor.role == TensorRole::kRoutedExpert ? e / static_cast<double>(m.num_experts) * static_cast<double>(m.top_k) : e;
  }
  return n;
}

PhaseCost finish(PhaseCost c, const hwdb::Device& d, const PerfParams& p, const std::string& fmt) {
  const double bw = d.memory_bandwidth_gbps * 1e9 * p.bandwidth_fraction;
  const double mem_w = c.weight_bytes / bw, mem_a = c.kv_bytes / bw;
  double cmp_w = 0, cmp_a = 0;
  if (auto peak = compute_peak(d, fmt, p.fp16_accumulate)) {
    c.compute_dtype = peak->first;
    cmp_w = (c.flops - c.attention_flops) / (peak->second * 1e12 * p.compute_fraction);
  }
  // Attention runs on the 16-bit path (FlashMLA and llama.cpp dequantize an fp8 or quantized cache).
  if (auto peak = compute_peak(d, "bf16")) {
    c.attention_dtype = peak->first;
    cmp_a = c.attention_flops / (peak->second * 1e12 * p.compute_fraction);
  }
  c.weight_seconds = std::max(mem_w, cmp_w);
  c.attention_seconds = std::max(mem_a, cmp_a);
  c.memory_seconds = mem_w + mem_a;
  c.compute_seconds = cmp_w + cmp_a;
  const double compute_bound = (cmp_w > mem_w ? cmp_w : 0) + (cmp_a > mem_a ? cmp_a : 0);
  c.bottleneck = 2 * compute_bound > c.weight_seconds + c.attention_seconds ? "compute" : "memory";
  c.seconds = c.weight_seconds + c.attention_seconds + p.step_overhead_s;
  DEEPFIT_ASSERT(std::isfinite(c.seconds) && c.seconds > 0, "non-finite step time");
  return c;
}

}  // namespace

double expected_experts(std::int64_t num_experts, std::int64_t top_k, std::int64_t batch) {
  const double E = static_cast<double>(num_experts), k = static_cast<double>(top_k);
  return E * (1.0 - std::pow(1.0 - k / E, static_cast<double>(batch)));
}

PerfParams perf_params(const FitSetup& s) {
  PerfParams p;
  p.fp16_accumulate = s.framework && s.framework->compute.fp16_accumulate;
  return p;
}

std::optional<std::pair<std::string, double>> compute_peak(const hwdb::Device& d, const std::string& f, bool fp16_accumulate) {
  const auto& pk = d.peak_tflops;
  auto pick = [](const char* name, const std::optional<double>& v) -> std::optional<std::pair<std::string, double>> {
    if (v) return std::make_pair(std::string(name), *v);
    return std::nullopt;
  };
  // Low-precision formats run at their own rate where the hardware has one; everything else is
  // dequantized to 16 bits (GGUF k-quants in llama.cpp's GPU kernels, FP8 on A100) or, on CPUs,
  // multiplied through int8 dot products (llama.cpp's quantized CPU path) when the record has them.
  if ((f == "fp8_e4m3_b128" || f == "fp8_e4m3") && pk.fp8) return pick("fp8", pk.fp8);
  if ((f == "nvfp4" || f == "mxfp4") && pk.fp4) return pick("fp4", pk.fp4);
  const bool gguf_quant = f.rfind("q", 0) == 0 || f.rfind("iq", 0) == 0;
  if (d.kind == hwdb::DeviceKind::kCpu) {
    if (gguf_quant && pk.int8) return pick("int8", pk.int8);
    if (pk.bf16 && f == "bf16") return pick("bf16", pk.bf16);
    return pick("fp32", pk.fp32);
  }
  if (fp16_accumulate && pk.fp16_acc16 && (gguf_quant || f == "f16" || f == "fp16")) return pick("fp16_acc16", pk.fp16_acc16);
  if (pk.bf16) return pick("bf16", pk.bf16);
  if (pk.fp16) return pick("fp16", pk.fp16);
  return pick("fp32", pk.fp32);
}

std::array<double, 3> loop_terms(const PhaseCost& c, const hwdb::Device& d, const std::string& matrix_format) {
  const auto peak = compute_peak(d, matrix_format);
  if (!peak) throw InputError(d.id + ": the record has no compute peak for " + matrix_format);
  return {c.weight_bytes / (d.memory_bandwidth_gbps * 1e9), (c.flops - c.attention_flops) / (peak->second * 1e12), c.attention_seconds};
}

std::string matrix_format(const StoredModel& st) {
  for (const auto& t : st.tensors)
    if (t.tensor.role == TensorRole::kRoutedExpert || t.tensor.role == TensorRole::kDenseFfn) return t.format;
  return "bf16";
}

PhaseCost decode_step(const FitSetup& s, const PerfParams& p, std::int64_t batch, std::int64_t context_tokens, const StepShape& shape) {
  DEEPFIT_ASSERT(s.device && batch >= 1 && context_tokens >= 0 && shape.tokens_per_sequence >= 1, "decode_step needs a device and a batch");
  const ModelSpec& m = *s.model;
  PhaseCost c;
  const std::int64_t tokens = batch * shape.tokens_per_sequence;
  const double experts_read = m.is_moe() ? expected_experts(m.num_experts, m.top_k, tokens) / static_cast<double>(m.num_experts) : 1.0;
  for (const auto& t : s.stored->tensors) {
    if ((t.tensor.mtp && !s.mtp) || !in_part(t.tensor, shape)) continue;
    if (t.tensor.role == TensorRole::kEmbedding) continue;  // a gather of `batch` rows: negligible
    double bytes = static_cast<double>(t.bytes) * device_share(t.tensor, m, s.parallel);
    if (t.tensor.role == TensorRole::kRoutedExpert) bytes *= experts_read;
    c.weight_bytes += bytes;
  }
  const double tp = static_cast<double>(s.parallel.tp);
  // FLOPs: 2 per weight per token, plus attention over the context.
  c.flops = 2.0 * matmul_params(*s.stored, m, s.mtp, shape) * static_cast<double>(tokens) / tp;
  const double share = layer_share(m, shape);
  if (shape.part == WeightPart::kRoutedExpertsOnly || share == 0) return finish(c, *s.device, p, dominant_format(*s.stored));
  // KV: every cached position per sequence (DSA: the indexer scans all, attention reads top-k).
  const KvPerToken kv = kv_of(s);
  const double layers = static_cast<double>(kv.num_full_layers + kv.num_window_layers) * share;
  double kv_per_seq = static_cast<double>(kv_bytes_per_sequence(kv, context_tokens, s.parallel.tp, share));
  if (m.dsa && context_tokens > m.index_top_k) {
    const double attended = static_cast<double>(m.index_top_k) / static_cast<double>(context_tokens);
    kv_per_seq = static_cast<double>(context_tokens) * layers *
                 (static_cast<double>(kv.indexer_bytes_per_layer) + static_cast<double>(kv.attention_bytes_per_layer) * attended);
  }
  c.kv_bytes = kv_per_seq * static_cast<double>(batch);
  const double ctx = static_cast<double>(context_tokens);
  double attn = 0;
  if (m.mla) {
    // Absorbed MLA: scores over (kv_lora + rope) and values over kv_lora, per head and position.
    const double attended = m.dsa ? std::min(ctx, static_cast<double>(m.index_top_k)) : ctx;
    attn = 2.0 * static_cast<double>(m.num_heads) / tp * attended * static_cast<double>(2 * m.kv_lora_rank + m.rope_head_dim);
    if (m.dsa) attn += 2.0 * ctx * static_cast<double>(m.index_num_heads * m.index_head_dim);
  } else {
    attn = 4.0 * static_cast<double>(m.num_heads) / tp * ctx * static_cast<double>(m.head_dim);
  }
  c.attention_flops = attn * layers * static_cast<double>(tokens);
  c.flops += c.attention_flops;
  return finish(c, *s.device, p, dominant_format(*s.stored));
}

PhaseCost prefill(const FitSetup& s, const PerfParams& p, std::int64_t tokens, std::int64_t context_tokens, const StepShape& shape) {
  DEEPFIT_ASSERT(s.device && tokens >= 1 && context_tokens >= 0, "prefill needs a device and tokens");
  const ModelSpec& m = *s.model;
  PhaseCost c;
  // Weights are read once per pass; at prefill batch sizes every expert is used.
  for (const auto& t : s.stored->tensors) {
    if ((t.tensor.mtp && !s.mtp) || t.tensor.role == TensorRole::kEmbedding || !in_part(t.tensor, shape)) continue;
    double bytes = static_cast<double>(t.bytes) * device_share(t.tensor, m, s.parallel);
    if (t.tensor.role == TensorRole::kRoutedExpert) bytes *= expected_experts(m.num_experts, m.top_k, tokens) / static_cast<double>(m.num_experts);
    c.weight_bytes += bytes;
  }
  const double tp = static_cast<double>(s.parallel.tp), n = static_cast<double>(tokens);
  c.flops = 2.0 * matmul_params(*s.stored, m, s.mtp, shape) * n / tp;
  const double share = layer_share(m, shape);
  if (shape.part == WeightPart::kRoutedExpertsOnly || share == 0) return finish(c, *s.device, p, dominant_format(*s.stored));
  // Causal attention: token i attends to context + i positions (non-absorbed MLA uses per-head dims).
  const double pairs = n * static_cast<double>(context_tokens) + n * (n + 1) / 2;
  const KvPerToken kv = kv_of(s);
  const double layers = static_cast<double>(kv.num_full_layers + kv.num_window_layers) * share;
  const double head_qk = m.mla ? static_cast<double>(m.nope_head_dim + m.rope_head_dim) : static_cast<double>(m.head_dim);
  const double head_v = m.mla ? static_cast<double>(m.v_head_dim) : static_cast<double>(m.head_dim);
  double attended_pairs = pairs;
  if (m.dsa) attended_pairs = std::min(pairs, n * static_cast<double>(m.index_top_k));
  c.attention_flops = 2.0 * static_cast<double>(m.num_heads) / tp * attended_pairs * (head_qk + head_v) * layers;
  if (m.dsa) c.attention_flops += 2.0 * pairs * static_cast<double>(m.index_num_heads * m.index_head_dim) * layers;
  c.flops += c.attention_flops;
  c.kv_bytes = static_cast<double>(kv_bytes_per_sequence(kv, context_tokens + tokens, s.parallel.tp, share));
  return finish(c, *s.device, p, dominant_format(*s.stored));
}

}  // namespace deepfit::planner
