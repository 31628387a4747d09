// `deepfit history`: benchmark runs stored in an embedded SQLite database (one run per added
// file, with its machine and build context), and step-change detection over a benchmark's runs.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "regress/gbench.h"

namespace deepfit::regress {

struct RunInfo {
  std::int64_t id = 0;
  std::string added_utc, commit, source, machine;
};

struct Point {  // one run of one benchmark
  RunInfo run;
  std::vector<double> real_ns;
  double median_ns = 0;
};

struct StepChange {
  std::size_t index = 0;     // first point after the change
  double change_pct = 0;     // median after / median before - 1
  double p_value = 1;
};

class HistoryDb {
 public:
  // Opens (creating if needed) the database. A locked, unreadable or corrupt file is an
  // InputError naming the path and SQLite's reason; nothing stored is touched.
  static HistoryDb open(const std::string& path);
  HistoryDb(HistoryDb&&) noexcept;
  HistoryDb& operator=(HistoryDb&&) noexcept;
  ~HistoryDb();

  // Stores one run in a single transaction. The same content added twice is an InputError
  // ("already stored as run N"). Returns the new run id.
  std::int64_t add(const BenchFile& file, const std::string& content, const std::string& commit);
  std::vector<std::string> benchmarks() const;
  std::vector<Point> series(const std::string& benchmark) const;

  struct Impl;  // SQLite handle; defined in history.cpp

 private:
  explicit HistoryDb(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Change points in a series by binary segmentation: the split with the smallest Mann-Whitney
// p-value over the repetitions on each side, kept when p < alpha and the medians differ by more
// than threshold_pct; then each side is searched again.
std::vector<StepChange> step_changes(const std::vector<Point>& points, double threshold_pct, double alpha);

// 64-bit FNV-1a of a byte string, hex; identifies a run's content for duplicate detection.
std::string content_hash(const std::string& bytes);

}  // namespace deepfit::regress
