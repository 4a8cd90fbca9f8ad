// The differentiable runtime model: a latency table (nas/latency/table.h: measured ms of each
// searchable layer in each candidate, plus a fixed cost for everything else) turned into
// R(indicators), so that a runtime term such as lambda * 1e3 * ln(R) can be added to the loss and its
// gradient reaches the thresholds.
#pragma once
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "nas/latency/table.h"
#include "nas/model.h"

namespace spnas {

// R (ms) as a differentiable function of the indicators of every searchable layer:
//   formula (the reference's): Rc = d_skip (R53 + d_e6 (R56 - R53)); R_l = Rc (rho + (1 - rho) d_k5),
//            rho = R36 / R56;
//   table:   R_l = d_skip * sum over the four candidates of (their indicator product) * R;
//   total:   R = fixed + sum_l R_l + sum_l d_skip d_se R_se.
Var runtime_model(const LatencyTable& t, const std::vector<LayerIndicators>& ind, RuntimeMode mode);
// R with every indicator 1 (the supernet's cost as the model sees it).
double runtime_all_on(const LatencyTable& t, RuntimeMode mode, bool with_se);

// The runtime term added to the loss (R in ms):
//   log:    lambda * 1e3 * ln(R)       the reference's scale (search_main.py: runtime_lambda * 1e3 *
//                                      tf.log(runtime_val)), so its lambda = 0.02 is 20 * ln(R)
//   linear: lambda * R                 lambda per millisecond
//   target: lambda * max(0, R/T - 1)   lambda per unit of relative excess over the target T
enum class RuntimeLoss { Log, Linear, Target };
RuntimeLoss parse_runtime_loss(const std::string& s);
constexpr double kLogRuntimeScale = 1e3;
Var runtime_loss(const Var& R, RuntimeLoss form, float lambda, float target_ms);

}  // namespace spnas
