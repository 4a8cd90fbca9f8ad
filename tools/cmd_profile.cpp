// profile, latency and demo: the latency model on the command line, and the README's main job.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/threads.h"
#include "nas/profile.h"
#include "nas/search.h"
#include "nas/train.h"
#include "ops/kernels.h"
#include "tools/args.h"
#include "tools/commands.h"
#include "tools/common.h"

namespace spnas {

static void print_line(const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); }

int cmd_profile(int argc, char** argv) {
  Args a("profile", "Measures the latency table of a space on this machine: every searchable layer in each candidate "
                    "(k3-e3, k3-e6, k5-e3, k5-e6; and SE with --se) and the fixed part, timed in network context with "
                    "warm-up and repetitions (median, spread, count). The table is what `search --lut` reads.");
  a.option("space", "cifar10", "search space: cifar10, mnasnet-imagenet, or a space JSON file");
  a.option("width", "1.0", "width multiplier");
  a.option("input-size", "0", "input size (0: the space's)");
  a.option("batch", "1", "batch size");
  a.option("threads", "1", "threads");
  a.flag("train-step", "time a training step (forward + backward) instead of inference");
  a.option("backend", "spnas", "inference backend: spnas, or onednn (when built with oneDNN; inference without SE)");
  a.option("clock", "wall", "wall, or cpu (process CPU time / threads: for a machine too loaded for clean wall-clock runs)");
  a.option("quantile", "0.5", "statistic of each entry's repetitions (0.5: median; 0.2 on a shared, noisy machine)");
  a.flag("se", "also measure the SE branch of every searchable layer");
  a.option("reps", "50", "at least this many repetitions per network");
  a.option("min-seconds", "0.2", "and at least this long per network");
  a.option("context-rounds", "3", "network contexts each entry is measured in");
  a.flag("no-pin", "do not pin threads to CPUs");
  a.option("out", "", "output table (JSON), required");
  if (!a.parse(argc, argv)) return 0;
  if (a.str("out").empty()) throw std::runtime_error("profile: --out FILE is required");
  ProfileOptions o;
  o.space = a.str("space");
  o.width = float(a.num("width"));
  o.input_size = int(a.integer("input-size"));
  o.batch = int(a.integer("batch"));
  o.threads = int(a.integer("threads"));
  o.training_step = a.on("train-step");
  o.backend = a.str("backend");
  o.clock = a.str("clock");
  o.quantile = a.num("quantile");
  o.search_se = a.on("se");
  o.reps = int(a.integer("reps"));
  o.min_seconds = a.num("min-seconds");
  o.context_rounds = int(a.integer("context-rounds"));
  o.pin = !a.on("no-pin");
  o.progress = print_line;
  LatencyTable t = profile_space(o);
  save_latency_table(a.str("out"), t);
  std::printf("latency table of %s (width %g, batch %d, %d thread(s), %s, %s): fixed %.3f ms, %zu layers -> %s\n",
              t.space.c_str(), t.width, t.batch, t.threads, t.isa.c_str(), t.mode.c_str(), t.fixed_ms, t.layers.size(),
              a.str("out").c_str());
  std::printf("%-5s %8s %8s %8s %8s  %s\n", "layer", "k3-e3", "k3-e6", "k5-e3", "k5-e6", "spread");
  for (size_t i = 0; i < t.layers.size(); ++i) {
    const LayerCost& c = t.layers[i];
    std::printf("%-5zu %8.4f %8.4f %8.4f %8.4f  %.0f %%\n", i, c.k3_e3, c.k3_e6, c.k5_e3, c.k5_e6, 100 * c.spread);
  }
  return 0;
}

int cmd_latency(int argc, char** argv) {
  Args a("latency", "Measures the end-to-end latency of a decoded architecture (same method as profile).");
  a.option("arch", "", "architecture JSON, required");
  a.option("batch", "1", "batch size");
  a.option("threads", "1", "threads");
  a.flag("train-step", "time a training step instead of inference");
  a.option("reps", "50", "at least this many repetitions");
  a.option("backend", "spnas", "spnas, or onednn (inference)");
  a.option("clock", "wall", "wall or cpu (as for profile)");
  a.option("quantile", "0.5", "statistic reported as latency_ms (as for profile; use the table's)");
  a.option("lut", "", "also print the table's prediction");
  a.option("fixed-ms", "-1", "fixed cost for a CSV table");
  a.flag("json", "print JSON");
  if (!a.parse(argc, argv)) return 0;
  if (a.str("arch").empty()) throw std::runtime_error("latency: --arch FILE is required");
  Arch arch = load_arch(a.str("arch"));
  MeasureOptions o;
  o.batch = int(a.integer("batch"));
  o.threads = int(a.integer("threads"));
  o.training_step = a.on("train-step");
  o.reps = int(a.integer("reps"));
  o.backend = a.str("backend");
  o.clock = a.str("clock");
  o.quantile = a.num("quantile");
  LatencyMeasurement m = measure_arch_latency(arch, o);
  nlohmann::json j = {{"arch", arch_summary(arch)}, {"batch", o.batch}, {"threads", o.threads},
                      {"latency_ms", m.ms}, {"quantile", o.quantile},
                      {"median_ms", m.median_ms}, {"p10_ms", m.p10_ms}, {"p90_ms", m.p90_ms}, {"count", m.count}};
  if (!a.str("lut").empty()) j["predicted_ms"] = predict_runtime(load_latency_table(a.str("lut"), a.num("fixed-ms")), arch);
  if (a.on("json")) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s\nlatency: median %.3f ms (p10 %.3f, p90 %.3f, %d runs), batch %d, %d thread(s)\n",
                arch_summary(arch).c_str(), m.median_ms, m.p10_ms, m.p90_ms, m.count, o.batch, o.threads);
    if (o.quantile != 0.5) std::printf("latency at quantile %.2f: %.3f ms\n", o.quantile, m.ms);
    if (j.contains("predicted_ms")) std::printf("table prediction: %.3f ms\n", j["predicted_ms"].get<double>());
  }
  return 0;
}

int cmd_demo(int argc, char** argv) {
  Args a("demo", "The README's main job, a few minutes on 2 cores: (1) measure a latency table of the cifar10 space "
                 "on this machine, (2) run a short Single-Path NAS search on the embedded synthetic data, (3) train the "
                 "found network from scratch briefly; prints its architecture, accuracy and predicted runtime.");
  a.option("data", "synthetic:train=4000,test=1000", "dataset (default: 4,000 + 1,000 images of the embedded synthetic set, no files needed)");
  a.option("width", "0.25", "width multiplier of the cifar10 space");
  a.option("search-epochs", "4", "search length (epochs)");
  a.option("warmup-epochs", "1.5", "search warm-up (epochs)");
  a.option("train-epochs", "8", "training length of the found network (epochs)");
  a.option("lambda", "0.008",
           "weight of the runtime term (log form, lambda * 1e3 * ln R as the reference); the demo's search is short, so "
           "it trades accuracy for runtime more readily than the paper's 0.02 would in 8 epochs");
  a.option("threshold-lr-mult", "1000",
           "threshold learning-rate multiplier: at initialisation the margins norm - t are ~10, where sigmoid' is ~1e-4, "
           "so a search of a few hundred steps needs a much faster threshold rate than the paper's 8 epochs");
  a.option("out", "runs/demo", "output directory");
  a.option("threads", "0", "threads (0: all cores)");
  a.option("seed", "1", "seed");
  a.flag("quiet", "no progress output");
  if (!a.parse(argc, argv)) return 0;
  const std::string out = a.str("out");
  const float width = float(a.num("width"));
  const bool quiet = a.on("quiet");
  const double t0 = now_seconds();

  // 1. Latency table: inference, batch 1, one thread, measured with the engine's own kernels.
  std::printf("[1/3] measuring the latency table of cifar10 (width %g, batch 1, 1 thread) ...\n", width);
  std::fflush(stdout);
  ProfileOptions po;
  po.space = "cifar10";
  po.width = width;
  po.batch = 1;
  po.threads = 1;
  po.reps = 20;
  po.min_seconds = 0.05;
  po.context_rounds = 1;
  po.max_seconds = 60;
  if (!quiet) po.progress = print_line;
  LatencyTable table = profile_space(po);
  unpin_threads();  // the profiler pinned this thread; the search and training use every core
  set_num_threads(int(a.integer("threads")));
  SearchConfig sc;
  sc.out_dir = out + "/search";
  {
    std::string cmd = "mkdir -p '" + sc.out_dir + "'";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("demo: cannot create " + sc.out_dir);
  }
  const std::string lut_path = sc.out_dir + "/latency_table.json";
  save_latency_table(lut_path, table);
  std::printf("      fixed part %.3f ms, supernet (all 5x5-6) %.3f ms -> %s\n", table.fixed_ms,
              runtime_all_on(table, RuntimeMode::Formula, false), lut_path.c_str());

  // 2. Search.
  sc.space = "cifar10";
  sc.space_options.width = width;
  sc.data = parse_data_spec(a.str("data"));
  sc.epochs = float(a.num("search-epochs"));
  sc.warmup_epochs = float(a.num("warmup-epochs"));
  sc.lambda = float(a.num("lambda"));
  sc.threshold_lr_mult = float(a.num("threshold-lr-mult"));
  sc.bn_momentum = 0.9f;
  sc.seed = uint64_t(a.integer("seed"));
  sc.checkpoint_every = 0;
  sc.quiet = quiet;
  std::printf("[2/3] searching: %g epochs (%g warm-up), lambda %g, data %s ...\n", sc.epochs, sc.warmup_epochs,
              sc.lambda, a.str("data").c_str());
  std::fflush(stdout);
  SearchResult sr = run_search(sc, table);
  std::printf("      %lld steps in %.0f s; plot %s\n", (long long)sr.steps, sr.seconds, sr.svg_path.c_str());

  // 3. Train the found network from scratch.
  TrainConfig tc;
  tc.arch = sr.arch;
  tc.arch_source = sr.arch_path;
  tc.data = sc.data;
  tc.epochs = float(a.num("train-epochs"));
  tc.bn_momentum = 0.9f;
  // A few epochs from scratch: SGD with Nesterov momentum and a cosine schedule learns fastest here.
  tc.optimizer = "sgd";
  tc.lr.lr = 0.1f;
  tc.lr.kind = "cosine";
  tc.lr.warmup_epochs = 0.3f;
  tc.ema_decay = 0.99f;
  tc.seed = sc.seed;
  tc.out_dir = out + "/train";
  tc.quiet = quiet;
  tc.eval_each_epoch = false;
  std::printf("[3/3] training the found network from scratch: %g epochs ...\n", tc.epochs);
  std::fflush(stdout);
  TrainResult tr = run_train(tc);

  std::printf("\n=== Single-Path NAS demo (%s, %.0f s) ===\n", sc.data.kind.c_str(), now_seconds() - t0);
  std::printf("architecture:      %s\n", arch_summary(sr.arch).c_str());
  std::printf("                   (%s)\n", sr.arch_path.c_str());
  std::printf("predicted runtime: %.3f ms at batch 1 on this CPU (all 5x5-6 supernet: %.3f ms)\n", sr.predicted_ms,
              sr.supernet_ms);
  std::printf("params / MACs:     %lld / %.1f M\n", (long long)tr.params, tr.macs / 1e6);
  std::printf("test accuracy:     %.2f %% (%lld images, EMA weights)\n", 100 * tr.test.accuracy,
              (long long)tr.test.images);
  std::printf("checkpoint:        %s  (spnas eval --checkpoint %s)\n", tr.checkpoint_path.c_str(),
              tr.checkpoint_path.c_str());
  return 0;
}

}  // namespace spnas
