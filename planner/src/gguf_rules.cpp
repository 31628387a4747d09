// llama.cpp's GGUF layout and per-tensor type choice, re-derived from its quantizer's documented
// behaviour (src/llama-quant.cpp: tensor categories, use_more_bits, row-size fallback) and its
// converter (kv_b split into k_b/v_b; 1-D tensors and the router kept F32). Written from the rules,
// not from llama.cpp's code.
#include <algorithm>
#include <string>

#include "kernels/error.h"
#include "planner/quant.h"

namespace deepfit::planner {
namespace {

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

enum class Cat { kOutput, kTokenEmbd, kAttnVLike, kAttnK, kAttnQ, kAttnOutput, kFfnUp, kFfnGate, kFfnDown, kOther };

Cat category(const std::string& n) {
  if (n == "output.weight") return Cat::kOutput;
  if (n == "token_embd.weight") return Cat::kTokenEmbd;
  if (contains(n, "attn_qkv.weight") || contains(n, "attn_kv_b.weight") || contains(n, "attn_v.weight")) return Cat::kAttnVLike;
  if (contains(n, "attn_k.weight")) return Cat::kAttnK;
  if (contains(n, "attn_q.weight")) return Cat::kAttnQ;
  if (contains(n, "attn_output.weight")) return Cat::kAttnOutput;
  if (contains(n, "ffn_up")) return Cat::kFfnUp;
  if (contains(n, "ffn_gate")) return Cat::kFfnGate;
  if (contains(n, "ffn_down")) return Cat::kFfnDown;
  return Cat::kOther;
}

// The converter writes these in F32 and the quantizer never touches them.
bool quantizable(const Tensor& t) {
  const std::string& n = t.name;
  if (!t.is_matrix()) return false;
  if (n.size() < 6 || n.compare(n.size() - 6, 6, "weight") != 0) return false;
  if (contains(n, "_norm.weight") || contains(n, "ffn_gate_inp.weight")) return false;
  return true;
}

std::string default_type(const std::string& ft) {
  static const std::pair<const char*, const char*> map[] = {
      {"MOSTLY_F16", "f16"},     {"MOSTLY_BF16", "bf16"},    {"MOSTLY_Q4_0", "q4_0"},     {"MOSTLY_Q4_1", "q4_1"},
      {"MOSTLY_Q5_0", "q5_0"},   {"MOSTLY_Q5_1", "q5_1"},    {"MOSTLY_Q8_0", "q8_0"},     {"MOSTLY_Q2_K", "q2_k"},
      {"MOSTLY_Q2_K_S", "q2_k"}, {"MOSTLY_Q3_K_S", "q3_k"},  {"MOSTLY_Q3_K_M", "q3_k"},   {"MOSTLY_Q3_K_L", "q3_k"},
      {"MOSTLY_Q4_K_S", "q4_k"}, {"MOSTLY_Q4_K_M", "q4_k"},  {"MOSTLY_Q5_K_S", "q5_k"},   {"MOSTLY_Q5_K_M", "q5_k"},
      {"MOSTLY_Q6_K", "q6_k"},   {"MOSTLY_IQ2_XXS", "iq2_xxs"}, {"MOSTLY_IQ2_XS", "iq2_xs"}, {"MOSTLY_IQ2_S", "iq2_xs"},
      {"MOSTLY_IQ2_M", "iq2_s"}, {"MOSTLY_IQ3_XXS", "iq3_xxs"}, {"MOSTLY_IQ3_S", "iq3_s"}, {"MOSTLY_IQ3_M", "iq3_s"},
      {"MOSTLY_IQ1_S", "iq1_s"}, {"MOSTLY_IQ1_M", "iq1_m"},  {"MOSTLY_IQ4_NL", "iq4_nl"},  {"MOSTLY_IQ4_XS", "iq4_xs"}};
  for (auto& [f, t] : map)
    if (ft == f) return t;
  throw InputError("unknown GGUF ftype '" + ft + "' in data/quants.json");
}

bool use_more_bits(std::int64_t i, std::int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

std::int64_t layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  return std::stoll(name.substr(4, name.find('.', 4) - 4));
}

struct Counters {
  std::int64_t n_attention_wv = 0, i_attention_wv = 0, n_layer = 0, i_ffn_down = 0, i_ffn_gate = 0, i_ffn_up = 0;
};

struct Ctx {
  const ModelSpec& m;
  const Scheme& s;
  const QuantDb& q;
  std::int64_t n_gqa;
  std::int64_t n_expert;
  bool is_70b;
  bool tied;
  std::string default_type;  // of the ftype
};

// The rule function: first matching branch wins (see the research summary in data/README.md).
std::string pick(const Ctx& c, const Tensor& t, Cat cat, Counters& k) {
  const std::string& ft = c.s.ftype;
  std::string T = c.default_type;
  const std::string& n = t.name;
  auto is = [&](std::initializer_list<const char*> fts) {
    for (auto f : fts)
      if (ft == f) return true;
    return false;
  };
  auto ffn_layer = [&](std::int64_t counter) { return c.n_expert > 1 ? layer_of(n) : counter; };
  const std::int64_t N = k.n_layer;

  if (cat == Cat::kOutput || (cat == Cat::kTokenEmbd && c.tied)) {
    if (t.row_len() % c.q.format(T).block_weights != 0) return "q8_0";
    if (is({"MOSTLY_IQ2_XXS", "MOSTLY_IQ2_XS", "MOSTLY_IQ3_XXS", "MOSTLY_IQ1_S", "MOSTLY_IQ2_S", "MOSTLY_IQ2_M", "MOSTLY_IQ1_M"}))
      return "q5_k";
    return T != "q8_0" ? "q6_k" : T;
  }
  if (cat == Cat::kTokenEmbd) {
    if (is({"MOSTLY_IQ2_XXS", "MOSTLY_IQ2_XS", "MOSTLY_IQ1_S", "MOSTLY_IQ1_M"})) return "q2_k";
    if (is({"MOSTLY_IQ2_S", "MOSTLY_IQ2_M", "MOSTLY_IQ3_XXS"})) return "iq3_s";
    return T;
  }
  if (is({"MOSTLY_IQ2_XXS", "MOSTLY_IQ2_XS", "MOSTLY_IQ1_S", "MOSTLY_IQ2_S", "MOSTLY_IQ2_M", "MOSTLY_IQ1_M"})) {
    const bool s_or_m = is({"MOSTLY_IQ2_S", "MOSTLY_IQ2_M"});
    if (cat == Cat::kAttnVLike) {
      ++k.i_attention_wv;
      return (c.n_gqa >= 4 || c.n_expert >= 4) ? "q4_k" : (s_or_m ? "iq3_s" : "q2_k");
    }
    if (cat == Cat::kAttnK && c.n_expert == 8) return "q4_k";
    if (cat == Cat::kFfnDown) {
      bool low = k.i_ffn_down < N / 8;  // the raw visit counter, as llama.cpp uses here
      ++k.i_ffn_down;
      return low ? (s_or_m ? "iq3_s" : "q2_k") : T;
    }
    if (cat == Cat::kAttnOutput) {
      if (c.n_expert == 8) return "q5_k";
      if (is({"MOSTLY_IQ1_S", "MOSTLY_IQ1_M"})) return "iq2_xxs";
      if (s_or_m) return "iq3_s";
    }
    return T;
  }
  if (cat == Cat::kAttnVLike) {
    const std::int64_t i = k.i_attention_wv, nv = k.n_attention_wv;
    if (ft == "MOSTLY_Q2_K") T = c.n_gqa >= 4 ? "q4_k" : "q3_k";
    else if (ft == "MOSTLY_Q2_K_S" && c.n_gqa >= 4) T = "q4_k";
    else if (ft == "MOSTLY_IQ3_XXS") T = c.n_gqa >= 4 ? "q4_k" : (c.s.imatrix ? "iq3_xxs" : "iq3_s");
    else if (ft == "MOSTLY_IQ3_S" && c.n_gqa >= 4) T = "q4_k";
    else if (ft == "MOSTLY_IQ3_M") T = "q4_k";
    else if (ft == "MOSTLY_Q3_K_M") T = i < 2 ? "q5_k" : "q4_k";
    else if (ft == "MOSTLY_Q3_K_L") T = "q5_k";
    else if (is({"MOSTLY_IQ4_NL", "MOSTLY_IQ4_XS"}) && c.n_gqa >= 4) T = "q5_k";
    else if (is({"MOSTLY_Q4_K_M", "MOSTLY_Q5_K_M"}) && use_more_bits(i, nv)) T = "q6_k";
    else if (ft == "MOSTLY_Q4_K_S" && i < 4) T = "q5_k";
    if (c.is_70b && (T == "q3_k" || T == "q4_k")) T = "q5_k";
    if (c.n_expert == 8) T = "q8_0";
    ++k.i_attention_wv;
    return T;
  }
  if (cat == Cat::kAttnK) {
    if (c.n_expert == 8) return "q8_0";
    if (ft == "MOSTLY_IQ3_XXS") return "iq2_s";
    return T;
  }
  if (cat == Cat::kAttnQ) return ft == "MOSTLY_IQ3_XXS" ? "iq2_s" : T;
  if (cat == Cat::kFfnDown) {
    const std::int64_t i = ffn_layer(k.i_ffn_down);
    ++k.i_ffn_down;
    if (ft == "MOSTLY_Q2_K") return "q3_k";
    if (ft == "MOSTLY_Q2_K_S") return i < N / 8 ? "q4_k" : T;
    if (ft == "MOSTLY_IQ3_XXS" && !c.s.imatrix) return i < N / 8 ? "q4_k" : "q3_k";
    if (ft == "MOSTLY_Q3_K_M") return i < N / 16 ? "q5_k" : "q4_k";
    if (ft == "MOSTLY_IQ3_M" && (i < N / 8 || (c.n_expert == 8 && use_more_bits(i, N)))) return "q4_k";
    if (ft == "MOSTLY_Q3_K_L") return "q5_k";
    if (ft == "MOSTLY_Q4_K_M") return use_more_bits(i, N) ? "q6_k" : T;
    if (i < N / 8 && is({"MOSTLY_IQ4_NL", "MOSTLY_IQ4_XS"}) && !c.s.imatrix) return "q5_k";
    if (ft == "MOSTLY_Q5_K_M" && use_more_bits(i, N)) return "q6_k";
    if (ft == "MOSTLY_Q4_K_S" && i < N / 8) return "q5_k";
    if (ft == "MOSTLY_Q4_0" && c.s.imatrix && i < N / 8) return "q4_1";
    if (ft == "MOSTLY_Q5_0" && c.s.imatrix && i < N / 8) return "q5_1";
    return T;
  }
  if (cat == Cat::kAttnOutput) {
    if (c.n_expert == 8) {
      if (is({"MOSTLY_Q2_K", "MOSTLY_IQ3_XXS", "MOSTLY_Q3_K_S", "MOSTLY_Q3_K_M", "MOSTLY_IQ4_NL", "MOSTLY_Q4_K_S",
              "MOSTLY_Q4_K_M", "MOSTLY_IQ3_S", "MOSTLY_IQ3_M", "MOSTLY_IQ4_XS"}))
        return "q5_k";
      return T;
    }
    if (ft == "MOSTLY_Q2_K") return "q3_k";
    if (ft == "MOSTLY_IQ3_XXS") return "iq3_s";
    if (ft == "MOSTLY_Q3_K_M") return "q4_k";
    if (ft == "MOSTLY_Q3_K_L") return "q5_k";
    if (ft == "MOSTLY_IQ3_M") return "q4_k";
    return T;
  }
  if (cat == Cat::kFfnGate) ++k.i_ffn_gate;
  if (cat == Cat::kFfnUp) ++k.i_ffn_up;
  return T;
}

// When a row is not a whole number of blocks, llama.cpp falls back to a 32-weight type.
std::string fallback(const std::string& T, std::int64_t row_len, const QuantDb& q) {
  if (row_len % q.format(T).block_weights == 0) return T;
  std::string f;
  if (T == "iq1_s" || T == "iq1_m" || T == "iq2_xxs" || T == "iq2_xs" || T == "iq2_s" || T == "iq3_xxs" || T == "iq3_s" ||
      T == "iq4_xs")
    f = "iq4_nl";
  else if (T == "q2_k" || T == "q3_k") f = "q4_0";
  else if (T == "q4_k") f = "q5_0";
  else if (T == "q5_k") f = "q5_1";
  else if (T == "q6_k") f = "q8_0";
  else
    throw InputError("a row of " + std::to_string(row_len) + " weights cannot be stored as " + T + " and llama.cpp has no fallback for it");
  return row_len % q.format(f).block_weights == 0 ? f : "f16";
}

}  // namespace

std::vector<Tensor> gguf_tensor_layout(const ModelSpec& m) { return gguf_tensor_layout(m, tensor_inventory(m)); }

std::vector<Tensor> gguf_tensor_layout(const ModelSpec& m, std::vector<Tensor> inventory) {
  std::vector<Tensor> out;
  out.reserve(inventory.size() + static_cast<std::size_t>(m.num_layers));
  for (auto& t : inventory) {
    // deepseek2 GGUFs drop the MTP layer; deepseek32 GGUFs keep it (llama.cpp's converter).
    if (t.mtp && m.arch != Arch::kDeepseekV32) continue;
    if (m.mla && t.name.find("attn_kv_b.weight") != std::string::npos) {
      // kv_b [heads*(nope+v), kv_lora] -> k_b [heads, kv_lora, nope] (transposed) and v_b [heads, v, kv_lora].
      std::string prefix = t.name.substr(0, t.name.find("attn_kv_b"));
      out.push_back(Tensor{prefix + "attn_k_b.weight", {m.num_heads, m.kv_lora_rank, m.nope_head_dim}, t.role, t.layer, t.mtp});
      out.push_back(Tensor{prefix + "attn_v_b.weight", {m.num_heads, m.v_head_dim, m.kv_lora_rank}, t.role, t.layer, t.mtp});
      continue;
    }
    out.push_back(std::move(t));
  }
  // The quantizer visits tensors in the loader's order: names outside blocks first, then by layer,
  // and by name within a layer. The counters in the rules depend on this order.
  std::stable_sort(out.begin(), out.end(), [](const Tensor& a, const Tensor& b) {
    if (a.layer != b.layer) return a.layer < b.layer;
    return a.name < b.name;
  });
  return out;
}

std::vector<std::string> gguf_tensor_types(const ModelSpec& m, const std::vector<Tensor>& tensors, const Scheme& s,
                                           const QuantDb& q, std::int64_t* num_fallbacks) {
  DEEPFIT_ASSERT(s.is_gguf(), "gguf_tensor_types needs a GGUF scheme");
  const std::string T0 = default_type(s.ftype);
  bool has_output = false;
  Counters k;
  std::vector<Cat> cats;
  cats.reserve(tensors.size());
  for (const auto& t : tensors) {
    has_output = has_output || t.name == "output.weight";
    cats.push_back(category(t.name));
    if (cats.back() == Cat::kAttnVLike && quantizable(t)) ++k.n_attention_wv;
  }
  // block_count: deepseek32 GGUFs count the MTP layer.
  k.n_layer = m.num_layers + (m.arch == Arch::kDeepseekV32 ? m.num_mtp_layers : 0);
  // llama.cpp writes MLA as one KV head ("MLA as MQA"), so n_gqa = n_head there.
  Ctx c{m, s, q, m.mla ? m.num_heads : m.num_heads / m.num_kv_heads, m.num_experts,
        (m.arch == Arch::kLlama && m.num_layers == 80 && m.num_kv_heads < m.num_heads), !has_output, T0};
  std::vector<std::string> types;
  types.reserve(tensors.size());
  std::int64_t fallbacks = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    if (!quantizable(t)) {
      types.push_back("f32");
      continue;
    }
    if (T0 == "f16" || T0 == "bf16") {
      types.push_back(T0);
      continue;
    }
    std::string T = pick(c, t, cats[i], k);
    std::string f = fallback(T, t.row_len(), q);
    if (f != T) ++fallbacks;
    types.push_back(f);
  }
  if (num_fallbacks) *num_fallbacks = fallbacks;
  return types;
}

}  // namespace deepfit::planner
