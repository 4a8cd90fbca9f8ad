// `spnas tune`: constraint-aware Bayesian optimisation of the search's own hyperparameters (the
// journal version of Single-Path NAS, with HyperPower's method). Given a space, its latency table,
// a target T and a dataset, it runs trials - one ordinary search at a proxy scale, then, only if the
// found architecture's predicted latency R meets R <= T, a short proxy training measured on held-out
// training images - and proposes each next trial's hyperparameters from the finished ones.
// Protocol, files, resume and the math: nas/tune/README.md.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/data.h"
#include "nas/data_parallel.h"
#include "nas/runtime.h"
#include "nas/space.h"
#include "nas/tune/bo.h"

namespace spnas {

struct TuneRange {
  double lo = 0, hi = 0;
};

// Runs one trial in a separate process - the program's hidden subcommand, which calls
// run_trial_from_file(trial_json_path) with `threads` threads - and returns when that process has
// ended (its outcome is the trial folder's result.json, read by the caller).
using TrialLauncher = std::function<void(const std::string& trial_json_path, int threads)>;

struct TuneConfig {
  // The problem. The table must be measured for this space at this width (R is read from it).
  std::string space = "cifar10";
  SpaceOptions space_options;
  std::string table_path;
  double fixed_ms = -1;          // overrides the table's fixed cost (needed for the paper's CSV)
  double target_ms = 0;          // T
  double window = 0.03;          // goal band [(1 - window) T, T]; 0: only R <= T
  DataSpec data{"synthetic", ""};
  double holdout = 0.1;          // of the training images: the proxy training's validation split
  double train_fraction = 1.0;   // of the remaining training images, used by every trial

  // Budget and method.
  int trials = 10;
  std::string method = "bo";     // bo | random
  int initial_trials = 3;        // bo: random trials before the first model-based one
  // bo: the acquisition's constraint. "band": EI x P(R in the goal band) (fewer trials to the band,
  // nas/tune/README.md); "feasible": HyperPower's EI x P(R <= T).
  std::string acquisition = "band";
  int jobs = 1;                  // trials at once (> 1 needs launch_trial)
  int threads = 0;               // threads shared by the jobs (0: the pool's size)
  std::string out_dir = "runs/tune";
  bool resume = false;
  uint64_t seed = 1;             // proposals, and every trial's search, split and training

  // The tuned hyperparameters. lambda (the runtime term's weight, SearchConfig::lambda) on a log scale;
  // the threshold learning-rate multiplier (log scale) and the threshold margin (linear) too unless
  // fixed (then at threshold_lr_mult / threshold_margin): lambda acts only after the warm-up, they from
  // the first step. Ranges and the measurements behind the default: nas/tune/README.md, "Variables".
  TuneRange lambda{0.01, 100};  // default_lambda_range("target")
  bool tune_threshold_lr_mult = true;
  TuneRange threshold_lr_mult_range{1, 1000};
  double threshold_lr_mult = 10;
  bool tune_threshold_margin = true;
  TuneRange threshold_margin_range{0, 3};
  double threshold_margin = 1;

  // Each trial's search (the proxy scale; the rest as SearchConfig's defaults).
  float search_epochs = 2;
  float search_warmup_epochs = 1;
  // SearchConfig::freeze_thresholds_in_warmup: "train" | "freeze".
  std::string warmup_thresholds = "train";
  // SearchConfig::threshold_momentum; < 0: the optimizer's (0.9).
  double threshold_momentum = -1;
  // SearchConfig::decode: "round" (each search returns its last decisions after the warm-up inside the
  // goal band — with window 0 the last with R <= T —, else its final ones rounded into the band:
  // round_into_band); "band": the same without the rounding (the final ones where no step was in the
  // band); "final": always the final ones.
  std::string decode = "round";
  int batch = 64;
  // SearchConfig::runtime_loss. The target form (T = the tune target) by default: it pulls R to T
  // itself, where R under the log form jumps with lambda (nas/tune/README.md, "Runs").
  std::string runtime_loss = "target";
  std::string runtime_mode = "formula";
  bool search_se = false;
  float bn_momentum = 0.9f;             // search and proxy training
  int workers = 1;                      // data-loading threads per trial
  // Under mpirun every trial's search and proxy training run data-parallel over the ranks with these
  // settings (nas/data_parallel.h); the ranks run the same proposals, rank 0 writes.
  ParallelConfig parallel;

  // The proxy training: TrainConfig's recipe (cosine schedule after a 0.3-epoch warm-up, EMA decay
  // from the run's length), the same for every trial so that accuracies compare.
  float train_epochs = 2;
  std::string train_optimizer = "sgd";  // Nesterov, momentum 0.9
  float train_lr = 0;                   // 0: default_learning_rate (0.1 at batch 64 for SGD)

  int64_t max_search_steps = -1;        // caps for quick checks (tests); -1: none
  int64_t max_train_steps = -1;
  bool quiet = false;
  TrialLauncher launch_trial;           // empty: trials run in this process (jobs must be 1)
};

// One trial's hyperparameters.
struct SearchHyper {
  double lambda = 0, threshold_lr_mult = 0, threshold_margin = 0;
};

// trial.json: everything a process needs to run one trial.
struct TrialSpec {
  TuneConfig config;
  int index = 0;
  std::string dir;                 // the trial folder (absolute)
  std::string proposed_by;         // "random" | "bo"
  std::vector<double> u;           // unit-cube coordinates of the tuned variables
  SearchHyper hyper;
  int threads = 0;                 // the share given to the trial's process (recorded)
};

enum class TrialStatus { Trained, Infeasible, Failed };

// result.json, and one entry of tune.json's "trials".
struct TrialResult {
  int index = 0;
  std::string proposed_by;
  std::vector<double> u;
  SearchHyper hyper;
  TrialStatus status = TrialStatus::Failed;
  Arch arch;
  double R_ms = 0;
  // The search's logged step whose decisions it returned (decode "band"/"round"); -1: its final decisions.
  int64_t decoded_at_step = -1;
  int rounded_flips = -1;          // decode "round": final decisions flipped into the band (-1: not rounded)
  std::vector<std::string> verdict;  // the search's verdict, as `spnas search` prints it (flips, margins)
  double accuracy = 0;             // proxy validation accuracy (Trained only)
  std::string error;               // Failed only
  int64_t search_steps = 0;
  double search_seconds = 0, train_seconds = 0, seconds = 0;
};

// The two stages of a trial. run_trial calls proxy_train only when R <= T.
struct TrialSearchOutcome {
  Arch arch;
  double R_ms = 0;  // the table's additive prediction of arch
  int64_t steps = 0;
  int64_t decoded_at_step = -1;  // SearchVerdict::decoded_at_step
  int rounded_flips = -1;        // SearchVerdict::rounded_flips
  std::vector<std::string> verdict;  // SearchVerdict::lines
};
struct TrialStages {
  std::function<TrialSearchOutcome(const TrialSpec&)> search;
  std::function<double(const TrialSpec&, const Arch&)> proxy_train;  // returns validation accuracy
};
// run_search into the trial folder; run_train into DIR/trial_NNN/proxy on the held-out view.
TrialStages real_trial_stages();

// Runs a trial and writes its folder's result.json atomically. A stage's error makes a Failed
// result; an interruption (SIGINT/SIGTERM) throws and writes nothing, so the trial is redone.
TrialResult run_trial(const TrialSpec& spec, const TrialStages& stages = real_trial_stages());
// What a trial's process runs: reads trial.json, then run_trial.
TrialResult run_trial_from_file(const std::string& trial_json_path, const TrialStages& stages = real_trial_stages());

struct TuneResult {
  std::vector<TrialResult> trials;  // by index
  int best = -1;                    // index: the most accurate in the goal band, else the most accurate feasible
  int best_in_band = -1, best_feasible = -1;
  double min_ms = 0, max_ms = 0;    // the table's bounds
  std::string json_path, svg_path, best_arch_path;
};

// Validates everything (table, space, data, target within the table's bounds, options) before the
// first trial, then runs the trials, writing DIR/tune.json after each, DIR/best/arch.json and
// DIR/tune.svg. With resume, continues DIR/tune.json (extra trials may be asked for).
TuneResult run_tune(const TuneConfig& cfg);

// The target is checked against table_runtime_bounds (nas/latency/table.h).

// lambda's default range for a runtime-term form (log [1e-5, 1], linear [1e-3, 100], target [0.01, 100]).
TuneRange default_lambda_range(const std::string& runtime_loss);

// The tuned variables of a configuration (lambda first) and a point's hyperparameters.
std::vector<TuneVariable> tune_variables(const TuneConfig& cfg);
SearchHyper hyper_from_unit(const TuneConfig& cfg, const std::vector<double>& u);

// Trial `index`'s point: random (seeded by the tune seed and the index) for the random method, for
// BO's first initial_trials and while fewer than two trials have finished; else propose_bo on the
// finished trials (failed ones left out) with the running trials' points as pending.
struct TrialPoint {
  std::vector<double> u;
  std::string proposed_by;  // "random" | "bo"
};
TrialPoint propose_trial(const TuneConfig& cfg, const std::vector<TrialResult>& done,
                         const std::vector<std::vector<double>>& pending, int index);

nlohmann::ordered_json tune_config_to_json(const TuneConfig& cfg);
TuneConfig tune_config_from_json(const nlohmann::ordered_json& j, const std::string& source);
nlohmann::ordered_json trial_result_to_json(const TrialResult& r);
TrialResult trial_result_from_json(const nlohmann::ordered_json& j, const std::string& source);
std::string trial_status_name(TrialStatus s);  // "trained" | "infeasible" | "failed"

}  // namespace spnas
