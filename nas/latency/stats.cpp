#include "nas/latency/stats.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "engine/io.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace spnas {

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  double pos = q * double(v.size() - 1);
  size_t lo = size_t(std::floor(pos)), hi = std::min(v.size() - 1, lo + 1);
  double f = pos - double(lo);
  return v[lo] * (1 - f) + v[hi] * f;
}

void check_quantile(double q) {
  if (!(q > 0 && q < 1))
    throw std::runtime_error("latency quantile must be in (0, 1) (0.5: the median), got " + fmt(q, 3));
}

double relative_spread(const std::vector<double>& v) {
  const double m = quantile(v, 0.5);
  return m > 0 ? (quantile(v, 0.9) - quantile(v, 0.1)) / m : 0.0;
}

double kendall_tau(const std::vector<double>& a, const std::vector<double>& b) {
  check(a.size() == b.size(), "kendall_tau", "the two lists differ in length");
  const size_t n = a.size();
  double conc = 0, disc = 0, ta = 0, tb = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) {
      double da = a[i] - a[j], db = b[i] - b[j];
      if (da == 0 && db == 0) continue;
      if (da == 0) {
        ta += 1;
      } else if (db == 0) {
        tb += 1;
      } else if ((da > 0) == (db > 0)) {
        conc += 1;
      } else {
        disc += 1;
      }
    }
  double denom = std::sqrt((conc + disc + ta) * (conc + disc + tb));
  return denom > 0 ? (conc - disc) / denom : 0.0;
}

RatioInterval quantile_ratio_interval(const std::vector<double>& a, const std::vector<double>& b, double q,
                                      double confidence, int resamples, uint64_t seed) {
  check(!a.empty() && !b.empty(), "quantile_ratio_interval", "both lists need at least one value");
  check(confidence > 0 && confidence < 1, "quantile_ratio_interval", "confidence must be in (0, 1)");
  check(resamples >= 10, "quantile_ratio_interval", "at least 10 resamples");
  check_quantile(q);
  RatioInterval r;
  r.confidence = confidence;
  const double qb = quantile(b, q);
  check(qb > 0, "quantile_ratio_interval", "the reference's quantile must be positive");
  r.ratio = quantile(a, q) / qb;
  Rng rng(seed);
  auto resample = [&](const std::vector<double>& v) {
    std::vector<double> s(v.size());
    for (double& x : s) x = v[rng.below(v.size())];
    return s;
  };
  std::vector<double> ratios;
  ratios.reserve(size_t(resamples));
  for (int i = 0; i < resamples; ++i) {
    const double den = quantile(resample(b), q);
    const double num = quantile(resample(a), q);
    if (den > 0) ratios.push_back(num / den);
  }
  const double tail = (1 - confidence) / 2;
  r.lo = quantile(ratios, tail);
  r.hi = quantile(ratios, 1 - tail);
  return r;
}

}  // namespace spnas
