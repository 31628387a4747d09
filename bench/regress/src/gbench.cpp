// Google Benchmark JSON reader (see gbench.h).
#include "regress/gbench.h"

#include "hwdb/json_check.h"
#include "kernels/error.h"

namespace deepfit::regress {

using hwdb::Json;
using hwdb::JsonWhere;

double ns_per_unit(const std::string& unit, const std::string& where) {
  if (unit == "ns") return 1;
  if (unit == "us") return 1e3;
  if (unit == "ms") return 1e6;
  if (unit == "s") return 1e9;
  throw InputError(where + ": unknown time_unit '" + unit + "' (expected ns, us, ms or s)");
}

BenchFile parse_bench_json(const Json& j, const std::string& origin) {
  JsonWhere w{origin, ""};
  hwdb::require_object(j, w);
  BenchFile f;
  f.path = origin;
  if (!j.contains("benchmarks")) {
    if (j.contains("results") || j.contains("records") || j.contains("rows")) {
      f.is_records = true;
      f.records = j;
      return f;
    }
    hwdb::json_fail(w, "neither Google Benchmark JSON (no \"benchmarks\" array) nor a deepfit result record");
  }
  if (j.contains("context")) f.context = j.at("context");
  const Json& rows = j.at("benchmarks");
  if (!rows.is_array()) hwdb::json_fail(w / "benchmarks", "expected an array");
  if (rows.empty()) hwdb::json_fail(w / "benchmarks", "no benchmarks in the file");
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Json& r = rows[i];
    JsonWhere rw = w / "benchmarks" / i;
    hwdb::require_object(r, rw);
    const std::string name = hwdb::get_string(r, rw, "name");
    const std::string run_name = r.contains("run_name") ? hwdb::get_string(r, rw, "run_name") : name;
    const std::string run_type = r.contains("run_type") ? hwdb::get_string(r, rw, "run_type") : "iteration";
    auto it = index.find(run_name);
    if (it == index.end()) {
      it = index.emplace(run_name, f.series.size()).first;
      f.series.push_back(Series{run_name, {}, {}, std::nullopt, {}, false, ""});
    }
    Series& s = f.series[it->second];
    if (r.contains("error_occurred") && r.at("error_occurred").is_boolean() && r.at("error_occurred").get<bool>()) {
      s.error = true;
      s.error_message = r.contains("error_message") && r.at("error_message").is_string() ? r.at("error_message").get<std::string>() : "error";
      continue;
    }
    const double scale = ns_per_unit(r.contains("time_unit") ? hwdb::get_string(r, rw, "time_unit") : "ns", rw.str() + "/time_unit");
    const double real = hwdb::get_number(r, rw, "real_time", 0, 1e300, "") * scale;
    const double cpu = r.contains("cpu_time") ? hwdb::get_number(r, rw, "cpu_time", 0, 1e300, "") * scale : real;
    if (run_type == "aggregate") {
      const std::string agg = r.contains("aggregate_name") ? hwdb::get_string(r, rw, "aggregate_name") : "";
      if (agg == "median") s.aggregate_median_ns = real;
      continue;
    }
    if (run_type != "iteration") hwdb::json_fail(rw / "run_type", "expected \"iteration\" or \"aggregate\", got \"" + run_type + "\"");
    s.real_ns.push_back(real);
    s.cpu_ns.push_back(cpu);
    static const char* kKnown[] = {"name", "run_name", "run_type", "repetitions", "repetition_index", "threads",
                                   "iterations", "real_time", "cpu_time", "time_unit", "family_index",
                                   "per_family_instance_index", "aggregate_name", "aggregate_unit", "label",
                                   "error_occurred", "error_message"};
    for (const auto& [k, v] : r.items()) {
      bool known = false;
      for (const char* x : kKnown) known = known || k == x;
      if (!known && v.is_number()) s.counters[k].push_back(v.get<double>());
    }
  }
  return f;
}

BenchFile read_bench_file(const std::string& path) { return parse_bench_json(hwdb::parse_json_file(path), path); }

}  // namespace deepfit::regress
