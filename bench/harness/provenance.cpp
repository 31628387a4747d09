// Benchmark provenance (see provenance.h).
#include "harness/provenance.h"

#include <benchmark/benchmark.h>

#include <cstdio>
#include <ctime>
#include <string>

#include "hwdb/counters.h"
#include "hwdb/host_info.h"
#include "hwdb/topology.h"

namespace deepfit::bench {

void add_provenance() {
  benchmark::AddCustomContext("git_commit", DEEPFIT_GIT_COMMIT);
  benchmark::AddCustomContext("deepfit_build_type", DEEPFIT_BUILD_TYPE);
  benchmark::AddCustomContext("deepfit_native", DEEPFIT_NATIVE_FLAG ? "ON" : "OFF");
  benchmark::AddCustomContext("compiler", "g++ " __VERSION__);
#ifdef NDEBUG
  const bool ndebug = true;
#else
  const bool ndebug = false;
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
  const bool sanitized = true;
#else
  const bool sanitized = false;
#endif
  benchmark::AddCustomContext("ndebug", ndebug ? "yes" : "no");
  benchmark::AddCustomContext("sanitizers", sanitized ? "yes" : "no");
  const std::string build_type = DEEPFIT_BUILD_TYPE;
  if (build_type != "Release" || !ndebug || sanitized) {
    std::fprintf(stderr, "warning: this is not a Release build without sanitizers (%s, NDEBUG %s); its timings are not publishable\n",
                 build_type.c_str(), ndebug ? "on" : "off");
    benchmark::AddCustomContext("deepfit_build_warning", "not a Release build without sanitizers: do not use as a baseline");
  }
  const hwdb::HostInfo info = hwdb::host_info();
  benchmark::AddCustomContext("cpu_model", info.cpu_model.value_or("unknown"));
  benchmark::AddCustomContext("governor", info.governor.value_or("unknown (no cpufreq)"));
  benchmark::AddCustomContext("boost", info.boost ? (*info.boost ? "on" : "off") : "unknown");
  benchmark::AddCustomContext("smt_active", info.smt_active ? (*info.smt_active ? "yes" : "no") : "unknown");
  benchmark::AddCustomContext("isa", info.isa ? hwdb::to_string(*info.isa) : "unknown");
  benchmark::AddCustomContext("topology", hwdb::Topology::host().describe());
  hwdb::CounterGroup g = hwdb::CounterGroup::open({"cycles", "instructions"});
  benchmark::AddCustomContext("hw_counters", g.available() ? "available" : g.unavailable_reason());
  benchmark::AddCustomContext("utc_time", hwdb::utc_now());
}

std::vector<benchmark::BenchmarkReporter::Run> with_stable_names(const std::vector<benchmark::BenchmarkReporter::Run>& runs) {
  std::vector<benchmark::BenchmarkReporter::Run> out = runs;
  for (auto& r : out) {
    r.run_name.min_warmup_time.clear();
    r.run_name.time_type.clear();
  }
  return out;
}

int run_benchmarks(int argc, char** argv) {
  bool file_out = false;
  for (int i = 1; i < argc; ++i) file_out = file_out || std::string(argv[i]).rfind("--benchmark_out=", 0) == 0;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  add_provenance();
  benchmark::ConsoleReporter console;
  benchmark::JSONReporter json;
  StableNameReporter display(console), file(json);
  if (file_out) benchmark::RunSpecifiedBenchmarks(&display, &file);
  else benchmark::RunSpecifiedBenchmarks(&display);
  benchmark::Shutdown();
  return 0;
}

}  // namespace deepfit::bench
