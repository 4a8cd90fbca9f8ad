// Pooled, 64-byte-aligned float storage. Freed blocks go back to a free list keyed by their exact
// size and are handed out again to the next request of that size: a training step allocates the
// same sizes as the previous one, so after the first step no fresh page is touched.
#pragma once
#include <cstddef>
#include <cstdint>

namespace spnas {

struct Storage {
  float* ptr = nullptr;
  size_t bytes = 0;
  explicit Storage(size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct PoolStats {
  size_t bytes_in_use = 0;      // handed out and not yet returned
  size_t bytes_cached = 0;      // returned and waiting for reuse
  size_t peak_bytes_in_use = 0;
  uint64_t allocations = 0;     // requests served
  uint64_t fresh_allocations = 0;  // requests that needed new memory from the system
};
PoolStats pool_stats();
void pool_release_cached();  // return cached blocks to the system
void pool_reset_peak();

}  // namespace spnas
