// A user kernel variant raced by bench_conv next to ours, oneDNN and the reference (see bench/README.md).
// A variant is one file bench/variants/<name>.cpp that fills a BenchVariant and registers it with
// SPNAS_BENCH_VARIANT; any entry left nullptr is simply not raced in that direction. The registry is
// header-only so that the variants link into every bench program, not only bench_conv.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ops/kernels.h"

namespace spnas {

struct BenchVariant {
  std::string name;
  // Depthwise, same contracts as the KernelTable entries in ops/kernels.h.
  void (*dw_forward)(const DwConvDesc&, const float* x, const float* w, float* y) = nullptr;
  void (*dw_backward_data)(const DwConvDesc&, const float* dy, const float* w, float* dx, bool accumulate) = nullptr;
  void (*dw_backward_weights)(const DwConvDesc&, const float* x, const float* dy, float* dw, bool accumulate) = nullptr;
  // Pointwise, same contracts as pointwise_* in ops/kernels.h.
  void (*pw_forward)(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* w, float* y) = nullptr;
  void (*pw_backward_data)(int64_t M, int64_t Cin, int64_t Cout, const float* dy, const float* w, float* dx,
                           bool accumulate) = nullptr;
  void (*pw_backward_weights)(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* dy, float* dw,
                              bool accumulate) = nullptr;
};

inline std::vector<BenchVariant>& bench_variants() {
  static std::vector<BenchVariant> v;
  return v;
}

struct BenchVariantRegistrar {
  explicit BenchVariantRegistrar(BenchVariant v) { bench_variants().push_back(std::move(v)); }
};

}  // namespace spnas

// SPNAS_BENCH_VARIANT(ident, make_fn): make_fn() returns the BenchVariant to register.
#define SPNAS_BENCH_VARIANT(ident, make_fn) \
  static ::spnas::BenchVariantRegistrar spnas_bench_variant_##ident{make_fn()}
