// The random baseline: uniform sampling (chi-square), the latency window, RI and its bootstrap on
// hand-made results, the table / JSON / plot, resume of `compare`, and the process pool.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "engine/checkpoint.h"
#include "engine/process.h"
#include "nas/baseline/compare.h"
#include "nas/baseline/sampling.h"
#include "nas/model.h"
#include "nas/run.h"
#include "nas_fixtures.h"

using namespace spnas;
namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The tiny space with the synthetic set's 10 classes, so its architectures train on it.
SearchSpace tiny_space_10() {
  SpaceOptions so;
  so.num_classes = 10;
  return load_space(tiny_space_file(), so);
}

}  // namespace

TEST_CASE("uniform sampling: every layer uniform over the choices it allows (chi-square)") {
  const SearchSpace space = load_space("cifar10");
  const std::vector<int> idx = space.searchable_indices();
  const int draws = 20000;
  std::vector<std::map<Choice, int>> counts(idx.size());
  Rng rng(7);
  for (int d = 0; d < draws; ++d) {
    const Arch a = sample_uniform_arch(space, rng);
    REQUIRE(a.layers.size() == idx.size());
    for (size_t l = 0; l < idx.size(); ++l) ++counts[l][a.layers[l]];
  }
  int skippable = 0;
  for (size_t l = 0; l < idx.size(); ++l) {
    const bool skip = space.layers[idx[l]].skip_allowed;
    skippable += skip;
    const std::vector<Choice> allowed = allowed_choices(space.layers[idx[l]]);
    CHECK(allowed.size() == (skip ? 5u : 4u));
    // Skip appears exactly where the space allows it.
    CHECK((counts[l].count(Choice::Skip) > 0) == skip);
    const double expected = double(draws) / double(allowed.size());
    double chi2 = 0;
    for (Choice c : allowed) {
      const double o = counts[l][c];
      chi2 += (o - expected) * (o - expected) / expected;
    }
    // Critical values at p = 1e-4 for 3 and 4 degrees of freedom: a uniform sampler fails one of
    // the 20 layers with probability < 0.2 % (for any seed); a choice drawn with probability 0.30
    // instead of 0.25 gives chi2 ~ 270 at 20,000 draws.
    const double critical = allowed.size() == 4 ? 21.11 : 23.51;
    INFO("layer ", l, " chi2 ", chi2);
    CHECK(chi2 < critical);
  }
  CHECK(skippable > 0);
  CHECK(skippable < int(idx.size()));
}

TEST_CASE("uniform sampling catches a biased sampler (the chi-square test has power)") {
  // The same statistic on draws where 5x5-6 is favoured 0.30 : 0.233 : 0.233 : 0.233.
  Rng rng(3);
  const int draws = 20000;
  std::map<int, int> counts;
  for (int d = 0; d < draws; ++d) ++counts[rng.uniform() < 0.30f ? 3 : int(rng.below(3))];
  double chi2 = 0;
  for (int c = 0; c < 4; ++c) chi2 += (counts[c] - draws / 4.0) * (counts[c] - draws / 4.0) / (draws / 4.0);
  CHECK(chi2 > 21.11);
}

TEST_CASE("latency-matched sampling: every kept draw in the window; clear errors outside the space's range") {
  const SearchSpace space = load_space(tiny_space_file());
  const LatencyTable table = tiny_table(space);
  const RuntimeBounds range = table_runtime_bounds(table, space);
  // fixed 2 + layer 0 (no skip) 1 + layer 1 skip 0 + layer 2 (no skip) 3 + layer 3 skip 0; dearest: 3+4+5+6.
  CHECK(range.min_ms == doctest::Approx(6.0));
  CHECK(range.max_ms == doctest::Approx(20.0));

  SampleConfig cfg;
  cfg.count = 25;
  cfg.seed = 11;
  cfg.target_ms = 12.0;
  cfg.window = 0.05;
  const SampleResult r = sample_architectures(space, &table, cfg);
  REQUIRE(r.archs.size() == 25u);
  CHECK(r.draws > 25);
  for (const SampledArch& s : r.archs) {
    CHECK(s.runtime_ms == doctest::Approx(predict_runtime(table, s.arch)));
    CHECK(s.runtime_ms >= 12.0 * 0.95);
    CHECK(s.runtime_ms <= 12.0 * 1.05);
    CHECK(s.params > 0);
    CHECK(s.macs > 0);
  }
  // Without a target nothing is rejected.
  SampleConfig plain = cfg;
  plain.target_ms = 0;
  CHECK(sample_architectures(space, &table, plain).draws == 25);

  SampleConfig out = cfg;
  out.target_ms = 30.0;
  CHECK_THROWS_WITH_AS(sample_architectures(space, &table, out), doctest::Contains("spans 6.000 .. 20.000 ms"),
                       std::runtime_error);
  SampleConfig capped = cfg;
  capped.window = 0.001;
  capped.target_ms = 19.99;  // reachable by the dearest architecture only (1 in 5^2 * 4^2 draws)
  capped.max_draws = 50;
  CHECK_THROWS_WITH_AS(sample_architectures(space, &table, capped), doctest::Contains("after 50 draws"),
                       std::runtime_error);
  SampleConfig no_table = cfg;
  CHECK_THROWS_WITH_AS(sample_architectures(space, nullptr, no_table), doctest::Contains("needs a latency table"),
                       std::runtime_error);
}

TEST_CASE("random architectures are written as loadable files with a summary") {
  const SearchSpace space = tiny_space_10();
  const LatencyTable table = tiny_table(space);
  SampleConfig cfg;
  cfg.count = 3;
  cfg.seed = 5;
  const SampleResult r = sample_architectures(space, &table, cfg);
  const std::vector<std::string> files = write_samples("baseline_samples", r, cfg, "tiny_table.json");
  REQUIRE(files.size() == 3u);
  for (size_t i = 0; i < files.size(); ++i) {
    const Arch a = load_arch(files[i]);
    CHECK(a.layers == r.archs[i].arch.layers);
    validate_arch(a, space, files[i]);
  }
  const nlohmann::json j = nlohmann::json::parse(slurp("baseline_samples/summary.json"));
  CHECK(j["count"] == 3);
  CHECK(j["table"] == "tiny_table.json");
  CHECK(j["architectures"].size() == 3u);
  CHECK(j["architectures"][1]["runtime_ms"].get<double>() == doctest::Approx(r.archs[1].runtime_ms));
  const std::string table_text = samples_table(r, true);
  CHECK(table_text.find("random_002.json") != std::string::npos);
  CHECK(table_text.find(arch_summary(r.archs[2].arch)) != std::string::npos);
}

TEST_CASE("RI: point value and bootstrap spread against values worked out by hand") {
  // Searched 0.80, 0.82 -> 0.81; random architectures 0.71 and 0.74 -> 0.725; RI = 100 * 0.085 / 0.725.
  const Improvement a = relative_improvement({0.80, 0.82}, {{0.70, 0.72}, {0.74, 0.74}}, 2000);
  CHECK(a.ri == doctest::Approx(100 * 0.085 / 0.725));
  CHECK(a.random_below == 2);
  CHECK(a.std > 0);
  CHECK(a.lo < a.ri);
  CHECK(a.hi > a.ri);

  // No variation anywhere: no spread.
  const Improvement flat = relative_improvement({0.6, 0.6}, {{0.5, 0.5}, {0.5, 0.5}}, 500);
  CHECK(flat.ri == doctest::Approx(20.0));
  CHECK(flat.std == 0.0);
  CHECK(flat.lo == doctest::Approx(20.0));
  CHECK(flat.hi == doctest::Approx(20.0));

  // Seeds of the searched architecture resampled: mean of 2 draws from {0.8, 0.9} is 0.8, 0.85, 0.9
  // with probability 1/4, 1/2, 1/4: std 0.035355; RI against 0.5 has std 100 * 0.035355 / 0.5.
  const Improvement seeds = relative_improvement({0.8, 0.9}, {{0.5}}, 200000);
  CHECK(seeds.std == doctest::Approx(7.0711).epsilon(0.02));

  // Random architectures resampled: the random mean of 2 draws from {0.5, 0.7} is 0.5, 0.6, 0.7
  // (1/4, 1/2, 1/4), so RI = 100 (0.6 - m) / m is 20, 0, -14.286: std 12.206.
  const Improvement archs = relative_improvement({0.6}, {{0.5}, {0.7}}, 200000);
  CHECK(archs.ri == doctest::Approx(0.0));
  CHECK(archs.std == doctest::Approx(12.206).epsilon(0.02));
  CHECK(archs.random_below == 1);

  // A random architecture that scored 0: replicates drawing only it have no ratio (1 in 4) and are
  // left out and counted; a random set at 0 has no RI at all.
  const Improvement zero = relative_improvement({0.6}, {{0.0}, {0.5}}, 20000);
  CHECK(zero.ri == doctest::Approx(140.0));
  CHECK(zero.undefined_replicates > 4000);
  CHECK(zero.undefined_replicates < 6000);
  CHECK(std::isfinite(zero.std));
  const Improvement none = relative_improvement({0.6}, {{0.0}, {0.0}}, 100);
  CHECK(std::isnan(none.ri));
  CHECK(std::isnan(none.std));
}

TEST_CASE("summary, table, JSON and plot of hand-made results; validation and test never mixed") {
  CompareReport rep;
  auto arch_rec = [](const std::string& name, bool random, double R, std::vector<std::pair<double, double>> runs) {
    ArchRecord a;
    a.name = name;
    a.random = random;
    a.runtime_ms = R;
    a.params = 1234567;
    a.macs = 45600000;
    a.arch.layers = {Choice::K3E3, Choice::Skip};
    int seed = 1;
    for (auto [val, test] : runs) {
      RunRecord r;
      r.seed = seed++;
      r.done = val >= 0;
      r.val_accuracy = val;
      r.test_accuracy = test;
      a.runs.push_back(r);
    }
    return a;
  };
  // Validation accuracies differ from test ones so that a mix-up changes every figure below.
  rep.archs.push_back(arch_rec("arch_1", false, 3.1, {{0.90, 0.80}, {0.92, 0.82}}));
  rep.archs.push_back(arch_rec("random_000", true, 3.0, {{0.60, 0.70}, {0.62, 0.72}}));
  rep.archs.push_back(arch_rec("random_001", true, 3.2, {{0.64, 0.74}, {-1, 0}}));  // second run not finished
  rep.target_ms = 3.15;
  summarize(rep, 1000);
  CHECK(rep.finished_runs == 5);
  CHECK(rep.total_runs == 6);
  CHECK(rep.archs[0].test.mean == doctest::Approx(0.81));
  CHECK(rep.archs[0].test.std == doctest::Approx(0.0141421).epsilon(1e-4));
  CHECK(rep.archs[2].val.n == 1);
  // Random set: means of the architectures' means (test: 0.71, 0.74; validation: 0.61, 0.64).
  CHECK(rep.random_test.mean == doctest::Approx(0.725));
  CHECK(rep.random_val.mean == doctest::Approx(0.625));
  REQUIRE(rep.searched.size() == 1u);
  CHECK(rep.searched[0].test.ri == doctest::Approx(100 * (0.81 - 0.725) / 0.725));
  CHECK(rep.searched[0].val.ri == doctest::Approx(100 * (0.91 - 0.625) / 0.625));

  const std::string table = compare_table(rep);
  INFO(table);
  CHECK(table.find("81.00 +- 1.41") != std::string::npos);  // arch_1 test
  CHECK(table.find("91.00 +- 1.41") != std::string::npos);  // arch_1 validation
  CHECK(table.find("random set (2 architectures") != std::string::npos);
  CHECK(table.find("RI (test) = +11.72 %") != std::string::npos);
  CHECK(table.find("RI (val) = +45.60 %") != std::string::npos);
  CHECK(table.find("above 2 of 2 random architectures") != std::string::npos);
  CHECK(table.find("5 of 6 trainings finished") != std::string::npos);
  CHECK(table.find("1/2") != std::string::npos);  // random_001's seeds done

  CompareConfig cfg;
  const nlohmann::json j = compare_json(rep, cfg);
  CHECK(j["architectures"].size() == 3u);
  CHECK(j["random_set"]["test_accuracy"]["mean"].get<double>() == doctest::Approx(0.725));
  CHECK(j["relative_improvement"]["searched"][0]["test"]["ri_percent"].get<double>() ==
        doctest::Approx(100 * 0.085 / 0.725));
  CHECK(j["relative_improvement"]["replicates"] == 1000);

  write_compare_svg("baseline_plot.svg", rep, "test <plot>");
  const std::string svg = slurp("baseline_plot.svg");
  CHECK(svg.find("test &lt;plot&gt;") != std::string::npos);
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t p = svg.find(what); p != std::string::npos; p = svg.find(what, p + 1)) ++n;
    return n;
  };
  CHECK(count("<circle") == 3u);  // two random architectures and the legend's
  CHECK(svg.find("target 3.150 ms") != std::string::npos);
  CHECK(svg.find("predicted runtime R (ms") != std::string::npos);
  CHECK(svg.find(">3.1</text>") != std::string::npos);  // an R tick (steps of 0.1 ms)
  CHECK(svg.find("</svg>") != std::string::npos);
}

TEST_CASE("compare trains every (architecture, seed) once: a rerun skips finished runs, an interrupted one resumes") {
  for (const char* dir : {"baseline_random", "baseline_cmp_a", "baseline_cmp_b", "baseline_cmp_c"}) fs::remove_all(dir);
  const SearchSpace space = tiny_space_10();
  save_latency_table("baseline_tiny_table.json", tiny_table(space));
  SampleConfig sc;
  sc.count = 2;
  sc.seed = 9;
  write_samples("baseline_random", sample_architectures(space, nullptr, sc), sc, "baseline_tiny_table.json");
  Arch searched = uniform_arch(space, Choice::K3E3);
  searched.input_size = 16;
  searched.num_classes = 10;
  save_arch("baseline_searched.json", searched);

  auto config = [&](const std::string& out) {
    CompareConfig c;
    c.arch_paths = {"baseline_searched.json"};
    c.random_dir = "baseline_random";  // its summary.json names the table
    c.seeds = 2;
    c.val_fraction = 0.2;
    c.out_dir = out;
    c.quiet = true;
    c.bootstrap = 200;
    c.train.data = parse_data_spec("synthetic:train=160,test=64,seed=4");
    c.train.batch = 16;
    c.train.epochs = 1;
    c.train.ema_decay = 0.9f;
    return c;
  };
  clear_stop_request();
  const CompareReport full = run_compare(config("baseline_cmp_a"));
  CHECK(full.finished_runs == 6);
  CHECK(full.archs.size() == 3u);
  CHECK(full.searched.size() == 1u);
  CHECK(fs::exists("baseline_cmp_a/compare.json"));
  CHECK(fs::exists("baseline_cmp_a/compare.svg"));
  CHECK(fs::exists("baseline_cmp_a/runs/random_001/seed_2/result.json"));
  // 128 training images (160 less the 20 % held out) at batch 16: 8 steps; 32 validation images.
  const nlohmann::json one = nlohmann::json::parse(slurp("baseline_cmp_a/runs/arch_1/seed_1/result.json"));
  CHECK(one["steps"] == 8);
  CHECK(one["val"]["images"] == 32);
  CHECK(one["test"]["images"] == 64);
  CHECK(full.archs[0].runs[0].val_accuracy == one["val"]["accuracy"].get<double>());
  CHECK(full.archs[0].runs[0].test_accuracy == one["test"]["accuracy"].get<double>());

  // An interrupted run (a checkpoint at step 3, no result) is resumed to the uninterrupted result.
  {
    TrainConfig t = config("x").train;
    t.arch = load_arch("baseline_random/random_000.json");
    t.seed = 1;
    t.val_fraction = 0.2f;
    t.quiet = true;
    t.max_steps = 3;
    t.out_dir = "baseline_cmp_b/runs/random_000/seed_1";
    const TrainResult partial = run_train(t);
    CHECK_FALSE(partial.finished);
    CHECK_FALSE(fs::exists(t.out_dir + "/result.json"));
  }
  const CompareReport resumed = run_compare(config("baseline_cmp_b"));
  CHECK(resumed.finished_runs == 6);
  // Resumed, not restarted: the log keeps the interrupted run's row at step 3, then the rest.
  const std::string log = slurp("baseline_cmp_b/runs/random_000/seed_1/train_log.csv");
  CHECK(log.find("\n3,") != std::string::npos);
  CHECK(log.find("\n8,") != std::string::npos);
  for (size_t a = 0; a < full.archs.size(); ++a)
    for (size_t s = 0; s < 2; ++s) {
      CHECK(resumed.archs[a].runs[s].test_accuracy == full.archs[a].runs[s].test_accuracy);
      CHECK(resumed.archs[a].runs[s].val_accuracy == full.archs[a].runs[s].val_accuracy);
    }

  // A rerun trains nothing: no result file is rewritten.
  std::map<std::string, fs::file_time_type> before;
  for (const auto& e : fs::recursive_directory_iterator("baseline_cmp_b/runs"))
    if (e.path().filename() == "result.json") before[e.path().string()] = fs::last_write_time(e.path());
  CHECK(before.size() == 6u);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const CompareReport again = run_compare(config("baseline_cmp_b"));
  CHECK(again.finished_runs == 6);
  for (const auto& [path, t] : before) CHECK(fs::last_write_time(path) == t);
  CHECK(again.searched[0].test.ri == doctest::Approx(resumed.searched[0].test.ri));

  // --report trains nothing: it reports what is finished.
  CompareConfig report = config("baseline_cmp_c");
  report.report_only = true;
  const CompareReport empty = run_compare(report);
  CHECK(empty.finished_runs == 0);
  CHECK(empty.total_runs == 6);
  CHECK_FALSE(fs::exists("baseline_cmp_c/runs"));
  CHECK(fs::exists("baseline_cmp_c/compare.json"));
  report.out_dir = "baseline_cmp_a";
  CHECK(run_compare(report).finished_runs == 6);

  // Other training options in the same folder are refused, naming the option.
  CompareConfig other = config("baseline_cmp_b");
  other.train.epochs = 2;
  CHECK_THROWS_WITH_AS(run_compare(other), doctest::Contains("\"epochs\" was 1"), std::runtime_error);
}

// A fresh folder per test: logs are appended to, and tests are rerun in the same folder.
static void fresh_dir(const std::string& dir) {
  fs::remove_all(dir);
  fs::create_directories(dir);
}

TEST_CASE("process pool: at most `jobs` children at once, each with its log") {
  fresh_dir("baseline_pool");
  const std::string trace = fs::absolute("baseline_pool/trace").string();
  std::vector<ChildJob> jobs;
  for (int i = 0; i < 5; ++i)
    jobs.push_back({"job " + std::to_string(i),
                    {"-c", "echo + >> " + trace + "; echo hello " + std::to_string(i) + "; sleep 0.4; echo - >> " + trace},
                    "baseline_pool/log_" + std::to_string(i) + ".txt"});
  ProcessPoolOptions po;
  po.program = "/bin/sh";
  po.jobs = 2;
  const std::vector<ChildOutcome> out = run_children(jobs, po);
  for (const ChildOutcome& o : out) CHECK(o.ok());
  // The children's own trace: the number running at any time never exceeds 2 (and reaches it).
  int running = 0, most = 0;
  for (char c : slurp(trace)) {
    if (c == '+') most = std::max(most, ++running);
    if (c == '-') --running;
  }
  CHECK(running == 0);
  CHECK(most == 2);
  CHECK(slurp("baseline_pool/log_3.txt") == "hello 3\n");
  CHECK_NOTHROW(check_children(jobs, out));
  CHECK(thread_share(4, 2) == 2);
  CHECK(thread_share(1, 2) == 1);
  CHECK(thread_share(0, 1) >= 1);
}

TEST_CASE("process pool: a failing child is named with its log; nothing new starts after it") {
  fresh_dir("baseline_pool");
  // The sibling running beside the failing job is stopped (SIGINT, which it answers with exit 5), the
  // third never starts, and only the failure is reported.
  std::vector<ChildJob> jobs = {
      {"bad one", {"-c", "sleep 0.3; echo boom-message; exit 3"}, "baseline_pool/bad.txt"},
      {"sibling", {"-c", "trap 'exit 5' INT; sleep 30 & wait"}, "baseline_pool/sibling.txt"},
      {"never", {"-c", "exit 0"}, "baseline_pool/never.txt"}};
  ProcessPoolOptions po;
  po.program = "/bin/sh";
  po.jobs = 2;
  const std::vector<ChildOutcome> out = run_children(jobs, po);
  CHECK(out[0].exit_code == 3);
  CHECK_FALSE(out[0].stopped);
  CHECK(out[1].stopped);
  CHECK(out[1].exit_code == 5);
  CHECK_FALSE(out[2].started);
  CHECK_THROWS_WITH_AS(check_children(jobs, out),
                       doctest::Contains("1 of 3 jobs failed:\n  job 'bad one' failed (exit code 3); its log: baseline_pool/bad.txt"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(check_children(jobs, out), doctest::Contains("boom-message"), std::runtime_error);

  std::vector<ChildJob> killed = {{"killed", {"-c", "kill -9 $$"}, "baseline_pool/killed.txt"}};
  po.jobs = 1;
  const std::vector<ChildOutcome> k = run_children(killed, po);
  CHECK(k[0].signal == 9);
  CHECK(describe_outcome(k[0]).find("signal 9") != std::string::npos);

  ProcessPoolOptions missing = po;
  missing.program = "/nonexistent/program";
  const std::vector<ChildOutcome> m = run_children({{"exec", {}, "baseline_pool/exec.txt"}}, missing);
  CHECK(m[0].exit_code == 127);
  CHECK(slurp("baseline_pool/exec.txt").find("exec failed: /nonexistent/program") != std::string::npos);

  CHECK_THROWS_WITH_AS(run_children({{"nolog", {"-c", "true"}, "no/such/folder/log.txt"}}, po),
                       doctest::Contains("job 'nolog': cannot open its log 'no/such/folder/log.txt'"), std::runtime_error);
}

TEST_CASE("process pool: an interrupt is forwarded to the running children as SIGINT") {
  fresh_dir("baseline_pool");
  std::vector<ChildJob> jobs = {
      {"waits", {"-c", "trap 'echo got-int; exit 5' INT; echo ready; sleep 30 & wait"}, "baseline_pool/int.txt"},
      {"after", {"-c", "exit 0"}, "baseline_pool/after.txt"}};
  ProcessPoolOptions po;
  po.program = "/bin/sh";
  const auto start = std::chrono::steady_clock::now();
  // The interrupt comes once the child has set its trap (it says "ready").
  po.interrupted = [&]() { return slurp("baseline_pool/int.txt").find("ready") != std::string::npos; };
  const std::vector<ChildOutcome> out = run_children(jobs, po);
  CHECK(out[0].exit_code == 5);
  CHECK(out[0].stopped);
  CHECK_FALSE(out[1].started);
  CHECK_NOTHROW(check_children(jobs, out));  // stopped on request: not a failure
  CHECK(slurp("baseline_pool/int.txt").find("got-int") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
}
