// Internal to deepfit_reports: the SVG pieces shared by svg_plot.cpp (which defines them) and
// svg_charts.cpp: number formatting, colours, axis mapping and drawing. Not a public header.
#pragma once

#include <cstddef>
#include <ostream>
#include <string>
#include <vector>

namespace deepfit::reports::svg_detail {

// Eight colours that stay distinguishable on white; index k wraps around.
const char* colour(std::size_t k);

// Fixed formats, so the same chart always gives the same bytes (golden tests).
std::string num(double v);          // pixel coordinates: "%.1f"
std::string tick_label(double v);   // tick text: "%g", or "%.0e" outside [1e-3, 1e6)

// Pixel box of the plotting area inside the SVG.
struct PlotArea {
  double left, top, right, bottom;
};

// Maps data values on [lo, hi] to pixels [p_lo, p_hi]; log10 when log (then values must be > 0).
struct AxisMap {
  double lo, hi;
  bool log;
  double p_lo, p_hi;
  double operator()(double v) const;
};

// Ticks for the data range [lo, hi] (see reports::ticks) and the map widened to cover them.
struct Axis {
  AxisMap map;
  std::vector<double> ticks;
};
Axis make_axis(double lo, double hi, bool log, double p_lo, double p_hi);

// `<svg ...>` with its accessible name, then the title text centred at the top.
void open_svg(std::ostream& o, double width, double height, const std::string& title);
// The text that replaces an empty chart, then `</svg>`.
void close_with_no_data(std::ostream& o, double width, double height, const std::string& text);

// The two axis lines (left and bottom edges of the area).
void draw_axis_lines(std::ostream& o, const PlotArea& a);
// One `<g class="ticks">`: x tick labels under the area (with vertical grid lines when x_grid),
// then y tick labels left of it with horizontal grid lines. Either axis may be null.
void draw_ticks(std::ostream& o, const PlotArea& a, const Axis* x, bool x_grid, const Axis* y);
// Axis titles; " (log scale)" is appended on a log axis.
void draw_x_label(std::ostream& o, const PlotArea& a, double height, const std::string& label, bool log);
void draw_y_label(std::ostream& o, const PlotArea& a, const std::string& label, bool log);

}  // namespace deepfit::reports::svg_detail
