// Register-blocked GEMMs for pointwise (1x1) convolutions whose channel counts are small, where
// OpenBLAS spends its time packing (K = 16..144 against M = N*H*W = 65,536 rows). Part of the SIMD
// kernel set (simd_table.h): see simd_vector.h for the rules every kernel header follows.
//
// Both kernels are single-threaded over a row range; ops/kernels/pointwise.cpp splits the rows
// across the pool. The activations are used in place (row-major [M, C]); only gemm_nn's B (the
// weights, small) is packed.
//
//  * gemm_nn:  C[r, :] (= or +=) A[r, :] . B     A [rows, K] (stride lda), B [K, N] (stride ldb),
//              C [rows, N] (stride ldc).
//              A tile of RB rows x NV vectors of N lives in registers; each k adds one broadcast
//              A[r, k] times NV loaded vectors of B[k, :], read from B's panel for the tile (packed
//              per call). Rows are taken in blocks that stay in L2 while every N tile passes over
//              them. Forward (B = W) and backward-data (B = W^T, packed from W: b_transposed).
//              Optional epilogue on the registers before the store: act(c * scale[n] + shift[n])
//              (inference with batch norm folded in: one pass over the output instead of two).
//              Outputs too large for the L3 are stored non-temporally (the caller's `stream`).
//              An optional ColumnMap on A (batch norm + activation, not materialized) is applied
//              once per row block into a scratch copy that the N tiles then read from L1/L2.
//  * gemm_tn:  C[K, N] (+)= A^T . Bm summed over rows   A [rows, K], Bm [rows, N], C [K, N] (stride ldc).
//              A tile of KB input channels x NV vectors of N in registers; each row adds the
//              broadcast A[r, k] times Bm[r, :]. Chains of kTnRowBlock rows, each taken by every
//              (K, N) tile in turn. Weight gradient, one partial C per thread.
//              Operands from DRAM: the next row block is requested into L2 during the current one.
//              The optional ColumnMap on A as in gemm_nn.
#pragma once
#include <type_traits>

#include "ops/kernels/simd_vector.h"

namespace spnas {
namespace {

#if defined(SPNAS_SIMD_AVX512)
constexpr int kGemmMaxNV = 4;   // vectors of N per tile
constexpr int kGemmRB[5] = {0, 12, 12, 8, 6};  // rows per tile for NV vectors (<= 29 registers)
// The width of the next N tile when `left` vectors remain (every width is whole 64-byte lines).
inline int gemm_tile_vectors(int64_t left, bool) { return int(left < kGemmMaxNV ? left : kGemmMaxNV); }
#else
constexpr int kGemmMaxNV = 3;
constexpr int kGemmRB[4] = {0, 8, 6, 4};  // 16 ymm: RB * NV accumulators + NV loads + 1 broadcast
// Three vectors while more than four remain; four as two and two (a 1-vector tile re-reads every row
// of A for 8 FMAs per k). With `lines` (non-temporal stores) two: whole 64-byte lines per tile.
inline int gemm_tile_vectors(int64_t left, bool lines) {
  if (lines) return int(left < 2 ? left : 2);
  return int(left > 4 ? 3 : left == 4 ? 2 : left);
}
#endif
constexpr int64_t kGemmRowBlock = 192;  // rows of A (and C) kept in L2 while the N tiles pass
constexpr int64_t kGemmBlockBytes = int64_t(256) << 10;  // ... at most this much of A: half a Zen 3 L2
// gemm_tn sums over rows in register chains of at most this many terms before adding into C (a
// float chain's rounding error grows with its length; 64 keeps it below OpenBLAS's K blocking).
constexpr int64_t kTnRowBlock = 64;

// rows x K of A (stride lda) through the map into S (stride K): what bn_act_forward would store.
inline void map_rows(int64_t rows, int64_t K, const float* A, int64_t lda, const ColumnMap& map, float* S) {
  const int64_t kfull = K - K % L;
  const M tail = V::mask(int(K % L));
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = A + r * lda;
    float* s = S + r * K;
    for (int64_t c = 0; c < kfull; c += L)
      V::store(s + c, act_apply(map.act, V::fma(V::load(a + c), V::load(map.scale + c), V::load(map.shift + c))));
    if (kfull < K)
      V::storem(s + kfull, act_apply(map.act, V::fma(V::loadm(a + kfull, tail), V::loadm(map.scale + kfull, tail),
                                                     V::loadm(map.shift + kfull, tail))),
                tail);
  }
}

thread_local Scratch g_scratch_map;

// C tile [RB rows, NV vectors] from A rows (lda) and B [K, ldb]; TAIL: the last vector is masked by m.
// The epilogue of gemm_nn, its scale/shift already offset to the tile's first column.
struct NnEpilogue {
  const float* scale = nullptr;  // nullptr: none
  const float* shift = nullptr;
  Act act = Act::None;
};

// How a tile stores C. The training products take plain (C = the sum) or streamed (non-temporal)
// stores, which carry no run-time choices; general is any other mix (accumulation, the epilogue).
// Tiles are inlined into their column loop: at K = 16..32 a tile is only 100-200 cycles of FMAs,
// and a call with its stack arguments, the branches of the general store and the act switch cost
// a third of that (bench/RESULTS.md, "Pointwise: small-K tiles").
enum class NnStore { general, plain, stream };

template <int RB, int NV, bool TAIL, NnStore ST>
SPNAS_INLINE inline void nn_tile(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                                 int64_t ldc, M m, bool acc, const NnEpilogue& ep, const float* pf, bool nt) {
  R c[RB][NV];
  static_for<RB>([&](auto i) { static_for<NV>([&](auto j) { c[i][j] = V::zero(); }); });
  for (int64_t k = 0; k < K; ++k) {
    // The next tile's rows of A into L2 (see nn_column), a line of each row per 16 columns, as this
    // tile reaches the same columns: all of them at the tile's start was slower (bench/RESULTS.md,
    // "Pointwise: the next tile's A rows, spread over the tile").
    if (pf && k % 16 == 0)
      for (int64_t i = 0; i < RB; ++i) _mm_prefetch(reinterpret_cast<const char*>(pf + i * lda + k), _MM_HINT_T1);
    const float* b = B + k * ldb;
    R bv[NV];
    static_for<NV>([&](auto j) { bv[j] = (TAIL && j == NV - 1) ? V::loadm(b + j * L, m) : V::load(b + j * L); });
    static_for<RB>([&](auto i) {
      R a = V::set1(A[i * lda + k]);
      static_for<NV>([&](auto j) { c[i][j] = V::fma(a, bv[j], c[i][j]); });
    });
  }
  if constexpr (ST != NnStore::general) {  // (a streamed product has no tail: N is whole lines)
    static_for<RB>([&](auto i) {
      static_for<NV>([&](auto j) {
        float* p = C + i * ldc + j * L;
        if (TAIL && j == NV - 1) V::storem(p, c[i][j], m);
        else if (ST == NnStore::stream) V::stream(p, c[i][j]);
        else V::store(p, c[i][j]);
      });
    });
    return;
  }
  static_for<RB>([&](auto i) {
    static_for<NV>([&](auto j) {
      float* p = C + i * ldc + j * L;
      const bool mk = TAIL && j == NV - 1;
      R v = c[i][j];
      if (acc) v = V::add(v, mk ? V::loadm(p, m) : V::load(p));
      if (ep.scale) {
        R sc = mk ? V::loadm(ep.scale + j * L, m) : V::load(ep.scale + j * L);
        R sh = mk ? V::loadm(ep.shift + j * L, m) : V::load(ep.shift + j * L);
        v = act_apply(ep.act, V::fma(v, sc, sh));
      }
      if (mk) V::storem(p, v, m);
      else if (nt) V::stream(p, v);
      else V::store(p, v);
    });
  });
}

// All rows of one N tile of width NV vectors: full RB-row tiles, then the leftover rows one by one.
// pf_rows > 0 (the first N tile, which reads A from memory): each tile first asks L2 for the next
// tile's rows of A, while they exist within pf_rows rows of A: the hardware prefetchers do not keep
// up with RB rows walked in parallel (bench/RESULTS.md, "Pointwise: the next tile's A rows").
template <int NV, bool TAIL, NnStore ST>
inline void nn_column(int64_t rows, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                      int64_t ldc, M m, bool acc, const NnEpilogue& ep, int64_t pf_rows, bool nt) {
  constexpr int RB = kGemmRB[NV];
  int64_t r = 0;
  for (; r + RB <= rows; r += RB)
    nn_tile<RB, NV, TAIL, ST>(K, A + r * lda, lda, B, ldb, C + r * ldc, ldc, m, acc, ep,
                                 r + 2 * RB <= pf_rows ? A + (r + RB) * lda : nullptr, nt);
  // The leftover rows (fewer than RB) in tiles of 4, 2 and 1: each tile streams all of B once, so
  // taking them one by one read B up to RB - 1 more times (16 rows of a 4x4 map at batch 1: tiles of
  // 6, 6, 1, 1, 1, 1 -> 6, 6, 4).
  auto rest = [&](auto rb) SPNAS_INLINE {
    constexpr int RR = decltype(rb)::value;
    if constexpr (RR < RB) {
      for (; r + RR <= rows; r += RR)
        nn_tile<RR, NV, TAIL, ST>(K, A + r * lda, lda, B, ldb, C + r * ldc, ldc, m, acc, ep, nullptr, nt);
    }
  };
  rest(std::integral_constant<int, 4>{});
  rest(std::integral_constant<int, 2>{});
  for (; r < rows; ++r)
    nn_tile<1, NV, TAIL, ST>(K, A + r * lda, lda, B, ldb, C + r * ldc, ldc, m, acc, ep, nullptr, nt);
}

template <int NV>
inline void nn_column_any(bool tail, int64_t rows, int64_t K, const float* A, int64_t lda, const float* B,
                          int64_t ldb, float* C, int64_t ldc, M m, bool acc, const NnEpilogue& ep, int64_t pf_rows,
                          bool nt) {
  const NnStore st = acc || ep.scale ? NnStore::general : nt ? NnStore::stream : NnStore::plain;
  auto column = [&](auto tail_c, auto st_c) SPNAS_INLINE {
    nn_column<NV, decltype(tail_c)::value, decltype(st_c)::value>(rows, K, A, lda, B, ldb, C, ldc, m, acc, ep,
                                                                   pf_rows, nt);
  };
  auto by_store = [&](auto tail_c) SPNAS_INLINE {
    if (st == NnStore::plain) column(tail_c, std::integral_constant<NnStore, NnStore::plain>{});
    else if (st == NnStore::stream) column(tail_c, std::integral_constant<NnStore, NnStore::stream>{});
    else column(tail_c, std::integral_constant<NnStore, NnStore::general>{});
  };
  if (tail) by_store(std::true_type{});
  else by_store(std::false_type{});
}

thread_local Scratch g_scratch_panels;

// B's N tiles packed into panels: tile (v0, nv) as K rows of nv * L floats back to back, at P + K * v0 * L.
// A tile then walks its B columns sequentially; in place, rows ldb floats apart fall into few L1 sets
// when ldb is a multiple of a large power of two (e.g. 1152 columns: every row in one of 8 sets), and
// a tile's K rows of B no longer stay in L1 between the row tiles that share them.
inline void pack_panels(int64_t K, int64_t N, const float* B, int64_t ldb, bool transposed, bool lines, float* P) {
  const int64_t nvec = (N + L - 1) / L;
  for (int64_t v0 = 0; v0 < nvec;) {
    const int nv = gemm_tile_vectors(nvec - v0, lines);
    const int64_t w = nv * L, c0 = v0 * L, cols = N - c0 < w ? N - c0 : w;
    float* p = P + K * c0;
    if (transposed) {  // B^T [N, K]: its row c0 + c is the panel's column c
      for (int64_t c = 0; c < cols; ++c)
        for (int64_t k = 0; k < K; ++k) p[k * w + c] = B[(c0 + c) * ldb + k];
    } else {
      for (int64_t k = 0; k < K; ++k) std::memcpy(p + k * w, B + k * ldb + c0, size_t(cols) * sizeof(float));
    }
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = cols; c < w; ++c) p[k * w + c] = 0.0f;
    v0 += nv;
  }
}

void gemm_nn_simd(const GemmNN& g) {
  const int64_t rows = g.rows, K = g.K, N = g.N, lda = g.lda, ldc = g.ldc;
  const float* A = g.A;
  float* C = g.C;
  const ColumnMap* a_map = g.a_map;
  const bool accumulate = g.accumulate;
  const int64_t nvec = (N + L - 1) / L;
  const M tail_mask = V::mask(int(N % L == 0 ? L : N % L));
  // Non-temporal stores only of whole, aligned lines: every row's N columns are whole 16-float lines
  // (on AVX2 a line is the two vectors of one NV = 2 tile, stored back to back).
  const bool nt = g.stream && !accumulate && N % 16 == 0 && ldc % 16 == 0 && reinterpret_cast<uintptr_t>(C) % 64 == 0;
  // B wider than one tile is packed, where the rows are enough to repay the copy; B^T always.
  const bool packed = g.b_transposed || (g.ldb > kGemmMaxNV * L && rows >= 32);
  const float* P = nullptr;
  if (packed) {
    float* p = g_scratch_panels.get(size_t(K * nvec * L));
    pack_panels(K, N, g.B, g.ldb, g.b_transposed, nt, p);
    P = p;
  }
  // Rows per block: kGemmRowBlock, fewer where K is so large that A's block would not stay in L2
  // (a multiple of 24 rows: whole tiles of 4, 6 and 8).
  int64_t block = kGemmBlockBytes / (K * int64_t(sizeof(float)));
  block = block >= kGemmRowBlock ? kGemmRowBlock : block < 24 ? 24 : block - block % 24;
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t rb = rows - r0 < block ? rows - r0 : block;
    const float* Ab = A + r0 * lda;
    int64_t ldp = lda;
    if (a_map) {  // the block's rows through the map (a sequential read: no A prefetch needed)
      float* S = g_scratch_map.get(size_t(rb * K));
      map_rows(rb, K, Ab, lda, *a_map, S);
      Ab = S, ldp = K;
    }
    float* Cb = C + r0 * ldc;
    for (int64_t v0 = 0; v0 < nvec;) {
      const int nv = gemm_tile_vectors(nvec - v0, nt);
      const bool tail = v0 + nv == nvec && N % L != 0;
      const M m = tail ? tail_mask : V::mask(L);
      const float* Bt = packed ? P + K * v0 * L : g.B + v0 * L;
      const int64_t ldb = packed ? nv * L : g.ldb;
      float* Ct = Cb + v0 * L;
      NnEpilogue ep;
      if (g.scale) ep = {g.scale + v0 * L, g.shift + v0 * L, g.act};
      // A from memory (not for a mapped copy); into the next row block too
      const int64_t pf_rows = v0 == 0 && !a_map ? rows - r0 : 0;
      switch (nv) {
        case 1: nn_column_any<1>(tail, rb, K, Ab, ldp, Bt, ldb, Ct, ldc, m, accumulate, ep, pf_rows, nt); break;
        case 2: nn_column_any<2>(tail, rb, K, Ab, ldp, Bt, ldb, Ct, ldc, m, accumulate, ep, pf_rows, nt); break;
        case 3: nn_column_any<3>(tail, rb, K, Ab, ldp, Bt, ldb, Ct, ldc, m, accumulate, ep, pf_rows, nt); break;
#if defined(SPNAS_SIMD_AVX512)
        case 4: nn_column_any<4>(tail, rb, K, Ab, ldp, Bt, ldb, Ct, ldc, m, accumulate, ep, pf_rows, nt); break;
#endif
        default: break;
      }
      v0 += nv;
    }
  }
  if (nt) _mm_sfence();  // the streamed lines are visible before this thread reports its share done
}

// C[KB, NV vectors] += sum over rows of A[r, k0 + i] * Bm[r, :]; C has row stride ldc. With `set`
// (the first chain of a product that does not accumulate) C = the sum: C is written once, not
// zeroed and then read back.
template <int KB, int NV, bool TAIL>
inline void tn_tile(int64_t rows, const float* A, int64_t lda, const float* Bm, int64_t ldb, float* C, int64_t ldc,
                    M m, bool set) {
  R c[KB][NV];
  static_for<KB>([&](auto i) { static_for<NV>([&](auto j) { c[i][j] = V::zero(); }); });
  for (int64_t r = 0; r < rows; ++r) {
    const float* b = Bm + r * ldb;
    R bv[NV];
    static_for<NV>([&](auto j) { bv[j] = (TAIL && j == NV - 1) ? V::loadm(b + j * L, m) : V::load(b + j * L); });
    const float* a = A + r * lda;
    static_for<KB>([&](auto i) {
      R av = V::set1(a[i]);
      static_for<NV>([&](auto j) { c[i][j] = V::fma(av, bv[j], c[i][j]); });
    });
  }
  static_for<KB>([&](auto i) {
    static_for<NV>([&](auto j) {
      float* p = C + i * ldc + j * L;
      const bool mk = TAIL && j == NV - 1;
      R v = set ? c[i][j] : V::add(c[i][j], mk ? V::loadm(p, m) : V::load(p));
      if (mk) V::storem(p, v, m);
      else V::store(p, v);
    });
  });
}

// The next row block's lines of A and Bm requested into L2 in equal shares, one share after each
// tn_tile of the current block (which then runs from L2 while DRAM delivers the next). Without it a
// block's first pass waits on DRAM and its other passes leave DRAM idle. Only where K >= 64: there
// a block takes enough passes to hide its successor; below, it lost (bench/RESULTS.md, "Pointwise:
// large products").
struct TnPrefetch {
  const char* p[2] = {nullptr, nullptr};  // next lines of Bm's and A's ranges
  int64_t left[2] = {0, 0};                // lines not yet requested
  int64_t share = 0;                       // lines per step
  void step() {
    int64_t n = share;
    for (int i = 0; i < 2 && n > 0; ++i) {
      const int64_t t = left[i] < n ? left[i] : n;
      for (int64_t j = 0; j < t; ++j) _mm_prefetch(p[i] + j * 64, _MM_HINT_T1);
      p[i] += t * 64;
      left[i] -= t;
      n -= t;
    }
  }
};
constexpr int64_t kTnPrefetchMinK = 64;

// Calls f(kb, k) for the K tiles of an N tile whose full tiles are KB input channels: full tiles,
// then the leftover channels in tiles of 4, 2 and 1 (one by one, each would re-read the rows).
template <int KB, class F>
inline void for_k_tiles(int64_t K, const F& f) {
  int64_t k = 0;
  for (; k + KB <= K; k += KB) f(std::integral_constant<int, KB>{}, k);
  auto rest = [&](auto kb) SPNAS_INLINE {
    constexpr int KR = decltype(kb)::value;
    if constexpr (KR < KB)
      for (; k + KR <= K; k += KR) f(kb, k);
  };
  rest(std::integral_constant<int, 4>{});
  rest(std::integral_constant<int, 2>{});
  for (; k < K; ++k) f(std::integral_constant<int, 1>{}, k);
}

// One N tile over all K for one chain of at most kTnRowBlock rows; pf (may be nullptr) takes a step
// after each tile.
template <int NV, bool TAIL>
inline void tn_chain(int64_t rows, int64_t K, const float* A, int64_t lda, const float* Bm, int64_t ldb, float* C,
                     int64_t ldc, M m, TnPrefetch* pf, bool set) {
  for_k_tiles<kGemmRB[NV]>(K, [&](auto kb, int64_t k) SPNAS_INLINE {
    tn_tile<decltype(kb)::value, NV, TAIL>(rows, A + k, lda, Bm, ldb, C + k * ldc, ldc, m, set);
    if (pf) pf->step();
  });
}

// The number of tn_tile calls one row block of `rows` rows takes over all (K, N) tiles.
inline int64_t tn_chains(int64_t rows, int64_t K, int64_t nvec) {
  int64_t k_tiles = 0;
  for (int64_t v0 = 0; v0 < nvec;) {
    const int nv = gemm_tile_vectors(nvec - v0, false);
    auto count = [&](auto kb, int64_t) SPNAS_INLINE { ++k_tiles; };
    switch (nv) {
      case 1: for_k_tiles<kGemmRB[1]>(K, count); break;
      case 2: for_k_tiles<kGemmRB[2]>(K, count); break;
      case 3: for_k_tiles<kGemmRB[3]>(K, count); break;
#if defined(SPNAS_SIMD_AVX512)
      case 4: for_k_tiles<kGemmRB[4]>(K, count); break;
#endif
      default: break;
    }
    v0 += nv;
  }
  return k_tiles * ((rows + kTnRowBlock - 1) / kTnRowBlock);
}

template <int NV>
inline void tn_chain_any(bool tail, int64_t rows, int64_t K, const float* A, int64_t lda, const float* Bm,
                         int64_t ldb, float* C, int64_t ldc, M m, TnPrefetch* pf, bool set) {
  if (tail) tn_chain<NV, true>(rows, K, A, lda, Bm, ldb, C, ldc, m, pf, set);
  else tn_chain<NV, false>(rows, K, A, lda, Bm, ldb, C, ldc, m, pf, set);
}

void gemm_tn_simd(const GemmTN& g) {
  const int64_t rows = g.rows, K = g.K, N = g.N, lda = g.lda, ldb = g.ldb, ldc = g.ldc;
  const float* A = g.A;
  const float* Bm = g.B;
  float* C = g.C;
  const ColumnMap* a_map = g.a_map;
  if (!g.accumulate && rows == 0)  // (with rows, the first chain sets every element of C)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n) C[k * ldc + n] = 0.0f;
  const int64_t nvec = (N + L - 1) / L;
  const M tail_mask = V::mask(int(N % L == 0 ? L : N % L));
  // Row blocks whose A and Bm rows fit in about half of L2 while every (K, N) tile passes over them.
  int64_t block = (int64_t(512) << 10) / ((K + N) * int64_t(sizeof(float)));
  block = block < kTnRowBlock ? kTnRowBlock : block - block % kTnRowBlock;
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t rb = rows - r0 < block ? rows - r0 : block;
    const float* Ab = A + r0 * lda;
    const float* Bb = Bm + r0 * ldb;
    const float* Ap = Ab;  // what the passes read: A, or the block's mapped copy
    int64_t ldp = lda;
    if (a_map) {
      float* S = g_scratch_map.get(size_t(rb * K));
      map_rows(rb, K, Ab, lda, *a_map, S);
      Ap = S, ldp = K;
    }
    TnPrefetch next;
    const int64_t rn = rows - r0 - rb < block ? rows - r0 - rb : block;  // the next block's rows
    const bool prefetch = g.from_memory && K >= kTnPrefetchMinK && rn > 0;
    if (prefetch) {
      next.p[0] = reinterpret_cast<const char*>(Bb + rb * ldb);
      next.p[1] = reinterpret_cast<const char*>(Ab + rb * lda);
      next.left[0] = (rn * ldb * int64_t(sizeof(float)) + 63) / 64;
      next.left[1] = (rn * lda * int64_t(sizeof(float)) + 63) / 64;
      const int64_t steps = tn_chains(rb, K, nvec);
      next.share = (next.left[0] + next.left[1] + steps - 1) / steps;
    }
    TnPrefetch* pf = prefetch ? &next : nullptr;
    // Chain by chain, every (K, N) tile: a chain's rows of A and Bm are read from memory or L2 by the
    // first tile and from L1 by the others, where they fit.
    for (int64_t r = 0; r < rb; r += kTnRowBlock) {
      const int64_t cr = rb - r < kTnRowBlock ? rb - r : kTnRowBlock;
      const float* Ac = Ap + r * ldp;
      const float* Bc = Bb + r * ldb;
      const bool set = !g.accumulate && r0 == 0 && r == 0;
      for (int64_t v0 = 0; v0 < nvec;) {
        const int nv = gemm_tile_vectors(nvec - v0, false);
        const bool tail = v0 + nv == nvec && N % L != 0;
        const M m = tail ? tail_mask : V::mask(L);
        switch (nv) {
          case 1: tn_chain_any<1>(tail, cr, K, Ac, ldp, Bc + v0 * L, ldb, C + v0 * L, ldc, m, pf, set); break;
          case 2: tn_chain_any<2>(tail, cr, K, Ac, ldp, Bc + v0 * L, ldb, C + v0 * L, ldc, m, pf, set); break;
          case 3: tn_chain_any<3>(tail, cr, K, Ac, ldp, Bc + v0 * L, ldb, C + v0 * L, ldc, m, pf, set); break;
#if defined(SPNAS_SIMD_AVX512)
          case 4: tn_chain_any<4>(tail, cr, K, Ac, ldp, Bc + v0 * L, ldb, C + v0 * L, ldc, m, pf, set); break;
#endif
          default: break;
        }
        v0 += nv;
      }
    }
  }
}

}  // namespace
}  // namespace spnas
