// Batch-norm apply + activation, and its backward. All memory-bound: one pass, rows split across
// threads, channels in vectors. Reductions use float vectors over chunks of rows, then double
// partials per thread (so long batches keep the reference's accuracy).
// Part of the SIMD kernel set: see simd_vector.h for the rules every kernel header follows.
#pragma once
#include "ops/kernels/simd_vector.h"

namespace spnas {
namespace {

// g = dy * act'(v), from the pre-activation v = x * scale + shift (recomputed with the forward's
// fma, so the mask is exactly the forward's and y is never read).
inline R act_grad(Act a, R dy, R v) {
  if (a == Act::ReLU) return V::keep_above(dy, v, V::zero());
  if (a == Act::ReLU6) return V::keep_inside(dy, v, V::zero(), V::set1(6.0f));
  return dy;
}

constexpr int64_t kChunkRows = 64;

// Per-thread double partials of two per-channel sums over rows: s1 += f1(row), s2 += f2(row), where
// `body(row_ptr_offset, c0, m, &a1, &a2)` adds one row's contribution to the vector accumulators.
template <class Body>
void reduce_rows(const BnDesc& d, double* out1, double* out2, Body body) {
  const int64_t C = d.C;
  const int pool = num_threads();
  // Layout per thread: [2C doubles][2C floats of vector sums].
  const int64_t per = 2 * C * 2 + 2 * C + 16;
  float* scratch = g_scratch_part.get(size_t(pool) * per);
  int used = 1;
  parallel_run([&](int tid, int nt) {
    if (tid == 0) used = nt;
    double* p1 = reinterpret_cast<double*>(scratch + tid * per);
    double* p2 = p1 + C;
    float* f = scratch + tid * per + 4 * C;
    for (int64_t c = 0; c < 2 * C; ++c) p1[c] = 0.0;
    int64_t b, e;
    split_range(d.M, tid, nt, &b, &e);
    const M full = V::mask(L), tail = V::mask(int(C % L));
    for (int64_t r0 = b; r0 < e; r0 += kChunkRows) {
      int64_t r1 = min64(e, r0 + kChunkRows);
      for (int64_t c0 = 0; c0 < C; c0 += L) {
        bool masked = c0 + L > C;
        // Four independent accumulator pairs: one chain would wait on the FMA latency every row.
        R a1 = V::zero(), a2 = V::zero(), b1 = V::zero(), b2 = V::zero();
        R c1 = V::zero(), c2 = V::zero(), e1 = V::zero(), e2 = V::zero();
        int64_t r = r0;
        if (!masked) {
          for (; r + 4 <= r1; r += 4) {
            body.template row<false>(r * C + c0, c0, full, a1, a2);
            body.template row<false>((r + 1) * C + c0, c0, full, b1, b2);
            body.template row<false>((r + 2) * C + c0, c0, full, c1, c2);
            body.template row<false>((r + 3) * C + c0, c0, full, e1, e2);
          }
          for (; r < r1; ++r) body.template row<false>(r * C + c0, c0, full, a1, a2);
        } else {
          for (; r + 4 <= r1; r += 4) {
            body.template row<true>(r * C + c0, c0, tail, a1, a2);
            body.template row<true>((r + 1) * C + c0, c0, tail, b1, b2);
            body.template row<true>((r + 2) * C + c0, c0, tail, c1, c2);
            body.template row<true>((r + 3) * C + c0, c0, tail, e1, e2);
          }
          for (; r < r1; ++r) body.template row<true>(r * C + c0, c0, tail, a1, a2);
        }
        a1 = V::add(V::add(a1, b1), V::add(c1, e1));
        a2 = V::add(V::add(a2, b2), V::add(c2, e2));
        alignas(64) float t1[L], t2[L];
        V::store(t1, a1);
        V::store(t2, a2);
        int64_t nv = min64(L, C - c0);
        for (int64_t l = 0; l < nv; ++l) {
          f[c0 + l] = t1[l];
          f[C + c0 + l] = t2[l];
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        p1[c] += f[c];
        p2[c] += f[C + c];
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double s1 = 0, s2 = 0;
    for (int t = 0; t < used; ++t) {
      const double* p1 = reinterpret_cast<const double*>(scratch + t * per);
      s1 += p1[c];
      s2 += p1[C + c];
    }
    out1[c] = s1;
    out2[c] = s2;
  }
}

struct StatsBody {
  const float* x;
  const float* shift;  // per-channel shift (the first row) against cancellation in E[x^2] - E[x]^2
  template <bool Mk>
  void row(int64_t i, int64_t c0, M m, R& s, R& ss) const {
    R v = V::sub(ld<Mk>(x + i, m), ld<Mk>(shift + c0, m));
    s = V::add(s, v);
    ss = V::fma(v, v, ss);
  }
};

void bn_stats_simd(const BnDesc& d, const float* x, float* mean, float* var) {
  const int64_t C = d.C;
  if (d.M == 0) {
    for (int64_t c = 0; c < C; ++c) mean[c] = var[c] = 0.0f;
    return;
  }
  // mean and var are outputs of size C: borrow them for the shift and the double sums' results.
  float* shift = g_scratch_w.get(size_t(C) * 5 + 2);
  std::memcpy(shift, x, sizeof(float) * C);
  double* s = reinterpret_cast<double*>(shift + C + (C & 1));
  double* ss = s + C;
  reduce_rows(d, s, ss, StatsBody{x, shift});
  for (int64_t c = 0; c < C; ++c) {
    double mu = s[c] / double(d.M);
    double v = ss[c] / double(d.M) - mu * mu;
    mean[c] = float(shift[c] + mu);
    var[c] = float(v > 0 ? v : 0.0);
  }
}

struct BnReduceBody {
  const float *x, *scale, *shift, *dy, *mean;
  Act act;
  template <bool Mk>
  void row(int64_t i, int64_t c0, M m, R& gb, R& gg) const {
    R xv = ld<Mk>(x + i, m);
    R g = act == Act::None ? ld<Mk>(dy + i, m)
                           : act_grad(act, ld<Mk>(dy + i, m), V::fma(xv, ld<Mk>(scale + c0, m), ld<Mk>(shift + c0, m)));
    gb = V::add(gb, g);
    gg = V::fma(g, V::sub(xv, ld<Mk>(mean + c0, m)), gg);
  }
};

void bn_act_backward_reduce_simd(const BnDesc& d, const float* x, const float* scale, const float* shift,
                                 const float* dy, const float* mean, const float* invstd, float* dgamma,
                                 float* dbeta) {
  const int64_t C = d.C;
  double* s = reinterpret_cast<double*>(g_scratch_w.get(size_t(C) * 4 + 2));
  double* ss = s + C;
  reduce_rows(d, s, ss, BnReduceBody{x, scale, shift, dy, mean, d.act});
  for (int64_t c = 0; c < C; ++c) {
    dbeta[c] = float(s[c]);
    dgamma[c] = float(ss[c] * invstd[c]);
  }
}

// Elementwise over rows: f.row<Mk>(i, c0, m) for every vector of every row in the thread's share.
template <class F>
void rows_parallel(int64_t Mrows, int64_t C, const F& f) {
  const int64_t grain = max64(1, (int64_t(1) << 14) / max64(C, 1));
  int64_t chunks = min64(num_threads(), (Mrows + grain - 1) / grain);
  auto work = [&](int64_t b, int64_t e) {
    const M full = V::mask(L), tail = V::mask(int(C % L));
    const int64_t cfull = C - C % L;
    for (int64_t r = b; r < e; ++r) {
      for (int64_t c0 = 0; c0 < cfull; c0 += L) f.template row<false>(r * C + c0, c0, full);
      if (cfull < C) f.template row<true>(r * C + cfull, cfull, tail);
    }
    _mm_sfence();  // a body's non-temporal stores are visible before this thread reports done
  };
  if (chunks <= 1) {
    work(0, Mrows);
    return;
  }
  parallel_run([&](int tid, int nt) {
    int64_t use = min64(chunks, nt);
    if (tid >= use) return;
    int64_t b, e;
    split_range(Mrows, tid, int(use), &b, &e);
    work(b, e);
  });
}

// Whether an elementwise pass over M x C writes its output with non-temporal stores: large enough
// (kBnStreamBytes) that it goes to DRAM anyway, and every full vector aligned. Saves the read of each
// output line before it is written (a quarter to a third of such a pass's traffic).
inline bool stream_rows(const float* out, int64_t Mrows, int64_t C) {
  return reinterpret_cast<uintptr_t>(out) % (L * sizeof(float)) == 0 && C % L == 0 &&
         int64_t(sizeof(float)) * Mrows * C >= kBnStreamBytes;
}

template <bool Mk>
inline void st_nt(float* p, R v, M m, bool nt) {
  if constexpr (!Mk) {
    if (nt) return V::stream(p, v);
  }
  st<Mk>(p, v, m);
}

struct BnForwardBody {
  const float *x, *scale, *shift;
  float* y;
  Act act;
  bool nt;
  template <bool Mk>
  void row(int64_t i, int64_t c0, M m) const {
    R v = V::fma(ld<Mk>(x + i, m), ld<Mk>(scale + c0, m), ld<Mk>(shift + c0, m));
    st_nt<Mk>(y + i, act_apply(act, v), m, nt);
  }
};

void bn_act_forward_simd(const BnDesc& d, const float* x, const float* scale, const float* shift, float* y) {
  rows_parallel(d.M, d.C, BnForwardBody{x, scale, shift, y, d.act, stream_rows(y, d.M, d.C)});
}

// dx = k1 * g - k0 - k2 * (x - mean), with k1 = gamma invstd, k0 = k1 dbeta / M, k2 = k1 invstd dgamma / M
// (training); dx = k1 * g otherwise.
struct BnBackwardBody {
  const float *x, *scale, *shift, *dy, *mean, *k0, *k1, *k2;
  float* dx;
  Act act;
  bool training, accumulate, nt;
  template <bool Mk>
  void row(int64_t i, int64_t c0, M m) const {
    const bool need_x = training || act != Act::None;
    R xv = need_x ? ld<Mk>(x + i, m) : V::zero();
    R g = act == Act::None ? ld<Mk>(dy + i, m)
                           : act_grad(act, ld<Mk>(dy + i, m), V::fma(xv, ld<Mk>(scale + c0, m), ld<Mk>(shift + c0, m)));
    R v = V::mul(ld<Mk>(k1 + c0, m), g);
    if (training) {
      v = V::sub(v, ld<Mk>(k0 + c0, m));
      R xc = V::sub(xv, ld<Mk>(mean + c0, m));
      v = V::sub(v, V::mul(ld<Mk>(k2 + c0, m), xc));
    }
    if (accumulate) v = V::add(v, ld<Mk>(dx + i, m));
    st_nt<Mk>(dx + i, v, m, nt);
  }
};

void bn_act_backward_data_simd(const BnDesc& d, const float* x, const float* scale, const float* shift,
                               const float* dy, const float* mean, const float* invstd, const float* gamma,
                               const float* dgamma, const float* dbeta, bool training, float* dx, bool accumulate) {
  const int64_t C = d.C;
  float* k = g_scratch_w.get(size_t(C) * 3);
  float *k0 = k, *k1 = k + C, *k2 = k + 2 * C;
  const float inv_m = d.M ? 1.0f / float(d.M) : 0.0f;
  for (int64_t c = 0; c < C; ++c) {
    k1[c] = gamma[c] * invstd[c];
    k0[c] = k1[c] * dbeta[c] * inv_m;
    k2[c] = k1[c] * invstd[c] * dgamma[c] * inv_m;
  }
  rows_parallel(d.M, C, BnBackwardBody{x, scale, shift, dy, mean, k0, k1, k2, dx, d.act, training, accumulate,
                                       !accumulate && stream_rows(dx, d.M, C)});
}

}  // namespace
}  // namespace spnas
