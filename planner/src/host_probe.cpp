// The host probe (see host_probe.h).
#include "planner/host_probe.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>

#include "hwdb/device_db.h"
#include "hwdb/host_info.h"
#include "hwdb/topology.h"
#include "kernels/error.h"
#include "kernels/peak.h"
#include "kernels/triad.h"
#include "kernels/work.h"
#include "planner/thread_pool.h"

namespace deepfit::planner {
namespace {

using nlohmann::json;
namespace k = deepfit::kernels;

struct FreeDeleter {
  void operator()(double* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<double[], FreeDeleter>;

// The one aligned allocation helper of the probe: 64-byte (cache line) alignment.
Buffer alloc_doubles(std::size_t n) {
  const std::size_t bytes = (n * sizeof(double) + 63) / 64 * 64;
  auto* p = static_cast<double*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  return Buffer(p);
}

struct Stats {
  double median = 0, min = 0, max = 0, cv = 0;
};

Stats stats_of(std::vector<double> v) {
  DEEPFIT_ASSERT(!v.empty(), "no samples");
  std::sort(v.begin(), v.end());
  Stats s;
  const std::size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.min = v.front();
  s.max = v.back();
  double mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(n);
  double var = 0;  // two-pass variance
  for (double x : v) var += (x - mean) * (x - mean);
  s.cv = n > 1 && mean > 0 ? std::sqrt(var / static_cast<double>(n - 1)) / mean : 0;
  return s;
}

double slowest(const std::vector<double>& secs) { return *std::max_element(secs.begin(), secs.end()); }

json stats_json(const Stats& s, const char* unit) {
  return {{"median", s.median}, {"min", s.min}, {"max", s.max}, {"cv", s.cv}, {"unit", unit},
          {"unstable", s.cv > 0.05}};
}

// STREAM-like bandwidth with `pool`'s threads over arrays first-touched by those threads.
json measure_bandwidth(ThreadPool& pool, std::size_t n, int reps, double* triad_gbps) {
  // Ordinary stores, as STREAM compiles by default, so the figures compare with STREAM-like runs
  // elsewhere (writes then also cost a read for ownership that the declared bytes do not count).
  // The triad with non-temporal stores is measured as well: closer to the raw DRAM rate.
  const k::StorePolicy policy = k::StorePolicy::kCached;
  Buffer a = alloc_doubles(n), b = alloc_doubles(n), c = alloc_doubles(n);
  std::span<double> A(a.get(), n), B(b.get(), n), C(c.get(), n);
  pool.run([&](int i, int t) {  // first touch by the owning thread
    auto [lo, hi] = slice_of(n, i, t);
    for (std::size_t x = lo; x < hi; ++x) {
      A[x] = 1.0 + static_cast<double>(x % 7);
      B[x] = 2.0;
      C[x] = 0.5;
    }
  });
  const double q = 3.0;
  struct Op {
    const char* name;
    k::BandwidthOp op;
    std::function<void(std::size_t, std::size_t)> fn;
  };
  double sink = 0;
  std::vector<double> sums(static_cast<std::size_t>(pool.size()), 0.0);
  const std::vector<Op> ops = {
      {"copy", k::BandwidthOp::kCopy, [&](std::size_t lo, std::size_t hi) { k::copy_simd(C, A, lo, hi, policy); }},
      {"scale", k::BandwidthOp::kScale, [&](std::size_t lo, std::size_t hi) { k::scale_simd(B, C, q, lo, hi, policy); }},
      {"add", k::BandwidthOp::kAdd, [&](std::size_t lo, std::size_t hi) { k::add_simd(C, A, B, lo, hi, policy); }},
      {"triad", k::BandwidthOp::kTriad, [&](std::size_t lo, std::size_t hi) { k::triad_simd(A, B, C, q, lo, hi, policy); }},
  };
  std::vector<Op> all_ops = ops;
  if (k::have_non_temporal_stores())
    all_ops.push_back({"triad_nontemporal", k::BandwidthOp::kTriad, [&](std::size_t lo, std::size_t hi) {
                         k::triad_simd(A, B, C, q, lo, hi, k::StorePolicy::kNonTemporal);
                       }});
  json out = json::object();
  for (const auto& op : all_ops) {
    auto body = [&](int i, int t) {
      auto [lo, hi] = slice_of(n, i, t);
      op.fn(lo, hi);
    };
    pool.run(body);  // warm-up, untimed
    std::vector<double> gbps;
    const double work = k::work_of(k::BandwidthShape{op.op, static_cast<std::int64_t>(n)}).bytes;
    for (int r = 0; r < reps; ++r) gbps.push_back(work / slowest(pool.run(body)) / 1e9);
    Stats s = stats_of(gbps);
    out[op.name] = stats_json(s, "GB/s");
    if (std::string(op.name) == "triad") *triad_gbps = s.median;
  }
  // Read-only sum; its result feeds the proof-of-work check below.
  auto sum_body = [&](int i, int t) {
    auto [lo, hi] = slice_of(n, i, t);
    sums[static_cast<std::size_t>(i)] = k::sum_simd(A, lo, hi);
  };
  pool.run(sum_body);
  std::vector<double> gbps;
  const double work = k::work_of(k::BandwidthShape{k::BandwidthOp::kSum, static_cast<std::int64_t>(n)}).bytes;
  for (int r = 0; r < reps; ++r) gbps.push_back(work / slowest(pool.run(sum_body)) / 1e9);
  out["sum"] = stats_json(stats_of(gbps), "GB/s");
  for (double s : sums) sink += s;
  // After the passes a = b + q*c with b and c fixed, so the sum is known: proof the work ran.
  double expect = 0;
  for (std::size_t x = 0; x < n; ++x) expect += B[x] + q * C[x];
  if (std::fabs(sink - expect) > 1e-6 * std::fabs(expect))  // summation order differs; n*eps bound
    throw std::runtime_error("probe validation failed: triad result does not match its inputs");
  out["threads"] = pool.size();
  out["stores"] = "ordinary (cached) stores; triad_nontemporal streams its stores";
  return out;
}

// Runs a compute probe on every worker; returns {GFLOP/s median json, median}. nullopt when the ISA is absent.
template <class Probe, class WorkFn>
std::optional<std::pair<json, double>> measure_compute(ThreadPool& pool, double target_s, int reps, Probe probe, WorkFn work_of) {
  std::int64_t iters = 1 << 12;
  std::vector<int> present(static_cast<std::size_t>(pool.size()), 1);
  // Grow the iteration count until one region lasts target_s (at least 1000x the clock's resolution).
  while (true) {
    auto secs = pool.run([&](int i, int) { present[static_cast<std::size_t>(i)] = probe(iters, static_cast<float>(i + 1)) ? 1 : 0; });
    if (!present[0]) return std::nullopt;
    if (slowest(secs) >= target_s || iters > (std::int64_t{1} << 40)) break;
    iters *= std::max<std::int64_t>(2, static_cast<std::int64_t>(target_s / std::max(slowest(secs), 1e-6)));
  }
  std::vector<double> gflops;
  for (int r = 0; r < reps; ++r) {
    auto secs = pool.run([&](int i, int) { probe(iters, static_cast<float>(i + 2 + r)); });
    gflops.push_back(work_of(iters).flops * pool.size() / slowest(secs) / 1e9);
  }
  Stats s = stats_of(gflops);
  json j = stats_json(s, "GFLOP/s");
  j["iterations"] = iters;
  j["threads"] = pool.size();
  return std::make_pair(j, s.median);
}

}  // namespace

hwdb::Device probe_host(const ProbeConfig& cfg, const std::function<void(const std::string&)>& progress) {
  hwdb::Topology topo = hwdb::Topology::host();
  const hwdb::TopologySummary sum = topo.summary();
  const hwdb::HostInfo info = hwdb::host_info();
  const int cores = std::max(1, sum.num_cores > 0 ? sum.num_cores : sum.num_pus);
  const int threads = cfg.threads > 0 ? cfg.threads : cores;
  const std::int64_t llc = sum.llc_bytes.value_or(32LL << 20);
  const std::int64_t array_bytes = cfg.array_bytes > 0 ? cfg.array_bytes : std::max<std::int64_t>(2 * llc, 64LL << 20);
  const std::size_t n = static_cast<std::size_t>(array_bytes) / sizeof(double);

  json m;
  m["date_utc"] = hwdb::utc_now();
  m["topology"] = topo.describe();
  m["isa"] = info.isa ? hwdb::to_string(*info.isa) : "unknown";
  m["governor"] = info.governor ? json(*info.governor) : json(nullptr);
  m["working_set_bytes"] = 3 * array_bytes;
  m["llc_bytes"] = sum.llc_bytes ? json(*sum.llc_bytes) : json(nullptr);
  m["repetitions"] = cfg.repetitions;
  m["statistic"] = "median over repetitions of (declared bytes or FLOPs / slowest thread's time)";

  double triad_all = 0, triad_one = 0;
  {
    ThreadPool pool(topo, threads);
    progress("probe: STREAM-like bandwidth, " + std::to_string(threads) + " threads, 3 x " + std::to_string(array_bytes >> 20) + " MiB");
    m["bandwidth_all_threads"] = measure_bandwidth(pool, n, cfg.repetitions, &triad_all);
    json notes = json::array();
    for (const auto& note : pool.pin_notes())
      if (!note.empty()) notes.push_back(note);
    m["pinning"] = notes.empty() ? json("pinned, distinct cores first") : json(notes);
  }
  {
    ThreadPool one(topo, 1);
    progress("probe: STREAM-like bandwidth, 1 thread");
    m["bandwidth_one_thread"] = measure_bandwidth(one, n, cfg.repetitions, &triad_one);
  }
  ThreadPool pool(topo, threads);
  hwdb::PeakTflops peak;
  progress("probe: fp32 FMA throughput");
  auto fp32 = measure_compute(pool, cfg.compute_seconds, cfg.repetitions, [](std::int64_t it, float s) {
    if (auto v = k::fma_fp32_probe(it, s)) return std::optional<double>(*v);
    if (auto v = k::fma_fp32_probe_avx2(it, s)) return std::optional<double>(*v);
    return std::optional<double>(k::fma_fp32_probe_scalar(it, s));
  }, [](std::int64_t it) {
    return k::have_avx512f() ? k::work_of_fma_fp32(it) : k::have_avx2_fma() ? k::work_of_fma_fp32_avx2(it) : k::work_of_fma_fp32_scalar(it);
  });
  if (fp32) {
    m["fp32_fma"] = fp32->first;
    peak.fp32 = fp32->second / 1e3;
  }
  progress("probe: bf16 dot-product throughput");
  auto bf16 = measure_compute(pool, cfg.compute_seconds, cfg.repetitions,
                              [](std::int64_t it, float s) { return k::dot_bf16_probe(it, s); }, k::work_of_dot_bf16);
  if (bf16) {
    m["bf16_dot"] = bf16->first;
    peak.bf16 = bf16->second / 1e3;
  } else {
    m["bf16_dot"] = "unavailable: no AVX512_BF16 on this CPU";
  }
  progress("probe: int8 dot-product throughput");
  auto int8 = measure_compute(pool, cfg.compute_seconds, cfg.repetitions, [](std::int64_t it, float s) {
    auto v = k::dot_int8_probe(it, static_cast<std::uint32_t>(s));
    return v ? std::optional<double>(static_cast<double>(*v)) : std::nullopt;
  }, k::work_of_dot_int8);
  if (int8) {
    m["int8_dot"] = int8->first;
    peak.int8 = int8->second / 1e3;
  } else {
    m["int8_dot"] = "unavailable: no AVX512_VNNI on this CPU";
  }

  hwdb::Device d;
  d.id = "host";
  d.name = info.cpu_model.value_or("this host");
  d.vendor = d.name.find("AMD") != std::string::npos ? "amd" : d.name.find("Intel") != std::string::npos ? "intel" : "unknown";
  d.kind = hwdb::DeviceKind::kCpu;
  // The OS's physical memory; hwloc's NUMA sums can be smaller in VMs (memory outside any node).
  d.memory_bytes = info.physical_memory_bytes.value_or(sum.memory_bytes.value_or(0));
  if (d.memory_bytes <= 0) throw std::runtime_error("probe: hwloc reports no memory size for this machine");
  d.memory_bandwidth_gbps = triad_all;
  d.peak_tflops = peak;
  d.devices_per_node = 1;
  const std::string how = "measured by deepfit probe on " + m["date_utc"].get<std::string>();
  d.sources = {{"memory_bytes", info.physical_memory_bytes ? "sysconf(_SC_PHYS_PAGES): the memory the OS manages"
                                                             : "hwloc: total of the NUMA nodes' memory"},
               {"memory_bandwidth_gbps", how + ": STREAM-like triad, all threads, median (measurements.bandwidth_all_threads)"},
               {"peak_tflops", how + ": register-resident fp32 FMA, bf16 and int8 dot-product probes, all threads (measurements)"}};
  d.notes = {"topology: " + topo.describe(),
             "peaks are what deepfit's probes reach on this machine, not datasheet figures; null where the ISA is absent"};
  if (triad_one > 0) d.notes.push_back("one-thread triad: " + std::to_string(static_cast<int>(triad_one)) + " GB/s");
  d.measurements = m;
  return d;
}

double measure_triad_gbps(ThreadPool& pool, std::int64_t array_bytes, int repetitions) {
  if (array_bytes <= 0) {
    const std::int64_t llc = hwdb::Topology::host().summary().llc_bytes.value_or(32LL << 20);
    array_bytes = std::max<std::int64_t>(2 * llc, 64LL << 20);
  }
  double triad = 0;
  measure_bandwidth(pool, static_cast<std::size_t>(array_bytes) / sizeof(double), repetitions, &triad);
  return triad;
}

std::string host_cache_path() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/deepfit/host.json";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/deepfit/host.json";
  return ".deepfit-host.json";
}

void save_host_record(const hwdb::Device& d, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << hwdb::device_to_json(d).dump(2) << "\n";
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  fs::rename(tmp, path, ec);
  if (ec) throw std::runtime_error("cannot move " + tmp + " to " + path + ": " + ec.message());
}

hwdb::Device host_device(bool refresh, const std::function<void(const std::string&)>& progress) {
  const std::string path = host_cache_path();
  std::error_code ec;
  if (!refresh && std::filesystem::is_regular_file(path, ec)) return hwdb::load_device_file(path, false);
  hwdb::Device d = probe_host(ProbeConfig{}, progress);
  save_host_record(d, path);
  progress("probe: wrote " + path);
  return d;
}

}  // namespace deepfit::planner
