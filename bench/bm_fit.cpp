// Benchmarks of the memory planner on DeepSeek-V3.2: one fit configuration, the GGUF rule pass
// and the whole-catalog load, timed in process (the CLI's start-up is measured with hyperfine, see README).
#include <benchmark/benchmark.h>

#include "harness/provenance.h"

#include "planner/catalog.h"
#include "planner/compare.h"
#include "planner/fit.h"
#include "planner/predict.h"

namespace {

using namespace deepfit::planner;
namespace hwdb = deepfit::hwdb;

const Catalog& catalog() {
  static const Catalog cat = Catalog::load(data_root());
  return cat;
}

// One (quant, device, split, concurrency, context) evaluation with the model already parsed and
// stored: what `compare` repeats thousands of times.
void BM_fit_one(benchmark::State& state) {
  const Catalog& cat = catalog();
  const ModelSpec m = cat.model("deepseek-v3.2");
  const Scheme& scheme = cat.quants.scheme("fp8");
  const StoredModel stored = store_model(m, scheme, cat.quants);
  const hwdb::Device& dev = cat.devices.get("h200-sxm");
  FitOptions o;
  o.count = "8";
  o.parallel = "tp1ep8dp8";
  o.concurrency = {128};
  o.context_tokens = 8192;
  std::int64_t total = 0;
  for (auto _ : state) {
    FitRecord r = plan_fit_stored(cat, o, &dev, m, stored, scheme);
    total += r.results.front().memory.total_bytes_per_device;
    benchmark::DoNotOptimize(total);
  }
  if (total <= 0) state.SkipWithError("fit produced no memory total");
}
BENCHMARK(BM_fit_one)->Name("BM_fit/fp8/config:h200x8_dp8")->Unit(benchmark::kMicrosecond);

// Model parse + tensor inventory + llama.cpp's per-tensor rules for Q4_K_M (1,100+ tensors).
void BM_store_gguf(benchmark::State& state) {
  const Catalog& cat = catalog();
  const ModelSpec m = cat.model("deepseek-v3.2");
  const Scheme& scheme = cat.quants.scheme("q4_k_m");
  std::int64_t bytes = 0;
  for (auto _ : state) {
    StoredModel s = store_model(m, scheme, cat.quants);
    bytes += s.bytes;
    benchmark::DoNotOptimize(bytes);
  }
}
BENCHMARK(BM_store_gguf)->Name("BM_store/q4_k_m/model:deepseek-v3.2")->Unit(benchmark::kMicrosecond);

// Everything `deepfit fit --quant q4_k_m --device h100-sxm` computes after loading the data,
// including the search for the fewest devices.
void BM_fit_full(benchmark::State& state) {
  const Catalog& cat = catalog();
  const hwdb::Device& dev = cat.devices.get("h100-sxm");
  FitOptions o;
  o.model = "deepseek-v3.2";
  o.quants = {"q4_k_m"};
  for (auto _ : state) {
    auto r = plan_fit(cat, o, &dev);
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_fit_full)->Name("BM_fit/q4_k_m/config:h100x1_min_devices")->Unit(benchmark::kMicrosecond);

// The full compare sweep of DeepSeek-V3.2: every device, counts 1-8, five quantizations,
// TP and DP-attention layouts, eight concurrency levels.
void BM_compare_sweep(benchmark::State& state) {
  const Catalog& cat = catalog();
  const CalibrationDb cal = CalibrationDb::load(cat.root() + "/data/calibration.json");
  CompareOptions o;
  o.model = "deepseek-v3.2";
  o.concurrency = {1, 2, 4, 8, 16, 32, 64, 128};
  std::size_t rows = 0;
  for (auto _ : state) {
    Comparison c = compare_setups(cat, cal, o);
    rows += c.rows.size();
    benchmark::DoNotOptimize(rows);
  }
  if (rows == 0) state.SkipWithError("compare produced no rows");
}
BENCHMARK(BM_compare_sweep)->Name("BM_compare/all_devices/model:deepseek-v3.2")->Unit(benchmark::kMillisecond);

// One `deepfit predict` after the catalog is loaded: DeepSeek-V3.2 on 8 x H200 with attention
// data parallelism, three concurrency levels (issue #5's target: under 1 ms), in its released fp8
// and as a GGUF (whose per-tensor type rules cost more to resolve).
void BM_predict_one(benchmark::State& state, const char* quant) {
  const Catalog& cat = catalog();
  const CalibrationDb cal = CalibrationDb::load(cat.root() + "/data/calibration.json");
  FitOptions o;
  o.model = "deepseek-v3.2";
  o.quants = {quant};
  o.count = "8";
  o.parallel = "tp1ep8dp8";
  o.concurrency = {1, 8, 64};
  ServingOptions so;
  so.input_tokens = 2000;
  so.output_tokens = 1000;
  const hwdb::Device& d = cat.devices.get("h200-sxm");
  std::size_t results = 0;
  for (auto _ : state) {
    const std::vector<FitRecord> r = plan_predict(cat, cal, o, so, d);
    results += r.front().results.size();
    benchmark::DoNotOptimize(results);
  }
  if (results == 0) state.SkipWithError("predict produced no results");
}
BENCHMARK_CAPTURE(BM_predict_one, fp8, "fp8")->Name("BM_predict/fp8/config:h200x8_dp8")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_predict_one, q4_k_m, "q4_k_m")->Name("BM_predict/q4_k_m/config:h200x8_dp8")->Unit(benchmark::kMicrosecond);

void BM_catalog_load(benchmark::State& state) {
  for (auto _ : state) {
    Catalog c = Catalog::load(data_root());
    benchmark::DoNotOptimize(c);
  }
}
BENCHMARK(BM_catalog_load)->Name("BM_catalog/load/files:all")->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) { return deepfit::bench::run_benchmarks(argc, argv); }
