// Benchmark provenance (STYLE B9/B10): every bench binary records where its numbers come from in
// Google Benchmark's context, and warns (and tags the context) when the build is not fit for
// publishing numbers.
#pragma once

namespace deepfit::bench {

// Adds git commit, compiler and flags, deepfit's build type, DEEPFIT_NATIVE, sanitizers, CPU
// model, governor, boost, SMT, topology, counter availability and UTC time. Call before
// benchmark::RunSpecifiedBenchmarks.
void add_provenance();

// Initialize, reject unknown flags (exit 2), add provenance, run, shut down: every bench main.
int run_benchmarks(int argc, char** argv);

}  // namespace deepfit::bench
