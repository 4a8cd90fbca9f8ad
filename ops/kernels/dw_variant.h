// Which depthwise kernel runs for a shape, and why: one function (dw_variant) decides from one
// description (the shape, the direction, the ISA and the call's output facts); the SIMD kernels
// dispatch on what it returns, and tests and docs can ask it the same question
// (ops/README.md has the table of variants and the shapes that take them).
//
// Declarations only (plus constants): this header is included by the per-ISA kernel files, whose
// inline code must never be merged with baseline copies (see ops/kernels/simd_vector.h).
#pragma once
#include <string>

#include "ops/kernels.h"

namespace spnas {

enum class Isa { ref, avx2, avx512 };
Isa isa_named(const std::string& name);  // "ref", "avx2", "avx512"; throws otherwise
const char* isa_name(Isa isa);

// The register budget of each SIMD ISA, in one place: floats per vector, and outputs per register
// tile of the correlation (forward / backward-data) and of the weight-gradient tile kernel.
//   AVX2 (16 ymm):    8 accumulators + up to 5 weights + 1 input;  2 x 5 accumulators + 4 dy + 1 input.
//   AVX-512 (32 zmm): the same correlation tile; 2 x 5 accumulators + 8 dy + 1 input.
struct IsaRegisters {
  int lanes, corr_tile_px, wgrad_tile_px;
};
constexpr IsaRegisters kAvx2Registers{8, 8, 4};
constexpr IsaRegisters kAvx512Registers{16, 8, 8};

enum class DwDirection { forward, backward_data, backward_weights };
const char* dw_direction_name(DwDirection dir);  // "fwd", "bwd_d", "bwd_w"

// The depthwise kernels. Forward, the fused forward (batch norm + activation in the epilogue) and
// backward-data are all correlations (backward-data: one stride-1 correlation per output phase of
// the stride, with the flipped sub-kernel); the weight gradient has kernels of its own.
enum class DwVariant {
  reference,            // the scalar loops (the reference table; backward-data at strides above 4)
  corr_tile8,           // 8 outputs x 1 vector of channels per register tile, kernel width unrolled
  corr_tile4x2,         // AVX2, streamed outputs: 4 outputs x 2 vectors, so stores fill whole 64-byte lines
  corr_channel_groups,  // AVX-512, 5x5 stride 2 on 4-wide outputs: groups of 4 channel vectors walk
                        // all rows of an image, so their input lines stay in L1
  corr_generic,         // any other kernel width or stride: one output at a time, taps checked
  wgrad_tile,           // tiles of outputs, the K x K partial sums loaded and stored per tile and kernel row
  wgrad_band,           // a channel vector's K x K sums in registers across a band of output rows
  wgrad_band_2blocks,   // AVX-512, 3x3 on 8- and 4-wide rows: two channel vectors per band pass
  wgrad_image,          // 3x3 on small maps: image by image, pairs (AVX2) or single (AVX-512) vectors
  wgrad_generic,        // any other kernel size or stride: one output at a time, sums in memory
};
const char* dw_variant_name(DwVariant v);  // "dw_corr_tile8", ..., "dw_wgrad_image", "dw_reference"
constexpr DwVariant kDwVariants[] = {
    DwVariant::reference,  DwVariant::corr_tile8, DwVariant::corr_tile4x2, DwVariant::corr_channel_groups,
    DwVariant::corr_generic, DwVariant::wgrad_tile, DwVariant::wgrad_band, DwVariant::wgrad_band_2blocks,
    DwVariant::wgrad_image, DwVariant::wgrad_generic};

// What runs, with the knobs the same rules set. The correlation knobs are unused by the weight
// gradient and the other way round.
struct DwChoice {
  DwVariant variant;
  const char* why;  // the rule that picked the variant, one line
  // correlations
  bool stream;       // full vectors go out with non-temporal stores
  bool pin_columns;  // each input column is pinned in a register (else GCC folds its load into every FMA)
  // both
  bool prefetch_rows;  // each tile asks L2 for the pixels of the rows the next output row adds
  // weight gradient (the band kernels; wgrad_image and wgrad_band_2blocks leave the channels past
  // their last full group to wgrad_band)
  int band_tile_px;        // outputs per band tile: 4, or the ISA's wgrad_tile_px
  int band_row_group;      // AVX-512: output rows per tile on rows exactly one tile wide (1, 2 or 4)
  bool band_whole_range;   // one band over all of a thread's rows (else bands sized to stay in L2)
  bool image_prefetch;     // wgrad_image: the thread's next image is requested into L2 during this one
};

// The kernel for d in direction dir on isa. accumulate: the op adds into its output (never streamed);
// output_aligned: the output is aligned to the ISA's vector (streaming needs it; engine tensors are
// 64-byte aligned). Streaming also depends on this machine's L3 (stream_min_bytes, ops/kernels.h).
DwChoice dw_variant(const DwConvDesc& d, DwDirection dir, Isa isa, bool accumulate = false,
                    bool output_aligned = true);

// Whether variant v can run d in direction dir on isa (the kernels dispatch on the shapes each was
// compiled for; the reference always can).
bool dw_variant_applies(const DwConvDesc& d, DwDirection dir, Isa isa, DwVariant v);

// For benchmarks that race the variants of one shape in one process (bench_conv --dw-variants): while
// set, dw_variant returns v for direction dir wherever v applies, with the rest of its choice (streaming,
// prefetch, band sizes) made by the same rules as if the chooser had picked v; elsewhere it is ignored.
// Not thread-safe: set it between kernel calls, from the thread that calls them.
void force_dw_variant(DwDirection dir, DwVariant v);
void clear_forced_dw_variants();

}  // namespace spnas
