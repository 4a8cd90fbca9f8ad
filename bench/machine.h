// The machine's limits, measured by the benchmarks in the same run as the figures they bound:
// streaming memory bandwidth and the FMA compute peak, both on the engine's thread pool.
// Header-only, shared by bench_conv, bench_train and bench_search_step.
//
// The peak is what the FMA units deliver on register-resident data (16 independent chains of
// vector FMAs per thread, nothing else): no kernel, ours or a library's, can beat it, so
// `work / peak` is a lower bound on a step's time, and `peak / work` an upper bound on its rate.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/cpu.h"
#include "engine/threads.h"
#include "ops/kernels.h"

namespace spnas {
namespace bench {

inline double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Streaming bandwidth with the engine's pool: copy (read + write bytes) and read-only, best of 10.
struct Bandwidth {
  double copy_gbs = 0, read_gbs = 0;
};
inline Bandwidth measure_bandwidth() {
  const size_t n = size_t(64) << 20;  // 256 MiB per buffer
  float* a = static_cast<float*>(std::aligned_alloc(64, n * 4));
  float* b = static_cast<float*>(std::aligned_alloc(64, n * 4));
  parallel_for(int64_t(n), [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) a[i] = float(i & 7), b[i] = 0;
  });
  Bandwidth bw;
  std::vector<double> sums(64, 0.0);
  for (int rep = 0; rep < 10; ++rep) {
    double t0 = seconds_now();
    parallel_for(int64_t(n), [&](int64_t s, int64_t e) { std::memcpy(b + s, a + s, size_t(e - s) * 4); });
    double t1 = seconds_now();
    parallel_run([&](int tid, int nt) {
      int64_t s, e;
      split_range(int64_t(n), tid, nt, &s, &e);
      float acc[16] = {0};
      for (int64_t i = s; i + 16 <= e; i += 16)
        for (int j = 0; j < 16; ++j) acc[j] += a[i + j];
      double t = 0;
      for (float v : acc) t += v;
      sums[size_t(tid) % 64] += t;
    });
    double t2 = seconds_now();
    bw.copy_gbs = std::max(bw.copy_gbs, 2.0 * n * 4 / (t1 - t0) / 1e9);
    bw.read_gbs = std::max(bw.read_gbs, 1.0 * n * 4 / (t2 - t1) / 1e9);
  }
  std::free(a);
  std::free(b);
  return bw;
}

// `iters` rounds of 16 independent FMA chains; returns a value that depends on every chain (so the
// compiler keeps them): lane 0 of their sum. FLOPs: iters * 16 * lanes * 2.
#define SPNAS_FMA_CHAINS(T, SET1, FMA, ADD)                                                   \
  T a0 = SET1(0.0f), a1 = SET1(0.1f), a2 = SET1(0.2f), a3 = SET1(0.3f), a4 = SET1(0.4f),    \
    a5 = SET1(0.5f), a6 = SET1(0.6f), a7 = SET1(0.7f), a8 = SET1(0.8f), a9 = SET1(0.9f),    \
    a10 = SET1(1.0f), a11 = SET1(1.1f), a12 = SET1(1.2f), a13 = SET1(1.3f), a14 = SET1(1.4f), \
    a15 = SET1(1.5f);                                                                        \
  const T m = SET1(0.999f), c = SET1(1e-4f);                                                 \
  for (long i = 0; i < iters; ++i) {                                                         \
    a0 = FMA(a0, m, c), a1 = FMA(a1, m, c), a2 = FMA(a2, m, c), a3 = FMA(a3, m, c);          \
    a4 = FMA(a4, m, c), a5 = FMA(a5, m, c), a6 = FMA(a6, m, c), a7 = FMA(a7, m, c);          \
    a8 = FMA(a8, m, c), a9 = FMA(a9, m, c), a10 = FMA(a10, m, c), a11 = FMA(a11, m, c);      \
    a12 = FMA(a12, m, c), a13 = FMA(a13, m, c), a14 = FMA(a14, m, c), a15 = FMA(a15, m, c);  \
  }                                                                                          \
  T s = ADD(ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7))),               \
            ADD(ADD(ADD(a8, a9), ADD(a10, a11)), ADD(ADD(a12, a13), ADD(a14, a15))));

__attribute__((target("avx512f"))) inline float fma_chains_avx512(long iters) {
  SPNAS_FMA_CHAINS(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps)
  return _mm512_cvtss_f32(s);  // lane 0 already depends on every chain
}
__attribute__((target("avx2,fma"))) inline float fma_chains_avx2(long iters) {
  SPNAS_FMA_CHAINS(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps)
  return _mm256_cvtss_f32(s);
}
#undef SPNAS_FMA_CHAINS

// FMA peak of the ISA the engine dispatches to (kernels().name), all pool threads at once, best of
// 5 runs of ~0.1 s; 0 for the scalar reference table.
inline double measure_fma_peak_gflops() {
  const std::string isa = kernels().name;
  const int lanes = isa == "avx512" ? 16 : isa == "avx2" ? 8 : 0;
  if (lanes == 0) return 0;
  const long iters = 5000000;
  std::vector<float> sink(64, 0.0f);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const int used = num_threads();
    double t0 = seconds_now();
    parallel_run([&](int tid, int) {
      sink[size_t(tid) % 64] += lanes == 16 ? fma_chains_avx512(iters) : fma_chains_avx2(iters);
    });
    double t = seconds_now() - t0;
    best = std::max(best, double(used) * iters * 16 * lanes * 2 / t / 1e9);
  }
  if (sink[0] == 12345.0f) std::abort();  // keeps the results observable
  return best;
}

// FLOPs of one training step per image from the forward multiply-adds: forward, backward-data and
// backward-weights each cost about one forward (2 FLOPs per multiply-add).
inline double training_flops_per_image(int64_t forward_macs) { return 3.0 * 2.0 * double(forward_macs); }

}  // namespace bench
}  // namespace spnas
