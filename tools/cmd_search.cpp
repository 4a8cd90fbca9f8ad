// spnas search: the Single-Path NAS search (nas/search.h) on the command line.
#include <cstdio>

#include "engine/threads.h"
#include "nas/search.h"
#include "ops/ops.h"
#include "tools/cli.h"

namespace spnas::cli {

Command add_search(CLI::App& app) {
  struct Flags {
    SearchConfig c;
    TableFlags table;
    std::string data = "synthetic", runtime_loss = "log", warmup_thresholds = "train", decode = "final";
    int threads = 0;
    bool no_low_memory = false, check_data = false, verify = false;
  };
  auto f = std::make_shared<Flags>();
  SearchConfig& c = f->c;
  CLI::App* s = app.add_subcommand("search",
                                   "Single-Path NAS search: trains the supernet's weights and thresholds together, then "
                                   "decodes the thresholds into an architecture.\nWrites OUT/arch.json, OUT/search_log.csv, "
                                   "OUT/search_plot.svg and OUT/search.ckpt.");
  add_space(s, c.space, c.space_options);
  add_table(s, f->table);
  add_data(s, f->data);
  add_check_data(s, f->check_data);
  add_verify(s, f->verify);
  s->add_option("--batch", c.batch, "batch size")->capture_default_str()->check(integer_in(2, 65536));
  s->add_option("--epochs", c.epochs, "search length in epochs")->capture_default_str()->check(number_above(0, 1e5));
  s->add_option("--warmup-epochs", c.warmup_epochs, "epochs with indicator dropping and without the runtime term")
      ->capture_default_str()
      ->check(number_in(0, 1e5));
  s->add_option("--drop", c.indicator_drop, "probability of dropping each indicator during warm-up")
      ->capture_default_str()
      ->check(number_in(0, 0.95));
  add_lr(s, c.lr);
  s->add_option("--threshold-lr-mult", c.threshold_lr_mult, "learning-rate multiplier of the thresholds")
      ->capture_default_str()
      ->check(number_above(0, 1e9));
  s->add_option("--warmup-thresholds", f->warmup_thresholds,
                "train: the thresholds learn from the first step (the reference) | freeze: they wait for the end of "
                "the warm-up, so every decision is taken with the runtime term in the loss")
      ->capture_default_str()
      ->check(CLI::IsMember({"train", "freeze"}));
  s->add_option("--threshold-momentum", c.threshold_momentum,
                "momentum of the thresholds, in [0, 1) (default: the optimizer's, 0.9 as the reference); lower, a "
                "threshold stops sooner once the runtime term stops pushing it")
      ->check(number_in(0, 0.999));
  s->add_option("--optimizer", c.optimizer, "rmsprop (TF-1 semantics, the reference's) | sgd (Nesterov) | adam")
      ->capture_default_str()
      ->check(CLI::IsMember({"rmsprop", "sgd", "adam"}));
  s->add_option("--weight-decay", c.weight_decay, "L2 weight decay (thresholds included, batch norm excluded)")
      ->capture_default_str()
      ->check(number_in(0, 1));
  s->add_option("--label-smoothing", c.label_smoothing, "label smoothing of the cross-entropy")
      ->capture_default_str()
      ->check(number_in(0, 0.99));
  s->add_option("--lambda", c.lambda,
                "weight of the runtime term, in the reference's units: the log form adds lambda*1e3*ln(R), so the "
                "paper's 0.02 adds 20 ln(R)")
      ->capture_default_str()
      ->check(number_in(0, 1e6));
  s->add_option("--runtime-loss", f->runtime_loss,
                "log: lambda*1e3*ln(R) | linear: lambda*R (R in ms) | target: lambda*max(0, R/T - 1), T = --target-ms")
      ->capture_default_str()
      ->check(CLI::IsMember({"log", "linear", "target"}));
  s->add_option("--target-ms", c.target_ms, "latency target T (ms): the target form's T; reported against in the verdict")
      ->capture_default_str()
      ->check(number_in(0, 1e6));
  s->add_option("--decode", f->decode,
                "final: the decisions after the last step (the reference) | band: the last decisions after the warm-up "
                "whose predicted R was within --decode-band below --target-ms (else the final ones) | round: as band, "
                "and where no step was in the band the final decisions with the fewest margins' worth of them flipped "
                "so that R lands in it")
      ->capture_default_str()
      ->check(CLI::IsMember({"final", "band", "round"}));
  s->add_option("--decode-band", c.decode_band, "--decode band/round's band: [(1 - this) T, T] (1: any R <= T)")
      ->capture_default_str()
      ->check(number_above(0, 1));
  s->add_flag("--se", c.search_se, "search squeeze-and-excitation too (the journal version)");
  s->add_flag("--squared-norm", c.squared_norm, "squared L2 norms in the indicators");
  s->add_option("--threshold-margin", c.threshold_margin,
                "< 0: thresholds start at 0 (the paper); >= 0: each starts at its norm at initialisation minus this "
                "margin (nas/README.md: why a full-width search may not move)")
      ->capture_default_str()
      ->check(number_in(-1e9, 1e9));
  s->add_flag("--bilevel", c.bilevel, "thresholds on the held-out split (default: one level, as the reference)");
  s->add_option("--val-fraction", c.val_fraction,
                "held-out fraction of the training set: the supernet's accuracy with its current decisions is "
                "measured on it during the search (and --bilevel trains the thresholds on it); 0: none")
      ->capture_default_str()
      ->check(number_in(0, 0.9));
  s->add_option("--monitor-every", c.monitor_every, "steps between held-out accuracy measurements (0: 8 per epoch)")
      ->capture_default_str()
      ->check(integer_in(0, 1e12));
  s->add_option("--bn-momentum", c.bn_momentum, "batch-norm running-average momentum")
      ->capture_default_str()
      ->check(number_in(0, 0.9999));
  s->add_option("--workers", c.workers, "data-loading threads")->capture_default_str()->check(integer_in(1, 64));
  s->add_option("--out", c.out_dir, "output folder")->capture_default_str();
  s->add_option("--checkpoint-every", c.checkpoint_every, "steps between checkpoints (also on SIGINT/SIGTERM; 0: at the end)")
      ->capture_default_str()
      ->check(integer_in(0, 1e12));
  s->add_flag("--resume", c.resume, "continue from OUT/search.ckpt (with the same options)");
  s->add_flag("--allow-config-change", c.allow_config_change,
              "resume even where the options differ from the checkpoint's (each change is logged)");
  add_memory_limit(s, c.memory_limit_gib);
  s->add_option("--max-steps", c.max_steps, "stop after this many steps in all (-1: no limit)")
      ->capture_default_str()
      ->check(integer_in(-1, 1e12));
  add_threads(s, f->threads);
  add_parallel(s, c.parallel);
  s->add_option("--seed", c.seed, "random seed")->capture_default_str();
  s->add_flag("--no-low-memory", f->no_low_memory, "keep post-activation tensors instead of recomputing them (more memory)");
  s->add_flag("--quiet", c.quiet, "no progress output (warnings still print)");

  return {s, [f, s] {
            set_threads_for_rank(f->threads);
            if (f->no_low_memory) set_low_memory(false);
            SearchConfig& c = f->c;
            c.data = parse_data_spec(f->data);
            if (f->check_data && is_writer()) run_check_data(c.data);
            c.runtime_loss = parse_runtime_loss(f->runtime_loss);
            c.freeze_thresholds_in_warmup = f->warmup_thresholds == "freeze";
            c.decode = f->decode == "band"    ? DecodeRule::LastInBand
                       : f->decode == "round" ? DecodeRule::Round
                                              : DecodeRule::Final;
            c.runtime_mode = parse_runtime_mode(f->table.runtime_model);
            LatencyTable table = load_table(f->table);
            apply_table_settings(s, table, c.space, c.space_options);
            SearchResult r = run_search(c, table);
            if (!is_writer()) return 0;  // under mpirun: rank 0 reports
            std::printf("search: %lld steps in %.1f s%s\n", (long long)r.steps, r.seconds,
                        r.finished ? "" : " (stopped early by --max-steps)");
            std::printf("architecture: %s\n", arch_summary(r.arch).c_str());
            for (const std::string& line : r.verdict.lines) std::printf("%s\n", line.c_str());
            if (r.final_val_accuracy >= 0)
              std::printf("held-out accuracy of the supernet with these decisions: %.1f %%\n", 100 * r.final_val_accuracy);
            std::printf("files: %s %s %s %s\n", r.arch_path.c_str(), r.csv_path.c_str(), r.svg_path.c_str(),
                        r.checkpoint_path.c_str());
            if (f->verify && r.finished) verify_latency(r.arch, table, c.target_ms);
            return 0;
          }};
}

}  // namespace spnas::cli
