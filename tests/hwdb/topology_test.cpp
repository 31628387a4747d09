// Topology summaries from hwloc synthetic strings and a captured XML fixture, so results never
// depend on the machine running the tests (one smoke test touches the host without asserting its shape).
#include "hwdb/topology.h"

#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/error.h"

namespace deepfit::hwdb {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using ::testing::ThrowsMessage;

constexpr std::int64_t kKiB = 1024;
constexpr std::int64_t kMiB = 1024 * kKiB;
constexpr std::int64_t kGiB = 1024 * kMiB;

std::string fixture(const std::string& name) {
  return std::string(DEEPFIT_SOURCE_DIR) + "/tests/fixtures/topologies/" + name;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Topology, SyntheticTwoPackagesCountsEveryLevel) {
  TopologySummary s = Topology::synthetic("package:2 l3:1 core:4 pu:2").summary();
  EXPECT_EQ(s.num_packages, 2);
  EXPECT_EQ(s.num_cores, 8);
  EXPECT_EQ(s.num_pus, 16);
  EXPECT_EQ(s.num_numa_nodes, 1);
  EXPECT_EQ(s.smt, true);
  ASSERT_EQ(s.caches.size(), 1u);
  EXPECT_EQ(s.caches[0].name, "L3");
  EXPECT_EQ(s.caches[0].level, 3);
  EXPECT_EQ(s.caches[0].count, 2);
  // Sizes the string leaves out are hwloc's synthetic defaults (hwloc 2.9 topology-synthetic.c:
  // 1 GiB per NUMA node, 256 KiB x 4^level for caches above L1, so L3 = 16 MiB).
  EXPECT_EQ(s.caches[0].size_bytes, 16 * kMiB);
  EXPECT_EQ(s.memory_bytes, 1 * kGiB);
}

TEST(Topology, SyntheticExplicitSizesAreReportedExactly) {
  Topology t = Topology::synthetic(
      "package:2 numa:1(memory=64GiB) l3:1(size=32MiB) l2:4(size=1MiB) l1d:1(size=48KiB) core:1 pu:2");
  TopologySummary s = t.summary();
  EXPECT_EQ(s.num_numa_nodes, 2);
  EXPECT_EQ(s.memory_bytes, 128 * kGiB);
  ASSERT_EQ(s.caches.size(), 3u);
  EXPECT_EQ(s.caches[0].name, "L1d");
  EXPECT_EQ(s.caches[0].size_bytes, 48 * kKiB);
  EXPECT_EQ(s.caches[0].count, 8);
  EXPECT_EQ(s.caches[1].name, "L2");
  EXPECT_EQ(s.caches[1].size_bytes, 1 * kMiB);
  EXPECT_EQ(s.caches[2].name, "L3");
  EXPECT_EQ(s.caches[2].size_bytes, 32 * kMiB);
  EXPECT_EQ(s.caches[2].count, 2);
  EXPECT_EQ(s.llc_bytes, 32 * kMiB);
  EXPECT_EQ(t.describe(),
            "2 packages, 8 cores, 16 PUs, 2 NUMA nodes, L1d 48 KiB x8, L2 1 MiB x8, L3 32 MiB x2");
}

TEST(Topology, DescribeUsesSingularForOne) {
  EXPECT_EQ(Topology::synthetic("package:1 l2:1(size=1MiB) core:1 pu:1").describe(),
            "1 package, 1 core, 1 PU, 1 NUMA node, L2 1 MiB x1");
}

TEST(Topology, BadSyntheticStringIsInputErrorQuotingIt) {
  EXPECT_THAT([] { (void)Topology::synthetic("package:2 bogus:3 pu:2"); },
              ThrowsMessage<InputError>(HasSubstr("'package:2 bogus:3 pu:2'")));
  EXPECT_THAT([] { (void)Topology::synthetic(""); }, ThrowsMessage<InputError>(HasSubstr("hwloc_topology_set_synthetic")));
}

TEST(Topology, PuOrderTakesOnePuPerCoreBeforeSmtSiblings) {
  // hwloc numbers the synthetic PUs 0,1 (core 0) and 2,3 (core 1).
  EXPECT_THAT(Topology::synthetic("core:2 pu:2").pu_os_indices(), ElementsAre(0, 2, 1, 3));
  EXPECT_THAT(Topology::synthetic("core:3 pu:1").pu_os_indices(), ElementsAre(0, 1, 2));
}

TEST(Topology, NoSmtWhenOnePuPerCore) {
  TopologySummary s = Topology::synthetic("core:4 pu:1").summary();
  EXPECT_EQ(s.smt, false);
  EXPECT_EQ(s.num_cores, 4);
}

TEST(Topology, CapturedTwoSocketXmlMatchesGoldenSummary) {
  Topology t = Topology::from_xml(fixture("two_socket.xml"));
  std::string golden = read_text(fixture("two_socket.summary"));
  ASSERT_FALSE(golden.empty());
  if (golden.back() == '\n') golden.pop_back();
  EXPECT_EQ(t.describe(), golden);
  EXPECT_FALSE(t.is_this_system());
  EXPECT_EQ(t.summary().memory_bytes, 128 * kGiB);
}

TEST(Topology, CapturedTwoSocketXmlListsSiblingsLast) {
  // The fixture numbers SMT siblings the way Linux does on such hosts: core k has PUs k and k+16.
  std::vector<int> order = Topology::from_xml(fixture("two_socket.xml")).pu_os_indices();
  ASSERT_EQ(order.size(), 32u);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(order[static_cast<std::size_t>(i)], i);
}

TEST(Topology, MissingXmlIsInputErrorNamingThePath) {
  EXPECT_THAT([] { (void)Topology::from_xml("/nonexistent/deepfit/topo.xml"); },
              ThrowsMessage<InputError>(HasSubstr("/nonexistent/deepfit/topo.xml")));
}

TEST(Topology, BindingAgainstASyntheticTopologyIsRefusedNotFaked) {
  // hwloc's binding hooks for a topology that is not this system succeed without binding.
  Topology t = Topology::synthetic("core:2 pu:2");
  BindResult r = t.bind_this_thread_to_pu(0);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.reason, StartsWith("unavailable:"));
}

TEST(Topology, HostLoadsAndBindingEitherWorksOrSaysWhy) {
  Topology t = Topology::host();
  TopologySummary s = t.summary();
  EXPECT_GE(s.num_pus, 1);
  std::vector<int> pus = t.pu_os_indices();
  ASSERT_EQ(pus.size(), static_cast<std::size_t>(s.num_pus));
  // A separate thread, so the test runner's own affinity is left alone.
  BindResult r;
  std::optional<std::string> cpuset;
  std::thread worker([&] {
    r = t.bind_this_thread_to_pu(pus.front());
    cpuset = t.this_thread_cpuset();
  });
  worker.join();
  if (r.ok) {
    EXPECT_EQ(cpuset, std::to_string(pus.front()));
  } else {
    EXPECT_THAT(r.reason, StartsWith("unavailable:"));
  }
}

}  // namespace
}  // namespace deepfit::hwdb
