// hwloc behind RAII handles (see topology.h). Every hwloc call's result is checked and named in
// the message; nothing here measures or prints.
#include "hwdb/topology.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <limits>
#include <map>
#include <new>
#include <stdexcept>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>

#include <hwloc.h>

#include "kernels/error.h"

namespace deepfit::hwdb {
namespace {

struct TopologyDeleter {
  void operator()(hwloc_topology_t t) const { hwloc_topology_destroy(t); }
};
using TopologyPtr = std::unique_ptr<std::remove_pointer_t<hwloc_topology_t>, TopologyDeleter>;

struct BitmapDeleter {
  void operator()(hwloc_bitmap_t b) const { hwloc_bitmap_free(b); }
};
using BitmapPtr = std::unique_ptr<std::remove_pointer_t<hwloc_bitmap_t>, BitmapDeleter>;

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};
using CString = std::unique_ptr<char, FreeDeleter>;

// std::system_category().message is thread-safe, unlike strerror.
std::string errno_text(int err) { return std::system_category().message(err); }

TopologyPtr init_topology() {
  hwloc_topology_t raw = nullptr;
  if (hwloc_topology_init(&raw) != 0) throw std::runtime_error("hwloc_topology_init failed: " + errno_text(errno));
  return TopologyPtr(raw);
}

void load_topology(hwloc_topology_t t, const std::string& what) {
  if (hwloc_topology_load(t) != 0)
    throw std::runtime_error("hwloc_topology_load failed for " + what + ": " + errno_text(errno));
}

BitmapPtr alloc_bitmap() {
  BitmapPtr b(hwloc_bitmap_alloc());
  if (!b) throw std::bad_alloc();
  return b;
}

// The bitmap as hwloc's list syntax ("0-3,8").
std::string bitmap_list(hwloc_const_bitmap_t b) {
  char* raw = nullptr;
  if (hwloc_bitmap_list_asprintf(&raw, b) < 0 || raw == nullptr)
    throw std::runtime_error("hwloc_bitmap_list_asprintf failed: " + errno_text(errno));
  CString owned(raw);
  return std::string(owned.get());
}

int count_of(hwloc_topology_t t, hwloc_obj_type_t type) {
  int n = hwloc_get_nbobjs_by_type(t, type);
  if (n < 0)
    throw std::runtime_error(std::string("hwloc_get_nbobjs_by_type(") + hwloc_obj_type_string(type) +
                             ") returned " + std::to_string(n) + " (objects of that type at several depths)");
  return n;
}

int os_index_of(hwloc_obj_t obj) {
  if (obj->os_index == HWLOC_UNKNOWN_INDEX || obj->os_index > static_cast<unsigned>(INT_MAX))
    throw std::runtime_error(std::string("hwloc object ") + hwloc_obj_type_string(obj->type) + " L#" +
                             std::to_string(obj->logical_index) + " has no usable OS index");
  return static_cast<int>(obj->os_index);
}

std::string cache_name(hwloc_obj_t obj) {
  char buf[32];
  int n = hwloc_obj_type_snprintf(buf, sizeof buf, obj, 0);
  if (n <= 0 || static_cast<std::size_t>(n) >= sizeof buf)
    throw std::runtime_error("hwloc_obj_type_snprintf failed for a cache at depth " + std::to_string(obj->depth));
  return buf;
}

std::string format_size(std::int64_t bytes) {
  static const std::pair<std::int64_t, const char*> units[] = {
      {std::int64_t{1} << 30, "GiB"}, {std::int64_t{1} << 20, "MiB"}, {std::int64_t{1} << 10, "KiB"}};
  for (const auto& [scale, unit] : units)
    if (bytes >= scale && bytes % scale == 0) return std::to_string(bytes / scale) + " " + unit;
  return std::to_string(bytes) + " B";
}

std::string counted(int n, const char* singular, const char* plural) {
  return std::to_string(n) + " " + (n == 1 ? singular : plural);
}

}  // namespace

struct Topology::Impl {
  TopologyPtr topo;
  std::string source;
};

Topology::Topology(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Topology::Topology(Topology&& other) noexcept = default;
Topology& Topology::operator=(Topology&& other) noexcept = default;
Topology::~Topology() = default;

Topology Topology::host() {
  TopologyPtr t = init_topology();
  load_topology(t.get(), "this host");
  return Topology(std::make_unique<Impl>(Impl{std::move(t), "host"}));
}

Topology Topology::synthetic(const std::string& desc) {
  TopologyPtr t = init_topology();
  if (hwloc_topology_set_synthetic(t.get(), desc.c_str()) != 0)
    throw InputError("invalid hwloc synthetic topology '" + desc +
                     "': hwloc_topology_set_synthetic rejected it (expected levels with arities such as "
                     "'package:2 l3:1(size=32MiB) core:4 pu:2')");
  load_topology(t.get(), "synthetic topology '" + desc + "'");
  return Topology(std::make_unique<Impl>(Impl{std::move(t), "synthetic: " + desc}));
}

Topology Topology::from_xml(const std::string& path) {
  TopologyPtr t = init_topology();
  if (hwloc_topology_set_xml(t.get(), path.c_str()) != 0)
    throw InputError(path + ": cannot read hwloc XML topology: hwloc_topology_set_xml failed: " + errno_text(errno) +
                     " (expected an XML file written by lstopo or hwloc_topology_export_xml)");
  load_topology(t.get(), "XML topology '" + path + "'");
  return Topology(std::make_unique<Impl>(Impl{std::move(t), "xml: " + path}));
}

const std::string& Topology::source() const { return impl_->source; }

bool Topology::is_this_system() const { return hwloc_topology_is_thissystem(impl_->topo.get()) == 1; }

TopologySummary Topology::summary() const {
  hwloc_topology_t t = impl_->topo.get();
  TopologySummary s;
  s.num_packages = count_of(t, HWLOC_OBJ_PACKAGE);
  s.num_cores = count_of(t, HWLOC_OBJ_CORE);
  s.num_pus = count_of(t, HWLOC_OBJ_PU);
  s.num_numa_nodes = count_of(t, HWLOC_OBJ_NUMANODE);
  if (s.num_cores > 0) s.smt = s.num_pus > s.num_cores;

  std::int64_t memory_bytes = 0;
  bool memory_known = s.num_numa_nodes > 0;
  for (hwloc_obj_t node = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, nullptr); node != nullptr;
       node = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, node)) {
    hwloc_uint64_t local = node->attr->numanode.local_memory;
    if (local == 0 || local > static_cast<hwloc_uint64_t>(std::numeric_limits<std::int64_t>::max() - memory_bytes)) memory_known = false;
    else memory_bytes += static_cast<std::int64_t>(local);
  }
  if (memory_known) s.memory_bytes = memory_bytes;

  // Walk every normal depth rather than asking per cache type: caches of one type may sit at
  // several depths (hwloc then answers -1 to by-type queries).
  using Key = std::tuple<int, std::string, std::optional<std::int64_t>>;
  std::map<Key, int> caches;
  int depth_count = hwloc_topology_get_depth(t);
  for (int depth = 0; depth < depth_count; ++depth) {
    if (!hwloc_obj_type_is_dcache(hwloc_get_depth_type(t, depth))) continue;
    for (hwloc_obj_t obj = hwloc_get_next_obj_by_depth(t, depth, nullptr); obj != nullptr;
         obj = hwloc_get_next_obj_by_depth(t, depth, obj)) {
      std::optional<std::int64_t> size;
      if (obj->attr->cache.size > 0 && obj->attr->cache.size <= static_cast<hwloc_uint64_t>(std::numeric_limits<std::int64_t>::max()))
        size = static_cast<std::int64_t>(obj->attr->cache.size);
      ++caches[Key{static_cast<int>(obj->attr->cache.depth), cache_name(obj), size}];
    }
  }
  for (const auto& [key, count] : caches)
    s.caches.push_back(CacheLevel{std::get<0>(key), std::get<1>(key), std::get<2>(key), count});

  if (!s.caches.empty()) {
    int llc_level = s.caches.back().level;  // sorted by level
    bool sizes_known = true;
    std::int64_t largest = 0;
    for (const CacheLevel& c : s.caches) {
      if (c.level != llc_level) continue;
      if (!c.size_bytes) sizes_known = false;
      else largest = std::max(largest, *c.size_bytes);
    }
    if (sizes_known) s.llc_bytes = largest;
  }
  return s;
}

std::string describe(const TopologySummary& s) {
  std::string out = counted(s.num_packages, "package", "packages") + ", " + counted(s.num_cores, "core", "cores") +
                    ", " + counted(s.num_pus, "PU", "PUs") + ", " +
                    counted(s.num_numa_nodes, "NUMA node", "NUMA nodes");
  for (const CacheLevel& c : s.caches)
    out += ", " + c.name + " " + (c.size_bytes ? format_size(*c.size_bytes) : std::string("n/a")) + " x" +
           std::to_string(c.count);
  return out;
}

std::string Topology::describe() const { return hwdb::describe(summary()); }

std::vector<int> Topology::pu_os_indices() const {
  hwloc_topology_t t = impl_->topo.get();
  struct Entry {
    int rank_in_core;
    unsigned logical_index;
    int os_index;
  };
  std::vector<Entry> entries;
  std::map<unsigned, int> next_rank;  // core logical index -> PUs of it seen so far
  for (hwloc_obj_t pu = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_PU, nullptr); pu != nullptr;
       pu = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_PU, pu)) {
    // A PU without a core ancestor counts as a core of its own (rank 0).
    hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(t, HWLOC_OBJ_CORE, pu);
    int rank = core ? next_rank[core->logical_index]++ : 0;
    entries.push_back(Entry{rank, pu->logical_index, os_index_of(pu)});
  }
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.rank_in_core, a.logical_index) < std::tie(b.rank_in_core, b.logical_index);
  });
  std::vector<int> out;
  out.reserve(entries.size());
  for (const Entry& e : entries) out.push_back(e.os_index);
  return out;
}

BindResult Topology::bind_this_thread_to_pu(int os_index) const {
  DEEPFIT_ASSERT(os_index >= 0, "PU OS indices are non-negative");
  hwloc_topology_t t = impl_->topo.get();
  auto fail = [&](const std::string& why) {
    return BindResult{false, "unavailable: cannot bind this thread to PU P#" + std::to_string(os_index) + ": " + why};
  };
  if (!is_this_system())
    return fail("the topology (" + impl_->source + ") does not describe this machine, so hwloc would not bind");
  const hwloc_topology_support* support = hwloc_topology_get_support(t);
  if (support == nullptr || support->cpubind == nullptr || !support->cpubind->set_thread_cpubind)
    return fail("hwloc cannot bind threads on this system");
  hwloc_obj_t pu = hwloc_get_pu_obj_by_os_index(t, static_cast<unsigned>(os_index));
  if (pu == nullptr)
    return fail("no such PU among the allowed ones (" + bitmap_list(hwloc_topology_get_allowed_cpuset(t)) + ")");
  if (hwloc_set_cpubind(t, pu->cpuset, HWLOC_CPUBIND_THREAD) != 0)
    return fail("hwloc_set_cpubind(P#" + std::to_string(os_index) + ", thread) failed: " + errno_text(errno));
  if (support->cpubind->get_thread_cpubind) {
    BitmapPtr now = alloc_bitmap();
    if (hwloc_get_cpubind(t, now.get(), HWLOC_CPUBIND_THREAD) != 0)
      return fail("hwloc_get_cpubind(thread) failed after binding: " + errno_text(errno));
    if (!hwloc_bitmap_isequal(now.get(), pu->cpuset))
      return fail("the binding read back as " + bitmap_list(now.get()));
  }
  return BindResult{true, ""};
}

std::optional<std::string> Topology::this_thread_cpuset() const {
  hwloc_topology_t t = impl_->topo.get();
  const hwloc_topology_support* support = hwloc_topology_get_support(t);
  if (!is_this_system() || support == nullptr || support->cpubind == nullptr ||
      !support->cpubind->get_thread_cpubind)
    return std::nullopt;
  BitmapPtr now = alloc_bitmap();
  if (hwloc_get_cpubind(t, now.get(), HWLOC_CPUBIND_THREAD) != 0) return std::nullopt;
  return bitmap_list(now.get());
}

}  // namespace deepfit::hwdb
