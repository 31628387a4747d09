// SVG line charts and the HTML page around them.
#include "reports/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "kernels/error.h"

namespace deepfit::reports {
namespace {

const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

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

}  // namespace

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
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << c.width << "\" height=\"" << c.height << "\" viewBox=\"0 0 "
    << c.width << " " << c.height << "\" role=\"img\" aria-label=\"" << xml_escape(c.title) << "\">\n";
  o << "<text x=\"" << num(W / 2) << "\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">" << xml_escape(c.title) << "</text>\n";
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
    o << "<text class=\"no-data\" x=\"" << num(W / 2) << "\" y=\"" << num(H / 2) << "\" text-anchor=\"middle\">no data to plot</text>\n</svg>\n";
    return o.str();
  }
  if (!c.log_y) ylo = std::min(ylo, 0.0);
  if (xhi == xlo) { xlo -= c.log_x ? xlo / 2 : 1; xhi += c.log_x ? xhi : 1; }
  if (yhi == ylo) { yhi += c.log_y ? yhi : std::max(1.0, std::fabs(yhi) * 0.1); }
  const auto xt = ticks(xlo, xhi, c.log_x), yt = ticks(ylo, yhi, c.log_y);
  xlo = std::min(xlo, xt.front()); xhi = std::max(xhi, xt.back());
  ylo = std::min(ylo, yt.front()); yhi = std::max(yhi, yt.back());
  auto fx = [&](double v) {
    const double a = c.log_x ? std::log10(v) : v, lo = c.log_x ? std::log10(xlo) : xlo, hi = c.log_x ? std::log10(xhi) : xhi;
    return ml + (a - lo) / (hi - lo) * (W - ml - mr);
  };
  auto fy = [&](double v) {
    const double a = c.log_y ? std::log10(v) : v, lo = c.log_y ? std::log10(ylo) : ylo, hi = c.log_y ? std::log10(yhi) : yhi;
    return H - mb - (a - lo) / (hi - lo) * (H - mt - mb);
  };
  o << "<g class=\"axes\" stroke=\"#333\" fill=\"none\"><line x1=\"" << ml << "\" y1=\"" << H - mb << "\" x2=\"" << W - mr << "\" y2=\""
    << H - mb << "\"/><line x1=\"" << ml << "\" y1=\"" << mt << "\" x2=\"" << ml << "\" y2=\"" << H - mb << "\"/></g>\n";
  o << "<g class=\"ticks\" font-size=\"11\" fill=\"#333\">\n";
  for (double v : xt)
    o << "<text x=\"" << num(fx(v)) << "\" y=\"" << num(H - mb + 16) << "\" text-anchor=\"middle\">" << tick_label(v) << "</text>\n";
  for (double v : yt) {
    o << "<text x=\"" << num(ml - 6) << "\" y=\"" << num(fy(v) + 4) << "\" text-anchor=\"end\">" << tick_label(v) << "</text>\n";
    o << "<line x1=\"" << ml << "\" y1=\"" << num(fy(v)) << "\" x2=\"" << W - mr << "\" y2=\"" << num(fy(v)) << "\" stroke=\"#eee\"/>\n";
  }
  o << "</g>\n";
  o << "<text class=\"x-label\" x=\"" << num((ml + W - mr) / 2) << "\" y=\"" << num(H - 10) << "\" text-anchor=\"middle\" font-size=\"12\">"
    << xml_escape(c.x_label) << (c.log_x ? " (log scale)" : "") << "</text>\n";
  o << "<text class=\"y-label\" transform=\"translate(16," << num((mt + H - mb) / 2) << ") rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">"
    << xml_escape(c.y_label) << (c.log_y ? " (log scale)" : "") << "</text>\n";
  for (double m : c.markers_x)
    if (std::isfinite(m) && m >= xlo && m <= xhi)
      o << "<line class=\"marker\" x1=\"" << num(fx(m)) << "\" y1=\"" << mt << "\" x2=\"" << num(fx(m)) << "\" y2=\"" << H - mb
        << "\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>\n";
  for (std::size_t k = 0; k < c.series.size(); ++k) {
    const auto& s = c.series[k];
    const char* col = kColours[k % 8];
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
