// The host kernel suite (bench/suite) as a Google Benchmark binary: every op at DeepSeek-V3.2's
// shapes, on one thread and on every core. `deepfit bench` runs the same registrations with
// progress and deepfit's context; this binary takes Google Benchmark's own flags.
#include "harness/provenance.h"
#include "suite/suite.h"

int main(int argc, char** argv) {
  const deepfit::bench::Suite suite = deepfit::bench::register_suite({});
  return deepfit::bench::run_benchmarks(argc, argv);
}
