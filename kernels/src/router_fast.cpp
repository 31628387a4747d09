// router_fast (router.h): the same fp32 scores and choices as router_ref, with an AVX-512
// sigmoid and a rank-based top-k (or portable loops), no sorting. Matches router_ref bit for bit.
#include "kernels/router.h"

#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <string>

#include "kernels/error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deepfit::kernels {
namespace {

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();
constexpr std::size_t kLanes = 16;
static_assert(kMaxRouterExperts % (kLanes * kLanes) == 0, "vector_max holds whole vectors");

// Per-token scratch on the stack: scores s and choices c, padded to whole vectors (pad c = -inf).
struct TokenScratch {
  alignas(64) std::array<float, kMaxRouterExperts> score;
  alignas(64) std::array<float, kMaxRouterExperts> choice;
  std::array<float, kMaxRouterExperts> group_score;
  std::array<bool, kMaxRouterExperts> group_kept;
  std::array<float, kMaxRouterExperts> chosen;
  // AVX-512 path: per-vector maxima (top_k_by_arg_max) and packed candidates with a vector of
  // padding (top_k_by_rank).
  alignas(64) std::array<float, kMaxRouterExperts / kLanes> vector_max;
  std::array<float, kMaxRouterExperts + kLanes> candidate_value;
  std::array<std::int32_t, kMaxRouterExperts + kLanes> candidate_index;
};

// Keeps the `kept` best of group_score[0..G) (larger first, then lower index) and sets the choices
// of every other group's experts to -inf, so no later pick can take them.
void drop_groups(TokenScratch& w, std::size_t G, std::size_t group_size, std::size_t kept) {
  std::fill_n(w.group_kept.begin(), G, false);
  for (std::size_t j = 0; j < kept; ++j) {
    std::size_t best = G;
    for (std::size_t g = 0; g < G; ++g) {
      if (!w.group_kept[g] && (best == G || w.group_score[g] > w.group_score[best])) best = g;
    }
    w.group_kept[best] = true;
  }
  for (std::size_t g = 0; g < G; ++g) {
    if (!w.group_kept[g]) std::fill_n(w.choice.begin() + static_cast<std::ptrdiff_t>(g * group_size), group_size, kMinusInf);
  }
}

// ---- Portable path.
// TODO(#4): an AVX2 + FMA path. Here every score goes through the scalar exp_fp32, whose std::fma
// is a libm call on the baseline ISA: about 30x slower per token than the AVX-512 path.

void token_portable(const float* logits, const float* bias, std::size_t E, std::size_t G, std::size_t kept,
                    std::size_t K, TokenScratch& w, std::int32_t* ids) {
  for (std::size_t e = 0; e < E; ++e) {
    w.score[e] = detail::router_sigmoid(logits[e]);
    w.choice[e] = w.score[e] + bias[e];
  }
  const std::size_t group_size = E / G;
  if (G > 1) {
    for (std::size_t g = 0; g < G; ++g) {
      float m1 = kMinusInf;  // the two largest so far, m1 >= m2; a repeated maximum fills both
      float m2 = kMinusInf;
      for (std::size_t e = g * group_size; e < (g + 1) * group_size; ++e) {
        const float v = w.choice[e];
        if (v > m1) {
          m2 = m1;
          m1 = v;
        } else if (v > m2) {
          m2 = v;
        }
      }
      w.group_score[g] = m1 + m2;
    }
    drop_groups(w, G, group_size, kept);
  }
  for (std::size_t j = 0; j < K; ++j) {
    std::size_t best = 0;
    for (std::size_t e = 1; e < E; ++e) {
      if (w.choice[e] > w.choice[best]) best = e;  // strict: the lower index keeps a tie
    }
    ids[j] = static_cast<std::int32_t>(best);
    w.chosen[j] = w.score[best];
    w.choice[best] = kMinusInf;
  }
}

// ---- AVX-512 path.
#if defined(__x86_64__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl")
namespace avx512 {

inline __mmask16 first_lanes(std::size_t n) {
  return n >= kLanes ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

#include "exp_avx512.h"  // exp_fp32 on 16 lanes, shared with token_ops_fast.cpp

// The sum of the two largest of c[begin, begin + n) (n >= 2): lane-wise top two, then merged.
inline float top2_sum(const float* c, std::size_t n) {
  const __m512 minus_inf = _mm512_set1_ps(kMinusInf);
  __m512 m1 = minus_inf;
  __m512 m2 = minus_inf;
  for (std::size_t i = 0; i < n; i += kLanes) {
    const __m512 v = _mm512_mask_loadu_ps(minus_inf, first_lanes(n - i), c + i);
    m2 = _mm512_max_ps(m2, _mm512_min_ps(m1, v));
    m1 = _mm512_max_ps(m1, v);
  }
  const float top1 = _mm512_reduce_max_ps(m1);
  const __mmask16 at_top = _mm512_cmp_ps_mask(m1, _mm512_set1_ps(top1), _CMP_EQ_OQ);
  if (std::popcount(static_cast<unsigned>(at_top)) >= 2) return top1 + top1;
  // One lane holds top1 in m1: the runner-up is in some lane's m2 or another lane's m1.
  const float top2 = std::max(_mm512_reduce_max_ps(m2), _mm512_reduce_max_ps(_mm512_mask_mov_ps(m1, at_top, minus_inf)));
  return top1 + top2;
}

// The order of the contract on (value, index) pairs: 1 in lane l when (v[l], i[l]) comes before
// (b, bi), i.e. v[l] > b, or v[l] == b and i[l] < bi.
inline __mmask16 before(__m512 v, __m512i i, __m512 b, __m512i bi) {
  return static_cast<__mmask16>(_mm512_cmp_ps_mask(v, b, _CMP_GT_OQ) |
                                _mm512_mask_cmplt_epi32_mask(_mm512_cmp_ps_mask(v, b, _CMP_EQ_OQ), i, bi));
}

// Top-k for K <= 16 without a serial chain of picks.
//   1. The lane-wise maximum L over all vectors holds 16 distinct experts; its K-th value in the
//      contract's order, tau, has K distinct experts at or above it, so the top K are among the
//      experts with c >= tau.
//   2. Those candidates (usually a few more than K) are packed with their indices.
//   3. Each candidate's rank is the number of candidates before it; rank r < K is output r.
// Ranks are a permutation of 0..n-1 (a strict total order), so exactly the K first are written,
// in the contract's order: the same result as repeated arg-max, and as router_ref.
void top_k_by_rank(TokenScratch& w, std::size_t num_vectors, std::size_t K, std::int32_t* ids) {
  const __m512 minus_inf = _mm512_set1_ps(kMinusInf);
  const __m512i lane_index = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  __m512 lane_max = _mm512_load_ps(w.choice.data());
  for (std::size_t v = 1; v < num_vectors; ++v) lane_max = _mm512_max_ps(lane_max, _mm512_load_ps(w.choice.data() + v * kLanes));
  alignas(64) float lane_values[kLanes];
  _mm512_store_ps(lane_values, lane_max);
  float tau = kMinusInf;
  for (std::size_t l = 0; l < kLanes; ++l) {
    const __mmask16 ahead = before(lane_max, lane_index, _mm512_set1_ps(lane_values[l]),
                                   _mm512_set1_epi32(static_cast<int>(l)));
    if (static_cast<std::size_t>(std::popcount(static_cast<unsigned>(ahead))) == K - 1) tau = lane_values[l];
  }
  // Candidates: finite choices >= tau (dropped groups and padding hold -inf).
  const __m512 threshold = _mm512_set1_ps(tau);
  std::size_t n = 0;
  for (std::size_t v = 0; v < num_vectors; ++v) {
    const __m512 c = _mm512_load_ps(w.choice.data() + v * kLanes);
    const __mmask16 keep = _mm512_mask_cmp_ps_mask(_mm512_cmp_ps_mask(c, minus_inf, _CMP_NEQ_OQ), c, threshold, _CMP_GE_OQ);
    const __m512i index = _mm512_add_epi32(lane_index, _mm512_set1_epi32(static_cast<int>(v * kLanes)));
    _mm512_storeu_ps(w.candidate_value.data() + n, _mm512_maskz_compress_ps(keep, c));
    _mm512_storeu_si512(w.candidate_index.data() + n, _mm512_maskz_compress_epi32(keep, index));
    n += static_cast<std::size_t>(std::popcount(static_cast<unsigned>(keep)));
  }
  // Pad to whole vectors with entries that come after every candidate.
  _mm512_storeu_ps(w.candidate_value.data() + n, minus_inf);
  _mm512_storeu_si512(w.candidate_index.data() + n, _mm512_set1_epi32(std::numeric_limits<std::int32_t>::max()));
  const std::size_t num_candidate_vectors = (n + kLanes - 1) / kLanes;
  for (std::size_t i = 0; i < n; ++i) {
    const __m512 b = _mm512_set1_ps(w.candidate_value[i]);
    const __m512i bi = _mm512_set1_epi32(w.candidate_index[i]);
    std::size_t rank = 0;
    for (std::size_t v = 0; v < num_candidate_vectors; ++v) {
      const __mmask16 ahead = before(_mm512_loadu_ps(w.candidate_value.data() + v * kLanes),
                                     _mm512_loadu_si512(w.candidate_index.data() + v * kLanes), b, bi);
      rank += static_cast<std::size_t>(std::popcount(static_cast<unsigned>(ahead)));
    }
    if (rank < K) {
      ids[rank] = w.candidate_index[i];
      w.chosen[rank] = w.score[static_cast<std::size_t>(w.candidate_index[i])];
    }
  }
}

// Top-k for any K by repeated arg-max over a two-level structure: vector_max[v] is the largest
// choice of vector v. The first vector whose maximum is the overall maximum, and its first lane
// holding it, is the lowest index holding it (an earlier holder would make its own vector's
// maximum equal). The picked lane becomes -inf by a whole-vector store, which later whole-vector
// loads forward.
void top_k_by_arg_max(TokenScratch& w, std::size_t num_vectors, std::size_t K, std::int32_t* ids) {
  const std::size_t num_max_vectors = (num_vectors + kLanes - 1) / kLanes;
  for (std::size_t v = 0; v < num_max_vectors * kLanes; ++v) {
    w.vector_max[v] = v < num_vectors ? _mm512_reduce_max_ps(_mm512_load_ps(w.choice.data() + v * kLanes)) : kMinusInf;
  }
  for (std::size_t j = 0; j < K; ++j) {
    __m512 vmax = _mm512_load_ps(w.vector_max.data());
    for (std::size_t m = 1; m < num_max_vectors; ++m) vmax = _mm512_max_ps(vmax, _mm512_load_ps(w.vector_max.data() + m * kLanes));
    const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    std::size_t v = 0;
    for (std::size_t m = 0; m < num_max_vectors; ++m) {
      const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_load_ps(w.vector_max.data() + m * kLanes), top, _CMP_EQ_OQ);
      if (hit != 0) {
        v = m * kLanes + static_cast<std::size_t>(std::countr_zero(static_cast<unsigned>(hit)));
        break;
      }
    }
    float* cv = w.choice.data() + v * kLanes;
    const __m512 values = _mm512_load_ps(cv);
    const __mmask16 lane = _mm512_cmp_ps_mask(values, top, _CMP_EQ_OQ);
    const std::size_t best = v * kLanes + static_cast<std::size_t>(std::countr_zero(static_cast<unsigned>(lane)));
    ids[j] = static_cast<std::int32_t>(best);
    w.chosen[j] = w.score[best];
    const __m512 rest = _mm512_mask_mov_ps(values, static_cast<__mmask16>(lane & -lane), _mm512_set1_ps(kMinusInf));
    _mm512_store_ps(cv, rest);
    float* mv = w.vector_max.data() + v / kLanes * kLanes;
    _mm512_store_ps(mv, _mm512_mask_mov_ps(_mm512_load_ps(mv), static_cast<__mmask16>(1u << (v % kLanes)),
                                           _mm512_set1_ps(_mm512_reduce_max_ps(rest))));
  }
}

void token(const float* logits, const float* bias, std::size_t E, std::size_t G, std::size_t kept, std::size_t K,
           TokenScratch& w, std::int32_t* ids) {
  const std::size_t num_vectors = (E + kLanes - 1) / kLanes;
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 minus_inf = _mm512_set1_ps(kMinusInf);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (std::size_t v = 0; v < num_vectors; ++v) {
    const __mmask16 m = first_lanes(E - v * kLanes);
    const __m512 x = _mm512_maskz_loadu_ps(m, logits + v * kLanes);
    const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp_fp32(_mm512_xor_ps(x, sign))));
    const __m512 c = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, bias + v * kLanes));
    _mm512_store_ps(w.score.data() + v * kLanes, s);
    _mm512_store_ps(w.choice.data() + v * kLanes, _mm512_mask_mov_ps(minus_inf, m, c));  // pad lanes: -inf
  }
  const std::size_t group_size = E / G;
  if (G > 1) {
    for (std::size_t g = 0; g < G; ++g) w.group_score[g] = top2_sum(w.choice.data() + g * group_size, group_size);
    drop_groups(w, G, group_size, kept);
  }
  if (K <= kLanes) {
    top_k_by_rank(w, num_vectors, K, ids);
  } else {
    top_k_by_arg_max(w, num_vectors, K, ids);
  }
}

}  // namespace avx512
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif

}  // namespace

namespace detail {

void router_fast_on(OpIsa isa, const RouterShape& shape, const RouterWeighting& weighting,
                    std::span<const float> logits, std::span<const float> bias, std::span<std::int32_t> ids,
                    std::span<float> weights, std::int64_t t_begin, std::int64_t t_end) {
  constexpr const char* kKernel = "router_fast";
  check_router(kKernel, shape, weighting, logits, bias, ids, weights, t_begin, t_end);
  if (!cpu_has(isa)) throw InputError(std::string(kKernel) + ": this CPU lacks the requested instruction set");
  const auto E = static_cast<std::size_t>(shape.num_experts);         // experts
  const auto G = static_cast<std::size_t>(shape.num_groups);          // groups
  const auto kept = static_cast<std::size_t>(shape.num_groups_kept);  // groups kept
  const auto K = static_cast<std::size_t>(shape.top_k);               // experts chosen
  TokenScratch w;
  for (auto t = static_cast<std::size_t>(t_begin); t < static_cast<std::size_t>(t_end); ++t) {
    const float* row = logits.data() + t * E;
    std::int32_t* out_ids = ids.data() + t * K;
#if defined(__x86_64__)
    if (isa == OpIsa::kAvx512) {
      avx512::token(row, bias.data(), E, G, kept, K, w, out_ids);
    } else {
      token_portable(row, bias.data(), E, G, kept, K, w, out_ids);
    }
#else
    token_portable(row, bias.data(), E, G, kept, K, w, out_ids);
#endif
    router_weights(weighting, std::span<const float>(w.chosen.data(), K), weights.subspan(t * K, K));
  }
}

}  // namespace detail

void router_fast(const RouterShape& shape, const RouterWeighting& weighting, std::span<const float> logits,
                 std::span<const float> bias, std::span<std::int32_t> ids, std::span<float> weights,
                 std::int64_t t_begin, std::int64_t t_end) {
  detail::router_fast_on(detail::best_op_isa(), shape, weighting, logits, bias, ids, weights, t_begin, t_end);
}

}  // namespace deepfit::kernels
