// Latency tables: the measured cost (ms) of every searchable layer in each candidate plus a fixed
// cost for everything else, what they were measured for, their files, and the additive prediction
// of a decoded architecture. The differentiable runtime model built on them is nas/runtime.h.
//
// Formats read (docs: nas/latency/README.md, "Formats"):
//   - the project's JSON ("spnas-latency-table", version 1; written by `spnas profile`);
//   - the Single-Path NAS authors' CSV (block,cin,cout,stride,expanded_channels_e6,skip_allowed,
//     ms_k3_e3,ms_k3_e6,ms_k5_e3,ms_k5_e6), whose fixed cost is not in the file: pass it.
#pragma once
#include <optional>
#include <string>
#include <vector>

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
  std::string source;  // file it came from
  // What it was measured for. "" and 0 mean unknown (a field missing from the file, the paper's CSV).
  std::string space;   // space name or file
  float width = 0;
  int input_size = 0, batch = 0, threads = 0;
  std::string mode;     // "inference" or "training" (a training step)
  std::string backend;  // "spnas" or "onednn"
  std::string clock;    // "wall" or "cpu" (harness.h)
  double quantile = 0;  // statistic of the repetitions each entry is (0.5: the median)
  std::string cpu, isa;
  double fixed_ms = 0;
  double fixed_spread = 0;
  // Calibration terms of a profiled table (ProfileOptions::calibrate), 0 otherwise: the part of
  // fixed_ms that is no piece's time, ...
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
std::string latency_table_to_json(const LatencyTable& t);  // unknown metadata is left out
void save_latency_table(const std::string& path, const LatencyTable& t);
// Checks layer count (and channels/strides where the table has them) against the space.
void check_table_matches(const LatencyTable& t, const SearchSpace& s);

// The settings a command takes from its flags that a table also records. Unset: the user did not
// give it (an input size of 0, "the space's", is not a value).
struct TableSettings {
  std::optional<std::string> space;
  std::optional<float> width;
  std::optional<int> input_size, batch, threads;
  std::optional<double> quantile;
  std::optional<std::string> clock, backend;
  std::optional<bool> training_step;  // the table's mode "training"
};
// One sentence per given setting that differs from what the table records, naming the flag, both
// values and the table, e.g. "--width 0.5 conflicts with the latency table 'lut.json' (measured at
// width 1.0)". Settings the table does not know never conflict.
std::vector<std::string> table_conflicts(const LatencyTable& t, const TableSettings& s);
// Throws with every conflict; then fills each setting the user did not give from the table, where
// the table knows it.
void reconcile_with_table(const LatencyTable& t, TableSettings& s);

// How a decoded layer's cost is read: the table's entry, or what the reference's formula
// (nas/runtime.h) gives at indicators 0/1.
enum class RuntimeMode { Formula, Table };
RuntimeMode parse_runtime_mode(const std::string& s);
// Cost (ms) of one searchable layer decoded to `c`, as `mode` sees it: the table's entry, or the
// formula at indicators 0/1 (its k3-e3 is R53 * R36 / R56, which is what a formula search optimizes).
double choice_runtime(const LayerCost& c, Choice choice, RuntimeMode mode);
// Prediction for a decoded architecture: fixed + sum of the chosen layers' costs (+ SE costs).
// Table mode (the default) is the additive prediction a measurement is compared with.
double predict_runtime(const LatencyTable& t, const Arch& a, RuntimeMode mode = RuntimeMode::Table);

// The choices a searchable layer allows, in Choice order (skip only where the space allows it).
std::vector<Choice> allowed_choices(const LayerSpec& layer);
// The smallest and largest additive prediction the table allows on the space: each searchable layer
// at its cheapest allowed choice (skip where allowed) / its dearest; with SE, the largest has SE
// everywhere. What tune checks a target against, random samples within, and search warns with.
struct RuntimeBounds {
  double min_ms = 0, max_ms = 0;
  Arch smallest, largest;
};
RuntimeBounds table_runtime_bounds(const LatencyTable& table, const SearchSpace& space, bool with_se = false);

}  // namespace spnas
