#!/usr/bin/python3
"""Reference values for tests/test_gp.cpp, computed once with scikit-learn (1.2.1 here).

Run:  /usr/bin/python3 tests/gp_reference.py
It prints the C++ constants pasted into tests/test_gp.cpp ("sklearn reference" block).

The GP in nas/tune/gp.cpp scales every input dimension to [0, 1] by given bounds and standardises
the outputs (normalize_y=True is the same: mean and population standard deviation). Here the inputs
are scaled by hand with the same bounds, and the kernel is
    ConstantKernel(signal) * Matern(length_scale=[l1, l2], nu=2.5)
with the noise as `alpha` (added to the training diagonal only, so predict() returns the latent
variance, as GaussianProcess::predict does), or as a WhiteKernel for the log marginal likelihood
and its gradient with respect to the log hyperparameters.
"""
import numpy as np
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

LOWER = np.array([-2.0, 0.5])
UPPER = np.array([3.0, 4.0])
X = np.array([[-1.7, 0.9], [-0.4, 3.1], [0.2, 1.6], [1.1, 2.4], [2.6, 0.7],
              [2.2, 3.8], [-1.1, 2.2], [0.9, 3.5], [1.8, 1.3]])
Y = np.sin(1.3 * X[:, 0]) + 0.4 * X[:, 1] ** 2 - 0.2 * X[:, 0] * X[:, 1] + \
    np.array([0.05, -0.03, 0.02, 0.0, -0.04, 0.03, -0.01, 0.02, 0.01])
XQ = np.array([[0.0, 2.0], [-1.9, 0.6], [2.9, 3.9], [1.0, 1.0], [-0.5, 3.0]])
LENGTH = [0.3, 0.7]
SIGNAL = 1.7
NOISE = 0.05


def scaled(x):
    return (x - LOWER) / (UPPER - LOWER)


def cpp_array(name, values):
    return "const double %s[] = {%s};" % (name, ", ".join("%.17g" % v for v in values))


def main():
    kernel = ConstantKernel(SIGNAL, "fixed") * Matern(LENGTH, "fixed", nu=2.5)
    gp = GaussianProcessRegressor(kernel, alpha=NOISE, normalize_y=True, optimizer=None)
    gp.fit(scaled(X), Y)
    mean, std = gp.predict(scaled(XQ), return_std=True)

    # (C * Matern) + White: theta = log [signal, l1, l2, noise].
    kernel_w = ConstantKernel(SIGNAL) * Matern(LENGTH, nu=2.5) + WhiteKernel(NOISE)
    gp_w = GaussianProcessRegressor(kernel_w, alpha=0.0, normalize_y=True, optimizer=None).fit(scaled(X), Y)
    lml, grad = gp_w.log_marginal_likelihood(np.log([SIGNAL, *LENGTH, NOISE]), eval_gradient=True)

    # Maximum marginal likelihood inside GpBounds' box (nas/tune/gp.h), many restarts.
    kernel_b = ConstantKernel(1.0, (0.05, 20)) * Matern([0.5, 0.5], (0.05, 20), nu=2.5) + WhiteKernel(1e-2, (1e-6, 1.0))
    gp_b = GaussianProcessRegressor(kernel_b, alpha=0.0, normalize_y=True, n_restarts_optimizer=30,
                                    random_state=0).fit(scaled(X), Y)

    print("// sklearn reference (tests/gp_reference.py, scikit-learn %s)" % __import__("sklearn").__version__)
    print(cpp_array("kX0", X[:, 0]))
    print(cpp_array("kX1", X[:, 1]))
    print(cpp_array("kY", Y))
    print(cpp_array("kQ0", XQ[:, 0]))
    print(cpp_array("kQ1", XQ[:, 1]))
    print(cpp_array("kMean", mean))
    print(cpp_array("kVariance", std ** 2))
    print("const double kLml = %.17g;" % lml)
    # Reordered to GaussianProcess's order: log l1, log l2, log signal, log noise.
    print(cpp_array("kLmlGrad", [grad[1], grad[2], grad[0], grad[3]]))
    print("const double kMaxLml = %.17g;  // fitted: %s" % (gp_b.log_marginal_likelihood_value_, gp_b.kernel_))


if __name__ == "__main__":
    main()
