// The host probe yields a device record the strict loader accepts, with every measured figure
// present and positive. (How fast the machine is belongs in bench/, not here.)
#include "planner/host_probe.h"

#include <gtest/gtest.h>

#include "hwdb/device_db.h"
#include "planner/thread_pool.h"

namespace deepfit::planner {
namespace {

TEST(HostProbe, RecordPassesTheDeviceLoader) {
  ProbeConfig cfg;
  cfg.array_bytes = 1 << 20;  // small: this checks structure, not bandwidth
  cfg.repetitions = 3;
  cfg.compute_seconds = 0.002;
  hwdb::Device d = probe_host(cfg, [](const std::string&) {});
  hwdb::Device back = hwdb::device_from_json(hwdb::device_to_json(d), "probe");
  EXPECT_EQ(back.id, "host");
  EXPECT_EQ(back.kind, hwdb::DeviceKind::kCpu);
  EXPECT_GT(back.memory_bytes, 0);
  EXPECT_GT(back.memory_bandwidth_gbps, 0.0);
  ASSERT_TRUE(back.peak_tflops.fp32.has_value());
  EXPECT_GT(*back.peak_tflops.fp32, 0.0);
  for (const char* op : {"copy", "scale", "add", "triad", "sum"})
    EXPECT_GT(back.measurements["bandwidth_one_thread"][op]["median"].get<double>(), 0.0) << op;
  EXPECT_DOUBLE_EQ(back.measurements["bandwidth_all_threads"]["triad"]["median"].get<double>(), back.memory_bandwidth_gbps);
}

TEST(ThreadPool, SlicesCoverTheRangeExactlyOnce) {
  for (int parts : {1, 2, 3, 7})
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{10}, std::size_t{1001}}) {
      std::size_t covered = 0, prev_hi = 0;
      for (int i = 0; i < parts; ++i) {
        auto [lo, hi] = slice_of(n, i, parts);
        EXPECT_EQ(lo, prev_hi);
        covered += hi - lo;
        prev_hi = hi;
      }
      EXPECT_EQ(covered, n);
    }
}

TEST(ThreadPool, EveryWorkerRunsEachJobOnce) {
  hwdb::Topology topo = hwdb::Topology::host();
  ThreadPool pool(topo, 3);
  std::vector<int> hits(3, 0);
  for (int r = 0; r < 5; ++r) pool.run([&](int i, int n) {
      EXPECT_EQ(n, 3);
      ++hits[static_cast<std::size_t>(i)];
    });
  EXPECT_EQ(hits, (std::vector<int>{5, 5, 5}));
}

}  // namespace
}  // namespace deepfit::planner
