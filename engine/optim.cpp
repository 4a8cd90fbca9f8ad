// Optimizers: the shared step loop (gradient + weight decay, groups, slots) and the three update rules.
#include "engine/optim.h"

#include <cmath>
#include <stdexcept>

namespace spnas {

Optimizer::Optimizer(ParamSet& params, std::string kind, std::vector<std::string> slot_names,
                     std::vector<float> slot_init, float weight_decay)
    : params_(&params),
      kind_(std::move(kind)),
      slot_names_(std::move(slot_names)),
      slot_init_(std::move(slot_init)),
      weight_decay_(weight_decay) {
  check(slot_names_.size() == slot_init_.size() && slot_names_.size() <= 4, "Optimizer", "at most 4 slots");
  for (const Param& p : params.params()) {
    std::vector<Tensor> s;
    for (float init : slot_init_) s.push_back(Tensor::full(p.var->value.shape(), init));
    slots_.push_back(std::move(s));
  }
}

GroupConfig Optimizer::group(const std::string& group) const {
  auto it = groups_.find(group);
  return it == groups_.end() ? GroupConfig{} : it->second;
}

float Optimizer::decay_of(const Param& p) const { return p.decay ? weight_decay_ * group(p.group).decay_mult : 0.0f; }

void Optimizer::check_params_unchanged(const char* op) const {
  const auto& ps = params_->params();
  check(ps.size() == slots_.size(), op,
        "the parameter set has " + std::to_string(ps.size()) + " parameters but the optimizer was created with " +
            std::to_string(slots_.size()) + " (create the optimizer after the model)");
  for (size_t i = 0; i < ps.size(); ++i)
    for (const Tensor& s : slots_[i])
      check(s.shape() == ps[i].var->value.shape(), op,
            "parameter '" + ps[i].name + "' changed shape to " + shape_str(ps[i].var->value.shape()));
}

void Optimizer::step(float lr) {
  check_params_unchanged("Optimizer::step");
  ++updates_;
  auto& ps = params_->params();
  for (size_t i = 0; i < ps.size(); ++i) {
    Param& p = ps[i];
    GroupConfig gc = group(p.group);
    if (!gc.trainable) continue;
    Node& node = *p.var;
    const int64_t n = node.value.numel();
    float* v = node.value.data();
    // Effective gradient: the backward gradient (or 0) plus wd * v.
    g_.resize(size_t(n));
    float* g = g_.data();
    const float wd = decay_of(p);
    if (node.grad_valid) {
      check(node.grad.numel() == n, "Optimizer::step", "gradient of '" + p.name + "' has the wrong size");
      const float* gr = node.grad.data();
      for (int64_t j = 0; j < n; ++j) g[j] = gr[j] + wd * v[j];
    } else {
      for (int64_t j = 0; j < n; ++j) g[j] = wd * v[j];
    }
    float* slot_ptrs[4] = {};
    for (size_t k = 0; k < slots_[i].size(); ++k) slot_ptrs[k] = slots_[i][k].data();
    update(v, g, slot_ptrs, n, lr * gc.lr_mult, gc.momentum < 0 ? default_momentum() : gc.momentum, updates_);
  }
}

Var Optimizer::l2_penalty() const {
  std::vector<Var> inputs;
  std::vector<float> coefs;
  double total = 0.0;
  for (const Param& p : params_->params()) {
    float wd = decay_of(p);
    if (wd == 0.0f || !group(p.group).trainable) continue;
    const float* v = p.var->value.data();
    double s = 0.0;
    for (int64_t j = 0; j < p.var->value.numel(); ++j) s += double(v[j]) * v[j];
    total += 0.5 * wd * s;
    inputs.push_back(p.var);
    coefs.push_back(wd);
  }
  return record("l2_penalty", Tensor::scalar(float(total)), inputs, [coefs](Node& self) {
    const float dy = self.grad.item();
    for (size_t i = 0; i < self.inputs.size(); ++i) {
      Node& in = *self.inputs[i];
      if (!in.requires_grad) continue;
      float* gr = in.grad_accumulator().data();
      const float* v = in.value.data();
      const float k = dy * coefs[i];
      for (int64_t j = 0; j < in.value.numel(); ++j) gr[j] += k * v[j];
    }
  });
}

OptimizerState Optimizer::state() const {
  check_params_unchanged("Optimizer::state");
  OptimizerState s;
  s.kind = kind_;
  s.updates = updates_;
  const auto& ps = params_->params();
  for (size_t i = 0; i < ps.size(); ++i)
    for (size_t k = 0; k < slot_names_.size(); ++k)
      s.slots.emplace_back(ps[i].name + "/" + slot_names_[k], slots_[i][k].clone());
  return s;
}

void Optimizer::check_state(const OptimizerState& s) const {
  const char* op = "Optimizer::load_state";
  check_params_unchanged(op);
  check(s.kind == kind_, op, "state is for optimizer '" + s.kind + "', this optimizer is '" + kind_ + "'");
  check(s.updates >= 0, op, "negative update count " + std::to_string(s.updates));
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : s.slots) {
    check(!by_name.count(name), op, "duplicate slot '" + name + "'");
    by_name[name] = &t;
  }
  const auto& ps = params_->params();
  for (size_t i = 0; i < ps.size(); ++i)
    for (size_t k = 0; k < slot_names_.size(); ++k) {
      const std::string name = ps[i].name + "/" + slot_names_[k];
      auto it = by_name.find(name);
      check(it != by_name.end(), op, "slot '" + name + "' is missing");
      check(it->second->shape() == ps[i].var->value.shape(), op,
            "slot '" + name + "' has shape " + shape_str(it->second->shape()) + ", parameter has " +
                shape_str(ps[i].var->value.shape()));
      by_name.erase(it);
    }
  check(by_name.empty(), op,
        by_name.empty() ? "" : "slot '" + by_name.begin()->first + "' belongs to no parameter of this model");
}

void Optimizer::load_state(const OptimizerState& s) {
  check_state(s);
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : s.slots) by_name[name] = &t;
  const auto& ps = params_->params();
  for (size_t i = 0; i < ps.size(); ++i)
    for (size_t k = 0; k < slot_names_.size(); ++k)
      slots_[i][k].copy_from(*by_name.at(ps[i].name + "/" + slot_names_[k]));
  updates_ = s.updates;
}

// ---- SGD ----

SGD::SGD(ParamSet& params, float momentum, bool nesterov, float weight_decay)
    : Optimizer(params, "sgd", {"momentum"}, {0.0f}, weight_decay), momentum_(momentum), nesterov_(nesterov) {}

void SGD::update(float* v, const float* g, float* const* slots, int64_t n, float lr, float mu, int64_t) {
  float* acc = slots[0];
  if (nesterov_) {
    for (int64_t j = 0; j < n; ++j) {
      acc[j] = mu * acc[j] + g[j];
      v[j] -= lr * (g[j] + mu * acc[j]);
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      acc[j] = mu * acc[j] + g[j];
      v[j] -= lr * acc[j];
    }
  }
}

// ---- RMSProp (TF1) ----

RMSProp::RMSProp(ParamSet& params, float rho, float momentum, float eps, float weight_decay)
    : Optimizer(params, "rmsprop", {"ms", "mom"}, {1.0f, 0.0f}, weight_decay),
      rho_(rho),
      momentum_(momentum),
      eps_(eps) {}

void RMSProp::update(float* v, const float* g, float* const* slots, int64_t n, float lr, float mu, int64_t) {
  float* ms = slots[0];
  float* mom = slots[1];
  const float rho = rho_, eps = eps_;  // locals: cannot alias the arrays
  for (int64_t j = 0; j < n; ++j) {
    ms[j] = rho * ms[j] + (1.0f - rho) * g[j] * g[j];
    mom[j] = mu * mom[j] + lr * g[j] / std::sqrt(ms[j] + eps);
    v[j] -= mom[j];
  }
}

// ---- Adam ----

Adam::Adam(ParamSet& params, float beta1, float beta2, float eps, float weight_decay)
    : Optimizer(params, "adam", {"m", "v"}, {0.0f, 0.0f}, weight_decay), beta1_(beta1), beta2_(beta2), eps_(eps) {}

void Adam::update(float* v, const float* g, float* const* slots, int64_t n, float lr, float b1, int64_t t) {
  float* m = slots[0];
  float* s = slots[1];
  const float c1 = float(1.0 - std::pow(double(b1), double(t)));  // bias corrections
  const float c2 = float(1.0 - std::pow(double(beta2_), double(t)));
  const float step = lr / c1;
  const float inv_c2 = 1.0f / c2;
  const float b2 = beta2_, eps = eps_;  // locals: cannot alias the arrays
  for (int64_t j = 0; j < n; ++j) {
    m[j] = b1 * m[j] + (1.0f - b1) * g[j];
    s[j] = b2 * s[j] + (1.0f - b2) * g[j] * g[j];
    v[j] -= step * m[j] / (std::sqrt(s[j] * inv_c2) + eps);
  }
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, ParamSet& ps, float wd) {
  if (kind == "rmsprop") return std::make_unique<RMSProp>(ps, 0.9f, 0.9f, 1e-3f, wd);
  if (kind == "sgd") return std::make_unique<SGD>(ps, 0.9f, true, wd);
  if (kind == "adam") return std::make_unique<Adam>(ps, 0.9f, 0.999f, 1e-8f, wd);
  throw std::runtime_error("optimizer must be rmsprop, sgd or adam, got \"" + kind + "\"");
}

float default_learning_rate(const std::string& optimizer, int batch) {
  if (optimizer == "sgd") return 0.1f * batch / 64.0f;
  if (optimizer == "adam") return 1e-3f * batch / 64.0f;
  return 0.016f * batch / 256.0f;
}

}  // namespace spnas
