// Kernel suite summary (see summary.h).
#include "regress/summary.h"

#include <map>

#include "regress/stats.h"

namespace deepfit::regress {
namespace {

std::vector<std::string> segments(const std::string& name) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t slash = name.find('/', start);
    out.push_back(name.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
    if (slash == std::string::npos) return out;
    start = slash + 1;
  }
}

std::optional<double> median_of(const Series& s, const std::string& counter) {
  const auto it = s.counters.find(counter);
  if (it == s.counters.end() || it->second.empty()) return std::nullopt;
  return median(it->second);
}

}  // namespace

std::string compute_probe_for(const std::string& format) {
  if (format == "int8" || format == "q8_0" || format == "q4_k") return "BM_peak_dot/int8";
  if (format == "bf16" || format == "fp8") return "BM_peak_dot/bf16";
  return "BM_peak_fma/fp32";
}

BenchSummary summarize(const BenchFile& file) {
  BenchSummary out;
  for (const Series& s : file.series) {
    BenchRow r;
    r.name = s.name;
    const std::vector<std::string> seg = segments(s.name);
    r.op = seg[0].rfind("BM_", 0) == 0 ? seg[0].substr(3) : seg[0];
    if (seg.size() > 1 && seg[1].find(':') == std::string::npos) r.format = seg[1];
    for (const std::string& part : seg)
      if (part.rfind("threads:", 0) == 0 && part.size() > 8 && part.size() < 14 &&
          part.find_first_not_of("0123456789", 8) == std::string::npos)
        r.threads = std::stoi(part.substr(8));
    if (const auto t = median_of(s, "threads")) r.threads = static_cast<int>(*t);
    r.repetitions = s.real_ns.size();
    if (s.error) r.error = s.error_message.empty() ? "error" : s.error_message;
    if (!s.real_ns.empty() && !s.error) {
      r.median_ns = median(s.real_ns);
      r.cv = cv(s.real_ns);
      r.unstable = r.cv > 0.05;
      r.bytes_per_second = median_of(s, "bytes_per_second");
      r.flops_per_second = median_of(s, "flops");
      if (r.bytes_per_second && r.flops_per_second && *r.bytes_per_second > 0 && *r.flops_per_second > 0)
        r.intensity_flop_per_byte = *r.flops_per_second / *r.bytes_per_second;
    } else if (s.aggregate_median_ns && !s.error) {
      r.median_ns = s.aggregate_median_ns;
    }
    out.rows.push_back(r);
  }
  // References from the same file: the triad per thread count, the probes per thread count.
  std::map<int, double> triad;
  std::map<std::pair<std::string, int>, double> peak;
  for (const BenchRow& r : out.rows) {
    if (r.op == "stream_triad" && r.bytes_per_second) triad[r.threads] = *r.bytes_per_second;
    if ((r.op == "peak_fma" || r.op == "peak_dot") && r.flops_per_second)
      peak[{"BM_" + r.op + "/" + r.format, r.threads}] = *r.flops_per_second;
  }
  bool missing_triad = false, missing_peak = false;
  for (BenchRow& r : out.rows) {
    if (r.op.rfind("stream_", 0) == 0 || r.op.rfind("peak_", 0) == 0 || !r.median_ns) continue;
    if (r.bytes_per_second) {
      const auto t = triad.find(r.threads);
      if (t != triad.end()) r.bw_efficiency = *r.bytes_per_second / t->second;
      else missing_triad = true;
    }
    if (r.flops_per_second && *r.flops_per_second > 0) {
      r.compute_reference = compute_probe_for(r.format);
      const auto p = peak.find({r.compute_reference, r.threads});
      if (p != peak.end()) r.compute_efficiency = *r.flops_per_second / p->second;
      else missing_peak = true;
    }
  }
  if (missing_triad) out.notes.push_back("bandwidth efficiency needs BM_stream_triad at the same thread count in the same run; left out where it was not");
  if (missing_peak) out.notes.push_back("compute efficiency needs the BM_peak_* probe of the format at the same thread count in the same run; left out where it was not");
  return out;
}

}  // namespace deepfit::regress
