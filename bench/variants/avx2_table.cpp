// Example variant (and a useful one): our AVX2 kernels raced on this machine, i.e. what a user whose
// CPU stops at AVX2 gets. Copy this file to add your own kernel to the race.
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

// Pointwise: the engine's own path (splits, packing, streaming) with the AVX2 table's products.
template <class F>
void with_avx2_gemm(const F& f) {
  const std::string was = spnas::set_pointwise_gemm_isa("avx2");
  f();
  spnas::set_pointwise_gemm_isa(was);
}
void pw_fwd(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* w, float* y) {
  with_avx2_gemm([&] { spnas::pointwise_forward(M, Cin, Cout, x, w, y); });
}
void pw_bwd_data(int64_t M, int64_t Cin, int64_t Cout, const float* dy, const float* w, float* dx, bool acc) {
  with_avx2_gemm([&] { spnas::pointwise_backward_data(M, Cin, Cout, dy, w, dx, acc); });
}
void pw_bwd_weights(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* dy, float* dw, bool acc) {
  with_avx2_gemm([&] { spnas::pointwise_backward_weights(M, Cin, Cout, x, dy, dw, acc); });
}

spnas::BenchVariant make() {
  spnas::BenchVariant v;
  v.name = "ours_avx2";
  if (!spnas::kernels_for("avx2")) return v;  // nothing raced on a CPU without AVX2
  v.dw_forward = fwd;
  v.dw_backward_data = bwd_data;
  v.dw_backward_weights = bwd_weights;
  v.pw_forward = pw_fwd;
  v.pw_backward_data = pw_bwd_data;
  v.pw_backward_weights = pw_bwd_weights;
  return v;
}

}  // namespace

SPNAS_BENCH_VARIANT(avx2_table, make);
