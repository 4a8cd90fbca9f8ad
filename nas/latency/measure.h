// End-to-end latency of decoded architectures, with the profiler's method (harness.h): a ChildNet
// (inference: NoGrad, batch norm folded in; or a training step), warm-up, round-robin repetitions,
// preempted runs dropped, the chosen quantile of the repetitions.
//
// On a shared machine one run's figure moves with the neighbours' load (tens of per cent between
// runs, each run's own spread tight), so measure_arch_latency interleaves the architecture with a
// reference network (the table's own all-5x5-6 network) in the same run: their ratio is what a user
// can believe, and the reference measured against the table's prediction for it says how much slower
// the machine runs now than when the table was profiled.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nas/latency/machine_load.h"
#include "nas/latency/stats.h"
#include "nas/latency/table.h"
#include "nas/space.h"

namespace spnas {

struct LatencyMeasurement {
  double median_ms = 0, p10_ms = 0, p90_ms = 0;
  double ms = 0;  // the MeasureOptions::quantile of the repetitions (= median_ms by default)
  int count = 0;  // repetitions the figures come from
};

struct MeasureOptions {
  int batch = 1;
  int threads = 1;
  bool training_step = false;
  std::string backend = "spnas";  // or "onednn" or "opencv" (inference only; as ProfileOptions::backend)
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
  // measure_arch_latency only: interleave the reference network, and the interval of the ratio.
  bool reference = true;
  double confidence = 0.95;
  int resamples = 2000;  // bootstrap resamples
};

// What measure_arch_latency found. The LatencyMeasurement fields are the architecture's own.
struct ArchLatency : LatencyMeasurement {
  bool has_reference = false;
  Arch reference_arch;            // the architecture's space with every searchable layer 5x5-6, no SE
  LatencyMeasurement reference;
  RatioInterval ratio;            // architecture / reference, of the chosen statistic
  // With a table:
  bool has_table = false;
  std::string table_source;
  double predicted_ms = 0;            // the table's additive prediction (predict_runtime)
  double reference_predicted_ms = 0;  // the same for the reference
  double error_pct = 0;               // measured against predicted: (ms / predicted_ms - 1) * 100
  // With a table and the reference: the reference's measured / predicted time, i.e. how much slower
  // (> 1) or faster the machine runs now than when the table was measured; the prediction rescaled
  // by it, and the measurement against that.
  double machine_factor = 0;
  double rescaled_predicted_ms = 0;
  double rescaled_error_pct = 0;
  MachineLoad load;
  std::vector<std::string> warnings;  // a loaded machine, too few undisturbed runs, a table measured otherwise
};

// Measures `arch` (interleaved with its reference unless options.reference is false) and, when a
// table is given, compares both with its predictions. The table must match the architecture's space
// (check_table_matches); settings that differ from the table's (batch, threads, quantile, clock,
// backend, mode) become warnings.
ArchLatency measure_arch_latency(const Arch& arch, const MeasureOptions& options, const LatencyTable* table = nullptr);
// Several architectures measured round-robin (a burst of load hits all of them alike).
std::vector<LatencyMeasurement> measure_archs_latency(const std::vector<Arch>& archs, const MeasureOptions& options);

// The result for a person (a few lines, warnings first) and as JSON (the fields of `spnas latency
// --json`: arch, batch, threads, latency_ms, quantile, backend, clock, median_ms, p10_ms, p90_ms,
// count, predicted_ms, and the reference, ratio, load and warnings).
std::string arch_latency_report(const ArchLatency& r, const MeasureOptions& options);
nlohmann::json arch_latency_json(const Arch& arch, const ArchLatency& r, const MeasureOptions& options);

}  // namespace spnas
