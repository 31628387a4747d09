// Vectorized STREAM-like kernels (see triad.h): an AVX-512F path chosen at run time, and a portable
// path of __restrict loops that GCC vectorizes for whatever ISA the library is built for.
// Must match triad_ref.cpp; no threads, no allocation.
#include "kernels/triad.h"

#include <algorithm>
#include <cstdint>

#include "kernels/peak.h"
#include "kernels/work.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace deepfit::kernels {
namespace {

// ---- Portable path. __restrict promises GCC that the arrays do not alias (check_slice has made
// sure), so it vectorizes without run-time overlap checks.

void copy_portable(double* __restrict c, const double* __restrict a, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) c[i] = a[i];
}

void scale_portable(double* __restrict b, const double* __restrict c, double q, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) b[i] = q * c[i];
}

void add_portable(double* __restrict c, const double* __restrict a, const double* __restrict b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) c[i] = a[i] + b[i];
}

void triad_portable(double* __restrict a, const double* __restrict b, const double* __restrict c, double q,
                    std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) a[i] = b[i] + q * c[i];
}

// The fixed summation order of sum_simd, shared by both paths: element i of the slice goes to
// partial sum i % 64, then the 64 partial sums fold in halves (p[j] += p[j + w] for w = 32, ..., 1).
// 64 partial sums give 8 AVX-512 accumulators of 8 lanes, enough to keep two adds per cycle in
// flight; folding elementwise lets GCC vectorize it without reassociating anything.
constexpr std::size_t kNumPartialSums = 64;

double fold_partial_sums(double* p) {
  for (std::size_t w = kNumPartialSums / 2; w >= 1; w /= 2) {
    for (std::size_t j = 0; j < w; ++j) p[j] += p[j + w];
  }
  return p[0];
}

double sum_portable(const double* __restrict x, std::size_t n) {
  double p[kNumPartialSums] = {};
  std::size_t i = 0;
  for (; i + kNumPartialSums <= n; i += kNumPartialSums) {
    for (std::size_t j = 0; j < kNumPartialSums; ++j) p[j] += x[i + j];
  }
  for (std::size_t j = 0; i + j < n; ++j) p[j] += x[i + j];
  return fold_partial_sums(p);
}

#if defined(__x86_64__) || defined(__i386__)

// ---- AVX-512F path. Loads are unaligned; stores are 64-byte aligned after a masked head, which
// streaming stores require and which keeps ordinary stores from splitting cache lines. Masked
// head and tail loads never touch memory outside the slice.

constexpr std::size_t kLanes = 8;  // doubles per zmm register

[[gnu::target("avx512f")]] inline __mmask8 first_lanes(std::size_t count) {
  return static_cast<__mmask8>((1u << count) - 1u);
}

// x and y are the op's inputs in the order of triad.h (copy and scale read only x).
template <BandwidthOp kOp>
[[gnu::target("avx512f")]] inline __m512d apply(__m512d x, __m512d y, __m512d q) {
  if constexpr (kOp == BandwidthOp::kCopy) {
    return x;
  } else if constexpr (kOp == BandwidthOp::kScale) {
    return _mm512_mul_pd(q, x);
  } else if constexpr (kOp == BandwidthOp::kAdd) {
    return _mm512_add_pd(x, y);
  } else {
    static_assert(kOp == BandwidthOp::kTriad);
    return _mm512_add_pd(x, _mm512_mul_pd(q, y));
  }
}

template <BandwidthOp kOp>
[[gnu::target("avx512f")]] inline __m512d load_apply(const double* x, const double* y, __m512d q, std::size_t i) {
  const __m512d vx = _mm512_loadu_pd(x + i);
  if constexpr (kOp == BandwidthOp::kAdd || kOp == BandwidthOp::kTriad) {
    return apply<kOp>(vx, _mm512_loadu_pd(y + i), q);
  } else {
    return apply<kOp>(vx, vx, q);
  }
}

template <BandwidthOp kOp>
[[gnu::target("avx512f")]] inline void masked_step(double* dst, const double* x, const double* y, __m512d q,
                                                    std::size_t i, __mmask8 m) {
  const __m512d vx = _mm512_maskz_loadu_pd(m, x + i);
  if constexpr (kOp == BandwidthOp::kAdd || kOp == BandwidthOp::kTriad) {
    _mm512_mask_storeu_pd(dst + i, m, apply<kOp>(vx, _mm512_maskz_loadu_pd(m, y + i), q));
  } else {
    _mm512_mask_storeu_pd(dst + i, m, apply<kOp>(vx, vx, q));
  }
}

template <BandwidthOp kOp>
[[gnu::target("avx512f")]] void elementwise_avx512(double* dst, const double* x, const double* y, double q,
                                                   std::size_t n) {
  const __m512d vq = _mm512_set1_pd(q);
  const std::size_t misaligned = reinterpret_cast<std::uintptr_t>(dst) / sizeof(double) % kLanes;
  const std::size_t head = std::min(misaligned == 0 ? 0 : kLanes - misaligned, n);
  if (head > 0) masked_step<kOp>(dst, x, y, vq, 0, first_lanes(head));
  std::size_t i = head;
  if (n * sizeof(double) >= kStreamingStoreMinBytes) {
    for (; i + kLanes <= n; i += kLanes) _mm512_stream_pd(dst + i, load_apply<kOp>(x, y, vq, i));
    // Streaming stores are weakly ordered: fence them before the caller's barrier publishes them.
    _mm_sfence();
  } else {
    for (; i + kLanes <= n; i += kLanes) _mm512_store_pd(dst + i, load_apply<kOp>(x, y, vq, i));
  }
  if (i < n) masked_step<kOp>(dst, x, y, vq, i, first_lanes(n - i));
}

// Same order as sum_portable: accumulator r, lane l holds partial sum 8r + l.
[[gnu::target("avx512f")]] double sum_avx512(const double* x, std::size_t n) {
  constexpr std::size_t kNumAcc = kNumPartialSums / kLanes;
  __m512d acc[kNumAcc];
  for (std::size_t r = 0; r < kNumAcc; ++r) acc[r] = _mm512_setzero_pd();
  std::size_t i = 0;
  for (; i + kNumPartialSums <= n; i += kNumPartialSums) {
#pragma GCC unroll 8
    for (std::size_t r = 0; r < kNumAcc; ++r) acc[r] = _mm512_add_pd(acc[r], _mm512_loadu_pd(x + i + r * kLanes));
  }
  // The tail updates only the lanes it has elements for (a masked add, not an add of zeros, so a
  // partial sum of -0.0 stays -0.0 exactly as in sum_portable).
  for (std::size_t r = 0; r < kNumAcc && i + r * kLanes < n; ++r) {
    const std::size_t start = i + r * kLanes;
    const __mmask8 m = first_lanes(std::min(kLanes, n - start));
    acc[r] = _mm512_mask_add_pd(acc[r], m, acc[r], _mm512_maskz_loadu_pd(m, x + start));
  }
  alignas(64) double p[kNumPartialSums];
  for (std::size_t r = 0; r < kNumAcc; ++r) _mm512_store_pd(p + r * kLanes, acc[r]);
  return fold_partial_sums(p);
}

#endif

}  // namespace

void copy_simd(std::span<double> c, std::span<const double> a, std::size_t begin, std::size_t end) {
  detail::check_slice("copy_simd", {c}, {a}, begin, end);
  const std::size_t n = end - begin;
#if defined(__x86_64__) || defined(__i386__)
  if (have_avx512f()) return elementwise_avx512<BandwidthOp::kCopy>(c.data() + begin, a.data() + begin, nullptr, 0.0, n);
#endif
  copy_portable(c.data() + begin, a.data() + begin, n);
}

void scale_simd(std::span<double> b, std::span<const double> c, double q, std::size_t begin, std::size_t end) {
  detail::check_slice("scale_simd", {b}, {c}, begin, end);
  const std::size_t n = end - begin;
#if defined(__x86_64__) || defined(__i386__)
  if (have_avx512f()) return elementwise_avx512<BandwidthOp::kScale>(b.data() + begin, c.data() + begin, nullptr, q, n);
#endif
  scale_portable(b.data() + begin, c.data() + begin, q, n);
}

void add_simd(std::span<double> c, std::span<const double> a, std::span<const double> b, std::size_t begin,
              std::size_t end) {
  detail::check_slice("add_simd", {c}, {a, b}, begin, end);
  const std::size_t n = end - begin;
#if defined(__x86_64__) || defined(__i386__)
  if (have_avx512f())
    return elementwise_avx512<BandwidthOp::kAdd>(c.data() + begin, a.data() + begin, b.data() + begin, 0.0, n);
#endif
  add_portable(c.data() + begin, a.data() + begin, b.data() + begin, n);
}

void triad_simd(std::span<double> a, std::span<const double> b, std::span<const double> c, double q,
                std::size_t begin, std::size_t end) {
  detail::check_slice("triad_simd", {a}, {b, c}, begin, end);
  const std::size_t n = end - begin;
#if defined(__x86_64__) || defined(__i386__)
  if (have_avx512f())
    return elementwise_avx512<BandwidthOp::kTriad>(a.data() + begin, b.data() + begin, c.data() + begin, q, n);
#endif
  triad_portable(a.data() + begin, b.data() + begin, c.data() + begin, q, n);
}

double sum_simd(std::span<const double> a, std::size_t begin, std::size_t end) {
  detail::check_slice("sum_simd", {}, {a}, begin, end);
#if defined(__x86_64__) || defined(__i386__)
  if (have_avx512f()) return sum_avx512(a.data() + begin, end - begin);
#endif
  return sum_portable(a.data() + begin, end - begin);
}

}  // namespace deepfit::kernels
