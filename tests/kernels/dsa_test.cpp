// DSA kernels (kernels/src/dsa_*.cpp): the index quantizers by hand and within their error bound,
// every dsa_index_fast code path the host has against dsa_index_ref with derived tolerances, the
// causal mask and slicing, dsa_topk_fast against dsa_topk_ref on data with ties, the entry checks,
// and the work_of overloads by hand. No timing here.
#include "kernels/dsa.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/quant_blocks.h"
#include "kernels/work.h"

namespace deepfit::kernels {
namespace {

using detail::IndexIsa;

constexpr std::size_t kDim = 128;
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<IndexIsa> host_paths() {
  std::vector<IndexIsa> out;
  for (const IndexIsa isa : {IndexIsa::kPortable, IndexIsa::kAvx512, IndexIsa::kAvx512Bf16}) {
    if (detail::cpu_has(isa)) out.push_back(isa);
  }
  return out;
}

const char* isa_name(IndexIsa isa) {
  switch (isa) {
    case IndexIsa::kPortable: return "portable";
    case IndexIsa::kAvx512: return "avx512";
    case IndexIsa::kAvx512Bf16: return "avx512_bf16";
  }
  return "?";
}

// ---- Quantizers

TEST(QuantizeIndexRows, WritesHandComputedBlocks) {
  // Block 0: amax 448. 448 * fp32(1/448) rounds to exactly 1 (fp32(1/448) is 1/448 (1 + 3 * 2^-26)),
  //   so s = 1 in both formats: 448 -> 0x7E, 1 -> 0x38, -0.5 -> 0xB0, 0.3 -> 1.25 * 2^-2 = 0x2A.
  // Block 1: all zeros: amax floors at 1e-4; ue8m0 s = 2^ceil(log2(1e-4 / 448)) = 2^-22 (the
  //   ratio is 2.23e-7, between 2^-23 and 2^-22); every code 0.
  // Block 2: amax 1: ratio fp32(1/448) = 2^-9 * 8/7 -> s = 2^-8, and 1 / 2^-8 = 256 -> 0x78; -1 -> 0xF8.
  std::vector<float> x(3 * kDim, 0.0f);
  x[0] = 448.0f;
  x[1] = 1.0f;
  x[2] = -0.5f;
  x[3] = 0.3f;
  x[2 * kDim] = 1.0f;
  x[2 * kDim + 5] = -1.0f;
  std::vector<std::uint8_t> codes(x.size(), 0xAA);
  std::vector<float> scales(3, -1.0f);
  quantize_index_rows(x, IndexScaleFormat::kUe8m0, codes, scales);
  EXPECT_EQ(scales[0], 1.0f);
  EXPECT_EQ(scales[1], 0x1p-22f);
  EXPECT_EQ(scales[2], 0x1p-8f);
  EXPECT_EQ(codes[0], 0x7E);
  EXPECT_EQ(codes[1], 0x38);
  EXPECT_EQ(codes[2], 0xB0);
  EXPECT_EQ(codes[3], 0x2A);
  EXPECT_EQ(codes[4], 0x00);
  EXPECT_EQ(codes[kDim + 7], 0x00);
  EXPECT_EQ(codes[2 * kDim], 0x78);
  EXPECT_EQ(codes[2 * kDim + 5], 0xF8);
  // kFp32: s = amax / 448 in fp32. Block 2: s = fp32(1/448), and 1 / s lands within an fp32 ulp
  // of 448, which rounds (or clamps) to the code of 448.
  quantize_index_rows(x, IndexScaleFormat::kFp32, codes, scales);
  EXPECT_EQ(scales[0], 1.0f);
  EXPECT_EQ(scales[1], 1e-4f * (1.0f / 448.0f));
  EXPECT_EQ(scales[2], 1.0f / 448.0f);
  EXPECT_EQ(codes[2 * kDim], 0x7E);
  EXPECT_EQ(codes[2 * kDim + 5], 0xFE);
}

TEST(QuantizeIndexRows, RoundTripWithinTheDerivedBound) {
  // dsa.h: |fp8(code) * s - x| <= 2^-4 |x| (1 + 2^-19) + 2^-10 s; ue8m0 scales are powers of two
  // at or above amax / 448; codes are never NaN.
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::size_t rows = 37;
  std::vector<float> x(rows * kDim);
  for (std::size_t i = 0; i < x.size(); ++i) {
    x[i] = normal(rng) * std::ldexp(1.0f, static_cast<int>(i / kDim % 23) - 11);  // magnitudes 2^-11 .. 2^11
  }
  x[5] = 3e4f;      // an outlier: most of its block becomes subnormal codes
  x[kDim] = 1e-30f;  // a block far below the 1e-4 floor
  for (std::size_t j = 1; j < kDim; ++j) x[kDim + j] = 0.0f;
  for (const IndexScaleFormat fmt : {IndexScaleFormat::kUe8m0, IndexScaleFormat::kFp32}) {
    std::vector<std::uint8_t> codes(x.size());
    std::vector<float> scales(rows);
    quantize_index_rows(x, fmt, codes, scales);
    for (std::size_t r = 0; r < rows; ++r) {
      double amax = 1e-4;
      for (std::size_t j = 0; j < kDim; ++j) amax = std::max(amax, std::fabs(static_cast<double>(x[r * kDim + j])));
      const double s = scales[r];
      if (fmt == IndexScaleFormat::kUe8m0) {
        int e = 0;
        EXPECT_EQ(std::frexp(s, &e), 0.5) << "row " << r;  // a power of two
        EXPECT_GE(s, static_cast<double>(static_cast<float>(amax)) / 448 * (1 - 0x1p-22)) << "row " << r;
      }
      for (std::size_t j = 0; j < kDim; ++j) {
        const std::size_t i = r * kDim + j;
        EXPECT_NE(codes[i] & 0x7F, 0x7F);
        const double back = static_cast<double>(fp8_e4m3_to_fp32(codes[i])) * s;
        const double xi = x[i];
        ASSERT_LE(std::fabs(back - xi), 0x1p-4 * std::fabs(xi) * (1 + 0x1p-19) + 0x1p-10 * s)
            << "format " << static_cast<int>(fmt) << " at " << i << ": x " << xi << " back " << back;
      }
    }
  }
}

TEST(QuantizeIndexRows, RejectsBadInputBeforeWriting) {
  std::vector<float> x(kDim, 1.0f);
  std::vector<std::uint8_t> codes(kDim, 9);
  std::vector<float> scales(1, 9.0f);
  const auto throws_with = [](auto&& call, const char* text) {
    EXPECT_THAT(call, testing::ThrowsMessage<InputError>(testing::HasSubstr(text)));
  };
  throws_with([&] { quantize_index_rows(std::span(x).first(100), IndexScaleFormat::kUe8m0, codes, scales); },
              "multiple of 128");
  throws_with([&] { quantize_index_rows(x, IndexScaleFormat::kUe8m0, std::span(codes).first(5), scales); }, "codes");
  std::vector<float> two(2);
  throws_with([&] { quantize_index_rows(x, IndexScaleFormat::kUe8m0, codes, two); }, "scales");
  x[77] = std::numeric_limits<float>::quiet_NaN();
  throws_with([&] { quantize_index_rows(x, IndexScaleFormat::kUe8m0, codes, scales); }, "x[77]");
  x[77] = kInf;
  throws_with([&] { quantize_index_rows(x, IndexScaleFormat::kFp32, codes, scales); }, "finite");
  for (const std::uint8_t c : codes) EXPECT_EQ(c, 9);
  EXPECT_EQ(scales[0], 9.0f);
}

TEST(QuantizeIndexQuery, FoldsQueryScalesIntoHeadWeights) {
  // weights[h] = ((gate * H^-0.5) * s_h) * 128^-0.5; H = 64 makes H^-0.5 = 1/8 exactly.
  const std::size_t H = 64;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> q(H * kDim);
  std::vector<float> gates(H);
  for (float& v : q) v = normal(rng);
  for (float& v : gates) v = normal(rng);
  std::vector<std::uint8_t> q_codes(q.size());
  std::vector<float> weights(H);
  quantize_index_query(q, gates, IndexScaleFormat::kUe8m0, q_codes, weights);
  std::vector<std::uint8_t> row_codes(q.size());
  std::vector<float> row_scales(H);
  quantize_index_rows(q, IndexScaleFormat::kUe8m0, row_codes, row_scales);
  EXPECT_EQ(q_codes, row_codes);
  const auto softmax_scale = static_cast<float>(1.0 / std::sqrt(128.0));
  for (std::size_t h = 0; h < H; ++h) {
    EXPECT_EQ(weights[h], ((gates[h] * 0.125f) * row_scales[h]) * softmax_scale) << "head " << h;
  }
  const auto throws_with = [](auto&& call, const char* text) {
    EXPECT_THAT(call, testing::ThrowsMessage<InputError>(testing::HasSubstr(text)));
  };
  throws_with([&] { quantize_index_query(q, std::vector<float>{}, IndexScaleFormat::kUe8m0, q_codes, weights); },
              "heads");
  const std::span<const float> one_head = std::span(q).first(kDim);
  throws_with([&] { quantize_index_query(one_head, gates, IndexScaleFormat::kUe8m0, q_codes, weights); }, "q has");
  gates[3] = kInf;
  throws_with([&] { quantize_index_query(q, gates, IndexScaleFormat::kUe8m0, q_codes, weights); }, "head_gates[3]");
}

// ---- Indexer

// One sequence's indexer inputs, from the quantizers (what a real cache holds).
struct Inputs {
  IndexerShape shape;
  std::vector<std::uint8_t> q_codes;  // [T][H][128]
  std::vector<float> weights;         // [T][H]
  std::vector<std::uint8_t> keys;     // [N][128]
  std::vector<float> key_scales;      // [N]
};

Inputs make_inputs(std::int64_t T, std::int64_t H, std::int64_t N, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto t = static_cast<std::size_t>(T);
  const auto h = static_cast<std::size_t>(H);
  const auto n = static_cast<std::size_t>(N);
  Inputs in{{T, H, N}, std::vector<std::uint8_t>(t * h * kDim), std::vector<float>(t * h),
            std::vector<std::uint8_t>(n * kDim), std::vector<float>(n)};
  std::vector<float> k(n * kDim);
  for (float& v : k) v = normal(rng);
  // A few outlier channels, as the keys of real models have; they push other values into subnormal codes.
  for (std::size_t i = 0; i < n; ++i) k[i * kDim + 17] *= 40.0f;
  quantize_index_rows(k, IndexScaleFormat::kUe8m0, in.keys, in.key_scales);
  for (std::size_t i = 0; i < t; ++i) {
    std::vector<float> q(h * kDim);
    std::vector<float> gates(h);
    for (float& v : q) v = normal(rng);
    for (float& v : gates) v = normal(rng);
    quantize_index_query(q, gates, IndexScaleFormat::kUe8m0, std::span(in.q_codes).subspan(i * h * kDim, h * kDim),
                         std::span(in.weights).subspan(i * h, h));
  }
  return in;
}

double gamma(double m) {
  const double u = 0x1p-24;
  return m * u / (1 - m * u);
}

// dsa.h: |s - s_ref| <= gamma(128 + H + 3) |key_scale| sum_h |w_h| sum_d |q k| for a seen
// position. Returns the bound for every [i][t] (masked positions get 0).
std::vector<double> tolerances(const Inputs& in) {
  std::vector<double> value(256);
  for (unsigned c = 0; c < 256; ++c) {
    value[c] = std::fabs(static_cast<double>(fp8_e4m3_to_fp32(static_cast<std::uint8_t>(c))));
  }
  const auto T = static_cast<std::size_t>(in.shape.num_queries);
  const auto H = static_cast<std::size_t>(in.shape.num_heads);
  const auto N = static_cast<std::size_t>(in.shape.ctx_len);
  const double g = gamma(static_cast<double>(kDim + H + 3));
  std::vector<double> out(T * N, 0.0);
  for (std::size_t i = 0; i < T; ++i) {
    for (std::size_t t = 0; t + T <= N + i; ++t) {
      double bound = 0.0;
      for (std::size_t h = 0; h < H; ++h) {
        const std::uint8_t* q = in.q_codes.data() + (i * H + h) * kDim;
        const std::uint8_t* k = in.keys.data() + t * kDim;
        double a = 0.0;
        for (std::size_t d = 0; d < kDim; ++d) a += value[q[d]] * value[k[d]];
        bound += std::fabs(static_cast<double>(in.weights[i * H + h])) * a;
      }
      out[i * N + t] = g * std::fabs(static_cast<double>(in.key_scales[t])) * bound;
    }
  }
  return out;
}

void run_fast(IndexIsa isa, const Inputs& in, std::vector<float>& scores, std::int64_t t_begin, std::int64_t t_end) {
  detail::dsa_index_fast_on(isa, in.shape, in.q_codes, in.weights, in.keys, in.key_scales, scores, t_begin, t_end);
}

std::vector<float> run_ref(const Inputs& in) {
  std::vector<float> ref(static_cast<std::size_t>(in.shape.num_queries * in.shape.ctx_len));
  dsa_index_ref(in.shape, in.q_codes, in.weights, in.keys, in.key_scales, ref, 0, in.shape.ctx_len);
  return ref;
}

TEST(DsaIndexRef, ScoresAHandComputedCase) {
  // H = 2, N = 2, T = 1. Query head 0: 1.0 (0x38) in dims 0 and 1; head 1: -1.0 (0xB8) in dim 0.
  // Keys: t0 = (2.0, 1.0) (0x40, 0x38), t1 = (-2.0, 0.5) (0xC0, 0x30); weights 0.5, 0.25; scales 2, 4.
  //   t0: head 0 dot 3, head 1 dot -2 -> ReLU 0: (0.5 * 3) * 2 = 3.
  //   t1: head 0 dot -1.5 -> 0, head 1 dot 2: (0.25 * 2) * 4 = 2.
  // Every value and partial sum is exact in fp32, so every variant gives these bits.
  Inputs in{{1, 2, 2}, std::vector<std::uint8_t>(2 * kDim, 0), {0.5f, 0.25f}, std::vector<std::uint8_t>(2 * kDim, 0),
            {2.0f, 4.0f}};
  in.q_codes[0] = 0x38;
  in.q_codes[1] = 0x38;
  in.q_codes[kDim] = 0xB8;
  in.keys[0] = 0x40;
  in.keys[1] = 0x38;
  in.keys[kDim] = 0xC0;
  in.keys[kDim + 1] = 0x30;
  EXPECT_EQ(run_ref(in), (std::vector<float>{3.0f, 2.0f}));
  for (const IndexIsa isa : host_paths()) {
    std::vector<float> s(2, 0.0f);
    run_fast(isa, in, s, 0, 2);
    EXPECT_EQ(s, (std::vector<float>{3.0f, 2.0f})) << isa_name(isa);
  }
  // Prefill: the same two keys plus a third, T = 2: query 0 sits at position 1, query 1 at 2.
  Inputs pre{{2, 2, 3}, std::vector<std::uint8_t>(4 * kDim, 0), {0.5f, 0.25f, 0.5f, 0.25f},
             std::vector<std::uint8_t>(3 * kDim, 0), {2.0f, 4.0f, 1.0f}};
  std::copy(in.q_codes.begin(), in.q_codes.end(), pre.q_codes.begin());
  std::copy(in.q_codes.begin(), in.q_codes.end(), pre.q_codes.begin() + 2 * kDim);
  std::copy(in.keys.begin(), in.keys.end(), pre.keys.begin());
  pre.keys[2 * kDim] = 0x38;  // t2 = (1.0, 0): head 0 dot 1 -> 0.5 * 1 * 1 = 0.5
  const std::vector<float> expected{3.0f, 2.0f, -kInf, 3.0f, 2.0f, 0.5f};
  EXPECT_EQ(run_ref(pre), expected);
  for (const IndexIsa isa : host_paths()) {
    std::vector<float> s(6, 0.0f);
    run_fast(isa, pre, s, 0, 3);
    EXPECT_EQ(s, expected) << isa_name(isa);
  }
}

TEST(DsaIndexFast, MatchesReferenceOnOddShapes) {
  // Heads 1, 13, 16, 17, 64, 100 and 128 give 1, 1, 1, 2, 4, 7 and 8 vectors of 16 heads, with
  // and without padding (blocks of 4 positions up to 4 vectors, of 2 beyond); 1, 2, 5 and 37
  // positions leave every tail of those blocks; T = 3 checks the causal mask.
  std::uint64_t seed = 11;
  for (const std::int64_t H : {1, 13, 16, 17, 64, 100, 128}) {
    for (const std::int64_t N : {1, 2, 5, 37}) {
      for (const std::int64_t T : {1, 3}) {
        if (T > N) continue;
        const Inputs in = make_inputs(T, H, N, seed++);
        const std::vector<float> ref = run_ref(in);
        const std::vector<double> tol = tolerances(in);
        for (const IndexIsa isa : host_paths()) {
          std::vector<float> s(ref.size(), std::numeric_limits<float>::quiet_NaN());
          const std::int64_t a = N / 3;
          const std::int64_t b = N - N / 5;
          run_fast(isa, in, s, 0, a);
          run_fast(isa, in, s, a, b);
          run_fast(isa, in, s, b, N);
          for (std::int64_t i = 0; i < T; ++i) {
            for (std::int64_t t = 0; t < N; ++t) {
              const auto at = static_cast<std::size_t>(i * N + t);
              if (t > N - T + i) {
                ASSERT_EQ(s[at], -kInf) << isa_name(isa) << " masked [" << i << "][" << t << "]";
                continue;
              }
              ASSERT_LE(std::fabs(static_cast<double>(s[at]) - static_cast<double>(ref[at])), tol[at])
                  << isa_name(isa) << " H " << H << " N " << N << " T " << T << " at [" << i << "][" << t << "]: ref "
                  << ref[at] << " got " << s[at];
            }
          }
        }
      }
    }
  }
}

TEST(DsaIndexFast, DecodesEveryKeyCode) {
  // Keys cycle through all 254 non-NaN codes (subnormals, both zeros, +-448) at every dimension;
  // query codes are random non-NaN bytes, head weights of both signs.
  const std::int64_t H = 20;
  const std::int64_t N = 254;
  Inputs in{{1, H, N}, std::vector<std::uint8_t>(H * kDim), std::vector<float>(H), std::vector<std::uint8_t>(N * kDim),
            std::vector<float>(N)};
  std::mt19937_64 rng(5);
  std::vector<std::uint8_t> codes;
  for (unsigned c = 0; c < 256; ++c) {
    if ((c & 0x7F) != 0x7F) codes.push_back(static_cast<std::uint8_t>(c));
  }
  for (std::size_t i = 0; i < in.keys.size(); ++i) in.keys[i] = codes[(i + i / kDim) % codes.size()];
  std::uniform_int_distribution<std::size_t> pick(0, codes.size() - 1);
  for (std::uint8_t& c : in.q_codes) c = codes[pick(rng)];
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& w : in.weights) w = normal(rng);
  for (float& s : in.key_scales) s = std::fabs(normal(rng)) + 0.1f;
  const std::vector<float> ref = run_ref(in);
  const std::vector<double> tol = tolerances(in);
  for (const IndexIsa isa : host_paths()) {
    std::vector<float> s(ref.size());
    run_fast(isa, in, s, 0, N);
    for (std::size_t t = 0; t < ref.size(); ++t) {
      ASSERT_LE(std::fabs(static_cast<double>(s[t]) - static_cast<double>(ref[t])), tol[t])
          << isa_name(isa) << " at " << t;
    }
  }
}

TEST(DsaIndexFast, ResultsDoNotDependOnTheSlicing) {
  const Inputs in = make_inputs(2, 64, 23, 99);
  for (const IndexIsa isa : host_paths()) {
    std::vector<float> whole(2 * 23);
    run_fast(isa, in, whole, 0, 23);
    std::vector<float> pieces(whole.size());
    for (std::int64_t t = 0; t < 23;) {  // slices of 1, 2, 3, ... positions
      const std::int64_t end = std::min<std::int64_t>(23, t + 1 + t / 4);
      run_fast(isa, in, pieces, t, end);
      t = end;
    }
    EXPECT_EQ(std::memcmp(whole.data(), pieces.data(), whole.size() * sizeof(float)), 0) << isa_name(isa);
  }
}

TEST(DsaIndexFast, WritesOnlyItsSlice) {
  const Inputs in = make_inputs(3, 16, 9, 4);
  for (const IndexIsa isa : host_paths()) {
    std::vector<float> s(27, 12345.0f);
    run_fast(isa, in, s, 2, 6);
    for (std::int64_t i = 0; i < 3; ++i) {
      for (std::int64_t t = 0; t < 9; ++t) {
        const float v = s[static_cast<std::size_t>(i * 9 + t)];
        if (t < 2 || t >= 6) {
          EXPECT_EQ(v, 12345.0f) << isa_name(isa);
        } else {
          EXPECT_NE(v, 12345.0f) << isa_name(isa);
        }
      }
    }
    std::vector<float> none(27, 7.0f);
    run_fast(isa, in, none, 4, 4);
    for (const float v : none) EXPECT_EQ(v, 7.0f);
  }
  // No queries: nothing to write.
  const Inputs empty = make_inputs(0, 4, 3, 5);
  std::vector<float> no_scores;
  dsa_index_fast(empty.shape, empty.q_codes, empty.weights, empty.keys, empty.key_scales, no_scores, 0, 3);
}

TEST(DsaIndexFast, NanKeyCodeGivesNanScoreInEveryVariant) {
  Inputs in = make_inputs(1, 17, 6, 8);
  in.keys[3 * kDim + 40] = 0xFF;  // position 3
  const std::vector<float> ref = run_ref(in);
  EXPECT_TRUE(std::isnan(ref[3]));
  for (const IndexIsa isa : host_paths()) {
    std::vector<float> s(6);
    run_fast(isa, in, s, 0, 6);
    for (std::size_t t = 0; t < 6; ++t) {
      EXPECT_EQ(std::isnan(s[t]), t == 3) << isa_name(isa) << " at " << t;
    }
  }
}

TEST(DsaIndexFast, RejectsBadShapesAndSpansBeforeWriting) {
  Inputs in = make_inputs(1, 4, 5, 6);
  std::vector<float> s(5, 5.0f);
  const auto throws_with = [](auto&& call, const char* text) {
    EXPECT_THAT(call, testing::ThrowsMessage<InputError>(testing::HasSubstr(text)));
  };
  const auto fast = [&](const IndexerShape& shape, std::int64_t b, std::int64_t e) {
    dsa_index_fast(shape, in.q_codes, in.weights, in.keys, in.key_scales, s, b, e);
  };
  throws_with([&] { fast(in.shape, 0, 6); }, "position slice");
  throws_with([&] { fast(in.shape, 3, 2); }, "position slice");
  throws_with([&] { fast(IndexerShape{1, 0, 5}, 0, 5); }, "num_heads");
  throws_with([&] { fast(IndexerShape{1, 129, 5}, 0, 5); }, "num_heads");
  throws_with([&] { fast(IndexerShape{6, 4, 5}, 0, 5); }, "num_queries <= ctx_len");
  throws_with([&] { fast(IndexerShape{1, 5, 5}, 0, 5); }, "q_codes has");
  throws_with([&] {
    dsa_index_ref(in.shape, in.q_codes, in.weights, std::span(in.keys).first(128), in.key_scales, s, 0, 5);
  },
              "keys has");
  throws_with([&] {
    dsa_index_fast(in.shape, in.q_codes, in.weights, in.keys, in.key_scales, std::span(s).first(4), 0, 5);
  },
              "scores has");
  in.key_scales[2] = kInf;
  throws_with([&] { fast(in.shape, 0, 5); }, "key_scales[2]");
  fast(in.shape, 3, 5);  // the bad scale lies outside this slice
  in.key_scales[2] = 1.0f;
  std::fill(s.begin(), s.end(), 5.0f);
  in.weights[1] = std::numeric_limits<float>::quiet_NaN();
  throws_with([&] { fast(in.shape, 0, 5); }, "head_weights[1]");
  in.weights[1] = 1.0f;
  in.q_codes[200] = 0x7F;
  throws_with([&] { fast(in.shape, 0, 5); }, "q_codes[200]");
  in.q_codes[200] = 0;
  throws_with([&] { detail::dsa_index_fast_on(IndexIsa::kAvx512, in.shape, in.q_codes, in.weights, in.keys,
                                              in.key_scales, std::span<float>(in.weights).first(4), 0, 1); },
              "scores has");
  for (const float v : s) EXPECT_EQ(v, 5.0f);
  // scores overlapping head_weights: one buffer viewed twice.
  std::vector<float> shared(9, 1.0f);
  Inputs one = make_inputs(1, 4, 5, 6);
  throws_with([&] { dsa_index_ref(one.shape, one.q_codes, std::span<const float>(shared).first(4), one.keys,
                                  one.key_scales, std::span<float>(shared).subspan(3, 5), 0, 5); },
              "overlaps");
}

TEST(DsaIndexFast, PortablePathIsAlwaysAvailable) {
  EXPECT_TRUE(detail::cpu_has(IndexIsa::kPortable));
  EXPECT_TRUE(detail::cpu_has(detail::best_index_isa()));
  if (detail::cpu_has(IndexIsa::kAvx512Bf16)) {
    EXPECT_TRUE(detail::cpu_has(IndexIsa::kAvx512));  // BF16 implies the base set
  }
}

// ---- Top-k

// Top-k by the reference, or by dsa_topk_fast on a forced path.
std::vector<std::int32_t> topk(const std::vector<float>& scores, std::int64_t k, const IndexIsa* fast_path) {
  const auto n = static_cast<std::int64_t>(scores.size());
  std::vector<std::int32_t> out(static_cast<std::size_t>(std::min(k, n)), -1);
  std::vector<std::uint32_t> scratch(static_cast<std::size_t>(dsa_topk_scratch_size(TopkShape{n, k})));
  if (fast_path != nullptr) {
    detail::dsa_topk_fast_on(*fast_path, scores, k, out, scratch);
  } else {
    dsa_topk_ref(scores, k, out, scratch);
  }
  return out;
}

// nullptr (the reference) followed by every fast path the host has.
std::vector<const IndexIsa*> topk_variants() {
  static const std::vector<IndexIsa> paths = host_paths();
  std::vector<const IndexIsa*> out{nullptr};
  for (const IndexIsa& isa : paths) out.push_back(&isa);
  return out;
}

const char* variant_name(const IndexIsa* v) { return v == nullptr ? "ref" : isa_name(*v); }

TEST(DsaTopk, SelectsHandComputedPositions) {
  // 3 at positions 1, 2 and 5 tie: the lower positions win; the result is in ascending order.
  const std::vector<float> s{1.0f, 3.0f, 3.0f, 2.0f, -kInf, 3.0f};
  using P = std::vector<std::int32_t>;
  for (const IndexIsa* v : topk_variants()) {
    SCOPED_TRACE(variant_name(v));
    EXPECT_EQ(topk(s, 1, v), (P{1}));
    EXPECT_EQ(topk(s, 2, v), (P{1, 2}));
    EXPECT_EQ(topk(s, 4, v), (P{1, 2, 3, 5}));
    EXPECT_EQ(topk(s, 5, v), (P{0, 1, 2, 3, 5}));
    EXPECT_EQ(topk(s, 6, v), (P{0, 1, 2, 3, 4, 5}));
    EXPECT_EQ(topk(s, 2048, v), (P{0, 1, 2, 3, 4, 5}));  // ctx_len < k: all
    EXPECT_TRUE(topk(s, 0, v).empty());
    EXPECT_TRUE(topk({}, 3, v).empty());
    // -0 ties +0, so the lower position wins; -inf ranks below every number.
    EXPECT_EQ(topk({-1.0f, -0.0f, 0.0f}, 1, v), (P{1}));
    EXPECT_EQ(topk({0.0f, -0.0f, -1.0f}, 2, v), (P{0, 1}));
    EXPECT_EQ(topk({-kInf, -3e38f, kInf, -kInf}, 2, v), (P{1, 2}));
    // 40 scores: the vector path's 16-wide blocks plus a scalar tail of 8; the top 3 straddle them.
    std::vector<float> forty(40, 0.0f);
    forty[3] = 5.0f;
    forty[17] = 5.0f;
    forty[38] = 6.0f;
    forty[39] = 5.0f;
    EXPECT_EQ(topk(forty, 3, v), (P{3, 17, 38}));
  }
}

TEST(DsaTopk, FastMatchesReferenceOnDataWithTies) {
  std::mt19937_64 rng(21);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> small(-3, 3);
  // Distributions: many ties (7 values); normal floats; one value; values a few ulps apart (1 +
  // tiny steps); mixed signs with zeros and -inf; rising and falling ramps with ties.
  const auto fill = [&](std::vector<float>& s, int kind) {
    for (std::size_t i = 0; i < s.size(); ++i) {
      switch (kind) {
        case 0: s[i] = static_cast<float>(small(rng)); break;
        case 1: s[i] = normal(rng); break;
        case 2: s[i] = 0.5f; break;
        case 3: s[i] = 1.0f + static_cast<float>(small(rng) + 3) * 0x1p-23f * static_cast<float>(1 + i % 300); break;
        case 4: s[i] = i % 5 == 0 ? -kInf : (i % 7 == 0 ? -0.0f : normal(rng) * 1e-3f); break;
        case 5: s[i] = static_cast<float>(i / 3); break;          // rising, in tied triples: many refills
        default: s[i] = -static_cast<float>(i / 2); break;        // falling: the first m win
      }
    }
  };
  const std::vector<const IndexIsa*> variants = topk_variants();
  for (const std::int64_t n : {1, 2, 7, 100, 1000, 4099, 20000}) {
    for (int kind = 0; kind < 7; ++kind) {
      std::vector<float> s(static_cast<std::size_t>(n));
      fill(s, kind);
      // Every k on the small sizes; on the large ones (where the sampled threshold is used from
      // n = 16384 on) the k that matter, to keep the run short.
      const std::vector<std::int64_t> ks = n <= 1000 ? std::vector<std::int64_t>{1, 2, 17, 2048, n - 1, n, n + 5}
                                                     : std::vector<std::int64_t>{1, 17, 2048, n - 1};
      for (const std::int64_t k : ks) {
        if (k < 0) continue;
        const std::vector<std::int32_t> ref = topk(s, k, nullptr);
        ASSERT_TRUE(std::is_sorted(ref.begin(), ref.end()));
        for (std::size_t v = 1; v < variants.size(); ++v) {
          ASSERT_EQ(topk(s, k, variants[v]), ref)
              << variant_name(variants[v]) << " n " << n << " kind " << kind << " k " << k;
        }
      }
    }
  }
}

TEST(DsaTopk, StaysExactWhenTheSampledThresholdMisleads) {
  // dsa_topk_fast starts from the key that about 2m scores reach in a sample of every 64th score.
  // Here the sampled positions hold 10 and all others less: only n / 64 = 512 scores reach the
  // sampled key, fewer than k, so the fast variant must start over from theta = 0. With the sampled
  // positions low instead, far more than 2m scores pass and the buffer is cut repeatedly.
  std::mt19937_64 rng(8);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::size_t n = 32768;
  std::vector<float> high(n);
  std::vector<float> low(n);
  for (std::size_t i = 0; i < n; ++i) {
    high[i] = i % 64 == 0 ? 10.0f : normal(rng);
    low[i] = i % 64 == 0 ? -10.0f : normal(rng);
  }
  for (const std::int64_t k : {3000, 2048}) {
    const std::vector<std::int32_t> ref_high = topk(high, k, nullptr);
    const std::vector<std::int32_t> ref_low = topk(low, k, nullptr);
    for (const IndexIsa* v : topk_variants()) {
      if (v == nullptr) continue;
      EXPECT_EQ(topk(high, k, v), ref_high) << variant_name(v) << " k " << k;
      EXPECT_EQ(topk(low, k, v), ref_low) << variant_name(v) << " k " << k;
    }
  }
}

TEST(DsaTopk, ReferenceAgreesWithAFullSortByHand) {
  // The k largest by a full sort of (score desc, position asc) pairs, computed independently.
  std::mt19937_64 rng(2);
  std::uniform_int_distribution<int> v(0, 40);
  std::vector<float> s(500);
  for (float& x : s) x = static_cast<float>(v(rng)) * 0.25f;
  std::vector<std::pair<float, std::int32_t>> pairs;
  for (std::size_t i = 0; i < s.size(); ++i) pairs.emplace_back(-s[i], static_cast<std::int32_t>(i));
  std::sort(pairs.begin(), pairs.end());
  std::vector<std::int32_t> expected;
  for (std::size_t j = 0; j < 77; ++j) expected.push_back(pairs[j].second);
  std::sort(expected.begin(), expected.end());
  for (const IndexIsa* variant : topk_variants()) EXPECT_EQ(topk(s, 77, variant), expected) << variant_name(variant);
}

TEST(DsaTopk, RejectsBadInputBeforeWriting) {
  std::vector<float> s{1.0f, 2.0f, 3.0f, 4.0f};
  std::vector<std::int32_t> out(2, -7);
  std::vector<std::uint32_t> scratch(static_cast<std::size_t>(dsa_topk_scratch_size(TopkShape{4, 9})));
  const auto throws_with = [](auto&& call, const char* text) {
    EXPECT_THAT(call, testing::ThrowsMessage<InputError>(testing::HasSubstr(text)));
  };
  for (const auto f : {&dsa_topk_ref, &dsa_topk_fast}) {
    throws_with([&] { f(s, -1, out, scratch); }, "k -1");
    throws_with([&] { f(s, 3, out, scratch); }, "positions has 2");
    throws_with([&] { f(s, 2, out, std::span(scratch).first(4107)); }, "scratch has 4107");
    s[2] = std::numeric_limits<float>::quiet_NaN();
    throws_with([&] { f(s, 2, out, scratch); }, "scores[2] is NaN");
    throws_with([&] { f(s, 9, std::span(out).first(0), scratch); }, "positions has 0");
    std::vector<std::int32_t> all(4, -7);
    throws_with([&] { f(s, 4, all, scratch); }, "NaN");  // also when every position is kept
    for (const std::int32_t p : all) EXPECT_EQ(p, -7);
    s[2] = 3.0f;
  }
  for (const std::int32_t p : out) EXPECT_EQ(p, -7);
  throws_with([] { (void)dsa_topk_scratch_size(TopkShape{-1, 2}); }, "ctx_len -1");
  throws_with([] { (void)dsa_topk_scratch_size(TopkShape{5, -2}); }, "k -2");
}

// ---- Work

TEST(WorkOf, IndexerSliceByHand) {
  // Decode, H = 64, 1000 positions: per position 2*64*128 + 2*64 + 1 = 16513 FLOPs, 132 bytes of
  // keys and 4 of score; plus the query once: 64 * (128 + 4) = 8448 bytes.
  const Work decode = work_of(IndexerShape{1, 64, 1000});
  EXPECT_EQ(decode.flops, 1000.0 * 16513);
  EXPECT_EQ(decode.bytes, 1000.0 * 136 + 8448);
  // Prefill T = 3 after P = 2 (N = 5), H = 1, slice [1, 4): query 0 (position 2) sees 1, 2; query 1
  // (position 3) sees 1, 2, 3; query 2 (position 4) sees 1, 2, 3: V = 8 pairs of 2*128 + 2 + 1 = 259.
  // Bytes: 3 keys * 132 + 3 queries * 132 + 4 * 3 * 3 scores = 396 + 396 + 36.
  const Work pre = work_of(IndexerSlice{{3, 1, 5}, 1, 4});
  EXPECT_EQ(pre.flops, 8.0 * 259);
  EXPECT_EQ(pre.bytes, 828.0);
  // The same prefill, slice [4, 5): only query 2 sees position 4 (V = 1); 132 + 396 + 4 * 3 bytes.
  const Work last = work_of(IndexerSlice{{3, 1, 5}, 4, 5});
  EXPECT_EQ(last.flops, 259.0);
  EXPECT_EQ(last.bytes, 132.0 + 396 + 12);
  // An empty slice: no FLOPs, only the queries' codes and weights (2 queries * 8 heads * 132).
  const Work empty = work_of(IndexerSlice{{2, 8, 10}, 6, 6});
  EXPECT_EQ(empty.flops, 0.0);
  EXPECT_EQ(empty.bytes, 2.0 * 8 * 132);
}

TEST(WorkOf, TopkByHand) {
  const Work w = work_of(TopkShape{131072, 2048});
  EXPECT_EQ(w.flops, 131072.0);
  EXPECT_EQ(w.bytes, 4.0 * 131072 + 4.0 * 2048);
  EXPECT_EQ(work_of(TopkShape{10, 2048}).bytes, 80.0);  // all 10 positions written
  // max(ctx_len, 6 min(k, ctx_len) + 4096)
  EXPECT_EQ(dsa_topk_scratch_size(TopkShape{131072, 2048}), 131072);
  EXPECT_EQ(dsa_topk_scratch_size(TopkShape{10000, 2048}), 6 * 2048 + 4096);
  EXPECT_EQ(dsa_topk_scratch_size(TopkShape{10, 2048}), 4156);
}

}  // namespace
}  // namespace deepfit::kernels
