// router_ref, the specification of the DeepSeek-V3 / V3.2 MoE router (router.h): per token, sort
// and pick, obviously right and not fast. Also the entry checks, the fp32 sigmoid and the weight
// arithmetic that router_fast shares. The vector code is in router_fast.cpp.
#include "kernels/router.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "entry_checks.h"
#include "kernels/error.h"

namespace deepfit::kernels {
namespace detail {
namespace {

using entry::fail;

std::string str(std::int64_t v) { return std::to_string(v); }

std::string str(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
  return buf;
}

}  // namespace

float router_sigmoid(float x) { return 1.0f / (1.0f + exp_fp32(-x)); }

void check_router(const char* kernel, const RouterShape& shape, const RouterWeighting& weighting,
                  std::span<const float> logits, std::span<const float> bias, std::span<const std::int32_t> ids,
                  std::span<const float> weights, std::int64_t t_begin, std::int64_t t_end) {
  const auto bad_shape = [&](const std::string& what) {
    fail(kernel, "shape {num_tokens " + str(shape.num_tokens) + ", num_experts " + str(shape.num_experts) +
                     ", num_groups " + str(shape.num_groups) + ", num_groups_kept " + str(shape.num_groups_kept) +
                     ", top_k " + str(shape.top_k) + "}: " + what);
  };
  if (shape.num_tokens < 0) bad_shape("num_tokens < 0");
  if (shape.num_experts < 1 || shape.num_experts > kMaxRouterExperts) {
    bad_shape("num_experts out of range (expected 1.." + str(kMaxRouterExperts) + ")");
  }
  if (shape.num_groups < 1 || shape.num_experts % shape.num_groups != 0) {
    bad_shape("num_groups must be >= 1 and divide num_experts");
  }
  const std::int64_t group_size = shape.num_experts / shape.num_groups;
  if (shape.num_groups > 1 && group_size < 2) {
    bad_shape("groups of " + str(group_size) +
              " expert (a group's score adds its two best; expected >= 2 experts per group, or num_groups 1)");
  }
  if (shape.num_groups_kept < 1 || shape.num_groups_kept > shape.num_groups) {
    bad_shape("num_groups_kept out of range (expected 1..num_groups)");
  }
  if (shape.top_k < 1 || shape.top_k > shape.num_groups_kept * group_size) {
    bad_shape("top_k out of range (expected 1..num_groups_kept * num_experts / num_groups = " +
              str(shape.num_groups_kept * group_size) + ")");
  }
  if (!std::isfinite(weighting.routed_scaling_factor) || !(weighting.routed_scaling_factor > 0.0f)) {
    fail(kernel, "routed_scaling_factor " + str(weighting.routed_scaling_factor) + " (expected finite and > 0)");
  }
  const std::int64_t num_logits = checked_count(kernel, shape.num_tokens, shape.num_experts, "logits size");
  const std::int64_t num_out = checked_count(kernel, shape.num_tokens, shape.top_k, "ids size");
  check_span_size(kernel, "logits", logits.size(), num_logits);
  check_span_size(kernel, "bias", bias.size(), shape.num_experts);
  check_span_size(kernel, "ids", ids.size(), num_out);
  check_span_size(kernel, "weights", weights.size(), num_out);
  if (ranges_overlap(ids.data(), ids.size_bytes(), weights.data(), weights.size_bytes())) {
    fail(kernel, "ids and weights overlap");
  }
  for (const auto out : {std::span<const std::byte>(std::as_bytes(ids)), std::as_bytes(weights)}) {
    if (ranges_overlap(out.data(), out.size(), logits.data(), logits.size_bytes()) ||
        ranges_overlap(out.data(), out.size(), bias.data(), bias.size_bytes())) {
      fail(kernel, "an output overlaps the logits or the bias");
    }
  }
  check_slice_bounds(kernel, "token", t_begin, t_end, shape.num_tokens);
  for (std::size_t e = 0; e < bias.size(); ++e) {
    if (!std::isfinite(bias[e])) fail(kernel, "bias[" + std::to_string(e) + "] = " + str(bias[e]) + " is not finite");
  }
  // The slice's logits: an exponent of all ones marks inf or NaN. An OR over the bits (which
  // vectorizes) first; the position is looked for only when something is wrong.
  const auto E = static_cast<std::size_t>(shape.num_experts);
  const std::span<const float> rows = logits.subspan(static_cast<std::size_t>(t_begin) * E,
                                                     static_cast<std::size_t>(t_end - t_begin) * E);
  std::uint32_t non_finite = 0;
  for (const float v : rows) non_finite |= static_cast<std::uint32_t>((std::bit_cast<std::uint32_t>(v) & 0x7F800000u) == 0x7F800000u);
  if (non_finite == 0) return;
  for (auto i = static_cast<std::size_t>(t_begin) * E; i < static_cast<std::size_t>(t_end) * E; ++i) {
    if (!std::isfinite(logits[i])) {
      fail(kernel, "logits[" + std::to_string(i / E) + "][" + std::to_string(i % E) + "] = " + str(logits[i]) +
                       " is not finite");
    }
  }
}

void router_weights(const RouterWeighting& weighting, std::span<const float> chosen_scores, std::span<float> weights) {
  DEEPFIT_ASSERT(chosen_scores.size() == weights.size() && !weights.empty(), "router_weights: sizes");
  const double scale = weighting.routed_scaling_factor;
  if (!weighting.normalize) {
    for (std::size_t j = 0; j < weights.size(); ++j) weights[j] = static_cast<float>(chosen_scores[j] * scale);
    return;
  }
  double sum = 0.0;
  for (const float s : chosen_scores) sum += s;  // in choice order
  for (std::size_t j = 0; j < weights.size(); ++j) {
    weights[j] = static_cast<float>(sum > 0.0 ? chosen_scores[j] / sum * scale
                                              : scale / static_cast<double>(weights.size()));
  }
}

}  // namespace detail

void router_ref(const RouterShape& shape, const RouterWeighting& weighting, std::span<const float> logits,
                std::span<const float> bias, std::span<std::int32_t> ids, std::span<float> weights,
                std::int64_t t_begin, std::int64_t t_end) {
  detail::check_router("router_ref", shape, weighting, logits, bias, ids, weights, t_begin, t_end);
  const auto E = static_cast<std::size_t>(shape.num_experts);          // experts
  const auto G = static_cast<std::size_t>(shape.num_groups);           // groups
  const auto group_size = E / G;                                       // experts per group
  const auto kept = static_cast<std::size_t>(shape.num_groups_kept);  // groups kept
  const auto K = static_cast<std::size_t>(shape.top_k);                // experts chosen
  // Larger value first, then smaller index: the strict total order of the contract.
  const auto before = [](float va, std::size_t a, float vb, std::size_t b) { return va > vb || (va == vb && a < b); };
  std::array<float, kMaxRouterExperts> score{};
  std::array<float, kMaxRouterExperts> choice{};
  std::array<float, kMaxRouterExperts> sorted{};
  std::array<float, kMaxRouterExperts> group_score{};
  std::array<std::size_t, kMaxRouterExperts> order{};
  std::array<bool, kMaxRouterExperts> group_kept{};
  std::array<float, kMaxRouterExperts> chosen{};
  for (auto t = static_cast<std::size_t>(t_begin); t < static_cast<std::size_t>(t_end); ++t) {
    for (std::size_t e = 0; e < E; ++e) {
      score[e] = detail::router_sigmoid(logits[t * E + e]);
      choice[e] = score[e] + bias[e];
    }
    std::fill_n(group_kept.begin(), G, true);
    if (G > 1) {
      for (std::size_t g = 0; g < G; ++g) {
        std::copy_n(choice.begin() + static_cast<std::ptrdiff_t>(g * group_size), group_size, sorted.begin());
        std::sort(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(group_size), std::greater<>());
        group_score[g] = sorted[0] + sorted[1];
      }
      for (std::size_t g = 0; g < G; ++g) order[g] = g;
      std::sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(G),
                [&](std::size_t a, std::size_t b) { return before(group_score[a], a, group_score[b], b); });
      std::fill_n(group_kept.begin(), G, false);
      for (std::size_t j = 0; j < kept; ++j) group_kept[order[j]] = true;
    }
    std::size_t num_candidates = 0;
    for (std::size_t e = 0; e < E; ++e) {
      if (group_kept[e / group_size]) order[num_candidates++] = e;
    }
    std::sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(num_candidates),
              [&](std::size_t a, std::size_t b) { return before(choice[a], a, choice[b], b); });
    for (std::size_t j = 0; j < K; ++j) {
      ids[t * K + j] = static_cast<std::int32_t>(order[j]);
      chosen[j] = score[order[j]];
    }
    detail::router_weights(weighting, std::span<const float>(chosen.data(), K), weights.subspan(t * K, K));
  }
}

}  // namespace deepfit::kernels
