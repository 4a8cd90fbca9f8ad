// Depthwise forward, fused forward (+ batch norm + activation) and backward-data: all three are
// correlations, y[oh, ow] (=, +=, or act(. * scale + shift)) = sum_{kh, kw} x[oh S - pt + kh, ow S - pl + kw] * w[kh, kw].
// Forward is one correlation. Backward-data is S*S of them (one per output phase ih % S, iw % S),
// each a stride-1 correlation of dy with a flipped sub-kernel, writing every S-th pixel of dx: no
// scatter, no atomics, each thread owns its output rows.
//
// Which tile runs is dw_variant's choice (dw_variant.h): corr_tile8, corr_tile4x2, corr_channel_groups
// or corr_generic. Borders: a row's valid kh range is a loop bound; the tiles whose columns fall
// outside the image resolve that at compile time (with_tile_border) or test each column; the interior
// runs a tile of T output pixels with the kernel width unrolled.
// Part of the SIMD kernel set: see simd_vector.h for the rules every kernel header follows.
#pragma once
#include "ops/kernels/simd_vector.h"

namespace spnas {
namespace {

enum class Epi { Store, Add, BnAct };

struct Corr {
  const float* x;  // [N, IH, IW, C]
  const float* w;  // [KH, KW, C]
  float* y;        // element (n, oh, ow, c) at y_off + n*y_img + oh*y_row + ow*y_pix + c
  int64_t N, IH, IW, C, OH, OW;
  int KH, KW, S;
  int64_t pt, pl;
  int64_t y_off, y_img, y_row, y_pix;
  Epi mode;
  const float* scale;  // Epi::BnAct
  const float* shift;
  Act act;
  DwVariant variant;  // the tile (dw_variant): corr_tile8, corr_tile4x2, corr_channel_groups, corr_generic
  bool nt;            // full vectors go out with non-temporal stores (DwChoice::stream)
  bool pin;           // DwChoice::pin_columns
  bool prefetch;      // DwChoice::prefetch_rows
};

// Asks L2 for the input pixels [iw0, iw0 + n) (clipped to the row) of the `rows` consecutive rows at
// `next` (row width IW, C channels; nullptr: none), channels [c0, c0 + 16): one line each. Without it
// the core waits on DRAM for every new row: the hardware prefetchers do not follow a tile's
// pixel-strided walk through a wide row.
inline void prefetch_pixels(const float* next, int rows, int64_t IW, int64_t C, int64_t iw0, int64_t n, int64_t c0) {
  if (!next) return;
  const int64_t lo = max64(iw0, 0), hi = min64(iw0 + n, IW);
  for (int s = 0; s < rows; ++s)
    for (int64_t iw = lo; iw < hi; ++iw)
      _mm_prefetch(reinterpret_cast<const char*>(next + (s * IW + iw) * C + c0), _MM_HINT_T1);
}

template <bool Mk>
inline void epilogue(const Corr& p, float* dst, R acc, int64_t c, M m) {
  switch (p.mode) {
    case Epi::Store: break;
    case Epi::Add: acc = V::add(acc, ld<Mk>(dst, m)); break;
    case Epi::BnAct:
      acc = V::fma(acc, ld<Mk>(p.scale + c, m), ld<Mk>(p.shift + c, m));
      if (p.act != Act::None) acc = V::max(acc, V::zero());
      if (p.act == Act::ReLU6) acc = V::min(acc, V::set1(6.0f));
      break;
  }
  if constexpr (!Mk) {
    if (p.nt) return V::stream(dst, acc);
  }
  st<Mk>(dst, acc, m);
}

// A tile reading NC input columns from input column iw0 of a row W wide: when the columns outside the
// image are at most MaxCut (<= 2) on each side, calls f(LS, RC) with the inside columns [LS, RC) as
// std::integral_constant, so the tile skips the outside ones at compile time; otherwise returns false
// without calling f. A "same"-padded kernel k wide pads at most k / 2 on either side, so MaxCut = k / 2
// covers every full tile of a map at least a tile wide: 4 cases for k = 3, 9 for k = 5 (compiling all
// nine for k = 3 too cost more compile time than anything else in the kernel files).
template <int NC, int MaxCut, class F>
__attribute__((always_inline)) inline bool with_tile_border(int64_t iw0, int64_t W, F&& f) {
  static_assert(NC >= 4, "the border cases cut at most 2 + 2 of at least 4 input columns");
  const int64_t ls = max64(0, -iw0), rcut = NC - min64(NC, W - iw0);
  if (ls > 2 || rcut > 2 || ls >= NC - rcut) return false;
  using std::integral_constant;
  switch (ls * 3 + rcut) {
#define SPNAS_BORDER(l, r)                                              \
  case l * 3 + r:                                                       \
    if constexpr (l <= MaxCut && r <= MaxCut) {                         \
      f(integral_constant<int, l>{}, integral_constant<int, NC - r>{}); \
      return true;                                                      \
    }                                                                   \
    return false;
    SPNAS_BORDER(0, 0) SPNAS_BORDER(0, 1) SPNAS_BORDER(0, 2)
    SPNAS_BORDER(1, 0) SPNAS_BORDER(1, 1) SPNAS_BORDER(1, 2)
    SPNAS_BORDER(2, 0) SPNAS_BORDER(2, 1) SPNAS_BORDER(2, 2)
#undef SPNAS_BORDER
  }
  return false;
}

// The stores of one tile. The common case (plain store, full vectors) is decided once per tile
// rather than once per output: on small maps the per-output mode tests cost as much as the FMAs.
template <int Tn, bool Mk>
__attribute__((always_inline)) inline void tile_epilogue(const Corr& p, float* d0, const R* acc, int64_t c0, M m) {
  const int64_t ps = p.y_pix;
  if constexpr (!Mk) {
    if (p.mode == Epi::Store) {
      if (p.nt) static_for<Tn>([&](auto t) SPNAS_INLINE { V::stream(d0 + t * ps, acc[t]); });
      else static_for<Tn>([&](auto t) SPNAS_INLINE { V::store(d0 + t * ps, acc[t]); });
      return;
    }
  }
  static_for<Tn>([&](auto t) SPNAS_INLINE { epilogue<Mk>(p, d0 + t * ps, acc[t], c0, m); });
}

// Tn consecutive outputs of one row starting at column ow, kernel width KWc and stride Sc known at
// compile time. Each input column j of the tile (input pixel iw0 + j) is loaded once and feeds every
// output of the tile it overlaps. Columns j < LS and j >= RC fall outside the image and are skipped
// at compile time (the common borders, picked by corr_tile_all_c_border); Chk: the border is not
// one of those, and every column is tested at run time instead. NB = 2: two adjacent channel blocks
// at once (corr_tile4x2: AVX2's whole-line tiles).
template <int KWc, int Sc, bool Pin, int Tn, int LS, int RC, bool Chk, bool Mk, int NB = 1>
__attribute__((always_inline)) inline void corr_tile(const Corr& p, const float* xim, const float* wc, float* yrow,
                                                     int64_t ih0, int kh_lo, int kh_hi, int64_t ow, int64_t c0, M m) {
  static_assert(NB == 1 || !Mk, "block pairs are full blocks");
  const int64_t C = p.C, IW = p.IW;
  const int64_t iw0 = ow * Sc - p.pl;
  R acc[NB][Tn];
  static_for<NB>([&](auto b) SPNAS_INLINE { static_for<Tn>([&](auto t) SPNAS_INLINE { acc[b][t] = V::zero(); }); });
  const float* xr = xim + ((ih0 + kh_lo) * IW + iw0) * C;
  const float* wr = wc + int64_t(kh_lo) * KWc * C;
  for (int kh = kh_lo; kh < kh_hi; ++kh, xr += IW * C, wr += KWc * C) {
    R wv[NB][KWc];
    static_for<NB>([&](auto b) SPNAS_INLINE {
      static_for<KWc>([&](auto kw) SPNAS_INLINE { wv[b][kw] = ld<Mk>(wr + kw * C + decltype(b)::value * L, m); });
    });
    static_for<(Tn - 1) * Sc + KWc>([&](auto j) SPNAS_INLINE {
      constexpr int jj = decltype(j)::value;
      if constexpr (jj >= LS && jj < RC) {
        if constexpr (Chk) {
          if (iw0 + jj < 0 || iw0 + jj >= IW) return;
        }
        static_for<NB>([&](auto b) SPNAS_INLINE {
          R xv = ld<Mk>(xr + jj * C + decltype(b)::value * L, m);
          // Left to itself GCC turns the tile weight-stationary: it folds this load into each of the
          // (up to KWc) FMAs that use the column, one load per FMA instead of one per column. The empty
          // asm pins the column in a register (Pin, DwChoice::pin_columns; bench/RESULTS.md).
          if constexpr (Pin) asm("" : "+v"(xv));
          static_for<Tn>([&](auto t) SPNAS_INLINE {
            constexpr int kw = jj - decltype(t)::value * Sc;
            if constexpr (kw >= 0 && kw < KWc) acc[b][t] = V::fma(xv, wv[b][kw], acc[b][t]);
          });
        });
      }
    });
  }
  static_for<NB>([&](auto b) SPNAS_INLINE {
    constexpr int bb = decltype(b)::value;
    tile_epilogue<Tn, Mk>(p, yrow + ow * p.y_pix + bb * L, acc[bb], c0 + bb * L, m);
  });
}

// All channel blocks of one tile (full blocks, then the masked tail): the tile sweeps each input
// row's pixels contiguously, which the prefetchers follow far better than one channel block at a time.
// `next`: the Sc rows the next output row adds (nullptr: none, or not worth it), prefetched per block.
template <int KWc, int Sc, bool Pin, int Tn, int LS, int RC, bool Chk>
void corr_tile_all_c(const Corr& p, const float* xim, float* yrow, int64_t ih0, int kh_lo, int kh_hi, int64_t ow,
                     const float* next) {
  const int64_t cfull = p.C - p.C % L;
  const M full = V::mask(L);
  const int64_t iw0 = ow * Sc - p.pl;
  int64_t c0 = 0;
  if constexpr (Tn == 4 && V::L == 8) {
    if (p.variant == DwVariant::corr_tile4x2)  // AVX2: whole 64-byte lines
      for (; c0 + 2 * L <= cfull; c0 += 2 * L) {
        corr_tile<KWc, Sc, Pin, Tn, LS, RC, Chk, false, 2>(p, xim + c0, p.w + c0, yrow + c0, ih0, kh_lo, kh_hi, ow,
                                                           c0, full);
        prefetch_pixels(next, Sc, p.IW, p.C, iw0, Tn * Sc, c0);
      }
  }
  for (; c0 < cfull; c0 += L) {
    corr_tile<KWc, Sc, Pin, Tn, LS, RC, Chk, false>(p, xim + c0, p.w + c0, yrow + c0, ih0, kh_lo, kh_hi, ow, c0, full);
    if (c0 % 16 == 0) prefetch_pixels(next, Sc, p.IW, p.C, iw0, Tn * Sc, c0);  // one per 64-byte line
  }
  if (cfull < p.C)
    corr_tile<KWc, Sc, Pin, Tn, LS, RC, Chk, true>(p, xim + cfull, p.w + cfull, yrow + cfull, ih0, kh_lo, kh_hi, ow,
                                              cfull, V::mask(int(p.C - cfull)));
}

// A tile of Tn outputs at column ow with its border resolved at compile time (with_tile_border), else
// checked per column: on small maps most tiles are border tiles, and a test per column cost as much
// as the FMAs.
template <int KWc, int Sc, bool Pin, int Tn>
void corr_tile_all_c_border(const Corr& p, const float* xim, float* yrow, int64_t ih0, int kh_lo, int kh_hi,
                            int64_t ow, const float* next) {
  constexpr int NC = (Tn - 1) * Sc + KWc;  // input columns of the tile
  if (!with_tile_border<NC, KWc / 2>(ow * Sc - p.pl, p.IW, [&](auto ls, auto rc) {
        corr_tile_all_c<KWc, Sc, Pin, Tn, decltype(ls)::value, decltype(rc)::value, false>(p, xim, yrow, ih0, kh_lo,
                                                                                          kh_hi, ow, next);
      }))
    corr_tile_all_c<KWc, Sc, Pin, Tn, 0, NC, true>(p, xim, yrow, ih0, kh_lo, kh_hi, ow, next);
}

// The last, partial tile of a row (n < T outputs): n = 4 (4x4 maps) with a compile-time border, other
// widths checked per column.
template <int KWc, int Sc, bool Pin, int Tn>
inline void corr_tail(int n, const Corr& p, const float* xim, float* yrow, int64_t ih0, int kh_lo, int kh_hi,
                      int64_t ow, const float* next) {
  if constexpr (Tn > 0) {
    constexpr int NC = (Tn - 1) * Sc + KWc;
    if (n == Tn) {
      if constexpr (Tn == 4) corr_tile_all_c_border<KWc, Sc, Pin, Tn>(p, xim, yrow, ih0, kh_lo, kh_hi, ow, next);
      else corr_tile_all_c<KWc, Sc, Pin, Tn, 0, NC, true>(p, xim, yrow, ih0, kh_lo, kh_hi, ow, next);
    } else {
      corr_tail<KWc, Sc, Pin, Tn - 1>(n, p, xim, yrow, ih0, kh_lo, kh_hi, ow, next);
    }
  }
}

// Generic width / stride: one output at a time, borders checked per tap.
template <bool Mk>
void corr_row_generic(const Corr& p, const float* xim, const float* wc, float* yrow, int64_t ih0, int kh_lo,
                      int kh_hi, int64_t c0, M m) {
  const int64_t C = p.C, IW = p.IW;
  for (int64_t ow = 0; ow < p.OW; ++ow) {
    R acc = V::zero();
    for (int kh = kh_lo; kh < kh_hi; ++kh) {
      const float* xr = xim + (ih0 + kh) * IW * C;
      const float* wr = wc + int64_t(kh) * p.KW * C;
      for (int kw = 0; kw < p.KW; ++kw) {
        int64_t iw = ow * p.S - p.pl + kw;
        if (iw < 0 || iw >= IW) continue;
        acc = V::fma(ld<Mk>(xr + iw * C, m), ld<Mk>(wr + kw * C, m), acc);
      }
    }
    epilogue<Mk>(p, yrow + ow * p.y_pix, acc, c0, m);
  }
}

// corr_channel_groups: rows exactly one tile wide (OW == Tn; AVX-512 5x5 at stride 2 on 8x8 inputs).
// Groups of four channel blocks go through all of an image's rows in the range, so a group's input
// lines stay in L1 across the output rows that share them (8x8 inputs: 8 rows x 8 pixels x 256 B =
// 16 KB). Tile by tile over all channels, each output row streams its 5 input rows through L2 (92 KB
// at C = 576) and the next row fetches 3 of them again. Four blocks (four adjacent lines per pixel)
// was the best group size; one block is a line per pixel, a stride the prefetchers do not follow.
template <int KWc, int Sc, bool Pin, int Tn>
void corr_rows_grouped(const Corr& p, int64_t b, int64_t e) {
  constexpr int NC = (Tn - 1) * Sc + KWc;
  constexpr int64_t G = 4 * L;  // channels per group
  const int64_t cfull = p.C - p.C % L;
  for (int64_t r = b; r < e;) {
    const int64_t n = r / p.OH, oh_a = r % p.OH, oh_b = min64(p.OH, oh_a + (e - r));
    const float* xim = p.x + n * p.IH * p.IW * p.C;
    float* yim = p.y + p.y_off + n * p.y_img;
    auto tile = [&](int64_t oh, int64_t c0, auto mk, M m) SPNAS_INLINE {
      constexpr bool Mk = decltype(mk)::value;
      const int64_t ih0 = oh * Sc - p.pt;
      const int kh_lo = int(max64(0, -ih0)), kh_hi = int(min64(p.KH, p.IH - ih0));
      float* yrow = yim + oh * p.y_row + c0;
      if (!with_tile_border<NC, KWc / 2>(-p.pl, p.IW, [&](auto ls, auto rc) SPNAS_INLINE {
            corr_tile<KWc, Sc, Pin, Tn, decltype(ls)::value, decltype(rc)::value, false, Mk>(
                p, xim + c0, p.w + c0, yrow, ih0, kh_lo, kh_hi, 0, c0, m);
          }))
        corr_tile<KWc, Sc, Pin, Tn, 0, NC, true, Mk>(p, xim + c0, p.w + c0, yrow, ih0, kh_lo, kh_hi, 0, c0, m);
    };
    for (int64_t g0 = 0; g0 < cfull; g0 += G)
      for (int64_t oh = oh_a; oh < oh_b; ++oh)
        for (int64_t c0 = g0; c0 < min64(cfull, g0 + G); c0 += L) tile(oh, c0, std::false_type{}, V::mask(L));
    if (cfull < p.C)
      for (int64_t oh = oh_a; oh < oh_b; ++oh) tile(oh, cfull, std::true_type{}, V::mask(int(p.C - cfull)));
    r += oh_b - oh_a;
  }
}

template <int KWc, int Sc, bool Pin, int T>
void corr_rows_t(const Corr& p, int64_t r_begin, int64_t r_end);

// Output rows [r_begin, r_end) of N*OH, all channels, in the tiles of p.variant. KWc / Sc:
// compile-time kernel width and stride, or 0 for the run-time values (corr_generic).
template <int KWc, int Sc, bool Pin = (Sc == 1)>
void corr_rows(const Corr& p, int64_t r_begin, int64_t r_end) {
  if constexpr (KWc == 5 && Sc == 2 && V::isa == Isa::avx512) {
    if (p.variant == DwVariant::corr_channel_groups) return corr_rows_grouped<KWc, Sc, Pin, 4>(p, r_begin, r_end);
  }
  if constexpr (V::isa == Isa::avx2 && KWc >= 1) {
    if (p.variant == DwVariant::corr_tile4x2) return corr_rows_t<KWc, Sc, Pin, 4>(p, r_begin, r_end);
  }
  corr_rows_t<KWc, Sc, Pin, V::regs.corr_tile_px>(p, r_begin, r_end);
}

// Output rows [r_begin, r_end) of N*OH, all channels, in tiles of T outputs (corr_rows).
template <int KWc, int Sc, bool Pin, int T>
void corr_rows_t(const Corr& p, int64_t r_begin, int64_t r_end) {
  for (int64_t r = r_begin; r < r_end; ++r) {
    const int64_t n = r / p.OH, oh = r % p.OH;
    const int S = Sc ? Sc : p.S;
    const int64_t ih0 = oh * S - p.pt;
    const int kh_lo = int(max64(0, -ih0));
    const int kh_hi = int(min64(p.KH, p.IH - ih0));
    const float* xim = p.x + n * p.IH * p.IW * p.C;
    float* yrow = p.y + p.y_off + n * p.y_img + oh * p.y_row;
    if constexpr (KWc > 0) {
      static_assert(Sc > 0, "an unrolled width needs a compile-time stride");
      // Output columns [ow_a, ow_b) have all their taps inside the image.
      const int64_t ow_a = clamp64(ceil_div(p.pl, S), 0, p.OW);
      const int64_t ow_b = clamp64(floor_div(p.IW - KWc + p.pl, S) + 1, ow_a, p.OW);
      // The rows the next output row adds (in the next image after the last row), if they exist.
      const int64_t g_next = n * p.IH + ih0 + p.KH;
      const float* next = p.prefetch && g_next >= 0 && g_next + Sc <= p.N * p.IH
                              ? p.x + g_next * p.IW * p.C
                              : nullptr;
      int64_t ow = 0;
      for (; ow + T <= p.OW; ow += T) {
        if (ow >= ow_a && ow + T <= ow_b)
          corr_tile_all_c<KWc, Sc, Pin, T, 0, (T - 1) * Sc + KWc, false>(p, xim, yrow, ih0, kh_lo, kh_hi, ow, next);
        else
          corr_tile_all_c_border<KWc, Sc, Pin, T>(p, xim, yrow, ih0, kh_lo, kh_hi, ow, next);
      }
      if (ow < p.OW) corr_tail<KWc, Sc, Pin, T - 1>(int(p.OW - ow), p, xim, yrow, ih0, kh_lo, kh_hi, ow, next);
    } else {
      const int64_t cfull = p.C - p.C % L;
      for (int64_t c0 = 0; c0 < cfull; c0 += L)
        corr_row_generic<false>(p, xim + c0, p.w + c0, yrow + c0, ih0, kh_lo, kh_hi, c0, V::mask(L));
      if (cfull < p.C)
        corr_row_generic<true>(p, xim + cfull, p.w + cfull, yrow + cfull, ih0, kh_lo, kh_hi, cfull,
                               V::mask(int(p.C - cfull)));
    }
  }
}

// Rows [b, e) of N*OH, through the instantiation for the correlation's kernel width and stride
// (dw_variant picks corr_generic for the widths and strides not listed here; stride 1 always pins).
void corr_range(const Corr& p, int64_t b, int64_t e) {
  const int k = p.KW, s = p.S;
  if (p.variant == DwVariant::corr_generic) corr_rows<0, 0>(p, b, e);
  else if (k == 3 && s == 1) corr_rows<3, 1>(p, b, e);
  else if (k == 5 && s == 1) corr_rows<5, 1>(p, b, e);
  else if (k == 3 && s == 2) p.pin ? corr_rows<3, 2, true>(p, b, e) : corr_rows<3, 2, false>(p, b, e);
  else if (k == 5 && s == 2) p.pin ? corr_rows<5, 2, true>(p, b, e) : corr_rows<5, 2, false>(p, b, e);
  else if (k == 1 && s == 1) corr_rows<1, 1>(p, b, e);
  else if (k == 2 && s == 1) corr_rows<2, 1>(p, b, e);
  else corr_rows<0, 0>(p, b, e);
}

// Zero (or leave) the output grid of a correlation that has no taps.
void corr_empty(const Corr& p, int64_t b, int64_t e) {
  if (p.mode == Epi::Add) return;
  for (int64_t r = b; r < e; ++r) {
    int64_t n = r / p.OH, oh = r % p.OH;
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      float* d = p.y + p.y_off + n * p.y_img + oh * p.y_row + ow * p.y_pix;
      if (p.mode == Epi::Store) std::memset(d, 0, sizeof(float) * p.C);
      else  // BnAct of a zero sum
        for (int64_t c = 0; c < p.C; ++c) {
          float v = p.shift[c];
          if (p.act != Act::None) v = v > 0 ? v : 0;
          if (p.act == Act::ReLU6) v = v < 6 ? v : 6;
          d[c] = v;
        }
    }
  }
}

// Runs `count` independent correlations in one parallel region. Consecutive groups of `group`
// correlations share their output rows (the column phases of one row phase in backward-data): a
// thread takes a range of rows and does every phase of each row back to back, so a dx row is
// finished while it is in cache.
void corr_parallel(const Corr* ps, int count, int group = 1) {
  parallel_run([&](int tid, int nt) {
    for (int g = 0; g < count; g += group) {
      int64_t b, e;
      split_range(ps[g].N * ps[g].OH, tid, nt, &b, &e);
      for (int64_t r = b; r < e; r += (group == 1 ? e - b : 1))
        for (int i = g; i < g + group; ++i) {
          const Corr& p = ps[i];
          int64_t re = group == 1 ? e : r + 1;
          if (p.KH == 0 || p.KW == 0) corr_empty(p, r, re);
          else corr_range(p, r, re);
        }
    }
    _mm_sfence();  // non-temporal stores are globally visible before the pool reports this thread done
  });
}

inline bool vector_aligned(const float* p) { return reinterpret_cast<uintptr_t>(p) % (L * sizeof(float)) == 0; }

// The correlation settings dw_variant chose.
inline void apply_choice(Corr& p, const DwChoice& c) {
  p.variant = c.variant;
  p.nt = c.stream;
  p.pin = c.pin_columns;
  p.prefetch = c.prefetch_rows;
}

Corr forward_corr(const DwConvDesc& d, const float* x, const float* w, float* y) {
  Corr p{};
  p.x = x, p.w = w, p.y = y;
  p.N = d.N, p.IH = d.H, p.IW = d.W, p.C = d.C, p.OH = d.OH, p.OW = d.OW;
  p.KH = d.K, p.KW = d.K, p.S = d.S, p.pt = d.pad_t, p.pl = d.pad_l;
  p.y_off = 0, p.y_img = d.OH * d.OW * d.C, p.y_row = d.OW * d.C, p.y_pix = d.C;
  p.mode = Epi::Store;
  p.act = Act::None;
  apply_choice(p, dw_variant(d, DwDirection::forward, V::isa, false, vector_aligned(y)));
  return p;
}

void dwconv_forward_simd(const DwConvDesc& d, const float* x, const float* w, float* y) {
  if (d.out_elems() == 0) return;
  Corr p = forward_corr(d, x, w, y);
  corr_parallel(&p, 1);
}

void dwconv_bn_act_forward_simd(const DwConvDesc& d, const float* x, const float* w, const float* scale,
                                const float* shift, Act act, float* y) {
  if (d.out_elems() == 0) return;
  Corr p = forward_corr(d, x, w, y);
  p.mode = Epi::BnAct, p.scale = scale, p.shift = shift, p.act = act;
  corr_parallel(&p, 1);
}

// dx[S a + ph, S b + pw] = sum over the taps kh = r_h + S i, kw = r_w + S j (r = (phase + pad) mod S) of
// dy[a + base_h - i, b + base_w - j] * w[kh, kw]: per phase a stride-1 correlation of dy with the
// flipped sub-kernel wsub[i'][j'] = w[r_h + S (nh-1-i')][r_w + S (nw-1-j')] and padding n-1-base.
void dwconv_backward_data_simd(const DwConvDesc& d, const float* dy, const float* w, float* dx, bool accumulate) {
  if (d.in_elems() == 0) return;
  const DwChoice choice = dw_variant(d, DwDirection::backward_data, V::isa, accumulate, vector_aligned(dx));
  if (choice.variant == DwVariant::reference) return dwconv_backward_data_ref(d, dy, w, dx, accumulate);
  const int S = d.S, K = d.K;  // S <= 4: ps[] holds 16 phases
  const int64_t C = d.C, KKC = int64_t(K) * K * C;
  float* wsub_all = g_scratch_w.get(size_t(S) * S * KKC);
  Corr ps[16];
  int count = 0;
  const int n_pw = int(min64(S, d.W));
  for (int ph = 0; ph < S && ph < d.H; ++ph)
    for (int pw = 0; pw < n_pw; ++pw) {
      int rh = int((ph + d.pad_t) % S), rw = int((pw + d.pad_l) % S);
      int nh = rh < K ? (K - 1 - rh) / S + 1 : 0, nw = rw < K ? (K - 1 - rw) / S + 1 : 0;
      int64_t base_h = (ph + d.pad_t - rh) / S, base_w = (pw + d.pad_l - rw) / S;
      float* wsub = wsub_all + int64_t(ph * S + pw) * KKC;
      for (int i = 0; i < nh; ++i)
        for (int j = 0; j < nw; ++j)
          std::memcpy(wsub + (int64_t(i) * nw + j) * C, w + (int64_t(rh + S * (nh - 1 - i)) * K + rw + S * (nw - 1 - j)) * C,
                      sizeof(float) * C);
      Corr& p = ps[count++];
      p = Corr{};
      p.x = dy, p.w = wsub, p.y = dx;
      p.N = d.N, p.IH = d.OH, p.IW = d.OW, p.C = C;
      p.OH = (d.H - ph + S - 1) / S, p.OW = (d.W - pw + S - 1) / S;
      p.KH = nh, p.KW = nw, p.S = 1, p.pt = nh - 1 - base_h, p.pl = nw - 1 - base_w;
      p.y_off = (ph * d.W + pw) * C, p.y_img = d.H * d.W * C, p.y_row = S * d.W * C, p.y_pix = S * C;
      p.mode = accumulate ? Epi::Add : Epi::Store;
      p.act = Act::None;
      apply_choice(p, choice);
    }
  corr_parallel(ps, count, n_pw);
}

}  // namespace
}  // namespace spnas
