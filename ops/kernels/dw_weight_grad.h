// The depthwise weight gradient, dw[kh, kw, c] = sum over outputs of x[oh S - pt + kh, ow S - pl + kw, c] * dy[oh, ow, c],
// summed by each thread over its share of the N*OH output rows into a partial [K, K, C] buffer, then
// reduced. Four kernels (dw_variant.h chooses among them, ops/README.md has the table):
//   dw_wgrad_tile (+ dw_wgrad_generic): tiles of outputs; the partial sums are loaded and stored per
//     tile and kernel row.
//   dw_wgrad_band: one channel vector's K x K sums in registers across a band of output rows.
//   dw_wgrad_band_2blocks (AVX-512): the band with two channel vectors per pass, on narrow rows.
//   dw_wgrad_image: 3x3 on small maps, image by image, the taps of one vector in registers per row.
// Part of the SIMD kernel set: see simd_vector.h for the rules every kernel header follows.
#pragma once
#include "ops/kernels/dw_correlation.h"  // prefetch_pixels, with_tile_border

namespace spnas {
namespace {

// ---- dw_wgrad_tile and dw_wgrad_generic ----
// part[kh, kw, c] += sum_ow x[ih0 + kh, ow S - pl + kw, c] * dy[oh, ow, c] for one row.
// A tile of Tn outputs loads its dy vectors once, then each input column once; two accumulator sets
// (even / odd output) double the independent FMA chains.
template <int Kc, int Sc, int Tn, bool Chk, bool Mk>
inline void wgrad_tile_acc(R (&acc)[2][Kc], const float* xr, const float* dyr, int64_t ow, int64_t pl, int64_t W,
                     int64_t C, M m) {
  const int64_t iw0 = ow * Sc - pl;
  R dv[Tn];
  static_for<Tn>([&](auto t) { dv[t] = ld<Mk>(dyr + (ow + t) * C, m); });
  static_for<(Tn - 1) * Sc + Kc>([&](auto j) {
    if constexpr (Chk) {
      if (iw0 + j < 0 || iw0 + j >= W) return;
    }
    R xv = ld<Mk>(xr + (iw0 + j) * C, m);
    static_for<Tn>([&](auto t) {
      constexpr int kw = decltype(j)::value - decltype(t)::value * Sc;
      if constexpr (kw >= 0 && kw < Kc) acc[t & 1][kw] = V::fma(xv, dv[t], acc[t & 1][kw]);
    });
  });
}

// One tile, all channel blocks, all kernel rows: part[kh, kw, c] += the tile's contributions.
template <int Kc, int Sc, int Tn, bool Chk, bool Mk>
inline void wgrad_tile_block(const DwConvDesc& d, const float* xim, const float* dyr, float* part, int64_t ih0,
                           int kh_lo, int kh_hi, int64_t ow, M m) {
  const int64_t C = d.C, W = d.W;
  for (int kh = kh_lo; kh < kh_hi; ++kh) {
    const float* xr = xim + (ih0 + kh) * W * C;
    float* pr = part + int64_t(kh) * Kc * C;
    R acc[2][Kc];
    static_for<Kc>([&](auto kw) {
      acc[0][kw] = ld<Mk>(pr + kw * C, m);
      acc[1][kw] = V::zero();
    });
    wgrad_tile_acc<Kc, Sc, Tn, Chk, Mk>(acc, xr, dyr, ow, d.pad_l, W, C, m);
    static_for<Kc>([&](auto kw) { st<Mk>(pr + kw * C, V::add(acc[0][kw], acc[1][kw]), m); });
  }
}

// Rows the next dy row will need first: the next dy row itself and the Sc input rows it adds (either
// nullptr when it does not exist). Prefetched per tile and channel block, as in the forward.
struct WgradNext {
  const float* x;
  const float* dy;
};

template <int Kc, int Sc, int Tn, bool Chk>
inline void wgrad_tile_all_c(const DwConvDesc& d, const float* xim, const float* dyr, float* part, int64_t ih0,
                           int kh_lo, int kh_hi, int64_t ow, WgradNext next) {
  const int64_t cfull = d.C - d.C % L;
  const int64_t iw0 = ow * Sc - d.pad_l;
  for (int64_t c0 = 0; c0 < cfull; c0 += L) {
    wgrad_tile_block<Kc, Sc, Tn, Chk, false>(d, xim + c0, dyr + c0, part + c0, ih0, kh_lo, kh_hi, ow, V::mask(L));
    if (c0 % 16 == 0) {  // one prefetch per 64-byte line
      prefetch_pixels(next.x, Sc, d.W, d.C, iw0, Tn * Sc, c0);
      prefetch_pixels(next.dy, 1, d.OW, d.C, ow, Tn, c0);
    }
  }
  if (cfull < d.C)
    wgrad_tile_block<Kc, Sc, Tn, Chk, true>(d, xim + cfull, dyr + cfull, part + cfull, ih0, kh_lo, kh_hi, ow,
                                          V::mask(int(d.C - cfull)));
}

template <int Kc, int Sc, int Tn>
inline void wgrad_tile_tail(int n, const DwConvDesc& d, const float* xim, const float* dyr, float* part, int64_t ih0,
                     int kh_lo, int kh_hi, int64_t ow, WgradNext next) {
  if constexpr (Tn > 0) {
    if (n == Tn) wgrad_tile_all_c<Kc, Sc, Tn, true>(d, xim, dyr, part, ih0, kh_lo, kh_hi, ow, next);
    else wgrad_tile_tail<Kc, Sc, Tn - 1>(n, d, xim, dyr, part, ih0, kh_lo, kh_hi, ow, next);
  }
}

template <bool Mk>
void wgrad_row_generic(const DwConvDesc& d, const float* xim, const float* dyr, float* part, int64_t ih0, int kh_lo,
                     int kh_hi, M m) {
  const int64_t C = d.C, W = d.W;
  for (int kh = kh_lo; kh < kh_hi; ++kh) {
    const float* xr = xim + (ih0 + kh) * W * C;
    float* pr = part + int64_t(kh) * d.K * C;
    for (int64_t ow = 0; ow < d.OW; ++ow) {
      R dv = ld<Mk>(dyr + ow * C, m);
      for (int kw = 0; kw < d.K; ++kw) {
        int64_t iw = ow * d.S - d.pad_l + kw;
        if (iw < 0 || iw >= W) continue;
        st<Mk>(pr + kw * C, V::fma(ld<Mk>(xr + iw * C, m), dv, ld<Mk>(pr + kw * C, m)), m);
      }
    }
  }
}

// Rows [b, e) of N*OH in tiles of the ISA's wgrad_tile_px outputs; Kc = 0: dw_wgrad_generic.
template <int Kc, int Sc>
void wgrad_tile_rows(const DwConvDesc& d, const DwChoice& choice, const float* x, const float* dy, float* part,
                     int64_t b, int64_t e) {
  constexpr int T = V::regs.wgrad_tile_px;
  for (int64_t r = b; r < e; ++r) {
    const int64_t n = r / d.OH, oh = r % d.OH;
    const int S = Sc ? Sc : d.S;
    const int64_t ih0 = oh * S - d.pad_t;
    const int kh_lo = int(max64(0, -ih0));
    const int kh_hi = int(min64(d.K, d.H - ih0));
    const float* xim = x + n * d.H * d.W * d.C;
    const float* dyr = dy + (n * d.OH + oh) * d.OW * d.C;
    if constexpr (Kc > 0) {
      const int64_t ow_a = clamp64(ceil_div(d.pad_l, S), 0, d.OW);
      const int64_t ow_b = clamp64(floor_div(d.W - Kc + d.pad_l, S) + 1, ow_a, d.OW);
      const int64_t g_next = n * d.H + ih0 + d.K;
      const bool pf = choice.prefetch_rows;
      WgradNext next{pf && g_next >= 0 && g_next + Sc <= d.N * d.H ? x + g_next * d.W * d.C : nullptr,
                   pf && r + 1 < d.N * d.OH ? dyr + d.OW * d.C : nullptr};
      int64_t ow = 0;
      for (; ow + T <= d.OW; ow += T) {
        if (ow >= ow_a && ow + T <= ow_b) wgrad_tile_all_c<Kc, Sc, T, false>(d, xim, dyr, part, ih0, kh_lo, kh_hi, ow, next);
        else wgrad_tile_all_c<Kc, Sc, T, true>(d, xim, dyr, part, ih0, kh_lo, kh_hi, ow, next);
      }
      if (ow < d.OW) wgrad_tile_tail<Kc, Sc, T - 1>(int(d.OW - ow), d, xim, dyr, part, ih0, kh_lo, kh_hi, ow, next);
    } else {
      const int64_t cfull = d.C - d.C % L;
      for (int64_t c0 = 0; c0 < cfull; c0 += L)
        wgrad_row_generic<false>(d, xim + c0, dyr + c0, part + c0, ih0, kh_lo, kh_hi, V::mask(L));
      if (cfull < d.C)
        wgrad_row_generic<true>(d, xim + cfull, dyr + cfull, part + cfull, ih0, kh_lo, kh_hi, V::mask(int(d.C - cfull)));
    }
  }
}

// ---- dw_wgrad_band ----
// K = 3 and 5, the K x K taps of one channel block in registers across a band of output rows: the partial sums move once per band instead of once per tile and
// kernel row, and a tile's dy vectors feed all K kernel rows. The band (its input and dy rows) is
// sized to stay in L2 while the channel blocks take turns over it, and each row prefetches the next
// block's lines of its rows; on maps at most 8 wide a band is all of a thread's rows
// (DwChoice::band_whole_range).
// Full tiles of full channel blocks skip their outside columns at compile time (band_tile_rows); the
// last, partial tile of a row, and the border tiles of the masked channel-tail block, load outside
// columns and rows as zeros through the load mask (band_tile<Border>).
constexpr int64_t kBandBytes = int64_t(256) << 10;

template <int K>
struct BandRow {
  const float* x[K];  // input rows ih0 + kh (any valid row where outside the image)
  M m[K];             // the channel mask, or none where the row is outside the image
  bool valid[K];      // row inside the image
  bool inside;        // all K rows inside
};

template <int K, int Sc, int Tn, bool Border, bool Mk>
__attribute__((always_inline)) inline void band_tile(R (&acc)[K][K], const BandRow<K>& row,
                                                     const float* dyr, int64_t ow, int64_t n_out, int64_t pl,
                                                     int64_t W, int64_t C, M m) {
  const int64_t iw0 = ow * Sc - pl;
  const M none = V::mask(0);
  R dv[Tn];
  static_for<Tn>([&](auto t) SPNAS_INLINE {
    if constexpr (Border) dv[t] = V::loadm(dyr + (t < n_out ? ow + t : 0) * C, t < n_out ? m : none);
    else dv[t] = ld<Mk>(dyr + (ow + t) * C, m);
  });
  static_for<K>([&](auto kh) SPNAS_INLINE {
    constexpr int h = decltype(kh)::value;
    static_for<(Tn - 1) * Sc + K>([&](auto j) SPNAS_INLINE {
      constexpr int jj = decltype(j)::value;
      R xv;
      if constexpr (Border) {
        const bool in = uint64_t(iw0 + jj) < uint64_t(W);
        xv = V::loadm(row.x[h] + (in ? iw0 + jj : 0) * C, in ? row.m[h] : none);
      } else {
        xv = ld<Mk>(row.x[h] + (iw0 + jj) * C, m);
      }
      asm("" : "+v"(xv));  // one load per column (see corr_tile)
      static_for<Tn>([&](auto t) SPNAS_INLINE {
        constexpr int tt = decltype(t)::value, kw = jj - tt * Sc;
        if constexpr (kw >= 0 && kw < K) acc[h][kw] = V::fma(xv, dv[t], acc[h][kw]);
      });
    });
  });
}

// RG consecutive output rows of one image (RG = 1: one row), one full tile of Tn outputs at column ow
// in each. Input columns j < LS and j >= RC fall outside the image and are skipped at compile time
// (with_tile_border); input rows outside it (valid[i] false) by a test per row when RowChk. With RG > 1
// the K + (RG - 1) Sc input rows are loaded once for all RG rows and the per-row loop work is shared:
// AVX-512, K = 3, rows exactly one tile wide (9 accumulators + RG x Tn = 16 dy + 1 input).
template <int K, int Sc, int Tn, int RG, int LS, int RC, bool RowChk, bool Mk>
__attribute__((always_inline)) inline void band_tile_rows(R (&acc)[K][K], const float* const* xr, const bool* valid,
                                                          const float* dyr, int64_t dy_row, int64_t ow, int64_t pl,
                                                          int64_t C, M m) {
  const int64_t iw0 = ow * Sc - pl;
  R dv[RG][Tn];
  static_for<RG>([&](auto g) SPNAS_INLINE {
    static_for<Tn>([&](auto t) SPNAS_INLINE { dv[g][t] = ld<Mk>(dyr + g * dy_row + (ow + t) * C, m); });
  });
  static_for<K + (RG - 1) * Sc>([&](auto ir) SPNAS_INLINE {
    constexpr int i = decltype(ir)::value;
    if constexpr (RowChk) {
      if (!valid[i]) return;
    }
    static_for<(Tn - 1) * Sc + K>([&](auto j) SPNAS_INLINE {
      constexpr int jj = decltype(j)::value;
      if constexpr (jj >= LS && jj < RC) {
        R xv = ld<Mk>(xr[i] + (iw0 + jj) * C, m);
        asm("" : "+v"(xv));
        static_for<RG>([&](auto g) SPNAS_INLINE {
          constexpr int kh = i - decltype(g)::value * Sc;
          if constexpr (kh >= 0 && kh < K) {
            static_for<Tn>([&](auto t) SPNAS_INLINE {
              constexpr int kw = jj - decltype(t)::value * Sc;
              if constexpr (kw >= 0 && kw < K) acc[kh][kw] = V::fma(xv, dv[g][t], acc[kh][kw]);
            });
          }
        });
      }
    });
  });
}

// band_tile_rows with its border at compile time; false if the border is not one of the compiled cases.
template <int K, int Sc, int Tn, int RG, bool RowChk, bool Mk>
__attribute__((always_inline)) inline bool band_tile_rows_border(R (&acc)[K][K], const float* const* xr,
                                                                 const bool* valid, const float* dyr, int64_t dy_row,
                                                                 int64_t ow, int64_t pl, int64_t W, int64_t C, M m) {
  return with_tile_border<(Tn - 1) * Sc + K, K / 2>(ow * Sc - pl, W, [&](auto ls, auto rc) SPNAS_INLINE {
    band_tile_rows<K, Sc, Tn, RG, decltype(ls)::value, decltype(rc)::value, RowChk, Mk>(acc, xr, valid, dyr, dy_row,
                                                                                      ow, pl, C, m);
  });
}

// Output rows [r0, r1) of N*OH (a band may span images), channels [c0, c0 + L) (masked by m):
// part[kh, kw, c] += the band's sums. prefetch: DwChoice::prefetch_rows; row_groups: rows exactly one
// tile wide go RG at a time (DwChoice::band_row_group > 1; AVX-512 3x3 only).
template <int K, int Sc, int Tn, bool Mk>
__attribute__((flatten)) void band_pass(const DwConvDesc& d, const float* x, const float* dy, float* part, int64_t r0,
                                        int64_t r1, int64_t c0, M m, bool prefetch, bool row_groups) {
  const int64_t C = d.C, W = d.W, OW = d.OW;
  R acc[K][K];
  static_for<K>([&](auto kh) SPNAS_INLINE {
    static_for<K>([&](auto kw) SPNAS_INLINE { acc[kh][kw] = ld<Mk>(part + (kh * K + kw) * C + c0, m); });
  });
  // Tiles [ow_a, ow_b) have every column inside the image.
  const int64_t ow_a = clamp64(ceil_div(d.pad_l, Sc), 0, OW);
  const int64_t ow_b = clamp64(floor_div(W - K + d.pad_l, Sc) + 1, ow_a, OW);
  for (int64_t r = r0, n = r0 / d.OH, oh = r0 % d.OH; r < r1; ++r, oh = oh + 1 == d.OH ? 0 : oh + 1, n += oh == 0) {
    const float* xim = x + n * d.H * W * C + c0;
    const int64_t ih0 = oh * Sc - d.pad_t;
    if constexpr (K == 3 && V::isa == Isa::avx512 && !Mk) {
      // Rows exactly one tile wide (8x8 maps, 4x4 and 8x8 at stride 2): RG rows at once.
      constexpr int RG = Tn == 4 ? 4 : 2, NR = K + (RG - 1) * Sc;
      if (row_groups && r + RG <= r1 && oh + RG <= d.OH) {
        const float* xr[NR];
        bool valid[NR];
        for (int i = 0; i < NR; ++i) {
          valid[i] = uint64_t(ih0 + i) < uint64_t(d.H);
          xr[i] = xim + (valid[i] ? ih0 + i : 0) * W * C;
        }
        if (band_tile_rows_border<K, Sc, Tn, RG, true, Mk>(acc, xr, valid, dy + r * OW * C + c0, OW * C, 0, d.pad_l,
                                                            W, C, m)) {
          r += RG - 1, oh += RG - 1;  // the loop steps the last row (oh + RG <= OH: same image)
          continue;
        }
      }
    }
    BandRow<K> row;
    row.inside = ih0 >= 0 && ih0 + K <= d.H;
    for (int kh = 0; kh < K; ++kh) {
      const bool in = uint64_t(ih0 + kh) < uint64_t(d.H);
      row.x[kh] = xim + (in ? ih0 + kh : 0) * W * C;
      row.m[kh] = in ? m : V::mask(0);
      row.valid[kh] = in;
    }
    const float* dyr = dy + r * OW * C + c0;
    if (prefetch && c0 + L < C) {
      // The next channel block's lines of what this row reads (its dy row, and the input rows it adds
      // to the band) into L2 while this block computes: a block's pass touches one line per pixel,
      // a stride the hardware prefetchers do not follow.
      const int64_t nx = c0 + L;
      for (int64_t ow = 0; ow < OW; ++ow) _mm_prefetch(reinterpret_cast<const char*>(dyr + L + ow * C), _MM_HINT_T1);
      for (int64_t ih = (r == r0 || oh == 0 ? ih0 : ih0 + K - Sc); ih < ih0 + K; ++ih)
        if (uint64_t(ih) < uint64_t(d.H))
          for (int64_t iw = 0; iw < W; ++iw)
            _mm_prefetch(reinterpret_cast<const char*>(x + ((n * d.H + ih) * W + iw) * C + nx), _MM_HINT_T1);
    }
    for (int64_t ow = 0; ow < OW; ow += Tn) {
      if (ow + Tn <= OW) {
        if (row.inside && ow >= ow_a && ow + Tn <= ow_b) {
          band_tile<K, Sc, Tn, false, Mk>(acc, row, dyr, ow, Tn, d.pad_l, W, C, m);
          continue;
        }
        // The compile-time borders for full channel blocks only: the masked tail block (one per pass
        // where C % L != 0) takes the checked tile, which halves the largest part of the file's compile.
        if constexpr (!Mk) {
          if (row.inside) {
            if (band_tile_rows_border<K, Sc, Tn, 1, false, Mk>(acc, row.x, row.valid, dyr, 0, ow, d.pad_l, W, C, m))
              continue;
          } else if (band_tile_rows_border<K, Sc, Tn, 1, true, Mk>(acc, row.x, row.valid, dyr, 0, ow, d.pad_l, W, C,
                                                                    m)) {
            continue;
          }
        }
      }
      band_tile<K, Sc, Tn, true, Mk>(acc, row, dyr, ow, min64(Tn, OW - ow), d.pad_l, W, C, m);
    }
  }
  static_for<K>([&](auto kh) SPNAS_INLINE {
    static_for<K>([&](auto kw) SPNAS_INLINE { st<Mk>(part + (kh * K + kw) * C + c0, acc[kh][kw], m); });
  });
}

#if defined(SPNAS_SIMD_AVX512)
// ---- dw_wgrad_band_2blocks (AVX-512) ----
// The 3x3 weight gradient on narrow rows, two channel blocks per pass: each pixel gives two adjacent
// lines per visit instead of one, and half as many passes walk the band. Both blocks' 18 accumulators
// stay in registers, so tiles are 4 wide (band_tile_rows, one row, once per block), with their borders
// at compile time: Wc-wide inputs at stride Sc under "same" padding (pad_l 1 at stride 1, 0 at stride 2
// on even widths). 8x8 maps (outputs 0-3 read input columns -1..4, outputs 4-7 columns 3..7), 4x4
// maps, and 8x8 inputs at stride 2 (columns 0..8, 8 outside).
// Output rows [r0, r1) of N*OH (d.W = Wc, d.OW = Wc / Sc, K = 3), channels [c0, c0 + 2L).
template <int Sc>
constexpr int band_2blocks_pad_l = Sc == 1 ? 1 : 0;  // the "same" pad_l of 3x3 on the even widths below

template <int Sc, int Wc>
__attribute__((flatten)) void band_2blocks_pass(const DwConvDesc& d, const float* x, const float* dy, float* part, int64_t r0,
                                         int64_t r1, int64_t c0) {
  constexpr int OWc = Wc / Sc, PL = band_2blocks_pad_l<Sc>, NCOL = 3 * Sc + 3;
  static_assert(OWc % 4 == 0, "rows of whole 4-wide tiles");
  const int64_t C = d.C;
  const M none = V::mask(0);  // unused: full blocks
  R acc[2][3][3];
  static_for<2>([&](auto b) SPNAS_INLINE {
    static_for<9>([&](auto k) SPNAS_INLINE {
      acc[b][k / 3][k % 3] = V::load(part + decltype(k)::value * C + c0 + decltype(b)::value * L);
    });
  });
  for (int64_t r = r0, n = r0 / d.OH, oh = r0 % d.OH; r < r1; ++r, oh = oh + 1 == d.OH ? 0 : oh + 1, n += oh == 0) {
    const float* xim = x + n * d.H * Wc * C + c0;
    const int64_t ih0 = oh * Sc - d.pad_t;
    const float* xr[2][3];
    bool valid[3];
    for (int i = 0; i < 3; ++i) {
      valid[i] = uint64_t(ih0 + i) < uint64_t(d.H);
      xr[0][i] = xim + (valid[i] ? ih0 + i : 0) * Wc * C;
      xr[1][i] = xr[0][i] + L;
    }
    const float* dyr = dy + r * OWc * C + c0;
    static_for<2>([&](auto b) SPNAS_INLINE {
      static_for<OWc / 4>([&](auto q) SPNAS_INLINE {
        constexpr int ow = 4 * decltype(q)::value, iw0 = ow * Sc - PL;
        constexpr int LS = iw0 < 0 ? -iw0 : 0, RC = Wc - iw0 < NCOL ? Wc - iw0 : NCOL;
        band_tile_rows<3, Sc, 4, 1, LS, RC, true, false>(acc[b], xr[b], valid, dyr + b * L, 0, ow, PL, C, none);
      });
    });
  }
  static_for<2>([&](auto b) SPNAS_INLINE {
    static_for<9>([&](auto k) SPNAS_INLINE {
      V::store(part + decltype(k)::value * C + c0 + decltype(b)::value * L, acc[b][k / 3][k % 3]);
    });
  });
}

// Pairs of full channel blocks from channel 0 through band_2blocks_pass (the shapes dw_variant gives
// dw_wgrad_band_2blocks: 8-wide inputs, or 4-wide at stride 1); returns the first channel left for
// the one-block passes.
template <int Sc>
int64_t band_2blocks_pairs(const DwConvDesc& d, const float* x, const float* dy, float* part, int64_t r0, int64_t r1) {
  int64_t c = 0;
  for (; c + 2 * L <= d.C; c += 2 * L) {
    if constexpr (Sc == 2) band_2blocks_pass<2, 8>(d, x, dy, part, r0, r1, c);
    else if (d.W == 8) band_2blocks_pass<1, 8>(d, x, dy, part, r0, r1, c);
    else band_2blocks_pass<1, 4>(d, x, dy, part, r0, r1, c);
  }
  return c;
}
#endif

// ---- dw_wgrad_image (3x3) ----
// Image by image. Made for AVX2, where on small maps the band kernel's 8-channel passes read half
// lines (each pixel's line is visited twice, a whole band apart) and two blocks' 18 accumulators do
// not fit in the 16 registers. So an image takes its channels in groups of a whole 64-byte line (two
// blocks on AVX2, one on AVX-512), the blocks of a group back to back: the first pass brings the
// group's lines (x and dy, 8 KB on 8x8) into L1 and the second finds them there. A pass walks each
// output row once with all 9 taps of one block in registers: per input column the three input rows,
// per kernel column one dy vector for all three (9 accumulators + 3 inputs + 1 dy; 9 FMAs per 6
// loads at stride 1). Except on 4x4 maps the next image's x and dy are requested into L2 in address
// order, a share during each group (DwChoice::image_prefetch): the passes themselves visit an image's
// memory one line in 15-36 (C = 240-576), an order DRAM serves poorly. The alternatives tried
// (kernel rows per pass, group orders, prefetch targets) are in bench/RESULTS.md.
constexpr int64_t kImageGroup = 16;  // channels per group: one 64-byte line per pixel

// A load the compiler may not merge with an earlier one from the same address: the dy vector of
// output ow is reloaded for each kernel column instead of being held in a register across columns.
inline R load_again(const char* p) {
  R v;
  asm volatile("vmovups %1, %0" : "=v"(v) : "m"(*reinterpret_cast<const R*>(p)));
  return v;
}

// One output row of one block: acc[h][kw] += x[ih0 + h][j] * dy[ow] over the row's input columns j,
// ow = (j + pad_l - kw) / Sc where that divides and is inside (pad_l = 1 at stride 1, 0 at stride 2),
// for the input rows inside the image (In_h). Addresses are a walking pointer plus the column stride
// cs (or ncs = -cs) or the row stride rs, so no per-column pointers pile up in the GPRs: xp walks the
// input columns, dp the dy columns (dp at column j / Sc when at input column j).
template <int Sc, int Wc, bool In0, bool In1, bool In2>
__attribute__((always_inline)) inline void image_row(R (&acc)[3][3], const char* xp, int64_t rs, const char* dp,
                                                    int64_t cs, int64_t ncs) {
  constexpr bool In[3] = {In0, In1, In2};
  constexpr int PL = Sc == 1 ? 1 : 0, OWc = Wc / Sc;
  static_for<Wc>([&](auto j) SPNAS_INLINE {
    constexpr int jj = decltype(j)::value;
    R xv[3];
    static_for<3>([&](auto h) SPNAS_INLINE {
      constexpr int hh = decltype(h)::value;
      if constexpr (In[hh]) {
        xv[hh] = V::load(reinterpret_cast<const float*>(xp + hh * rs));
        asm("" : "+v"(xv[hh]));  // one load per column (see corr_tile)
      }
    });
    static_for<3>([&](auto kw) SPNAS_INLINE {
      constexpr int k = decltype(kw)::value, t = jj + PL - k, ow = t / Sc, off = ow - jj / Sc;
      if constexpr (t >= 0 && t % Sc == 0 && ow < OWc) {
        static_assert(off >= -1 && off <= 1, "dy within a column of the walking pointer");
        const R dv = off == 1 ? load_again(dp + cs) : off == 0 ? load_again(dp) : load_again(dp + ncs);
        static_for<3>([&](auto h) SPNAS_INLINE {
          constexpr int hh = decltype(h)::value;
          if constexpr (In[hh]) acc[hh][k] = V::fma(xv[hh], dv, acc[hh][k]);
        });
      }
    });
    xp += cs;
    if constexpr ((jj + 1) % Sc == 0) dp += cs;
    asm("" : "+r"(xp), "+r"(dp));  // keep them walking
  });
}

// Output rows [oh0, oh1) of one image, channels [0, kImageGroup) of xim / dyim / part (offset to the
// group), one block after the other.
template <int Sc, int Wc>
__attribute__((flatten)) void image_group_pass(const DwConvDesc& d, const float* xim, const float* dyim, float* part,
                                               int64_t oh0, int64_t oh1) {
  const int64_t C = d.C, cs = C * int64_t(sizeof(float)), rs = Wc * cs, drs = (Wc / Sc) * cs;
  for (int b = 0; b < kImageGroup / L; ++b) {
    const char* xb = reinterpret_cast<const char*>(xim + b * L);
    const char* db = reinterpret_cast<const char*>(dyim + b * L);
    R acc[3][3];
    static_for<9>([&](auto i) SPNAS_INLINE {
      constexpr int ii = decltype(i)::value;
      acc[ii / 3][ii % 3] = V::load(part + ii * C + b * L);
    });
    for (int64_t oh = oh0; oh < oh1; ++oh) {
      const int64_t ih0 = oh * Sc - d.pad_t;
      const int in = int(uint64_t(ih0) < uint64_t(d.H)) | int(uint64_t(ih0 + 1) < uint64_t(d.H)) << 1 |
                     int(uint64_t(ih0 + 2) < uint64_t(d.H)) << 2;
      const char* xr = xb + ih0 * rs;
      const char* dr = db + oh * drs;
      // Under "same" padding (pad_t 1 at stride 1 and at stride 2 on odd heights, else 0) the middle
      // row is always inside: 7, or 6 at the top, 3 at the bottom, 2 where H = 1.
      switch (in) {
        case 7: image_row<Sc, Wc, true, true, true>(acc, xr, rs, dr, cs, -cs); break;
        case 6: image_row<Sc, Wc, false, true, true>(acc, xr, rs, dr, cs, -cs); break;
        case 3: image_row<Sc, Wc, true, true, false>(acc, xr, rs, dr, cs, -cs); break;
        default: image_row<Sc, Wc, false, true, false>(acc, xr, rs, dr, cs, -cs); break;
      }
    }
    static_for<9>([&](auto i) SPNAS_INLINE {
      constexpr int ii = decltype(i)::value;
      V::store(part + ii * C + b * L, acc[ii / 3][ii % 3]);
    });
  }
}

// Rows [r0, r1) of N*OH, the groups of full blocks through image_group_pass image by image (the shapes
// dw_variant gives dw_wgrad_image); returns the first channel left for the one-block passes.
inline int64_t image_groups(const DwConvDesc& d, bool prefetch, const float* x, const float* dy, float* part,
                            int64_t r0, int64_t r1) {
  const int64_t C = d.C, cend = C / kImageGroup * kImageGroup, ngroups = cend / kImageGroup;
  const int64_t img = d.H * d.W * C, dimg = d.OH * d.OW * C;  // floats per image of x, of dy
  const int64_t lines = (img * int64_t(sizeof(float)) + 63) / 64, share = ceil_div(lines, ngroups);
  const int64_t dlines = (dimg * int64_t(sizeof(float)) + 63) / 64, dshare = ceil_div(dlines, ngroups);
  for (int64_t r = r0; r < r1;) {
    const int64_t n = r / d.OH, oh0 = r % d.OH, oh1 = min64(d.OH, oh0 + (r1 - r));
    const float* xim = x + n * img;
    const float* dyim = dy + n * dimg;
    const bool next = prefetch && r + (oh1 - oh0) < r1;  // the thread's next image
    for (int64_t c0 = 0, q = 0; c0 < cend; c0 += kImageGroup, ++q) {
      if (next) {
        const char* nx = reinterpret_cast<const char*>(xim + img);
        const char* nd = reinterpret_cast<const char*>(dyim + dimg);
        for (int64_t l = q * share; l < min64(lines, (q + 1) * share); ++l) _mm_prefetch(nx + l * 64, _MM_HINT_T1);
        for (int64_t l = q * dshare; l < min64(dlines, (q + 1) * dshare); ++l) _mm_prefetch(nd + l * 64, _MM_HINT_T1);
      }
      const float* xp = xim + c0;
      const float* dp = dyim + c0;
      if (d.S == 1) d.W == 8 ? image_group_pass<1, 8>(d, xp, dp, part + c0, oh0, oh1)
                             : image_group_pass<1, 4>(d, xp, dp, part + c0, oh0, oh1);
      else d.W == 16 ? image_group_pass<2, 16>(d, xp, dp, part + c0, oh0, oh1)
                     : image_group_pass<2, 8>(d, xp, dp, part + c0, oh0, oh1);
    }
    r += oh1 - oh0;
  }
  return cend;
}

// Rows [b, e) of N*OH in bands, every channel block over each band (dw_wgrad_band), after the channel
// groups of dw_wgrad_image or dw_wgrad_band_2blocks where the choice is one of those.
template <int K, int Sc>
void band_rows(const DwConvDesc& d, const DwChoice& choice, const float* x, const float* dy, float* part, int64_t b,
               int64_t e) {
  const int64_t C = d.C;
  const int64_t row_bytes = int64_t(sizeof(float)) * (Sc * d.W + d.OW) * C;  // per output row: new x rows + dy
  const int64_t band = choice.band_whole_range ? e - b : max64(1, kBandBytes / max64(1, row_bytes));
  const bool row_groups = choice.band_row_group > 1;
  for (int64_t r0 = b; r0 < e;) {
    const int64_t r1 = min64(e, r0 + band);
    int64_t cstart = 0;
    if constexpr (K == 3) {
      if (choice.variant == DwVariant::wgrad_image) cstart = image_groups(d, choice.image_prefetch, x, dy, part, r0, r1);
#if defined(SPNAS_SIMD_AVX512)
      if (choice.variant == DwVariant::wgrad_band_2blocks) cstart = band_2blocks_pairs<Sc>(d, x, dy, part, r0, r1);
#endif
    }
    for (int64_t c0 = cstart; c0 < C; c0 += L) {
      const M m = V::mask(int(min64(L, C - c0)));
      const bool tail = c0 + L > C;  // masked loads only where needed (AVX2's are slow)
      const bool pf = choice.prefetch_rows;
      if (choice.band_tile_px == 4)
        tail ? band_pass<K, Sc, 4, true>(d, x, dy, part, r0, r1, c0, m, pf, row_groups)
             : band_pass<K, Sc, 4, false>(d, x, dy, part, r0, r1, c0, m, pf, row_groups);
      else
        tail ? band_pass<K, Sc, V::regs.wgrad_tile_px, true>(d, x, dy, part, r0, r1, c0, m, pf, row_groups)
             : band_pass<K, Sc, V::regs.wgrad_tile_px, false>(d, x, dy, part, r0, r1, c0, m, pf, row_groups);
    }
    r0 = r1;
  }
}

// The kernel dw_variant chose for rows [b, e) of N*OH, into the thread's partial sums.
template <int K, int Sc>
void wgrad_rows(const DwConvDesc& d, const DwChoice& choice, const float* x, const float* dy, float* part, int64_t b,
                int64_t e) {
  switch (choice.variant) {
    case DwVariant::wgrad_band:
    case DwVariant::wgrad_band_2blocks:
    case DwVariant::wgrad_image:
      // 5x5 bands only where the 25 accumulators fit in the registers (dw_variant: AVX-512)
      if constexpr (K == 3 || V::isa == Isa::avx512) return band_rows<K, Sc>(d, choice, x, dy, part, b, e);
      break;
    case DwVariant::wgrad_tile: return wgrad_tile_rows<K, Sc>(d, choice, x, dy, part, b, e);
    default: break;
  }
  wgrad_tile_rows<0, 0>(d, choice, x, dy, part, b, e);  // dw_wgrad_generic
}

void dwconv_backward_weights_simd(const DwConvDesc& d, const float* x, const float* dy, float* dw, bool accumulate) {
  const int64_t KKC = int64_t(d.K) * d.K * d.C;
  const int pool = num_threads();
  float* parts = g_scratch_part.get(size_t(pool) * KKC);
  const DwChoice choice = dw_variant(d, DwDirection::backward_weights, V::isa);
  int used = 1;
  parallel_run([&](int tid, int nt) {
    if (tid == 0) used = nt;
    float* part = parts + tid * KKC;
    std::memset(part, 0, sizeof(float) * KKC);
    int64_t b, e;
    split_range(d.N * d.OH, tid, nt, &b, &e);
    const int k = d.K, s = d.S;
    if (choice.variant == DwVariant::wgrad_generic) wgrad_tile_rows<0, 0>(d, choice, x, dy, part, b, e);
    else if (k == 3 && s == 1) wgrad_rows<3, 1>(d, choice, x, dy, part, b, e);
    else if (k == 3 && s == 2) wgrad_rows<3, 2>(d, choice, x, dy, part, b, e);
    else if (k == 5 && s == 1) wgrad_rows<5, 1>(d, choice, x, dy, part, b, e);
    else if (k == 5 && s == 2) wgrad_rows<5, 2>(d, choice, x, dy, part, b, e);
    else wgrad_tile_rows<0, 0>(d, choice, x, dy, part, b, e);
  });
  // Reduction of the per-thread partial sums, each thread a slice of the K*K*C entries; small ones
  // (the usual case: 25 * C floats) on the caller, which is cheaper than waking the pool again.
  auto reduce = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float s = accumulate ? dw[i] : 0.0f;
      for (int t = 0; t < used; ++t) s += parts[t * KKC + i];
      dw[i] = s;
    }
  };
  if (KKC * used < (int64_t(1) << 16)) {
    reduce(0, KKC);
    return;
  }
  parallel_run([&](int tid, int nt) {
    int64_t b, e;
    split_range(KKC, tid, nt, &b, &e);
    reduce(b, e);
  });
}

}  // namespace
}  // namespace spnas
