// Compute-throughput probes and run-time ISA checks (see peak.h). Each vector probe is compiled for
// its own instruction set with a target attribute, so the library needs no -march flag; callers
// reach it only after the matching have_* check. No timing and no memory traffic here.
#include "kernels/peak.h"

#include <cmath>
#include <cstddef>
#include <string>

#include "kernels/error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deepfit::kernels {

bool have_avx512f() {
#if defined(__x86_64__)
  __builtin_cpu_init();  // idempotent; makes the check safe even before static constructors ran
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

bool have_avx2_fma() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool have_avx512_bf16() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

bool have_avx512_vnni() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

namespace {

void check_iterations(const char* probe, std::int64_t iterations) {
  if (iterations < 0)
    throw InputError(std::string(probe) + ": iterations " + std::to_string(iterations) + " is negative (expected >= 0)");
}

// The FMA recurrence of peak.h: x = fma(x, 1 - 2^-12, seed * 2^-12) pulls every value towards
// seed, so nothing overflows or turns subnormal however long the probe runs.
constexpr float kFmaInitStep = 0x1p-10f;
constexpr float kFmaMultiplier = 1.0f - 0x1p-12f;
constexpr float kFmaAddendScale = 0x1p-12f;

void fill_fma_start(float* x, std::size_t count, float seed) {
  for (std::size_t j = 0; j < count; ++j) x[j] = seed + static_cast<float>(j) * kFmaInitStep;
}

double sum_left_to_right(const float* x, std::size_t count) {
  double s = 0.0;
  for (std::size_t j = 0; j < count; ++j) s += static_cast<double>(x[j]);
  return s;
}

#if defined(__x86_64__)

[[gnu::target("avx512f")]] double fma_fp32_avx512(std::int64_t iterations, float seed) {
  constexpr std::size_t kAcc = kFmaFp32Avx512Accumulators;
  constexpr std::size_t kLanes = 16;
  alignas(64) float x[kAcc * kLanes];
  fill_fma_start(x, kAcc * kLanes, seed);
  __m512 acc[kAcc];
  for (std::size_t k = 0; k < kAcc; ++k) acc[k] = _mm512_load_ps(x + k * kLanes);
  const __m512 m = _mm512_set1_ps(kFmaMultiplier);
  const __m512 c = _mm512_set1_ps(seed * kFmaAddendScale);
  for (std::int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (std::size_t k = 0; k < kAcc; ++k) acc[k] = _mm512_fmadd_ps(acc[k], m, c);
  }
  for (std::size_t k = 0; k < kAcc; ++k) _mm512_store_ps(x + k * kLanes, acc[k]);
  return sum_left_to_right(x, kAcc * kLanes);
}

[[gnu::target("avx2,fma")]] double fma_fp32_avx2(std::int64_t iterations, float seed) {
  constexpr std::size_t kAcc = kFmaFp32Avx2Accumulators;
  constexpr std::size_t kLanes = 8;
  alignas(32) float x[kAcc * kLanes];
  fill_fma_start(x, kAcc * kLanes, seed);
  __m256 acc[kAcc];
  for (std::size_t k = 0; k < kAcc; ++k) acc[k] = _mm256_load_ps(x + k * kLanes);
  const __m256 m = _mm256_set1_ps(kFmaMultiplier);
  const __m256 c = _mm256_set1_ps(seed * kFmaAddendScale);
  for (std::int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (std::size_t k = 0; k < kAcc; ++k) acc[k] = _mm256_fmadd_ps(acc[k], m, c);
  }
  for (std::size_t k = 0; k < kAcc; ++k) _mm256_store_ps(x + k * kLanes, acc[k]);
  return sum_left_to_right(x, kAcc * kLanes);
}

// Operands as peak.h defines them. _mm512_cvtne2ps_pbh(hi, lo) puts `lo` in bf16 elements 0-15.
[[gnu::target("avx512f,avx512bf16")]] double dot_bf16_avx512(std::int64_t iterations, float seed) {
  constexpr std::size_t kAcc = kDotBf16Accumulators;
  constexpr std::size_t kLanes = 16;
  alignas(64) float u[2 * kLanes];
  alignas(64) float v[2 * kLanes];
  for (std::size_t i = 0; i < 2 * kLanes; ++i) {
    u[i] = seed + static_cast<float>(i) * 0x1p-3f;
    v[i] = seed - static_cast<float>(i) * 0x1p-4f;
  }
  const __m512bh vu = _mm512_cvtne2ps_pbh(_mm512_load_ps(u + kLanes), _mm512_load_ps(u));
  const __m512bh vv = _mm512_cvtne2ps_pbh(_mm512_load_ps(v + kLanes), _mm512_load_ps(v));
  alignas(64) float x[kAcc * kLanes];
  for (std::size_t j = 0; j < kAcc * kLanes; ++j) x[j] = seed + static_cast<float>(j) * 0x1p-7f;
  __m512 acc[kAcc];
  for (std::size_t k = 0; k < kAcc; ++k) acc[k] = _mm512_load_ps(x + k * kLanes);
  for (std::int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (std::size_t k = 0; k < kAcc; ++k) acc[k] = _mm512_dpbf16_ps(acc[k], vu, vv);
  }
  for (std::size_t k = 0; k < kAcc; ++k) _mm512_store_ps(x + k * kLanes, acc[k]);
  return sum_left_to_right(x, kAcc * kLanes);
}

// Operands as peak.h defines them; every conversion is modular (defined since C++20).
[[gnu::target("avx512f,avx512vnni")]] std::int64_t dot_int8_avx512(std::int64_t iterations, std::uint32_t seed) {
  constexpr std::size_t kAcc = kDotInt8Accumulators;
  constexpr std::size_t kLanes = 16;
  alignas(64) std::uint8_t u[4 * kLanes];
  alignas(64) std::int8_t s[4 * kLanes];
  for (std::size_t i = 0; i < 4 * kLanes; ++i) {
    const auto i32 = static_cast<std::uint32_t>(i);
    u[i] = static_cast<std::uint8_t>(seed + 7u * i32);
    s[i] = static_cast<std::int8_t>(static_cast<std::uint8_t>((seed >> 8) + 5u * i32));
  }
  const __m512i vu = _mm512_load_si512(u);
  const __m512i vs = _mm512_load_si512(s);
  alignas(64) std::int32_t x[kAcc * kLanes];
  for (std::size_t j = 0; j < kAcc * kLanes; ++j) x[j] = static_cast<std::int32_t>(seed + static_cast<std::uint32_t>(j));
  __m512i acc[kAcc];
  for (std::size_t k = 0; k < kAcc; ++k) acc[k] = _mm512_load_si512(x + k * kLanes);
  for (std::int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (std::size_t k = 0; k < kAcc; ++k) acc[k] = _mm512_dpbusd_epi32(acc[k], vu, vs);
  }
  for (std::size_t k = 0; k < kAcc; ++k) _mm512_store_si512(x + k * kLanes, acc[k]);
  std::int64_t total = 0;
  for (std::size_t j = 0; j < kAcc * kLanes; ++j) total += x[j];
  return total;
}

#endif

}  // namespace

std::optional<double> fma_fp32_probe(std::int64_t iterations, [[maybe_unused]] float seed) {
  check_iterations("fma_fp32_probe", iterations);
#if defined(__x86_64__)
  if (have_avx512f()) return fma_fp32_avx512(iterations, seed);
#endif
  return std::nullopt;
}

std::optional<double> fma_fp32_probe_avx2(std::int64_t iterations, [[maybe_unused]] float seed) {
  check_iterations("fma_fp32_probe_avx2", iterations);
#if defined(__x86_64__)
  if (have_avx2_fma()) return fma_fp32_avx2(iterations, seed);
#endif
  return std::nullopt;
}

double fma_fp32_probe_scalar(std::int64_t iterations, float seed) {
  check_iterations("fma_fp32_probe_scalar", iterations);
  constexpr std::size_t kAcc = kFmaFp32ScalarAccumulators;
  float x[kAcc];
  fill_fma_start(x, kAcc, seed);
  const float c = seed * kFmaAddendScale;
  for (std::int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (std::size_t k = 0; k < kAcc; ++k) x[k] = std::fma(x[k], kFmaMultiplier, c);
  }
  return sum_left_to_right(x, kAcc);
}

std::optional<double> dot_bf16_probe(std::int64_t iterations, [[maybe_unused]] float seed) {
  check_iterations("dot_bf16_probe", iterations);
#if defined(__x86_64__)
  if (have_avx512_bf16()) return dot_bf16_avx512(iterations, seed);
#endif
  return std::nullopt;
}

std::optional<std::int64_t> dot_int8_probe(std::int64_t iterations, [[maybe_unused]] std::uint32_t seed) {
  check_iterations("dot_int8_probe", iterations);
#if defined(__x86_64__)
  if (have_avx512_vnni()) return dot_int8_avx512(iterations, seed);
#endif
  return std::nullopt;
}

}  // namespace deepfit::kernels
