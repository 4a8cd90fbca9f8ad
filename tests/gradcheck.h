// Finite-difference gradient check shared by the op tests.
// loss = sum(f(inputs) * R) for a fixed random R, so every output element's gradient matters.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/rng.h"
#include "ops/ops.h"

namespace spnas {

inline Tensor random_tensor(const Shape& s, Rng& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = rng.uniform(lo, hi);
  return t;
}

// Moves values that lie within `margin` of a kink (e.g. 0 for ReLU) out of that band, so central
// differences see a smooth function.
inline Tensor avoid_kinks(Tensor t, std::vector<float> kinks, float margin = 0.05f) {
  for (int64_t i = 0; i < t.numel(); ++i)
    for (float k : kinks)
      if (std::fabs(t.data()[i] - k) < margin) t.data()[i] = k + (t.data()[i] < k ? -margin : margin);
  return t;
}

struct GradCheckOptions {
  float eps = 1e-2f;
  float atol = 2e-3f;
  float rtol = 2e-2f;
  int max_elements = 40;  // per input, sampled evenly
};

// Returns the number of mismatching elements (0 = pass); reports each mismatch.
inline int gradcheck(const std::string& what, std::vector<Var> inputs,
                     const std::function<Var(const std::vector<Var>&)>& f, GradCheckOptions opt = {}) {
  Rng rng(1234);
  Tensor R;
  {
    NoGrad ng;
    Var out = f(inputs);
    R = random_tensor(out->value.shape(), rng, 0.5f, 1.5f);
  }
  auto loss_value = [&]() {
    NoGrad ng;
    Var out = f(inputs);
    double s = 0;
    for (int64_t i = 0; i < out->value.numel(); ++i) s += double(out->value.data()[i]) * R.data()[i];
    return s;
  };
  for (auto& v : inputs) v->zero_grad();
  Var out = f(inputs);
  Var loss = sum(mul(out, constant(R)));
  backward(loss);
  const double l0 = loss_value();
  int bad = 0, kinks = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    Var& v = inputs[k];
    if (!v->requires_grad) continue;
    const int64_t n = v->value.numel();
    const int64_t stride = std::max<int64_t>(1, n / opt.max_elements);
    for (int64_t i = 0; i < n; i += stride) {
      float orig = v->value.data()[i];
      v->value.data()[i] = orig + opt.eps;
      double lp = loss_value();
      v->value.data()[i] = orig - opt.eps;
      double lm = loss_value();
      v->value.data()[i] = orig;
      double num = (lp - lm) / (2 * opt.eps);
      double ana = v->grad_valid ? v->grad.data()[i] : 0.0;
      // A kink (ReLU, clip) inside [x - eps, x + eps] makes the one-sided slopes disagree; central
      // differences are meaningless there, so such elements are skipped (and counted).
      double plus = (lp - l0) / opt.eps, minus = (l0 - lm) / opt.eps;
      double tol = opt.atol + opt.rtol * std::max(std::fabs(num), std::fabs(ana));
      if (std::fabs(plus - minus) > 3 * tol) {
        ++kinks;
        continue;
      }
      if (std::fabs(num - ana) > opt.atol + opt.rtol * std::max(std::fabs(num), std::fabs(ana))) {
        if (bad < 5)
          MESSAGE(what << ": input " << k << " element " << i << ": analytic " << ana << " vs numeric " << num);
        ++bad;
      }
    }
  }
  if (kinks > 2) {
    MESSAGE(what << ": " << kinks << " elements skipped at kinks (too many: the check lost its power)");
    ++bad;
  }
  return bad;
}

}  // namespace spnas
