// Table rendering (text, Markdown, CSV).
#include "reports/table.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "kernels/error.h"

namespace deepfit::reports {

Format parse_format(const std::string& text) {
  if (text == "table") return Format::kTable;
  if (text == "json") return Format::kJson;
  if (text == "md") return Format::kMarkdown;
  if (text == "csv") return Format::kCsv;
  throw InputError("--format: unknown format '" + text + "' (expected table, json, md or csv)");
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string coloured(const std::string& text, Colour c) {
  const char* code = c == Colour::kRed ? "31" : c == Colour::kGreen ? "32" : "33";
  return std::string("\x1b[") + code + "m" + text + "\x1b[0m";
}

std::string gb(double bytes) { return fixed(bytes / 1e9, bytes < 10e9 ? 2 : 1); }

namespace {

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::size_t display_width(const std::string& s) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\x1b') {  // ANSI colour sequence: ESC [ ... m takes no columns
      while (i < s.size() && s[i] != 'm') ++i;
      continue;
    }
    n += (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80;  // count UTF-8 code points
  }
  return n;
}

}  // namespace

std::string render(const Table& t, Format f) {
  std::ostringstream out;
  const std::size_t ncol = t.headers.size();
  for (const auto& r : t.rows) DEEPFIT_ASSERT(r.size() == ncol, "table row width differs from its header");
  if (f == Format::kCsv) {
    const auto& rows = t.csv_rows.empty() ? t.rows : t.csv_rows;
    for (std::size_t c = 0; c < ncol; ++c) out << (c ? "," : "") << csv_cell(t.headers[c]);
    out << "\n";
    for (const auto& r : rows) {
      for (std::size_t c = 0; c < r.size(); ++c) out << (c ? "," : "") << csv_cell(r[c]);
      out << "\n";
    }
    return out.str();
  }
  std::vector<std::size_t> w(ncol, 0);
  for (std::size_t c = 0; c < ncol; ++c) w[c] = display_width(t.headers[c]);
  for (const auto& r : t.rows)
    for (std::size_t c = 0; c < ncol; ++c) w[c] = std::max(w[c], display_width(r[c]));
  auto right = [&](std::size_t c) { return c < t.right_align.size() && t.right_align[c]; };
  auto cell = [&](const std::string& s, std::size_t c) {
    std::string pad(w[c] - display_width(s), ' ');
    return right(c) ? pad + s : s + pad;
  };
  const bool md = f == Format::kMarkdown;
  auto line = [&](const std::vector<std::string>& r) {
    if (md) out << "| ";
    for (std::size_t c = 0; c < ncol; ++c) out << cell(r[c], c) << (c + 1 < ncol ? (md ? " | " : "  ") : "");
    if (md) out << " |";
    // Trailing spaces make golden files fragile; strip them from text tables.
    std::string s = out.str();
    if (!md) {
      while (!s.empty() && s.back() == ' ') s.pop_back();
      out.str("");
      out << s;
    }
    out << "\n";
  };
  line(t.headers);
  if (md) {
    out << "|";
    for (std::size_t c = 0; c < ncol; ++c) out << (right(c) ? std::string(w[c] + 1, '-') + ":|" : std::string(w[c] + 2, '-') + "|");
    out << "\n";
  } else {
    std::vector<std::string> dashes;
    for (std::size_t c = 0; c < ncol; ++c) dashes.push_back(std::string(w[c], '-'));
    line(dashes);
  }
  for (const auto& r : t.rows) line(r);
  return out.str();
}

}  // namespace deepfit::reports
