// Roofline, bar, stacked-bar and scatter SVGs checked structurally: element counts, labels with
// units, log ticks, markers inside the plot, well-formed XML, words for no data, asserts on bad
// values. No pixels are compared.
#include "reports/svg_charts.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace deepfit::reports {
namespace {

using testing::HasSubstr;
using testing::Not;

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

// A small XML checker: balanced, properly nested tags, quoted attributes, known entities, one
// root element. Returns "" when well formed, else what is wrong.
std::string xml_problem(const std::string& s) {
  std::vector<std::string> open;
  std::size_t roots = 0;
  for (std::size_t i = 0; i < s.size();) {
    if (s[i] == '&') {
      const std::size_t semi = s.find(';', i);
      if (semi == std::string::npos) return "unterminated entity at " + std::to_string(i);
      const std::string ent = s.substr(i, semi - i + 1);
      if (ent != "&amp;" && ent != "&lt;" && ent != "&gt;" && ent != "&quot;" && ent.rfind("&#", 0) != 0) return "bad entity " + ent;
      i = semi + 1;
      continue;
    }
    if (s[i] == '>') return "stray '>' at " + std::to_string(i);
    if (s[i] != '<') {
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    char quote = 0;
    for (; j < s.size() && (quote || s[j] != '>'); ++j) {
      if (quote) {
        if (s[j] == quote) quote = 0;
        else if (s[j] == '<') return "'<' inside an attribute at " + std::to_string(j);
      } else if (s[j] == '"' || s[j] == '\'') {
        quote = s[j];
      }
    }
    if (j == s.size()) return "unterminated tag at " + std::to_string(i);
    const std::string tag = s.substr(i + 1, j - i - 1);
    i = j + 1;
    if (tag.empty()) return "empty tag";
    if (tag[0] == '?' || tag[0] == '!') continue;
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (open.empty() || open.back() != name) return "closing </" + name + "> does not match";
      open.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
    if (open.empty()) ++roots;
    if (tag.back() != '/') open.push_back(name);
  }
  if (!open.empty()) return "unclosed <" + open.back() + ">";
  if (roots != 1) return "expected one root element, got " + std::to_string(roots);
  return "";
}

// The numbers after every `attr="` in elements carrying class="<cls>".
std::vector<double> attr_values(const std::string& svg, const std::string& cls, const std::string& attr) {
  std::vector<double> out;
  const std::string key = "class=\"" + cls + "\"";
  for (std::size_t p = svg.find(key); p != std::string::npos; p = svg.find(key, p + 1)) {
    const std::size_t start = svg.rfind('<', p), end = svg.find('>', p);
    const std::string element = svg.substr(start, end - start);
    const std::size_t a = element.find(" " + attr + "=\"");
    if (a != std::string::npos) out.push_back(std::strtod(element.c_str() + a + attr.size() + 3, nullptr));
  }
  return out;
}

// Checks every chart must pass.
void expect_sound(const std::string& svg) {
  EXPECT_EQ(xml_problem(svg), "") << svg;
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  EXPECT_EQ(svg.rfind("<svg ", 0), 0u);
}

TEST(XmlProblem, CatchesTheMistakesItIsFor) {
  EXPECT_EQ(xml_problem("<svg><g></g><line x=\"1\"/></svg>"), "");
  EXPECT_NE(xml_problem("<svg><g></svg>"), "");
  EXPECT_NE(xml_problem("<svg><g></svg></g>"), "");
  EXPECT_NE(xml_problem("<svg>a & b</svg>"), "");
  EXPECT_NE(xml_problem("<svg></svg><svg></svg>"), "");
}

RooflineChart host_roofline() {
  RooflineChart c;
  c.title = "host roofline";
  c.bandwidth_label = "DRAM";
  c.bandwidth_gbps = 100;
  c.roofs = {{"bf16", 400}, {"fp32", 200}};
  c.points = {{"triad", 0.0833, 8}, {"expert GEMM", 60, 310}, {"attention <decode>", 1.5, 90}};
  return c;
}

TEST(SvgRoofline, DrawsOneBandwidthRoofAndOneComputeRoofPerDtype) {
  const std::string svg = svg_roofline(host_roofline());
  expect_sound(svg);
  EXPECT_EQ(count(svg, "class=\"roof bandwidth\""), 1u);
  EXPECT_EQ(count(svg, "class=\"roof compute\""), 2u);
  EXPECT_EQ(count(svg, "<circle class=\"ridge\""), 2u);
  EXPECT_EQ(count(svg, "class=\"point\""), 3u);
  EXPECT_EQ(count(svg, "class=\"legend-entry\""), 3u);
  EXPECT_THAT(svg, HasSubstr(">bf16 400 GFLOP/s<"));
  EXPECT_THAT(svg, HasSubstr(">fp32 200 GFLOP/s<"));
  EXPECT_THAT(svg, HasSubstr(">DRAM 100 GB/s<"));
  EXPECT_THAT(svg, HasSubstr("ridge 4.00 FLOP/byte"));
  EXPECT_THAT(svg, HasSubstr("ridge 2.00 FLOP/byte"));
  EXPECT_THAT(svg, HasSubstr("attention &lt;decode&gt;"));
}

TEST(SvgRoofline, AxesAreLogLogWithUnitsAndDecadeTicks) {
  const std::string svg = svg_roofline(host_roofline());
  EXPECT_THAT(svg, HasSubstr("arithmetic intensity (FLOP/byte) (log scale)"));
  EXPECT_THAT(svg, HasSubstr("compute rate (GFLOP/s) (log scale)"));
  // x covers the lowest ridge / 100 = 0.02 .. 60 * 2, y 400 / 100 .. 400 * 2, widened to decades.
  for (const char* t : {">0.01<", ">0.1<", ">1<", ">10<", ">100<", ">1000<"}) EXPECT_THAT(svg, HasSubstr(t));
}

TEST(SvgRoofline, MarkersLieInsideThePlotArea) {
  const std::string svg = svg_roofline(host_roofline());
  // The three points are a circle, a square and a triangle; circles and squares carry x/y.
  const auto cx = attr_values(svg, "point", "cx"), cy = attr_values(svg, "point", "cy");
  const auto rx = attr_values(svg, "point", "x"), ry = attr_values(svg, "point", "y");
  ASSERT_EQ(cx.size() + rx.size(), 2u);
  for (double v : cx) EXPECT_TRUE(v >= 70 && v <= 720) << v;
  for (double v : cy) EXPECT_TRUE(v >= 30 && v <= 370) << v;
  for (double v : rx) EXPECT_TRUE(v >= 60 && v <= 720) << v;
  for (double v : ry) EXPECT_TRUE(v >= 20 && v <= 370) << v;
}

TEST(SvgRoofline, SwitchesToTflopsForAcceleratorPeaks) {
  RooflineChart c;
  c.title = "accelerator";
  c.bandwidth_gbps = 3350;
  c.roofs = {{"bf16", 989000}, {"fp8", 1979000}, {"fp16", 989000}};
  const std::string svg = svg_roofline(c);
  expect_sound(svg);
  EXPECT_EQ(count(svg, "class=\"roof compute\""), 3u);
  EXPECT_EQ(count(svg, "<circle class=\"ridge\""), 2u);  // bf16 and fp16 share theirs
  EXPECT_THAT(svg, HasSubstr(">bf16, fp16 989 TFLOP/s<"));
  EXPECT_THAT(svg, HasSubstr(">fp8 1979 TFLOP/s<"));
  EXPECT_THAT(svg, HasSubstr("ridge 295 FLOP/byte"));
  EXPECT_THAT(svg, HasSubstr("compute rate (TFLOP/s)"));
  EXPECT_THAT(svg, Not(HasSubstr("GFLOP/s")));
  EXPECT_EQ(count(svg, "class=\"legend-entry\""), 0u);  // no points, no legend
}

TEST(SvgRoofline, WithoutRoofsSaysSo) {
  RooflineChart c;
  c.title = "none";
  c.roofs = {{"bf16", 400}};
  const std::string svg = svg_roofline(c);
  expect_sound(svg);
  EXPECT_THAT(svg, HasSubstr("no data: no bandwidth or compute roof given"));
  c.bandwidth_gbps = 100;
  c.roofs.clear();
  c.no_data_reason = "peak compute unavailable: counters refused";
  EXPECT_THAT(svg_roofline(c), HasSubstr("no data: peak compute unavailable: counters refused"));
}

TEST(SvgRooflineDeathTest, RejectsNonFiniteAndNonPositiveValues) {
  auto c = host_roofline();
  c.points[0].achieved_gflops = std::numeric_limits<double>::quiet_NaN();
  EXPECT_DEATH(svg_roofline(c), "non-finite value");
  c = host_roofline();
  c.roofs[1].peak_gflops = 0;
  EXPECT_DEATH(svg_roofline(c), "compute roof must be > 0");
}

BarChart cost_bars() {
  BarChart c;
  c.title = "cost";
  c.value_label = "cost per million output tokens";
  c.unit = "USD";
  c.category_label = "configuration";
  c.bars = {{"8x h200 fp8", 2.5}, {"8x h100 fp8", 1.25}, {"8x b200 fp4", 0.75}, {"m3-ultra q4_k_m", 1.25}};
  return c;
}

TEST(SvgBarChart, SortsAscendingWithValueLabelsAndUnit) {
  const std::string svg = svg_bar_chart(cost_bars());
  expect_sound(svg);
  EXPECT_EQ(count(svg, "class=\"bar\""), 4u);
  EXPECT_EQ(count(svg, "class=\"value\""), 4u);
  EXPECT_EQ(count(svg, "class=\"legend"), 0u);  // one series, no legend
  EXPECT_THAT(svg, HasSubstr(">cost per million output tokens (USD)<"));
  EXPECT_THAT(svg, HasSubstr(">configuration<"));
  EXPECT_THAT(svg, HasSubstr(">0.750 USD<"));
  EXPECT_THAT(svg, HasSubstr(">2.50 USD<"));
  // Cheapest first; equal values keep their given order.
  const std::size_t b200 = svg.find(">8x b200 fp4<"), h100 = svg.find(">8x h100 fp8<"), m3 = svg.find(">m3-ultra q4_k_m<"),
                    h200 = svg.find(">8x h200 fp8<");
  EXPECT_LT(b200, h100);
  EXPECT_LT(h100, m3);
  EXPECT_LT(m3, h200);
  EXPECT_THAT(svg, Not(HasSubstr("(log scale)")));
}

TEST(SvgBarChart, BarLengthsFollowTheLinearAxis) {
  const std::string svg = svg_bar_chart(cost_bars());
  const auto w = attr_values(svg, "bar", "width");
  ASSERT_EQ(w.size(), 4u);
  EXPECT_NEAR(w[1] / w[0], 1.25 / 0.75, 0.01);
  EXPECT_NEAR(w[3] / w[0], 2.5 / 0.75, 0.01);
}

TEST(SvgBarChart, UsesALogAxisWhenValuesSpanTwoDecades) {
  auto c = cost_bars();
  c.bars = {{"cpu", 80}, {"gpu", 0.5}, {"apple", 3}};
  const std::string svg = svg_bar_chart(c);
  expect_sound(svg);
  EXPECT_THAT(svg, HasSubstr("cost per million output tokens (USD) (log scale)"));
  for (const char* t : {">0.1<", ">1<", ">10<", ">100<"}) EXPECT_THAT(svg, HasSubstr(t));
  for (double w : attr_values(svg, "bar", "width")) EXPECT_GT(w, 0);
  c.bars = {{"a", 1}, {"b", 50}};  // 1.7 decades: linear
  EXPECT_THAT(svg_bar_chart(c), Not(HasSubstr("(log scale)")));
  c.bars = {{"a", 0}, {"b", 500}};  // a zero cannot go on a log axis: linear
  EXPECT_THAT(svg_bar_chart(c), Not(HasSubstr("(log scale)")));
  c.scale = AxisScale::kLog;
  c.bars = {{"a", 1}, {"b", 5}};
  EXPECT_THAT(svg_bar_chart(c), HasSubstr("(log scale)"));
}

TEST(SvgBarChart, WithoutBarsSaysWhy) {
  BarChart c;
  c.title = "cost";
  c.no_data_reason = "no configuration fits";
  const std::string svg = svg_bar_chart(c);
  expect_sound(svg);
  EXPECT_THAT(svg, HasSubstr("no data: no configuration fits"));
  c.no_data_reason.clear();
  EXPECT_THAT(svg_bar_chart(c), HasSubstr("no data: no bars"));
}

TEST(SvgBarChartDeathTest, RejectsBadValues) {
  auto c = cost_bars();
  c.bars[2].value = std::numeric_limits<double>::infinity();
  EXPECT_DEATH(svg_bar_chart(c), "non-finite value");
  c = cost_bars();
  c.bars[0].value = -1;
  EXPECT_DEATH(svg_bar_chart(c), "must be >= 0");
  c = cost_bars();
  c.bars[0].value = 0;
  c.scale = AxisScale::kLog;
  EXPECT_DEATH(svg_bar_chart(c), "log axis needs positive values");
}

StackedBarChart memory_bars() {
  StackedBarChart c;
  c.title = "memory per device";
  c.value_label = "memory per device";
  c.unit = "GB";
  c.category_label = "quantization";
  c.segment_labels = {"weights", "KV cache", "activations", "reserve"};
  c.bars = {{"fp8", {86, 20, 4, 8}, std::nullopt}, {"q4_k_m", {52, 20, 4, 8}, std::nullopt}, {"bf16", {172, 0, 4, 8}, std::nullopt}};
  c.capacity = 141;
  return c;
}

TEST(SvgStackedBarChart, DrawsSegmentsLegendAndOneCapacityLine) {
  const std::string svg = svg_stacked_bar_chart(memory_bars());
  expect_sound(svg);
  EXPECT_EQ(count(svg, "class=\"segment\""), 11u);  // the zero KV cache segment is not drawn
  EXPECT_EQ(count(svg, "<g class=\"series\""), 3u);
  EXPECT_EQ(count(svg, "class=\"legend-entry\""), 5u);  // four segments and the capacity
  EXPECT_EQ(count(svg, "class=\"capacity\""), 1u);
  EXPECT_THAT(svg, HasSubstr(">memory per device (GB)<"));
  EXPECT_THAT(svg, HasSubstr(">capacity 141 GB<"));
  EXPECT_THAT(svg, HasSubstr(">118 GB<"));
  EXPECT_THAT(svg, HasSubstr(">184 GB (exceeds capacity)<"));
  EXPECT_EQ(count(svg, "exceeds capacity"), 1u);
  // Bars keep the given order.
  EXPECT_LT(svg.find(">fp8<"), svg.find(">q4_k_m<"));
  EXPECT_LT(svg.find(">q4_k_m<"), svg.find(">bf16<"));
}

TEST(SvgStackedBarChart, SegmentsAddUpToTheTotal) {
  const std::string svg = svg_stacked_bar_chart(memory_bars());
  const auto x = attr_values(svg, "segment", "x"), w = attr_values(svg, "segment", "width");
  ASSERT_EQ(x.size(), 11u);
  for (std::size_t i = 0; i + 1 < 4; ++i) EXPECT_NEAR(x[i] + w[i], x[i + 1], 0.11);  // first bar: touching segments
  EXPECT_NEAR((w[0] + w[1] + w[2] + w[3]) / (w[4] + w[5] + w[6] + w[7]), 118.0 / 84.0, 0.01);
}

TEST(SvgStackedBarChart, DrawsACapacityMarkerPerBar) {
  auto c = memory_bars();
  c.capacity.reset();
  c.bars[0].capacity = 80;
  c.bars[1].capacity = 192;
  c.bars[2].capacity = 192;
  const std::string svg = svg_stacked_bar_chart(c);
  expect_sound(svg);
  EXPECT_EQ(count(svg, "class=\"capacity\""), 3u);
  EXPECT_EQ(count(svg, "exceeds capacity"), 1u);  // fp8's 118 GB over its 80 GB
  EXPECT_THAT(svg, HasSubstr(">118 GB (exceeds capacity)<"));
}

TEST(SvgStackedBarChart, WithoutBarsSaysWhy) {
  StackedBarChart c;
  c.title = "memory";
  const std::string svg = svg_stacked_bar_chart(c);
  expect_sound(svg);
  EXPECT_THAT(svg, HasSubstr("no data: no bars"));
}

TEST(SvgStackedBarChartDeathTest, RejectsBadValues) {
  auto c = memory_bars();
  c.bars[1].segments.pop_back();
  EXPECT_DEATH(svg_stacked_bar_chart(c), "one value per segment");
  c = memory_bars();
  c.bars[1].segments[0] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_DEATH(svg_stacked_bar_chart(c), "non-finite value");
  c = memory_bars();
  c.bars[1].segments[0] = -4;
  EXPECT_DEATH(svg_stacked_bar_chart(c), "must be >= 0");
}

ScatterChart validation_scatter() {
  ScatterChart c;
  c.title = "predicted vs measured";
  c.quantity = "decode rate";
  c.unit = "tokens/s";
  c.error_fraction = 0.25;
  c.series = {{"vLLM", {{20, 24, "h200 tp8"}, {1500, 1300, "h200 tp8 c64"}, {3, 2, ""}}}, {"llama.cpp", {{8, 9, "m3-ultra q4"}, {45, 60, "cpu"}}}};
  return c;
}

TEST(SvgScatterChart, DrawsSeriesIdentityBandAndLegend) {
  const std::string svg = svg_scatter_chart(validation_scatter());
  expect_sound(svg);
  EXPECT_EQ(count(svg, "<g class=\"series\""), 2u);
  EXPECT_EQ(count(svg, "class=\"point\""), 5u);
  EXPECT_EQ(count(svg, "class=\"identity\""), 1u);
  EXPECT_EQ(count(svg, "class=\"band\""), 1u);
  EXPECT_EQ(count(svg, "class=\"legend-entry\""), 4u);  // two series, y = x, the band
  EXPECT_THAT(svg, HasSubstr(">y = x \u00b1 25.0%<"));
  EXPECT_THAT(svg, HasSubstr("measured decode rate (tokens/s) (log scale)"));
  EXPECT_THAT(svg, HasSubstr("predicted decode rate (tokens/s) (log scale)"));
  for (const char* t : {">1<", ">10<", ">100<", ">1000<", ">10000<"}) EXPECT_THAT(svg, HasSubstr(t));
  EXPECT_THAT(svg, HasSubstr("h200 tp8: measured 20.0 tokens/s, predicted 24.0 tokens/s (20.0%)"));
}

TEST(SvgScatterChart, PlotIsSquareAndEverythingStaysInside) {
  auto c = validation_scatter();
  c.error_fraction = 3;  // the lower edge x * (1 - 3) is below any log axis: the plot's bottom
  const std::string svg = svg_scatter_chart(c);
  expect_sound(svg);
  const auto x1 = attr_values(svg, "identity", "x1"), y1 = attr_values(svg, "identity", "y1");
  const auto x2 = attr_values(svg, "identity", "x2"), y2 = attr_values(svg, "identity", "y2");
  ASSERT_EQ(x1.size(), 1u);
  EXPECT_NEAR(x2[0] - x1[0], y1[0] - y2[0], 0.11);  // y = x runs corner to corner at 45 degrees
  const double left = x1[0], right = x2[0], top = y2[0], bottom = y1[0];
  for (double v : attr_values(svg, "point", "cx")) EXPECT_TRUE(v >= left && v <= right) << v;
  for (double v : attr_values(svg, "point", "cy")) EXPECT_TRUE(v >= top && v <= bottom) << v;
  const std::size_t p = svg.find("class=\"band\" points=\"") + 21;
  std::string pts = svg.substr(p, svg.find('"', p) - p);
  for (char& ch : pts) ch = ch == ',' ? ' ' : ch;
  char* cur = pts.data();
  std::size_t n = 0;
  for (char* next = nullptr;; cur = next, ++n) {
    const double x = std::strtod(cur, &next);
    if (next == cur) break;
    const double y = std::strtod(next, &next);
    EXPECT_TRUE(x >= left - 0.05 && x <= right + 0.05 && y >= top - 0.05 && y <= bottom + 0.05) << x << "," << y;
  }
  EXPECT_GE(n, 3u);
}

TEST(SvgScatterChart, UsesLinearAxesWhenValuesSpanLessThanTwoDecades) {
  auto c = validation_scatter();
  c.series = {{"only", {{10, 12, "a"}, {40, 35, "b"}}}};
  c.error_fraction.reset();
  const std::string svg = svg_scatter_chart(c);
  expect_sound(svg);
  EXPECT_THAT(svg, Not(HasSubstr("(log scale)")));
  EXPECT_EQ(count(svg, "class=\"band\""), 0u);
  EXPECT_EQ(count(svg, "class=\"legend-entry\""), 1u);  // one series: only y = x in the legend
  EXPECT_THAT(svg, HasSubstr(">measured decode rate (tokens/s)<"));
}

TEST(SvgScatterChart, WithoutPointsSaysSo) {
  ScatterChart c;
  c.title = "validation";
  c.series = {{"vLLM", {}}};
  const std::string svg = svg_scatter_chart(c);
  expect_sound(svg);
  EXPECT_THAT(svg, HasSubstr("no data: no points"));
}

TEST(SvgScatterChartDeathTest, RejectsBadValues) {
  auto c = validation_scatter();
  c.series[1].points[0].predicted = std::numeric_limits<double>::infinity();
  EXPECT_DEATH(svg_scatter_chart(c), "non-finite value");
  c = validation_scatter();
  c.series[0].points[0].measured = -1;
  EXPECT_DEATH(svg_scatter_chart(c), "must be >= 0");
  c = validation_scatter();
  c.series[0].points[0].measured = 0;
  c.scale = AxisScale::kLog;
  EXPECT_DEATH(svg_scatter_chart(c), "log axis needs positive values");
}

TEST(SvgCharts, DegenerateRangesStillGiveSoundCharts) {
  BarChart b;
  b.title = "one bar";
  b.unit = "USD";
  b.bars = {{"only", 0}};
  expect_sound(svg_bar_chart(b));
  b.bars = {{"only", 10}};
  b.scale = AxisScale::kLog;
  expect_sound(svg_bar_chart(b));
  StackedBarChart s;
  s.title = "zeros";
  s.segment_labels = {"weights"};
  s.bars = {{"a", {0}, std::nullopt}};
  const std::string zeros = svg_stacked_bar_chart(s);
  expect_sound(zeros);
  EXPECT_EQ(count(zeros, "class=\"segment\""), 0u);
  ScatterChart sc;
  sc.title = "one point";
  sc.series = {{"s", {{0, 0, "zero"}}}};
  sc.error_fraction = 0.1;
  expect_sound(svg_scatter_chart(sc));
  sc.series = {{"s", {{10, 10, "ten"}}}};
  sc.scale = AxisScale::kLog;
  expect_sound(svg_scatter_chart(sc));
  RooflineChart r;
  r.title = "tiny";
  r.bandwidth_gbps = 1e-3;
  r.roofs = {{"fp64", 1e-4}};
  r.points = {{"p", 1e-6, 1e-9}};
  expect_sound(svg_roofline(r));
}

TEST(SvgCharts, OutputIsDeterministic) {
  EXPECT_EQ(svg_roofline(host_roofline()), svg_roofline(host_roofline()));
  EXPECT_EQ(svg_scatter_chart(validation_scatter()), svg_scatter_chart(validation_scatter()));
}

}  // namespace
}  // namespace deepfit::reports
