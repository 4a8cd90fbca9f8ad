// The latency laboratory (nas/latency/): the table file format, the timed network against ChildNet,
// the profiler, end-to-end measurement, additive prediction, quantiles and Kendall's tau, and the
// NeuralPower-style predictor. What tells a user whether to believe a measurement (the reference
// ratio, load warnings, table settings) is in test_latency_checks.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <unistd.h>

#include "nas/latency/harness.h"
#include "nas/latency/measure.h"
#include "nas/latency/networks.h"
#include "nas/latency/predictor.h"
#include "nas/latency/profile.h"
#include "nas/latency/stats.h"
#include "nas/model.h"
#include "nas/space.h"

using namespace spnas;

namespace {

// A tiny space: 16x16 input, 2 + 2 searchable layers (the second stage strided).
const char* kTinySpace = R"({
  "name": "tiny",
  "input_size": 16,
  "num_classes": 4,
  "activation": "relu",
  "stem": {"channels": 8, "kernel": 3, "stride": 1},
  "blocks": [
    {"type": "fixed", "expansion": 1, "kernel": 3, "channels": 8, "stride": 1},
    {"type": "searchable", "channels": 16, "repeats": 2, "stride": 1},
    {"type": "searchable", "channels": 24, "repeats": 2, "stride": 2},
    {"type": "fixed", "expansion": 6, "kernel": 3, "channels": 32, "stride": 1}
  ],
  "head": {"channels": 64, "dropout": 0.0}
})";

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("spnas_test_latency_" + std::to_string(getpid()) + "_" + name))
      .string();
}

ProfileOptions quick_options() {
  ProfileOptions o;
  o.batch = 4;
  o.threads = 1;
  o.warmup = 3;
  o.reps = 15;
  o.min_seconds = 0.02;
  o.max_seconds = 4;  // a busy machine: fall back to every run rather than wait
  o.context_rounds = 1;
  return o;
}

// One architecture at a time: the interleaved reference has its own tests (test_latency_checks.cpp).
MeasureOptions quick_measure_options() {
  MeasureOptions o;
  o.batch = 4;
  o.warmup = 3;
  o.reps = 15;
  o.min_seconds = 0.02;
  o.max_seconds = 4;
  o.reference = false;
  return o;
}

}  // namespace

TEST_CASE("latency table JSON round trip keeps every field") {
  LatencyTable t;
  t.space = "cifar10";
  t.width = 0.75f;
  t.input_size = 40;
  t.batch = 64;
  t.threads = 2;
  t.cpu = "Some CPU @ 2GHz";
  t.isa = "avx512";
  t.mode = "training";
  t.backend = "spnas";
  t.clock = "cpu";
  t.fixed_ms = 1.25;
  t.fixed_spread = 0.03;
  t.quantile = 0.2;
  t.fixed_calibration_ms = 0.04;
  t.candidate_calibration_ms[0] = -0.015;
  t.candidate_calibration_ms[3] = 0.002;
  for (int i = 0; i < 3; ++i) {
    LayerCost c;
    c.k3_e3 = 0.1 + i;
    c.k3_e6 = 0.2 + i;
    c.k5_e3 = 0.15 + i;
    c.k5_e6 = 0.3 + i;
    c.se = i == 1 ? 0.05 : 0.0;
    c.cin = 16 * (i + 1);
    c.cout = 24 * (i + 1);
    c.stride = i == 2 ? 2 : 1;
    c.skip_allowed = i == 1;
    c.spread = 0.01 * i;
    c.count = 50 + i;
    t.layers.push_back(c);
  }
  std::string path = temp_path("table.json");
  save_latency_table(path, t);
  LatencyTable u = load_latency_table(path);
  std::remove(path.c_str());
  CHECK(u.space == t.space);
  CHECK(u.width == doctest::Approx(t.width));
  CHECK(u.input_size == t.input_size);
  CHECK(u.batch == t.batch);
  CHECK(u.threads == t.threads);
  CHECK(u.cpu == t.cpu);
  CHECK(u.isa == t.isa);
  CHECK(u.mode == t.mode);
  CHECK(u.backend == t.backend);
  CHECK(u.clock == t.clock);
  CHECK(u.fixed_ms == doctest::Approx(t.fixed_ms));
  CHECK(u.fixed_spread == doctest::Approx(t.fixed_spread));
  CHECK(u.quantile == doctest::Approx(t.quantile));
  CHECK(u.fixed_calibration_ms == doctest::Approx(t.fixed_calibration_ms));
  for (int k = 0; k < 4; ++k) CHECK(u.candidate_calibration_ms[k] == doctest::Approx(t.candidate_calibration_ms[k]));
  REQUIRE(u.layers.size() == t.layers.size());
  for (size_t i = 0; i < t.layers.size(); ++i) {
    const LayerCost &a = t.layers[i], &b = u.layers[i];
    CHECK(a.k3_e3 == doctest::Approx(b.k3_e3));
    CHECK(a.k3_e6 == doctest::Approx(b.k3_e6));
    CHECK(a.k5_e3 == doctest::Approx(b.k5_e3));
    CHECK(a.k5_e6 == doctest::Approx(b.k5_e6));
    CHECK(a.se == doctest::Approx(b.se));
    CHECK(a.cin == b.cin);
    CHECK(a.cout == b.cout);
    CHECK(a.stride == b.stride);
    CHECK(a.skip_allowed == b.skip_allowed);
    CHECK(a.spread == doctest::Approx(b.spread));
    CHECK(a.count == b.count);
  }
  // The text itself is a fixed point.
  CHECK(latency_table_to_json(u) == latency_table_to_json(t));
  // A malformed calibration field is refused, naming the table and the field.
  std::string text = latency_table_to_json(t);
  const size_t at = text.find("\"candidate_calibration_ms\"");
  REQUIRE(at != std::string::npos);
  std::string bad = text.substr(0, at) + "\"candidate_calibration_ms\": [1, 2], \"x_ignored\"" +
                    text.substr(at + std::string("\"candidate_calibration_ms\"").size());
  CHECK_THROWS_WITH(parse_latency_table(bad, "bad_table.json"),
                    doctest::Contains("'bad_table.json': \"candidate_calibration_ms\""));
}

TEST_CASE("additive prediction of a decoded architecture is the fixed cost plus its entries") {
  SearchSpace s = parse_space(kTinySpace, "tiny");
  LatencyTable t;
  t.fixed_ms = 0.5;
  for (int i = 0; i < s.num_searchable(); ++i) {
    LayerCost c;
    c.k3_e3 = 1 + 10 * i;
    c.k3_e6 = 2 + 10 * i;
    c.k5_e3 = 3 + 10 * i;
    c.k5_e6 = 4 + 10 * i;
    c.se = 0.25;
    t.layers.push_back(c);
  }
  check_table_matches(t, s);
  // Layers 0 and 2 start a stage (no skip); 1 and 3 may be skipped.
  Arch a = parse_arch(R"({"space": "tiny", "layers": ["5x5-6", "skip", "3x3-6", "5x5-3"],
                         "se": [true, true, false, true]})",
                      "arch");
  validate_arch(a, s, "arch");
  double expect = 0.5 + (4 + 0.25) + 0 + 22 + (33 + 0.25);
  CHECK(predict_runtime(t, a) == doctest::Approx(expect));
  a.se.clear();
  CHECK(predict_runtime(t, a) == doctest::Approx(0.5 + 4 + 22 + 33));
}

TEST_CASE("the timed network is ChildNet: same weights, same outputs, pieces that add up to the run") {
  SearchSpace s = parse_space(kTinySpace, "tiny");
  std::string space_path = temp_path("tiny_space_timed.json");
  {
    std::ofstream f(space_path);
    f << kTinySpace;
  }
  Arch a = parse_arch(R"({"space": "x", "layers": ["5x5-6", "skip", "3x3-3", "5x5-3"],
                         "se": [false, false, true, false]})",
                      "arch");
  a.space = space_path;
  NetConfig cfg;
  cfg.seed = 9;
  ChildNet child(a, cfg);
  TimedNet timed(s, a.layers, a.se, 9);
  std::remove(space_path.c_str());
  REQUIRE(timed.params().params().size() == child.params().params().size());
  for (size_t i = 0; i < child.params().params().size(); ++i) {
    const Param &p = child.params().params()[i], &q = timed.params().params()[i];
    CHECK(p.name == q.name);
    REQUIRE(p.var->value.numel() == q.var->value.numel());
    CHECK(std::equal(p.var->value.data(), p.var->value.data() + p.var->value.numel(), q.var->value.data()));
  }
  // The skipped layer (space layer 2; layer 0 is the fixed layer after the stem) has no piece.
  CHECK(timed.layer_piece() == std::vector<int>{1, 2, -1, 3, 4, 5});
  CHECK(timed.num_pieces() == 7);

  Var images = constant(random_images(3, 16, 5));
  std::vector<int> labels = make_labels(3, 4);
  ForwardOptions fo;
  fo.training = false;
  Tensor expect, got;
  {
    NoGrad ng;
    expect = child.forward(images, fo)->value;
    got = timed.forward(images, fo)->value;
  }
  REQUIRE(got.numel() == expect.numel());
  CHECK(std::equal(got.data(), got.data() + got.numel(), expect.data()));

  // A run's pieces add up to its total, inference and training step alike.
  Rng rng(3);
  std::vector<double> piece(size_t(timed.num_pieces()));
  for (bool training : {false, true}) {
    const double total = timed.run(images, labels, training, rng, piece.data());
    double sum = 0;
    for (double p : piece) {
      CHECK(p >= 0);
      sum += p;
    }
    CHECK(sum == doctest::Approx(total).epsilon(1e-9));
  }
}

TEST_CASE("profiler on a tiny space: positive, monotone entries, metadata, samples; end-to-end measurement") {
  SearchSpace s = parse_space(kTinySpace, "tiny");
  ProfileOptions o = quick_options();
  std::vector<std::string> messages;
  o.progress = [&](const std::string& m) { messages.push_back(m); };
  ProfileResult r = profile_space_full(s, o);
  const LatencyTable& t = r.table;
  CHECK(!messages.empty());
  CHECK(t.batch == 4);
  CHECK(t.threads == 1);
  CHECK(t.mode == "inference");
  CHECK(t.backend == "spnas");
  CHECK(!t.cpu.empty());
  CHECK(!t.isa.empty());
  CHECK(t.fixed_ms > 0);
  CHECK(t.quantile == 0.5);
  CHECK(t.fixed_ms - t.fixed_calibration_ms > 0);  // the stem, fixed layers and head themselves
  // One context round (5 networks) is too few for the per-candidate calibration: only the constant.
  for (double c : t.candidate_calibration_ms) CHECK(c == 0.0);
  CHECK(std::isfinite(t.fixed_calibration_ms));
  REQUIRE(t.layers.size() == 4);
  check_table_matches(t, s);
  double k3 = 0, k5 = 0, e3 = 0, e6 = 0;
  for (const LayerCost& c : t.layers) {
    CHECK(c.k3_e3 > 0);
    CHECK(c.k3_e6 > 0);
    CHECK(c.k5_e3 > 0);
    CHECK(c.k5_e6 > 0);
    CHECK(c.count >= 5);
    // Within noise (a shared machine): a bigger candidate is not clearly faster than a smaller one.
    const double tol = 0.75;
    CHECK(c.k5_e3 >= tol * c.k3_e3);
    CHECK(c.k5_e6 >= tol * c.k3_e6);
    CHECK(c.k3_e6 >= tol * c.k3_e3);
    CHECK(c.k5_e6 >= tol * c.k5_e3);
    k3 += c.k3_e3 + c.k3_e6;
    k5 += c.k5_e3 + c.k5_e6;
    e3 += c.k3_e3 + c.k5_e3;
    e6 += c.k3_e6 + c.k5_e6;
  }
  CHECK(k5 > 0.95 * k3);
  CHECK(e6 > e3);  // twice the work in every 1x1 and depthwise convolution
  // Samples: 4 layers x 4 candidates, the stem, 2 fixed layers, the head.
  CHECK(r.samples.size() == 16 + 1 + 2 + 1);
  for (const PieceSample& p : r.samples) CHECK(p.ms > 0);
  // An entry is its piece's statistic (the calibration's per-candidate terms are 0 here), and the
  // samples say which piece each is.
  for (size_t l = 0; l < t.layers.size(); ++l)
    for (int k = 0; k < 4; ++k) {
      const PieceSample& p = r.samples[4 * l + size_t(k)];
      const Choice c = Choice(k);
      CHECK(p.kind == "mbconv");
      CHECK(p.cin == t.layers[l].cin);
      CHECK(p.kernel == choice_kernel(c));
      CHECK(p.expansion == choice_expansion(c));
      CHECK(p.ms == t.layers[l].cost(c));
    }
  CHECK(r.samples[16].kind == "stem");
  CHECK(r.samples.back().kind == "head");
  // The table round-trips through the file format.
  LatencyTable u = parse_latency_table(latency_table_to_json(t), "mem");
  CHECK(u.layers[2].k5_e6 == doctest::Approx(t.layers[2].k5_e6));

  // End to end: a ChildNet of the tiny space (loaded from a file, as a user's space would be).
  std::string space_path = temp_path("tiny_space.json");
  {
    std::ofstream f(space_path);
    f << kTinySpace;
  }
  Arch a = uniform_arch(s, Choice::K5E6);
  a.space = space_path;
  MeasureOptions mo = quick_measure_options();
  LatencyMeasurement m = measure_arch_latency(a, mo);
  CHECK(m.count >= 5);
  CHECK(m.median_ms > 0);
  CHECK(m.p10_ms <= m.median_ms);
  CHECK(m.median_ms <= m.p90_ms);
  CHECK(m.ms == m.median_ms);  // the default statistic is the median
  mo.quantile = 0.2;
  LatencyMeasurement low = measure_arch_latency(a, mo);
  CHECK(low.p10_ms <= low.ms);
  CHECK(low.ms <= low.median_ms);
  mo.quantile = 0.5;
  // The additive model is built to match the whole network; allow for a noisy machine.
  double pred = predict_runtime(t, a);
  CHECK(pred > 0.5 * m.median_ms);
  CHECK(pred < 2.0 * m.median_ms);

  // A training step costs more than inference; SE adds a cost.
  o.training_step = true;
  o.search_se = true;
  o.progress = nullptr;
  ProfileResult tr = profile_space_full(s, o);
  CHECK(tr.table.mode == "training");
  CHECK(tr.table.fixed_ms > 0);
  double inf_sum = 0, train_sum = 0;
  for (size_t i = 0; i < t.layers.size(); ++i) {
    inf_sum += t.layers[i].k5_e6;
    train_sum += tr.table.layers[i].k5_e6;
    CHECK(tr.table.layers[i].se >= 0);
  }
  CHECK(train_sum > inf_sum);
  CHECK(tr.samples.size() == 32 + 1 + 2 + 1);
  mo.training_step = true;
  CHECK(measure_arch_latency(a, mo).median_ms > 0);
  std::remove(space_path.c_str());

  // Three rounds (15 networks): every candidate gets a finite per-layer term, and no calibration
  // leaves both kinds at 0.
  {
    ProfileOptions o3 = quick_options();
    o3.context_rounds = 3;
    o3.reps = 8;
    LatencyTable c3 = profile_space_full(s, o3).table;
    for (double c : c3.candidate_calibration_ms) CHECK(std::isfinite(c));
    CHECK(c3.fixed_ms > 0);
    o3.calibrate = false;
    o3.context_rounds = 1;
    LatencyTable raw = profile_space_full(s, o3).table;
    CHECK(raw.fixed_calibration_ms == 0.0);
    for (double c : raw.candidate_calibration_ms) CHECK(c == 0.0);
  }

  // A quantile outside (0, 1) is refused, naming the option.
  for (double q : {0.0, 1.0, -0.5}) {
    ProfileOptions bad = quick_options();
    bad.quantile = q;
    CHECK_THROWS_WITH(profile_space_full(s, bad), doctest::Contains("quantile"));
    mo.quantile = q;
    CHECK_THROWS_WITH(measure_arch_latency(a, mo), doctest::Contains("quantile"));
  }
  mo.quantile = 0.5;

  o.backend = "onednn";
  CHECK_THROWS(profile_space_full(s, o));  // training step: inference only
  o.backend = "no-such-backend";
  o.training_step = false;
  o.search_se = false;
  CHECK_THROWS(profile_space_full(s, o));
}

#ifdef SPNAS_HAVE_DNNL
// The "Cpus_allowed_list" of a /proc/.../status file ("" if unreadable).
static std::string cpu_mask_of(const std::string& status_path) {
  std::ifstream f(status_path);
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("Cpus_allowed_list:", 0) == 0) {
      const size_t b = line.find_first_not_of(" \t", 18);
      return b == std::string::npos ? "" : line.substr(b);
    }
  return "";
}

TEST_CASE("oneDNN inference backend: positive entries, end-to-end measurement") {
  SearchSpace s = parse_space(kTinySpace, "tiny");
  ProfileOptions o = quick_options();
  o.backend = "onednn";
  ProfileResult r = profile_space_full(s, o);
  CHECK(r.table.backend == "onednn");
  CHECK(r.table.fixed_ms > 0);
  REQUIRE(r.table.layers.size() == 4);
  double e3 = 0, e6 = 0;
  for (const LayerCost& c : r.table.layers) {
    CHECK(c.k3_e3 > 0);
    CHECK(c.k5_e6 > 0);
    e3 += c.k3_e3 + c.k5_e3;
    e6 += c.k3_e6 + c.k5_e6;
  }
  CHECK(e6 > e3);
  std::string space_path = temp_path("tiny_space_dnnl.json");
  {
    std::ofstream f(space_path);
    f << kTinySpace;
  }
  Arch a = parse_arch(R"({"space": "x", "layers": ["5x5-6", "skip", "3x3-6", "5x5-3"]})", "arch");
  a.space = space_path;
  MeasureOptions mo = quick_measure_options();
  mo.backend = "onednn";
  LatencyMeasurement m = measure_arch_latency(a, mo);
  CHECK(m.median_ms > 0);
  CHECK(m.count >= 5);
  if (std::thread::hardware_concurrency() >= 2) {
    // Two threads: no two threads of this process may be confined to the same single CPU. oneDNN's
    // OpenMP threads inherit the mask of the thread that creates them; when the timer pinned the
    // caller to CPU 0 they all sat on CPU 0, spin-waiting on each other at every barrier (hundreds
    // of times the 1-thread time). Checked on the masks, not on times, which other load moves too.
    mo.threads = 2;
    LatencyMeasurement m2 = measure_arch_latency(a, mo);
    CHECK(m2.count >= 5);
    std::map<std::string, int> confined;  // single-CPU mask -> threads
    for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
      const std::string mask = cpu_mask_of((t.path() / "status").string());
      if (!mask.empty() && mask.find_first_of("-,") == std::string::npos) ++confined[mask];
    }
    for (const auto& [cpu, n] : confined) {
      INFO("threads allowed only on CPU ", cpu, ": ", n);
      CHECK(n == 1);
    }
    mo.threads = 1;
  }
  std::remove(space_path.c_str());
  a.se = {true, false, false, false};
  CHECK_THROWS(measure_arch_latency(a, mo));  // SE is not implemented with oneDNN
}
#endif

TEST_CASE("Kendall tau and quantiles") {
  CHECK(kendall_tau({1, 2, 3, 4}, {10, 20, 30, 40}) == doctest::Approx(1.0));
  CHECK(kendall_tau({1, 2, 3, 4}, {4, 3, 2, 1}) == doctest::Approx(-1.0));
  CHECK(kendall_tau({1, 2, 3}, {1, 3, 2}) == doctest::Approx(1.0 / 3.0));
  CHECK(quantile({3, 1, 2}, 0.5) == doctest::Approx(2.0));
  CHECK(quantile({1, 2, 3, 4, 5}, 0.1) == doctest::Approx(1.4));
}

TEST_CASE("stepwise selection and weighted least squares recover a known polynomial exactly") {
  // Synthetic MBConv pieces over a grid of configurations, timed by a known sparse polynomial of the
  // predictor's own terms.
  const std::vector<std::string> names = predictor_feature_names("mbconv");
  auto idx = [&](const std::string& n) {
    auto it = std::find(names.begin(), names.end(), n);
    REQUIRE(it != names.end());
    return int(it - names.begin());
  };
  const std::vector<std::pair<std::string, double>> truth = {
      {"1", 0.02}, {"Po*k2*hid", 3e-8}, {"Pi*cin*hid*ex", 2e-9}, {"Po*hid*cout", 1.5e-9}, {"p:cout*cout", 0.004}};
  auto time_of = [&](const PieceSample& s) {
    std::vector<double> f = predictor_features(s);
    double t = 0;
    for (auto& [n, c] : truth) t += c * f[idx(n)];
    return t;
  };
  std::vector<PieceSample> train, test;
  int n = 0;
  for (int cin : {16, 24, 40, 80})
    for (int cout : {24, 40, 96})
      for (int size : {4, 8, 16, 32})
        for (int k : {3, 5})
          for (int e : {3, 6})
            for (int stride : {1, 2}) {
              PieceSample s;
              s.kind = "mbconv";
              s.cin = cin;
              s.cout = cout;
              s.in_size = size;
              s.kernel = k;
              s.expansion = e;
              s.stride = stride;
              s.residual = stride == 1 && cin == cout;
              s.batch = 1;
              s.ms = time_of(s);
              (++n % 5 == 0 ? test : train).push_back(s);
            }
  PredictorOptions po;
  po.terms = "all";  // the truth uses a generic polynomial term
  LatencyPredictor p = LatencyPredictor::fit(train, po);
  const LatencyPredictor::Model& M = p.model("mbconv");
  CHECK(M.terms.size() == truth.size());
  for (auto& [name, c] : truth) {
    auto it = std::find(M.terms.begin(), M.terms.end(), name);
    REQUIRE_MESSAGE(it != M.terms.end(), "term " << name << " not selected: " << p.describe());
    CHECK(M.coef[it - M.terms.begin()] == doctest::Approx(c).epsilon(1e-6));
  }
  PredictionError e = evaluate_predictor(p, test);
  CHECK(e.count == int(test.size()));
  CHECK(e.max_ape < 1e-6);

  // Saved and loaded, the predictor gives the same predictions.
  LatencyPredictor q = LatencyPredictor::from_json(p.to_json(), "mem");
  for (const PieceSample& s : test) CHECK(q.predict(s) == doctest::Approx(p.predict(s)).epsilon(1e-12));

  // Plain weighted least squares on a hand-made system.
  std::vector<std::vector<double>> X = {{1, 1, 1, 1}, {0, 1, 2, 3}, {0, 1, 4, 9}};
  std::vector<double> y = {1, 3, 9, 19}, w = {1, 2, 1, 0.5};  // y = 1 + 0 x + 2 x^2
  std::vector<double> c = weighted_lstsq(X, {0, 1, 2}, y, w);
  CHECK(c[0] == doctest::Approx(1.0));
  CHECK(std::fabs(c[1]) < 1e-9);
  CHECK(c[2] == doctest::Approx(2.0));
  std::vector<int> path = stepwise_path(X, y, w, 3);
  CHECK(path.size() == 2);  // exact after {x^2, 1}
}

TEST_CASE("predicted table for an unprofiled width: shape, metadata, fixed cost from the pieces") {
  // Train on exact synthetic times of the tiny space at two widths; predict a third.
  auto synth = [](PieceSample s) {
    std::vector<double> f = predictor_features(s);
    double t = 0.01;
    if (s.kind == "mbconv") t += 1e-7 * f[5] + 1e-8 * f[4] + 1e-8 * f[7];
    else t += 1e-7 * f[1];
    s.ms = t;
    return s;
  };
  std::vector<PieceSample> train;
  for (float w : {0.5f, 1.0f, 1.5f}) {
    SpaceOptions so;
    so.width = w;
    for (const PieceSample& s : space_pieces(parse_space(kTinySpace, "tiny", so), 2, true)) train.push_back(synth(s));
  }
  LatencyPredictor p = LatencyPredictor::fit(train);
  SpaceOptions so;
  so.width = 0.75f;
  SearchSpace s = parse_space(kTinySpace, "tiny", so);
  LatencyTable t = predict_table(p, s, 2, true);
  check_table_matches(t, s);
  CHECK(t.source == "predicted");
  CHECK(t.batch == 2);
  double fixed = 0;
  std::vector<PieceSample> pieces = space_pieces(s, 2, false);
  for (size_t i = size_t(s.num_searchable()) * 4; i < pieces.size(); ++i) fixed += synth(pieces[i]).ms;
  CHECK(pieces.size() == size_t(s.num_searchable()) * 4 + 4);  // + stem, 2 fixed layers, head
  CHECK(t.fixed_ms == doctest::Approx(fixed).epsilon(1e-3));
  for (const LayerCost& c : t.layers) {
    CHECK(c.k5_e6 > c.k3_e3);
    CHECK(c.se >= 0);
  }
  // Piece samples survive their file format.
  std::string path = temp_path("samples.json");
  save_piece_samples(path, train);
  std::vector<PieceSample> back = load_piece_samples(path);
  std::remove(path.c_str());
  REQUIRE(back.size() == train.size());
  CHECK(back[3].kind == train[3].kind);
  CHECK(back[3].ms == doctest::Approx(train[3].ms));
  CHECK(back.back().classes == train.back().classes);
}
