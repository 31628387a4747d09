// The host kernel suite as Google Benchmark registrations, shared by the bm_kernels binary and
// `deepfit bench`: every op at DeepSeek-V3.2's shapes plus small shapes for CI smoke runs.
// Registration only; running, reporting and JSON belong to the caller.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace deepfit::bench {

struct SuiteConfig {
  bool quick = false;  // a subset of the shapes (batch 1 and 64, two contexts): minutes, not tens
  int threads = 0;     // threads of the multi-threaded cases; 0: one per core
};

class SuiteContext;  // pools and topology the registered cases share (suite_common.h)

// Registers the suite with Google Benchmark and returns what the cases share; it must outlive
// benchmark::RunSpecifiedBenchmarks. names() lists every registered benchmark in order.
struct Suite {
  std::shared_ptr<SuiteContext> context;
  std::vector<std::string> names;
};
Suite register_suite(const SuiteConfig& cfg);

}  // namespace deepfit::bench
