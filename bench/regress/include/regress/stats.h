// Statistics for comparing benchmark samples: medians, robust spread, the two-sided
// Mann-Whitney U test (exact distribution without ties, normal approximation with tie correction
// otherwise) and the Hodges-Lehmann shift with its distribution-free confidence interval.
// Computed in double with two-pass variance; pure functions.
#pragma once

#include <cstdint>
#include <vector>

namespace deepfit::regress {

double median(std::vector<double> v);          // v non-empty
double mad(const std::vector<double>& v);        // median absolute deviation from the median
double cv(const std::vector<double>& v);         // sample standard deviation / mean (two-pass); 0 for n < 2

struct UTest {
  double u = 0;          // U statistic of the first sample
  double p_value = 1;    // two-sided
  bool exact = false;    // exact null distribution (no ties, n1*n2 small enough) or normal approximation
};
UTest mann_whitney(const std::vector<double>& a, const std::vector<double>& b);

// The smallest two-sided p-value any outcome can give with these sample sizes (complete
// separation): 2 / C(n1 + n2, n1). When it is not below alpha, no data can be significant.
double min_p_value(std::size_t n1, std::size_t n2);

// Hodges-Lehmann estimate of the shift b - a (the median of all pairwise differences) and the
// Moses confidence interval at level 1 - alpha, from the order statistics of those differences.
struct Shift {
  double estimate = 0, low = 0, high = 0;
  bool has_interval = false;  // false when the samples are too small for this level
};
Shift hodges_lehmann(const std::vector<double>& a, const std::vector<double>& b, double alpha);

// Number of ways of choosing n1 of n1+n2 ranks whose U equals each value 0..n1*n2 (exact null
// distribution, as counts). Exposed for tests.
std::vector<double> u_distribution(std::size_t n1, std::size_t n2);

}  // namespace deepfit::regress
