// Reading Google Benchmark JSON fixtures (written in tests/fixtures/bench/ in the 1.7 layout),
// comparing them, and the SQLite history.
#include "regress/gbench.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "regress/compare.h"
#include "regress/history.h"

namespace deepfit::regress {
namespace {

using testing::HasSubstr;

std::string fixture(const std::string& name) { return std::string(DEEPFIT_SOURCE_DIR) + "/tests/fixtures/bench/" + name; }
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(GbenchJson, GroupsRepetitionsAndKeepsAggregates) {
  BenchFile f = read_bench_file(fixture("base.json"));
  ASSERT_EQ(f.series.size(), 2u);
  EXPECT_EQ(f.series[0].name, "BM_a/x:1");
  EXPECT_EQ(f.series[0].real_ns.size(), 9u);
  EXPECT_TRUE(f.series[0].aggregate_median_ns.has_value());
  EXPECT_EQ(f.series[0].counters.at("bytes_per_second").size(), 9u);
}

TEST(GbenchJson, ConvertsTimeUnits) {
  BenchFile ns = read_bench_file(fixture("slow.json")), us = read_bench_file(fixture("slow_us.json"));
  for (std::size_t i = 0; i < 9; ++i) EXPECT_NEAR(ns.series[0].real_ns[i], us.series[0].real_ns[i], 1e-9 * ns.series[0].real_ns[i]);
}

TEST(GbenchJson, BadInputNamesFileAndPath) {
  EXPECT_THAT([] { read_bench_file(fixture("bad_unit.json")); }, testing::ThrowsMessage<InputError>(HasSubstr("unknown time_unit 'fortnights'")));
  EXPECT_THAT([] { read_bench_file(fixture("empty.json")); }, testing::ThrowsMessage<InputError>(HasSubstr("no benchmarks")));
  EXPECT_THAT([] { read_bench_file(fixture("malformed.json")); }, testing::ThrowsMessage<InputError>(HasSubstr("malformed JSON")));
}

TEST(Compare, FindsTheTwentyPercentSlowdownAndListsOneSidedBenchmarks) {
  Report r = compare(read_bench_file(fixture("base.json")), read_bench_file(fixture("slow.json")), CompareOptions{});
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.rows[0].verdict, Verdict::kRegression);
  EXPECT_NEAR(r.rows[0].change_pct, 20, 5);
  EXPECT_EQ(r.regressions, 1);
  Report same = compare(read_bench_file(fixture("base.json")), read_bench_file(fixture("same.json")), CompareOptions{});
  EXPECT_EQ(same.regressions, 0);
  EXPECT_EQ(same.only_in_base, std::vector<std::string>{"BM_gone"});
  EXPECT_EQ(same.only_in_new, std::vector<std::string>{"BM_new"});
}

TEST(Compare, ErroredBenchmarksAreReportedNotCompared) {
  Report r = compare(read_bench_file(fixture("base.json")), read_bench_file(fixture("errored.json")), CompareOptions{});
  EXPECT_EQ(r.errors, 1);
  EXPECT_EQ(r.rows[0].verdict, Verdict::kError);
}

class History : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("deepfit_history_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string db() const { return (dir_ / "h.sqlite").string(); }
  std::filesystem::path dir_;
};

TEST_F(History, StoresRunsAndRejectsDuplicates) {
  HistoryDb h = HistoryDb::open(db());
  const std::string text = slurp(fixture("base.json"));
  const BenchFile f = read_bench_file(fixture("base.json"));
  EXPECT_EQ(h.add(f, text, "abc123"), 1);
  EXPECT_THAT([&] { h.add(f, text, "abc123"); }, testing::ThrowsMessage<InputError>(HasSubstr("already stored as run 1")));
  h.add(read_bench_file(fixture("slow.json")), slurp(fixture("slow.json")), "def456");
  auto s = h.series("BM_a/x:1");
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].run.commit, "abc123");
  EXPECT_EQ(s[1].real_ns.size(), 9u);
}

TEST_F(History, CorruptDatabaseIsAClearError) {
  {
    std::ofstream out(db());
    out << "this is not a database, just text long enough to have a header page .............................";
  }
  EXPECT_THAT([&] { HistoryDb::open(db()); }, testing::ThrowsMessage<InputError>(HasSubstr("history database")));
}

TEST(StepChanges, FindsTheRunWhereTheMedianJumped) {
  std::vector<Point> pts;
  for (int r = 0; r < 6; ++r) {
    Point p;
    p.run.id = r + 1;
    const double base = r < 3 ? 100 : 125;
    for (int i = 0; i < 5; ++i) p.real_ns.push_back(base + i * 0.5);
    pts.push_back(p);
  }
  auto steps = step_changes(pts, 5, 0.05);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].index, 3u);
  EXPECT_NEAR(steps[0].change_pct, 25, 1);
  // A flat series has none.
  for (auto& p : pts) p.real_ns = {100, 100.5, 101, 99.5, 100.2};
  EXPECT_TRUE(step_changes(pts, 5, 0.05).empty());
}

}  // namespace
}  // namespace deepfit::regress
