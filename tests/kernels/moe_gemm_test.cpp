// Expert matrix-vector kernels (kernels/src/moe_gemm_*.cpp): every blocked code path the host
// has against moe_gemm_ref on awkward shapes with derived tolerances, slices, the activation
// quantizer, the entry checks, and work_of(MatvecShape) by hand. No timing here.
#include "kernels/moe_gemm.h"

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
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/quant_blocks.h"
#include "kernels/work.h"

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

// A weight matrix in one format, with its dequantized values (what moe_gemm_ref multiplies by).
struct Matrix {
  MatvecShape shape;
  std::vector<std::byte> bytes;
  std::vector<float> dequantized;  // [rows][cols]
  std::vector<float> offsets;      // Q4_K: dmin * m of each weight's sub-block, else 0
};

Matrix make_matrix(WeightFormat format, std::int64_t batch, std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const auto n = static_cast<std::size_t>(rows * cols);
  std::vector<float> w(n);
  for (float& v : w) v = normal(rng);
  Matrix m{{batch, rows, cols, format}, std::vector<std::byte>(static_cast<std::size_t>(rows * weight_row_bytes(format, cols))),
           std::vector<float>(n), std::vector<float>(n, 0.0f)};
  switch (format) {
    case WeightFormat::kBf16:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t b = fp32_to_bf16(w[i]);
        m.bytes[2 * i] = static_cast<std::byte>(b & 0xFF);
        m.bytes[2 * i + 1] = static_cast<std::byte>(b >> 8);
        m.dequantized[i] = bf16_to_fp32(b);
      }
      break;
    case WeightFormat::kQ8_0:
      quantize_row_q8_0_ref(w, m.bytes);
      dequantize_row_q8_0_ref(m.bytes, m.dequantized);
      break;
    case WeightFormat::kQ4_K:
      quantize_row_q4_K_ref(w, m.bytes);
      dequantize_row_q4_K_ref(m.bytes, m.dequantized);
      for (std::size_t i = 0; i < n; ++i) {
        const std::byte* block = m.bytes.data() + i / 256 * 144;
        const auto dmin_bits =
            static_cast<std::uint16_t>(std::to_integer<unsigned>(block[2]) | std::to_integer<unsigned>(block[3]) << 8);
        const Q4KScales s = unpack_q4_K_scales(std::span<const std::byte, 12>(block + 4, 12));
        m.offsets[i] = fp16_to_fp32(dmin_bits) * static_cast<float>(s.mins[i / 32 % 8]);
      }
      break;
  }
  return m;
}

std::vector<float> make_activations(std::int64_t batch, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(batch * cols));
  for (float& v : x) v = normal(rng);
  if (!x.empty()) x[x.size() / 2] = 9.0f;  // an outlier: its group gets a coarser scale
  return x;
}

struct QuantizedX {
  std::vector<std::int8_t> qs;
  std::vector<float> scales;
  std::vector<std::int32_t> sums;
  ActivationsQ8 view(std::int64_t batch, std::int64_t cols) const { return {batch, cols, qs, scales, sums}; }
};

QuantizedX quantize(const std::vector<float>& x, std::int64_t batch, std::int64_t cols) {
  QuantizedX q{std::vector<std::int8_t>(x.size()), std::vector<float>(x.size() / 32), std::vector<std::int32_t>(x.size() / 32)};
  quantize_activations_q8(x, batch, cols, q.qs, q.scales, q.sums);
  return q;
}

double gamma(double m) {
  const double u = 0x1p-24;
  return m * u / (1 - m * u);
}

// The tolerance of moe_gemm.h for output [b][n], derived there:
//   BF16:        gamma(K + 2) sum_k |W x|                                 (fp32 dot, any order)
//   Q8_0, Q4_K:  sum_k |W| s_k / 2 + gamma(K / 32 + 8) sum_k c_k (|x_k| + s_k / 2)
//                with c_k = |W| (Q8_0) or |W| + 2 dmin m (Q4_K).
double tolerance(const Matrix& m, const std::vector<float>& x, const QuantizedX& xq, std::int64_t b, std::int64_t n) {
  const auto K = static_cast<std::size_t>(m.shape.cols);
  const float* w = m.dequantized.data() + static_cast<std::size_t>(n) * K;
  const float* off = m.offsets.data() + static_cast<std::size_t>(n) * K;
  const float* xb = x.data() + static_cast<std::size_t>(b) * K;
  const float* sb = xq.scales.data() + static_cast<std::size_t>(b) * K / 32;
  double rounding = 0.0;
  double quantization = 0.0;
  for (std::size_t k = 0; k < K; ++k) {
    const double wk = std::fabs(static_cast<double>(w[k]));
    const double xk = std::fabs(static_cast<double>(xb[k]));
    if (m.shape.weight_format == WeightFormat::kBf16) {
      rounding += wk * xk;
    } else {
      const double s = static_cast<double>(sb[k / 32]);
      quantization += wk * s / 2;
      rounding += (wk + 2 * static_cast<double>(off[k])) * (xk + s / 2);
    }
  }
  if (m.shape.weight_format == WeightFormat::kBf16) return gamma(static_cast<double>(K) + 2) * rounding;
  return quantization + gamma(static_cast<double>(K) / 32 + 8) * rounding;
}

void run_blocked(MatvecIsa isa, const Matrix& m, const std::vector<float>& x, const QuantizedX& xq, std::vector<float>& y,
                 std::int64_t n_begin, std::int64_t n_end) {
  if (m.shape.weight_format == WeightFormat::kBf16) {
    detail::moe_gemm_blocked_on(isa, m.shape, m.bytes, x, y, n_begin, n_end);
  } else {
    detail::moe_gemm_blocked_q8_on(isa, m.shape, m.bytes, xq.view(m.shape.batch, m.shape.cols), y, n_begin, n_end);
  }
}

struct Case {
  WeightFormat format;
  std::int64_t cols;
};

// Rows 1, 7, 13 and 257 (1, primes, and a group of 4 plus one); batch 1, 3 and 8; K from one
// block up to several, including an odd number of Q8_0 blocks (a lone block after the pairs) and
// BF16 lengths that are not multiples of the 32-weight vector step.
std::vector<Case> cases() {
  std::vector<Case> out;
  for (const std::int64_t k : {256, 512, 768}) {
    for (const WeightFormat f : {WeightFormat::kBf16, WeightFormat::kQ8_0, WeightFormat::kQ4_K}) out.push_back({f, k});
  }
  for (const std::int64_t k : {32, 96}) out.push_back({WeightFormat::kQ8_0, k});
  for (const std::int64_t k : {1, 13, 100}) out.push_back({WeightFormat::kBf16, k});
  return out;
}

TEST(MoeGemmBlocked, MatchesReferenceOnOddShapes) {
  std::uint64_t seed = 1;
  for (const Case& c : cases()) {
    for (const std::int64_t rows : {1, 7, 13, 257}) {
      for (const std::int64_t batch : {1, 3, 8}) {
        const Matrix m = make_matrix(c.format, batch, rows, c.cols, seed++);
        const std::vector<float> x = make_activations(batch, c.cols, seed++);
        const QuantizedX xq = c.cols % 32 == 0 ? quantize(x, batch, c.cols) : QuantizedX{};
        std::vector<float> ref(static_cast<std::size_t>(batch * rows));
        moe_gemm_ref(m.shape, m.bytes, x, ref, 0, rows);
        for (const MatvecIsa isa : host_paths()) {
          // Three slices: [0, rows/3) and [rows/3, rows - rows/5) leave tails of 1-3 rows.
          std::vector<float> y(ref.size(), std::numeric_limits<float>::quiet_NaN());
          const std::int64_t a = rows / 3;
          const std::int64_t b = rows - rows / 5;
          run_blocked(isa, m, x, xq, y, 0, a);
          run_blocked(isa, m, x, xq, y, a, b);
          run_blocked(isa, m, x, xq, y, b, rows);
          for (std::int64_t bi = 0; bi < batch; ++bi) {
            for (std::int64_t n = 0; n < rows; ++n) {
              const auto i = static_cast<std::size_t>(bi * rows + n);
              const double tol = tolerance(m, x, xq, bi, n);
              ASSERT_LE(std::fabs(static_cast<double>(y[i]) - static_cast<double>(ref[i])), tol)
                  << isa_name(isa) << " format " << static_cast<int>(c.format) << " rows " << rows << " cols " << c.cols
                  << " batch " << batch << " at [" << bi << "][" << n << "]: ref " << ref[i] << " got " << y[i];
            }
          }
        }
      }
    }
  }
}

TEST(MoeGemmBlocked, ResultsDoNotDependOnTheSlicing) {
  for (const WeightFormat f : {WeightFormat::kBf16, WeightFormat::kQ8_0, WeightFormat::kQ4_K}) {
    const Matrix m = make_matrix(f, 2, 23, 512, 99);
    const std::vector<float> x = make_activations(2, 512, 98);
    const QuantizedX xq = quantize(x, 2, 512);
    for (const MatvecIsa isa : host_paths()) {
      std::vector<float> whole(46);
      std::vector<float> pieces(46);
      run_blocked(isa, m, x, xq, whole, 0, 23);
      for (std::int64_t n = 0; n < 23; n += 5) run_blocked(isa, m, x, xq, pieces, n, std::min<std::int64_t>(n + 5, 23));
      for (std::size_t i = 0; i < whole.size(); ++i) {
        EXPECT_EQ(std::bit_cast<std::uint32_t>(whole[i]), std::bit_cast<std::uint32_t>(pieces[i])) << isa_name(isa) << " " << i;
      }
    }
  }
}

// Q4_K with one activation vector takes its own route on the AVX-512 paths (the activation side
// built once per call, for rows of up to 8192 weights, then read by every row group). It must give
// the bits the batched route gives for the same vector: below, at and just past that length.
TEST(MoeGemmBlocked, Q4KOneVectorGivesTheBitsOfABatch) {
  for (const std::int64_t cols : {256, 8192, 8448}) {
    const Matrix m = make_matrix(WeightFormat::kQ4_K, 2, 5, cols, 21);
    const std::vector<float> x = make_activations(2, cols, 22);
    const QuantizedX xq = quantize(x, 2, cols);
    std::vector<float> ref(10);
    moe_gemm_ref(m.shape, m.bytes, x, ref, 0, 5);
    Matrix one = m;
    one.shape.batch = 1;
    const std::vector<float> x0(x.begin(), x.begin() + cols);
    const QuantizedX xq0 = quantize(x0, 1, cols);
    for (const MatvecIsa isa : host_paths()) {
      std::vector<float> batched(10);
      std::vector<float> single(5);
      run_blocked(isa, m, x, xq, batched, 0, 5);
      run_blocked(isa, one, x0, xq0, single, 0, 5);
      for (std::size_t n = 0; n < 5; ++n) {
        EXPECT_EQ(std::bit_cast<std::uint32_t>(single[n]), std::bit_cast<std::uint32_t>(batched[n]))
            << isa_name(isa) << " cols " << cols << " row " << n;
        EXPECT_LE(std::fabs(static_cast<double>(single[n]) - static_cast<double>(ref[n])),
                  tolerance(m, x, xq, 0, static_cast<std::int64_t>(n)))
            << isa_name(isa) << " cols " << cols << " row " << n;
      }
    }
  }
}

TEST(MoeGemmBlocked, WritesOnlyItsSlice) {
  constexpr float kSentinel = -12345.0f;
  for (const WeightFormat f : {WeightFormat::kBf16, WeightFormat::kQ8_0, WeightFormat::kQ4_K}) {
    const Matrix m = make_matrix(f, 3, 13, 256, 7);
    const std::vector<float> x = make_activations(3, 256, 8);
    const QuantizedX xq = quantize(x, 3, 256);
    for (const MatvecIsa isa : host_paths()) {
      std::vector<float> y(39, kSentinel);
      run_blocked(isa, m, x, xq, y, 5, 11);
      for (std::int64_t b = 0; b < 3; ++b) {
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

TEST(MoeGemmBlocked, HandlesAnEmptySliceAndBatch) {
  const Matrix m = make_matrix(WeightFormat::kQ4_K, 0, 4, 256, 3);
  std::vector<float> y;
  EXPECT_NO_THROW(moe_gemm_blocked_q8(m.shape, m.bytes, ActivationsQ8{0, 256, {}, {}, {}}, y, 0, 4));
  const Matrix one = make_matrix(WeightFormat::kBf16, 1, 4, 64, 3);
  std::vector<float> x(64, 1.0f);
  std::vector<float> y1(4, 7.0f);
  moe_gemm_blocked(one.shape, one.bytes, x, y1, 2, 2);
  for (const float v : y1) EXPECT_EQ(v, 7.0f);
}

TEST(MoeGemmRef, MultipliesSmallIntegersExactly) {
  // W = [[1, 2, 3], [-1, 0, 0.5]] in BF16 (exact), x = [[1, 1, 2], [0, 4, -2]]:
  // y[0] = [1 + 2 + 6, -1 + 0 + 1] = [9, 0], y[1] = [0 + 8 - 6, 0 + 0 - 1] = [2, -1].
  const float w[6] = {1.0f, 2.0f, 3.0f, -1.0f, 0.0f, 0.5f};
  std::vector<std::byte> bytes(12);
  for (std::size_t i = 0; i < 6; ++i) {
    const std::uint16_t b = fp32_to_bf16(w[i]);
    bytes[2 * i] = static_cast<std::byte>(b & 0xFF);
    bytes[2 * i + 1] = static_cast<std::byte>(b >> 8);
  }
  const std::vector<float> x = {1.0f, 1.0f, 2.0f, 0.0f, 4.0f, -2.0f};
  std::vector<float> y(4);
  moe_gemm_ref(MatvecShape{2, 2, 3, WeightFormat::kBf16}, bytes, x, y, 0, 2);
  EXPECT_EQ(y, (std::vector<float>{9.0f, 0.0f, 2.0f, -1.0f}));
  std::vector<float> yb(4);
  moe_gemm_blocked(MatvecShape{2, 2, 3, WeightFormat::kBf16}, bytes, x, yb, 0, 2);
  EXPECT_EQ(yb, y);
}

// ---- Activation quantizer

TEST(QuantizeActivationsQ8, WritesHandComputedGroups) {
  // Group 0: x = q / 8 for q = -60, -56, ..., 60 (31 values) and q = 127 at index 31: amax =
  // 127/8, so scale = 0.125 exactly, 1/scale = 8, qs = q exactly, and sum = 127 (the 31 values
  // are symmetric about 0). Group 1: all zeros -> scale 0, qs 0, sum 0.
  std::vector<float> x(64, 0.0f);
  std::int32_t expected_sum = 0;
  for (int i = 0; i < 31; ++i) {
    const int q = -60 + 4 * i;  // -60 .. 60
    x[static_cast<std::size_t>(i)] = static_cast<float>(q) / 8.0f;
    expected_sum += q;
  }
  x[31] = 127.0f / 8.0f;
  expected_sum += 127;
  std::vector<std::int8_t> qs(64);
  std::vector<float> scales(2);
  std::vector<std::int32_t> sums(2);
  quantize_activations_q8(x, 1, 64, qs, scales, sums);
  EXPECT_EQ(scales[0], 0.125f);
  EXPECT_EQ(sums[0], 127);
  EXPECT_EQ(expected_sum, 127);
  for (int i = 0; i < 31; ++i) EXPECT_EQ(qs[static_cast<std::size_t>(i)], -60 + 4 * i);
  EXPECT_EQ(qs[31], 127);
  EXPECT_EQ(scales[1], 0.0f);
  EXPECT_EQ(sums[1], 0);
  for (std::size_t i = 32; i < 64; ++i) EXPECT_EQ(qs[i], 0);
}

TEST(QuantizeActivationsQ8, ErrorWithinHalfAScaleAndNeverMinus128) {
  // |scale * q - x| <= scale / 2 + |x| 2^-22 (the rounding of 1/scale and of the product).
  const std::vector<float> x = make_activations(4, 512, 21);
  const QuantizedX q = quantize(x, 4, 512);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double s = static_cast<double>(q.scales[i / 32]);
    const double xi = static_cast<double>(x[i]);
    EXPECT_LE(std::fabs(s * q.qs[i] - xi), s / 2 + std::fabs(xi) * 0x1p-22) << i;
    EXPECT_NE(q.qs[i], -128);
  }
  for (std::size_t g = 0; g < q.sums.size(); ++g) {
    std::int32_t sum = 0;
    for (std::size_t i = 0; i < 32; ++i) sum += q.qs[32 * g + i];
    EXPECT_EQ(q.sums[g], sum);
  }
}

TEST(QuantizeActivationsQ8, RejectsBadInput) {
  std::vector<float> x(64, 1.0f);
  std::vector<std::int8_t> qs(64);
  std::vector<float> scales(2);
  std::vector<std::int32_t> sums(2);
  EXPECT_THROW(quantize_activations_q8(x, 1, 48, qs, scales, sums), InputError);  // not whole groups
  EXPECT_THROW(quantize_activations_q8(x, 2, 64, qs, scales, sums), InputError);  // sizes
  std::vector<float> bad = x;
  bad[3] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(quantize_activations_q8(bad, 1, 64, qs, scales, sums), InputError);
}

// ---- Entry checks

TEST(MoeGemmBlocked, RejectsBadShapesAndSpansBeforeWriting) {
  const Matrix q4 = make_matrix(WeightFormat::kQ4_K, 1, 4, 256, 1);
  const Matrix bf = make_matrix(WeightFormat::kBf16, 1, 4, 256, 2);
  const std::vector<float> x = make_activations(1, 256, 3);
  const QuantizedX xq = quantize(x, 1, 256);
  std::vector<float> y(4, 5.0f);
  const auto throws_with = [](auto&& call, const char* text) {
    EXPECT_THAT(call, testing::ThrowsMessage<InputError>(testing::HasSubstr(text)));
  };
  throws_with([&] { moe_gemm_blocked_q8(q4.shape, q4.bytes, xq.view(1, 256), y, 0, 5); }, "row slice");
  throws_with([&] { moe_gemm_blocked_q8(q4.shape, q4.bytes, xq.view(1, 256), y, 3, 2); }, "row slice");
  throws_with([&] { moe_gemm_blocked_q8(q4.shape, std::span(q4.bytes).first(100), xq.view(1, 256), y, 0, 4); },
              "weights");
  throws_with([&] { moe_gemm_blocked_q8(MatvecShape{1, 4, 200, WeightFormat::kQ4_K}, q4.bytes, xq.view(1, 256), y, 0, 4); },
              "not a whole number");
  throws_with([&] { moe_gemm_blocked_q8(q4.shape, q4.bytes, xq.view(2, 128), y, 0, 4); }, "quantized activations");
  throws_with([&] { moe_gemm_blocked_q8(bf.shape, bf.bytes, xq.view(1, 256), y, 0, 4); }, "moe_gemm_blocked");
  throws_with([&] { moe_gemm_blocked(q4.shape, q4.bytes, x, y, 0, 4); }, "moe_gemm_blocked_q8");
  throws_with([&] { moe_gemm_blocked(bf.shape, bf.bytes, std::span(x).first(255), y, 0, 4); }, "x has");
  throws_with([&] { moe_gemm_ref(bf.shape, bf.bytes, x, std::span(y).first(3), 0, 4); }, "y has");
  throws_with([&] { moe_gemm_ref(MatvecShape{-1, 4, 256, WeightFormat::kBf16}, bf.bytes, x, y, 0, 4); }, "negative");
  // y overlapping x: both views of one buffer.
  std::vector<float> shared(260, 1.0f);
  throws_with([&] { moe_gemm_blocked(bf.shape, bf.bytes, std::span<const float>(shared).first(256),
                                     std::span<float>(shared).subspan(250, 4), 0, 4); },
              "overlaps");
  for (const float v : y) EXPECT_EQ(v, 5.0f);
}

TEST(MoeGemmBlocked, PortablePathIsAlwaysAvailable) {
  EXPECT_TRUE(detail::cpu_has(MatvecIsa::kPortable));
  const MatvecIsa best = detail::best_matvec_isa();
  EXPECT_TRUE(detail::cpu_has(best));
  if (detail::cpu_has(MatvecIsa::kAvx512Vnni)) {
    EXPECT_TRUE(detail::cpu_has(MatvecIsa::kAvx512));  // VNNI implies the base set
  }
}

// ---- Work

TEST(WorkOf, MatvecShapeByHand) {
  EXPECT_EQ(block_geometry(WeightFormat::kQ4_K).bytes, 144);
  EXPECT_EQ(weight_row_bytes(WeightFormat::kQ4_K, 7168), 28 * 144);  // 4032
  EXPECT_EQ(weight_row_bytes(WeightFormat::kQ8_0, 7168), 224 * 34);  // 7616
  EXPECT_EQ(weight_row_bytes(WeightFormat::kBf16, 7), 14);
  // Q4_K, batch 2, 3 rows of 256: 2*2*3*256 = 3072 FLOPs; 3*144 weight + 4*2*256 x + 4*2*3 y bytes.
  const Work q4 = work_of(MatvecShape{2, 3, 256, WeightFormat::kQ4_K});
  EXPECT_EQ(q4.flops, 3072.0);
  EXPECT_EQ(q4.bytes, 432.0 + 2048.0 + 24.0);
  // Q8_0, one row of one block: 64 FLOPs; 34 + 128 + 4 bytes.
  const Work q8 = work_of(MatvecShape{1, 1, 32, WeightFormat::kQ8_0});
  EXPECT_EQ(q8.flops, 64.0);
  EXPECT_EQ(q8.bytes, 166.0);
  // BF16, 2 rows of 3: 12 FLOPs; 12 + 12 + 8 bytes.
  const Work bf = work_of(MatvecShape{1, 2, 3, WeightFormat::kBf16});
  EXPECT_EQ(bf.flops, 12.0);
  EXPECT_EQ(bf.bytes, 32.0);
  EXPECT_EQ(work_of(MatvecShape{0, 5, 256, WeightFormat::kQ4_K}).bytes, 5.0 * 144);  // weights only
}

}  // namespace
}  // namespace deepfit::kernels
