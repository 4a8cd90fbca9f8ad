// The depthwise variant chooser (dw_variant.h): every rule that picks a kernel for a shape, in one
// place. The figures behind each rule are in bench/RESULTS.md (section named in the rule's comment).
#include "ops/kernels/dw_variant.h"

#include <optional>
#include <stdexcept>

namespace spnas {

Isa isa_named(const std::string& name) {
  if (name == "ref") return Isa::ref;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512") return Isa::avx512;
  throw std::invalid_argument("unknown kernel ISA '" + name + "' (expected ref, avx2 or avx512)");
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::ref: return "ref";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "?";
}

const char* dw_direction_name(DwDirection dir) {
  switch (dir) {
    case DwDirection::forward: return "fwd";
    case DwDirection::backward_data: return "bwd_d";
    case DwDirection::backward_weights: return "bwd_w";
  }
  return "?";
}

const char* dw_variant_name(DwVariant v) {
  switch (v) {
    case DwVariant::reference: return "dw_reference";
    case DwVariant::corr_tile8: return "dw_corr_tile8";
    case DwVariant::corr_tile4x2: return "dw_corr_tile4x2";
    case DwVariant::corr_channel_groups: return "dw_corr_channel_groups";
    case DwVariant::corr_generic: return "dw_corr_generic";
    case DwVariant::wgrad_tile: return "dw_wgrad_tile";
    case DwVariant::wgrad_band: return "dw_wgrad_band";
    case DwVariant::wgrad_band_2blocks: return "dw_wgrad_band_2blocks";
    case DwVariant::wgrad_image: return "dw_wgrad_image";
    case DwVariant::wgrad_generic: return "dw_wgrad_generic";
  }
  return "?";
}

namespace {

const IsaRegisters& registers(Isa isa) { return isa == Isa::avx512 ? kAvx512Registers : kAvx2Registers; }

// The correlation kernel widths and strides compiled unrolled (the rest run corr_generic).
bool corr_unrolled(int64_t kw, int s) {
  return (s == 1 && (kw == 1 || kw == 2 || kw == 3 || kw == 5)) || (s == 2 && (kw == 3 || kw == 5));
}

// Backward-data runs S x S stride-1 correlations with sub-kernels of width ceil((K - r) / S), r the
// phase's tap offset: unrolled when every phase's width is (a phase without taps only zeroes).
bool phases_unrolled(const DwConvDesc& d) {
  for (int pw = 0; pw < d.S && pw < d.W; ++pw) {
    const int rw = int((pw + d.pad_l) % d.S);
    const int nw = rw < d.K ? (d.K - 1 - rw) / d.S + 1 : 0;
    if (nw > 0 && !corr_unrolled(nw, 1)) return false;
  }
  return true;
}

// Non-temporal stores for outputs that cannot stay in the L3 together with their input (a normal
// store would first read every output line from DRAM); smaller ones stay in cache for the next op.
// A stride-2 forward reads 4x what it writes, and normal stores would evict input rows the next
// output row reuses: it streams from 1 MiB of output. ("Depthwise streaming stores", RESULTS.md)
bool corr_streams(const DwConvDesc& d, DwDirection dir, int lanes, bool accumulate, bool output_aligned) {
  if (accumulate || !output_aligned || d.C % lanes != 0) return false;
  const int64_t in = d.N * d.H * d.W * d.C, out = d.N * d.OH * d.OW * d.C;
  const int64_t bytes = int64_t(sizeof(float)) * (in + out);
  const bool reads_mostly = dir == DwDirection::forward && d.H * d.W >= 3 * d.OH * d.OW &&
                            int64_t(sizeof(float)) * out >= (int64_t(1) << 20);
  return bytes > stream_min_bytes() || reads_mostly;
}

// Software prefetch pays when a tile walks a wide row with a large pixel stride; on rows of at most 8
// pixels or few channels the hardware prefetchers follow and the instructions cost 5-20 %.
bool prefetch_rows(int64_t row_width, int64_t C) { return row_width > 8 && C >= 64; }

// forced: a variant set by force_dw_variant that applies to d (else nullptr).
DwChoice correlation(const DwConvDesc& d, DwDirection dir, Isa isa, bool accumulate, bool output_aligned,
                     const DwVariant* forced) {
  const IsaRegisters& r = registers(isa);
  DwChoice c{};
  c.band_tile_px = c.band_row_group = 0;
  if (dir == DwDirection::backward_data && d.S > 4) {
    c.variant = DwVariant::reference;
    c.why = "backward-data at a stride above 4 (the SIMD path prepares at most 4 x 4 phases)";
    return c;
  }
  const bool fwd = dir == DwDirection::forward;
  c.stream = corr_streams(d, dir, r.lanes, accumulate, output_aligned);
  // Backward-data's correlations read dy, OW wide, at stride 1.
  c.prefetch_rows = prefetch_rows(fwd ? d.W : d.OW, d.C);
  // At stride 2 pinning lost on 32-wide inputs (bench/RESULTS.md, "Depthwise tile and band kernels").
  c.pin_columns = !fwd || d.S == 1 || d.W <= 16;
  if (forced) {
    c.variant = *forced;
    c.why = "forced (force_dw_variant)";
  } else if (fwd ? !corr_unrolled(d.K, d.S) : !phases_unrolled(d)) {
    c.variant = DwVariant::corr_generic;
    c.why = "kernel width or stride without an unrolled tile";
  } else if (fwd && isa == Isa::avx512 && d.K == 5 && d.S == 2 && d.OW == 4) {
    c.variant = DwVariant::corr_channel_groups;
    c.why = "AVX-512 5x5 stride 2 on 8-wide inputs: channel groups keep their input lines in L1 across rows";
  } else if (isa == Isa::avx2 && ((!fwd && d.S > 1) || (d.K == 5 && d.S == 1))) {
    // Raced in one process (bench/RESULTS.md, "Depthwise correlations on AVX2: which tile"): two
    // vectors of 5 weights and 8 accumulators spill from the 16 registers, and backward-data's
    // stride-2 phases are 1-3 wide.
    c.variant = DwVariant::corr_tile8;
    c.why = "AVX2 5-wide stride-1 correlations and stride-2 backward-data: the one-vector tile (fewer registers)";
  } else if (isa == Isa::avx2 && (c.stream || (d.K == 3 && d.S == 1 && d.C >= 2 * r.lanes))) {
    c.variant = DwVariant::corr_tile4x2;
    c.why = "AVX2 3x3 at stride 1, and streamed outputs: 16-channel tiles use whole 64-byte lines";
  } else {
    c.variant = DwVariant::corr_tile8;
    c.why = "the default correlation tile";
  }
  return c;
}

// The 3x3 shapes of the image kernel. AVX2: 8x8 and 4x4 maps, 16- and 8-wide inputs at stride 2;
// AVX-512: 8x8 maps and 16-wide inputs at stride 2 (8x8 inputs at stride 2 and 4x4 maps keep the
// two-block band there). A group of channels is a whole 64-byte line: two vectors on AVX2, one on AVX-512.
bool image_kernel_fits(const DwConvDesc& d, Isa isa) {
  if (d.K != 3 || d.C < 16) return false;
  const bool avx2 = isa == Isa::avx2;
  if (d.S == 1) return d.pad_t == 1 && d.pad_l == 1 && d.W == d.OW && (d.W == 8 || (avx2 && d.W == 4));
  return d.S == 2 && (d.pad_t == 0 || d.pad_t == 1) && d.pad_l == 0 && d.W == 2 * d.OW &&
         (d.W == 16 || (avx2 && d.W == 8));
}

// The AVX-512 two-block band pass: 3x3 on 8-wide rows at stride 1 or 2 and 4-wide at stride 1, under
// "same" padding (pad_l 1 at stride 1, 0 at stride 2 on these even widths), with a pair of vectors.
bool band_2blocks_fits(const DwConvDesc& d, const IsaRegisters& r) {
  if (d.K != 3 || d.C < 2 * r.lanes || d.pad_l != (d.S == 1 ? 1 : 0)) return false;
  return (d.W == 8 && d.OW == 8 / d.S) || (d.S == 1 && d.W == 4 && d.OW == 4);
}

// The weight-gradient kernels compiled for a kernel size and stride (the rest run wgrad_generic).
bool wgrad_unrolled(const DwConvDesc& d) { return (d.K == 3 || d.K == 5) && (d.S == 1 || d.S == 2); }

// forced: as for correlation.
DwChoice weight_gradient(const DwConvDesc& d, Isa isa, const DwVariant* forced) {
  const IsaRegisters& r = registers(isa);
  DwChoice c{};
  c.prefetch_rows = prefetch_rows(d.W, d.C);
  // Band tiles: 4 outputs on rows of at most 4 (a wider tile would be half zeros) and for 5x5 (25
  // accumulators), else the ISA's tile. Rows exactly one tile wide go 2 or 4 at a time on AVX-512
  // (the rows share their input rows; 9 accumulators + rows x tile dy + 1 input fit 32 registers).
  c.band_tile_px = d.OW <= 4 || d.K == 5 ? 4 : r.wgrad_tile_px;
  c.band_row_group = isa == Isa::avx512 && d.K == 3 && d.OW == c.band_tile_px && !c.prefetch_rows
                         ? (c.band_tile_px == 4 ? 4 : 2)
                         : 1;
  const bool image = forced ? *forced == DwVariant::wgrad_image : image_kernel_fits(d, isa);
  // Maps at most 8 wide: one band over all the thread's rows, a single constant-stride stream per
  // channel vector that the hardware prefetchers follow; wider maps: bands sized for L2.
  c.band_whole_range = d.W <= 8 || image;
  c.image_prefetch = d.S == 2 || d.W == 8;  // not on 4x4 maps, where it was ~10 % slower
  const bool unrolled = wgrad_unrolled(d);
  if (forced) {
    c.variant = *forced;
    c.why = "forced (force_dw_variant)";
  } else if (!unrolled) {
    c.variant = DwVariant::wgrad_generic;
    c.why = "kernel size or stride without an unrolled kernel";
  } else if (d.K == 3 && image) {
    c.variant = DwVariant::wgrad_image;
    c.why = isa == Isa::avx2 ? "3x3 on a small map: image by image in pairs of vectors (the band reads half lines)"
                             : "3x3 on an 8x8 map or a 16-wide input at stride 2: image by image";
  } else if (d.K == 3 && isa == Isa::avx2 && d.W >= 16) {
    // Raced in one process with bench_conv --dw-variants, 1 and 2 threads, on the Zen 3
    // (bench/RESULTS.md, "Depthwise weight gradient on AVX2: the tile on wide maps").
    c.variant = DwVariant::wgrad_tile;
    c.why = "AVX2 3x3 on maps 16 wide or more: the tile, partial sums in L1, beat the band (8-channel half lines)";
  } else if (d.K == 3 && (d.W <= 8 || (d.S == 1 && d.W >= 16) || d.C <= 32)) {
    if (isa == Isa::avx512 && band_2blocks_fits(d, r)) {
      c.variant = DwVariant::wgrad_band_2blocks;
      c.why = "AVX-512 3x3 on narrow rows: two channel vectors per band pass, half the passes";
    } else {
      c.variant = DwVariant::wgrad_band;
      c.why = "3x3: the taps of a channel vector in registers across a band of rows";
    }
  } else if (d.K == 3) {
    c.variant = DwVariant::wgrad_tile;
    c.why = "3x3 at stride 2 on inputs wider than 8 with C > 32: the band kernel was slower here";
  } else if (isa == Isa::avx512 && !(d.S == 2 && d.W >= 32)) {
    c.variant = DwVariant::wgrad_band;
    c.why = "AVX-512 5x5: the 25 accumulators fit the 32 registers";
  } else {
    c.variant = DwVariant::wgrad_tile;
    c.why = isa == Isa::avx2 ? "AVX2 5x5: 25 accumulators do not fit 16 registers"
                             : "AVX-512 5x5 at stride 2 on inputs 32 wide or more: the band kernel was no faster";
  }
  return c;
}

std::optional<DwVariant> g_forced[3];  // force_dw_variant, per DwDirection

}  // namespace

bool dw_variant_applies(const DwConvDesc& d, DwDirection dir, Isa isa, DwVariant v) {
  // The SIMD entry points fall back to the reference only in backward-data (strides above 4).
  if (v == DwVariant::reference) return isa == Isa::ref || dir == DwDirection::backward_data;
  if (isa == Isa::ref) return false;
  const bool avx512 = isa == Isa::avx512, fwd = dir == DwDirection::forward;
  if (dir == DwDirection::backward_weights) {
    const bool unrolled = wgrad_unrolled(d);
    switch (v) {
      case DwVariant::wgrad_generic: return true;
      case DwVariant::wgrad_tile: return unrolled;
      case DwVariant::wgrad_band: return unrolled && (d.K == 3 || avx512);  // 25 accumulators need 32 registers
      case DwVariant::wgrad_band_2blocks: return avx512 && unrolled && band_2blocks_fits(d, registers(isa));
      case DwVariant::wgrad_image: return unrolled && image_kernel_fits(d, isa);
      default: return false;
    }
  }
  if (dir == DwDirection::backward_data && d.S > 4) return false;  // only the reference
  const bool unrolled = fwd ? corr_unrolled(d.K, d.S) : phases_unrolled(d);
  switch (v) {
    case DwVariant::corr_generic: return true;
    case DwVariant::corr_tile8: return unrolled;
    case DwVariant::corr_tile4x2: return unrolled && isa == Isa::avx2;
    case DwVariant::corr_channel_groups: return unrolled && fwd && avx512 && d.K == 5 && d.S == 2 && d.OW == 4;
    default: return false;
  }
}

void force_dw_variant(DwDirection dir, DwVariant v) { g_forced[int(dir)] = v; }

void clear_forced_dw_variants() {
  for (auto& f : g_forced) f.reset();
}

DwChoice dw_variant(const DwConvDesc& d, DwDirection dir, Isa isa, bool accumulate, bool output_aligned) {
  if (isa == Isa::ref) {
    DwChoice c{};
    c.variant = DwVariant::reference;
    c.why = "the scalar reference table";
    return c;
  }
  const std::optional<DwVariant>& f = g_forced[int(dir)];
  const DwVariant* forced = f && dw_variant_applies(d, dir, isa, *f) ? &*f : nullptr;
  if (dir == DwDirection::backward_weights) return weight_gradient(d, isa, forced);
  return correlation(d, dir, isa, accumulate, output_aligned, forced);
}

}  // namespace spnas
