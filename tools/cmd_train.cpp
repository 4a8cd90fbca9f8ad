// spnas train and spnas eval: training an architecture from scratch and evaluating it (nas/train.h).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/threads.h"
#include "nas/train.h"
#include "tools/cli.h"

namespace spnas::cli {

Command add_train(CLI::App& app) {
  struct Flags {
    TrainConfig c;
    std::string arch, data = "synthetic";
    int threads = 0;
    bool no_augment = false, no_low_memory = false;
  };
  auto f = std::make_shared<Flags>();
  TrainConfig& c = f->c;
  CLI::App* s = app.add_subcommand("train",
                                   "Trains an architecture from scratch and evaluates it (EMA weights).\nWrites "
                                   "OUT/model.ckpt and OUT/train_log.csv.");
  s->add_option("--arch", f->arch, "architecture JSON (from `spnas search`)")->required();
  add_data(s, f->data);
  s->add_option("--batch", c.batch, "batch size")->capture_default_str()->check(integer_in(2, 65536));
  s->add_option("--epochs", c.epochs, "training length in epochs")->capture_default_str()->check(number_above(0, 1e5));
  add_lr(s, c.lr);
  s->add_option("--optimizer", c.optimizer, "rmsprop (TF-1 semantics) | sgd (Nesterov) | adam")
      ->capture_default_str()
      ->check(CLI::IsMember({"rmsprop", "sgd", "adam"}));
  s->add_option("--weight-decay", c.weight_decay, "L2 weight decay (batch norm excluded)")
      ->capture_default_str()
      ->check(number_in(0, 1));
  s->add_option("--label-smoothing", c.label_smoothing, "label smoothing")->capture_default_str()->check(number_in(0, 0.99));
  s->add_option("--ema", c.ema_decay, "EMA decay of the weights used for evaluation (0: off)")
      ->capture_default_str()
      ->check(number_in(0, 0.99999));
  s->add_option("--bn-momentum", c.bn_momentum, "batch-norm running-average momentum")
      ->capture_default_str()
      ->check(number_in(0, 0.9999));
  s->add_option("--dropout", c.dropout, "dropout before the classifier (-1: the space's)")
      ->capture_default_str()
      ->check(number_in(-1, 0.95));
  s->add_option("--workers", c.workers, "data-loading threads")->capture_default_str()->check(integer_in(1, 64));
  s->add_option("--out", c.out_dir, "output folder")->capture_default_str();
  s->add_flag("--resume", c.resume, "continue from OUT/model.ckpt");
  s->add_flag("--no-augment", f->no_augment, "no random crop / flip");
  s->add_option("--max-steps", c.max_steps, "stop after this many steps in all (-1: no limit)")
      ->capture_default_str()
      ->check(integer_in(-1, 1e12));
  add_threads(s, f->threads);
  s->add_option("--seed", c.seed, "random seed")->capture_default_str();
  s->add_flag("--no-low-memory", f->no_low_memory, "keep post-activation tensors instead of recomputing them (more memory)");
  s->add_flag("--quiet", c.quiet, "no progress output");

  return {s, [f] {
            set_num_threads(f->threads);
            if (f->no_low_memory) set_low_memory(false);
            TrainConfig& c = f->c;
            c.arch = load_arch(f->arch);
            c.arch_source = f->arch;
            c.data = parse_data_spec(f->data);
            c.augment = !f->no_augment;
            TrainResult r = run_train(c);
            std::printf("architecture: %s\n", arch_summary(c.arch).c_str());
            std::printf("params: %lld  MACs: %.2f M\n", (long long)r.params, r.macs / 1e6);
            std::printf("steps: %lld  time: %.1f s  (%.0f images/s)\n", (long long)r.steps, r.seconds,
                        r.images_per_second);
            std::printf("test accuracy (EMA): %.2f %% on %lld images, loss %.4f\n", 100 * r.test.accuracy,
                        (long long)r.test.images, r.test.loss);
            std::printf("checkpoint: %s\n", r.checkpoint_path.c_str());
            return 0;
          }};
}

Command add_eval(CLI::App& app) {
  struct Flags {
    std::string checkpoint, data = "synthetic";
    int batch = 100, threads = 0;
    bool no_ema = false, json = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("eval", "Evaluates a checkpoint written by `spnas train` on a dataset's test split.");
  s->add_option("--checkpoint", f->checkpoint, "checkpoint file (OUT/model.ckpt of `spnas train`)")->required();
  add_data(s, f->data);
  s->add_option("--batch", f->batch, "batch size")->capture_default_str()->check(integer_in(1, 65536));
  s->add_flag("--no-ema", f->no_ema, "use the raw weights instead of their moving average");
  s->add_flag("--json", f->json, "print JSON");
  add_threads(s, f->threads);
  return {s, [f] {
            set_num_threads(f->threads);
            Arch arch;
            EvalResult r = evaluate_checkpoint(f->checkpoint, parse_data_spec(f->data), !f->no_ema, f->batch, &arch);
            if (f->json) {
              nlohmann::json j = {{"accuracy", r.accuracy}, {"loss", r.loss}, {"images", r.images},
                                  {"arch", arch_summary(arch)}};
              std::printf("%s\n", j.dump(2).c_str());
            } else {
              std::printf("architecture: %s\ntest accuracy: %.2f %% on %lld images, loss %.4f\n",
                          arch_summary(arch).c_str(), 100 * r.accuracy, (long long)r.images, r.loss);
            }
            return 0;
          }};
}

}  // namespace spnas::cli
