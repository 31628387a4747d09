// Kernel suite summary (bench/regress/src/summary.cpp): medians, spread and efficiencies against
// the triad and probes of the same file, on a hand-written Google Benchmark document.
#include "regress/summary.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace deepfit::regress {
namespace {

nlohmann::json row(const std::string& name, double real_us, double bytes_s, double flops_s, double threads) {
  return {{"name", name}, {"run_name", name}, {"run_type", "iteration"}, {"real_time", real_us}, {"cpu_time", real_us},
          {"time_unit", "us"}, {"iterations", 10}, {"bytes_per_second", bytes_s}, {"flops", flops_s}, {"threads", threads}};
}

BenchSummary summary_of(const nlohmann::json& benchmarks) {
  return summarize(parse_bench_json({{"context", nlohmann::json::object()}, {"benchmarks", benchmarks}}, "test.json"));
}

TEST(BenchSummary, RatesAgainstTheSameRunsTriadAndProbe) {
  nlohmann::json b = nlohmann::json::array();
  b.push_back(row("BM_stream_triad/fp64/threads:1", 100, 20e9, 1e9, 1));
  b.push_back(row("BM_peak_dot/int8/threads:1", 100, 0, 400e9, 1));
  // Three repetitions of a Q4_K GEMV: median 18e9 B/s and 72e9 op/s.
  b.push_back(row("BM_expert_gemv/q4_k/batch:1/threads:1", 110, 17e9, 68e9, 1));
  b.push_back(row("BM_expert_gemv/q4_k/batch:1/threads:1", 100, 18e9, 72e9, 1));
  b.push_back(row("BM_expert_gemv/q4_k/batch:1/threads:1", 90, 19e9, 76e9, 1));
  const BenchSummary s = summary_of(b);
  ASSERT_EQ(s.rows.size(), 3u);
  const BenchRow& g = s.rows[2];
  EXPECT_EQ(g.op, "expert_gemv");
  EXPECT_EQ(g.format, "q4_k");
  EXPECT_EQ(g.repetitions, 3u);
  EXPECT_DOUBLE_EQ(*g.median_ns, 100e3);
  // cv of 110, 100, 90 (us): sample sd 10 over mean 100.
  EXPECT_NEAR(g.cv, 0.10, 1e-12);
  EXPECT_TRUE(g.unstable);
  EXPECT_DOUBLE_EQ(*g.bw_efficiency, 18e9 / 20e9);
  EXPECT_EQ(g.compute_reference, "BM_peak_dot/int8");
  EXPECT_DOUBLE_EQ(*g.compute_efficiency, 72e9 / 400e9);
  EXPECT_DOUBLE_EQ(*g.intensity_flop_per_byte, 4.0);
  EXPECT_TRUE(s.notes.empty());
  // The references themselves carry no efficiency.
  EXPECT_FALSE(s.rows[0].bw_efficiency);
}

TEST(BenchSummary, NoEfficiencyWithoutAReferenceAtThatThreadCount) {
  nlohmann::json b = nlohmann::json::array();
  b.push_back(row("BM_stream_triad/fp64/threads:1", 100, 20e9, 1e9, 1));
  b.push_back(row("BM_expert_gemv/bf16/batch:1/threads:2", 100, 30e9, 30e9, 2));
  const BenchSummary s = summary_of(b);
  EXPECT_EQ(s.rows[1].threads, 2);
  EXPECT_FALSE(s.rows[1].bw_efficiency);
  EXPECT_FALSE(s.rows[1].compute_efficiency);
  EXPECT_EQ(s.notes.size(), 2u);
}

TEST(BenchSummary, FailedBenchmarksKeepTheirMessageAndNoNumbers) {
  nlohmann::json b = nlohmann::json::array();
  b.push_back({{"name", "BM_mla_decode/bf16/ctx:1024"}, {"run_name", "BM_mla_decode/bf16/ctx:1024"}, {"run_type", "iteration"},
               {"error_occurred", true}, {"error_message", "validation against mla_decode_ref failed"}});
  const BenchSummary s = summary_of(b);
  EXPECT_EQ(s.rows[0].error, "validation against mla_decode_ref failed");
  EXPECT_FALSE(s.rows[0].median_ns);
}

TEST(BenchSummary, ComputeProbeFollowsTheFormat) {
  EXPECT_EQ(compute_probe_for("q8_0"), "BM_peak_dot/int8");
  EXPECT_EQ(compute_probe_for("bf16"), "BM_peak_dot/bf16");
  EXPECT_EQ(compute_probe_for("fp32"), "BM_peak_fma/fp32");
}

}  // namespace
}  // namespace deepfit::regress
