// Routed SwiGLU experts (kernels/src/expert_ffn*.cpp): the routing plan by hand, the grouped phases
// against expert_ffn_ref for every weight format on awkward shapes with a bound derived term by
// term, identical bits under any slicing and batch, the entry checks, and work_of by hand.
#include "kernels/expert_ffn.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/error.h"
#include "kernels/moe_gemm.h"
#include "kernels/moe_gemm_fp8.h"
#include "kernels/quant_blocks.h"
#include "kernels/work.h"

namespace deepfit::kernels {
namespace {

using Format = ExpertWeightFormat;

const char* name(Format f) {
  switch (f) {
    case Format::kBf16: return "BF16";
    case Format::kQ8_0: return "Q8_0";
    case Format::kQ4_K: return "Q4_K";
    case Format::kFp8E4m3: return "FP8";
  }
  return "?";
}

// One stored matrix with what the bounds need: the exact weights and, for Q4_K, dmin * m of each
// weight's sub-block (moe_gemm.h's c_k = |W| + 2 dmin m).
struct Matrix {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<std::byte> bytes;
  std::vector<float> scales;
  std::vector<double> w;        // [rows][cols]
  std::vector<double> offsets;  // [rows][cols]

  ExpertMatrix view() const { return {bytes, scales}; }
};

std::uint16_t u16_at(const std::byte* p) {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(p[0]) | std::to_integer<unsigned>(p[1]) << 8);
}

Matrix make_matrix(Format f, std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.08f);
  const auto R = static_cast<std::size_t>(rows);
  const auto K = static_cast<std::size_t>(cols);
  std::vector<float> v(R * K);
  for (float& x : v) x = normal(rng);
  Matrix m{rows, cols, {}, {}, std::vector<double>(R * K), std::vector<double>(R * K, 0.0)};
  std::vector<float> deq(R * K);
  switch (f) {
    case Format::kBf16:
      m.bytes.resize(2 * R * K);
      for (std::size_t i = 0; i < R * K; ++i) {
        const std::uint16_t b = fp32_to_bf16(v[i]);
        m.bytes[2 * i] = static_cast<std::byte>(b & 0xFF);
        m.bytes[2 * i + 1] = static_cast<std::byte>(b >> 8);
        deq[i] = bf16_to_fp32(b);
      }
      break;
    case Format::kQ8_0:
      m.bytes.resize(R * K / 32 * 34);
      quantize_row_q8_0_ref(v, m.bytes);
      dequantize_row_q8_0_ref(m.bytes, deq);
      break;
    case Format::kQ4_K:
      m.bytes.resize(R * K / 256 * 144);
      quantize_row_q4_K_ref(v, m.bytes);
      dequantize_row_q4_K_ref(m.bytes, deq);
      for (std::size_t i = 0; i < R * K; ++i) {
        const std::byte* block = m.bytes.data() + i / 256 * 144;
        const Q4KScales s = unpack_q4_K_scales(std::span<const std::byte, 12>(block + 4, 12));
        m.offsets[i] = static_cast<double>(fp16_to_fp32(u16_at(block + 2)) * static_cast<float>(s.mins[i / 32 % 8]));
      }
      break;
    case Format::kFp8E4m3: {
      const auto tc = static_cast<std::size_t>(fp8_scale_tiles(cols));
      m.bytes.resize(R * K);
      // DeepSeek's quantization: scale = tile amax / 448 (1 for an all-zero tile).
      m.scales.assign(static_cast<std::size_t>(fp8_scale_tiles(rows)) * tc, 0.0f);
      for (std::size_t n = 0; n < R; ++n) {
        for (std::size_t k = 0; k < K; ++k) {
          float& s = m.scales[n / 128 * tc + k / 128];
          s = std::max(s, std::fabs(v[n * K + k]));
        }
      }
      for (float& s : m.scales) s = s > 0.0f ? s / kFp8E4m3Max : 1.0f;
      for (std::size_t i = 0; i < R * K; ++i) {
        const float s = m.scales[i / K / 128 * tc + i % K / 128];
        const std::uint8_t b = fp32_to_fp8_e4m3(v[i] / s);
        m.bytes[i] = static_cast<std::byte>(b);
        m.w[i] = static_cast<double>(fp8_e4m3_to_fp32(b)) * static_cast<double>(s);
      }
      return m;
    }
  }
  for (std::size_t i = 0; i < R * K; ++i) m.w[i] = static_cast<double>(deq[i]);
  return m;
}

struct Expert {
  Matrix gate, up, down;
};

struct Layer {
  ExpertFfnShape shape;
  std::vector<Expert> experts;
  std::vector<ExpertWeights> views;
};

Layer make_layer(const ExpertFfnShape& shape, std::uint64_t seed) {
  Layer l{shape, {}, {}};
  for (std::int64_t e = 0; e < shape.num_experts; ++e) {
    l.experts.push_back({make_matrix(shape.weight_format, shape.ffn_dim, shape.hidden_dim, seed + 3 * e),
                         make_matrix(shape.weight_format, shape.ffn_dim, shape.hidden_dim, seed + 3 * e + 1),
                         make_matrix(shape.weight_format, shape.hidden_dim, shape.ffn_dim, seed + 3 * e + 2)});
  }
  for (const Expert& e : l.experts) l.views.push_back({e.gate.view(), e.up.view(), e.down.view()});
  return l;
}

std::vector<float> random_vector(std::size_t n, float sigma, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Caller-side storage of a plan and the scratch, sized by the library's own size functions.
struct Buffers {
  std::vector<std::int64_t> offsets;
  std::vector<std::int32_t> tokens, active;
  std::vector<float> weights;
  std::vector<float> x_routed, xq_scales, h, hq_scales;
  std::vector<std::int8_t> xq, hq;
  std::vector<std::int32_t> xq_sums, hq_sums;
  RoutingPlan plan;

  explicit Buffers(const ExpertFfnShape& s) {
    const auto P = static_cast<std::size_t>(s.num_tokens * s.top_k);
    const auto E = static_cast<std::size_t>(s.num_experts);
    offsets.resize(E + 1);
    tokens.resize(P);
    weights.resize(P);
    active.resize(E);
    plan = RoutingPlan{offsets, tokens, weights, active, 0};
    const ExpertFfnScratchSizes n = expert_ffn_scratch_sizes(s);
    x_routed.resize(static_cast<std::size_t>(n.x_routed));
    xq.resize(static_cast<std::size_t>(n.xq));
    xq_scales.resize(static_cast<std::size_t>(n.xq_groups));
    xq_sums.resize(static_cast<std::size_t>(n.xq_groups));
    h.resize(static_cast<std::size_t>(n.h));
    hq.resize(static_cast<std::size_t>(n.hq));
    hq_scales.resize(static_cast<std::size_t>(n.hq_groups));
    hq_sums.resize(static_cast<std::size_t>(n.hq_groups));
  }
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;

  ExpertFfnScratch scratch() { return {x_routed, xq, xq_scales, xq_sums, h, hq, hq_scales, hq_sums}; }
};

// Routing of T tokens with awkward features: token 0 goes twice to expert 1; tokens 0-2 share
// expert 1 and most tokens share expert 0 (over 32 pairs once T > 32: several kernel chunks);
// the last expert never gets a token; the rest are spread. Weights in [0.1, 1).
struct Routing {
  std::vector<std::int32_t> ids;
  std::vector<float> weights;
};

Routing make_routing(const ExpertFfnShape& s, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> weight(0.1f, 1.0f);
  Routing r;
  for (std::int64_t t = 0; t < s.num_tokens; ++t) {
    for (std::int64_t j = 0; j < s.top_k; ++j) {
      std::int32_t e = 0;
      if (t < 3 && j < 2) {
        e = 1;
      } else if (j == 0) {
        e = 0;
      } else {
        e = static_cast<std::int32_t>((t * 7 + j * 3) % (s.num_experts - 1));
      }
      r.ids.push_back(e);
      r.weights.push_back(weight(rng));
    }
  }
  return r;
}

double gamma(double m) {
  const double u = 0x1p-24;
  return m * u / (1 - m * u);
}

// Bound on |kernel row - exact sum_k M[row][k] v[k]|, v the fp32 vector the kernel multiplies
// (x, or the h it gets from the scratch), s the scales of v's 32-groups (Q8_0/Q4_K only). Each is
// the kernel's tolerance against its fp32-rounded reference (moe_gemm.h, moe_gemm_fp8.h) plus that
// reference's own rounding u * sum |M v|, covered by two more steps of gamma:
//   BF16  gamma(K + 4) sum |M v|
//   FP8   gamma(tiles(K) + 18) sum |M v|
//   Q8_0, Q4_K  sum |M| s / 2 + gamma(K / 32 + 10) sum c (|v| + s / 2),  c = |M| (+ 2 dmin m for Q4_K).
// The Q8_0/Q4_K bound has two parts: the first is the rounding of v to s * q (the activation
// quantization), the second the fp32 arithmetic. With kArithmetic only the second is returned: it
// bounds the distance to the exact product with the quantized activations, sum_k M[row][k] s_k q_k.
enum class Part { kAll, kArithmetic };

double kernel_bound(Format f, const Matrix& m, std::int64_t row, const float* v, const float* s, Part part) {
  const auto K = static_cast<std::size_t>(m.cols);
  const double* w = m.w.data() + static_cast<std::size_t>(row) * K;
  const double* off = m.offsets.data() + static_cast<std::size_t>(row) * K;
  double plain = 0.0;
  double quantization = 0.0;
  double rounding = 0.0;
  for (std::size_t k = 0; k < K; ++k) {
    const double vk = std::fabs(static_cast<double>(v[k]));
    plain += std::fabs(w[k]) * vk;
    if (f == Format::kQ8_0 || f == Format::kQ4_K) {
      const double sk = static_cast<double>(s[k / 32]);
      quantization += std::fabs(w[k]) * sk / 2;
      rounding += (std::fabs(w[k]) + 2 * off[k]) * (vk + sk / 2);
    }
  }
  switch (f) {
    case Format::kBf16: return gamma(static_cast<double>(K) + 4) * plain;
    case Format::kFp8E4m3: return gamma(static_cast<double>(fp8_scale_tiles(m.cols)) + 18) * plain;
    case Format::kQ8_0:
    case Format::kQ4_K:
      return (part == Part::kAll ? quantization : 0.0) + gamma(static_cast<double>(K) / 32 + 10) * rounding;
  }
  return 0.0;
}

template <typename V>
double dot(const Matrix& m, std::int64_t row, const V* v) {
  const auto K = static_cast<std::size_t>(m.cols);
  double acc = 0.0;
  for (std::size_t k = 0; k < K; ++k) acc += m.w[static_cast<std::size_t>(row) * K + k] * static_cast<double>(v[k]);
  return acc;
}

// Propagation of the kernels' bounds through h = silu(g) * u. g, u exact (double) for some
// activation vector, the kernel's g_f, u_f within bg, bu of them. The kernel's fp32
// silu(g_f) = g_f / (1 + expf(-g_f)) is within 5u |silu(g_f)| of the exact silu(g_f) (expf within
// 1 ulp = 2u relative, so 1 + exp within 3u, the division u, 5u covers the second-order terms),
// and |silu'| <= 1.1 everywhere, so its distance to s = silu(g) is at most
// ds = 1.1 bg + 5u (|s| + 1.1 bg). Then h_f = fp32(silu_f * u_f) obeys
//   |h_f - s u| <= ds (|u| + bu) + |s| bu + u (|s| + ds)(|u| + bu).
double h_bound(double g, double u_exact, double bg, double bu) {
  constexpr double u = 0x1p-24;
  const double silu = std::fabs(g / (1.0 + std::exp(-g)));
  const double ds = 1.1 * bg + 5 * u * (silu + 1.1 * bg);
  const double abs_u = std::fabs(u_exact) + bu;
  return ds * abs_u + silu * bu + u * (silu + ds) * abs_u;
}

// Per output element of a token: the sums the final bound needs (see check_against_reference).
struct OutBound {
  std::vector<double> expected;  // out0 + sum_j w_j y_j, y exact
  std::vector<double> by;        // sum_j |w_j| By_j
  std::vector<double> terms;     // |out0| + sum_j |w_j| (|y_j| + By_j)

  OutBound(const float* out0, std::size_t n) : expected(out0, out0 + n), by(n, 0.0), terms(n, 0.0) {
    for (std::size_t c = 0; c < n; ++c) terms[c] = std::fabs(expected[c]);
  }
  void add(std::size_t c, double w, double y, double b) {
    expected[c] += w * y;
    by[c] += std::fabs(w) * b;
    terms[c] += std::fabs(w) * (std::fabs(y) + b);
  }
  // out_f adds fp32(w y_f) to out0 pair by pair (top_k products and additions: gamma(top_k + 1) on
  // out0 and each term); one more step covers the double rounding of `expected` (or, against the
  // reference, its rounding to fp32, u, and its double sums, far below u).
  double tolerance(std::size_t c, std::int64_t top_k) const {
    return by[c] + gamma(static_cast<double>(top_k) + 3) * terms[c];
  }
};

// Runs the grouped variant and checks it twice, token by token.
// 1. Against expert_ffn_ref (every format): per pair (token t, expert e, weight w) and row r,
//    g, u exact (double) from the stored weights and x_t, |g_f - g| <= Bg, |u_f - u| <= Bu
//    (kernel_bound, kAll); h_f within h_bound(g, u, Bg, Bu) =: Eh of h = silu(g) u; down: y exact
//    from h, |y_f - y| <= kernel_bound(down, h_f) + sum_r |D[c][r]| Eh_r =: By; and
//    |out_f - out_ref| <= sum_j |w_j| By_j + gamma(top_k + 3)(|out0| + sum_j |w_j| (|y_j| + By_j)).
//    For Q8_0/Q4_K this is dominated by the worst case of the activation quantization (it holds,
//    but could hide a small bug), hence:
// 2. Q8_0/Q4_K only, against the exact products with the activations the kernels actually read:
//    x_t quantized by quantize_activations_q8 (compared byte for byte with the scratch's xq), and
//    the scratch's hq: g_q = sum W s q and so on with kernel_bound(kArithmetic), i.e. fp32
//    rounding only; the down products take the kernel's own hq, so the h error does not
//    propagate: |y_f - y_q| <= kernel_bound(down, h_f, kArithmetic).
void check_against_reference(const ExpertFfnShape& s, std::uint64_t seed) {
  const Layer layer = make_layer(s, seed);
  const Routing routing = make_routing(s, seed + 100);
  const auto T = static_cast<std::size_t>(s.num_tokens);
  const auto H = static_cast<std::size_t>(s.hidden_dim);
  const auto F = static_cast<std::size_t>(s.ffn_dim);
  const auto top_k = static_cast<std::size_t>(s.top_k);
  const std::vector<float> x = random_vector(T * H, 1.0f, seed + 200);
  const std::vector<float> out0 = random_vector(T * H, 0.5f, seed + 300);
  std::vector<float> ref = out0;
  std::vector<double> ref_scratch(static_cast<std::size_t>(expert_ffn_ref_scratch_size(s)));
  expert_ffn_ref(s, layer.views, routing.ids, routing.weights, x, ref, ref_scratch);
  Buffers buf(s);
  std::vector<float> out = out0;
  expert_ffn_grouped(s, layer.views, routing.ids, routing.weights, x, buf.plan, buf.scratch(), out);

  const Format f = s.weight_format;
  const bool q8 = f == Format::kQ8_0 || f == Format::kQ4_K;
  std::vector<std::int64_t> cursor(buf.offsets.begin(), buf.offsets.end() - 1);
  std::vector<float> xs(H / 32 + 1);
  std::vector<std::int8_t> xq(H);
  std::vector<std::int32_t> xsums(H / 32 + 1);
  std::vector<double> xdq(H), hdq(F), h(F), eh(F);
  for (std::size_t t = 0; t < T; ++t) {
    const float* xt = x.data() + t * H;
    if (q8) {
      quantize_activations_q8(std::span(xt, H), 1, s.hidden_dim, xq, std::span(xs).first(H / 32),
                              std::span(xsums).first(H / 32));
      for (std::size_t k = 0; k < H; ++k) xdq[k] = static_cast<double>(xs[k / 32]) * xq[k];
    }
    OutBound vs_ref(out0.data() + t * H, H);
    OutBound vs_quantized(out0.data() + t * H, H);
    for (std::size_t j = 0; j < top_k; ++j) {
      const auto e = static_cast<std::size_t>(routing.ids[t * top_k + j]);
      const double w = static_cast<double>(routing.weights[t * top_k + j]);
      const auto p = static_cast<std::size_t>(cursor[e]++);  // the plan is stable in (t, j)
      ASSERT_EQ(buf.tokens[p], static_cast<std::int32_t>(t));
      const Expert& ex = layer.experts[e];
      const float* hf = buf.h.data() + p * F;
      const float* hs = q8 ? buf.hq_scales.data() + p * F / 32 : nullptr;
      if (q8) {
        ASSERT_EQ(std::memcmp(buf.xq.data() + p * H, xq.data(), H), 0) << "token " << t;
        for (std::size_t r = 0; r < F; ++r) hdq[r] = static_cast<double>(hs[r / 32]) * buf.hq[p * F + r];
      }
      for (std::size_t r = 0; r < F; ++r) {
        const auto row = static_cast<std::int64_t>(r);
        const double g = dot(ex.gate, row, xt);
        const double u = dot(ex.up, row, xt);
        h[r] = g / (1.0 + std::exp(-g)) * u;
        eh[r] = h_bound(g, u, kernel_bound(f, ex.gate, row, xt, xs.data(), Part::kAll),
                        kernel_bound(f, ex.up, row, xt, xs.data(), Part::kAll));
        ASSERT_LE(std::fabs(static_cast<double>(hf[r]) - h[r]), eh[r]) << name(f) << " h: token " << t << " row " << r;
        if (q8) {
          const double gq = dot(ex.gate, row, xdq.data());
          const double uq = dot(ex.up, row, xdq.data());
          const double ehq = h_bound(gq, uq, kernel_bound(f, ex.gate, row, xt, xs.data(), Part::kArithmetic),
                                     kernel_bound(f, ex.up, row, xt, xs.data(), Part::kArithmetic));
          ASSERT_LE(std::fabs(static_cast<double>(hf[r]) - gq / (1.0 + std::exp(-gq)) * uq), ehq)
              << name(f) << " h from the quantized x: token " << t << " row " << r;
        }
      }
      for (std::size_t c = 0; c < H; ++c) {
        const auto row = static_cast<std::int64_t>(c);
        double by = kernel_bound(f, ex.down, row, hf, hs, Part::kAll);
        for (std::size_t r = 0; r < F; ++r) by += std::fabs(ex.down.w[c * F + r]) * eh[r];
        vs_ref.add(c, w, dot(ex.down, row, h.data()), by);
        if (q8) vs_quantized.add(c, w, dot(ex.down, row, hdq.data()), kernel_bound(f, ex.down, row, hf, hs, Part::kArithmetic));
      }
    }
    for (std::size_t c = 0; c < H; ++c) {
      const double got = static_cast<double>(out[t * H + c]);
      ASSERT_LE(std::fabs(got - static_cast<double>(ref[t * H + c])), vs_ref.tolerance(c, s.top_k))
          << name(f) << " out[" << t << "][" << c << "]: ref " << ref[t * H + c] << " got " << got;
      if (q8) {
        ASSERT_LE(std::fabs(got - vs_quantized.expected[c]), vs_quantized.tolerance(c, s.top_k))
            << name(f) << " out[" << t << "][" << c << "] from the quantized activations: expected "
            << vs_quantized.expected[c] << " got " << got;
      }
    }
  }
}

// hidden_dim and ffn_dim: BF16 and FP8 take any size (130: a partial second scale tile and down
// unit; 140: a partial second gate_up slice); Q8_0 multiples of 32 (96: an odd number of blocks),
// Q4_K of 256. 34 tokens x top_k 3 put more than 32 pairs on expert 0 (two chunks of the kernels'
// 32; make_routing); the last expert gets none. Q4_K runs fewer tokens to keep the test fast (the chunking is the same
// code for every format).
TEST(ExpertFfnGrouped, MatchesReferenceForEveryFormat) {
  const ExpertFfnShape shapes[] = {
      {34, 3, 5, 130, 140, Format::kBf16},
      {34, 3, 5, 130, 140, Format::kFp8E4m3},
      {34, 3, 5, 96, 64, Format::kQ8_0},
      {3, 3, 4, 512, 256, Format::kQ4_K},   // two blocks per gate/up row
      {4, 2, 3, 1, 1, Format::kBf16},       // the smallest dimensions
      {4, 2, 3, 7, 300, Format::kFp8E4m3},  // hidden_dim below one 16-wide vector
      {2, 1, 2, 64, 32, Format::kQ8_0},     // top_k 1: both tokens on expert 1, expert 0 unused
  };
  const Routing first = make_routing(shapes[0], 0);
  ASSERT_GT(std::count(first.ids.begin(), first.ids.end(), 0), 32);  // expert 0 needs two chunks
  std::uint64_t seed = 1;
  for (const ExpertFfnShape& s : shapes) {
    SCOPED_TRACE(std::string(name(s.weight_format)) + " hidden " + std::to_string(s.hidden_dim) + " ffn " +
                 std::to_string(s.ffn_dim));
    check_against_reference(s, seed);
    seed += 1000;
  }
}

// Every phase split into different slices, called in different orders, gives the same bits in h
// and out; and each token's output does not depend on the rest of the batch.
TEST(ExpertFfnGrouped, SlicingAndBatchDoNotChangeTheBits) {
  for (const Format f : {Format::kBf16, Format::kQ8_0, Format::kQ4_K, Format::kFp8E4m3}) {
    const std::int64_t H = f == Format::kQ4_K ? 256 : f == Format::kQ8_0 ? 160 : 290;
    const std::int64_t F = f == Format::kQ4_K ? 256 : f == Format::kQ8_0 ? 288 : 200;
    const ExpertFfnShape s{9, 3, 4, H, F, f};
    const Layer layer = make_layer(s, 7);
    const Routing routing = make_routing(s, 8);
    const std::vector<float> x = random_vector(static_cast<std::size_t>(9 * H), 1.0f, 9);
    const std::vector<float> out0 = random_vector(x.size(), 0.5f, 10);
    Buffers whole(s);
    std::vector<float> out_whole = out0;
    expert_ffn_grouped(s, layer.views, routing.ids, routing.weights, x, whole.plan, whole.scratch(), out_whole);

    Buffers pieces(s);
    std::vector<float> out_pieces = out0;
    build_routing_plan(s, routing.ids, routing.weights, pieces.plan);
    const ExpertFfnScratch scratch = pieces.scratch();
    const std::int64_t n1 = expert_ffn_gather_units(s);
    for (std::int64_t i = n1; i > 0; --i) expert_ffn_gather(s, pieces.plan, x, scratch, i - 1, i);  // backwards
    const std::int64_t n2 = expert_ffn_gate_up_units(s, pieces.plan);
    expert_ffn_gate_up(s, layer.views, pieces.plan, scratch, n2 / 3, n2);
    expert_ffn_gate_up(s, layer.views, pieces.plan, scratch, 0, n2 / 3);
    const std::int64_t n3 = expert_ffn_down_units(s);
    for (std::int64_t i = 0; i < n3; ++i) expert_ffn_down(s, layer.views, pieces.plan, scratch, out_pieces, i, i + 1);

    EXPECT_EQ(std::memcmp(whole.h.data(), pieces.h.data(), whole.h.size() * sizeof(float)), 0) << name(f);
    for (std::size_t i = 0; i < out_whole.size(); ++i) {
      ASSERT_EQ(std::bit_cast<std::uint32_t>(out_whole[i]), std::bit_cast<std::uint32_t>(out_pieces[i])) << name(f) << " " << i;
    }
    // Token 4 alone, with its own routing: the same bits as inside the batch of 9.
    const ExpertFfnShape one{1, 3, 4, H, F, f};
    Buffers single(one);
    const auto Hs = static_cast<std::size_t>(H);
    std::vector<float> out_one(out0.begin() + 4 * static_cast<std::ptrdiff_t>(H), out0.begin() + 5 * static_cast<std::ptrdiff_t>(H));
    expert_ffn_grouped(one, layer.views, std::span(routing.ids).subspan(12, 3), std::span(routing.weights).subspan(12, 3),
                       std::span(x).subspan(4 * Hs, Hs), single.plan, single.scratch(), out_one);
    for (std::size_t c = 0; c < Hs; ++c) {
      ASSERT_EQ(std::bit_cast<std::uint32_t>(out_one[c]), std::bit_cast<std::uint32_t>(out_whole[4 * Hs + c])) << name(f) << " " << c;
    }
  }
}

// The intended use: a pool of threads, each taking its share of every phase's units, a barrier
// between phases. Three threads give the bits of the single-threaded run.
TEST(ExpertFfnGrouped, ThreadsSplittingThePhasesGetTheSameBits) {
  for (const Format f : {Format::kQ8_0, Format::kFp8E4m3}) {
    const ExpertFfnShape s{6, 2, 4, 160, 288, f};
    const Layer layer = make_layer(s, 21);
    const Routing routing = make_routing(s, 22);
    const std::vector<float> x = random_vector(static_cast<std::size_t>(6 * 160), 1.0f, 23);
    Buffers single(s);
    std::vector<float> expected(x.size(), 0.0f);
    expert_ffn_grouped(s, layer.views, routing.ids, routing.weights, x, single.plan, single.scratch(), expected);

    Buffers shared(s);
    std::vector<float> out(x.size(), 0.0f);
    constexpr std::int64_t kThreads = 3;
    std::barrier sync(kThreads);
    const auto share = [](std::int64_t units, std::int64_t t) { return std::pair{units * t / kThreads, units * (t + 1) / kThreads}; };
    const auto worker = [&](std::int64_t t) {
      if (t == 0) build_routing_plan(s, routing.ids, routing.weights, shared.plan);
      sync.arrive_and_wait();
      const ExpertFfnScratch scratch = shared.scratch();
      auto [b1, e1] = share(expert_ffn_gather_units(s), t);
      expert_ffn_gather(s, shared.plan, x, scratch, b1, e1);
      sync.arrive_and_wait();
      auto [b2, e2] = share(expert_ffn_gate_up_units(s, shared.plan), t);
      expert_ffn_gate_up(s, layer.views, shared.plan, scratch, b2, e2);
      sync.arrive_and_wait();
      auto [b3, e3] = share(expert_ffn_down_units(s), t);
      expert_ffn_down(s, layer.views, shared.plan, scratch, out, b3, e3);
    };
    std::vector<std::thread> pool;
    for (std::int64_t t = 0; t < kThreads; ++t) pool.emplace_back(worker, t);
    for (std::thread& th : pool) th.join();
    for (std::size_t i = 0; i < out.size(); ++i) {
      ASSERT_EQ(std::bit_cast<std::uint32_t>(out[i]), std::bit_cast<std::uint32_t>(expected[i])) << name(f) << " " << i;
    }
  }
}

TEST(BuildRoutingPlan, GroupsPairsByExpertByHand) {
  // ids [[2, 0], [2, 2], [1, 2]], 4 experts: expert 0 gets (t0), 1 gets (t2), 2 gets (t0, t1, t1, t2),
  // 3 nothing.
  const ExpertFfnShape s{3, 2, 4, 8, 8, Format::kBf16};
  const std::vector<std::int32_t> ids = {2, 0, 2, 2, 1, 2};
  const std::vector<float> w = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
  Buffers b(s);
  build_routing_plan(s, ids, w, b.plan);
  EXPECT_EQ(b.offsets, (std::vector<std::int64_t>{0, 1, 2, 6, 6}));
  EXPECT_EQ(b.tokens, (std::vector<std::int32_t>{0, 2, 0, 1, 1, 2}));
  EXPECT_EQ(b.weights, (std::vector<float>{0.2f, 0.5f, 0.1f, 0.3f, 0.4f, 0.6f}));
  EXPECT_EQ(b.plan.num_active_experts, 3);
  EXPECT_EQ(std::vector<std::int32_t>(b.active.begin(), b.active.begin() + 3), (std::vector<std::int32_t>{0, 1, 2}));
  EXPECT_EQ(expert_ffn_gather_units(s), 6);
  EXPECT_EQ(expert_ffn_gate_up_units(s, b.plan), 3);  // 3 active experts x 1 slice of 8 rows
  EXPECT_EQ(expert_ffn_down_units(ExpertFfnShape{3, 2, 4, 300, 8, Format::kBf16}), 3);
  EXPECT_EQ(expert_ffn_gate_up_units(ExpertFfnShape{3, 2, 4, 8, 257, Format::kBf16}, b.plan), 9);
}

TEST(ExpertFfnRef, ComputesAHandWorkedToken) {
  // One BF16 expert, hidden_dim 2, ffn_dim 1: gate [[1, 0]], up [[0, 2]], down [[1], [-1]]; x = [2, 3],
  // weight 0.5, out0 = [1, 0]: g = 2, u = 6, h = 6 * 2 / (1 + e^-2), out = [1 + h / 2, -h / 2].
  const ExpertFfnShape s{1, 1, 1, 2, 1, Format::kBf16};
  const auto bf16 = [](std::initializer_list<float> v) {
    std::vector<std::byte> b;
    for (const float x : v) {
      const std::uint16_t bits = fp32_to_bf16(x);
      b.push_back(static_cast<std::byte>(bits & 0xFF));
      b.push_back(static_cast<std::byte>(bits >> 8));
    }
    return b;
  };
  const std::vector<std::byte> gate = bf16({1.0f, 0.0f});
  const std::vector<std::byte> up = bf16({0.0f, 2.0f});
  const std::vector<std::byte> down = bf16({1.0f, -1.0f});
  const std::vector<ExpertWeights> experts = {{{gate, {}}, {up, {}}, {down, {}}}};
  const std::vector<std::int32_t> ids = {0};
  const std::vector<float> w = {0.5f};
  const std::vector<float> x = {2.0f, 3.0f};
  const double h = 2.0 / (1.0 + std::exp(-2.0)) * 6.0;  // the reference's order of operations
  std::vector<float> out = {1.0f, 0.0f};
  std::vector<double> scratch(3);
  expert_ffn_ref(s, experts, ids, w, x, out, scratch);
  EXPECT_EQ(out[0], static_cast<float>(1.0 + h / 2));
  EXPECT_EQ(out[1], static_cast<float>(-h / 2));
  // The grouped variant: silu and the products in fp32, a few ulps away.
  Buffers b(s);
  std::vector<float> grouped = {1.0f, 0.0f};
  expert_ffn_grouped(s, experts, ids, w, x, b.plan, b.scratch(), grouped);
  EXPECT_FLOAT_EQ(grouped[0], out[0]);
  EXPECT_FLOAT_EQ(grouped[1], out[1]);
}

TEST(ExpertFfnGrouped, RejectsBadInputBeforeWritingOut) {
  const ExpertFfnShape s{3, 2, 3, 256, 256, Format::kFp8E4m3};
  Layer layer = make_layer(s, 5);
  const std::vector<std::int32_t> ids = {0, 1, 1, 1, 0, 0};
  const std::vector<float> w(6, 0.5f);
  const std::vector<float> x = random_vector(3 * 256, 1.0f, 6);
  std::vector<float> out(3 * 256, 2.0f);
  Buffers b(s);
  const auto throws_with = [](auto&& call, const char* text) {
    EXPECT_THAT(call, testing::ThrowsMessage<InputError>(testing::HasSubstr(text)));
  };
  const auto run = [&](const ExpertFfnShape& shape, std::span<const ExpertWeights> experts, std::span<const std::int32_t> i,
                       std::span<const float> wt, std::span<float> o) {
    expert_ffn_grouped(shape, experts, i, wt, x, b.plan, b.scratch(), o);
  };
  throws_with([&] { run(s, layer.views, std::vector<std::int32_t>{0, 1, 1, 3, 0, 0}, w, out); }, "topk_ids[1][1] = 3");
  throws_with([&] { run(s, layer.views, std::vector<std::int32_t>{0, 1, -1, 1, 0, 0}, w, out); }, "topk_ids[1][0]");
  std::vector<float> bad_w = w;
  bad_w[5] = std::numeric_limits<float>::infinity();
  throws_with([&] { run(s, layer.views, ids, bad_w, out); }, "topk_weights[2][1]");
  throws_with([&] { run(s, layer.views, std::span(ids).first(5), w, out); }, "topk_ids has 5");
  throws_with([&] { run(s, std::span(layer.views).first(2), ids, w, out); }, "experts has 2");
  throws_with([&] { run(s, layer.views, ids, w, std::span(out).first(10)); }, "out has 10");
  throws_with([&] { run(ExpertFfnShape{3, 2, 3, 256, 250, Format::kQ4_K}, layer.views, ids, w, out); }, "multiples of 256");
  throws_with([&] { run(ExpertFfnShape{3, 0, 3, 256, 256, Format::kFp8E4m3}, layer.views, ids, w, out); }, "top_k 0");
  // Wrong matrix sizes: expert 2's down as an up matrix of another shape.
  std::vector<ExpertWeights> views = layer.views;
  views[2].down.scales = views[2].down.scales.first(1);
  throws_with([&] { run(s, views, ids, w, out); }, "expert 2 down");
  // A NaN scale in a tile that an active expert reads (expert 1's up, tile row 1).
  layer.experts[1].up.scales[2] = std::numeric_limits<float>::quiet_NaN();
  throws_with([&] { run(s, layer.views, ids, w, out); }, "expert 1 up scale [1][0]");
  std::vector<double> ref_scratch(512);
  throws_with([&] { expert_ffn_ref(s, layer.views, ids, w, x, out, ref_scratch); }, "expert 1 up scale [1][0]");
  layer.experts[1].up.scales[2] = 1e-3f;
  for (const float v : out) ASSERT_EQ(v, 2.0f);

  // Phases: slices out of range, a corrupted plan, scratch sizes, out overlapping h.
  build_routing_plan(s, ids, w, b.plan);
  const ExpertFfnScratch scratch = b.scratch();
  throws_with([&] { expert_ffn_gather(s, b.plan, x, scratch, 0, 7); }, "unit slice [0, 7)");
  throws_with([&] { expert_ffn_down(s, layer.views, b.plan, scratch, out, 1, 3); }, "unit slice");
  RoutingPlan bad = b.plan;
  bad.num_active_experts = 1;
  throws_with([&] { expert_ffn_gate_up(s, layer.views, bad, scratch, 0, 1); }, "active_experts");
  b.tokens[0] = 9;
  throws_with([&] { expert_ffn_gather(s, b.plan, x, scratch, 0, 6); }, "token 9");
  b.tokens[0] = 0;
  ExpertFfnScratch short_scratch = scratch;
  short_scratch.h = short_scratch.h.first(5);
  throws_with([&] { expert_ffn_gate_up(s, layer.views, b.plan, short_scratch, 0, 1); }, "scratch.h has 5");
  throws_with([&] { expert_ffn_down(s, layer.views, b.plan, scratch, std::span(b.h).first(3 * 256), 0, 2); },
              "out overlaps scratch.h");
  std::vector<float> bad_x = x;
  bad_x[300] = std::numeric_limits<float>::quiet_NaN();
  throws_with([&] { expert_ffn_gather(s, b.plan, bad_x, scratch, 0, 6); }, "x[1][44] is not finite");
  for (const float v : out) ASSERT_EQ(v, 2.0f);
}

TEST(WorkOf, ExpertFfnByHand) {
  // BF16, T 2, top_k 2 (P = 4), H 3, F 5, 3 active experts:
  // flops = 2*4*(2*5*3) + 2*4*3*5 + 3*4*5 + 2*4*3 = 240 + 120 + 60 + 24 = 444;
  // bytes = 3 * (2 * 5*3*2 + 3*5*2) + 4*2*3 + 8*2*3 + 8*4 = 3 * 90 + 24 + 48 + 32 = 374.
  const Work w = work_of(ExpertFfnWorkShape{{2, 2, 8, 3, 5, Format::kBf16}, 3});
  EXPECT_EQ(w.flops, 444.0);
  EXPECT_EQ(w.bytes, 374.0);
  // FP8, T 1, top_k 1, H 130, F 2, 1 active: matrices 2 x 130 (tiles 1 x 2) twice and 130 x 2
  // (tiles 2 x 1): bytes (260 + 8) * 2 + (260 + 8) + 4*130 + 8*130 + 8 = 804 + 520 + 1040 + 8.
  const Work f = work_of(ExpertFfnWorkShape{{1, 1, 4, 130, 2, Format::kFp8E4m3}, 1});
  EXPECT_EQ(f.bytes, 2372.0);
  EXPECT_EQ(f.flops, 2.0 * (2 * 2 * 130) + 2.0 * 130 * 2 + 3.0 * 2 + 2.0 * 130);
  // Q4_K, DeepSeek-V3 sized expert: 2048 x 7168 is 2048 rows of 28 blocks of 144 bytes.
  EXPECT_EQ(expert_matrix_weight_bytes(Format::kQ4_K, 2048, 7168), 2048 * 28 * 144);
  EXPECT_EQ(expert_matrix_weight_bytes(Format::kQ8_0, 7168, 2048), 7168 * 64 * 34);
  EXPECT_EQ(expert_matrix_num_scales(Format::kFp8E4m3, 7168, 2048), 56 * 16);
  EXPECT_EQ(expert_matrix_num_scales(Format::kQ8_0, 7168, 2048), 0);
  // No active experts: the activations, outputs and routing only.
  EXPECT_EQ(work_of(ExpertFfnWorkShape{{2, 2, 8, 3, 5, Format::kBf16}, 0}).bytes, 24.0 + 48.0 + 32.0);
}

}  // namespace
}  // namespace deepfit::kernels
