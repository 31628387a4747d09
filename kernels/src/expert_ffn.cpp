// The grouped routed-expert FFN (see expert_ffn.h): the routing plan, then the gather, gate_up and
// down phases over caller-chosen slices of their work units. The matrix-vector work is done by the
// kernels of moe_gemm.h and moe_gemm_fp8.h on 128-row sub-matrices; this file only plans and glues.
#include "kernels/expert_ffn.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>

#include "entry_checks.h"
#include "kernels/error.h"

namespace deepfit::kernels {
namespace {

using entry::fail;
using entry::expect_size;

// Pairs per kernel call: the gate/up outputs of 32 pairs x 128 rows (2 x 16 KiB) and the down
// outputs (16 KiB) live on the stack, and each 4-row weight group a kernel reads is reused for 32
// vectors before the next group.
constexpr std::int64_t kPairChunk = 32;
constexpr auto kSlice = static_cast<std::size_t>(kExpertFfnSlice);

bool quantized(ExpertWeightFormat f) { return f == ExpertWeightFormat::kQ8_0 || f == ExpertWeightFormat::kQ4_K; }

std::int64_t num_pairs(const ExpertFfnShape& s) { return s.num_tokens * s.top_k; }

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// A named byte range, for the overlap checks between what a phase writes and what it reads.
struct Range {
  const char* name;
  const std::byte* data;
  std::size_t bytes;
};

template <typename T>
Range range(const char* name, std::span<T> s) {
  return {name, reinterpret_cast<const std::byte*>(s.data()), s.size_bytes()};
}

void check_disjoint(const char* kernel, std::initializer_list<Range> written, std::initializer_list<Range> read) {
  const std::less<const std::byte*> less;
  for (const Range& w : written) {
    for (const Range& r : read) {
      if (w.bytes == 0 || r.bytes == 0) continue;
      if (less(w.data, r.data + r.bytes) && less(r.data, w.data + w.bytes)) {
        fail(kernel, std::string(w.name) + " overlaps " + r.name + " (expected separate arrays)");
      }
    }
  }
}

void check_slice(const char* kernel, std::int64_t begin, std::int64_t end, std::int64_t num_units) {
  if (begin < 0 || begin > end || end > num_units) {
    fail(kernel, "unit slice [" + std::to_string(begin) + ", " + std::to_string(end) +
                     ") (expected 0 <= begin <= end <= " + std::to_string(num_units) + " units)");
  }
}

// The plan's sizes and invariants (expert_ffn.h): everything the phases index with is in range.
void check_plan(const char* kernel, const ExpertFfnShape& s, const RoutingPlan& plan) {
  const std::int64_t E = s.num_experts;
  const std::int64_t P = num_pairs(s);
  expect_size(kernel, "plan.expert_offsets", plan.expert_offsets.size(), E + 1);
  expect_size(kernel, "plan.pair_tokens", plan.pair_tokens.size(), P);
  expect_size(kernel, "plan.pair_weights", plan.pair_weights.size(), P);
  expect_size(kernel, "plan.active_experts", plan.active_experts.size(), E);
  if (plan.expert_offsets[0] != 0 || plan.expert_offsets[static_cast<std::size_t>(E)] != P) {
    fail(kernel, "plan.expert_offsets runs from " + std::to_string(plan.expert_offsets[0]) + " to " +
                     std::to_string(plan.expert_offsets[static_cast<std::size_t>(E)]) + " (expected 0 to " +
                     std::to_string(P) + "; build it with build_routing_plan)");
  }
  std::int64_t num_active = 0;
  for (std::size_t e = 0; e < static_cast<std::size_t>(E); ++e) {
    const std::int64_t a = plan.expert_offsets[e];
    const std::int64_t b = plan.expert_offsets[e + 1];
    if (b < a) fail(kernel, "plan.expert_offsets decreases at expert " + std::to_string(e));
    if (b == a) continue;
    if (num_active >= plan.num_active_experts ||
        plan.active_experts[static_cast<std::size_t>(num_active)] != static_cast<std::int32_t>(e)) {
      fail(kernel, "plan.active_experts does not list expert " + std::to_string(e) +
                       ", which has pairs, in its place (build the plan with build_routing_plan)");
    }
    ++num_active;
  }
  if (num_active != plan.num_active_experts) {
    fail(kernel, "plan.num_active_experts = " + std::to_string(plan.num_active_experts) + " (expected " +
                     std::to_string(num_active) + ", the experts with pairs)");
  }
  for (std::size_t p = 0; p < static_cast<std::size_t>(P); ++p) {
    if (plan.pair_tokens[p] < 0 || plan.pair_tokens[p] >= s.num_tokens || !std::isfinite(plan.pair_weights[p])) {
      fail(kernel, "plan pair " + std::to_string(p) + ": token " + std::to_string(plan.pair_tokens[p]) + ", weight " +
                       std::to_string(plan.pair_weights[p]) + " (expected a token in [0, " +
                       std::to_string(s.num_tokens) + ") and a finite weight)");
    }
  }
}

void check_scratch(const char* kernel, const ExpertFfnShape& s, const ExpertFfnScratch& scratch) {
  const ExpertFfnScratchSizes n = expert_ffn_scratch_sizes(s);
  expect_size(kernel, "scratch.x_routed", scratch.x_routed.size(), n.x_routed);
  expect_size(kernel, "scratch.xq", scratch.xq.size(), n.xq);
  expect_size(kernel, "scratch.xq_scales", scratch.xq_scales.size(), n.xq_groups);
  expect_size(kernel, "scratch.xq_sums", scratch.xq_sums.size(), n.xq_groups);
  expect_size(kernel, "scratch.h", scratch.h.size(), n.h);
  expect_size(kernel, "scratch.hq", scratch.hq.size(), n.hq);
  expect_size(kernel, "scratch.hq_scales", scratch.hq_scales.size(), n.hq_groups);
  expect_size(kernel, "scratch.hq_sums", scratch.hq_sums.size(), n.hq_groups);
}

// The activation vectors of pairs [p0, p0 + n) for a matrix of `cols` columns: fp32 rows of `x`
// (BF16, FP8) or the quantized rows (Q8_0, Q4_K).
struct PairActs {
  std::span<const float> x;
  ActivationsQ8 xq;
};

PairActs pair_acts(ExpertWeightFormat f, std::span<const float> x, std::span<const std::int8_t> qs,
                   std::span<const float> scales, std::span<const std::int32_t> sums, std::int64_t cols,
                   std::int64_t p0, std::int64_t n) {
  const auto begin = static_cast<std::size_t>(p0 * cols);
  const auto count = static_cast<std::size_t>(n * cols);
  if (!quantized(f)) return {x.subspan(begin, count), ActivationsQ8{0, cols, {}, {}, {}}};
  const auto g = static_cast<std::size_t>(kActivationGroup);
  return {{},
          ActivationsQ8{n, cols, qs.subspan(begin, count), scales.subspan(begin / g, count / g),
                        sums.subspan(begin / g, count / g)}};
}

// y [n][nr] = rows [r0, r0 + nr) of m ([rows][cols]) times the n vectors of `a`: the kernel of the
// format on the sub-matrix of those rows (rows are contiguous; for FP8, r0 is a multiple of 128,
// so the sub-matrix's scale tiles are whole rows of m's).
void matvec_rows(ExpertWeightFormat f, const ExpertMatrix& m, std::int64_t cols, std::int64_t r0, std::int64_t nr,
                 const PairActs& a, std::int64_t n, std::span<float> y) {
  if (f == ExpertWeightFormat::kFp8E4m3) {
    DEEPFIT_ASSERT(r0 % kFp8ScaleTile == 0, "matvec_rows: FP8 sub-matrix not aligned to a scale tile");
    const std::int64_t tile_cols = fp8_scale_tiles(cols);
    const auto w = m.weights.subspan(static_cast<std::size_t>(r0 * cols), static_cast<std::size_t>(nr * cols));
    const auto sc = m.scales.subspan(static_cast<std::size_t>(r0 / kFp8ScaleTile * tile_cols),
                                     static_cast<std::size_t>(fp8_scale_tiles(nr) * tile_cols));
    moe_gemm_fp8_blocked(Fp8MatvecShape{n, nr, cols}, w, sc, a.x, y, 0, nr);
    return;
  }
  const WeightFormat wf = f == ExpertWeightFormat::kBf16   ? WeightFormat::kBf16
                          : f == ExpertWeightFormat::kQ8_0 ? WeightFormat::kQ8_0
                                                           : WeightFormat::kQ4_K;
  const std::int64_t row_bytes = weight_row_bytes(wf, cols);
  const auto w = m.weights.subspan(static_cast<std::size_t>(r0 * row_bytes), static_cast<std::size_t>(nr * row_bytes));
  const MatvecShape shape{n, nr, cols, wf};
  if (wf == WeightFormat::kBf16) {
    moe_gemm_blocked(shape, w, a.x, y, 0, nr);
  } else {
    moe_gemm_blocked_q8(shape, w, a.xq, y, 0, nr);
  }
}

float silu(float g) { return g / (1.0f + std::exp(-g)); }

}  // namespace

// ---- Plan and sizes

void build_routing_plan(const ExpertFfnShape& shape, std::span<const std::int32_t> topk_ids,
                        std::span<const float> topk_weights, RoutingPlan& plan) {
  constexpr const char* kKernel = "build_routing_plan";
  detail::check_expert_ffn_shape(kKernel, shape);
  detail::check_topk(kKernel, shape, topk_ids, topk_weights);
  const auto E = static_cast<std::size_t>(shape.num_experts);
  const auto P = static_cast<std::size_t>(num_pairs(shape));
  const auto top_k = static_cast<std::size_t>(shape.top_k);
  expect_size(kKernel, "plan.expert_offsets", plan.expert_offsets.size(), shape.num_experts + 1);
  expect_size(kKernel, "plan.pair_tokens", plan.pair_tokens.size(), num_pairs(shape));
  expect_size(kKernel, "plan.pair_weights", plan.pair_weights.size(), num_pairs(shape));
  expect_size(kKernel, "plan.active_experts", plan.active_experts.size(), shape.num_experts);
  // Counting sort, stable in (token, j): count, prefix sums, then place.
  std::fill(plan.expert_offsets.begin(), plan.expert_offsets.end(), 0);
  for (const std::int32_t e : topk_ids) ++plan.expert_offsets[static_cast<std::size_t>(e) + 1];
  plan.num_active_experts = 0;
  for (std::size_t e = 0; e < E; ++e) {
    if (plan.expert_offsets[e + 1] > 0) {
      plan.active_experts[static_cast<std::size_t>(plan.num_active_experts++)] = static_cast<std::int32_t>(e);
    }
    plan.expert_offsets[e + 1] += plan.expert_offsets[e];
  }
  std::fill(plan.active_experts.begin() + static_cast<std::ptrdiff_t>(plan.num_active_experts),
            plan.active_experts.end(), -1);
  // Place each pair at its expert's cursor, expert_offsets[e], advanced in place.
  for (std::size_t i = 0; i < P; ++i) {
    const auto e = static_cast<std::size_t>(topk_ids[i]);
    const auto p = static_cast<std::size_t>(plan.expert_offsets[e]++);
    plan.pair_tokens[p] = static_cast<std::int32_t>(i / top_k);
    plan.pair_weights[p] = topk_weights[i];
  }
  // Each expert_offsets[e] now holds the end of e's pairs, i.e. the start of e + 1's: shift back.
  for (std::size_t e = E; e > 0; --e) plan.expert_offsets[e] = plan.expert_offsets[e - 1];
  plan.expert_offsets[0] = 0;
}

ExpertFfnScratchSizes expert_ffn_scratch_sizes(const ExpertFfnShape& shape) {
  detail::check_expert_ffn_shape("expert_ffn_scratch_sizes", shape);
  const std::int64_t P = num_pairs(shape);
  const std::int64_t H = shape.hidden_dim;
  const std::int64_t F = shape.ffn_dim;
  if (quantized(shape.weight_format)) {
    return {0, P * H, P * H / kActivationGroup, P * F, P * F, P * F / kActivationGroup};
  }
  return {P * H, 0, 0, P * F, 0, 0};
}

std::int64_t expert_ffn_gather_units(const ExpertFfnShape& shape) {
  detail::check_expert_ffn_shape("expert_ffn_gather_units", shape);
  return num_pairs(shape);
}

std::int64_t expert_ffn_gate_up_units(const ExpertFfnShape& shape, const RoutingPlan& plan) {
  detail::check_expert_ffn_shape("expert_ffn_gate_up_units", shape);
  return plan.num_active_experts * ceil_div(shape.ffn_dim, kExpertFfnSlice);
}

std::int64_t expert_ffn_down_units(const ExpertFfnShape& shape) {
  detail::check_expert_ffn_shape("expert_ffn_down_units", shape);
  return ceil_div(shape.hidden_dim, kExpertFfnSlice);
}

// ---- Phases

void expert_ffn_gather(const ExpertFfnShape& shape, const RoutingPlan& plan, std::span<const float> x,
                       const ExpertFfnScratch& scratch, std::int64_t begin, std::int64_t end) {
  constexpr const char* kKernel = "expert_ffn_gather";
  detail::check_expert_ffn_shape(kKernel, shape);
  check_plan(kKernel, shape, plan);
  check_scratch(kKernel, shape, scratch);
  check_slice(kKernel, begin, end, num_pairs(shape));
  const auto H = static_cast<std::size_t>(shape.hidden_dim);
  expect_size(kKernel, "x", x.size(), shape.num_tokens * shape.hidden_dim);
  check_disjoint(kKernel,
                 {range("scratch.x_routed", scratch.x_routed), range("scratch.xq", scratch.xq),
                  range("scratch.xq_scales", scratch.xq_scales), range("scratch.xq_sums", scratch.xq_sums)},
                 {range("x", x)});
  for (auto p = static_cast<std::size_t>(begin); p < static_cast<std::size_t>(end); ++p) {
    const auto t = static_cast<std::size_t>(plan.pair_tokens[p]);
    for (std::size_t c = 0; c < H; ++c) {
      if (!std::isfinite(x[t * H + c])) fail(kKernel, "x[" + std::to_string(t) + "][" + std::to_string(c) + "] is not finite");
    }
  }
  const auto G = H / static_cast<std::size_t>(kActivationGroup);
  for (auto p = static_cast<std::size_t>(begin); p < static_cast<std::size_t>(end); ++p) {
    const auto row = x.subspan(static_cast<std::size_t>(plan.pair_tokens[p]) * H, H);
    if (quantized(shape.weight_format)) {
      quantize_activations_q8(row, 1, shape.hidden_dim, scratch.xq.subspan(p * H, H),
                              scratch.xq_scales.subspan(p * G, G), scratch.xq_sums.subspan(p * G, G));
    } else {
      std::copy(row.begin(), row.end(), scratch.x_routed.begin() + static_cast<std::ptrdiff_t>(p * H));
    }
  }
}

void expert_ffn_gate_up(const ExpertFfnShape& shape, std::span<const ExpertWeights> experts, const RoutingPlan& plan,
                        const ExpertFfnScratch& scratch, std::int64_t begin, std::int64_t end) {
  constexpr const char* kKernel = "expert_ffn_gate_up";
  detail::check_expert_ffn_shape(kKernel, shape);
  detail::check_expert_weights(kKernel, shape, experts);
  check_plan(kKernel, shape, plan);
  check_scratch(kKernel, shape, scratch);
  const std::int64_t slices = ceil_div(shape.ffn_dim, kExpertFfnSlice);
  check_slice(kKernel, begin, end, plan.num_active_experts * slices);
  check_disjoint(kKernel,
                 {range("scratch.h", scratch.h), range("scratch.hq", scratch.hq),
                  range("scratch.hq_scales", scratch.hq_scales), range("scratch.hq_sums", scratch.hq_sums)},
                 {range("scratch.x_routed", scratch.x_routed), range("scratch.xq", scratch.xq),
                  range("scratch.xq_scales", scratch.xq_scales), range("scratch.xq_sums", scratch.xq_sums)});
  const ExpertWeightFormat f = shape.weight_format;
  if (f == ExpertWeightFormat::kFp8E4m3) {
    for (std::int64_t u = begin; u < end; ++u) {
      const std::int32_t e = plan.active_experts[static_cast<std::size_t>(u / slices)];
      const ExpertWeights& w = experts[static_cast<std::size_t>(e)];
      detail::check_fp8_scale_row(kKernel, w.gate, shape.hidden_dim, u % slices, "gate", e);
      detail::check_fp8_scale_row(kKernel, w.up, shape.hidden_dim, u % slices, "up", e);
    }
  }
  const std::int64_t H = shape.hidden_dim;
  const auto F = static_cast<std::size_t>(shape.ffn_dim);
  const auto group = static_cast<std::size_t>(kActivationGroup);
  float gate[kPairChunk * kSlice];
  float up[kPairChunk * kSlice];
  for (std::int64_t u = begin; u < end; ++u) {
    const std::int32_t e = plan.active_experts[static_cast<std::size_t>(u / slices)];
    const ExpertWeights& w = experts[static_cast<std::size_t>(e)];
    const std::int64_t r0 = u % slices * kExpertFfnSlice;
    const std::int64_t nr = std::min(kExpertFfnSlice, shape.ffn_dim - r0);
    const auto R = static_cast<std::size_t>(nr);
    const std::int64_t p_end = plan.expert_offsets[static_cast<std::size_t>(e) + 1];
    for (std::int64_t p0 = plan.expert_offsets[static_cast<std::size_t>(e)]; p0 < p_end; p0 += kPairChunk) {
      const std::int64_t n = std::min(kPairChunk, p_end - p0);
      const PairActs a = pair_acts(f, scratch.x_routed, scratch.xq, scratch.xq_scales, scratch.xq_sums, H, p0, n);
      const auto count = static_cast<std::size_t>(n) * R;
      matvec_rows(f, w.gate, H, r0, nr, a, n, std::span<float>(gate, count));
      matvec_rows(f, w.up, H, r0, nr, a, n, std::span<float>(up, count));
      for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
        const std::size_t at = (static_cast<std::size_t>(p0) + i) * F + static_cast<std::size_t>(r0);
        float* h = scratch.h.data() + at;
        for (std::size_t j = 0; j < R; ++j) h[j] = silu(gate[i * R + j]) * up[i * R + j];
        if (quantized(f)) {
          // r0 and nr are multiples of 32 (128-row slices of an ffn_dim that is), so these groups
          // are exactly the groups of quantizing the whole row of h.
          quantize_activations_q8(scratch.h.subspan(at, R), 1, nr, scratch.hq.subspan(at, R),
                                  scratch.hq_scales.subspan(at / group, R / group),
                                  scratch.hq_sums.subspan(at / group, R / group));
        }
      }
    }
  }
}

void expert_ffn_down(const ExpertFfnShape& shape, std::span<const ExpertWeights> experts, const RoutingPlan& plan,
                     const ExpertFfnScratch& scratch, std::span<float> out, std::int64_t begin, std::int64_t end) {
  constexpr const char* kKernel = "expert_ffn_down";
  detail::check_expert_ffn_shape(kKernel, shape);
  detail::check_expert_weights(kKernel, shape, experts);
  check_plan(kKernel, shape, plan);
  check_scratch(kKernel, shape, scratch);
  check_slice(kKernel, begin, end, ceil_div(shape.hidden_dim, kExpertFfnSlice));
  expect_size(kKernel, "out", out.size(), shape.num_tokens * shape.hidden_dim);
  check_disjoint(kKernel, {range("out", out)},
                 {range("scratch.h", scratch.h), range("scratch.hq", scratch.hq),
                  range("scratch.hq_scales", scratch.hq_scales), range("scratch.hq_sums", scratch.hq_sums)});
  const ExpertWeightFormat f = shape.weight_format;
  const std::span<const std::int32_t> active = plan.active_experts.first(static_cast<std::size_t>(plan.num_active_experts));
  if (f == ExpertWeightFormat::kFp8E4m3) {
    for (std::int64_t c = begin; c < end; ++c) {
      for (const std::int32_t e : active) {
        detail::check_fp8_scale_row(kKernel, experts[static_cast<std::size_t>(e)].down, shape.ffn_dim, c, "down", e);
      }
    }
  }
  const std::int64_t F = shape.ffn_dim;
  const auto H = static_cast<std::size_t>(shape.hidden_dim);
  float y[kPairChunk * kSlice];
  for (std::int64_t c = begin; c < end; ++c) {
    const std::int64_t c0 = c * kExpertFfnSlice;
    const std::int64_t nc = std::min(kExpertFfnSlice, shape.hidden_dim - c0);
    const auto C = static_cast<std::size_t>(nc);
    for (const std::int32_t e : active) {
      const ExpertMatrix& down = experts[static_cast<std::size_t>(e)].down;
      const std::int64_t p_end = plan.expert_offsets[static_cast<std::size_t>(e) + 1];
      for (std::int64_t p0 = plan.expert_offsets[static_cast<std::size_t>(e)]; p0 < p_end; p0 += kPairChunk) {
        const std::int64_t n = std::min(kPairChunk, p_end - p0);
        const PairActs a = pair_acts(f, scratch.h, scratch.hq, scratch.hq_scales, scratch.hq_sums, F, p0, n);
        matvec_rows(f, down, F, c0, nc, a, n, std::span<float>(y, static_cast<std::size_t>(n) * C));
        for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
          const auto p = static_cast<std::size_t>(p0) + i;
          const float weight = plan.pair_weights[p];
          float* o = out.data() + static_cast<std::size_t>(plan.pair_tokens[p]) * H + static_cast<std::size_t>(c0);
          for (std::size_t j = 0; j < C; ++j) o[j] = o[j] + weight * y[i * C + j];
        }
      }
    }
  }
}

void expert_ffn_grouped(const ExpertFfnShape& shape, std::span<const ExpertWeights> experts,
                        std::span<const std::int32_t> topk_ids, std::span<const float> topk_weights,
                        std::span<const float> x, RoutingPlan& plan, const ExpertFfnScratch& scratch,
                        std::span<float> out) {
  constexpr const char* kKernel = "expert_ffn_grouped";
  // The checks of every phase that do not need the plan, so that bad sizes fail before the plan
  // and the scratch are written; the phases check the rest before writing `out`.
  detail::check_expert_ffn_shape(kKernel, shape);
  detail::check_expert_weights(kKernel, shape, experts);
  check_scratch(kKernel, shape, scratch);
  expect_size(kKernel, "x", x.size(), shape.num_tokens * shape.hidden_dim);
  expect_size(kKernel, "out", out.size(), shape.num_tokens * shape.hidden_dim);
  build_routing_plan(shape, topk_ids, topk_weights, plan);
  expert_ffn_gather(shape, plan, x, scratch, 0, expert_ffn_gather_units(shape));
  expert_ffn_gate_up(shape, experts, plan, scratch, 0, expert_ffn_gate_up_units(shape, plan));
  expert_ffn_down(shape, experts, plan, scratch, out, 0, expert_ffn_down_units(shape));
}

}  // namespace deepfit::kernels
