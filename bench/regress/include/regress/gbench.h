// Reader for Google Benchmark JSON (1.7 and later: plain runs, repetitions, aggregate rows,
// custom counters, any time unit) and deepfit's own JSON records (for prediction drift).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace deepfit::regress {

struct Series {
  std::string name;                  // run_name: the benchmark without aggregate suffixes
  std::vector<double> real_ns;       // one value per repetition (iteration rows), in nanoseconds
  std::vector<double> cpu_ns;
  std::optional<double> aggregate_median_ns;  // from an aggregate row, when only aggregates were written
  std::map<std::string, std::vector<double>> counters;  // user counters per repetition
  bool error = false;
  std::string error_message;
};

struct BenchFile {
  std::string path;
  bool is_records = false;   // a deepfit fit/predict/validate document, not Google Benchmark JSON
  nlohmann::json context;    // Google Benchmark "context" (machine, build, deepfit provenance)
  nlohmann::json records;    // is_records: the whole document
  std::vector<Series> series;  // in file order
};

// Throws InputError naming the file and JSON path: malformed JSON, no benchmarks, unknown time
// units, missing or mistyped fields.
BenchFile read_bench_file(const std::string& path);
BenchFile parse_bench_json(const nlohmann::json& j, const std::string& origin);

// Nanoseconds per unit for Google Benchmark's time_unit values; InputError for others.
double ns_per_unit(const std::string& unit, const std::string& where);

}  // namespace deepfit::regress
