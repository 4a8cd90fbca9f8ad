// Raw-pointer kernels behind the differentiable ops in ops/ops.h.
//
// Every kernel has a plain scalar reference (`*_ref`, the test oracle) and may have fast variants
// (AVX2, AVX-512) compiled in files named *_avx2.cpp / *_avx512.cpp. `kernels()` returns the table
// chosen at run time from the CPU's features (or forced with set_isa / SPNAS_ISA=ref|avx2|avx512).
// Layouts: activations NHWC; depthwise weights [K, K, C]; pointwise weights [Cin, Cout];
// dense conv weights [KH, KW, Cin, Cout]. Backward kernels take `accumulate`: add into the output
// instead of overwriting it (a value used twice gets the sum of its gradients).
#pragma once
#include <cstdint>
#include <string>

#include "engine/cpu.h"  // cpu_isa()

namespace spnas {

enum class Act { None, ReLU, ReLU6 };

// A per-channel map of a row-major [rows, C] operand: element (r, c) read as
// act(a[r, c] * scale[c] + shift[c]), the same fma and clamp as bn_act_forward (so equal bit for bit).
struct ColumnMap {
  const float* scale;
  const float* shift;
  Act act;
};

// Depthwise k x k convolution with TensorFlow "SAME" padding: OH = ceil(H / S),
// pad_t = max((OH - 1) * S + K - H, 0) / 2 (the extra row, if any, goes to the bottom).
struct DwConvDesc {
  int64_t N = 0, H = 0, W = 0, C = 0, OH = 0, OW = 0;
  int K = 0, S = 1, pad_t = 0, pad_l = 0;
  int64_t in_elems() const { return N * H * W * C; }
  int64_t out_elems() const { return N * OH * OW * C; }
};
DwConvDesc dwconv_desc(int64_t N, int64_t H, int64_t W, int64_t C, int K, int S);

// The SIMD depthwise kernels write their output with non-temporal stores when the op's input and
// output together exceed this many bytes (three quarters of the L3, read from sysfs, 24 MiB if it
// cannot be read), the output is vector-aligned, C is a multiple of the vector width, and the op does
// not accumulate. Below it both can stay in the L3, so a normal store writes into cache and the next
// op (or the next call) finds the output there; above it the output goes to DRAM anyway and a normal
// store would first read every line (write-allocate). Stride-2 forwards also stream outputs of at
// least 1 MiB. The rule is part of the depthwise variant choice (ops/kernels/dw_variant.cpp); the
// figures behind it are in bench/RESULTS.md ("Depthwise streaming stores").
int64_t stream_min_bytes();
// Overrides stream_min_bytes() (bytes > 0; 0 restores the L3-derived value): for tests, which reach
// both store paths with small tensors on any machine.
void set_stream_min_bytes(int64_t bytes);
// Batch norm's apply and backward-data passes stream from this size: only tensors that cannot stay in
// the shared L3 for the next op. Smaller ones keep normal stores: a 2-16 MB output may still be in L3
// when the next op reads it (bench/RESULTS.md, "Batch norm streaming stores").
constexpr int64_t kBnStreamBytes = int64_t(16) << 20;

// Batch-norm apply + activation over M = N*H*W rows of C channels: y = act(x * scale[c] + shift[c]).
// Backward (training mode) of y = act(gamma * (x - mean) * invstd + beta):
//   g = dy * act'(x * scale + shift)   (the forward's scale/shift: the mask is recomputed from x, so
//                                        backward never reads y);  dbeta = sum g;  dgamma = sum g * xhat;
//   dx = gamma * invstd / M * (M * g - dbeta - xhat * dgamma)
// With `training` false (frozen statistics) dx = g * gamma * invstd.
struct BnDesc {
  int64_t M = 0, C = 0;
  Act act = Act::None;
};

// One product for KernelTable::gemm_nn: C[r, :] (+)= A'[r, :] * B over `rows` rows, where
// A' = A, or a_map applied to A (batch norm's output, never materialized: ColumnMap). Strides may
// exceed the widths (a column slice of a wider matrix, as the column split uses). Built by baseline
// code (ops/kernels/pointwise.cpp); the kernels only read it.
struct GemmNN {
  int64_t rows = 0, K = 0, N = 0;
  const float* A = nullptr;  // [rows, K], row stride lda
  int64_t lda = 0;
  const ColumnMap* a_map = nullptr;
  const float* B = nullptr;  // [K, N], row stride ldb; or with b_transposed its transpose [N, K]
  int64_t ldb = 0;
  bool b_transposed = false;  // B given as B^T (backward-data: the weights as they are, W = (W^T)^T)
  float* C = nullptr;  // [rows, N], row stride ldc
  int64_t ldc = 0;
  bool accumulate = false;  // C += instead of C =
  // Epilogue: with scale != nullptr the stored value is act(that * scale[n] + shift[n]).
  const float* scale = nullptr;
  const float* shift = nullptr;
  Act act = Act::None;
  // C goes to memory with non-temporal stores (the caller's choice, for outputs that cannot stay in
  // the L3; taken only where C is not accumulated, N and ldc are whole 16-float lines and C is
  // 64-byte aligned, else ignored).
  bool stream = false;
};

// One product for KernelTable::gemm_tn: C[K, N] (+)= sum over rows of A'[r, :]^T B[r, :] (a weight
// gradient), A' as in GemmNN.
struct GemmTN {
  int64_t rows = 0, K = 0, N = 0;
  const float* A = nullptr;  // [rows, K], row stride lda
  int64_t lda = 0;
  const ColumnMap* a_map = nullptr;
  const float* B = nullptr;  // [rows, N], row stride ldb
  int64_t ldb = 0;
  float* C = nullptr;  // [K, N], row stride ldc
  int64_t ldc = 0;
  bool accumulate = false;
  // A and B come from DRAM (the caller's estimate): the kernel requests each next row block into L2
  // while it computes on the current one.
  bool from_memory = false;
};

struct KernelTable {
  const char* name;  // "ref", "avx2", "avx512"

  void (*dwconv_forward)(const DwConvDesc&, const float* x, const float* w, float* y);
  void (*dwconv_backward_data)(const DwConvDesc&, const float* dy, const float* w, float* dx, bool accumulate);
  void (*dwconv_backward_weights)(const DwConvDesc&, const float* x, const float* dy, float* dw, bool accumulate);

  // Per-channel mean and biased variance over M rows.
  void (*bn_stats)(const BnDesc&, const float* x, float* mean, float* var);
  void (*bn_act_forward)(const BnDesc&, const float* x, const float* scale, const float* shift, float* y);
  // Reductions over rows: dbeta = sum g, dgamma = sum g * xhat (overwritten), where
  // g = dy * act'(x * scale + shift) with the scale/shift bn_act_forward was given.
  void (*bn_act_backward_reduce)(const BnDesc&, const float* x, const float* scale, const float* shift,
                                 const float* dy, const float* mean, const float* invstd, float* dgamma,
                                 float* dbeta);
  // dx from the reductions (see BnDesc); `training` selects the formula.
  void (*bn_act_backward_data)(const BnDesc&, const float* x, const float* scale, const float* shift,
                               const float* dy, const float* mean, const float* invstd, const float* gamma,
                               const float* dgamma, const float* dbeta, bool training, float* dx, bool accumulate);

  // Fused forward for frozen statistics (inference, or BN folded into scale/shift):
  // y = act(dwconv(x, w) * scale[c] + shift[c]) in one pass; equals dwconv_forward then bn_act_forward.
  void (*dwconv_bn_act_forward)(const DwConvDesc&, const float* x, const float* w, const float* scale,
                                const float* shift, Act act, float* y);

  // Register-blocked row-range GEMMs for the pointwise products (ops/kernels/gemm_simd.h, arguments
  // below), single-threaded; nullptr in the reference table (pointwise then always uses OpenBLAS).
  void (*gemm_nn)(const GemmNN&);
  void (*gemm_tn)(const GemmTN&);
};

const KernelTable& kernels();          // the active table
const KernelTable& reference_kernels();
const KernelTable* kernels_for(const std::string& isa);  // nullptr if this CPU/build lacks it
void set_isa(const std::string& isa);  // "auto", "ref", "avx2", "avx512"; throws if unsupported

// Reference kernels (single-threaded, straightforward loops; the oracle for tests).
void dwconv_forward_ref(const DwConvDesc&, const float* x, const float* w, float* y);
void dwconv_backward_data_ref(const DwConvDesc&, const float* dy, const float* w, float* dx, bool accumulate);
void dwconv_backward_weights_ref(const DwConvDesc&, const float* x, const float* dy, float* dw, bool accumulate);
void dwconv_bn_act_forward_ref(const DwConvDesc&, const float* x, const float* w, const float* scale,
                               const float* shift, Act act, float* y);
void bn_stats_ref(const BnDesc&, const float* x, float* mean, float* var);
void bn_act_forward_ref(const BnDesc&, const float* x, const float* scale, const float* shift, float* y);
void bn_act_backward_reduce_ref(const BnDesc&, const float* x, const float* scale, const float* shift,
                                const float* dy, const float* mean, const float* invstd, float* dgamma, float* dbeta);
void bn_act_backward_data_ref(const BnDesc&, const float* x, const float* scale, const float* shift, const float* dy,
                              const float* mean, const float* invstd, const float* gamma, const float* dgamma,
                              const float* dbeta, bool training, float* dx, bool accumulate);

// Pointwise (1x1) convolution as GEMM over M = N*H*W rows, split into row blocks across the engine's
// threads, or into output-column slices where M is below the output channels (batch-1 small maps);
// OpenBLAS itself runs single-threaded (see engine/threads.h).
//   forward:          Y[M, Cout]  = X[M, Cin] * W[Cin, Cout]
//   backward data:    dX[M, Cin] (+)= dY[M, Cout] * W^T
//   backward weights: dW[Cin, Cout] (+)= X^T * dY   (row blocks: per-thread partial sums, then a reduction)
// Each product runs through the table's gemm_nn / gemm_tn when it has them (AVX2, AVX-512), else
// as OpenBLAS sgemm calls; pointwise_uses_own_gemm() tells which. SPNAS_PW=blas|own|auto (or
// set_pointwise_impl) forces a choice, e.g. to race them.
// x_map != nullptr: the product of act(x * scale[c] + shift[c]) (batch norm's output, never
// materialized: bn_act_pwconv in ops/ops.h), equal bit for bit to that of the materialized input.
void pointwise_forward(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* w, float* y,
                       const ColumnMap* x_map = nullptr);
void pointwise_backward_data(int64_t M, int64_t Cin, int64_t Cout, const float* dy, const float* w, float* dx,
                             bool accumulate);
// x_map != nullptr: the weight gradient of the input act(x * scale[c] + shift[c]) (batch norm's output,
// released after the forward) computed from x, bit for bit what the materialized input would give.
void pointwise_backward_weights(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* dy, float* dw,
                                bool accumulate, const ColumnMap* x_map = nullptr);
// Inference: y = act(x * w * scale[n] + shift[n]) (batch norm folded into scale/shift), one pass
// over y with our GEMM, a GEMM then bn_act_forward otherwise; scale == nullptr: y = x * w.
void pointwise_forward_bn_act(int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* w,
                              const float* scale, const float* shift, Act act, float* y,
                              const ColumnMap* x_map = nullptr);
bool pointwise_uses_own_gemm();
void set_pointwise_impl(const std::string& impl);  // "auto", "blas", "own"; throws otherwise
// Whose gemm_nn / gemm_tn run a product whose vectors span N columns (output channels forward and in
// the weight gradient, input channels in backward-data). "auto": the active table, except on a CPU
// that splits 512-bit FMAs (CpuInfo::fma512_halves) where the AVX-512 table gives way to the AVX2 one
// for N whose last 16-float vector would be at most half used (pointwise_prefers_256). An ISA name
// ("avx2", "avx512") forces that table (it must be available); SPNAS_PW_GEMM sets the same.
const KernelTable& pointwise_gemm_table(int64_t N);
// "auto", "avx2", "avx512" (throws otherwise); returns the setting it replaces.
std::string set_pointwise_gemm_isa(const std::string& isa);
// The rule itself: N % 16 in [1, 8] on such a CPU (bench/RESULTS.md, "Pointwise on the Zen 4: 8-float
// vectors for 24 and 40 columns").
bool pointwise_prefers_256(int64_t N, bool fma512_halves);

}  // namespace spnas
