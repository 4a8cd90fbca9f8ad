// Optimizers over a ParamSet: SGD (momentum, Nesterov), RMSProp with TensorFlow-1 semantics, Adam.
//
// One call to step(lr) updates every trainable parameter once:
//   g = (grad_valid ? grad : 0) + wd_eff * v           (L2 weight decay folded into the gradient)
//   v = rule(v, g, slots, lr * lr_mult)
// where wd_eff = weight_decay * group.decay_mult if Param::decay, else 0 (batch-norm parameters and
// biases have Param::decay false). The decay convention is  loss += wd * sum(v^2) / 2  =>  grad += wd * v;
// l2_penalty() returns that loss term as a Var (for logging, or for adding to the loss yourself when
// the optimizer's weight_decay is 0 — do not do both, that would decay twice).
//
// A parameter with no gradient this step (grad_valid false) is still updated with g = wd*v, so its
// momentum keeps moving it, as in TensorFlow. Groups (Param::group) can scale the learning rate, scale
// the decay, have their own momentum, or be frozen (skipped entirely).
//
// Per-parameter state ("slots": momentum, mean square, ...) is exported and imported by name as
// "<param name>/<slot name>" so checkpoints can store it (engine/checkpoint.h).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/params.h"

namespace spnas {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct GroupConfig {
  float lr_mult = 1.0f;     // learning rate multiplier for the group
  float decay_mult = 1.0f;  // weight decay multiplier (applies only to params with Param::decay)
  bool trainable = true;    // false: the group's parameters and slots are left untouched
  float momentum = -1.0f;   // < 0: the optimizer's own; else the group's (SGD/RMSProp momentum, Adam beta1)
};

// Everything an optimizer needs to resume: its kind, how many steps it took, and its slots.
struct OptimizerState {
  std::string kind;   // "sgd", "rmsprop", "adam"
  int64_t updates = 0;
  NamedTensors slots; // "<param>/<slot>", in parameter order
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // Applies one update to every parameter of trainable groups with learning rate `lr`.
  void step(float lr);
  int64_t updates() const { return updates_; }

  void set_weight_decay(float wd) { weight_decay_ = wd; }
  float weight_decay() const { return weight_decay_; }
  void set_group(const std::string& group, const GroupConfig& config) { groups_[group] = config; }
  GroupConfig group(const std::string& group) const;

  // Decay coefficient applied to parameter p (0 when excluded).
  float decay_of(const Param& p) const;
  // The L2 penalty  sum_p wd_eff(p) * sum(v^2) / 2  as a scalar Var; its gradient is wd_eff(p) * v.
  // For logging only, call it under NoGrad so it is not recorded on the tape.
  Var l2_penalty() const;

  const std::string& kind() const { return kind_; }
  OptimizerState state() const;  // copies of the slots
  // Throws (naming the slot and why) unless `s` fits this optimizer and parameter set exactly.
  void check_state(const OptimizerState& s) const;
  // check_state, then copies everything in; nothing changes if the check fails.
  void load_state(const OptimizerState& s);

 protected:
  // slot_names: e.g. {"momentum"}; slot_init: initial value of each slot.
  Optimizer(ParamSet& params, std::string kind, std::vector<std::string> slot_names,
            std::vector<float> slot_init, float weight_decay);
  // Updates n values of one parameter: v -= ...; g is the effective gradient (decay included);
  // slots[k] points at the parameter's k-th slot. `t` is the 1-based update number; `momentum` is the
  // group's (GroupConfig::momentum) or, when that is negative, default_momentum().
  virtual void update(float* v, const float* g, float* const* slots, int64_t n, float lr, float momentum,
                      int64_t t) = 0;
  virtual float default_momentum() const = 0;

 private:
  ParamSet* params_;
  std::string kind_;
  std::vector<std::string> slot_names_;
  std::vector<float> slot_init_;
  float weight_decay_;
  std::map<std::string, GroupConfig> groups_;
  std::vector<std::vector<Tensor>> slots_;  // [param index][slot index]
  std::vector<float> g_;                    // scratch: effective gradient
  int64_t updates_ = 0;

  void check_params_unchanged(const char* op) const;
};

// SGD:  acc = momentum * acc + g;  v -= lr * acc   (Nesterov: v -= lr * (g + momentum * acc)).
// With momentum 0 this is plain v -= lr * g.
class SGD : public Optimizer {
 public:
  SGD(ParamSet& params, float momentum = 0.0f, bool nesterov = false, float weight_decay = 0.0f);

 private:
  float momentum_;
  float default_momentum() const override { return momentum_; }
  bool nesterov_;
  void update(float* v, const float* g, float* const* slots, int64_t n, float lr, float momentum, int64_t t) override;
};

// RMSProp as tf.compat.v1.train.RMSPropOptimizer (mean square starts at 1, eps inside the root):
//   ms = rho * ms + (1 - rho) * g^2;  mom = mu * mom + lr * g / sqrt(ms + eps);  v -= mom
class RMSProp : public Optimizer {
 public:
  RMSProp(ParamSet& params, float rho = 0.9f, float momentum = 0.9f, float eps = 1e-3f, float weight_decay = 0.0f);

 private:
  float rho_, momentum_, eps_;
  float default_momentum() const override { return momentum_; }
  void update(float* v, const float* g, float* const* slots, int64_t n, float lr, float momentum, int64_t t) override;
};

// Adam (Kingma & Ba) with bias correction:
//   m = b1 m + (1-b1) g;  s = b2 s + (1-b2) g^2;  v -= lr * (m / (1-b1^t)) / (sqrt(s / (1-b2^t)) + eps)
class Adam : public Optimizer {
 public:
  Adam(ParamSet& params, float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f, float weight_decay = 0.0f);

 private:
  float beta1_, beta2_, eps_;
  float default_momentum() const override { return beta1_; }
  void update(float* v, const float* g, float* const* slots, int64_t n, float lr, float momentum, int64_t t) override;
};

// By name, with the project's settings: "rmsprop" (TF-1: decay 0.9, momentum 0.9, eps 1e-3, as the
// reference), "sgd" (momentum 0.9, Nesterov) or "adam" (0.9, 0.999, 1e-8).
std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, ParamSet& ps, float weight_decay);
// The rate a recipe starts from when none is given: RMSProp 0.016 * batch / 256 (the reference's),
// SGD 0.1 * batch / 64, Adam 1e-3 * batch / 64 (linear scaling with the batch).
float default_learning_rate(const std::string& optimizer, int batch);

}  // namespace spnas
