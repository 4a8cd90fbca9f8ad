// Named parameters and buffers of a model.
//
// A Param is a trainable leaf Var plus what the optimizer needs to know about it: whether L2 weight
// decay applies (batch-norm scale/shift and biases are excluded by default) and a group name
// ("weights", "bn", "thresholds", ...) so optimizers and schedules can treat groups differently.
// Buffers are named tensors that are saved in checkpoints but not trained (batch-norm running stats).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/autograd.h"

namespace spnas {

struct Param {
  std::string name;
  Var var;
  bool decay = true;
  std::string group = "weights";
};

class ParamSet {
 public:
  // Registers a trainable parameter initialised to `init`; names must be unique.
  Var add(const std::string& name, const Tensor& init, bool decay = true, const std::string& group = "weights");
  // Registers a non-trainable tensor that checkpoints save (returned tensor shares storage).
  Tensor add_buffer(const std::string& name, const Tensor& init);

  std::vector<Param>& params() { return params_; }
  const std::vector<Param>& params() const { return params_; }
  const std::vector<std::pair<std::string, Tensor>>& buffers() const { return buffers_; }
  const Param* find(const std::string& name) const;
  Tensor* find_buffer(const std::string& name);

  int64_t count(bool include_group(const std::string&) = nullptr) const;  // number of trainable scalars
  void zero_grad();

 private:
  std::vector<Param> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::map<std::string, size_t> index_;
};

}  // namespace spnas
