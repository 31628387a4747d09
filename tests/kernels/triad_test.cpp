// STREAM-like kernels (kernels/src/triad_*.cpp): the _simd variants against _ref on odd sizes and
// offset slices, the entry checks, and work_of(BandwidthShape) by hand. No timing here.
#include "kernels/triad.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/work.h"

namespace deepfit::kernels {
namespace {

constexpr std::size_t kNoMismatch = std::numeric_limits<std::size_t>::max();

// Index of the first element whose bits differ (so -0.0 vs 0.0 and NaN payloads count), or
// kNoMismatch. Bitwise rather than ==, and one index rather than a printed million-element vector.
std::size_t first_mismatch(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) return 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (std::bit_cast<std::uint64_t>(x[i]) != std::bit_cast<std::uint64_t>(y[i])) return i;
  }
  return kNoMismatch;
}

std::vector<double> random_doubles(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

struct Slice {
  std::size_t n;  // array length
  std::size_t begin;
  std::size_t end;
};

// Sizes 1, primes (not multiples of any vector width), and one large enough to leave the caches.
// Slices that start past 0 leave the output misaligned, so the heads and tails that align the
// stores both run.
std::vector<Slice> slices() {
  std::vector<Slice> out;
  for (const std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{13}, std::size_t{1000003}}) {
    out.push_back({n, 0, n});
    out.push_back({n, n / 3, n - n / 5});
    if (n > 2) out.push_back({n, 1, n - 1});
    out.push_back({n, n, n});  // empty slice at the end
  }
  return out;
}

// The outputs start as a sentinel, so the comparison also shows that both variants write every
// element of the slice and none outside it.
constexpr double kSentinel = -12345.5;

// Exact equality is the contract for copy, scale, add and triad: each output element is the same
// IEEE operation(s) on the same inputs in both variants (copy: none; scale and add: one rounded
// multiply or add; triad: a rounded multiply, then a rounded add, never fused because these files
// build with -ffp-contract=off). Elementwise kernels have no summation order to differ in, so any
// difference in bits is a bug, not rounding.
TEST(TriadSimd, CopyScaleAddTriadMatchReferenceBitForBit) {
  const double q = 3.0 + 1.0 / 7.0;  // not a power of two, so scale and triad really round
  for (const StorePolicy stores : {StorePolicy::kCached, StorePolicy::kNonTemporal}) {
    for (const Slice& s : slices()) {
      SCOPED_TRACE(std::string(stores == StorePolicy::kCached ? "cached" : "non-temporal") + " stores, n=" +
                   std::to_string(s.n) + " slice [" + std::to_string(s.begin) + ", " + std::to_string(s.end) + ")");
      const std::vector<double> x = random_doubles(s.n, 1);
      const std::vector<double> y = random_doubles(s.n, 2);
      std::vector<double> ref(s.n, kSentinel);
      std::vector<double> simd(s.n, kSentinel);

      std::vector<double> expected(s.n, kSentinel);
      std::copy(x.begin() + static_cast<std::ptrdiff_t>(s.begin), x.begin() + static_cast<std::ptrdiff_t>(s.end),
                expected.begin() + static_cast<std::ptrdiff_t>(s.begin));
      copy_ref(ref, x, s.begin, s.end);
      copy_simd(simd, x, s.begin, s.end, stores);
      EXPECT_EQ(first_mismatch(ref, expected), kNoMismatch) << "copy_ref";
      EXPECT_EQ(first_mismatch(simd, expected), kNoMismatch) << "copy_simd";

      scale_ref(ref, x, q, s.begin, s.end);
      scale_simd(simd, x, q, s.begin, s.end, stores);
      EXPECT_EQ(first_mismatch(ref, simd), kNoMismatch) << "scale";

      add_ref(ref, x, y, s.begin, s.end);
      add_simd(simd, x, y, s.begin, s.end, stores);
      EXPECT_EQ(first_mismatch(ref, simd), kNoMismatch) << "add";

      triad_ref(ref, x, y, q, s.begin, s.end);
      triad_simd(simd, x, y, q, s.begin, s.end, stores);
      EXPECT_EQ(first_mismatch(ref, simd), kNoMismatch) << "triad";
    }
  }
}

TEST(TriadRef, TriadIsAMultiplyThenAnAddNotAnFma) {
  // 1 + 2^-30 squared is 1 + 2^-29 + 2^-60: the product rounds to 1 + 2^-29, so b + q*c with two
  // roundings is exactly 2^-29, while an FMA would keep the 2^-60.
  const double q = 1.0 + 0x1p-30;
  const std::vector<double> b = {-(1.0 + 0x1p-29)};
  const std::vector<double> c = {q};
  std::vector<double> a(1);
  triad_ref(a, b, c, q, 0, 1);
  EXPECT_EQ(a[0], 0.0);
  triad_simd(a, b, c, q, 0, 1, StorePolicy::kCached);
  EXPECT_EQ(a[0], 0.0);
}

// sum_simd adds in another order than sum_ref. Any order of the n - 1 additions errs by at most
// (n - 1) * u * sum|x| to first order (u = eps / 2; each addition rounds a partial sum no larger
// than sum|x|; Higham, Accuracy and Stability of Numerical Algorithms, 4.2). The two results then
// differ by at most 2 (n - 1) u sum|x|, and n * eps * sum|x| = 2 n u sum|x| leaves 2 u sum|x| for
// the second-order terms.
TEST(TriadSimd, SumMatchesReferenceWithinSummationBound) {
  for (const Slice& s : slices()) {
    SCOPED_TRACE("n=" + std::to_string(s.n) + " slice [" + std::to_string(s.begin) + ", " + std::to_string(s.end) + ")");
    const std::vector<double> x = random_doubles(s.n, 3);
    double abs_sum = 0.0;
    for (std::size_t i = s.begin; i < s.end; ++i) abs_sum += std::fabs(x[i]);
    const double tol = static_cast<double>(s.end - s.begin) * std::numeric_limits<double>::epsilon() * abs_sum;
    EXPECT_NEAR(sum_simd(x, s.begin, s.end), sum_ref(x, s.begin, s.end), tol);
  }
}

TEST(TriadSimd, SumIsExactOnSmallIntegers) {
  // Integers below 2^53 add without rounding in any order, so both variants give the exact total.
  std::vector<double> x(1000003);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<double>(i % 1000);
  double exact = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) exact += static_cast<double>(i % 1000);
  EXPECT_EQ(sum_ref(x, 0, x.size()), exact);
  EXPECT_EQ(sum_simd(x, 0, x.size()), exact);
  EXPECT_EQ(sum_simd(x, 5, 5), 0.0);
}

TEST(TriadSimd, SumDoesNotDependOnTheDataAlignment) {
  // The same 100003 values at two different offsets from a 64-byte line: the order of sum_simd is
  // tied to the slice, not to addresses, so the bits agree.
  const std::vector<double> x = random_doubles(100003, 4);
  std::vector<double> shifted(x.size() + 3);
  std::copy(x.begin(), x.end(), shifted.begin() + 3);
  const double a = sum_simd(x, 0, x.size());
  const double b = sum_simd(shifted, 3, shifted.size());
  EXPECT_EQ(std::bit_cast<std::uint64_t>(a), std::bit_cast<std::uint64_t>(b));
}

TEST(TriadSimd, RejectsBadSlicesBeforeWriting) {
  const StorePolicy kCached = StorePolicy::kCached;
  std::vector<double> a(8, 1.0);
  std::vector<double> b(8, 2.0);
  std::vector<double> shorter(4, 3.0);
  EXPECT_THROW(copy_simd(a, b, 5, 4, kCached), InputError);          // begin after end
  EXPECT_THROW(copy_ref(a, b, 0, 9), InputError);                    // past the end of both
  EXPECT_THROW(add_simd(a, b, shorter, 0, 8, kCached), InputError);  // past the end of one input
  EXPECT_THROW(triad_ref(a, b, shorter, 2.0, 0, 8), InputError);
  EXPECT_THROW(sum_simd(shorter, 0, 5), InputError);
  EXPECT_THROW(scale_simd(a, a, 2.0, 0, 8, kCached), InputError);  // in place: the output is an input
  EXPECT_THROW(triad_simd(std::span<double>(a).subspan(1), std::span<const double>(a).first(7), b, 2.0, 0, 7,
                          StorePolicy::kNonTemporal),
               InputError);  // overlapping by all but one element
  EXPECT_EQ(a, std::vector<double>(8, 1.0));
  // Touching but not overlapping is fine.
  EXPECT_NO_THROW(copy_simd(std::span<double>(a).subspan(4), std::span<const double>(a).first(4), 0, 4, kCached));
}

TEST(TriadSimd, RejectionMessageNamesKernelAndSlice) {
  std::vector<double> a(8);
  std::vector<double> b(4);
  try {
    copy_simd(a, b, 0, 6, StorePolicy::kCached);
    FAIL() << "no InputError";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(),
                 "copy_simd: slice [0, 6): runs past an array of 4 elements (expected end <= the size of every array)");
  }
}

TEST(TriadSimd, StreamsOnX86) {
#if defined(__x86_64__)
  EXPECT_TRUE(have_non_temporal_stores());
#else
  EXPECT_FALSE(have_non_temporal_stores());
#endif
}

TEST(WorkOf, BandwidthOpsByHand) {
  // n = 1000 doubles of 8 bytes; bytes count each array named in the loop once (no write-allocate).
  const auto w = [](BandwidthOp op) { return work_of(BandwidthShape{op, 1000}); };
  EXPECT_EQ(w(BandwidthOp::kCopy).flops, 0.0);
  EXPECT_EQ(w(BandwidthOp::kCopy).bytes, 16000.0);   // read a, write c
  EXPECT_EQ(w(BandwidthOp::kScale).flops, 1000.0);
  EXPECT_EQ(w(BandwidthOp::kScale).bytes, 16000.0);  // read c, write b
  EXPECT_EQ(w(BandwidthOp::kAdd).flops, 1000.0);
  EXPECT_EQ(w(BandwidthOp::kAdd).bytes, 24000.0);    // read a and b, write c
  EXPECT_EQ(w(BandwidthOp::kTriad).flops, 2000.0);   // a multiply and an add per element
  EXPECT_EQ(w(BandwidthOp::kTriad).bytes, 24000.0);  // read b and c, write a
  EXPECT_EQ(w(BandwidthOp::kSum).flops, 1000.0);
  EXPECT_EQ(w(BandwidthOp::kSum).bytes, 8000.0);     // read a
  EXPECT_EQ(work_of(BandwidthShape{BandwidthOp::kTriad, 0}).bytes, 0.0);
}

}  // namespace
}  // namespace deepfit::kernels
