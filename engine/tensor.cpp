#include "engine/tensor.h"

#include <cstring>
#include <stdexcept>

#include "engine/alloc.h"

namespace spnas {

// No ostringstream: ops build their error messages before checking (see check()), so this runs
// for every op call; a stream's locale machinery cost ~10 % of a small network's inference.
std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  out += ']';
  return out;
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) throw std::runtime_error("shape: negative dimension in " + shape_str(s));
    n *= d;
  }
  return n;
}

void check(bool cond, const char* op, const std::string& message) {
  if (!cond) fail(op, message);
}

void fail(const char* op, const std::string& message) { throw std::runtime_error(std::string(op) + ": " + message); }

Tensor Tensor::empty(const Shape& shape) {
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.storage_ = std::make_shared<Storage>(size_t(t.numel_) * sizeof(float));
  t.data_ = t.storage_->ptr;
  return t;
}

Tensor Tensor::zeros(const Shape& shape) {
  Tensor t = empty(shape);
  t.zero();
  return t;
}

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  t.fill(value);
  return t;
}

Tensor Tensor::from(const Shape& shape, const std::vector<float>& values) {
  Tensor t = empty(shape);
  check(int64_t(values.size()) == t.numel_, "Tensor::from",
        std::to_string(values.size()) + " values for shape " + shape_str(shape));
  std::memcpy(t.data_, values.data(), values.size() * sizeof(float));
  return t;
}

int64_t Tensor::dim(int i) const {
  int r = rank();
  if (i < 0) i += r;
  check(i >= 0 && i < r, "Tensor::dim", "axis out of range for shape " + shape_str(shape_));
  return shape_[i];
}

float Tensor::item() const {
  check(numel_ == 1, "Tensor::item", "needs one element, shape is " + shape_str(shape_));
  return data_[0];
}

Tensor Tensor::reshape(const Shape& shape) const {
  check(shape_numel(shape) == numel_, "reshape", "cannot view " + shape_str(shape_) + " as " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::clone() const {
  if (!defined()) return Tensor();
  Tensor t = empty(shape_);
  std::memcpy(t.data_, data_, size_t(numel_) * sizeof(float));
  return t;
}

void Tensor::copy_from(const Tensor& other) {
  check_same_shape("copy_from", *this, other);
  std::memcpy(data_, other.data_, size_t(numel_) * sizeof(float));
}

void Tensor::fill(float value) {
  for (int64_t i = 0; i < numel_; ++i) data_[i] = value;
}

void Tensor::zero() {
  if (numel_) std::memset(data_, 0, size_t(numel_) * sizeof(float));
}

static int64_t flat_index(const Shape& shape, std::initializer_list<int64_t> idx) {
  check(idx.size() == shape.size(), "Tensor::at",
        std::to_string(idx.size()) + " indices for shape " + shape_str(shape));
  int64_t off = 0;
  size_t i = 0;
  for (int64_t v : idx) {
    check(v >= 0 && v < shape[i], "Tensor::at",
          "index " + std::to_string(v) + " out of range on axis " + std::to_string(i) + " of " + shape_str(shape));
    off = off * shape[i] + v;
    ++i;
  }
  return off;
}

float& Tensor::at(std::initializer_list<int64_t> idx) { return data_[flat_index(shape_, idx)]; }
float Tensor::at(std::initializer_list<int64_t> idx) const { return data_[flat_index(shape_, idx)]; }

void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected) {
  if (t.shape() != expected)
    fail(op, std::string(what) + " has shape " + shape_str(t.shape()) + ", expected " + shape_str(expected));
}

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    fail(op, "shapes differ: " + shape_str(a.shape()) + " vs " + shape_str(b.shape()));
}

}  // namespace spnas
