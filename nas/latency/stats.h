// Statistics of repeated timings: quantiles, spreads, rank agreement, and a confidence interval for
// the ratio of two latencies measured in the same run.
#pragma once
#include <cstdint>
#include <vector>

namespace spnas {

// Linear interpolation between order statistics, q in [0, 1]; 0 for an empty list.
double quantile(std::vector<double> v, double q);
// Throws unless q is in (0, 1): the statistic a table entry or a measurement reports.
void check_quantile(double q);
// (p90 - p10) / median; 0 when the median is not positive.
double relative_spread(const std::vector<double>& v);
// Kendall's tau-b between two equally long lists (1: same order, -1: reversed).
double kendall_tau(const std::vector<double>& a, const std::vector<double>& b);

struct RatioInterval {
  double ratio = 0;            // quantile(a, q) / quantile(b, q)
  double lo = 0, hi = 0;       // the confidence interval
  double confidence = 0;       // e.g. 0.95
};

// The q-quantile of `a` over the q-quantile of `b`, with a percentile-bootstrap interval: each list
// is resampled with replacement on its own, `resamples` times (seeded: the same input gives the same
// interval). Resampling them independently ignores that interleaved runs share the machine's load,
// which makes the two quantiles move together; ignoring that positive correlation widens the
// interval, so it errs on the safe side.
RatioInterval quantile_ratio_interval(const std::vector<double>& a, const std::vector<double>& b, double q,
                                      double confidence = 0.95, int resamples = 2000, uint64_t seed = 1);

}  // namespace spnas
