// Benchmark provenance (STYLE B9/B10): every bench binary records where its numbers come from in
// Google Benchmark's context, and warns (and tags the context) when the build is not fit for
// publishing numbers.
#pragma once

#include <benchmark/benchmark.h>

#include <vector>

namespace deepfit::bench {

// Benchmark names are stable keys (STYLE 4): Google Benchmark appends run settings such as
// "/min_warmup_time:0.100" and "/manual_time" to a name; these copies drop them (the settings are
// the harness's, the same for every case). The reporter below wraps any reporter with it.
std::vector<benchmark::BenchmarkReporter::Run> with_stable_names(const std::vector<benchmark::BenchmarkReporter::Run>& runs);

class StableNameReporter : public benchmark::BenchmarkReporter {
 public:
  explicit StableNameReporter(benchmark::BenchmarkReporter& inner) : inner_(inner) {}
  bool ReportContext(const Context& context) override {
    // Google Benchmark points this wrapper's streams at the --benchmark_out file (non-virtual
    // setters), after construction and before the context: hand them on.
    inner_.SetOutputStream(&GetOutputStream());
    inner_.SetErrorStream(&GetErrorStream());
    return inner_.ReportContext(context);
  }
  void ReportRuns(const std::vector<Run>& runs) override { inner_.ReportRuns(with_stable_names(runs)); }
  void Finalize() override { inner_.Finalize(); }

 private:
  benchmark::BenchmarkReporter& inner_;
};

// Adds git commit, compiler and flags, deepfit's build type, DEEPFIT_NATIVE, sanitizers, CPU
// model, governor, boost, SMT, topology, counter availability and UTC time. Call before
// benchmark::RunSpecifiedBenchmarks.
void add_provenance();

// Initialize, reject unknown flags (exit 2), add provenance, run, shut down: every bench main.
int run_benchmarks(int argc, char** argv);

}  // namespace deepfit::bench
