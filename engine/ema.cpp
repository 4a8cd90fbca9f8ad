// Exponential moving average of weights (see ema.h).
#include "engine/ema.h"

#include <algorithm>
#include <map>

namespace spnas {

Ema::Ema(ParamSet& params, float decay, bool num_updates_decay, bool include_buffers)
    : params_(&params), decay_(decay), num_updates_decay_(num_updates_decay), include_buffers_(include_buffers) {
  check(decay >= 0.0f && decay <= 1.0f, "Ema", "decay must be in [0, 1], got " + std::to_string(decay));
  for (const Param& p : params.params()) entries_.push_back({p.name, p.var->value.clone(), Tensor()});
  if (include_buffers)
    for (const auto& [name, t] : params.buffers()) entries_.push_back({name, t.clone(), Tensor()});
  std::map<std::string, int> seen;
  for (const Entry& e : entries_)
    check(seen[e.name]++ == 0, "Ema", "name '" + e.name + "' is used by both a parameter and a buffer");
}

std::vector<Tensor> Ema::targets(const char* op) const {
  std::vector<Tensor> t;
  for (const Param& p : params_->params()) t.push_back(p.var->value);
  if (include_buffers_)
    for (const auto& b : params_->buffers()) t.push_back(b.second);
  check(t.size() == entries_.size(), op,
        "the model has " + std::to_string(t.size()) + " tensors to average, the EMA was created with " +
            std::to_string(entries_.size()) + " (create the EMA after the model)");
  for (size_t i = 0; i < t.size(); ++i)
    check(t[i].shape() == entries_[i].shadow.shape(), op,
          "'" + entries_[i].name + "' changed shape to " + shape_str(t[i].shape()));
  return t;
}

float Ema::decay_at(int64_t num_updates) const {
  if (!num_updates_decay_) return decay_;
  const double n = double(std::max<int64_t>(num_updates, 0));
  return std::min(decay_, float((1.0 + n) / (10.0 + n)));
}

void Ema::update(int64_t num_updates) {
  check(!swapped_, "Ema::update", "the shadows are swapped in; call restore() first");
  std::vector<Tensor> t = targets("Ema::update");
  const float d = decay_at(num_updates);
  const float a = 1.0f - d;
  for (size_t i = 0; i < t.size(); ++i) {
    float* s = entries_[i].shadow.data();
    const float* v = t[i].data();
    // shadow -= (1 - decay) * (shadow - value), TF's formulation.
    for (int64_t j = 0; j < t[i].numel(); ++j) s[j] -= a * (s[j] - v[j]);
  }
}

void Ema::swap_in() {
  check(!swapped_, "Ema::swap_in", "already swapped in");
  std::vector<Tensor> t = targets("Ema::swap_in");
  for (size_t i = 0; i < t.size(); ++i) {
    entries_[i].backup = t[i].clone();
    t[i].copy_from(entries_[i].shadow);
  }
  swapped_ = true;
}

void Ema::restore() {
  check(swapped_, "Ema::restore", "not swapped in");
  std::vector<Tensor> t = targets("Ema::restore");
  for (size_t i = 0; i < t.size(); ++i) {
    t[i].copy_from(entries_[i].backup);
    entries_[i].backup = Tensor();
  }
  swapped_ = false;
}

std::vector<std::pair<std::string, Tensor>> Ema::shadows() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const Entry& e : entries_) out.emplace_back(e.name, e.shadow.clone());
  return out;
}

void Ema::check_shadows(const std::vector<std::pair<std::string, Tensor>>& s) const {
  const char* op = "Ema::load_shadows";
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : s) {
    check(!by_name.count(name), op, "duplicate shadow '" + name + "'");
    by_name[name] = &t;
  }
  for (const Entry& e : entries_) {
    auto it = by_name.find(e.name);
    check(it != by_name.end(), op, "shadow '" + e.name + "' is missing");
    check(it->second->shape() == e.shadow.shape(), op,
          "shadow '" + e.name + "' has shape " + shape_str(it->second->shape()) + ", expected " +
              shape_str(e.shadow.shape()));
    by_name.erase(it);
  }
  check(by_name.empty(), op,
        by_name.empty() ? "" : "shadow '" + by_name.begin()->first + "' belongs to no tensor of this model");
}

void Ema::load_shadows(const std::vector<std::pair<std::string, Tensor>>& s) {
  check_shadows(s);
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : s) by_name[name] = &t;
  for (Entry& e : entries_) e.shadow.copy_from(*by_name.at(e.name));
}

}  // namespace spnas
