// Facts about the host that affect measurements (CPU model, ISA extensions, governor, boost, SMT,
// perf_event_paranoid), read from /proc and /sys. Parsers are pure so tests feed them text.
// Topology lives in topology.h, counters in counters.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace deepfit::hwdb {

// ISA extensions the kernels and the planner care about, by the names Linux prints in
// /proc/cpuinfo ("flags" on x86, "Features" on aarch64). A flag of the other architecture is false.
struct IsaFlags {
  bool avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512_bf16 = false, avx512_vnni = false;
  bool avx_vnni = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;
  bool neon = false;  // aarch64 "asimd" (or 32-bit arm "neon")
  bool sve = false;
};

// The set flags, space-separated, in IsaFlags order ("avx2 fma avx512f"); "" when none.
std::string to_string(const IsaFlags& flags);

struct HostInfo {
  std::optional<std::string> cpu_model;  // "model name"; nullopt where the kernel prints none (most aarch64)
  std::optional<IsaFlags> isa;           // nullopt when /proc/cpuinfo has no flags/Features line
  std::optional<std::string> governor;   // cpu0's scaling_governor; nullopt without cpufreq (VMs)
  std::optional<bool> boost;             // turbo/boost enabled; nullopt when the kernel does not say
  std::optional<bool> smt_active;        // /sys/devices/system/cpu/smt/active
  std::optional<int> perf_event_paranoid;
  std::optional<std::int64_t> physical_memory_bytes;  // what the OS manages (sysconf), may exceed NUMA sums in VMs
};

// Reads /proc/cpuinfo and the sysfs files. Missing or unparsable files give nullopt fields; never
// throws for them (they are environment facts, not input).
HostInfo host_info();

// The host clock as ISO 8601 UTC ("2026-11-24T20:00:00Z"), for provenance and stored runs.
std::string utc_now();

// Pure parsers. Each looks at the first processor block's line whose key (text before ':', trimmed)
// matches exactly, so "vmx flags" is not mistaken for "flags".
std::optional<IsaFlags> parse_cpu_flags(const std::string& cpuinfo_text);
std::optional<std::string> parse_model_name(const std::string& cpuinfo_text);

// sysfs/procfs single values: the whole trimmed text must be the token.
std::optional<bool> parse_sysfs_bool(const std::string& text);  // "0" / "1"
std::optional<int> parse_sysfs_int(const std::string& text);     // "-1", "2", ...

}  // namespace deepfit::hwdb
