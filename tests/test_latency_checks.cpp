// What tells a user whether to believe a latency (nas/latency/): the confidence interval of the
// ratio to an interleaved reference, the load warnings read from /proc text, the table's metadata
// (older files load with unknown fields) and the command-line settings reconciled with it, and
// measure_arch_latency's comparison with the table. No assertion depends on how fast anything ran.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <unistd.h>

#include "engine/rng.h"
#include "nas/latency/machine_load.h"
#include "nas/latency/measure.h"
#include "nas/latency/networks.h"
#include "nas/latency/stats.h"
#include "nas/latency/table.h"
#include "nas/model.h"
#include "nas/space.h"

using namespace spnas;

namespace {

// Right-skewed "timings": a base time times a log-normal factor, as on a shared machine.
std::vector<double> skewed_times(Rng& rng, int n, double base) {
  std::vector<double> v(size_t(n), 0.0);
  for (double& x : v) x = base * std::exp(0.15 * rng.normal());
  return v;
}

LatencyTable measured_table() {
  LatencyTable t;
  t.source = "lut.json";
  t.space = "cifar10";
  t.width = 1.0f;
  t.input_size = 32;
  t.batch = 1;
  t.threads = 1;
  t.quantile = 0.2;
  t.clock = "wall";
  t.backend = "spnas";
  t.mode = "inference";
  t.fixed_ms = 1;
  LayerCost c;
  c.k3_e3 = c.k3_e6 = c.k5_e3 = c.k5_e6 = 0.1;
  t.layers.push_back(c);
  return t;
}

}  // namespace

TEST_CASE("ratio of two quantiles: a bootstrap interval that covers a known ratio") {
  Rng rng(7);
  // Samples of known quantile ratio 2: b is a copy of a's distribution, scaled by 1/2.
  const std::vector<double> a = skewed_times(rng, 200, 2.0), b = skewed_times(rng, 200, 1.0);
  RatioInterval r = quantile_ratio_interval(a, b, 0.5, 0.95, 2000, 1);
  CHECK(r.ratio == doctest::Approx(quantile(a, 0.5) / quantile(b, 0.5)));
  CHECK(r.lo < r.ratio);
  CHECK(r.ratio < r.hi);
  CHECK(r.lo < 2.0);
  CHECK(2.0 < r.hi);
  CHECK(r.confidence == 0.95);
  // Seeded: the same input gives the same interval.
  RatioInterval again = quantile_ratio_interval(a, b, 0.5, 0.95, 2000, 1);
  CHECK(again.lo == r.lo);
  CHECK(again.hi == r.hi);
  // More runs, a narrower interval (about 1/sqrt(n): 16 times the runs, a quarter of the width).
  Rng rng2(8);
  const std::vector<double> a16 = skewed_times(rng2, 3200, 2.0), b16 = skewed_times(rng2, 3200, 1.0);
  RatioInterval narrow = quantile_ratio_interval(a16, b16, 0.5, 0.95, 500, 1);
  const double ratio_of_widths = (narrow.hi - narrow.lo) / (r.hi - r.lo);
  CHECK(ratio_of_widths > 0.15);
  CHECK(ratio_of_widths < 0.4);

  // Coverage: over many independent experiments the interval of the 0.2-quantile ratio contains the
  // true ratio 1.5 about as often as its confidence says (the bootstrap of a low quantile from 60
  // runs errs slightly on the safe side).
  auto coverage = [](double confidence, int experiments) {
    Rng trials(11);
    int covered = 0;
    for (int e = 0; e < experiments; ++e) {
      const std::vector<double> x = skewed_times(trials, 60, 1.5), y = skewed_times(trials, 60, 1.0);
      RatioInterval ci = quantile_ratio_interval(x, y, 0.2, confidence, 400, uint64_t(e) + 1);
      covered += ci.lo <= 1.5 && 1.5 <= ci.hi;
    }
    return double(covered) / experiments;
  };
  const double c90 = coverage(0.9, 300), c50 = coverage(0.5, 200);
  INFO("coverage of the 90 % interval ", c90, ", of the 50 % interval ", c50);
  CHECK(c90 > 0.84);
  CHECK(c90 < 0.96);
  CHECK(c50 > 0.42);
  CHECK(c50 < 0.66);

  CHECK_THROWS_WITH(quantile_ratio_interval(a, {}, 0.5), doctest::Contains("both lists"));
  CHECK_THROWS_WITH(quantile_ratio_interval(a, b, 1.0), doctest::Contains("quantile"));
}

TEST_CASE("load signs parsed from /proc text, and the warnings they give") {
  const std::string stat =
      "cpu  1000 20 300 8000 100 10 20 400 0 0\n"
      "cpu0 500 10 150 4000 50 5 10 200 0 0\n"
      "cpu1 500 10 150 3900 150 5 10 200 0 0\n"
      "intr 12345 0 0\nctxt 999\n";
  CpuTimes t = parse_proc_stat(stat, "fake stat");
  CHECK(t.total == 1000 + 20 + 300 + 8000 + 100 + 10 + 20 + 400);
  CHECK(t.steal == 400);
  CHECK(t.idle_per_cpu == std::vector<long long>{4050, 4050});
  // Steal during a measurement is the delta of two readings.
  const std::string later = "cpu  1100 20 300 8100 100 10 20 500 0 0\n";
  CHECK(steal_fraction(t, parse_proc_stat(later)) == doctest::Approx(100.0 / 300.0));
  CHECK(steal_fraction(t, t) == -1.0);
  // A kernel without the steal column: no steal.
  CHECK(parse_proc_stat("cpu 10 0 5 100 1 0 0\n").steal == 0);
  CHECK_THROWS_WITH(parse_proc_stat("intr 1 2\n", "fake stat"), doctest::Contains("'fake stat': no \"cpu\" line"));
  CHECK_THROWS_WITH(parse_proc_stat("cpu 1 2\n", "fake stat"), doctest::Contains("'fake stat'"));

  CHECK(parse_loadavg("1.52 0.80 0.40 2/300 12345\n") == doctest::Approx(1.52));
  CHECK_THROWS_WITH(parse_loadavg("busy\n", "fake loadavg"), doctest::Contains("'fake loadavg'"));

  MachineLoad quiet;
  quiet.load_average = 0.9;
  quiet.online_cpus = 2;
  quiet.threads = 1;
  quiet.steal_fraction = 0.001;
  quiet.preempted = 5;
  quiet.runs = 100;
  CHECK(load_warnings(quiet).empty());

  MachineLoad busy = quiet;
  busy.load_average = 1.8;
  std::vector<std::string> w = load_warnings(busy);
  REQUIRE(w.size() == 1);
  CHECK(w[0].find("load average 1.80 on 2 online CPUs") != std::string::npos);
  busy.threads = 2;
  busy.load_average = 0.9;  // two threads need both CPUs
  CHECK(load_warnings(busy).size() == 1);

  MachineLoad stolen = quiet;
  stolen.steal_fraction = 0.05;
  w = load_warnings(stolen);
  REQUIRE(w.size() == 1);
  CHECK(w[0].find("5.0 % of the CPU time was stolen") != std::string::npos);

  MachineLoad preempted = quiet;
  preempted.preempted = 30;
  w = load_warnings(preempted);
  REQUIRE(w.size() == 1);
  CHECK(w[0].find("30 of 100 timed runs were preempted") != std::string::npos);

  MachineLoad unknown;  // nothing could be read: no warning
  unknown.online_cpus = 2;
  CHECK(load_warnings(unknown).empty());
}

TEST_CASE("table metadata: an older file loads with unknown fields, bad fields are named") {
  const std::string old_file = R"({"format": "spnas-latency-table", "version": 1, "space": "cifar10",
      "width": 0.5, "fixed_ms": 1.0, "layers": [{"k3_e3": 0.1, "k3_e6": 0.2, "k5_e3": 0.15, "k5_e6": 0.3}]})";
  LatencyTable t = parse_latency_table(old_file, "old.json");
  CHECK(t.space == "cifar10");
  CHECK(t.width == 0.5f);
  CHECK(t.batch == 0);
  CHECK(t.threads == 0);
  CHECK(t.input_size == 0);
  CHECK(t.quantile == 0);
  CHECK(t.clock.empty());
  CHECK(t.mode.empty());
  CHECK(t.backend.empty());
  // Unknown fields stay unknown through a save and load.
  LatencyTable u = parse_latency_table(latency_table_to_json(t), "again.json");
  CHECK(u.batch == 0);
  CHECK(u.clock.empty());
  CHECK(latency_table_to_json(u) == latency_table_to_json(t));

  auto with = [&](const std::string& field) {
    return R"({"format": "spnas-latency-table", "version": 1, )" + field +
           R"(, "fixed_ms": 1.0, "layers": [{"k3_e3": 0.1, "k3_e6": 0.2, "k5_e3": 0.15, "k5_e6": 0.3}]})";
  };
  CHECK_THROWS_WITH(parse_latency_table(with(R"("clock": "gpu")"), "t.json"),
                    doctest::Contains("'t.json': clock must be wall or cpu, got \"gpu\""));
  CHECK_THROWS_WITH(parse_latency_table(with(R"("batch": -1)"), "t.json"), doctest::Contains("'t.json': batch must be"));
  CHECK_THROWS_WITH(parse_latency_table(with(R"("width": "wide")"), "t.json"), doctest::Contains("'t.json': width must be"));
  CHECK_THROWS_WITH(parse_latency_table(with(R"("quantile": 1.5)"), "t.json"), doctest::Contains("'t.json': quantile must be"));
  CHECK_THROWS_WITH(parse_latency_table(with(R"("mode": "train")"), "t.json"), doctest::Contains("'t.json': mode must be"));

  // The paper's CSV knows nothing but the entries.
  LatencyTable csv = parse_latency_table(
      "block,cin,cout,stride,expanded_channels_e6,skip_allowed,ms_k3_e3,ms_k3_e6,ms_k5_e3,ms_k5_e6\n"
      "0,16,24,2,96,no,1,2,3,4\n",
      "pixel1.csv", 19.6);
  TableSettings s;
  s.width = 0.5f;
  s.batch = 64;
  reconcile_with_table(csv, s);
  CHECK(*s.width == 0.5f);
  CHECK(*s.batch == 64);
  CHECK(!s.threads);
}

TEST_CASE("settings reconciled with a table: filled when not given, an error naming both values when they conflict") {
  const LatencyTable t = measured_table();
  TableSettings s;
  s.batch = 1;  // agrees
  reconcile_with_table(t, s);
  CHECK(*s.space == "cifar10");
  CHECK(*s.width == 1.0f);
  CHECK(*s.input_size == 32);
  CHECK(*s.batch == 1);
  CHECK(*s.threads == 1);
  CHECK(*s.quantile == 0.2);
  CHECK(*s.clock == "wall");
  CHECK(*s.backend == "spnas");
  CHECK(*s.training_step == false);

  TableSettings w;
  w.width = 0.5f;
  CHECK_THROWS_WITH(reconcile_with_table(t, w),
                    "--width 0.5 conflicts with the latency table 'lut.json' (measured at width 1.0)");
  CHECK(!w.batch);  // nothing filled after a conflict

  TableSettings many;
  many.threads = 2;
  many.quantile = 0.5;
  many.training_step = true;
  many.space = "mnasnet-imagenet";
  const std::vector<std::string> c = table_conflicts(t, many);
  REQUIRE(c.size() == 4);
  CHECK(c[0] == "--space mnasnet-imagenet conflicts with the latency table 'lut.json' (measured for space 'cifar10')");
  CHECK(c[1] == "--threads 2 conflicts with the latency table 'lut.json' (measured with 1 thread(s))");
  CHECK(c[2] == "--quantile 0.5 conflicts with the latency table 'lut.json' (its entries are the 0.2 quantile)");
  CHECK(c[3] == "--train-step conflicts with the latency table 'lut.json' (measured for inference)");
  try {
    reconcile_with_table(t, many);
    FAIL("no error");
  } catch (const std::exception& e) {
    const std::string m = e.what();
    CHECK(m.find(c[0]) != std::string::npos);
    CHECK(m.find(c[3]) != std::string::npos);
  }

  TableSettings other;
  other.input_size = 40;
  other.batch = 64;
  other.clock = "cpu";
  other.backend = "onednn";
  const std::vector<std::string> d = table_conflicts(t, other);
  REQUIRE(d.size() == 4);
  CHECK(d[0].find("--input-size 40") == 0);
  CHECK(d[1].find("--batch 64") == 0);
  CHECK(d[2].find("--clock cpu") == 0);
  CHECK(d[3].find("--backend onednn") == 0);
}

TEST_CASE("measure_arch_latency: the reference interleaved, the table's predictions, settings that differ") {
  const std::string space_text = R"({"name": "tiny", "input_size": 8, "num_classes": 3, "activation": "relu",
    "stem": {"channels": 8, "kernel": 3, "stride": 1},
    "blocks": [{"type": "searchable", "channels": 8, "repeats": 2, "stride": 1}],
    "head": {"channels": 16, "dropout": 0.0}})";
  const std::string space_path =
      (std::filesystem::temp_directory_path() / ("spnas_test_latency_checks_" + std::to_string(getpid()) + ".json"))
          .string();
  {
    std::ofstream f(space_path);
    f << space_text;
  }
  SearchSpace s = parse_space(space_text, "tiny");
  Arch a = uniform_arch(s, Choice::K3E3);
  a.space = space_path;
  LatencyTable t;
  t.source = "tiny_lut.json";
  t.quantile = 0.2;
  t.clock = "cpu";  // this measurement uses the wall clock: a warning
  t.fixed_ms = 0.05;
  for (int i = 0; i < s.num_searchable(); ++i) {
    LayerCost c;
    c.k3_e3 = 0.01;
    c.k3_e6 = 0.02;
    c.k5_e3 = 0.015;
    c.k5_e6 = 0.03;
    t.layers.push_back(c);
  }
  MeasureOptions o;
  o.warmup = 2;
  o.reps = 10;
  o.min_seconds = 0.01;
  o.max_seconds = 4;
  o.resamples = 200;
  o.quantile = 0.2;
  ArchLatency r = measure_arch_latency(a, o, &t);
  CHECK(r.count >= 5);
  CHECK(r.has_reference);
  CHECK(arch_summary(r.reference_arch) == "5x5-6 5x5-6");
  CHECK(r.reference.count >= 5);
  CHECK(r.ratio.ratio == doctest::Approx(r.ms / r.reference.ms));
  CHECK(r.ratio.lo <= r.ratio.hi);
  CHECK(r.has_table);
  CHECK(r.predicted_ms == doctest::Approx(0.05 + 2 * 0.01));
  CHECK(r.reference_predicted_ms == doctest::Approx(0.05 + 2 * 0.03));
  CHECK(r.error_pct == doctest::Approx((r.ms / r.predicted_ms - 1) * 100));
  CHECK(r.machine_factor == doctest::Approx(r.reference.ms / r.reference_predicted_ms));
  CHECK(r.rescaled_predicted_ms == doctest::Approx(r.predicted_ms * r.machine_factor));
  CHECK(r.rescaled_error_pct == doctest::Approx((r.ratio.ratio / (0.07 / 0.11) - 1) * 100));
  bool clock_warning = false;
  for (const std::string& w : r.warnings) clock_warning |= w.find("--clock wall conflicts") == 0;
  CHECK(clock_warning);
  CHECK(r.load.runs > 0);

  nlohmann::json j = arch_latency_json(a, r, o);
  for (const char* key : {"arch", "batch", "threads", "latency_ms", "quantile", "median_ms", "p10_ms", "p90_ms",
                          "count", "predicted_ms", "reference", "ratio", "machine_factor", "load", "warnings"})
    CHECK_MESSAGE(j.contains(key), key);
  const std::string report = arch_latency_report(r, o);
  CHECK(report.find("warning: --clock wall conflicts") == 0);
  CHECK(report.find("reference (every layer 5x5-6), interleaved") != std::string::npos);

  // A table for another space is refused before anything is timed.
  t.layers.pop_back();
  CHECK_THROWS_WITH(measure_arch_latency(a, o, &t), doctest::Contains("latency table 'tiny_lut.json' has 1 layers"));
  std::remove(space_path.c_str());
}

TEST_CASE("latency backends: one this build lacks is refused saying what it needs; others time inference only") {
  auto error = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
#if SPNAS_HAVE_ONNX && SPNAS_HAVE_OPENCV
  CHECK(error([] { prepare_backend("opencv", false, 1); }).empty());
  CHECK(error([] { prepare_backend("opencv", true, 1); }).find("inference only") != std::string::npos);
#else
  const std::string e = error([] { prepare_backend("opencv", false, 1); });
  CHECK(e.find("not in this build") != std::string::npos);
  CHECK(e.find("libopencv-dnn-dev") != std::string::npos);
#endif
  CHECK(error([] { prepare_backend("tflite", false, 1); }).find("unknown backend 'tflite'") != std::string::npos);
  CHECK(error([] { prepare_backend("spnas", true, 1); }).empty());
}
