// The machine's topology through hwloc: packages, cores, PUs, NUMA nodes, data caches, thread
// pinning. hwloc stays behind a pimpl (no hwloc.h here); counters and CPU flags live elsewhere.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace deepfit::hwdb {

// One group of identical data or unified caches (instruction caches are not reported).
struct CacheLevel {
  int level = 0;                           // 1 for L1, 2 for L2, ...
  std::string name;                        // hwloc's short name: "L1d", "L2", "L3"
  std::optional<std::int64_t> size_bytes;  // per instance; nullopt when hwloc does not know it
  int count = 0;                           // instances of this level and size in the topology
};

struct TopologySummary {
  int num_packages = 0;  // 0 when hwloc found no package objects (some VMs, some arm64 hosts)
  int num_cores = 0;     // 0 when hwloc found no core objects
  int num_pus = 0;
  int num_numa_nodes = 0;
  // Sum of the NUMA nodes' local memory; nullopt when any node's size is unknown. Synthetic
  // topologies get hwloc's default of 1 GiB per NUMA node unless the string says memory=.
  std::optional<std::int64_t> memory_bytes;
  std::vector<CacheLevel> caches;  // by level, then size
  // Size of one instance of the highest-level data/unified cache (the largest one if instances
  // differ); nullopt when there is no data cache or its size is unknown.
  std::optional<std::int64_t> llc_bytes;
  std::optional<bool> smt;  // num_pus > num_cores; nullopt when hwloc found no cores
};

// "1 package, 2 cores, 2 PUs, 1 NUMA node, L1d 48 KiB x2, L2 1 MiB x2, L3 32 MiB x1".
// Unknown cache sizes print as "n/a". Used in benchmark provenance and the golden fixtures.
std::string describe(const TopologySummary& summary);

// Binding can fail for reasons outside the caller's control (cgroup limits, a topology that is not
// this machine's, no binding support): an environment limit, reported rather than thrown.
struct BindResult {
  bool ok = false;
  std::string reason;  // empty when ok, else "unavailable: ..."
};

// Owns one loaded hwloc topology. Move-only (copying a topology is costly; nothing needs it).
// Queries are const and safe to call from several threads at once (hwloc allows concurrent
// read-only use of a loaded topology).
class Topology {
 public:
  // The machine we run on. Honours HWLOC_XMLFILE / HWLOC_SYNTHETIC like every hwloc program;
  // is_this_system() tells whether the result really is this machine.
  // Throws std::runtime_error naming the hwloc call if hwloc cannot load a topology at all.
  static Topology host();
  // hwloc synthetic description, e.g. "package:2 l3:1(size=32MiB) core:4 pu:2".
  // A string hwloc rejects throws InputError quoting it.
  static Topology synthetic(const std::string& desc);
  // An XML file exported by lstopo or hwloc_topology_export_xml. Unreadable or invalid files
  // throw InputError naming the path.
  static Topology from_xml(const std::string& path);

  Topology(Topology&& other) noexcept;
  Topology& operator=(Topology&& other) noexcept;
  ~Topology();

  TopologySummary summary() const;
  std::string describe() const;  // describe(summary())
  // "host", "synthetic: <desc>" or "xml: <path>": where the topology came from, for provenance.
  const std::string& source() const;
  // False for synthetic and XML topologies: binding against them would be a no-op.
  bool is_this_system() const;

  // OS indices of the PUs, first PU of every core (in core order), then every core's second PU,
  // and so on: a pool of N threads that takes the first N entries gets distinct cores first.
  // PUs outside any core (hwloc found no cores) come in PU order.
  std::vector<int> pu_os_indices() const;

  // Pins the calling thread to the PU with this OS index (hwloc_set_cpubind, thread scope), then
  // reads the binding back to check it took.
  [[nodiscard]] BindResult bind_this_thread_to_pu(int os_index) const;
  // The calling thread's current CPU binding as a list ("0-3,8"), for B7 provenance; nullopt
  // when hwloc cannot read it on this system.
  std::optional<std::string> this_thread_cpuset() const;

 private:
  struct Impl;
  explicit Topology(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace deepfit::hwdb
