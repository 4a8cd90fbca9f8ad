// Exponential moving average (EMA) of a model's weights, as tf.train.ExponentialMovingAverage:
//   shadow = decay * shadow + (1 - decay) * value
// with, optionally, TF's warm-up of the decay: decay_t = min(decay, (1 + n) / (10 + n)) where n is
// the number of updates so far (TF passes the global step).
//
// Shadows start as copies of the current values. For evaluation, swap_in() copies the shadows into
// the model (keeping a backup), and restore() puts the trained values back:
//   ema.update(step);            // after each optimizer step
//   ema.swap_in(); evaluate(); ema.restore();
// Like the TF MnasNet code, buffers (batch-norm moving statistics) are averaged too unless disabled.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/params.h"

namespace spnas {

class Ema {
 public:
  Ema(ParamSet& params, float decay, bool num_updates_decay = false, bool include_buffers = true);

  // Moves the shadows towards the current values. num_updates is TF's num_updates (the global step);
  // it only matters when num_updates_decay is on.
  void update(int64_t num_updates = 0);
  float decay_at(int64_t num_updates) const;  // the decay update(num_updates) uses

  void swap_in();  // model <- shadows (current values are kept for restore())
  void restore();  // model <- values saved by swap_in()
  bool swapped_in() const { return swapped_; }

  // Shadows by variable name (parameter or buffer name), in order: parameters, then buffers.
  std::vector<std::pair<std::string, Tensor>> shadows() const;  // copies
  void check_shadows(const std::vector<std::pair<std::string, Tensor>>& s) const;  // throws, naming the problem
  void load_shadows(const std::vector<std::pair<std::string, Tensor>>& s);  // check, then copy in

 private:
  struct Entry {
    std::string name;
    Tensor shadow;
    Tensor backup;  // used while swapped in
  };
  ParamSet* params_;
  float decay_;
  bool num_updates_decay_;
  bool include_buffers_;
  bool swapped_ = false;
  std::vector<Entry> entries_;

  // The model's tensors (sharing storage) in entry order; fails if the model no longer matches.
  std::vector<Tensor> targets(const char* op) const;
};

}  // namespace spnas
