// dsa_index_fast (the lightning indexer: AVX512_BF16, plain AVX-512 and portable bodies, picked at
// run time so the library needs no -march flag) and dsa_topk_fast (one pass with a rising
// threshold). See dsa.h.
// Quantizers, checks and the references are in dsa_ref.cpp.
#include "kernels/dsa.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <functional>
#include <limits>
#include <string>

#include "kernels/error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deepfit::kernels {
namespace {

constexpr auto kDim = static_cast<std::size_t>(kIndexHeadDim);  // D = 128 values per head and per key
constexpr auto kMaxHeads = static_cast<std::size_t>(kMaxIndexHeads);

// e4m3 code -> its value times 2^scale_log2, exact (no rounding can occur: 4-bit significands and
// small exponents), NaN for the NaN codes. Built at compile time, so no static initialization.
constexpr float e4m3_value(unsigned code, int scale_log2) {
  const unsigned magnitude = code & 0x7Fu;
  const bool negative = (code & 0x80u) != 0;
  if (magnitude == 0x7Fu) return std::bit_cast<float>(0x7FC00000u);
  const unsigned exponent = magnitude >> 3;
  const unsigned mantissa = magnitude & 7u;
  // normal: (8 + m) * 2^(e - 10); subnormal (e = 0): m * 2^-9
  float v = exponent == 0 ? static_cast<float>(mantissa) : static_cast<float>(8u + mantissa);
  int e2 = (exponent == 0 ? -9 : static_cast<int>(exponent) - 10) + scale_log2;
  for (; e2 > 0; --e2) v *= 2.0f;
  for (; e2 < 0; ++e2) v *= 0.5f;
  return negative ? -v : v;
}

constexpr std::array<float, 256> e4m3_table(int scale_log2) {
  std::array<float, 256> t{};
  for (unsigned c = 0; c < 256; ++c) t[c] = e4m3_value(c, scale_log2);
  return t;
}

constexpr std::array<float, 256> kE4m3 = e4m3_table(0);
// Query values times 2^8: the fp32 FMA body decodes keys with the fp16 trick (value times 2^-8),
// so the products need no correction.
[[maybe_unused]] constexpr std::array<float, 256> kE4m3Times256 = e4m3_table(8);

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

// What every body needs for one query over the positions [t0, t1), all of them seen by the query.
struct QueryJob {
  const std::uint8_t* q;     // [H][D] codes of this query
  const float* weights;      // [H]
  const std::uint8_t* keys;  // [N][D]
  const float* key_scales;   // [N]
  float* scores;             // [N], this query's row
  std::size_t num_heads;
  std::size_t t0;
  std::size_t t1;
};

// ReLU that keeps NaN (a NaN dot product must reach the score).
inline float relu(float x) { return x < 0.0f ? 0.0f : x; }

// ---- Portable path. Lanes = heads: for each key value, one multiply-add into every head's
// accumulator, a loop over heads that GCC vectorizes for the baseline ISA.
void query_portable(const QueryJob& job) {
  const std::size_t H = job.num_heads;
  float qf[kDim * kMaxHeads];  // [D][H], 64 KiB: the largest stack buffer of the indexer
  for (std::size_t h = 0; h < H; ++h) {
    for (std::size_t d = 0; d < kDim; ++d) qf[d * H + h] = kE4m3[job.q[h * kDim + d]];
  }
  for (std::size_t t = job.t0; t < job.t1; ++t) {
    float kf[kDim];
    for (std::size_t d = 0; d < kDim; ++d) kf[d] = kE4m3[job.keys[t * kDim + d]];
    float acc[kMaxHeads] = {};
    for (std::size_t d = 0; d < kDim; ++d) {
      const float* qd = qf + d * H;
      for (std::size_t h = 0; h < H; ++h) acc[h] += qd[h] * kf[d];
    }
    float sum = 0.0f;
    for (std::size_t h = 0; h < H; ++h) sum += job.weights[h] * relu(acc[h]);
    job.scores[t] = sum * job.key_scales[t];
  }
}

// ---- x86 AVX-512 bodies. Lanes = heads: a zmm holds 16 heads' accumulators; G zmm cover the
// heads (padded to 16G with zero queries and zero weights), P positions are done together so each
// query vector loaded from L1 serves P positions. Keys are decoded P at a time into a small stack
// buffer and broadcast one value (fp32 path) or one pair (bf16 path) at a time.
// A position's operations do not depend on P or on its place in the block, so blocks of P and the
// single-position tail give the same bits.
//
// GCC 12's AVX-512 headers fill the unused operand of some intrinsics with a self-initialized
// placeholder (_mm512_undefined_*), which -Wuninitialized reports once inlined at -O3 (fixed in
// GCC 13); the pragmas silence that for these bodies only.
#if defined(__x86_64__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,f16c,fma")
namespace avx512 {

// 32 e4m3 codes -> 32 fp16 values equal to the codes' values times 2^-8: the 7 magnitude bits
// shifted up by 7 land on fp16's exponent (its low 4 bits) and top mantissa bits, and fp16's bias
// of 15 versus e4m3's 7 divides by 2^8, for subnormals too; the sign moves to bit 15. The NaN
// codes become an fp16 NaN.
inline __m512i e4m3_to_fp16_scaled(const std::uint8_t* p) {
  const __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  const __m512i magnitude = _mm512_and_si512(w, _mm512_set1_epi16(0x7F));
  // a | (b & c): the shifted magnitude, plus the sign bit of w << 8.
  const __m512i h = _mm512_ternarylogic_epi32(_mm512_slli_epi16(magnitude, 7), _mm512_slli_epi16(w, 8),
                                              _mm512_set1_epi16(static_cast<short>(0x8000)), 0xF8);
  const __mmask32 nan = _mm512_cmpeq_epi16_mask(magnitude, _mm512_set1_epi16(0x7F));
  return _mm512_mask_mov_epi16(h, nan, _mm512_set1_epi16(0x7E00));
}

// Weighted ReLU sum over the G head vectors of one position, then the key scale. max(0, acc)
// returns acc when acc is NaN (MAXPS returns its second operand when either is NaN).
template <int G>
inline float finish(const __m512 (&acc)[G], const __m512 (&w)[G], float key_scale) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 s = _mm512_mul_ps(w[0], _mm512_max_ps(zero, acc[0]));
#pragma GCC unroll 8
  for (int g = 1; g < G; ++g) s = _mm512_fmadd_ps(w[g], _mm512_max_ps(zero, acc[g]), s);
  return _mm512_reduce_add_ps(s) * key_scale;
}

template <int G>
inline void load_weights(const float* weights, std::size_t H, __m512 (&w)[G]) {
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g) {
    const std::size_t h0 = 16 * static_cast<std::size_t>(g);
    const std::size_t lanes = H > h0 ? std::min<std::size_t>(16, H - h0) : 0;
    w[g] = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << lanes) - 1u), weights + h0);
  }
}

// fp32 FMA body. qf [D][16G] holds the query values times 2^8; kf [P][D] the key values times 2^-8.
template <int G, int P>
inline void fma_block(const float* qf, const float* kf, const __m512 (&w)[G], const float* key_scales,
                      float* scores) {
  __m512 acc[P][G];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) acc[p][g] = _mm512_setzero_ps();
  }
  for (std::size_t d = 0; d < kDim; ++d) {
    __m512 qz[G];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) qz[g] = _mm512_load_ps(qf + (d * G + static_cast<std::size_t>(g)) * 16);
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) {
      const __m512 kb = _mm512_set1_ps(kf[static_cast<std::size_t>(p) * kDim + d]);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) acc[p][g] = _mm512_fmadd_ps(qz[g], kb, acc[p][g]);
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) scores[p] = finish<G>(acc[p], w, key_scales[p]);
}

template <int P>
inline void decode_keys_fp32(const std::uint8_t* keys, float* kf) {
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 4
    for (std::size_t c = 0; c < kDim; c += 32) {
      const std::size_t at = static_cast<std::size_t>(p) * kDim + c;
      const __m512i h = e4m3_to_fp16_scaled(keys + at);
      _mm512_store_ps(kf + at, _mm512_cvtph_ps(_mm512_castsi512_si256(h)));
      _mm512_store_ps(kf + at + 16, _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)));
    }
  }
}

template <int G>
void query_fma(const QueryJob& job) {
  constexpr int P = G <= 4 ? 4 : 2;  // P*G accumulators plus G query vectors fit the 32 zmm
  constexpr std::size_t kLanes = 16 * G;
  alignas(64) float qf[kDim * kLanes];  // [D][16G]: 64 KiB at G = 8
  std::fill(qf, qf + kDim * kLanes, 0.0f);
  for (std::size_t h = 0; h < job.num_heads; ++h) {
    for (std::size_t d = 0; d < kDim; ++d) qf[d * kLanes + h] = kE4m3Times256[job.q[h * kDim + d]];
  }
  __m512 w[G];
  load_weights<G>(job.weights, job.num_heads, w);
  alignas(64) float kf[P * kDim];
  std::size_t t = job.t0;
  for (; t + P <= job.t1; t += P) {
    decode_keys_fp32<P>(job.keys + t * kDim, kf);
    fma_block<G, P>(qf, kf, w, job.key_scales + t, job.scores + t);
  }
  for (; t < job.t1; ++t) {
    decode_keys_fp32<1>(job.keys + t * kDim, kf);
    fma_block<G, 1>(qf, kf, w, job.key_scales + t, job.scores + t);
  }
}

}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,f16c,fma,avx512bf16,avx512vbmi")
namespace avx512_bf16 {

// bf16 body. Codes become exact bf16 values by table lookup: VPERMT2B indexes two 64-byte tables
// with the low 7 bits of each code (the magnitude), once for the low bytes and once for the high
// bytes of the bf16 values, the sign is ORed into the high byte, and VPUNPCK{L,H}BW interleave the
// two into 16-bit values. The interleave works within 128-bit lanes, so dword p of a converted key
// holds values (pair_first(p), pair_first(p) + 1); the query is packed in the same order, and a dot
// product does not care about the order of its terms. VDPBF16PS adds both products of a dword to
// a lane. Products of two e4m3 values are exact in fp32 and never subnormal (>= 2^-18), so the
// instruction's flushing of subnormals never applies.
constexpr std::size_t kPairs = kDim / 2;

// The first of the two values dword p (0..63) of a converted key holds. Per 64 codes (c = p / 32,
// r = p % 32), dword 4L + i of the low interleave (r < 16) holds codes 16L + 2i and 16L + 2i + 1
// (128-bit lane L, i < 4), and the high interleave (r >= 16) the codes 8 further on.
constexpr std::size_t pair_first(std::size_t p) {
  const std::size_t c = p / 32;
  const std::size_t r = p % 32;
  const std::size_t q = r % 16;
  return 64 * c + 16 * (q / 4) + 2 * (q % 4) + (r < 16 ? 0 : 8);
}

// bf16 bits of the e4m3 magnitudes 0..127 (NaN for 127), low bytes and high bytes.
constexpr std::array<std::uint8_t, 128> bf16_table_bytes(bool high) {
  std::array<std::uint8_t, 128> t{};
  for (unsigned c = 0; c < 128; ++c) {
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(kE4m3[c]) >> 16;  // exact: 4-bit significands
    t[c] = static_cast<std::uint8_t>(high ? bits >> 8 : bits & 0xFFu);
  }
  return t;
}
alignas(64) constexpr std::array<std::uint8_t, 128> kBf16Low = bf16_table_bytes(false);
alignas(64) constexpr std::array<std::uint8_t, 128> kBf16High = bf16_table_bytes(true);

struct Bf16Tables {
  __m512i low0, low1, high0, high1;
};

inline Bf16Tables load_tables() {
  return {_mm512_load_si512(kBf16Low.data()), _mm512_load_si512(kBf16Low.data() + 64),
          _mm512_load_si512(kBf16High.data()), _mm512_load_si512(kBf16High.data() + 64)};
}

template <int G, int P>
inline void bf16_block(const std::uint32_t* qb, const std::uint32_t* kb, const __m512 (&w)[G], const float* key_scales,
                       float* scores) {
  __m512 acc[P][G];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) acc[p][g] = _mm512_setzero_ps();
  }
  for (std::size_t j = 0; j < kPairs; ++j) {
    __m512bh qz[G];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      qz[g] = reinterpret_cast<__m512bh>(_mm512_load_si512(qb + (j * G + static_cast<std::size_t>(g)) * 16));
    }
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) {
      const __m512bh kbc = reinterpret_cast<__m512bh>(
          _mm512_set1_epi32(static_cast<int>(kb[static_cast<std::size_t>(p) * kPairs + j])));
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) acc[p][g] = _mm512_dpbf16_ps(acc[p][g], qz[g], kbc);
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) scores[p] = avx512::finish<G>(acc[p], w, key_scales[p]);
}

template <int P>
inline void decode_keys_bf16(const std::uint8_t* keys, const Bf16Tables& tab, std::uint32_t* kb) {
  const __m512i sign_bit = _mm512_set1_epi8(static_cast<char>(0x80));
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 2
    for (std::size_t c = 0; c < kDim; c += 64) {
      const std::size_t at = static_cast<std::size_t>(p) * kDim + c;
      const __m512i codes = _mm512_loadu_si512(keys + at);
      const __m512i low = _mm512_permutex2var_epi8(tab.low0, codes, tab.low1);
      // high | (codes & sign): ternary logic a | (b & c).
      const __m512i high =
          _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(tab.high0, codes, tab.high1), codes, sign_bit, 0xF8);
      _mm512_store_si512(kb + at / 2, _mm512_unpacklo_epi8(low, high));
      _mm512_store_si512(kb + at / 2 + 16, _mm512_unpackhi_epi8(low, high));
    }
  }
}

template <int G>
void query_bf16(const QueryJob& job) {
  constexpr int P = G <= 4 ? 4 : 2;
  constexpr std::size_t kLanes = 16 * G;
  alignas(64) std::uint32_t qb[kPairs * kLanes];  // [D/2][16G] in pair_first order: 32 KiB at G = 8
  std::fill(qb, qb + kPairs * kLanes, 0u);
  const auto bf16_bits = [](float v) { return std::bit_cast<std::uint32_t>(v) >> 16; };  // exact here
  for (std::size_t h = 0; h < job.num_heads; ++h) {
    for (std::size_t p = 0; p < kPairs; ++p) {
      const std::uint8_t* q = job.q + h * kDim + pair_first(p);
      qb[p * kLanes + h] = bf16_bits(kE4m3[q[0]]) | bf16_bits(kE4m3[q[1]]) << 16;
    }
  }
  __m512 w[G];
  avx512::load_weights<G>(job.weights, job.num_heads, w);
  const Bf16Tables tab = load_tables();
  alignas(64) std::uint32_t kb[P * kPairs];
  std::size_t t = job.t0;
  for (; t + P <= job.t1; t += P) {
    decode_keys_bf16<P>(job.keys + t * kDim, tab, kb);
    bf16_block<G, P>(qb, kb, w, job.key_scales + t, job.scores + t);
  }
  for (; t < job.t1; ++t) {
    decode_keys_bf16<1>(job.keys + t * kDim, tab, kb);
    bf16_block<G, 1>(qb, kb, w, job.key_scales + t, job.scores + t);
  }
}

}  // namespace avx512_bf16
#pragma GCC pop_options
#pragma GCC diagnostic pop

// Calls body<G>(job) with G = ceil(H / 16), 1..8.
template <template <int> class Body>
void by_head_groups(const QueryJob& job) {
  switch ((job.num_heads + 15) / 16) {
    case 1: Body<1>::run(job); break;
    case 2: Body<2>::run(job); break;
    case 3: Body<3>::run(job); break;
    case 4: Body<4>::run(job); break;
    case 5: Body<5>::run(job); break;
    case 6: Body<6>::run(job); break;
    case 7: Body<7>::run(job); break;
    case 8: Body<8>::run(job); break;
    default: DEEPFIT_ASSERT(false, "dsa_index_fast: head count past kMaxIndexHeads");
  }
}
template <int G>
struct FmaBody {
  static void run(const QueryJob& job) { avx512::query_fma<G>(job); }
};
template <int G>
struct Bf16Body {
  static void run(const QueryJob& job) { avx512_bf16::query_bf16<G>(job); }
};
static_assert(kMaxIndexHeads == 8 * 16, "by_head_groups covers 8 groups of 16 heads");
#endif

}  // namespace

namespace detail {

bool cpu_has(IndexIsa isa) {
  if (isa == IndexIsa::kPortable) return true;
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
  if (isa == IndexIsa::kAvx512) return avx512;
  return avx512 && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vbmi");
#else
  return false;
#endif
}

IndexIsa best_index_isa() {
  if (cpu_has(IndexIsa::kAvx512Bf16)) return IndexIsa::kAvx512Bf16;
  if (cpu_has(IndexIsa::kAvx512)) return IndexIsa::kAvx512;
  return IndexIsa::kPortable;
}

void dsa_index_fast_on(IndexIsa isa, const IndexerShape& shape, std::span<const std::uint8_t> q_codes,
                       std::span<const float> head_weights, std::span<const std::uint8_t> keys,
                       std::span<const float> key_scales, std::span<float> scores, std::int64_t t_begin,
                       std::int64_t t_end) {
  constexpr const char* kKernel = "dsa_index_fast";
  check_index(kKernel, shape, q_codes, head_weights, keys, key_scales, scores, t_begin, t_end);
  if (!cpu_has(isa)) throw InputError(std::string(kKernel) + ": this CPU lacks the requested instruction set");
  const auto H = static_cast<std::size_t>(shape.num_heads);
  const auto N = static_cast<std::size_t>(shape.ctx_len);
  const std::int64_t prefix = shape.ctx_len - shape.num_queries;
  for (std::int64_t i = 0; i < shape.num_queries; ++i) {
    const auto qi = static_cast<std::size_t>(i);
    float* row = scores.data() + qi * N;
    // Query i sees positions up to prefix + i: [t_begin, seen_end) of the slice, the rest is masked.
    const std::int64_t seen_end = std::clamp(prefix + i + 1, t_begin, t_end);
    std::fill(row + seen_end, row + t_end, kMinusInf);
    const QueryJob job{q_codes.data() + qi * H * kDim,
                       head_weights.data() + qi * H,
                       keys.data(),
                       key_scales.data(),
                       row,
                       H,
                       static_cast<std::size_t>(t_begin),
                       static_cast<std::size_t>(seen_end)};
    if (job.t0 == job.t1) continue;
#if defined(__x86_64__)
    if (isa == IndexIsa::kAvx512Bf16) {
      by_head_groups<Bf16Body>(job);
      continue;
    }
    if (isa == IndexIsa::kAvx512) {
      by_head_groups<FmaBody>(job);
      continue;
    }
#endif
    query_portable(job);
  }
}

}  // namespace detail

void dsa_index_fast(const IndexerShape& shape, std::span<const std::uint8_t> q_codes,
                    std::span<const float> head_weights, std::span<const std::uint8_t> keys,
                    std::span<const float> key_scales, std::span<float> scores, std::int64_t t_begin,
                    std::int64_t t_end) {
  detail::dsa_index_fast_on(detail::best_index_isa(), shape, q_codes, head_weights, keys, key_scales, scores, t_begin,
                            t_end);
}

// ---- Top-k: one pass with a rising threshold (see dsa.h).

namespace {

// Candidate positions [0, count) in ascending order, with their keys; theta only rises. A score
// whose key is <= theta is outranked by m earlier candidates (keys >= theta, lower positions), so
// it is dropped at once; when the buffer fills, cut() keeps the m winners. The AVX-512 filter
// stores 16 slots at a time, hence kSlack spare slots past the capacity.
struct Candidates {
  static constexpr std::size_t kSlack = 16;
  std::uint32_t* idx;   // [capacity + kSlack]
  std::uint32_t* keys;  // [capacity + kSlack]
  std::uint32_t* tmp;   // [capacity]
  std::size_t capacity;
  std::size_t m;
  std::size_t count = 0;
  std::uint32_t theta = 0;  // below every non-NaN key (-inf has key 0x007FFFFF)

  // Keeps, in place and in order, the entries that rank among the top m (count > m): those with
  // key > theta for theta = the m-th largest key, then the first ties at theta until m are kept.
  void cut() {
    std::copy(keys, keys + count, tmp);
    std::nth_element(tmp, tmp + (m - 1), tmp + count, std::greater<>());
    theta = tmp[m - 1];
    std::size_t greater = 0;
    for (std::size_t j = 0; j < count; ++j) greater += keys[j] > theta ? 1 : 0;
    std::size_t ties = m - greater;  // >= 1
    std::size_t kept = 0;
    for (std::size_t j = 0; j < count; ++j) {
      const bool tie = keys[j] == theta && ties > 0;
      ties -= tie ? 1 : 0;
      if (keys[j] > theta || tie) {
        idx[kept] = idx[j];
        keys[kept] = keys[j];
        ++kept;
      }
    }
    DEEPFIT_ASSERT(kept == m, "dsa_topk_fast: selection lost count");
    count = m;
  }

  // Scores [begin, end); returns nonzero when one of them is NaN. Blocks of 16 keys are computed
  // and compared with theta first (loops GCC vectorizes), and only a block with a winner is
  // admitted one score at a time.
  std::uint32_t admit_scalar(const float* s, std::size_t begin, std::size_t end) {
    std::uint32_t nan_seen = 0;
    std::size_t j = begin;
    const auto admit = [&](std::size_t at, std::uint32_t key) {
      idx[count] = static_cast<std::uint32_t>(at);  // written always, kept only when count advances
      keys[count] = key;
      count += key > theta ? 1 : 0;
      if (count >= capacity) cut();  // the vector filter may leave count == capacity: one spare slot
    };
    for (; j + 16 <= end; j += 16) {
      std::uint32_t block[16];
      std::uint32_t any = 0;
      for (std::size_t l = 0; l < 16; ++l) {
        nan_seen |= static_cast<std::uint32_t>((std::bit_cast<std::uint32_t>(s[j + l]) & 0x7FFFFFFFu) > 0x7F800000u);
        block[l] = detail::topk_key(s[j + l]);
        any |= static_cast<std::uint32_t>(block[l] > theta);
      }
      if (any == 0) continue;
      for (std::size_t l = 0; l < 16; ++l) {
        if (block[l] > theta) admit(j + l, block[l]);
      }
    }
    for (; j < end; ++j) {
      nan_seen |= static_cast<std::uint32_t>((std::bit_cast<std::uint32_t>(s[j]) & 0x7FFFFFFFu) > 0x7F800000u);
      admit(j, detail::topk_key(s[j]));
    }
    return nan_seen;
  }
};

#if defined(__x86_64__)
#pragma GCC diagnostic push  // GCC 12 header placeholders, as for the indexer bodies above
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl")
// Scores [0, n - n % 16), 16 at a time: the keys of detail::topk_key in vector form, one compare
// with theta, and (rarely, once theta has risen) a compress of the winners into the buffer with
// full 16-slot stores (compressing straight to memory is slow on some cores). Returns the number
// of scores done and sets nan_seen when one of them is NaN.
std::size_t admit_avx512(const float* s, std::size_t n, Candidates& c, std::uint32_t& nan_seen) {
  const __m512i magnitude_mask = _mm512_set1_epi32(0x7FFFFFFF);
  const __m512i inf_bits = _mm512_set1_epi32(0x7F800000);
  const __m512i sign_bit = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  __mmask16 nan = 0;
  std::size_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m512i u = _mm512_loadu_si512(s + j);
    const __m512i magnitude = _mm512_and_si512(u, magnitude_mask);
    nan |= _mm512_cmpgt_epu32_mask(magnitude, inf_bits);
    u = _mm512_maskz_mov_epi32(_mm512_test_epi32_mask(u, magnitude_mask), u);  // -0 -> +0
    // Negative: ~u; positive: u | sign, i.e. u ^ (sign-extended sign | sign bit).
    const __m512i key = _mm512_xor_si512(u, _mm512_or_si512(_mm512_srai_epi32(u, 31), sign_bit));
    const __mmask16 win = _mm512_cmpgt_epu32_mask(key, _mm512_set1_epi32(static_cast<int>(c.theta)));
    if (win == 0) continue;
    if (c.count + 16 > c.capacity) c.cut();  // count > capacity - 16 > m
    const __m512i pos = _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int>(j)));
    _mm512_storeu_si512(c.idx + c.count, _mm512_maskz_compress_epi32(win, pos));
    _mm512_storeu_si512(c.keys + c.count, _mm512_maskz_compress_epi32(win, key));
    c.count += static_cast<std::size_t>(__builtin_popcount(win));
    // A winner admitted before a cut raised theta is cut again later if it loses: still exact.
  }
  nan_seen |= nan != 0 ? 1u : 0u;
  return j;
}
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif

}  // namespace

namespace detail {

void dsa_topk_fast_on(IndexIsa isa, std::span<const float> scores, std::int64_t k, std::span<std::int32_t> positions,
                      std::span<std::uint32_t> scratch) {
  constexpr const char* kKernel = "dsa_topk_fast";
  check_topk(kKernel, scores, k, positions, scratch);
  if (!cpu_has(isa)) throw InputError(std::string(kKernel) + ": this CPU lacks the requested instruction set");
  const std::size_t n = scores.size();
  const std::size_t m = positions.size();  // min(k, n)
  const float* s = scores.data();
  const auto nan_error = [&] {
    const auto at = std::find_if(s, s + n, [](float v) { return v != v; }) - s;
    return InputError(std::string(kKernel) + ": scores[" + std::to_string(at) + "] is NaN (expected a number)");
  };
  if (m == n || m == 0) {
    if (std::any_of(s, s + n, [](float v) { return v != v; })) throw nan_error();
    for (std::size_t j = 0; j < m; ++j) positions[j] = static_cast<std::int32_t>(j);
    return;
  }
  const std::size_t capacity = 2 * m + 1024;
  Candidates c{scratch.data(), scratch.data() + capacity + Candidates::kSlack,
               scratch.data() + 2 * (capacity + Candidates::kSlack), capacity, m};
  const auto pass = [&] {
    std::uint32_t nan_seen = 0;
    std::size_t done = 0;
#if defined(__x86_64__)
    if (isa != IndexIsa::kPortable) done = admit_avx512(s, n, c, nan_seen);
#endif
    nan_seen |= c.admit_scalar(s, done, n);
    if (nan_seen != 0) throw nan_error();
  };
  // A starting threshold from a sample, so the buffer need not fill with the first scores and be
  // cut again and again while theta climbs: every 64th score (at most `capacity` of them), and the
  // key ranked j = ceil(2 m S / n) among the S samples, which about 2m scores reach. Scores below
  // it are outranked by every admitted one, so the result stays exact as long as m are admitted;
  // if fewer are (a sample that misrepresents the scores), a second pass starts from theta = 0.
  const std::size_t num_samples = std::min(capacity, n / 64);
  const std::size_t rank = num_samples == 0 ? 0 : (2 * m * num_samples + n - 1) / n;
  if (num_samples >= 256 && rank <= num_samples / 4) {
    const std::size_t stride = n / num_samples;
    for (std::size_t j = 0; j < num_samples; ++j) c.tmp[j] = topk_key(s[j * stride]);
    std::nth_element(c.tmp, c.tmp + (rank - 1), c.tmp + num_samples, std::greater<>());
    // Admit key >= the sampled key, i.e. key > it minus 1 (no wrap: a number's key is >= 0x007FFFFF).
    c.theta = c.tmp[rank - 1] - 1;
  }
  pass();
  if (c.count < m) {
    c.count = 0;
    c.theta = 0;
    pass();
  }
  DEEPFIT_ASSERT(c.count >= m, "dsa_topk_fast: fewer candidates than positions");
  if (c.count > m) c.cut();
  for (std::size_t j = 0; j < m; ++j) positions[j] = static_cast<std::int32_t>(c.idx[j]);
}

}  // namespace detail

void dsa_topk_fast(std::span<const float> scores, std::int64_t k, std::span<std::int32_t> positions,
                   std::span<std::uint32_t> scratch) {
  detail::dsa_topk_fast_on(detail::best_index_isa(), scores, k, positions, scratch);
}

}  // namespace deepfit::kernels
