// The routed experts of a mixture-of-experts layer: each token's top_k SwiGLU experts, weighted
// and summed into its output, grouped by expert so each expert's weights are read once per batch.
// Choosing the experts (the router, its softmax/sigmoid and top-k), the shared expert, threads and
// timing belong to the caller; the matrix-vector kernels are moe_gemm.h and moe_gemm_fp8.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/error.h"
#include "kernels/moe_gemm.h"
#include "kernels/moe_gemm_fp8.h"
#include "kernels/work.h"

namespace deepfit::kernels {

// ---- Weights
// How every expert matrix of a layer is stored: the three formats of moe_gemm.h (BF16, GGUF Q8_0
// and Q4_K rows) or FP8 e4m3 with 128 x 128 tile scales (moe_gemm_fp8.h).
enum class ExpertWeightFormat { kBf16, kQ8_0, kQ4_K, kFp8E4m3 };

// One expert matrix [rows][cols] in the layer's format: `weights` as moe_gemm.h or moe_gemm_fp8.h
// lays it out; `scales` the FP8 tile scales [fp8_scale_tiles(rows)][fp8_scale_tiles(cols)], empty
// for the other formats.
struct ExpertMatrix {
  std::span<const std::byte> weights;
  std::span<const float> scales;
};

// Expert e: gate [ffn_dim][hidden_dim], up [ffn_dim][hidden_dim], down [hidden_dim][ffn_dim].
struct ExpertWeights {
  ExpertMatrix gate;
  ExpertMatrix up;
  ExpertMatrix down;
};

// Bytes of `weights` and number of `scales` of one [rows][cols] matrix. BF16/Q8_0/Q4_K: cols must
// be a whole number of the format's blocks (DEEPFIT_ASSERT; entry checks reject such shapes first).
inline std::int64_t expert_matrix_weight_bytes(ExpertWeightFormat f, std::int64_t rows, std::int64_t cols) {
  switch (f) {
    case ExpertWeightFormat::kBf16: return rows * weight_row_bytes(WeightFormat::kBf16, cols);
    case ExpertWeightFormat::kQ8_0: return rows * weight_row_bytes(WeightFormat::kQ8_0, cols);
    case ExpertWeightFormat::kQ4_K: return rows * weight_row_bytes(WeightFormat::kQ4_K, cols);
    case ExpertWeightFormat::kFp8E4m3: return rows * cols;
  }
  DEEPFIT_ASSERT(false, "expert_matrix_weight_bytes: unknown ExpertWeightFormat");
}

inline std::int64_t expert_matrix_num_scales(ExpertWeightFormat f, std::int64_t rows, std::int64_t cols) {
  return f == ExpertWeightFormat::kFp8E4m3 ? fp8_scale_tiles(rows) * fp8_scale_tiles(cols) : 0;
}

// ---- Shape
// T = num_tokens tokens, each routed to top_k experts (ids in [0, num_experts), repeats allowed)
// with fp32 weights:
//   out[t][c] += sum over j < top_k of w[t][j] * down_e( silu(gate_e x_t) * up_e x_t )[c],  e = id[t][j],
//   silu(g) = g / (1 + exp(-g)), elementwise over the ffn_dim rows of gate and up.
// A "pair" is one (token, j): there are num_tokens * top_k of them.
// Q8_0 needs hidden_dim and ffn_dim multiples of 32, Q4_K multiples of 256 (each is the cols of
// some matrix); BF16 and FP8 take any size.
struct ExpertFfnShape {
  std::int64_t num_tokens;   // >= 0
  std::int64_t top_k;        // >= 1
  std::int64_t num_experts;  // >= 1
  std::int64_t hidden_dim;   // >= 1
  std::int64_t ffn_dim;      // >= 1 (the expert's intermediate size)
  ExpertWeightFormat weight_format;
};

// One pass of the routed experts over a batch, for work_of: the shape plus the number of distinct
// experts with at least one pair (RoutingPlan::num_active_experts), whose weights are read.
struct ExpertFfnWorkShape {
  ExpertFfnShape ffn;
  std::int64_t num_active_experts;  // 0 ..= min(num_experts, num_tokens * top_k)
};

// With P = num_tokens * top_k pairs, H = hidden_dim, F = ffn_dim, T = num_tokens:
// flops = 2 P (2 F H)   gate and up products
//       + 2 P H F       down products
//       + 3 P F         silu(g) * u: the add, the division and the product (the exp is not counted)
//       + 2 P H         the weighted sum into out (a multiply and an add).
// bytes = num_active_experts * (gate + up + down bytes, expert_matrix_weight_bytes plus 4 per scale)
//       + 4 T H         x, read once
//       + 8 T H         out, read and written once (it is accumulated into)
//       + 8 P           the expert ids (int32) and weights (fp32).
// The intermediates (gathered activations, h) are not compulsory traffic and are not counted;
// write-allocate is excluded (see Work).
inline Work work_of(const ExpertFfnWorkShape& s) {
  const ExpertFfnShape& f = s.ffn;
  DEEPFIT_ASSERT(f.num_tokens >= 0 && f.top_k >= 1 && f.hidden_dim >= 1 && f.ffn_dim >= 1 &&
                     s.num_active_experts >= 0 && s.num_active_experts <= f.num_experts,
                 "work_of(ExpertFfnWorkShape): dimension out of range");
  const double pairs = static_cast<double>(f.num_tokens) * static_cast<double>(f.top_k);
  const double H = static_cast<double>(f.hidden_dim);
  const double F = static_cast<double>(f.ffn_dim);
  const double T = static_cast<double>(f.num_tokens);
  const auto matrix_bytes = [&](std::int64_t rows, std::int64_t cols) {
    return static_cast<double>(expert_matrix_weight_bytes(f.weight_format, rows, cols)) +
           4.0 * static_cast<double>(expert_matrix_num_scales(f.weight_format, rows, cols));
  };
  const double expert_bytes = 2.0 * matrix_bytes(f.ffn_dim, f.hidden_dim) + matrix_bytes(f.hidden_dim, f.ffn_dim);
  return {2.0 * pairs * (2.0 * F * H) + 2.0 * pairs * H * F + 3.0 * pairs * F + 2.0 * pairs * H,
          static_cast<double>(s.num_active_experts) * expert_bytes + 4.0 * T * H + 8.0 * T * H + 8.0 * pairs};
}

// ---- Routing plan: the pairs grouped by expert. Caller-owned arrays (sizes below, P = pairs):
struct RoutingPlan {
  // [num_experts + 1]: expert e's pairs are [expert_offsets[e], expert_offsets[e + 1]).
  std::span<std::int64_t> expert_offsets;
  // [P]: the token of each pair, grouped by expert in ascending id; within an expert in ascending
  // (token, j), so a token routed twice to one expert has two consecutive pairs.
  std::span<std::int32_t> pair_tokens;
  // [P]: the routing weight of each pair.
  std::span<float> pair_weights;
  // [num_experts]: the first num_active_experts entries are the experts with pairs, ascending.
  std::span<std::int32_t> active_experts;
  std::int64_t num_active_experts = 0;  // set by build_routing_plan
};

// Fills `plan` from topk_ids [num_tokens][top_k] (int32 in [0, num_experts)) and topk_weights
// [num_tokens][top_k] (finite fp32). A counting sort: O(P + num_experts), calling thread, no
// allocation. Entry checks (InputError, before writing): the shape, every span exactly its size,
// ids in range, weights finite, num_tokens * top_k below 2^31.
void build_routing_plan(const ExpertFfnShape& shape, std::span<const std::int32_t> topk_ids,
                        std::span<const float> topk_weights, RoutingPlan& plan);

// ---- Scratch: caller-owned intermediates, [pair][...] in plan order (P = pairs).
//   BF16, FP8:   x_routed [P][hidden_dim] fp32 (the gathered activations); the xq and hq spans empty.
//   Q8_0, Q4_K:  xq [P][hidden_dim], xq_scales and xq_sums [P][hidden_dim / 32]: x_t quantized by
//                quantize_activations_q8 (moe_gemm.h), the gate and up kernels' input;
//                hq [P][ffn_dim], hq_scales and hq_sums [P][ffn_dim / 32]: h quantized the same way,
//                the down kernel's input; x_routed empty.
//   Every format: h [P][ffn_dim] fp32, silu(gate x) * up x.
// expert_ffn_scratch_sizes gives each span's element count (0 for the unused ones).
struct ExpertFfnScratch {
  std::span<float> x_routed;
  std::span<std::int8_t> xq;
  std::span<float> xq_scales;
  std::span<std::int32_t> xq_sums;
  std::span<float> h;
  std::span<std::int8_t> hq;
  std::span<float> hq_scales;
  std::span<std::int32_t> hq_sums;
};

struct ExpertFfnScratchSizes {
  std::int64_t x_routed;   // floats
  std::int64_t xq;         // int8
  std::int64_t xq_groups;  // floats of xq_scales, int32 of xq_sums
  std::int64_t h;          // floats
  std::int64_t hq;         // int8
  std::int64_t hq_groups;  // floats of hq_scales, int32 of hq_sums
};
ExpertFfnScratchSizes expert_ffn_scratch_sizes(const ExpertFfnShape& shape);

// ---- The grouped variant, in three phases for a caller-owned thread pool:
//   build_routing_plan (one thread) | gather | gate_up | down
// with a barrier at each `|`. Each phase is a list of independent work units; a call handles the
// units [begin, end) of its phase, writes exactly their part of the outputs, and any split of a
// phase's units over threads and calls (in any order) gives the same bits. No allocation: the
// gate_up and down phases keep under 40 KiB of stack (the outputs of 32 pairs x 128 rows, and the
// FP8 kernel's tile buffers). The gather is a phase of its own because the kernels read each
// expert's activation vectors as one contiguous [batch][cols] array; gathering (or quantizing)
// every pair's row once lets the gate_up units of an expert share it.
// Common entry checks (InputError, before anything is written): the shape; experts.size() =
// num_experts and every matrix's spans exactly their sizes (expert_matrix_*); the plan's spans
// their sizes and consistent (offsets ascending from 0 to P, tokens in range, active experts
// exactly the experts with pairs); the scratch spans exactly expert_ffn_scratch_sizes; 0 <= begin
// <= end <= the phase's unit count; written arrays not overlapping the arrays the phase reads.
// The result of each token does not depend on the other tokens in the batch: every kernel below
// computes each activation vector on its own.
// Tolerance against expert_ffn_ref: propagate the tolerance of each matrix-vector kernel (for
// Q8_0/Q4_K its activation-quantization term) through silu * up and the weighted sum; see
// tests/kernels/expert_ffn_test.cpp, which derives the bound term by term.
// Work of the three phases together: work_of(ExpertFfnWorkShape{shape, plan.num_active_experts}).

// Rows of ffn_dim per gate_up unit and columns of hidden_dim per down unit: one FP8 scale tile
// (so a unit's rows are one tile row of scales), a multiple of the Q8_0/Q4_K activation groups.
inline constexpr std::int64_t kExpertFfnSlice = 128;

// Phase 1, gather: unit p (one per pair) writes row p of the scratch's x_routed (BF16, FP8: a copy
// of x[token]) or xq, xq_scales, xq_sums (Q8_0, Q4_K: quantize_activations_q8 of x[token]).
// x [num_tokens][hidden_dim] fp32. Extra entry check: the x rows the units read are finite.
std::int64_t expert_ffn_gather_units(const ExpertFfnShape& shape);
void expert_ffn_gather(const ExpertFfnShape& shape, const RoutingPlan& plan, std::span<const float> x,
                       const ExpertFfnScratch& scratch, std::int64_t begin, std::int64_t end);

// Phase 2, gate_up: unit u = (active expert a = u / S, slice s = u % S), S = ceil(ffn_dim / 128),
// computes rows [128 s, min(128 s + 128, ffn_dim)) of gate and up for all of expert a's pairs (32
// at a time, through moe_gemm_blocked, moe_gemm_blocked_q8 or moe_gemm_fp8_blocked on those rows)
// and writes h[p][r] = silu(g) * u in fp32 (g / (1 + expf(-g)) * u) for those rows, plus (Q8_0,
// Q4_K) their quantization into hq, hq_scales, hq_sums (quantize_activations_q8 per 32-row group,
// the same bytes as quantizing whole rows of h). Extra entry check: FP8 scales of the tiles read
// finite and <= kFp8MaxScale. An h that overflows fp32 (only possible with absurd weights) makes
// the Q8_0/Q4_K quantizer throw InputError mid-phase; BF16/FP8 carry the infinity into out.
std::int64_t expert_ffn_gate_up_units(const ExpertFfnShape& shape, const RoutingPlan& plan);
void expert_ffn_gate_up(const ExpertFfnShape& shape, std::span<const ExpertWeights> experts, const RoutingPlan& plan,
                        const ExpertFfnScratch& scratch, std::int64_t begin, std::int64_t end);

// Phase 3, down: unit c computes columns [128 c, min(128 c + 128, hidden_dim)) of out: for each
// active expert in ascending id, rows of down times h (or hq) of its pairs, 32 pairs at a time,
// then out[token][col] = out[token][col] + w * y (fp32 multiply, then add) pair by pair. So each
// element of out sums its experts in ascending expert id (repeats in ascending j), whatever the
// slicing. out [num_tokens][hidden_dim] fp32, accumulated into (the caller zeroes it or holds the
// shared expert's output in it). Extra entry check as gate_up, for the down scales.
std::int64_t expert_ffn_down_units(const ExpertFfnShape& shape);
void expert_ffn_down(const ExpertFfnShape& shape, std::span<const ExpertWeights> experts, const RoutingPlan& plan,
                     const ExpertFfnScratch& scratch, std::span<float> out, std::int64_t begin, std::int64_t end);

// All of the above on the calling thread: build_routing_plan, then every unit of each phase.
// InputError from the checks of each step; `out` is written only after every check has passed
// (the plan and the scratch may have been written by then).
void expert_ffn_grouped(const ExpertFfnShape& shape, std::span<const ExpertWeights> experts,
                        std::span<const std::int32_t> topk_ids, std::span<const float> topk_weights,
                        std::span<const float> x, RoutingPlan& plan, const ExpertFfnScratch& scratch,
                        std::span<float> out);

// ---- The specification, token by token in double: every weight decoded by the reference codecs
// of quant_blocks.h (and times its tile scale for FP8), x used as is (no activation quantization),
// g, u, h = silu(g) * u, the down products and the weighted sum over j in double; then
// out[t][c] = fp32(out[t][c] + sum). `scratch` [ffn_dim + hidden_dim] doubles (h and the sum).
// Entry checks (InputError, before writing): the shape, experts, the topk arrays as
// build_routing_plan, x [num_tokens][hidden_dim] finite, out [num_tokens][hidden_dim] not
// overlapping x, scratch its size, the FP8 scales of the experts used finite and <= kFp8MaxScale.
// Calling thread only; O(P * 3 * hidden_dim * ffn_dim).
std::int64_t expert_ffn_ref_scratch_size(const ExpertFfnShape& shape);
void expert_ffn_ref(const ExpertFfnShape& shape, std::span<const ExpertWeights> experts,
                    std::span<const std::int32_t> topk_ids, std::span<const float> topk_weights,
                    std::span<const float> x, std::span<float> out, std::span<double> scratch);

namespace detail {
// Entry checks shared by the reference and the grouped phases (InputError naming `kernel`).
void check_expert_ffn_shape(const char* kernel, const ExpertFfnShape& shape);
void check_expert_weights(const char* kernel, const ExpertFfnShape& shape, std::span<const ExpertWeights> experts);
void check_topk(const char* kernel, const ExpertFfnShape& shape, std::span<const std::int32_t> topk_ids,
                std::span<const float> topk_weights);
// The FP8 scales of tile row `tile_row` of `m` ([rows][cols]): finite and <= kFp8MaxScale.
void check_fp8_scale_row(const char* kernel, const ExpertMatrix& m, std::int64_t cols, std::int64_t tile_row,
                         const char* which, std::int64_t expert);
}  // namespace detail

}  // namespace deepfit::kernels
