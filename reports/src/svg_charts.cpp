// Roofline, sorted bars, stacked bars and predicted-vs-measured scatter as inline SVG. Axes come
// from svg_axes.h (shared with the line chart); what a chart means is the caller's business.
#include "reports/svg_charts.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <sstream>

#include "kernels/error.h"
#include "reports/svg_plot.h"
#include "svg_axes.h"

namespace deepfit::reports {
namespace {

using svg_detail::Axis;
using svg_detail::colour;
using svg_detail::num;
using svg_detail::PlotArea;

constexpr double kMarginLeft = 70, kMarginRight = 20, kMarginTop = 30, kMarginBottom = 50;
constexpr double kBarBand = 24;  // pixels per horizontal bar, gap included
constexpr const char* kCapacityColour = "#b00020";

// Values printed next to data: three significant digits in fixed notation, so "459", "45.9",
// "0.0459"; outside [1e-3, 1e6) "%.3g" (an exponent), which stays readable.
std::string value_label(double v) {
  char buf[48];
  const double a = std::fabs(v);
  if (a == 0) return "0";
  if (a >= 1e6 || a < 1e-3) {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  } else {
    const int decimals = std::max(0, 2 - static_cast<int>(std::floor(std::log10(a))));
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  }
  return buf;
}

std::string with_unit(const std::string& value, const std::string& unit) { return unit.empty() ? value : value + " " + unit; }
std::string axis_text(const std::string& label, const std::string& unit) { return unit.empty() ? label : label + " (" + unit + ")"; }

// No font is measured (none is fetched): an 11 px sans-serif character is about 6 px wide.
double text_width(const std::string& s) {
  double chars = 0;
  for (unsigned char ch : s) chars += (ch & 0xC0) != 0x80 ? 1 : 0;  // count UTF-8 code points
  return 6 * chars;
}

void check_finite(double v, const std::string& title) { DEEPFIT_ASSERT(std::isfinite(v), "non-finite value in chart " + title); }

bool use_log(AxisScale s, double min_v, double max_v, const std::string& title) {
  switch (s) {
    case AxisScale::kLinear: return false;
    case AxisScale::kLog: DEEPFIT_ASSERT(min_v > 0, "log axis needs positive values in chart " + title); return true;
    case AxisScale::kAuto: return min_v > 0 && max_v / min_v >= 100;
  }
  return false;
}

std::string no_data(double width, double height, const std::string& title, const std::string& reason, const std::string& fallback) {
  std::ostringstream o;
  svg_detail::open_svg(o, width, height, title);
  svg_detail::close_with_no_data(o, width, height, "no data: " + (reason.empty() ? fallback : reason));
  return o.str();
}

std::string tooltip(const std::string& text) { return "<title>" + xml_escape(text) + "</title>"; }

// Marker k: colour k, shape k mod 4 (circle, square, triangle, diamond), so series stay apart
// without colour too. Data markers have class "point", legend swatches class "swatch".
void draw_marker(std::ostream& o, std::size_t k, double x, double y, const std::string& tip, const char* cls = "point") {
  const std::string fill = std::string(" fill=\"") + colour(k) + "\" class=\"" + cls + "\">" + tooltip(tip);
  switch (k % 4) {
    case 0: o << "<circle cx=\"" << num(x) << "\" cy=\"" << num(y) << "\" r=\"4\"" << fill << "</circle>"; break;
    case 1: o << "<rect x=\"" << num(x - 3.5) << "\" y=\"" << num(y - 3.5) << "\" width=\"7\" height=\"7\"" << fill << "</rect>"; break;
    case 2:
      o << "<polygon points=\"" << num(x) << "," << num(y - 4.5) << " " << num(x + 4.5) << "," << num(y + 3.5) << " " << num(x - 4.5) << ","
        << num(y + 3.5) << "\"" << fill << "</polygon>";
      break;
    default:
      o << "<polygon points=\"" << num(x) << "," << num(y - 5) << " " << num(x + 5) << "," << num(y) << " " << num(x) << "," << num(y + 5)
        << " " << num(x - 5) << "," << num(y) << "\"" << fill << "</polygon>";
  }
  o << "\n";
}

// Legend: a swatch (marker, filled block, dashed line or shaded band) and a text.
enum class Swatch { kMarker, kBlock, kDashed, kBand };
struct LegendEntry {
  std::string text;
  Swatch swatch;
  std::size_t index = 0;          // colour (and marker shape) index for kMarker and kBlock
  std::string stroke = "#333";    // for kDashed
};

double legend_entry_width(const LegendEntry& e) { return 18 + text_width(e.text) + 14; }

// Where each entry's text baseline goes: one per line (column), or flowing left to right and
// wrapping at x_max (rows).
std::vector<std::pair<double, double>> legend_layout(const std::vector<LegendEntry>& es, double x0, double y0, double x_max, bool column) {
  std::vector<std::pair<double, double>> at;
  double x = x0, y = y0;
  for (const auto& e : es) {
    if (!column && x > x0 && x + legend_entry_width(e) > x_max) { x = x0; y += 16; }
    at.emplace_back(x, y);
    if (column) y += 16;
    else x += legend_entry_width(e);
  }
  return at;
}

void draw_legend(std::ostream& o, const std::vector<LegendEntry>& es, const std::vector<std::pair<double, double>>& at) {
  o << "<g class=\"legend\" font-size=\"11\" fill=\"#333\">\n";
  for (std::size_t i = 0; i < es.size(); ++i) {
    const auto& e = es[i];
    const double x = at[i].first, y = at[i].second, mid = y - 4;
    o << "<g class=\"legend-entry\">";
    switch (e.swatch) {
      case Swatch::kMarker: draw_marker(o, e.index, x + 7, mid, e.text, "swatch"); break;
      case Swatch::kBlock:
        o << "<rect x=\"" << num(x) << "\" y=\"" << num(mid - 5) << "\" width=\"14\" height=\"10\" fill=\"" << colour(e.index) << "\"/>";
        break;
      case Swatch::kDashed:
        o << "<line x1=\"" << num(x) << "\" y1=\"" << num(mid) << "\" x2=\"" << num(x + 14) << "\" y2=\"" << num(mid) << "\" stroke=\"" << e.stroke
          << "\" stroke-width=\"2\" stroke-dasharray=\"4 3\"/>";
        break;
      case Swatch::kBand:
        o << "<rect x=\"" << num(x) << "\" y=\"" << num(mid - 5) << "\" width=\"14\" height=\"10\" fill=\"#999\" fill-opacity=\"0.3\"/>";
        break;
    }
    o << "<text x=\"" << num(x + 18) << "\" y=\"" << num(y) << "\">" << xml_escape(e.text) << "</text></g>\n";
  }
  o << "</g>\n";
}

double legend_column_width(const std::vector<LegendEntry>& es, double width) {
  double w = 0;
  for (const auto& e : es) w = std::max(w, legend_entry_width(e));
  return std::min(w + 10, width / 3);
}

struct Pt {
  double x, y;
};

// Sutherland-Hodgman: the part of a convex polygon inside the plot area (pixel coordinates).
std::vector<Pt> clip_to_area(std::vector<Pt> poly, const PlotArea& a) {
  struct Edge {
    bool vertical;  // compares x (true) or y (false)
    double bound;
    bool keep_above;
  };
  for (const Edge& e : {Edge{true, a.left, true}, Edge{true, a.right, false}, Edge{false, a.top, true}, Edge{false, a.bottom, false}}) {
    auto coord = [&](const Pt& p) { return e.vertical ? p.x : p.y; };
    auto inside = [&](const Pt& p) { return e.keep_above ? coord(p) >= e.bound : coord(p) <= e.bound; };
    std::vector<Pt> out;
    for (std::size_t i = 0; i < poly.size(); ++i) {
      const Pt& p = poly[i];
      const Pt& q = poly[(i + 1) % poly.size()];
      if (inside(p)) out.push_back(p);
      if (inside(p) != inside(q)) {
        const double t = (e.bound - coord(p)) / (coord(q) - coord(p));
        out.push_back({p.x + t * (q.x - p.x), p.y + t * (q.y - p.y)});
      }
    }
    poly = std::move(out);
  }
  return poly;
}

// Layout shared by the two horizontal bar charts: category names left, value labels right. Very
// long texts get at most 40% (names) and 30% (values) of the width and run past the edge.
PlotArea bar_area(double width, double top, std::size_t num_bars, const std::vector<std::string>& names,
                  const std::vector<std::string>& values, bool has_category_label) {
  double name_w = 0, value_w = 0;
  for (const auto& s : names) name_w = std::max(name_w, text_width(s));
  for (const auto& s : values) value_w = std::max(value_w, text_width(s));
  const double left = std::min(std::max(name_w + 12 + (has_category_label ? 22 : 0), 60.0), 0.4 * width);
  const double right = width - std::min(std::max(value_w + 12, kMarginRight), 0.3 * width);
  return {left, top, right, top + kBarBand * static_cast<double>(num_bars)};
}

void draw_category_names(std::ostream& o, const PlotArea& a, const std::vector<std::string>& names) {
  o << "<g class=\"categories\" font-size=\"11\" fill=\"#333\">\n";
  for (std::size_t i = 0; i < names.size(); ++i)
    o << "<text x=\"" << num(a.left - 6) << "\" y=\"" << num(a.top + kBarBand * (static_cast<double>(i) + 0.5) + 4) << "\" text-anchor=\"end\">"
      << xml_escape(names[i]) << "</text>\n";
  o << "</g>\n";
}

}  // namespace

std::string svg_roofline(const RooflineChart& c) {
  const double W = c.width, H = c.height;
  for (const auto& r : c.roofs) {
    check_finite(r.peak_gflops, c.title);
    DEEPFIT_ASSERT(r.peak_gflops > 0, "compute roof must be > 0 GFLOP/s in chart " + c.title);
  }
  for (const auto& p : c.points) {
    check_finite(p.intensity_flop_per_byte, c.title);
    check_finite(p.achieved_gflops, c.title);
    DEEPFIT_ASSERT(p.intensity_flop_per_byte > 0 && p.achieved_gflops > 0, "roofline point must be > 0 on both axes in chart " + c.title);
  }
  if (c.bandwidth_gbps) {
    check_finite(*c.bandwidth_gbps, c.title);
    DEEPFIT_ASSERT(*c.bandwidth_gbps > 0, "bandwidth roof must be > 0 GB/s in chart " + c.title);
  }
  if (!c.bandwidth_gbps || c.roofs.empty()) return no_data(W, H, c.title, c.no_data_reason, "no bandwidth or compute roof given");
  const double bw_gbps = *c.bandwidth_gbps;

  // Roofs with equal peaks (bf16 and fp16, say) share one ridge and one label: "bf16, fp16 989 TFLOP/s".
  struct Level {
    double peak_gflops;
    std::string labels;
  };
  std::vector<Level> levels;
  for (const auto& r : c.roofs) levels.push_back({r.peak_gflops, r.label});
  std::stable_sort(levels.begin(), levels.end(), [](const Level& a, const Level& b) { return a.peak_gflops > b.peak_gflops; });
  std::vector<Level> merged;
  for (const auto& l : levels) {
    if (!merged.empty() && merged.back().peak_gflops == l.peak_gflops) merged.back().labels += ", " + l.labels;
    else merged.push_back(l);
  }
  const double peak_max = merged.front().peak_gflops, peak_min = merged.back().peak_gflops;

  // Axes cover the roofs and points, with at least two decades of the bandwidth slope below the
  // lowest ridge and one decade of flat roof beyond the highest.
  double x_min = peak_min / bw_gbps / 100, x_max = peak_max / bw_gbps * 10, y_min = peak_min / 100, y_max = peak_max * 2;
  for (const auto& p : c.points) {
    x_min = std::min(x_min, p.intensity_flop_per_byte / 2);
    x_max = std::max(x_max, p.intensity_flop_per_byte * 2);
    y_min = std::min(y_min, p.achieved_gflops / 2);
    y_max = std::max(y_max, p.achieved_gflops * 2);
  }
  // GFLOP/s, or TFLOP/s once ticks would need exponents (>= 1e5 GFLOP/s).
  const bool tera = y_max / 2 >= 1e5;  // y_max is twice the largest value
  const double scale = tera ? 1e-3 : 1;
  const std::string unit = tera ? "TFLOP/s" : "GFLOP/s";

  std::vector<LegendEntry> legend;
  for (std::size_t k = 0; k < c.points.size(); ++k) legend.push_back({c.points[k].label, Swatch::kMarker, k});
  const double legend_w = legend.empty() ? 0 : legend_column_width(legend, W);
  const PlotArea area{kMarginLeft, kMarginTop, W - kMarginRight - legend_w, H - kMarginBottom};
  const Axis x = svg_detail::make_axis(x_min, x_max, true, area.left, area.right);
  const Axis y = svg_detail::make_axis(y_min * scale, y_max * scale, true, area.bottom, area.top);

  std::ostringstream o;
  svg_detail::open_svg(o, W, H, c.title);
  svg_detail::draw_axis_lines(o, area);
  svg_detail::draw_ticks(o, area, &x, true, &y);
  svg_detail::draw_x_label(o, area, H, "arithmetic intensity (FLOP/byte)", true);
  svg_detail::draw_y_label(o, area, "compute rate (" + unit + ")", true);

  // The diagonal rises from where it enters the plot to the highest ridge; each compute roof
  // runs from its own ridge to the right edge.
  const double bw_scaled = bw_gbps * scale;
  const double d0 = std::max(x.map.lo, y.map.lo / bw_scaled), d1 = peak_max / bw_gbps;
  const Pt p0{x.map(d0), y.map(bw_scaled * d0)}, p1{x.map(d1), y.map(peak_max * scale)};
  const double angle = std::atan2(p1.y - p0.y, p1.x - p0.x) * 180 / std::numbers::pi;
  const Pt mid{(p0.x + p1.x) / 2, (p0.y + p1.y) / 2 - 5};
  o << "<g class=\"roofs\" stroke=\"#444\" stroke-width=\"2\" fill=\"none\">\n";
  o << "<line class=\"roof bandwidth\" x1=\"" << num(p0.x) << "\" y1=\"" << num(p0.y) << "\" x2=\"" << num(p1.x) << "\" y2=\"" << num(p1.y)
    << "\"/>\n";
  for (const auto& r : c.roofs)
    o << "<line class=\"roof compute\" x1=\"" << num(x.map(r.peak_gflops / bw_gbps)) << "\" y1=\"" << num(y.map(r.peak_gflops * scale))
      << "\" x2=\"" << num(area.right) << "\" y2=\"" << num(y.map(r.peak_gflops * scale)) << "\"/>\n";
  o << "</g>\n<g class=\"roof-labels\" font-size=\"11\" fill=\"#333\">\n";
  o << "<text x=\"" << num(mid.x) << "\" y=\"" << num(mid.y) << "\" text-anchor=\"middle\" transform=\"rotate(" << num(angle) << " "
    << num(mid.x) << " " << num(mid.y) << ")\">" << xml_escape(c.bandwidth_label + " " + value_label(bw_gbps) + " GB/s") << "</text>\n";
  // Compute roof labels sit above their line at the right edge, pushed down when the roof above
  // is too close for both to be read.
  double prev_y = -INFINITY;
  for (const auto& l : merged) {
    const double ty = std::max(y.map(l.peak_gflops * scale) - 5, prev_y + 13);
    o << "<text x=\"" << num(area.right - 4) << "\" y=\"" << num(ty) << "\" text-anchor=\"end\">"
      << xml_escape(l.labels + " " + value_label(l.peak_gflops * scale) + " " + unit) << "</text>\n";
    prev_y = ty;
  }
  // Ridge labels go up and left of their point: above the bandwidth roof, where nothing
  // measured can be.
  o << "</g>\n<g class=\"ridges\" font-size=\"10\" fill=\"#666\">\n";
  for (const auto& l : merged) {
    const double ridge = l.peak_gflops / bw_gbps, rx = x.map(ridge), ry = y.map(l.peak_gflops * scale);
    o << "<circle class=\"ridge\" cx=\"" << num(rx) << "\" cy=\"" << num(ry) << "\" r=\"3\" fill=\"#fff\" stroke=\"#444\">"
      << tooltip(l.labels + " ridge point: " + value_label(ridge) + " FLOP/byte") << "</circle>"
      << "<text x=\"" << num(rx - 7) << "\" y=\"" << num(ry - 3) << "\" text-anchor=\"end\">ridge " << value_label(ridge) << " FLOP/byte</text>\n";
  }
  o << "</g>\n<g class=\"series\" data-label=\"measured\">\n";
  for (std::size_t k = 0; k < c.points.size(); ++k) {
    const auto& p = c.points[k];
    draw_marker(o, k, x.map(p.intensity_flop_per_byte), y.map(p.achieved_gflops * scale),
                p.label + ": " + value_label(p.intensity_flop_per_byte) + " FLOP/byte, " + value_label(p.achieved_gflops * scale) + " " + unit);
  }
  o << "</g>\n";
  if (!legend.empty()) draw_legend(o, legend, legend_layout(legend, area.right + 16, area.top + 10, W, true));
  o << "</svg>\n";
  return o.str();
}

std::string svg_bar_chart(const BarChart& c) {
  const double W = c.width;
  for (const auto& b : c.bars) {
    check_finite(b.value, c.title);
    DEEPFIT_ASSERT(b.value >= 0, "bar value must be >= 0 in chart " + c.title);
  }
  if (c.bars.empty()) return no_data(W, kMarginTop + kMarginBottom + 40, c.title, c.no_data_reason, "no bars");
  std::vector<Bar> bars = c.bars;
  std::stable_sort(bars.begin(), bars.end(), [](const Bar& a, const Bar& b) { return a.value < b.value; });
  const double v_min = bars.front().value, v_max = bars.back().value;
  const bool log = use_log(c.scale, v_min, v_max, c.title);

  std::vector<std::string> names, values;
  for (const auto& b : bars) {
    names.push_back(b.label);
    values.push_back(with_unit(value_label(b.value), c.unit));
  }
  const PlotArea area = bar_area(W, kMarginTop, bars.size(), names, values, !c.category_label.empty());
  const double H = area.bottom + kMarginBottom;
  // A log axis starts below the smallest value so that its bar still has a length.
  const Axis x = log ? svg_detail::make_axis(v_min / 2, v_max, true, area.left, area.right)
                     : svg_detail::make_axis(0, v_max > 0 ? v_max : 1, false, area.left, area.right);

  std::ostringstream o;
  svg_detail::open_svg(o, W, H, c.title);
  svg_detail::draw_ticks(o, area, &x, true, nullptr);
  svg_detail::draw_axis_lines(o, area);
  svg_detail::draw_x_label(o, area, H, axis_text(c.value_label, c.unit), log);
  if (!c.category_label.empty()) svg_detail::draw_y_label(o, area, c.category_label, false);
  draw_category_names(o, area, names);
  o << "<g class=\"series\" data-label=\"" << xml_escape(c.value_label) << "\">\n";
  for (std::size_t i = 0; i < bars.size(); ++i) {
    const double top = area.top + kBarBand * static_cast<double>(i), end = x.map(bars[i].value);
    o << "<rect class=\"bar\" x=\"" << num(area.left) << "\" y=\"" << num(top + 0.15 * kBarBand) << "\" width=\"" << num(end - area.left)
      << "\" height=\"" << num(0.7 * kBarBand) << "\" fill=\"" << colour(0) << "\">" << tooltip(names[i] + ": " + values[i]) << "</rect>\n";
    o << "<text class=\"value\" x=\"" << num(end + 4) << "\" y=\"" << num(top + 0.5 * kBarBand + 4) << "\" font-size=\"11\" fill=\"#333\">"
      << xml_escape(values[i]) << "</text>\n";
  }
  o << "</g>\n</svg>\n";
  return o.str();
}

std::string svg_stacked_bar_chart(const StackedBarChart& c) {
  const double W = c.width;
  const std::size_t num_segments = c.segment_labels.size();
  if (c.capacity) {
    check_finite(*c.capacity, c.title);
    DEEPFIT_ASSERT(*c.capacity > 0, "capacity must be > 0 in chart " + c.title);
  }
  std::vector<double> totals;
  bool any_capacity = c.capacity.has_value();
  double v_max = c.capacity.value_or(0);
  for (const auto& b : c.bars) {
    DEEPFIT_ASSERT(b.segments.size() == num_segments, "bar " + b.label + " needs one value per segment in chart " + c.title);
    double total = 0;
    for (double v : b.segments) {
      check_finite(v, c.title);
      DEEPFIT_ASSERT(v >= 0, "segment value must be >= 0 in chart " + c.title);
      total += v;
    }
    if (b.capacity) {
      check_finite(*b.capacity, c.title);
      DEEPFIT_ASSERT(*b.capacity > 0, "capacity must be > 0 in chart " + c.title);
      any_capacity = true;
      v_max = std::max(v_max, *b.capacity);
    }
    totals.push_back(total);
    v_max = std::max(v_max, total);
  }
  if (c.bars.empty()) return no_data(W, kMarginTop + kMarginBottom + 40, c.title, c.no_data_reason, "no bars");

  std::vector<LegendEntry> legend;
  for (std::size_t k = 0; k < num_segments; ++k) legend.push_back({c.segment_labels[k], Swatch::kBlock, k});
  if (any_capacity) legend.push_back({c.capacity_label, Swatch::kDashed, 0, kCapacityColour});
  const auto legend_at = legend_layout(legend, 10, kMarginTop + 12, W - 10, false);
  const double legend_bottom = legend_at.empty() ? kMarginTop : legend_at.back().second + 8;
  const double top = legend_bottom + (c.capacity ? 16 : 6);  // room for the capacity line's label

  std::vector<std::string> names, values;
  for (std::size_t i = 0; i < c.bars.size(); ++i) {
    const auto& b = c.bars[i];
    const std::optional<double> cap = b.capacity ? b.capacity : c.capacity;
    names.push_back(b.label);
    values.push_back(with_unit(value_label(totals[i]), c.unit) + (cap && totals[i] > *cap ? " (exceeds capacity)" : ""));
  }
  const PlotArea area = bar_area(W, top, c.bars.size(), names, values, !c.category_label.empty());
  const double H = area.bottom + kMarginBottom;
  const Axis x = svg_detail::make_axis(0, v_max > 0 ? v_max : 1, false, area.left, area.right);

  std::ostringstream o;
  svg_detail::open_svg(o, W, H, c.title);
  draw_legend(o, legend, legend_at);
  svg_detail::draw_ticks(o, area, &x, true, nullptr);
  svg_detail::draw_axis_lines(o, area);
  svg_detail::draw_x_label(o, area, H, axis_text(c.value_label, c.unit), false);
  if (!c.category_label.empty()) svg_detail::draw_y_label(o, area, c.category_label, false);
  draw_category_names(o, area, names);
  for (std::size_t i = 0; i < c.bars.size(); ++i) {
    const auto& b = c.bars[i];
    const double band_top = area.top + kBarBand * static_cast<double>(i);
    o << "<g class=\"series\" data-label=\"" << xml_escape(b.label) << "\">\n";
    double sum = 0;
    for (std::size_t k = 0; k < num_segments; ++k) {
      if (b.segments[k] == 0) continue;
      const double x0 = x.map(sum);
      sum += b.segments[k];
      o << "<rect class=\"segment\" x=\"" << num(x0) << "\" y=\"" << num(band_top + 0.15 * kBarBand) << "\" width=\"" << num(x.map(sum) - x0)
        << "\" height=\"" << num(0.7 * kBarBand) << "\" fill=\"" << colour(k) << "\">"
        << tooltip(b.label + ": " + c.segment_labels[k] + " " + with_unit(value_label(b.segments[k]), c.unit)) << "</rect>\n";
    }
    if (b.capacity) {
      const double cx = x.map(*b.capacity);
      o << "<line class=\"capacity\" x1=\"" << num(cx) << "\" y1=\"" << num(band_top + 0.05 * kBarBand) << "\" x2=\"" << num(cx) << "\" y2=\""
        << num(band_top + 0.95 * kBarBand) << "\" stroke=\"" << kCapacityColour << "\" stroke-width=\"2\" stroke-dasharray=\"4 3\">"
        << tooltip(b.label + ": " + c.capacity_label + " " + with_unit(value_label(*b.capacity), c.unit)) << "</line>\n";
    }
    // After the bar, or after its own capacity marker when that is further right.
    const double label_x = x.map(std::max(totals[i], b.capacity.value_or(0))) + 4;
    o << "<text class=\"value\" x=\"" << num(label_x) << "\" y=\"" << num(band_top + 0.5 * kBarBand + 4) << "\" font-size=\"11\" fill=\"#333\">"
      << xml_escape(values[i]) << "</text>\n</g>\n";
  }
  if (c.capacity) {
    const double cx = x.map(*c.capacity);
    o << "<line class=\"capacity\" x1=\"" << num(cx) << "\" y1=\"" << num(area.top) << "\" x2=\"" << num(cx) << "\" y2=\"" << num(area.bottom)
      << "\" stroke=\"" << kCapacityColour << "\" stroke-width=\"2\" stroke-dasharray=\"4 3\"/>\n";
    o << "<text x=\"" << num(cx) << "\" y=\"" << num(area.top - 4) << "\" text-anchor=\"middle\" font-size=\"10\" fill=\"" << kCapacityColour << "\">"
      << xml_escape(c.capacity_label + " " + with_unit(value_label(*c.capacity), c.unit)) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

std::string svg_scatter_chart(const ScatterChart& c) {
  const double W = c.width, H = c.height;
  if (c.error_fraction) {
    check_finite(*c.error_fraction, c.title);
    DEEPFIT_ASSERT(*c.error_fraction > 0, "error band fraction must be > 0 in chart " + c.title);
  }
  double v_min = INFINITY, v_max = 0;
  std::size_t num_points = 0;
  for (const auto& s : c.series)
    for (const auto& p : s.points) {
      check_finite(p.measured, c.title);
      check_finite(p.predicted, c.title);
      DEEPFIT_ASSERT(p.measured >= 0 && p.predicted >= 0, "scatter values must be >= 0 in chart " + c.title);
      v_min = std::min({v_min, p.measured, p.predicted});
      v_max = std::max({v_max, p.measured, p.predicted});
      ++num_points;
    }
  if (num_points == 0) return no_data(W, H, c.title, c.no_data_reason, "no points");
  const bool log = use_log(c.scale, v_min, v_max, c.title);

  std::vector<LegendEntry> legend;
  if (c.series.size() > 1)
    for (std::size_t k = 0; k < c.series.size(); ++k) legend.push_back({c.series[k].label, Swatch::kMarker, k});
  legend.push_back({"y = x", Swatch::kDashed});
  std::string band_text;
  if (c.error_fraction) {
    band_text = c.error_label.empty() ? "y = x \u00b1 " + value_label(*c.error_fraction * 100) + "%" : c.error_label;
    legend.push_back({band_text, Swatch::kBand});
  }
  const double legend_w = legend_column_width(legend, W);
  // A square plot, so that y = x is the diagonal.
  const double side = std::min(W - kMarginLeft - kMarginRight - legend_w, H - kMarginTop - kMarginBottom);
  const PlotArea area{kMarginLeft, kMarginTop, kMarginLeft + side, kMarginTop + side};
  double lo = log ? v_min : 0, hi = v_max;
  if (hi == lo) {
    lo = log ? lo / 2 : lo;
    hi = log ? hi * 2 : hi + 1;
  }
  const Axis x = svg_detail::make_axis(lo, hi, log, area.left, area.right);
  const Axis y = svg_detail::make_axis(lo, hi, log, area.bottom, area.top);
  const double a_lo = x.map.lo, a_hi = x.map.hi;

  std::ostringstream o;
  svg_detail::open_svg(o, W, H, c.title);
  svg_detail::draw_axis_lines(o, area);
  svg_detail::draw_ticks(o, area, &x, true, &y);
  svg_detail::draw_x_label(o, area, area.bottom + kMarginBottom, axis_text("measured " + c.quantity, c.unit), log);
  svg_detail::draw_y_label(o, area, axis_text("predicted " + c.quantity, c.unit), log);
  if (c.error_fraction) {
    const double e = *c.error_fraction;
    std::vector<Pt> band{{x.map(a_lo), y.map(a_lo * (1 + e))}, {x.map(a_hi), y.map(a_hi * (1 + e))}};
    if (log && e >= 1) {
      band.push_back({x.map(a_hi), area.bottom});
      band.push_back({x.map(a_lo), area.bottom});
    } else {
      band.push_back({x.map(a_hi), y.map(a_hi * (1 - e))});
      band.push_back({x.map(a_lo), y.map(a_lo * (1 - e))});
    }
    o << "<polygon class=\"band\" points=\"";
    const auto clipped = clip_to_area(band, area);
    for (std::size_t i = 0; i < clipped.size(); ++i) o << (i ? " " : "") << num(clipped[i].x) << "," << num(clipped[i].y);
    o << "\" fill=\"#999\" fill-opacity=\"0.3\" stroke=\"none\">" << tooltip(band_text) << "</polygon>\n";
  }
  o << "<line class=\"identity\" x1=\"" << num(x.map(a_lo)) << "\" y1=\"" << num(y.map(a_lo)) << "\" x2=\"" << num(x.map(a_hi)) << "\" y2=\""
    << num(y.map(a_hi)) << "\" stroke=\"#333\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>\n";
  for (std::size_t k = 0; k < c.series.size(); ++k) {
    const auto& s = c.series[k];
    o << "<g class=\"series\" data-label=\"" << xml_escape(s.label) << "\">\n";
    for (const auto& p : s.points) {
      std::string tip = (p.label.empty() ? s.label : p.label) + ": measured " + with_unit(value_label(p.measured), c.unit) + ", predicted " +
                        with_unit(value_label(p.predicted), c.unit);
      if (p.measured > 0) tip += " (" + value_label((p.predicted / p.measured - 1) * 100) + "%)";
      draw_marker(o, k, x.map(p.measured), y.map(p.predicted), tip);
    }
    o << "</g>\n";
  }
  draw_legend(o, legend, legend_layout(legend, area.right + 16, area.top + 10, W, true));
  o << "</svg>\n";
  return o.str();
}

}  // namespace deepfit::reports
