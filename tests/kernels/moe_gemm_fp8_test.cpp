// FP8 block-scaled matrix-vector kernels (kernels/src/moe_gemm_fp8_*.cpp): every code path the host
// has against moe_gemm_fp8_ref on awkward shapes with the derived tolerance, exact decoding of every
// byte, hand-computed cases, slicing and batch invariance, entry checks, and work_of by hand.
#include "kernels/moe_gemm_fp8.h"

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

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace deepfit::kernels {
namespace {

using detail::MatvecIsa;

std::vector<MatvecIsa> host_paths() {
  std::vector<MatvecIsa> out;
  for (const MatvecIsa isa : {MatvecIsa::kPortable, MatvecIsa::kAvx512, MatvecIsa::kAvx512Vnni}) {
    if (detail::cpu_has(isa)) out.push_back(isa);
  }
  return out;
}

const char* isa_name(MatvecIsa isa) {
  switch (isa) {
    case MatvecIsa::kPortable: return "portable";
    case MatvecIsa::kAvx512: return "avx512";
    case MatvecIsa::kAvx512Vnni: return "avx512_vnni";
  }
  return "?";
}

// An FP8 matrix quantized the way DeepSeek's are (scale = tile amax / 448), with its exact weights.
struct Fp8Matrix {
  Fp8MatvecShape shape;
  std::vector<std::byte> bytes;  // [rows][cols]
  std::vector<float> scales;     // [tiles(rows)][tiles(cols)]
  std::vector<double> weights;   // [rows][cols], e4m3 * scale (exact in double)
};

Fp8Matrix make_matrix(std::int64_t batch, std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const auto R = static_cast<std::size_t>(rows);
  const auto K = static_cast<std::size_t>(cols);
  std::vector<float> w(R * K);
  for (float& v : w) v = normal(rng);
  const auto tr = static_cast<std::size_t>(fp8_scale_tiles(rows));
  const auto tc = static_cast<std::size_t>(fp8_scale_tiles(cols));
  Fp8Matrix m{{batch, rows, cols}, std::vector<std::byte>(R * K), std::vector<float>(tr * tc, 1.0f),
              std::vector<double>(R * K)};
  for (std::size_t i = 0; i < tr; ++i) {
    for (std::size_t j = 0; j < tc; ++j) {
      float amax = 0.0f;
      for (std::size_t n = 128 * i; n < std::min(R, 128 * i + 128); ++n) {
        for (std::size_t k = 128 * j; k < std::min(K, 128 * j + 128); ++k) amax = std::max(amax, std::fabs(w[n * K + k]));
      }
      if (amax > 0.0f) m.scales[i * tc + j] = amax / kFp8E4m3Max;
    }
  }
  for (std::size_t n = 0; n < R; ++n) {
    for (std::size_t k = 0; k < K; ++k) {
      const float s = m.scales[n / 128 * tc + k / 128];
      const std::uint8_t b = fp32_to_fp8_e4m3(w[n * K + k] / s);
      m.bytes[n * K + k] = static_cast<std::byte>(b);
      m.weights[n * K + k] = static_cast<double>(fp8_e4m3_to_fp32(b)) * static_cast<double>(s);
    }
  }
  return m;
}

std::vector<float> make_activations(std::int64_t batch, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(batch * cols));
  for (float& v : x) v = normal(rng);
  return x;
}

double gamma(double m) {
  const double u = 0x1p-24;
  return m * u / (1 - m * u);
}

// moe_gemm_fp8.h: |y - y_ref| <= gamma(T + 16) sum_k |W[n][k] x[b][k]|, T = tiles(cols). The
// derivation is in the header: at most T + 14 roundings on any term's path through the blocked
// kernel, plus the reference's own rounding and double sum.
double tolerance(const Fp8Matrix& m, const std::vector<float>& x, std::int64_t b, std::int64_t n) {
  const auto K = static_cast<std::size_t>(m.shape.cols);
  double sum = 0.0;
  for (std::size_t k = 0; k < K; ++k) {
    sum += std::fabs(m.weights[static_cast<std::size_t>(n) * K + k] * static_cast<double>(x[static_cast<std::size_t>(b) * K + k]));
  }
  return gamma(static_cast<double>(fp8_scale_tiles(m.shape.cols)) + 16) * sum;
}

void run(MatvecIsa isa, const Fp8Matrix& m, std::span<const float> x, std::span<float> y, std::int64_t n_begin,
         std::int64_t n_end) {
  detail::moe_gemm_fp8_blocked_on(isa, m.shape, m.bytes, m.scales, x, y, n_begin, n_end);
}

// Rows 1, 7, 131 (a prime past one tile row: a 4-row group straddles the tile boundary at 128);
// cols 1, 13, 100 (below one tile, not a multiple of 16), 128, 129 and 300 (a partial last tile);
// batch 1 (streaming path), 2, 5 and 19 (batched path: 4-vector groups with tails, and a second
// chunk of 16 vectors).
TEST(MoeGemmFp8Blocked, MatchesReferenceOnOddShapes) {
  std::uint64_t seed = 1;
  for (const std::int64_t cols : {1, 13, 100, 128, 129, 300}) {
    for (const std::int64_t rows : {1, 7, 131}) {
      for (const std::int64_t batch : {1, 2, 5, 19}) {
        const Fp8Matrix m = make_matrix(batch, rows, cols, seed++);
        const std::vector<float> x = make_activations(batch, cols, seed++);
        std::vector<float> ref(static_cast<std::size_t>(batch * rows));
        moe_gemm_fp8_ref(m.shape, m.bytes, m.scales, x, ref, 0, rows);
        for (const MatvecIsa isa : host_paths()) {
          // Three slices: [0, rows/3) and [rows/3, rows - rows/5) leave groups of 1-3 rows.
          std::vector<float> y(ref.size(), std::numeric_limits<float>::quiet_NaN());
          const std::int64_t a = rows / 3;
          const std::int64_t b = rows - rows / 5;
          run(isa, m, x, y, 0, a);
          run(isa, m, x, y, a, b);
          run(isa, m, x, y, b, rows);
          for (std::int64_t bi = 0; bi < batch; ++bi) {
            for (std::int64_t n = 0; n < rows; ++n) {
              const auto i = static_cast<std::size_t>(bi * rows + n);
              ASSERT_LE(std::fabs(static_cast<double>(y[i]) - static_cast<double>(ref[i])), tolerance(m, x, bi, n))
                  << isa_name(isa) << " rows " << rows << " cols " << cols << " batch " << batch << " at [" << bi
                  << "][" << n << "]: ref " << ref[i] << " got " << y[i];
            }
          }
        }
      }
    }
  }
}

TEST(MoeGemmFp8Blocked, ResultsDoNotDependOnTheSlicingOrTheBatch) {
  constexpr std::int64_t kRows = 139;
  constexpr std::int64_t kCols = 300;
  constexpr std::int64_t kBatch = 21;
  const Fp8Matrix m = make_matrix(kBatch, kRows, kCols, 99);
  const std::vector<float> x = make_activations(kBatch, kCols, 98);
  for (const MatvecIsa isa : host_paths()) {
    std::vector<float> whole(kBatch * kRows);
    run(isa, m, x, whole, 0, kRows);
    std::vector<float> pieces(whole.size());
    for (std::int64_t n = 0; n < kRows; n += 5) run(isa, m, x, pieces, n, std::min<std::int64_t>(n + 5, kRows));
    for (std::size_t i = 0; i < whole.size(); ++i) {
      ASSERT_EQ(std::bit_cast<std::uint32_t>(whole[i]), std::bit_cast<std::uint32_t>(pieces[i])) << isa_name(isa) << " " << i;
    }
    // Each vector alone (batch 1, the streaming path) gives the bits it got inside the batch.
    const Fp8MatvecShape one{1, kRows, kCols};
    for (std::int64_t b = 0; b < kBatch; ++b) {
      std::vector<float> y(kRows);
      detail::moe_gemm_fp8_blocked_on(isa, one, m.bytes, m.scales,
                                      std::span(x).subspan(static_cast<std::size_t>(b * kCols), kCols), y, 0, kRows);
      for (std::int64_t n = 0; n < kRows; ++n) {
        ASSERT_EQ(std::bit_cast<std::uint32_t>(y[static_cast<std::size_t>(n)]),
                  std::bit_cast<std::uint32_t>(whole[static_cast<std::size_t>(b * kRows + n)]))
            << isa_name(isa) << " [" << b << "][" << n << "]";
      }
    }
  }
}

// Row 1 holds every byte 0..255 (column k = byte k), row 0 the same with e4m3's NaN bytes 0x7F and
// 0xFF replaced by 0. Vector b is the one-hot e_b, so y[b][n] is the single product W[n][b] * 1,
// exact on every path (the other terms are exact zeros). Scales 1 for columns 0-127 and 0.5 for
// 128-255 (powers of two: exact). The NaN bytes: NaN in the reference (row 1 is all NaN there, so
// it checks row 0 only), +-480 in the blocked kernels (moe_gemm_fp8.h).
void check_every_byte() {
  constexpr std::int64_t kCols = 256;
  const auto is_nan = [](std::size_t code) { return (code & 0x7Fu) == 0x7Fu; };
  std::vector<std::byte> bytes(2 * kCols);
  for (std::size_t k = 0; k < kCols; ++k) {
    bytes[k] = is_nan(k) ? std::byte{0} : static_cast<std::byte>(k);
    bytes[kCols + k] = static_cast<std::byte>(k);
  }
  const std::vector<float> scales = {1.0f, 0.5f};
  std::vector<float> x(kCols * kCols, 0.0f);
  for (std::size_t b = 0; b < kCols; ++b) x[b * kCols + b] = 1.0f;
  const Fp8MatvecShape shape{kCols, 2, kCols};
  std::vector<float> ref(2 * kCols);
  moe_gemm_fp8_ref(shape, bytes, scales, x, ref, 0, 2);
  // expected[n][b] with the blocked kernels' reading of the NaN bytes.
  const auto expected = [&](std::size_t n, std::size_t b) {
    const float scale = b < 128 ? 1.0f : 0.5f;
    const auto code = std::to_integer<std::uint8_t>(bytes[n * kCols + b]);
    if (is_nan(code)) return ((code & 0x80u) != 0 ? -480.0f : 480.0f) * scale;
    return fp8_e4m3_to_fp32(code) * scale;
  };
  for (std::size_t b = 0; b < kCols; ++b) {
    EXPECT_EQ(ref[2 * b], expected(0, b)) << b;
    EXPECT_TRUE(std::isnan(ref[2 * b + 1])) << b;
  }
  const Fp8MatvecShape one{1, 2, kCols};
  for (const MatvecIsa isa : host_paths()) {
    std::vector<float> y(2 * kCols);
    detail::moe_gemm_fp8_blocked_on(isa, shape, bytes, scales, x, y, 0, 2);  // batched path
    for (std::size_t b = 0; b < kCols; ++b) {
      std::vector<float> y1(2);  // streaming path
      detail::moe_gemm_fp8_blocked_on(isa, one, bytes, scales, std::span(x).subspan(b * kCols, kCols), y1, 0, 2);
      for (std::size_t n = 0; n < 2; ++n) {
        // The sign of a zero result is not specified (-0 + +0 sums), only its value.
        EXPECT_EQ(y[2 * b + n], expected(n, b)) << isa_name(isa) << " row " << n << " byte " << b;
        EXPECT_EQ(y1[n], expected(n, b)) << isa_name(isa) << " row " << n << " byte " << b;
      }
    }
  }
}

TEST(MoeGemmFp8Blocked, DecodesEveryByteExactly) { check_every_byte(); }

#if defined(__x86_64__)
// Denormals-are-zero and flush-to-zero, which some callers set for speed, change nothing: no
// fp32 operation of the kernels sees a subnormal here, and VCVTPH2PS, which turns the e4m3
// subnormals into fp32 normals through fp16 subnormals, does not apply DAZ.
TEST(MoeGemmFp8Blocked, DecodesEveryByteExactlyWithDenormalsAreZeroSet) {
  const unsigned csr = _mm_getcsr();
  _mm_setcsr(csr | 0x8040u);  // FTZ (bit 15) and DAZ (bit 6)
  check_every_byte();
  _mm_setcsr(csr);
}
#endif

TEST(MoeGemmFp8Ref, UsesTheScaleOfEachWeightsTile) {
  // 130 x 130 weights, all 0x38 (= 1.0) except row 1, all 0xB0 (= -0.5); scales [2][2] = {{2, 3},
  // {5, 7}}; x = ones. Row 0: 128 * 2 + 2 * 3 = 262. Row 1: -0.5 (128 * 2 + 2 * 3) = -131.
  // Row 129 (tile row 1): 128 * 5 + 2 * 7 = 654.
  constexpr std::int64_t kN = 130;
  std::vector<std::byte> bytes(kN * kN, std::byte{0x38});
  for (std::size_t k = 0; k < kN; ++k) bytes[kN + k] = std::byte{0xB0};
  const std::vector<float> scales = {2.0f, 3.0f, 5.0f, 7.0f};
  const std::vector<float> x(kN, 1.0f);
  const Fp8MatvecShape shape{1, kN, kN};
  std::vector<float> ref(kN);
  moe_gemm_fp8_ref(shape, bytes, scales, x, ref, 0, kN);
  EXPECT_EQ(ref[0], 262.0f);
  EXPECT_EQ(ref[1], -131.0f);
  EXPECT_EQ(ref[127], 262.0f);
  EXPECT_EQ(ref[128], 654.0f);
  EXPECT_EQ(ref[129], 654.0f);
  for (const MatvecIsa isa : host_paths()) {
    std::vector<float> y(kN);
    detail::moe_gemm_fp8_blocked_on(isa, shape, bytes, scales, x, y, 0, kN);
    EXPECT_EQ(y, ref) << isa_name(isa);  // small integers: exact in any order
  }
}

TEST(MoeGemmFp8Ref, MultipliesAHandComputedCase) {
  // W = [[1, 2, -0.5], [0.25, 0, 3]] * scale 0.5 (bytes 0x38, 0x40, 0xB0, 0x28, 0x00, 0x44);
  // x = [[1, 1, 2], [4, -2, 1]]:
  // y[0] = 0.5 [1 + 2 - 1, 0.25 + 0 + 6] = [1, 3.125]; y[1] = 0.5 [4 - 4 - 0.5, 1 + 0 + 3] = [-0.25, 2].
  const std::vector<std::byte> bytes = {std::byte{0x38}, std::byte{0x40}, std::byte{0xB0},
                                        std::byte{0x28}, std::byte{0x00}, std::byte{0x44}};
  const std::vector<float> scales = {0.5f};
  const std::vector<float> x = {1.0f, 1.0f, 2.0f, 4.0f, -2.0f, 1.0f};
  const Fp8MatvecShape shape{2, 2, 3};
  std::vector<float> y(4);
  moe_gemm_fp8_ref(shape, bytes, scales, x, y, 0, 2);
  EXPECT_EQ(y, (std::vector<float>{1.0f, 3.125f, -0.25f, 2.0f}));
  for (const MatvecIsa isa : host_paths()) {
    std::vector<float> yb(4);
    detail::moe_gemm_fp8_blocked_on(isa, shape, bytes, scales, x, yb, 0, 2);
    EXPECT_EQ(yb, y) << isa_name(isa);
  }
  std::vector<float> best(4);
  moe_gemm_fp8_blocked(shape, bytes, scales, x, best, 0, 2);
  EXPECT_EQ(best, y);
}

TEST(MoeGemmFp8Blocked, WritesOnlyItsSlice) {
  constexpr float kSentinel = -12345.0f;
  const Fp8Matrix m = make_matrix(3, 13, 200, 7);
  const std::vector<float> x = make_activations(3, 200, 8);
  for (const MatvecIsa isa : host_paths()) {
    for (const std::int64_t batch : {1, 3}) {
      const Fp8Matrix mb{{batch, 13, 200}, m.bytes, m.scales, m.weights};
      std::vector<float> y(static_cast<std::size_t>(batch * 13), kSentinel);
      run(isa, mb, std::span(x).first(static_cast<std::size_t>(batch * 200)), y, 5, 11);
      for (std::int64_t b = 0; b < batch; ++b) {
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
}

TEST(MoeGemmFp8Blocked, HandlesEmptySlicesBatchesAndRows) {
  const Fp8Matrix m = make_matrix(0, 4, 256, 3);
  std::vector<float> y;
  EXPECT_NO_THROW(moe_gemm_fp8_blocked(m.shape, m.bytes, m.scales, {}, y, 0, 4));
  const Fp8Matrix one = make_matrix(1, 4, 64, 3);
  const std::vector<float> x(64, 1.0f);
  std::vector<float> y1(4, 7.0f);
  moe_gemm_fp8_blocked(one.shape, one.bytes, one.scales, x, y1, 2, 2);
  for (const float v : y1) EXPECT_EQ(v, 7.0f);
  // cols = 0: every output is the empty sum.
  std::vector<float> y0(3, 7.0f);
  moe_gemm_fp8_blocked(Fp8MatvecShape{1, 3, 0}, {}, {}, {}, y0, 0, 3);
  for (const float v : y0) EXPECT_EQ(v, 0.0f);
}

TEST(MoeGemmFp8Blocked, RejectsBadShapesSpansAndScalesBeforeWriting) {
  const Fp8Matrix m = make_matrix(1, 200, 256, 1);
  const std::vector<float> x = make_activations(1, 256, 3);
  std::vector<float> y(200, 5.0f);
  const auto throws_with = [](auto&& call, const char* text) {
    EXPECT_THAT(call, testing::ThrowsMessage<InputError>(testing::HasSubstr(text)));
  };
  throws_with([&] { moe_gemm_fp8_blocked(m.shape, m.bytes, m.scales, x, y, 0, 201); }, "row slice");
  throws_with([&] { moe_gemm_fp8_blocked(m.shape, m.bytes, m.scales, x, y, 3, 2); }, "row slice");
  throws_with([&] { moe_gemm_fp8_blocked(m.shape, std::span(m.bytes).first(100), m.scales, x, y, 0, 4); }, "weights");
  throws_with([&] { moe_gemm_fp8_blocked(m.shape, m.bytes, std::span(m.scales).first(3), x, y, 0, 4); }, "scales has");
  throws_with([&] { moe_gemm_fp8_blocked(m.shape, m.bytes, m.scales, std::span(x).first(255), y, 0, 4); }, "x has");
  throws_with([&] { moe_gemm_fp8_ref(m.shape, m.bytes, m.scales, x, std::span(y).first(3), 0, 4); }, "y has");
  throws_with([&] { moe_gemm_fp8_ref(Fp8MatvecShape{-1, 200, 256}, m.bytes, m.scales, x, y, 0, 4); }, "negative");
  std::vector<float> shared(300, 1.0f);
  throws_with([&] { moe_gemm_fp8_blocked(m.shape, m.bytes, m.scales, std::span<const float>(shared).first(256),
                                         std::span<float>(shared).subspan(100, 200), 0, 4); },
              "overlaps x");
  // Scales: tile row 1 (rows 128..199) gets a NaN, an infinity, a value past 2^119.
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), 0x1p120f}) {
    std::vector<float> scales = m.scales;
    scales[3] = bad;  // [1][1]
    throws_with([&] { moe_gemm_fp8_blocked(m.shape, m.bytes, scales, x, y, 100, 130); }, "scale [1][1]");
    throws_with([&] { moe_gemm_fp8_ref(m.shape, m.bytes, scales, x, y, 127, 129); }, "scale [1][1]");
    // A slice that never touches tile row 1 does not read it, so it is not rejected.
    EXPECT_NO_THROW(moe_gemm_fp8_blocked(m.shape, m.bytes, scales, x, y, 0, 128));
    std::fill(y.begin(), y.end(), 5.0f);
  }
  for (const float v : y) EXPECT_EQ(v, 5.0f);
}

TEST(WorkOf, Fp8MatvecShapeByHand) {
  EXPECT_EQ(fp8_scale_tiles(0), 0);
  EXPECT_EQ(fp8_scale_tiles(1), 1);
  EXPECT_EQ(fp8_scale_tiles(128), 1);
  EXPECT_EQ(fp8_scale_tiles(129), 2);
  EXPECT_EQ(fp8_scale_tiles(7168), 56);
  // batch 2, 3 rows of 130: 2*2*3*130 = 1560 FLOPs; 390 weight bytes + 4 * (1 * 2) scale bytes
  // + 4*2*130 x + 4*2*3 y = 390 + 8 + 1040 + 24.
  const Work w = work_of(Fp8MatvecShape{2, 3, 130});
  EXPECT_EQ(w.flops, 1560.0);
  EXPECT_EQ(w.bytes, 1462.0);
  // DeepSeek-V3 expert gate: 2048 x 7168 at batch 1: 16 x 56 scale tiles.
  const Work g = work_of(Fp8MatvecShape{1, 2048, 7168});
  EXPECT_EQ(g.flops, 2.0 * 2048 * 7168);
  EXPECT_EQ(g.bytes, 2048.0 * 7168 + 4.0 * 16 * 56 + 4.0 * 7168 + 4.0 * 2048);
  EXPECT_EQ(work_of(Fp8MatvecShape{0, 5, 256}).bytes, 5.0 * 256 + 4.0 * 2);  // weights and scales only
}

}  // namespace
}  // namespace deepfit::kernels
