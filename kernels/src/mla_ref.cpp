// The specification of the MLA kernels (see attention.h): mla_decode_ref and mla_prefill_ref
// (plain loops, double sums), the entry checks every variant shares, the cache row codecs, and
// the work of each shape. Not fast; the vector kernels are in mla_fast.cpp.
#include "kernels/attention.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>

#include "entry_checks.h"
#include "kernels/error.h"
#include "kernels/quant_blocks.h"

namespace deepfit::kernels {
namespace {

using entry::fail;
using entry::checked_product;
using entry::expect_size;
using entry::overlaps;

// Upper bounds that keep every size product far from int64 overflow; far above any real model.
constexpr std::int64_t kMaxDim = 1 << 16;
constexpr std::int64_t kMaxCtxLen = std::numeric_limits<std::int32_t>::max();

const char* format_name(MlaCacheFormat f) { return f == MlaCacheFormat::kBf16 ? "bf16" : "fp8"; }

void check_range(const char* kernel, const char* what, std::int64_t v, std::int64_t lo, std::int64_t hi) {
  if (v < lo || v > hi) {
    fail(kernel, std::string(what) + " = " + std::to_string(v) + " (expected " + std::to_string(lo) + " .. " +
                     std::to_string(hi) + ")");
  }
}

void check_latent_rope(const char* kernel, MlaCacheFormat format, std::int64_t kv_lora_rank,
                       std::int64_t qk_rope_head_dim) {
  if (format != MlaCacheFormat::kBf16 && format != MlaCacheFormat::kFp8) fail(kernel, "unknown MlaCacheFormat");
  check_range(kernel, "kv_lora_rank", kv_lora_rank, 16, kMaxDim);
  const std::int64_t multiple = format == MlaCacheFormat::kFp8 ? kMlaFp8TileValues : 16;
  if (kv_lora_rank % multiple != 0) {
    fail(kernel, "kv_lora_rank = " + std::to_string(kv_lora_rank) + " is not a multiple of " +
                     std::to_string(multiple) + " (required by the " + format_name(format) + " cache)");
  }
  check_range(kernel, "qk_rope_head_dim", qk_rope_head_dim, 0, kMaxDim);
}

void check_dims(const char* kernel, const MlaDims& d, MlaCacheFormat format) {
  check_range(kernel, "num_heads", d.num_heads, 1, kMaxDim);
  check_latent_rope(kernel, format, d.kv_lora_rank, d.qk_rope_head_dim);
  check_range(kernel, "qk_nope_head_dim", d.qk_nope_head_dim, 1, kMaxDim);
  check_range(kernel, "v_head_dim", d.v_head_dim, 1, kMaxDim);
}

void check_finite(const char* kernel, const char* what, std::span<const float> x) {
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) fail(kernel, std::string(what) + "[" + std::to_string(i) + "] is not finite");
  }
}

void check_layer(const char* kernel, const MlaLayer& layer) {
  const MlaDims& d = layer.dims;
  check_dims(kernel, d, layer.cache_format);
  if (!std::isfinite(layer.softmax_scale)) fail(kernel, "softmax_scale is not finite");
  expect_size(kernel, "w_uk", layer.w_uk.size(), d.num_heads * d.qk_nope_head_dim * d.kv_lora_rank);
  expect_size(kernel, "w_uv", layer.w_uv.size(), d.num_heads * d.v_head_dim * d.kv_lora_rank);
}

// The queries, the output and the scratch of a call with `queries` query tokens.
void check_io(const char* kernel, const MlaLayer& layer, std::int64_t queries, std::span<const float> q_nope,
              std::span<const float> q_rope, std::span<const float> out, std::int64_t unit_begin, std::int64_t unit_end,
              std::span<const std::byte> scratch, detail::MlaScratchBytes scratch_bytes_of) {
  const MlaDims& d = layer.dims;
  const std::size_t scratch_bytes = scratch_bytes_of(d);
  const std::int64_t rows = checked_product(kernel, queries, d.num_heads, "queries x num_heads");
  expect_size(kernel, "q_nope", q_nope.size(), checked_product(kernel, rows, d.qk_nope_head_dim, "q_nope size"));
  expect_size(kernel, "q_rope", q_rope.size(), checked_product(kernel, rows, d.qk_rope_head_dim, "q_rope size"));
  expect_size(kernel, "out", out.size(), checked_product(kernel, rows, d.v_head_dim, "out size"));
  check_finite(kernel, "q_nope", q_nope);
  check_finite(kernel, "q_rope", q_rope);
  const std::int64_t units = queries * mla_head_units(d);
  if (unit_begin < 0 || unit_begin > unit_end || unit_end > units) {
    fail(kernel, "unit slice [" + std::to_string(unit_begin) + ", " + std::to_string(unit_end) +
                     ") is not within [0, " + std::to_string(units) + ")");
  }
  if (scratch.size() < scratch_bytes) {
    fail(kernel, "scratch has " + std::to_string(scratch.size()) + " bytes (expected at least " +
                     std::to_string(scratch_bytes) + ")");
  }
  if (overlaps(out, q_nope) || overlaps(out, q_rope) || overlaps(out, layer.w_uk) || overlaps(out, layer.w_uv) ||
      overlaps(out, scratch)) {
    fail(kernel, "out overlaps an input or the scratch");
  }
  if (overlaps(scratch, q_nope) || overlaps(scratch, q_rope) || overlaps(scratch, layer.w_uk) ||
      overlaps(scratch, layer.w_uv)) {
    fail(kernel, "scratch overlaps an input");
  }
}

// ---- Little-endian byte access, independent of the host's byte order.
std::uint16_t u16_at(const std::byte* p) {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(p[0]) | std::to_integer<unsigned>(p[1]) << 8);
}
float f32_at(const std::byte* p) {
  std::uint32_t bits = 0;
  for (int i = 3; i >= 0; --i) bits = bits << 8 | std::to_integer<std::uint32_t>(p[i]);
  return std::bit_cast<float>(bits);
}
void put_u16(std::byte* p, std::uint16_t v) {
  p[0] = static_cast<std::byte>(v & 0xFF);
  p[1] = static_cast<std::byte>(v >> 8);
}
void put_f32(std::byte* p, float f) {
  const auto bits = std::bit_cast<std::uint32_t>(f);
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>(bits >> (8 * i) & 0xFF);
}

// The smallest power of two >= x, for finite x > 0 (exact: frexp gives x = m 2^e, m in [0.5, 1)).
float pow2_ceil(float x) {
  int e = 0;
  const float m = std::frexp(x, &e);
  return std::ldexp(1.0f, m == 0.5f ? e - 1 : e);
}

// ---- The reference decoding of one cached row, value by value.
struct RowCodec {
  MlaCacheFormat format;
  std::int64_t L;
  std::int64_t R;
  double latent(const std::byte* row, std::int64_t c) const {
    if (format == MlaCacheFormat::kBf16) return bf16_to_fp32(u16_at(row + 2 * c));
    const double scale = f32_at(row + L + 4 * (c / kMlaFp8TileValues));
    return static_cast<double>(fp8_e4m3_to_fp32(std::to_integer<std::uint8_t>(row[c]))) * scale;  // exact
  }
  double rope(const std::byte* row, std::int64_t r) const {
    const std::int64_t offset = format == MlaCacheFormat::kBf16 ? 2 * L : L + 4 * (L / kMlaFp8TileValues);
    return bf16_to_fp32(u16_at(row + offset + 2 * r));
  }
};

// The keys of one query: `n` cache rows, either rows 0..n-1 or the listed positions.
struct KeyList {
  const std::byte* cache;
  std::size_t row_bytes;
  std::span<const std::int32_t> positions;  // empty: rows 0..n-1
  std::int64_t n;
  const std::byte* row(std::int64_t j) const {
    const std::int64_t t = positions.empty() ? j : positions[static_cast<std::size_t>(j)];
    return cache + static_cast<std::size_t>(t) * row_bytes;
  }
};

// Heads [h_begin, h_end) of one query: q_nope, q_rope and out point at the query's [H][.] rows.
void ref_query(const MlaLayer& layer, const float* q_nope, const float* q_rope, const KeyList& keys,
               std::int64_t h_begin, std::int64_t h_end, float* out, std::span<double> scratch) {
  const MlaDims& d = layer.dims;
  const std::int64_t L = d.kv_lora_rank, Dn = d.qk_nope_head_dim, R = d.qk_rope_head_dim, Dv = d.v_head_dim;
  const RowCodec codec{layer.cache_format, L, R};
  const double sigma = layer.softmax_scale;
  double* q_lat = scratch.data();  // [L]
  double* o = q_lat + L;           // [L]
  for (std::int64_t h = h_begin; h < h_end; ++h) {
    const float* qn = q_nope + h * Dn;
    const float* qr = q_rope + h * R;
    for (std::int64_t c = 0; c < L; ++c) q_lat[c] = 0.0;
    for (std::int64_t dd = 0; dd < Dn; ++dd) {
      const std::uint16_t* w = layer.w_uk.data() + (h * Dn + dd) * L;
      for (std::int64_t c = 0; c < L; ++c) q_lat[c] += static_cast<double>(qn[dd]) * bf16_to_fp32(w[c]);
    }
    const auto score = [&](const std::byte* row) {
      double s = 0.0;
      for (std::int64_t c = 0; c < L; ++c) s += q_lat[c] * codec.latent(row, c);
      for (std::int64_t r = 0; r < R; ++r) s += static_cast<double>(qr[r]) * codec.rope(row, r);
      return sigma * s;
    };
    double m = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < keys.n; ++j) m = std::max(m, score(keys.row(j)));
    double sum = 0.0;
    for (std::int64_t c = 0; c < L; ++c) o[c] = 0.0;
    for (std::int64_t j = 0; j < keys.n; ++j) {
      const std::byte* row = keys.row(j);
      const double e = std::exp(score(row) - m);
      sum += e;
      for (std::int64_t c = 0; c < L; ++c) o[c] += e * codec.latent(row, c);
    }
    for (std::int64_t e = 0; e < Dv; ++e) {
      const std::uint16_t* w = layer.w_uv.data() + (h * Dv + e) * L;
      double acc = 0.0;
      for (std::int64_t c = 0; c < L; ++c) acc += static_cast<double>(bf16_to_fp32(w[c])) * (o[c] / sum);
      out[h * Dv + e] = static_cast<float>(acc);
    }
  }
}

}  // namespace

std::int64_t mla_cache_token_bytes(MlaCacheFormat format, std::int64_t kv_lora_rank, std::int64_t qk_rope_head_dim) {
  check_latent_rope("mla_cache_token_bytes", format, kv_lora_rank, qk_rope_head_dim);
  if (format == MlaCacheFormat::kBf16) return 2 * (kv_lora_rank + qk_rope_head_dim);
  return kv_lora_rank + 4 * (kv_lora_rank / kMlaFp8TileValues) + 2 * qk_rope_head_dim;
}

std::int64_t mla_head_units(const MlaDims& dims) {
  DEEPFIT_ASSERT(dims.num_heads >= 1, "mla_head_units: num_heads < 1");
  return (dims.num_heads + kMlaHeadsPerUnit - 1) / kMlaHeadsPerUnit;
}

std::int64_t mla_ref_scratch_doubles(const MlaDims& dims) {
  check_range("mla_ref_scratch_doubles", "kv_lora_rank", dims.kv_lora_rank, 16, kMaxDim);
  return 2 * dims.kv_lora_rank;
}

namespace {
// Rows of n tokens for the codecs: n from the latent size, then every span checked against it.
std::int64_t codec_rows(const char* kernel, MlaCacheFormat format, std::int64_t L, std::int64_t R,
                        std::size_t latent_size, std::size_t rope_size, std::size_t cache_size) {
  check_latent_rope(kernel, format, L, R);
  if (latent_size % static_cast<std::size_t>(L) != 0) {
    fail(kernel, "latent has " + std::to_string(latent_size) + " values, not a whole number of rows of " +
                     std::to_string(L));
  }
  const auto n = static_cast<std::int64_t>(latent_size / static_cast<std::size_t>(L));
  expect_size(kernel, "rope", rope_size, n * R);
  expect_size(kernel, "cache", cache_size, n * mla_cache_token_bytes(format, L, R));
  return n;
}
}  // namespace

void quantize_mla_cache_ref(MlaCacheFormat format, std::int64_t kv_lora_rank, std::int64_t qk_rope_head_dim,
                            std::span<const float> latent, std::span<const float> rope, std::span<std::byte> cache) {
  constexpr const char* kKernel = "quantize_mla_cache_ref";
  const std::int64_t L = kv_lora_rank, R = qk_rope_head_dim;
  const std::int64_t n = codec_rows(kKernel, format, L, R, latent.size(), rope.size(), cache.size());
  check_finite(kKernel, "latent", latent);
  check_finite(kKernel, "rope", rope);
  const std::int64_t row_bytes = mla_cache_token_bytes(format, L, R);
  for (std::int64_t t = 0; t < n; ++t) {
    std::byte* row = cache.data() + t * row_bytes;
    const float* x = latent.data() + t * L;
    std::int64_t rope_offset = 2 * L;
    if (format == MlaCacheFormat::kBf16) {
      for (std::int64_t c = 0; c < L; ++c) put_u16(row + 2 * c, fp32_to_bf16(x[c]));
    } else {
      for (std::int64_t j = 0; j < L / kMlaFp8TileValues; ++j) {
        const float* tile = x + j * kMlaFp8TileValues;
        float amax = 0.0f;
        for (std::int64_t i = 0; i < kMlaFp8TileValues; ++i) amax = std::max(amax, std::fabs(tile[i]));
        // FlashMLA's floor of 1e-4 on amax / 448 (tests/quant.py) keeps an all-zero tile's scale finite.
        const float scale = pow2_ceil(std::max(amax / kFp8E4m3Max, 1e-4f));
        put_f32(row + L + 4 * j, scale);
        for (std::int64_t i = 0; i < kMlaFp8TileValues; ++i) {
          row[j * kMlaFp8TileValues + i] = static_cast<std::byte>(fp32_to_fp8_e4m3(tile[i] / scale));
        }
      }
      rope_offset = L + 4 * (L / kMlaFp8TileValues);
    }
    for (std::int64_t r = 0; r < R; ++r) put_u16(row + rope_offset + 2 * r, fp32_to_bf16(rope[t * R + r]));
  }
}

void dequantize_mla_cache_ref(MlaCacheFormat format, std::int64_t kv_lora_rank, std::int64_t qk_rope_head_dim,
                              std::span<const std::byte> cache, std::span<float> latent, std::span<float> rope) {
  constexpr const char* kKernel = "dequantize_mla_cache_ref";
  const std::int64_t L = kv_lora_rank, R = qk_rope_head_dim;
  const std::int64_t n = codec_rows(kKernel, format, L, R, latent.size(), rope.size(), cache.size());
  const std::int64_t row_bytes = mla_cache_token_bytes(format, L, R);
  const RowCodec codec{format, L, R};
  for (std::int64_t t = 0; t < n; ++t) {
    const std::byte* row = cache.data() + t * row_bytes;
    for (std::int64_t c = 0; c < L; ++c) latent[t * L + c] = static_cast<float>(codec.latent(row, c));
    for (std::int64_t r = 0; r < R; ++r) rope[t * R + r] = static_cast<float>(codec.rope(row, r));
  }
}

namespace detail {

void check_mla_decode(const char* kernel, const MlaLayer& layer, std::span<const float> q_nope,
                      std::span<const float> q_rope, std::span<const MlaSequence> sequences, std::span<const float> out,
                      std::int64_t unit_begin, std::int64_t unit_end, std::span<const std::byte> scratch,
                      MlaScratchBytes scratch_bytes) {
  check_layer(kernel, layer);
  check_io(kernel, layer, static_cast<std::int64_t>(sequences.size()), q_nope, q_rope, out, unit_begin, unit_end,
           scratch, scratch_bytes);
  const std::int64_t row_bytes =
      mla_cache_token_bytes(layer.cache_format, layer.dims.kv_lora_rank, layer.dims.qk_rope_head_dim);
  for (std::size_t b = 0; b < sequences.size(); ++b) {
    const MlaSequence& s = sequences[b];
    const std::string where = "sequence " + std::to_string(b) + ": ";
    if (s.ctx_len < 1 || s.ctx_len > kMaxCtxLen) {
      fail(kernel, where + "ctx_len = " + std::to_string(s.ctx_len) + " (expected 1 .. " + std::to_string(kMaxCtxLen) +
                       ")");
    }
    expect_size(kernel, (where + "cache (bytes)").c_str(), s.cache.size(), s.ctx_len * row_bytes);
    if (static_cast<std::int64_t>(s.positions.size()) > s.ctx_len) {
      fail(kernel, where + std::to_string(s.positions.size()) + " positions for ctx_len " + std::to_string(s.ctx_len) +
                       " (expected at most ctx_len)");
    }
    for (std::size_t j = 0; j < s.positions.size(); ++j) {
      if (s.positions[j] < 0 || s.positions[j] >= s.ctx_len) {
        fail(kernel, where + "positions[" + std::to_string(j) + "] = " + std::to_string(s.positions[j]) +
                         " (expected 0 .. " + std::to_string(s.ctx_len - 1) + ")");
      }
    }
    if (overlaps(out, s.cache) || overlaps(scratch, s.cache) || overlaps(out, s.positions) ||
        overlaps(scratch, s.positions)) {
      fail(kernel, where + "out or scratch overlaps the cache or the positions");
    }
  }
}

void check_mla_prefill(const char* kernel, const MlaLayer& layer, std::span<const float> q_nope,
                       std::span<const float> q_rope, std::span<const std::byte> cache, std::int64_t num_cached,
                       std::int64_t num_new, std::span<const float> out, std::int64_t unit_begin,
                       std::int64_t unit_end, std::span<const std::byte> scratch, MlaScratchBytes scratch_bytes) {
  check_layer(kernel, layer);
  check_range(kernel, "num_cached", num_cached, 0, kMaxCtxLen);
  check_range(kernel, "num_new", num_new, 0, kMaxCtxLen - num_cached);
  check_io(kernel, layer, num_new, q_nope, q_rope, out, unit_begin, unit_end, scratch, scratch_bytes);
  const std::int64_t row_bytes =
      mla_cache_token_bytes(layer.cache_format, layer.dims.kv_lora_rank, layer.dims.qk_rope_head_dim);
  expect_size(kernel, "cache (bytes, num_cached + num_new rows)", cache.size(), (num_cached + num_new) * row_bytes);
  if (overlaps(out, cache) || overlaps(scratch, cache)) fail(kernel, "out or scratch overlaps the cache");
}

}  // namespace detail

namespace {
std::size_t ref_scratch_bytes(const MlaDims& d) {
  return static_cast<std::size_t>(mla_ref_scratch_doubles(d)) * sizeof(double);
}
}  // namespace

void mla_decode_ref(const MlaLayer& layer, std::span<const float> q_nope, std::span<const float> q_rope,
                    std::span<const MlaSequence> sequences, std::span<float> out, std::int64_t unit_begin,
                    std::int64_t unit_end, std::span<double> scratch) {
  constexpr const char* kKernel = "mla_decode_ref";
  detail::check_mla_decode(kKernel, layer, q_nope, q_rope, sequences, out, unit_begin, unit_end,
                           std::as_bytes(scratch), ref_scratch_bytes);
  const MlaDims& d = layer.dims;
  const std::int64_t G = mla_head_units(d);
  const auto row_bytes = static_cast<std::size_t>(mla_cache_token_bytes(layer.cache_format, d.kv_lora_rank,
                                                                        d.qk_rope_head_dim));
  for (std::int64_t u = unit_begin; u < unit_end; ++u) {
    const std::int64_t b = u / G;
    const MlaSequence& s = sequences[static_cast<std::size_t>(b)];
    const KeyList keys{s.cache.data(), row_bytes, s.positions,
                       s.positions.empty() ? s.ctx_len : static_cast<std::int64_t>(s.positions.size())};
    const std::int64_t h0 = u % G * kMlaHeadsPerUnit;
    ref_query(layer, q_nope.data() + b * d.num_heads * d.qk_nope_head_dim,
              q_rope.data() + b * d.num_heads * d.qk_rope_head_dim, keys, h0,
              std::min(h0 + kMlaHeadsPerUnit, d.num_heads), out.data() + b * d.num_heads * d.v_head_dim, scratch);
  }
}

void mla_prefill_ref(const MlaLayer& layer, std::span<const float> q_nope, std::span<const float> q_rope,
                     std::span<const std::byte> cache, std::int64_t num_cached, std::int64_t num_new,
                     std::span<float> out, std::int64_t unit_begin, std::int64_t unit_end, std::span<double> scratch) {
  constexpr const char* kKernel = "mla_prefill_ref";
  detail::check_mla_prefill(kKernel, layer, q_nope, q_rope, cache, num_cached, num_new, out, unit_begin, unit_end,
                            std::as_bytes(scratch), ref_scratch_bytes);
  const MlaDims& d = layer.dims;
  const std::int64_t G = mla_head_units(d);
  const auto row_bytes = static_cast<std::size_t>(mla_cache_token_bytes(layer.cache_format, d.kv_lora_rank,
                                                                        d.qk_rope_head_dim));
  for (std::int64_t u = unit_begin; u < unit_end; ++u) {
    const std::int64_t i = u / G;
    const KeyList keys{cache.data(), row_bytes, {}, num_cached + i + 1};
    const std::int64_t h0 = u % G * kMlaHeadsPerUnit;
    ref_query(layer, q_nope.data() + i * d.num_heads * d.qk_nope_head_dim,
              q_rope.data() + i * d.num_heads * d.qk_rope_head_dim, keys, h0,
              std::min(h0 + kMlaHeadsPerUnit, d.num_heads), out.data() + i * d.num_heads * d.v_head_dim, scratch);
  }
}

MlaDecodeShape mla_decode_shape(const MlaDims& dims, MlaCacheFormat format, std::span<const MlaSequence> sequences) {
  check_dims("mla_decode_shape", dims, format);
  MlaDecodeShape s{dims, format, static_cast<std::int64_t>(sequences.size()), 0, 0};
  for (const MlaSequence& q : sequences) {
    const auto listed = static_cast<std::int64_t>(q.positions.size());
    s.attended_positions += listed > 0 ? listed : q.ctx_len;
    s.listed_positions += listed;
  }
  return s;
}

namespace {
Work mla_work(const MlaDims& d, MlaCacheFormat format, double queries, double keys, double rows_read, double listed) {
  check_dims("work_of(Mla*Shape)", d, format);
  const double H = static_cast<double>(d.num_heads), L = static_cast<double>(d.kv_lora_rank);
  const double Dn = static_cast<double>(d.qk_nope_head_dim), R = static_cast<double>(d.qk_rope_head_dim);
  const double Dv = static_cast<double>(d.v_head_dim);
  const double row_bytes = static_cast<double>(mla_cache_token_bytes(format, d.kv_lora_rank, d.qk_rope_head_dim));
  const double flops = 2.0 * H * (queries * L * (Dn + Dv) + keys * (2.0 * L + R));
  const double bytes = rows_read * row_bytes + 4.0 * listed + 2.0 * H * L * (Dn + Dv) + 4.0 * queries * H * (Dn + R + Dv);
  return {flops, bytes};
}
}  // namespace

Work work_of(const MlaDecodeShape& s) {
  DEEPFIT_ASSERT(s.batch >= 0 && s.attended_positions >= 0 && s.listed_positions >= 0,
                 "work_of(MlaDecodeShape): negative count");
  const auto keys = static_cast<double>(s.attended_positions);
  return mla_work(s.dims, s.cache_format, static_cast<double>(s.batch), keys, keys,
                  static_cast<double>(s.listed_positions));
}

Work work_of(const MlaPrefillShape& s) {
  DEEPFIT_ASSERT(s.num_cached >= 0 && s.num_new >= 0, "work_of(MlaPrefillShape): negative count");
  const auto P = static_cast<double>(s.num_cached), T = static_cast<double>(s.num_new);
  return mla_work(s.dims, s.cache_format, T, T * P + T * (T + 1) / 2, P + T, 0.0);
}

}  // namespace deepfit::kernels
