// Tensor: a float32 n-d array (activations in NHWC) over 64-byte-aligned, pooled storage.
// A Tensor is a cheap handle: copies share storage (use clone() for a deep copy).
// Storage comes from a size-keyed pool (engine/alloc.h) so that a training step reuses the
// buffers of the previous one instead of touching fresh pages.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace spnas {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);          // "[64, 32, 32, 16]"
int64_t shape_numel(const Shape& s);

// Throws std::runtime_error("op: message") when cond is false.
void check(bool cond, const char* op, const std::string& message);
[[noreturn]] void fail(const char* op, const std::string& message);

struct Storage;  // engine/alloc.h

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const Shape& shape);  // uninitialized
  static Tensor zeros(const Shape& shape);
  static Tensor full(const Shape& shape, float value);
  static Tensor scalar(float value) { return full({}, value); }
  static Tensor from(const Shape& shape, const std::vector<float>& values);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return int(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return numel_; }
  float* data() { return data_; }
  const float* data() const { return data_; }
  float item() const;  // the single value of a one-element tensor

  // Same storage, new shape with the same number of elements.
  Tensor reshape(const Shape& shape) const;
  Tensor clone() const;
  void copy_from(const Tensor& other);  // shapes must match
  void fill(float value);
  void zero();

  // Element access for tests and small code (bounds-checked).
  float& at(std::initializer_list<int64_t> idx);
  float at(std::initializer_list<int64_t> idx) const;

 private:
  std::shared_ptr<Storage> storage_;
  float* data_ = nullptr;
  Shape shape_;
  int64_t numel_ = 0;
};

// Checks that a tensor has the expected shape; the message names the op and both shapes.
void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected);
void check_same_shape(const char* op, const Tensor& a, const Tensor& b);

}  // namespace spnas
