#include "nas/train.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "engine/checkpoint.h"
#include "engine/ema.h"
#include "engine/optim.h"
#include "ops/ops.h"

namespace spnas {

EvalResult evaluate(Network& net, const std::shared_ptr<Dataset>& ds, int batch, int workers) {
  NoGrad ng;
  AugmentConfig aug = default_eval_augment(*ds);
  aug.out_size = net.space().input_size;
  Loader loader(ds, batch, false, aug, 0, workers, false);
  Tensor images;
  std::vector<int> labels;
  EvalResult r;
  double loss = 0;
  int64_t correct = 0;
  ForwardOptions fo;
  fo.training = false;
  while (loader.next(images, labels)) {
    Var logits = net.forward(constant(images), fo);
    const int64_t N = logits->value.dim(0), K = logits->value.dim(1);
    loss += softmax_cross_entropy(logits, labels, 0.0f)->value.item() * N;
    for (int64_t n = 0; n < N; ++n) {
      const float* l = logits->value.data() + n * K;
      int64_t best = 0;
      for (int64_t k = 1; k < K; ++k)
        if (l[k] > l[best]) best = k;
      correct += best == labels[n];
    }
    r.images += N;
  }
  r.accuracy = r.images ? double(correct) / r.images : 0;
  r.loss = r.images ? loss / r.images : 0;
  return r;
}

TrainResult run_train(const TrainConfig& cfg) {
  const double t0 = now_seconds();
  install_stop_handlers();
  make_dirs(cfg.out_dir);
  TrainResult res;
  res.checkpoint_path = cfg.out_dir + "/model.ckpt";

  Splits data = open_dataset(cfg.data);
  Arch arch = cfg.arch;
  if (!arch.num_classes) arch.num_classes = data.train->num_classes();
  NetConfig ncfg;
  ncfg.bn_momentum = cfg.bn_momentum;
  ncfg.dropout = cfg.dropout;
  ncfg.seed = cfg.seed;
  ChildNet net(arch, ncfg);
  if (net.space().num_classes != data.train->num_classes())
    throw std::runtime_error("train: the architecture has " + std::to_string(net.space().num_classes) +
                             " classes but the dataset has " + std::to_string(data.train->num_classes()));
  if (data.train->channels() != 3)
    throw std::runtime_error("train: the networks take RGB images; dataset '" + data.train->name() + "' has " +
                             std::to_string(data.train->channels()) + " channel(s)");
  res.params = net.params().count();
  res.macs = net.macs();
  AugmentConfig aug = cfg.augment ? default_train_augment(*data.train) : default_eval_augment(*data.train);
  aug.out_size = net.space().input_size;
  Loader loader(data.train, cfg.batch, true, aug, cfg.seed, cfg.workers);
  const int64_t spe = loader.batches_per_epoch();
  const int64_t total = std::max<int64_t>(1, int64_t(cfg.epochs * spe + 0.5));
  LrConfig lrc = cfg.lr;
  if (lrc.lr <= 0) lrc.lr = 0.016f * cfg.batch / 256.0f;
  Schedule schedule = make_schedule(lrc, spe, total);
  std::unique_ptr<Optimizer> opt = make_optimizer(cfg.optimizer, net.params(), cfg.weight_decay);
  std::unique_ptr<Ema> ema;
  if (cfg.ema_decay > 0) ema = std::make_unique<Ema>(net.params(), cfg.ema_decay, true);
  Rng rng(cfg.seed ^ 0x7a11ULL);

  nlohmann::json meta = {{"kind", "spnas-train"}, {"arch", nlohmann::json::parse(arch_to_json(arch))},
                         {"arch_source", cfg.arch_source}, {"bn_momentum", cfg.bn_momentum}};
  auto make_ck = [&]() {
    Checkpoint ck;
    ck.params = &net.params();
    ck.optimizer = opt.get();
    ck.ema = ema.get();
    ck.rngs = {{"train", &rng}};
    ck.metadata = meta.dump();
    return ck;
  };
  auto save = [&](int64_t step) {
    Checkpoint ck = make_ck();
    ck.step = step;
    Loader::Position p = loader.position();
    ck.blobs["loader"] = std::to_string(p.epoch) + " " + std::to_string(p.batch);
    save_checkpoint(res.checkpoint_path, ck);
  };
  int64_t step = 0;
  if (cfg.resume) {
    Checkpoint ck = make_ck();
    load_checkpoint(res.checkpoint_path, ck);
    step = ck.step;
    Loader::Position p{};
    std::istringstream(ck.blobs["loader"]) >> p.epoch >> p.batch;
    loader.seek(p);
    if (!cfg.quiet) std::fprintf(stderr, "train: resumed from %s at step %lld\n", res.checkpoint_path.c_str(), (long long)step);
  }
  std::ofstream log(cfg.out_dir + "/train_log.csv", cfg.resume ? std::ios::app : std::ios::trunc);
  if (!cfg.resume) log << "step,epoch,lr,loss,test_accuracy\n";

  const int64_t end = cfg.max_steps >= 0 ? std::min(total, cfg.max_steps) : total;
  Progress progress("train", total, cfg.quiet);
  Tensor images;
  std::vector<int> labels;
  double loss_avg = 0;
  const double t_loop = now_seconds();
  const int64_t first = step;
  for (; step < end; ++step) {
    if (!loader.next(images, labels) && !loader.next(images, labels))
      throw std::runtime_error("train: the training split yields no batch (batch larger than the dataset?)");
    ForwardOptions fo;
    fo.training = true;
    fo.rng = &rng;
    op_profile_mark();  // loading the batch is not the first op's time
    Var loss = softmax_cross_entropy(net.forward(constant(images), fo), labels, cfg.label_smoothing);
    if (!std::isfinite(loss->value.item()))
      throw std::runtime_error("train: loss is not finite at step " + std::to_string(step) +
                               " (lower the learning rate); the last checkpoint is intact");
    net.params().zero_grad();
    backward(loss);
    const float lr = schedule(step);
    opt->step(lr);
    if (ema) ema->update(step);
    loss_avg = step == first ? loss->value.item() : 0.98 * loss_avg + 0.02 * loss->value.item();
    char status[64];
    std::snprintf(status, sizeof status, "loss %.3f", loss_avg);
    progress.update(step + 1, status);
    const bool epoch_end = (step + 1) % spe == 0 || step + 1 == end;
    if (epoch_end) {
      double acc = NAN;
      if (cfg.eval_each_epoch || step + 1 == end) {
        if (ema) ema->swap_in();
        acc = evaluate(net, data.test, cfg.batch, cfg.workers).accuracy;
        if (ema) ema->restore();
      }
      log << step + 1 << ',' << double(step + 1) / spe << ',' << lr << ',' << loss_avg << ',' << acc << '\n';
      log.flush();
      save(step + 1);
    }
    if (stop_requested()) {
      ++step;
      save(step);
      break;
    }
  }
  progress.finish();
  if (op_profile())
    std::fprintf(stderr, "op profile (SPNAS_PROFILE), %lld steps:\n%s", (long long)(step - first),
                 op_profile_report(int(step - first)).c_str());
  res.steps = step;
  res.finished = step >= total;
  const double loop_s = now_seconds() - t_loop;
  res.images_per_second = loop_s > 0 ? double(step - first) * cfg.batch / loop_s : 0;
  if (step == first) save(step);
  if (ema) ema->swap_in();
  res.test = evaluate(net, data.test, cfg.batch, cfg.workers);
  if (ema) ema->restore();
  res.seconds = now_seconds() - t0;
  return res;
}

EvalResult evaluate_checkpoint(const std::string& path, const DataSpec& spec, bool use_ema, int batch, Arch* arch_out) {
  CheckpointData d = read_checkpoint(path);
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(d.metadata);
  } catch (...) {
    throw std::runtime_error("eval: checkpoint '" + path + "' has no readable metadata");
  }
  if (meta.value("kind", "") != "spnas-train" || !meta.contains("arch"))
    throw std::runtime_error("eval: checkpoint '" + path + "' was not written by `spnas train`");
  Arch arch = parse_arch(meta["arch"].dump(), path + " (arch)");
  if (arch_out) *arch_out = arch;
  NetConfig ncfg;
  ncfg.bn_momentum = meta.value("bn_momentum", 0.99f);
  ChildNet net(arch, ncfg);
  std::unique_ptr<Ema> ema;
  if (use_ema) {
    if (!d.has_ema) throw std::runtime_error("eval: checkpoint '" + path + "' has no EMA weights (use --no-ema)");
    ema = std::make_unique<Ema>(net.params(), 0.999f, true);
  }
  Checkpoint ck;
  ck.params = &net.params();
  ck.ema = ema.get();
  load_checkpoint(path, ck);
  if (ema) ema->swap_in();
  Splits data = open_dataset(spec);
  if (data.train->num_classes() != net.space().num_classes)
    throw std::runtime_error("eval: the checkpoint's network has " + std::to_string(net.space().num_classes) +
                             " classes but the dataset has " + std::to_string(data.train->num_classes()));
  return evaluate(net, data.test, batch);
}

}  // namespace spnas
