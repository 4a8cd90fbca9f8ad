// Pointwise (1x1) convolution as one GEMM over N*H*W rows, split into row blocks across the engine's
// thread pool; each block is one call of our register-blocked kernel (KernelTable::gemm_nn /
// gemm_tn) or, with the reference table or SPNAS_PW=blas, a single-threaded OpenBLAS sgemm. No layout
// copies: NHWC activations are already a row-major [M, C] matrix.
#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "engine/tensor.h"
#include "engine/threads.h"
#include "ops/kernels.h"

namespace spnas {

// Row blocks: small enough to share work evenly, large enough that each sgemm call is efficient.
static int row_blocks(int64_t M) {
  int nt = num_threads();
  if (M < 64 || nt == 1) return 1;
  return nt;
}

// f(tid, b, e) for each of the nb row blocks [b, e) of M rows, one per pool thread.
template <class F>
static void for_row_blocks(int64_t M, int nb, const F& f) {
  parallel_run([&](int tid, int nthreads) {
    if (tid >= nb) return;
    int64_t b, e;
    split_range(M, tid, std::min(nb, nthreads), &b, &e);
    f(tid, b, e);
  });
}

// ---- which GEMM -------------------------------------------------------------------------------
static int g_pw_impl = -1;  // -1 undecided, 0 auto, 1 blas, 2 own

void set_pointwise_impl(const std::string& impl) {
  if (impl == "auto") g_pw_impl = 0;
  else if (impl == "blas") g_pw_impl = 1;
  else if (impl == "own") g_pw_impl = 2;
  else throw std::invalid_argument("pointwise implementation must be auto, blas or own, got '" + impl + "'");
}

// From bench_conv on the cifar10 space's 19 batch-64 shapes, idle machine (the pw_openblas
// variant against ours, bench/README.md): the register-blocked products are 1.48x (forward), 1.27x
// (backward-data) and 1.43x (backward-weights) faster than row-split OpenBLAS by geometric mean,
// worst shape 0.87x (96 -> 576 forward). So "auto" is ours whenever the ISA table has it.
bool pointwise_uses_own_gemm() {
  if (g_pw_impl < 0) {
    const char* e = std::getenv("SPNAS_PW");
    set_pointwise_impl(e && *e ? e : "auto");
  }
  const KernelTable& k = kernels();
  return k.gemm_nn && k.gemm_tn && g_pw_impl != 1;
}

// W^T [Cout, Cin] for the backward-data product, in a buffer reused across calls.
static const float* transposed(const float* w, int64_t Cin, int64_t Cout) {
  static thread_local std::vector<float> wt;
  if (wt.size() < size_t(Cin * Cout)) wt.resize(size_t(Cin * Cout));
  for (int64_t i = 0; i < Cin; ++i)
    for (int64_t o = 0; o < Cout; ++o) wt[o * Cin + i] = w[i * Cout + o];
  return wt.data();
}

void pointwise_forward(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* w, float* y) {
  pointwise_forward_bn_act(M, Cin, Cout, x, w, nullptr, nullptr, Act::None, y);
}

void pointwise_forward_bn_act(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* w,
                              const float* scale, const float* shift, Act act, float* y) {
  const KernelTable& k = kernels();
  const int nb = row_blocks(M);
  if (pointwise_uses_own_gemm()) {
    for_row_blocks(M, nb, [&](int, int64_t b, int64_t e) {
      if (e > b) k.gemm_nn(e - b, Cin, Cout, x + b * Cin, Cin, w, y + b * Cout, Cout, false, scale, shift, act);
    });
    return;
  }
  for_row_blocks(M, nb, [&](int, int64_t b, int64_t e) {
    if (e > b)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(e - b), int(Cout), int(Cin), 1.0f, x + b * Cin,
                  int(Cin), w, int(Cout), 0.0f, y + b * Cout, int(Cout));
  });
  if (scale) k.bn_act_forward(BnDesc{M, Cout, act}, y, scale, shift, y);
}

void pointwise_backward_data(int64_t M, int64_t Cin, int64_t Cout, const float* dy, const float* w, float* dx,
                             bool accumulate) {
  const int nb = row_blocks(M);
  if (pointwise_uses_own_gemm()) {
    const KernelTable& k = kernels();
    const float* wt = transposed(w, Cin, Cout);  // by the calling thread, before the pool runs
    for_row_blocks(M, nb, [&](int, int64_t b, int64_t e) {
      if (e > b)
        k.gemm_nn(e - b, Cout, Cin, dy + b * Cout, Cout, wt, dx + b * Cin, Cin, accumulate, nullptr, nullptr,
                  Act::None);
    });
    return;
  }
  for_row_blocks(M, nb, [&](int, int64_t b, int64_t e) {
    if (e > b)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(e - b), int(Cin), int(Cout), 1.0f, dy + b * Cout,
                  int(Cout), w, int(Cout), accumulate ? 1.0f : 0.0f, dx + b * Cin, int(Cin));
  });
}

void pointwise_backward_weights(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* dy, float* dw,
                                bool accumulate) {
  const int nb = row_blocks(M);
  const bool own = pointwise_uses_own_gemm();
  const KernelTable& k = kernels();
  if (nb == 1) {
    if (own) {
      k.gemm_tn(M, Cin, Cout, x, Cin, dy, Cout, dw, accumulate);
      return;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(Cin), int(Cout), int(M), 1.0f, x, int(Cin), dy,
                int(Cout), accumulate ? 1.0f : 0.0f, dw, int(Cout));
    return;
  }
  // Thread 0 writes into dw directly; the others into partial buffers, summed afterwards.
  const int64_t KN = Cin * Cout;
  // Reused across calls (fresh pages cost ~1.5 us each to touch); owned by the calling thread.
  static thread_local std::vector<float> parts;
  if (parts.size() < size_t(nb - 1) * KN) parts.resize(size_t(nb - 1) * KN);
  float* part_base = parts.data();  // the pool threads must use the caller's buffer, not their own thread_local
  for_row_blocks(M, nb, [&](int tid, int64_t b, int64_t e) {
    float* out = tid == 0 ? dw : part_base + (tid - 1) * KN;
    float beta = (tid == 0 && accumulate) ? 1.0f : 0.0f;
    if (own)
      k.gemm_tn(e - b, Cin, Cout, x + b * Cin, Cin, dy + b * Cout, Cout, out, beta != 0.0f);
    else if (e > b)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(Cin), int(Cout), int(e - b), 1.0f, x + b * Cin,
                  int(Cin), dy + b * Cout, int(Cout), beta, out, int(Cout));
    else if (beta == 0.0f)
      std::fill(out, out + KN, 0.0f);
  });
  parallel_for(KN, [&](int64_t b, int64_t e) {
    for (int t = 0; t < nb - 1; ++t) {
      const float* p = part_base + t * KN;
      for (int64_t i = b; i < e; ++i) dw[i] += p[i];
    }
  }, 4096);
}

}  // namespace spnas
