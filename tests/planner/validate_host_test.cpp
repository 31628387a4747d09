// Host validation (planner/src/validate_host.cpp): the planner's storage of the loop's scheme
// against what the loop allocates, the terms of a point by hand, the leave-one-out fit recovering
// known efficiencies, and bad points. The tiny DeepSeek-V3.2-structured fixture keeps it fast.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "hwdb/topology.h"
#include "kernels/error.h"
#include "planner/catalog.h"
#include "planner/host_decode.h"
#include "planner/perf_model.h"
#include "planner/validate.h"

namespace deepfit::planner {
namespace {

using ::testing::HasSubstr;

const Catalog& cat() {
  static const Catalog c = Catalog::load(data_root());
  return c;
}

const std::string kTiny = std::string(DEEPFIT_SOURCE_DIR) + "/tests/fixtures/models/tiny-deepseek-v32.json";

HostValidationOptions tiny_options(const std::string& quant = "q4_k") {
  HostValidationOptions o;
  o.model = kTiny;
  o.layers = 0;   // all 3
  o.experts = 0;  // all 8
  o.quant = quant;
  return o;
}

// A CPU record with round figures: 40 GB/s, int8 1 TFLOP/s, bf16 0.5, fp32 0.25.
hwdb::Device fake_host() {
  hwdb::Device d;
  d.id = "host";
  d.kind = hwdb::DeviceKind::kCpu;
  d.memory_bytes = 24LL << 30;
  d.memory_bandwidth_gbps = 40;
  d.peak_tflops.int8 = 1.0;
  d.peak_tflops.bf16 = 0.5;
  d.peak_tflops.fp32 = 0.25;
  return d;
}

// Two independent countings of the same weights: the planner's tensor inventory stored in the
// loop's scheme, and the bytes the loop allocates (host_decode.cpp adds up each matrix's buffer).
// Every row of the tiny model is a whole number of 256-weight Q4_K blocks, so they agree exactly.
TEST(HostValidation, SchemeStoresWhatTheLoopAllocates) {
  hwdb::Topology topo = hwdb::Topology::host();
  ThreadPool pool(topo, 1);
  for (const std::string q : {"bf16", "q8_0", "q4_k", "fp8"}) {
    const ModelSpec m = cat().model(kTiny);
    const StoredModel st = store_model(m, host_loop_scheme(q), cat().quants);
    double matrices = 0;
    for (const auto& t : st.tensors)
      if (t.tensor.is_matrix()) matrices += static_cast<double>(t.bytes);
    HostDecodeOptions o;
    o.quant = q;
    o.context = 8;
    o.steps = 1;
    const HostDecodeResult r = run_host_decode(m, o, pool);
    EXPECT_DOUBLE_EQ(matrices, r.weights_bytes) << q;
  }
}

// Batch 1 at context 8 (below the indexer's top-16: every position attended), by hand from the
// fixture: hidden 256, 4 heads, q_lora 256, kv_lora 128, nope/rope/v 64, indexer 4 x 128, 3 layers
// (1 dense of 512, then 2 MoE of 8 experts of 256, 2 per token, one shared), vocab 300.
TEST(HostValidation, TermsOfAPointByHand) {
  const double q4k = 144.0 / 256;  // bytes per weight
  const double attn = 256 * 256 + 4 * 128 * 256 + (128 + 64) * 256 + 4 * 64 * 256 + 4 * 128 * 256 + 128 * 256;  // q_a q_b kv_a o idx_q idx_k
  const double bf16_attn = 2.0 * (4 * 128 * 128 + 4 * 256);  // kv_b and the indexer's head weights
  const double dense = 3.0 * 512 * 256, expert = 3.0 * 256 * 256;
  // Norms and the router bias are read too, in f32: per layer attn, ffn, q_a (256 each), kv_a
  // (128) and the indexer's key LayerNorm (weight and bias, 128 each); the final norm; 8 biases.
  const double vectors = 4.0 * (3 * (3 * 256 + 128 + 2 * 128) + 256 + 2 * 8);
  const double weights = 3 * (attn * q4k + bf16_attn) + dense * q4k + 2 * (2 * 8 * 256 + (2 + 1) * expert * q4k) + 300 * 256 * q4k +
                         vectors;
  // ^ per MoE layer: the bf16 router (8 x 256) and the two chosen experts plus the shared one.
  const double flops = 2.0 * (3 * (attn + 4 * 128 * 128 + 4 * 256) + dense + 2 * (8 * 256 + 3 * expert) + 300 * 256);
  // Attention: the bf16 latent cache (8 positions x 192 values x 2 bytes) and the indexer's keys
  // (8 x (128 fp8 + a 4-byte scale)) per layer at 40 GB/s: 0.31 us, longer than its FLOPs, absorbed
  // MLA over the 8 positions (2 x 4 heads x 8 x (2 x 128 + 64)) plus the indexer's scores
  // (2 x 8 x 4 x 128), on the 0.5 TFLOP/s bf16 peak: 0.17 us.
  const double kv = 3 * 8 * (192 * 2 + 128 + 4.0);
  const double attn_flops = 3 * (2.0 * 4 * 8 * (2 * 128 + 64) + 2.0 * 8 * 4 * 128);
  ASSERT_GT(kv / 40e9, attn_flops / 0.5e12);
  const auto t = host_point_terms(cat(), fake_host(), tiny_options(), HostPoint{1, 8});
  EXPECT_NEAR(t[0], weights / 40e9, 1e-15);
  EXPECT_NEAR(t[1], flops / 1e12, 1e-15);
  EXPECT_NEAR(t[2], kv / 40e9, 1e-15);
}

// Steps made of known efficiencies: every point predicted from the others exactly, and the fit on
// all points returns the efficiencies.
TEST(HostValidation, LeaveOneOutRecoversKnownEfficiencies) {
  const std::array<double, 3> x = {1.25, 3.0, 1.5};
  const std::vector<HostPoint> points = {{1, 8}, {1, 200}, {4, 64}, {8, 8}, {16, 100}, {4, 1000}, {2, 500}};
  std::vector<HostMeasurement> ms;
  for (const auto& p : points) {
    const auto t = host_point_terms(cat(), fake_host(), tiny_options(), p);
    ms.push_back({p, x[0] * t[0] + x[1] * t[1] + x[2] * t[2], 30, ""});
  }
  ms.push_back({{64, 4000}, 0, 0, "too large for this host"});
  const Validation v = validate_host_measurements(cat(), fake_host(), tiny_options(), ms);
  ASSERT_EQ(v.rows.size(), points.size());
  for (const auto& r : v.rows) EXPECT_NEAR(r.error_pct, 0, 1e-6) << r.id;
  EXPECT_EQ(v.rows[2].id, "host:batch4:ctx64");
  EXPECT_NEAR(v.rows[2].measured, 4 / ms[2].step_s, 1e-9);
  ASSERT_EQ(v.skipped.size(), 1u);
  EXPECT_EQ(v.skipped[0].id, "host:batch64:ctx4000");
  ASSERT_EQ(v.fitted.size(), 1u);
  const auto& g = v.fitted[0].second;
  EXPECT_NEAR(g.roofline_factor, x[0], 1e-6);
  EXPECT_NEAR(*g.compute_factor, x[1], 1e-6);
  EXPECT_NEAR(*g.attention_factor, x[2], 1e-6);
  EXPECT_EQ(g.per_layer_overhead_s, 0);
  // With one fewer point than the fit needs, nothing is predicted.
  ms.erase(ms.begin(), ms.begin() + 3);
  EXPECT_THROW(validate_host_measurements(cat(), fake_host(), tiny_options(), ms), InputError);
}

TEST(HostValidation, PointsParse) {
  const auto p = parse_host_points("1x4096,8x16K,3x7");
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[1].batch, 8);
  EXPECT_EQ(p[1].context, 16384);
  EXPECT_EQ(p[2].context, 7);
  for (const char* bad : {"1x", "x4", "1x0", "1y4", "1x4,,2x3", "0x8", "5000x8", "1x-3", "1x4.5"}) {
    try {
      parse_host_points(bad);
      ADD_FAILURE() << bad;
    } catch (const InputError& e) {
      EXPECT_THAT(e.what(), HasSubstr("--points")) << bad;
    }
  }
  EXPECT_THROW(host_loop_scheme("q5_k"), InputError);
}

}  // namespace
}  // namespace deepfit::planner
