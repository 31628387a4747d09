// Statistics (see stats.h).
#include "regress/stats.h"

#include <algorithm>
#include <cmath>

#include "kernels/error.h"

namespace deepfit::regress {

double median(std::vector<double> v) {
  DEEPFIT_ASSERT(!v.empty(), "median of an empty sample");
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double mad(const std::vector<double>& v) {
  const double m = median(v);
  std::vector<double> d;
  for (double x : v) d.push_back(std::fabs(x - m));
  return median(d);
}

double cv(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  double mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return mean != 0 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) / std::fabs(mean) : 0;
}

std::vector<double> u_distribution(std::size_t n1, std::size_t n2) {
  // f[i][j][u]: arrangements of i + j items with U = u; f(i, j) = f(i-1, j) shifted by j + f(i, j-1).
  std::vector<std::vector<std::vector<double>>> f(n1 + 1, std::vector<std::vector<double>>(n2 + 1));
  for (std::size_t i = 0; i <= n1; ++i)
    for (std::size_t j = 0; j <= n2; ++j) {
      auto& cur = f[i][j];
      cur.assign(i * j + 1, 0.0);
      if (i == 0 || j == 0) {
        cur[0] = 1;
        continue;
      }
      // The largest item belongs to sample 1 (it beats all j of sample 2) or to sample 2.
      const auto& a = f[i - 1][j];
      for (std::size_t u = 0; u < a.size(); ++u) cur[u + j] += a[u];
      const auto& b = f[i][j - 1];
      for (std::size_t u = 0; u < b.size(); ++u) cur[u] += b[u];
    }
  return f[n1][n2];
}

double min_p_value(std::size_t n1, std::size_t n2) {
  // 2 / C(n1+n2, n1), computed in logs to stay finite.
  double log_c = std::lgamma(static_cast<double>(n1 + n2 + 1)) - std::lgamma(static_cast<double>(n1 + 1)) -
                 std::lgamma(static_cast<double>(n2 + 1));
  return std::min(1.0, 2.0 * std::exp(-log_c));
}

namespace {

// Midranks of the pooled sample; returns the rank sum of `a` and the tie correction term.
void rank_sums(const std::vector<double>& a, const std::vector<double>& b, double* r1, double* tie_term, bool* ties) {
  std::vector<std::pair<double, int>> all;
  for (double x : a) all.push_back({x, 0});
  for (double x : b) all.push_back({x, 1});
  std::sort(all.begin(), all.end());
  *r1 = 0;
  *tie_term = 0;
  *ties = false;
  for (std::size_t i = 0; i < all.size();) {
    std::size_t j = i;
    while (j < all.size() && all[j].first == all[i].first) ++j;
    const double rank = 0.5 * static_cast<double>(i + 1 + j);  // mean of ranks i+1..j
    const double t = static_cast<double>(j - i);
    if (t > 1) *ties = true;
    *tie_term += t * t * t - t;
    for (std::size_t k = i; k < j; ++k)
      if (all[k].second == 0) *r1 += rank;
    i = j;
  }
}

double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

}  // namespace

UTest mann_whitney(const std::vector<double>& a, const std::vector<double>& b) {
  DEEPFIT_ASSERT(!a.empty() && !b.empty(), "Mann-Whitney needs two non-empty samples");
  const double n1 = static_cast<double>(a.size()), n2 = static_cast<double>(b.size());
  double r1 = 0, tie_term = 0;
  bool ties = false;
  rank_sums(a, b, &r1, &tie_term, &ties);
  UTest t;
  t.u = r1 - n1 * (n1 + 1) / 2;
  const double mu = n1 * n2 / 2;
  if (!ties && a.size() * b.size() <= 2500) {
    // Exact: P(U <= min(u, n1n2 - u)) doubled, from the counts of every arrangement.
    const std::vector<double> dist = u_distribution(a.size(), b.size());
    double total = 0;
    for (double c : dist) total += c;
    const double lo = std::min(t.u, n1 * n2 - t.u);
    double tail = 0;
    for (std::size_t u = 0; u < dist.size() && static_cast<double>(u) <= lo + 1e-9; ++u) tail += dist[u];
    t.p_value = std::min(1.0, 2 * tail / total);
    t.exact = true;
    return t;
  }
  const double n = n1 + n2;
  const double var = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)));
  if (var <= 0) return t;  // every value equal: no evidence of a difference
  const double z = (std::fabs(t.u - mu) - 0.5) / std::sqrt(var);  // continuity-corrected
  t.p_value = std::min(1.0, 2 * (1 - normal_cdf(std::max(0.0, z))));
  return t;
}

Shift hodges_lehmann(const std::vector<double>& a, const std::vector<double>& b, double alpha) {
  std::vector<double> d;
  d.reserve(a.size() * b.size());
  for (double y : b)
    for (double x : a) d.push_back(y - x);
  std::sort(d.begin(), d.end());
  Shift s;
  s.estimate = median(d);
  // Moses: with k the largest count such that P(U <= k - 1) <= alpha/2 under the null, the
  // interval [d_(k), d_(N-k+1)] (1-based) covers the shift with probability >= 1 - alpha.
  if (a.size() * b.size() > 2500) {
    const double n1 = static_cast<double>(a.size()), n2 = static_cast<double>(b.size());
    // Normal quantile for 1 - alpha/2 by bisection on the CDF.
    double lo_z = 0, hi_z = 10;
    for (int it = 0; it < 100; ++it) {
      const double mid = 0.5 * (lo_z + hi_z);
      (normal_cdf(mid) < 1 - alpha / 2 ? lo_z : hi_z) = mid;
    }
    const double zq = 0.5 * (lo_z + hi_z);
    const double k = std::floor(n1 * n2 / 2 - zq * std::sqrt(n1 * n2 * (n1 + n2 + 1) / 12));
    if (k >= 1) {
      s.low = d[static_cast<std::size_t>(k) - 1];
      s.high = d[d.size() - static_cast<std::size_t>(k)];
      s.has_interval = true;
    }
    return s;
  }
  const std::vector<double> dist = u_distribution(a.size(), b.size());
  double total = 0;
  for (double c : dist) total += c;
  double cum = 0;
  std::size_t k = 0;
  for (std::size_t u = 0; u < dist.size(); ++u) {
    if ((cum + dist[u]) / total > alpha / 2) break;
    cum += dist[u];
    k = u + 1;  // P(U <= u) <= alpha/2
  }
  if (k >= 1) {
    s.low = d[k - 1];
    s.high = d[d.size() - k];
    s.has_interval = true;
  }
  return s;
}

}  // namespace deepfit::regress
