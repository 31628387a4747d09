// `deepfit probe`: describes this machine as a device record (id "host") from hwloc's topology,
// its ISA and measured figures: STREAM-like bandwidth (all threads and one) over a working set of
// at least 4x the last-level cache, and compute throughput per dtype from kernels/peak.h.
// Composes hwdb (topology, pinning) with kernels; neither knows the other.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "hwdb/device.h"
#include "planner/thread_pool.h"

namespace deepfit::planner {

struct ProbeConfig {
  std::int64_t array_bytes = 0;   // bytes per array (3 arrays); 0: 2x the LLC, at least 64 MiB
  int repetitions = 7;            // timed passes per figure; the median is reported
  double compute_seconds = 0.05;  // target duration of one compute-probe region
  int threads = 0;                // 0: one per core
};

// Runs the probe; `progress` gets one line per step (the CLI prints it on stderr).
hwdb::Device probe_host(const ProbeConfig& cfg, const std::function<void(const std::string&)>& progress);

// The all-thread STREAM-like triad (ordinary stores, GB/s, median of `repetitions`) on `pool` now,
// over 3 arrays of `array_bytes` (0: as the probe). For measurements that must be set against the
// bandwidth of the moment on a shared machine.
double measure_triad_gbps(ThreadPool& pool, std::int64_t array_bytes = 0, int repetitions = 5);

// $XDG_CACHE_HOME/deepfit/host.json, else $HOME/.cache/deepfit/host.json.
std::string host_cache_path();
// The cached record, probing (and caching) first when there is none or `refresh` is set.
hwdb::Device host_device(bool refresh, const std::function<void(const std::string&)>& progress);
// Writes the record atomically (temporary file, then rename), creating the directory.
void save_host_record(const hwdb::Device& d, const std::string& path);

}  // namespace deepfit::planner
