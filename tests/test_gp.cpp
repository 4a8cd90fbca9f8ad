// The Gaussian process and the acquisition's pieces of `spnas tune` (nas/tune/gp.h, nas/tune/bo.h):
// posterior and marginal likelihood against scikit-learn, expected improvement and the normal
// probabilities against their closed forms, numerical care and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "nas/tune/bo.h"
#include "nas/tune/gp.h"

using namespace spnas;

namespace {

// sklearn reference (tests/gp_reference.py, scikit-learn 1.2.1)
const double kX0[] = {-1.7, -0.40000000000000002, 0.20000000000000001, 1.1000000000000001, 2.6000000000000001, 2.2000000000000002, -1.1000000000000001, 0.90000000000000002, 1.8};
const double kX1[] = {0.90000000000000002, 3.1000000000000001, 1.6000000000000001, 2.3999999999999999, 0.69999999999999996, 3.7999999999999998, 2.2000000000000002, 3.5, 1.3};
const double kY[] = {-0.12257106624674712, 3.5651198621562643, 1.2370805518921553, 2.7661045603371774, -0.44415532069689739, 4.4118859258165868, 1.4198954396628227, 5.2107505977361361, 0.936464793069126};
const double kQ0[] = {0, -1.8999999999999999, 2.8999999999999999, 1, -0.5};
const double kQ1[] = {2, 0.59999999999999998, 3.8999999999999999, 1, 3};
const double kMean[] = {1.9063234902418187, -0.069514261045103165, 3.4391217684438096, 0.75552179349880277, 3.2408675994643246};
const double kVariance[] = {0.24992461276898953, 0.40995624428967109, 1.5723061188412952, 0.86127714345833739, 0.15323264223805466};
const double kLml = -10.537800584242824;
const double kLmlGrad[] = {4.0815444280344906, -0.81729752471430117, -1.0696828764041826, -0.30813318807213252};
const double kMaxLml = -6.7613641210538669;  // fitted: 1.72**2 * Matern(length_scale=[20, 1], nu=2.5) + WhiteKernel(noise_level=0.0763)

// The script's inputs, bounds and hyperparameters.
const std::vector<double> kLower = {-2.0, 0.5}, kUpper = {3.0, 4.0};

std::vector<std::vector<double>> reference_inputs() {
  std::vector<std::vector<double>> X;
  for (int i = 0; i < 9; ++i) X.push_back({kX0[i], kX1[i]});
  return X;
}

GpHyper reference_hyper() {
  GpHyper h;
  h.length_scales = {0.3, 0.7};
  h.signal_variance = 1.7;
  h.noise_variance = 0.05;
  return h;
}

}  // namespace

TEST_CASE("GP posterior mean and variance equal scikit-learn's at fixed hyperparameters") {
  GaussianProcess gp(kLower, kUpper);
  gp.fit(reference_inputs(), std::vector<double>(kY, kY + 9), reference_hyper());
  CHECK(gp.jitter() == 0);
  for (int q = 0; q < 5; ++q) {
    const GpPrediction p = gp.predict({kQ0[q], kQ1[q]});
    CHECK(p.mean == doctest::Approx(kMean[q]).epsilon(1e-10));
    CHECK(p.variance == doctest::Approx(kVariance[q]).epsilon(1e-10));
  }
}

TEST_CASE("GP log marginal likelihood and its gradient equal scikit-learn's") {
  GaussianProcess gp(kLower, kUpper);
  gp.fit(reference_inputs(), std::vector<double>(kY, kY + 9), reference_hyper());
  CHECK(gp.log_marginal_likelihood() == doctest::Approx(kLml).epsilon(1e-10));
  std::vector<double> grad;
  CHECK(gp.log_marginal_likelihood(reference_hyper(), &grad) == doctest::Approx(kLml).epsilon(1e-10));
  REQUIRE(grad.size() == 4);
  for (int i = 0; i < 4; ++i) CHECK(grad[i] == doctest::Approx(kLmlGrad[i]).epsilon(1e-8));
}

TEST_CASE("GP maximum likelihood reaches scikit-learn's optimum in the same box") {
  GaussianProcess gp(kLower, kUpper);
  gp.fit_max_likelihood(reference_inputs(), std::vector<double>(kY, kY + 9), GpBounds{}, 6, 1);
  MESSAGE("ours " << gp.log_marginal_likelihood() << ", sklearn " << kMaxLml << "; length scales "
                  << gp.hyper().length_scales[0] << ", " << gp.hyper().length_scales[1] << ", signal "
                  << gp.hyper().signal_variance << ", noise " << gp.hyper().noise_variance);
  CHECK(gp.log_marginal_likelihood() >= kMaxLml - 1e-4);
  CHECK(gp.log_marginal_likelihood() <= kMaxLml + 1e-3);  // sklearn's L-BFGS-B with 30 restarts is not beaten by much
  // The optimum of the reference hyperparameters' neighbourhood is better than the reference point.
  CHECK(gp.log_marginal_likelihood() > kLml);
}

TEST_CASE("Matern-5/2 at hand-computed distances") {
  GpHyper h;
  h.length_scales = {2.0};
  h.signal_variance = 3.0;
  CHECK(matern52({0.4}, {0.4}, h) == doctest::Approx(3.0));
  // r = 1: 3 (1 + sqrt5 + 5/3) exp(-sqrt5); r = 0.5: 3 (1 + sqrt5 / 2 + 5/12) exp(-sqrt5 / 2) (Python's math).
  CHECK(matern52({0.0}, {2.0}, h) == doctest::Approx(1.5719823264954609).epsilon(1e-12));
  CHECK(matern52({1.0}, {2.0}, h) == doctest::Approx(2.4859474272543762).epsilon(1e-12));
}

TEST_CASE("GP: near-noiseless data is interpolated; repeated inputs need jitter; bad input is named") {
  GaussianProcess gp({0.0}, {10.0});
  GpHyper h;
  h.length_scales = {0.2};
  h.signal_variance = 1.0;
  h.noise_variance = 1e-10;
  const std::vector<std::vector<double>> X = {{1.0}, {4.0}, {7.5}};
  const std::vector<double> y = {2.0, -1.0, 0.5};
  gp.fit(X, y, h);
  for (size_t i = 0; i < X.size(); ++i) {
    CHECK(gp.predict(X[i]).mean == doctest::Approx(y[i]).epsilon(1e-6));
    CHECK(gp.predict(X[i]).variance < 1e-6);
  }
  // Far from the data: the prior (mean of y, signal variance times the output scale squared).
  const double mean = (2.0 - 1.0 + 0.5) / 3, var = ((2 - mean) * (2 - mean) + (-1 - mean) * (-1 - mean) + (0.5 - mean) * (0.5 - mean)) / 3;
  CHECK(gp.predict({100.0}).mean == doctest::Approx(mean));
  CHECK(gp.predict({100.0}).variance == doctest::Approx(var));

  // The same point twice with zero noise: singular, factorised with a jitter.
  h.noise_variance = 0;
  gp.fit({{3.0}, {3.0}, {6.0}}, {1.0, 1.0, 2.0}, h);
  CHECK(gp.jitter() > 0);
  CHECK(gp.predict({3.0}).mean == doctest::Approx(1.0).epsilon(1e-4));

  CHECK_THROWS_WITH_AS(gp.fit({{1.0}, {NAN}}, {1.0, 2.0}, h), doctest::Contains("not finite"), std::runtime_error);
  CHECK_THROWS_WITH_AS(gp.fit({{1.0}, {2.0}}, {1.0}, h), doctest::Contains("2 inputs but 1 outputs"), std::runtime_error);
  CHECK_THROWS_WITH_AS(gp.fit({}, {}, h), doctest::Contains("no training points"), std::runtime_error);
  CHECK_THROWS_WITH_AS(GaussianProcess({1.0}, {1.0}), doctest::Contains("empty range"), std::runtime_error);
  CHECK_THROWS_WITH_AS(gp.predict({1.0, 2.0}), doctest::Contains("2 coordinates"), std::runtime_error);
}

TEST_CASE("expected improvement against its closed form") {
  // (mu - best) Phi(z) + sd phi(z): Phi(1) = 0.8413447460685429, phi(1) = 0.24197072451914337.
  CHECK(expected_improvement(1.0, 1.0, 0.0) == doctest::Approx(0.8413447460685429 + 0.24197072451914337).epsilon(1e-12));
  // z = -0.5: -1 * Phi(-0.5) + 2 phi(0.5) = -0.3085375387259869 + 2 * 0.3520653267642995.
  CHECK(expected_improvement(0.0, 2.0, 1.0) == doctest::Approx(-0.3085375387259869 + 2 * 0.3520653267642995).epsilon(1e-12));
  CHECK(expected_improvement(2.0, 0.0, 1.5) == doctest::Approx(0.5));
  CHECK(expected_improvement(1.0, 0.0, 1.5) == 0.0);
  CHECK(std::log(expected_improvement(1.0, 1.0, 0.0)) == doctest::Approx(log_expected_improvement(1.0, 1.0, 0.0)));
  // Far below the incumbent, where EI itself loses its digits (scipy: log(phi(z) (1 + z erfcx(-z/sqrt2) sqrt(pi/2)))).
  CHECK(log_expected_improvement(-5.9, 1.0, 0.0) == doctest::Approx(-21.952668481529745).epsilon(1e-9));
  CHECK(log_expected_improvement(-6.1, 1.0, 0.0) == doctest::Approx(-23.21464072296201).epsilon(1e-9));
  CHECK(log_expected_improvement(-8.0, 1.0, 0.0) == doctest::Approx(-37.122364261692645).epsilon(1e-9));
  CHECK(log_expected_improvement(-30.0, 1.0, 0.0) == doctest::Approx(-457.72465376059813).epsilon(1e-9));
  CHECK(log_expected_improvement(-60.0, 2.0, 0.0) == doctest::Approx(std::log(2.0) - 457.72465376059813).epsilon(1e-9));
  CHECK(log_expected_improvement(0.0, 0.0, 1.0) == -std::numeric_limits<double>::infinity());
}

TEST_CASE("normal probabilities of the constraint, tails included") {
  CHECK(normal_cdf(0.0) == doctest::Approx(0.5));
  CHECK(std::exp(log_probability_between(0.0, 1.0, -1.0, 1.0)) == doctest::Approx(0.6826894921370859).epsilon(1e-12));
  CHECK(std::exp(log_probability_between(3.0, 2.0, -INFINITY, 3.0)) == doctest::Approx(0.5));
  // scipy.special.log_ndtr: both tails, beyond erfc's range too.
  CHECK(log_probability_between(0.0, 1.0, 10.0, 11.0) == doctest::Approx(-53.23131022558313).epsilon(1e-9));
  CHECK(log_probability_between(0.0, 1.0, -11.0, -10.0) == doctest::Approx(-53.23131022558313).epsilon(1e-9));
  CHECK(log_normal_cdf(-29.0) == doctest::Approx(-424.78741990973026).epsilon(1e-10));
  CHECK(log_normal_cdf(-31.0) == doctest::Approx(-484.8539636271794).epsilon(1e-8));
  CHECK(log_normal_cdf(-40.0) == doctest::Approx(-804.6084420137539).epsilon(1e-8));
  CHECK(log_probability_between(1.0, 0.0, 0.0, 2.0) == 0.0);
  CHECK(log_probability_between(3.0, 0.0, 0.0, 2.0) == -INFINITY);
  CHECK(log_probability_between(0.0, 1.0, 2.0, 2.0) == -INFINITY);
}

TEST_CASE("tuned variables map the unit interval onto their ranges") {
  TuneVariable lambda{"lambda", 1e-3, 1.0, true};
  CHECK(lambda.value(0.0) == doctest::Approx(1e-3));
  CHECK(lambda.value(0.5) == doctest::Approx(std::sqrt(1e-3)));
  CHECK(lambda.value(1.0) == doctest::Approx(1.0));
  CHECK(lambda.unit(0.02) == doctest::Approx(std::log(20.0) / std::log(1000.0)));
  TuneVariable margin{"threshold_margin", 0.0, 3.0, false};
  CHECK(margin.value(0.25) == doctest::Approx(0.75));
  CHECK(margin.unit(margin.value(0.6)) == doctest::Approx(0.6));
}
