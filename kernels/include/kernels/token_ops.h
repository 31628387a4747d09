// DeepSeek-V3.2's small per-token ops as kernels: RMSNorm, YaRN RoPE (table and rotation),
// SwiGLU, embedding lookup, and the LM head's work. Matrix products live in moe_gemm.h, the MoE
// router in router.h; attention, LayerNorm (the indexer's k_norm) and softmax are not here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/work.h"

namespace deepfit::kernels {

// Common contract of every kernel in this header (the per-op blocks add to it).
//   Slices: a kernel handles the rows (tokens) [begin, end) of its work and writes exactly those
//     rows of its output, on the calling thread, with no allocation and no shared state; a row's
//     arithmetic does not depend on the slice, so any split gives the same bits.
//   Entry checks: InputError naming the kernel, before anything is written.
//   `_ref` is the specification (plain loops, double where it matters); `_fast` uses AVX-512
//     (F/BW/DQ/VL, checked at run time, so the library needs no -march flag) and otherwise
//     portable loops; detail::*_fast_on forces one path so tests check each on an AVX-512 host.

// ---- RMSNorm.
// y[r][i] = x[r][i] / sqrt(mean_i(x[r][i]^2) + eps) * w[i]   (DeepSeek: eps = rms_norm_eps = 1e-6)
// The norms of DeepSeek-V3/V3.2 (attn_norm, ffn_norm, q_norm, kv_norm, the final norm; hidden_dim
// 7168, 1536, 512) weigh each element by a stored vector w. Its type is a parameter: BF16 is how
// DeepSeek-V3's reference model.py holds it (parameters in the default bf16 dtype) and how the
// released checkpoint stores it by its torch_dtype bfloat16 (FP8 covers the Linear weights; not
// checked tensor by tensor here); V3.2-Exp's model.py loads it into an fp32 parameter, and
// llama.cpp's GGUF converter keeps 1-D tensors such as norms in F32. The arithmetic is fp32 or
// better in every variant, as in V3.2-Exp's model.py (x.float(), then weight * x); the output is
// fp32 (the reference casts it back to the activation dtype; the caller may round). The fused
// residual add of model.py's RMSNorm(x, residual) is the caller's.
enum class NormWeightType { kBf16, kFp32 };

struct RmsNormShape {
  std::int64_t num_rows;    // vectors normalized, >= 0
  std::int64_t hidden_dim;  // elements per vector, >= 1
  NormWeightType weight_type;
};

// flops per row = 4 * hidden_dim + 4: hidden_dim multiply-adds for the sum of squares (2 each),
// two multiplies per element (x * r, then * w), and 4 scalar ops (divide by hidden_dim, add eps,
// sqrt, reciprocal; each counted as 1).
// bytes = 4 * num_rows * hidden_dim (x) + 4 * num_rows * hidden_dim (y) + w once
//         (2 or 4 bytes per element).
inline Work work_of(const RmsNormShape& s) {
  DEEPFIT_ASSERT(s.num_rows >= 0 && s.hidden_dim >= 0, "work_of(RmsNormShape): negative dimension");
  const double rows = static_cast<double>(s.num_rows);
  const double dim = static_cast<double>(s.hidden_dim);
  const double weight_bytes = s.weight_type == NormWeightType::kBf16 ? 2.0 : 4.0;
  return {rows * (4.0 * dim + 4.0), 8.0 * rows * dim + weight_bytes * dim};
}

// Layout: x and y [num_rows][hidden_dim] fp32, row-major; weight [hidden_dim] values as bytes,
// little-endian BF16 (2 bytes each) or fp32 (4 bytes each) per shape.weight_type. y may be x itself
// (in place); any other overlap is rejected. eps must be finite and >= 0.
// Work per call: work_of(RmsNormShape{row_end - row_begin, hidden_dim, weight_type}).
// _ref: sum of squares, mean, eps and 1/sqrt in double, y = x * r * w rounded once.
// _fast: 64 fp32 partial sums of squares (lane l of vector j takes elements 64k + 16j + l), added in
// a fixed tree of depth 6; r in double, rounded to fp32; then y = (x * r) * w in fp32.
// Tolerance against _ref (normal results), u = 2^-24, m = ceil(hidden_dim / 64):
//   |y - y_ref| <= (gamma(m + 7) / 2 + 5u) |y_ref|,  gamma(n) = n u / (1 - n u).
// The sum of squares has relative error <= gamma(m + 7) (a chain of m terms, the tree, and the
// product's rounding); r ~ S^-1/2 halves it; rounding r, x * r and * w adds 3u; the reference's own
// rounding u and second-order terms take the last u.
void rms_norm_ref(const RmsNormShape& shape, std::span<const float> x, std::span<const std::byte> weight, float eps,
                  std::span<float> y, std::int64_t row_begin, std::int64_t row_end);
void rms_norm_fast(const RmsNormShape& shape, std::span<const float> x, std::span<const std::byte> weight, float eps,
                   std::span<float> y, std::int64_t row_begin, std::int64_t row_end);

// ---- Rotary position embedding with YaRN scaling, as DeepSeek-V3 / V3.2 apply it.
// Inverse frequencies (radians per position) of pair i < rope_dim / 2, in double:
//   theta_i   = rope_theta^(-2i / rope_dim)
//   corr(n)   = rope_dim * ln(original_max_position_embeddings / (2 pi n)) / (2 ln rope_theta)
//   low       = max(floor(corr(beta_fast)), 0),  high = min(ceil(corr(beta_slow)), rope_dim - 1)
//               (high += 0.001 when low == high)
//   ramp_i    = clamp((i - low) / (high - low), 0, 1)
//   inv_freq_i = theta_i / factor * ramp_i + theta_i * (1 - ramp_i)
// so the fast-rotating pairs (i <= low) keep theta_i and the slow ones (i >= high) are
// interpolated by 1 / factor. V3.2 (config rope_scaling: factor 40, original 4096, beta_fast 32,
// beta_slow 1; rope_theta 10000; qk_rope_head_dim 64) gives low = 10, high = 23.
// Table entry (position p, pair i) = (m cos(p inv_freq_i), m sin(p inv_freq_i)), computed in double
// and rounded to fp32, with m = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor,
// mscale_all_dim) (Hugging Face's DeepseekV3YarnRotaryEmbedding; 1 for V3.2, where both are 1.0,
// which is why DeepSeek's model.py applies no factor). Sources: DeepSeek-V3 and V3.2-Exp
// inference/model.py precompute_freqs_cis, which compute in fp32 (at position 163840 an fp32 angle
// is off by up to ~0.008 rad; this table is exact to fp32 rounding of cos and sin), and which use
// YaRN only when max_seq_len > original_seq_len: a caller matching a short-context setup passes
// factor = 1 (plain RoPE: inv_freq_i = theta_i).
struct RopeYarnConfig {
  std::int64_t rope_dim;                          // qk_rope_head_dim, even, >= 2
  double rope_theta;                              // > 1
  double factor;                                  // rope_scaling.factor, >= 1
  std::int64_t original_max_position_embeddings;  // >= 1
  double beta_fast;                               // > beta_slow > 0
  double beta_slow;
  double mscale;          // rope_scaling.mscale, >= 0
  double mscale_all_dim;  // rope_scaling.mscale_all_dim, >= 0
};

// YaRN's attention temperature: 0.1 * mscale * ln(factor) + 1 for factor > 1, else 1.
double yarn_get_mscale(double factor, double mscale);

// What multiplies the attention softmax scale 1 / sqrt(qk_head_dim): yarn_get_mscale(factor,
// mscale_all_dim)^2 (HF DeepseekV3Attention; DeepSeek's model.py: mscale^2 with its mscale = 1).
// V3.2: (1 + 0.1 ln 40)^2 = 1.87385..., on 1 / sqrt(192).
double yarn_softmax_scale_factor(const RopeYarnConfig& config);

// Writes inv_freq [rope_dim / 2] (formula above). InputError on an invalid config or span size.
void rope_yarn_inv_freq(const RopeYarnConfig& config, std::span<double> inv_freq);

// Writes rows [pos_begin, pos_end) of table [num_positions][rope_dim / 2][2] fp32: the (cos, sin)
// pairs above, side by side like torch.view_as_real(freqs_cis). Setup code (O(positions) sin and
// cos in double), so one plain variant. InputError on a bad config (rope_dim <= 1024 here), size
// or slice.
void rope_yarn_table(const RopeYarnConfig& config, std::int64_t num_positions, std::span<float> table,
                     std::int64_t pos_begin, std::int64_t pos_end);

// Which elements form the rotated pairs of a head's rope_dim-element rope part:
//   kInterleaved: (2i, 2i+1): MLA's q_pe and k_pe (model.py's view_as_complex of adjacent pairs).
//   kHalfSplit:   (i, i + rope_dim/2) ("NeoX" style): the V3.2 lightning indexer's q and k
//                 (apply_rotary_emb(..., interleaved=False), DeepSeek-V3.2-Exp commit 8631a81).
// Both use pair i's frequency and the same table. Where the part sits differs too: MLA's q head
// is [nope 128 | rope 64] (rope_offset 128, head_stride 192) and k_pe is the last 64 of wkv_a's
// 576 outputs (num_heads 1, head_stride 576, rope_offset 512); the indexer's heads are
// [rope 64 | nope 64] (rope_offset 0, head_stride 128).
enum class RopeLayout { kInterleaved, kHalfSplit };

struct RopeShape {
  std::int64_t num_tokens;     // >= 0
  std::int64_t num_heads;      // >= 1
  std::int64_t head_stride;    // floats from one head to the next, >= rope_offset + rope_dim
  std::int64_t rope_offset;    // first rotated float inside a head, >= 0
  std::int64_t rope_dim;       // even, >= 2
  std::int64_t num_positions;  // rows of the table
  RopeLayout layout;
};

// flops = 3 * num_tokens * num_heads * rope_dim (per pair 4 multiplies and 2 adds; the FMA forms
// count the same). bytes = 8 * T * H * rope_dim (the rotated floats, read and written in place)
// + 4 * T * rope_dim (one table row per token, i.e. distinct positions) + 8 * T (positions).
inline Work work_of(const RopeShape& s) {
  DEEPFIT_ASSERT(s.num_tokens >= 0 && s.num_heads >= 0 && s.rope_dim >= 0, "work_of(RopeShape): negative dimension");
  const double t = static_cast<double>(s.num_tokens);
  const double th = t * static_cast<double>(s.num_heads);
  const double d = static_cast<double>(s.rope_dim);
  return {3.0 * th * d, 8.0 * th * d + 4.0 * t * d + 8.0 * t};
}

// Rotates, in place, the rope part of every head of tokens [t_begin, t_end) by the table row of
// the token's position: for each pair (a, b) with table entry (c, s),
//   a' = a c - b s,  b' = a s + b c.
// Layout: x [num_tokens][num_heads][head_stride] fp32; the rope part of head h of token t is
// x[t][h][rope_offset .. rope_offset + rope_dim); other floats are not touched. positions
// [num_tokens] int64, each in [0, num_positions) (checked for every token, InputError naming the
// token and the position); table [num_positions][rope_dim / 2][2] from rope_yarn_table.
// Work per call: work_of(RopeShape) with num_tokens = t_end - t_begin.
// _ref: each output in double from the fp32 inputs, rounded once. _fast: fp32 (AVX-512: one
// rounded product and one FMA per output; portable: two products and an add).
// Tolerance against _ref, per output: |a' - a'_ref| <= 3u(1 + u) (|a c| + |b s|) (likewise b'
// with |a s| + |b c|): <= 2u(1 + u) for the fp32 evaluation, u for the reference's rounding.
// Position 0 (entry (1, 0)) leaves x unchanged on every path (bit for bit, but for -0 -> +0).
void rope_apply_ref(const RopeShape& shape, std::span<const float> table, std::span<const std::int64_t> positions,
                    std::span<float> x, std::int64_t t_begin, std::int64_t t_end);
void rope_apply_fast(const RopeShape& shape, std::span<const float> table, std::span<const std::int64_t> positions,
                     std::span<float> x, std::int64_t t_begin, std::int64_t t_end);

// ---- SwiGLU activation.
// h[t][i] = silu(g) * u = g * u / (1 + exp(-g)), g = gate_up[t][i], u = gate_up[t][ffn_dim + i].
// Layout: gate_up [num_tokens][2 * ffn_dim] fp32, each token's ffn_dim gate outputs (w1,
// gate_proj) then its ffn_dim up outputs (w3, up_proj): what one matrix-vector product over the
// stacked weights [w1; w3] writes, and the order of fused gate_up_proj layers (vLLM's
// MergedColumnParallelLinear, llama.cpp's fused gate_up). h [num_tokens][ffn_dim] fp32, separate
// from gate_up. DeepSeek: ffn_dim = moe_intermediate_size 2048 per expert (2048 for the shared
// expert, 18432 for the dense layers); model.py computes F.silu(w1(x).float()) * w3(x).float().
struct SwigluShape {
  std::int64_t num_tokens;  // >= 0
  std::int64_t ffn_dim;     // >= 1
};

// flops = 4 * num_tokens * ffn_dim (exp counted as 1, the add, the product g * u and the divide).
// bytes = 8 * T * ffn_dim (gate_up read) + 4 * T * ffn_dim (h written).
inline Work work_of(const SwigluShape& s) {
  DEEPFIT_ASSERT(s.num_tokens >= 0 && s.ffn_dim >= 0, "work_of(SwigluShape): negative dimension");
  const double n = static_cast<double>(s.num_tokens) * static_cast<double>(s.ffn_dim);
  return {4.0 * n, 12.0 * n};
}

// Work per call: work_of(SwigluShape{t_end - t_begin, ffn_dim}).
// _ref: double, rounded once. _fast: fp32, h = (g * u) / (1 + exp_fp32(-g)) (detail::exp_fp32).
// Tolerance against _ref (u = 2^-24): |h - h_ref| <= 8u |h_ref| + 2^-126, plus |g u| 2^-123 where
// g < -86.5. exp_fp32 is within 3u, so 1 + e within 4u, and g * u and the divide add 2u: 6u, plus
// u for the reference and second-order terms (7u(1 + 2u) <= 8u). 2^-126 covers subnormal results;
// where g < -86.5, sigmoid(g) < 2^-124 is flushed to 0 or computed in the subnormal range.
// Where g * u overflows fp32 the result is +-inf or NaN, as in any fp32 evaluation.
void swiglu_ref(const SwigluShape& shape, std::span<const float> gate_up, std::span<float> h, std::int64_t t_begin,
                std::int64_t t_end);
void swiglu_fast(const SwigluShape& shape, std::span<const float> gate_up, std::span<float> h, std::int64_t t_begin,
                 std::int64_t t_end);

// ---- Embedding lookup.
// out[t][i] = bf16_to_fp32(table[ids[t]][i]): table [vocab_size][hidden_dim] BF16 bits (the
// checkpoint's embed_tokens, BF16 in DeepSeek's release), ids [num_tokens] int32, out
// [num_tokens][hidden_dim] fp32. Every id of `ids` (not only the slice's) must lie in
// [0, vocab_size): otherwise InputError naming the id and its position, before anything is written.
// Exact (bf16 -> fp32 is exact), so _fast == _ref bit for bit.
struct EmbeddingShape {
  std::int64_t num_tokens;  // >= 0
  std::int64_t vocab_size;  // >= 1
  std::int64_t hidden_dim;  // >= 1
};

// flops = 0. bytes = 2 * T * hidden_dim (one table row per token, i.e. distinct ids)
// + 4 * T (ids) + 4 * T * hidden_dim (out).
inline Work work_of(const EmbeddingShape& s) {
  DEEPFIT_ASSERT(s.num_tokens >= 0 && s.hidden_dim >= 0, "work_of(EmbeddingShape): negative dimension");
  const double t = static_cast<double>(s.num_tokens);
  const double d = static_cast<double>(s.hidden_dim);
  return {0.0, 6.0 * t * d + 4.0 * t};
}

// Work per call: work_of(EmbeddingShape{t_end - t_begin, vocab_size, hidden_dim}).
void embedding_lookup_ref(const EmbeddingShape& shape, std::span<const std::uint16_t> table,
                          std::span<const std::int32_t> ids, std::span<float> out, std::int64_t t_begin,
                          std::int64_t t_end);
void embedding_lookup_fast(const EmbeddingShape& shape, std::span<const std::uint16_t> table,
                           std::span<const std::int32_t> ids, std::span<float> out, std::int64_t t_begin,
                           std::int64_t t_end);

// ---- LM head.
// logits [num_tokens][vocab_size] = h [num_tokens][hidden_dim] x head^T: a BF16 matrix-vector
// product, so moe_gemm_blocked (moe_gemm.h) computes it and work_of(MatvecShape) counts it; this
// names the shape. DeepSeek stores lm_head in BF16 (V3.2-Exp's model.py: "lm_head in the
// checkpoint is stored in bf16"; it upcasts to fp32, which moe_gemm_blocked's exact bf16 -> fp32
// widening matches) and computes it only for each sequence's last token when decoding.
inline MatvecShape lm_head_shape(std::int64_t num_tokens, std::int64_t vocab_size, std::int64_t hidden_dim) {
  return MatvecShape{num_tokens, vocab_size, hidden_dim, WeightFormat::kBf16};
}

namespace detail {

// exp in fp32 by a fixed sequence of IEEE operations, so scalar and vector code give the same bits
// (the router relies on it, router.h):
//   NaN -> NaN; t < -86.5 (with -inf) -> 0; otherwise, with t' = min(t, 89):
//   n = nearbyint(t' * log2e_f), r = fma(-n, ln2_lo, fma(-n, ln2_hi, t')),
//   p = Taylor polynomial of degree 7 in r (Horner, fma), result = (p + p) * 2^(n - 1)
//   (ln2_hi = fp32(ln 2), ln2_lo = fp32(ln 2 - ln2_hi); 2^(n-1) keeps n = 128 representable).
// Relative error <= 3u (u = 2^-24) for -86.5 <= t <= 88.72 (the normal-range results); +inf
// beyond; 0 below -86.5, where exp(t) < 2^-124.
float exp_fp32(float t);

// The code paths of the _fast kernels here and in router.h.
enum class OpIsa {
  kPortable,  // plain C++, any CPU
  kAvx512,    // AVX-512 F/BW/DQ/VL
};
bool cpu_has(OpIsa isa);
OpIsa best_op_isa();

void rms_norm_fast_on(OpIsa isa, const RmsNormShape& shape, std::span<const float> x, std::span<const std::byte> weight,
                      float eps, std::span<float> y, std::int64_t row_begin, std::int64_t row_end);
void rope_apply_fast_on(OpIsa isa, const RopeShape& shape, std::span<const float> table,
                        std::span<const std::int64_t> positions, std::span<float> x, std::int64_t t_begin,
                        std::int64_t t_end);
void swiglu_fast_on(OpIsa isa, const SwigluShape& shape, std::span<const float> gate_up, std::span<float> h,
                    std::int64_t t_begin, std::int64_t t_end);
void embedding_lookup_fast_on(OpIsa isa, const EmbeddingShape& shape, std::span<const std::uint16_t> table,
                              std::span<const std::int32_t> ids, std::span<float> out, std::int64_t t_begin,
                              std::int64_t t_end);

// Entry checks shared by the variants (InputError naming `kernel`).
void check_rms_norm(const char* kernel, const RmsNormShape& shape, std::span<const float> x,
                    std::span<const std::byte> weight, float eps, std::span<const float> y, std::int64_t row_begin,
                    std::int64_t row_end);
void check_rope(const char* kernel, const RopeShape& shape, std::span<const float> table,
                std::span<const std::int64_t> positions, std::span<const float> x, std::int64_t t_begin,
                std::int64_t t_end);
void check_swiglu(const char* kernel, const SwigluShape& shape, std::span<const float> gate_up,
                  std::span<const float> h, std::int64_t t_begin, std::int64_t t_end);
void check_embedding(const char* kernel, const EmbeddingShape& shape, std::span<const std::uint16_t> table,
                     std::span<const std::int32_t> ids, std::span<const float> out, std::int64_t t_begin,
                     std::int64_t t_end);
// InputError unless 0 <= begin <= end <= count; `what` names the slice ("row", "token").
void check_slice_bounds(const char* kernel, const char* what, std::int64_t begin, std::int64_t end,
                        std::int64_t count);
// a * b for non-negative counts, or InputError naming `what` when it does not fit an int64.
std::int64_t checked_count(const char* kernel, std::int64_t a, std::int64_t b, const char* what);
// InputError unless got == expected.
void check_span_size(const char* kernel, const char* what, std::size_t got, std::int64_t expected);
// Whether two byte ranges share memory.
bool ranges_overlap(const void* a, std::size_t a_bytes, const void* b, std::size_t b_bytes);

}  // namespace detail

}  // namespace deepfit::kernels
