// Example variant (and a useful one): our AVX2 depthwise kernels raced on this machine, i.e. what a
// user whose CPU stops at AVX2 gets. Copy this file to add your own kernel to the race.
#include "bench/variants/variant.h"

namespace {

// Forwarders resolve the table at call time (kernels_for returns nullptr on a CPU without AVX2).
const spnas::KernelTable& avx2() { return *spnas::kernels_for("avx2"); }
void fwd(const spnas::DwConvDesc& d, const float* x, const float* w, float* y) { avx2().dwconv_forward(d, x, w, y); }
void bwd_data(const spnas::DwConvDesc& d, const float* dy, const float* w, float* dx, bool acc) {
  avx2().dwconv_backward_data(d, dy, w, dx, acc);
}
void bwd_weights(const spnas::DwConvDesc& d, const float* x, const float* dy, float* dw, bool acc) {
  avx2().dwconv_backward_weights(d, x, dy, dw, acc);
}

spnas::BenchVariant make() {
  spnas::BenchVariant v;
  v.name = "ours_avx2";
  if (!spnas::kernels_for("avx2")) return v;  // nothing raced on a CPU without AVX2
  v.dw_forward = fwd;
  v.dw_backward_data = bwd_data;
  v.dw_backward_weights = bwd_weights;
  return v;
}

}  // namespace

SPNAS_BENCH_VARIANT(avx2_table, make);
