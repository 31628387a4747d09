// One row per benchmark of a Google Benchmark file from the kernel suite: median time and rates,
// spread, and efficiency against the STREAM-like triad and the compute probes measured in the same
// file. What `deepfit bench` prints and the HTML roofline plots; no I/O.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "regress/gbench.h"

namespace deepfit::regress {

struct BenchRow {
  std::string name;
  std::string op;      // BM_<op>, without the prefix
  std::string format;  // the second name segment (bf16, q4_k, fp64, ...), "" when absent
  int threads = 1;     // the "threads" counter, else a "/threads:N" argument, else 1
  std::size_t repetitions = 0;
  std::optional<double> median_ns;  // nullopt for failed benchmarks
  double cv = 0;                    // of the per-repetition real times
  bool unstable = false;            // cv > 5 % (STYLE B8)
  std::optional<double> bytes_per_second, flops_per_second;  // medians over repetitions
  std::optional<double> intensity_flop_per_byte;             // flops / bytes of one iteration
  std::optional<double> bw_efficiency;       // bytes/s over the triad's at the same thread count
  std::optional<double> compute_efficiency;  // flops/s over the probe of the format's compute dtype
  std::string compute_reference;             // which probe compute_efficiency divides by
  std::string error;                         // benchmark error message, "" when it ran
};

struct BenchSummary {
  std::vector<BenchRow> rows;
  std::vector<std::string> notes;  // e.g. no triad in the file, so no bandwidth efficiency
};

// The probe a format's arithmetic is compared with: int8 dot for int8/q8_0/q4_k (integer dot
// products), bf16 dot for bf16 (and fp8, whose kernels convert to bf16 or fp32 and may use either:
// the faster bound is the honest denominator), fp32 FMA otherwise.
std::string compute_probe_for(const std::string& format);

BenchSummary summarize(const BenchFile& file);

}  // namespace deepfit::regress
