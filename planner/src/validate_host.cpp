// Host validation: the decode loop against the planner's decode step (see validate.h).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>

#include "kernels/error.h"
#include "planner/host_probe.h"
#include "planner/parallel.h"
#include "planner/perf_model.h"
#include "planner/validate.h"

namespace deepfit::planner {
namespace {

}  // namespace

// As host_decode.cpp's DecodeLoop::build allocates: kv_b is the loop's absorbed w_uk/w_uv.
Scheme host_loop_scheme(const std::string& quant) {
  static const std::array<std::pair<const char*, const char*>, 4> kFormats = {
      {{"bf16", "bf16"}, {"q8_0", "q8_0"}, {"q4_k", "q4_k"}, {"fp8", "fp8_e4m3_b128"}}};
  Scheme s;
  for (const auto& [q, f] : kFormats)
    if (quant == q) s.matrix_format = f;
  if (s.matrix_format.empty())
    throw InputError("--quant: '" + quant + "' is not a host kernel format (expected bf16, q8_0, q4_k or fp8)");
  s.id = "host-loop-" + quant;
  s.kind = "roles";
  s.description = "deepfit's host decode loop: every matrix in " + quant;
  s.vector_format = "f32";
  s.role_formats = {{"embedding", "bf16"}, {"router", "bf16"}};
  s.tensor_overrides = {{"attn_kv_b.weight", "bf16"}, {"indexer.proj.weight", "bf16"}, {"exp_probs_b.bias", "f32"}};
  return s;
}

namespace {

std::string point_id(const HostPoint& p) {
  return "host:batch" + std::to_string(p.batch) + ":ctx" + std::to_string(p.context);
}

// The planner's terms of one point: the weights' bytes over the bandwidth and FLOPs over the
// format's peak, attention's roofline (the longer of its KV bytes and its FLOPs over the bf16
// peak), and the layer passes.
constexpr std::size_t kTerms = 3;
using Terms = std::array<double, kTerms>;
struct HostTerms {
  Terms x{};  // weight memory s, weight compute s, attention s
  std::string bottleneck;
};

// t = sum x[k] term[k], every x >= 0, by least squares on the relative error (each row divided by
// its measured t): the unconstrained optimum of every subset of free parameters (the others held
// at 0) that stays feasible, the best of them. The weights' memory and compute times add rather
// than overlap: at batch 2-16 the host's quantized GEMM is neither at the triad nor at the peak.
struct HostFit {
  Terms x{1, 0, 1};  // the plain roofline of a memory-bound step
};

double fit_loss(const Terms& x, const std::vector<Terms>& f) {
  double l = 0;
  for (const auto& r : f) {
    double e = -1;
    for (std::size_t k = 0; k < kTerms; ++k) e += x[k] * r[k];
    l += e * e;
  }
  return l;
}

HostFit fit_host(const std::vector<Terms>& f) {
  HostFit best;
  double best_loss = fit_loss(best.x, f);
  for (int mask = 1; mask < (1 << kTerms); ++mask) {
    std::vector<int> idx;
    for (int k = 0; k < static_cast<int>(kTerms); ++k)
      if (mask & (1 << k)) idx.push_back(k);
    const std::size_t n = idx.size();
    // Normal equations A x = b over the free parameters, by Gaussian elimination with pivoting.
    std::vector<std::vector<double>> a(n, std::vector<double>(n + 1, 0));
    for (const auto& r : f)
      for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t j = 0; j < n; ++j) a[i][j] += r[static_cast<std::size_t>(idx[i])] * r[static_cast<std::size_t>(idx[j])];
        a[i][n] += r[static_cast<std::size_t>(idx[i])];
      }
    bool singular = false;
    for (std::size_t c = 0; c < n && !singular; ++c) {
      std::size_t piv = c;
      for (std::size_t r = c + 1; r < n; ++r)
        if (std::fabs(a[r][c]) > std::fabs(a[piv][c])) piv = r;
      if (!(std::fabs(a[piv][c]) > 1e-12 * (1 + std::fabs(a[c][c])))) singular = true;
      if (singular) break;
      std::swap(a[c], a[piv]);
      for (std::size_t r = 0; r < n; ++r) {
        if (r == c) continue;
        const double m = a[r][c] / a[c][c];
        for (std::size_t k = c; k <= n; ++k) a[r][k] -= m * a[c][k];
      }
    }
    if (singular) continue;
    Terms x{};
    bool ok = true;
    for (std::size_t i = 0; i < n; ++i) {
      x[static_cast<std::size_t>(idx[i])] = a[i][n] / a[i][i];
      ok = ok && std::isfinite(x[static_cast<std::size_t>(idx[i])]) && x[static_cast<std::size_t>(idx[i])] >= 0;
    }
    if (!ok) continue;
    const double l = fit_loss(x, f);
    if (l < best_loss) {
      best_loss = l;
      best.x = x;
    }
  }
  return best;
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

}  // namespace

std::vector<HostPoint> default_host_points() {
  // Batch 1 to 16 and contexts from 1K (weights dominate) to 32K (the indexer scans every position).
  return {{1, 1024}, {1, 16384}, {4, 4096}, {8, 1024}, {16, 4096}, {4, 32768}, {2, 8192}};
}

void require_host_points(std::size_t n, const std::string& where) {
  if (n < kMinHostPoints)
    throw InputError(where + ": " + std::to_string(n) + " point(s); at least " + std::to_string(kMinHostPoints) +
                     " are needed (each point is predicted from a fit of 3 efficiencies on the others)");
}

std::vector<HostPoint> parse_host_points(const std::string& text) {
  std::vector<HostPoint> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    auto bad = [&](const std::string& why) {
      return InputError("--points: '" + item + "' " + why + " (expected BATCHxCONTEXT items such as 1x4096,8x16K)");
    };
    const std::size_t x = item.find('x');
    if (x == std::string::npos) throw bad("has no 'x'");
    auto number = [&](std::string s, std::int64_t hi) {
      std::int64_t scale = 1;
      if (!s.empty() && (s.back() == 'K' || s.back() == 'k')) {
        scale = 1024;
        s.pop_back();
      }
      if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) throw bad("is not two whole numbers");
      const std::int64_t v = std::stoll(s) * scale;
      if (v < 1 || v > hi) throw bad("is out of range (batch 1..4096, context 1..16M)");
      return v;
    };
    out.push_back({number(item.substr(0, x), 4096), number(item.substr(x + 1), std::int64_t{1} << 24)});
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

namespace {

// The scaled model as the loop stores it, set up for the planner on this host.
struct HostSetup {
  HostSetup(const Catalog& cat, const hwdb::Device& host, const HostValidationOptions& opt)
      : m(scale_for_host(cat.model(opt.model), opt.layers, opt.experts)),
        scheme(host_loop_scheme(opt.quant)),
        stored(store_model(m, scheme, cat.quants)) {
    if (host.kind != hwdb::DeviceKind::kCpu) throw InputError("validate: " + host.id + " is not a CPU record (the host probe's is)");
    s.model = &m;
    s.stored = &stored;
    s.scheme = &scheme;
    s.framework = &cat.frameworks.get("deepfit");
    s.parallel = default_parallel(1, "deepfit");
    s.kv_dtype = opt.kv_cache;
  }
  HostSetup(const HostSetup&) = delete;
  HostSetup& operator=(const HostSetup&) = delete;

  HostTerms terms(const hwdb::Device& host, const HostPoint& p) {
    s.device = &host;
    const PhaseCost c = decode_step(s, PerfParams{}, p.batch, p.context);
    s.device = nullptr;
    HostTerms t;
    t.x = loop_terms(c, host, matrix_format(stored));
    t.bottleneck = c.bottleneck;
    return t;
  }

  ModelSpec m;
  Scheme scheme;
  StoredModel stored;
  FitSetup s;
};

}  // namespace

std::array<double, 3> host_point_terms(const Catalog& cat, const hwdb::Device& host, const HostValidationOptions& opt,
                                       const HostPoint& point) {
  HostSetup h(cat, host, opt);
  return h.terms(host, point).x;
}

Validation validate_host_measurements(const Catalog& cat, const hwdb::Device& host, const HostValidationOptions& opt,
                                      const std::vector<HostMeasurement>& measured) {
  HostSetup h(cat, host, opt);
  Validation v;
  struct Row {
    HostMeasurement meas;
    HostTerms terms;
  };
  std::vector<Row> rows;
  for (const auto& me : measured) {
    if (!me.skipped.empty()) {
      v.skipped.push_back({point_id(me.point), me.skipped});
      continue;
    }
    rows.push_back({me, h.terms(host, me.point)});
  }
  require_host_points(rows.size(), "validate: points that ran");
  auto features = [](const Row& r) {
    Terms f = r.terms.x;
    for (double& term : f) term /= r.meas.step_s;
    return f;
  };
  auto step_of = [](const HostFit& f, const HostTerms& t) {
    double sum = 0;
    for (std::size_t k = 0; k < kTerms; ++k) sum += f.x[k] * t.x[k];
    return sum;
  };
  std::vector<double> errs;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::vector<Terms> others;
    for (std::size_t j = 0; j < rows.size(); ++j)
      if (j != i) others.push_back(features(rows[j]));
    const HostFit f = fit_host(others);
    const Row& r = rows[i];
    const double batch = static_cast<double>(r.meas.point.batch);
    ValidationRow row;
    row.id = point_id(r.meas.point);
    row.metric = "decode_tok_s";
    row.framework = "deepfit";
    row.group = "deepfit/decode/host";
    row.measured = batch / r.meas.step_s;
    row.predicted = batch / step_of(f, r.terms);
    row.roofline = batch / (std::max(r.terms.x[0], r.terms.x[1]) + r.terms.x[2]);
    row.error_pct = (row.predicted / row.measured - 1) * 100;
    row.basis = "host roofline (probe: triad " + fixed(host.memory_bandwidth_gbps, 1) + " GB/s; " + r.terms.bottleneck +
                "-bound): weight bytes x " + fixed(f.x[0], 2) + " + weight FLOPs x " + fixed(f.x[1], 2) + " + attention x " +
                fixed(f.x[2], 2) + ", fitted on the " + std::to_string(others.size()) +
                " other points";
    if (r.meas.triad_gbps > 0) row.basis += "; triad right after the point: " + fixed(r.meas.triad_gbps, 1) + " GB/s";
    errs.push_back(std::fabs(row.error_pct));
    v.rows.push_back(row);
  }
  v.summary = summarize(errs);
  v.by_framework = {{"deepfit", v.summary}};
  v.by_metric = {{"decode_tok_s", v.summary}};
  std::vector<Terms> all;
  Validation::GroupFit g;
  for (const auto& r : rows) {
    all.push_back(features(r));
    g.ids.push_back(point_id(r.meas.point));
  }
  const HostFit f = fit_host(all);
  g.roofline_factor = f.x[0];
  g.compute_factor = f.x[1];
  g.attention_factor = f.x[2];
  g.rows = rows.size();
  g.loo_median_abs_error_pct = v.summary.median_abs_error_pct;
  v.fitted.push_back({"deepfit/decode/host", g});
  return v;
}

nlohmann::json host_calibration_to_json(const Validation& v, const hwdb::Device& host, const HostValidationOptions& opt) {
  const Validation::GroupFit* g = nullptr;
  for (const auto& [k, f] : v.fitted)
    if (k == "deepfit/decode/host") g = &f;
  DEEPFIT_ASSERT(g && g->compute_factor && g->attention_factor, "no host fit to write");
  return nlohmann::json{
      {"_comment", "written by `deepfit validate --write-calibration` (host mode); `deepfit predict --device host --framework deepfit "
                   "--host-calibration FILE` prices decode steps with it: weight_bytes x bytes / bandwidth + weight_flops x "
                   "FLOPs / peak + attention x attention roofline, on the probe record host_id"},
      {"kind", "host_decode_loop"},
      {"host_id", host.id},
      {"cpu", host.name},
      {"model", opt.model},
      {"layers", opt.layers},
      {"experts", opt.experts},
      {"quant", opt.quant},
      {"matrix_format", host_loop_scheme(opt.quant).matrix_format},
      {"kv_cache", opt.kv_cache},
      {"points", g->ids},
      {"efficiency", {{"weight_bytes", g->roofline_factor}, {"weight_flops", *g->compute_factor}, {"attention", *g->attention_factor}}},
      {"loo_median_abs_error_pct", v.summary.median_abs_error_pct},
      {"p90_abs_error_pct", v.summary.p90_abs_error_pct}};
}

Validation validate_host(const Catalog& cat, const hwdb::Device& host, const HostValidationOptions& opt, ThreadPool& pool,
                         const std::function<void(std::size_t, std::size_t, const std::string&)>& progress) {
  const std::vector<HostPoint> points = opt.points.empty() ? default_host_points() : opt.points;
  require_host_points(points.size(), "--points");
  const ModelSpec model = cat.model(opt.model);
  (void)host_loop_scheme(opt.quant);  // a bad --quant fails before any point runs
  std::vector<HostMeasurement> measured;
  for (std::size_t i = 0; i < points.size(); ++i) {
    if (progress) progress(i + 1, points.size(), point_id(points[i]));
    HostDecodeOptions o;
    o.layers = opt.layers;
    o.experts = opt.experts;
    o.quant = opt.quant;
    o.kv_cache = opt.kv_cache;
    o.batch = points[i].batch;
    o.context = points[i].context;
    o.steps = opt.steps;
    o.seed = opt.seed;
    HostMeasurement me{points[i], 0, 0, ""};
    try {
      const HostDecodeResult r = run_host_decode(model, o, pool);
      me.step_s = r.step_ms_median * 1e-3;
      me.triad_gbps = measure_triad_gbps(pool);
    } catch (const InputError& e) {
      // A point too large for this host's memory is skipped with the loop's reason; a bad option
      // fails at the first point, before anything ran.
      if (i == 0 || std::string(e.what()).find("exceed") == std::string::npos) throw;
      me.skipped = e.what();
    }
    measured.push_back(me);
  }
  return validate_host_measurements(cat, host, opt, measured);
}

}  // namespace deepfit::planner
