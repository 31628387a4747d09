// The memory planner (see capacity.h). Sharding rules follow vLLM/SGLang's DeepSeek and Llama
// layers: MLA's q_a/kv_a projections, norms, routers and the DSA indexer are replicated on every
// TP rank; other matrices, the vocabulary and (without EP) each expert are split over TP ranks;
// with EP the experts are divided among EP ranks.
#include "planner/capacity.h"

#include <algorithm>
#include <cmath>

#include "kernels/error.h"

namespace deepfit::planner {
namespace {

bool ends_with(const std::string& s, const char* suffix) {
  const std::string x(suffix);
  return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}

bool replicated_on_tp(const Tensor& t) {
  if (!t.is_matrix()) return true;
  if (t.role == TensorRole::kRouter || t.role == TensorRole::kIndexer || t.role == TensorRole::kNorm) return true;
  return ends_with(t.name, "attn_q_a.weight") || ends_with(t.name, "attn_kv_a_mqa.weight");
}

}  // namespace

double device_share(const Tensor& t, const ModelSpec& m, const ParallelPlan& p) {
  if (t.role == TensorRole::kRoutedExpert) return p.ep > 1 ? 1.0 / static_cast<double>(p.ep) : 1.0 / static_cast<double>(p.tp);
  if (replicated_on_tp(t)) return 1.0;
  const bool kv_proj = !m.mla && (t.name.find("attn_k.") != std::string::npos || t.name.find("attn_v.") != std::string::npos);
  if (kv_proj && p.tp > m.num_kv_heads) return 1.0 / static_cast<double>(m.num_kv_heads);  // KV heads replicated
  return 1.0 / static_cast<double>(p.tp);
}

namespace {

// Pipeline stage of a tensor: layers split evenly in order; embedding on the first stage, the
// final norm, the head and MTP on the last.
std::int64_t stage_of(const Tensor& t, std::int64_t pp, std::int64_t device_layers) {
  if (t.role == TensorRole::kEmbedding) return 0;
  if (t.layer < 0 || t.mtp || t.layer >= device_layers) return pp - 1;
  return t.layer * pp / device_layers;
}

// Activation workspace of the largest forward pass: the live buffers per token of one layer
// (residual stream, the wider of attention and FFN intermediates, in 16 bits) times the tokens of
// the framework's largest batch, plus the logits of the sequences sampled at once. An estimate
// from tensor shapes; data/README.md states it as such.
std::int64_t activation_bytes(const ModelSpec& m, const Framework& fw, const ParallelPlan& p) {
  const double tp = static_cast<double>(p.tp);
  const double H = static_cast<double>(m.hidden_dim);
  double attn = m.mla ? static_cast<double>(m.num_heads) / tp *
                            static_cast<double>(m.nope_head_dim + m.rope_head_dim + m.nope_head_dim + m.v_head_dim)
                      : (static_cast<double>(m.num_heads) + 2.0 * static_cast<double>(m.num_kv_heads)) / tp *
                            static_cast<double>(m.head_dim);
  double ffn = 0;
  if (m.num_moe_layers() < m.num_layers) ffn = 3.0 * static_cast<double>(m.ffn_dim) / tp;
  if (m.is_moe()) {
    const double f = static_cast<double>(m.moe_ffn_dim) / (p.ep > 1 ? 1.0 : tp);
    ffn = std::max(ffn, static_cast<double>(m.top_k) * (3.0 * f + H));
  }
  const double per_token_bytes = 2.0 * (4.0 * H + std::max(attn, ffn));
  const double logits = static_cast<double>(std::min(fw.memory.max_num_seqs, fw.memory.activation_tokens)) *
                        static_cast<double>(m.vocab_size) / tp * 4.0 * 2.0;
  return static_cast<std::int64_t>(static_cast<double>(fw.memory.activation_tokens) * per_token_bytes + logits);
}

}  // namespace

Offload parse_offload(const std::string& text) {
  Offload o;
  if (text == "none") return o;
  if (text == "experts") {
    o.kind = Offload::Kind::kExperts;
    return o;
  }
  if (text.rfind("layers:", 0) == 0) {
    std::string n = text.substr(7);
    bool digits = !n.empty() && n.size() <= 6 && std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits && std::stoll(n) > 0) {
      o.kind = Offload::Kind::kLayers;
      o.num_layers = std::stoll(n);
      return o;
    }
  }
  throw InputError("--offload: cannot parse '" + text + "' (expected none, experts or layers:N with N >= 1)");
}

std::string to_string(const Offload& o) {
  switch (o.kind) {
    case Offload::Kind::kNone: return "none";
    case Offload::Kind::kExperts: return "experts";
    case Offload::Kind::kLayers: return "layers:" + std::to_string(o.num_layers);
  }
  return "?";
}

KvPerToken kv_of(const FitSetup& s) { return kv_per_token(*s.model, *s.framework, s.kv_dtype); }

DeviceLoad device_load(const FitSetup& s) {
  const ModelSpec& m = *s.model;
  const ParallelPlan& p = s.parallel;
  DeviceLoad load;
  if (s.offload.kind == Offload::Kind::kLayers && s.offload.num_layers >= m.num_layers)
    throw InputError("--offload layers:" + std::to_string(s.offload.num_layers) + ": the model has only " +
                     std::to_string(m.num_layers) + " layers (hint: keep at least one on the device)");
  const std::int64_t device_layers = m.num_layers - (s.offload.kind == Offload::Kind::kLayers ? s.offload.num_layers : 0);
  std::vector<double> stage_bytes(static_cast<std::size_t>(p.pp), 0.0);
  double host = 0;
  for (const auto& st : s.stored->tensors) {
    const Tensor& t = st.tensor;
    if (t.mtp && !s.mtp) continue;
    const double bytes = static_cast<double>(st.bytes);
    const bool to_host = (s.offload.kind == Offload::Kind::kExperts && t.role == TensorRole::kRoutedExpert) ||
                         (s.offload.kind == Offload::Kind::kLayers && t.layer >= device_layers && !t.mtp) ||
                         // llama.cpp and ktransformers keep the token embedding table in host RAM when offloading.
                         (s.offload.kind != Offload::Kind::kNone && t.role == TensorRole::kEmbedding);
    if (to_host) {
      host += bytes;
      continue;
    }
    stage_bytes[static_cast<std::size_t>(stage_of(t, p.pp, device_layers))] += bytes * device_share(t, m, p);
  }
  load.weights_bytes = static_cast<std::int64_t>(std::ceil(*std::max_element(stage_bytes.begin(), stage_bytes.end())));
  load.host_bytes = static_cast<std::int64_t>(host);
  const std::int64_t stage_layers = (device_layers + p.pp - 1) / p.pp;
  load.layer_share = static_cast<double>(stage_layers) / static_cast<double>(m.num_layers);
  load.activation_bytes = activation_bytes(m, *s.framework, p);

  const FrameworkMemory& fm = s.framework->memory;
  const std::int64_t fixed = fm.cuda_graph_bytes + fm.non_torch_bytes + fm.margin_bytes;
  if (s.device) {
    const hwdb::Device& d = *s.device;
    load.capacity_bytes = d.gpu_memory_fraction
                              ? static_cast<std::int64_t>(static_cast<double>(d.memory_bytes) * *d.gpu_memory_fraction)
                              : d.memory_bytes;
    const double cap = static_cast<double>(load.capacity_bytes);
    if (fm.fraction_of == "total") {
      load.reserve_bytes = static_cast<std::int64_t>(cap * (1.0 - fm.memory_fraction)) + fixed;
    } else if (fm.fraction_of == "free_after_weights") {
      const double free_bytes = cap - static_cast<double>(load.weights_bytes + load.activation_bytes + fixed);
      load.reserve_bytes = fixed + static_cast<std::int64_t>(std::max(0.0, free_bytes) * (1.0 - fm.memory_fraction));
    } else {
      load.reserve_bytes = fixed;
    }
    load.kv_budget_bytes = load.capacity_bytes - load.weights_bytes - load.activation_bytes - load.reserve_bytes;
  } else {
    load.reserve_bytes = fixed;
  }
  return load;
}

FitResult fit_one(const FitSetup& s, const DeviceLoad& load, const KvPerToken& kv, std::int64_t concurrency,
                  std::int64_t context_tokens) {
  const ParallelPlan& p = s.parallel;
  FitResult r;
  r.concurrency = concurrency;
  r.context_tokens = context_tokens;
  const std::int64_t seqs = (concurrency + p.dp - 1) / p.dp;  // sequences on the busiest DP rank
  auto kv_seq = [&](std::int64_t ctx) { return kv_bytes_per_sequence(kv, ctx, p.tp, load.layer_share); };
  r.memory.weights_bytes = load.weights_bytes;
  r.memory.kv_cache_bytes = seqs * kv_seq(context_tokens);
  r.memory.activation_bytes = load.activation_bytes;
  r.memory.overhead_bytes = load.reserve_bytes;
  r.memory.total_bytes_per_device = r.memory.weights_bytes + r.memory.kv_cache_bytes + r.memory.activation_bytes +
                                    r.memory.overhead_bytes;
  r.host_bytes = load.host_bytes;
  if (s.offload.kind == Offload::Kind::kLayers) {
    const double host_share = static_cast<double>(s.offload.num_layers) / static_cast<double>(s.model->num_layers);
    r.host_bytes += static_cast<std::int64_t>(static_cast<double>(concurrency) *
                                              static_cast<double>(kv_bytes_per_sequence(kv, context_tokens, 1, 1.0)) * host_share);
  }
  if (!s.device) return r;

  r.memory.capacity_bytes_per_device = load.capacity_bytes;
  r.fits = r.memory.total_bytes_per_device <= load.capacity_bytes;
  r.headroom_bytes = load.capacity_bytes - r.memory.total_bytes_per_device;
  const std::int64_t budget = load.kv_budget_bytes;
  const std::int64_t per_seq = kv_seq(context_tokens);
  r.max_concurrency = budget <= 0 ? 0 : (per_seq == 0 ? concurrency : p.dp * (budget / per_seq));
  // Largest context whose KV for this many sequences fits the budget (KV grows with context).
  std::int64_t lo = 0, hi = s.model->max_ctx_len;
  if (budget <= 0 || seqs * kv_seq(1) > budget) {
    hi = 0;
  } else {
    while (lo < hi) {
      const std::int64_t mid = lo + (hi - lo + 1) / 2;
      if (seqs * kv_seq(mid) <= budget) lo = mid; else hi = mid - 1;
    }
  }
  r.max_context_tokens = lo;
  if (budget <= 0) r.notes.push_back("weights, activations and reserve alone exceed the device's memory");
  return r;
}

std::optional<std::int64_t> min_devices(FitSetup s, std::int64_t concurrency, std::int64_t context_tokens,
                                        std::int64_t max_count) {
  for (std::int64_t n = 1; n <= max_count; ++n) {
    ParallelPlan p = default_parallel(n, s.framework->id);
    try {
      check_parallel(p, *s.model, n);
    } catch (const InputError&) {
      continue;  // this count cannot split the model evenly with the default layout
    }
    s.count = n;
    s.parallel = p;
    DeviceLoad load = device_load(s);
    if (fit_one(s, load, kv_of(s), concurrency, context_tokens).fits.value_or(false)) return n;
  }
  return std::nullopt;
}

}  // namespace deepfit::planner
