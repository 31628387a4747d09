// --parallel parsing and checks.
#include "planner/parallel.h"

#include <cctype>

#include "kernels/error.h"

namespace deepfit::planner {

ParallelPlan parse_parallel(const std::string& text) {
  ParallelPlan p;
  p.text = text;
  bool seen[4] = {false, false, false, false};
  std::size_t i = 0;
  const std::string expect = " (expected components tpN, epN, ppN, dpN, e.g. tp8, tp8ep8, tp1ep8dp8, pp2tp8)";
  if (text.empty()) throw InputError("--parallel: empty value" + expect);
  while (i < text.size()) {
    if (i + 2 > text.size()) throw InputError("--parallel: cannot parse '" + text + "'" + expect);
    std::string key = text.substr(i, 2);
    int slot = key == "tp" ? 0 : key == "ep" ? 1 : key == "pp" ? 2 : key == "dp" ? 3 : -1;
    if (slot < 0) throw InputError("--parallel: unknown component '" + key + "' in '" + text + "'" + expect);
    if (seen[slot]) throw InputError("--parallel: '" + key + "' given twice in '" + text + "'");
    seen[slot] = true;
    i += 2;
    std::size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    if (start == i || i - start > 6) throw InputError("--parallel: '" + key + "' needs a count in '" + text + "'" + expect);
    std::int64_t n = std::stoll(text.substr(start, i - start));
    if (n < 1) throw InputError("--parallel: '" + key + "' must be at least 1 in '" + text + "'");
    (slot == 0 ? p.tp : slot == 1 ? p.ep : slot == 2 ? p.pp : p.dp) = n;
  }
  return p;
}

std::string to_string(const ParallelPlan& p) {
  std::string s;
  if (p.pp > 1) s += "pp" + std::to_string(p.pp);
  s += "tp" + std::to_string(p.tp);
  if (p.ep > 1) s += "ep" + std::to_string(p.ep);
  if (p.dp > 1) s += "dp" + std::to_string(p.dp);
  return s;
}

void check_parallel(const ParallelPlan& p, const ModelSpec& m, std::int64_t count) {
  const std::string what = "--parallel " + p.text + ": ";
  if (p.num_devices() != count)
    throw InputError(what + "uses tp x pp x dp = " + std::to_string(p.num_devices()) + " devices but --count is " +
                     std::to_string(count) + " (hint: make them equal)");
  if (m.num_heads % p.tp != 0)
    throw InputError(what + "tp " + std::to_string(p.tp) + " does not divide the " + std::to_string(m.num_heads) +
                     " attention heads of " + m.display_name);
  if (p.pp > m.num_layers)
    throw InputError(what + "pp " + std::to_string(p.pp) + " exceeds the " + std::to_string(m.num_layers) + " layers");
  if (p.ep > 1) {
    if (!m.is_moe()) throw InputError(what + "expert parallelism needs a mixture-of-experts model; " + m.display_name + " is dense");
    if (m.num_experts % p.ep != 0)
      throw InputError(what + "ep " + std::to_string(p.ep) + " does not divide the " + std::to_string(m.num_experts) + " experts");
    if ((p.tp * p.dp) % p.ep != 0)
      throw InputError(what + "ep " + std::to_string(p.ep) + " must divide tp x dp = " + std::to_string(p.tp * p.dp));
  }
}

ParallelPlan default_parallel(std::int64_t count, const std::string& framework_id) {
  ParallelPlan p;
  if (framework_id == "llamacpp") p.pp = count;  // llama.cpp's default --split-mode layer
  else p.tp = count;
  p.text = to_string(p);
  return p;
}

}  // namespace deepfit::planner
