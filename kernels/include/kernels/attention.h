// DeepSeek multi-head latent attention (MLA) in the absorbed form: decode for a batch of sequences
// (optionally over a list of positions, DSA's sparse MLA) and causal chunked prefill, over a latent
// cache in bf16 or FP8, plus the cache row codecs. Rope, the down-projections that produce the
// latents, the DSA indexer, the output projection wo, threads and timing belong to the caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/work.h"

namespace deepfit::kernels {

// ---- Dimensions. Letters used below: H = num_heads, L = kv_lora_rank, Dn = qk_nope_head_dim,
// R = qk_rope_head_dim, Dv = v_head_dim, D = L + R. DeepSeek-V3 and V3.2 use H 128, L 512, Dn 128,
// R 64, Dv 128 (data/models/deepseek-v3.2.json).
struct MlaDims {
  std::int64_t num_heads;         // H >= 1
  std::int64_t kv_lora_rank;      // L: a positive multiple of 16 (bf16 cache) or of 128 (fp8 cache)
  std::int64_t qk_nope_head_dim;  // Dn >= 1
  std::int64_t qk_rope_head_dim;  // R >= 0
  std::int64_t v_head_dim;        // Dv >= 1
};

// ---- Latent cache formats: one row of bytes per cached token, all little-endian.
//   kBf16: [L] bf16 latent c, then [R] bf16 rope key k                 2 (L + R) bytes (1152 for DeepSeek)
//   kFp8:  [L] FP8 e4m3 latent, then [L / 128] fp32 scales (scale j covers latent values
//          128 j .. 128 j + 127), then [R] bf16 rope key                L + L / 32 + 2 R bytes (656)
//          latent value i = fp8_e4m3_to_fp32(byte i) * scale[i / 128] (kernels/quant_blocks.h).
// The fp8 row is the "FP8 with scale" layout of DeepSeek-V3.2's sparse MLA cache in
// deepseek-ai/FlashMLA (README.md, "FP8 KV Cache"; tests/quant.py, V32_FP8Sparse), which vLLM's
// FlashMLA-sparse backend documents identically (656 bytes per token).
enum class MlaCacheFormat { kBf16, kFp8 };

inline constexpr std::int64_t kMlaFp8TileValues = 128;  // latent values per fp32 scale

// Bytes of one cached token (formulas above). InputError for dimensions the format cannot hold.
std::int64_t mla_cache_token_bytes(MlaCacheFormat format, std::int64_t kv_lora_rank, std::int64_t qk_rope_head_dim);

// Writes n cache rows from latent [n][L] and rope [n][R] (fp32) into cache [n][token_bytes].
//   kBf16: every value rounded to bf16 (nearest, ties to even).
//   kFp8: per tile of 128 latent values, as FlashMLA's tests/quant.py: scale = the smallest power
//     of two >= max(amax / 448, 1e-4) (its "ue8m0" scale; computed exactly here, where quant.py
//     takes ceil(log2) in fp32), byte = fp32_to_fp8_e4m3(x / scale); rope rounded to bf16.
//     Round trip: |latent' - x| <= max(2^-4 |x|, 2^-10 scale) (e4m3's half ulp, normal or
//     subnormal), so the largest values keep 4 significant bits; rope as bf16: <= 2^-8 |x|.
// Entry checks (InputError, before writing): dimensions valid for the format, n >= 0, the three
// spans exactly their sizes, every input finite. Calling thread only, no allocation.
void quantize_mla_cache_ref(MlaCacheFormat format, std::int64_t kv_lora_rank, std::int64_t qk_rope_head_dim,
                            std::span<const float> latent, std::span<const float> rope, std::span<std::byte> cache);
// The inverse: cache [n][token_bytes] -> latent [n][L] (fp8: byte value * scale, one fp32
// rounding; exact for power-of-two scales) and rope [n][R] (exact). Same entry checks, no
// finiteness check (the bytes are decoded as they are).
void dequantize_mla_cache_ref(MlaCacheFormat format, std::int64_t kv_lora_rank, std::int64_t qk_rope_head_dim,
                              std::span<const std::byte> cache, std::span<float> latent, std::span<float> rope);

// ---- What one attention layer's call shares across its sequences.
struct MlaLayer {
  MlaDims dims;
  MlaCacheFormat cache_format;
  float softmax_scale;                  // sigma: finite (DeepSeek: (Dn + R)^-1/2, times mscale^2 under YaRN)
  std::span<const std::uint16_t> w_uk;  // W_UK [H][Dn][L] bf16 bits: rows 0..Dn-1 of kv_b_proj per head
  std::span<const std::uint16_t> w_uv;  // W_UV [H][Dv][L] bf16 bits: rows Dn..Dn+Dv-1 of kv_b_proj per head
};
// (DeepSeek's inference/model.py views kv_b_proj's weight as [H][Dn + Dv][L]; the caller splits
// it once into these two arrays.)

// One decoding sequence: its own cache and, for DSA, the positions its indexer selected.
struct MlaSequence {
  std::span<const std::byte> cache;          // [ctx_len][mla_cache_token_bytes]
  std::int64_t ctx_len;                      // cached tokens, 1 .. 2^31 - 1
  std::span<const std::int32_t> positions;   // empty: attend [0, ctx_len); else the keys attended,
                                             // each in [0, ctx_len), any order, size <= ctx_len
};
// A position listed twice is attended twice (it gets twice the weight), as in a gather-based
// sparse kernel such as FlashMLA's; DeepSeek's indexer returns distinct top-k positions.

// ---- The math, for one query (decode: one sequence; prefill: one new token) and head h, with
// c_t [L] and k_t [R] the dequantized latent and rope key of attended key t:
//   q_lat[c] = sum over d < Dn of q_nope[h][d] * W_UK[h][d][c]                   (absorb W_UK)
//   s_t      = sigma * (sum over c < L of q_lat[c] c_t[c] + sum over r < R of q_rope[h][r] k_t[r])
//   w_t      = exp(s_t - max s) / sum over attended t' of exp(s_t' - max s)
//   o[c]     = sum over attended t of w_t c_t[c]                                  [L]
//   out[h][e] = sum over c < L of W_UV[h][e][c] o[c]                              [Dv]
// This is the "absorb" branch of MLA.forward in deepseek-ai/DeepSeek-V3 inference/model.py (and
// the decode branch of DeepSeek-V3.2-Exp's), for one query token.

// ---- Work units and slices. A unit is (query, head block): kMlaHeadsPerUnit consecutive heads
// (the last block of a query may be shorter). A call handles units [unit_begin, unit_end) and
// writes exactly their out rows. The units of one query that a slice holds are done in ONE pass
// over that query's keys, so each cached row is read once for all of them (MLA shares one latent
// row per token among all heads): a single-threaded call over all units reads each sequence's
// attended rows once. Threads take disjoint slices; a head's result does not depend on the slice
// that holds it (same bits for any split).
inline constexpr std::int64_t kMlaHeadsPerUnit = 16;
std::int64_t mla_head_units(const MlaDims& dims);  // ceil(H / 16)

// ---- Decode: one new token per sequence.
//   q_nope [batch][H][Dn] fp32, q_rope [batch][H][R] fp32 (rope already applied), sequences
//   [batch], out [batch][H][Dv] fp32. Units: batch * mla_head_units(dims), unit u = (sequence
//   u / G, head block u % G) with G = mla_head_units(dims).
// Entry checks (InputError, before anything is written; every variant): dimensions, sigma finite,
// span sizes, q_nope and q_rope finite, each sequence's cache exactly ctx_len rows and its
// positions valid, 0 <= unit_begin <= unit_end <= units, scratch large enough, out overlapping no
// input. Not checked (a full pass over them per call): the cache and weights are finite and fp8
// scales are finite and positive; a NaN there gives an unspecified result in the fast variants.
// Work per call: work_of(mla_decode_shape(...)) below.

// The specification: every stored value decoded by the reference codecs, every sum in double
// (two passes over the keys: max, then sums), one rounding to fp32 at the end.
// scratch: >= mla_ref_scratch_doubles(dims) doubles, contents undefined on return.
void mla_decode_ref(const MlaLayer& layer, std::span<const float> q_nope, std::span<const float> q_rope,
                    std::span<const MlaSequence> sequences, std::span<float> out, std::int64_t unit_begin,
                    std::int64_t unit_end, std::span<double> scratch);
std::int64_t mla_ref_scratch_doubles(const MlaDims& dims);  // 2 L

// The fast variant (AVX-512 with AVX512_BF16 where the CPU has it, portable C++ otherwise).
// Numerics (what the tolerance below covers): q_lat in fp32 from the bf16 weights; scores in fp32
// (fp32 latents: exact for the bf16 cache, one rounding of byte * scale for fp8); softmax online
// per block of keys in base 2; each weight rounded to bf16 before the value sum (as DeepSeek's
// reference and FlashMLA do), values c~ = bf16(fp32 latent) (exact for bf16 caches and for
// power-of-two fp8 scales), fp32 accumulation, the normalizer summing the same rounded weights.
// Subnormal bf16 products and weights below 2^-126 are flushed (VDPBF16PS's DAZ/FTZ).
// Tolerance against mla_decode_ref, per output, with u = 2^-24, u_b = 2^-8, gamma(m) = m u / (1 - m u),
// n = attended keys, A_t = |sigma| (sum_c |q_lat[c] c_t[c]| + sum_r |q_rope[r] k_t[r]|),
// B_t = |sigma| sum_c Q_c |c_t[c]| with Q_c = sum_d |q_nope[d] W_UK[d][c]|, w_t the exact
// weights, o the exact o, M_c = sum_t w_t |c_t[c]|,
// eps_exp = 2^-21 (the exp2 approximation), and (u_x, u_v) = (u, u_b + 2u) for fp8 tiles whose
// scale is not a power of two, else (0, 0):
//   delta  = max_t ((u_q + u_k + gamma(2 D) + 4 u) A_t + gamma(2 Dn) B_t) (1 + 2^-6)   score error,
//            in nats, with (u_q, u_k) = (0, u_x) here and (u_b, u_v) for the bf16qk variant below
//   eta    = (1 + eps_exp)^n (1 + u_b) - 1                                       per-weight rounding
//   rho    = e^(2 delta) (1 + eta) / (1 - eta) - 1                               |w~_t - w_t| <= rho w_t
//   acc    = (1 + gamma(2 n)) (1 + gamma(2)) / (1 - gamma(2 n)) - 1             fp32 sums, rescales, 1/l
//   E_c    = ((acc (1 + rho) + rho) (1 + u_v) + u_v) M_c + 2^-120 n max_t |c_t[c]|    |o~_c - o_c|
//   |out~[e] - out[e]| <= sum_c |W_UV[e][c]| E_c + gamma(2 L) sum_c |W_UV[e][c]| (|o_c| + E_c)
//                        + u |out[e]| + 2^-40 sum_c |W_UV[e][c]| (|o_c| + M_c)
// where the last two terms are the reference's own rounding to fp32 and its double arithmetic
// (the derivation is in tests/kernels/mla_test.cpp, which checks this bound).
// scratch: >= mla_fast_scratch_floats(dims) floats (842 KiB at DeepSeek's dimensions), per
// thread; contents undefined on return. Runs near the core's FMA peak, not at memory speed: per
// cached row (1152 or 656 bytes) it does 2 H (2 L + R) = 278528 FLOPs at DeepSeek's dimensions,
// far more than a CPU core does per byte it reads from memory.
void mla_decode_fast(const MlaLayer& layer, std::span<const float> q_nope, std::span<const float> q_rope,
                     std::span<const MlaSequence> sequences, std::span<float> out, std::int64_t unit_begin,
                     std::int64_t unit_end, std::span<float> scratch);
std::int64_t mla_fast_scratch_floats(const MlaDims& dims);

// As mla_decode_fast, but the score dot products take bf16 operands, as DeepSeek's reference
// (bf16 q_lat against the bf16 cache) and FlashMLA do: q_lat and q_rope rounded to bf16, keys
// c~ = bf16(fp32 latent) (exact for bf16 caches and power-of-two fp8 scales), one VDPBF16PS per
// pair: twice the score FLOPs per instruction of mla_decode_fast (the value half of the work is
// unchanged), at the cost of a score error of up to 2^-7 A_t instead of about 2^-14 A_t.
// Tolerance: that of mla_decode_fast with (u_q, u_k) = (u_b, u_v). Same scratch.
void mla_decode_bf16qk(const MlaLayer& layer, std::span<const float> q_nope, std::span<const float> q_rope,
                       std::span<const MlaSequence> sequences, std::span<float> out, std::int64_t unit_begin,
                       std::int64_t unit_end, std::span<float> scratch);

// ---- Prefill: T new tokens of one sequence, appended after P cached ones; the caller has already
// written all P + T rows. New token i (position P + i) attends keys [0, P + i] (causal).
//   q_nope [T][H][Dn], q_rope [T][H][R], cache [P + T][token_bytes], out [T][H][Dv]. Units:
//   T * mla_head_units(dims), unit u = (new token u / G, head block u % G), so a contiguous slice
//   is a block of tokens by heads.
// Formulation: the absorbed form above, once per new token (the same machinery as decode). Per key
// and head it costs 2L + R multiply-adds against Dn + R + Dv for the reference code's "naive"
// (materialized K/V) form, which also spends L (Dn + Dv) per key and head to expand the latents;
// expanded once per block of Tq queries, naive is cheaper once Tq > L (Dn + Dv) / (2 L - Dn - Dv),
// about 171 for DeepSeek. TODO(#4): a naive-form prefill for long chunks.
// Entry checks as decode (P >= 0, T >= 0, cache exactly P + T rows). Work: work_of(MlaPrefillShape).
// Tolerance of the fast and bf16qk variants: as decode, with n = P + i + 1 for token i.
void mla_prefill_ref(const MlaLayer& layer, std::span<const float> q_nope, std::span<const float> q_rope,
                     std::span<const std::byte> cache, std::int64_t num_cached, std::int64_t num_new,
                     std::span<float> out, std::int64_t unit_begin, std::int64_t unit_end, std::span<double> scratch);
void mla_prefill_fast(const MlaLayer& layer, std::span<const float> q_nope, std::span<const float> q_rope,
                      std::span<const std::byte> cache, std::int64_t num_cached, std::int64_t num_new,
                      std::span<float> out, std::int64_t unit_begin, std::int64_t unit_end, std::span<float> scratch);
void mla_prefill_bf16qk(const MlaLayer& layer, std::span<const float> q_nope, std::span<const float> q_rope,
                        std::span<const std::byte> cache, std::int64_t num_cached, std::int64_t num_new,
                        std::span<float> out, std::int64_t unit_begin, std::int64_t unit_end, std::span<float> scratch);

// ---- Work.
// flops = 2 H (queries L (Dn + Dv) + keys (2 L + R)): per query and head the two absorbed
//   projections, per attended (key, head) the score (L + R) and value (L) multiply-adds. The
//   softmax's max, exp and sums (a few operations per key and head) are not counted.
// bytes = keys * token_bytes          cache rows read (each attended key once; prefill: each row once)
//       + 4 * listed_positions        position indices read (decode with positions)
//       + 2 H L (Dn + Dv)             W_UK and W_UV, once per call
//       + 4 queries H (Dn + R + Dv)   q_nope, q_rope in, out written; write-allocate excluded (see Work)
// A slice that splits one query's heads between threads reads those rows once per slice.
struct MlaDecodeShape {
  MlaDims dims;
  MlaCacheFormat cache_format;
  std::int64_t batch;               // sequences (queries)
  std::int64_t attended_positions;  // keys attended, summed over the sequences
  std::int64_t listed_positions;    // entries of the positions lists, summed (0 when none is given)
};
// The shape of a decode call over all units; InputError for invalid dimensions.
MlaDecodeShape mla_decode_shape(const MlaDims& dims, MlaCacheFormat format, std::span<const MlaSequence> sequences);
Work work_of(const MlaDecodeShape& s);

struct MlaPrefillShape {
  MlaDims dims;
  MlaCacheFormat cache_format;
  std::int64_t num_cached;  // P
  std::int64_t num_new;     // T; attended keys T P + T (T + 1) / 2, rows read P + T
};
Work work_of(const MlaPrefillShape& s);

namespace detail {
// The code paths of the fast variants; the public functions take the best the CPU has, the tests
// force each in turn.
enum class MlaIsa {
  kPortable,    // plain C++, any CPU
  kAvx512Bf16,  // AVX-512 F/BW/DQ/VL plus AVX512_BF16 (VDPBF16PS, VCVTNEPS2BF16)
};
bool cpu_has(MlaIsa isa);
MlaIsa best_mla_isa();
void mla_decode_fast_on(MlaIsa isa, const MlaLayer& layer, std::span<const float> q_nope,
                        std::span<const float> q_rope, std::span<const MlaSequence> sequences, std::span<float> out,
                        std::int64_t unit_begin, std::int64_t unit_end, std::span<float> scratch);
void mla_prefill_fast_on(MlaIsa isa, const MlaLayer& layer, std::span<const float> q_nope,
                         std::span<const float> q_rope, std::span<const std::byte> cache, std::int64_t num_cached,
                         std::int64_t num_new, std::span<float> out, std::int64_t unit_begin, std::int64_t unit_end,
                         std::span<float> scratch);
void mla_decode_bf16qk_on(MlaIsa isa, const MlaLayer& layer, std::span<const float> q_nope,
                          std::span<const float> q_rope, std::span<const MlaSequence> sequences, std::span<float> out,
                          std::int64_t unit_begin, std::int64_t unit_end, std::span<float> scratch);
void mla_prefill_bf16qk_on(MlaIsa isa, const MlaLayer& layer, std::span<const float> q_nope,
                           std::span<const float> q_rope, std::span<const std::byte> cache, std::int64_t num_cached,
                           std::int64_t num_new, std::span<float> out, std::int64_t unit_begin, std::int64_t unit_end,
                           std::span<float> scratch);
// y[i] = 2^x[i] as the fast variants compute it: relative error <= 2^-21 for x in [-126, 0], and 0
// below -126 (-inf included). InputError when the sizes differ or the CPU lacks `isa`.
void mla_exp2_on(MlaIsa isa, std::span<const float> x, std::span<float> y);

// Entry checks shared by every variant (InputError naming `kernel`), the scratch included: at
// least scratch_bytes(dims) bytes (called once the dimensions are checked), overlapping neither
// the inputs nor out.
using MlaScratchBytes = std::size_t (*)(const MlaDims& dims);
void check_mla_decode(const char* kernel, const MlaLayer& layer, std::span<const float> q_nope,
                      std::span<const float> q_rope, std::span<const MlaSequence> sequences, std::span<const float> out,
                      std::int64_t unit_begin, std::int64_t unit_end, std::span<const std::byte> scratch,
                      MlaScratchBytes scratch_bytes);
void check_mla_prefill(const char* kernel, const MlaLayer& layer, std::span<const float> q_nope,
                       std::span<const float> q_rope, std::span<const std::byte> cache, std::int64_t num_cached,
                       std::int64_t num_new, std::span<const float> out, std::int64_t unit_begin, std::int64_t unit_end,
                       std::span<const std::byte> scratch, MlaScratchBytes scratch_bytes);
}  // namespace detail

}  // namespace deepfit::kernels
