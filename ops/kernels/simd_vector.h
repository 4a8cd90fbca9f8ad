// The thin vector type `V` the SIMD kernels are written over, and the helpers they share. Every
// kernel header (dw_correlation.h, dw_weight_grad.h, batchnorm_simd.h, gemm_simd.h) is compiled
// twice, through simd_table.h: by kernels_avx512.cpp (V = 16 floats, mask registers) and by
// kernels_avx2.cpp (V = 8 floats, vmaskmov tails). Include only from there, after defining
// SPNAS_SIMD_AVX512 or SPNAS_SIMD_AVX2.
//
// Everything here lives in an anonymous namespace and uses no std:: containers: inline and template
// functions instantiated with AVX-512 flags must never be merged by the linker with copies that
// baseline code calls (that would execute AVX-512 on an AVX2-only CPU). Shared types the kernels
// receive (GemmNN, DwChoice, ...) are built by baseline code; the kernels only read them.
//
// Layouts (ops/kernels.h): NHWC activations, depthwise weights [K, K, C]. One vector = one tap for
// L channels. The channel tail (C % L) runs the same code with masked loads and stores.
#pragma once
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports its own _mm512_undefined_ps() inside <avx512fintrin.h> as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "engine/threads.h"
#include "ops/kernels.h"
#include "ops/kernels/dw_variant.h"

namespace spnas {
namespace {
#if defined(SPNAS_SIMD_AVX512)
struct V {
  using R = __m512;
  using M = __mmask16;
  static constexpr Isa isa = Isa::avx512;
  static constexpr IsaRegisters regs = kAvx512Registers;
  static constexpr int L = regs.lanes;
  static M mask(int n) { return M((1u << n) - 1u); }
  static R zero() { return _mm512_setzero_ps(); }
  static R set1(float v) { return _mm512_set1_ps(v); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static R loadm(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static void storem(float* p, R v, M m) { _mm512_mask_storeu_ps(p, m, v); }
  static void stream(float* p, R v) { _mm512_stream_ps(p, v); }  // p 64-byte aligned
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R min(R a, R b) { return _mm512_min_ps(a, b); }
  // a where lo < y < hi (strictly), else 0.
  static R keep_inside(R a, R y, R lo, R hi) {
    __mmask16 k = _mm512_cmp_ps_mask(y, lo, _CMP_GT_OQ) & _mm512_cmp_ps_mask(y, hi, _CMP_LT_OQ);
    return _mm512_maskz_mov_ps(k, a);
  }
  static R keep_above(R a, R y, R lo) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, lo, _CMP_GT_OQ), a); }
};
#elif defined(SPNAS_SIMD_AVX2)
alignas(32) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
struct V {
  using R = __m256;
  using M = __m256i;
  static constexpr Isa isa = Isa::avx2;
  static constexpr IsaRegisters regs = kAvx2Registers;
  static constexpr int L = regs.lanes;
  static M mask(int n) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - n)); }
  static R zero() { return _mm256_setzero_ps(); }
  static R set1(float v) { return _mm256_set1_ps(v); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static R loadm(const float* p, M m) { return _mm256_maskload_ps(p, m); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static void storem(float* p, R v, M m) { _mm256_maskstore_ps(p, m, v); }
  static void stream(float* p, R v) { _mm256_stream_ps(p, v); }  // p 32-byte aligned
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R min(R a, R b) { return _mm256_min_ps(a, b); }
  static R keep_inside(R a, R y, R lo, R hi) {
    R k = _mm256_and_ps(_mm256_cmp_ps(y, lo, _CMP_GT_OQ), _mm256_cmp_ps(y, hi, _CMP_LT_OQ));
    return _mm256_and_ps(k, a);
  }
  static R keep_above(R a, R y, R lo) { return _mm256_and_ps(_mm256_cmp_ps(y, lo, _CMP_GT_OQ), a); }
};
#else
#error "define SPNAS_SIMD_AVX512 or SPNAS_SIMD_AVX2 before including simd_vector.h"
#endif

using R = V::R;
using M = V::M;
constexpr int L = V::L;

template <bool Mk>
inline R ld(const float* p, M m) {
  if constexpr (Mk) return V::loadm(p, m);
  else return V::load(p);
}
template <bool Mk>
inline void st(float* p, R v, M m) {
  if constexpr (Mk) V::storem(p, v, m);
  else V::store(p, v);
}

// Forces inlining where GCC would otherwise call a kernel's lambdas (and then keep the accumulators
// they update in memory).
#define SPNAS_INLINE __attribute__((always_inline))

template <class F, int... I>
__attribute__((always_inline)) inline void static_for_impl(F& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
// f(integral_constant<int, 0>) ... f(integral_constant<int, N-1>), fully unrolled.
template <int N, class F>
__attribute__((always_inline)) inline void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }
inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// A growable 64-byte-aligned buffer owned by the calling thread, reused across calls (touching fresh
// pages costs more than many a small kernel call).
struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  float* get(size_t want) {
    if (want > n) {
      std::free(p);
      size_t bytes = (want * sizeof(float) + 63) / 64 * 64;
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      n = want;
    }
    return p;
  }
  ~Scratch() { std::free(p); }
};
thread_local Scratch g_scratch_w, g_scratch_part;

// The activation applied to a vector (the same max / min as the scalar reference).
inline R act_apply(Act a, R v) {
  if (a != Act::None) v = V::max(v, V::zero());
  if (a == Act::ReLU6) v = V::min(v, V::set1(6.0f));
  return v;
}

}  // namespace
}  // namespace spnas
