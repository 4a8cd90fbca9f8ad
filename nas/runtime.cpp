#include "nas/runtime.h"

#include <stdexcept>

#include "ops/ops.h"

namespace spnas {

RuntimeLoss parse_runtime_loss(const std::string& s) {
  if (s == "log") return RuntimeLoss::Log;
  if (s == "linear") return RuntimeLoss::Linear;
  if (s == "target") return RuntimeLoss::Target;
  throw std::runtime_error("runtime loss must be \"log\", \"linear\" or \"target\", got \"" + s + "\"");
}

static Var cst(double v) { return constant(Tensor::scalar(float(v))); }

Var runtime_model(const LatencyTable& t, const std::vector<LayerIndicators>& ind, RuntimeMode mode) {
  check(ind.size() == t.layers.size(), "runtime_model",
        std::to_string(ind.size()) + " searchable layers but the table has " + std::to_string(t.layers.size()));
  Var R = cst(t.fixed_ms);
  for (size_t l = 0; l < ind.size(); ++l) {
    const LayerCost& c = t.layers[l];
    const LayerIndicators& d = ind[l];
    check(d.d_k5 && d.d_e6 && d.d_skip, "runtime_model", "indicators of layer " + std::to_string(l) + " are missing");
    Var Rl;
    if (mode == RuntimeMode::Formula) {
      // Rc = d_skip·(R53 + d_e6·(R56 − R53)),  R_l = Rc·(ρ + (1 − ρ)·d_k5),  ρ = R36 / R56
      const double rho = c.k3_e6 / c.k5_e6;
      Var rc = d.d_skip * (float(c.k5_e3) + d.d_e6 * float(c.k5_e6 - c.k5_e3));
      Rl = rc * (float(rho) + float(1.0 - rho) * d.d_k5);
    } else {
      // R_l = d_skip·Σ over the four candidates of (their indicators' product)·entry
      Var nk5 = 1.0f - d.d_k5, ne6 = 1.0f - d.d_e6;
      Var s = (nk5 * ne6 * float(c.k3_e3) + nk5 * d.d_e6 * float(c.k3_e6)) +
              (d.d_k5 * ne6 * float(c.k5_e3) + d.d_k5 * d.d_e6 * float(c.k5_e6));
      Rl = d.d_skip * s;
    }
    R = R + Rl;
    if (d.has_se && c.se > 0) R = R + d.d_skip * d.d_se * float(c.se);  // a skipped layer has no SE
  }
  return R;
}

double runtime_all_on(const LatencyTable& t, RuntimeMode mode, bool with_se) {
  double R = t.fixed_ms;
  for (const LayerCost& c : t.layers) R += c.k5_e6 + (with_se ? c.se : 0.0);
  (void)mode;  // both modes give R56 with every indicator 1
  return R;
}

Var runtime_loss(const Var& R, RuntimeLoss form, float lambda, float target_ms) {
  switch (form) {
    case RuntimeLoss::Log: return scale(log(R), float(lambda * kLogRuntimeScale));
    case RuntimeLoss::Linear: return scale(R, lambda);
    case RuntimeLoss::Target:
      check(target_ms > 0, "runtime_loss", "the target form needs a positive target (ms)");
      return scale(maximum0(add_scalar(scale(R, 1.0f / target_ms), -1.0f)), lambda);
  }
  return R;
}

}  // namespace spnas
