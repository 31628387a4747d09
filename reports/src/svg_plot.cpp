// SVG line charts, the HTML page around them, and the axis helpers (svg_axes.h) that the other
// charts in svg_charts.cpp share.
#include "reports/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "kernels/error.h"
#include "svg_axes.h"

namespace deepfit::reports {
namespace svg_detail {

const char* colour(std::size_t k) {
  static const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  return kColours[k % 8];
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string tick_label(double v) {
  char buf[32];
  const double a = std::fabs(v);
  if (a != 0 && (a >= 1e6 || a < 1e-3)) std::snprintf(buf, sizeof buf, "%.0e", v);
  else std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

double AxisMap::operator()(double v) const {
  const double a = log ? std::log10(v) : v, l = log ? std::log10(lo) : lo, h = log ? std::log10(hi) : hi;
  return p_lo + (a - l) / (h - l) * (p_hi - p_lo);
}

Axis make_axis(double lo, double hi, bool log, double p_lo, double p_hi) {
  Axis a{{lo, hi, log, p_lo, p_hi}, ticks(lo, hi, log)};
  a.map.lo = std::min(lo, a.ticks.front());
  a.map.hi = std::max(hi, a.ticks.back());
  DEEPFIT_ASSERT(a.map.hi > a.map.lo, "axis range is empty");
  return a;
}

void open_svg(std::ostream& o, double width, double height, const std::string& title) {
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height << "\" viewBox=\"0 0 " << width
    << " " << height << "\" role=\"img\" aria-label=\"" << xml_escape(title) << "\">\n";
  o << "<text x=\"" << num(width / 2) << "\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">" << xml_escape(title) << "</text>\n";
}

void close_with_no_data(std::ostream& o, double width, double height, const std::string& text) {
  o << "<text class=\"no-data\" x=\"" << num(width / 2) << "\" y=\"" << num(height / 2) << "\" text-anchor=\"middle\">"
    << xml_escape(text) << "</text>\n</svg>\n";
}

void draw_axis_lines(std::ostream& o, const PlotArea& a) {
  o << "<g class=\"axes\" stroke=\"#333\" fill=\"none\"><line x1=\"" << a.left << "\" y1=\"" << a.bottom << "\" x2=\"" << a.right
    << "\" y2=\"" << a.bottom << "\"/><line x1=\"" << a.left << "\" y1=\"" << a.top << "\" x2=\"" << a.left << "\" y2=\"" << a.bottom
    << "\"/></g>\n";
}

void draw_ticks(std::ostream& o, const PlotArea& a, const Axis* x, bool x_grid, const Axis* y) {
  o << "<g class=\"ticks\" font-size=\"11\" fill=\"#333\">\n";
  if (x)
    for (double v : x->ticks) {
      o << "<text x=\"" << num(x->map(v)) << "\" y=\"" << num(a.bottom + 16) << "\" text-anchor=\"middle\">" << tick_label(v) << "</text>\n";
      if (x_grid)
        o << "<line x1=\"" << num(x->map(v)) << "\" y1=\"" << a.top << "\" x2=\"" << num(x->map(v)) << "\" y2=\"" << a.bottom
          << "\" stroke=\"#eee\"/>\n";
    }
  if (y)
    for (double v : y->ticks) {
      o << "<text x=\"" << num(a.left - 6) << "\" y=\"" << num(y->map(v) + 4) << "\" text-anchor=\"end\">" << tick_label(v) << "</text>\n";
      o << "<line x1=\"" << a.left << "\" y1=\"" << num(y->map(v)) << "\" x2=\"" << a.right << "\" y2=\"" << num(y->map(v))
        << "\" stroke=\"#eee\"/>\n";
    }
  o << "</g>\n";
}

void draw_x_label(std::ostream& o, const PlotArea& a, double height, const std::string& label, bool log) {
  o << "<text class=\"x-label\" x=\"" << num((a.left + a.right) / 2) << "\" y=\"" << num(height - 10)
    << "\" text-anchor=\"middle\" font-size=\"12\">" << xml_escape(label) << (log ? " (log scale)" : "") << "</text>\n";
}

void draw_y_label(std::ostream& o, const PlotArea& a, const std::string& label, bool log) {
  o << "<text class=\"y-label\" transform=\"translate(16," << num((a.top + a.bottom) / 2)
    << ") rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">" << xml_escape(label) << (log ? " (log scale)" : "") << "</text>\n";
}

}  // namespace svg_detail

using svg_detail::num;

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::vector<double> ticks(double lo, double hi, bool log_scale) {
  std::vector<double> t;
  if (log_scale) {
    DEEPFIT_ASSERT(lo > 0 && hi > 0, "log axis needs positive values");
    for (double p = std::floor(std::log10(lo)); p <= std::ceil(std::log10(hi)); ++p) t.push_back(std::pow(10.0, p));
    return t;
  }
  if (hi <= lo) return {lo};
  const double raw = (hi - lo) / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / mag < 2 ? 2 * mag : raw / mag < 5 ? 5 * mag : 10 * mag;
  // From the multiple of step at or below lo to the first one at or above hi.
  for (double v = std::floor(lo / step) * step;; v += step) {
    t.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
    if (v >= hi - step * 1e-9) break;
  }
  return t;
}

std::string svg_line_chart(const LineChart& c) {
  std::ostringstream o;
  const double W = c.width, H = c.height, ml = 70, mr = 20, mt = 30, mb = 50;
  svg_detail::open_svg(o, W, H, c.title);
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  std::size_t points = 0;
  for (const auto& s : c.series) {
    DEEPFIT_ASSERT(s.x.size() == s.y.size(), "series x and y differ in length");
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      DEEPFIT_ASSERT(std::isfinite(s.x[i]) && std::isfinite(s.y[i]), "non-finite value in chart " + c.title);
      if ((c.log_x && s.x[i] <= 0) || (c.log_y && s.y[i] <= 0)) continue;
      xlo = std::min(xlo, s.x[i]);
      xhi = std::max(xhi, s.x[i]);
      ylo = std::min(ylo, s.y[i]);
      yhi = std::max(yhi, s.y[i]);
      ++points;
    }
  }
  if (points == 0) {
    svg_detail::close_with_no_data(o, W, H, "no data to plot");
    return o.str();
  }
  if (!c.log_y) ylo = std::min(ylo, 0.0);
  if (xhi == xlo) { xlo -= c.log_x ? xlo / 2 : 1; xhi += c.log_x ? xhi : 1; }
  if (yhi == ylo) { yhi += c.log_y ? yhi : std::max(1.0, std::fabs(yhi) * 0.1); }
  const svg_detail::PlotArea area{ml, mt, W - mr, H - mb};
  const auto x = svg_detail::make_axis(xlo, xhi, c.log_x, area.left, area.right);
  const auto y = svg_detail::make_axis(ylo, yhi, c.log_y, area.bottom, area.top);
  const auto& fx = x.map;
  const auto& fy = y.map;
  svg_detail::draw_axis_lines(o, area);
  svg_detail::draw_ticks(o, area, &x, false, &y);
  svg_detail::draw_x_label(o, area, H, c.x_label, c.log_x);
  svg_detail::draw_y_label(o, area, c.y_label, c.log_y);
  for (double m : c.markers_x)
    if (std::isfinite(m) && m >= fx.lo && m <= fx.hi)
      o << "<line class=\"marker\" x1=\"" << num(fx(m)) << "\" y1=\"" << mt << "\" x2=\"" << num(fx(m)) << "\" y2=\"" << H - mb
        << "\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>\n";
  for (std::size_t k = 0; k < c.series.size(); ++k) {
    const auto& s = c.series[k];
    const char* col = svg_detail::colour(k);
    o << "<g class=\"series\" data-label=\"" << xml_escape(s.label) << "\">";
    std::string path;
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if ((c.log_x && s.x[i] <= 0) || (c.log_y && s.y[i] <= 0)) continue;
      path += (path.empty() ? "M" : " L") + num(fx(s.x[i])) + " " + num(fy(s.y[i]));
      o << "<circle cx=\"" << num(fx(s.x[i])) << "\" cy=\"" << num(fy(s.y[i])) << "\" r=\"3\" fill=\"" << col << "\"/>";
    }
    o << "<path d=\"" << path << "\" fill=\"none\" stroke=\"" << col << "\" stroke-width=\"2\"/></g>\n";
    o << "<text class=\"legend\" x=\"" << num(ml + 10) << "\" y=\"" << num(mt + 14 + 14 * static_cast<double>(k)) << "\" font-size=\"11\" fill=\""
      << col << "\">" << xml_escape(s.label) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

std::string html_page(const std::string& title, const std::vector<HtmlSection>& sections) {
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" << xml_escape(title)
    << "</title>\n<style>body{font-family:sans-serif;margin:2em;color:#222}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}"
       "svg{background:#fff;border:1px solid #ddd}</style></head>\n<body>\n<h1>"
    << xml_escape(title) << "</h1>\n";
  for (const auto& s : sections) {
    o << "<section><h2>" << xml_escape(s.heading) << "</h2>\n";
    if (!s.text.empty()) o << "<p>" << xml_escape(s.text) << "</p>\n";
    o << s.svg << "</section>\n";
  }
  o << "</body></html>\n";
  return o.str();
}

}  // namespace deepfit::reports
