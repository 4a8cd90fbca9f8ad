// Training a network from scratch (the decoded child, or any architecture file) and evaluating it.
// EMA of the weights is kept and used for evaluation; checkpoints hold parameters, BN statistics,
// optimizer slots, EMA, random state and the loader position, so `--resume` continues exactly.
#pragma once
#include <string>

#include "data/data.h"
#include "nas/model.h"
#include "nas/run_util.h"

namespace spnas {

struct TrainConfig {
  Arch arch;
  std::string arch_source;  // for messages and the checkpoint's metadata
  DataSpec data{"synthetic", ""};
  bool augment = true;
  int batch = 64;
  float epochs = 10;
  LrConfig lr{"exponential", 0.0f /* 0: 0.016 * batch / 256 */, 0.97f, 2.4f, 1.0f};
  std::string optimizer = "rmsprop";
  float weight_decay = 1e-5f;
  float label_smoothing = 0.1f;
  float ema_decay = 0.999f;  // 0: no EMA
  float bn_momentum = 0.99f;
  float dropout = -1;        // < 0: the space's
  uint64_t seed = 1;
  int workers = 1;
  std::string out_dir = "runs/train";
  bool resume = false;
  bool eval_each_epoch = true;
  int64_t max_steps = -1;
  bool quiet = false;
};

struct EvalResult {
  double accuracy = 0, loss = 0;
  int64_t images = 0;
};

struct TrainResult {
  EvalResult test;
  int64_t steps = 0;
  double seconds = 0, images_per_second = 0;
  int64_t params = 0, macs = 0;
  std::string checkpoint_path;
  bool finished = false;
};

TrainResult run_train(const TrainConfig& cfg);
// Evaluates `net` (already holding the weights to use) on a split, in evaluation mode.
EvalResult evaluate(Network& net, const std::shared_ptr<Dataset>& ds, int batch, int workers = 1);
// Loads a checkpoint written by run_train (EMA weights unless use_ema is false) and evaluates it.
EvalResult evaluate_checkpoint(const std::string& checkpoint, const DataSpec& data, bool use_ema, int batch,
                               Arch* arch_out = nullptr);

}  // namespace spnas
