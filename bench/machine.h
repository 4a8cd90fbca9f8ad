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
#include <cstdio>
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

// The FMA peak: what the FMA units deliver on register-resident data, nothing else, so no kernel (ours
// or a library's) can beat it. Each pool thread runs `chains` independent chains of vector FMAs:
// enough to cover the FMA latency times the FMA pipes of current x86 cores (4-5 cycles x 2 pipes),
// and few enough to stay in registers (12 of AVX2's 16 ymm, 24 of AVX-512's 32 zmm, with the two
// constants). It first warms up (so the core reaches its boosted clock), then times many short
// windows and keeps each thread's best: on a shared machine a long window is almost always
// interrupted, which made the previous probe (best of 5 windows of 0.1 s) read below what kernels in
// the same run achieved. The peak is the sum of the threads' best rates, measured while all of them
// run at once.
struct FmaPeak {
  double gflops = 0;                // all pool threads together
  std::vector<double> per_thread;   // each thread's best window, GFLOP/s
  std::string isa;                  // the ISA of the engine's kernel table ("avx2", "avx512")
  int lanes = 0, chains = 0, windows = 0;
  double window_ms = 0, warmup_s = 0;
  // One line: the figure and what the probe assumed.
  std::string describe() const {
    if (lanes == 0) return "FMA peak: not measured (scalar reference kernels)";
    char b[512];
    std::snprintf(b, sizeof b,
                  "FMA peak %.1f GFLOP/s with %zu thread(s) (%s, %d-float FMAs, %d independent chains per thread, "
                  "best of %d windows of %.2f ms after %.2f s of warm-up; per thread:",
                  gflops, per_thread.size(), isa.c_str(), lanes, chains, windows, window_ms, warmup_s);
    std::string s = b;
    for (double g : per_thread) {
      std::snprintf(b, sizeof b, " %.1f", g);
      s += b;
    }
    return s + ")";
  }
};

// `iters` rounds of N independent FMA chains (a[i] = a[i] * m + c); returns a value that depends on
// every chain, so the compiler keeps them. FLOPs: iters * N * lanes * 2.
#define SPNAS_FMA_CHAINS(T, N, SET1, FMA, ADD)                                \
  T a[N];                                                                     \
  for (int i = 0; i < N; ++i) a[i] = SET1(0.01f * float(i));                  \
  const T m = SET1(0.999f), c = SET1(1e-4f);                                  \
  for (long it = 0; it < iters; ++it) {                                       \
    _Pragma("GCC unroll 32") for (int i = 0; i < N; ++i) a[i] = FMA(a[i], m, c); \
  }                                                                           \
  for (int i = 1; i < N; ++i) a[0] = ADD(a[0], a[i]);

constexpr int kFmaChainsAvx2 = 12, kFmaChainsAvx512 = 24;
__attribute__((target("avx2,fma"))) inline float fma_chains_avx2(long iters) {
  SPNAS_FMA_CHAINS(__m256, kFmaChainsAvx2, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps)
  return _mm256_cvtss_f32(a[0]);
}
__attribute__((target("avx512f"))) inline float fma_chains_avx512(long iters) {
  SPNAS_FMA_CHAINS(__m512, kFmaChainsAvx512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps)
  return _mm512_cvtss_f32(a[0]);
}
#undef SPNAS_FMA_CHAINS

// The FMA peak of the ISA the engine dispatches to (kernels().name), all pool threads at once.
inline FmaPeak measure_fma_peak() {
  FmaPeak p;
  p.isa = kernels().name;
  p.lanes = p.isa == "avx512" ? 16 : p.isa == "avx2" ? 8 : 0;
  if (p.lanes == 0) return p;
  p.chains = p.lanes == 16 ? kFmaChainsAvx512 : kFmaChainsAvx2;
  p.windows = 200;
  p.warmup_s = 0.3;
  const long iters = 100000;  // ~0.2-0.5 ms per window at 3-4 GHz
  auto run = [&](long n) { return p.lanes == 16 ? fma_chains_avx512(n) : fma_chains_avx2(n); };
  const int threads = num_threads();
  std::vector<double> best_s(size_t(threads), 1e30);
  std::vector<float> sink(size_t(threads), 0.0f);
  parallel_run([&](int tid, int) {
    const double t_end = seconds_now() + p.warmup_s;
    while (seconds_now() < t_end) sink[size_t(tid)] += run(iters);
    for (int w = 0; w < p.windows; ++w) {
      const double t0 = seconds_now();
      sink[size_t(tid)] += run(iters);
      best_s[size_t(tid)] = std::min(best_s[size_t(tid)], seconds_now() - t0);
    }
  });
  if (sink[0] == 12345.0f) std::abort();  // keeps the results observable
  const double flops = double(iters) * p.chains * p.lanes * 2;
  p.window_ms = 0;
  for (double s : best_s) {
    p.per_thread.push_back(flops / s / 1e9);
    p.gflops += p.per_thread.back();
    p.window_ms = std::max(p.window_ms, s * 1e3);
  }
  return p;
}

// FLOPs of one training step per image from the forward multiply-adds: forward, backward-data and
// backward-weights each cost about one forward (2 FLOPs per multiply-add).
inline double training_flops_per_image(int64_t forward_macs) { return 3.0 * 2.0 * double(forward_macs); }

}  // namespace bench
}  // namespace spnas
