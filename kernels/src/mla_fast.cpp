// The fast MLA kernels (see attention.h): all heads of a query in one pass over its keys, as two
// small GEMMs per block of keys (scores: fp32 FMA, or bf16 pair dots for _bf16qk; values: bf16 pair
// dots) with an online softmax vectorized across heads. AVX-512 + AVX512_BF16 bodies picked at run
// time, and a portable path.
#include "kernels/attention.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "kernels/error.h"
#include "kernels/quant_blocks.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deepfit::kernels {
namespace {

// Keys per block: the unit of the online softmax. A multiple of every token tile of the score
// kernel (6, 8, 12, 24) and even (the value kernel takes keys in pairs). 48 keys keep a block's
// fp32 keys (48 x 576 x 4 B = 108 KiB at DeepSeek's dimensions) in L2 while reading and writing
// the [L][heads] accumulators once per 48 keys.
constexpr std::size_t kKeyBlock = 48;
constexpr std::size_t kLanes = 16;  // fp32 lanes of a 512-bit vector = heads per vector

constexpr std::size_t round16(std::size_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// Offsets (in floats) of the scratch regions for a pass over up to H heads (h16 = H rounded up to
// 16); every region starts at a multiple of 16 floats. The AVX-512 path uses the layouts in the
// comments; the portable path the ones in brackets.
struct ScratchLayout {
  std::size_t qf;     // [D][h16] fp32 query (absorbed q_nope, then q_rope)      [h16][D]
                      // (bf16 scores: [D2][h16] bf16 pairs (2k, 2k+1) in its first half)
  std::size_t ot;     // [L][h16] fp32 value accumulators                          [h16][L]
  std::size_t x;      // [kKeyBlock][D] fp32 keys of the block (portable bf16 scores: rounded to bf16)
  std::size_t kb;     // [kKeyBlock][D2] the keys as bf16 pairs (2k, 2k+1), D2 = ceil(D / 2) (bf16 scores only)
  std::size_t vp;     // [kKeyBlock / 2][L] bf16 pairs of keys (2t, 2t+1)          [kKeyBlock][L] bf16-rounded fp32
  std::size_t s;      // [kKeyBlock][h16] scores, base 2                          [kKeyBlock]
  std::size_t pp;     // [kKeyBlock / 2][h16] bf16 pairs of weights
  std::size_t m;      // [h16] running max (base 2)
  std::size_t l;      // [h16] running sum of weights
  std::size_t alpha;  // [h16] rescale factor of the current block
  std::size_t tmp;    // [L] one head's q_lat or o
  std::size_t total;
};

ScratchLayout scratch_layout(const MlaDims& d) {
  const auto h16 = round16(static_cast<std::size_t>(d.num_heads));
  const auto L = static_cast<std::size_t>(d.kv_lora_rank);
  const std::size_t D = L + static_cast<std::size_t>(d.qk_rope_head_dim);
  ScratchLayout s{};
  std::size_t at = 0;
  const auto take = [&at](std::size_t n) {
    const std::size_t begin = at;
    at += round16(n);
    return begin;
  };
  s.qf = take(D * h16);
  s.ot = take(L * h16);
  s.x = take(kKeyBlock * D);
  s.kb = take(kKeyBlock * ((D + 1) / 2));
  s.vp = take(kKeyBlock * L);
  s.s = take(kKeyBlock * h16);
  s.pp = take(kKeyBlock / 2 * h16);
  s.m = take(h16);
  s.l = take(h16);
  s.alpha = take(h16);
  s.tmp = take(L);
  s.total = at;
  return s;
}

// Little-endian scalars of a cache row (x86 and the portable path alike).
std::uint16_t u16_at(const std::byte* p) {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(p[0]) | std::to_integer<unsigned>(p[1]) << 8);
}
float f32_at(const std::byte* p) {
  std::uint32_t bits = 0;
  for (int i = 3; i >= 0; --i) bits = bits << 8 | std::to_integer<std::uint32_t>(p[i]);
  return std::bit_cast<float>(bits);
}

// One pass: heads [h_begin, h_end) of one query against its n keys.
struct Pass {
  const MlaLayer* layer;
  std::size_t L, R, D, Dn, Dv;
  MlaCacheFormat format;
  float c2;  // sigma * log2(e), rounded once: scores are kept in base 2
  bool bf16_scores;  // mla_*_bf16qk: queries and keys rounded to bf16 for the scores
  std::size_t D2;    // ceil(D / 2): pairs of the score dot
  const std::byte* cache;
  std::size_t row_bytes;
  std::span<const std::int32_t> positions;  // empty: keys are rows 0..n-1
  std::size_t n;
  const float* q_nope;  // the query's [H][Dn]
  const float* q_rope;  // [H][R]
  float* out;           // [H][Dv]
  std::size_t h_begin, nh, h16;
  float* scratch;
  ScratchLayout at;

  const std::byte* key_row(std::size_t j) const {
    const std::size_t t = positions.empty() ? j : static_cast<std::size_t>(positions[j]);
    return cache + t * row_bytes;
  }
  std::size_t rope_offset() const { return format == MlaCacheFormat::kBf16 ? 2 * L : L + L / 32; }
  float* region(std::size_t offset) const { return scratch + offset; }
};

// 2^x for the portable path: std::exp2 (within an ulp), and 0 below -126 like the vector code.
float exp2_portable(float x) { return x >= -126.0f ? std::exp2(x) : 0.0f; }

float round_bf16(float x) { return bf16_to_fp32(fp32_to_bf16(x)); }

// ---- Portable path: the same blocks, the same roundings (fp32 scores, bf16 weights and values),
// plain loops in natural [head][...] layouts.
void stage_keys_portable(const Pass& p, std::size_t j0, std::size_t nb, float* x) {
  for (std::size_t t = 0; t < nb; ++t) {
    const std::byte* row = p.key_row(j0 + t);
    float* dst = x + t * p.D;
    if (p.format == MlaCacheFormat::kBf16) {
      for (std::size_t c = 0; c < p.L; ++c) dst[c] = bf16_to_fp32(u16_at(row + 2 * c));
    } else {
      for (std::size_t c = 0; c < p.L; ++c) {
        const float scale = f32_at(row + p.L + 4 * (c / kMlaFp8TileValues));
        dst[c] = fp8_e4m3_to_fp32(std::to_integer<std::uint8_t>(row[c])) * scale;
      }
    }
    for (std::size_t r = 0; r < p.R; ++r) dst[p.L + r] = bf16_to_fp32(u16_at(row + p.rope_offset() + 2 * r));
  }
}

void pass_portable(const Pass& p) {
  const std::size_t L = p.L, D = p.D, Dn = p.Dn, Dv = p.Dv;
  float* qh = p.region(p.at.qf);   // [nh][D]
  float* O = p.region(p.at.ot);    // [nh][L]
  float* x = p.region(p.at.x);     // [kKeyBlock][D]
  float* xb = p.region(p.at.vp);   // [kKeyBlock][L]
  float* s = p.region(p.at.s);     // [kKeyBlock]
  float* m = p.region(p.at.m);
  float* l = p.region(p.at.l);
  for (std::size_t hl = 0; hl < p.nh; ++hl) {
    const std::size_t h = p.h_begin + hl;
    float* q = qh + hl * D;
    for (std::size_t c = 0; c < L; ++c) q[c] = 0.0f;
    for (std::size_t d = 0; d < Dn; ++d) {
      const float qn = p.q_nope[h * Dn + d];
      const std::uint16_t* w = p.layer->w_uk.data() + (h * Dn + d) * L;
      for (std::size_t c = 0; c < L; ++c) q[c] = q[c] + qn * bf16_to_fp32(w[c]);
    }
    for (std::size_t r = 0; r < p.R; ++r) q[L + r] = p.q_rope[h * p.R + r];
    if (p.bf16_scores) {
      for (std::size_t k = 0; k < D; ++k) q[k] = round_bf16(q[k]);
    }
    for (std::size_t c = 0; c < L; ++c) O[hl * L + c] = 0.0f;
    m[hl] = -std::numeric_limits<float>::infinity();
    l[hl] = 0.0f;
  }
  for (std::size_t j0 = 0; j0 < p.n; j0 += kKeyBlock) {
    const std::size_t nb = std::min(kKeyBlock, p.n - j0);
    stage_keys_portable(p, j0, nb, x);
    for (std::size_t t = 0; t < nb; ++t) {
      for (std::size_t c = 0; c < L; ++c) xb[t * L + c] = round_bf16(x[t * D + c]);
      if (p.bf16_scores) {
        for (std::size_t k = 0; k < D; ++k) x[t * D + k] = round_bf16(x[t * D + k]);  // products now exact
      }
    }
    for (std::size_t hl = 0; hl < p.nh; ++hl) {
      const float* q = qh + hl * D;
      float block_max = -std::numeric_limits<float>::infinity();
      for (std::size_t t = 0; t < nb; ++t) {
        float acc = 0.0f;
        for (std::size_t k = 0; k < D; ++k) acc = acc + q[k] * x[t * D + k];
        s[t] = acc * p.c2;
        block_max = std::max(block_max, s[t]);
      }
      const float m_new = std::max(m[hl], block_max);
      const float alpha = exp2_portable(m[hl] - m_new);
      m[hl] = m_new;
      float* o = O + hl * L;
      float sum = l[hl] * alpha;
      for (std::size_t c = 0; c < L; ++c) o[c] = o[c] * alpha;
      for (std::size_t t = 0; t < nb; ++t) {
        const float w = round_bf16(exp2_portable(s[t] - m_new));
        sum = sum + w;
        for (std::size_t c = 0; c < L; ++c) o[c] = o[c] + w * xb[t * L + c];  // exact products
      }
      l[hl] = sum;
    }
  }
  for (std::size_t hl = 0; hl < p.nh; ++hl) {
    const std::size_t h = p.h_begin + hl;
    const float inv = 1.0f / l[hl];
    const float* o = O + hl * L;
    for (std::size_t e = 0; e < Dv; ++e) {
      const std::uint16_t* w = p.layer->w_uv.data() + (h * Dv + e) * L;
      float acc = 0.0f;
      for (std::size_t c = 0; c < L; ++c) acc = acc + bf16_to_fp32(w[c]) * (o[c] * inv);
      p.out[h * Dv + e] = acc;
    }
  }
}

// Calls f(std::integral_constant<int, n>) for 1 <= n <= N.
template <int N, typename F>
void with_count(int n, F&& f) {
  if constexpr (N >= 1) {
    if (n == N) {
      f(std::integral_constant<int, N>{});
      return;
    }
    with_count<N - 1>(n, f);
  } else {
    DEEPFIT_ASSERT(false, "with_count: count out of range");
  }
}

// ---- x86: the AVX-512 bodies. GCC 12's AVX-512 headers fill the unused operand of many
// intrinsics with a self-initialized placeholder that -Wuninitialized reports once inlined at -O3
// (fixed in GCC 13); the pragmas silence that for these bodies only.
#if defined(__x86_64__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,f16c,fma")
namespace avx512 {

// 2^x: x = n + f with n = round(x), f in [-1/2, 1/2]; 2^f by its degree-7 Taylor polynomial in f
// (truncation < 2^-27 relative), Horner in fp32 FMAs (a few ulps), then an exact scaling by 2^n.
// Bound used by the tolerance: relative error <= 2^-21 on [-126, 0]; 0 below -126 (and for -inf).
inline __m512 exp2_ps(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-126.0f);
  const __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
  x = _mm512_max_ps(x, lo);
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);  // exact
  // (ln 2)^k / k!, k = 7 down to 0
  __m512 y = _mm512_set1_ps(1.525273380405984e-05f);
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.540353039338161e-04f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.333355814642844e-03f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(9.618129107628477e-03f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(5.550410866482158e-02f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(2.402265069591007e-01f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(6.931471805599453e-01f));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(y, n));
}

inline __m512 bf16x16_to_ps(__m256i bits) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
inline __m512 load_bf16x16(const void* p) { return bf16x16_to_ps(_mm256_loadu_si256(static_cast<const __m256i*>(p))); }
inline __m512i widen_bf16(__m256bh v) { return _mm512_cvtepu16_epi32(__builtin_bit_cast(__m256i, v)); }

// 16 FP8 e4m3 bytes -> fp32, exactly as fp8_e4m3_to_fp32: the magnitude bits shifted into an fp16
// (its exponent bias is 8 more, and e4m3 subnormals land on fp16 subnormals), converted, times 2^8;
// the NaN codes (S.1111.111) become NaN.
inline __m512 fp8x16_to_ps(const std::byte* p) {
  const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i mag = _mm256_and_si256(b, _mm256_set1_epi16(0x7F));
  const __m256i sign = _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8);
  const __m512 f = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_or_si256(_mm256_slli_epi16(mag, 7), sign)),
                                 _mm512_set1_ps(256.0f));
  const __mmask16 nan = _mm256_cmpeq_epi16_mask(mag, _mm256_set1_epi16(0x7F));
  return _mm512_mask_mov_ps(f, nan, _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
}

// The fp32 keys of block [j0, j0 + nb) into x [kKeyBlock][D]; rows nb.. are zeroed (their scores
// are ignored and their weights are 0, but 0 * NaN would not be 0). Prefetches the next block.
void stage_keys(const Pass& p, std::size_t j0, std::size_t nb, float* x) {
  const std::size_t L = p.L, R = p.R, D = p.D;
  for (std::size_t t = 0; t < nb; ++t) {
    const std::byte* row = p.key_row(j0 + t);
    float* dst = x + t * D;
    if (p.format == MlaCacheFormat::kBf16) {
      for (std::size_t c = 0; c < L; c += kLanes) _mm512_storeu_ps(dst + c, load_bf16x16(row + 2 * c));
    } else {
      for (std::size_t j = 0; j < L / kMlaFp8TileValues; ++j) {
        float scale;
        std::memcpy(&scale, row + L + 4 * j, sizeof scale);  // x86 is little-endian, like the cache
        const __m512 sv = _mm512_set1_ps(scale);
        for (std::size_t c = j * kMlaFp8TileValues; c < (j + 1) * kMlaFp8TileValues; c += kLanes) {
          _mm512_storeu_ps(dst + c, _mm512_mul_ps(fp8x16_to_ps(row + c), sv));
        }
      }
    }
    const std::byte* rope = row + p.rope_offset();
    for (std::size_t r = 0; r < R; r += kLanes) {
      const auto m = static_cast<__mmask16>(R - r >= kLanes ? 0xFFFF : (1u << (R - r)) - 1);
      _mm512_mask_storeu_ps(dst + L + r, m, bf16x16_to_ps(_mm256_maskz_loadu_epi16(m, rope + 2 * r)));
    }
  }
  for (std::size_t t = nb; t < kKeyBlock && nb < kKeyBlock; ++t) {
    for (std::size_t k = 0; k < D; k += kLanes) {
      const auto m = static_cast<__mmask16>(D - k >= kLanes ? 0xFFFF : (1u << (D - k)) - 1);
      _mm512_mask_storeu_ps(x + t * D + k, m, _mm512_setzero_ps());
    }
  }
  // The next block's rows (positions may scatter them, which the hardware prefetchers cannot follow).
  const std::size_t next_end = std::min(p.n, j0 + nb + kKeyBlock);
  for (std::size_t j = j0 + nb; j < next_end; ++j) {
    const char* row = reinterpret_cast<const char*>(p.key_row(j));
    for (std::size_t off = 0; off < p.row_bytes; off += 64) _mm_prefetch(row + off, _MM_HINT_T1);
  }
}

// Scores of a tile of TB = 24 / HV keys by HV head vectors: s[t][h] = c2 * sum_k qf[k][h] x[t][k],
// fp32 FMAs in order of k. qf, s: at the tile's first head column; x: at the tile's first key.
template <int HV>
void score_tile(const float* qf, std::size_t h16, const float* x, std::size_t D, float c2, float* s) {
  constexpr int TB = 24 / HV;
  __m512 acc[TB][HV];
#pragma GCC unroll 24
  for (int t = 0; t < TB; ++t) {
#pragma GCC unroll 4
    for (int i = 0; i < HV; ++i) acc[t][i] = _mm512_setzero_ps();
  }
  for (std::size_t k = 0; k < D; ++k) {
    __m512 q[HV];
#pragma GCC unroll 4
    for (int i = 0; i < HV; ++i) q[i] = _mm512_loadu_ps(qf + k * h16 + kLanes * i);
#pragma GCC unroll 24
    for (int t = 0; t < TB; ++t) {
      const __m512 xb = _mm512_set1_ps(x[t * D + k]);
#pragma GCC unroll 4
      for (int i = 0; i < HV; ++i) acc[t][i] = _mm512_fmadd_ps(q[i], xb, acc[t][i]);
    }
  }
  const __m512 scale = _mm512_set1_ps(c2);
#pragma GCC unroll 24
  for (int t = 0; t < TB; ++t) {
#pragma GCC unroll 4
    for (int i = 0; i < HV; ++i) _mm512_storeu_ps(s + t * h16 + kLanes * i, _mm512_mul_ps(acc[t][i], scale));
  }
}

// As score_tile, from bf16 pairs: s[t][h] = c2 * sum_j dot(qp[j][h], kb[t][j]), one VDPBF16PS
// per pair of k, fp32 sums in order of j.
template <int HV>
void score_tile_bf16(const float* qp, std::size_t h16, const float* kb, std::size_t D2, float c2, float* s) {
  constexpr int TB = 24 / HV;
  __m512 acc[TB][HV];
#pragma GCC unroll 24
  for (int t = 0; t < TB; ++t) {
#pragma GCC unroll 4
    for (int i = 0; i < HV; ++i) acc[t][i] = _mm512_setzero_ps();
  }
  for (std::size_t j = 0; j < D2; ++j) {
    __m512bh q[HV];
#pragma GCC unroll 4
    for (int i = 0; i < HV; ++i) q[i] = __builtin_bit_cast(__m512bh, _mm512_loadu_ps(qp + j * h16 + kLanes * i));
#pragma GCC unroll 24
    for (int t = 0; t < TB; ++t) {
      const __m512bh kv = __builtin_bit_cast(__m512bh, _mm512_set1_ps(kb[t * D2 + j]));
#pragma GCC unroll 4
      for (int i = 0; i < HV; ++i) acc[t][i] = _mm512_dpbf16_ps(acc[t][i], q[i], kv);
    }
  }
  const __m512 scale = _mm512_set1_ps(c2);
#pragma GCC unroll 24
  for (int t = 0; t < TB; ++t) {
#pragma GCC unroll 4
    for (int i = 0; i < HV; ++i) _mm512_storeu_ps(s + t * h16 + kLanes * i, _mm512_mul_ps(acc[t][i], scale));
  }
}

// One fp32 row of n values -> bf16 (nearest even) in natural order, as ceil(n / 2) words: pair j
// holds values 2j (low half) and 2j + 1 (high half; 0 past n).
void row_to_bf16_pairs(const float* x, std::size_t n, float* words) {
  for (std::size_t k = 0; k < n; k += kLanes) {
    const std::size_t left = n - k;
    const auto m = static_cast<__mmask16>(left >= kLanes ? 0xFFFF : (1u << left) - 1);
    const __m256i b = __builtin_bit_cast(__m256i, _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + k)));
    const std::size_t halves = std::min<std::size_t>(kLanes, left + (left & 1));  // whole words
    _mm256_mask_storeu_epi16(reinterpret_cast<std::uint16_t*>(words) + k, static_cast<__mmask16>((1u << halves) - 1), b);
  }
}

// Value accumulators of CB latent columns by HV head vectors: ot[c][h] = ot[c][h] * alpha[h] +
// sum over key pairs j of dot(pp[j][h], vp[j][c]) (two bf16 products per pair, fp32 sums in
// order of j). pp, alpha, ot: at the tile's first head column; vp, ot: at its first column c.
template <int HV>
void value_tile(const float* pp, std::size_t h16, const float* vp, std::size_t L, std::size_t pairs,
                const float* alpha, float* ot) {
  constexpr int CB = HV >= 3 ? 4 : 16 / HV;
  __m512 acc[CB][HV];
  __m512 a[HV];
#pragma GCC unroll 4
  for (int i = 0; i < HV; ++i) a[i] = _mm512_loadu_ps(alpha + kLanes * i);
#pragma GCC unroll 16
  for (int c = 0; c < CB; ++c) {
#pragma GCC unroll 4
    for (int i = 0; i < HV; ++i) acc[c][i] = _mm512_mul_ps(_mm512_loadu_ps(ot + c * h16 + kLanes * i), a[i]);
  }
  for (std::size_t j = 0; j < pairs; ++j) {
    __m512bh w[HV];
#pragma GCC unroll 4
    for (int i = 0; i < HV; ++i) w[i] = __builtin_bit_cast(__m512bh, _mm512_loadu_ps(pp + j * h16 + kLanes * i));
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) {
      const __m512bh v = __builtin_bit_cast(__m512bh, _mm512_set1_ps(vp[j * L + c]));
#pragma GCC unroll 4
      for (int i = 0; i < HV; ++i) acc[c][i] = _mm512_dpbf16_ps(acc[c][i], w[i], v);
    }
  }
#pragma GCC unroll 16
  for (int c = 0; c < CB; ++c) {
#pragma GCC unroll 4
    for (int i = 0; i < HV; ++i) _mm512_storeu_ps(ot + c * h16 + kLanes * i, acc[c][i]);
  }
}

// Bytes of weights the projections prefetch ahead of their reads: a single core streams W_UK and
// W_UV (16 MiB each at DeepSeek's dimensions, read once per pass) from DRAM, and the hardware
// prefetchers alone leave it latency-bound. On the Zen 4 host this was written on, prefetching
// 4 KiB ahead into L2 (T1) cut the projections' time by about a third; T0 (into L1) and 8 or
// 16 KiB ahead did no better.
constexpr std::size_t kWeightPrefetchBytes = 4096;

inline void prefetch_range(const void* begin, std::size_t bytes) {
  const char* p = static_cast<const char*>(begin);
  for (std::size_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T1);
}

// q_lat[c] = sum_d q_nope[d] W_UK[h][d][c]: fp32 FMAs in order of d, accumulators in q_lat (L1),
// so W_UK[h] ([Dn][L], contiguous) is read as one stream. `end` bounds the prefetches (the end of
// W_UK), so no address past the array is formed.
void absorb(const std::uint16_t* w, const std::uint16_t* end, std::size_t L, std::size_t Dn, const float* qn,
            float* q_lat) {
  for (std::size_t c = 0; c < L; c += kLanes) _mm512_storeu_ps(q_lat + c, _mm512_setzero_ps());
  for (std::size_t d = 0; d < Dn; ++d) {
    const std::uint16_t* row = w + d * L;
    const std::uint16_t* ahead = row + kWeightPrefetchBytes / 2;
    if (ahead < end) prefetch_range(ahead, std::min<std::size_t>(2 * L, 2 * static_cast<std::size_t>(end - ahead)));
    const __m512 qb = _mm512_set1_ps(qn[d]);
    for (std::size_t c = 0; c < L; c += kLanes) {
      _mm512_storeu_ps(q_lat + c, _mm512_fmadd_ps(load_bf16x16(row + c), qb, _mm512_loadu_ps(q_lat + c)));
    }
  }
}

// out[e] = sum_c W_UV[h][e][c] o[c] for RW rows e0.. : fp32 FMAs by 16 columns, then a fixed tree.
// Prefetches the next RW rows (bounded by `end`, the end of W_UV) while reading these.
template <int RW>
void project_rows(const std::uint16_t* w, const std::uint16_t* end, std::size_t L, const float* o, float* out) {
  const std::uint16_t* next = w + RW * L;
  if (next < end) prefetch_range(next, std::min<std::size_t>(2 * RW * L, 2 * static_cast<std::size_t>(end - next)));
  __m512 acc[RW];
#pragma GCC unroll 4
  for (int r = 0; r < RW; ++r) acc[r] = _mm512_setzero_ps();
  for (std::size_t c = 0; c < L; c += kLanes) {
    const __m512 ov = _mm512_loadu_ps(o + c);
#pragma GCC unroll 4
    for (int r = 0; r < RW; ++r) acc[r] = _mm512_fmadd_ps(load_bf16x16(w + r * L + c), ov, acc[r]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < RW; ++r) out[r] = _mm512_reduce_add_ps(acc[r]);
}

// The online softmax of one block for head vector hv (16 heads): new max, rescale factor, weights
// rounded to bf16 and packed in key pairs, and the running sum of those rounded weights.
void softmax_block(const Pass& p, std::size_t nb, std::size_t hv) {
  const std::size_t h16 = p.h16;
  const float* s = p.region(p.at.s) + kLanes * hv;
  float* pp = p.region(p.at.pp) + kLanes * hv;
  float* mp = p.region(p.at.m) + kLanes * hv;
  float* lp = p.region(p.at.l) + kLanes * hv;
  const __m512 m_old = _mm512_loadu_ps(mp);
  __m512 block_max = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (std::size_t t = 0; t < nb; ++t) block_max = _mm512_max_ps(block_max, _mm512_loadu_ps(s + t * h16));
  const __m512 m_new = _mm512_max_ps(m_old, block_max);
  const __m512 alpha = exp2_ps(_mm512_sub_ps(m_old, m_new));  // 0 on the first block (m_old = -inf)
  __m512 sum = _mm512_mul_ps(_mm512_loadu_ps(lp), alpha);
  for (std::size_t t = 0; t < nb; t += 2) {
    const __m256bh w0 = _mm512_cvtneps_pbh(exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(s + t * h16), m_new)));
    const __m256bh w1 = t + 1 < nb ? _mm512_cvtneps_pbh(exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(s + (t + 1) * h16), m_new)))
                                   : _mm512_cvtneps_pbh(_mm512_setzero_ps());
    const __m512i lo = widen_bf16(w0);
    const __m512i hi = widen_bf16(w1);
    sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)));
    sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(hi, 16)));
    _mm512_storeu_ps(pp + t / 2 * h16, _mm512_castsi512_ps(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 16))));
  }
  _mm512_storeu_ps(mp, m_new);
  _mm512_storeu_ps(lp, sum);
  _mm512_storeu_ps(p.region(p.at.alpha) + kLanes * hv, alpha);
}

void pass(const Pass& p) {
  const std::size_t L = p.L, D = p.D, Dn = p.Dn, Dv = p.Dv, h16 = p.h16, nv = h16 / kLanes;
  float* qf = p.region(p.at.qf);
  float* ot = p.region(p.at.ot);
  float* x = p.region(p.at.x);
  float* vp = p.region(p.at.vp);
  float* s = p.region(p.at.s);
  float* pp = p.region(p.at.pp);
  float* tmp = p.region(p.at.tmp);
  // Queries in [k][head] columns; padded heads get zeros (finite scores, never written out).
  for (std::size_t hl = 0; hl < h16; ++hl) {
    const std::size_t h = p.h_begin + hl;
    if (hl < p.nh) {
      absorb(p.layer->w_uk.data() + h * Dn * L, p.layer->w_uk.data() + p.layer->w_uk.size(), L, Dn,
             p.q_nope + h * Dn, tmp);
      for (std::size_t c = 0; c < L; ++c) qf[c * h16 + hl] = tmp[c];
      for (std::size_t r = 0; r < p.R; ++r) qf[(L + r) * h16 + hl] = p.q_rope[h * p.R + r];
    } else {
      for (std::size_t k = 0; k < D; ++k) qf[k * h16 + hl] = 0.0f;
    }
  }
  if (p.bf16_scores) {
    // In place: row j of the pairs is written after rows 2j and 2j + 1 of qf were read.
    for (std::size_t j = 0; j < p.D2; ++j) {
      for (std::size_t v = 0; v < nv; ++v) {
        const __m512 a = _mm512_loadu_ps(qf + 2 * j * h16 + kLanes * v);
        const __m512 b = 2 * j + 1 < D ? _mm512_loadu_ps(qf + (2 * j + 1) * h16 + kLanes * v) : _mm512_setzero_ps();
        const __m512i lo = widen_bf16(_mm512_cvtneps_pbh(a));
        const __m512i hi = widen_bf16(_mm512_cvtneps_pbh(b));
        _mm512_storeu_ps(qf + j * h16 + kLanes * v, _mm512_castsi512_ps(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 16))));
      }
    }
  }
  for (std::size_t i = 0; i < L * h16; i += kLanes) _mm512_storeu_ps(ot + i, _mm512_setzero_ps());
  for (std::size_t i = 0; i < h16; i += kLanes) {
    _mm512_storeu_ps(p.region(p.at.m) + i, _mm512_set1_ps(-std::numeric_limits<float>::infinity()));
    _mm512_storeu_ps(p.region(p.at.l) + i, _mm512_setzero_ps());
  }
  // Head vectors in tiles of 4 (the last tile 1-3).
  const auto for_head_tiles = [nv](auto&& f) {
    for (std::size_t v0 = 0; v0 < nv; v0 += 4) with_count<4>(static_cast<int>(std::min<std::size_t>(4, nv - v0)), [&](auto hv) { f(v0, hv); });
  };
  for (std::size_t j0 = 0; j0 < p.n; j0 += kKeyBlock) {
    const std::size_t nb = std::min(kKeyBlock, p.n - j0);
    const std::size_t pairs = (nb + 1) / 2;
    stage_keys(p, j0, nb, x);
    if (p.bf16_scores) {
      float* kb = p.region(p.at.kb);
      for (std::size_t t = 0; t < kKeyBlock; ++t) row_to_bf16_pairs(x + t * D, D, kb + t * p.D2);
      for_head_tiles([&](std::size_t v0, auto hv) {
        constexpr int HV = decltype(hv)::value;
        constexpr std::size_t TB = 24 / HV;
        for (std::size_t t0 = 0; t0 < nb; t0 += TB) {
          score_tile_bf16<HV>(qf + kLanes * v0, h16, kb + t0 * p.D2, p.D2, p.c2, s + t0 * h16 + kLanes * v0);
        }
      });
    } else {
      for_head_tiles([&](std::size_t v0, auto hv) {
        constexpr int HV = decltype(hv)::value;
        constexpr std::size_t TB = 24 / HV;
        for (std::size_t t0 = 0; t0 < nb; t0 += TB) {
          score_tile<HV>(qf + kLanes * v0, h16, x + t0 * D, D, p.c2, s + t0 * h16 + kLanes * v0);
        }
      });
    }
    for (std::size_t v = 0; v < nv; ++v) softmax_block(p, nb, v);
    for (std::size_t j = 0; j < pairs; ++j) {
      const float* r0 = x + 2 * j * D;
      const float* r1 = r0 + D;  // a zero row past nb (kKeyBlock is even)
      for (std::size_t c = 0; c < L; c += kLanes) {
        const __m512i lo = widen_bf16(_mm512_cvtneps_pbh(_mm512_loadu_ps(r0 + c)));
        const __m512i hi = widen_bf16(_mm512_cvtneps_pbh(_mm512_loadu_ps(r1 + c)));
        _mm512_storeu_ps(vp + j * L + c, _mm512_castsi512_ps(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 16))));
      }
    }
    for_head_tiles([&](std::size_t v0, auto hv) {
      constexpr int HV = decltype(hv)::value;
      constexpr std::size_t CB = HV >= 3 ? 4 : 16 / HV;
      for (std::size_t c0 = 0; c0 < L; c0 += CB) {
        value_tile<HV>(pp + kLanes * v0, h16, vp + c0, L, pairs, p.region(p.at.alpha) + kLanes * v0,
                       ot + c0 * h16 + kLanes * v0);
      }
    });
  }
  for (std::size_t hl = 0; hl < p.nh; ++hl) {
    const std::size_t h = p.h_begin + hl;
    const float inv = 1.0f / p.region(p.at.l)[hl];
    for (std::size_t c = 0; c < L; ++c) tmp[c] = ot[c * h16 + hl] * inv;
    const std::uint16_t* w = p.layer->w_uv.data() + h * Dv * L;
    const std::uint16_t* w_end = p.layer->w_uv.data() + p.layer->w_uv.size();
    for (std::size_t e = 0; e < Dv; e += 4) {
      with_count<4>(static_cast<int>(std::min<std::size_t>(4, Dv - e)),
                    [&](auto rw) { project_rows<decltype(rw)::value>(w + e * L, w_end, L, tmp, p.out + h * Dv + e); });
    }
  }
}

void exp2_array(const float* x, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; i += kLanes) {
    const auto m = static_cast<__mmask16>(n - i >= kLanes ? 0xFFFF : (1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, exp2_ps(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

}  // namespace avx512
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif

void run_pass(detail::MlaIsa isa, const Pass& p) {
#if defined(__x86_64__)
  if (isa == detail::MlaIsa::kAvx512Bf16) {
    avx512::pass(p);
    return;
  }
#endif
  DEEPFIT_ASSERT(isa == detail::MlaIsa::kPortable, "run_pass: unknown MlaIsa");
  pass_portable(p);
}

void check_isa(const char* kernel, detail::MlaIsa isa) {
  if (!detail::cpu_has(isa)) throw InputError(std::string(kernel) + ": this CPU lacks the requested instruction set");
}

// Everything of a pass but the query, the keys and the heads.
Pass make_pass(const MlaLayer& layer, std::span<float> scratch, bool bf16_scores) {
  const MlaDims& d = layer.dims;
  Pass p{};
  p.layer = &layer;
  p.L = static_cast<std::size_t>(d.kv_lora_rank);
  p.R = static_cast<std::size_t>(d.qk_rope_head_dim);
  p.D = p.L + p.R;
  p.D2 = (p.D + 1) / 2;
  p.bf16_scores = bf16_scores;
  p.Dn = static_cast<std::size_t>(d.qk_nope_head_dim);
  p.Dv = static_cast<std::size_t>(d.v_head_dim);
  p.format = layer.cache_format;
  p.c2 = static_cast<float>(static_cast<double>(layer.softmax_scale) * 1.4426950408889634);  // log2(e)
  p.row_bytes = static_cast<std::size_t>(mla_cache_token_bytes(layer.cache_format, d.kv_lora_rank, d.qk_rope_head_dim));
  p.scratch = scratch.data();
  p.at = scratch_layout(d);
  return p;
}

// Runs units [unit_begin, unit_end) of `queries` queries: each maximal run of units of one query
// is one pass. set_query(p, q) points p at query q's inputs, keys and output.
template <typename SetQuery>
void run_units(detail::MlaIsa isa, Pass p, const MlaDims& d, std::int64_t unit_begin, std::int64_t unit_end,
               SetQuery&& set_query) {
  const std::int64_t G = mla_head_units(d);
  std::int64_t u = unit_begin;
  while (u < unit_end) {
    const std::int64_t q = u / G;
    const std::int64_t last = std::min(unit_end, (q + 1) * G);  // one past this query's last unit in the slice
    set_query(p, q);
    const std::int64_t h_begin = u % G * kMlaHeadsPerUnit;
    const std::int64_t h_end = std::min(d.num_heads, (last - q * G) * kMlaHeadsPerUnit);
    p.h_begin = static_cast<std::size_t>(h_begin);
    p.nh = static_cast<std::size_t>(h_end - h_begin);
    p.h16 = round16(p.nh);
    run_pass(isa, p);
    u = last;
  }
}

}  // namespace

std::int64_t mla_fast_scratch_floats(const MlaDims& dims) {
  // Validates the dimensions the layout depends on (a bf16 cache admits every L the fp8 one does).
  mla_cache_token_bytes(MlaCacheFormat::kBf16, dims.kv_lora_rank, dims.qk_rope_head_dim);
  if (dims.num_heads < 1) throw InputError("mla_fast_scratch_floats: num_heads < 1");
  return static_cast<std::int64_t>(scratch_layout(dims).total);
}

namespace {
std::size_t fast_scratch_bytes(const MlaDims& d) { return scratch_layout(d).total * sizeof(float); }
}  // namespace

namespace detail {

bool cpu_has(MlaIsa isa) {
  if (isa == MlaIsa::kPortable) return true;
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

MlaIsa best_mla_isa() { return cpu_has(MlaIsa::kAvx512Bf16) ? MlaIsa::kAvx512Bf16 : MlaIsa::kPortable; }

void mla_exp2_on(MlaIsa isa, std::span<const float> x, std::span<float> y) {
  check_isa("mla_exp2_on", isa);
  if (x.size() != y.size()) throw InputError("mla_exp2_on: x and y differ in size");
#if defined(__x86_64__)
  if (isa == MlaIsa::kAvx512Bf16) {
    avx512::exp2_array(x.data(), y.data(), x.size());
    return;
  }
#endif
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = exp2_portable(x[i]);
}

namespace {

void decode_on(const char* kernel, bool bf16_scores, MlaIsa isa, const MlaLayer& layer, std::span<const float> q_nope,
               std::span<const float> q_rope, std::span<const MlaSequence> sequences, std::span<float> out,
               std::int64_t unit_begin, std::int64_t unit_end, std::span<float> scratch) {
  check_mla_decode(kernel, layer, q_nope, q_rope, sequences, out, unit_begin, unit_end, std::as_bytes(scratch),
                   fast_scratch_bytes);
  check_isa(kernel, isa);
  const MlaDims& d = layer.dims;
  run_units(isa, make_pass(layer, scratch, bf16_scores), d, unit_begin, unit_end, [&](Pass& p, std::int64_t b) {
    const MlaSequence& s = sequences[static_cast<std::size_t>(b)];
    p.cache = s.cache.data();
    p.positions = s.positions;
    p.n = static_cast<std::size_t>(s.positions.empty() ? s.ctx_len : static_cast<std::int64_t>(s.positions.size()));
    p.q_nope = q_nope.data() + b * d.num_heads * d.qk_nope_head_dim;
    p.q_rope = q_rope.data() + b * d.num_heads * d.qk_rope_head_dim;
    p.out = out.data() + b * d.num_heads * d.v_head_dim;
  });
}

void prefill_on(const char* kernel, bool bf16_scores, MlaIsa isa, const MlaLayer& layer, std::span<const float> q_nope,
                std::span<const float> q_rope, std::span<const std::byte> cache, std::int64_t num_cached,
                std::int64_t num_new, std::span<float> out, std::int64_t unit_begin, std::int64_t unit_end,
                std::span<float> scratch) {
  check_mla_prefill(kernel, layer, q_nope, q_rope, cache, num_cached, num_new, out, unit_begin, unit_end,
                    std::as_bytes(scratch), fast_scratch_bytes);
  check_isa(kernel, isa);
  const MlaDims& d = layer.dims;
  run_units(isa, make_pass(layer, scratch, bf16_scores), d, unit_begin, unit_end, [&](Pass& p, std::int64_t i) {
    p.cache = cache.data();
    p.positions = {};
    p.n = static_cast<std::size_t>(num_cached + i + 1);
    p.q_nope = q_nope.data() + i * d.num_heads * d.qk_nope_head_dim;
    p.q_rope = q_rope.data() + i * d.num_heads * d.qk_rope_head_dim;
    p.out = out.data() + i * d.num_heads * d.v_head_dim;
  });
}

}  // namespace

void mla_decode_fast_on(MlaIsa isa, const MlaLayer& layer, std::span<const float> q_nope,
                        std::span<const float> q_rope, std::span<const MlaSequence> sequences, std::span<float> out,
                        std::int64_t unit_begin, std::int64_t unit_end, std::span<float> scratch) {
  decode_on("mla_decode_fast", false, isa, layer, q_nope, q_rope, sequences, out, unit_begin, unit_end, scratch);
}

void mla_decode_bf16qk_on(MlaIsa isa, const MlaLayer& layer, std::span<const float> q_nope,
                          std::span<const float> q_rope, std::span<const MlaSequence> sequences, std::span<float> out,
                          std::int64_t unit_begin, std::int64_t unit_end, std::span<float> scratch) {
  decode_on("mla_decode_bf16qk", true, isa, layer, q_nope, q_rope, sequences, out, unit_begin, unit_end, scratch);
}

void mla_prefill_fast_on(MlaIsa isa, const MlaLayer& layer, std::span<const float> q_nope,
                         std::span<const float> q_rope, std::span<const std::byte> cache, std::int64_t num_cached,
                         std::int64_t num_new, std::span<float> out, std::int64_t unit_begin, std::int64_t unit_end,
                         std::span<float> scratch) {
  prefill_on("mla_prefill_fast", false, isa, layer, q_nope, q_rope, cache, num_cached, num_new, out, unit_begin,
             unit_end, scratch);
}

void mla_prefill_bf16qk_on(MlaIsa isa, const MlaLayer& layer, std::span<const float> q_nope,
                           std::span<const float> q_rope, std::span<const std::byte> cache, std::int64_t num_cached,
                           std::int64_t num_new, std::span<float> out, std::int64_t unit_begin, std::int64_t unit_end,
                           std::span<float> scratch) {
  prefill_on("mla_prefill_bf16qk", true, isa, layer, q_nope, q_rope, cache, num_cached, num_new, out, unit_begin,
             unit_end, scratch);
}

}  // namespace detail

void mla_decode_fast(const MlaLayer& layer, std::span<const float> q_nope, std::span<const float> q_rope,
                     std::span<const MlaSequence> sequences, std::span<float> out, std::int64_t unit_begin,
                     std::int64_t unit_end, std::span<float> scratch) {
  detail::mla_decode_fast_on(detail::best_mla_isa(), layer, q_nope, q_rope, sequences, out, unit_begin, unit_end,
                             scratch);
}

void mla_prefill_fast(const MlaLayer& layer, std::span<const float> q_nope, std::span<const float> q_rope,
                      std::span<const std::byte> cache, std::int64_t num_cached, std::int64_t num_new,
                      std::span<float> out, std::int64_t unit_begin, std::int64_t unit_end, std::span<float> scratch) {
  detail::mla_prefill_fast_on(detail::best_mla_isa(), layer, q_nope, q_rope, cache, num_cached, num_new, out,
                              unit_begin, unit_end, scratch);
}

void mla_decode_bf16qk(const MlaLayer& layer, std::span<const float> q_nope, std::span<const float> q_rope,
                       std::span<const MlaSequence> sequences, std::span<float> out, std::int64_t unit_begin,
                       std::int64_t unit_end, std::span<float> scratch) {
  detail::mla_decode_bf16qk_on(detail::best_mla_isa(), layer, q_nope, q_rope, sequences, out, unit_begin, unit_end,
                               scratch);
}

void mla_prefill_bf16qk(const MlaLayer& layer, std::span<const float> q_nope, std::span<const float> q_rope,
                        std::span<const std::byte> cache, std::int64_t num_cached, std::int64_t num_new,
                        std::span<float> out, std::int64_t unit_begin, std::int64_t unit_end, std::span<float> scratch) {
  detail::mla_prefill_bf16qk_on(detail::best_mla_isa(), layer, q_nope, q_rope, cache, num_cached, num_new, out,
                                unit_begin, unit_end, scratch);
}

}  // namespace deepfit::kernels
