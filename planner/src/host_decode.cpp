// The host decode loop (see host_decode.h). One class holds the scaled model's weights, caches and
// activations; step() runs one decode step op by op, each op one job on the pool (or, for the
// reference step, the op's _ref kernel on the calling thread).
#include "planner/host_decode.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>

#include "hwdb/host_info.h"
#include "kernels/attention.h"
#include "kernels/dsa.h"
#include "kernels/error.h"
#include "kernels/expert_ffn.h"
#include "kernels/moe_gemm.h"
#include "kernels/moe_gemm_bf16.h"
#include "kernels/moe_gemm_fp8.h"
#include "kernels/quant_blocks.h"
#include "kernels/router.h"
#include "kernels/token_ops.h"

namespace deepfit::planner {
namespace {

namespace k = kernels;
using Fmt = k::ExpertWeightFormat;

std::int64_t to_i(std::size_t v) { return static_cast<std::int64_t>(v); }
std::size_t to_z(std::int64_t v) { return static_cast<std::size_t>(v); }

// xorshift64*: fast seeded fill of gigabytes of weights (quality is irrelevant; determinism is not).
struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
  }
  float uniform() { return static_cast<float>(next() >> 40) * 0x1p-24f * 2.0f - 1.0f; }  // [-1, 1)
};

Fmt parse_format(const std::string& q) {
  if (q == "bf16") return Fmt::kBf16;
  if (q == "q8_0") return Fmt::kQ8_0;
  if (q == "q4_k") return Fmt::kQ4_K;
  if (q == "fp8") return Fmt::kFp8E4m3;
  throw InputError("--quant: '" + q + "' is not a host kernel format (expected bf16, q8_0, q4_k or fp8)");
}

k::MlaCacheFormat parse_cache(const std::string& c) {
  if (c == "bf16") return k::MlaCacheFormat::kBf16;
  if (c == "fp8") return k::MlaCacheFormat::kFp8;
  throw InputError("--kv-cache: '" + c + "' is not an MLA cache format (expected bf16 or fp8)");
}

std::int64_t block_of(Fmt f) { return f == Fmt::kQ4_K ? 256 : f == Fmt::kQ8_0 ? 32 : 1; }

// A weight matrix [rows][cols] with uniform weights in [-a, a], a = sqrt(3 / cols), so each output
// of a unit-variance input has about unit variance and the residual stream stays finite.
struct Matrix {
  Fmt fmt = Fmt::kBf16;
  std::int64_t rows = 0, cols = 0;
  std::vector<std::byte> bytes;
  std::vector<float> scales;  // FP8: [rows/128][cols/128] tiles
  k::ExpertMatrix view() const { return {bytes, scales}; }
  double stored_bytes() const { return static_cast<double>(bytes.size()) + 4.0 * static_cast<double>(scales.size()); }
};

void put16(std::byte* p, std::uint16_t v) {
  p[0] = static_cast<std::byte>(v & 0xFF);
  p[1] = static_cast<std::byte>(v >> 8);
}

Matrix make_matrix(Fmt f, std::int64_t rows, std::int64_t cols, Rng& rng, const std::string& name) {
  if (cols % block_of(f) != 0)
    throw InputError(name + ": rows of " + std::to_string(cols) + " values are not whole blocks of " + std::to_string(block_of(f)) +
                     " for this --quant (use bf16 or fp8, or a config whose dimensions are multiples of 256)");
  Matrix m;
  m.fmt = f;
  m.rows = rows;
  m.cols = cols;
  const float a = std::sqrt(3.0f / static_cast<float>(cols));
  m.bytes.resize(to_z(k::expert_matrix_weight_bytes(f, rows, cols)));
  std::byte* p = m.bytes.data();
  const std::int64_t n = rows * cols;
  switch (f) {
    case Fmt::kBf16:
      for (std::int64_t i = 0; i < n; ++i) put16(p + 2 * i, k::fp32_to_bf16(a * rng.uniform()));
      break;
    case Fmt::kQ8_0: {
      const std::uint16_t d = k::fp32_to_fp16(a / 127.0f);
      for (std::int64_t b = 0; b < n / 32; ++b, p += k::kQ8_0BlockBytes) {
        put16(p, d);
        for (std::size_t j = 0; j < 32; ++j) p[2 + j] = static_cast<std::byte>(static_cast<std::int8_t>(static_cast<int>(rng.next() % 255) - 127));
      }
      break;
    }
    case Fmt::kQ4_K: {
      // weight = d * 32 * q - dmin * 32 with q in 0..15: uniform steps over about [-a, a].
      const std::uint16_t d = k::fp32_to_fp16(2.0f * a / (15.0f * 32.0f)), dmin = k::fp32_to_fp16(a / 32.0f);
      k::Q4KScales sc;
      sc.scales.fill(32);
      sc.mins.fill(32);
      std::array<std::byte, k::kQ4_KScalesBytes> packed{};
      k::pack_q4_K_scales(sc, packed);
      for (std::int64_t b = 0; b < n / 256; ++b, p += k::kQ4_KBlockBytes) {
        put16(p, d);
        put16(p + 2, dmin);
        std::memcpy(p + k::kQ4_KScalesOffset, packed.data(), packed.size());
        for (std::size_t j = 0; j < 128; j += 8) {
          const std::uint64_t r = rng.next();
          std::memcpy(p + k::kQ4_KQsOffset + j, &r, 8);
        }
      }
      break;
    }
    case Fmt::kFp8E4m3: {
      // Codes of uniform values in [-1, 1), scale a per tile (DeepSeek's layout, 128x128 tiles).
      std::array<std::byte, 256> codes{};
      for (auto& c : codes) c = static_cast<std::byte>(k::fp32_to_fp8_e4m3(rng.uniform()));
      for (std::int64_t i = 0; i < n; ++i) p[i] = codes[rng.next() & 255];
      m.scales.assign(to_z(k::expert_matrix_num_scales(f, rows, cols)), a);
      break;
    }
  }
  return m;
}

// From this batch on, BF16 products run on the AVX512_BF16 dot-product GEMM (packed bf16
// activations, register tiles of 64 vectors) instead of the fp32-FMA GEMV kernel.
constexpr std::int64_t kBf16DotMinBatch = 16;

// Activations [batch][cols] prepared for the kernels: quantized for Q8_0/Q4_K, packed bf16 for
// the BF16 dot-product GEMM.
struct QuantActs {
  std::vector<std::int8_t> qs;
  std::vector<float> scales;
  std::vector<std::int32_t> sums;
  std::vector<std::uint16_t> packed;
  void pack(std::span<const float> x, std::int64_t batch, std::int64_t cols) {
    packed.resize(to_z(k::packed_activations_bf16_size(batch, cols)));
    k::pack_activations_bf16(x, batch, cols, packed);
  }
  void prepare(std::span<const float> x, std::int64_t batch, std::int64_t cols) {
    qs.resize(to_z(batch * cols));
    scales.resize(to_z(batch * cols / k::kActivationGroup));
    sums.resize(scales.size());
    k::quantize_activations_q8(x, batch, cols, qs, scales, sums);
  }
};

// y [batch][rows] = W x for rows [lo, hi): the fast kernel of the matrix's format.
void matvec_fast(const Matrix& m, std::int64_t batch, std::span<const float> x, const QuantActs& xq, std::span<float> y,
                 std::int64_t lo, std::int64_t hi) {
  switch (m.fmt) {
    case Fmt::kBf16:
      if (batch >= kBf16DotMinBatch)
        k::moe_gemm_bf16dot({batch, m.rows, m.cols, k::WeightFormat::kBf16}, m.bytes, k::ActivationsBf16{batch, m.cols, xq.packed}, y, lo, hi);
      else
        k::moe_gemm_blocked({batch, m.rows, m.cols, k::WeightFormat::kBf16}, m.bytes, x, y, lo, hi);
      break;
    case Fmt::kQ8_0:
    case Fmt::kQ4_K: {
      const k::WeightFormat wf = m.fmt == Fmt::kQ8_0 ? k::WeightFormat::kQ8_0 : k::WeightFormat::kQ4_K;
      k::moe_gemm_blocked_q8({batch, m.rows, m.cols, wf}, m.bytes, k::ActivationsQ8{batch, m.cols, xq.qs, xq.scales, xq.sums}, y, lo, hi);
      break;
    }
    case Fmt::kFp8E4m3: k::moe_gemm_fp8_blocked({batch, m.rows, m.cols}, m.bytes, m.scales, x, y, lo, hi); break;
  }
}

void matvec_ref(const Matrix& m, std::int64_t batch, std::span<const float> x, std::span<float> y) {
  switch (m.fmt) {
    case Fmt::kBf16: k::moe_gemm_ref({batch, m.rows, m.cols, k::WeightFormat::kBf16}, m.bytes, x, y, 0, m.rows); break;
    case Fmt::kQ8_0: k::moe_gemm_ref({batch, m.rows, m.cols, k::WeightFormat::kQ8_0}, m.bytes, x, y, 0, m.rows); break;
    case Fmt::kQ4_K: k::moe_gemm_ref({batch, m.rows, m.cols, k::WeightFormat::kQ4_K}, m.bytes, x, y, 0, m.rows); break;
    case Fmt::kFp8E4m3: k::moe_gemm_fp8_ref({batch, m.rows, m.cols}, m.bytes, m.scales, x, y, 0, m.rows); break;
  }
}

k::Work matvec_work(const Matrix& m, std::int64_t batch) {
  switch (m.fmt) {
    case Fmt::kBf16: return k::work_of(k::MatvecShape{batch, m.rows, m.cols, k::WeightFormat::kBf16});
    case Fmt::kQ8_0: return k::work_of(k::MatvecShape{batch, m.rows, m.cols, k::WeightFormat::kQ8_0});
    case Fmt::kQ4_K: return k::work_of(k::MatvecShape{batch, m.rows, m.cols, k::WeightFormat::kQ4_K});
    case Fmt::kFp8E4m3: return k::work_of(k::Fp8MatvecShape{batch, m.rows, m.cols});
  }
  return {};
}

std::vector<std::uint16_t> bf16_values(std::int64_t n, float a, Rng& rng) {
  std::vector<std::uint16_t> v(to_z(n));
  for (auto& x : v) x = k::fp32_to_bf16(a * rng.uniform());
  return v;
}

std::vector<float> norm_weights(std::int64_t n, Rng& rng) {
  std::vector<float> v(to_z(n));
  for (auto& x : v) x = 1.0f + 0.1f * rng.uniform();
  return v;
}

// An FFN of three matrices (dense FFN, shared expert, or one routed expert).
struct Ffn {
  Matrix gate, up, down;
  k::ExpertWeights view() const { return {gate.view(), up.view(), down.view()}; }
  double stored_bytes() const { return gate.stored_bytes() + up.stored_bytes() + down.stored_bytes(); }
};

Ffn make_ffn(Fmt f, std::int64_t hidden, std::int64_t ffn, Rng& rng, const std::string& name) {
  return {make_matrix(f, ffn, hidden, rng, name + ".gate"), make_matrix(f, ffn, hidden, rng, name + ".up"),
          make_matrix(f, hidden, ffn, rng, name + ".down")};
}

struct Layer {
  std::vector<float> attn_norm, q_norm, kv_norm, ffn_norm, idx_k_norm;
  Matrix q_a, q_b, kv_a, o, idx_wq, idx_wk, idx_wproj, router;
  std::vector<std::uint16_t> w_uk, w_uv;
  std::vector<float> router_bias;
  bool moe = false;
  Ffn dense, shared;
  std::vector<Ffn> experts;
  std::vector<k::ExpertWeights> expert_views;
  std::vector<std::vector<std::byte>> kv;          // per sequence: [ctx + 1][token bytes]
  std::vector<std::vector<std::uint8_t>> idx_keys;  // per sequence: [ctx + 1][128]
  std::vector<std::vector<float>> idx_scales;       // per sequence: [ctx + 1]
};


}  // namespace

ModelSpec scale_for_host(const ModelSpec& m, std::int64_t layers, std::int64_t experts) {
  ModelSpec s = m;
  if (layers < 0 || layers > m.num_layers)
    throw InputError("--layers: " + std::to_string(layers) + " is outside 1.." + std::to_string(m.num_layers) + " (the model's layers)");
  if (layers > 0) {
    s.num_layers = layers;
    if (!s.layer_moe.empty()) s.layer_moe.resize(to_z(layers));
    if (!s.layer_sliding.empty()) s.layer_sliding.resize(to_z(layers));
  }
  if (experts != 0) {
    if (!m.is_moe()) throw InputError("--experts: " + m.id + " has no routed experts");
    const std::int64_t groups = m.router ? m.router->num_groups : 1;
    if (experts < m.top_k || experts > m.num_experts || experts % groups != 0)
      throw InputError("--experts: " + std::to_string(experts) + " must be between top_k " + std::to_string(m.top_k) + " and " +
                       std::to_string(m.num_experts) + " and a multiple of the " + std::to_string(groups) + " router groups");
    s.num_experts = experts;
  }
  s.num_mtp_layers = 0;
  return s;
}

namespace {

struct RoutedScratch;

class DecodeLoop {
 public:
  DecodeLoop(const ModelSpec& m, const HostDecodeOptions& opt) : m_(m), opt_(opt) {
    if (!m.mla)
      throw InputError("bench decode: " + m.id + " uses " + std::string(to_string(m.arch)) +
                       " attention; the host kernels cover DeepSeek MLA (DeepseekV3/V32 configs) only so far");
    if (!m.router || !m.rope || !m.rms_norm_eps)
      throw InputError("bench decode: " + m.id + "'s config lacks n_group/topk_group/routed_scaling_factor, rope_theta or rms_norm_eps");
    if (opt.batch < 1 || opt.batch > 4096) throw InputError("--batch: " + std::to_string(opt.batch) + " is outside 1..4096");
    if (opt.context < 1 || opt.context + 1 > m.max_ctx_len)
      throw InputError("--context: " + std::to_string(opt.context) + " is outside 1.." + std::to_string(m.max_ctx_len - 1) +
                       " (the model's context length, one slot kept for the new token)");
    if (opt.steps < 1 || opt.steps > 1000) throw InputError("--steps: " + std::to_string(opt.steps) + " is outside 1..1000");
    fmt_ = parse_format(opt.quant);
    cache_ = parse_cache(opt.kv_cache);
    dims_ = {m.num_heads, m.kv_lora_rank, m.nope_head_dim, m.rope_head_dim, m.v_head_dim};
    token_bytes_ = k::mla_cache_token_bytes(cache_, m.kv_lora_rank, m.rope_head_dim);
    rope_cfg_ = {m.rope_head_dim, m.rope->rope_theta, m.rope->factor, m.rope->original_max_position_embeddings,
                 m.rope->beta_fast, m.rope->beta_slow, m.rope->mscale, m.rope->mscale_all_dim};
    check_memory();
  }

  void build() {
    Rng rng{opt_.seed * 0x9E3779B97F4A7C15ULL + 1};
    const std::int64_t H = m_.num_heads, D = m_.hidden_dim;
    embedding_ = bf16_values(m_.vocab_size * D, 1.0f, rng);
    weights_bytes_ += 2.0 * static_cast<double>(embedding_.size());
    for (std::int64_t l = 0; l < m_.num_layers; ++l) {
      Layer L;
      const std::string at = "layer " + std::to_string(l) + " ";
      L.attn_norm = norm_weights(D, rng);
      L.ffn_norm = norm_weights(D, rng);
      L.kv_norm = norm_weights(m_.kv_lora_rank, rng);
      const std::int64_t qk = m_.nope_head_dim + m_.rope_head_dim;
      if (m_.q_lora_rank > 0) {
        L.q_norm = norm_weights(m_.q_lora_rank, rng);
        L.q_a = make_matrix(fmt_, m_.q_lora_rank, D, rng, at + "q_a_proj");
        L.q_b = make_matrix(fmt_, H * qk, m_.q_lora_rank, rng, at + "q_b_proj");
      } else {
        L.q_b = make_matrix(fmt_, H * qk, D, rng, at + "q_proj");
      }
      L.kv_a = make_matrix(fmt_, m_.kv_lora_rank + m_.rope_head_dim, D, rng, at + "kv_a_proj");
      L.o = make_matrix(fmt_, D, H * m_.v_head_dim, rng, at + "o_proj");
      const float a_kv = std::sqrt(3.0f / static_cast<float>(m_.kv_lora_rank));
      L.w_uk = bf16_values(H * m_.nope_head_dim * m_.kv_lora_rank, a_kv, rng);
      L.w_uv = bf16_values(H * m_.v_head_dim * m_.kv_lora_rank, a_kv, rng);
      if (m_.dsa) {
        L.idx_wq = make_matrix(fmt_, m_.index_num_heads * m_.index_head_dim, m_.q_lora_rank, rng, at + "indexer.wq_b");
        L.idx_wk = make_matrix(fmt_, m_.index_head_dim, D, rng, at + "indexer.wk");
        L.idx_wproj = make_matrix(Fmt::kBf16, m_.index_num_heads, D, rng, at + "indexer.weights_proj");
        L.idx_k_norm = norm_weights(m_.index_head_dim, rng);
      }
      L.moe = m_.layer_is_moe(l);
      if (L.moe) {
        L.router = make_matrix(Fmt::kBf16, m_.num_experts, D, rng, at + "router");
        L.router_bias.resize(to_z(m_.num_experts));
        for (auto& b : L.router_bias) b = 0.1f * rng.uniform();
        for (std::int64_t e = 0; e < m_.num_experts; ++e) L.experts.push_back(make_ffn(fmt_, D, m_.moe_ffn_dim, rng, at + "expert"));
        for (const auto& e : L.experts) L.expert_views.push_back(e.view());
        if (m_.num_shared_experts > 0) L.shared = make_ffn(fmt_, D, m_.moe_ffn_dim * m_.num_shared_experts, rng, at + "shared_expert");
      } else {
        L.dense = make_ffn(fmt_, D, m_.ffn_dim, rng, at + "ffn");
      }
      weights_bytes_ += L.q_a.stored_bytes() + L.q_b.stored_bytes() + L.kv_a.stored_bytes() + L.o.stored_bytes() +
                        2.0 * static_cast<double>(L.w_uk.size() + L.w_uv.size()) + L.idx_wq.stored_bytes() +
                        L.idx_wk.stored_bytes() + L.idx_wproj.stored_bytes() + L.router.stored_bytes() +
                        L.dense.stored_bytes() + L.shared.stored_bytes();
      for (const auto& e : L.experts) weights_bytes_ += e.stored_bytes();
      fill_caches(L, rng);
      layers_.push_back(std::move(L));
    }
    final_norm_ = norm_weights(D, rng);
    lm_head_ = make_matrix(fmt_, m_.vocab_size, D, rng, "lm_head");
    weights_bytes_ += lm_head_.stored_bytes();
    ids_.resize(to_z(opt_.batch));
    for (auto& id : ids_) id = static_cast<std::int32_t>(rng.next() % static_cast<std::uint64_t>(m_.vocab_size));
    // The new token's position is `context` in every sequence; its RoPE row only is needed.
    const std::int64_t positions = opt_.context + 1;
    rope_table_.resize(to_z(positions * m_.rope_head_dim));
    k::rope_yarn_table(rope_cfg_, positions, rope_table_, opt_.context, positions);
    const double mscale = k::yarn_softmax_scale_factor(rope_cfg_);
    softmax_scale_ = static_cast<float>(mscale / std::sqrt(static_cast<double>(m_.nope_head_dim + m_.rope_head_dim)));
  }

  // Runs one step; `pool` nullptr: the reference kernels on the calling thread.
  void step(ThreadPool* pool);

  const std::vector<float>& logits() const { return logits_; }
  const std::vector<HostOpTime>& ops() const { return ops_; }
  // DSA positions chosen per layer in the last step, and (for comparisons) the positions a step
  // must attend instead of its own choice.
  std::vector<std::vector<std::int32_t>> chosen_, forced_;
  std::int64_t same_positions_ = 0, total_positions_ = 0;
  void reset_ops() {
    ops_.clear();
    op_index_.clear();
  }
  double weights_bytes() const { return weights_bytes_; }
  double kv_bytes() const { return kv_bytes_; }

 private:
  void check_memory() const;
  void fill_caches(Layer& L, Rng& rng);
  template <class Body>
  void op(const char* name, const k::Work& w, ThreadPool* pool, Body&& body);
  void linear(const char* name, const Matrix& m, std::span<const float> x, std::span<float> y, ThreadPool* pool);
  void norm(const char* name, std::span<const float> w, std::int64_t dim, std::span<const float> x, std::span<float> y, ThreadPool* pool);
  void ffn(const char* name, const Layer& L, bool routed, std::span<const float> x, std::span<float> out, ThreadPool* pool);

  ModelSpec m_;
  HostDecodeOptions opt_;
  Fmt fmt_;
  k::MlaCacheFormat cache_;
  k::MlaDims dims_{};
  k::RopeYarnConfig rope_cfg_{};
  std::int64_t token_bytes_ = 0;
  float softmax_scale_ = 1;
  std::vector<std::uint16_t> embedding_;
  std::vector<Layer> layers_;
  std::vector<float> final_norm_;
  Matrix lm_head_;
  std::vector<std::int32_t> ids_;
  std::vector<float> rope_table_;
  std::vector<float> logits_;
  double weights_bytes_ = 0, kv_bytes_ = 0;
  std::vector<HostOpTime> ops_;
  std::map<std::string, std::size_t> op_index_;
  QuantActs xq_;
  std::vector<RoutedScratch> ffn_scratch_;  // [0]: routed experts, [1]: dense or shared
  void record(const char* name, const k::Work& w, double ms);
  // Activations of one step, sized on first use.
  std::vector<float> x_, xn_, qa_, qan_, q_, kva_, lat_, kr_, qn_, qr_, attn_, y_, ffn_out_, iq_, ik_, ikn_, iw_, scores_,
      head_w_, router_logits_, router_w_;
  std::vector<std::uint8_t> q_codes_;
  std::vector<std::int32_t> positions_, router_ids_;
  std::vector<std::int64_t> token_pos_;
  std::vector<std::vector<float>> mla_scratch_;
  std::vector<std::vector<std::uint32_t>> topk_scratch_;
  std::vector<double> mla_ref_scratch_;
  std::vector<k::MlaSequence> seqs_;
};

void DecodeLoop::check_memory() const {
  const double bpp = fmt_ == Fmt::kBf16 ? 2.0 : fmt_ == Fmt::kQ8_0 ? 34.0 / 32 : fmt_ == Fmt::kQ4_K ? 144.0 / 256 : 1.0;
  const ParamCounts p = count_params(m_, tensor_inventory(m_));
  // The embedding stays bf16 (2 bytes); everything else in the chosen format (an estimate within
  // the bf16 kv_b halves and norms, a few percent).
  const double emb = static_cast<double>(m_.vocab_size * m_.hidden_dim);
  const double weights = (static_cast<double>(p.main) - emb) * bpp + 2.0 * emb;
  const double idx = m_.dsa ? static_cast<double>(m_.index_head_dim + 4) : 0.0;
  const double kv = static_cast<double>(m_.num_layers * opt_.batch * (opt_.context + 1)) * (static_cast<double>(token_bytes_) + idx);
  const std::optional<std::int64_t> phys = hwdb::host_info().physical_memory_bytes;
  if (!phys) return;
  const double limit = opt_.max_memory_fraction * static_cast<double>(*phys);
  if (weights + kv > limit) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%.1f GB of weights and %.1f GB of cache exceed %.0f%% of this host's %.1f GB", weights / 1e9,
                  kv / 1e9, 100 * opt_.max_memory_fraction, static_cast<double>(*phys) / 1e9);
    throw InputError("bench decode: " + m_.id + " with " + std::to_string(m_.num_layers) + " layers and " +
                     std::to_string(m_.num_experts) + " experts at --quant " + opt_.quant + ": " + buf +
                     " (hint: scale it, e.g. --layers 4 --experts 16)");
  }
}

void DecodeLoop::fill_caches(Layer& L, Rng& rng) {
  // Latents and rope keys of unit scale as the kv_a projection's normalized output would be; the
  // new token's row (index `context`) is written by each step.
  const std::int64_t rows = opt_.context + 1, Lr = m_.kv_lora_rank, R = m_.rope_head_dim;
  constexpr std::int64_t kChunk = 256;
  std::vector<float> lat(to_z(kChunk * Lr)), rope(to_z(kChunk * R)), keys(to_z(kChunk * 128));
  for (std::int64_t b = 0; b < opt_.batch; ++b) {
    std::vector<std::byte> cache(to_z(rows * token_bytes_));
    for (std::int64_t r0 = 0; r0 < rows; r0 += kChunk) {
      const std::int64_t n = std::min(kChunk, rows - r0);
      for (auto& v : lat) v = rng.uniform();
      for (auto& v : rope) v = rng.uniform();
      k::quantize_mla_cache_ref(cache_, Lr, R, std::span<const float>(lat).first(to_z(n * Lr)), std::span<const float>(rope).first(to_z(n * R)),
                                std::span<std::byte>(cache).subspan(to_z(r0 * token_bytes_), to_z(n * token_bytes_)));
    }
    kv_bytes_ += static_cast<double>(cache.size());
    L.kv.push_back(std::move(cache));
    if (m_.dsa) {
      std::vector<std::uint8_t> codes(to_z(rows * 128));
      std::vector<float> scales(to_z(rows));
      for (std::int64_t r0 = 0; r0 < rows; r0 += kChunk) {
        const std::int64_t n = std::min(kChunk, rows - r0);
        for (auto& v : keys) v = rng.uniform();
        k::quantize_index_rows(std::span<const float>(keys).first(to_z(n * 128)), k::IndexScaleFormat::kUe8m0,
                               std::span<std::uint8_t>(codes).subspan(to_z(r0 * 128), to_z(n * 128)),
                               std::span<float>(scales).subspan(to_z(r0), to_z(n)));
      }
      kv_bytes_ += static_cast<double>(codes.size() + 4 * scales.size());
      L.idx_keys.push_back(std::move(codes));
      L.idx_scales.push_back(std::move(scales));
    }
  }
}

template <class Body>
void DecodeLoop::op(const char* name, const k::Work& w, ThreadPool* pool, Body&& body) {
  const auto t0 = std::chrono::steady_clock::now();
  if (pool) {
    pool->run(body);
  } else {
    body(0, 1);
  }
  record(name, w, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
}

void DecodeLoop::record(const char* name, const k::Work& w, double ms) {
  auto it = op_index_.find(name);
  if (it == op_index_.end()) {
    it = op_index_.emplace(name, ops_.size()).first;
    ops_.push_back({name, 0, 0, 0, 0});
  }
  HostOpTime& t = ops_[it->second];
  t.ms += ms;
  t.calls += 1;
  t.bytes += w.bytes;
  t.flops += w.flops;
}

std::pair<std::int64_t, std::int64_t> part(std::int64_t n, int i, int parts) { return {n * i / parts, n * (i + 1) / parts}; }

void DecodeLoop::linear(const char* name, const Matrix& m, std::span<const float> x, std::span<float> y, ThreadPool* pool) {
  const std::int64_t B = opt_.batch;
  const auto t0 = std::chrono::steady_clock::now();
  if (pool && (m.fmt == Fmt::kQ8_0 || m.fmt == Fmt::kQ4_K)) xq_.prepare(x, B, m.cols);  // timed with the op (below)
  if (pool && m.fmt == Fmt::kBf16 && B >= kBf16DotMinBatch) xq_.pack(x, B, m.cols);
  const double prep_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  op(name, matvec_work(m, B), pool, [&](int i, int n) {
    if (!pool) {
      matvec_ref(m, B, x, y);
      return;
    }
    const auto [lo, hi] = part(m.rows, i, n);
    matvec_fast(m, B, x, xq_, y, lo, hi);
  });
  ops_[op_index_.at(name)].ms += prep_ms;
}

void DecodeLoop::norm(const char* name, std::span<const float> w, std::int64_t dim, std::span<const float> x, std::span<float> y,
                      ThreadPool* pool) {
  const std::int64_t rows = to_i(x.size()) / dim;
  const k::RmsNormShape shape{rows, dim, k::NormWeightType::kFp32};
  const float eps = static_cast<float>(*m_.rms_norm_eps);
  op(name, k::work_of(shape), pool, [&](int i, int n) {
    const auto [lo, hi] = part(rows, i, n);
    if (pool) k::rms_norm_fast(shape, x, std::as_bytes(w), eps, y, lo, hi);
    else k::rms_norm_ref(shape, x, std::as_bytes(w), eps, y, lo, hi);
  });
}

// out += the FFN of x: routed experts (the layer's router ids/weights in ids_w_) or one FFN
// (dense or shared) as a single expert with weight 1.
struct RoutedScratch {
  std::vector<std::int64_t> offsets;
  std::vector<std::int32_t> pair_tokens, active, ids;
  std::vector<float> pair_weights, weights, x_routed, h, xq_scales, hq_scales;
  std::vector<std::int8_t> xq, hq;
  std::vector<std::int32_t> xq_sums, hq_sums;
  std::vector<double> ref;
};

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

template <class T>
void ensure(std::vector<T>& v, std::int64_t n) {
  if (to_i(v.size()) != n) v.assign(to_z(n), T{});
}

void DecodeLoop::ffn(const char* name, const Layer& L, bool routed, std::span<const float> x, std::span<float> out, ThreadPool* pool) {
  const std::int64_t B = opt_.batch, D = m_.hidden_dim;
  RoutedScratch& rs = ffn_scratch_[routed ? 0 : 1];
  k::ExpertWeights single{};
  std::span<const k::ExpertWeights> experts;
  std::int64_t ffn_dim = 0, num_experts = 1, top_k = 1;
  if (routed) {
    ffn_dim = m_.moe_ffn_dim;
    num_experts = m_.num_experts;
    top_k = m_.top_k;
    experts = L.expert_views;
    rs.ids = router_ids_;
    rs.weights = router_w_;
  } else {
    const Ffn& f = L.moe ? L.shared : L.dense;
    ffn_dim = f.gate.rows;
    single = f.view();
    experts = std::span<const k::ExpertWeights>(&single, 1);
    rs.ids.assign(to_z(B), 0);
    rs.weights.assign(to_z(B), 1.0f);
  }
  const k::ExpertFfnShape shape{B, top_k, num_experts, D, ffn_dim, fmt_};
  const auto t0 = std::chrono::steady_clock::now();
  if (!pool) {
    ensure(rs.ref, k::expert_ffn_ref_scratch_size(shape));
    k::expert_ffn_ref(shape, experts, rs.ids, rs.weights, x, out, rs.ref);
    std::vector<bool> used(to_z(num_experts), false);
    std::int64_t active = 0;
    for (const auto id : rs.ids) active += used[to_z(id)] ? 0 : (used[to_z(id)] = true, 1);
    record(name, k::work_of(k::ExpertFfnWorkShape{shape, active}), ms_since(t0));
    return;
  }
  const std::int64_t pairs = B * top_k;
  ensure(rs.offsets, num_experts + 1);
  ensure(rs.pair_tokens, pairs);
  ensure(rs.pair_weights, pairs);
  ensure(rs.active, num_experts);
  const k::ExpertFfnScratchSizes sz = k::expert_ffn_scratch_sizes(shape);
  ensure(rs.x_routed, sz.x_routed);
  ensure(rs.xq, sz.xq);
  ensure(rs.xq_scales, sz.xq_groups);
  ensure(rs.xq_sums, sz.xq_groups);
  ensure(rs.h, sz.h);
  ensure(rs.hq, sz.hq);
  ensure(rs.hq_scales, sz.hq_groups);
  ensure(rs.hq_sums, sz.hq_groups);
  k::RoutingPlan plan{rs.offsets, rs.pair_tokens, rs.pair_weights, rs.active, 0};
  const k::ExpertFfnScratch scratch{rs.x_routed, rs.xq, rs.xq_scales, rs.xq_sums, rs.h, rs.hq, rs.hq_scales, rs.hq_sums};
  k::build_routing_plan(shape, rs.ids, rs.weights, plan);
  const std::int64_t g_units = k::expert_ffn_gather_units(shape), u_units = k::expert_ffn_gate_up_units(shape, plan),
                     d_units = k::expert_ffn_down_units(shape);
  pool->run([&](int i, int n) {
    const auto [lo, hi] = part(g_units, i, n);
    k::expert_ffn_gather(shape, plan, x, scratch, lo, hi);
  });
  pool->run([&](int i, int n) {
    const auto [lo, hi] = part(u_units, i, n);
    k::expert_ffn_gate_up(shape, experts, plan, scratch, lo, hi);
  });
  pool->run([&](int i, int n) {
    const auto [lo, hi] = part(d_units, i, n);
    k::expert_ffn_down(shape, experts, plan, scratch, out, lo, hi);
  });
  record(name, k::work_of(k::ExpertFfnWorkShape{shape, plan.num_active_experts}), ms_since(t0));
}

void DecodeLoop::step(ThreadPool* pool) {
  const std::int64_t B = opt_.batch, D = m_.hidden_dim, H = m_.num_heads, Lr = m_.kv_lora_rank, R = m_.rope_head_dim;
  const std::int64_t Dn = m_.nope_head_dim, Dv = m_.v_head_dim, qk = Dn + R, ctx = opt_.context + 1;
  const int threads = pool ? pool->size() : 1;
  ffn_scratch_.resize(2);
  ensure(x_, B * D);
  ensure(xn_, B * D);
  ensure(y_, B * D);
  ensure(ffn_out_, B * D);
  ensure(qa_, B * m_.q_lora_rank);
  ensure(qan_, B * m_.q_lora_rank);
  ensure(q_, B * H * qk);
  ensure(kva_, B * (Lr + R));
  ensure(lat_, B * Lr);
  ensure(kr_, B * R);
  ensure(qn_, B * H * Dn);
  ensure(qr_, B * H * R);
  ensure(attn_, B * H * Dv);
  ensure(logits_, B * m_.vocab_size);
  token_pos_.assign(to_z(B), opt_.context);
  if (pool) {
    mla_scratch_.resize(to_z(threads));
    for (auto& s : mla_scratch_) ensure(s, k::mla_fast_scratch_floats(dims_));
  } else {
    ensure(mla_ref_scratch_, k::mla_ref_scratch_doubles(dims_));
  }

  const k::EmbeddingShape emb{B, m_.vocab_size, D};
  op("embedding", k::work_of(emb), pool, [&](int i, int n) {
    const auto [lo, hi] = part(B, i, n);
    if (pool) k::embedding_lookup_fast(emb, embedding_, ids_, x_, lo, hi);
    else k::embedding_lookup_ref(emb, embedding_, ids_, x_, lo, hi);
  });

  for (std::size_t li = 0; li < layers_.size(); ++li) {
    Layer& L = layers_[li];
    norm("attn_norm", L.attn_norm, D, x_, xn_, pool);
    if (m_.q_lora_rank > 0) {
      linear("q_a_proj", L.q_a, xn_, qa_, pool);
      norm("q_a_norm", L.q_norm, m_.q_lora_rank, qa_, qan_, pool);
      linear("q_b_proj", L.q_b, qan_, q_, pool);
    } else {
      linear("q_proj", L.q_b, xn_, q_, pool);
    }
    linear("kv_a_proj", L.kv_a, xn_, kva_, pool);
    // The latent half of kv_a's output is normalized; the rope half is rotated (model.py's MLA).
    for (std::int64_t b = 0; b < B; ++b) {
      std::copy_n(kva_.begin() + b * (Lr + R), Lr, lat_.begin() + b * Lr);
      std::copy_n(kva_.begin() + b * (Lr + R) + Lr, R, kr_.begin() + b * R);
    }
    norm("kv_a_norm", L.kv_norm, Lr, lat_, lat_, pool);  // in place (rms_norm allows it)
    const k::RopeShape rq{B, H, qk, Dn, R, ctx, k::RopeLayout::kInterleaved};
    const k::RopeShape rk{B, 1, R, 0, R, ctx, k::RopeLayout::kInterleaved};
    k::Work rw = k::work_of(rq);
    rw.flops += k::work_of(rk).flops;
    rw.bytes += k::work_of(rk).bytes;
    op("rope", rw, pool, [&](int i, int n) {
      const auto [lo, hi] = part(B, i, n);
      if (pool) {
        k::rope_apply_fast(rq, rope_table_, token_pos_, q_, lo, hi);
        k::rope_apply_fast(rk, rope_table_, token_pos_, kr_, lo, hi);
      } else {
        k::rope_apply_ref(rq, rope_table_, token_pos_, q_, lo, hi);
        k::rope_apply_ref(rk, rope_table_, token_pos_, kr_, lo, hi);
      }
    });
    op("kv_cache_write", k::Work{0, static_cast<double>(B * (4 * (Lr + R) + token_bytes_))}, pool, [&](int i, int n) {
      const auto [lo, hi] = part(B, i, n);
      for (std::int64_t b = lo; b < hi; ++b)
        k::quantize_mla_cache_ref(cache_, Lr, R, std::span<const float>(lat_).subspan(to_z(b * Lr), to_z(Lr)),
                                  std::span<const float>(kr_).subspan(to_z(b * R), to_z(R)),
                                  std::span<std::byte>(L.kv[to_z(b)]).subspan(to_z(opt_.context * token_bytes_), to_z(token_bytes_)));
    });
    const bool sparse = m_.dsa && ctx > m_.index_top_k;
    if (m_.dsa) {
      const std::int64_t IH = m_.index_num_heads, ID = m_.index_head_dim;
      ensure(iq_, B * IH * ID);
      ensure(ik_, B * ID);
      ensure(ikn_, B * ID);
      ensure(iw_, B * IH);
      ensure(q_codes_, B * IH * ID);
      ensure(head_w_, B * IH);
      ensure(scores_, B * ctx);
      linear("indexer_q_proj", L.idx_wq, qan_, iq_, pool);
      linear("indexer_k_proj", L.idx_wk, xn_, ik_, pool);
      // DeepSeek's indexer normalizes its key with a LayerNorm and applies a Hadamard rotation to
      // q and k; an RMSNorm stands in for the former and the latter is left out (128-wide
      // vectors: a few hundred operations per token, nothing next to the scan).
      norm("indexer_k_norm", L.idx_k_norm, ID, ik_, ikn_, pool);
      linear("indexer_weights_proj", L.idx_wproj, xn_, iw_, pool);
      const k::RopeShape iqr{B, IH, ID, 0, R, ctx, k::RopeLayout::kHalfSplit};  // rope first, half-split (V3.2-Exp 8631a81)
      const k::RopeShape ikr{B, 1, ID, 0, R, ctx, k::RopeLayout::kHalfSplit};
      op("rope", k::work_of(iqr), pool, [&](int i, int n) {
        const auto [lo, hi] = part(B, i, n);
        if (pool) {
          k::rope_apply_fast(iqr, rope_table_, token_pos_, iq_, lo, hi);
          k::rope_apply_fast(ikr, rope_table_, token_pos_, ikn_, lo, hi);
        } else {
          k::rope_apply_ref(iqr, rope_table_, token_pos_, iq_, lo, hi);
          k::rope_apply_ref(ikr, rope_table_, token_pos_, ikn_, lo, hi);
        }
      });
      op("indexer_quantize", k::Work{0, static_cast<double>(B * (IH * ID * 5 + ID * 5))}, pool, [&](int i, int n) {
        const auto [lo, hi] = part(B, i, n);
        for (std::int64_t b = lo; b < hi; ++b) {
          k::quantize_index_query(std::span<const float>(iq_).subspan(to_z(b * IH * ID), to_z(IH * ID)),
                                  std::span<const float>(iw_).subspan(to_z(b * IH), to_z(IH)), k::IndexScaleFormat::kUe8m0,
                                  std::span<std::uint8_t>(q_codes_).subspan(to_z(b * IH * ID), to_z(IH * ID)),
                                  std::span<float>(head_w_).subspan(to_z(b * IH), to_z(IH)));
          k::quantize_index_rows(std::span<const float>(ikn_).subspan(to_z(b * ID), to_z(ID)), k::IndexScaleFormat::kUe8m0,
                                 std::span<std::uint8_t>(L.idx_keys[to_z(b)]).subspan(to_z(opt_.context * ID), to_z(ID)),
                                 std::span<float>(L.idx_scales[to_z(b)]).subspan(to_z(opt_.context), 1));
        }
      });
      const k::IndexerShape ishape{1, IH, ctx};
      k::Work iw = k::work_of(ishape);
      iw.flops *= static_cast<double>(B);
      iw.bytes *= static_cast<double>(B);
      op("dsa_indexer", iw, pool, [&](int i, int n) {
        const auto [lo, hi] = part(ctx, i, n);
        for (std::int64_t b = 0; b < B; ++b) {
          const auto qc = std::span<const std::uint8_t>(q_codes_).subspan(to_z(b * IH * ID), to_z(IH * ID));
          const auto hw = std::span<const float>(head_w_).subspan(to_z(b * IH), to_z(IH));
          const auto sc = std::span<float>(scores_).subspan(to_z(b * ctx), to_z(ctx));
          if (pool) k::dsa_index_fast(ishape, qc, hw, L.idx_keys[to_z(b)], L.idx_scales[to_z(b)], sc, lo, hi);
          else k::dsa_index_ref(ishape, qc, hw, L.idx_keys[to_z(b)], L.idx_scales[to_z(b)], sc, lo, hi);
        }
      });
      if (sparse) {
        const std::int64_t K = m_.index_top_k;
        ensure(positions_, B * K);
        const k::TopkShape ts{ctx, K};
        topk_scratch_.resize(to_z(threads));
        for (auto& s : topk_scratch_) ensure(s, k::dsa_topk_scratch_size(ts));
        k::Work tw = k::work_of(ts);
        tw.flops *= static_cast<double>(B);
        tw.bytes *= static_cast<double>(B);
        op("dsa_topk", tw, pool, [&](int i, int n) {
          const auto [lo, hi] = part(B, i, n);
          for (std::int64_t b = lo; b < hi; ++b) {
            const auto sc = std::span<const float>(scores_).subspan(to_z(b * ctx), to_z(ctx));
            const auto pos = std::span<std::int32_t>(positions_).subspan(to_z(b * K), to_z(K));
            if (pool) k::dsa_topk_fast(sc, K, pos, topk_scratch_[to_z(i)]);
            else k::dsa_topk_ref(sc, K, pos, topk_scratch_[to_z(i)]);
          }
        });
        chosen_.resize(layers_.size());
        if (!forced_.empty()) {
          // Comparison runs: count the positions this step chose that the other step chose too,
          // then attend the other step's choice (so the attention math is compared on one set).
          const auto& other = forced_[li];
          for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t j = 0; j < K; ++j)
              same_positions_ += std::binary_search(other.begin() + b * K, other.begin() + (b + 1) * K, positions_[to_z(b * K + j)]) ? 1 : 0;
          total_positions_ += B * K;
          positions_ = other;
        }
        chosen_[li] = positions_;
      }
    }
    // Absorbed MLA over the cache (all positions, or the indexer's top-k).
    const auto t_mla = std::chrono::steady_clock::now();
    for (std::int64_t t = 0; t < B * H; ++t) {
      std::copy_n(q_.begin() + t * qk, Dn, qn_.begin() + t * Dn);
      std::copy_n(q_.begin() + t * qk + Dn, R, qr_.begin() + t * R);
    }
    seqs_.clear();
    std::vector<k::MlaSequence>& seqs = seqs_;
    for (std::int64_t b = 0; b < B; ++b)
      seqs.push_back({L.kv[to_z(b)], ctx,
                      sparse ? std::span<const std::int32_t>(positions_).subspan(to_z(b * m_.index_top_k), to_z(m_.index_top_k))
                             : std::span<const std::int32_t>()});
    const k::MlaLayer layer{dims_, cache_, softmax_scale_, L.w_uk, L.w_uv};
    const std::int64_t units = B * k::mla_head_units(dims_);
    const double split_ms = ms_since(t_mla);
    op("mla_decode", k::work_of(k::mla_decode_shape(dims_, cache_, seqs)), pool, [&](int i, int n) {
      const auto [lo, hi] = part(units, i, n);
      if (pool) k::mla_decode_fast(layer, qn_, qr_, seqs, attn_, lo, hi, mla_scratch_[to_z(i)]);
      else k::mla_decode_ref(layer, qn_, qr_, seqs, attn_, lo, hi, mla_ref_scratch_);
    });
    ops_[op_index_.at("mla_decode")].ms += split_ms;
    linear("o_proj", L.o, attn_, y_, pool);
    const k::Work res{static_cast<double>(B * D), static_cast<double>(12 * B * D)};
    op("residual", res, pool, [&](int i, int n) {
      const auto [lo, hi] = part(B * D, i, n);
      for (std::int64_t j = lo; j < hi; ++j) x_[to_z(j)] += y_[to_z(j)];
    });
    norm("ffn_norm", L.ffn_norm, D, x_, xn_, pool);
    std::fill(ffn_out_.begin(), ffn_out_.end(), 0.0f);
    if (L.moe) {
      const std::int64_t E = m_.num_experts, K = m_.top_k;
      ensure(router_logits_, B * E);
      ensure(router_ids_, B * K);
      ensure(router_w_, B * K);
      linear("router_gate", L.router, xn_, router_logits_, pool);
      const k::RouterShape rs{B, E, m_.router->num_groups, m_.router->num_groups_kept, K};
      const k::RouterWeighting weighting{m_.router->normalize, static_cast<float>(m_.router->routed_scaling_factor)};
      op("router", k::work_of(rs, weighting), pool, [&](int i, int n) {
        const auto [lo, hi] = part(B, i, n);
        if (pool) k::router_fast(rs, weighting, router_logits_, L.router_bias, router_ids_, router_w_, lo, hi);
        else k::router_ref(rs, weighting, router_logits_, L.router_bias, router_ids_, router_w_, lo, hi);
      });
      if (m_.num_shared_experts > 0) ffn("shared_expert", L, false, xn_, ffn_out_, pool);
      ffn("expert_ffn", L, true, xn_, ffn_out_, pool);
    } else {
      ffn("dense_ffn", L, false, xn_, ffn_out_, pool);
    }
    op("residual", res, pool, [&](int i, int n) {
      const auto [lo, hi] = part(B * D, i, n);
      for (std::int64_t j = lo; j < hi; ++j) x_[to_z(j)] += ffn_out_[to_z(j)];
    });
  }
  norm("final_norm", final_norm_, D, x_, xn_, pool);
  linear("lm_head", lm_head_, xn_, logits_, pool);
}

std::unique_ptr<DecodeLoop> built_loop(const ModelSpec& model, const HostDecodeOptions& opt) {
  auto loop = std::make_unique<DecodeLoop>(scale_for_host(model, opt.layers, opt.experts), opt);
  loop->build();
  return loop;
}

}  // namespace

HostDecodeResult run_host_decode(const ModelSpec& model, const HostDecodeOptions& opt, ThreadPool& pool) {
  HostDecodeResult r;
  r.model = scale_for_host(model, opt.layers, opt.experts);
  r.options = opt;
  r.threads = pool.size();
  auto loop = built_loop(model, opt);
  loop->step(&pool);  // warm-up: first touch of the activations, caches in their steady state
  std::vector<std::vector<HostOpTime>> per_step;
  for (int s = 0; s < opt.steps; ++s) {
    loop->reset_ops();
    const auto t0 = std::chrono::steady_clock::now();
    loop->step(&pool);
    r.step_ms.push_back(ms_since(t0));
    per_step.push_back(loop->ops());
  }
  std::vector<double> sorted = r.step_ms;
  std::sort(sorted.begin(), sorted.end());
  r.step_ms_median = sorted[sorted.size() / 2];
  if (sorted.size() % 2 == 0) r.step_ms_median = 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);
  r.decode_tok_s = static_cast<double>(opt.batch) / (r.step_ms_median / 1e3);
  // Per op: the median over the steps of its time per step.
  r.ops = per_step.front();
  for (std::size_t i = 0; i < r.ops.size(); ++i) {
    std::vector<double> v;
    for (const auto& st : per_step) v.push_back(st[i].ms);
    std::sort(v.begin(), v.end());
    r.ops[i].ms = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
    r.bytes_per_step += r.ops[i].bytes;
    r.flops_per_step += r.ops[i].flops;
  }
  r.weights_bytes = loop->weights_bytes();
  r.kv_cache_bytes = loop->kv_bytes();
  if (r.model.dsa && opt.context + 1 <= r.model.index_top_k)
    r.notes.push_back("context + 1 <= index_topk: DSA attends every position (no top-k selection at this length)");
  r.notes.push_back("weights are seeded random values in the chosen format; the router's choices are therefore random too");
  return r;
}

DecodeLogits host_decode_logits(const ModelSpec& model, const HostDecodeOptions& opt, ThreadPool& pool) {
  DecodeLogits out;
  std::vector<std::vector<std::int32_t>> ref_positions;
  {
    auto loop = built_loop(model, opt);
    loop->step(nullptr);
    out.reference = loop->logits();
    ref_positions = loop->chosen_;
  }
  auto loop = built_loop(model, opt);
  loop->forced_ = ref_positions;
  loop->step(&pool);
  out.fast = loop->logits();
  out.same_positions = loop->same_positions_;
  out.total_positions = loop->total_positions_;
  return out;
}

nlohmann::json host_decode_to_json(const HostDecodeResult& r) {
  nlohmann::json ops = nlohmann::json::array();
  double total = 0;
  for (const auto& o : r.ops) total += o.ms;
  for (const auto& o : r.ops)
    ops.push_back({{"op", o.op}, {"ms", o.ms}, {"share", total > 0 ? o.ms / total : 0.0}, {"calls", o.calls}, {"bytes", o.bytes},
                   {"flops", o.flops}, {"gbps", o.ms > 0 ? o.bytes / (o.ms * 1e6) : 0.0}});
  return {{"model", r.model.id},
          {"layers", r.model.num_layers},
          {"experts", r.model.num_experts},
          {"quant", r.options.quant},
          {"kv_cache", r.options.kv_cache},
          {"batch", r.options.batch},
          {"context", r.options.context},
          {"threads", r.threads},
          {"steps", r.step_ms.size()},
          {"decode_tok_s", r.decode_tok_s},
          {"step_ms", r.step_ms_median},
          {"step_ms_each", r.step_ms},
          {"bytes_per_step", r.bytes_per_step},
          {"flops_per_step", r.flops_per_step},
          {"weights_bytes", r.weights_bytes},
          {"kv_cache_bytes", r.kv_cache_bytes},
          {"ops", ops},
          {"notes", r.notes}};
}

}  // namespace deepfit::planner
