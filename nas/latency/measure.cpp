#include "nas/latency/measure.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "engine/io.h"
#include "engine/rng.h"
#include "nas/latency/harness.h"
#include "nas/latency/networks.h"
#include "nas/model.h"

namespace spnas {

namespace {

// Every timed run of a measurement: the figures, the runs they come from, how many were disturbed.
struct TimedRuns {
  std::vector<LatencyMeasurement> figures;
  std::vector<std::vector<double>> runs;  // per architecture, the runs the figures come from (ms)
  RoundRobinStats stats;
  MachineLoad load;
};

TimedRuns time_archs(const std::vector<Arch>& archs, const MeasureOptions& opt) {
  check(opt.batch >= 1 && opt.threads >= 1, "measure_arch_latency", "batch and threads must be >= 1");
  ThreadScope threads(opt.threads);
  ClockScope clock_scope(opt.clock, opt.threads);
  check_quantile(opt.quantile);
  place_threads(opt.backend, opt.threads, opt.pin);
  prepare_backend(opt.backend, opt.training_step, opt.threads);
  NetConfig cfg;
  cfg.seed = opt.seed;
  std::vector<std::unique_ptr<ChildNet>> nets;
  std::vector<Var> images;
  std::vector<std::vector<int>> labels;
  std::vector<std::unique_ptr<PieceNet>> other;  // another backend's networks
  std::vector<double> piece_ms;
  for (const Arch& a : archs) {
    nets.push_back(std::make_unique<ChildNet>(a, cfg));
    const SearchSpace& s = nets.back()->space();
    images.push_back(constant(random_images(opt.batch, s.input_size, opt.seed + 7)));
    labels.push_back(make_labels(opt.batch, s.num_classes));
    if (opt.backend != "spnas") {
      other.push_back(make_piece_net(opt.backend, s, a.layers, a.se, images.back()->value, opt.seed));
      piece_ms.resize(std::max<size_t>(piece_ms.size(), size_t(other.back()->num_pieces())));
      nets.back().reset();  // only its space was needed
    }
  }
  Rng rng(opt.seed + 11);
  TimedRuns out;
  std::vector<std::vector<double>> all_runs(archs.size());
  out.runs.resize(archs.size());
  std::vector<double> last(archs.size());
  LoadMonitor load(opt.threads);
  out.stats = round_robin(
      int(archs.size()), repetitions_of(opt),
      [&](int i) {
        if (!other.empty()) return last[i] = other[i]->run(images[i], labels[i], false, rng, piece_ms.data());
        ChildNet& net = *nets[i];
        ForwardOptions fo;
        if (!opt.training_step) {
          NoGrad ng;
          fo.training = false;
          const double t0 = stamp_now();
          Var logits = net.forward(images[i], fo);
          return last[i] = stamp_now() - t0;
        }
        net.params().zero_grad();
        fo.training = true;
        fo.rng = &rng;
        const double t0 = stamp_now();
        Var loss = softmax_cross_entropy(net.forward(images[i], fo), labels[i], 0.1f);
        backward(loss);
        return last[i] = stamp_now() - t0;
      },
      [&](int i, bool keep) {
        all_runs[i].push_back(last[i]);
        if (keep) out.runs[i].push_back(last[i]);
      });
  out.load = load.finish(out.stats.disturbed, out.stats.total);
  if (out.stats.fell_back) out.runs = all_runs;
  for (const std::vector<double>& v : out.runs) {
    LatencyMeasurement m;
    m.median_ms = quantile(v, 0.5);
    m.ms = quantile(v, opt.quantile);
    m.p10_ms = quantile(v, 0.1);
    m.p90_ms = quantile(v, 0.9);
    m.count = int(v.size());
    out.figures.push_back(m);
  }
  return out;
}

// The settings of a measurement, as a table records them.
TableSettings settings_of(const MeasureOptions& o) {
  TableSettings s;
  s.batch = o.batch;
  s.threads = o.threads;
  s.quantile = o.quantile;
  s.clock = o.clock;
  s.backend = o.backend;
  s.training_step = o.training_step;
  return s;
}

}  // namespace

std::vector<LatencyMeasurement> measure_archs_latency(const std::vector<Arch>& archs, const MeasureOptions& opt) {
  return time_archs(archs, opt).figures;
}

ArchLatency measure_arch_latency(const Arch& arch, const MeasureOptions& opt, const LatencyTable* table) {
  ArchLatency r;
  Arch reference = arch;
  reference.layers.assign(arch.layers.size(), Choice::K5E6);
  reference.se.clear();
  if (table) {
    SpaceOptions so;
    so.width = arch.width;
    so.input_size = arch.input_size;
    so.num_classes = arch.num_classes;
    check_table_matches(*table, load_space(arch.space, so));
    r.warnings = table_conflicts(*table, settings_of(opt));
  }
  std::vector<Arch> archs = {arch};
  if (opt.reference) archs.push_back(reference);
  const TimedRuns t = time_archs(archs, opt);
  static_cast<LatencyMeasurement&>(r) = t.figures[0];
  r.load = t.load;
  if (t.stats.fell_back)
    r.warnings.push_back("only " + std::to_string(t.stats.clean) +
                         " runs were not preempted by other processes; every run is used (the figures are inflated)");
  for (const std::string& w : load_warnings(t.load)) r.warnings.push_back(w);
  if (opt.reference) {
    r.has_reference = true;
    r.reference_arch = reference;
    r.reference = t.figures[1];
    r.ratio = quantile_ratio_interval(t.runs[0], t.runs[1], opt.quantile, opt.confidence, opt.resamples, opt.seed);
  }
  if (table) {
    r.has_table = true;
    r.table_source = table->source;
    r.predicted_ms = predict_runtime(*table, arch);
    r.reference_predicted_ms = predict_runtime(*table, reference);
    r.error_pct = (r.ms / r.predicted_ms - 1) * 100;
    if (r.has_reference) {
      r.machine_factor = r.reference.ms / r.reference_predicted_ms;
      r.rescaled_predicted_ms = r.predicted_ms * r.machine_factor;
      r.rescaled_error_pct = (r.ms / r.rescaled_predicted_ms - 1) * 100;
    }
  }
  return r;
}

std::string arch_latency_report(const ArchLatency& r, const MeasureOptions& o) {
  std::string s;
  for (const std::string& w : r.warnings) s += "warning: " + w + "\n";
  const std::string stat = o.quantile == 0.5 ? "median" : "quantile " + fmt(o.quantile, 2);
  s += "latency: " + fmt(r.ms) + " ms (" + stat + " of " + std::to_string(r.count) + " runs; median " +
       fmt(r.median_ms) + ", p10 " + fmt(r.p10_ms) + ", p90 " + fmt(r.p90_ms) + "), batch " + std::to_string(o.batch) +
       ", " + std::to_string(o.threads) + " thread(s)\n";
  if (r.has_reference)
    s += "reference (every layer 5x5-6), interleaved: " + fmt(r.reference.ms) + " ms; ratio " + fmt(r.ratio.ratio) +
         " (" + fmt(100 * r.ratio.confidence, 0) + " % interval " + fmt(r.ratio.lo) + " to " + fmt(r.ratio.hi) + ")\n";
  if (r.has_table) {
    s += "table '" + r.table_source + "' predicts " + fmt(r.predicted_ms) + " ms: measured " +
         (r.error_pct >= 0 ? "+" : "") + fmt(r.error_pct, 1) + " %\n";
    if (r.has_reference)
      s += "the reference runs " + fmt(r.machine_factor) + "x its prediction (" + fmt(r.reference_predicted_ms) +
           " ms): the machine now is that much slower; rescaled prediction " + fmt(r.rescaled_predicted_ms) +
           " ms, measured " + (r.rescaled_error_pct >= 0 ? "+" : "") + fmt(r.rescaled_error_pct, 1) + " %\n";
  }
  return s;
}

nlohmann::json arch_latency_json(const Arch& arch, const ArchLatency& r, const MeasureOptions& o) {
  auto figures = [](const LatencyMeasurement& m) {
    return nlohmann::json{{"latency_ms", m.ms},   {"median_ms", m.median_ms}, {"p10_ms", m.p10_ms},
                          {"p90_ms", m.p90_ms}, {"count", m.count}};
  };
  nlohmann::json j = figures(r);
  j["arch"] = arch_summary(arch);
  j["batch"] = o.batch;
  j["threads"] = o.threads;
  j["quantile"] = o.quantile;
  j["backend"] = o.backend;
  j["clock"] = o.clock;
  if (r.has_reference) {
    j["reference"] = figures(r.reference);
    j["reference"]["arch"] = arch_summary(r.reference_arch);
    j["ratio"] = {{"value", r.ratio.ratio}, {"lo", r.ratio.lo}, {"hi", r.ratio.hi}, {"confidence", r.ratio.confidence}};
  }
  if (r.has_table) {
    j["table"] = r.table_source;
    j["predicted_ms"] = r.predicted_ms;
    j["error_pct"] = r.error_pct;
    j["reference_predicted_ms"] = r.reference_predicted_ms;
    if (r.has_reference) {
      j["machine_factor"] = r.machine_factor;
      j["rescaled_predicted_ms"] = r.rescaled_predicted_ms;
      j["rescaled_error_pct"] = r.rescaled_error_pct;
    }
  }
  j["load"] = {{"load_average", r.load.load_average}, {"online_cpus", r.load.online_cpus},
               {"steal_fraction", r.load.steal_fraction}, {"preempted_runs", r.load.preempted},
               {"runs", r.load.runs}};
  j["warnings"] = r.warnings;
  return j;
}

}  // namespace spnas
