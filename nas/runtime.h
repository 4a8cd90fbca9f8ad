// The differentiable runtime model: a latency table (measured ms of each searchable layer in each
// candidate, plus a fixed cost for everything else) turned into R(indicators), so that
// lambda * ln(R) can be added to the loss and its gradient reaches the thresholds.
//
// Table formats read:
//   - the project's JSON (docs: nas/README.md, "Latency table format");
//   - the Single-Path NAS authors' CSV (block,cin,cout,stride,expanded_channels_e6,skip_allowed,
//     ms_k3_e3,ms_k3_e6,ms_k5_e3,ms_k5_e6), whose fixed cost is not in the file: pass it.
#pragma once
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "nas/model.h"
#include "nas/space.h"

namespace spnas {

struct LayerCost {
  double k3_e3 = 0, k3_e6 = 0, k5_e3 = 0, k5_e6 = 0;  // ms
  double se = 0;                                      // extra ms of the SE branch (0: not measured)
  int cin = 0, cout = 0, stride = 0;                  // for checking against a space (0: unknown)
  bool skip_allowed = false;
  // Measurement details (the profiler fills these; optional in files).
  double spread = 0;  // largest relative spread (p90 - p10) / median over the entries
  int count = 0;      // repetitions per entry
  double cost(Choice c) const;  // the table entry (0 for skip)
};

struct LatencyTable {
  std::string source;           // file it came from
  std::string space;            // space name it was measured for ("" if unknown)
  float width = 1.0f;
  int input_size = 0, batch = 1, threads = 1;
  std::string cpu, isa, mode = "inference", backend = "spnas";
  double quantile = 0.5;        // statistic of the repetitions each entry is (0.5: the median)
  double fixed_ms = 0;
  double fixed_spread = 0;
  // Calibration terms of a profiled table (ProfileOptions::calibrate, nas/README.md), 0 otherwise:
  // the part of fixed_ms that is no piece's time, ...
  double fixed_calibration_ms = 0;
  // ... and the per-layer term added to every entry of each candidate (k3-e3, k3-e6, k5-e3, k5-e6),
  // already included in the entries.
  double candidate_calibration_ms[4] = {0, 0, 0, 0};
  std::vector<LayerCost> layers;  // one per searchable layer
};

// Reads JSON or CSV (by content). For CSV, fixed_ms must be given (>= 0); for JSON a given
// fixed_ms (>= 0) overrides the file's. Errors name the file, line or field.
LatencyTable load_latency_table(const std::string& path, double fixed_ms = -1);
LatencyTable parse_latency_table(const std::string& text, const std::string& source, double fixed_ms = -1);
std::string latency_table_to_json(const LatencyTable& t);
void save_latency_table(const std::string& path, const LatencyTable& t);
// Checks layer count (and channels/strides where the table has them) against the space.
void check_table_matches(const LatencyTable& t, const SearchSpace& s);

enum class RuntimeMode { Formula, Table };
RuntimeMode parse_runtime_mode(const std::string& s);

// R (ms) as a differentiable function of the indicators of every searchable layer:
//   formula (the reference's): Rc = d_skip (R53 + d_e6 (R56 - R53)); R_l = Rc (rho + (1 - rho) d_k5),
//            rho = R36 / R56;
//   table:   R_l = d_skip * sum over the four candidates of (their indicator product) * R;
//   total:   R = fixed + sum_l R_l + sum_l d_skip d_se R_se.
Var runtime_model(const LatencyTable& t, const std::vector<LayerIndicators>& ind, RuntimeMode mode);
// R with every indicator 1 (the supernet's cost as the model sees it).
double runtime_all_on(const LatencyTable& t, RuntimeMode mode, bool with_se);
// Cost (ms) of one searchable layer decoded to `c`, as `mode` sees it: the table's entry, or the
// formula at indicators 0/1 (its k3-e3 is R53 * R36 / R56, which is what a formula search optimizes).
double choice_runtime(const LayerCost& c, Choice choice, RuntimeMode mode);
// Prediction for a decoded architecture: fixed + sum of the chosen layers' costs (+ SE costs).
// Table mode (the default) is the additive prediction a measurement is compared with.
double predict_runtime(const LatencyTable& t, const Arch& a, RuntimeMode mode = RuntimeMode::Table);

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
