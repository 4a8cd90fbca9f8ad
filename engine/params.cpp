#include "engine/params.h"

namespace spnas {

Var ParamSet::add(const std::string& name, const Tensor& init, bool decay, const std::string& group) {
  check(!index_.count(name), "ParamSet::add", "duplicate parameter name '" + name + "'");
  Var v = leaf(init, true, name);
  index_[name] = params_.size();
  params_.push_back(Param{name, v, decay, group});
  return v;
}

Tensor ParamSet::add_buffer(const std::string& name, const Tensor& init) {
  for (auto& b : buffers_) check(b.first != name, "ParamSet::add_buffer", "duplicate buffer name '" + name + "'");
  buffers_.emplace_back(name, init);
  return init;
}

const Param* ParamSet::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &params_[it->second];
}

Tensor* ParamSet::find_buffer(const std::string& name) {
  for (auto& b : buffers_)
    if (b.first == name) return &b.second;
  return nullptr;
}

int64_t ParamSet::count(bool include_group(const std::string&)) const {
  int64_t n = 0;
  for (const Param& p : params_)
    if (!include_group || include_group(p.group)) n += p.var->value.numel();
  return n;
}

void ParamSet::zero_grad() {
  for (Param& p : params_) p.var->zero_grad();
}

}  // namespace spnas
