#include "engine/alloc.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace spnas {
namespace {

struct Pool {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;  // exact (rounded) size -> blocks
  PoolStats stats;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: tensors may outlive static destructors
  return *p;
}

size_t round_up(size_t bytes) { return (bytes + 63) / 64 * 64; }

}  // namespace

Storage::Storage(size_t requested) : bytes(round_up(requested == 0 ? 64 : requested)) {
  Pool& p = pool();
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.stats.allocations++;
    // The exact size first; else the smallest cached block up to half again as large (the steps of a
    // training loop repeat their sizes exactly, but recomputed and gradient buffers of nearby sizes
    // can share blocks instead of each holding its own).
    auto it = p.free_blocks.lower_bound(bytes);
    while (it != p.free_blocks.end() && it->second.empty() && it->first <= bytes + bytes / 2) ++it;
    if (it != p.free_blocks.end() && !it->second.empty() && it->first <= bytes + bytes / 2) {
      bytes = it->first;
      ptr = static_cast<float*>(it->second.back());
      it->second.pop_back();
      p.stats.bytes_cached -= bytes;
    } else {
      p.stats.fresh_allocations++;
    }
    p.stats.bytes_in_use += bytes;
    if (p.stats.bytes_in_use > p.stats.peak_bytes_in_use) p.stats.peak_bytes_in_use = p.stats.bytes_in_use;
  }
  if (!ptr) {
    ptr = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!ptr) throw std::bad_alloc();
  }
}

Storage::~Storage() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  p.free_blocks[bytes].push_back(ptr);
  p.stats.bytes_in_use -= bytes;
  p.stats.bytes_cached += bytes;
}

PoolStats pool_stats() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  return p.stats;
}

void pool_release_cached() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  for (auto& kv : p.free_blocks)
    for (void* b : kv.second) std::free(b);
  p.free_blocks.clear();
  p.stats.bytes_cached = 0;
}

void pool_reset_peak() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  p.stats.peak_bytes_in_use = p.stats.bytes_in_use;
}

}  // namespace spnas
