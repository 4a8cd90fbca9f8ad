// spnas demo: the README's main job on the embedded data — profile this machine, search, train the result.
#include <cstdio>

#include "engine/threads.h"
#include "nas/latency/profile.h"
#include "nas/search.h"
#include "nas/train.h"
#include "tools/cli.h"

namespace spnas::cli {

Command add_demo(CLI::App& app) {
  struct Flags {
    std::string data = "synthetic:train=4000,test=1000", out = "runs/demo";
    float width = 0.25f, search_epochs = 4, warmup_epochs = 1.5f, train_epochs = 8;
    float lambda = 0.008f, threshold_lr_mult = 1000;
    int threads = 0;
    uint64_t seed = 1;
    bool quiet = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand(
      "demo",
      "The README's main job, a few minutes on 2 cores: (1) measure a latency table of the cifar10 space on this "
      "machine, (2) run a short Single-Path NAS search on the embedded synthetic data, (3) train the found network "
      "from scratch briefly; prints its architecture, accuracy and predicted runtime.");
  add_data(s, f->data);
  s->add_option("--width", f->width, "width multiplier of the cifar10 space")
      ->capture_default_str()
      ->check(number_above(0, kMaxWidth));
  s->add_option("--search-epochs", f->search_epochs, "search length (epochs)")
      ->capture_default_str()
      ->check(number_above(0, 1e4));
  s->add_option("--warmup-epochs", f->warmup_epochs, "search warm-up (epochs)")
      ->capture_default_str()
      ->check(number_in(0, 1e4));
  s->add_option("--train-epochs", f->train_epochs, "training length of the found network (epochs)")
      ->capture_default_str()
      ->check(number_above(0, 1e4));
  s->add_option("--lambda", f->lambda,
                "weight of the runtime term (log form, lambda*1e3*ln R as the reference); the demo's search is short, "
                "so it trades accuracy for runtime more readily than the paper's 0.02 would in 8 epochs")
      ->capture_default_str()
      ->check(number_in(0, 1e6));
  s->add_option("--threshold-lr-mult", f->threshold_lr_mult,
                "threshold learning-rate multiplier: at initialisation the margins norm - t are ~10, where sigmoid' is "
                "~1e-4, so a search of a few hundred steps needs a much faster threshold rate than the paper's 8 epochs")
      ->capture_default_str()
      ->check(number_above(0, 1e9));
  s->add_option("--out", f->out, "output folder")->capture_default_str();
  add_threads(s, f->threads);
  s->add_option("--seed", f->seed, "random seed")->capture_default_str();
  s->add_flag("--quiet", f->quiet, "no progress output");
  return {s, [f] {
            const double t0 = now_seconds();
            // 1. Latency table: inference, batch 1, one thread, measured with the engine's own kernels.
            std::printf("[1/3] measuring the latency table of cifar10 (width %g, batch 1, 1 thread) ...\n", f->width);
            std::fflush(stdout);
            ProfileOptions po;
            po.space = "cifar10";
            po.width = f->width;
            po.batch = 1;
            po.threads = 1;
            po.reps = 20;
            po.min_seconds = 0.05;
            po.context_rounds = 1;
            po.max_seconds = 60;
            if (!f->quiet) po.progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
            LatencyTable table = profile_space(po);
            unpin_threads();  // the profiler pinned this thread; the search and training use every core
            set_num_threads(f->threads);
            SearchConfig sc;
            sc.out_dir = f->out + "/search";
            make_dirs(sc.out_dir);
            const std::string lut_path = sc.out_dir + "/latency_table.json";
            save_latency_table(lut_path, table);
            std::printf("      fixed part %.3f ms, supernet (all 5x5-6) %.3f ms -> %s\n", table.fixed_ms,
                        runtime_all_on(table, RuntimeMode::Formula, false), lut_path.c_str());

            // 2. Search.
            sc.space = "cifar10";
            sc.space_options.width = f->width;
            sc.data = parse_data_spec(f->data);
            sc.epochs = f->search_epochs;
            sc.warmup_epochs = f->warmup_epochs;
            sc.lambda = f->lambda;
            sc.threshold_lr_mult = f->threshold_lr_mult;
            sc.bn_momentum = 0.9f;
            sc.seed = f->seed;
            sc.checkpoint_every = 0;
            sc.quiet = f->quiet;
            std::printf("[2/3] searching: %g epochs (%g warm-up), lambda %g, data %s ...\n", sc.epochs,
                        sc.warmup_epochs, sc.lambda, f->data.c_str());
            std::fflush(stdout);
            SearchResult sr = run_search(sc, table);
            std::printf("      %lld steps in %.0f s; plot %s\n", (long long)sr.steps, sr.seconds, sr.svg_path.c_str());
            for (const std::string& line : sr.verdict.lines) std::printf("      %s\n", line.c_str());

            // 3. Train the found network from scratch.
            TrainConfig tc;
            tc.arch = sr.arch;
            tc.arch_source = sr.arch_path;
            tc.data = sc.data;
            tc.epochs = f->train_epochs;
            tc.bn_momentum = 0.9f;  // a few hundred steps: the running statistics must catch up quickly
            tc.seed = sc.seed;
            tc.out_dir = f->out + "/train";
            tc.quiet = f->quiet;
            tc.eval_each_epoch = false;
            std::printf("[3/3] training the found network from scratch: %g epochs ...\n", tc.epochs);
            std::fflush(stdout);
            TrainResult tr = run_train(tc);

            std::printf("\n=== Single-Path NAS demo (%s, %.0f s) ===\n", sc.data.kind.c_str(), now_seconds() - t0);
            std::printf("architecture:      %s\n", arch_summary(sr.arch).c_str());
            std::printf("                   (%s)\n", sr.arch_path.c_str());
            std::printf("predicted runtime: %.3f ms at batch 1 on this CPU (all 5x5-6 supernet: %.3f ms)\n",
                        sr.predicted_ms, sr.supernet_ms);
            std::printf("params / MACs:     %lld / %.1f M\n", (long long)tr.params, tr.macs / 1e6);
            std::printf("test accuracy:     %.2f %% (%lld images, %s weights)\n", 100 * tr.test.accuracy,
                        (long long)tr.test.images, tr.test.weights.c_str());
            std::printf("checkpoint:        %s  (spnas eval --checkpoint %s)\n", tr.checkpoint_path.c_str(),
                        tr.checkpoint_path.c_str());
            return 0;
          }};
}

}  // namespace spnas::cli
