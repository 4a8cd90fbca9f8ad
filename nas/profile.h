// The CPU latency model: profiling a search space into a latency table (nas/runtime.h) and measuring
// the end-to-end latency of a decoded architecture, with the same method.
//
// Method (docs: nas/README.md, "Latency tables: profiling, validation, prediction"):
//   - Whole networks are built from the engine's own pieces (the stem and head as ChildNet builds
//     them, make_mbconv / mbconv_forward for the layers) and run whole; a timestamp after every piece
//     splits each run into per-piece times. Each layer is therefore timed *in network context* (its
//     input just written by the previous layer, its weights evicted by the other layers' weights,
//     the pooled allocator in its steady state), which is what makes the additive model fit
//     end-to-end measurements.
//   - Mixed contexts: context_rounds groups of networks; in each group every searchable layer takes
//     each candidate once (and a fifth network skips the layers that may be skipped), in an order
//     drawn at random per layer, so each entry is averaged over random neighbours. With search_se,
//     every network has a twin with SE on every searchable layer.
//   - The networks are run round-robin (rep r of every network, then rep r + 1), so a burst of load
//     from another process hits every candidate alike; per-piece medians over the repetitions.
//   - A run during which the process was preempted (its involuntary context-switch count moved) is
//     dropped: on a shared machine it measures the other processes, not the network. If too few
//     runs are undisturbed, every run is used and a warning says so.
//   - clock "cpu" times with the process's CPU time / threads instead of the wall clock: on a machine
//     so loaded that no run escapes preemption, it estimates what the wall clock would read on an
//     idle machine (it leaves out the time the process was descheduled).
//   - Training step: forward + softmax cross-entropy + backward (batch statistics, dropout); an
//     identity marker node on the tape after each piece timestamps the backward pass too.
//   - backend "onednn": the same networks as oneDNN primitives (convolutions with BN folded into a
//     bias and the activation / residual fused as post-ops; pooling, inner product), timed alike.
//   - fixed_ms = stem + fixed MBConv layers + head, measured in the same runs (median of their
//     per-run sum, averaged over the candidate networks).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "nas/runtime.h"
#include "nas/space.h"

namespace spnas {

// One timed piece of a network: the predictor's training data (nas/predictor.h).
struct PieceSample {
  std::string kind = "mbconv";  // "mbconv", "stem" or "head"
  int cin = 0, cout = 0;        // stem: cin = 3; head: cout = head channels
  int in_size = 0;              // spatial input size (H = W)
  int kernel = 1, stride = 1, expansion = 1;
  bool se = false;
  bool residual = false;
  int classes = 0;              // head only
  int batch = 1;
  double ms = 0;                // measured (median) or predicted
  double spread = 0;            // (p90 - p10) / median
  int out_size() const { return (in_size + stride - 1) / stride; }
};

// The piece of one MBConv layer of a space with a given kernel, expansion and SE flag.
PieceSample mbconv_piece(const LayerSpec& l, int kernel, int expansion, bool se, int batch);

struct ProfileOptions {
  std::string space = "cifar10";  // built-in name or JSON file
  float width = 1.0f;
  int input_size = 0;              // 0: the space's
  int batch = 1;
  int threads = 1;
  bool training_step = false;      // forward + backward instead of inference
  std::string backend = "spnas";   // "spnas", or "onednn" (inference, no SE; builds with SPNAS_HAVE_DNNL)
  bool search_se = false;          // also measure the SE branch of every searchable layer
  int context_rounds = 3;          // each entry measured in this many random network contexts
  int warmup = 10;
  int reps = 50;                   // at least this many repetitions ...
  double min_seconds = 0.2;        // ... and at least this long per network
  int max_reps = 20000;
  double max_seconds = 300;        // give up waiting for enough undisturbed runs after this long
  bool drop_preempted = true;      // drop runs during which the process was preempted (see below)
  std::string clock = "wall";      // "wall" (steady_clock) or "cpu" (process CPU time / threads)
  bool pin = true;                 // pin threads: T > 1 to the first T allowed CPUs (taskset,
                                   // cgroups); one thread to the idlest allowed CPU
                                   // (never the oneDNN backend with T > 1: its OpenMP threads would
                                   // inherit the caller's one-CPU mask)
  double spread_warning = 0.25;    // warn when an entry's (p90 - p10) / median exceeds this
  // Statistic of each piece's repetitions: this quantile (0.5 = median). On a shared machine whose
  // other jobs slow random runs down, a low quantile (0.2) estimates the undisturbed time better
  // than the median; use the same value for a table and for the measurements it is checked against.
  double quantile = 0.5;
  // Fit each profiled network's total (its per-run sums' statistic) minus its prediction as a
  // constant (into the fixed cost) plus a per-candidate cost per layer (into the entries); see
  // LatencyTable::fixed_calibration_ms / candidate_calibration_ms and nas/README.md.
  bool calibrate = true;
  uint64_t seed = 1;               // weights and inputs
  std::function<void(const std::string&)> progress;  // progress lines and warnings (may be empty)
};

struct ProfileResult {
  LatencyTable table;
  std::vector<PieceSample> samples;   // every distinct piece with its median time
  std::vector<std::string> warnings;  // high spread, pinning refused, ...
};

// Profiles the space named in options (load_space with width / input_size).
LatencyTable profile_space(const ProfileOptions& options);
// Same for a space already loaded (options.space, width and input_size are then ignored except for
// the table's metadata), with every detail.
ProfileResult profile_space_full(const SearchSpace& space, const ProfileOptions& options);

struct LatencyMeasurement {
  double median_ms = 0, p10_ms = 0, p90_ms = 0;
  double ms = 0;  // the MeasureOptions::quantile of the repetitions (= median_ms by default)
  int count = 0;
};

struct MeasureOptions {
  int batch = 1;
  int threads = 1;
  bool training_step = false;
  std::string backend = "spnas";  // or "onednn" (inference only; builds with SPNAS_HAVE_DNNL)
  int warmup = 10;
  int reps = 50;
  double min_seconds = 0.2;  // per architecture
  int max_reps = 20000;
  double max_seconds = 300;
  bool drop_preempted = true;
  std::string clock = "wall";  // as ProfileOptions::clock; use the same for a table and its check
  double quantile = 0.5;       // as ProfileOptions::quantile
  bool pin = true;             // as ProfileOptions::pin
  uint64_t seed = 1;
};

// End-to-end latency of a decoded network (ChildNet, inference: NoGrad, frozen BN; or a training
// step: forward + cross-entropy + backward), median over the repetitions after warm-up.
LatencyMeasurement measure_arch_latency(const Arch& arch, const MeasureOptions& options);
LatencyMeasurement measure_arch_latency(const Arch& arch, int batch, int threads, bool training_step = false);
// Several architectures measured round-robin (a burst of load hits all of them alike).
std::vector<LatencyMeasurement> measure_archs_latency(const std::vector<Arch>& archs, const MeasureOptions& options);


// Piece samples as JSON (for the predictor), and back.
std::string piece_samples_to_json(const std::vector<PieceSample>& samples);
std::vector<PieceSample> parse_piece_samples(const std::string& json_text, const std::string& source);
void save_piece_samples(const std::string& path, const std::vector<PieceSample>& samples);
std::vector<PieceSample> load_piece_samples(const std::string& path);

// Statistics used by the profiler and the benchmark.
double quantile(std::vector<double> v, double q);  // linear interpolation, q in [0, 1]
double kendall_tau(const std::vector<double>& a, const std::vector<double>& b);  // tau-b

}  // namespace spnas
