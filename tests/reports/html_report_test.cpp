// The HTML report (reports/src/html_report.cpp): document kinds recognised by their keys, every
// chart drawn from hand-made documents, "no data" in words when a kind is missing, and bad
// documents refused with the origin named.
#include "reports/html_report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/error.h"

namespace deepfit::reports {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

json bench_doc() {
  auto row = [](const std::string& name, double bytes_s, double flops_s) {
    return json{{"name", name}, {"run_name", name}, {"run_type", "iteration"}, {"real_time", 1.0}, {"time_unit", "ms"},
                {"iterations", 1}, {"bytes_per_second", bytes_s}, {"flops", flops_s}, {"threads", 2}};
  };
  return {{"context", json::object()},
          {"benchmarks",
           {row("BM_stream_triad/fp64/threads:2", 30e9, 2.5e9), row("BM_peak_dot/bf16/threads:2", 0, 450e9),
            row("BM_peak_fma/fp32/threads:2", 0, 230e9), row("BM_expert_gemv/bf16/batch:1/threads:2", 30e9, 30e9)}}};
}

json compare_doc() {
  json rows = json::array();
  for (int conc : {1, 8, 64})
    rows.push_back({{"device", "h200-sxm"}, {"count", 8}, {"quant", "fp8"}, {"framework", "vllm"}, {"parallel", "tp8"},
                    {"concurrency", conc}, {"output_tok_s_total", 40.0 * conc}, {"decode_tok_s_per_user", 40.0},
                    {"cost_usd_per_mtok_output", 100.0 / conc}});
  return {{"model", "deepseek-v3.2"}, {"rows", rows}, {"configs_tried", 10}, {"configs_fit", 1}, {"notes", json::array()}};
}

json fit_doc() {
  json memory = {{"weights_bytes", 86e9}, {"kv_cache_bytes", 1e9}, {"activation_bytes", 2e9}, {"overhead_bytes", 5e9},
                 {"capacity_bytes_per_device", 141e9}};
  return {{"records",
           {{{"quant", "fp8"}, {"device", "h200-sxm"}, {"count", 8},
             {"results", {{{"concurrency", 1}, {"context_tokens", 4096}, {"memory", memory}}}}}}}};
}

json position_doc() {
  json records = json::array();
  for (int ctx : {4096, 65536})
    records.push_back({{"model", "deepseek-v3.2"}, {"model_name", "DeepSeek-V3.2"}, {"device", "h800-sxm"}, {"count", 16},
                       {"parallel", {{"text", "tp1ep16dp16"}}},
                       {"results", {{{"context_tokens", ctx}, {"cost_usd_per_mtok_output", 2.3 + ctx / 1e6}}}}});
  return {{"records", records}};
}

json validate_doc() {
  return {{"rows", {{{"id", "A"}, {"metric", "decode_tok_s_per_user"}, {"predicted", 22.0}, {"measured", 20.0}, {"error_pct", 10.0}},
                    {{"id", "B"}, {"metric", "ttft_ms"}, {"predicted", 900.0}, {"measured", 1000.0}, {"error_pct", -10.0}}}},
          {"skipped", json::array()},
          {"summary", {{"n", 2}, {"median_abs_error_pct", 10.0}, {"p90_abs_error_pct", 10.0}}}};
}

TEST(HtmlReport, RecognisesEachKindOfDocument) {
  EXPECT_EQ(classify({"b", bench_doc()}), DocKind::kBench);
  EXPECT_EQ(classify({"c", compare_doc()}), DocKind::kCompare);
  EXPECT_EQ(classify({"f", fit_doc()}), DocKind::kFit);
  EXPECT_EQ(classify({"p", position_doc()}), DocKind::kPosition);
  EXPECT_EQ(classify({"v", validate_doc()}), DocKind::kValidate);
}

TEST(HtmlReport, DrawsEveryChartFromItsDocuments) {
  const std::string html = html_report({"t", {"intro"},
                                        {{"bench.json", bench_doc()}, {"compare.json", compare_doc()}, {"fit.json", fit_doc()},
                                         {"position.json", position_doc()}, {"validate.json", validate_doc()}}});
  EXPECT_EQ(count(html, "<section>"), 7u);  // the intro and six charts' sections
  EXPECT_EQ(count(html, "<svg "), 7u);      // chart 2 is two line charts (total and per user)
  EXPECT_THAT(html, Not(HasSubstr("no data")));
  EXPECT_THAT(html, Not(HasSubstr("nan")));
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, HasSubstr("STREAM-like triad"));
  EXPECT_THAT(html, HasSubstr("h200-sxm x8 fp8 vllm tp8"));
  EXPECT_THAT(html, HasSubstr("DeepSeek-V3.2"));
  EXPECT_THAT(html, HasSubstr("median absolute error 10.0 %"));
  EXPECT_THAT(html, HasSubstr("From bench.json"));
}

TEST(HtmlReport, SaysInWordsWhatIsMissing) {
  const std::string html = html_report({"t", {}, {}});
  EXPECT_EQ(count(html, "<svg "), 7u);
  EXPECT_THAT(html, HasSubstr("no bench results"));
  EXPECT_THAT(html, HasSubstr("no compare results"));
  EXPECT_THAT(html, HasSubstr("no fit results"));
  EXPECT_THAT(html, HasSubstr("no predict --context results"));
  EXPECT_THAT(html, HasSubstr("no validate results"));
}

TEST(HtmlReport, RefusesDocumentsItDoesNotRead) {
  try {
    html_report({"t", {}, {{"mystery.json", json{{"hello", 1}}}}});
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("mystery.json: not a deepfit result document"));
  }
  json broken = compare_doc();
  broken["rows"][0].erase("device");
  EXPECT_THROW(html_report({"t", {}, {{"broken.json", broken}}}), InputError);
}

}  // namespace
}  // namespace deepfit::reports

#include "reports/fit_report.h"

namespace deepfit::reports {
namespace {

// Golden JSON of a compare document (the keys scripts read; DESIGN.md fixes the speed keys'
// names), from a hand-made comparison: a value that cannot be computed is null.
TEST(CompareJson, GoldenDocument) {
  planner::Comparison c;
  planner::CompareRow r;
  r.device = "h200-sxm";
  r.quant = "fp8";
  r.framework = "vllm";
  r.parallel = "tp8";
  r.count = 8;
  r.concurrency = 64;
  r.speed.served_concurrency = 64;
  r.speed.decode_tok_s_per_user = 25.5;
  r.speed.output_tok_s_total = 1632.0;
  r.speed.output_tok_s_per_gpu = 204.0;
  r.speed.ttft_ms = 850.0;
  r.speed.tpot_ms = 39.2;
  r.speed.cost_usd_per_mtok_output = 4.25;
  r.speed.bottleneck = "memory";
  r.speed.basis = "datasheet roofline only";
  r.requests_per_s = 6.375;  // 1632 tok/s over 256 output tokens per request
  r.pareto = true;
  c.rows.push_back(r);
  c.configs_tried = 3;
  c.configs_fit = 1;
  c.notes = {"n"};
  EXPECT_EQ(compare_to_json("deepseek-v3.2", c).dump(),
            R"({"configs_fit":1,"configs_tried":3,"model":"deepseek-v3.2","notes":["n"],"rows":[{"basis":"datasheet roofline only",)"
            R"("bottleneck":"memory","concurrency":64,"cost_usd_per_mtok_output":4.25,"count":8,"decode_tok_s_per_user":25.5,)"
            R"("device":"h200-sxm","expected_error_pct":null,"framework":"vllm","output_tok_s_per_gpu":204.0,)"
            R"("output_tok_s_total":1632.0,"parallel":"tp8","pareto":true,"quant":"fp8","requests_per_s":6.375,"served_concurrency":64,)"
            R"("tpot_ms":39.2,"ttft_ms":850.0}]})");
}

}  // namespace
}  // namespace deepfit::reports
