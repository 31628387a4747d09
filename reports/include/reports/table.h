// A plain table rendered as aligned text, GitHub Markdown or CSV. Cells are strings already
// formatted by the caller; CSV cells carry plain SI numbers. No colour here (the CLI decides).
#pragma once

#include <string>
#include <vector>

namespace deepfit::reports {

enum class Format { kTable, kJson, kMarkdown, kCsv };
Format parse_format(const std::string& text);  // InputError naming --format

struct Table {
  std::vector<std::string> headers;
  std::vector<std::vector<std::string>> rows;      // display cells (table, Markdown)
  std::vector<std::vector<std::string>> csv_rows;  // plain numbers (CSV); empty: use rows
  std::vector<bool> right_align;                   // per column; numbers right-aligned
};

std::string render(const Table& t, Format f);

// ANSI colour for a terminal cell; callers use it only when stdout is a TTY and NO_COLOR is unset.
enum class Colour { kRed, kGreen, kYellow };
std::string coloured(const std::string& text, Colour c);

// Formatting helpers: bytes as GB (1e9) with one or two decimals; "n/a" for missing values.
std::string gb(double bytes);
std::string fixed(double v, int decimals);

}  // namespace deepfit::reports
