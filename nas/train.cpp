#include "nas/train.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/checkpoint.h"
#include "engine/ema.h"
#include "engine/io.h"
#include "engine/optim.h"
#include "ops/ops.h"

namespace spnas {

float ema_decay_for(int64_t total_steps) {
  return float(std::clamp(1.0 - 10.0 / double(std::max<int64_t>(total_steps, 1)), 0.9, 0.9999));
}

std::unique_ptr<Loader> eval_loader(const std::shared_ptr<Dataset>& ds, int input_size, int batch, int workers) {
  AugmentConfig aug = default_eval_augment(*ds);
  aug.out_size = input_size;
  return std::make_unique<Loader>(ds, batch, false, aug, 0, workers, false);
}

EvalResult evaluate(Network& net, const std::shared_ptr<Dataset>& ds, int batch, int workers) {
  NoGrad ng;
  std::unique_ptr<Loader> loader = eval_loader(ds, net.space().input_size, batch, workers);
  Tensor images;
  std::vector<int> labels;
  EvalResult r;
  const int64_t K = ds->num_classes();
  r.class_names = ds->class_names();
  r.confusion.assign(size_t(K), std::vector<int64_t>(size_t(K), 0));
  double loss = 0;
  int64_t correct = 0;
  ForwardOptions fo;
  fo.training = false;
  while (loader->next(images, labels)) {
    Var logits = net.forward(constant(images), fo);
    const int64_t N = logits->value.dim(0);
    check(logits->value.dim(1) == K, "evaluate", "the network has " + std::to_string(logits->value.dim(1)) +
                                                     " outputs but the dataset has " + std::to_string(K) + " classes");
    loss += softmax_cross_entropy(logits, labels, 0.0f)->value.item() * N;
    for (int64_t n = 0; n < N; ++n) {
      const float* l = logits->value.data() + n * K;
      const int64_t best = std::max_element(l, l + K) - l;
      correct += best == labels[size_t(n)];
      ++r.confusion[size_t(labels[size_t(n)])][size_t(best)];
    }
    r.images += N;
  }
  r.accuracy = r.images ? double(correct) / r.images : 0;
  r.loss = r.images ? loss / r.images : 0;
  for (int64_t k = 0; k < K; ++k) {
    int64_t row = 0;
    for (int64_t v : r.confusion[size_t(k)]) row += v;
    r.class_accuracy.push_back(row ? double(r.confusion[size_t(k)][size_t(k)]) / row : NAN);
  }
  return r;
}

namespace {

// What a resume must match; `epochs` may grow with --extend.
nlohmann::json config_record(const TrainConfig& c, const Arch& arch) {
  nlohmann::json r = training_record(c);
  r.update({{"arch", nlohmann::json::parse(arch_to_json(arch))},
            {"ema", c.ema_decay},
            {"dropout", c.dropout},
            {"init_from", c.init_from}});
  return r;
}

nlohmann::json checkpoint_meta(const std::string& path, const CheckpointData& d) {
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(d.metadata);
  } catch (...) {
    throw std::runtime_error("checkpoint '" + path + "' has no readable metadata (not written by spnas?)");
  }
  const std::string kind = meta.is_object() ? meta.value("kind", "") : "";
  if (kind == "spnas-search")
    throw std::runtime_error("'" + path + "' is a search checkpoint (the supernet); this needs the checkpoint of "
                             "`spnas train` (OUT/model.ckpt)");
  if (kind != "spnas-train" || !meta.contains("arch"))
    throw std::runtime_error("checkpoint '" + path + "' was not written by `spnas train`");
  return meta;
}

// Copies every parameter and buffer of `from` whose name and shape match into `net`; the classifier
// may differ (another class count) and is then left as initialised. Returns what was done, in words.
std::string init_weights_from(ParamSet& ps, const std::string& from) {
  const CheckpointData d = read_checkpoint(from);
  checkpoint_meta(from, d);
  std::map<std::string, const Tensor*> have;
  for (const auto& [name, t] : d.params) have[name] = &t;
  for (const auto& [name, t] : d.buffers) have[name] = &t;
  int copied = 0;
  std::vector<std::string> remade;
  auto take = [&](const std::string& name, Tensor dst) {  // a handle: writes reach the model
    auto it = have.find(name);
    const bool classifier = name.rfind("head/fc", 0) == 0;
    if (it == have.end() || it->second->shape() != dst.shape()) {
      if (classifier) return remade.push_back(name);
      throw std::runtime_error("--init-from '" + from + "': " + name +
                               (it == have.end() ? " is missing" : " has shape " + shape_str(it->second->shape()) +
                                                                       " but the network's is " + shape_str(dst.shape())) +
                               " (another architecture?)");
    }
    std::copy(it->second->data(), it->second->data() + dst.numel(), dst.data());
    ++copied;
  };
  for (const Param& p : ps.params()) take(p.name, p.var->value);
  for (auto& [name, t] : ps.buffers()) take(name, t);
  std::string s = "initialised " + std::to_string(copied) + " tensors from '" + from + "'";
  if (!remade.empty()) s += "; the classifier was re-made (another class count)";
  return s;
}

}  // namespace

Arch checkpoint_arch(const std::string& path) {
  const CheckpointData d = read_checkpoint(path);
  const nlohmann::json meta = checkpoint_meta(path, d);
  return parse_arch(meta["arch"].dump(), path + " (arch)");
}

namespace {

// The training on this rank (every rank of a data-parallel run runs it; rank 0 writes the files).
TrainResult train_on_this_rank(const TrainConfig& cfg) {
  const double t0 = now_seconds();
  RunFolder folder(cfg.out_dir, "train", is_writer());
  install_stop_handlers();
  // The result is assembled at the end, from what the run wrote.
  const std::string checkpoint_path = folder.file("model.ckpt");
  const std::string result_path = folder.file("result.json");
  std::remove(result_path.c_str());  // "done" only once this run has reached its last step

  Splits data = open_dataset(cfg.data, cfg.val_fraction, cfg.seed);
  if (data.train->num_classes() < 2)
    throw std::runtime_error("train: dataset '" + data.train->name() + "' has " +
                             std::to_string(data.train->num_classes()) + " class(es); a classifier needs at least 2");
  Arch arch = cfg.arch;
  if (!arch.num_classes) arch.num_classes = data.train->num_classes();
  if (!arch.input_channels) arch.input_channels = data.train->channels();
  if (arch.num_classes != data.train->num_classes())
    throw std::runtime_error("train: the architecture has " + std::to_string(arch.num_classes) +
                             " classes but dataset '" + data.train->name() + "' has " +
                             std::to_string(data.train->num_classes()));
  if (arch.input_channels != data.train->channels())
    throw std::runtime_error("train: the architecture takes " + std::to_string(arch.input_channels) +
                             "-channel images but dataset '" + data.train->name() + "' has " +
                             std::to_string(data.train->channels()) + " channel(s)");
  SpaceOptions so;
  so.width = arch.width, so.input_size = arch.input_size, so.num_classes = arch.num_classes;
  so.input_channels = arch.input_channels;
  const SearchSpace space = load_space(arch.space, so);
  const NetCost cost = child_cost(space, arch);
  check_memory(cost.training_bytes(cfg.batch, cfg.optimizer == "sgd" ? 1 : 2, cfg.ema_decay != 0),
               memory_limit_bytes(cfg.memory_limit_gib), "train: this network at batch " + std::to_string(cfg.batch));

  NetConfig ncfg;
  ncfg.bn_momentum = cfg.bn_momentum;
  ncfg.dropout = cfg.dropout;
  ncfg.seed = cfg.seed;
  ChildNet net(arch, ncfg);
  AugmentConfig aug = cfg.augment ? default_train_augment(*data.train) : default_eval_augment(*data.train);
  aug.out_size = net.space().input_size;
  Loader loader(data.train, cfg.batch, true, aug, cfg.seed, cfg.workers, true, batch_shard());
  const int64_t spe = loader.batches_per_epoch();
  const int64_t total = std::max<int64_t>(1, int64_t(cfg.epochs * spe + 0.5));
  LrConfig lrc = cfg.lr;
  if (lrc.lr <= 0) lrc.lr = default_learning_rate(cfg.optimizer, cfg.batch);
  Schedule schedule = make_schedule(lrc, spe, total);
  std::unique_ptr<Optimizer> opt = make_optimizer(cfg.optimizer, net.params(), cfg.weight_decay);
  const float ema_decay = cfg.ema_decay < 0 ? ema_decay_for(total) : cfg.ema_decay;
  std::unique_ptr<Ema> ema;
  if (ema_decay > 0) ema = std::make_unique<Ema>(net.params(), ema_decay, true);
  Rng rng(rank_seed(cfg.seed ^ 0x7a11ULL));
  RankRng rank_rng("train", rng);
  DataParallelStep dp(net.params(), cfg.parallel);
  if (!cfg.init_from.empty() && !cfg.resume) {
    const std::string what = init_weights_from(net.params(), cfg.init_from);
    if (ema) ema = std::make_unique<Ema>(net.params(), ema_decay, true);  // shadows start from these weights
    if (!cfg.quiet) std::fprintf(stderr, "train: %s\n", what.c_str());
  }

  const nlohmann::json config = with_parallel_record(config_record(cfg, arch), cfg.parallel);
  const InputRecord input = input_record(*data.train, cfg.data);
  const nlohmann::json meta = {{"kind", "spnas-train"},
                               {"arch", nlohmann::json::parse(arch_to_json(arch))},
                               {"arch_source", cfg.arch_source},
                               {"bn_momentum", cfg.bn_momentum},
                               {"ema_decay", ema_decay},
                               {"config", config},
                               {"input",
                                {{"data", input.data},
                                 {"image_height", input.image_height},
                                 {"image_width", input.image_width},
                                 {"class_names", input.class_names},
                                 {"mean", input.mean},
                                 {"std", input.std}}}};
  auto make_ck = [&] { return rank_checkpoint(net.params(), opt.get(), ema.get(), rank_rng, meta.dump()); };
  auto save = [&](int64_t step) {
    Checkpoint ck = make_ck();
    ck.step = step;
    put_loader_position(ck, "loader", loader);
    save_checkpoint_from_rank0(checkpoint_path, ck, rank_rng);
  };
  const std::string log_path = folder.file("train_log.csv");
  const char* log_head = "step,epoch,lr,loss,test_accuracy";
  int64_t step = 0;
  std::string log_text = std::string(log_head) + "\n";
  if (cfg.resume) {
    const CheckpointData recorded = read_checkpoint(checkpoint_path);
    const nlohmann::json m = checkpoint_meta(checkpoint_path, recorded);
    const nlohmann::json old = m.value("config", nlohmann::json::object());
    if (cfg.extend) {
      const double before = old.value("epochs", 0.0);
      if (!(cfg.epochs > before))
        throw std::runtime_error("train: --extend needs more --epochs than the run had (" + fmt(before, 2) + ")");
    }
    const std::vector<std::string> may_differ = cfg.extend ? std::vector<std::string>{"epochs"} : std::vector<std::string>{};
    for (const std::string& change : compare_run_config(old, config, may_differ, cfg.allow_config_change, checkpoint_path))
      folder.log_change("train: resuming with a changed setting (--allow-config-change): " + change);
    Checkpoint ck = make_ck();
    load_checkpoint(checkpoint_path, ck);
    step = ck.step;
    seek_loader(loader, ck, "loader", checkpoint_path, "train");
    if (cfg.extend) {
      // The schedule the run had, evaluated where it stopped, against the new one: said, not silent.
      const double old_epochs = old.value("epochs", 0.0);
      Schedule before = make_schedule(lrc, spe, std::max<int64_t>(1, int64_t(old_epochs * spe + 0.5)));
      auto rate = [](float v) {
        char b[32];
        std::snprintf(b, sizeof b, "%.3g", v);
        return std::string(b);
      };
      folder.log_change("train: extending the run from " + fmt(old_epochs, 2) + " to " + fmt(cfg.epochs, 2) +
                        " epochs: the learning-rate schedule is rebuilt over the new length; at step " +
                        std::to_string(step) + " the rate was " + rate(before(step)) + " and is now " +
                        rate(schedule(step)));
    }
    // The log keeps the rows before the checkpoint's step; a log that lost rows is refused.
    std::ifstream in(log_path);
    std::string line;
    std::getline(in, line);
    if (line != log_head)
      throw std::runtime_error("train: the log '" + log_path + "' is missing or not a training log: restore it, or "
                               "start afresh in another --out");
    int64_t last = 0;
    while (std::getline(in, line)) {
      const int64_t s = std::atoll(line.c_str());
      if (s > step || line.find(',') == std::string::npos) break;
      last = s;
      log_text += line + "\n";
    }
    // Rows are written at epoch ends and where a run stopped: the last one is at the checkpoint's
    // step or at the epoch end before it.
    if (last != step && last != step / spe * spe)
      throw std::runtime_error("train: the log '" + log_path + "' ends at step " + std::to_string(last) +
                               " but the checkpoint is at step " + std::to_string(step) +
                               " (the log was truncated): restore it, or start afresh in another --out");
    if (!cfg.quiet) std::fprintf(stderr, "train: resumed from %s at step %lld\n", checkpoint_path.c_str(), (long long)step);
  }
  std::ofstream log;
  if (is_writer()) {
    write_file_atomic(log_path, log_text);
    log.open(log_path, std::ios::app);
  }

  const int64_t end = cfg.max_steps >= 0 ? std::min(total, cfg.max_steps) : total;
  Progress progress("train", step, end, cfg.batch, cfg.quiet);
  DivergenceCheck diverged{arch.num_classes, checkpoint_path, "training"};
  auto weights_sq = [&]() {
    double s = 0;
    for (const Param& p : net.params().params()) {
      const float* v = p.var->value.data();
      for (int64_t i = 0; i < p.var->value.numel(); ++i) s += double(v[i]) * v[i];
    }
    return s;
  };
  auto evaluate_with = [&](bool use_ema, const std::shared_ptr<Dataset>& ds) {
    if (use_ema && ema) ema->swap_in();
    EvalResult r = evaluate(net, ds, cfg.batch, cfg.workers);
    r.weights = use_ema && ema ? "EMA" : "raw";
    if (use_ema && ema) ema->restore();
    return r;
  };
  Tensor images;
  std::vector<int> labels;
  double loss_avg = 0, eval_seconds = 0;
  EvalResult test;
  bool have_test = false;
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
    const double loss_value = dp.mean(loss->value.item());
    diverged.check_loss(step, loss_value, 0, 0);
    net.params().zero_grad();
    dp.backward(loss);
    const float lr = schedule(step);
    opt->step(lr);
    diverged.check_params(step, weights_sq(), -1);
    if (ema) ema->update(step);
    loss_avg = step == first ? loss_value : 0.98 * loss_avg + 0.02 * loss_value;
    progress.update(step + 1, lr, "loss " + fmt(loss_avg, 3));
    const bool epoch_end = (step + 1) % spe == 0 || step + 1 == end;
    if (epoch_end) {
      double acc = NAN;
      if (cfg.eval_each_epoch || step + 1 == end) {
        const double te = now_seconds();
        test = evaluate_with(true, data.test);
        have_test = step + 1 == end;
        acc = test.accuracy;
        eval_seconds += now_seconds() - te;
      }
      log << step + 1 << ',' << double(step + 1) / spe << ',' << lr << ',' << loss_avg << ',' << acc << '\n';
      log.flush();
    }
    if (epoch_end || (cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0)) save(step + 1);
    if (dp.stop_requested()) {
      ++step;
      break;
    }
  }
  progress.finish();
  if (op_profile())
    std::fprintf(stderr, "op profile (SPNAS_PROFILE), %lld steps:\n%s", (long long)(step - first),
                 op_profile_report(int(step - first)).c_str());
  const double loop_s = now_seconds() - t_loop - eval_seconds;
  save(step);
  throw_if_interrupted("train", step, checkpoint_path);
  if (!have_test) test = evaluate_with(true, data.test);
  EvalResult test_raw, val;
  if (ema) test_raw = evaluate_with(false, data.test);
  if (data.val) val = evaluate_with(true, data.val);

  const bool finished = step >= total;
  const double seconds = now_seconds() - t0;
  if (finished) {  // written before the result exists (see above: nothing may throw after that)
    auto split = [](const EvalResult& e) {
      return nlohmann::json{{"accuracy", e.accuracy}, {"loss", e.loss}, {"images", e.images}, {"weights", e.weights}};
    };
    nlohmann::json j = {{"kind", "spnas-train-result"}, {"arch", nlohmann::json::parse(arch_to_json(arch))},
                        {"seed", cfg.seed}, {"steps", step}, {"params", net.params().count()}, {"macs", net.macs()},
                        {"seconds", seconds}, {"test", split(test)}};
    if (data.val) j["val"] = split(val);
    write_file_atomic(result_path, j.dump(2) + "\n");
  }

  TrainResult res;
  res.checkpoint_path = checkpoint_path;
  res.params = net.params().count();
  res.macs = net.macs();
  res.ema_decay = ema_decay;
  res.steps = step;
  res.finished = finished;
  res.images_per_second = loop_s > 0 ? double(step - first) * cfg.batch / loop_s : 0;
  res.test = std::move(test);
  res.test_raw = std::move(test_raw);
  res.has_val = data.val != nullptr;
  res.val = std::move(val);
  res.seconds = seconds;
  if (finished) res.result_path = result_path;
  return res;
}

}  // namespace

TrainResult run_train(const TrainConfig& cfg) {
  TrainConfig mine = cfg;
  mine.quiet = cfg.quiet || !is_writer();  // one progress line: rank 0's
  return run_data_parallel("train", cfg.parallel, cfg.batch, cfg.quiet, [&] { return train_on_this_rank(mine); });
}

InputRecord input_record(const Dataset& train, const DataSpec& spec) {
  InputRecord r;
  r.data = spec.path.empty() ? spec.kind : spec.kind + ":" + spec.path;
  r.image_height = train.height();
  r.image_width = train.width();
  r.class_names = train.class_names();
  r.mean = train.mean();
  r.std = train.stddev();
  return r;
}

// The "input" object of a training checkpoint's metadata; throws naming the file and field.
static InputRecord parse_input_record(const nlohmann::json& j, const std::string& where) {
  InputRecord r;
  try {
    r.data = j.at("data").get<std::string>();
    r.image_height = j.at("image_height").get<int>();
    r.image_width = j.at("image_width").get<int>();
    r.class_names = j.at("class_names").get<std::vector<std::string>>();
    r.mean = j.at("mean").get<std::vector<float>>();
    r.std = j.at("std").get<std::vector<float>>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(where + ": malformed \"input\" record: " + e.what());
  }
  if (r.image_height <= 0 || r.image_width <= 0 || r.mean.empty() || r.mean.size() != r.std.size())
    throw std::runtime_error(where + ": the \"input\" record needs a positive image size and one mean and std per channel");
  for (float s : r.std)
    if (!(s > 0)) throw std::runtime_error(where + ": the \"input\" record has a non-positive std");
  return r;
}

const InputRecord& TrainedNetwork::input_or_throw(const std::string& who) const {
  if (!has_input)
    throw std::runtime_error(who + ": checkpoint '" + checkpoint +
                             "' does not record its input (class names, image size, normalisation): it was written "
                             "before `spnas train` kept them; name the dataset it was trained on");
  return input;
}

TrainedNetwork load_trained_network(const std::string& path, bool use_ema, const std::string& who,
                                    const DataSpec& input_fallback) {
  const CheckpointData d = read_checkpoint(path);
  const nlohmann::json meta = checkpoint_meta(path, d);
  TrainedNetwork t;
  t.checkpoint = path;
  t.arch = parse_arch(meta["arch"].dump(), path + " (arch)");
  t.ema = use_ema;
  if (meta.contains("input")) {
    t.input = parse_input_record(meta["input"], path);
    t.has_input = true;
  } else if (!input_fallback.kind.empty()) {
    t.input = input_record(*open_dataset(input_fallback).train, input_fallback);
    t.has_input = true;
  }
  NetConfig ncfg;
  ncfg.bn_momentum = meta.value("bn_momentum", 0.99f);
  t.net = std::make_unique<ChildNet>(t.arch, ncfg);
  const SearchSpace& sp = t.net->space();
  if (t.has_input && (int(t.input.class_names.size()) != sp.num_classes || int(t.input.mean.size()) != sp.input_channels))
    throw std::runtime_error(who + ": " + t.input.data + " has " + std::to_string(t.input.class_names.size()) +
                             " classes of " + std::to_string(t.input.mean.size()) + "-channel images but the network of '" +
                             path + "' has " + std::to_string(sp.num_classes) + " classes of " +
                             std::to_string(sp.input_channels) + "-channel images");
  std::unique_ptr<Ema> ema;
  if (use_ema) {
    if (!d.has_ema)
      throw std::runtime_error(who + ": checkpoint '" + path + "' has no EMA weights (use the raw weights: --weights raw)");
    ema = std::make_unique<Ema>(t.net->params(), meta.value("ema_decay", 0.999f), true);
  }
  Checkpoint ck;
  ck.params = &t.net->params();
  ck.ema = ema.get();
  load_checkpoint(path, ck);
  if (ema) ema->swap_in();  // the model now holds the shadows; the backup goes with `ema`
  return t;
}

EvalResult evaluate_checkpoint(const std::string& path, const DataSpec& spec, bool use_ema, int batch, Arch* arch_out) {
  TrainedNetwork t = load_trained_network(path, use_ema, "eval");
  if (arch_out) *arch_out = t.arch;
  Splits data = open_dataset(spec);
  if (data.train->num_classes() != t.net->space().num_classes)
    throw std::runtime_error("eval: the checkpoint's network has " + std::to_string(t.net->space().num_classes) +
                             " classes but the dataset has " + std::to_string(data.train->num_classes()));
  EvalResult r = evaluate(*t.net, data.test, batch);
  r.weights = use_ema ? "EMA" : "raw";
  return r;
}

}  // namespace spnas
