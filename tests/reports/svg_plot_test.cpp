// SVG charts checked structurally: axes, labels with units, one group per series, no NaN, and
// words instead of an empty chart.
#include "reports/svg_plot.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace deepfit::reports {
namespace {

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(SvgLineChart, HasAxesLabelsAndOneGroupPerSeries) {
  LineChart c;
  c.title = "throughput";
  c.x_label = "concurrency";
  c.y_label = "output tokens/s";
  c.log_x = true;
  c.series = {{"a", {1, 8, 64}, {10, 70, 400}}, {"b & c", {1, 8, 64}, {5, 30, 100}}};
  const std::string svg = svg_line_chart(c);
  EXPECT_EQ(count(svg, "<g class=\"series\""), 2u);
  EXPECT_EQ(count(svg, "class=\"axes\""), 1u);
  EXPECT_THAT(svg, testing::HasSubstr("concurrency (log scale)"));
  EXPECT_THAT(svg, testing::HasSubstr("output tokens/s"));
  EXPECT_THAT(svg, testing::HasSubstr("b &amp; c"));
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}

TEST(SvgLineChart, EmptyChartSaysSo) {
  LineChart c;
  c.title = "nothing";
  EXPECT_THAT(svg_line_chart(c), testing::HasSubstr("no data to plot"));
}

TEST(Ticks, LinearTicksAreRoundAndCoverTheRange) {
  auto t = ticks(0, 97, false);
  EXPECT_DOUBLE_EQ(t.front(), 0);
  EXPECT_GE(t.back(), 97);
  EXPECT_DOUBLE_EQ(t[1] - t[0], 20);
  auto l = ticks(3, 4000, true);
  EXPECT_EQ(l, (std::vector<double>{1, 10, 100, 1000, 10000}));
}

TEST(HtmlPage, IsSelfContained) {
  const std::string page = html_page("t", {{"h", "x < y", "<svg></svg>"}});
  EXPECT_THAT(page, testing::HasSubstr("x &lt; y"));
  EXPECT_EQ(page.find("<script"), std::string::npos);
  EXPECT_EQ(page.find("http://"), page.find("http://www.w3.org") == std::string::npos ? std::string::npos : page.find("http://"));
  EXPECT_EQ(page.find("https://"), std::string::npos);
}

}  // namespace
}  // namespace deepfit::reports
