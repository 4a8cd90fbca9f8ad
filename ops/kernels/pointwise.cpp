// Pointwise (1x1) convolution as one GEMM over N*H*W rows, split into row blocks across the engine's
// thread pool; each block is one single-threaded OpenBLAS sgemm. No layout copies: NHWC activations
// are already a row-major [M, C] matrix.
#include <cblas.h>

#include <algorithm>
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

void pointwise_forward(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* w, float* y) {
  int nb = row_blocks(M);
  parallel_run([&](int tid, int nthreads) {
    if (tid >= nb) return;
    int64_t b, e;
    split_range(M, tid, std::min(nb, nthreads), &b, &e);
    if (e > b)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(e - b), int(Cout), int(Cin), 1.0f, x + b * Cin,
                  int(Cin), w, int(Cout), 0.0f, y + b * Cout, int(Cout));
  });
}

void pointwise_backward_data(int64_t M, int64_t Cin, int64_t Cout, const float* dy, const float* w, float* dx,
                             bool accumulate) {
  int nb = row_blocks(M);
  parallel_run([&](int tid, int nthreads) {
    if (tid >= nb) return;
    int64_t b, e;
    split_range(M, tid, std::min(nb, nthreads), &b, &e);
    if (e > b)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(e - b), int(Cin), int(Cout), 1.0f, dy + b * Cout,
                  int(Cout), w, int(Cout), accumulate ? 1.0f : 0.0f, dx + b * Cin, int(Cin));
  });
}

void pointwise_backward_weights(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* dy, float* dw,
                                bool accumulate) {
  int nb = row_blocks(M);
  if (nb == 1) {
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
  parallel_run([&](int tid, int nthreads) {
    if (tid >= nb) return;
    int64_t b, e;
    split_range(M, tid, std::min(nb, nthreads), &b, &e);
    float* out = tid == 0 ? dw : part_base + (tid - 1) * KN;
    float beta = (tid == 0 && accumulate) ? 1.0f : 0.0f;
    if (e > b)
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
