// Training a network from scratch (the decoded child, or any architecture file) and evaluating it.
// An EMA of the weights is kept and used for evaluation; checkpoints hold parameters, BN statistics,
// optimizer slots, EMA, random state, the loader position and the configuration, so `--resume`
// continues exactly and refuses a changed configuration (extending a run is `--extend`).
// A run that reaches its last step writes OUT/result.json (atomically; the marker that it is done,
// which `spnas compare` reads): {"kind": "spnas-train-result", "arch", "seed", "steps", "params",
// "macs", "seconds", "test": {"accuracy", "loss", "images", "weights"}, "val": {...} (with val_fraction)}.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data/data.h"
#include "engine/schedule.h"
#include "nas/data_parallel.h"
#include "nas/model.h"
#include "nas/run.h"

namespace spnas {

// The training recipe (defaults): SGD with Nesterov momentum, a cosine schedule from 0.1 (at batch
// 64, scaled linearly with the batch) after a 0.3-epoch warm-up, EMA weights for evaluation with a
// decay chosen from the run's length. The reference trains its found network with RMSProp for 350
// ImageNet epochs; for the few-epoch CIFAR-10 runs a CPU affords, this recipe learns fastest
// (nas/README.md, "Training recipe").
struct TrainConfig {
  Arch arch;
  std::string arch_source;  // for messages and the checkpoint's metadata
  DataSpec data{"synthetic", ""};
  bool augment = true;
  int batch = 64;
  float epochs = 10;
  LrConfig lr{"cosine", 0.0f /* 0: default_learning_rate (engine/optim.h) */, 0.97f, 2.4f, 0.3f};
  std::string optimizer = "sgd";
  float weight_decay = 1e-5f;
  float label_smoothing = 0.1f;
  float ema_decay = -1;      // < 0: from the run's length (ema_decay_for); 0: no EMA
  float bn_momentum = 0.99f;
  float dropout = -1;        // < 0: the space's
  float val_fraction = 0;    // > 0: hold out this fraction of the training set and report accuracy on it
  uint64_t seed = 1;
  int workers = 1;
  std::string out_dir = "runs/train";
  int64_t checkpoint_every = 0;  // steps (0: at the end of every epoch)
  bool resume = false;
  bool extend = false;           // resume with a larger `epochs`: the schedule is rebuilt over the new length
  bool allow_config_change = false;
  std::string init_from;         // start from another checkpoint's weights (fine-tuning)
  bool eval_each_epoch = true;   // test accuracy in the log after every epoch (the last one is the result)
  int64_t max_steps = -1;
  double memory_limit_gib = 0;   // 0: 80 % of the machine's memory
  bool quiet = false;
  ParallelConfig parallel;  // under mpirun (nas/data_parallel.h)
};

// The EMA decay for a run of `total_steps`: an average over about a tenth of the run, 0.9-0.9999.
float ema_decay_for(int64_t total_steps);

struct EvalResult {
  double accuracy = 0, loss = 0;
  int64_t images = 0;
  std::string weights;                   // "EMA" or "raw"
  std::vector<std::string> class_names;
  std::vector<double> class_accuracy;    // per true class
  std::vector<std::vector<int64_t>> confusion;  // [true class][predicted class]
};

struct TrainResult {
  EvalResult test;       // with the EMA weights when EMA is on
  EvalResult test_raw;   // with the raw weights (only when EMA is on)
  EvalResult val;        // on the held-out split (val_fraction > 0), the weights of `test`
  bool has_val = false;
  float ema_decay = 0;
  int64_t steps = 0;
  double seconds = 0, images_per_second = 0;  // images/s of the training steps alone
  int64_t params = 0, macs = 0;
  std::string checkpoint_path;
  std::string result_path;  // OUT/result.json, written only when finished
  bool finished = false;
};

// Throws Interrupted (after saving the checkpoint) when a signal stops it.
TrainResult run_train(const TrainConfig& cfg);
// Evaluates `net` (already holding the weights to use) on a split, in evaluation mode.
EvalResult evaluate(Network& net, const std::shared_ptr<Dataset>& ds, int batch, int workers = 1);
// The loader evaluation reads a split with: in order, no augmentation, the dataset's normalisation,
// images cropped / resized to input_size as default_eval_augment does.
std::unique_ptr<Loader> eval_loader(const std::shared_ptr<Dataset>& ds, int input_size, int batch, int workers = 1);

// What a trained network expects of its input, recorded in the checkpoint by run_train: the training
// set's image size (images of another size are fitted to it, then cropped / resized to the network's
// input size by the evaluation loader), class names and per-channel normalisation.
struct InputRecord {
  std::string data;  // the dataset it was trained on, "KIND[:PATH]"
  int image_height = 0, image_width = 0;
  std::vector<std::string> class_names;
  std::vector<float> mean, std;  // 0..1 scale
};
InputRecord input_record(const Dataset& train, const DataSpec& spec);

// A network trained by run_train, loaded from its checkpoint with the weights evaluation uses.
struct TrainedNetwork {
  std::string checkpoint;
  std::unique_ptr<ChildNet> net;
  Arch arch;
  bool ema = true;         // EMA weights (false: the raw trained weights)
  bool has_input = false;  // false: neither the checkpoint nor a fallback dataset gave the input record
  InputRecord input;
  // The input record, or an error (naming `who` and the file) saying how to supply it.
  const InputRecord& input_or_throw(const std::string& who) const;
};
// Throws, naming `who`, the file and the problem, for a file that is not a training checkpoint (a
// search checkpoint says so), a truncated, corrupt or foreign file, or use_ema without EMA weights.
// A checkpoint written before run_train recorded its input takes it from `input_fallback`, the
// dataset it was trained on, when one is named.
TrainedNetwork load_trained_network(const std::string& checkpoint, bool use_ema, const std::string& who,
                                    const DataSpec& input_fallback = {});
// Loads a checkpoint written by run_train (EMA weights unless use_ema is false) and evaluates it.
EvalResult evaluate_checkpoint(const std::string& checkpoint, const DataSpec& data, bool use_ema, int batch,
                               Arch* arch_out = nullptr);
// The architecture a checkpoint written by run_train holds; throws naming the file when it is
// another kind of file (a search checkpoint, a foreign file).
Arch checkpoint_arch(const std::string& checkpoint);

}  // namespace spnas
