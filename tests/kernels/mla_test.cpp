// MLA attention kernels (kernels/src/mla_*.cpp): the cache codecs, every fast code path the host
// has against the reference on awkward shapes within the derived bound, slices, positions, a
// hand-computed case, the entry checks and work_of by hand. No timing here.
#include "kernels/attention.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/quant_blocks.h"
#include "kernels/work.h"

namespace deepfit::kernels {
namespace {

using detail::MlaIsa;
using ::testing::HasSubstr;

std::vector<MlaIsa> host_paths() {
  std::vector<MlaIsa> out;
  for (const MlaIsa isa : {MlaIsa::kPortable, MlaIsa::kAvx512Bf16}) {
    if (detail::cpu_has(isa)) out.push_back(isa);
  }
  return out;
}

const char* isa_name(MlaIsa isa) { return isa == MlaIsa::kPortable ? "portable" : "avx512_bf16"; }

// The two optimized variants: fp32 score dots (mla_*_fast) and bf16 ones (mla_*_bf16qk).
enum class Variant { kFast, kBf16qk };
constexpr Variant kVariants[] = {Variant::kFast, Variant::kBf16qk};
const char* variant_name(Variant v) { return v == Variant::kFast ? "fast" : "bf16qk"; }
std::string path_name(Variant v, MlaIsa isa) { return std::string(variant_name(v)) + "/" + isa_name(isa); }
const char* format_name(MlaCacheFormat f) { return f == MlaCacheFormat::kBf16 ? "bf16" : "fp8"; }

// DeepSeek-V3.2's attention dimensions (data/models/deepseek-v3.2.json: num_attention_heads,
// kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim).
constexpr MlaDims kDeepSeek{128, 512, 128, 64, 128};

// ---- Test data: a layer, sequences with their dequantized keys, queries.
struct Layer {
  MlaDims dims;
  MlaCacheFormat format;
  float sigma;
  std::vector<std::uint16_t> w_uk, w_uv;
  MlaLayer view() const { return {dims, format, sigma, w_uk, w_uv}; }
};

constexpr float kWeightStd = 0.05f;

// Seeded uniform values with mean 0 and standard deviation `std` (splitmix64: cheap enough for
// the 16.8 M weights of DeepSeek's dimensions, where std::normal_distribution dominated the run).
class Uniform {
 public:
  explicit Uniform(std::uint64_t seed) : state_(seed) {}
  float operator()(float std) {
    std::uint64_t z = state_ += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float unit = static_cast<float>(z >> 40) * 0x1p-24f - 0.5f;  // [-1/2, 1/2)
    return unit * 3.4641016f * std;                                     // sqrt(12) std
  }

 private:
  std::uint64_t state_;
};

Layer make_layer(const MlaDims& d, MlaCacheFormat format, std::uint64_t seed) {
  Uniform rng(seed);
  Layer l{d, format, 0.0f, std::vector<std::uint16_t>(static_cast<std::size_t>(d.num_heads * d.qk_nope_head_dim * d.kv_lora_rank)),
          std::vector<std::uint16_t>(static_cast<std::size_t>(d.num_heads * d.v_head_dim * d.kv_lora_rank))};
  for (auto& w : l.w_uk) w = fp32_to_bf16(rng(kWeightStd));
  for (auto& w : l.w_uv) w = fp32_to_bf16(rng(kWeightStd));
  // Scores of spread ~1.5 nats with unit queries and keys: q_lat has std sqrt(Dn) * kWeightStd.
  const double raw = std::sqrt(static_cast<double>(d.kv_lora_rank * d.qk_nope_head_dim) * kWeightStd * kWeightStd +
                               static_cast<double>(d.qk_rope_head_dim));
  l.sigma = static_cast<float>(1.5 / raw);
  return l;
}

struct Seq {
  std::int64_t ctx;
  std::vector<std::byte> cache;
  std::vector<std::int32_t> positions;
  std::vector<double> latent, rope;  // exact values [ctx][L], [ctx][R] of the cached rows
  MlaSequence view() const { return {cache, ctx, positions}; }
};

// The exact values of the cached rows (fp8: byte value times scale in double, exact), decoded
// here from the layout of attention.h with the scalar codecs of quant_blocks.h.
void decode_exact(const MlaDims& d, MlaCacheFormat format, Seq& s) {
  const auto L = static_cast<std::size_t>(d.kv_lora_rank), R = static_cast<std::size_t>(d.qk_rope_head_dim);
  const auto row_bytes = static_cast<std::size_t>(mla_cache_token_bytes(format, d.kv_lora_rank, d.qk_rope_head_dim));
  const auto u16 = [](const std::byte* p) {
    return static_cast<std::uint16_t>(std::to_integer<unsigned>(p[0]) | std::to_integer<unsigned>(p[1]) << 8);
  };
  s.latent.assign(static_cast<std::size_t>(s.ctx) * L, 0.0);
  s.rope.assign(static_cast<std::size_t>(s.ctx) * R, 0.0);
  for (std::size_t t = 0; t < static_cast<std::size_t>(s.ctx); ++t) {
    const std::byte* row = s.cache.data() + t * row_bytes;
    std::size_t rope_at = 2 * L;
    if (format == MlaCacheFormat::kBf16) {
      for (std::size_t c = 0; c < L; ++c) s.latent[t * L + c] = bf16_to_fp32(u16(row + 2 * c));
    } else {
      for (std::size_t c = 0; c < L; ++c) {
        float scale = 0.0f;
        std::memcpy(&scale, row + L + 4 * (c / 128), 4);  // little-endian host, like the cache
        s.latent[t * L + c] = static_cast<double>(fp8_e4m3_to_fp32(std::to_integer<std::uint8_t>(row[c]))) * scale;
      }
      rope_at = L + L / 32;
    }
    for (std::size_t r = 0; r < R; ++r) s.rope[t * R + r] = bf16_to_fp32(u16(row + rope_at + 2 * r));
  }
}

// Random latents (every 37th token with 4x the scale, so the running max moves), encoded.
Seq make_seq(const Layer& l, std::int64_t ctx, std::vector<std::int32_t> positions, std::uint64_t seed) {
  const auto L = static_cast<std::size_t>(l.dims.kv_lora_rank), R = static_cast<std::size_t>(l.dims.qk_rope_head_dim);
  const auto n = static_cast<std::size_t>(ctx);
  Uniform rng(seed);
  std::vector<float> latent(n * L), rope(n * R);
  for (std::size_t t = 0; t < n; ++t) {
    const float scale = t % 37 == 5 ? 4.0f : 1.0f;
    for (std::size_t c = 0; c < L; ++c) latent[t * L + c] = rng(scale);
    for (std::size_t r = 0; r < R; ++r) rope[t * R + r] = rng(scale);
  }
  Seq s{ctx, std::vector<std::byte>(n * static_cast<std::size_t>(mla_cache_token_bytes(l.format, l.dims.kv_lora_rank,
                                                                                         l.dims.qk_rope_head_dim))),
        std::move(positions), {}, {}};
  quantize_mla_cache_ref(l.format, l.dims.kv_lora_rank, l.dims.qk_rope_head_dim, latent, rope, s.cache);
  decode_exact(l.dims, l.format, s);
  return s;
}

struct Queries {
  std::vector<float> q_nope, q_rope;
};

Queries make_queries(const MlaDims& d, std::int64_t count, std::uint64_t seed) {
  Uniform rng(seed);
  Queries q{std::vector<float>(static_cast<std::size_t>(count * d.num_heads * d.qk_nope_head_dim)),
            std::vector<float>(static_cast<std::size_t>(count * d.num_heads * d.qk_rope_head_dim))};
  for (float& v : q.q_nope) v = rng(1.0f);
  for (float& v : q.q_rope) v = rng(1.0f);
  return q;
}

std::vector<MlaSequence> views(const std::vector<Seq>& seqs) {
  std::vector<MlaSequence> v;
  for (const Seq& s : seqs) v.push_back(s.view());
  return v;
}

std::vector<float> decode_ref(const Layer& l, const Queries& q, const std::vector<Seq>& seqs) {
  std::vector<float> out(seqs.size() * static_cast<std::size_t>(l.dims.num_heads * l.dims.v_head_dim));
  std::vector<double> scratch(static_cast<std::size_t>(mla_ref_scratch_doubles(l.dims)));
  const auto v = views(seqs);
  mla_decode_ref(l.view(), q.q_nope, q.q_rope, v, out, 0, static_cast<std::int64_t>(seqs.size()) * mla_head_units(l.dims),
                 scratch);
  return out;
}

void decode_on(Variant variant, MlaIsa isa, const MlaLayer& layer, std::span<const float> q_nope,
               std::span<const float> q_rope, std::span<const MlaSequence> seqs, std::span<float> out,
               std::int64_t unit_begin, std::int64_t unit_end, std::span<float> scratch) {
  if (variant == Variant::kFast) {
    detail::mla_decode_fast_on(isa, layer, q_nope, q_rope, seqs, out, unit_begin, unit_end, scratch);
  } else {
    detail::mla_decode_bf16qk_on(isa, layer, q_nope, q_rope, seqs, out, unit_begin, unit_end, scratch);
  }
}

void prefill_on(Variant variant, MlaIsa isa, const MlaLayer& layer, std::span<const float> q_nope,
                std::span<const float> q_rope, std::span<const std::byte> cache, std::int64_t num_cached,
                std::int64_t num_new, std::span<float> out, std::int64_t unit_begin, std::int64_t unit_end,
                std::span<float> scratch) {
  if (variant == Variant::kFast) {
    detail::mla_prefill_fast_on(isa, layer, q_nope, q_rope, cache, num_cached, num_new, out, unit_begin, unit_end, scratch);
  } else {
    detail::mla_prefill_bf16qk_on(isa, layer, q_nope, q_rope, cache, num_cached, num_new, out, unit_begin, unit_end,
                                  scratch);
  }
}

std::vector<float> decode_fast(Variant variant, MlaIsa isa, const Layer& l, const Queries& q,
                               const std::vector<Seq>& seqs, std::int64_t unit_begin = 0, std::int64_t unit_end = -1,
                               float fill = 0.0f) {
  std::vector<float> out(seqs.size() * static_cast<std::size_t>(l.dims.num_heads * l.dims.v_head_dim), fill);
  std::vector<float> scratch(static_cast<std::size_t>(mla_fast_scratch_floats(l.dims)));
  const auto v = views(seqs);
  if (unit_end < 0) unit_end = static_cast<std::int64_t>(seqs.size()) * mla_head_units(l.dims);
  decode_on(variant, isa, l.view(), q.q_nope, q.q_rope, v, out, unit_begin, unit_end, scratch);
  return out;
}

// ---- The error bound of attention.h, evaluated in double from the exact math.
//
// Derivation (u = 2^-24, u_b = 2^-8, gamma(m) = m u / (1 - m u); one query and head):
// 1. Scores. q_lat is an fp32 sum of Dn products (fp32 x exact bf16, rounded: FMA or mul + add),
//    so |q^_c - q_c| <= gamma(2 Dn) Q_c; bf16qk then rounds q^ and q_rope to bf16, relative
//    u_q = u_b of their own size (fast: u_q = 0). The keys are c (1 + th), |th| <= u_k: fast uses
//    fp32 byte * scale (u_k = u_x: u, or 0 for bf16 caches and power-of-two fp8 scales), bf16qk
//    its bf16 rounding (u_k = u_v). The fp32 dot of D terms adds gamma(2 D) sum |q~ k~|; the
//    scaling by c2 = fl(sigma log2 e) and the product cost 2u |s|, and exp2's argument s2 - m2
//    is rounded once, u (|s2| + |m2|) <= 2u max|s2|. With A_t = sigma (sum_c |q_c c_tc| +
//    sum_r |q_rope_r k_tr|) >= |s_t| and B_t = sigma sum_c Q_c |c_tc| (the q_lat sums' own
//    magnitude), every score is off by at most
//    delta = max_t ((u_q + u_k + gamma(2 D) + 4u) A_t + gamma(2 Dn) B_t) nats, the factor
//    (1 + 2^-6) covering the products of these small terms (u_q u_k <= 2^-16, for one).
// 2. Weights. Each weight is exp2 of its score (relative error eps_exp = 2^-21, checked by
//    Exp2WithinStatedBound), rounded to bf16 (u_b), and later multiplied by the rescale factors
//    of up to n - 1 later blocks, each an exp2 again; these factors also multiply the normalizer,
//    so only their errors (not their values) change a weight relative to the others:
//    w~_t proportional to exp(s~_t) (1 + th_t), |th_t| <= eta = (1 + eps_exp)^n (1 + u_b) - 1.
//    With |s~_t - s_t| <= delta: w~_t / w_t in [e^-2delta (1-eta)/(1+eta), e^2delta (1+eta)/(1-eta)],
//    so |w~_t - w_t| <= rho w_t, rho = e^(2 delta) (1 + eta) / (1 - eta) - 1.
// 3. Values. The numerator and the normalizer are fp32 sums of n terms (products of bf16 values
//    are exact in fp32) rescaled at most n times: relative gamma(2n) each; o = num * (1 / den)
//    adds two roundings. So |o~_c - sum_t w~_t c~_tc| <= acc sum_t w~_t |c~_tc| with
//    acc = (1 + gamma(2n)) (1 + gamma(2)) / (1 - gamma(2n)) - 1, and with |c~ - c| <= u_v |c|:
//    |o~_c - o_c| <= ((acc (1 + rho) + rho) (1 + u_v) + u_v) M_c = E_c, M_c = sum_t w_t |c_tc|.
//    Weights below 2^-126 flush to 0 (and bf16 products of subnormals): + 2^-120 n max_t |c_tc|.
// 4. Output. An fp32 dot of L terms with the perturbed o: sum_c |W_ec| E_c + gamma(2L) sum_c
//    |W_ec| (|o_c| + E_c); the reference rounds its double result to fp32 once: + u |out_e|;
//    the double arithmetic of the reference and of this bound: + 2^-40 sum_c |W_ec| (|o_c| + M_c).
struct Bound {
  std::vector<double> exact;  // [H][Dv] of one query
  std::vector<double> tol;
};

double gamma(double m) {
  const double u = 0x1p-24;
  return m * u / (1 - m * u);
}

// keys: indices into the sequence's dequantized rows; pow2: every fp8 scale a power of two;
// bf16_query: q_lat (fp32) and q_rope are bf16 values, so bf16qk's rounding of them is exact
// (u_q = 0; e.g. Dn = 1 with q_nope = 1, where q_lat is a row of W_UK).
Bound bound_query(const Layer& l, const float* q_nope, const float* q_rope, const std::vector<double>& latent,
                  const std::vector<double>& rope, const std::vector<std::int64_t>& keys, bool pow2, Variant variant,
                  bool bf16_query = false) {
  const MlaDims& d = l.dims;
  const auto H = static_cast<std::size_t>(d.num_heads), L = static_cast<std::size_t>(d.kv_lora_rank);
  const auto Dn = static_cast<std::size_t>(d.qk_nope_head_dim), R = static_cast<std::size_t>(d.qk_rope_head_dim);
  const auto Dv = static_cast<std::size_t>(d.v_head_dim);
  const double D = static_cast<double>(L + R), n = static_cast<double>(keys.size());
  const double u = 0x1p-24, ub = 0x1p-8, eps_exp = 0x1p-21;
  const bool exact_keys = l.format == MlaCacheFormat::kBf16 || pow2;
  const double ux = exact_keys ? 0.0 : u, uv = exact_keys ? 0.0 : ub + 2 * u;
  const double uq = variant == Variant::kFast || bf16_query ? 0.0 : ub, uk = variant == Variant::kFast ? ux : uv;
  const double sigma = l.sigma;
  Bound b{std::vector<double>(H * Dv), std::vector<double>(H * Dv)};
  for (std::size_t h = 0; h < H; ++h) {
    std::vector<double> q(L, 0.0), Q(L, 0.0);
    for (std::size_t dd = 0; dd < Dn; ++dd) {
      for (std::size_t c = 0; c < L; ++c) {
        const double p = static_cast<double>(q_nope[h * Dn + dd]) * bf16_to_fp32(l.w_uk[(h * Dn + dd) * L + c]);
        q[c] += p;
        Q[c] += std::fabs(p);
      }
    }
    std::vector<double> s(keys.size());
    double delta = 0.0;
    for (std::size_t j = 0; j < keys.size(); ++j) {
      const double* c_t = latent.data() + static_cast<std::size_t>(keys[j]) * L;
      const double* k_t = rope.data() + static_cast<std::size_t>(keys[j]) * R;
      double dot = 0.0, mag = 0.0, mag_q_lat = 0.0;
      for (std::size_t c = 0; c < L; ++c) {
        dot += q[c] * c_t[c];
        mag += std::fabs(q[c] * c_t[c]);
        mag_q_lat += Q[c] * std::fabs(c_t[c]);
      }
      for (std::size_t r = 0; r < R; ++r) {
        dot += static_cast<double>(q_rope[h * R + r]) * k_t[r];
        mag += std::fabs(static_cast<double>(q_rope[h * R + r]) * k_t[r]);
      }
      s[j] = sigma * dot;
      const double A = std::fabs(sigma) * mag, B = std::fabs(sigma) * mag_q_lat;
      delta = std::max(delta, ((uq + uk + gamma(2 * D) + 4 * u) * A + gamma(2.0 * static_cast<double>(Dn)) * B) *
                                  (1 + 0x1p-6));
    }
    const double m = *std::max_element(s.begin(), s.end());
    double sum = 0.0;
    std::vector<double> w(keys.size());
    for (std::size_t j = 0; j < keys.size(); ++j) sum += w[j] = std::exp(s[j] - m);
    for (double& x : w) x /= sum;
    std::vector<double> o(L, 0.0), M(L, 0.0), cmax(L, 0.0);
    for (std::size_t j = 0; j < keys.size(); ++j) {
      const double* c_t = latent.data() + static_cast<std::size_t>(keys[j]) * L;
      for (std::size_t c = 0; c < L; ++c) {
        o[c] += w[j] * c_t[c];
        M[c] += w[j] * std::fabs(c_t[c]);
        cmax[c] = std::max(cmax[c], std::fabs(c_t[c]));
      }
    }
    const double eta = std::pow(1 + eps_exp, n) * (1 + ub) - 1;
    const double rho = std::exp(2 * delta) * (1 + eta) / (1 - eta) - 1;
    const double acc = (1 + gamma(2 * n)) * (1 + gamma(2)) / (1 - gamma(2 * n)) - 1;
    for (std::size_t e = 0; e < Dv; ++e) {
      double out = 0.0, tol = 0.0, mag = 0.0;
      for (std::size_t c = 0; c < L; ++c) {
        const double wv = bf16_to_fp32(l.w_uv[(h * Dv + e) * L + c]);
        const double E = ((acc * (1 + rho) + rho) * (1 + uv) + uv) * M[c] + 0x1p-120 * n * cmax[c];
        out += wv * o[c];
        tol += std::fabs(wv) * E + gamma(2.0 * static_cast<double>(L)) * std::fabs(wv) * (std::fabs(o[c]) + E);
        mag += std::fabs(wv) * (std::fabs(o[c]) + M[c]);
      }
      b.exact[h * Dv + e] = out;
      b.tol[h * Dv + e] = tol + u * std::fabs(out) + 0x1p-40 * mag;
    }
  }
  return b;
}

std::vector<std::int64_t> key_list(const Seq& s) {
  std::vector<std::int64_t> keys;
  if (s.positions.empty()) {
    keys.resize(static_cast<std::size_t>(s.ctx));
    std::iota(keys.begin(), keys.end(), 0);
  } else {
    keys.assign(s.positions.begin(), s.positions.end());
  }
  return keys;
}

// Checks fast against ref for every output of a decode call, within the bound.
void expect_decode_within_bound(const Layer& l, const Queries& q, const std::vector<Seq>& seqs,
                                const std::vector<float>& fast, const std::vector<float>& ref, bool pow2,
                                Variant variant, const std::string& what, bool bf16_query = false) {
  const auto HDv = static_cast<std::size_t>(l.dims.num_heads * l.dims.v_head_dim);
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    const Bound bound = bound_query(l, q.q_nope.data() + b * static_cast<std::size_t>(l.dims.num_heads * l.dims.qk_nope_head_dim),
                                    q.q_rope.data() + b * static_cast<std::size_t>(l.dims.num_heads * l.dims.qk_rope_head_dim),
                                    seqs[b].latent, seqs[b].rope, key_list(seqs[b]), pow2, variant, bf16_query);
    for (std::size_t i = 0; i < HDv; ++i) {
      ASSERT_LE(std::fabs(static_cast<double>(fast[b * HDv + i]) - ref[b * HDv + i]), bound.tol[i])
          << what << " sequence " << b << " output " << i << " fast " << fast[b * HDv + i] << " ref " << ref[b * HDv + i];
      // The reference itself: one fp32 rounding of the exact value (+ its double arithmetic).
      ASSERT_LE(std::fabs(ref[b * HDv + i] - bound.exact[i]), 0x1p-24 * std::fabs(bound.exact[i]) + 1e-12)
          << what << " ref vs exact, sequence " << b << " output " << i;
    }
  }
}

// ---- Cache codecs.

TEST(MlaCache, TokenBytesMatchDeepSeekLayouts) {
  EXPECT_EQ(mla_cache_token_bytes(MlaCacheFormat::kBf16, 512, 64), 1152);
  EXPECT_EQ(mla_cache_token_bytes(MlaCacheFormat::kFp8, 512, 64), 656);  // FlashMLA's "FP8 with scale"
  EXPECT_EQ(mla_cache_token_bytes(MlaCacheFormat::kBf16, 16, 0), 32);
  EXPECT_THAT([] { mla_cache_token_bytes(MlaCacheFormat::kFp8, 64, 64); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("not a multiple of 128")));
  EXPECT_THAT([] { mla_cache_token_bytes(MlaCacheFormat::kBf16, 24, 0); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("kv_lora_rank = 24")));
}

TEST(MlaCache, Fp8RowHasFlashMlaByteLayout) {
  // One token, L = 128, R = 2: latent[0] = 1 with amax 3 -> scale = 2^ceil(log2(3 / 448)) = 2^-7,
  // 1 / 2^-7 = 128 = e4m3 0x70 (exponent 7 + 7, mantissa 0); 3 / 2^-7 = 384 = 0x7C (1.5 * 2^8).
  std::vector<float> latent(128, 0.0f), rope{1.0f, -2.0f};
  latent[0] = 1.0f;
  latent[1] = -3.0f;
  std::vector<std::byte> row(static_cast<std::size_t>(mla_cache_token_bytes(MlaCacheFormat::kFp8, 128, 2)));
  ASSERT_EQ(row.size(), 128u + 4 + 4);
  quantize_mla_cache_ref(MlaCacheFormat::kFp8, 128, 2, latent, rope, row);
  EXPECT_EQ(std::to_integer<int>(row[0]), 0x70);
  EXPECT_EQ(std::to_integer<int>(row[1]), 0x80 | 0x7C);
  EXPECT_EQ(std::to_integer<int>(row[2]), 0);
  // Scale 2^-7 = 0x3C000000 little-endian at byte 128; rope bf16 1.0 = 0x3F80, -2.0 = 0xC000.
  const int expected_tail[] = {0x00, 0x00, 0x00, 0x3C, 0x80, 0x3F, 0x00, 0xC0};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(std::to_integer<int>(row[128 + static_cast<std::size_t>(i)]), expected_tail[i]) << i;
}

TEST(MlaCache, Fp8RoundTripWithinHalfAnE4m3Ulp) {
  constexpr std::int64_t L = 256, R = 5, n = 7;
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> latent(L * n), rope(R * n);
  for (std::int64_t t = 0; t < n; ++t) {
    const float scale = std::ldexp(1.0f, static_cast<int>(3 * t) - 9);  // 2^-9 .. 2^9
    for (std::int64_t c = 0; c < L; ++c) latent[static_cast<std::size_t>(t * L + c)] = scale * normal(rng);
    for (std::int64_t r = 0; r < R; ++r) rope[static_cast<std::size_t>(t * R + r)] = normal(rng);
  }
  for (std::int64_t c = 0; c < 128; ++c) latent[static_cast<std::size_t>(2 * L + c)] = 0.0f;  // an all-zero tile
  const auto row_bytes = static_cast<std::size_t>(mla_cache_token_bytes(MlaCacheFormat::kFp8, L, R));
  std::vector<std::byte> cache(row_bytes * n);
  quantize_mla_cache_ref(MlaCacheFormat::kFp8, L, R, latent, rope, cache);
  std::vector<float> latent2(latent.size()), rope2(rope.size());
  dequantize_mla_cache_ref(MlaCacheFormat::kFp8, L, R, cache, latent2, rope2);
  for (std::int64_t t = 0; t < n; ++t) {
    for (std::int64_t j = 0; j < L / 128; ++j) {
      float scale = 0.0f;
      std::memcpy(&scale, cache.data() + static_cast<std::size_t>(t) * row_bytes + L + 4 * j, 4);
      float amax = 0.0f;
      for (std::int64_t i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(latent[static_cast<std::size_t>(t * L + 128 * j + i)]));
      int e = 0;
      ASSERT_EQ(std::frexp(scale, &e), 0.5f) << "scale is a power of two";
      EXPECT_GE(scale, std::max(amax / 448.0f, 1e-4f));
      EXPECT_LT(scale / 2, std::max(amax / 448.0f, 1e-4f)) << "and the smallest such";
      for (std::int64_t i = 0; i < 128; ++i) {
        const auto k = static_cast<std::size_t>(t * L + 128 * j + i);
        const double bound = std::max(0x1p-4 * std::fabs(latent[k]), 0x1p-10 * scale);
        EXPECT_LE(std::fabs(static_cast<double>(latent2[k]) - latent[k]), bound) << "t " << t << " value " << 128 * j + i;
      }
    }
  }
  for (std::size_t i = 0; i < rope.size(); ++i) EXPECT_LE(std::fabs(rope2[i] - rope[i]), 0x1p-8 * std::fabs(rope[i]));
}

TEST(MlaCache, Bf16RoundTripIsExactOnBf16Values) {
  std::vector<float> latent{1.0f, 0.5f, -3.0f, 1.0f + 0x1p-7f, 1e-20f, 7.0f, 0.0f, -0.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 8.0f, 9.0f, 10.0f};
  std::vector<float> rope{1.0f + 0x1p-9f};  // a tie below 1 + 2^-8: rounds to even (1.0)
  std::vector<std::byte> cache(static_cast<std::size_t>(mla_cache_token_bytes(MlaCacheFormat::kBf16, 16, 1)));
  quantize_mla_cache_ref(MlaCacheFormat::kBf16, 16, 1, latent, rope, cache);
  std::vector<float> latent2(16), rope2(1);
  dequantize_mla_cache_ref(MlaCacheFormat::kBf16, 16, 1, cache, latent2, rope2);
  for (std::size_t i = 0; i < 16; ++i) EXPECT_EQ(latent2[i], bf16_to_fp32(fp32_to_bf16(latent[i]))) << i;
  EXPECT_EQ(latent2[0], 1.0f);
  EXPECT_EQ(latent2[3], 1.0f + 0x1p-7f);
  EXPECT_EQ(rope2[0], 1.0f);
}

TEST(MlaCache, CodecsRejectBadInput) {
  std::vector<float> latent(128, 1.0f), rope(2, 1.0f);
  std::vector<std::byte> cache(static_cast<std::size_t>(mla_cache_token_bytes(MlaCacheFormat::kFp8, 128, 2)));
  const auto q = [&] { quantize_mla_cache_ref(MlaCacheFormat::kFp8, 128, 2, latent, rope, cache); };
  EXPECT_NO_THROW(q());
  latent[3] = std::numeric_limits<float>::infinity();
  EXPECT_THAT(q, ::testing::ThrowsMessage<InputError>(HasSubstr("latent[3] is not finite")));
  latent[3] = 1.0f;
  rope.push_back(0.0f);
  EXPECT_THAT(q, ::testing::ThrowsMessage<InputError>(HasSubstr("rope has 3 elements (expected 2)")));
  rope.pop_back();
  cache.pop_back();
  EXPECT_THAT(q, ::testing::ThrowsMessage<InputError>(HasSubstr("cache has")));
  latent.resize(100);
  EXPECT_THAT(q, ::testing::ThrowsMessage<InputError>(HasSubstr("not a whole number of rows")));
}

// ---- exp2 of the fast paths.

TEST(MlaExp2, WithinStatedBound) {
  std::vector<float> x;
  for (float v = 0.0f; v >= -126.0f; v -= 0.0078125f) x.push_back(v);  // every 2^-7, integers and halves included
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> uniform(-126.0f, 0.0f);
  for (int i = 0; i < 50000; ++i) x.push_back(uniform(rng));
  const std::size_t special = x.size();
  x.insert(x.end(), {-126.5f, -127.0f, -1000.0f, -std::numeric_limits<float>::infinity()});
  for (const MlaIsa isa : host_paths()) {
    std::vector<float> y(x.size());
    detail::mla_exp2_on(isa, x, y);
    double worst = 0.0;
    for (std::size_t i = 0; i < special; ++i) {
      const double exact = std::exp2(static_cast<double>(x[i]));
      worst = std::max(worst, std::fabs(y[i] - exact) / exact);
    }
    EXPECT_LE(worst, 0x1p-21) << isa_name(isa);
    for (std::size_t i = special; i < x.size(); ++i) EXPECT_EQ(y[i], 0.0f) << isa_name(isa) << " x " << x[i];
  }
}

// ---- Decode.

TEST(MlaDecode, HandComputedOneHead) {
  // H = 1, L = 128, Dn = 1, R = 1, Dv = 2, two cached tokens:
  //   q_nope = [2], W_UK[0][0] = [1, 0.5, 0...] -> q_lat = [2, 1, 0...]; q_rope = [1].
  //   c_0 = [1, 0, 0...], k_0 = [0];  c_1 = [0, 1, 0...], k_1 = [0.5].
  //   q.c_0 + q_rope k_0 = 2, q.c_1 + q_rope k_1 = 1.5; sigma = 2 ln 3 -> s_0 - s_1 = ln 3,
  //   w = [3/4, 1/4], o = [0.75, 0.25, 0...].
  //   W_UV rows [4, 8, 0...] and [-2, 2, 0...] -> out = [3 + 2, -1.5 + 0.5] = [5, -1].
  const MlaDims d{1, 128, 1, 1, 2};
  for (const MlaCacheFormat format : {MlaCacheFormat::kBf16, MlaCacheFormat::kFp8}) {
    Layer l{d, format, static_cast<float>(2 * std::log(3.0)), std::vector<std::uint16_t>(128, 0),
            std::vector<std::uint16_t>(256, 0)};
    l.w_uk[0] = fp32_to_bf16(1.0f);
    l.w_uk[1] = fp32_to_bf16(0.5f);
    l.w_uv[0] = fp32_to_bf16(4.0f);
    l.w_uv[1] = fp32_to_bf16(8.0f);
    l.w_uv[128] = fp32_to_bf16(-2.0f);
    l.w_uv[129] = fp32_to_bf16(2.0f);
    std::vector<float> latent(256, 0.0f), rope{0.0f, 0.5f};
    latent[0] = 1.0f;
    latent[128 + 1] = 1.0f;
    Seq s{2, std::vector<std::byte>(2 * static_cast<std::size_t>(mla_cache_token_bytes(format, 128, 1))), {}, {}, {}};
    quantize_mla_cache_ref(format, 128, 1, latent, rope, s.cache);
    decode_exact(d, format, s);
    const Queries q{{2.0f}, {1.0f}};
    const std::vector<Seq> seqs{s};
    const std::vector<float> ref = decode_ref(l, q, seqs);
    // The only rounding: sigma to fp32 (relative 2^-24 of 2 ln 3, times s_0 - s_1 / ln 3 = 1 / ln 3 ...
    // a weight error far below 1e-6).
    EXPECT_NEAR(ref[0], 5.0f, 1e-5) << format_name(format);
    EXPECT_NEAR(ref[1], -1.0f, 1e-5) << format_name(format);
    for (const MlaIsa isa : host_paths()) {
      for (const Variant v : kVariants) {
        const std::vector<float> fast = decode_fast(v, isa, l, q, seqs);
        expect_decode_within_bound(l, q, seqs, fast, ref, true, v, path_name(v, isa) + " " + format_name(format));
        // Every score operand is exact in bf16; the weights round to bf16 (1 and bf16(1/3) =
        // 0.333984375): w_1 = 0.333984375 / 1.333984375.
        const double w1 = 0.333984375 / 1.333984375;
        EXPECT_NEAR(fast[0], 4 * (1 - w1) + 8 * w1, 1e-5) << path_name(v, isa);
        EXPECT_NEAR(fast[1], -2 * (1 - w1) + 2 * w1, 1e-5) << path_name(v, isa);
      }
    }
  }
}

struct Shape {
  MlaDims dims;
  std::vector<std::int64_t> ctx;  // one per sequence
};

TEST(MlaDecode, FastMatchesRefOnAwkwardShapes) {
  // Heads: 1, 3 (one padded vector), 17 (two vectors), 40 (three: the 3-vector tiles), 67 (five:
  // a 4-vector tile and a 1-vector tile). Contexts: 1, primes, around the 48-key block.
  const std::vector<Shape> shapes{
      {{1, 16, 1, 0, 1}, {1}},
      {{3, 48, 7, 5, 5}, {47, 2}},
      {{17, 128, 3, 16, 9}, {49, 1, 97}},
      {{40, 128, 2, 21, 3}, {48}},
      {{67, 256, 2, 4, 2}, {13}},
      {{5, 16, 24, 64, 1}, {131}},
  };
  std::uint64_t seed = 100;
  for (const Shape& sh : shapes) {
    for (const MlaCacheFormat format : {MlaCacheFormat::kBf16, MlaCacheFormat::kFp8}) {
      if (format == MlaCacheFormat::kFp8 && sh.dims.kv_lora_rank % 128 != 0) continue;
      const Layer l = make_layer(sh.dims, format, ++seed);
      std::vector<Seq> seqs;
      for (const std::int64_t ctx : sh.ctx) seqs.push_back(make_seq(l, ctx, {}, ++seed));
      const Queries q = make_queries(sh.dims, static_cast<std::int64_t>(seqs.size()), ++seed);
      const std::vector<float> ref = decode_ref(l, q, seqs);
      for (const MlaIsa isa : host_paths()) {
        for (const Variant v : kVariants) {
          const std::string what = path_name(v, isa) + " " + format_name(format) + " H " +
                                   std::to_string(sh.dims.num_heads) + " L " + std::to_string(sh.dims.kv_lora_rank);
          expect_decode_within_bound(l, q, seqs, decode_fast(v, isa, l, q, seqs), ref, true, v, what);
        }
      }
    }
  }
}

TEST(MlaDecode, FastMatchesRefAtDeepSeekDimensions) {
  // DeepSeek's L, Dn, R and Dv; 64 heads (its 128 over two tensor-parallel ranks: full 4-vector
  // tiles) over 53 keys (a 48-key block and a tail) of a bf16 cache, and 16 heads over 11
  // positions of 61 (an indexer's top-k, unordered) of an fp8 cache. Fewer heads than 128 keep
  // the test short under sanitizers; the head loop is the same.
  for (const MlaCacheFormat format : {MlaCacheFormat::kBf16, MlaCacheFormat::kFp8}) {
    MlaDims d = kDeepSeek;
    d.num_heads = format == MlaCacheFormat::kBf16 ? 64 : 16;
    const Layer l = make_layer(d, format, 7);
    const std::vector<Seq> seqs{format == MlaCacheFormat::kBf16
                                    ? make_seq(l, 53, {}, 8)
                                    : make_seq(l, 61, {60, 3, 17, 0, 59, 48, 47, 22, 5, 31, 40}, 9)};
    const Queries q = make_queries(d, 1, 10);
    const std::vector<float> ref = decode_ref(l, q, seqs);
    for (const MlaIsa isa : host_paths()) {
      for (const Variant v : kVariants) {
        expect_decode_within_bound(l, q, seqs, decode_fast(v, isa, l, q, seqs), ref, true, v,
                                   path_name(v, isa) + " " + format_name(format));
      }
    }
  }
}

TEST(MlaDecode, Fp8WithNonPowerOfTwoScalesWithinBound) {
  // Caches written by another quantizer may carry any positive scale: the fast paths then round
  // byte * scale (fp32) and its bf16 copy, which the bound's u_x and u_v cover.
  const MlaDims d{5, 256, 3, 8, 4};
  const Layer l = make_layer(d, MlaCacheFormat::kFp8, 21);
  Seq s = make_seq(l, 50, {}, 22);
  const auto row_bytes = static_cast<std::size_t>(mla_cache_token_bytes(MlaCacheFormat::kFp8, 256, 8));
  for (std::size_t t = 0; t < 50; ++t) {
    for (std::size_t j = 0; j < 2; ++j) {
      const float scale = 0.0131f * static_cast<float>(1 + (t + j) % 5);
      std::memcpy(s.cache.data() + t * row_bytes + 256 + 4 * j, &scale, 4);
    }
  }
  decode_exact(d, MlaCacheFormat::kFp8, s);
  const std::vector<Seq> seqs{s};
  const Queries q = make_queries(d, 1, 23);
  const std::vector<float> ref = decode_ref(l, q, seqs);
  for (const MlaIsa isa : host_paths()) {
    for (const Variant v : kVariants) {
      expect_decode_within_bound(l, q, seqs, decode_fast(v, isa, l, q, seqs), ref, false, v, path_name(v, isa));
    }
  }
}

TEST(MlaDecode, PositionsSelectTheirKeysAndRepeatsCountTwice) {
  const MlaDims d{6, 128, 4, 8, 3};
  for (const MlaCacheFormat format : {MlaCacheFormat::kBf16, MlaCacheFormat::kFp8}) {
    const Layer l = make_layer(d, format, 31);
    const Queries q = make_queries(d, 1, 32);
    const Seq all = make_seq(l, 70, {}, 33);
    // Every position, reversed: the same keys as no list at all.
    Seq reversed = all;
    for (std::int32_t t = 69; t >= 0; --t) reversed.positions.push_back(t);
    const std::vector<float> ref_all = decode_ref(l, q, {all});
    const std::vector<float> ref_rev = decode_ref(l, q, {reversed});
    for (std::size_t i = 0; i < ref_all.size(); ++i) EXPECT_NEAR(ref_rev[i], ref_all[i], 1e-6 * (1 + std::fabs(ref_all[i])));
    // A repeated position weighs like a second copy of its row.
    Seq repeated = all;
    repeated.positions = {4, 9, 4, 50};
    Seq copied = make_seq(l, 4, {}, 34);
    const auto row_bytes = static_cast<std::size_t>(mla_cache_token_bytes(format, 128, 8));
    for (const std::size_t t : {0u, 1u, 2u, 3u}) {
      const std::size_t src = static_cast<std::size_t>(repeated.positions[t]);
      std::copy_n(all.cache.begin() + static_cast<std::ptrdiff_t>(src * row_bytes), row_bytes,
                  copied.cache.begin() + static_cast<std::ptrdiff_t>(t * row_bytes));
    }
    const std::vector<float> ref_rep = decode_ref(l, q, {repeated});
    const std::vector<float> ref_copy = decode_ref(l, q, {copied});
    for (std::size_t i = 0; i < ref_rep.size(); ++i) EXPECT_NEAR(ref_rep[i], ref_copy[i], 1e-6 * (1 + std::fabs(ref_copy[i])));
    // The fast paths on subsets, with repeats, unordered.
    const std::vector<Seq> seqs{repeated, make_seq(l, 100, {99, 0, 1, 98, 50, 49, 48, 47, 12, 12, 77}, 35), reversed};
    const Queries q3 = make_queries(d, 3, 36);
    const std::vector<float> ref = decode_ref(l, q3, seqs);
    for (const MlaIsa isa : host_paths()) {
      for (const Variant v : kVariants) {
        expect_decode_within_bound(l, q3, seqs, decode_fast(v, isa, l, q3, seqs), ref, true, v,
                                   path_name(v, isa) + " " + format_name(format));
      }
    }
  }
}

// Queries whose score operands are bf16 values: Dn = 1 with q_nope = 1 makes q_lat a row of
// W_UK (bf16), and q_rope is rounded to bf16. bf16qk then rounds nothing in its scores, and both
// variants are held to the tight bound (see bound_query).
Queries bf16_queries(const MlaDims& d, std::int64_t count, std::uint64_t seed) {
  EXPECT_EQ(d.qk_nope_head_dim, 1);
  Queries q = make_queries(d, count, seed);
  for (float& v : q.q_nope) v = 1.0f;
  for (float& v : q.q_rope) v = bf16_to_fp32(fp32_to_bf16(v));
  return q;
}

TEST(MlaDecode, Bf16qkIsExactOnBf16Operands) {
  // Odd D = L + R (53, 149, 263) leaves the last score pair half empty.
  const std::vector<Shape> shapes{{{19, 48, 1, 5, 4}, {1, 50}}, {{40, 128, 1, 21, 3}, {97}}, {{17, 256, 1, 7, 2}, {49, 2}}};
  std::uint64_t seed = 300;
  for (const Shape& sh : shapes) {
    for (const MlaCacheFormat format : {MlaCacheFormat::kBf16, MlaCacheFormat::kFp8}) {
      if (format == MlaCacheFormat::kFp8 && sh.dims.kv_lora_rank % 128 != 0) continue;
      const Layer l = make_layer(sh.dims, format, ++seed);
      std::vector<Seq> seqs;
      for (const std::int64_t ctx : sh.ctx) seqs.push_back(make_seq(l, ctx, {}, ++seed));
      const Queries q = bf16_queries(sh.dims, static_cast<std::int64_t>(seqs.size()), ++seed);
      const std::vector<float> ref = decode_ref(l, q, seqs);
      for (const MlaIsa isa : host_paths()) {
        expect_decode_within_bound(l, q, seqs, decode_fast(Variant::kBf16qk, isa, l, q, seqs), ref, true,
                                   Variant::kBf16qk,
                                   path_name(Variant::kBf16qk, isa) + " " + format_name(format) + " H " +
                                       std::to_string(sh.dims.num_heads),
                                   true);
      }
    }
  }
}

TEST(MlaDecode, EveryKeyIsAttended) {
  // One key at a time gets a rope score 12 nats above the others, so the output is close to
  // W_UV c_target: a kernel that drops or misplaces a key (at a block edge, in a tail pair, via
  // the positions) misses it by about the output's size, ten times the bound (bf16 operands keep
  // bf16qk's bound as tight as fast's).
  const MlaDims d{2, 128, 1, 16, 3};
  const Layer l = make_layer(d, MlaCacheFormat::kBf16, 41);
  Queries q = bf16_queries(d, 1, 42);
  for (std::size_t h = 0; h < 2; ++h) {
    for (std::size_t r = 0; r < 16; ++r) q.q_rope[h * 16 + r] = r == 0 ? 1.0f : 0.0f;
  }
  // All keys of 61 (a full 48-key block, then 13 more: an odd tail), dense from a bf16 cache and
  // listed from an fp8 one.
  for (const MlaCacheFormat format : {MlaCacheFormat::kBf16, MlaCacheFormat::kFp8}) {
    Layer lf = l;
    lf.format = format;
    const std::int64_t ctx = 61;
    const Seq base = make_seq(lf, ctx, {}, 43);
    for (const bool listed : {format == MlaCacheFormat::kFp8}) {
      for (std::int64_t target = 0; target < ctx; ++target) {
        Seq s = base;
        // Rope values are bf16 in both formats; 12 / sigma makes the target's rope score 12 nats.
        const auto row_bytes = static_cast<std::size_t>(mla_cache_token_bytes(format, 128, 16));
        const std::size_t rope_at = format == MlaCacheFormat::kBf16 ? 256 : 128 + 4;
        for (std::int64_t t = 0; t < ctx; ++t) {
          const float v = t == target ? 12.0f / l.sigma : 0.0f;
          const std::uint16_t bits = fp32_to_bf16(v);
          std::byte* p = s.cache.data() + static_cast<std::size_t>(t) * row_bytes + rope_at;
          p[0] = static_cast<std::byte>(bits & 0xFF);
          p[1] = static_cast<std::byte>(bits >> 8);
        }
        decode_exact(d, format, s);
        if (listed) {  // every key but one neighbour, in a scrambled order
          for (std::int64_t t = 0; t < ctx; ++t) {
            const auto p = static_cast<std::int32_t>((t * 17) % ctx);
            if (p != (target + 1) % ctx) s.positions.push_back(p);
          }
        }
        const std::vector<Seq> seqs{s};
        const std::vector<float> ref = decode_ref(lf, q, seqs);
        for (const MlaIsa isa : host_paths()) {
          for (const Variant v : kVariants) {
            expect_decode_within_bound(lf, q, seqs, decode_fast(v, isa, lf, q, seqs), ref, true, v,
                                       path_name(v, isa) + " " + format_name(format) + " target " +
                                           std::to_string(target) + (listed ? " listed" : ""),
                                       true);
          }
        }
      }
    }
  }
}

TEST(MlaDecode, AnySliceGivesTheSameBitsAndWritesOnlyItsRows) {
  const MlaDims d{37, 128, 3, 8, 5};  // 3 head units: 16, 16, 5 heads
  for (const MlaCacheFormat format : {MlaCacheFormat::kBf16, MlaCacheFormat::kFp8}) {
    const Layer l = make_layer(d, format, 51);
    const std::vector<Seq> seqs{make_seq(l, 30, {}, 52), make_seq(l, 55, {1, 7, 54, 20}, 53)};
    const Queries q = make_queries(d, 2, 54);
    const std::int64_t units = 2 * mla_head_units(d);
    const auto HDv = static_cast<std::size_t>(d.num_heads * d.v_head_dim);
    for (const MlaIsa isa : host_paths()) {
     for (const Variant v : kVariants) {
      const std::string name = path_name(v, isa);
      const std::vector<float> whole = decode_fast(v, isa, l, q, seqs);
      // Each unit alone, leaving a NaN everywhere else.
      std::vector<float> assembled(whole.size(), 0.0f);
      for (std::int64_t u = 0; u < units; ++u) {
        const std::vector<float> part = decode_fast(v, isa, l, q, seqs, u, u + 1, std::numeric_limits<float>::quiet_NaN());
        const std::size_t b = static_cast<std::size_t>(u / 3);
        const std::size_t h0 = static_cast<std::size_t>(u % 3) * 16, h1 = std::min<std::size_t>(h0 + 16, 37);
        for (std::size_t i = 0; i < part.size(); ++i) {
          const std::size_t bi = i / HDv, h = i % HDv / 5;
          const bool mine = bi == b && h >= h0 && h < h1;
          if (mine) {
            assembled[i] = part[i];
          } else {
            ASSERT_TRUE(std::isnan(part[i])) << name << " unit " << u << " wrote output " << i;
          }
        }
      }
      EXPECT_EQ(0, std::memcmp(whole.data(), assembled.data(), whole.size() * sizeof(float))) << name;
      // Uneven two-way splits.
      for (const std::int64_t cut : {1, 2, 4}) {
        std::vector<float> out = decode_fast(v, isa, l, q, seqs, 0, cut);
        const std::vector<float> rest = decode_fast(v, isa, l, q, seqs, cut, units);
        for (std::size_t i = static_cast<std::size_t>(cut / 3) * HDv + static_cast<std::size_t>(cut % 3) * 16 * 5;
             i < out.size(); ++i) {
          out[i] = rest[i];
        }
        EXPECT_EQ(0, std::memcmp(whole.data(), out.data(), whole.size() * sizeof(float))) << name << " cut " << cut;
      }
     }
    }
  }
}

TEST(MlaDecode, EveryVariantRejectsBadInputBeforeWriting) {
  const MlaDims d{3, 128, 2, 4, 2};
  const Layer l = make_layer(d, MlaCacheFormat::kFp8, 61);
  Seq s = make_seq(l, 9, {2, 5}, 62);
  Queries q = make_queries(d, 1, 63);
  std::vector<float> out(6, 7.0f);
  std::vector<double> rs(static_cast<std::size_t>(mla_ref_scratch_doubles(d)));
  std::vector<float> fs(static_cast<std::size_t>(mla_fast_scratch_floats(d)));
  MlaLayer layer = l.view();
  std::vector<MlaSequence> seqs{s.view()};
  std::int64_t unit_end = 1;
  const auto expect_error = [&](const std::string& message) {
    EXPECT_THAT([&] { mla_decode_ref(layer, q.q_nope, q.q_rope, seqs, out, 0, unit_end, rs); },
                ::testing::ThrowsMessage<InputError>(HasSubstr(message)));
    for (const MlaIsa isa : host_paths()) {
      for (const Variant v : kVariants) {
        EXPECT_THAT([&] { decode_on(v, isa, layer, q.q_nope, q.q_rope, seqs, out, 0, unit_end, fs); },
                    ::testing::ThrowsMessage<InputError>(HasSubstr(message)))
            << path_name(v, isa);
      }
    }
    for (const float v : out) ASSERT_EQ(v, 7.0f) << "written before the check failed: " << message;
  };
  std::vector<std::int32_t> pos{2, 9};
  seqs[0].positions = pos;
  expect_error("positions[1] = 9 (expected 0 .. 8)");
  pos = {-1};
  seqs[0].positions = pos;
  expect_error("positions[0] = -1");
  std::vector<std::int32_t> many(10, 0);
  seqs[0].positions = many;
  expect_error("10 positions for ctx_len 9");
  seqs[0] = s.view();
  seqs[0].ctx_len = 8;
  expect_error("sequence 0: cache (bytes) has");
  seqs[0].ctx_len = 0;
  expect_error("ctx_len = 0");
  seqs[0] = s.view();
  q.q_rope[5] = std::numeric_limits<float>::quiet_NaN();
  expect_error("q_rope[5] is not finite");
  q.q_rope[5] = 0.0f;
  unit_end = 2;
  expect_error("unit slice [0, 2) is not within [0, 1)");
  unit_end = 1;
  layer.softmax_scale = std::numeric_limits<float>::infinity();
  expect_error("softmax_scale is not finite");
  layer = l.view();
  layer.dims.kv_lora_rank = 64;
  expect_error("kv_lora_rank = 64 is not a multiple of 128");
  layer = l.view();
  layer.w_uv = std::span<const std::uint16_t>(l.w_uv).first(10);
  expect_error("w_uv has 10 elements");
  layer = l.view();
  std::vector<double> small_rs(1);
  EXPECT_THAT([&] { mla_decode_ref(layer, q.q_nope, q.q_rope, seqs, out, 0, 1, small_rs); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("scratch has 8 bytes")));
  std::vector<float> small_fs(100);
  EXPECT_THAT([&] { mla_decode_fast(layer, q.q_nope, q.q_rope, seqs, out, 0, 1, small_fs); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("scratch has 400 bytes")));
  // out overlapping q_nope.
  std::vector<float> joint(q.q_nope.begin(), q.q_nope.end());
  EXPECT_THAT([&] {
    mla_decode_fast(layer, std::span<const float>(joint), q.q_rope, seqs, std::span<float>(joint).first(6), 0, 1, fs);
  }, ::testing::ThrowsMessage<InputError>(HasSubstr("out overlaps an input")));
}

// ---- Prefill.

TEST(MlaPrefill, FastMatchesRefOnAwkwardChunks) {
  struct Chunk {
    MlaDims dims;
    std::int64_t cached, fresh;
  };
  const std::vector<Chunk> chunks{
      {{1, 16, 1, 0, 1}, 0, 1},    {{3, 48, 5, 3, 2}, 0, 50},  {{17, 128, 2, 7, 3}, 1, 5},
      {{2, 128, 3, 16, 4}, 47, 3}, {{5, 256, 2, 2, 2}, 30, 25},
  };
  std::uint64_t seed = 200;
  for (const Chunk& ch : chunks) {
    for (const MlaCacheFormat format : {MlaCacheFormat::kBf16, MlaCacheFormat::kFp8}) {
      if (format == MlaCacheFormat::kFp8 && ch.dims.kv_lora_rank % 128 != 0) continue;
      const Layer l = make_layer(ch.dims, format, ++seed);
      const Seq s = make_seq(l, ch.cached + ch.fresh, {}, ++seed);
      const Queries q = make_queries(ch.dims, ch.fresh, ++seed);
      const std::int64_t units = ch.fresh * mla_head_units(ch.dims);
      const auto HDv = static_cast<std::size_t>(ch.dims.num_heads * ch.dims.v_head_dim);
      std::vector<float> ref(static_cast<std::size_t>(ch.fresh) * HDv);
      std::vector<double> rs(static_cast<std::size_t>(mla_ref_scratch_doubles(ch.dims)));
      mla_prefill_ref(l.view(), q.q_nope, q.q_rope, s.cache, ch.cached, ch.fresh, ref, 0, units, rs);
      for (const MlaIsa isa : host_paths()) {
       for (const Variant v : kVariants) {
        std::vector<float> fast(ref.size());
        std::vector<float> fs(static_cast<std::size_t>(mla_fast_scratch_floats(ch.dims)));
        // In two uneven slices, as two threads would.
        const std::int64_t cut = units / 3;
        prefill_on(v, isa, l.view(), q.q_nope, q.q_rope, s.cache, ch.cached, ch.fresh, fast, 0, cut, fs);
        prefill_on(v, isa, l.view(), q.q_nope, q.q_rope, s.cache, ch.cached, ch.fresh, fast, cut, units, fs);
        for (std::int64_t i = 0; i < ch.fresh; ++i) {
          std::vector<std::int64_t> keys(static_cast<std::size_t>(ch.cached + i + 1));
          std::iota(keys.begin(), keys.end(), 0);
          const auto qi = static_cast<std::size_t>(i);
          const Bound b = bound_query(l, q.q_nope.data() + qi * static_cast<std::size_t>(ch.dims.num_heads * ch.dims.qk_nope_head_dim),
                                      q.q_rope.data() + qi * static_cast<std::size_t>(ch.dims.num_heads * ch.dims.qk_rope_head_dim),
                                      s.latent, s.rope, keys, true, v);
          for (std::size_t k = 0; k < HDv; ++k) {
            ASSERT_LE(std::fabs(static_cast<double>(fast[qi * HDv + k]) - ref[qi * HDv + k]), b.tol[k])
                << path_name(v, isa) << " " << format_name(format) << " H " << ch.dims.num_heads << " P " << ch.cached
                << " T " << ch.fresh << " token " << i << " output " << k;
          }
        }
       }
      }
    }
  }
}

TEST(MlaPrefill, LastTokenIsADecodeOverTheWholeCache) {
  const MlaDims d{20, 128, 4, 8, 3};
  for (const MlaCacheFormat format : {MlaCacheFormat::kBf16, MlaCacheFormat::kFp8}) {
    const Layer l = make_layer(d, format, 71);
    const std::int64_t P = 40, T = 9;
    const Seq s = make_seq(l, P + T, {}, 72);
    const Queries q = make_queries(d, T, 73);
    const std::int64_t G = mla_head_units(d);
    const auto HDv = static_cast<std::size_t>(d.num_heads * d.v_head_dim);
    // The last new token's query as a one-sequence decode batch.
    const auto first_nope = static_cast<std::size_t>((T - 1) * d.num_heads * d.qk_nope_head_dim);
    const auto first_rope = static_cast<std::size_t>((T - 1) * d.num_heads * d.qk_rope_head_dim);
    const Queries last{std::vector<float>(q.q_nope.begin() + static_cast<std::ptrdiff_t>(first_nope), q.q_nope.end()),
                       std::vector<float>(q.q_rope.begin() + static_cast<std::ptrdiff_t>(first_rope), q.q_rope.end())};
    std::vector<float> prefill(static_cast<std::size_t>(T) * HDv);
    std::vector<double> rs(static_cast<std::size_t>(mla_ref_scratch_doubles(d)));
    mla_prefill_ref(l.view(), q.q_nope, q.q_rope, s.cache, P, T, prefill, (T - 1) * G, T * G, rs);
    const std::vector<float> decode = decode_ref(l, last, {s});
    EXPECT_EQ(0, std::memcmp(prefill.data() + (T - 1) * HDv, decode.data(), HDv * sizeof(float))) << "ref";
    for (const MlaIsa isa : host_paths()) {
      for (const Variant v : kVariants) {
        std::vector<float> fs(static_cast<std::size_t>(mla_fast_scratch_floats(d)));
        prefill_on(v, isa, l.view(), q.q_nope, q.q_rope, s.cache, P, T, prefill, (T - 1) * G, T * G, fs);
        const std::vector<float> fast = decode_fast(v, isa, l, last, {s});
        EXPECT_EQ(0, std::memcmp(prefill.data() + (T - 1) * HDv, fast.data(), HDv * sizeof(float))) << path_name(v, isa);
      }
    }
  }
}

TEST(MlaPrefill, RejectsBadInput) {
  const MlaDims d{2, 128, 2, 2, 2};
  const Layer l = make_layer(d, MlaCacheFormat::kBf16, 81);
  const Seq s = make_seq(l, 5, {}, 82);
  const Queries q = make_queries(d, 2, 83);
  std::vector<float> out(8);
  std::vector<double> rs(static_cast<std::size_t>(mla_ref_scratch_doubles(d)));
  std::vector<float> fs(static_cast<std::size_t>(mla_fast_scratch_floats(d)));
  EXPECT_NO_THROW(mla_prefill_ref(l.view(), q.q_nope, q.q_rope, s.cache, 3, 2, out, 0, 2, rs));
  EXPECT_THAT([&] { mla_prefill_ref(l.view(), q.q_nope, q.q_rope, s.cache, 2, 2, out, 0, 2, rs); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("cache (bytes, num_cached + num_new rows) has")));
  EXPECT_THAT([&] { mla_prefill_fast(l.view(), q.q_nope, q.q_rope, s.cache, -1, 2, out, 0, 2, fs); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("num_cached = -1")));
  EXPECT_THAT([&] { mla_prefill_fast(l.view(), q.q_nope, q.q_rope, s.cache, 3, 2, out, 1, 3, fs); },
              ::testing::ThrowsMessage<InputError>(HasSubstr("unit slice [1, 3)")));
}

// ---- Work.

TEST(MlaWork, DecodeCountsByHand) {
  // H 2, L 16, Dn 3, R 4, Dv 5, bf16 rows of 2 (16 + 4) = 40 bytes. Sequence 0 attends its 3
  // keys, sequence 1 the 2 listed of its 6:
  //   flops = 2 H (batch L (Dn + Dv) + keys (2L + R)) = 4 (2 * 16 * 8 + 5 * 36) = 4 * 436 = 1744
  //   bytes = 5 * 40 + 4 * 2 + 2 * 2 * 16 * 8 + 4 * 2 * 2 * (3 + 4 + 5) = 200 + 8 + 512 + 192 = 912
  const MlaDims d{2, 16, 3, 4, 5};
  const std::vector<std::byte> c0(3 * 40), c1(6 * 40);
  const std::vector<std::int32_t> pos{1, 4};
  const std::vector<MlaSequence> seqs{{c0, 3, {}}, {c1, 6, pos}};
  const MlaDecodeShape s = mla_decode_shape(d, MlaCacheFormat::kBf16, seqs);
  EXPECT_EQ(s.batch, 2);
  EXPECT_EQ(s.attended_positions, 5);
  EXPECT_EQ(s.listed_positions, 2);
  const Work w = work_of(s);
  EXPECT_EQ(w.flops, 1744.0);
  EXPECT_EQ(w.bytes, 912.0);
  // DeepSeek at ctx 32768, batch 1, bf16: 2 * 128 * (512 * 256 + 32768 * 1088) FLOPs;
  // 32768 * 1152 cache + 2 * 128 * 512 * 256 weights + 4 * 128 * 320 q/out bytes.
  const Work big = work_of(MlaDecodeShape{kDeepSeek, MlaCacheFormat::kBf16, 1, 32768, 0});
  EXPECT_EQ(big.flops, 2.0 * 128 * (512.0 * 256 + 32768.0 * 1088));
  EXPECT_EQ(big.bytes, 32768.0 * 1152 + 2.0 * 128 * 512 * 256 + 4.0 * 128 * 320);
  const Work fp8 = work_of(MlaDecodeShape{kDeepSeek, MlaCacheFormat::kFp8, 1, 32768, 0});
  EXPECT_EQ(big.bytes - fp8.bytes, 32768.0 * (1152 - 656));
}

TEST(MlaWork, PrefillCountsByHand) {
  // P 2, T 3: new tokens attend 3, 4 and 5 keys (12 in all); 5 rows read once.
  //   flops = 2 * 2 * (3 * 16 * 8 + 12 * 36) = 4 * (384 + 432) = 3264
  //   bytes = 5 * 40 + 512 + 4 * 3 * 2 * 12 = 200 + 512 + 288 = 1000
  const Work w = work_of(MlaPrefillShape{{2, 16, 3, 4, 5}, MlaCacheFormat::kBf16, 2, 3});
  EXPECT_EQ(w.flops, 3264.0);
  EXPECT_EQ(w.bytes, 1000.0);
}

}  // namespace
}  // namespace deepfit::kernels
