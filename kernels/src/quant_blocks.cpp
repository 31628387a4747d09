// Reference GGUF block codecs (see quant_blocks.h): fp16/bf16 conversions in integer bit
// arithmetic, Q8_0 and Q4_K quantize and dequantize. Plain scalar code: this is the specification
// the vector kernels of moe_gemm_blocked.cpp are tested against, not a fast path.
#include "kernels/quant_blocks.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <string>

#include "kernels/error.h"

namespace deepfit::kernels {

// ---- Scalar conversions

float fp16_to_fp32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1Fu;
  const std::uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));  // inf, NaN
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in fp32 (a 10-bit integer times a power of two).
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(magnitude));
  }
  // Normal: rebias the exponent from 15 to 127 (add 112) and widen the mantissa from 10 to 23 bits.
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

std::uint16_t fp32_to_fp16(float f) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) {  // NaN: keep the top 10 payload bits, set the quiet bit
    return static_cast<std::uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
  }
  // 65520 = 0x477FF000 is halfway between 65504 (the largest fp16) and 65536; the tie goes to the
  // even neighbour, which is 65536, i.e. infinity. Everything from there up (inf included) is inf.
  if (magnitude >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);
  std::uint32_t result = 0;
  std::uint32_t shift = 0;
  std::uint32_t significand = 0;
  if (magnitude >= 0x38800000u) {
    // Normal fp16 (>= 2^-14): rebias 127 -> 15 (subtract 112 << 23), drop 13 mantissa bits. A
    // rounding carry out of the mantissa correctly bumps the exponent.
    significand = magnitude - 0x38000000u;
    shift = 13;
  } else {
    // Subnormal fp16: the result is round(|f| * 2^24). |f| = s * 2^(e - 150) with s the 24-bit
    // significand (implicit bit included; fp32 subnormals have e = 1 and no implicit bit), so the
    // result is s >> (126 - e), rounded.
    const std::uint32_t e = magnitude >> 23;
    significand = e == 0 ? magnitude : ((magnitude & 0x7FFFFFu) | 0x800000u);
    shift = 126 - std::max<std::uint32_t>(e, 1);  // >= 14 here
    if (shift > 24) return sign;  // |f| < 2^-25: rounds to zero (2^-25 itself is a tie to even 0)
  }
  result = significand >> shift;
  const std::uint32_t remainder = significand & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  if (remainder > half || (remainder == half && (result & 1u) != 0)) ++result;
  return static_cast<std::uint16_t>(sign | result);
}

float bf16_to_fp32(std::uint16_t b) { return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16); }

std::uint16_t fp32_to_bf16(float f) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  // Adding 0x7FFF plus the lowest kept bit rounds to nearest even; a carry into the exponent is
  // the correct result, up to infinity for values past the largest bf16.
  return static_cast<std::uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// ---- FP8 e4m3

float fp8_e4m3_to_fp32(std::uint8_t v) {
  const bool negative = (v & 0x80u) != 0;
  const unsigned exponent = (v >> 3) & 0xFu;
  const unsigned mantissa = v & 0x7u;
  float magnitude;
  if (exponent == 0xFu && mantissa == 0x7u) {
    magnitude = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);  // m/8 * 2^-6
  } else {
    magnitude = std::ldexp(static_cast<float>(8u + mantissa), static_cast<int>(exponent) - 10);
  }
  return negative ? -magnitude : magnitude;
}

std::uint8_t fp32_to_fp8_e4m3(float f) {
  // On the float's bits, so that it is cheap (the DSA indexer encodes 8K values per token and layer)
  // and no FPU rounding mode plays a part.
  std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint8_t>((bits >> 24) & 0x80u);
  bits &= 0x7FFFFFFFu;
  if (bits > 0x7F800000u) return static_cast<std::uint8_t>(sign | 0x7Fu);  // NaN
  // 464 (0x43E80000) is halfway between 448 and 480 (the next step were the format to continue):
  // from there on round-to-nearest would leave the format, so it saturates (infinity too).
  if (bits >= 0x43E80000u) return static_cast<std::uint8_t>(sign | 0x7Eu);
  if (bits < 0x3C800000u) {
    // Below 2^-6, the smallest normal: subnormal spacing 2^-9. x 512 is exact and in [0, 8); its
    // integer part and fraction are exact too. A result of 8 is the smallest normal, code 8.
    const float v = std::bit_cast<float>(bits) * 512.0f;
    const auto whole = static_cast<std::uint32_t>(v);
    const float frac = v - static_cast<float>(whole);
    const bool up = frac > 0.5f || (frac == 0.5f && (whole & 1u) != 0);
    return static_cast<std::uint8_t>(sign | (whole + (up ? 1u : 0u)));
  }
  // Normal: keep 3 of the 23 mantissa bits, rounding the 20 dropped ones half to even; a carry
  // moves into the exponent. Rebias 127 -> 7: the code is (bits >> 20) - (120 << 3).
  const std::uint32_t r = bits + 0x7FFFFu + ((bits >> 20) & 1u);
  return static_cast<std::uint8_t>(sign | ((r >> 20) - (120u << 3)));
}

// ---- Q4_K scale packing

void pack_q4_K_scales(const Q4KScales& values, std::span<std::byte, kQ4_KScalesBytes> packed) {
  for (std::size_t j = 0; j < 8; ++j) {
    DEEPFIT_ASSERT(values.scales[j] < 64 && values.mins[j] < 64, "pack_q4_K_scales: a scale or min is not 6 bits");
  }
  for (std::size_t j = 0; j < 4; ++j) {
    const unsigned sc_lo = values.scales[j];
    const unsigned m_lo = values.mins[j];
    const unsigned sc_hi = values.scales[j + 4];
    const unsigned m_hi = values.mins[j + 4];
    packed[j] = static_cast<std::byte>(sc_lo | (sc_hi >> 4) << 6);
    packed[j + 4] = static_cast<std::byte>(m_lo | (m_hi >> 4) << 6);
    packed[j + 8] = static_cast<std::byte>((sc_hi & 15u) | (m_hi & 15u) << 4);
  }
}

Q4KScales unpack_q4_K_scales(std::span<const std::byte, kQ4_KScalesBytes> packed) {
  const auto s = [&](std::size_t i) { return std::to_integer<unsigned>(packed[i]); };
  Q4KScales out{};
  for (std::size_t j = 0; j < 4; ++j) {
    out.scales[j] = static_cast<std::uint8_t>(s(j) & 63u);
    out.mins[j] = static_cast<std::uint8_t>(s(j + 4) & 63u);
    out.scales[j + 4] = static_cast<std::uint8_t>((s(j + 8) & 15u) | (s(j) >> 6) << 4);
    out.mins[j + 4] = static_cast<std::uint8_t>((s(j + 8) >> 4) | (s(j + 4) >> 6) << 4);
  }
  return out;
}

// ---- Rows of blocks

namespace {

// Little-endian fp16 field access, independent of the host's byte order.
std::uint16_t load_u16(const std::byte* p) {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(p[0]) | std::to_integer<unsigned>(p[1]) << 8);
}

void store_u16(std::byte* p, std::uint16_t v) {
  p[0] = static_cast<std::byte>(v & 0xFFu);
  p[1] = static_cast<std::byte>(v >> 8);
}

void check_row(const char* fn, std::size_t num_floats, std::size_t num_bytes, std::size_t block_weights,
               std::size_t block_bytes) {
  if (num_floats % block_weights != 0) {
    throw InputError(std::string(fn) + ": " + std::to_string(num_floats) + " values is not a whole number of " +
                     std::to_string(block_weights) + "-weight blocks");
  }
  if (num_bytes != num_floats / block_weights * block_bytes) {
    throw InputError(std::string(fn) + ": block buffer of " + std::to_string(num_bytes) + " bytes (expected " +
                     std::to_string(num_floats / block_weights * block_bytes) + " bytes for " +
                     std::to_string(num_floats) + " values)");
  }
}

void check_finite(const char* fn, std::span<const float> x) {
  const auto bad = std::find_if(x.begin(), x.end(), [](float v) { return !std::isfinite(v); });
  if (bad != x.end()) {
    throw InputError(std::string(fn) + ": value " + std::to_string(*bad) + " at index " +
                     std::to_string(bad - x.begin()) + " is not finite (expected finite weights)");
  }
}

// fp16 bits of the smallest fp16 value >= v (v finite, >= 0); infinity when v is past 65504.
std::uint16_t fp16_round_up(double v) {
  std::uint16_t h = fp32_to_fp16(static_cast<float>(v));
  if (static_cast<double>(fp16_to_fp32(h)) < v) ++h;  // next fp16 up: positive values order like their bits
  return h;
}

[[noreturn]] void scale_overflow(const char* fn, std::size_t block, double value) {
  throw InputError(std::string(fn) + ": block " + std::to_string(block) + " needs a scale of " + std::to_string(value) +
                   ", past the largest fp16 (65504); the weights are too large for this format");
}

}  // namespace

void quantize_row_q8_0_ref(std::span<const float> x, std::span<std::byte> blocks) {
  check_row("quantize_row_q8_0_ref", x.size(), blocks.size(), kQ8_0BlockWeights, kQ8_0BlockBytes);
  check_finite("quantize_row_q8_0_ref", x);
  const std::size_t num_blocks = x.size() / kQ8_0BlockWeights;
  for (std::size_t i = 0; i < num_blocks; ++i) {
    const float* xb = x.data() + i * kQ8_0BlockWeights;
    float amax = 0.0f;
    for (std::size_t j = 0; j < kQ8_0BlockWeights; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const std::uint16_t d16 = fp32_to_fp16(d);
    if ((d16 & 0x7FFFu) == 0x7C00u) scale_overflow("quantize_row_q8_0_ref", i, d);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    std::byte* out = blocks.data() + i * kQ8_0BlockBytes;
    store_u16(out, d16);
    for (std::size_t j = 0; j < kQ8_0BlockWeights; ++j) {
      // |x * id| <= 127 up to one rounding, and std::round cannot leave [-127, 127] from there.
      const auto q = static_cast<std::int8_t>(std::round(xb[j] * id));
      out[kQ8_0QsOffset + j] = static_cast<std::byte>(q);
    }
  }
}

void dequantize_row_q8_0_ref(std::span<const std::byte> blocks, std::span<float> y) {
  check_row("dequantize_row_q8_0_ref", y.size(), blocks.size(), kQ8_0BlockWeights, kQ8_0BlockBytes);
  const std::size_t num_blocks = y.size() / kQ8_0BlockWeights;
  for (std::size_t i = 0; i < num_blocks; ++i) {
    const std::byte* in = blocks.data() + i * kQ8_0BlockBytes;
    const float d = fp16_to_fp32(load_u16(in));
    for (std::size_t j = 0; j < kQ8_0BlockWeights; ++j) {
      const auto q = static_cast<std::int8_t>(std::to_integer<std::uint8_t>(in[kQ8_0QsOffset + j]));
      y[i * kQ8_0BlockWeights + j] = d * static_cast<float>(q);
    }
  }
}

void quantize_row_q4_K_ref(std::span<const float> x, std::span<std::byte> blocks) {
  constexpr std::size_t kNumSub = kQ4_KBlockWeights / kQ4_KSubBlockWeights;
  check_row("quantize_row_q4_K_ref", x.size(), blocks.size(), kQ4_KBlockWeights, kQ4_KBlockBytes);
  check_finite("quantize_row_q4_K_ref", x);
  const std::size_t num_blocks = x.size() / kQ4_KBlockWeights;
  for (std::size_t i = 0; i < num_blocks; ++i) {
    const float* xb = x.data() + i * kQ4_KBlockWeights;
    std::byte* out = blocks.data() + i * kQ4_KBlockBytes;
    // Step 1: each sub-block's range; lo <= 0 as in llama.cpp, so the min is stored as a
    // non-negative offset. Double arithmetic keeps the ceil() steps below from being off by one ulp.
    double lo[kNumSub];
    double hi[kNumSub];
    double max_neg_lo = 0.0;
    for (std::size_t b = 0; b < kNumSub; ++b) {
      const float* xs = xb + b * kQ4_KSubBlockWeights;
      const auto [mn, mx] = std::minmax_element(xs, xs + kQ4_KSubBlockWeights);
      lo[b] = std::min(0.0, static_cast<double>(*mn));
      hi[b] = static_cast<double>(*mx);
      max_neg_lo = std::max(max_neg_lo, -lo[b]);
    }
    // Step 2: the mins' unit, rounded up so every m[b] fits 6 bits.
    const std::uint16_t dmin16 = fp16_round_up(max_neg_lo / 63.0);
    if (dmin16 == 0x7C00u) scale_overflow("quantize_row_q4_K_ref", i, max_neg_lo / 63.0);
    const double dmin = static_cast<double>(fp16_to_fp32(dmin16));
    Q4KScales packed{};
    double offset[kNumSub];  // dmin * m[b], exact in double
    double max_span = 0.0;
    for (std::size_t b = 0; b < kNumSub; ++b) {
      const double m = dmin > 0.0 ? std::min(63.0, std::ceil(-lo[b] / dmin)) : 0.0;
      packed.mins[b] = static_cast<std::uint8_t>(m);
      offset[b] = dmin * m;
      max_span = std::max(max_span, hi[b] + offset[b]);
    }
    // Step 3: the scales' unit, rounded up so that 15 steps of d*sc[b] reach hi[b] with sc[b] <= 63.
    const std::uint16_t d16 = fp16_round_up(max_span / (15.0 * 63.0));
    if (d16 == 0x7C00u) scale_overflow("quantize_row_q4_K_ref", i, max_span / (15.0 * 63.0));
    const double d = static_cast<double>(fp16_to_fp32(d16));
    for (std::size_t b = 0; b < kNumSub; ++b) {
      const double sc = d > 0.0 ? std::clamp(std::ceil((hi[b] + offset[b]) / (15.0 * d)), 0.0, 63.0) : 0.0;
      packed.scales[b] = static_cast<std::uint8_t>(sc);
    }
    store_u16(out, d16);
    store_u16(out + 2, dmin16);
    pack_q4_K_scales(packed, std::span<std::byte, kQ4_KScalesBytes>(out + kQ4_KScalesOffset, kQ4_KScalesBytes));
    // Step 4: quants against the stored (fp16, 6-bit) parameters, so the rounding sees what the
    // dequantizer will compute.
    std::uint8_t q[kQ4_KBlockWeights];
    for (std::size_t b = 0; b < kNumSub; ++b) {
      const double step = d * packed.scales[b];
      for (std::size_t l = 0; l < kQ4_KSubBlockWeights; ++l) {
        const std::size_t k = b * kQ4_KSubBlockWeights + l;
        const double v = step > 0.0 ? std::round((static_cast<double>(xb[k]) + offset[b]) / step) : 0.0;
        q[k] = static_cast<std::uint8_t>(std::clamp(v, 0.0, 15.0));
      }
    }
    for (std::size_t c = 0; c < 4; ++c) {
      for (std::size_t l = 0; l < 32; ++l) {
        const unsigned low = q[64 * c + l];
        const unsigned high = q[64 * c + 32 + l];
        out[kQ4_KQsOffset + 32 * c + l] = static_cast<std::byte>(low | high << 4);
      }
    }
  }
}

void dequantize_row_q4_K_ref(std::span<const std::byte> blocks, std::span<float> y) {
  check_row("dequantize_row_q4_K_ref", y.size(), blocks.size(), kQ4_KBlockWeights, kQ4_KBlockBytes);
  const std::size_t num_blocks = y.size() / kQ4_KBlockWeights;
  for (std::size_t i = 0; i < num_blocks; ++i) {
    const std::byte* in = blocks.data() + i * kQ4_KBlockBytes;
    const float d = fp16_to_fp32(load_u16(in));
    const float dmin = fp16_to_fp32(load_u16(in + 2));
    const Q4KScales s =
        unpack_q4_K_scales(std::span<const std::byte, kQ4_KScalesBytes>(in + kQ4_KScalesOffset, kQ4_KScalesBytes));
    float* yb = y.data() + i * kQ4_KBlockWeights;
    for (std::size_t c = 0; c < 4; ++c) {
      for (std::size_t half = 0; half < 2; ++half) {
        const std::size_t b = 2 * c + half;
        const float scale = d * static_cast<float>(s.scales[b]);
        const float min = dmin * static_cast<float>(s.mins[b]);
        for (std::size_t l = 0; l < 32; ++l) {
          const unsigned byte = std::to_integer<unsigned>(in[kQ4_KQsOffset + 32 * c + l]);
          const unsigned q = half == 0 ? (byte & 15u) : (byte >> 4);
          yb[64 * c + 32 * half + l] = scale * static_cast<float>(q) - min;
        }
      }
    }
  }
}

}  // namespace deepfit::kernels
