// search, train, eval, info: option parsing and printing around nas/search.h and nas/train.h.
#include "tools/commands.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/threads.h"
#include "nas/search.h"
#include "nas/train.h"
#include "ops/kernels.h"
#include "tools/args.h"
#include "tools/common.h"

namespace spnas {

void add_common_options(Args& a) {
  a.option("threads", "0", "threads for the engine's kernels and OpenBLAS (0: all cores)");
  a.option("seed", "1", "random seed");
  a.flag("no-low-memory", "keep post-activation tensors instead of recomputing them in backward (more memory)");
}

void apply_common_options(const Args& a) {
  set_num_threads(int(a.integer("threads")));
  if (a.on("no-low-memory")) set_low_memory(false);
}

void add_space_options(Args& a) {
  a.option("space", "cifar10", "search space: cifar10, mnasnet-imagenet, or a space JSON file");
  a.option("width", "1.0", "width multiplier");
  a.option("input-size", "0", "input size (0: the space's)");
  a.option("num-classes", "0", "number of classes (0: the dataset's / the space's)");
}

SpaceOptions space_options(const Args& a) {
  SpaceOptions so;
  so.width = float(a.num("width"));
  so.input_size = int(a.integer("input-size"));
  so.num_classes = int(a.integer("num-classes"));
  return so;
}

// Learning-rate schedule options shared by search and train (schedules in epochs).
static void add_lr_options(Args& a, const std::string& warmup_default) {
  a.option("lr", "0", "initial learning rate (0: 0.016 * batch / 256)");
  a.option("lr-schedule", "exponential", "exponential | cosine | constant");
  a.option("lr-decay", "0.97", "exponential decay rate");
  a.option("lr-decay-epochs", "2.4", "epochs between exponential decays (staircase)");
  a.option("lr-warmup-epochs", warmup_default, "linear learning-rate warm-up (epochs)");
}

static LrConfig lr_config(const Args& a) {
  return LrConfig{a.str("lr-schedule"), float(a.num("lr")), float(a.num("lr-decay")), float(a.num("lr-decay-epochs")),
                  float(a.num("lr-warmup-epochs"))};
}

void add_lut_options(Args& a) {
  a.option("lut", "", "latency table: JSON from `spnas profile`, or the paper's Pixel 1 CSV");
  a.option("fixed-ms", "-1", "fixed cost (ms) of everything outside the searchable layers (needed for CSV tables)");
  a.option("runtime-model", "formula", "formula (the reference's) or table");
}

LatencyTable load_lut(const Args& a) {
  if (a.str("lut").empty()) throw std::runtime_error("a latency table is needed: --lut FILE (make one with `spnas profile`)");
  return load_latency_table(a.str("lut"), a.num("fixed-ms"));
}

int cmd_search(int argc, char** argv) {
  Args a("search", "Single-Path NAS search: trains the supernet (weights and thresholds), decodes the thresholds "
                   "into an architecture.\nWrites OUT/arch.json, OUT/search_log.csv, OUT/search_plot.svg, OUT/search.ckpt.");
  add_common_options(a);
  add_space_options(a);
  add_lut_options(a);
  a.option("data", "synthetic", "dataset: " + std::string("synthetic | mnist:PATH | cifar10-bin:PATH | cifar10-folder:PATH | folder:PATH"));
  a.option("batch", "64", "batch size");
  a.option("epochs", "8", "search length in epochs");
  a.option("warmup-epochs", "5", "epochs with indicator dropping and without the runtime term");
  a.option("drop", "0.4", "indicator drop probability during warm-up");
  add_lr_options(a, "0");
  a.option("threshold-lr-mult", "1", "learning-rate multiplier of the thresholds");
  a.option("optimizer", "rmsprop", "rmsprop (TF-1 semantics) | sgd | adam");
  a.option("weight-decay", "1e-5", "L2 weight decay (thresholds included, batch norm excluded)");
  a.option("label-smoothing", "0.1", "label smoothing of the cross-entropy");
  a.option("lambda", "0.02", "weight of the runtime term (the reference's flag: 0.02 in the log form is 20 ln R)");
  a.option("runtime-loss", "log", "log: lambda*1e3*ln(R) (the reference's) | linear: lambda*R (R in ms) | target: lambda*max(0, R/T-1)");
  a.option("target-ms", "0", "T of the target form");
  a.flag("se", "search squeeze-and-excitation too (journal version)");
  a.flag("squared-norm", "use squared L2 norms in the indicators");
  a.option("threshold-margin", "-1",
           "< 0: thresholds start at 0 (the paper); >= 0: each starts at its norm at initialisation minus this "
           "margin (at full width the paper's initial margins, 8-50, leave sigma' too small for the thresholds to "
           "move in a few epochs)");
  a.flag("bilevel", "thresholds on a held-out split (default: one-level, as the reference)");
  a.option("val-fraction", "0.1", "held-out fraction for --bilevel");
  a.option("bn-momentum", "0.99", "batch-norm running-average momentum");
  a.option("workers", "1", "data-loading threads");
  a.option("out", "runs/search", "output directory");
  a.option("checkpoint-every", "500", "steps between checkpoints (also on SIGINT/SIGTERM)");
  a.flag("resume", "continue from OUT/search.ckpt");
  a.option("max-steps", "-1", "stop after this many steps (for quick checks)");
  a.flag("quiet", "no progress output");
  if (!a.parse(argc, argv)) return 0;
  apply_common_options(a);
  SearchConfig c;
  c.space = a.str("space");
  c.space_options = space_options(a);
  c.data = parse_data_spec(a.str("data"));
  c.batch = int(a.integer("batch"));
  c.epochs = float(a.num("epochs"));
  c.warmup_epochs = float(a.num("warmup-epochs"));
  c.indicator_drop = float(a.num("drop"));
  c.lr = lr_config(a);
  c.threshold_lr_mult = float(a.num("threshold-lr-mult"));
  c.optimizer = a.str("optimizer");
  c.weight_decay = float(a.num("weight-decay"));
  c.label_smoothing = float(a.num("label-smoothing"));
  c.lambda = float(a.num("lambda"));
  c.runtime_loss = parse_runtime_loss(a.str("runtime-loss"));
  c.target_ms = float(a.num("target-ms"));
  c.runtime_mode = parse_runtime_mode(a.str("runtime-model"));
  c.search_se = a.on("se");
  c.squared_norm = a.on("squared-norm");
  c.threshold_margin = float(a.num("threshold-margin"));
  c.bilevel = a.on("bilevel");
  c.val_fraction = float(a.num("val-fraction"));
  c.bn_momentum = float(a.num("bn-momentum"));
  c.seed = uint64_t(a.integer("seed"));
  c.workers = int(a.integer("workers"));
  c.out_dir = a.str("out");
  c.checkpoint_every = a.integer("checkpoint-every");
  c.resume = a.on("resume");
  c.max_steps = a.integer("max-steps");
  c.quiet = a.on("quiet");
  if (c.batch < 2) throw std::runtime_error("search: --batch must be at least 2 (batch norm)");
  if (c.runtime_loss == RuntimeLoss::Target && !(c.target_ms > 0))
    throw std::runtime_error("search: --runtime-loss target needs --target-ms");
  LatencyTable table = load_lut(a);
  SearchResult r = run_search(c, table);
  print_search_result(r, c);
  return 0;
}

int cmd_train(int argc, char** argv) {
  Args a("train", "Trains an architecture from scratch and evaluates it (EMA weights). Writes OUT/model.ckpt and "
                  "OUT/train_log.csv.");
  add_common_options(a);
  a.option("arch", "", "architecture JSON (from `spnas search`), required");
  a.option("data", "synthetic", "dataset (see `spnas search --help`)");
  a.option("batch", "64", "batch size");
  a.option("epochs", "10", "training length in epochs");
  add_lr_options(a, "1");
  a.option("optimizer", "rmsprop", "rmsprop | sgd | adam");
  a.option("weight-decay", "1e-5", "L2 weight decay (batch norm excluded)");
  a.option("label-smoothing", "0.1", "label smoothing");
  a.option("ema", "0.999", "EMA decay of the weights used for evaluation (0: off)");
  a.option("bn-momentum", "0.99", "batch-norm running-average momentum");
  a.option("dropout", "-1", "dropout before the classifier (-1: the space's)");
  a.option("workers", "1", "data-loading threads");
  a.option("out", "runs/train", "output directory");
  a.flag("resume", "continue from OUT/model.ckpt");
  a.flag("no-augment", "no random crop / flip");
  a.option("max-steps", "-1", "stop after this many steps");
  a.flag("quiet", "no progress output");
  if (!a.parse(argc, argv)) return 0;
  apply_common_options(a);
  if (a.str("arch").empty()) throw std::runtime_error("train: --arch FILE is required");
  TrainConfig c;
  c.arch = load_arch(a.str("arch"));
  c.arch_source = a.str("arch");
  c.data = parse_data_spec(a.str("data"));
  c.augment = !a.on("no-augment");
  c.batch = int(a.integer("batch"));
  c.epochs = float(a.num("epochs"));
  c.lr = lr_config(a);
  c.optimizer = a.str("optimizer");
  c.weight_decay = float(a.num("weight-decay"));
  c.label_smoothing = float(a.num("label-smoothing"));
  c.ema_decay = float(a.num("ema"));
  c.bn_momentum = float(a.num("bn-momentum"));
  c.dropout = float(a.num("dropout"));
  c.seed = uint64_t(a.integer("seed"));
  c.workers = int(a.integer("workers"));
  c.out_dir = a.str("out");
  c.resume = a.on("resume");
  c.max_steps = a.integer("max-steps");
  c.quiet = a.on("quiet");
  if (c.batch < 2) throw std::runtime_error("train: --batch must be at least 2 (batch norm)");
  TrainResult r = run_train(c);
  std::printf("architecture: %s\n", arch_summary(c.arch).c_str());
  std::printf("params: %lld  MACs: %.2f M\n", (long long)r.params, r.macs / 1e6);
  std::printf("steps: %lld  time: %.1f s  (%.0f images/s)\n", (long long)r.steps, r.seconds, r.images_per_second);
  std::printf("test accuracy (EMA): %.2f %% on %lld images, loss %.4f\n", 100 * r.test.accuracy, (long long)r.test.images,
              r.test.loss);
  std::printf("checkpoint: %s\n", r.checkpoint_path.c_str());
  return 0;
}

int cmd_eval(int argc, char** argv) {
  Args a("eval", "Evaluates a checkpoint written by `spnas train` on a dataset's test split.");
  add_common_options(a);
  a.option("checkpoint", "", "checkpoint file (OUT/model.ckpt of `spnas train`), required");
  a.option("data", "synthetic", "dataset");
  a.option("batch", "100", "batch size");
  a.flag("no-ema", "use the raw weights instead of their moving average");
  a.flag("json", "print JSON");
  if (!a.parse(argc, argv)) return 0;
  apply_common_options(a);
  if (a.str("checkpoint").empty()) throw std::runtime_error("eval: --checkpoint FILE is required");
  Arch arch;
  EvalResult r = evaluate_checkpoint(a.str("checkpoint"), parse_data_spec(a.str("data")), !a.on("no-ema"),
                                     int(a.integer("batch")), &arch);
  if (a.on("json")) {
    nlohmann::json j = {{"accuracy", r.accuracy}, {"loss", r.loss}, {"images", r.images}, {"arch", arch_summary(arch)}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("architecture: %s\ntest accuracy: %.2f %% on %lld images, loss %.4f\n", arch_summary(arch).c_str(),
                100 * r.accuracy, (long long)r.images, r.loss);
  }
  return 0;
}

int cmd_info(int argc, char** argv) {
  Args a("info", "Trainable parameters, multiply-adds (one image) and predicted runtime of an architecture; without "
                 "--arch, of the space's supernet (thresholds included, R with every indicator 1).");
  a.option("arch", "", "architecture JSON");
  add_space_options(a);
  add_lut_options(a);
  a.flag("se", "supernet with searchable SE (space only)");
  a.flag("json", "print JSON");
  if (!a.parse(argc, argv)) return 0;
  nlohmann::json j;
  NoGrad ng;
  if (!a.str("arch").empty()) {
    Arch arch = load_arch(a.str("arch"));
    if (a.has("space")) arch.space = a.str("space");
    if (a.has("width")) arch.width = float(a.num("width"));
    if (a.integer("input-size")) arch.input_size = int(a.integer("input-size"));
    if (a.integer("num-classes")) arch.num_classes = int(a.integer("num-classes"));
    ChildNet net(arch);
    j["arch"] = arch_summary(arch);
    j["space"] = arch.space;
    j["params"] = net.params().count();
    j["macs"] = net.macs();
    if (!a.str("lut").empty()) {
      LatencyTable t = load_lut(a);
      check_table_matches(t, net.space());
      const double formula = predict_runtime(t, arch, RuntimeMode::Formula), table = predict_runtime(t, arch, RuntimeMode::Table);
      j["runtime_model"] = a.str("runtime-model");
      j["runtime_ms"] = parse_runtime_mode(a.str("runtime-model")) == RuntimeMode::Formula ? formula : table;
      j["runtime_ms_formula"] = formula;
      j["runtime_ms_table"] = table;
    }
  } else {
    SearchSpace s = load_space(a.str("space"), space_options(a));
    SupernetConfig sc;
    sc.search_se = a.on("se");
    Supernet net(s, sc);
    j["space"] = s.name;
    j["searchable_layers"] = s.num_searchable();
    j["params"] = net.params().count();
    int64_t th = 0;
    for (const Param& p : net.params().params())
      if (p.group == "thresholds") th += p.var->value.numel();
    j["thresholds"] = th;
    // The reference creates t5x5, t50c and t100c in every searchable layer (t50c unused where the
    // layer may not be skipped) and counts them among the trainable parameters.
    const int64_t unused_skip_thresholds = s.num_searchable() - int64_t(std::count_if(
        s.layers.begin(), s.layers.end(), [](const LayerSpec& l) { return l.searchable && l.skip_allowed; }));
    j["thresholds_reference"] = th + unused_skip_thresholds;
    j["params_reference"] = net.params().count() + unused_skip_thresholds;
    j["macs"] = net.macs();
    if (!a.str("lut").empty()) {
      LatencyTable t = load_lut(a);
      check_table_matches(t, s);
      j["runtime_ms"] = runtime_all_on(t, parse_runtime_mode(a.str("runtime-model")), sc.search_se);
    }
  }
  if (a.on("json")) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    for (auto& [k, v] : j.items()) std::printf("%-18s %s\n", k.c_str(), v.dump().c_str());
  }
  return 0;
}

void print_search_result(const SearchResult& r, const SearchConfig& c) {
  std::printf("search: %lld steps in %.1f s%s\n", (long long)r.steps, r.seconds, r.finished ? "" : " (stopped early)");
  std::printf("architecture: %s\n", arch_summary(r.arch).c_str());
  std::printf("predicted runtime: %.3f ms (supernet, all 5x5-6: %.3f ms)\n", r.predicted_ms, r.supernet_ms);
  std::printf("files: %s %s %s %s\n", r.arch_path.c_str(), r.csv_path.c_str(), r.svg_path.c_str(),
              r.checkpoint_path.c_str());
  (void)c;
}

}  // namespace spnas
