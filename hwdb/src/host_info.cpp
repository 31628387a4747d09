// /proc/cpuinfo and sysfs readers for HostInfo (see host_info.h). Parsing is separate from file
// access; nothing here runs code on the CPU to probe it (cpuid), the kernel's view is the one used.
#include "hwdb/host_info.h"

#include <ctime>

#include <unistd.h>

#include <charconv>
#include <functional>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>

namespace deepfit::hwdb {
namespace {

std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n";
  std::size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  std::size_t e = s.find_last_not_of(kSpace);
  return s.substr(b, e - b + 1);
}

// Value of the first "key : value" line whose trimmed key equals `key`.
std::optional<std::string> cpuinfo_value(const std::string& text, std::string_view key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string_view view(line);
    if (trim(view.substr(0, colon)) == key) return std::string(trim(view.substr(colon + 1)));
  }
  return std::nullopt;
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return ss.str();
}

std::optional<bool> read_bool(const std::string& path) {
  auto text = read_file(path);
  return text ? parse_sysfs_bool(*text) : std::nullopt;
}

// Where kernels report turbo/boost, in the order tried. intel_pstate says the opposite
// ("no_turbo"), so its value is inverted.
std::optional<bool> read_boost() {
  if (auto b = read_bool("/sys/devices/system/cpu/cpufreq/boost")) return b;
  if (auto no_turbo = read_bool("/sys/devices/system/cpu/intel_pstate/no_turbo")) return !*no_turbo;
  if (auto b = read_bool("/sys/devices/system/cpu/cpufreq/policy0/boost")) return b;  // amd-pstate
  return std::nullopt;
}

}  // namespace

std::string to_string(const IsaFlags& f) {
  const std::pair<bool, const char*> all[] = {
      {f.avx2, "avx2"},         {f.fma, "fma"},           {f.avx512f, "avx512f"},
      {f.avx512bw, "avx512bw"}, {f.avx512vl, "avx512vl"}, {f.avx512_bf16, "avx512_bf16"},
      {f.avx512_vnni, "avx512_vnni"}, {f.avx_vnni, "avx_vnni"}, {f.amx_tile, "amx_tile"},
      {f.amx_bf16, "amx_bf16"}, {f.amx_int8, "amx_int8"}, {f.neon, "neon"},
      {f.sve, "sve"}};
  std::string out;
  for (const auto& [set, name] : all)
    if (set) out += (out.empty() ? "" : " ") + std::string(name);
  return out;
}

std::optional<IsaFlags> parse_cpu_flags(const std::string& cpuinfo_text) {
  std::optional<std::string> line = cpuinfo_value(cpuinfo_text, "flags");  // x86
  if (!line) line = cpuinfo_value(cpuinfo_text, "Features");              // arm, aarch64
  if (!line) return std::nullopt;
  std::set<std::string, std::less<>> tokens;
  std::istringstream in(*line);
  for (std::string tok; in >> tok;) tokens.insert(tok);
  auto has = [&](std::string_view name) { return tokens.count(name) > 0; };
  IsaFlags f;
  f.avx2 = has("avx2");
  f.fma = has("fma");
  f.avx512f = has("avx512f");
  f.avx512bw = has("avx512bw");
  f.avx512vl = has("avx512vl");
  f.avx512_bf16 = has("avx512_bf16");
  f.avx512_vnni = has("avx512_vnni");
  f.avx_vnni = has("avx_vnni");
  f.amx_tile = has("amx_tile");
  f.amx_bf16 = has("amx_bf16");
  f.amx_int8 = has("amx_int8");
  f.neon = has("asimd") || has("neon");
  f.sve = has("sve");
  return f;
}

std::optional<std::string> parse_model_name(const std::string& cpuinfo_text) {
  auto name = cpuinfo_value(cpuinfo_text, "model name");
  if (!name || name->empty()) return std::nullopt;
  return name;
}

std::optional<bool> parse_sysfs_bool(const std::string& text) {
  std::string_view t = trim(text);
  if (t == "1") return true;
  if (t == "0") return false;
  return std::nullopt;
}

std::optional<int> parse_sysfs_int(const std::string& text) {
  std::string_view t = trim(text);
  int value = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
  if (t.empty() || ec != std::errc() || end != t.data() + t.size()) return std::nullopt;
  return value;
}

HostInfo host_info() {
  HostInfo h;
  if (auto cpuinfo = read_file("/proc/cpuinfo")) {
    h.cpu_model = parse_model_name(*cpuinfo);
    h.isa = parse_cpu_flags(*cpuinfo);
  }
  if (auto governor = read_file("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")) {
    std::string_view g = trim(*governor);
    if (!g.empty()) h.governor = std::string(g);
  }
  h.boost = read_boost();
  h.smt_active = read_bool("/sys/devices/system/cpu/smt/active");
  if (auto paranoid = read_file("/proc/sys/kernel/perf_event_paranoid")) h.perf_event_paranoid = parse_sysfs_int(*paranoid);
  {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page > 0) h.physical_memory_bytes = static_cast<std::int64_t>(pages) * page;
  }
  return h;
}

}  // namespace deepfit::hwdb

namespace deepfit::hwdb {

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace deepfit::hwdb
