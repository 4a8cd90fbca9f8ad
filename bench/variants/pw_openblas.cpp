// Variant: our pointwise with every product on the row-split OpenBLAS path (SPNAS_PW=blas), to race it against our register-blocked GEMMs, which "ours" uses.
#include "bench/variants/variant.h"

namespace {

// Forces the implementation for one call and restores the automatic choice.
struct Force {
  Force() { spnas::set_pointwise_impl("blas"); }
  ~Force() { spnas::set_pointwise_impl("auto"); }
};

void fwd(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* w, float* y) {
  Force f;
  spnas::pointwise_forward(M, Cin, Cout, x, w, y);
}
void bwd_data(int64_t M, int64_t Cin, int64_t Cout, const float* dy, const float* w, float* dx, bool acc) {
  Force f;
  spnas::pointwise_backward_data(M, Cin, Cout, dy, w, dx, acc);
}
void bwd_weights(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* dy, float* dw, bool acc) {
  Force f;
  spnas::pointwise_backward_weights(M, Cin, Cout, x, dy, dw, acc);
}

spnas::BenchVariant make() {
  spnas::BenchVariant v;
  v.name = "pw_openblas";
  v.pw_forward = fwd;
  v.pw_backward_data = bwd_data;
  v.pw_backward_weights = bwd_weights;
  return v;
}

}  // namespace

SPNAS_BENCH_VARIANT(pw_openblas, make);
