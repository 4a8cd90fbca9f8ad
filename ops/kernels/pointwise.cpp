// Pointwise (1x1) convolution as one GEMM over N*H*W rows, split across the engine's thread pool into
// row blocks (or, with fewer rows than output channels, column slices); each block is one call of our
// register-blocked kernel (KernelTable::gemm_nn / gemm_tn) or, with the reference table or
// SPNAS_PW=blas, a single-threaded OpenBLAS sgemm (always row blocks). No layout copies: NHWC
// activations are already a row-major [M, C] matrix (backward-data reads the weights transposed; at
// very few rows it transposes dY and dX instead).
#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "engine/cpu.h"
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

// "auto" is ours whenever the ISA table has it: the register-blocked products beat row-split OpenBLAS
// on the pointwise shapes (bench_conv's pw_openblas variant; bench/RESULTS.md).
bool pointwise_uses_own_gemm() {
  if (g_pw_impl < 0) {
    const char* e = std::getenv("SPNAS_PW");
    set_pointwise_impl(e && *e ? e : "auto");
  }
  const KernelTable& k = kernels();
  return k.gemm_nn && k.gemm_tn && g_pw_impl != 1;
}

// ---- which table's GEMM -------------------------------------------------------------------------
static std::string g_pw_gemm_isa;  // "" until first asked: SPNAS_PW_GEMM, else "auto"

static void check_gemm_isa(const std::string& isa, const char* from) {
  if (isa != "auto" && !kernels_for(isa))
    throw std::invalid_argument(std::string(from) + ": the pointwise GEMM table must be auto or an ISA this CPU runs " +
                                "(avx2, avx512), got '" + isa + "'");
}

std::string set_pointwise_gemm_isa(const std::string& isa) {
  check_gemm_isa(isa, "set_pointwise_gemm_isa");
  pointwise_gemm_table(0);  // the environment's setting first, to be returned
  std::string was = g_pw_gemm_isa;
  g_pw_gemm_isa = isa;
  return was;
}

bool pointwise_prefers_256(int64_t N, bool fma512_halves) { return fma512_halves && N % 16 != 0 && N % 16 <= 8; }

const KernelTable& pointwise_gemm_table(int64_t N) {
  if (g_pw_gemm_isa.empty()) {
    const char* e = std::getenv("SPNAS_PW_GEMM");
    g_pw_gemm_isa = e && *e ? e : "auto";
    check_gemm_isa(g_pw_gemm_isa, "SPNAS_PW_GEMM");
  }
  const KernelTable& k = kernels();
  if (g_pw_gemm_isa != "auto") return *kernels_for(g_pw_gemm_isa);
  if (std::string(k.name) == "avx512" && pointwise_prefers_256(N, cpu_info().fma512_halves))
    if (const KernelTable* t = kernels_for("avx2")) return *t;
  return k;
}

// ---- splitting the work -------------------------------------------------------------------------
// Split by rows, every thread reads all of the weights; split by output columns, every thread reads
// all of the rows. Columns move less where the rows are fewer than the output channels: batch-1 maps
// of 4x4 and 8x8 (16 and 64 rows against 96-1280 channels). There a row split also leaves the
// weight gradient with a full-size partial sum per thread and a reduction (bench/RESULTS.md,
// "Batch 1: the pool and small pointwise products").
// Returns the number of column chunks (1: split the rows).
static int column_chunks(int64_t M, int64_t N) {
  const int nt = num_threads();
  if (nt == 1 || M >= N) return 1;
  return int(std::min<int64_t>(nt, N / 32));  // chunks of at least 32 columns
}

// Columns [n0, n1) of N for chunk t of c: whole 16-float vectors (one AVX-512 register, one cache
// line), the remainder in the last chunk.
static void column_range(int64_t N, int t, int c, int64_t* n0, int64_t* n1) {
  int64_t b, e;
  split_range((N + 15) / 16, t, c, &b, &e);
  *n0 = std::min(N, b * 16);
  *n1 = std::min(N, e * 16);
}

// f(n0, n1) for each of the c column chunks, one per pool thread.
template <class F>
static void for_column_chunks(int64_t N, int c, const F& f) {
  parallel_run([&](int tid, int) {
    if (tid >= c) return;
    int64_t n0, n1;
    column_range(N, tid, c, &n0, &n1);
    if (n1 > n0) f(n0, n1);
  });
}

// Rows [b, e) of a product (A and C move down), and columns [n0, n1) of its output (B, C and the
// epilogue move right): the shares the row and column splits hand to the kernels.
static GemmNN rows_of(GemmNN g, int64_t b, int64_t e) {
  g.rows = e - b, g.A += b * g.lda, g.C += b * g.ldc;
  return g;
}
static GemmNN columns_of(GemmNN g, int64_t n0, int64_t n1) {
  g.N = n1 - n0, g.B += g.b_transposed ? n0 * g.ldb : n0, g.C += n0;
  if (g.scale) g.scale += n0, g.shift += n0;
  return g;
}
static GemmTN rows_of(GemmTN g, int64_t b, int64_t e) {
  g.rows = e - b, g.A += b * g.lda, g.B += b * g.ldb;
  return g;
}
static GemmTN columns_of(GemmTN g, int64_t n0, int64_t n1) {
  g.N = n1 - n0, g.B += n0, g.C += n0;
  return g;
}

// ---- memory ------------------------------------------------------------------------------------
// A product [M, K] -> [M, N] streams its output past the caches (KernelTable::gemm_nn's `stream`)
// when input and output cannot stay in the L3 together (the depthwise rule, stream_min_bytes) and
// the output is the larger: a normal store would first read every output line from DRAM. A smaller
// output keeps normal stores, for the next op to find in cache; streaming an output smaller than
// its input did not pay (bench/RESULTS.md, "Pointwise: large products").
static bool stream_product(int64_t M, int64_t K, int64_t N, bool accumulate) {
  const int64_t in = int64_t(sizeof(float)) * M * K, out = int64_t(sizeof(float)) * M * N;
  return !accumulate && out >= in && in + out > stream_min_bytes();
}

// Whether the weight gradient's operands (X and dY, read once) come from DRAM: gemm_tn's from_memory.
static bool tn_from_memory(int64_t M, int64_t Cin, int64_t Cout) {
  return int64_t(sizeof(float)) * M * (Cin + Cout) > stream_min_bytes();
}

// wt[o * Cin + i] = w[i * Cout + o] for the rows i in [i0, i1) of w [Cin, Cout]: the columns
// [i0, i1) of its transpose, in 16 x 16 blocks (a plain loop writes one element per cache line).
static void transpose_rows(const float* w, int64_t Cin, int64_t Cout, int64_t i0, int64_t i1, float* wt) {
  constexpr int64_t B = 16;
  for (int64_t ib = i0; ib < i1; ib += B)
    for (int64_t ob = 0; ob < Cout; ob += B) {
      const int64_t ie = std::min(i1, ib + B), oe = std::min(Cout, ob + B);
      for (int64_t o = ob; o < oe; ++o)
        for (int64_t i = ib; i < ie; ++i) wt[o * Cin + i] = w[i * Cout + o];
    }
}

// One gemm_nn over the pool: split by columns where the rows are too few to share (column_chunks),
// else by row blocks.
static void gemm_nn_on_pool(const KernelTable& k, const GemmNN& g) {
  const int cc = column_chunks(g.rows, g.N);
  if (cc > 1) {
    for_column_chunks(g.N, cc, [&](int64_t n0, int64_t n1) { k.gemm_nn(columns_of(g, n0, n1)); });
    return;
  }
  for_row_blocks(g.rows, row_blocks(g.rows), [&](int, int64_t b, int64_t e) {
    if (e > b) k.gemm_nn(rows_of(g, b, e));
  });
}

// The few-row backward-data's transposes (dY^T and dX^T), reused across calls, owned by the
// calling thread (the pool threads write into the caller's buffer, never their own thread_local).
static float* transpose_buffer(int64_t n) {
  static thread_local std::vector<float> wt;
  if (wt.size() < size_t(n)) wt.resize(size_t(n));
  return wt.data();
}

// OpenBLAS cannot map its operand: act(x * scale + shift) materialized (the reference path), with
// the same kernel as batch norm's own output.
static const float* materialize_map(int64_t M, int64_t C, const float* x, const ColumnMap& map) {
  static thread_local std::vector<float> mapped;
  if (mapped.size() < size_t(M * C)) mapped.resize(size_t(M * C));
  kernels().bn_act_forward(BnDesc{M, C, map.act}, x, map.scale, map.shift, mapped.data());
  return mapped.data();
}

void pointwise_forward(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* w, float* y,
                       const ColumnMap* x_map) {
  pointwise_forward_bn_act(M, Cin, Cout, x, w, nullptr, nullptr, Act::None, y, x_map);
}

void pointwise_forward_bn_act(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* w,
                              const float* scale, const float* shift, Act act, float* y, const ColumnMap* x_map) {
  const KernelTable& k = kernels();
  if (x_map && !pointwise_uses_own_gemm()) {
    x = materialize_map(M, Cin, x, *x_map);
    x_map = nullptr;
  }
  if (pointwise_uses_own_gemm()) {
    GemmNN g;  // Y = X W, with the epilogue
    g.rows = M, g.K = Cin, g.N = Cout;
    g.A = x, g.lda = Cin, g.a_map = x_map;
    g.B = w, g.ldb = Cout;
    g.C = y, g.ldc = Cout;
    g.scale = scale, g.shift = shift, g.act = act;
    g.stream = stream_product(M, Cin, Cout, false);
    gemm_nn_on_pool(pointwise_gemm_table(Cout), g);
    return;
  }
  for_row_blocks(M, row_blocks(M), [&](int, int64_t b, int64_t e) {
    if (e > b)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(e - b), int(Cout), int(Cin), 1.0f, x + b * Cin,
                  int(Cin), w, int(Cout), 0.0f, y + b * Cout, int(Cout));
  });
  if (scale) k.bn_act_forward(BnDesc{M, Cout, act}, y, scale, shift, y);
}

void pointwise_backward_data(int64_t M, int64_t Cin, int64_t Cout, const float* dy, const float* w, float* dx,
                             bool accumulate) {
  if (pointwise_uses_own_gemm()) {
    if (M * (Cin + Cout) * 4 < Cin * Cout) {
      // So few rows that packing the weights would cost more than the product: dX^T = W * dY^T,
      // the weights read once in place (rows of W split across the threads), only dY and dX moved.
      float* dyt = transpose_buffer(M * (Cin + Cout));
      float* dxt = dyt + M * Cout;
      transpose_rows(dy, M, Cout, 0, M, dyt);  // dY^T [Cout, M]
      GemmNN g;  // dX^T [Cin, M] = W [Cin, Cout] dY^T
      g.rows = Cin, g.K = Cout, g.N = M;
      g.A = w, g.lda = Cout;
      g.B = dyt, g.ldb = M;
      g.C = dxt, g.ldc = M;
      const KernelTable& t = pointwise_gemm_table(M);
      // Each thread also moves its own channels of dX^T back into dX (serially, that loop left the
      // second thread idle: bench/RESULTS.md, "Pointwise weight gradient: the first chain sets C").
      for_row_blocks(Cin, row_blocks(Cin), [&](int, int64_t b, int64_t e) {
        if (e <= b) return;
        t.gemm_nn(rows_of(g, b, e));
        for (int64_t r = 0; r < M; ++r) {
          float* d = dx + r * Cin;
          if (accumulate)
            for (int64_t i = b; i < e; ++i) d[i] += dxt[i * M + r];
          else
            for (int64_t i = b; i < e; ++i) d[i] = dxt[i * M + r];
        }
      });
      return;
    }
    GemmNN g;  // dX = dY W^T, W^T read from W as it is (gemm_nn packs it into its panels)
    g.rows = M, g.K = Cout, g.N = Cin;
    g.A = dy, g.lda = Cout;
    g.B = w, g.ldb = Cout, g.b_transposed = true;
    g.C = dx, g.ldc = Cin;
    g.accumulate = accumulate;
    g.stream = stream_product(M, Cout, Cin, accumulate);
    gemm_nn_on_pool(pointwise_gemm_table(Cin), g);
    return;
  }
  for_row_blocks(M, row_blocks(M), [&](int, int64_t b, int64_t e) {
    if (e > b)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(e - b), int(Cin), int(Cout), 1.0f, dy + b * Cout,
                  int(Cout), w, int(Cout), accumulate ? 1.0f : 0.0f, dx + b * Cin, int(Cin));
  });
}

void pointwise_backward_weights(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* dy, float* dw,
                                bool accumulate, const ColumnMap* x_map) {
  const int nb = row_blocks(M);
  const bool own = pointwise_uses_own_gemm();
  const KernelTable& k = own ? pointwise_gemm_table(Cout) : kernels();
  if (x_map && !own) {
    x = materialize_map(M, Cin, x, *x_map);
    x_map = nullptr;
  }
  const int cc = own ? column_chunks(M, Cout) : 1;
  GemmTN g;  // dW = X^T dY
  g.rows = M, g.K = Cin, g.N = Cout;
  g.A = x, g.lda = Cin, g.a_map = x_map;
  g.B = dy, g.ldb = Cout;
  g.C = dw, g.ldc = Cout;
  g.accumulate = accumulate;
  g.from_memory = tn_from_memory(M, Cin, Cout);
  if (cc > 1) {  // each chunk owns its columns of dW: no partial sums, no reduction
    for_column_chunks(Cout, cc, [&](int64_t n0, int64_t n1) { k.gemm_tn(columns_of(g, n0, n1)); });
    return;
  }
  if (nb == 1) {
    if (own) {
      k.gemm_tn(g);
      return;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(Cin), int(Cout), int(M), 1.0f, x, int(Cin), dy,
                int(Cout), accumulate ? 1.0f : 0.0f, dw, int(Cout));
    return;
  }
  // Share 0 writes into dw directly; the others into partial buffers, summed afterwards.
  const int64_t KN = Cin * Cout;
  // Reused across calls (touching fresh pages is slow); owned by the calling thread.
  static thread_local std::vector<float> parts;
  if (parts.size() < size_t(nb - 1) * KN) parts.resize(size_t(nb - 1) * KN);
  float* part_base = parts.data();  // the pool threads must use the caller's buffer, not their own thread_local
  for_row_blocks(M, nb, [&](int tid, int64_t b, int64_t e) {
    float* out = tid == 0 ? dw : part_base + (tid - 1) * KN;
    float beta = (tid == 0 && accumulate) ? 1.0f : 0.0f;
    if (own) {
      GemmTN share = rows_of(g, b, e);
      share.C = out, share.accumulate = beta != 0.0f;
      k.gemm_tn(share);
    } else if (e > b) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(Cin), int(Cout), int(e - b), 1.0f, x + b * Cin,
                  int(Cin), dy + b * Cout, int(Cout), beta, out, int(Cout));
    } else if (beta == 0.0f) {
      std::fill(out, out + KN, 0.0f);
    }
  });
  parallel_for(KN, [&](int64_t b, int64_t e) {
    for (int t = 0; t < nb - 1; ++t) {
      const float* p = part_base + t * KN;
      for (int64_t i = b; i < e; ++i) dw[i] += p[i];
    }
  }, 4096);
}

}  // namespace spnas
