// Inline SVG charts drawn by deepfit (no scripts, no fonts fetched): line charts with axes, units,
// optional log scales and a legend. A chart without data says so in words; non-finite values are
// a bug (DEEPFIT_ASSERT), never drawn.
#pragma once

#include <string>
#include <vector>

namespace deepfit::reports {

struct SeriesXY {
  std::string label;
  std::vector<double> x, y;
};

struct LineChart {
  std::string title;
  std::string x_label, y_label;  // with units, e.g. "run", "median time (us)"
  bool log_x = false, log_y = false;
  std::vector<SeriesXY> series;
  std::vector<double> markers_x;  // vertical markers (e.g. step changes)
  int width = 720, height = 360;
};

std::string svg_line_chart(const LineChart& c);

// Nice tick values covering [lo, hi] (linear), or powers of ten (log).
std::vector<double> ticks(double lo, double hi, bool log_scale);

// A self-contained HTML page: title, then each section's heading, text and SVG.
struct HtmlSection {
  std::string heading, text, svg;
};
std::string html_page(const std::string& title, const std::vector<HtmlSection>& sections);
std::string xml_escape(const std::string& s);

}  // namespace deepfit::reports
