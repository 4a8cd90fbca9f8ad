// Run-time choice of the kernel table from the CPU's features.
#include <atomic>
#include <cstdlib>
#include <stdexcept>

#include "engine/cpu.h"
#include "ops/kernels.h"

namespace spnas {

// Provided by ops/kernels/kernels_avx2.cpp and kernels_avx512.cpp (ops/kernels/simd_table.h).
const KernelTable* avx2_kernel_table();
const KernelTable* avx512_kernel_table();

// The fused forward's oracle is literally the unfused pair.
void dwconv_bn_act_forward_ref(const DwConvDesc& d, const float* x, const float* w, const float* scale,
                               const float* shift, Act act, float* y) {
  dwconv_forward_ref(d, x, w, y);
  BnDesc b{d.N * d.OH * d.OW, d.C, act};
  bn_act_forward_ref(b, y, scale, shift, y);
}

const KernelTable& reference_kernels() {
  static const KernelTable t = {"ref",
                                dwconv_forward_ref,
                                dwconv_backward_data_ref,
                                dwconv_backward_weights_ref,
                                bn_stats_ref,
                                bn_act_forward_ref,
                                bn_act_backward_reduce_ref,
                                bn_act_backward_data_ref,
                                dwconv_bn_act_forward_ref,
                                nullptr,
                                nullptr};
  return t;
}

static bool isa_at_most(const std::string& isa, const std::string& cpu) {
  auto rank = [](const std::string& s) { return s == "avx512" ? 2 : s == "avx2" ? 1 : 0; };
  return rank(isa) <= rank(cpu);
}

namespace {
std::atomic<int64_t> g_stream_min_override{0};
}

void set_stream_min_bytes(int64_t bytes) { g_stream_min_override.store(bytes > 0 ? bytes : 0); }

int64_t stream_min_bytes() {
  if (const int64_t o = g_stream_min_override.load(std::memory_order_relaxed)) return o;
  // Three quarters of the L3 (24 MiB if it cannot be read).
  static const int64_t bytes = cpu_info().l3_bytes > 0 ? cpu_info().l3_bytes / 4 * 3 : int64_t(24) << 20;
  return bytes;
}

const KernelTable* kernels_for(const std::string& isa) {
  if (isa == "ref") return &reference_kernels();
  if (!isa_at_most(isa, cpu_isa())) return nullptr;
  if (isa == "avx2") return avx2_kernel_table();
  if (isa == "avx512") return avx512_kernel_table();
  return nullptr;
}

static const KernelTable* g_active = nullptr;

static const KernelTable* choose(const std::string& want) {
  if (want == "auto") {
    for (const char* isa : {"avx512", "avx2"})
      if (const KernelTable* t = kernels_for(isa)) return t;
    return &reference_kernels();
  }
  const KernelTable* t = kernels_for(want);
  if (!t) throw std::runtime_error("set_isa: '" + want + "' is not available on this CPU/build (CPU supports " + cpu_isa() + ")");
  return t;
}

void set_isa(const std::string& isa) { g_active = choose(isa); }

const KernelTable& kernels() {
  if (!g_active) {
    const char* env = std::getenv("SPNAS_ISA");
    g_active = choose(env && *env ? env : "auto");
  }
  return *g_active;
}

}  // namespace spnas
