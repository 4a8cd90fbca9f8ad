// A small Gaussian-process regressor for Bayesian optimisation (nas/tune/README.md, "The model"):
// Matérn-5/2 kernel with one length scale per input dimension (ARD) and a signal variance, plus a
// noise variance on the diagonal; inputs scaled to [0, 1] per dimension by given bounds, outputs
// standardised (mean 0, population standard deviation 1) as scikit-learn's normalize_y does.
// Hyperparameters by maximum marginal likelihood: multi-start projected gradient ascent on the
// analytic gradient, inside a box.
#pragma once
#include <cstdint>
#include <vector>

namespace spnas {

// Hyperparameters on the scaled inputs and standardised outputs.
struct GpHyper {
  std::vector<double> length_scales;  // one per input dimension
  double signal_variance = 1.0;       // sigma_f^2: k(x, x) without noise
  double noise_variance = 1e-6;       // sigma_n^2, added to the diagonal of the training covariance
};

// The box of the likelihood maximisation. Scaled inputs span [0, 1]: a length scale below ~0.05
// fits wiggles no handful of trials can resolve, one above ~20 is a constant.
struct GpBounds {
  double length_min = 0.05, length_max = 20;
  double signal_min = 0.05, signal_max = 20;
  double noise_min = 1e-6, noise_max = 1.0;
};

struct GpPrediction {
  double mean = 0;
  double variance = 0;  // of the latent function (the noise variance is not included)
};

class GaussianProcess {
 public:
  // lower/upper: the range of each input dimension, mapped to [0, 1].
  GaussianProcess(std::vector<double> lower, std::vector<double> upper);

  // Conditions on (X, y) with the given hyperparameters. Throws on a non-finite value or a shape
  // mismatch, and when the covariance stays singular after the largest jitter.
  void fit(const std::vector<std::vector<double>>& X, const std::vector<double>& y, const GpHyper& hyper);
  // Chooses the hyperparameters by maximum marginal likelihood (starts: a typical point - half the
  // range, unit signal, small noise - and `restarts` random points of the box drawn from `seed`),
  // then conditions.
  void fit_max_likelihood(const std::vector<std::vector<double>>& X, const std::vector<double>& y,
                          const GpBounds& bounds, int restarts, uint64_t seed);

  GpPrediction predict(const std::vector<double>& x) const;  // in the units of y
  double noise_variance() const;                              // sigma_n^2 in the units of y (squared)

  // Log marginal likelihood of the standardised outputs under `hyper` on the fitted data, and its
  // gradient with respect to (log l_1, ..., log l_d, log sigma_f^2, log sigma_n^2) when grad is
  // given. -inf when the covariance cannot be factorised.
  double log_marginal_likelihood(const GpHyper& hyper, std::vector<double>* grad = nullptr) const;
  double log_marginal_likelihood() const { return lml_; }  // at the fitted hyperparameters

  const GpHyper& hyper() const { return hyper_; }
  double jitter() const { return jitter_; }  // added to the diagonal by the last fit (0 normally)
  int dims() const { return int(lower_.size()); }
  int size() const { return n_; }

 private:
  struct Factor {
    std::vector<double> chol;   // lower Cholesky factor of K + (noise + jitter) I, row-major n x n
    std::vector<double> alpha;  // (K + noise I)^-1 z
    double jitter = 0, lml = 0;
  };
  void set_data(const std::vector<std::vector<double>>& X, const std::vector<double>& y);
  bool factorise(const GpHyper& hyper, Factor& f) const;
  std::vector<double> scaled(const std::vector<double>& x) const;

  std::vector<double> lower_, upper_;
  int n_ = 0;
  std::vector<std::vector<double>> x_;  // scaled inputs
  std::vector<double> z_;               // standardised outputs
  double y_mean_ = 0, y_scale_ = 1;
  GpHyper hyper_;
  std::vector<double> chol_, alpha_;    // the fitted Factor's
  double jitter_ = 0, lml_ = 0;
};

// Matérn-5/2 covariance of two scaled points: s (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r),
// r^2 = sum_i ((a_i - b_i) / l_i)^2.
double matern52(const std::vector<double>& a, const std::vector<double>& b, const GpHyper& hyper);

}  // namespace spnas
