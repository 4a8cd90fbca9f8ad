// spnas tune: the journal's NAS hyperparameter optimisation (nas/tune/tune.h) on the command line,
// and the hidden `tune-trial` subcommand that runs one trial in a process of its own.
#include <cstdio>
#include <filesystem>

#include "engine/process.h"
#include "engine/threads.h"
#include "nas/tune/tune.h"
#include "nas/run.h"
#include "ops/ops.h"
#include "tools/cli.h"

namespace spnas::cli {

namespace {

// A trial in a child of this program: `spnas tune-trial DIR/trial_NNN/trial.json --threads N`, its
// output in the trial folder's trial.log. The caller reads the trial's result.json afterwards.
void launch_trial_process(const std::string& trial_json, int threads) {
  const std::string dir = std::filesystem::path(trial_json).parent_path().string();
  ChildJob job{"trial " + dir, {"tune-trial", trial_json, "--threads", std::to_string(threads)}, dir + "/trial.log"};
  ProcessPoolOptions opt;
  opt.jobs = 1;
  opt.interrupted = [] { return stop_requested(); };
  const std::vector<ChildOutcome> out = run_children({job}, opt);
  // A trial that failed writes a failed result.json itself; a crash or a signal writes none, and the
  // error names the log.
  if (!out[0].ok() && !std::filesystem::exists(dir + "/result.json")) check_children({job}, out);
}

void add_range(CLI::App* c, const std::string& name, TuneRange& r, const std::string& what, bool show_default = true) {
  c->add_option_function<std::vector<double>>(
       name,
       [&r, name](const std::vector<double>& v) {
         if (!(v[0] > 0 || name.find("margin") != std::string::npos) || !(v[1] > v[0]))
           throw CLI::ValidationError(name, "needs LO < HI" + std::string(name.find("margin") != std::string::npos
                                                                                ? ""
                                                                                : " and LO > 0 (a log scale)"));
         r.lo = v[0];
         r.hi = v[1];
       },
       what + (show_default ? " (LO HI; default " + fmt(r.lo, 3) + " " + fmt(r.hi, 3) + ")" : " (LO HI)"))
      ->expected(2)
      ->check(number_in(-1e9, 1e9));
}

}  // namespace

Command add_tune(CLI::App& app) {
  struct Flags {
    TuneConfig c;
    TableFlags table;
    std::string data = "synthetic";
    bool verify = false;
  };
  auto f = std::make_shared<Flags>();
  TuneConfig& c = f->c;
  CLI::App* s = app.add_subcommand(
      "tune",
      "Finds the search hyperparameters (lambda, the thresholds' learning-rate multiplier and their starting margin) whose "
      "found network meets a latency target, by constraint-aware Bayesian optimisation (the journal version of "
      "Single-Path NAS, after HyperPower). Each trial is a short search; a trial whose network meets the target gets "
      "a short proxy training on held-out training images.\nWrites OUT/tune.json, OUT/tune.svg, OUT/best/arch.json "
      "and one folder per trial (nas/tune/README.md).");
  TableFlags& t = f->table;
  add_space(s, c.space, c.space_options);
  add_table(s, t);
  add_data(s, f->data);
  s->add_option("--target-ms", c.target_ms, "latency target T (ms) under the table")->required()->check(number_above(0, 1e6));
  s->add_option("--window", c.window, "goal band [(1 - window) T, T]; 0: any R <= T")
      ->capture_default_str()
      ->check(number_in(0, 0.5));
  s->add_option("--trials", c.trials, "trials in all (with --resume: more may be asked for)")
      ->capture_default_str()
      ->check(integer_in(1, 10000));
  s->add_option("--method", c.method, "bo (Bayesian optimisation) | random (random search, the comparison)")
      ->capture_default_str()
      ->check(CLI::IsMember({"bo", "random"}));
  s->add_option("--initial-trials", c.initial_trials, "bo: random trials before the first model-based one")
      ->capture_default_str()
      ->check(integer_in(1, 10000));
  s->add_option("--acquisition", c.acquisition,
                "band: EI x P(R in the goal band) | feasible: HyperPower's EI x P(R <= T)")
      ->capture_default_str()
      ->check(CLI::IsMember({"band", "feasible"}));
  s->add_option("--jobs", c.jobs, "trials at once, each a process with threads/jobs threads")
      ->capture_default_str()
      ->check(integer_in(1, 256));
  add_threads(s, c.threads);
  add_range(s, "--lambda-range", c.lambda,
            "range of lambda, log scale (default by --runtime-loss: target 0.01 100, log 1e-5 1, linear 1e-3 100)", false);
  // The threshold rate and margin are tuned unless a value is given: they act from the first step, where
  // lambda acts only after the warm-up (nas/tune/README.md, "Variables").
  auto* tune_lr = s->add_flag("--tune-threshold-lr-mult", "tune the thresholds' learning-rate multiplier (the default)");
  add_range(s, "--threshold-lr-mult-range", c.threshold_lr_mult_range, "its range (log scale)");
  s->add_option("--threshold-lr-mult", c.threshold_lr_mult, "fix the multiplier at this value instead of tuning it")
      ->check(number_above(0, 1e9))
      ->excludes(tune_lr);
  auto* tune_margin = s->add_flag("--tune-threshold-margin", "tune the thresholds' starting margin (the default)");
  add_range(s, "--threshold-margin-range", c.threshold_margin_range, "its range (linear)");
  s->add_option("--threshold-margin", c.threshold_margin,
                "fix the margin at this value instead of tuning it (< 0: thresholds start at 0)")
      ->check(number_in(-1e9, 1e9))
      ->excludes(tune_margin);
  s->add_option("--holdout", c.holdout, "fraction of the training images held out for the proxy training's accuracy")
      ->capture_default_str()
      ->check(number_above(0, 0.9));
  s->add_option("--train-fraction", c.train_fraction, "fraction of the other training images the trials use")
      ->capture_default_str()
      ->check(number_above(0, 1));
  s->add_option("--search-epochs", c.search_epochs, "each trial's search length (epochs)")
      ->capture_default_str()
      ->check(number_above(0, 1e5));
  s->add_option("--search-warmup-epochs", c.search_warmup_epochs, "of which warm-up (epochs)")
      ->capture_default_str()
      ->check(number_in(0, 1e5));
  s->add_option("--warmup-thresholds", c.warmup_thresholds,
                "the searches' thresholds during the warm-up: train (the reference) | freeze (decisions start with the "
                "runtime term)")
      ->capture_default_str()
      ->check(CLI::IsMember({"train", "freeze"}));
  s->add_option("--threshold-momentum", c.threshold_momentum,
                "the searches' threshold momentum, in [0, 1) (default: the optimizer's, 0.9)")
      ->check(number_in(0, 0.999));
  s->add_option("--decode", c.decode,
                "the architecture each search returns: round (its last decisions after the warm-up inside the goal "
                "band, else its final decisions with the fewest margins' worth flipped into it) | band (the same "
                "without the flipping: its final decisions where no step was in the band) | final (always its final "
                "decisions, as the reference)")
      ->capture_default_str()
      ->check(CLI::IsMember({"final", "band", "round"}));
  s->add_option("--batch", c.batch, "batch size of searches and proxy trainings")
      ->capture_default_str()
      ->check(integer_in(2, 65536));
  s->add_option("--runtime-loss", c.runtime_loss, "the searches' runtime term: target (lambda*max(0, R/T - 1), T = --target-ms) | log | linear")
      ->capture_default_str()
      ->check(CLI::IsMember({"log", "linear", "target"}));
  s->add_flag("--se", c.search_se, "search squeeze-and-excitation too");
  s->add_option("--bn-momentum", c.bn_momentum, "batch-norm momentum of searches and proxy trainings")
      ->capture_default_str()
      ->check(number_in(0, 0.9999));
  s->add_option("--workers", c.workers, "data-loading threads per trial")->capture_default_str()->check(integer_in(1, 64));
  s->add_option("--train-epochs", c.train_epochs, "each proxy training's length (epochs)")
      ->capture_default_str()
      ->check(number_above(0, 1e5));
  s->add_option("--train-optimizer", c.train_optimizer, "the proxy trainings' optimizer")
      ->capture_default_str()
      ->check(CLI::IsMember({"sgd", "rmsprop", "adam"}));
  s->add_option("--train-lr", c.train_lr, "the proxy trainings' learning rate (0: the optimizer's default at this batch)")
      ->capture_default_str()
      ->check(number_in(0, 1e6));
  s->add_option("--max-search-steps", c.max_search_steps, "cap on each search's steps (-1: none; for quick checks)")
      ->capture_default_str()
      ->check(integer_in(-1, 1e12));
  s->add_option("--max-train-steps", c.max_train_steps, "cap on each proxy training's steps (-1: none)")
      ->capture_default_str()
      ->check(integer_in(-1, 1e12));
  s->add_option("--out", c.out_dir, "output folder")->capture_default_str();
  s->add_flag("--resume", c.resume, "continue OUT/tune.json (the same options; --trials, --jobs, --threads may change)");
  s->add_option("--seed", c.seed, "seed of the proposals, the split and every trial")->capture_default_str();
  s->add_flag("--quiet", c.quiet, "no progress output from the trials");
  add_parallel(s, c.parallel);
  add_verify(s, f->verify);

  return {s, [f, s] {
            TuneConfig& c = f->c;
            set_threads_for_rank(c.threads);
            c.table_path = f->table.path;
            c.fixed_ms = f->table.fixed_ms;
            c.runtime_mode = f->table.runtime_model;
            c.data = parse_data_spec(f->data);
            if (!s->count("--lambda-range")) c.lambda = default_lambda_range(c.runtime_loss);
            c.tune_threshold_lr_mult = !s->count("--threshold-lr-mult");
            c.tune_threshold_margin = !s->count("--threshold-margin");
            apply_table_settings(s, load_table(f->table), c.space, c.space_options);
            // Trials run as child processes when several run at once; one at a time they run here.
            if (c.jobs > 1) c.launch_trial = launch_trial_process;
            const TuneResult r = run_tune(c);
            if (!is_writer()) return r.best < 0 ? 1 : 0;  // under mpirun: rank 0 reports
            int trained = 0, infeasible = 0, failed = 0;
            for (const TrialResult& t : r.trials) {
              if (t.status == TrialStatus::Trained) ++trained;
              if (t.status == TrialStatus::Infeasible) ++infeasible;
              if (t.status == TrialStatus::Failed) ++failed;
            }
            std::printf("tune: %zu trials (%d trained, %d above the target, %d failed); the table's range %.3f .. %.3f ms\n",
                        r.trials.size(), trained, infeasible, failed, r.min_ms, r.max_ms);
            if (r.best < 0) {
              std::printf("no trial met the target %.3f ms: more --trials, a wider --lambda-range, or a larger target\n",
                          c.target_ms);
              std::printf("files: %s %s\n", r.json_path.c_str(), r.svg_path.c_str());
              return 1;
            }
            const TrialResult& b = r.trials[size_t(r.best)];
            std::printf("best: trial %d, R %.3f ms (target %.3f ms, %s), proxy accuracy %.1f %%, lambda %.4g\n", b.index,
                        b.R_ms, c.target_ms, r.best == r.best_in_band ? "in the goal band" : "below the goal band",
                        100 * b.accuracy, b.hyper.lambda);
            std::printf("architecture: %s\n", arch_summary(b.arch).c_str());
            std::printf("next: spnas train --arch %s --data %s (the full training, for its real accuracy)\n",
                        r.best_arch_path.c_str(), f->data.c_str());
            std::printf("files: %s %s %s\n", r.json_path.c_str(), r.svg_path.c_str(), r.best_arch_path.c_str());
            if (f->verify) verify_latency(b.arch, load_table(f->table), c.target_ms);
            return 0;
          }};
}

Command add_tune_trial(CLI::App& app) {
  struct Flags {
    std::string path;
    int threads = 1;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("tune-trial", "runs one trial of `spnas tune` (started by tune --jobs N)");
  s->group("");  // hidden from `spnas --help`
  s->add_option("trial", f->path, "the trial's trial.json")->required();
  add_threads(s, f->threads, 1);
  return {s, [f] {
            set_num_threads(f->threads);
            const TrialResult r = run_trial_from_file(f->path);
            return r.status == TrialStatus::Failed ? 1 : 0;
          }};
}

}  // namespace spnas::cli
