// Vectorized STREAM-like kernels (see triad.h): an AVX-512F path chosen at run time, an SSE2
// streaming-store path for x86-64 without AVX-512, and portable __restrict loops that GCC
// vectorizes for the ISA the library is built for. Must match triad_ref.cpp; no threads, no allocation.
#include "kernels/triad.h"

#include <algorithm>
#include <cstdint>

#include "kernels/peak.h"
#include "kernels/work.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deepfit::kernels {
namespace {

// ---- Portable path with ordinary stores. __restrict promises GCC that the arrays do not alias
// (check_slice has made sure), so it vectorizes without run-time overlap checks.

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

// The fixed summation order of sum_simd, shared by every path: element i of the slice goes to
// partial sum i % 64, then the 64 partial sums fold in halves (p[j] += p[j + w] for w = 32, ..., 1).
// 64 partial sums make 8 AVX-512 accumulators of 8 lanes, enough independent adds in flight to
// keep up with the loads; folding elementwise lets GCC vectorize it without reassociating anything.
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

#if defined(__x86_64__)

// x and y are an op's inputs in the order of triad.h; copy and scale read only x.
constexpr bool reads_y(BandwidthOp op) { return op == BandwidthOp::kAdd || op == BandwidthOp::kTriad; }

// ---- SSE2 streaming stores (every x86-64 CPU has them), used for kNonTemporal without AVX-512.
// One scalar element aligns the output to 16 bytes, as _mm_stream_pd requires.

template <BandwidthOp kOp>
double apply_scalar(double x, double y, double q) {
  if constexpr (kOp == BandwidthOp::kCopy) {
    return x;
  } else if constexpr (kOp == BandwidthOp::kScale) {
    return q * x;
  } else if constexpr (kOp == BandwidthOp::kAdd) {
    return x + y;
  } else {
    static_assert(kOp == BandwidthOp::kTriad);
    return x + q * y;
  }
}

template <BandwidthOp kOp>
__m128d apply_sse2(__m128d x, __m128d y, __m128d q) {
  if constexpr (kOp == BandwidthOp::kCopy) {
    return x;
  } else if constexpr (kOp == BandwidthOp::kScale) {
    return _mm_mul_pd(q, x);
  } else if constexpr (kOp == BandwidthOp::kAdd) {
    return _mm_add_pd(x, y);
  } else {
    return _mm_add_pd(x, _mm_mul_pd(q, y));
  }
}

template <BandwidthOp kOp>
void scalar_step(double* dst, const double* x, const double* y, double q, std::size_t i) {
  dst[i] = apply_scalar<kOp>(x[i], reads_y(kOp) ? y[i] : 0.0, q);
}

template <BandwidthOp kOp>
void elementwise_sse2_nt(double* dst, const double* x, const double* y, double q, std::size_t n) {
  const __m128d vq = _mm_set1_pd(q);
  std::size_t i = 0;
  if (n > 0 && reinterpret_cast<std::uintptr_t>(dst) % 16 != 0) scalar_step<kOp>(dst, x, y, q, i++);
  for (; i + 2 <= n; i += 2) {
    const __m128d vx = _mm_loadu_pd(x + i);
    const __m128d vy = reads_y(kOp) ? _mm_loadu_pd(y + i) : vx;
    _mm_stream_pd(dst + i, apply_sse2<kOp>(vx, vy, vq));
  }
  _mm_sfence();  // streaming stores are weakly ordered: publish them before returning
  if (i < n) scalar_step<kOp>(dst, x, y, q, i);
}

// ---- AVX-512F. Loads are unaligned; stores are 64-byte aligned after a masked head, which
// streaming stores require and which keeps ordinary stores from splitting cache lines. Masked
// head and tail loads never touch memory outside the slice.

constexpr std::size_t kLanes = 8;  // doubles per zmm register

[[gnu::target("avx512f")]] inline __mmask8 first_lanes(std::size_t count) {
  return static_cast<__mmask8>((1u << count) - 1u);
}

template <BandwidthOp kOp>
[[gnu::target("avx512f")]] inline __m512d apply_avx512(__m512d x, __m512d y, __m512d q) {
  if constexpr (kOp == BandwidthOp::kCopy) {
    return x;
  } else if constexpr (kOp == BandwidthOp::kScale) {
    return _mm512_mul_pd(q, x);
  } else if constexpr (kOp == BandwidthOp::kAdd) {
    return _mm512_add_pd(x, y);
  } else {
    return _mm512_add_pd(x, _mm512_mul_pd(q, y));
  }
}

template <BandwidthOp kOp>
[[gnu::target("avx512f")]] inline __m512d load_apply(const double* x, const double* y, __m512d q, std::size_t i) {
  const __m512d vx = _mm512_loadu_pd(x + i);
  if constexpr (reads_y(kOp)) return apply_avx512<kOp>(vx, _mm512_loadu_pd(y + i), q);
  return apply_avx512<kOp>(vx, vx, q);
}

template <BandwidthOp kOp>
[[gnu::target("avx512f")]] inline void masked_step(double* dst, const double* x, const double* y, __m512d q,
                                                    std::size_t i, __mmask8 m) {
  const __m512d vx = _mm512_maskz_loadu_pd(m, x + i);
  const __m512d vy = reads_y(kOp) ? _mm512_maskz_loadu_pd(m, y + i) : vx;
  _mm512_mask_storeu_pd(dst + i, m, apply_avx512<kOp>(vx, vy, q));
}

template <BandwidthOp kOp>
[[gnu::target("avx512f")]] void elementwise_avx512(double* dst, const double* x, const double* y, double q,
                                                   std::size_t n, StorePolicy stores) {
  const __m512d vq = _mm512_set1_pd(q);
  const std::size_t misaligned = reinterpret_cast<std::uintptr_t>(dst) / sizeof(double) % kLanes;
  const std::size_t head = std::min(misaligned == 0 ? 0 : kLanes - misaligned, n);
  if (head > 0) masked_step<kOp>(dst, x, y, vq, 0, first_lanes(head));
  std::size_t i = head;
  if (stores == StorePolicy::kNonTemporal) {
    for (; i + kLanes <= n; i += kLanes) _mm512_stream_pd(dst + i, load_apply<kOp>(x, y, vq, i));
    _mm_sfence();  // streaming stores are weakly ordered: publish them before returning
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
  // The tail adds into only the lanes it has elements for, as sum_portable does.
  for (std::size_t r = 0; r < kNumAcc && i + r * kLanes < n; ++r) {
    const std::size_t start = i + r * kLanes;
    const __mmask8 m = first_lanes(std::min(kLanes, n - start));
    acc[r] = _mm512_mask_add_pd(acc[r], m, acc[r], _mm512_maskz_loadu_pd(m, x + start));
  }
  // fold_partial_sums in registers (folding through memory with narrowing widths stalls store
  // forwarding): halves of the accumulator array, then the last 8 lanes in the same pairs.
  for (std::size_t w = kNumAcc / 2; w >= 1; w /= 2) {
    for (std::size_t r = 0; r < w; ++r) acc[r] = _mm512_add_pd(acc[r], acc[r + w]);
  }
  alignas(64) double p[kLanes];
  _mm512_store_pd(p, acc[0]);
  return ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
}

// The x86-64 dispatch for the elementwise ops; false when the portable loop should run.
template <BandwidthOp kOp>
bool elementwise_x86(double* dst, const double* x, const double* y, double q, std::size_t n, StorePolicy stores) {
  if (have_avx512f()) {
    elementwise_avx512<kOp>(dst, x, y, q, n, stores);
    return true;
  }
  if (stores == StorePolicy::kNonTemporal) {
    elementwise_sse2_nt<kOp>(dst, x, y, q, n);
    return true;
  }
  return false;
}

#endif

}  // namespace

bool have_non_temporal_stores() {
#if defined(__x86_64__)
  return true;
#else
  return false;
#endif
}

void copy_simd(std::span<double> c, std::span<const double> a, std::size_t begin, std::size_t end,
               [[maybe_unused]] StorePolicy stores) {
  detail::check_slice("copy_simd", {c}, {a}, begin, end);
  double* dst = c.data() + begin;
  const double* x = a.data() + begin;
#if defined(__x86_64__)
  if (elementwise_x86<BandwidthOp::kCopy>(dst, x, nullptr, 0.0, end - begin, stores)) return;
#endif
  copy_portable(dst, x, end - begin);
}

void scale_simd(std::span<double> b, std::span<const double> c, double q, std::size_t begin, std::size_t end,
                [[maybe_unused]] StorePolicy stores) {
  detail::check_slice("scale_simd", {b}, {c}, begin, end);
  double* dst = b.data() + begin;
  const double* x = c.data() + begin;
#if defined(__x86_64__)
  if (elementwise_x86<BandwidthOp::kScale>(dst, x, nullptr, q, end - begin, stores)) return;
#endif
  scale_portable(dst, x, q, end - begin);
}

void add_simd(std::span<double> c, std::span<const double> a, std::span<const double> b, std::size_t begin,
              std::size_t end, [[maybe_unused]] StorePolicy stores) {
  detail::check_slice("add_simd", {c}, {a, b}, begin, end);
  double* dst = c.data() + begin;
  const double* x = a.data() + begin;
  const double* y = b.data() + begin;
#if defined(__x86_64__)
  if (elementwise_x86<BandwidthOp::kAdd>(dst, x, y, 0.0, end - begin, stores)) return;
#endif
  add_portable(dst, x, y, end - begin);
}

void triad_simd(std::span<double> a, std::span<const double> b, std::span<const double> c, double q,
                std::size_t begin, std::size_t end, [[maybe_unused]] StorePolicy stores) {
  detail::check_slice("triad_simd", {a}, {b, c}, begin, end);
  double* dst = a.data() + begin;
  const double* x = b.data() + begin;
  const double* y = c.data() + begin;
#if defined(__x86_64__)
  if (elementwise_x86<BandwidthOp::kTriad>(dst, x, y, q, end - begin, stores)) return;
#endif
  triad_portable(dst, x, y, q, end - begin);
}

double sum_simd(std::span<const double> a, std::size_t begin, std::size_t end) {
  detail::check_slice("sum_simd", {}, {a}, begin, end);
#if defined(__x86_64__)
  if (have_avx512f()) return sum_avx512(a.data() + begin, end - begin);
#endif
  return sum_portable(a.data() + begin, end - begin);
}

}  // namespace deepfit::kernels
