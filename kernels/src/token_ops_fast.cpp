// The _fast variants of the per-token ops (token_ops.h): AVX-512 bodies built with a target
// pragma and picked at run time, and portable loops for other CPUs. The specifications and the
// entry checks are in token_ops_ref.cpp.
#include "kernels/token_ops.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deepfit::kernels {
namespace {

// RMSNorm's sum of squares: 64 partial sums (element i goes to partial i % 64), then a fixed
// tree. The AVX-512 body assigns elements the same way (4 vectors of 16 lanes), so both paths
// meet the tolerance of token_ops.h with m = ceil(D / 64).
constexpr std::size_t kNormLanes = 64;

float weight_at(const std::byte* w, NormWeightType type, std::size_t i) {
  if (type == NormWeightType::kBf16) {
    std::uint16_t b;
    std::memcpy(&b, w + 2 * i, sizeof b);  // little-endian, as the contract's byte layout
    return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
  }
  float v;
  std::memcpy(&v, w + 4 * i, sizeof v);
  return v;
}

// 1 / sqrt(mean + eps) in double from the fp32 sum of squares, rounded to fp32 (both paths).
float inv_rms(float sum_sq, std::size_t D, float eps) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(sum_sq) / static_cast<double>(D) +
                                            static_cast<double>(eps)));
}

void rms_norm_row_portable(const float* x, const std::byte* w, NormWeightType type, std::size_t D, float eps,
                           float* y) {
  float acc[kNormLanes] = {};
  for (std::size_t i = 0; i < D; ++i) acc[i % kNormLanes] += x[i] * x[i];
  for (std::size_t width = kNormLanes / 2; width > 0; width /= 2) {
    for (std::size_t l = 0; l < width; ++l) acc[l] += acc[l + width];
  }
  const float r = inv_rms(acc[0], D, eps);
  for (std::size_t i = 0; i < D; ++i) y[i] = x[i] * r * weight_at(w, type, i);
}

void rope_row_portable(float* xp, const float* row, std::size_t D, RopeLayout layout) {
  const std::size_t half = D / 2;
  for (std::size_t i = 0; i < half; ++i) {
    const std::size_t ia = layout == RopeLayout::kInterleaved ? 2 * i : i;
    const std::size_t ib = layout == RopeLayout::kInterleaved ? 2 * i + 1 : i + half;
    const float a = xp[ia];
    const float b = xp[ib];
    const float c = row[2 * i];
    const float s = row[2 * i + 1];
    xp[ia] = a * c - b * s;
    xp[ib] = a * s + b * c;
  }
}

// TODO(#4): an AVX2 + FMA path; exp_fp32's std::fma is a libm call on the baseline ISA, which makes
// this loop about 60x slower than the AVX-512 one.
void swiglu_row_portable(const float* g, const float* u, std::size_t F, float* h) {
  for (std::size_t i = 0; i < F; ++i) h[i] = (g[i] * u[i]) / (1.0f + detail::exp_fp32(-g[i]));
}

void embedding_row_portable(const std::uint16_t* row, std::size_t D, float* out) {
  for (std::size_t i = 0; i < D; ++i) out[i] = std::bit_cast<float>(static_cast<std::uint32_t>(row[i]) << 16);
}

// ---- AVX-512 bodies. GCC 12's AVX-512 headers trip -Wuninitialized once inlined at -O3 (see
// moe_gemm_blocked.cpp); the pragmas silence that here only.
#if defined(__x86_64__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl")
namespace avx512 {

// The first min(n, 16) lanes.
inline __mmask16 first_lanes(std::size_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

#include "exp_avx512.h"  // exp_fp32 on 16 lanes, shared with router_fast.cpp

inline __m512 load_weights(const std::byte* w, NormWeightType type, std::size_t i, __mmask16 m) {
  if (type == NormWeightType::kBf16) {
    const __m256i b = _mm256_maskz_loadu_epi16(m, w + 2 * i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
  }
  return _mm512_maskz_loadu_ps(m, w + 4 * i);
}

void rms_norm_row(const float* x, const std::byte* w, NormWeightType type, std::size_t D, float eps, float* y) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  std::size_t i = 0;
  for (; i + kNormLanes <= D; i += kNormLanes) {
#pragma GCC unroll 4
    for (std::size_t j = 0; j < 4; ++j) {
      const __m512 v = _mm512_loadu_ps(x + i + 16 * j);
      acc[j] = _mm512_fmadd_ps(v, v, acc[j]);
    }
  }
  for (std::size_t j = 0; i < D; i += 16, ++j) {  // the last < 64 elements, 16 per partial vector
    const __m512 v = _mm512_maskz_loadu_ps(first_lanes(D - i), x + i);
    acc[j] = _mm512_fmadd_ps(v, v, acc[j]);
  }
  const __m512 s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
  const __m512 r = _mm512_set1_ps(inv_rms(_mm512_reduce_add_ps(s), D, eps));
  // Whole vectors without masks (masked stores are slow on some cores), then one masked tail.
  for (i = 0; i + 16 <= D; i += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), r);
    _mm512_storeu_ps(y + i, _mm512_mul_ps(v, load_weights(w, type, i, 0xFFFF)));
  }
  if (i < D) {
    const __mmask16 m = first_lanes(D - i);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), r);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, load_weights(w, type, i, m)));
  }
}

// Pairs (2i, 2i+1): the table row has the same layout (c, s per pair), so element k of x and of
// the row line up. a' = a c - b s in even lanes, b' = b c + a s in odd lanes (FMADDSUB).
inline __m512 rotate_interleaved(__m512 x, __m512 t) {
  const __m512 c = _mm512_moveldup_ps(t);
  const __m512 s = _mm512_movehdup_ps(t);
  const __m512 swapped = _mm512_permute_ps(x, 0xB1);  // (b, a) in each pair
  return _mm512_fmaddsub_ps(x, c, _mm512_mul_ps(swapped, s));
}

void rope_interleaved(float* xp, const float* row, std::size_t D) {
  std::size_t i = 0;
  for (; i + 16 <= D; i += 16) _mm512_storeu_ps(xp + i, rotate_interleaved(_mm512_loadu_ps(xp + i), _mm512_loadu_ps(row + i)));
  if (i < D) {
    const __mmask16 m = first_lanes(D - i);
    _mm512_mask_storeu_ps(xp + i, m, rotate_interleaved(_mm512_maskz_loadu_ps(m, xp + i), _mm512_maskz_loadu_ps(m, row + i)));
  }
}

// Pairs (i, i + D/2): 16 pairs at a time; their 32 table floats are split into c and s. The
// same roundings as rope_interleaved (a' = fma(a, c, -fl(b s)), b' = fma(b, c, fl(a s))), so a
// head gives the same bits in either layout once its pairs are lined up.
void rope_half_split(float* xp, const float* row, std::size_t D) {
  const __m512i idx_even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i idx_odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  const std::size_t half = D / 2;
  for (std::size_t i = 0; i < half; i += 16) {
    const std::size_t pairs = half - i < 16 ? half - i : 16;
    const __mmask16 m = first_lanes(pairs);
    const __m512 t0 = _mm512_maskz_loadu_ps(first_lanes(2 * pairs), row + 2 * i);
    const __m512 t1 = _mm512_maskz_loadu_ps(first_lanes(2 * pairs > 16 ? 2 * pairs - 16 : 0), row + 2 * i + 16);
    const __m512 c = _mm512_permutex2var_ps(t0, idx_even, t1);
    const __m512 s = _mm512_permutex2var_ps(t0, idx_odd, t1);
    const __m512 a = _mm512_maskz_loadu_ps(m, xp + i);
    const __m512 b = _mm512_maskz_loadu_ps(m, xp + half + i);
    const __m512 a_out = _mm512_fmsub_ps(a, c, _mm512_mul_ps(b, s));
    const __m512 b_out = _mm512_fmadd_ps(b, c, _mm512_mul_ps(a, s));
    if (pairs == 16) {
      _mm512_storeu_ps(xp + i, a_out);
      _mm512_storeu_ps(xp + half + i, b_out);
    } else {
      _mm512_mask_storeu_ps(xp + i, m, a_out);
      _mm512_mask_storeu_ps(xp + half + i, m, b_out);
    }
  }
}

void swiglu_row(const float* g, const float* u, std::size_t F, float* h) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  const auto silu_times = [&](__m512 gv, __m512 uv) {
    return _mm512_div_ps(_mm512_mul_ps(gv, uv), _mm512_add_ps(one, exp_fp32(_mm512_xor_ps(gv, sign))));
  };
  std::size_t i = 0;
  for (; i + 16 <= F; i += 16) _mm512_storeu_ps(h + i, silu_times(_mm512_loadu_ps(g + i), _mm512_loadu_ps(u + i)));
  if (i < F) {
    const __mmask16 m = first_lanes(F - i);
    _mm512_mask_storeu_ps(h + i, m, silu_times(_mm512_maskz_loadu_ps(m, g + i), _mm512_maskz_loadu_ps(m, u + i)));
  }
}

void embedding_row(const std::uint16_t* row, std::size_t D, float* out) {
  std::size_t i = 0;
  for (; i + 64 <= D; i += 64) {
#pragma GCC unroll 4
    for (std::size_t j = 0; j < 64; j += 16) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i + j));
      _mm512_storeu_ps(out + i + j, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16)));
    }
  }
  for (; i + 16 <= D; i += 16) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i));
    _mm512_storeu_ps(out + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16)));
  }
  if (i < D) {
    const __mmask16 m = first_lanes(D - i);
    const __m256i b = _mm256_maskz_loadu_epi16(m, row + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16)));
  }
}

}  // namespace avx512
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif

void check_isa(const char* kernel, detail::OpIsa isa) {
  if (!detail::cpu_has(isa)) throw InputError(std::string(kernel) + ": this CPU lacks the requested instruction set");
}

}  // namespace

namespace detail {

bool cpu_has(OpIsa isa) {
  if (isa == OpIsa::kPortable) return true;
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

OpIsa best_op_isa() { return cpu_has(OpIsa::kAvx512) ? OpIsa::kAvx512 : OpIsa::kPortable; }

void rms_norm_fast_on(OpIsa isa, const RmsNormShape& shape, std::span<const float> x, std::span<const std::byte> weight,
                      float eps, std::span<float> y, std::int64_t row_begin, std::int64_t row_end) {
  constexpr const char* kKernel = "rms_norm_fast";
  check_rms_norm(kKernel, shape, x, weight, eps, y, row_begin, row_end);
  check_isa(kKernel, isa);
  const auto D = static_cast<std::size_t>(shape.hidden_dim);  // D: elements per row
  for (auto r = static_cast<std::size_t>(row_begin); r < static_cast<std::size_t>(row_end); ++r) {
#if defined(__x86_64__)
    if (isa == OpIsa::kAvx512) {
      avx512::rms_norm_row(x.data() + r * D, weight.data(), shape.weight_type, D, eps, y.data() + r * D);
      continue;
    }
#endif
    rms_norm_row_portable(x.data() + r * D, weight.data(), shape.weight_type, D, eps, y.data() + r * D);
  }
}

void rope_apply_fast_on(OpIsa isa, const RopeShape& shape, std::span<const float> table,
                        std::span<const std::int64_t> positions, std::span<float> x, std::int64_t t_begin,
                        std::int64_t t_end) {
  constexpr const char* kKernel = "rope_apply_fast";
  check_rope(kKernel, shape, table, positions, x, t_begin, t_end);
  check_isa(kKernel, isa);
  const auto H = static_cast<std::size_t>(shape.num_heads);    // heads per token
  const auto S = static_cast<std::size_t>(shape.head_stride);  // floats per head
  const auto D = static_cast<std::size_t>(shape.rope_dim);     // rotated floats per head
  for (auto t = static_cast<std::size_t>(t_begin); t < static_cast<std::size_t>(t_end); ++t) {
    const float* row = table.data() + static_cast<std::size_t>(positions[t]) * D;
    for (std::size_t h = 0; h < H; ++h) {
      float* xp = x.data() + (t * H + h) * S + static_cast<std::size_t>(shape.rope_offset);
#if defined(__x86_64__)
      if (isa == OpIsa::kAvx512) {
        shape.layout == RopeLayout::kInterleaved ? avx512::rope_interleaved(xp, row, D)
                                                 : avx512::rope_half_split(xp, row, D);
        continue;
      }
#endif
      rope_row_portable(xp, row, D, shape.layout);
    }
  }
}

void swiglu_fast_on(OpIsa isa, const SwigluShape& shape, std::span<const float> gate_up, std::span<float> h,
                    std::int64_t t_begin, std::int64_t t_end) {
  constexpr const char* kKernel = "swiglu_fast";
  check_swiglu(kKernel, shape, gate_up, h, t_begin, t_end);
  check_isa(kKernel, isa);
  const auto F = static_cast<std::size_t>(shape.ffn_dim);  // F: outputs per token
  for (auto t = static_cast<std::size_t>(t_begin); t < static_cast<std::size_t>(t_end); ++t) {
    const float* g = gate_up.data() + t * 2 * F;
#if defined(__x86_64__)
    if (isa == OpIsa::kAvx512) {
      avx512::swiglu_row(g, g + F, F, h.data() + t * F);
      continue;
    }
#endif
    swiglu_row_portable(g, g + F, F, h.data() + t * F);
  }
}

void embedding_lookup_fast_on(OpIsa isa, const EmbeddingShape& shape, std::span<const std::uint16_t> table,
                              std::span<const std::int32_t> ids, std::span<float> out, std::int64_t t_begin,
                              std::int64_t t_end) {
  constexpr const char* kKernel = "embedding_lookup_fast";
  check_embedding(kKernel, shape, table, ids, out, t_begin, t_end);
  check_isa(kKernel, isa);
  const auto D = static_cast<std::size_t>(shape.hidden_dim);  // D: elements per row
  for (auto t = static_cast<std::size_t>(t_begin); t < static_cast<std::size_t>(t_end); ++t) {
    const std::uint16_t* row = table.data() + static_cast<std::size_t>(ids[t]) * D;
#if defined(__x86_64__)
    if (isa == OpIsa::kAvx512) {
      avx512::embedding_row(row, D, out.data() + t * D);
      continue;
    }
#endif
    embedding_row_portable(row, D, out.data() + t * D);
  }
}

}  // namespace detail

void rms_norm_fast(const RmsNormShape& shape, std::span<const float> x, std::span<const std::byte> weight, float eps,
                   std::span<float> y, std::int64_t row_begin, std::int64_t row_end) {
  detail::rms_norm_fast_on(detail::best_op_isa(), shape, x, weight, eps, y, row_begin, row_end);
}

void rope_apply_fast(const RopeShape& shape, std::span<const float> table, std::span<const std::int64_t> positions,
                     std::span<float> x, std::int64_t t_begin, std::int64_t t_end) {
  detail::rope_apply_fast_on(detail::best_op_isa(), shape, table, positions, x, t_begin, t_end);
}

void swiglu_fast(const SwigluShape& shape, std::span<const float> gate_up, std::span<float> h, std::int64_t t_begin,
                 std::int64_t t_end) {
  detail::swiglu_fast_on(detail::best_op_isa(), shape, gate_up, h, t_begin, t_end);
}

void embedding_lookup_fast(const EmbeddingShape& shape, std::span<const std::uint16_t> table,
                           std::span<const std::int32_t> ids, std::span<float> out, std::int64_t t_begin,
                           std::int64_t t_end) {
  detail::embedding_lookup_fast_on(detail::best_op_isa(), shape, table, ids, out, t_begin, t_end);
}

}  // namespace deepfit::kernels
