// The MoE router of DeepSeek-V3 / V3.2 ("noaux_tc": sigmoid scores, a correction bias for the
// choice only, group-limited top-k), from router logits to expert ids and weights, sliced over
// tokens. The gate's matrix-vector product (logits = x W_gate^T) is the caller's, with moe_gemm.h;
// running the experts is the caller's too. Softmax scoring (DeepSeek-V2) is not covered.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/token_ops.h"
#include "kernels/work.h"

namespace deepfit::kernels {

// The largest num_experts the kernels take (stack scratch of that size; larger: InputError).
inline constexpr std::int64_t kMaxRouterExperts = 1024;

// Dimensions, with DeepSeek-V3.2's config.json values (data/models/deepseek-v3.2.json).
struct RouterShape {
  std::int64_t num_tokens;       // T, >= 0
  std::int64_t num_experts;      // E = n_routed_experts (256), 1..kMaxRouterExperts
  std::int64_t num_groups;       // G = n_group (8), divides E; 1 = no group limit (plain top-k)
  std::int64_t num_groups_kept;  // topk_group (4), 1..G
  std::int64_t top_k;            // num_experts_per_tok (8), 1..num_groups_kept * E / G
};

// How the chosen scores become weights.
struct RouterWeighting {
  bool normalize;               // norm_topk_prob (true): divide by the sum of the chosen scores
  float routed_scaling_factor;  // routed_scaling_factor (2.5), finite and > 0
};

// flops per token = 4 E (sigmoid: exp, add, divide, each counted as 1; plus the bias add)
//                 + G when G > 1 (adding each group's two best)
//                 + 3 top_k - 1 when normalizing (sum, divide, scale), else top_k (scale).
// Comparisons and selection are not counted.
// bytes = 4 T E (logits) + 4 E (bias) + 8 T top_k (int32 ids and fp32 weights).
inline Work work_of(const RouterShape& s) {
  DEEPFIT_ASSERT(s.num_tokens >= 0 && s.num_experts >= 0 && s.num_groups >= 0 && s.top_k >= 0,
                 "work_of(RouterShape): negative dimension");
  const double t = static_cast<double>(s.num_tokens);
  const double e = static_cast<double>(s.num_experts);
  const double k = static_cast<double>(s.top_k);
  const double groups = s.num_groups > 1 ? static_cast<double>(s.num_groups) : 0.0;
  return {t * (4.0 * e + groups + 3.0 * k - 1.0), 4.0 * t * e + 4.0 * e + 8.0 * t * k};
}
// As above with the weighting known (top_k flops instead of 3 top_k - 1 without normalization).
inline Work work_of(const RouterShape& s, const RouterWeighting& w) {
  Work out = work_of(s);
  if (!w.normalize) out.flops -= static_cast<double>(s.num_tokens) * (2.0 * static_cast<double>(s.top_k) - 1.0);
  return out;
}

// Contract (both variants).
//   Math, per token t (as DeepSeek-V3.2-Exp inference/model.py Gate.forward and HF's
//   DeepseekV3TopkRouter with topk_method "noaux_tc"):
//     s[e] = sigmoid(logits[t][e])        (detail::router_sigmoid, fp32)
//     c[e] = s[e] + bias[e]               (fp32; bias = e_score_correction_bias)
//     G > 1: group g holds experts [g E/G, (g+1) E/G); its score is the fp32 sum of its two
//       largest c (a repeated value counts twice); the num_groups_kept best groups are kept.
//     ids: the top_k experts of the kept groups by c, in decreasing c.
//     weights[t][j] = s[ids[t][j]] / sum_j' s[ids[t][j']] * routed_scaling_factor  (normalize)
//                   = s[ids[t][j]] * routed_scaling_factor                          (otherwise)
//       computed in double from the fp32 s and rounded once; the bias never enters a weight.
//       If the chosen s sum to 0 (every chosen logit below about -88.7) each weight is
//       routed_scaling_factor / top_k.
//   Ties: lower index wins, for groups and for experts (a strict total order: larger value
//     first, then smaller index), so the result is deterministic. DeepSeek's torch.topk leaves
//     the order of equal values unspecified; dropped groups' experts are never chosen (model.py
//     masks them with -inf; HF fills 0.0, which can pick them when every kept choice is < 0).
//   Layout: logits [num_tokens][num_experts] fp32, bias [num_experts] fp32, ids [num_tokens][top_k]
//     int32, weights [num_tokens][top_k] fp32.
//   Entry checks (InputError, before anything is written): the shape rules in RouterShape, span
//     sizes, the slice, a finite positive scaling factor, finite bias, and finite logits in the
//     slice's rows (NaN has no place in the order).
//   Work per call: work_of(RouterShape{t_end - t_begin, ...}, weighting).
//   Variants: router_ref is the specification (sorting, one token at a time); router_fast
//     (AVX-512: vector scores, lane-wise group top-2, a rank-based top-k for top_k <= 16 and a
//     vector arg-max beyond; portable loops otherwise) computes the same fp32 values by the same
//     operations and the same order, so it matches router_ref bit for bit: ids and weights.
//   Stack use: about 30 KB per call (per-token scratch sized for kMaxRouterExperts).
//   Threading: tokens [t_begin, t_end), rows of ids and weights; nothing else is written.
void router_ref(const RouterShape& shape, const RouterWeighting& weighting, std::span<const float> logits,
                std::span<const float> bias, std::span<std::int32_t> ids, std::span<float> weights,
                std::int64_t t_begin, std::int64_t t_end);
void router_fast(const RouterShape& shape, const RouterWeighting& weighting, std::span<const float> logits,
                 std::span<const float> bias, std::span<std::int32_t> ids, std::span<float> weights,
                 std::int64_t t_begin, std::int64_t t_end);

namespace detail {
// sigmoid(x) = 1 / (1 + exp_fp32(-x)) in fp32. The routing decision depends on the last bits of
// the scores, so every variant computes them by this one definition rather than by its own exp.
// Relative error <= 5u against the exact sigmoid where the result is >= 2^-124 (exp_fp32's 3u, the
// add and the divide); 0 below x = -88.73, 1 above x = 86.5 (the exact value rounds to 1 there).
float router_sigmoid(float x);

void router_fast_on(OpIsa isa, const RouterShape& shape, const RouterWeighting& weighting,
                    std::span<const float> logits, std::span<const float> bias, std::span<std::int32_t> ids,
                    std::span<float> weights, std::int64_t t_begin, std::int64_t t_end);

// The entry checks of the contract (InputError naming `kernel`).
void check_router(const char* kernel, const RouterShape& shape, const RouterWeighting& weighting,
                  std::span<const float> logits, std::span<const float> bias, std::span<const std::int32_t> ids,
                  std::span<const float> weights, std::int64_t t_begin, std::int64_t t_end);

// The weights of one token from the fp32 scores of its chosen experts, in choice order (the
// double arithmetic of the contract; both variants call it, so their weights agree bit for bit).
void router_weights(const RouterWeighting& weighting, std::span<const float> chosen_scores,
                    std::span<float> weights);
}  // namespace detail

}  // namespace deepfit::kernels
