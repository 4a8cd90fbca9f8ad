#include "nas/tune/tune.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "engine/io.h"
#include "engine/threads.h"
#include "nas/run.h"
#include "nas/search.h"
#include "nas/train.h"

namespace spnas {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // files keep the order written: people read them

namespace {

// Reads j[key] into `out` when present; a present value of the wrong type is an error naming it.
template <class T>
void read_field(const json& j, const char* key, T& out, const std::string& source) {
  if (!j.contains(key)) return;
  try {
    out = j.at(key).get<T>();
  } catch (const json::exception&) {
    throw std::runtime_error("tune: '" + source + "': field '" + key + "' has the wrong type");
  }
}

// The dataset every trial sees: the tuning view of cfg.data (data/data.h, DataSpec).
DataSpec data_view(const TuneConfig& c) {
  DataSpec d = c.data;
  d.holdout = c.holdout;
  d.train_fraction = c.train_fraction;
  d.view_seed = c.seed;
  return d;
}

std::string trial_dir(const TuneConfig& c, int index) {
  char name[32];
  std::snprintf(name, sizeof name, "trial_%03d", index);
  return c.out_dir + "/" + name;
}

// A JSON file of this module (errors name the file).
json read_json_file(const std::string& path) { return json(parse_json(read_text_file(path, "tune"), "tune", path)); }

std::string percent(double fraction) { return fmt(100.0 * fraction, 1) + " %"; }

}  // namespace

// ---- variables --------------------------------------------------------------------------------------

std::vector<TuneVariable> tune_variables(const TuneConfig& c) {
  std::vector<TuneVariable> v = {{"lambda", c.lambda.lo, c.lambda.hi, true}};
  if (c.tune_threshold_lr_mult)
    v.push_back({"threshold_lr_mult", c.threshold_lr_mult_range.lo, c.threshold_lr_mult_range.hi, true});
  if (c.tune_threshold_margin)
    v.push_back({"threshold_margin", c.threshold_margin_range.lo, c.threshold_margin_range.hi, false});
  return v;
}

SearchHyper hyper_from_unit(const TuneConfig& c, const std::vector<double>& u) {
  const std::vector<TuneVariable> vars = tune_variables(c);
  if (u.size() != vars.size())
    throw std::runtime_error("tune: a point has " + std::to_string(u.size()) + " coordinates for " +
                             std::to_string(vars.size()) + " tuned variables");
  SearchHyper h{0, c.threshold_lr_mult, c.threshold_margin};
  for (size_t i = 0; i < vars.size(); ++i) {
    const double v = vars[i].value(u[i]);
    if (vars[i].name == "lambda") h.lambda = v;
    else if (vars[i].name == "threshold_lr_mult") h.threshold_lr_mult = v;
    else h.threshold_margin = v;
  }
  return h;
}

TrialPoint propose_trial(const TuneConfig& c, const std::vector<TrialResult>& done,
                         const std::vector<std::vector<double>>& pending, int index) {
  const int dims = int(tune_variables(c).size());
  const uint64_t seed = mix_seed(c.seed, 0x74756e65ULL, uint64_t(index));
  std::vector<BoObservation> observed;
  for (const TrialResult& r : done)
    if (r.status != TrialStatus::Failed)
      observed.push_back({r.u, r.R_ms, r.status == TrialStatus::Trained, r.accuracy});
  if (c.method == "bo" && index >= c.initial_trials && observed.size() >= 2) {  // one point shows no trend
    BoSettings bo;
    bo.target_ms = c.target_ms;
    bo.window = c.acquisition == "band" ? c.window : 0.0;  // 0: P(R <= T)
    return {propose_bo(observed, pending, dims, bo, seed).u, "bo"};
  }
  return {propose_random(dims, seed), "random"};  // the same point for both methods: a fair comparison
}

// ---- the table's bounds ------------------------------------------------------------------------------

TuneRange default_lambda_range(const std::string& runtime_loss) {
  // log: lambda*1e3*ln R is large already at lambda 1 (nearly everything removed); target and linear
  // are O(1) per unit of R/T - 1 or of R in ms and need a stronger weight to act.
  if (runtime_loss == "log") return {1e-5, 1.0};
  if (runtime_loss == "linear") return {1e-3, 100};
  return {0.01, 100};
}

// ---- JSON ---------------------------------------------------------------------------------------------

json tune_config_to_json(const TuneConfig& c) {
  auto range = [](const TuneRange& r) { return json::array({r.lo, r.hi}); };
  json j{{"space", c.space},
              {"width", c.space_options.width},
              {"input_size", c.space_options.input_size},
              {"num_classes", c.space_options.num_classes},
              {"table", c.table_path},
              {"fixed_ms", c.fixed_ms},
              {"target_ms", c.target_ms},
              {"window", c.window},
              {"data", {{"kind", c.data.kind}, {"path", c.data.path}}},
              {"holdout", c.holdout},
              {"train_fraction", c.train_fraction},
              {"trials", c.trials},
              {"method", c.method},
              {"initial_trials", c.initial_trials},
              {"acquisition", c.acquisition},
              {"jobs", c.jobs},
              {"threads", c.threads},
              {"out_dir", c.out_dir},
              {"seed", c.seed},
              {"lambda_range", range(c.lambda)},
              {"tune_threshold_lr_mult", c.tune_threshold_lr_mult},
              {"threshold_lr_mult_range", range(c.threshold_lr_mult_range)},
              {"threshold_lr_mult", c.threshold_lr_mult},
              {"tune_threshold_margin", c.tune_threshold_margin},
              {"threshold_margin_range", range(c.threshold_margin_range)},
              {"threshold_margin", c.threshold_margin},
              {"search_epochs", c.search_epochs},
              {"search_warmup_epochs", c.search_warmup_epochs},
              {"warmup_thresholds", c.warmup_thresholds},
              {"threshold_momentum", c.threshold_momentum},
              {"decode", c.decode},
              {"batch", c.batch},
              {"runtime_loss", c.runtime_loss},
              {"runtime_mode", c.runtime_mode},
              {"search_se", c.search_se},
              {"bn_momentum", c.bn_momentum},
              {"workers", c.workers},
              {"train_epochs", c.train_epochs},
              {"train_optimizer", c.train_optimizer},
              {"train_lr", c.train_lr},
              {"max_search_steps", c.max_search_steps},
              {"max_train_steps", c.max_train_steps},
              {"quiet", c.quiet}};
  // The data-parallel settings where they differ from one process (older records stay comparable).
  const nlohmann::json parallel = with_parallel_record(nlohmann::json::object(), c.parallel);
  for (const auto& kv : parallel.items()) j[kv.key()] = kv.value();
  if (c.parallel.timeout_s != ParallelConfig{}.timeout_s) j["dist_timeout"] = c.parallel.timeout_s;
  if (c.parallel.bucket_mb != ParallelConfig{}.bucket_mb) j["bucket_mb"] = c.parallel.bucket_mb;
  return j;
}

TuneConfig tune_config_from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw std::runtime_error("tune: '" + source + "': the configuration must be a JSON object");
  TuneConfig c;
  auto range = [&](const char* key, TuneRange& r) {
    std::vector<double> v{r.lo, r.hi};
    read_field(j, key, v, source);
    if (v.size() != 2) throw std::runtime_error("tune: '" + source + "': field '" + key + "' must be [lo, hi]");
    r = {v[0], v[1]};
  };
  read_field(j, "space", c.space, source);
  read_field(j, "width", c.space_options.width, source);
  read_field(j, "input_size", c.space_options.input_size, source);
  read_field(j, "num_classes", c.space_options.num_classes, source);
  read_field(j, "table", c.table_path, source);
  read_field(j, "fixed_ms", c.fixed_ms, source);
  read_field(j, "target_ms", c.target_ms, source);
  read_field(j, "window", c.window, source);
  if (j.contains("data")) {
    read_field(j.at("data"), "kind", c.data.kind, source);
    read_field(j.at("data"), "path", c.data.path, source);
  }
  read_field(j, "holdout", c.holdout, source);
  read_field(j, "train_fraction", c.train_fraction, source);
  read_field(j, "trials", c.trials, source);
  read_field(j, "method", c.method, source);
  read_field(j, "initial_trials", c.initial_trials, source);
  read_field(j, "acquisition", c.acquisition, source);
  read_field(j, "jobs", c.jobs, source);
  read_field(j, "threads", c.threads, source);
  read_field(j, "out_dir", c.out_dir, source);
  read_field(j, "seed", c.seed, source);
  range("lambda_range", c.lambda);
  read_field(j, "tune_threshold_lr_mult", c.tune_threshold_lr_mult, source);
  range("threshold_lr_mult_range", c.threshold_lr_mult_range);
  read_field(j, "threshold_lr_mult", c.threshold_lr_mult, source);
  read_field(j, "tune_threshold_margin", c.tune_threshold_margin, source);
  range("threshold_margin_range", c.threshold_margin_range);
  read_field(j, "threshold_margin", c.threshold_margin, source);
  read_field(j, "search_epochs", c.search_epochs, source);
  read_field(j, "search_warmup_epochs", c.search_warmup_epochs, source);
  c.warmup_thresholds = "train";  // records written before the field existed trained them
  read_field(j, "warmup_thresholds", c.warmup_thresholds, source);
  c.threshold_momentum = -1;  // older records: the optimizer's
  read_field(j, "threshold_momentum", c.threshold_momentum, source);
  c.decode = "final";  // older records: the final decisions
  read_field(j, "decode", c.decode, source);
  read_field(j, "batch", c.batch, source);
  read_field(j, "runtime_loss", c.runtime_loss, source);
  read_field(j, "runtime_mode", c.runtime_mode, source);
  read_field(j, "search_se", c.search_se, source);
  read_field(j, "bn_momentum", c.bn_momentum, source);
  read_field(j, "workers", c.workers, source);
  read_field(j, "train_epochs", c.train_epochs, source);
  read_field(j, "train_optimizer", c.train_optimizer, source);
  read_field(j, "train_lr", c.train_lr, source);
  read_field(j, "max_search_steps", c.max_search_steps, source);
  read_field(j, "max_train_steps", c.max_train_steps, source);
  read_field(j, "quiet", c.quiet, source);
  read_field(j, "sync_bn", c.parallel.sync_bn, source);
  read_field(j, "bn_groups", c.parallel.bn_groups, source);
  read_field(j, "dist_timeout", c.parallel.timeout_s, source);
  read_field(j, "bucket_mb", c.parallel.bucket_mb, source);
  return c;
}

std::string trial_status_name(TrialStatus s) {
  switch (s) {
    case TrialStatus::Trained: return "trained";
    case TrialStatus::Infeasible: return "infeasible";
    case TrialStatus::Failed: return "failed";
  }
  return "failed";
}

static json hyper_to_json(const SearchHyper& h) {
  return json{{"lambda", h.lambda}, {"threshold_lr_mult", h.threshold_lr_mult}, {"threshold_margin", h.threshold_margin}};
}

static SearchHyper hyper_from_json(const json& j, const std::string& source) {
  SearchHyper h;
  read_field(j, "lambda", h.lambda, source);
  read_field(j, "threshold_lr_mult", h.threshold_lr_mult, source);
  read_field(j, "threshold_margin", h.threshold_margin, source);
  return h;
}

json trial_result_to_json(const TrialResult& r) {
  json j{{"index", r.index},
         {"proposed_by", r.proposed_by},
         {"u", r.u},
         {"hyperparameters", hyper_to_json(r.hyper)},
         {"status", trial_status_name(r.status)},
         {"search_steps", r.search_steps},
         {"search_seconds", r.search_seconds},
         {"train_seconds", r.train_seconds},
         {"seconds", r.seconds}};
  if (r.status != TrialStatus::Failed) {
    j["arch"] = json::parse(arch_to_json(r.arch));
    j["arch_summary"] = arch_summary(r.arch);
    j["R_ms"] = r.R_ms;
    j["decoded_at_step"] = r.decoded_at_step;
    if (r.rounded_flips >= 0) j["rounded_flips"] = r.rounded_flips;
    if (!r.verdict.empty()) j["verdict"] = r.verdict;
  }
  if (r.status == TrialStatus::Trained) j["accuracy"] = r.accuracy;
  else if (r.status == TrialStatus::Infeasible) j["accuracy"] = "infeasible";
  else j["error"] = r.error;
  return j;
}

TrialResult trial_result_from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw std::runtime_error("tune: '" + source + "': a trial must be a JSON object");
  TrialResult r;
  std::string status;
  read_field(j, "index", r.index, source);
  read_field(j, "proposed_by", r.proposed_by, source);
  read_field(j, "u", r.u, source);
  read_field(j, "status", status, source);
  read_field(j, "search_steps", r.search_steps, source);
  read_field(j, "search_seconds", r.search_seconds, source);
  read_field(j, "train_seconds", r.train_seconds, source);
  read_field(j, "seconds", r.seconds, source);
  if (j.contains("hyperparameters")) r.hyper = hyper_from_json(j.at("hyperparameters"), source);
  if (status == "trained") r.status = TrialStatus::Trained;
  else if (status == "infeasible") r.status = TrialStatus::Infeasible;
  else if (status == "failed") r.status = TrialStatus::Failed;
  else throw std::runtime_error("tune: '" + source + "': trial status '" + status + "' is not trained|infeasible|failed");
  if (r.status != TrialStatus::Failed) {
    if (!j.contains("arch") || !j.contains("R_ms"))
      throw std::runtime_error("tune: '" + source + "': a " + status + " trial needs 'arch' and 'R_ms'");
    r.arch = parse_arch(j.at("arch").dump(), source);
    read_field(j, "R_ms", r.R_ms, source);
    r.decoded_at_step = -1;  // older records: the final decisions
    read_field(j, "decoded_at_step", r.decoded_at_step, source);
    r.rounded_flips = -1;  // absent: not rounded
    read_field(j, "rounded_flips", r.rounded_flips, source);
    read_field(j, "verdict", r.verdict, source);  // absent in older records
  }
  if (r.status == TrialStatus::Trained) read_field(j, "accuracy", r.accuracy, source);
  if (r.status == TrialStatus::Failed) read_field(j, "error", r.error, source);
  return r;
}

static json trial_spec_to_json(const TrialSpec& t) {
  return json{{"format", "spnas-tune-trial"}, {"version", 1},          {"index", t.index},
              {"dir", t.dir},                 {"proposed_by", t.proposed_by}, {"u", t.u},
              {"hyperparameters", hyper_to_json(t.hyper)},             {"threads", t.threads},
              {"config", tune_config_to_json(t.config)}};
}

static TrialSpec trial_spec_from_json(const json& j, const std::string& source) {
  if (!j.is_object() || j.value("format", "") != "spnas-tune-trial" || !j.contains("config"))
    throw std::runtime_error("tune: '" + source + "' is not a trial file (format spnas-tune-trial)");
  TrialSpec t;
  t.config = tune_config_from_json(j.at("config"), source);
  read_field(j, "index", t.index, source);
  read_field(j, "dir", t.dir, source);
  read_field(j, "proposed_by", t.proposed_by, source);
  read_field(j, "u", t.u, source);
  read_field(j, "threads", t.threads, source);
  if (!j.contains("hyperparameters")) throw std::runtime_error("tune: '" + source + "' has no hyperparameters");
  t.hyper = hyper_from_json(j.at("hyperparameters"), source);
  if (t.dir.empty()) throw std::runtime_error("tune: '" + source + "' names no trial folder");
  return t;
}

// ---- one trial ------------------------------------------------------------------------------------------

// The search a trial runs: an ordinary one at the proxy scale, with the trial's hyperparameters.
static SearchConfig trial_search_config(const TuneConfig& c, const SearchHyper& h, const std::string& dir) {
  SearchConfig s;
  s.space = c.space;
  s.space_options = c.space_options;
  s.data = data_view(c);
  s.batch = c.batch;
  s.epochs = c.search_epochs;
  s.warmup_epochs = c.search_warmup_epochs;
  s.freeze_thresholds_in_warmup = c.warmup_thresholds == "freeze";
  s.threshold_momentum = float(c.threshold_momentum);
  if (c.decode != "final") {
    s.decode = c.decode == "round" ? DecodeRule::Round : DecodeRule::LastInBand;
    s.decode_band = c.window > 0 ? float(c.window) : 1.0f;
  }
  s.lambda = float(h.lambda);
  s.threshold_lr_mult = float(h.threshold_lr_mult);
  s.threshold_margin = float(h.threshold_margin);
  s.runtime_loss = parse_runtime_loss(c.runtime_loss);
  s.target_ms = float(c.target_ms);  // the target form's T; else the trial's verdict and plot show it
  s.runtime_mode = parse_runtime_mode(c.runtime_mode);
  s.search_se = c.search_se;
  s.bn_momentum = c.bn_momentum;
  s.seed = c.seed;
  s.workers = c.workers;
  s.out_dir = dir;
  s.checkpoint_every = 0;
  s.max_steps = c.max_search_steps;
  s.quiet = c.quiet || c.jobs > 1;  // parallel trials' progress bars would interleave
  s.parallel = c.parallel;
  return s;
}

TrialStages real_trial_stages() {
  TrialStages st;
  st.search = [](const TrialSpec& t) {
    const TuneConfig& c = t.config;
    const SearchConfig s = trial_search_config(c, t.hyper, t.dir);
    const LatencyTable table = load_latency_table(c.table_path, c.fixed_ms);
    const SearchResult r = run_search(s, table);  // a signal throws Interrupted: the trial is redone
    // A trial is redone, never resumed, so the supernet's checkpoint (the folder's largest file) goes.
    std::remove(r.checkpoint_path.c_str());
    return TrialSearchOutcome{r.arch, r.predicted_ms, r.steps, r.verdict.decoded_at_step, r.verdict.rounded_flips,
                              r.verdict.lines};
  };
  st.proxy_train = [](const TrialSpec& t, const Arch& arch) {
    const TuneConfig& c = t.config;
    TrainConfig tc;
    tc.arch = arch;
    tc.arch_source = t.dir + "/arch.json";
    tc.data = data_view(c);
    tc.batch = c.batch;
    tc.epochs = c.train_epochs;
    tc.lr.lr = c.train_lr;  // TrainConfig's cosine schedule and warm-up; 0: its default rate
    tc.optimizer = c.train_optimizer;
    tc.bn_momentum = c.bn_momentum;
    tc.seed = c.seed;
    tc.workers = c.workers;
    tc.out_dir = t.dir + "/proxy";
    tc.eval_each_epoch = false;
    tc.max_steps = c.max_train_steps;
    tc.quiet = c.quiet || c.jobs > 1;
    tc.parallel = c.parallel;
    const TrainResult r = run_train(tc);
    std::remove(r.checkpoint_path.c_str());
    return r.test.accuracy;  // the view's test split: the held-out training images
  };
  return st;
}

TrialResult run_trial(const TrialSpec& t, const TrialStages& stages) {
  TrialResult r;
  r.index = t.index;
  r.proposed_by = t.proposed_by;
  r.u = t.u;
  r.hyper = t.hyper;
  if (is_writer()) make_dirs(t.dir);
  const double t0 = now_seconds();
  try {
    const TrialSearchOutcome o = stages.search(t);
    r.search_seconds = now_seconds() - t0;
    if (!(o.R_ms > 0) || !std::isfinite(o.R_ms))
      throw std::runtime_error("the search stage reported R = " + std::to_string(o.R_ms) + " ms");
    r.arch = o.arch;
    r.R_ms = o.R_ms;
    r.search_steps = o.steps;
    r.decoded_at_step = o.decoded_at_step;
    r.rounded_flips = o.rounded_flips;
    r.verdict = o.verdict;
    if (o.R_ms > t.config.target_ms) {
      r.status = TrialStatus::Infeasible;  // HyperPower: a network that misses the constraint is not trained
    } else {
      const double t1 = now_seconds();
      r.accuracy = stages.proxy_train(t, o.arch);
      r.train_seconds = now_seconds() - t1;
      if (!(r.accuracy >= 0 && r.accuracy <= 1))
        throw std::runtime_error("the proxy training reported accuracy " + std::to_string(r.accuracy));
      r.status = TrialStatus::Trained;
    }
  } catch (const Interrupted&) {
    throw;  // not a property of the hyperparameters: no result, so the trial is redone
  } catch (const std::exception& e) {
    r.status = TrialStatus::Failed;
    r.error = e.what();
  }
  r.seconds = now_seconds() - t0;
  if (is_writer()) write_file_atomic(t.dir + "/result.json", trial_result_to_json(r).dump(2) + "\n");
  return r;
}

TrialResult run_trial_from_file(const std::string& path, const TrialStages& stages) {
  const TrialSpec spec = trial_spec_from_json(read_json_file(path), path);
  return run_trial(spec, stages);
}

// ---- the run ---------------------------------------------------------------------------------------------

namespace {

// Paths made absolute, so a trial's process may start anywhere.
TuneConfig with_absolute_paths(TuneConfig c) {
  auto abs = [](const std::string& p) { return p.empty() ? p : fs::absolute(p).lexically_normal().string(); };
  c.out_dir = abs(c.out_dir);
  c.table_path = abs(c.table_path);
  if (fs::exists(c.space)) c.space = abs(c.space);  // else a built-in space's name
  if (c.data.kind != "synthetic") c.data.path = abs(c.data.path);
  return c;
}

void fail(const std::string& what) { throw std::runtime_error("tune: " + what); }

void validate_options(const TuneConfig& c) {
  if (!(c.target_ms > 0)) fail("the target must be positive (ms), got " + fmt(c.target_ms));
  if (!(c.window >= 0 && c.window < 1)) fail("the window must be in [0, 1), got " + fmt(c.window));
  if (c.trials < 1) fail("trials must be at least 1");
  if (c.method != "bo" && c.method != "random") fail("method must be bo or random, got '" + c.method + "'");
  if (c.initial_trials < 1) fail("initial trials must be at least 1");
  if (c.acquisition != "band" && c.acquisition != "feasible")
    fail("acquisition must be band or feasible, got '" + c.acquisition + "'");
  if (c.jobs < 1) fail("jobs must be at least 1");
  if (c.jobs > 1 && !c.launch_trial) fail("parallel trials (jobs > 1) need a process launcher");
  if (c.table_path.empty()) fail("a latency table is needed (make one with `spnas profile`)");
  if (!(c.holdout > 0 && c.holdout < 1)) fail("the held-out fraction must be in (0, 1), got " + fmt(c.holdout));
  if (!(c.train_fraction > 0 && c.train_fraction <= 1))
    fail("the training fraction must be in (0, 1], got " + fmt(c.train_fraction));
  if (!(c.search_epochs > 0) || !(c.search_warmup_epochs >= 0) || !(c.train_epochs > 0))
    fail("search and training epochs must be positive (warm-up non-negative)");
  if (c.batch < 2) fail("the batch must be at least 2 (batch norm)");
  if (c.warmup_thresholds != "train" && c.warmup_thresholds != "freeze")
    fail("warmup_thresholds must be train or freeze, got '" + c.warmup_thresholds + "'");
  if (!(c.threshold_momentum < 1))
    fail("threshold_momentum must be below 1 (negative: the optimizer's), got " + fmt(c.threshold_momentum));
  if (c.decode != "final" && c.decode != "band" && c.decode != "round")
    fail("decode must be final, band or round, got '" + c.decode + "'");
  parse_runtime_loss(c.runtime_loss);
  parse_runtime_mode(c.runtime_mode);
  for (const TuneVariable& v : tune_variables(c)) {
    if (!(v.hi > v.lo) || !std::isfinite(v.lo) || !std::isfinite(v.hi) || (v.log_scale && !(v.lo > 0)))
      fail("the range of " + v.name + " must have lo < hi" + (v.log_scale ? " and lo > 0 (log scale)" : "") +
           ", got [" + std::to_string(v.lo) + ", " + std::to_string(v.hi) + "]");
  }
  if (c.tune_threshold_margin && c.threshold_margin_range.lo < 0) fail("the threshold margin range must be >= 0");
  if (!(c.threshold_lr_mult > 0) || !std::isfinite(c.threshold_margin))
    fail("the fixed threshold lr multiplier must be positive and the margin finite");
}

struct Best {
  int in_band = -1, feasible = -1, first_in_band = -1;
  int best() const { return in_band >= 0 ? in_band : feasible; }
};

Best find_best(const std::map<int, TrialResult>& done, const TuneConfig& c) {
  Best b;
  for (const auto& kv : done) {
    const TrialResult& r = kv.second;
    if (r.status != TrialStatus::Trained) continue;
    if (b.feasible < 0 || r.accuracy > done.at(b.feasible).accuracy) b.feasible = r.index;
    if (in_goal_band(r.R_ms, c.target_ms, c.window)) {
      if (b.first_in_band < 0) b.first_in_band = r.index;
      if (b.in_band < 0 || r.accuracy > done.at(b.in_band).accuracy) b.in_band = r.index;
    }
  }
  return b;
}

// DIR/tune.svg: R per trial against the target and its band; accuracy against R.
void write_tune_svg(const std::string& path, const std::map<int, TrialResult>& done, const TuneConfig& c,
                    const RuntimeBounds& bounds, int best) {
  const double T = c.target_ms, low = goal_band_low(c.target_ms, c.window);
  const int pw = 400, ph = 300, top = 50, left1 = 70, left2 = 560;
  double rlo = std::min(bounds.min_ms, low), rhi = bounds.max_ms;
  double alo = 1, ahi = 0;
  int n = c.trials;
  for (const auto& kv : done) {
    n = std::max(n, kv.first + 1);
    if (kv.second.status == TrialStatus::Trained) alo = std::min(alo, kv.second.accuracy), ahi = std::max(ahi, kv.second.accuracy);
  }
  if (ahi < alo) alo = 0, ahi = 1;
  const double pad = std::max(0.01, 0.05 * (ahi - alo));  // points stay off the frame
  alo -= pad, ahi += pad;
  auto xr = [&](double R) { return left2 + (R - rlo) / (rhi - rlo) * pw; };          // panel 2: R on x
  auto yr = [&](double R) { return top + ph - (R - rlo) / (rhi - rlo) * ph; };       // panel 1: R on y
  auto xt = [&](int i) { return left1 + (n > 1 ? double(i) / (n - 1) : 0.5) * pw; };
  auto ya = [&](double a) { return top + ph - (a - alo) / (ahi - alo) * ph; };
  std::ostringstream s;
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='1000' height='" << top + ph + 60
    << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n";
  s << "<text x='" << left1 << "' y='20' font-size='15'>spnas tune: T = " << fmt(T) << " ms, band " << fmt(low)
    << "-" << fmt(T) << " ms, " << done.size() << " trials (" << c.method << ")</text>\n";
  // Panel 1: R per trial.
  s << "<rect x='" << left1 << "' y='" << yr(T) << "' width='" << pw << "' height='" << yr(low) - yr(T)
    << "' fill='#d5f5e3'/>\n<line x1='" << left1 << "' x2='" << left1 + pw << "' y1='" << yr(T) << "' y2='" << yr(T)
    << "' stroke='#c0392b' stroke-dasharray='5,3'/>\n";
  s << "<rect x='" << left1 << "' y='" << top << "' width='" << pw << "' height='" << ph << "' fill='none' stroke='#999'/>\n";
  s << "<text x='" << left1 << "' y='" << top - 8 << "'>R (ms) per trial; dashed: target; green: goal band</text>\n";
  s << "<text x='" << left1 - 6 << "' y='" << top + 10 << "' text-anchor='end'>" << fmt(rhi) << "</text><text x='"
    << left1 - 6 << "' y='" << top + ph << "' text-anchor='end'>" << fmt(rlo) << "</text>\n";
  s << "<text x='" << left1 << "' y='" << top + ph + 18 << "'>trial 0</text><text x='" << left1 + pw << "' y='"
    << top + ph + 18 << "' text-anchor='end'>" << n - 1 << "</text>\n";
  for (const auto& kv : done) {
    const TrialResult& r = kv.second;
    if (r.status == TrialStatus::Failed) continue;
    const char* colour = r.status == TrialStatus::Infeasible ? "#c0392b"
                         : in_goal_band(r.R_ms, T, c.window) ? "#1e8449" : "#2e86c1";
    s << "<circle cx='" << xt(r.index) << "' cy='" << yr(r.R_ms) << "' r='" << (r.index == best ? 6 : 4)
      << "' fill='" << colour << "'" << (r.index == best ? " stroke='black' stroke-width='2'" : "") << "/>\n";
  }
  // Panel 2: accuracy against R (trained trials).
  s << "<rect x='" << xr(low) << "' y='" << top << "' width='" << xr(T) - xr(low) << "' height='" << ph
    << "' fill='#d5f5e3'/>\n<line x1='" << xr(T) << "' x2='" << xr(T) << "' y1='" << top << "' y2='" << top + ph
    << "' stroke='#c0392b' stroke-dasharray='5,3'/>\n";
  s << "<rect x='" << left2 << "' y='" << top << "' width='" << pw << "' height='" << ph << "' fill='none' stroke='#999'/>\n";
  s << "<text x='" << left2 << "' y='" << top - 8 << "'>proxy validation accuracy against R (ms)</text>\n";
  s << "<text x='" << left2 - 6 << "' y='" << top + 10 << "' text-anchor='end'>" << percent(ahi) << "</text><text x='"
    << left2 - 6 << "' y='" << top + ph << "' text-anchor='end'>" << percent(alo) << "</text>\n";
  s << "<text x='" << left2 << "' y='" << top + ph + 18 << "'>" << fmt(rlo) << "</text><text x='" << left2 + pw
    << "' y='" << top + ph + 18 << "' text-anchor='end'>" << fmt(rhi) << "</text>\n";
  for (const auto& kv : done) {
    const TrialResult& r = kv.second;
    if (r.status != TrialStatus::Trained) continue;
    s << "<circle cx='" << xr(r.R_ms) << "' cy='" << ya(r.accuracy) << "' r='" << (r.index == best ? 6 : 4)
      << "' fill='" << (in_goal_band(r.R_ms, T, c.window) ? "#1e8449" : "#2e86c1") << "'"
      << (r.index == best ? " stroke='black' stroke-width='2'" : "") << "/>\n";
  }
  s << "<text x='" << left1 << "' y='" << top + ph + 45
    << "'>green: in the band; blue: feasible, below it; red: R above T (not trained); ringed: the best</text>\n</svg>\n";
  write_file_atomic(path, s.str());
}

json trial_summary(const TrialResult& r) {
  return json{{"index", r.index}, {"R_ms", r.R_ms}, {"accuracy", r.accuracy},
              {"hyperparameters", hyper_to_json(r.hyper)}, {"arch_summary", arch_summary(r.arch)}};
}

// Everything the run knows, written after every trial.
class TuneReport {
 public:
  TuneReport(const TuneConfig& c, const RuntimeBounds& b) : c_(c), bounds_(b) {}

  void write(const std::map<int, TrialResult>& done, bool finished) const {
    if (!is_writer()) return;
    const Best b = find_best(done, c_);
    json trials = json::array();
    int trained = 0, infeasible = 0, failed = 0;
    for (const auto& kv : done) {
      json t = trial_result_to_json(kv.second);
      char name[32];
      std::snprintf(name, sizeof name, "trial_%03d", kv.first);
      t["dir"] = name;
      if (kv.second.status != TrialStatus::Failed) t["in_band"] = in_goal_band(kv.second.R_ms, c_.target_ms, c_.window);
      trials.push_back(t);
      trained += kv.second.status == TrialStatus::Trained;
      infeasible += kv.second.status == TrialStatus::Infeasible;
      failed += kv.second.status == TrialStatus::Failed;
    }
    json vars = json::array();
    for (const TuneVariable& v : tune_variables(c_))
      vars.push_back({{"name", v.name}, {"lo", v.lo}, {"hi", v.hi}, {"scale", v.log_scale ? "log" : "linear"}});
    json best = nullptr;
    if (b.best() >= 0) {
      best = trial_summary(done.at(b.best()));
      best["rule"] = b.in_band >= 0 ? "the most accurate trial in the goal band"
                                    : "the most accurate feasible trial (none is in the goal band)";
      best["arch_path"] = "best/arch.json";
      make_dirs(c_.out_dir + "/best");
      save_arch(c_.out_dir + "/best/arch.json", done.at(b.best()).arch);
    }
    json j{{"format", "spnas-tune"},
           {"version", 1},
           {"status", finished ? "finished" : "running"},
           {"target_ms", c_.target_ms},
           {"band_ms", {goal_band_low(c_.target_ms, c_.window), c_.target_ms}},
           {"bounds_ms",
            {{"min", bounds_.min_ms}, {"max", bounds_.max_ms}, {"smallest", arch_summary(bounds_.smallest)},
             {"largest", arch_summary(bounds_.largest)}}},
           {"best", best},
           {"best_in_band", b.in_band >= 0 ? trial_summary(done.at(b.in_band)) : json(nullptr)},
           {"best_feasible", b.feasible >= 0 ? trial_summary(done.at(b.feasible)) : json(nullptr)},
           {"first_in_band", b.first_in_band >= 0 ? json(b.first_in_band) : json(nullptr)},
           {"counts", {{"trained", trained}, {"infeasible", infeasible}, {"failed", failed}}},
           {"variables", vars},
           {"trials", trials},
           {"config", tune_config_to_json(c_)}};
    write_tune_svg(c_.out_dir + "/tune.svg", done, c_, bounds_, b.best());
    write_file_atomic(c_.out_dir + "/tune.json", j.dump(2) + "\n");
  }

  void progress_line(const TrialResult& r, const std::map<int, TrialResult>& done) const {
    if (c_.quiet || !is_writer()) return;
    std::ostringstream s;
    char lambda[32];
    std::snprintf(lambda, sizeof lambda, "%.3g", r.hyper.lambda);  // spans three decades: significant digits
    s << "tune: trial " << r.index << " [" << done.size() << "/" << c_.trials << " done] (" << r.proposed_by
      << ") lambda " << lambda;
    if (c_.tune_threshold_lr_mult) s << " lr-mult " << fmt(r.hyper.threshold_lr_mult, 1);
    if (c_.tune_threshold_margin) s << " margin " << fmt(r.hyper.threshold_margin, 2);
    if (r.status == TrialStatus::Failed) {
      s << " -> failed: " << r.error;
    } else {
      s << " -> R " << fmt(r.R_ms) << " ms (T " << fmt(c_.target_ms) << ")";
      if (r.decoded_at_step >= 0) s << " held at step " << r.decoded_at_step;
      if (r.rounded_flips >= 0) s << " rounded (" << r.rounded_flips << " flips)";
      if (r.status == TrialStatus::Infeasible) s << " infeasible, not trained";
      else s << (in_goal_band(r.R_ms, c_.target_ms, c_.window) ? " in band" : " feasible") << ", accuracy " << percent(r.accuracy);
    }
    s << ", " << fmt(r.seconds, 0) << " s";
    const Best b = find_best(done, c_);
    if (b.best() >= 0) {
      const TrialResult& best = done.at(b.best());
      s << " | best: trial " << best.index << ", " << percent(best.accuracy) << " at " << fmt(best.R_ms) << " ms"
        << (b.in_band >= 0 ? " (in band)" : " (below the band)");
    } else {
      s << " | no feasible trial yet";
    }
    std::fprintf(stderr, "%s\n", s.str().c_str());
  }

 private:
  const TuneConfig& c_;
  const RuntimeBounds& bounds_;
};

// Reads the finished trials of a previous run (resume): those in DIR/tune.json, plus any whose
// result.json was written but not yet recorded when the run stopped.
std::map<int, TrialResult> load_previous(const TuneConfig& c, const std::string& json_path, size_t dims) {
  std::map<int, TrialResult> done;
  const json j = read_json_file(json_path);
  if (!j.is_object() || j.value("format", "") != "spnas-tune" || !j.contains("config") || !j.contains("trials"))
    fail("'" + json_path + "' is not a tune record (format spnas-tune)");
  compare_run_config(nlohmann::json(j.at("config")), nlohmann::json(tune_config_to_json(c)),
                     {"trials", "jobs", "threads", "quiet", "dist_timeout", "bucket_mb"}, false, json_path);
  for (const json& t : j.at("trials")) {
    TrialResult r = trial_result_from_json(t, json_path);
    done[r.index] = r;
  }
  for (const auto& entry : fs::directory_iterator(c.out_dir)) {
    const std::string name = entry.path().filename().string();
    int index = -1;
    if (std::sscanf(name.c_str(), "trial_%d", &index) != 1 || index < 0 || done.count(index)) continue;
    const std::string result = entry.path().string() + "/result.json";
    if (!fs::exists(result)) continue;
    try {  // written atomically, so it is whole or absent; a stale format is simply redone
      TrialResult r = trial_result_from_json(read_json_file(result), result);
      if (r.index == index) done[index] = r;
    } catch (const std::exception&) {
    }
  }
  for (const auto& kv : done)
    if (kv.second.u.size() != dims) fail("'" + json_path + "': trial " + std::to_string(kv.first) + " has the wrong dimension");
  return done;
}

}  // namespace

TuneResult run_tune(const TuneConfig& cfg_in) {
  const TuneConfig c = with_absolute_paths(cfg_in);
  validate_options(c);

  // Everything a trial reads is checked before the first one starts.
  const LatencyTable table = load_latency_table(c.table_path, c.fixed_ms);
  const SearchSpace space = load_space(c.space, c.space_options);
  const RuntimeBounds bounds = table_runtime_bounds(table, space, c.search_se);
  if (c.target_ms < bounds.min_ms || c.target_ms > bounds.max_ms)
    fail("target " + fmt(c.target_ms) + " ms is outside what the table '" + c.table_path + "' allows: from " +
         fmt(bounds.min_ms) + " ms (smallest network: " + arch_summary(bounds.smallest) + ") to " + fmt(bounds.max_ms) +
         " ms (largest: " + arch_summary(bounds.largest) + ")");
  {
    // The search's own checks, once, at the middle of the ranges, without the warning that the target
    // is only reported against unless the search uses the target form (the trials keep it: the
    // verdict and --decode band use it).
    SearchConfig s = trial_search_config(c, hyper_from_unit(c, std::vector<double>(tune_variables(c).size(), 0.5)), "");
    if (s.runtime_loss != RuntimeLoss::Target) s.target_ms = 0, s.decode = DecodeRule::Final;
    for (const std::string& w : check_search_config(s, table))
      if (!c.quiet && is_writer()) std::fprintf(stderr, "tune: every trial's search: warning: %s\n", w.c_str());
    const Splits data = open_dataset(data_view(c));
    if (data.train->channels() != 3)
      fail("the networks take RGB images; dataset '" + data.train->name() + "' has " +
           std::to_string(data.train->channels()) + " channel(s)");
    if (data.train->size() < c.batch)
      fail("the training images left for the trials (" + std::to_string(data.train->size()) +
           ") are fewer than one batch (" + std::to_string(c.batch) + ")");
  }

  const std::vector<TuneVariable> vars = tune_variables(c);
  const std::string json_path = c.out_dir + "/tune.json";
  if (world().size() > 1 && c.jobs > 1)
    fail("--jobs " + std::to_string(c.jobs) + " under mpirun: the ranks run one trial at a time together (each "
         "trial's search and training data-parallel); use --jobs 1");
  const RunFolder folder(c.out_dir, "tune", is_writer());  // one writer: a second run on DIR fails at once
  std::map<int, TrialResult> done;
  if (fs::exists(json_path)) {
    if (!c.resume) fail("'" + json_path + "' exists: resume it, or choose another output directory");
    done = load_previous(c, json_path, vars.size());
    if (!c.quiet && is_writer())
      std::fprintf(stderr, "tune: resuming %s: %zu trial(s) done\n", json_path.c_str(), done.size());
  }
  TuneReport report(c, bounds);
  report.write(done, false);

  install_stop_handlers();
  const int total_threads = c.threads > 0 ? c.threads : num_threads();
  const int share = std::max(1, total_threads / c.jobs);
  const TrialLauncher launch = c.launch_trial ? c.launch_trial : TrialLauncher([](const std::string& path, int) {
    run_trial_from_file(path);
  });
  std::map<int, std::vector<double>> running;  // index -> its point
  std::map<int, std::thread> threads;
  std::mutex mutex;
  std::condition_variable ended_cv;
  std::deque<int> ended;
  std::map<int, std::exception_ptr> launch_errors;
  std::string stop_reason;
  int failures_in_a_row = 0;
  // An error in this thread must not destroy a running trial's thread: wait for each first.
  struct JoinAll {
    std::map<int, std::thread>& threads;
    ~JoinAll() {
      for (auto& kv : threads)
        if (kv.second.joinable()) kv.second.join();
    }
  } join_all{threads};

  auto next_index = [&]() {
    for (int i = 0; i < c.trials; ++i)
      if (!done.count(i) && !running.count(i)) return i;
    return -1;
  };
  // Proposes trial `index`'s point, writes its trial.json into a fresh folder; returns the file.
  auto prepare_trial = [&](int index) {
    TrialSpec t;
    t.config = c;
    t.config.launch_trial = nullptr;
    t.index = index;
    t.dir = trial_dir(c, index);
    t.threads = c.jobs == 1 ? total_threads : share;
    std::vector<TrialResult> finished;
    for (const auto& kv : done) finished.push_back(kv.second);
    std::vector<std::vector<double>> pending;
    for (const auto& kv : running) pending.push_back(kv.second);
    TrialPoint point = propose_trial(c, finished, pending, index);
    t.u = point.u;
    t.proposed_by = point.proposed_by;
    t.hyper = hyper_from_unit(c, t.u);
    const std::string path = t.dir + "/trial.json";
    if (is_writer()) {
      fs::remove_all(t.dir);  // what a run stopped mid-trial left
      make_dirs(t.dir);
      write_file_atomic(path, trial_spec_to_json(t).dump(2) + "\n");
    }
    world().barrier("tune: trial " + std::to_string(index) + " written by rank 0");  // under mpirun every rank reads it
    running[index] = t.u;
    return path;
  };
  // Records a trial whose launcher has returned: its result.json, or the reason to stop.
  auto finish_trial = [&](int index) {
    running.erase(index);
    const std::string result = trial_dir(c, index) + "/result.json";
    if (!fs::exists(result)) {
      if (stop_reason.empty())
        stop_reason = "trial " + std::to_string(index) + " ended without " + result;
      return;
    }
    TrialResult r = trial_result_from_json(read_json_file(result), result);
    done[index] = r;
    report.write(done, false);
    report.progress_line(r, done);
    failures_in_a_row = r.status == TrialStatus::Failed ? failures_in_a_row + 1 : 0;
    if (failures_in_a_row >= 3 && stop_reason.empty())
      stop_reason = "three trials in a row failed (the last: " + r.error + ")";
  };

  std::exception_ptr first_error;
  for (;;) {
    while (stop_reason.empty() && !stop_requested() && running.size() < size_t(c.jobs)) {
      const int index = next_index();
      if (index < 0) break;
      const std::string path = prepare_trial(index);
      if (c.jobs == 1) {
        try {
          launch(path, total_threads);  // other exceptions end the run: tune.json holds every finished trial
        } catch (const Interrupted&) {
        }
        world().barrier("tune: trial " + std::to_string(index) + "'s result written by rank 0");
        finish_trial(index);
        continue;
      }
      threads[index] = std::thread([&, index, path]() {
        std::exception_ptr error;
        try {
          launch(path, share);
        } catch (...) {
          error = std::current_exception();
        }
        std::lock_guard<std::mutex> lock(mutex);
        if (error) launch_errors[index] = error;
        ended.push_back(index);
        ended_cv.notify_all();
      });
    }
    if (running.empty()) break;
    int index;
    {
      std::unique_lock<std::mutex> lock(mutex);
      ended_cv.wait(lock, [&] { return !ended.empty(); });
      index = ended.front();
      ended.pop_front();
    }
    threads.at(index).join();
    threads.erase(index);
    if (launch_errors.count(index)) {
      if (!first_error) first_error = launch_errors[index];
      running.erase(index);
      if (stop_reason.empty()) stop_reason = "trial " + std::to_string(index) + "'s launcher failed";
      continue;
    }
    finish_trial(index);
  }
  if (first_error) std::rethrow_exception(first_error);
  const std::string kept = "'" + json_path + "' holds the " + std::to_string(done.size()) +
                           " finished trial(s): continue with resume";
  if (stop_requested()) throw Interrupted(stop_signal(), "tune: interrupted; " + kept);
  if (!stop_reason.empty()) fail(stop_reason + "; " + kept);

  report.write(done, true);
  TuneResult res;
  for (const auto& kv : done) res.trials.push_back(kv.second);
  const Best b = find_best(done, c);
  res.best = b.best();
  res.best_in_band = b.in_band;
  res.best_feasible = b.feasible;
  res.min_ms = bounds.min_ms;
  res.max_ms = bounds.max_ms;
  res.json_path = json_path;
  res.svg_path = c.out_dir + "/tune.svg";
  if (res.best >= 0) res.best_arch_path = c.out_dir + "/best/arch.json";
  return res;
}

}  // namespace spnas
