#include "nas/tune/gp.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>

#include "engine/rng.h"

namespace spnas {

namespace {

const double kSqrt5 = std::sqrt(5.0);
const double kLog2Pi = std::log(2.0 * M_PI);

// Cholesky factor of the symmetric n x n matrix `a` (row-major), lower triangle, written into `l`.
// False when a pivot is not positive (the matrix is not numerically positive definite).
bool cholesky(const std::vector<double>& a, int n, std::vector<double>& l) {
  l.assign(size_t(n) * n, 0.0);
  for (int j = 0; j < n; ++j) {
    double d = a[size_t(j) * n + j];
    for (int k = 0; k < j; ++k) d -= l[size_t(j) * n + k] * l[size_t(j) * n + k];
    if (!(d > 0)) return false;
    const double ljj = std::sqrt(d);
    l[size_t(j) * n + j] = ljj;
    for (int i = j + 1; i < n; ++i) {
      double s = a[size_t(i) * n + j];
      for (int k = 0; k < j; ++k) s -= l[size_t(i) * n + k] * l[size_t(j) * n + k];
      l[size_t(i) * n + j] = s / ljj;
    }
  }
  return true;
}

// Cholesky of a + jitter I, the jitter escalated from 0 through 1e-10 .. 1e-4 of `scale` (the
// diagonal's size) until it succeeds. Returns the jitter used, or -1 when every level fails.
double cholesky_with_jitter(std::vector<double> a, int n, double scale, std::vector<double>& l) {
  double jitter = 0;
  for (int level = 0; level <= 7; ++level) {
    if (level > 0) {
      const double next = scale * std::pow(10.0, -11 + level);
      for (int i = 0; i < n; ++i) a[size_t(i) * n + i] += next - jitter;
      jitter = next;
    }
    if (cholesky(a, n, l)) return jitter;
  }
  return -1;
}

// Solves L x = b in place (L lower triangular, row-major).
void solve_lower(const std::vector<double>& l, int n, std::vector<double>& b) {
  for (int i = 0; i < n; ++i) {
    double s = b[i];
    for (int k = 0; k < i; ++k) s -= l[size_t(i) * n + k] * b[k];
    b[i] = s / l[size_t(i) * n + i];
  }
}

// Solves L^T x = b in place.
void solve_upper_transposed(const std::vector<double>& l, int n, std::vector<double>& b) {
  for (int i = n - 1; i >= 0; --i) {
    double s = b[i];
    for (int k = i + 1; k < n; ++k) s -= l[size_t(k) * n + i] * b[k];
    b[i] = s / l[size_t(i) * n + i];
  }
}

double scaled_distance(const std::vector<double>& a, const std::vector<double>& b, const std::vector<double>& ls) {
  double r2 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = (a[i] - b[i]) / ls[i];
    r2 += d * d;
  }
  return std::sqrt(r2);
}

void check_finite(double v, const std::string& what) {
  if (!std::isfinite(v)) throw std::runtime_error("GP: " + what + " is not finite");
}

// Hyperparameters <-> the optimiser's vector (log l_1 .. log l_d, log sigma_f^2, log sigma_n^2).
std::vector<double> to_log(const GpHyper& h) {
  std::vector<double> p;
  for (double l : h.length_scales) p.push_back(std::log(l));
  p.push_back(std::log(h.signal_variance));
  p.push_back(std::log(h.noise_variance));
  return p;
}

GpHyper from_log(const std::vector<double>& p) {
  GpHyper h;
  h.length_scales.assign(p.size() - 2, 0.0);
  for (size_t i = 0; i + 2 < p.size(); ++i) h.length_scales[i] = std::exp(p[i]);
  h.signal_variance = std::exp(p[p.size() - 2]);
  h.noise_variance = std::exp(p.back());
  return h;
}

// Maximises f over the box [lo, hi] by BFGS in unbounded coordinates q, x = lo + (hi - lo) sigmoid(q)
// (an optimum on a bound is approached as q grows), with Armijo backtracking. Returns the best x and
// writes f there; -inf when f is not finite at the start.
std::vector<double> maximise_in_box(const std::function<double(const std::vector<double>&, std::vector<double>*)>& f,
                                    const std::vector<double>& start, const std::vector<double>& lo,
                                    const std::vector<double>& hi, double* value) {
  const size_t m = start.size();
  auto to_x = [&](const std::vector<double>& q, std::vector<double>* dx_dq) {
    std::vector<double> x(m);
    for (size_t i = 0; i < m; ++i) {
      const double s = 1.0 / (1.0 + std::exp(-q[i]));
      x[i] = lo[i] + (hi[i] - lo[i]) * s;
      if (dx_dq) (*dx_dq)[i] = (hi[i] - lo[i]) * s * (1.0 - s);
    }
    return x;
  };
  // Minimises h(q) = -f(x(q)); its gradient by the chain rule.
  auto h = [&](const std::vector<double>& q, std::vector<double>& grad) {
    std::vector<double> dx(m), g;
    const double v = f(to_x(q, &dx), &g);
    grad.assign(m, 0.0);
    if (std::isfinite(v))
      for (size_t i = 0; i < m; ++i) grad[i] = -g[i] * dx[i];
    return -v;
  };
  std::vector<double> q(m);
  for (size_t i = 0; i < m; ++i) {
    const double s = hi[i] > lo[i] ? std::min(1 - 1e-6, std::max(1e-6, (start[i] - lo[i]) / (hi[i] - lo[i]))) : 0.5;
    q[i] = std::log(s / (1 - s));
  }
  std::vector<double> g, q2(m), g2;
  double v = h(q, g);
  *value = -v;
  if (!std::isfinite(v)) return to_x(q, nullptr);
  std::vector<double> H(m * m, 0.0);  // inverse Hessian estimate
  for (size_t i = 0; i < m; ++i) H[i * m + i] = 1.0;
  for (int it = 0; it < 200; ++it) {
    std::vector<double> d(m, 0.0);
    double slope = 0;
    for (size_t i = 0; i < m; ++i) {
      for (size_t k = 0; k < m; ++k) d[i] -= H[i * m + k] * g[k];
      slope += d[i] * g[i];
    }
    if (!(slope < 0)) {  // not a descent direction: restart from the gradient
      H.assign(m * m, 0.0);
      slope = 0;
      for (size_t i = 0; i < m; ++i) H[i * m + i] = 1.0, d[i] = -g[i], slope -= g[i] * g[i];
      if (!(slope < 0)) break;  // stationary
    }
    double step = 1.0, v2 = 0;
    bool accepted = false;
    for (; step > 1e-10; step *= 0.5) {
      for (size_t i = 0; i < m; ++i) q2[i] = q[i] + step * d[i];
      v2 = h(q2, g2);
      if (std::isfinite(v2) && v2 <= v + 1e-4 * step * slope) {
        accepted = true;
        break;
      }
    }
    if (!accepted) break;
    // BFGS update of the inverse Hessian with s = q2 - q, y = g2 - g.
    std::vector<double> sv(m), yv(m), Hy(m, 0.0);
    double sy = 0, yHy = 0;
    for (size_t i = 0; i < m; ++i) sv[i] = q2[i] - q[i], yv[i] = g2[i] - g[i], sy += sv[i] * yv[i];
    for (size_t i = 0; i < m; ++i)
      for (size_t k = 0; k < m; ++k) Hy[i] += H[i * m + k] * yv[k];
    for (size_t i = 0; i < m; ++i) yHy += yv[i] * Hy[i];
    if (sy > 1e-12) {
      for (size_t i = 0; i < m; ++i)
        for (size_t k = 0; k < m; ++k)
          H[i * m + k] += (sy + yHy) * sv[i] * sv[k] / (sy * sy) - (Hy[i] * sv[k] + sv[i] * Hy[k]) / sy;
    }
    const double gain = v - v2;
    q = q2, g = g2, v = v2;
    double largest = 0;
    for (double x : g) largest = std::max(largest, std::fabs(x));
    if (gain < 1e-12 * (1 + std::fabs(v)) || largest < 1e-8) break;
  }
  *value = -v;
  return to_x(q, nullptr);
}

void check_hyper(const GpHyper& h, int d) {
  if (int(h.length_scales.size()) != d)
    throw std::runtime_error("GP: " + std::to_string(h.length_scales.size()) + " length scales for " +
                             std::to_string(d) + " input dimensions");
  for (double l : h.length_scales)
    if (!(l > 0) || !std::isfinite(l)) throw std::runtime_error("GP: length scales must be positive and finite");
  if (!(h.signal_variance > 0) || !(h.noise_variance >= 0) || !std::isfinite(h.signal_variance) ||
      !std::isfinite(h.noise_variance))
    throw std::runtime_error("GP: the signal variance must be positive and the noise variance non-negative");
}

}  // namespace

// The training covariance K + noise I under `h`, factorised (jitter escalated if needed), its
// solve against the standardised outputs, and the log marginal likelihood. False if singular.
bool GaussianProcess::factorise(const GpHyper& h, Factor& f) const {
  const int n = n_;
  std::vector<double> K(size_t(n) * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j <= i; ++j) K[size_t(i) * n + j] = K[size_t(j) * n + i] = matern52(x_[i], x_[j], h);
  for (int i = 0; i < n; ++i) K[size_t(i) * n + i] += h.noise_variance;
  f.jitter = cholesky_with_jitter(std::move(K), n, h.signal_variance + h.noise_variance, f.chol);
  if (f.jitter < 0) return false;
  f.alpha = z_;
  solve_lower(f.chol, n, f.alpha);
  solve_upper_transposed(f.chol, n, f.alpha);
  // -1/2 z^T alpha - sum log L_ii - n/2 log 2 pi
  f.lml = -0.5 * n * kLog2Pi;
  for (int i = 0; i < n; ++i) f.lml += -0.5 * z_[i] * f.alpha[i] - std::log(f.chol[size_t(i) * n + i]);
  return true;
}

double matern52(const std::vector<double>& a, const std::vector<double>& b, const GpHyper& h) {
  const double r = scaled_distance(a, b, h.length_scales);
  return h.signal_variance * (1.0 + kSqrt5 * r + 5.0 / 3.0 * r * r) * std::exp(-kSqrt5 * r);
}

GaussianProcess::GaussianProcess(std::vector<double> lower, std::vector<double> upper)
    : lower_(std::move(lower)), upper_(std::move(upper)) {
  if (lower_.empty() || lower_.size() != upper_.size())
    throw std::runtime_error("GP: needs one lower and one upper bound per input dimension (got " +
                             std::to_string(lower_.size()) + " and " + std::to_string(upper_.size()) + ")");
  for (size_t i = 0; i < lower_.size(); ++i)
    if (!(upper_[i] > lower_[i]) || !std::isfinite(lower_[i]) || !std::isfinite(upper_[i]))
      throw std::runtime_error("GP: input dimension " + std::to_string(i) + " has the empty range [" +
                               std::to_string(lower_[i]) + ", " + std::to_string(upper_[i]) + "]");
}

std::vector<double> GaussianProcess::scaled(const std::vector<double>& x) const {
  if (x.size() != lower_.size())
    throw std::runtime_error("GP: a point has " + std::to_string(x.size()) + " coordinates, the model " +
                             std::to_string(lower_.size()));
  std::vector<double> u(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    check_finite(x[i], "input coordinate " + std::to_string(i));
    u[i] = (x[i] - lower_[i]) / (upper_[i] - lower_[i]);
  }
  return u;
}

void GaussianProcess::set_data(const std::vector<std::vector<double>>& X, const std::vector<double>& y) {
  if (X.empty()) throw std::runtime_error("GP: no training points");
  if (X.size() != y.size())
    throw std::runtime_error("GP: " + std::to_string(X.size()) + " inputs but " + std::to_string(y.size()) + " outputs");
  n_ = int(X.size());
  x_.clear();
  for (const auto& x : X) x_.push_back(scaled(x));
  double mean = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    check_finite(y[i], "output " + std::to_string(i));
    mean += y[i];
  }
  mean /= n_;
  double var = 0;
  for (double v : y) var += (v - mean) * (v - mean);
  const double sd = std::sqrt(var / n_);
  y_mean_ = mean;
  y_scale_ = sd > 10 * std::numeric_limits<double>::epsilon() ? sd : 1.0;  // constant outputs: unscaled
  z_.resize(y.size());
  for (size_t i = 0; i < y.size(); ++i) z_[i] = (y[i] - y_mean_) / y_scale_;
}

double GaussianProcess::log_marginal_likelihood(const GpHyper& h, std::vector<double>* grad) const {
  const int n = n_, d = dims();
  check_hyper(h, d);
  Factor f;
  if (!factorise(h, f)) return -std::numeric_limits<double>::infinity();
  if (!grad) return f.lml;

  // d lml / d theta = 1/2 tr((alpha alpha^T - K^-1) dK/dtheta); K^-1 from the factor's inverse.
  std::vector<double> kinv(size_t(n) * n, 0.0);
  for (int c = 0; c < n; ++c) {
    std::vector<double> e(n, 0.0);
    e[c] = 1.0;
    solve_lower(f.chol, n, e);
    solve_upper_transposed(f.chol, n, e);
    for (int r = 0; r < n; ++r) kinv[size_t(r) * n + c] = e[r];
  }
  grad->assign(size_t(d) + 2, 0.0);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      const double w = 0.5 * (f.alpha[i] * f.alpha[j] - kinv[size_t(i) * n + j]);
      const double r = scaled_distance(x_[i], x_[j], h.length_scales);
      const double e = std::exp(-kSqrt5 * r);
      // d k / d log l_q = s (5/3) (1 + sqrt5 r) exp(-sqrt5 r) (delta_q / l_q)^2
      const double common = h.signal_variance * 5.0 / 3.0 * (1.0 + kSqrt5 * r) * e;
      for (int q = 0; q < d; ++q) {
        const double dq = (x_[i][q] - x_[j][q]) / h.length_scales[q];
        (*grad)[q] += w * common * dq * dq;
      }
      (*grad)[d] += w * h.signal_variance * (1.0 + kSqrt5 * r + 5.0 / 3.0 * r * r) * e;
      if (i == j) (*grad)[d + 1] += w * h.noise_variance;
    }
  }
  return f.lml;
}

void GaussianProcess::fit(const std::vector<std::vector<double>>& X, const std::vector<double>& y, const GpHyper& h) {
  set_data(X, y);
  check_hyper(h, dims());
  hyper_ = h;
  Factor f;
  if (!factorise(h, f))
    throw std::runtime_error("GP: the covariance of " + std::to_string(n_) +
                             " points is not positive definite even with 1e-4 of its diagonal added "
                             "(repeated inputs with a zero noise variance?)");
  chol_ = std::move(f.chol);
  alpha_ = std::move(f.alpha);
  jitter_ = f.jitter;
  lml_ = f.lml;
}

void GaussianProcess::fit_max_likelihood(const std::vector<std::vector<double>>& X, const std::vector<double>& y,
                                         const GpBounds& b, int restarts, uint64_t seed) {
  set_data(X, y);
  const int d = dims();
  std::vector<double> lo, hi;
  for (int q = 0; q < d; ++q) lo.push_back(std::log(b.length_min)), hi.push_back(std::log(b.length_max));
  lo.push_back(std::log(b.signal_min)), hi.push_back(std::log(b.signal_max));
  lo.push_back(std::log(b.noise_min)), hi.push_back(std::log(b.noise_max));
  for (size_t i = 0; i < lo.size(); ++i)
    if (!(hi[i] >= lo[i]) || !std::isfinite(lo[i]) || !std::isfinite(hi[i]))
      throw std::runtime_error("GP: empty or non-positive hyperparameter bounds");
  auto clamp = [&](std::vector<double> p) {
    for (size_t i = 0; i < p.size(); ++i) p[i] = std::min(hi[i], std::max(lo[i], p[i]));
    return p;
  };

  std::vector<std::vector<double>> starts;
  GpHyper typical;
  typical.length_scales.assign(size_t(d), 0.5);
  typical.signal_variance = 1.0;
  typical.noise_variance = 1e-2;
  starts.push_back(clamp(to_log(typical)));
  Rng rng(seed);
  for (int r = 0; r < restarts; ++r) {
    std::vector<double> p(lo.size());
    for (size_t i = 0; i < p.size(); ++i) p[i] = lo[i] + (hi[i] - lo[i]) * rng.uniform();
    starts.push_back(p);
  }

  std::vector<double> best_p;
  double best_f = -std::numeric_limits<double>::infinity();
  for (const auto& start : starts) {
    double f = -std::numeric_limits<double>::infinity();
    const std::vector<double> p = maximise_in_box(
        [&](const std::vector<double>& q, std::vector<double>* g) { return log_marginal_likelihood(from_log(q), g); },
        start, lo, hi, &f);
    if (f > best_f) best_f = f, best_p = p;
  }
  if (best_p.empty())
    throw std::runtime_error("GP: no hyperparameters in the box give a factorisable covariance for " +
                             std::to_string(n_) + " points");
  fit(X, y, from_log(best_p));
}

GpPrediction GaussianProcess::predict(const std::vector<double>& x) const {
  if (n_ == 0) throw std::runtime_error("GP: predict before fit");
  const std::vector<double> u = scaled(x);
  std::vector<double> k(n_);
  double mean = 0;
  for (int i = 0; i < n_; ++i) {
    k[i] = matern52(u, x_[i], hyper_);
    mean += k[i] * alpha_[i];
  }
  solve_lower(chol_, n_, k);
  double var = hyper_.signal_variance;
  for (double v : k) var -= v * v;
  GpPrediction p;
  p.mean = y_mean_ + y_scale_ * mean;
  p.variance = std::max(0.0, var) * y_scale_ * y_scale_;
  return p;
}

double GaussianProcess::noise_variance() const { return hyper_.noise_variance * y_scale_ * y_scale_; }

}  // namespace spnas
