// Blocked matrix-vector kernels (see moe_gemm.h): R output rows at a time share each activation
// load; AVX-512 bodies (moe_gemm_avx512.inc, built for AVX512_VNNI and for plain AVX-512 and picked
// at run time, so the library needs no -march flag) and portable loops for other CPUs.
#include "kernels/moe_gemm.h"

#include <bit>
#include <cstring>
#include <string>

#include "kernels/error.h"
#include "kernels/quant_blocks.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deepfit::kernels {
namespace {

// Rows per kernel call: 4 rows' accumulators and weight streams fit the 32 zmm registers and keep
// enough independent loads in flight; each activation block is loaded once per 4 rows.
constexpr std::int64_t kRowsPerGroup = 4;

// ---- Portable paths. Same blocking as the vector bodies (exact int32 dot per 32 weights, fp32
// scaling), scalar code that GCC may vectorize for the baseline ISA.

float bf16_at(const std::byte* p) {
  std::uint16_t bits;
  std::memcpy(&bits, p, sizeof bits);
  if constexpr (std::endian::native == std::endian::big) bits = static_cast<std::uint16_t>(bits << 8 | bits >> 8);
  return bf16_to_fp32(bits);
}

std::uint16_t fp16_bits_at(const std::byte* p) {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(p[0]) | std::to_integer<unsigned>(p[1]) << 8);
}

float bf16_row_portable(const std::byte* w, const float* x, std::size_t K) {
  constexpr std::size_t kLanes = 16;  // independent partial sums, so the adds can overlap
  float acc[kLanes] = {};
  std::size_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    for (std::size_t l = 0; l < kLanes; ++l) acc[l] += bf16_at(w + 2 * (k + l)) * x[k + l];
  }
  for (std::size_t l = 0; k + l < K; ++l) acc[l] += bf16_at(w + 2 * (k + l)) * x[k + l];
  float sum = 0.0f;
  for (const float a : acc) sum += a;
  return sum;
}

float q8_0_row_portable(const std::byte* w, const std::int8_t* qs, const float* scales, std::size_t K) {
  float acc = 0.0f;
  for (std::size_t j = 0; j < K / kQ8_0BlockWeights; ++j) {
    const std::byte* block = w + j * kQ8_0BlockBytes;
    std::int32_t dot = 0;
    for (std::size_t i = 0; i < kQ8_0BlockWeights; ++i) {
      const auto q = static_cast<std::int8_t>(std::to_integer<std::uint8_t>(block[kQ8_0QsOffset + i]));
      dot += q * qs[j * kQ8_0BlockWeights + i];
    }
    acc += fp16_to_fp32(fp16_bits_at(block)) * scales[j] * static_cast<float>(dot);
  }
  return acc;
}

float q4_K_row_portable(const std::byte* w, const std::int8_t* qs, const float* scales, const std::int32_t* sums,
                        std::size_t K) {
  float acc = 0.0f;
  float acc_min = 0.0f;
  for (std::size_t i = 0; i < K / kQ4_KBlockWeights; ++i) {
    const std::byte* block = w + i * kQ4_KBlockBytes;
    const float d = fp16_to_fp32(fp16_bits_at(block));
    const float dmin = fp16_to_fp32(fp16_bits_at(block + 2));
    const Q4KScales s = unpack_q4_K_scales(
        std::span<const std::byte, kQ4_KScalesBytes>(block + kQ4_KScalesOffset, kQ4_KScalesBytes));
    for (std::size_t b = 0; b < 8; ++b) {
      const std::size_t g = i * 8 + b;  // activation group of sub-block b
      const std::byte* chunk = block + kQ4_KQsOffset + 32 * (b / 2);
      const unsigned shift = b % 2 == 0 ? 0 : 4;
      std::int32_t dot = 0;
      for (std::size_t l = 0; l < 32; ++l) {
        const auto q = static_cast<std::int32_t>((std::to_integer<unsigned>(chunk[l]) >> shift) & 15u);
        dot += q * qs[g * 32 + l];
      }
      acc += d * static_cast<float>(s.scales[b]) * scales[g] * static_cast<float>(dot);
      acc_min += dmin * static_cast<float>(s.mins[b]) * (scales[g] * static_cast<float>(sums[g]));
    }
  }
  return acc - acc_min;
}

// ---- x86: the two compilations of the AVX-512 bodies.
#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,f16c,fma")
namespace avx512 {
constexpr bool kVnni = false;
#include "moe_gemm_avx512.inc"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,f16c,fma,avx512vnni")
namespace avx512_vnni {
constexpr bool kVnni = true;
#include "moe_gemm_avx512.inc"
}  // namespace avx512_vnni
#pragma GCC pop_options
#endif

// Calls rows(R, n) over [n_begin, n_end) in groups of kRowsPerGroup, then the last 1-3 rows. A
// row's arithmetic does not depend on its group size, so results do not depend on the slicing.
template <typename Rows>
void for_row_groups(std::int64_t n_begin, std::int64_t n_end, Rows&& rows) {
  std::int64_t n = n_begin;
  for (; n + kRowsPerGroup <= n_end; n += kRowsPerGroup) rows.template operator()<kRowsPerGroup>(n);
  switch (n_end - n) {
    case 3: rows.template operator()<3>(n); break;
    case 2: rows.template operator()<2>(n); break;
    case 1: rows.template operator()<1>(n); break;
    default: break;
  }
}

}  // namespace

namespace detail {

bool cpu_has(MatvecIsa isa) {
  if (isa == MatvecIsa::kPortable) return true;
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
  if (isa == MatvecIsa::kAvx512) return avx512;
  return avx512 && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

MatvecIsa best_matvec_isa() {
  if (cpu_has(MatvecIsa::kAvx512Vnni)) return MatvecIsa::kAvx512Vnni;
  if (cpu_has(MatvecIsa::kAvx512)) return MatvecIsa::kAvx512;
  return MatvecIsa::kPortable;
}

namespace {
void check_isa(const char* kernel, MatvecIsa isa) {
  if (!cpu_has(isa)) throw InputError(std::string(kernel) + ": this CPU lacks the requested instruction set");
}
}  // namespace

void moe_gemm_blocked_on(MatvecIsa isa, const MatvecShape& shape, std::span<const std::byte> weights,
                         std::span<const float> x, std::span<float> y, std::int64_t n_begin, std::int64_t n_end) {
  constexpr const char* kKernel = "moe_gemm_blocked";
  check_matvec(kKernel, shape, weights.size(), y, n_begin, n_end);
  check_matvec_x(kKernel, shape, x, y);
  if (shape.weight_format != WeightFormat::kBf16) {
    throw InputError(std::string(kKernel) +
                     ": takes BF16 weights only (Q8_0 and Q4_K: quantize_activations_q8, then moe_gemm_blocked_q8)");
  }
  check_isa(kKernel, isa);
  const auto K = static_cast<std::size_t>(shape.cols);
  const auto N = static_cast<std::size_t>(shape.rows);
  const std::size_t row_bytes = 2 * K;
  for (std::size_t b = 0; b < static_cast<std::size_t>(shape.batch); ++b) {
    const float* xb = x.data() + b * K;
    float* yb = y.data() + b * N;
    for_row_groups(n_begin, n_end, [&]<std::int64_t R>(std::int64_t n) {
      const std::byte* w = weights.data() + static_cast<std::size_t>(n) * row_bytes;
      float* out = yb + n;
#if defined(__x86_64__)
      if (isa == MatvecIsa::kAvx512Vnni) return avx512_vnni::bf16_rows<R>(w, row_bytes, xb, K, out);
      if (isa == MatvecIsa::kAvx512) return avx512::bf16_rows<R>(w, row_bytes, xb, K, out);
#endif
      for (std::int64_t r = 0; r < R; ++r) out[r] = bf16_row_portable(w + static_cast<std::size_t>(r) * row_bytes, xb, K);
    });
  }
}

void moe_gemm_blocked_q8_on(MatvecIsa isa, const MatvecShape& shape, std::span<const std::byte> weights,
                            const ActivationsQ8& xq, std::span<float> y, std::int64_t n_begin, std::int64_t n_end) {
  constexpr const char* kKernel = "moe_gemm_blocked_q8";
  check_matvec(kKernel, shape, weights.size(), y, n_begin, n_end);
  check_matvec_xq(kKernel, shape, xq, y);
  if (shape.weight_format == WeightFormat::kBf16) {
    throw InputError(std::string(kKernel) + ": takes Q8_0 or Q4_K weights (BF16: moe_gemm_blocked)");
  }
  check_isa(kKernel, isa);
  const auto K = static_cast<std::size_t>(shape.cols);
  const auto N = static_cast<std::size_t>(shape.rows);
  const auto num_groups = K / static_cast<std::size_t>(kActivationGroup);
  const auto row_bytes = static_cast<std::size_t>(weight_row_bytes(shape.weight_format, shape.cols));
  const bool q4_K = shape.weight_format == WeightFormat::kQ4_K;
  for (std::size_t b = 0; b < static_cast<std::size_t>(shape.batch); ++b) {
    const std::int8_t* qs = xq.qs.data() + b * K;
    const float* scales = xq.scales.data() + b * num_groups;
    const std::int32_t* sums = xq.sums.data() + b * num_groups;
    float* yb = y.data() + b * N;
    for_row_groups(n_begin, n_end, [&]<std::int64_t R>(std::int64_t n) {
      const std::byte* w = weights.data() + static_cast<std::size_t>(n) * row_bytes;
      float* out = yb + n;
#if defined(__x86_64__)
      if (isa == MatvecIsa::kAvx512Vnni) {
        return q4_K ? avx512_vnni::q4_K_rows<R>(w, row_bytes, qs, scales, sums, K, out)
                    : avx512_vnni::q8_0_rows<R>(w, row_bytes, qs, scales, sums, K, out);
      }
      if (isa == MatvecIsa::kAvx512) {
        return q4_K ? avx512::q4_K_rows<R>(w, row_bytes, qs, scales, sums, K, out)
                    : avx512::q8_0_rows<R>(w, row_bytes, qs, scales, sums, K, out);
      }
#endif
      for (std::int64_t r = 0; r < R; ++r) {
        const std::byte* row = w + static_cast<std::size_t>(r) * row_bytes;
        out[r] = q4_K ? q4_K_row_portable(row, qs, scales, sums, K) : q8_0_row_portable(row, qs, scales, K);
      }
    });
  }
}

}  // namespace detail

void moe_gemm_blocked(const MatvecShape& shape, std::span<const std::byte> weights, std::span<const float> x,
                      std::span<float> y, std::int64_t n_begin, std::int64_t n_end) {
  detail::moe_gemm_blocked_on(detail::best_matvec_isa(), shape, weights, x, y, n_begin, n_end);
}

void moe_gemm_blocked_q8(const MatvecShape& shape, std::span<const std::byte> weights, const ActivationsQ8& xq,
                         std::span<float> y, std::int64_t n_begin, std::int64_t n_end) {
  detail::moe_gemm_blocked_q8_on(detail::best_matvec_isa(), shape, weights, xq, y, n_begin, n_end);
}

}  // namespace deepfit::kernels
