// The BF16 expert GEMM (kernels/src/moe_gemm_bf16dot.cpp): the activation packer's layout and
// rounding, every code path the host has against moe_gemm_ref on awkward shapes with derived
// tolerances, slices, the entry checks, and work_of by hand. No timing here.
#include "kernels/moe_gemm_bf16.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "kernels/error.h"
#include "kernels/moe_gemm.h"
#include "kernels/quant_blocks.h"
#include "kernels/work.h"

namespace deepfit::kernels {
namespace {

using detail::GemmBf16Isa;

std::vector<GemmBf16Isa> host_paths() {
  std::vector<GemmBf16Isa> out;
  for (const GemmBf16Isa isa : {GemmBf16Isa::kPortable, GemmBf16Isa::kAvx512Bf16}) {
    if (detail::cpu_has(isa)) out.push_back(isa);
  }
  return out;
}

const char* isa_name(GemmBf16Isa isa) { return isa == GemmBf16Isa::kPortable ? "portable" : "avx512_bf16"; }

struct Matrix {
  MatvecShape shape;
  std::vector<std::byte> bytes;  // [rows][cols] bf16, little-endian
  std::vector<float> values;     // [rows][cols], the same weights as fp32
};

Matrix make_matrix(std::int64_t batch, std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const auto n = static_cast<std::size_t>(rows * cols);
  Matrix m{{batch, rows, cols, WeightFormat::kBf16}, std::vector<std::byte>(2 * n), std::vector<float>(n)};
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint16_t b = fp32_to_bf16(normal(rng));
    m.bytes[2 * i] = static_cast<std::byte>(b & 0xFF);
    m.bytes[2 * i + 1] = static_cast<std::byte>(b >> 8);
    m.values[i] = bf16_to_fp32(b);
  }
  return m;
}

std::vector<float> make_activations(std::int64_t batch, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(batch * cols));
  for (float& v : x) v = normal(rng);
  if (!x.empty()) x[x.size() / 2] = 9.0f;
  return x;
}

std::vector<float> rounded_to_bf16(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = bf16_to_fp32(fp32_to_bf16(x[i]));
  return out;
}

std::vector<std::uint16_t> pack(GemmBf16Isa isa, const std::vector<float>& x, std::int64_t batch, std::int64_t cols) {
  std::vector<std::uint16_t> packed(static_cast<std::size_t>(packed_activations_bf16_size(batch, cols)), 0xDEAD);
  detail::pack_activations_bf16_on(isa, x, batch, cols, packed);
  return packed;
}

double gamma(double m) {
  const double u = 0x1p-24;
  return m * u / (1 - m * u);
}

// Tolerances for output [b][n], with S = sum_k |W x| and S^ = sum_k |W bf16(x)|.
// Derivation. bf16(x) rounds to nearest with an 8-bit significand, so |bf16(x) - x| <= 2^-8 |x|
// (up to subnormals, below). Every product W bf16(x) is exact in fp32 (8 by 8 significand bits).
// The kernel adds the cols products (and a zero partner for odd cols) in fp32, in an order that
// VDPBF16PS does not document; any order of summing m terms errs by at most gamma(m - 1) times the
// sum of their magnitudes, so by gamma(cols) S^. The reference sums in double (error about
// cols 2^-53 S, far below u S) and rounds once to fp32 (u |y| <= u S): together below
// gamma(cols + 2) S^ - gamma(cols) S^. VDPBF16PS reads subnormal inputs as zero and flushes
// subnormal results: each such event moves the sum by less than 2^-126 times |W|, |bf16(x)| or 1,
// hence the (|W| + |bf16(x)| + 2) 2^-126 per column (never reached by these data, kept for rigour).
//   Against moe_gemm_ref on bf16(x) (the kernel's own arithmetic, tight):
//     |y - y_ref^| <= gamma(cols + 2) S^ + sum_k (|W| + |bf16(x)| + 2) 2^-126.
//   Against moe_gemm_ref on x (moe_gemm_bf16.h's contract), adding the rounding of x,
//   |W| |bf16(x) - x| <= 2^-8 |W x| per column, with S^ <= (1 + 2^-8) S and |bf16(x)| <= 2 |x|:
//     |y - y_ref| <= 2^-8 S + (1 + 2^-8) gamma(cols + 2) S + sum_k (|W| + 2 |x| + 2) 2^-126.
struct Tolerances {
  double rounded_x;  // against moe_gemm_ref on bf16(x)
  double exact_x;    // against moe_gemm_ref on x
};

Tolerances tolerances(const Matrix& m, const std::vector<float>& x, const std::vector<float>& xr, std::int64_t b,
                      std::int64_t n) {
  const auto K = static_cast<std::size_t>(m.shape.cols);
  const float* w = m.values.data() + static_cast<std::size_t>(n) * K;
  const float* xb = x.data() + static_cast<std::size_t>(b) * K;
  const float* xrb = xr.data() + static_cast<std::size_t>(b) * K;
  double s = 0.0;
  double s_rounded = 0.0;
  double flush = 0.0;
  double flush_rounded = 0.0;
  for (std::size_t k = 0; k < K; ++k) {
    const double wk = std::fabs(static_cast<double>(w[k]));
    s += wk * std::fabs(static_cast<double>(xb[k]));
    s_rounded += wk * std::fabs(static_cast<double>(xrb[k]));
    flush += (wk + 2 * std::fabs(static_cast<double>(xb[k])) + 2) * 0x1p-126;
    flush_rounded += (wk + std::fabs(static_cast<double>(xrb[k])) + 2) * 0x1p-126;
  }
  const double g = gamma(static_cast<double>(K) + 2);
  return {g * s_rounded + flush_rounded, 0x1p-8 * s + (1 + 0x1p-8) * g * s + flush};
}

struct Shape {
  std::int64_t batch;
  std::int64_t rows;
  std::int64_t cols;
};

// Batch 1, 3, 17, 64 and 100 (panels of 16, 16, 32, 64 and 64 + 48 vectors, so every tile width),
// rows 1, 7 and 129 (tails below every tile height, and 129 = 8 x 16 + 1 = 10 x 12 + 9 = 21 x 6 + 3),
// cols 1, 2, 30, 31 and 100 (odd ones end with a lone weight). 7168 (two column blocks of 1792
// pairs, so partial sums go through y) and 4097 (two blocks, the second ending with the lone
// weight) on fewer shapes, to keep the reference's run time low in Debug + ASan builds.
std::vector<Shape> shapes() {
  std::vector<Shape> out;
  for (const std::int64_t cols : {1, 2, 30, 31, 100}) {
    for (const std::int64_t rows : {1, 7, 129}) {
      for (const std::int64_t batch : {1, 3, 17, 64}) out.push_back({batch, rows, cols});
    }
    out.push_back({100, 7, cols});
  }
  for (const std::int64_t batch : {1, 17}) out.push_back({batch, 7, 7168});
  out.push_back({64, 1, 7168});
  out.push_back({3, 129, 7168});
  out.push_back({3, 7, 4097});
  return out;
}

TEST(MoeGemmBf16dot, MatchesReferenceOnOddShapes) {
  std::uint64_t seed = 1;
  for (const Shape& sh : shapes()) {
    const Matrix m = make_matrix(sh.batch, sh.rows, sh.cols, seed++);
    const std::vector<float> x = make_activations(sh.batch, sh.cols, seed++);
    const std::vector<float> xr = rounded_to_bf16(x);
    std::vector<float> ref(static_cast<std::size_t>(sh.batch * sh.rows));
    std::vector<float> ref_rounded(ref.size());
    moe_gemm_ref(m.shape, m.bytes, x, ref, 0, sh.rows);
    moe_gemm_ref(m.shape, m.bytes, xr, ref_rounded, 0, sh.rows);
    std::vector<Tolerances> tol(ref.size());
    for (std::int64_t b = 0; b < sh.batch; ++b) {
      for (std::int64_t n = 0; n < sh.rows; ++n) tol[static_cast<std::size_t>(b * sh.rows + n)] = tolerances(m, x, xr, b, n);
    }
    for (const GemmBf16Isa isa : host_paths()) {
      const std::vector<std::uint16_t> packed = pack(isa, x, sh.batch, sh.cols);
      const ActivationsBf16 xp{sh.batch, sh.cols, packed};
      // Three slices: [0, rows/3) and [rows/3, rows - rows/5) leave tails below the tile height.
      std::vector<float> y(ref.size(), std::numeric_limits<float>::quiet_NaN());
      const std::int64_t a = sh.rows / 3;
      const std::int64_t c = sh.rows - sh.rows / 5;
      detail::moe_gemm_bf16dot_on(isa, m.shape, m.bytes, xp, y, 0, a);
      detail::moe_gemm_bf16dot_on(isa, m.shape, m.bytes, xp, y, a, c);
      detail::moe_gemm_bf16dot_on(isa, m.shape, m.bytes, xp, y, c, sh.rows);
      for (std::size_t i = 0; i < y.size(); ++i) {
        const double got = static_cast<double>(y[i]);
        ASSERT_LE(std::fabs(got - static_cast<double>(ref_rounded[i])), tol[i].rounded_x)
            << isa_name(isa) << " batch " << sh.batch << " rows " << sh.rows << " cols " << sh.cols << " at [" << i / static_cast<std::size_t>(sh.rows) << "]["
            << i % static_cast<std::size_t>(sh.rows) << "]: ref(bf16 x) " << ref_rounded[i] << " got " << y[i];
        ASSERT_LE(std::fabs(got - static_cast<double>(ref[i])), tol[i].exact_x)
            << isa_name(isa) << " batch " << sh.batch << " rows " << sh.rows << " cols " << sh.cols << " index " << i;
      }
    }
  }
}

TEST(MoeGemmBf16dot, MultipliesSmallIntegersExactly) {
  // W = [[1, 2, 3], [-1, 0, 0.5]] and x = [[1, 1, 2], [0, 4, -2]], all exact in bf16 with exact
  // sums: y[0] = [1 + 2 + 6, -1 + 0 + 1] = [9, 0], y[1] = [0 + 8 - 6, 0 + 0 - 1] = [2, -1].
  const float w[6] = {1.0f, 2.0f, 3.0f, -1.0f, 0.0f, 0.5f};
  std::vector<std::byte> bytes(12);
  for (std::size_t i = 0; i < 6; ++i) {
    const std::uint16_t b = fp32_to_bf16(w[i]);
    bytes[2 * i] = static_cast<std::byte>(b & 0xFF);
    bytes[2 * i + 1] = static_cast<std::byte>(b >> 8);
  }
  const std::vector<float> x = {1.0f, 1.0f, 2.0f, 0.0f, 4.0f, -2.0f};
  const MatvecShape shape{2, 2, 3, WeightFormat::kBf16};
  for (const GemmBf16Isa isa : host_paths()) {
    const std::vector<std::uint16_t> packed = pack(isa, x, 2, 3);
    std::vector<float> y(4);
    detail::moe_gemm_bf16dot_on(isa, shape, bytes, ActivationsBf16{2, 3, packed}, y, 0, 2);
    EXPECT_EQ(y, (std::vector<float>{9.0f, 0.0f, 2.0f, -1.0f})) << isa_name(isa);
  }
}

TEST(MoeGemmBf16dot, ReadsAnOddRowsLastWeightAlone) {
  // W = [[1, 2, 3], [inf, 1, 1]], x = [1, 1, 1]: y = [6, inf]. A kernel that read row 0's last
  // weight as a pair would take row 1's infinity as its partner, and inf * 0 = NaN.
  const float w[6] = {1.0f, 2.0f, 3.0f, std::numeric_limits<float>::infinity(), 1.0f, 1.0f};
  std::vector<std::byte> bytes(12);
  for (std::size_t i = 0; i < 6; ++i) {
    const std::uint16_t b = fp32_to_bf16(w[i]);
    bytes[2 * i] = static_cast<std::byte>(b & 0xFF);
    bytes[2 * i + 1] = static_cast<std::byte>(b >> 8);
  }
  const std::vector<float> x = {1.0f, 1.0f, 1.0f};
  for (const GemmBf16Isa isa : host_paths()) {
    const std::vector<std::uint16_t> packed = pack(isa, x, 1, 3);
    std::vector<float> y(2);
    detail::moe_gemm_bf16dot_on(isa, MatvecShape{1, 2, 3, WeightFormat::kBf16}, bytes, ActivationsBf16{1, 3, packed},
                                y, 0, 2);
    EXPECT_EQ(y[0], 6.0f) << isa_name(isa);
    EXPECT_EQ(y[1], std::numeric_limits<float>::infinity()) << isa_name(isa);
  }
}

TEST(MoeGemmBf16dot, ResultsDoNotDependOnTheSlicing) {
  // Batch 100 (panels of 64 and 48, tiles of 6 and 8 rows), and cols 4097 (two column blocks, a
  // lone last weight) with batch 3 (tiles of 16 rows); slices of 1, 5 and 13 rows against one call.
  for (const Shape sh : {Shape{100, 31, 130}, Shape{3, 31, 4097}}) {
    const Matrix m = make_matrix(sh.batch, sh.rows, sh.cols, 99);
    const std::vector<float> x = make_activations(sh.batch, sh.cols, 98);
    const auto size = static_cast<std::size_t>(sh.batch * sh.rows);
    for (const GemmBf16Isa isa : host_paths()) {
      const std::vector<std::uint16_t> packed = pack(isa, x, sh.batch, sh.cols);
      const ActivationsBf16 xp{sh.batch, sh.cols, packed};
      std::vector<float> whole(size);
      detail::moe_gemm_bf16dot_on(isa, m.shape, m.bytes, xp, whole, 0, sh.rows);
      for (const std::int64_t step : {1, 5, 13}) {
        std::vector<float> pieces(size);
        for (std::int64_t n = 0; n < sh.rows; n += step) {
          detail::moe_gemm_bf16dot_on(isa, m.shape, m.bytes, xp, pieces, n, std::min(n + step, sh.rows));
        }
        for (std::size_t i = 0; i < size; ++i) {
          ASSERT_EQ(std::bit_cast<std::uint32_t>(whole[i]), std::bit_cast<std::uint32_t>(pieces[i]))
              << isa_name(isa) << " cols " << sh.cols << " step " << step << " index " << i;
        }
      }
    }
  }
}

TEST(MoeGemmBf16dot, ResultsDoNotDependOnTheBatch) {
  // Vector 0's outputs are the same bits alone (a 16-wide panel) and among 70 (a 64-wide one).
  const Matrix m = make_matrix(70, 13, 130, 5);
  const std::vector<float> x = make_activations(70, 130, 6);
  const std::vector<float> x0(x.begin(), x.begin() + 130);
  const MatvecShape one{1, 13, 130, WeightFormat::kBf16};
  for (const GemmBf16Isa isa : host_paths()) {
    const std::vector<std::uint16_t> packed = pack(isa, x, 70, 130);
    const std::vector<std::uint16_t> packed0 = pack(isa, x0, 1, 130);
    std::vector<float> y(70 * 13);
    std::vector<float> y0(13);
    detail::moe_gemm_bf16dot_on(isa, m.shape, m.bytes, ActivationsBf16{70, 130, packed}, y, 0, 13);
    detail::moe_gemm_bf16dot_on(isa, one, m.bytes, ActivationsBf16{1, 130, packed0}, y0, 0, 13);
    for (std::size_t n = 0; n < 13; ++n) {
      EXPECT_EQ(std::bit_cast<std::uint32_t>(y[n]), std::bit_cast<std::uint32_t>(y0[n])) << isa_name(isa) << " " << n;
    }
  }
}

TEST(MoeGemmBf16dot, WritesOnlyItsSlice) {
  constexpr float kSentinel = -12345.0f;
  const Matrix m = make_matrix(20, 13, 64, 7);
  const std::vector<float> x = make_activations(20, 64, 8);
  for (const GemmBf16Isa isa : host_paths()) {
    const std::vector<std::uint16_t> packed = pack(isa, x, 20, 64);
    std::vector<float> y(260, kSentinel);
    detail::moe_gemm_bf16dot_on(isa, m.shape, m.bytes, ActivationsBf16{20, 64, packed}, y, 5, 11);
    for (std::int64_t b = 0; b < 20; ++b) {
      for (std::int64_t n = 0; n < 13; ++n) {
        const float v = y[static_cast<std::size_t>(b * 13 + n)];
        if (n >= 5 && n < 11) {
          EXPECT_NE(v, kSentinel) << isa_name(isa) << " [" << b << "][" << n << "]";
        } else {
          EXPECT_EQ(v, kSentinel) << isa_name(isa) << " [" << b << "][" << n << "]";
        }
      }
    }
  }
}

TEST(MoeGemmBf16dot, HandlesEmptyShapes) {
  for (const GemmBf16Isa isa : host_paths()) {
    // cols 0: every output of the slice is an empty sum, 0.
    const MatvecShape no_cols{2, 3, 0, WeightFormat::kBf16};
    std::vector<float> y(6, 7.0f);
    detail::moe_gemm_bf16dot_on(isa, no_cols, {}, ActivationsBf16{2, 0, {}}, y, 1, 3);
    EXPECT_EQ(y, (std::vector<float>{7.0f, 0.0f, 0.0f, 7.0f, 0.0f, 0.0f})) << isa_name(isa);
    // batch 0 and an empty slice write nothing.
    const Matrix m = make_matrix(0, 4, 64, 3);
    std::vector<float> none;
    EXPECT_NO_THROW(detail::moe_gemm_bf16dot_on(isa, m.shape, m.bytes, ActivationsBf16{0, 64, {}}, none, 0, 4));
    const Matrix one = make_matrix(1, 4, 64, 3);
    const std::vector<std::uint16_t> packed = pack(isa, std::vector<float>(64, 1.0f), 1, 64);
    std::vector<float> y1(4, 7.0f);
    detail::moe_gemm_bf16dot_on(isa, one.shape, one.bytes, ActivationsBf16{1, 64, packed}, y1, 2, 2);
    EXPECT_EQ(y1, std::vector<float>(4, 7.0f));
  }
}

// ---- Packer

// Where moe_gemm_bf16.h puts x[b][k]: panel j = b / 64 of width min(64, padded - 64 j) starts at
// 2 * num_pairs * 64 j; inside it, pair p = k / 2 of vector v = b % 64 is the word p * width + v.
std::size_t packed_index(std::int64_t batch, std::int64_t cols, std::int64_t b, std::int64_t k) {
  const std::int64_t num_pairs = (cols + 1) / 2;
  const std::int64_t padded = (batch + 15) / 16 * 16;
  const std::int64_t j = b / 64;
  const std::int64_t width = std::min<std::int64_t>(64, padded - 64 * j);
  return static_cast<std::size_t>(2 * num_pairs * 64 * j + 2 * ((k / 2) * width + b % 64) + k % 2);
}

TEST(PackActivationsBf16, SizeByHand) {
  EXPECT_EQ(packed_activations_bf16_size(17, 5), 2 * 3 * 32);  // 3 pairs, 32 vectors
  EXPECT_EQ(packed_activations_bf16_size(64, 7168), 64 * 7168);
  EXPECT_EQ(packed_activations_bf16_size(100, 2), 2 * 1 * 112);
  EXPECT_EQ(packed_activations_bf16_size(0, 7), 0);
  EXPECT_EQ(packed_activations_bf16_size(3, 0), 0);
  EXPECT_THROW(packed_activations_bf16_size(-1, 4), InputError);
  EXPECT_THROW(packed_activations_bf16_size(std::numeric_limits<std::int64_t>::max() / 4, 1 << 20), InputError);
}

TEST(PackActivationsBf16, PutsEveryValueWhereTheLayoutSays) {
  // Batch 1, 17, 100 and 130 (one panel of 16 or 32; 64 + 48; 64 + 64 + 16), odd and even cols up
  // to two 32-column steps. Every element is either a rounded x or a zero of the padding.
  for (const std::int64_t batch : {1, 17, 100, 130}) {
    for (const std::int64_t cols : {1, 2, 31, 33, 64, 67}) {
      const std::vector<float> x = make_activations(batch, cols, static_cast<std::uint64_t>(batch * 1000 + cols));
      for (const GemmBf16Isa isa : host_paths()) {
        const std::vector<std::uint16_t> packed = pack(isa, x, batch, cols);
        std::vector<std::uint16_t> expected(packed.size(), 0);
        for (std::int64_t b = 0; b < batch; ++b) {
          for (std::int64_t k = 0; k < cols; ++k) {
            expected[packed_index(batch, cols, b, k)] = fp32_to_bf16(x[static_cast<std::size_t>(b * cols + k)]);
          }
        }
        ASSERT_EQ(packed, expected) << isa_name(isa) << " batch " << batch << " cols " << cols;
      }
    }
  }
}

TEST(PackActivationsBf16, RoundsLikeTheScalarCodec) {
  // Ties to even both ways, the largest value that rounds down and one that overflows to infinity,
  // subnormals (kept, not flushed), signed zero, infinities and NaNs (quieted).
  const std::vector<float> special = {
      std::bit_cast<float>(0x3F808000u),  // tie, even below: 1.0
      std::bit_cast<float>(0x3F818000u),  // tie, odd below: rounds up
      std::bit_cast<float>(0x3F807FFFu),  // just below a tie
      std::bit_cast<float>(0x7F7F7FFFu),  // rounds down to the largest bf16
      std::numeric_limits<float>::max(),  // rounds up to infinity
      std::bit_cast<float>(0x00018000u),  // subnormal tie
      std::numeric_limits<float>::denorm_min(),
      -0.0f,
      -std::numeric_limits<float>::infinity(),
      std::bit_cast<float>(0x7F800001u),  // signalling NaN
      std::bit_cast<float>(0xFFC12345u),  // negative quiet NaN with a payload
      -3.14159f,
  };
  const auto cols = static_cast<std::int64_t>(special.size());
  for (const GemmBf16Isa isa : host_paths()) {
    const std::vector<std::uint16_t> packed = pack(isa, special, 1, cols);
    for (std::int64_t k = 0; k < cols; ++k) {
      EXPECT_EQ(packed[packed_index(1, cols, 0, k)], fp32_to_bf16(special[static_cast<std::size_t>(k)]))
          << isa_name(isa) << " k " << k;
    }
  }
}

// ---- Entry checks

TEST(MoeGemmBf16dot, RejectsBadShapesAndSpansBeforeWriting) {
  const Matrix m = make_matrix(2, 4, 30, 1);
  const std::vector<float> x = make_activations(2, 30, 2);
  std::vector<std::uint16_t> packed(static_cast<std::size_t>(packed_activations_bf16_size(2, 30)));
  pack_activations_bf16(x, 2, 30, packed);
  const ActivationsBf16 xp{2, 30, packed};
  std::vector<float> y(8, 5.0f);
  const auto throws_with = [](auto&& call, const char* text) {
    EXPECT_THAT(call, testing::ThrowsMessage<InputError>(testing::HasSubstr(text)));
  };
  throws_with([&] { moe_gemm_bf16dot(m.shape, m.bytes, xp, y, 0, 5); }, "row slice");
  throws_with([&] { moe_gemm_bf16dot(m.shape, m.bytes, xp, y, 3, 2); }, "row slice");
  throws_with([&] { moe_gemm_bf16dot(m.shape, std::span(m.bytes).first(100), xp, y, 0, 4); }, "weights");
  throws_with([&] { moe_gemm_bf16dot(m.shape, m.bytes, xp, std::span(y).first(7), 0, 4); }, "y has");
  const std::vector<std::byte> q8(4 * 34);  // 4 rows of one Q8_0 block
  throws_with([&] { moe_gemm_bf16dot(MatvecShape{2, 4, 32, WeightFormat::kQ8_0}, q8, xp, y, 0, 4); },
              "BF16 weights only");
  throws_with([&] { moe_gemm_bf16dot(m.shape, m.bytes, ActivationsBf16{1, 30, packed}, y, 0, 4); },
              "packed activations are [1][30]");
  throws_with([&] { moe_gemm_bf16dot(m.shape, m.bytes, ActivationsBf16{2, 30, std::span(packed).first(64)}, y, 0, 4); },
              "xp.packed has 64");
  throws_with([&] { moe_gemm_bf16dot(MatvecShape{-2, 4, 30, WeightFormat::kBf16}, m.bytes, xp, y, 0, 4); },
              "negative");
  // y overlapping the packed activations: both views of one buffer.
  std::vector<float> shared(packed.size() / 2 + 4);  // y's 8 floats overlap its last 4
  const std::span<const std::uint16_t> as_u16(reinterpret_cast<const std::uint16_t*>(shared.data()), packed.size());
  throws_with([&] { moe_gemm_bf16dot(m.shape, m.bytes, ActivationsBf16{2, 30, as_u16}, std::span(shared).last(8), 0, 4); },
              "overlaps");
  for (const float v : y) EXPECT_EQ(v, 5.0f);
}

TEST(PackActivationsBf16, RejectsBadSpansBeforeWriting) {
  const std::vector<float> x(60, 1.0f);
  std::vector<std::uint16_t> packed(static_cast<std::size_t>(packed_activations_bf16_size(2, 30)), 0xBEEF);
  const auto throws_with = [](auto&& call, const char* text) {
    EXPECT_THAT(call, testing::ThrowsMessage<InputError>(testing::HasSubstr(text)));
  };
  throws_with([&] { pack_activations_bf16(std::span(x).first(59), 2, 30, packed); }, "x has 59");
  throws_with([&] { pack_activations_bf16(x, 2, 30, std::span(packed).first(10)); }, "packed has 10");
  throws_with([&] { pack_activations_bf16(x, -2, 30, packed); }, "expected batch, cols >= 0");
  std::vector<float> shared(packed.size());  // x and packed in one buffer
  const std::span<std::uint16_t> as_u16(reinterpret_cast<std::uint16_t*>(shared.data()), packed.size());
  throws_with([&] { pack_activations_bf16(std::span<const float>(shared).first(60), 2, 30, as_u16); }, "overlaps");
  for (const std::uint16_t v : packed) EXPECT_EQ(v, 0xBEEF);
}

TEST(MoeGemmBf16dot, PortablePathIsAlwaysAvailable) {
  EXPECT_TRUE(detail::cpu_has(GemmBf16Isa::kPortable));
  EXPECT_TRUE(detail::cpu_has(detail::best_gemm_bf16_isa()));
}

// ---- Work

TEST(WorkOf, MatvecShapeOfTheBf16Gemm) {
  // moe_gemm_bf16dot declares work_of(MatvecShape{batch, rows, cols, kBf16}). Batch 64, 2048 rows
  // of 7168: 2 * 64 * 2048 * 7168 = 1879048192 FLOPs; weights 2048 * 7168 * 2 = 29360128 bytes,
  // x 4 * 64 * 7168 = 1835008, y 4 * 64 * 2048 = 524288.
  const Work w = work_of(MatvecShape{64, 2048, 7168, WeightFormat::kBf16});
  EXPECT_EQ(w.flops, 1879048192.0);
  EXPECT_EQ(w.bytes, 29360128.0 + 1835008.0 + 524288.0);
  // Odd cols: batch 3, 1 row of 5: 30 FLOPs; 10 + 60 + 12 bytes.
  const Work odd = work_of(MatvecShape{3, 1, 5, WeightFormat::kBf16});
  EXPECT_EQ(odd.flops, 30.0);
  EXPECT_EQ(odd.bytes, 82.0);
}

}  // namespace
}  // namespace deepfit::kernels
