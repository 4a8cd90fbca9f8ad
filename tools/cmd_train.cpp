// spnas train and spnas eval: training an architecture from scratch and evaluating it (nas/train.h).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/io.h"
#include "engine/threads.h"
#include "nas/train.h"
#include "tools/cli.h"

namespace spnas::cli {

Command add_train(CLI::App& app) {
  struct Flags {
    TrainFlags protocol;
    std::string arch;
    int threads = 0;
    bool check_data = false;
  };
  auto f = std::make_shared<Flags>();
  TrainConfig& c = f->protocol.config;
  CLI::App* s = app.add_subcommand("train",
                                   "Trains an architecture from scratch and evaluates it (EMA weights).\nWrites "
                                   "OUT/model.ckpt, OUT/train_log.csv and, once finished, OUT/result.json.");
  s->add_option("--arch", f->arch, "architecture JSON (from `spnas search` or `spnas random`)")->required();
  add_train_protocol(s, f->protocol);
  add_check_data(s, f->check_data);
  s->add_option("--val-fraction", c.val_fraction,
                "hold out this fraction of the training set and report accuracy on it (for choosing; the test set is "
                "for the report)")
      ->capture_default_str()
      ->check(number_in(0, 0.9));
  s->add_option("--out", c.out_dir, "output folder")->capture_default_str();
  s->add_option("--checkpoint-every", c.checkpoint_every, "steps between checkpoints (0: every epoch; also on SIGINT/SIGTERM)")
      ->capture_default_str()
      ->check(integer_in(0, 1e12));
  s->add_flag("--resume", c.resume, "continue from OUT/model.ckpt (with the same options)");
  s->add_flag("--extend", c.extend,
              "with --resume and a larger --epochs: extend the run; the learning-rate schedule is rebuilt over the new "
              "length from the current step (a cosine rises again: a warm restart), and the change is printed and logged");
  s->add_flag("--allow-config-change", c.allow_config_change,
              "resume even where the options differ from the checkpoint's (each change is logged)");
  s->add_option("--init-from", c.init_from,
                "start from the weights of another `spnas train` checkpoint of the same architecture (fine-tuning); the "
                "classifier is re-made when the class count differs");
  add_threads(s, f->threads);
  add_parallel(s, c.parallel);
  s->add_option("--seed", c.seed, "random seed")->capture_default_str();
  s->add_flag("--quiet", c.quiet, "no progress output");

  return {s, [f] {
            set_threads_for_rank(f->threads);
            if (f->protocol.no_low_memory) set_low_memory(false);
            TrainConfig c = f->protocol.resolved();
            if (f->check_data && is_writer()) run_check_data(c.data);
            c.arch = load_arch(f->arch);
            c.arch_source = f->arch;
            TrainResult r = run_train(c);
            if (!is_writer()) return 0;  // under mpirun: rank 0 reports
            std::printf("architecture: %s\n", arch_summary(c.arch).c_str());
            std::printf("params: %lld  MACs: %.2f M\n", (long long)r.params, r.macs / 1e6);
            std::printf("steps: %lld  time: %.1f s  (%.0f images/s in training steps)\n", (long long)r.steps,
                        r.seconds, r.images_per_second);
            if (r.has_val)
              std::printf("held-out accuracy (%s): %.2f %% on %lld images\n", r.val.weights.c_str(),
                          100 * r.val.accuracy, (long long)r.val.images);
            std::printf("test accuracy (%s%s): %.2f %% on %lld images, loss %.4f\n", r.test.weights.c_str(),
                        r.ema_decay > 0 ? (", decay " + fmt(r.ema_decay, 4)).c_str() : "", 100 * r.test.accuracy,
                        (long long)r.test.images, r.test.loss);
            if (r.ema_decay > 0)
              std::printf("test accuracy (raw weights): %.2f %%\n", 100 * r.test_raw.accuracy);
            std::printf("checkpoint: %s\n", r.checkpoint_path.c_str());
            return 0;
          }};
}

Command add_eval(CLI::App& app) {
  struct Flags {
    std::string checkpoint, data = "synthetic", weights = "ema";
    int batch = 100, threads = 0;
    bool json = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("eval",
                                   "Evaluates a checkpoint written by `spnas train` on a dataset's test split: accuracy, "
                                   "loss, per-class accuracy and the confusion matrix.");
  s->add_option("--checkpoint", f->checkpoint, "checkpoint file (OUT/model.ckpt of `spnas train`)")->required();
  add_data(s, f->data);
  s->add_option("--batch", f->batch, "batch size")->capture_default_str()->check(integer_in(1, 65536));
  s->add_option("--weights", f->weights, "ema (the moving average, what train reports), raw, or both")
      ->capture_default_str()
      ->check(CLI::IsMember({"ema", "raw", "both"}));
  s->add_flag("--json", f->json, "print JSON (with the per-class accuracy and the confusion matrix)");
  add_threads(s, f->threads);
  return {s, [f] {
            set_num_threads(f->threads);
            Arch arch;
            std::vector<EvalResult> results;
            for (bool ema : {true, false})
              if (f->weights == "both" || (f->weights == "ema") == ema)
                results.push_back(evaluate_checkpoint(f->checkpoint, parse_data_spec(f->data), ema, f->batch, &arch));
            if (f->json) {
              nlohmann::json out = {{"arch", arch_summary(arch)}, {"checkpoint", f->checkpoint}};
              for (const EvalResult& r : results) {
                nlohmann::json classes = nlohmann::json::array();
                for (size_t k = 0; k < r.class_accuracy.size(); ++k)
                  classes.push_back({{"class", r.class_names.size() > k ? r.class_names[k] : std::to_string(k)},
                                     {"accuracy", r.class_accuracy[k]}});
                out[r.weights == "EMA" ? "ema" : "raw"] = {{"accuracy", r.accuracy}, {"loss", r.loss},
                                                           {"images", r.images},  {"per_class", classes},
                                                           {"confusion", r.confusion}};
              }
              std::printf("%s\n", out.dump(2).c_str());
              return 0;
            }
            std::printf("architecture: %s\n", arch_summary(arch).c_str());
            for (const EvalResult& r : results)
              std::printf("test accuracy (%s weights): %.2f %% on %lld images, loss %.4f\n", r.weights.c_str(),
                          100 * r.accuracy, (long long)r.images, r.loss);
            const EvalResult& r = results.front();
            std::printf("\nper class (%s weights; rows: true class, columns: predicted)\n", r.weights.c_str());
            std::printf("%-14s %7s ", "class", "acc %");
            for (size_t k = 0; k < r.confusion.size(); ++k) std::printf("%6zu", k);
            std::printf("\n");
            for (size_t k = 0; k < r.confusion.size(); ++k) {
              const std::string name = r.class_names.size() > k ? r.class_names[k] : std::to_string(k);
              std::printf("%zu %-12.12s %7.1f ", k, name.c_str(), 100 * r.class_accuracy[k]);
              for (int64_t v : r.confusion[k]) std::printf("%6lld", (long long)v);
              std::printf("\n");
            }
            return 0;
          }};
}

}  // namespace spnas::cli
