// `spnas tune` (nas/tune/tune.h): the table's bounds and the input checks, the infeasible-skip rule,
// resume after an exception and after kill -9, parallel trials in separate processes, the data
// view, BO against random search on an analytic problem, and one real trial end to end.
// The BO logic runs on fake trial stages (an analytic map from hyperparameters to R and accuracy),
// so these tests take seconds.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/io.h"
#include "nas/run.h"
#include "nas/tune/tune.h"
#include "nas_fixtures.h"

using namespace spnas;
namespace fs = std::filesystem;

namespace {

// A stand-in for a search: R falls smoothly as the runtime term gets stronger (lambda, scaled by the
// threshold rate and margin), in steps of 0.5 % as discrete architectures do; accuracy rises with R.
struct AnalyticSearch {
  double r_min = 6, r_max = 20;  // the tiny table's bounds
  // 0: smooth. > 0: "rugged", like the short real searches (nas/tune/README.md, "Runs"): plateaus 4 %
  // apart and a relative jitter of up to +-jitter that changes every 1 % of lambda's log range.
  double jitter = 0;
  uint64_t salt = 0;  // which jitter pattern
  double R(const SearchHyper& h) const {
    const double strength = h.lambda * std::sqrt(h.threshold_lr_mult / 10.0) * (1.0 + 0.3 * (h.threshold_margin - 1.0));
    const double fraction = 1.0 / (1.0 + std::pow(strength / 0.03, 1.2));
    const double R = r_min + (r_max - r_min) * fraction;
    const double step = jitter > 0 ? 1.04 : 1.005;
    const double plateau = r_min * std::pow(step, std::floor(std::log(R / r_min) / std::log(step)));
    if (jitter == 0) return plateau;
    const auto bin = uint64_t(int64_t(std::floor(100 * std::log(strength) / std::log(1000.0))) + (1 << 20));
    const double h01 = double(mix_seed(0x6a6974ULL, bin, salt) >> 11) / double(uint64_t(1) << 53);
    return std::clamp(plateau * (1 + jitter * (2 * h01 - 1)), r_min, r_max);
  }
  double accuracy(double R, const SearchHyper& h) const {
    return 0.45 + 0.25 * std::log(R / r_min) / std::log(r_max / r_min) - 0.01 * std::fabs(h.threshold_margin - 1.0);
  }
};

// Fake stages over AnalyticSearch that record which trials reached each stage (in this process).
struct FakeStages {
  AnalyticSearch problem;
  std::vector<int> searched, trained;
  int kill_in_search = -1;  // this trial's search ends the process with SIGKILL (kill -9 mid-trial)

  TrialStages stages() {
    TrialStages st;
    st.search = [this](const TrialSpec& t) {
      searched.push_back(t.index);
      if (t.index == kill_in_search) {
        std::ofstream(t.dir + "/search_log.csv") << "step,epoch\n0,0\n";  // what a search leaves behind
        raise(SIGKILL);
      }
      TrialSearchOutcome o;
      o.arch.space = t.config.space;
      o.arch.layers = {Choice::K5E6, Choice::K5E6, Choice::K5E6, Choice::K5E6};
      o.R_ms = problem.R(t.hyper);
      o.steps = 1;
      o.decoded_at_step = t.index % 2 ? 10 + t.index : -1;  // odd trials: decisions held at a logged step
      o.rounded_flips = t.index % 4 == 2 ? 3 : -1;           // every fourth: final decisions rounded
      o.verdict = {"decisions: trial " + std::to_string(t.index), "runtime: ..."};
      return o;
    };
    st.proxy_train = [this](const TrialSpec& t, const Arch&) {
      trained.push_back(t.index);
      CHECK(problem.R(t.hyper) <= t.config.target_ms);  // the rule under test
      return problem.accuracy(problem.R(t.hyper), t.hyper);
    };
    return st;
  }
};

TrialLauncher in_process(FakeStages& fake) {
  return [&fake](const std::string& path, int) { run_trial_from_file(path, fake.stages()); };
}

// A launcher that runs each trial in a child process, as `spnas` does with its hidden subcommand: this
// test program started again (posix_spawn, not a bare fork: run_tune calls the launcher from threads,
// and a forked child that does not exec may inherit a lock another thread held) with only the skipped
// test case "a trial in its own process" selected, which runs the trial on FakeStages.
TrialLauncher exec_self() {
  return [](const std::string& path, int) {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
    env_strings.push_back("SPNAS_TEST_TRIAL=" + path);
    std::vector<char*> envp;
    for (std::string& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string args[] = {"test_tune", "--test-case=a trial in its own process", "--no-skip", "--minimal"};
    char* argv[] = {args[0].data(), args[1].data(), args[2].data(), args[3].data(), nullptr};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid = 0;
    const int err = posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (err != 0) throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(err));
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      throw std::runtime_error("the trial process for " + path + " failed (status " + std::to_string(status) + ")");
  };
}

std::string tiny_table_file() {
  const std::string path = "tune_tiny_table.json";
  save_latency_table(path, tiny_table(load_space(tiny_space_file())));
  return path;
}

// fresh: start from an empty output folder (else the folder is kept, for resume).
TuneConfig fake_config(const std::string& out, int trials, const std::string& method, bool fresh = true) {
  if (fresh) fs::remove_all(out);
  TuneConfig c;
  c.space = tiny_space_file();
  c.table_path = tiny_table_file();
  c.target_ms = 12.0;
  c.data = parse_data_spec("synthetic:train=64,test=16,seed=2");
  c.holdout = 0.25;
  c.batch = 16;
  c.trials = trials;
  c.method = method;
  c.initial_trials = 2;
  c.out_dir = out;
  c.quiet = true;
  // The fake search's R falls with lambda on this range (the log form's scale); lambda alone is tuned
  // (the proposal tests below reason about one coordinate).
  c.runtime_loss = "log";
  c.lambda = {1e-3, 1.0};
  c.tune_threshold_lr_mult = c.tune_threshold_margin = false;
  return c;
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_text_file(path, "test")); }

// run_tune's proposal rule on AnalyticSearch without files: the 1-based trial at which R first lands in
// the goal band, budget + 1 when it never does.
int trials_to_band(const TuneConfig& c, const AnalyticSearch& p, int budget) {
  std::vector<TrialResult> done;
  for (int i = 0; i < budget; ++i) {
    TrialResult r;
    r.index = i;
    r.u = propose_trial(c, done, {}, i).u;
    r.hyper = hyper_from_unit(c, r.u);
    r.R_ms = p.R(r.hyper);
    r.status = r.R_ms <= c.target_ms ? TrialStatus::Trained : TrialStatus::Infeasible;
    if (r.status == TrialStatus::Trained) r.accuracy = p.accuracy(r.R_ms, r.hyper);
    done.push_back(r);
    if (in_goal_band(r.R_ms, c.target_ms, c.window)) return i + 1;
  }
  return budget + 1;
}

}  // namespace

TEST_CASE("the table's bounds respect skips; a target outside them is an error naming both") {
  const SearchSpace s = load_space(tiny_space_file());
  const LatencyTable t = tiny_table(s);
  const RuntimeBounds b = table_runtime_bounds(t, s, false);
  // fixed 2 + layer i at 1 + i (3x3-3) or 3 + i (5x5-6); layers 1 and 3 may be skipped.
  CHECK(b.min_ms == doctest::Approx(2 + 1 + 0 + 3 + 0));
  CHECK(b.max_ms == doctest::Approx(2 + 3 + 4 + 5 + 6));
  CHECK(arch_summary(b.smallest) == "3x3-3 skip 3x3-3 skip");
  CHECK(arch_summary(b.largest) == "5x5-6 5x5-6 5x5-6 5x5-6");
  CHECK(table_runtime_bounds(t, s, true).max_ms == doctest::Approx(20 + 4 * 0.25));

  TuneConfig c = fake_config("tune_bounds", 2, "bo");
  c.target_ms = 5.9;
  CHECK_THROWS_WITH_AS(run_tune(c), doctest::Contains("from 6.000 ms (smallest network: 3x3-3 skip 3x3-3 skip) to 20.000 ms"),
                       std::runtime_error);
  c.target_ms = 20.5;
  CHECK_THROWS_WITH_AS(run_tune(c), doctest::Contains("from 6.000 ms"), std::runtime_error);
  CHECK_THROWS_WITH_AS(run_tune(c), doctest::Contains("20.000 ms"), std::runtime_error);

  // Options are checked, naming what is wrong.
  c = fake_config("tune_bounds", 2, "grid");
  CHECK_THROWS_WITH_AS(run_tune(c), doctest::Contains("method must be bo or random"), std::runtime_error);
  c = fake_config("tune_bounds", 2, "bo");
  c.lambda = {0, 1};
  CHECK_THROWS_WITH_AS(run_tune(c), doctest::Contains("range of lambda"), std::runtime_error);
  c = fake_config("tune_bounds", 2, "bo");
  c.window = NAN;
  CHECK_THROWS_WITH_AS(run_tune(c), doctest::Contains("window"), std::runtime_error);
  c = fake_config("tune_bounds", 2, "bo");
  c.warmup_thresholds = "frozen";
  CHECK_THROWS_WITH_AS(run_tune(c), doctest::Contains("warmup_thresholds must be train or freeze, got 'frozen'"),
                       std::runtime_error);
  // The field travels through the record; a record written before it existed means "train".
  c = fake_config("tune_bounds", 2, "bo");
  c.warmup_thresholds = "freeze";
  nlohmann::ordered_json record = tune_config_to_json(c);
  CHECK(tune_config_from_json(record, "record").warmup_thresholds == "freeze");
  record.erase("warmup_thresholds");
  CHECK(tune_config_from_json(record, "record").warmup_thresholds == "train");
  c = fake_config("tune_bounds", 2, "bo");
  c.threshold_momentum = 1.0;
  CHECK_THROWS_WITH_AS(run_tune(c), doctest::Contains("threshold_momentum must be below 1"), std::runtime_error);
  c.threshold_momentum = 0.25;
  record = tune_config_to_json(c);
  CHECK(tune_config_from_json(record, "record").threshold_momentum == 0.25);
  record.erase("threshold_momentum");
  CHECK(tune_config_from_json(record, "record").threshold_momentum == -1);  // older records: the optimizer's
  c = fake_config("tune_bounds", 2, "bo");
  c.decode = "best";
  CHECK_THROWS_WITH_AS(run_tune(c), doctest::Contains("decode must be final, band or round, got 'best'"),
                       std::runtime_error);
  c.decode = "round";
  record = tune_config_to_json(c);
  CHECK(tune_config_from_json(record, "record").decode == "round");
  c.decode = "band";
  record = tune_config_to_json(c);
  CHECK(tune_config_from_json(record, "record").decode == "band");
  record.erase("decode");
  CHECK(tune_config_from_json(record, "record").decode == "final");  // older records: the final decisions

  // An unreadable table or dataset fails before the first trial.
  FakeStages fake;
  c = fake_config("tune_bad_input", 2, "bo");
  c.launch_trial = in_process(fake);
  c.table_path = "no-such-table.json";
  CHECK_THROWS_WITH_AS(run_tune(c), doctest::Contains("no-such-table.json"), std::runtime_error);
  c = fake_config("tune_bad_input", 2, "bo");
  c.launch_trial = in_process(fake);
  c.data = parse_data_spec("cifar10-folder:/no/such/folder");
  CHECK_THROWS_WITH_AS(run_tune(c), doctest::Contains("/no/such/folder"), std::runtime_error);
  CHECK(fake.searched.empty());
  CHECK_FALSE(fs::exists("tune_bad_input/trial_000"));
}

TEST_CASE("infeasible trials are recorded but never reach the proxy training") {
  FakeStages fake;
  TuneConfig c = fake_config("tune_skip", 8, "random");
  c.launch_trial = in_process(fake);
  const TuneResult r = run_tune(c);
  REQUIRE(r.trials.size() == 8);
  CHECK(fake.searched.size() == 8);
  int infeasible = 0;
  std::set<int> trained(fake.trained.begin(), fake.trained.end());
  for (const TrialResult& t : r.trials) {
    CHECK(t.R_ms == doctest::Approx(fake.problem.R(t.hyper)));
    if (t.R_ms > c.target_ms) {
      ++infeasible;
      CHECK(t.status == TrialStatus::Infeasible);
      CHECK_FALSE(trained.count(t.index));
    } else {
      CHECK(t.status == TrialStatus::Trained);
      CHECK(trained.count(t.index));
      CHECK(t.accuracy == doctest::Approx(fake.problem.accuracy(t.R_ms, t.hyper)));
    }
  }
  CHECK(infeasible > 0);  // the seed's random points fall on both sides of T
  CHECK(infeasible < 8);
  CHECK(int(fake.trained.size()) == 8 - infeasible);

  // tune.json: every trial, "infeasible" in place of an accuracy, the best, both bests.
  const nlohmann::json j = read_json(r.json_path);
  CHECK(j["status"] == "finished");
  CHECK(j["trials"].size() == 8);
  for (const auto& t : j["trials"]) {
    if (t["status"] == "infeasible") CHECK(t["accuracy"] == "infeasible");
    else CHECK(t["accuracy"].is_number());
    const int i = t["index"].get<int>();
    CHECK(t["decoded_at_step"].get<int64_t>() == (i % 2 ? 10 + i : -1));  // the search's, recorded
    CHECK(t.contains("rounded_flips") == (i % 4 == 2));                     // only where rounded
    if (i % 4 == 2) CHECK(t["rounded_flips"].get<int>() == 3);
  }
  CHECK(trial_result_from_json(trial_result_to_json(r.trials[2]), "record").rounded_flips == 3);
  CHECK(j["trials"][2]["verdict"][0] == "decisions: trial 2");  // the search's verdict, kept with the trial
  CHECK(trial_result_from_json(trial_result_to_json(r.trials[2]), "record").verdict == r.trials[2].verdict);
  CHECK(trial_result_from_json(trial_result_to_json(r.trials[1]), "record").rounded_flips == -1);
  nlohmann::ordered_json older = trial_result_to_json(r.trials[1]);
  CHECK(trial_result_from_json(older, "record").decoded_at_step == 11);
  older.erase("decoded_at_step");
  CHECK(trial_result_from_json(older, "record").decoded_at_step == -1);  // older records: the final decisions
  REQUIRE(r.best >= 0);
  CHECK(j["best"]["index"] == r.best);
  CHECK(r.best == (r.best_in_band >= 0 ? r.best_in_band : r.best_feasible));
  for (const TrialResult& t : r.trials)
    if (t.status == TrialStatus::Trained) CHECK(t.accuracy <= r.trials[size_t(r.best_feasible)].accuracy);
  CHECK(fs::exists(r.best_arch_path));
  CHECK(read_text_file(r.svg_path, "test").find("<svg") != std::string::npos);
}

TEST_CASE("resume after the run died between trials redoes nothing and matches an uninterrupted run") {
  FakeStages whole;
  TuneConfig c = fake_config("tune_whole", 6, "bo");
  c.launch_trial = in_process(whole);
  const TuneResult uninterrupted = run_tune(c);

  FakeStages first;
  TuneConfig part = fake_config("tune_resume", 6, "bo");
  int launches = 0;
  part.launch_trial = [&](const std::string& path, int threads) {
    if (++launches == 4) throw std::runtime_error("simulated crash");
    run_trial_from_file(path, first.stages());
  };
  CHECK_THROWS_WITH_AS(run_tune(part), doctest::Contains("simulated crash"), std::runtime_error);
  CHECK(read_json("tune_resume/tune.json")["trials"].size() == 3);

  FakeStages second;
  part.launch_trial = in_process(second);
  CHECK_THROWS_WITH_AS(run_tune(part), doctest::Contains("resume it"), std::runtime_error);  // not without resume
  part.resume = true;
  const TuneResult resumed = run_tune(part);
  CHECK(second.searched == std::vector<int>{3, 4, 5});
  REQUIRE(resumed.trials.size() == 6);
  for (size_t i = 0; i < 6; ++i) {
    CHECK(resumed.trials[i].u == uninterrupted.trials[i].u);
    CHECK(resumed.trials[i].proposed_by == (i < 2 ? "random" : "bo"));
  }

  // SIGINT in the middle of trial 1's search (run_search saves and throws Interrupted): the run stops
  // with Interrupted, trial 1 is not recorded, and a resume redoes it.
  FakeStages signalled;
  bool signal_pending = true;
  TuneConfig sig = fake_config("tune_signal", 3, "bo");
  sig.launch_trial = [&](const std::string& path, int) {
    TrialStages st = signalled.stages();
    auto search = st.search;
    st.search = [&, search](const TrialSpec& t) {
      if (t.index == 1 && signal_pending) {
        signal_pending = false;
        request_stop(2);
        throw Interrupted(2, "search: interrupted");
      }
      return search(t);
    };
    run_trial_from_file(path, st);
  };
  CHECK_THROWS_AS(run_tune(sig), Interrupted);
  clear_stop_request();
  CHECK(read_json("tune_signal/tune.json")["trials"].size() == 1);
  CHECK_FALSE(fs::exists("tune_signal/trial_001/result.json"));
  sig.resume = true;
  CHECK(run_tune(sig).trials.size() == 3);
  CHECK(signalled.searched == std::vector<int>{0, 1, 2});  // the interrupted search is not counted

  // A different problem in the same folder is refused, naming the field.
  part.target_ms = 13;
  CHECK_THROWS_WITH_AS(run_tune(part), doctest::Contains("target_ms"), std::runtime_error);
}

TEST_CASE("kill -9 loses at most the trial in flight") {
  auto run_until_killed = [](const std::string& out, int kill_in_search, int kill_after_trial) {
    const pid_t pid = fork();
    if (pid == 0) {
      FakeStages fake;
      fake.kill_in_search = kill_in_search;
      TuneConfig c = fake_config(out, 5, "bo");
      int launches = 0;
      c.launch_trial = [&](const std::string& path, int) {
        run_trial_from_file(path, fake.stages());
        if (launches++ == kill_after_trial) raise(SIGKILL);  // result.json written, tune.json not yet
      };
      try {
        run_tune(c);
      } catch (...) {
      }
      _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  };

  // Killed inside trial 2's search: trials 0 and 1 are recorded, trial 2's folder is half made.
  REQUIRE(run_until_killed("tune_kill", 2, -1));
  CHECK(read_json("tune_kill/tune.json")["trials"].size() == 2);
  CHECK(fs::exists("tune_kill/trial_002/search_log.csv"));
  CHECK_FALSE(fs::exists("tune_kill/trial_002/result.json"));
  FakeStages after;
  TuneConfig c = fake_config("tune_kill", 5, "bo", false);
  c.resume = true;
  c.launch_trial = in_process(after);
  TuneResult r = run_tune(c);
  CHECK(after.searched == std::vector<int>{2, 3, 4});
  CHECK(r.trials.size() == 5);
  CHECK_FALSE(fs::exists("tune_kill/trial_002/search_log.csv"));  // the half-made folder was redone

  // Killed after trial 1 wrote its result but before tune.json recorded it: the result is kept.
  REQUIRE(run_until_killed("tune_kill2", -1, 1));
  CHECK(read_json("tune_kill2/tune.json")["trials"].size() == 1);
  FakeStages after2;
  c = fake_config("tune_kill2", 5, "bo", false);
  c.resume = true;
  c.launch_trial = in_process(after2);
  r = run_tune(c);
  CHECK(after2.searched == std::vector<int>{2, 3, 4});
  CHECK(r.trials.size() == 5);
}

TEST_CASE("parallel trials run as separate processes, each with its share of the threads") {
  FakeStages fake;
  TuneConfig c = fake_config("tune_parallel", 6, "bo");
  c.jobs = 2;
  c.threads = 4;
  c.launch_trial = exec_self();
  const TuneResult r = run_tune(c);
  REQUIRE(r.trials.size() == 6);
  std::set<std::vector<double>> points;
  for (const TrialResult& t : r.trials) {
    CHECK(t.R_ms == doctest::Approx(fake.problem.R(t.hyper)));
    CHECK(t.status == (t.R_ms <= c.target_ms ? TrialStatus::Trained : TrialStatus::Infeasible));
    points.insert(t.u);
    char dir[64];
    std::snprintf(dir, sizeof dir, "tune_parallel/trial_%03d/trial.json", t.index);
    CHECK(read_json(dir)["threads"] == 2);
  }
  CHECK(points.size() == 6);  // pending points pushed the concurrent proposals apart
  CHECK(fake.searched.empty());  // nothing ran in this process
  for (const TrialResult& t : r.trials) CHECK(t.error.empty());

  c = fake_config("tune_parallel_refused", 2, "bo");
  c.jobs = 2;
  CHECK_THROWS_WITH_AS(run_tune(c), doctest::Contains("need a process launcher"), std::runtime_error);
}

// Not a test on its own: the body of each trial process that exec_self() starts (skipped in a normal run).
TEST_CASE("a trial in its own process" * doctest::skip()) {
  const char* path = std::getenv("SPNAS_TEST_TRIAL");
  REQUIRE_MESSAGE(path != nullptr, "started without SPNAS_TEST_TRIAL (run by exec_self only)");
  FakeStages fake;
  run_trial_from_file(path, fake.stages());
}

TEST_CASE("the tuning view holds out training images as the only evaluation split") {
  DataSpec d = parse_data_spec("synthetic:train=200,test=40,seed=5");
  d.holdout = 0.25;
  d.train_fraction = 0.5;
  d.view_seed = 7;
  const Splits s = open_dataset(d);
  CHECK(s.test->size() == 50);
  CHECK(s.train->size() == 75);
  CHECK(s.val == nullptr);
  CHECK(s.test->name().find("train") != std::string::npos);  // drawn from the training split
  // The same seed gives the same split; held-out and kept images never overlap.
  const Splits again = open_dataset(d);
  const auto* held = dynamic_cast<const SubsetDataset*>(s.test.get());
  const auto* held2 = dynamic_cast<const SubsetDataset*>(again.test.get());
  REQUIRE(held);
  REQUIRE(held2);
  CHECK(held->indices() == held2->indices());
  d.train_fraction = 0;
  CHECK_THROWS_WITH_AS(open_dataset(d), doctest::Contains("training fraction"), std::runtime_error);
}

TEST_CASE("BO never proposes a point already run, nor one next to a running trial") {
  BoSettings s;
  s.target_ms = 12;  // band 11.64-12
  // Two trials right in the band between two outside it: the model is surest of the band at those
  // very points (without the exclusion it proposes 0.30002).
  const std::vector<BoObservation> in_band = {
      {{0.0}, 19.0, false, 0}, {{0.3}, 11.8, false, 0}, {{0.7}, 11.8, false, 0}, {{1.0}, 7.0, false, 0}};
  const BoProposal p = propose_bo(in_band, {}, 1, s, 1);
  for (const BoObservation& o : in_band) CHECK(std::fabs(p.u[0] - o.u[0]) >= 1e-3);
  // Two trials on either side of T: the same proposal again unless a running trial holds it.
  const std::vector<BoObservation> across = {{{0.78}, 7.18, true, 0.49}, {{0.33}, 17.0, false, 0}};
  const BoProposal first = propose_bo(across, {}, 1, s, 1);
  CHECK(first.u[0] > 0.33);
  CHECK(first.u[0] < 0.78);
  const BoProposal second = propose_bo(across, {first.u}, 1, s, 1);
  CHECK(std::fabs(second.u[0] - first.u[0]) >= 0.05);
}

namespace {

// Trials until R first lands in the band (31 = missed in 30), BO and random search, for seeds
// 1..`seeds` of every target at 40 / 60 / 80 % of the problem's range: [target][method][seed],
// method 0 = BO, 1 = random.
using TrialCounts = std::vector<std::vector<std::vector<int>>>;
const int kBudget = 30;
TrialCounts bo_against_random(const AnalyticSearch& p, const char* acquisition, bool three_variables, int seeds) {
  TrialCounts counts(3, std::vector<std::vector<int>>(2));
  for (int t = 0; t < 3; ++t) {
    for (int m = 0; m < 2; ++m) {
      for (int seed = 1; seed <= seeds; ++seed) {
        TuneConfig c;
        c.lambda = {1e-3, 1.0};  // the analytic problem's R falls with lambda on this range
        c.method = m == 0 ? "bo" : "random";
        c.acquisition = acquisition;
        c.seed = uint64_t(seed);
        c.target_ms = p.r_min + (0.4 + 0.2 * t) * (p.r_max - p.r_min);
        c.tune_threshold_lr_mult = c.tune_threshold_margin = three_variables;
        counts[t][m].push_back(trials_to_band(c, p, kBudget));
      }
    }
  }
  return counts;
}

// One line per target: means, misses, trials within 8, and the counts; checks that BO needs fewer.
void report_and_check(const std::string& what, const TrialCounts& counts) {
  for (int t = 0; t < 3; ++t) {
    std::ostringstream line;
    line << what << ", T at " << 40 + 20 * t << " %: trials to the band (" << kBudget + 1 << " = missed)";
    double mean[2];
    for (int m = 0; m < 2; ++m) {
      const std::vector<int>& c = counts[t][m];
      mean[m] = 0;
      int misses = 0, within8 = 0;
      for (int n : c) mean[m] += double(n) / double(c.size()), misses += n > kBudget, within8 += n <= 8;
      line << (m == 0 ? "; BO" : "; random") << " mean " << mean[m] << ", within 8: " << within8 << " of " << c.size()
           << ", misses " << misses << ":";
      for (int n : c) line << ' ' << n;
    }
    MESSAGE(line.str());
    CHECK(mean[0] < mean[1]);
  }
}

}  // namespace

TEST_CASE("BO reaches the goal band in fewer trials than random search (analytic problem)") {
  for (const char* acquisition : {"band", "feasible"}) {
    for (bool three_variables : {false, true}) {
      const TrialCounts counts = bo_against_random(AnalyticSearch{}, acquisition, three_variables, 10);
      report_and_check(std::string("smooth problem, acquisition ") + acquisition +
                           (three_variables ? ", 3 variables" : ", lambda only"),
                       counts);
      // The target, the band within 8 trials, for the default acquisition (median seed here).
      if (std::string(acquisition) == "band")
        for (std::vector<int> bo : {counts[0][0], counts[1][0], counts[2][0]}) {
          std::sort(bo.begin(), bo.end());
          CHECK(bo[bo.size() / 2] <= 8);
        }
    }
  }
}

TEST_CASE("on rugged problems (plateaus, +-5 % jitter, like the real short searches) BO still beats random") {
  // Six jitter patterns x five seeds per target.
  TrialCounts all(3, std::vector<std::vector<int>>(2));
  for (uint64_t salt = 1; salt <= 6; ++salt) {
    AnalyticSearch rugged;
    rugged.jitter = 0.05;
    rugged.salt = salt;
    const TrialCounts c = bo_against_random(rugged, "band", false, 5);
    for (int t = 0; t < 3; ++t)
      for (int m = 0; m < 2; ++m) all[t][m].insert(all[t][m].end(), c[t][m].begin(), c[t][m].end());
  }
  report_and_check("rugged problems, acquisition band, lambda only", all);
}

TEST_CASE("one real trial end to end: search, table R, proxy training on held-out images") {
  SpaceOptions so;
  so.width = 0.25f;
  const SearchSpace space = load_space("cifar10", so);
  fs::remove_all("tune_real");
  TuneConfig c;
  c.space = "cifar10";
  c.space_options = so;
  c.table_path = "tune_cifar_table.json";
  save_latency_table(c.table_path, tiny_table(space));
  c.target_ms = table_runtime_bounds(tiny_table(space), space, false).max_ms;  // every network is feasible
  c.data = parse_data_spec("synthetic:train=96,test=16,seed=3");
  c.holdout = 0.25;
  c.batch = 16;
  c.trials = 1;
  c.search_epochs = 1;
  c.search_warmup_epochs = 0.5;
  c.max_search_steps = 3;
  c.train_epochs = 1;
  c.max_train_steps = 3;
  c.out_dir = "tune_real";
  c.quiet = true;
  const TuneResult r = run_tune(c);
  REQUIRE(r.trials.size() == 1);
  const TrialResult& t = r.trials[0];
  REQUIRE(t.status == TrialStatus::Trained);
  CHECK(t.search_steps == 3);
  CHECK(t.accuracy >= 0);
  CHECK(t.accuracy <= 1);
  const Arch found = load_arch("tune_real/trial_000/arch.json");
  CHECK(arch_summary(found) == arch_summary(t.arch));
  CHECK(t.R_ms == doctest::Approx(predict_runtime(tiny_table(space), found)));
  CHECK(fs::exists("tune_real/trial_000/search_log.csv"));
  CHECK(fs::exists("tune_real/trial_000/search_plot.svg"));
  CHECK(fs::exists("tune_real/trial_000/proxy/train_log.csv"));
  CHECK_FALSE(fs::exists("tune_real/trial_000/search.ckpt"));  // removed once the trial is recorded
  CHECK(arch_summary(load_arch(r.best_arch_path)) == arch_summary(found));
}
