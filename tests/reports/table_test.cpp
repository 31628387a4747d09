// Table rendering: golden text for the three text formats.
#include "reports/table.h"

#include <gtest/gtest.h>

#include "kernels/error.h"

namespace deepfit::reports {
namespace {

Table sample() {
  Table t;
  t.headers = {"quant", "GB"};
  t.rows = {{"q4_k_m", "404.5"}, {"fp8", "689.4"}};
  t.csv_rows = {{"q4_k_m", "404490000000"}, {"fp8", "689400000000"}};
  t.right_align = {false, true};
  return t;
}

TEST(Table, TextAlignsColumns) {
  EXPECT_EQ(render(sample(), Format::kTable),
            "quant      GB\n"
            "------  -----\n"
            "q4_k_m  404.5\n"
            "fp8     689.4\n");
}

TEST(Table, MarkdownIsGithubFlavoured) {
  EXPECT_EQ(render(sample(), Format::kMarkdown),
            "| quant  |    GB |\n"
            "|--------|------:|\n"
            "| q4_k_m | 404.5 |\n"
            "| fp8    | 689.4 |\n");
}

TEST(Table, CsvCarriesPlainNumbersAndQuotes) {
  Table t = sample();
  t.csv_rows.push_back({"a,b", "1"});
  t.rows.push_back({"a,b", "1"});
  EXPECT_EQ(render(t, Format::kCsv), "quant,GB\nq4_k_m,404490000000\nfp8,689400000000\n\"a,b\",1\n");
}

TEST(Table, UnknownFormatIsRejected) { EXPECT_THROW(parse_format("xml"), InputError); }

}  // namespace
}  // namespace deepfit::reports

namespace deepfit::reports {
namespace {

TEST(Table, ColourCodesTakeNoColumns) {
  Table t;
  t.headers = {"fits", "x"};
  t.rows = {{coloured("NO", Colour::kRed), "1"}, {"yes", "2"}};
  // "NO" pads to the width of "fits" exactly as a plain cell would.
  EXPECT_EQ(render(t, Format::kTable), "fits  x\n----  -\n\x1b[31mNO\x1b[0m    1\nyes   2\n");
}

}  // namespace
}  // namespace deepfit::reports
