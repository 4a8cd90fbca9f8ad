// Depthwise-convolution and batch-norm kernels written once over a thin vector type `V`, compiled
// twice: by dwconv_avx512.cpp (V = 16 floats, mask registers) and by dwconv_avx2.cpp (V = 8 floats,
// vmaskmov tails). Include only from those files, after defining SPNAS_SIMD_AVX512 or _AVX2.
//
// Everything here lives in an anonymous namespace and uses no std:: containers: inline and template
// functions instantiated with AVX-512 flags must never be merged by the linker with copies that
// baseline code calls (that would execute AVX-512 on an AVX2-only CPU).
//
// Layouts (ops/kernels.h): NHWC activations, depthwise weights [K, K, C]. One vector = one tap for
// L channels. The channel tail (C % L) runs the same code with masked loads and stores.
//
// All three depthwise directions go through two cores:
//  * corr_*: a correlation y[oh, ow] (=, +=, or act(. * scale + shift)) = sum_{kh, kw} x[oh S - pt + kh,
//    ow S - pl + kw] * w[kh, kw]. Forward is one call. Backward-data is S*S calls (one per output phase
//    ih % S, iw % S), each a stride-1 correlation of dy with a flipped sub-kernel, writing every S-th
//    pixel of dx: no scatter, no atomics, each thread owns its output rows.
//  * bww_*: the weight gradient, register-blocked over taps, with one partial [K, K, C] buffer per
//    thread and a parallel reduction.
// Borders: a row's valid kh range is a loop bound; columns whose taps fall outside the image are
// peeled into a checked per-pixel path, the interior runs a tile of T output pixels with the
// kernel width fully unrolled (K = 1..5; other widths take a generic, still vectorized, path).
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

namespace spnas {
namespace {

#if defined(SPNAS_SIMD_AVX512)
struct V {
  using R = __m512;
  using M = __mmask16;
  static constexpr int L = 16;
  static constexpr int TILE = 8;   // output pixels per forward register tile (8 independent FMA chains)
  static constexpr int WTILE = 8;  // output pixels per weight-gradient tile (2 x K accumulators + 8 dy)
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
  static constexpr int L = 8;
  static constexpr int TILE = 8;   // 16 ymm registers: 8 accumulators + up to 5 weights + 1 input
  static constexpr int WTILE = 4;  // 2 x 5 accumulators + 4 dy + 1 input
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
#error "define SPNAS_SIMD_AVX512 or SPNAS_SIMD_AVX2 before including simd_impl.h"
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

// A growable 64-byte-aligned buffer owned by the calling thread (reused across calls: fresh pages
// cost ~1.5 us each to touch).
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

// ---------------------------------------------------------------------------------------------
// Correlation core (forward, backward-data, fused forward + BN apply + activation).
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
  bool nt;  // full vectors go out with non-temporal stores (see stream_output)
  bool lt;  // AVX2: tiles of 4 outputs x 16 channels, whole lines to stream (see line_tiles)
};

// Software prefetch of the next rows pays when a tile walks a wide row with a large pixel stride
// (measured: 2-2.5x on 32x32 and 16x16 maps with C >= 96); on narrow rows (W <= 8) or few channels
// the hardware prefetchers already follow the walk and the extra instructions cost 5-20 %.
inline bool prefetch_rows(int64_t IW, int64_t C) { return IW > 8 && C >= 64; }

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

// Outputs that cannot stay in the L3 together with their input (stream_min_bytes, ops/kernels.h) go
// to memory with non-temporal stores: a normal store would first read every output line from DRAM
// (write-allocate), a third of the traffic. Smaller ones keep normal stores, so the next op finds them
// in cache. Measured with the prefetch above: 3x3 forward on 32x32x144 maps 7 -> 17 GB/s.
// A correlation streams only when it does not accumulate into its output and every full vector it
// stores is aligned (stream stores need the vector's alignment).
inline bool stream_output(const Corr& p) {
  const uintptr_t base = reinterpret_cast<uintptr_t>(p.y + p.y_off);
  const int64_t bytes = int64_t(sizeof(float)) * p.N * (p.IH * p.IW * p.C + p.y_img);  // input + output
  // A stride-2 forward reads 4x what it writes: normal stores would evict input rows the next output
  // row reuses. It streams outputs from 1 MiB (measured in one process against the L3 rule alone:
  // 16x16x240 3x3 1.14x, 8x8x576 1.07x, 5x5 1.02-1.04x).
  const bool reads_mostly =
      p.IH * p.IW >= 3 * p.OH * p.OW && int64_t(sizeof(float)) * p.N * p.y_img >= (int64_t(1) << 20);
  return p.mode != Epi::Add && base % (L * sizeof(float)) == 0 && p.C % L == 0 && p.y_pix % L == 0 &&
         p.y_row % L == 0 && p.y_img % L == 0 && (bytes > stream_min_bytes() || reads_mostly);
}

// AVX2 streams outputs in half lines (8 channels) from tiles of 8 outputs x 8 channels: the other
// half of each line follows only after the next channel block's whole tile. Tiles of 4 outputs x 2
// blocks store whole lines instead, at one more load per FMA, wherever outputs are streamed. Against
// the 8 x 8 tile in one process (2 threads, batch 64): 32x32x144 stride 1 forward and backward-data
// 1.18-1.28x, stride 2 on 32x32 inputs forward 1.30-2.11x; 32x32x96 and 16x16x240 (outputs within
// 24 MiB, first measured level, 0.85-1.11x) 1.0-2.9x in later processes, where half-line
// streams ran at 10-12 GB/s (the cost of partial non-temporal lines varies with the machine's state;
// whole lines do not), 16x16 and 8x8 inputs at stride 2 1.0-1.2x; the 1- and 2-wide sub-kernels of
// the 3x3 stride-2 backward-data phases on 32x32x144 1.1x, or 4.8x where half lines ran slow. Not for
// outputs that are not streamed (C = 32 0.8x, 8x8 0.7-0.8x). The generic kernel (corr_rows<0, 0>,
// other sizes) keeps its 8-wide tile.
inline bool line_tiles(const Corr& p) { return V::L == 8 && p.nt; }

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
// at once (AVX2's whole-line tiles, line_tiles).
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
          // asm pins the column in a register (Pin). Stride 1, single-threaded, in cache: 3x3
          // 1.29-1.44x (54 -> 74-76 % of the FMA peak), 5x5 unchanged. At stride 2 it pays on inputs
          // at most 16 wide (1.04-1.19x, 2 threads, batch 64) but lost up to 1.5x on 32x32 inputs,
          // which keep the compiler's choice (corr_range).
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
    if (p.lt)  // AVX2: whole 64-byte lines (line_tiles)
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
// checked per column. Measured single-threaded, in cache, against the per-column test on every border tile:
// 3x3 on 8x8 / 4x4 maps 1.27-1.35x, 5x5 on 8x8 1.29x (with tile_epilogue).
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

// Rows exactly one tile wide (OW == Tn), 5x5 at stride 2 on 8x8 inputs (AVX-512): groups of four
// channel blocks go through all of an image's rows in the range, so a group's input lines stay in L1
// across the output rows that share them (8x8 inputs: 8 rows x 8 pixels x 256 B = 16 KB). Tile by
// tile over all channels (corr_rows), each output row streams its 5 input rows through L2 (92 KB at
// C = 576) and the next row fetches 3 of them again. Of groups of 1, 2, 4, 8 and 16 blocks, 4 (four
// adjacent lines per pixel) was best; 1 (a line per pixel, a stride the prefetchers do not follow)
// was 0.87-1.05x.
// 2 threads, batch 64, interleaved: 8x8x576 1.10-1.23x. Not used where it was no faster or mixed:
// 3x3, stride 1, 16x16 inputs at stride 2 (0.82-1.2x), and AVX2 (0.7-1.06x).
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

// Output rows [r_begin, r_end) of N*OH, all channels. KWc / Sc: compile-time kernel width and stride,
// or 0 for the run-time values.
template <int KWc, int Sc, bool Pin = (Sc == 1)>
void corr_rows(const Corr& p, int64_t r_begin, int64_t r_end) {
  if constexpr (KWc == 5 && Sc == 2 && V::L == 16) {
    if (p.OW == 4) return corr_rows_grouped<KWc, Sc, Pin, 4>(p, r_begin, r_end);
  }
  if constexpr (V::L == 8 && KWc >= 1) {
    if (p.lt) return corr_rows_t<KWc, Sc, Pin, 4>(p, r_begin, r_end);  // whole lines (line_tiles)
  }
  corr_rows_t<KWc, Sc, Pin, V::TILE>(p, r_begin, r_end);
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
      const float* next = prefetch_rows(p.IW, p.C) && g_next >= 0 && g_next + Sc <= p.N * p.IH
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

// Rows [b, e) of N*OH, dispatched to the unrolled instantiations that exist.
void corr_range(const Corr& p, int64_t b, int64_t e) {
  const int k = p.KW, s = p.S;
  const bool pin2 = p.IW <= 16;  // see corr_tile
  if (k == 3 && s == 1) corr_rows<3, 1>(p, b, e);
  else if (k == 5 && s == 1) corr_rows<5, 1>(p, b, e);
  else if (k == 3 && s == 2) pin2 ? corr_rows<3, 2, true>(p, b, e) : corr_rows<3, 2, false>(p, b, e);
  else if (k == 5 && s == 2) pin2 ? corr_rows<5, 2, true>(p, b, e) : corr_rows<5, 2, false>(p, b, e);
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

Corr forward_corr(const DwConvDesc& d, const float* x, const float* w, float* y) {
  Corr p{};
  p.x = x, p.w = w, p.y = y;
  p.N = d.N, p.IH = d.H, p.IW = d.W, p.C = d.C, p.OH = d.OH, p.OW = d.OW;
  p.KH = d.K, p.KW = d.K, p.S = d.S, p.pt = d.pad_t, p.pl = d.pad_l;
  p.y_off = 0, p.y_img = d.OH * d.OW * d.C, p.y_row = d.OW * d.C, p.y_pix = d.C;
  p.mode = Epi::Store;
  p.act = Act::None;
  p.nt = stream_output(p);
  p.lt = line_tiles(p);
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
  if (d.S > 4) return dwconv_backward_data_ref(d, dy, w, dx, accumulate);  // ps[] holds 16 phases
  const int S = d.S, K = d.K;
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
      p.nt = stream_output(p);
      p.lt = line_tiles(p);
    }
  corr_parallel(ps, count, n_pw);
}

// ---------------------------------------------------------------------------------------------
// Weight gradient: part[kh, kw, c] += sum_ow x[ih0 + kh, ow S - pl + kw, c] * dy[oh, ow, c] for one row.
// A tile of Tn outputs loads its dy vectors once, then each input column once; two accumulator sets
// (even / odd output) double the independent FMA chains.
template <int Kc, int Sc, int Tn, bool Chk, bool Mk>
inline void bww_tile(R (&acc)[2][Kc], const float* xr, const float* dyr, int64_t ow, int64_t pl, int64_t W,
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
inline void bww_tile_block(const DwConvDesc& d, const float* xim, const float* dyr, float* part, int64_t ih0,
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
    bww_tile<Kc, Sc, Tn, Chk, Mk>(acc, xr, dyr, ow, d.pad_l, W, C, m);
    static_for<Kc>([&](auto kw) { st<Mk>(pr + kw * C, V::add(acc[0][kw], acc[1][kw]), m); });
  }
}

// Rows the next dy row will need first: the next dy row itself and the Sc input rows it adds (either
// nullptr when it does not exist). Prefetched per tile and channel block, as in the forward.
struct BwwNext {
  const float* x;
  const float* dy;
};

template <int Kc, int Sc, int Tn, bool Chk>
inline void bww_tile_all_c(const DwConvDesc& d, const float* xim, const float* dyr, float* part, int64_t ih0,
                           int kh_lo, int kh_hi, int64_t ow, BwwNext next) {
  const int64_t cfull = d.C - d.C % L;
  const int64_t iw0 = ow * Sc - d.pad_l;
  for (int64_t c0 = 0; c0 < cfull; c0 += L) {
    bww_tile_block<Kc, Sc, Tn, Chk, false>(d, xim + c0, dyr + c0, part + c0, ih0, kh_lo, kh_hi, ow, V::mask(L));
    if (c0 % 16 == 0) {  // one prefetch per 64-byte line
      prefetch_pixels(next.x, Sc, d.W, d.C, iw0, Tn * Sc, c0);
      prefetch_pixels(next.dy, 1, d.OW, d.C, ow, Tn, c0);
    }
  }
  if (cfull < d.C)
    bww_tile_block<Kc, Sc, Tn, Chk, true>(d, xim + cfull, dyr + cfull, part + cfull, ih0, kh_lo, kh_hi, ow,
                                          V::mask(int(d.C - cfull)));
}

template <int Kc, int Sc, int Tn>
inline void bww_tail(int n, const DwConvDesc& d, const float* xim, const float* dyr, float* part, int64_t ih0,
                     int kh_lo, int kh_hi, int64_t ow, BwwNext next) {
  if constexpr (Tn > 0) {
    if (n == Tn) bww_tile_all_c<Kc, Sc, Tn, true>(d, xim, dyr, part, ih0, kh_lo, kh_hi, ow, next);
    else bww_tail<Kc, Sc, Tn - 1>(n, d, xim, dyr, part, ih0, kh_lo, kh_hi, ow, next);
  }
}

template <bool Mk>
void bww_row_generic(const DwConvDesc& d, const float* xim, const float* dyr, float* part, int64_t ih0, int kh_lo,
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

template <int Kc, int Sc>
void bww_rows(const DwConvDesc& d, const float* x, const float* dy, float* part, int64_t b, int64_t e) {
  constexpr int T = V::WTILE;
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
      const bool pf = prefetch_rows(d.W, d.C);
      BwwNext next{pf && g_next >= 0 && g_next + Sc <= d.N * d.H ? x + g_next * d.W * d.C : nullptr,
                   pf && r + 1 < d.N * d.OH ? dyr + d.OW * d.C : nullptr};
      int64_t ow = 0;
      for (; ow + T <= d.OW; ow += T) {
        if (ow >= ow_a && ow + T <= ow_b) bww_tile_all_c<Kc, Sc, T, false>(d, xim, dyr, part, ih0, kh_lo, kh_hi, ow, next);
        else bww_tile_all_c<Kc, Sc, T, true>(d, xim, dyr, part, ih0, kh_lo, kh_hi, ow, next);
      }
      if (ow < d.OW) bww_tail<Kc, Sc, T - 1>(int(d.OW - ow), d, xim, dyr, part, ih0, kh_lo, kh_hi, ow, next);
    } else {
      const int64_t cfull = d.C - d.C % L;
      for (int64_t c0 = 0; c0 < cfull; c0 += L)
        bww_row_generic<false>(d, xim + c0, dyr + c0, part + c0, ih0, kh_lo, kh_hi, V::mask(L));
      if (cfull < d.C)
        bww_row_generic<true>(d, xim + cfull, dyr + cfull, part + cfull, ih0, kh_lo, kh_hi, V::mask(int(d.C - cfull)));
    }
  }
}

// Weight gradient for K = 3 and 5 ("band kernel"), the K x K taps of one channel block in registers
// across a band of output rows: the partial sums move once per band instead of once per tile and
// kernel row, and a tile's dy vectors feed all K kernel rows. The band (its input and dy rows) is
// sized to stay in L2 while the channel blocks take turns over it, and each row prefetches the next
// block's lines of its rows; on maps at most 8 wide a band is all of a thread's rows (bwwb_rows).
// Full tiles of full channel blocks skip their outside columns at compile time (bwwb_tile_rows); the
// last, partial tile of a row, and the border tiles of the masked channel-tail block, load outside
// columns and rows as zeros through the load mask (bwwb_tile<Border>).
constexpr int64_t kBwwBandBytes = int64_t(256) << 10;

template <int K>
struct BwwRow {
  const float* x[K];  // input rows ih0 + kh (any valid row where outside the image)
  M m[K];             // the channel mask, or none where the row is outside the image
  bool valid[K];      // row inside the image
  bool inside;        // all K rows inside
};

template <int K, int Sc, int Tn, bool Border, bool Mk>
__attribute__((always_inline)) inline void bwwb_tile(R (&acc)[K][K], const BwwRow<K>& row,
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
__attribute__((always_inline)) inline void bwwb_tile_rows(R (&acc)[K][K], const float* const* xr, const bool* valid,
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

// bwwb_tile_rows with its border at compile time; false if the border is not one of the compiled cases.
template <int K, int Sc, int Tn, int RG, bool RowChk, bool Mk>
__attribute__((always_inline)) inline bool bwwb_tile_rows_border(R (&acc)[K][K], const float* const* xr,
                                                                 const bool* valid, const float* dyr, int64_t dy_row,
                                                                 int64_t ow, int64_t pl, int64_t W, int64_t C, M m) {
  return with_tile_border<(Tn - 1) * Sc + K, K / 2>(ow * Sc - pl, W, [&](auto ls, auto rc) SPNAS_INLINE {
    bwwb_tile_rows<K, Sc, Tn, RG, decltype(ls)::value, decltype(rc)::value, RowChk, Mk>(acc, xr, valid, dyr, dy_row,
                                                                                      ow, pl, C, m);
  });
}

// Output rows [r0, r1) of N*OH (a band may span images), channels [c0, c0 + L) (masked by m):
// part[kh, kw, c] += the band's sums.
template <int K, int Sc, int Tn, bool Mk>
__attribute__((flatten)) void bwwb_band(const DwConvDesc& d, const float* x, const float* dy, float* part, int64_t r0,
                                        int64_t r1, int64_t c0, M m) {
  const int64_t C = d.C, W = d.W, OW = d.OW;
  R acc[K][K];
  static_for<K>([&](auto kh) SPNAS_INLINE {
    static_for<K>([&](auto kw) SPNAS_INLINE { acc[kh][kw] = ld<Mk>(part + (kh * K + kw) * C + c0, m); });
  });
  // Tiles [ow_a, ow_b) have every column inside the image.
  const int64_t ow_a = clamp64(ceil_div(d.pad_l, Sc), 0, OW);
  const int64_t ow_b = clamp64(floor_div(W - K + d.pad_l, Sc) + 1, ow_a, OW);
  const bool prefetch = prefetch_rows(W, C);
  for (int64_t r = r0, n = r0 / d.OH, oh = r0 % d.OH; r < r1; ++r, oh = oh + 1 == d.OH ? 0 : oh + 1, n += oh == 0) {
    const float* xim = x + n * d.H * W * C + c0;
    const int64_t ih0 = oh * Sc - d.pad_t;
    if constexpr (K == 3 && V::L == 16 && !Mk) {
      // Rows exactly one tile wide (8x8 maps, 4x4 and 8x8 at stride 2): RG rows at once.
      constexpr int RG = Tn == 4 ? 4 : 2, NR = K + (RG - 1) * Sc;
      if (OW == Tn && !prefetch && r + RG <= r1 && oh + RG <= d.OH) {
        const float* xr[NR];
        bool valid[NR];
        for (int i = 0; i < NR; ++i) {
          valid[i] = uint64_t(ih0 + i) < uint64_t(d.H);
          xr[i] = xim + (valid[i] ? ih0 + i : 0) * W * C;
        }
        if (bwwb_tile_rows_border<K, Sc, Tn, RG, true, Mk>(acc, xr, valid, dy + r * OW * C + c0, OW * C, 0, d.pad_l,
                                                            W, C, m)) {
          r += RG - 1, oh += RG - 1;  // the loop steps the last row (oh + RG <= OH: same image)
          continue;
        }
      }
    }
    BwwRow<K> row;
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
          bwwb_tile<K, Sc, Tn, false, Mk>(acc, row, dyr, ow, Tn, d.pad_l, W, C, m);
          continue;
        }
        // The compile-time borders for full channel blocks only: the masked tail block (one per pass
        // where C % L != 0) takes the checked tile, which halves the largest part of the file's compile.
        if constexpr (!Mk) {
          if (row.inside) {
            if (bwwb_tile_rows_border<K, Sc, Tn, 1, false, Mk>(acc, row.x, row.valid, dyr, 0, ow, d.pad_l, W, C, m))
              continue;
          } else if (bwwb_tile_rows_border<K, Sc, Tn, 1, true, Mk>(acc, row.x, row.valid, dyr, 0, ow, d.pad_l, W, C,
                                                                    m)) {
            continue;
          }
        }
      }
      bwwb_tile<K, Sc, Tn, true, Mk>(acc, row, dyr, ow, min64(Tn, OW - ow), d.pad_l, W, C, m);
    }
  }
  static_for<K>([&](auto kh) SPNAS_INLINE {
    static_for<K>([&](auto kw) SPNAS_INLINE { st<Mk>(part + (kh * K + kw) * C + c0, acc[kh][kw], m); });
  });
}

#if defined(SPNAS_SIMD_AVX512)
// The 3x3 weight gradient on narrow rows, two channel blocks per pass: each pixel gives two adjacent
// lines per visit instead of one, and half as many passes walk the band. Both blocks' 18 accumulators
// stay in registers, so tiles are 4 wide (bwwb_tile_rows, one row, once per block), with their borders
// at compile time: Wc-wide inputs at stride Sc under "same" padding (pad_l 1 at stride 1, 0 at stride 2
// on even widths). 8x8 maps (outputs 0-3 read input columns -1..4, outputs 4-7 columns 3..7), 4x4
// maps, and 8x8 inputs at stride 2 (columns 0..8, 8 outside). Against one block per pass with its row
// groups, in bench_conv (2 threads, batch 64): mb64ic576ih8kh3sh1 0.42 -> 0.36 ms, mb64ic576ih8kh3sh2
// 0.107-0.110 -> 0.087-0.092 ms, mb64ic1152ih4kh3sh1 0.114-0.116 -> 0.103-0.104 ms.
// Output rows [r0, r1) of N*OH (d.W = Wc, d.OW = Wc / Sc, K = 3), channels [c0, c0 + 2L).
template <int Sc>
constexpr int bwwb2_pad_l = Sc == 1 ? 1 : 0;  // the "same" pad_l of 3x3 on the even widths below

template <int Sc, int Wc>
__attribute__((flatten)) void bwwb2_band(const DwConvDesc& d, const float* x, const float* dy, float* part, int64_t r0,
                                         int64_t r1, int64_t c0) {
  constexpr int OWc = Wc / Sc, PL = bwwb2_pad_l<Sc>, NCOL = 3 * Sc + 3;
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
        bwwb_tile_rows<3, Sc, 4, 1, LS, RC, true, false>(acc[b], xr[b], valid, dyr + b * L, 0, ow, PL, C, none);
      });
    });
  }
  static_for<2>([&](auto b) SPNAS_INLINE {
    static_for<9>([&](auto k) SPNAS_INLINE {
      V::store(part + decltype(k)::value * C + c0 + decltype(b)::value * L, acc[b][k / 3][k % 3]);
    });
  });
}

// Pairs of full channel blocks from channel 0 through bwwb2_band where the shape is one of its cases;
// returns the first channel left for the one-block passes.
template <int Sc>
int64_t bwwb2_pairs(const DwConvDesc& d, const float* x, const float* dy, float* part, int64_t r0, int64_t r1) {
  int64_t c = 0;
  auto run = [&](auto wc) SPNAS_INLINE {
    constexpr int Wc = decltype(wc)::value;
    if (d.W == Wc && d.OW == Wc / Sc && d.pad_l == bwwb2_pad_l<Sc>)
      for (; c + 2 * L <= d.C; c += 2 * L) bwwb2_band<Sc, Wc>(d, x, dy, part, r0, r1, c);
  };
  run(std::integral_constant<int, 8>{});
  if constexpr (Sc == 1) run(std::integral_constant<int, 4>{});
  return c;
}
#endif

// The image kernel (below) takes its channels in groups of two blocks on AVX2 (one 64-byte line per
// pixel), one on AVX-512.
constexpr int64_t kBwwkGroup = V::L == 8 ? 2 * L : L;

// The shapes the image kernel takes: on AVX2 8x8 and 4x4 maps and 16- and 8-wide inputs at stride 2;
// on AVX-512 8x8 maps and 16-wide inputs at stride 2 (8x8 inputs at stride 2 and 4x4 maps keep the
// two-block band pass there: the image kernel was 0.75x and 0.92x).
inline bool bwwk_fits(const DwConvDesc& d) {
  if (d.K != 3 || d.C < kBwwkGroup) return false;
  if (d.S == 1) return d.pad_t == 1 && d.pad_l == 1 && d.W == d.OW && (d.W == 8 || (V::L == 8 && d.W == 4));
  return d.S == 2 && (d.pad_t == 0 || d.pad_t == 1) && d.pad_l == 0 && d.W == 2 * d.OW &&
         (d.W == 16 || (V::L == 8 && d.W == 8));
}

// The 3x3 weight gradient image by image ("image kernel"; shapes: bwwk_fits). Made for AVX2, at
// stride 1 on maps 8 or 4 wide and at stride 2 on inputs 16 or 8 wide. There the band
// kernel's 8-channel passes read half lines (each pixel's line is visited twice, a whole band apart),
// and two blocks' 18 accumulators do not fit in the 16 registers. So an image takes its channels in
// pairs of blocks, the two blocks of a pair back to back: the first pass brings the pair's lines (x
// and dy, 8 KB on 8x8) into L1 and the second finds them there. A pass walks each output row once
// with all 9 taps of one block in registers: per input column the three input rows, per kernel column
// one dy vector for all three (9 accumulators + 3 inputs + 1 dy; 9 FMAs per 6 loads at stride 1).
// Except on 4x4 maps the next image's x and dy are requested into L2 in address order, a share
// during each pair: the passes themselves visit an image's memory one line in 15-36 (C = 240-576),
// an order DRAM serves poorly. bench_conv, 2 threads, batch 64, in one process (four runs at stride
// 1, two at stride 2): against the band kernel mb64ic480ih8kh3sh1 0.34-0.37 -> 0.26-0.28 ms,
// mb64ic576ih8kh3sh1 0.41-0.64 -> 0.32-0.44 ms, mb64ic1152ih4kh3sh1 0.22-0.28 -> 0.14-0.17 ms
// (oneDNN's AVX2 kernel: 0.23, 0.29-0.44, 0.18 ms); against the tile kernel mb64ic240ih16kh3sh2
// 0.47-0.55 -> 0.35-0.36 ms, mb64ic576ih8kh3sh2 0.25 -> 0.20 ms (oneDNN 0.36-0.43, 0.17-0.18 ms;
// without the prefetch 0.67 and 0.23 ms).
// Pairs of blocks with two kernel rows per pass (12 accumulators, dy reloaded) were as fast; one
// kernel row per pass (6 accumulators: the FMA latency binds) and pairs taken across all images
// before the next pair (0.6-0.9x) slower; prefetching the next pair's lines 0.7-0.8x.
// On AVX-512 (a block is a whole line; groups of one block) it beat the two-block band pass on 8x8
// maps (mb64ic480ih8kh3sh1 1.16-1.25x, mb64ic576ih8kh3sh1 2.3-2.5x in processes where that pass ran
// at 0.9 ms) and the tile kernel on 16x16 inputs at stride 2 (mb64ic240ih16kh3sh2 1.11-1.32x), two
// runs in one process each.

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
__attribute__((always_inline)) inline void bwwk_row(R (&acc)[3][3], const char* xp, int64_t rs, const char* dp,
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

// Output rows [oh0, oh1) of one image, channels [0, kBwwkGroup) of xim / dyim / part (offset to the
// group), one block after the other.
template <int Sc, int Wc>
__attribute__((flatten)) void bwwk_image_group(const DwConvDesc& d, const float* xim, const float* dyim, float* part,
                                               int64_t oh0, int64_t oh1) {
  const int64_t C = d.C, cs = C * int64_t(sizeof(float)), rs = Wc * cs, drs = (Wc / Sc) * cs;
  for (int b = 0; b < kBwwkGroup / L; ++b) {
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
        case 7: bwwk_row<Sc, Wc, true, true, true>(acc, xr, rs, dr, cs, -cs); break;
        case 6: bwwk_row<Sc, Wc, false, true, true>(acc, xr, rs, dr, cs, -cs); break;
        case 3: bwwk_row<Sc, Wc, true, true, false>(acc, xr, rs, dr, cs, -cs); break;
        default: bwwk_row<Sc, Wc, false, true, false>(acc, xr, rs, dr, cs, -cs); break;
      }
    }
    static_for<9>([&](auto i) SPNAS_INLINE {
      constexpr int ii = decltype(i)::value;
      V::store(part + ii * C + b * L, acc[ii / 3][ii % 3]);
    });
  }
}

// Rows [r0, r1) of N*OH, the groups of full blocks through bwwk_image_group image by image; returns
// the first channel left for the one-block passes (0 where the shape is not one of its cases).
inline int64_t bwwk_groups(const DwConvDesc& d, const float* x, const float* dy, float* part, int64_t r0,
                           int64_t r1) {
  if (!bwwk_fits(d)) return 0;
  const int64_t C = d.C, cend = C / kBwwkGroup * kBwwkGroup, ngroups = cend / kBwwkGroup;
  const int64_t img = d.H * d.W * C, dimg = d.OH * d.OW * C;  // floats per image of x, of dy
  const int64_t lines = (img * int64_t(sizeof(float)) + 63) / 64, share = ceil_div(lines, ngroups);
  const int64_t dlines = (dimg * int64_t(sizeof(float)) + 63) / 64, dshare = ceil_div(dlines, ngroups);
  const bool prefetch = d.S == 2 || d.W == 8;  // not on 4x4 maps (~10 % slower there)
  for (int64_t r = r0; r < r1;) {
    const int64_t n = r / d.OH, oh0 = r % d.OH, oh1 = min64(d.OH, oh0 + (r1 - r));
    const float* xim = x + n * img;
    const float* dyim = dy + n * dimg;
    const bool next = prefetch && r + (oh1 - oh0) < r1;  // the thread's next image
    for (int64_t c0 = 0, q = 0; c0 < cend; c0 += kBwwkGroup, ++q) {
      if (next) {
        const char* nx = reinterpret_cast<const char*>(xim + img);
        const char* nd = reinterpret_cast<const char*>(dyim + dimg);
        for (int64_t l = q * share; l < min64(lines, (q + 1) * share); ++l) _mm_prefetch(nx + l * 64, _MM_HINT_T1);
        for (int64_t l = q * dshare; l < min64(dlines, (q + 1) * dshare); ++l) _mm_prefetch(nd + l * 64, _MM_HINT_T1);
      }
      const float* xp = xim + c0;
      const float* dp = dyim + c0;
      if (d.S == 1) d.W == 8 ? bwwk_image_group<1, 8>(d, xp, dp, part + c0, oh0, oh1)
                             : bwwk_image_group<1, 4>(d, xp, dp, part + c0, oh0, oh1);
      else d.W == 16 ? bwwk_image_group<2, 16>(d, xp, dp, part + c0, oh0, oh1)
                     : bwwk_image_group<2, 8>(d, xp, dp, part + c0, oh0, oh1);
    }
    r += oh1 - oh0;
  }
  return cend;
}

// Rows [b, e) of N*OH in bands, every channel block over each band. Tiles of WTILE outputs, or of 4 on
// rows of at most 4 (a wider tile would be half zeros there) and for 5x5 (25 accumulators).
template <int K, int Sc>
void bwwb_rows(const DwConvDesc& d, const float* x, const float* dy, float* part, int64_t b, int64_t e) {
  const int64_t C = d.C;
  const int64_t row_bytes = int64_t(sizeof(float)) * (Sc * d.W + d.OW) * C;  // per output row: new x rows + dy
  // Maps at most 8 wide: one band over all the thread's rows, so a channel block's pass is a single
  // constant-stride stream through every image, which the hardware prefetchers follow (2 threads,
  // batch 64, against bands of one image: 1.12-1.37x on the 8x8 and 4x4 shapes but C = 576, which
  // moved 0.92-1.1x). Wider maps: bands sized for L2 (a whole-range band was 0.46-0.76x there).
  const int64_t band = d.W <= 8 || bwwk_fits(d) ? e - b : max64(1, kBwwBandBytes / max64(1, row_bytes));
  for (int64_t r0 = b; r0 < e;) {
    const int64_t r1 = min64(e, r0 + band);
    int64_t cstart = 0;
    if constexpr (K == 3) cstart = bwwk_groups(d, x, dy, part, r0, r1);  // then the rest, one block a pass
#if defined(SPNAS_SIMD_AVX512)
    if constexpr (K == 3) {
      if (cstart == 0) cstart = bwwb2_pairs<Sc>(d, x, dy, part, r0, r1);
    }
#endif
    for (int64_t c0 = cstart; c0 < C; c0 += L) {
      const M m = V::mask(int(min64(L, C - c0)));
      const bool tail = c0 + L > C;  // masked loads only where needed (AVX2's are slow)
      if (d.OW <= 4 || K == 5) tail ? bwwb_band<K, Sc, 4, true>(d, x, dy, part, r0, r1, c0, m)
                                    : bwwb_band<K, Sc, 4, false>(d, x, dy, part, r0, r1, c0, m);
      else tail ? bwwb_band<K, Sc, V::WTILE, true>(d, x, dy, part, r0, r1, c0, m)
                : bwwb_band<K, Sc, V::WTILE, false>(d, x, dy, part, r0, r1, c0, m);
    }
    r0 = r1;
  }
}

// 5x5 only where its 25 accumulators fit in the registers (AVX-512).
template <int Sc>
void bwwb5_rows(const DwConvDesc& d, const float* x, const float* dy, float* part, int64_t b, int64_t e) {
  if constexpr (V::L == 16) bwwb_rows<5, Sc>(d, x, dy, part, b, e);
}

void dwconv_backward_weights_simd(const DwConvDesc& d, const float* x, const float* dy, float* dw, bool accumulate) {
  const int64_t KKC = int64_t(d.K) * d.K * d.C;
  const int pool = num_threads();
  float* parts = g_scratch_part.get(size_t(pool) * KKC);
  // The band kernel where it beat the tile kernel (2 threads, batch 64, the two timed interleaved).
  // 3x3: stride 1 on 32x32 and 16x16 maps 1.36-2.1x, C = 32 1.48x, maps at most 8 wide (one band per
  // thread) 1.12-1.25x but C = 576 (0.92-0.99x); at stride 2 on wider inputs (C > 32) 0.76-0.95x, so
  // those keep the tile kernel. 5x5 (AVX-512 only: 25 accumulators + 4 dy + 1 input of the 32
  // registers): 1.2-1.9x on every cifar shape but stride 2 on 32x32 maps (0.88-1.05x).
  // The shapes of the image kernel (bwwk_fits: 16-wide inputs at stride 2 among them) go through the
  // band rows, which hand them to it.
  const bool bww3 = bwwk_fits(d) || d.W <= 8 || (d.S == 1 && d.W >= 16) || d.C <= 32;
  const bool bww5 = V::L == 16 && !(d.S == 2 && d.W >= 32);
  int used = 1;
  parallel_run([&](int tid, int nt) {
    if (tid == 0) used = nt;
    float* part = parts + tid * KKC;
    std::memset(part, 0, sizeof(float) * KKC);
    int64_t b, e;
    split_range(d.N * d.OH, tid, nt, &b, &e);
    const int k = d.K, s = d.S;
    if (k == 3 && bww3 && s == 1) bwwb_rows<3, 1>(d, x, dy, part, b, e);
    else if (k == 3 && bww3 && s == 2) bwwb_rows<3, 2>(d, x, dy, part, b, e);
    else if (k == 5 && bww5 && s == 1) bwwb5_rows<1>(d, x, dy, part, b, e);
    else if (k == 5 && bww5 && s == 2) bwwb5_rows<2>(d, x, dy, part, b, e);
    else if (k == 3 && s == 1) bww_rows<3, 1>(d, x, dy, part, b, e);
    else if (k == 5 && s == 1) bww_rows<5, 1>(d, x, dy, part, b, e);
    else if (k == 3 && s == 2) bww_rows<3, 2>(d, x, dy, part, b, e);
    else if (k == 5 && s == 2) bww_rows<5, 2>(d, x, dy, part, b, e);
    else bww_rows<0, 0>(d, x, dy, part, b, e);
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

// ---------------------------------------------------------------------------------------------
// Batch-norm apply + activation, and its backward. All memory-bound: one pass, rows split across
// threads, channels in vectors. Reductions use float vectors over chunks of rows, then double
// partials per thread (so long batches keep the reference's accuracy).

// g = dy * act'(v), from the pre-activation v = x * scale + shift (recomputed with the forward's
// fma, so the mask is exactly the forward's and y is never read).
inline R act_grad(Act a, R dy, R v) {
  if (a == Act::ReLU) return V::keep_above(dy, v, V::zero());
  if (a == Act::ReLU6) return V::keep_inside(dy, v, V::zero(), V::set1(6.0f));
  return dy;
}

inline R act_apply(Act a, R v) {
  if (a != Act::None) v = V::max(v, V::zero());
  if (a == Act::ReLU6) v = V::min(v, V::set1(6.0f));
  return v;
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
