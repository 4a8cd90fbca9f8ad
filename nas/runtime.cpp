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
      const double rho = c.k3_e6 / c.k5_e6;
      Var rc = mul(d.d_skip, add(cst(c.k5_e3), mul(d.d_e6, cst(c.k5_e6 - c.k5_e3))));
      Rl = mul(rc, add(cst(rho), mul(cst(1.0 - rho), d.d_k5)));
    } else {
      Var nk5 = add_scalar(scale(d.d_k5, -1.0f), 1.0f), ne6 = add_scalar(scale(d.d_e6, -1.0f), 1.0f);
      Var s = add(add(mul(mul(nk5, ne6), cst(c.k3_e3)), mul(mul(nk5, d.d_e6), cst(c.k3_e6))),
                  add(mul(mul(d.d_k5, ne6), cst(c.k5_e3)), mul(mul(d.d_k5, d.d_e6), cst(c.k5_e6))));
      Rl = mul(d.d_skip, s);
    }
    R = add(R, Rl);
    if (d.has_se && c.se > 0) R = add(R, mul(mul(d.d_skip, d.d_se), cst(c.se)));
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
