// A std::vector whose storage is 64-byte aligned, as engine tensors are (alloc.h): for benchmarks and
// tests that hand plain buffers to the kernels. Alignment matters there: a misaligned zmm load
// straddles two cache lines, and the kernels' non-temporal-store paths run only on aligned outputs
// (std::vector's own large blocks sit 16 bytes past a page boundary).
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace spnas {

template <class T>
struct Aligned64Allocator {
  using value_type = T;
  Aligned64Allocator() = default;
  template <class U>
  Aligned64Allocator(const Aligned64Allocator<U>&) {}
  T* allocate(size_t n) {
    void* p = std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  bool operator==(const Aligned64Allocator&) const { return true; }
  bool operator!=(const Aligned64Allocator&) const { return false; }
};

using AlignedVector = std::vector<float, Aligned64Allocator<float>>;

}  // namespace spnas
