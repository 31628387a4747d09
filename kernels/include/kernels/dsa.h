// DeepSeek Sparse Attention (DSA, DeepSeek-V3.2): the lightning indexer that scores every cached
// position for a query token, its FP8 quantizers, and the top-k selection of the positions that
// sparse MLA attends to. The attention over them is kernels/attention.h (MlaSequence::positions).
#pragma once

#include <bit>
#include <cstdint>
#include <span>

#include "kernels/work.h"

namespace deepfit::kernels {

// Facts from DeepSeek's reference code (deepseek-ai/DeepSeek-V3.2-Exp inference/model.py, class
// Indexer; inference/kernel.py, act_quant and fp8_index) and data/models/deepseek-v3.2.json:
//   index_n_heads 64, index_head_dim 128, index_topk 2048, FP8 block_size 128: each index query
//   head and each cached index key is one 128-value block with one fp32 scale.
// An indexer head's vector is kIndexHeadDim values, the size of the quantization block, so a key
// carries exactly one scale. The kernels take that head dim only (there is no head_dim parameter).
inline constexpr std::int64_t kIndexHeadDim = 128;
// Heads per query a kernel accepts (the fast paths convert the query into a stack buffer of this
// many heads; DeepSeek-V3.2 has 64).
inline constexpr std::int64_t kMaxIndexHeads = 128;

// ---- Quantization (the reference's act_quant on blocks of 128 values).
// How the block scale is chosen, for amax = max(max |x| over the block, 1e-4) (fp32):
//   kUe8m0: s = 2^ceil(log2(amax * (1/448))), a power of two (the reference's "ue8m0" scale_fmt,
//           which inference/config_671B_v3.2.json sets; ceil(log2) read off the fp32 bits of
//           amax * (1/448), exponent plus one when any mantissa bit is set, as its fast_round_scale).
//   kFp32:  s = amax * (1/448) in fp32 (the reference when scale_fmt is None).
// Then code = e4m3(clamp(x / s, -448, 448)), rounding to nearest even (fp32_to_fp8_e4m3 of
// kernels/quant_blocks.h); x / s is an fp32 division (exact for kUe8m0). The value a code stands
// for is fp8_e4m3_to_fp32(code) * s. The reference quantizes bf16 inputs; these take fp32.
// Error per value: |fp8(code) * s - x| <= 2^-4 |x| (1 + 2^-19) + 2^-10 s: half an e4m3 step
// (2^-4 relative for normals, 2^-10 s absolute for subnormals) of x / s, plus the fp32 rounding of
// the division and of s (|x / s| exceeds 448 by at most 3 roundings, which the clamp removes).
// Codes are never NaN (0x7F, 0xFF).
enum class IndexScaleFormat { kUe8m0, kFp32 };

// Quantizes x [rows][128] (fp32, rows = x.size() / 128) into codes [rows][128] (e4m3 bytes) and
// scales [rows] (fp32), one block per row. Use it to write new tokens' keys into the index key
// cache (the cache writer: rows = tokens) and, through quantize_index_query, for query heads.
// Entry checks (InputError, before writing): x.size() a multiple of 128, codes and scales exactly
// their sizes, every x finite. Calling thread only; no allocation.
void quantize_index_rows(std::span<const float> x, IndexScaleFormat fmt, std::span<std::uint8_t> codes,
                         std::span<float> scales);

// Prepares one query token as the reference does before fp8_index:
//   q [H][128] fp32 (after RoPE and the Hadamard rotation) -> q_codes [H][128] with scales s_h;
//   head_weights[h] = ((head_gates[h] * H^-0.5) * s_h) * 128^-0.5   (fp32, in this order),
// where head_gates [H] is the output of the indexer's weights_proj for this token. The reference
// holds head_gates and head_gates * H^-0.5 in bf16 (its default dtype); here they stay fp32 (pass
// bf16-rounded gates to mirror it). The scale of q thus rides in the head weight, and the indexer
// kernels multiply raw q codes by key codes.
// Entry checks (InputError, before writing): 1 <= H = head_gates.size() <= kMaxIndexHeads, q
// [H][128], q_codes [H][128], head_weights [H], all inputs finite. Calling thread only.
void quantize_index_query(std::span<const float> q, std::span<const float> head_gates, IndexScaleFormat fmt,
                          std::span<std::uint8_t> q_codes, std::span<float> head_weights);

// ---- Lightning indexer.
// One sequence: its key cache holds ctx_len positions, and num_queries query tokens sit at the last
// positions: query i (0 <= i < T) is at position p_i = ctx_len - T + i and sees positions 0..p_i
// (causal). Decode is T = 1 (the query sees every position, its own key included, which the caller
// writes into the cache first, as the reference does); prefill of T tokens after a prefix of P
// cached ones is ctx_len = P + T. A batch of sequences is one call per sequence (each has its own
// cache and length); the planner sums their work.
struct IndexerShape {
  std::int64_t num_queries;  // T >= 0
  std::int64_t num_heads;    // H, 1..kMaxIndexHeads (64 for DeepSeek-V3.2)
  std::int64_t ctx_len;      // N >= T, < 2^31 (positions are int32)
};

// The positions [t_begin, t_end) of one call, for every query of the shape.
struct IndexerSlice {
  IndexerShape shape;
  std::int64_t t_begin;
  std::int64_t t_end;
};

// Work of one call over positions [t_begin, t_end), with D = kIndexHeadDim and V = the number of
// (query, position) pairs in the slice that the query sees (t <= p_i):
//   flops = V * (2 H D + 2 H + 1): H dot products of D FMAs, one multiply-add per head for the
//           head weight (the ReLU, a max, is not counted), one multiply by the key scale;
//   bytes = (t_end - t_begin) * (D + 4)    the keys (e4m3) and their fp32 scales, read once
//         + T * H * (D + 4)                the query codes and head weights, read once per call
//         + 4 * T * (t_end - t_begin)      the fp32 scores written (masked ones included).
// Decode, H = 64: 16513 FLOPs per 132 + 4 bytes per position (~121 FLOP/byte): far above the
// balance point of a CPU core, so the indexer is compute-bound there.
Work work_of(const IndexerSlice& s);
// The whole call: work_of(IndexerSlice{s, 0, s.ctx_len}).
Work work_of(const IndexerShape& s);

// Common contract of the indexer kernels.
//   Math, for query i and position t <= p_i, with q = q_codes, k = keys decoded as e4m3 values:
//     scores[i][t] = key_scales[t] * sum over h < H of head_weights[i][h] * relu(sum over d < 128 of
//                    q[i][h][d] * k[t][d])
//   which is the reference's fp8_index(q_fp8, weights, k_cache, k_scale_cache) (it applies the key
//   scale after the sum over heads, and ReLU to the raw code dot product: the positive query scale
//   already sits in the head weight). For t > p_i: scores[i][t] = -inf (the reference adds its
//   causal mask of -inf; decode has none). Top-k for query i then runs over scores[i][0..p_i]
//   (dsa_topk_*), of which the reference takes min(index_topk, p_i + 1) positions.
//   Shapes and layout (shape = IndexerShape{T, H, N}):
//     q_codes       [T][H][128] e4m3 bytes    head_weights [T][H] fp32 (from quantize_index_query)
//     keys          [N][128] e4m3 bytes       key_scales   [N] fp32    (from quantize_index_rows)
//     scores        [T][N] fp32 (scores[i * N + t])
//   Slice: writes exactly scores[i][t] for every i and t in [t_begin, t_end), nothing else, and
//     reads only keys and key_scales of that range, so a thread pool splits the positions into
//     disjoint slices; each thread streams its keys once, all heads and queries at a time. A
//     position's arithmetic does not depend on the slice, so any split gives the same bits.
//     Runs on the calling thread; nothing is allocated (the fast paths keep the converted query
//     in at most 66 KiB of stack).
//   Entry checks (InputError, before anything is written): the shape's ranges, every span exactly
//     its size, 0 <= t_begin <= t_end <= N, head_weights finite, key_scales[t_begin, t_end) finite,
//     q_codes free of NaN codes (0x7F, 0xFF), scores not overlapping any input.
//     A NaN code in keys (never written by quantize_index_rows; checking would cost a pass over the
//     cache) makes that position's score NaN in every variant, which dsa_topk_* rejects.
//   Work per call: work_of(IndexerSlice{shape, t_begin, t_end}).

// The specification: codes decoded by fp8_e4m3_to_fp32, products and sums in double, rounded to
// fp32 once at the end.
void dsa_index_ref(const IndexerShape& shape, std::span<const std::uint8_t> q_codes,
                   std::span<const float> head_weights, std::span<const std::uint8_t> keys,
                   std::span<const float> key_scales, std::span<float> scores, std::int64_t t_begin,
                   std::int64_t t_end);

// Every product of two e4m3 values is exact in fp32 (4-bit significands); the dot products
// accumulate in fp32 (AVX512_BF16 VDPBF16PS on bf16 copies of the codes, or fp32 FMAs on fp32
// copies, or plain C++ loops on other CPUs), then fp32 head weighting and sum. Tolerance against
// dsa_index_ref, for a seen position, with A_ht = sum_d |q[i][h][d] k[t][d]|:
//   |s - s_ref| <= gamma(128 + H + 3) * |key_scales[t]| * sum_h |head_weights[i][h]| * A_ht,
//   gamma(m) = m u / (1 - m u), u = 2^-24
// (each dot accumulates at most 128 rounded additions, the weighting one rounded product and H
// additions, the key scale one product, the reference one final rounding; ReLU is 1-Lipschitz).
// Masked positions are exactly -inf, NaN key codes give NaN, as in the reference.
void dsa_index_fast(const IndexerShape& shape, std::span<const std::uint8_t> q_codes,
                    std::span<const float> head_weights, std::span<const std::uint8_t> keys,
                    std::span<const float> key_scales, std::span<float> scores, std::int64_t t_begin,
                    std::int64_t t_end);

// ---- Top-k selection.
// positions = the min(k, ctx_len) positions t of the largest scores[t], t < ctx_len = scores.size():
//   order: a score ranks above another when it is larger, or equal and at a lower position (so on
//     ties the lower position wins; -0 equals +0; -inf is a score like any other);
//   result in ascending position order, so the attention reads the cache front to back; when
//     ctx_len <= k, every position 0..ctx_len-1.
// (The reference's torch.topk(min(index_topk, end_pos), sorted=False) returns the same set up to
// its unspecified choice among ties, in no documented order.)
// Scratch: the caller's buffer of at least dsa_topk_scratch_size(TopkShape{ctx_len, k}) elements;
// its contents on return are unspecified. Entry checks (InputError, before positions is written):
// k >= 0, ctx_len < 2^31, positions exactly min(k, ctx_len) elements, scratch large enough, no NaN
// among the scores (the fast variant notices one during its pass and throws after it).
// Threading: the whole array on the calling thread (one call per query); nothing is allocated.
struct TopkShape {
  std::int64_t ctx_len;  // scores, >= 0
  std::int64_t k;        // >= 0 (2048 for DeepSeek-V3.2)
};

// flops = ctx_len: one comparison per score, a nominal count of the selection's integer work (no
// floating-point arithmetic is done). bytes = 4 ctx_len (scores read once) + 4 min(k, ctx_len)
// (int32 positions written once); scratch traffic is not compulsory and is not counted.
Work work_of(const TopkShape& s);

// Elements of std::uint32_t the top-k kernels need, with m = min(k, ctx_len):
// max(ctx_len, 6 m + 4096): the reference sorts all positions in it; the fast variant holds up to
// 2 m + 1024 candidate positions (plus 16 spare slots), their keys and a copy of the keys.
// InputError for a shape out of range (ctx_len < 0 or >= 2^31, k < 0).
std::int64_t dsa_topk_scratch_size(const TopkShape& s);

// The specification: sorts all positions by the order above (std::sort on scratch), keeps the
// first min(k, ctx_len), sorts them by position. O(ctx_len log ctx_len).
void dsa_topk_ref(std::span<const float> scores, std::int64_t k, std::span<std::int32_t> positions,
                  std::span<std::uint32_t> scratch);

// One pass with a rising threshold. Candidates (position and the order-preserving key of
// detail::topk_key) enter a buffer of capacity 2m + 1024, in ascending position order, when their
// key exceeds the threshold theta; when the buffer fills, std::nth_element on a copy of the keys
// finds the m-th largest key, which becomes theta, and a stable pass keeps the m winners (ties: the
// lower positions). A later score equal to theta can never win. theta starts at the key that about
// 2m scores reach in a sample of every 64th score (when ctx_len >= 16384 and k <= ctx_len / 8), so
// on most data the buffer seldom fills; if fewer than m scores reach the sampled key, a second pass
// starts from the bottom. O(ctx_len) reads, O(capacity) work per cut and at most one cut per
// m + 1008 admitted scores. AVX-512 where the CPU has it (16 keys per compare, winners compressed
// into the buffer), else plain C++. Identical results to dsa_topk_ref on every path.
void dsa_topk_fast(std::span<const float> scores, std::int64_t k, std::span<std::int32_t> positions,
                   std::span<std::uint32_t> scratch);

namespace detail {
// The code paths of dsa_index_fast and dsa_topk_fast. The public functions take the best one the
// CPU has; the tests force each in turn so every path is checked on one AVX-512 host.
enum class IndexIsa {
  kPortable,    // plain C++, any CPU
  kAvx512,      // AVX-512 F/BW/DQ/VL plus F16C and FMA: fp32 FMAs
  kAvx512Bf16,  // the above plus AVX512_BF16 (VDPBF16PS) and AVX512_VBMI (VPERMT2B decodes the codes)
};
bool cpu_has(IndexIsa isa);
IndexIsa best_index_isa();
// As dsa_index_fast, on a forced path; InputError if the CPU lacks it.
void dsa_index_fast_on(IndexIsa isa, const IndexerShape& shape, std::span<const std::uint8_t> q_codes,
                       std::span<const float> head_weights, std::span<const std::uint8_t> keys,
                       std::span<const float> key_scales, std::span<float> scores, std::int64_t t_begin,
                       std::int64_t t_end);
// As dsa_topk_fast, on a forced path (kAvx512Bf16 runs the kAvx512 code); InputError if the CPU
// lacks it.
void dsa_topk_fast_on(IndexIsa isa, std::span<const float> scores, std::int64_t k, std::span<std::int32_t> positions,
                      std::span<std::uint32_t> scratch);
// Entry checks shared by the indexer variants (InputError naming `kernel`).
void check_index(const char* kernel, const IndexerShape& shape, std::span<const std::uint8_t> q_codes,
                 std::span<const float> head_weights, std::span<const std::uint8_t> keys,
                 std::span<const float> key_scales, std::span<const float> scores, std::int64_t t_begin,
                 std::int64_t t_end);
// Entry checks shared by the top-k variants, except the NaN check (InputError naming `kernel`).
void check_topk(const char* kernel, std::span<const float> scores, std::int64_t k,
                std::span<const std::int32_t> positions, std::span<const std::uint32_t> scratch);
// The order-preserving key of a score: larger score, larger key; -0 and +0 give the same key.
// NaN scores are rejected before keys are compared. Inline: the top-k loops call it per score.
inline std::uint32_t topk_key(float score) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(score);
  if ((u & 0x7FFFFFFFu) == 0) u = 0;  // -0 ranks as +0
  // Negative floats order backwards as unsigned bits: flip them all; positive ones: set the sign
  // bit so they rank above every negative.
  return (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
}
}  // namespace detail

}  // namespace deepfit::kernels
