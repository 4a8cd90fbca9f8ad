// Validation of the CPU latency model (issue 6).
//
// Part 1, additive model: for each (batch, threads) configuration, profile the cifar10 space into a
// latency table, sample N random architectures (seeded), predict each one's latency from the table
// (predict_runtime: fixed + sum of entries), measure it end to end (ChildNet, round-robin over the
// architectures, median of repetitions), and report the mean / worst absolute percentage error and
// Kendall's tau between predicted and measured.
//   targets: mean <= 3 %, worst <= 8 %, tau >= 0.9 at batch 1 / 1 thread and batch 64 / 2 threads.
//
// Part 2, NeuralPower-style predictor: profile widths 0.5 and 1.0 (piece samples), fit the sparse
// polynomial model, predict every piece of width 0.75 (never profiled), profile width 0.75, and
// report the held-out error per entry (target <= 5 % mean), plus the end-to-end error of the
// predicted table on the random architectures.
//
// Usage: kUsage below (`bench_latency_model --help`).
//
// The architectures are measured before and after the profile (geometric mean of the two; the drift
// between them is reported); --no-bracket measures them once, after.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "bench/args.h"
#include "engine/rng.h"
#include "engine/cpu.h"
#include "engine/io.h"
#include "nas/latency/measure.h"
#include "nas/latency/predictor.h"
#include "nas/latency/profile.h"
#include "nas/latency/stats.h"
#include "nas/model.h"
#include "nas/space.h"

using namespace spnas;

static const char* kUsage =
    "usage: bench_latency_model [--configs 1x1,64x2] [--archs 20] [--seed 1] [--reps 30]\n"
    "                           [--min-seconds 0.3] [--skip-validation] [--skip-predictor]\n"
    "                           [--train-widths 0.5,1.0] [--test-width 0.75] [--pred-config 1x1]\n"
    "                           [--out DIR] [--backend spnas|onednn|opencv] [--context-rounds 3]\n"
    "                           [--clock wall|cpu] [--quantile 0.5] [--no-bracket] [--verbose]\n";

namespace {

struct Config {
  int batch = 1, threads = 1;
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

Config parse_config(const std::string& s) {
  auto p = s.find('x');
  if (p == std::string::npos) {
    std::fprintf(stderr, "config '%s' must be BATCHxTHREADS, e.g. 64x2\n", s.c_str());
    std::exit(2);
  }
  return {std::atoi(s.substr(0, p).c_str()), std::atoi(s.substr(p + 1).c_str())};
}

std::vector<Arch> random_archs(const SearchSpace& s, int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<Arch> out;
  auto idx = s.searchable_indices();
  for (int i = 0; i < n; ++i) {
    Arch a = uniform_arch(s, Choice::K3E3);
    a.space = "cifar10";
    for (size_t l = 0; l < idx.size(); ++l) {
      int choices = s.layers[idx[l]].skip_allowed ? 5 : 4;
      a.layers[l] = Choice(rng.below(choices));
    }
    out.push_back(a);
  }
  return out;
}

struct Errors {
  double mean = 0, median = 0, worst = 0, tau = 0, bias = 0;
};

std::string fmt_pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%+.1f %%", v);
  return b;
}

Errors compare(const std::vector<double>& pred, const std::vector<double>& meas) {
  Errors e;
  std::vector<double> apes;
  for (size_t i = 0; i < pred.size(); ++i) {
    double ape = std::fabs(pred[i] - meas[i]) / meas[i] * 100.0;
    apes.push_back(ape);
    e.mean += ape;
    e.bias += (pred[i] - meas[i]) / meas[i] * 100.0;
    e.worst = std::max(e.worst, ape);
  }
  e.mean /= double(pred.size());
  e.median = quantile(apes, 0.5);
  e.bias /= double(pred.size());
  e.tau = kendall_tau(pred, meas);
  return e;
}

const char* verdict(bool ok) { return ok ? "ok" : "MISSED"; }

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::vector<std::string> configs = {"1x1", "64x2"};
  int n_archs = 20, reps = 30;
  uint64_t seed = 1;
  double min_seconds = 0.3;
  double quantile = 0.5;
  bool bracket = true;
  bool do_validation = true, do_predictor = true, verbose = false;
  std::vector<float> train_widths = {0.5f, 1.0f};
  float test_width = 0.75f;
  std::string pred_config = "1x1", out_dir, backend = "spnas";
  int context_rounds = 3;
  std::string clock = "wall";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return flag_value("bench_latency_model", argc, argv, i); };
    if (a == "--help" || a == "-h") return std::printf("%s", kUsage), 0;
    else if (a == "--configs") configs = split(next(), ',');
    else if (a == "--archs") n_archs = std::atoi(next().c_str());
    else if (a == "--seed") seed = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--reps") reps = std::atoi(next().c_str());
    else if (a == "--min-seconds") min_seconds = std::atof(next().c_str());
    else if (a == "--quantile") quantile = std::atof(next().c_str());
    else if (a == "--no-bracket") bracket = false;
    else if (a == "--skip-validation") do_validation = false;
    else if (a == "--skip-predictor") do_predictor = false;
    else if (a == "--train-widths") {
      train_widths.clear();
      for (auto& w : split(next(), ',')) train_widths.push_back(float(std::atof(w.c_str())));
    } else if (a == "--test-width") test_width = float(std::atof(next().c_str()));
    else if (a == "--pred-config") pred_config = next();
    else if (a == "--out") out_dir = next();
    else if (a == "--backend") backend = next();
    else if (a == "--clock") clock = next();
    else if (a == "--context-rounds") context_rounds = std::atoi(next().c_str());
    else if (a == "--verbose") verbose = true;
    else {
      std::fprintf(stderr, "bench_latency_model: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (!out_dir.empty()) make_dirs(out_dir);  // before the profile: a missing folder must not cost its minutes
  std::printf("latency model benchmark: cpu %s, %d random cifar10 architectures (seed %llu)\n",
              cpu_description().c_str(), n_archs, (unsigned long long)seed);
  auto progress = [&](const std::string& m) {
    if (verbose || m.rfind("warning", 0) == 0) std::printf("  [profile] %s\n", m.c_str());
  };
  bool all_ok = true;

  SearchSpace space = load_space("cifar10");
  std::vector<Arch> archs = random_archs(space, n_archs, seed);

  // Options shared by every profile and measurement of this run (the backend is set per part).
  auto profile_options = [&](const Config& c) {
    ProfileOptions po;
    po.batch = c.batch;
    po.threads = c.threads;
    po.reps = reps;
    po.min_seconds = min_seconds;
    po.progress = progress;
    po.context_rounds = context_rounds;
    po.clock = clock;
    po.quantile = quantile;
    return po;
  };
  auto measure_options = [&](const Config& c) {
    MeasureOptions mo;
    mo.batch = c.batch;
    mo.threads = c.threads;
    mo.reps = reps;
    mo.min_seconds = min_seconds;
    mo.clock = clock;
    mo.quantile = quantile;
    return mo;
  };

  if (do_validation) {
    for (const std::string& cs : configs) {
      Config c = parse_config(cs);
      ProfileOptions po = profile_options(c);
      po.backend = backend;
      MeasureOptions mo = measure_options(c);
      mo.backend = backend;
      // The architectures are measured before and after the profile, and each one's measured latency
      // is the geometric mean of the two: a machine that drifts within minutes (bench/RESULTS.md,
      // "Latency model") then moves both sides of the comparison alike. The drift is reported.
      std::vector<LatencyMeasurement> before;
      if (bracket) before = measure_archs_latency(archs, mo);
      ProfileResult pr = profile_space_full(space, po);
      if (!out_dir.empty())
        save_latency_table(out_dir + "/table_cifar10_b" + std::to_string(c.batch) + "_t" + std::to_string(c.threads) +
                               ".json",
                           pr.table);
      std::vector<LatencyMeasurement> meas = measure_archs_latency(archs, mo);
      std::vector<double> p, m;
      double max_spread = 0, drift = 0;
      for (size_t i = 0; i < archs.size(); ++i) {
        p.push_back(predict_runtime(pr.table, archs[i]));
        if (bracket) {
          m.push_back(std::sqrt(before[i].ms * meas[i].ms));
          drift += (meas[i].ms / before[i].ms - 1) * 100 / double(archs.size());
        } else {
          m.push_back(meas[i].ms);
        }
        max_spread = std::max(max_spread, (meas[i].p90_ms - meas[i].p10_ms) / meas[i].median_ms);
        if (verbose)
          std::printf("    arch %2zu  predicted %9.3f ms  measured %9.3f ms (p10 %.3f, p90 %.3f, n %d)  %+6.2f %%  %s\n",
                      i, p.back(), m.back(), meas[i].p10_ms, meas[i].p90_ms, meas[i].count,
                      (p.back() - m.back()) / m.back() * 100, arch_summary(archs[i]).c_str());
      }
      Errors e = compare(p, m);
      bool ok = e.mean <= 3.0 && e.worst <= 8.0 && e.tau >= 0.9;
      all_ok &= ok;
      double lo = *std::min_element(m.begin(), m.end()), hi = *std::max_element(m.begin(), m.end());
      std::printf(
          "additive model (%s, %s clock), batch %d / %d thread(s): fixed %.3f ms, measured %.3f..%.3f ms; mean |err| %.2f %% "
          "(target 3), median %.2f %%, worst %.2f %% (target 8), bias %+.2f %%, Kendall tau %.3f (target 0.9), measurement "
          "spread up to %.1f %%%s: %s\n",
          backend.c_str(), clock.c_str(), c.batch, c.threads, pr.table.fixed_ms, lo, hi, e.mean, e.median, e.worst, e.bias, e.tau, max_spread * 100,
          bracket ? (", drift during the profile " + fmt_pct(drift)).c_str() : "", verdict(ok));
      // One architecture as `spnas latency` checks it against the table: interleaved with the table's
      // all-5x5-6 network, the ratio's interval, the machine factor, the load warnings.
      const ArchLatency one = measure_arch_latency(archs[0], mo, &pr.table);
      std::printf("  arch 0 (%s) against the table:\n", arch_summary(archs[0]).c_str());
      std::istringstream report(arch_latency_report(one, mo));
      for (std::string line; std::getline(report, line);) std::printf("    %s\n", line.c_str());
      std::fflush(stdout);
    }
  }

  if (do_predictor) {
    Config c = parse_config(pred_config);
    ProfileOptions po = profile_options(c);
    std::vector<PieceSample> train;
    for (float w : train_widths) {
      SpaceOptions so;
      so.width = w;
      ProfileResult r = profile_space_full(load_space("cifar10", so), po);
      train.insert(train.end(), r.samples.begin(), r.samples.end());
    }
    LatencyPredictor pred = LatencyPredictor::fit(train);
    std::printf("predictor: %zu training pieces (widths", train.size());
    for (float w : train_widths) std::printf(" %.2f", w);
    std::printf("), terms: %s\n", pred.describe().c_str());
    PredictionError tr = evaluate_predictor(pred, train);
    std::printf("  training error: mean %.2f %%, worst %.2f %% over %d pieces\n", tr.mean_ape, tr.max_ape, tr.count);

    SpaceOptions so;
    so.width = test_width;
    SearchSpace test_space = load_space("cifar10", so);
    ProfileResult truth = profile_space_full(test_space, po);
    PredictionError he = evaluate_predictor(pred, truth.samples);
    LatencyTable ptab = predict_table(pred, test_space, c.batch, false);
    // Entry-level comparison of the predicted table with the measured one.
    double sum = 0, worst = 0;
    int n = 0;
    for (size_t l = 0; l < ptab.layers.size(); ++l)
      for (Choice ch : {Choice::K3E3, Choice::K3E6, Choice::K5E3, Choice::K5E6}) {
        double a = ptab.layers[l].cost(ch), b = truth.table.layers[l].cost(ch);
        double ape = std::fabs(a - b) / b * 100;
        sum += ape;
        worst = std::max(worst, ape);
        ++n;
      }
    double fixed_err = (ptab.fixed_ms - truth.table.fixed_ms) / truth.table.fixed_ms * 100;
    bool ok = sum / n <= 5.0;
    all_ok &= ok;
    std::printf(
        "predictor held-out (width %.2f, batch %d / %d thread(s)): table entries mean |err| %.2f %% (target 5), "
        "worst %.2f %% over %d; fixed cost %+.2f %%; all pieces mean %.2f %%, worst %.2f %%: %s\n",
        test_width, c.batch, c.threads, sum / n, worst, n, fixed_err, he.mean_ape, he.max_ape, verdict(ok));
    // End to end with the predicted table vs the measured table.
    std::vector<Arch> tarchs = random_archs(test_space, n_archs, seed + 1);
    for (Arch& a : tarchs) a.width = test_width;
    std::vector<LatencyMeasurement> meas = measure_archs_latency(tarchs, measure_options(c));
    std::vector<double> pp, pm, m;
    for (size_t i = 0; i < tarchs.size(); ++i) {
      pp.push_back(predict_runtime(ptab, tarchs[i]));
      pm.push_back(predict_runtime(truth.table, tarchs[i]));
      m.push_back(meas[i].ms);
    }
    Errors ep = compare(pp, m), em = compare(pm, m);
    std::printf(
        "  end to end at width %.2f: predicted table mean |err| %.2f %%, worst %.2f %%, tau %.3f; measured table "
        "mean %.2f %%, worst %.2f %%, tau %.3f\n",
        test_width, ep.mean, ep.worst, ep.tau, em.mean, em.worst, em.tau);
    if (verbose)
      for (const PieceSample& s : truth.samples)
        std::printf("    %-6s %4d->%4d s%d k%d e%d se%d in %2d: measured %.4f predicted %.4f ms (%+.1f %%)\n",
                    s.kind.c_str(), s.cin, s.cout, s.stride, s.kernel, s.expansion, int(s.se), s.in_size, s.ms,
                    pred.predict(s), (pred.predict(s) - s.ms) / s.ms * 100);
  }
  std::printf("overall: %s\n", all_ok ? "all targets met" : "some targets missed (see above)");
  return 0;
}
