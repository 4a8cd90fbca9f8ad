#include "nas/tune/bo.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>

#include "engine/rng.h"
#include "nas/tune/gp.h"

namespace spnas {

namespace {

const double kInf = std::numeric_limits<double>::infinity();

double log_normal_pdf(double z) { return -0.5 * z * z - 0.5 * std::log(2.0 * M_PI); }

// Radical inverse of i in `base`: the i-th point of a Halton sequence's coordinate.
double radical_inverse(uint64_t i, int base) {
  double f = 1.0, r = 0.0;
  while (i > 0) {
    f /= base;
    r += f * double(i % uint64_t(base));
    i /= uint64_t(base);
  }
  return r;
}

const int kHaltonBases[] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29};
// Distances in the unit cube: 1e-3 is 0.7 % of lambda's factor-1000 range; 0.05 keeps parallel
// proposals apart.
const double kDoneRadius = 1e-3, kPendingRadius = 0.05;

// The tail t(x) = 1 / (x + 2 / (x + 3 / (x + ...))) of the continued fraction of the Mills ratio
// Phi(-x) / phi(x) = 1 / (x + t(x)), evaluated bottom-up; for x >= 6, 100 levels are exact in double.
double mills_tail(double x) {
  double tail = 0;
  for (int k = 100; k >= 2; --k) tail = k / (x + tail);
  return 1.0 / (x + tail);
}

}  // namespace

double normal_pdf(double z) { return std::exp(log_normal_pdf(z)); }
double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

double log_normal_cdf(double z) {
  if (z > -30) return std::log(normal_cdf(z));
  // Lower tail (erfc underflows below z ~ -37): Phi(z) = phi(z) / (|z| + t(|z|)).
  return log_normal_pdf(z) - std::log(-z + mills_tail(-z));
}

double expected_improvement(double mean, double sd, double best) {
  const double d = mean - best;
  if (!(sd > 0)) return std::max(0.0, d);
  const double z = d / sd;
  return d * normal_cdf(z) + sd * normal_pdf(z);
}

double log_expected_improvement(double mean, double sd, double best) {
  const double d = mean - best;
  if (!(sd > 0)) return d > 0 ? std::log(d) : -kInf;
  const double z = d / sd;
  if (z > -6) return std::log(sd) + std::log(z * normal_cdf(z) + normal_pdf(z));
  // z Phi(z) + phi(z) cancels below z ~ -6. With x = -z and Phi(z) = phi(x) / (x + t) it is
  // phi(x) (1 - x / (x + t)) = phi(x) t / (x + t): no difference left.
  const double x = -z, t = mills_tail(x);
  return std::log(sd) + log_normal_pdf(z) + std::log(t) - std::log(x + t);
}

double log_probability_between(double mean, double sd, double lo, double hi) {
  if (!(hi > lo)) return -kInf;
  if (!(sd > 0)) return (mean >= lo && mean <= hi) ? 0.0 : -kInf;
  const double a = (lo - mean) / sd, b = (hi - mean) / sd;
  if (a == -kInf) return log_normal_cdf(b);
  // Phi(b) - Phi(a) as a difference of two numbers of one tail, computed in logs so it keeps its digits.
  if (b <= 0) {
    const double lb = log_normal_cdf(b);
    return lb + std::log1p(-std::exp(log_normal_cdf(a) - lb));
  }
  if (a >= 0) {
    const double la = log_normal_cdf(-a);
    return la + std::log1p(-std::exp(log_normal_cdf(-b) - la));
  }
  return std::log(normal_cdf(b) - normal_cdf(a));
}

double TuneVariable::value(double u) const {
  return log_scale ? lo * std::pow(hi / lo, u) : lo + (hi - lo) * u;
}

double TuneVariable::unit(double v) const {
  return log_scale ? std::log(v / lo) / std::log(hi / lo) : (v - lo) / (hi - lo);
}

std::vector<double> propose_random(int dims, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> u(static_cast<size_t>(dims));
  for (double& x : u) x = rng.uniform();
  return u;
}

BoProposal propose_bo(const std::vector<BoObservation>& done, const std::vector<std::vector<double>>& pending,
                      int dims, const BoSettings& s, uint64_t seed) {
  if (done.empty()) throw std::runtime_error("propose_bo: no finished trial to model");
  if (dims < 1 || dims > int(sizeof kHaltonBases / sizeof kHaltonBases[0]))
    throw std::runtime_error("propose_bo: " + std::to_string(dims) + " variables (1 to 10 supported)");
  if (!(s.target_ms > 0) || !(s.window >= 0 && s.window < 1))
    throw std::runtime_error("propose_bo: needs a positive target and a window in [0, 1)");
  for (const auto& o : done)
    if (int(o.u.size()) != dims || !(o.R_ms > 0))
      throw std::runtime_error("propose_bo: an observation has the wrong dimension or a non-positive R");
  Rng seeds(seed);
  const std::vector<double> lower(size_t(dims), 0.0), upper(size_t(dims), 1.0);

  // The constraint's model: log R of every finished trial.
  std::vector<std::vector<double>> xr, xa;
  std::vector<double> yr, ya;
  double best = -kInf;
  for (const auto& o : done) {
    xr.push_back(o.u), yr.push_back(std::log(o.R_ms));
    if (o.trained) {
      xa.push_back(o.u), ya.push_back(o.accuracy);
      if (in_goal_band(o.R_ms, s.target_ms, s.window)) best = std::max(best, o.accuracy);
    }
  }
  // R is a deterministic function of the point (every trial has the same seed), stepped where the
  // decoded architecture changes, and it falls steadily as the runtime term gets stronger. With the
  // generic bounds, a few trials are best "explained" as noise or as independent points, and the
  // mean between two trials falls back to their average instead of crossing T where they do. So the
  // noise only smooths the steps (sd at most 10 % of log R's spread) and length scales start at a
  // fifth of a variable's range.
  GpBounds r_bounds;
  r_bounds.noise_max = 0.01;
  r_bounds.length_min = 0.2;
  GaussianProcess r_gp(lower, upper);
  r_gp.fit_max_likelihood(xr, yr, r_bounds, s.gp_restarts, seeds.next_u64());
  // The objective's model: accuracy of the trained trials.
  std::unique_ptr<GaussianProcess> a_gp;
  if (!xa.empty()) {
    a_gp = std::make_unique<GaussianProcess>(lower, upper);
    a_gp->fit_max_likelihood(xa, ya, GpBounds{}, s.gp_restarts, seeds.next_u64());
  }
  const double log_hi = std::log(s.target_ms);
  const double log_lo = s.window > 0 ? std::log((1.0 - s.window) * s.target_ms) : -kInf;

  // A trial is a deterministic function of its point (every trial has the same seed), so a point
  // already run teaches nothing; a running trial's neighbourhood is left to it.
  auto is_taken = [&](const std::vector<double>& u) {
    auto within = [&](const std::vector<double>& t, double radius) {
      double d2 = 0;
      for (int k = 0; k < dims; ++k) d2 += (u[k] - t[k]) * (u[k] - t[k]);
      return d2 < radius * radius;
    };
    for (const auto& o : done)
      if (within(o.u, kDoneRadius)) return true;
    for (const auto& p : pending)
      if (within(p, kPendingRadius)) return true;
    return false;
  };

  const bool use_ei = best > -kInf;
  auto score = [&](const std::vector<double>& u, BoProposal* out) {
    if (is_taken(u) && !out) return -kInf;
    const GpPrediction r = r_gp.predict(u);
    // The outcome's spread, noise included: the band is about the R a trial will actually get.
    const double log_p = log_probability_between(r.mean, std::sqrt(r.variance + r_gp.noise_variance()), log_lo, log_hi);
    double log_ei = 0;
    if (use_ei) {
      const GpPrediction a = a_gp->predict(u);
      log_ei = log_expected_improvement(a.mean, std::sqrt(a.variance), best);
    }
    if (out) {
      out->u = u;
      out->log_acquisition = log_p + log_ei;
      out->p_goal = std::exp(log_p);
      out->expected_improvement = use_ei ? std::exp(log_ei) : 0.0;
      out->has_incumbent = use_ei;
    }
    return log_p + log_ei;
  };

  // Candidates: a Halton sequence with a random shift per coordinate (Cranley-Patterson rotation).
  std::vector<double> shift(static_cast<size_t>(dims));
  Rng shift_rng(seeds.next_u64());
  for (double& v : shift) v = shift_rng.uniform();
  std::vector<std::pair<double, std::vector<double>>> scored;
  for (int i = 0; i < s.candidates; ++i) {
    std::vector<double> u(static_cast<size_t>(dims));
    for (int k = 0; k < dims; ++k) u[k] = std::fmod(radical_inverse(uint64_t(i) + 1, kHaltonBases[k]) + shift[k], 1.0);
    scored.emplace_back(score(u, nullptr), std::move(u));
  }
  const size_t top = std::min<size_t>(scored.size(), size_t(std::max(1, s.refine)));
  std::partial_sort(scored.begin(), scored.begin() + top, scored.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });

  // Compass search from each of the best: move along a coordinate while it helps, else halve the step.
  std::vector<double> best_u;
  double best_score = -kInf;
  for (size_t c = 0; c < top; ++c) {
    std::vector<double> u = scored[c].second;
    double f = scored[c].first;
    int evaluations = 0;
    for (double step = 0.05; step >= 1e-3 && evaluations < 400;) {
      bool improved = false;
      for (int k = 0; k < dims; ++k) {
        for (double dir : {-1.0, 1.0}) {
          std::vector<double> v = u;
          v[k] = std::min(1.0, std::max(0.0, v[k] + dir * step));
          if (v[k] == u[k]) continue;
          const double fv = score(v, nullptr);
          ++evaluations;
          if (fv > f) u = v, f = fv, improved = true;
        }
      }
      if (!improved) step *= 0.5;
    }
    if (f > best_score || best_u.empty()) best_score = f, best_u = u;
  }
  BoProposal p;
  score(best_u, &p);
  return p;
}

}  // namespace spnas
