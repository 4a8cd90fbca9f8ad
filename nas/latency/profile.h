// Profiling a search space into a latency table (table.h) on this machine.
//
// Method (docs: nas/latency/README.md, "How a table is measured"):
//   - Whole networks are built from the engine's own pieces (networks.h: the same stem, MBConv
//     blocks and head as ChildNet) and run whole; a timestamp after every piece splits each run into
//     per-piece times. Each layer is therefore timed *in network context* (its input just written by
//     the previous layer, its weights evicted by the other layers' weights, the pooled allocator in
//     its steady state), which is what makes the additive model fit end-to-end measurements.
//   - Mixed contexts: context_rounds groups of networks; in each group every searchable layer takes
//     each candidate once (and a fifth network skips the layers that may be skipped), in an order
//     drawn at random per layer, so each entry is averaged over random neighbours. With search_se,
//     every network has a twin with SE on every searchable layer.
//   - Repetitions, clock, preemption filtering and thread placement: harness.h.
//   - fixed_ms = stem + fixed MBConv layers + head, measured in the same runs; with `calibrate`, a
//     fit of the networks' totals against the table's prediction corrects both (profile.cpp).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "nas/latency/machine_load.h"
#include "nas/latency/samples.h"
#include "nas/latency/table.h"
#include "nas/space.h"

namespace spnas {

struct ProfileOptions {
  std::string space = "cifar10";  // built-in name or JSON file
  float width = 1.0f;
  int input_size = 0;              // 0: the space's
  int batch = 1;
  int threads = 1;
  bool training_step = false;      // forward + backward instead of inference
  std::string backend = "spnas";   // "spnas", "onednn" (inference, no SE; builds with SPNAS_HAVE_DNNL) or
                                   // "opencv" (the exported ONNX file in OpenCV dnn; inference; builds with
                                   // SPNAS_HAVE_ONNX and SPNAS_HAVE_OPENCV)
  bool search_se = false;          // also measure the SE branch of every searchable layer
  int context_rounds = 3;          // each entry measured in this many random network contexts
  int warmup = 10;
  int reps = 50;                   // at least this many repetitions ...
  double min_seconds = 0.2;        // ... and at least this long per network
  int max_reps = 20000;
  double max_seconds = 300;        // give up waiting for enough undisturbed runs after this long
  bool drop_preempted = true;      // drop runs during which the process was preempted
  std::string clock = "wall";      // "wall" (steady_clock) or "cpu" (process CPU time / threads)
  bool pin = true;                 // pin threads: T > 1 to the first T allowed CPUs (taskset,
                                   // cgroups); one thread to the idlest allowed CPU
                                   // (never the oneDNN or OpenCV backend with T > 1: their threads would
                                   // inherit the caller's one-CPU mask)
  double spread_warning = 0.25;    // warn when an entry's (p90 - p10) / median exceeds this
  // Statistic of each piece's repetitions: this quantile (0.5 = median). On a shared machine whose
  // other jobs slow random runs down, a low quantile (0.2) estimates the undisturbed time better
  // than the median; use the same value for a table and for the measurements it is checked against.
  double quantile = 0.5;
  // Fit each profiled network's total (its per-run sums' statistic) minus its prediction as a
  // constant (into the fixed cost) plus a per-candidate cost per layer (into the entries); see
  // LatencyTable::fixed_calibration_ms / candidate_calibration_ms.
  bool calibrate = true;
  uint64_t seed = 1;               // weights and inputs
  std::function<void(const std::string&)> progress;  // progress lines and warnings (may be empty)
};

struct ProfileResult {
  LatencyTable table;
  std::vector<PieceSample> samples;   // every distinct piece with its time (the profile's statistic)
  MachineLoad load;                   // how busy the machine was while profiling
  std::vector<std::string> warnings;  // high spread, pinning refused, a loaded machine, ...
};

// Profiles the space named in options (load_space with width / input_size).
LatencyTable profile_space(const ProfileOptions& options);
// Same for a space already loaded (options.space, width and input_size are then ignored except for
// the table's metadata), with every detail.
ProfileResult profile_space_full(const SearchSpace& space, const ProfileOptions& options);

}  // namespace spnas
