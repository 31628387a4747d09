// Blocked matrix-vector kernels (see moe_gemm.h): R output rows at a time share each activation
// load; AVX-512 bodies (moe_gemm_avx512.inc, built for AVX512_VNNI and for plain AVX-512 and picked
// at run time, so the library needs no -march flag) and portable loops for other CPUs.
#include "kernels/moe_gemm.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>
#include <utility>

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
// TODO(#4): a 256-bit AVX2 (+ AVX-VNNI) path: CPUs without AVX-512 run these loops, which keep up
// with memory for BF16 but not for the int8 dot products of Q8_0 and Q4_K.

// Byte access through unsigned char (which may alias anything), in plain integer arithmetic that
// does not depend on the host's byte order and that GCC vectorizes.
const unsigned char* bytes_of(const std::byte* p) { return reinterpret_cast<const unsigned char*>(p); }

std::uint16_t u16_at(const unsigned char* p) { return static_cast<std::uint16_t>(p[0] | p[1] << 8); }

float bf16_row_portable(const std::byte* w, const float* x, std::size_t K) {
  const unsigned char* u = bytes_of(w);
  constexpr std::size_t kLanes = 16;  // independent partial sums, so the adds can overlap
  float acc[kLanes] = {};
  std::size_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    for (std::size_t l = 0; l < kLanes; ++l) {
      const std::uint32_t bits = static_cast<std::uint32_t>(u16_at(u + 2 * (k + l))) << 16;
      acc[l] += std::bit_cast<float>(bits) * x[k + l];
    }
  }
  for (std::size_t l = 0; k + l < K; ++l) {
    acc[l] += std::bit_cast<float>(static_cast<std::uint32_t>(u16_at(u + 2 * (k + l))) << 16) * x[k + l];
  }
  float sum = 0.0f;
  for (const float a : acc) sum += a;
  return sum;
}

float q8_0_row_portable(const std::byte* w, const std::int8_t* qs, const float* scales, std::size_t K) {
  float acc = 0.0f;
  for (std::size_t j = 0; j < K / kQ8_0BlockWeights; ++j) {
    const unsigned char* block = bytes_of(w + j * kQ8_0BlockBytes);
    const std::int8_t* a = qs + j * kQ8_0BlockWeights;
    std::int32_t dot = 0;
    for (std::size_t i = 0; i < kQ8_0BlockWeights; ++i) {
      dot += static_cast<std::int8_t>(block[kQ8_0QsOffset + i]) * a[i];
    }
    acc += fp16_to_fp32(u16_at(block)) * scales[j] * static_cast<float>(dot);
  }
  return acc;
}

float q4_K_row_portable(const std::byte* w, const std::int8_t* qs, const float* scales, const std::int32_t* sums,
                        std::size_t K) {
  float acc = 0.0f;
  float acc_min = 0.0f;
  for (std::size_t i = 0; i < K / kQ4_KBlockWeights; ++i) {
    const std::byte* block = w + i * kQ4_KBlockBytes;
    const float d = fp16_to_fp32(u16_at(bytes_of(block)));
    const float dmin = fp16_to_fp32(u16_at(bytes_of(block + 2)));
    const Q4KScales s = unpack_q4_K_scales(
        std::span<const std::byte, kQ4_KScalesBytes>(block + kQ4_KScalesOffset, kQ4_KScalesBytes));
    for (std::size_t c = 0; c < 4; ++c) {
      const unsigned char* chunk = bytes_of(block + kQ4_KQsOffset + 32 * c);
      const std::size_t g = i * 8 + 2 * c;  // activation groups of sub-blocks 2c and 2c+1
      const std::int8_t* a_low = qs + g * 32;
      const std::int8_t* a_high = a_low + 32;
      std::int32_t dot_low = 0;
      std::int32_t dot_high = 0;
      for (std::size_t l = 0; l < 32; ++l) {
        dot_low += (chunk[l] & 15) * a_low[l];
        dot_high += (chunk[l] >> 4) * a_high[l];
      }
      acc += d * static_cast<float>(s.scales[2 * c]) * scales[g] * static_cast<float>(dot_low);
      acc += d * static_cast<float>(s.scales[2 * c + 1]) * scales[g + 1] * static_cast<float>(dot_high);
      acc_min += dmin * static_cast<float>(s.mins[2 * c]) * (scales[g] * static_cast<float>(sums[g]));
      acc_min += dmin * static_cast<float>(s.mins[2 * c + 1]) * (scales[g + 1] * static_cast<float>(sums[g + 1]));
    }
  }
  return acc - acc_min;
}

// The weights of the row group after the current one, [cursor, end), which the vector kernels
// prefetch in address order while computing the current group. A group's R rows are R
// interleaved streams a row apart; the hardware prefetchers follow one linear stream far better
// than several, so without this the kernels wait on memory although they could keep up with it.
// Empty (cursor == end) for the last group of a slice and for batch vectors after the first, which
// find the group's weights in cache.
struct NextGroup {
  const std::byte* cursor;
  const std::byte* end;
};

#if defined(__x86_64__)
// Q4_K with one activation vector: the activation side of each block in the AVX-512 kernels' layout
// (quants rearranged, scales spread: 512 bytes) is built once per call into a stack buffer and read
// by every row group, where it would otherwise be rebuilt per group (about a tenth of the work).
// Up to 32 blocks (cols <= 8192, which covers the expert GEMVs, in 16 KB of stack); longer rows and
// batches > 1 build it per group.
constexpr std::size_t kQ4KPreparedBlockBytes = 512;
constexpr std::size_t kQ4KPreparedMaxBlocks = 32;
#endif

// ---- x86: the two compilations of the AVX-512 bodies. GCC 12's AVX-512 headers fill the unused
// operand of many intrinsics with a self-initialized placeholder (_mm512_undefined_*), which
// -Wuninitialized reports inside those system headers once they are inlined here at -O3 (fixed in
// GCC 13); the pragmas silence that for these bodies only.
#if defined(__x86_64__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
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
#pragma GCC diagnostic pop
#endif

// The group after rows [.., n_next): rows [n_next, min(n_next + kRowsPerGroup, n_end)); empty for
// batch vectors after the first (b > 0).
[[maybe_unused]] NextGroup next_group(const std::byte* weights, std::size_t row_bytes, std::int64_t n_next,
                                      std::int64_t n_end, std::size_t b) {
  const std::byte* begin = weights + static_cast<std::size_t>(n_next) * row_bytes;
  if (b > 0 || n_next >= n_end) return {begin, begin};
  const std::int64_t rows = std::min(kRowsPerGroup, n_end - n_next);
  return {begin, begin + static_cast<std::size_t>(rows) * row_bytes};
}

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
  for_row_groups(n_begin, n_end, [&]<std::int64_t R>(std::int64_t n) {
    const std::byte* w = weights.data() + static_cast<std::size_t>(n) * row_bytes;
    for (std::size_t b = 0; b < static_cast<std::size_t>(shape.batch); ++b) {
      const float* xb = x.data() + b * K;
      float* out = y.data() + b * N + static_cast<std::size_t>(n);
#if defined(__x86_64__)
      const NextGroup next = next_group(weights.data(), row_bytes, n + R, n_end, b);
      if (isa == MatvecIsa::kAvx512Vnni) {
        avx512_vnni::bf16_rows<R>(w, row_bytes, xb, K, out, next);
        continue;
      }
      if (isa == MatvecIsa::kAvx512) {
        avx512::bf16_rows<R>(w, row_bytes, xb, K, out, next);
        continue;
      }
#endif
      for (std::int64_t r = 0; r < R; ++r) {
        out[r] = bf16_row_portable(w + static_cast<std::size_t>(r) * row_bytes, xb, K);
      }
    }
  });
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
#if defined(__x86_64__)
  const std::size_t num_blocks = K / kQ4_KBlockWeights;
  if (q4_K && shape.batch == 1 && isa != MatvecIsa::kPortable && num_blocks <= kQ4KPreparedMaxBlocks) {
    const bool vnni = isa == MatvecIsa::kAvx512Vnni;
    alignas(64) std::byte prepared[kQ4KPreparedMaxBlocks * kQ4KPreparedBlockBytes];
    (vnni ? avx512_vnni::q4_K_prepare : avx512::q4_K_prepare)(xq.qs.data(), xq.scales.data(), xq.sums.data(),
                                                              num_blocks, prepared);
    for_row_groups(n_begin, n_end, [&]<std::int64_t R>(std::int64_t n) {
      const std::byte* w = weights.data() + static_cast<std::size_t>(n) * row_bytes;
      const NextGroup next = next_group(weights.data(), row_bytes, n + R, n_end, 0);
      float* out = y.data() + static_cast<std::size_t>(n);
      vnni ? avx512_vnni::q4_K_rows_prepared<R>(w, row_bytes, prepared, num_blocks, out, next)
           : avx512::q4_K_rows_prepared<R>(w, row_bytes, prepared, num_blocks, out, next);
    });
    return;
  }
#endif
  for_row_groups(n_begin, n_end, [&]<std::int64_t R>(std::int64_t n) {
    const std::byte* w = weights.data() + static_cast<std::size_t>(n) * row_bytes;
    for (std::size_t b = 0; b < static_cast<std::size_t>(shape.batch); ++b) {
      const std::int8_t* qs = xq.qs.data() + b * K;
      const float* scales = xq.scales.data() + b * num_groups;
      const std::int32_t* sums = xq.sums.data() + b * num_groups;
      float* out = y.data() + b * N + static_cast<std::size_t>(n);
#if defined(__x86_64__)
      const NextGroup next = next_group(weights.data(), row_bytes, n + R, n_end, b);
      if (isa == MatvecIsa::kAvx512Vnni) {
        q4_K ? avx512_vnni::q4_K_rows<R>(w, row_bytes, qs, scales, sums, K, out, next)
             : avx512_vnni::q8_0_rows<R>(w, row_bytes, qs, scales, sums, K, out, next);
        continue;
      }
      if (isa == MatvecIsa::kAvx512) {
        q4_K ? avx512::q4_K_rows<R>(w, row_bytes, qs, scales, sums, K, out, next)
             : avx512::q8_0_rows<R>(w, row_bytes, qs, scales, sums, K, out, next);
        continue;
      }
#endif
      for (std::int64_t r = 0; r < R; ++r) {
        const std::byte* row = w + static_cast<std::size_t>(r) * row_bytes;
        out[r] = q4_K ? q4_K_row_portable(row, qs, scales, sums, K) : q8_0_row_portable(row, qs, scales, K);
      }
    }
  });
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
