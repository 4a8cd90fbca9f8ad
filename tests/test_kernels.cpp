// The kernels behind the ops (ops/kernels.h), path by path against the scalar reference:
//  * which depthwise variant each shape takes (dw_variant, per ISA, asked for every ISA whether or not
//    this CPU has it), and that the depthwise test cases below reach every variant of each ISA;
//  * the AVX2 and AVX-512 depthwise kernels (forward, fused forward + batch norm + activation against
//    the unfused reference pair, backward-data, backward-weights, overwrite and accumulate) on odd
//    shapes (H, W, C not multiples of the vector width, 1x1 maps, batch 1), on 1-3 threads, with and
//    without streamed outputs; an ISA this CPU lacks is reported as skipped;
//  * the batch-norm kernels, and the pointwise GEMMs (ours and OpenBLAS, both work splits, streamed
//    outputs, prefetched row blocks, the batch-norm column map) against double-precision loops.
// Inputs are random in [-1, 1]; tolerances are ~1e-5 relative to the size of the terms summed, so a
// single wrong tap or index fails by orders of magnitude.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/aligned_vector.h"
#include "engine/cpu.h"
#include "engine/threads.h"
#include "ops/kernels.h"
#include "ops/kernels/dw_variant.h"

using namespace spnas;

namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

// Outputs in 64-byte-aligned buffers, as engine tensors are, so that the kernels' non-temporal-store
// paths run.
using AVec = AlignedVector;
AVec aligned(const std::vector<float>& v) { return AVec(v.begin(), v.end()); }

// Largest |a - b| / (1 + |b| + scale), reported with the index of the worst element.
struct Diff {
  double worst = 0;
  size_t at = 0;
};
template <class A, class B>
Diff compare(const A& a, const B& b, double scale) {
  Diff d;
  for (size_t i = 0; i < a.size(); ++i) {
    double e = std::fabs(double(a[i]) - b[i]) / (1.0 + std::fabs(b[i]) + scale);
    if (!(e <= d.worst)) d = {std::isnan(e) ? 1e30 : e, i};
  }
  return d;
}

std::vector<std::string> fast_isas() {
  std::vector<std::string> v;
  for (const char* isa : {"avx2", "avx512"})
    if (kernels_for(isa)) v.push_back(isa);
  return v;
}

// The reference table and every fast one.
std::vector<std::string> all_isas() {
  std::vector<std::string> v = {"ref"};
  for (const std::string& isa : fast_isas()) v.push_back(isa);
  return v;
}

struct DwShape {
  int64_t N, H, W, C;
};
const DwShape kDwShapes[] = {
    {1, 1, 1, 5},  {1, 1, 1, 16}, {2, 7, 5, 19}, {1, 9, 11, 33}, {3, 6, 4, 17},  {1, 8, 8, 16},
    {2, 13, 3, 40}, {1, 2, 9, 7},  {1, 3, 3, 24}, {2, 16, 16, 9}, {1, 32, 32, 8}, {1, 12, 20, 72},
    // A 4-wide map with channel blocks and a tail, and rows whose last tile is 4 wide (12, 24 / 2):
    // the tiles whose border is resolved at compile time (dw_correlation.h, corr_tile_all_c_border).
    {1, 4, 4, 40},  {1, 5, 12, 24}, {1, 3, 24, 16},
    // Rows 8 wide (stride 1 and 2) with pairs of channel blocks, then a block and a tail
    // (dw_wgrad_band_2blocks; the 4x4 case is {1, 4, 4, 40} above), on 8 and 5 rows.
    {2, 8, 8, 72},  {1, 5, 8, 48},
    // dw_corr_channel_groups (5x5 stride 2, 4-wide outputs): two groups and a tail on 7-wide rows,
    // and with two threads one starts in the middle of an image.
    {3, 8, 7, 136},
    // dw_wgrad_image: 8- and 4-wide maps at stride 1, 16- and 8-wide inputs at stride 2 (also
    // {2, 8, 8, 72} and {1, 5, 8, 48} above). One input row (H = 1) with a group and a block left
    // over; 3-row images whose groups end in a masked tail; groups and a block on 16-wide rows, with
    // an odd height (a group is two blocks on AVX2, one on AVX-512).
    {2, 1, 8, 24}, {2, 3, 4, 33}, {2, 7, 16, 40},
};

// One depthwise test case: a shape and the streaming threshold it runs under (set_stream_min_bytes),
// which decides whether outputs stream and so which correlation tile AVX2 takes.
struct DwCase {
  DwConvDesc d;
  int64_t stream_min_bytes;
  bool all_thread_counts;  // also run on 1 and 3 threads (else on 2)
};
constexpr int64_t kNoStreaming = int64_t(1) << 40;

// Every case the depthwise kernel tests run, in one list, so that the coverage test below asks the
// chooser about exactly these.
std::vector<DwCase> dw_cases() {
  std::vector<DwCase> v;
  // The odd shapes: kernel sizes 3 and 5 (the unrolled ones, on all thread counts), 1 and 2 (unrolled
  // for stride 1 only), 4 and 7 (the generic kernels); strides 1, 2, and 5 (backward-data falls back
  // to the reference above 4).
  for (const DwShape& s : kDwShapes)
    for (int K : {3, 5, 1, 2, 4, 7})
      for (int S : {1, 2, 5}) {
        if (S == 5 && K != 3) continue;
        v.push_back({dwconv_desc(s.N, s.H, s.W, s.C, K, S), kNoStreaming, K == 3 || K == 5});
      }
  // Large shapes: ops whose input and output exceed stream_min_bytes() take non-temporal stores, and
  // rows wider than 8 pixels with C >= 64 prefetch the next rows; the small shapes reach neither. The
  // threshold is 1 MiB here (3/4 of the L3 by default): N = 3 at 32x32x136 is 1.7 MB of input and as
  // much output at stride 1, 2.1 MB in all at stride 2; 16-wide rows, 8 images: 1.1 MB each way. The
  // same shapes with the threshold above them take normal stores. 136 channels: AVX2's whole-line
  // tiles (dw_corr_tile4x2) leave one 8-channel block over.
  for (int64_t min_bytes : {int64_t(1) << 20, kNoStreaming})
    for (int K : {3, 5})
      for (int S : {1, 2}) {
        v.push_back({dwconv_desc(3, 32, 32, 136, K, S), min_bytes, false});
        v.push_back({dwconv_desc(8, 16, 16, 136, K, S), min_bytes, false});
      }
  return v;
}

std::string shape_name(const DwConvDesc& d) {
  return "N" + std::to_string(d.N) + " H" + std::to_string(d.H) + " W" + std::to_string(d.W) + " C" +
         std::to_string(d.C) + " K" + std::to_string(d.K) + " S" + std::to_string(d.S);
}

// dirs: which directions to check, bits 1 forward (and fused forward), 2 backward-data, 4 backward-weights.
void check_dw_all(const KernelTable& kt, const DwConvDesc& d, uint32_t seed, unsigned dirs = 7) {
  const size_t in = size_t(d.in_elems()), out = size_t(d.out_elems()), wn = size_t(d.K) * d.K * d.C;
  const auto x = random_vec(in, seed), w = random_vec(wn, seed + 1), dy = random_vec(out, seed + 2);
  const double taps = double(d.K) * d.K;
  INFO(std::string(kt.name), " ", shape_name(d));

  // forward
  if (dirs & 1) {
    std::vector<float> y_ref(out);
    AVec y(out, 7.0f);
    dwconv_forward_ref(d, x.data(), w.data(), y_ref.data());
    kt.dwconv_forward(d, x.data(), w.data(), y.data());
    Diff f = compare(y, y_ref, taps);
    INFO("forward worst ", f.worst, " at ", f.at);
    CHECK(f.worst < 1e-6);

    // fused forward, each activation, against the unfused reference pair
    const auto scale = random_vec(d.C, seed + 3, 0.5f, 4.0f), shift = random_vec(d.C, seed + 4, -1.0f, 3.0f);
    for (Act act : {Act::None, Act::ReLU, Act::ReLU6}) {
      std::vector<float> z_ref(out);
      AVec z(out, 7.0f);
      dwconv_bn_act_forward_ref(d, x.data(), w.data(), scale.data(), shift.data(), act, z_ref.data());
      kt.dwconv_bn_act_forward(d, x.data(), w.data(), scale.data(), shift.data(), act, z.data());
      Diff fz = compare(z, z_ref, 4 * taps);
      INFO("fused forward act ", int(act), " worst ", fz.worst, " at ", fz.at);
      CHECK(fz.worst < 1e-6);
    }
  }

  // backward data, overwrite and accumulate
  for (bool acc : {false, true}) {
    if (!(dirs & 2)) continue;
    const auto init = random_vec(in, seed + 5);
    std::vector<float> dx_ref = init;
    AVec dx = acc ? aligned(init) : AVec(in, 7.0f);
    dwconv_backward_data_ref(d, dy.data(), w.data(), dx_ref.data(), acc);
    kt.dwconv_backward_data(d, dy.data(), w.data(), dx.data(), acc);
    Diff b = compare(dx, dx_ref, taps);
    INFO("backward data accumulate=", acc, " worst ", b.worst, " at ", b.at);
    CHECK(b.worst < 1e-6);
  }

  // backward weights, overwrite and accumulate
  for (bool acc : {false, true}) {
    if (!(dirs & 4)) continue;
    const auto init = random_vec(wn, seed + 6);
    std::vector<float> dw_ref = init;
    AVec dw = acc ? aligned(init) : AVec(wn, 7.0f);
    dwconv_backward_weights_ref(d, x.data(), dy.data(), dw_ref.data(), acc);
    kt.dwconv_backward_weights(d, x.data(), dy.data(), dw.data(), acc);
    // The kernels sum m = N*OH*OW terms per tap in float (the 3x3 band kernel in chains of hundreds):
    // that rounding grows ~linearly in m, so the scale does too (the double reference is exact by
    // comparison). A wrong tap or index still misses by a whole term, ~1/m after scaling.
    const double m = double(d.N * d.OH * d.OW);
    Diff b = compare(dw, dw_ref, std::max(std::sqrt(m), m / 4));
    INFO("backward weights accumulate=", acc, " worst ", b.worst, " at ", b.at);
    CHECK(b.worst < 1e-6);
  }
}

}  // namespace

TEST_CASE("dispatch: tables exist for the CPU's ISA") {
  const std::string cpu = cpu_isa();
  if (cpu == "avx512") CHECK(kernels_for("avx512") != nullptr);
  if (cpu != "ref") CHECK(kernels_for("avx2") != nullptr);
  CHECK(std::string(kernels().name) == (cpu == "ref" ? "ref" : cpu));
  CHECK(std::string(reference_kernels().name) == "ref");
}

const DwDirection kDirections[] = {DwDirection::forward, DwDirection::backward_data, DwDirection::backward_weights};

DwVariant variant_of(int64_t N, int64_t H, int64_t W, int64_t C, int K, int S, DwDirection dir, Isa isa) {
  return dw_variant(dwconv_desc(N, H, W, C, K, S), dir, isa).variant;
}

TEST_CASE("dw_variant: the kernel each training shape takes, per ISA") {
  // Under a fixed streaming threshold (that of a 32 MiB L3), so the answers do not depend on this CPU.
  set_stream_min_bytes(int64_t(24) << 20);
  using D = DwDirection;
  using Var = DwVariant;
  const D fwd = D::forward, bwd_d = D::backward_data, bwd_w = D::backward_weights;
  struct Expect {
    int64_t H, C;
    int K, S;
    DwDirection dir;
    DwVariant avx2, avx512;
  };
  const Expect expected[] = {
      // 3x3 weight gradient on small maps: image by image; on AVX-512 the two-block band where the
      // image kernel was slower (8-wide inputs at stride 2, 4x4 maps)
      {16, 240, 3, 2, bwd_w, Var::wgrad_image, Var::wgrad_image},
      {8, 480, 3, 1, bwd_w, Var::wgrad_image, Var::wgrad_image},
      {8, 576, 3, 2, bwd_w, Var::wgrad_image, Var::wgrad_band_2blocks},
      {4, 1152, 3, 1, bwd_w, Var::wgrad_image, Var::wgrad_band_2blocks},
      // 3x3 on maps 16 wide or more: tiles on AVX2; on AVX-512 the band at stride 1 (and on C <= 32),
      // tiles at stride 2
      {32, 144, 3, 1, bwd_w, Var::wgrad_tile, Var::wgrad_band},
      {16, 240, 3, 1, bwd_w, Var::wgrad_tile, Var::wgrad_band},
      {32, 32, 3, 2, bwd_w, Var::wgrad_tile, Var::wgrad_band},
      {32, 144, 3, 2, bwd_w, Var::wgrad_tile, Var::wgrad_tile},
      // 5x5: the band needs AVX-512's 32 registers, and is no faster at stride 2 on 32-wide inputs
      {16, 240, 5, 1, bwd_w, Var::wgrad_tile, Var::wgrad_band},
      {32, 144, 5, 2, bwd_w, Var::wgrad_tile, Var::wgrad_tile},
      // correlations on AVX2: whole-line tiles for 3x3 at stride 1 (streamed or not) and for streamed
      // outputs (input + output > 24 MiB, or a stride-2 forward with >= 1 MiB of output), except
      // 5-wide stride-1 correlations and stride-2 backward-data, which keep the one-vector tile
      {32, 144, 3, 1, fwd, Var::corr_tile4x2, Var::corr_tile8},
      {32, 32, 3, 1, fwd, Var::corr_tile4x2, Var::corr_tile8},
      {8, 480, 3, 1, fwd, Var::corr_tile4x2, Var::corr_tile8},
      {8, 480, 3, 1, bwd_d, Var::corr_tile4x2, Var::corr_tile8},
      {16, 240, 3, 2, fwd, Var::corr_tile4x2, Var::corr_tile8},
      {8, 576, 5, 2, fwd, Var::corr_tile4x2, Var::corr_channel_groups},
      {16, 240, 5, 1, fwd, Var::corr_tile8, Var::corr_tile8},
      {32, 144, 5, 1, bwd_d, Var::corr_tile8, Var::corr_tile8},
      {32, 144, 3, 2, bwd_d, Var::corr_tile8, Var::corr_tile8},
      {16, 240, 5, 2, bwd_d, Var::corr_tile8, Var::corr_tile8},
      // kernel sizes without unrolled kernels, and backward-data beyond stride 4
      {16, 64, 7, 1, fwd, Var::corr_generic, Var::corr_generic},
      {16, 64, 4, 2, bwd_w, Var::wgrad_generic, Var::wgrad_generic},
      {16, 64, 3, 5, bwd_d, Var::reference, Var::reference},
  };
  for (const Expect& e : expected) {
    INFO("mb64 ", e.H, "x", e.H, "x", e.C, " k", e.K, " s", e.S, " ", dw_direction_name(e.dir));
    const DwChoice a2 = dw_variant(dwconv_desc(64, e.H, e.H, e.C, e.K, e.S), e.dir, Isa::avx2);
    const DwChoice a5 = dw_variant(dwconv_desc(64, e.H, e.H, e.C, e.K, e.S), e.dir, Isa::avx512);
    CHECK(std::string(dw_variant_name(a2.variant)) == std::string(dw_variant_name(e.avx2)));
    CHECK(std::string(dw_variant_name(a5.variant)) == std::string(dw_variant_name(e.avx512)));
    CHECK(std::string(a2.why).size() > 10);  // every rule says why
  }
  // Accumulating into the output, or an unaligned output, never streams.
  CHECK(dw_variant(dwconv_desc(64, 32, 32, 144, 3, 1), bwd_d, Isa::avx2).stream);
  CHECK_FALSE(dw_variant(dwconv_desc(64, 32, 32, 144, 3, 1), bwd_d, Isa::avx2, true).stream);
  CHECK_FALSE(dw_variant(dwconv_desc(64, 32, 32, 144, 3, 1), fwd, Isa::avx2, false, false).stream);
  // ... and a shape whose tile follows the streaming (a 5x5 stride-2 forward) keeps the one-vector tile then.
  CHECK(dw_variant(dwconv_desc(64, 32, 32, 144, 5, 2), fwd, Isa::avx2, false, false).variant == Var::corr_tile8);
  CHECK(variant_of(64, 8, 8, 576, 3, 1, bwd_w, Isa::ref) == Var::reference);
  set_stream_min_bytes(0);
}

TEST_CASE("dw_variant: the depthwise test cases reach every variant of each ISA") {
  // The kernel tests below run dw_cases() on each ISA this CPU has; here the chooser is asked about
  // the same cases for both ISAs, so a variant no case reaches fails even where its ISA cannot run.
  const std::pair<Isa, std::set<DwVariant>> want[] = {
      {Isa::avx2,
       {DwVariant::reference, DwVariant::corr_tile8, DwVariant::corr_tile4x2, DwVariant::corr_generic,
        DwVariant::wgrad_tile, DwVariant::wgrad_band, DwVariant::wgrad_image, DwVariant::wgrad_generic}},
      {Isa::avx512,
       {DwVariant::reference, DwVariant::corr_tile8, DwVariant::corr_channel_groups, DwVariant::corr_generic,
        DwVariant::wgrad_tile, DwVariant::wgrad_band, DwVariant::wgrad_band_2blocks, DwVariant::wgrad_image,
        DwVariant::wgrad_generic}},
  };
  for (const auto& [isa, variants] : want) {
    std::set<DwVariant> reached;
    for (const DwCase& c : dw_cases()) {
      set_stream_min_bytes(c.stream_min_bytes);
      for (DwDirection dir : kDirections) reached.insert(dw_variant(c.d, dir, isa).variant);
    }
    std::string got;
    for (DwVariant v : reached) got += std::string(" ") + dw_variant_name(v);
    INFO(isa_name(isa), " reached:", got);
    CHECK(reached == variants);
  }
  set_stream_min_bytes(0);
}

// Runs every depthwise case on the isa's table against the reference (skipped where this CPU lacks it).
void check_dw_cases(const std::string& isa) {
  const KernelTable* kt = kernels_for(isa);
  REQUIRE(kt != nullptr);
  for (int threads : {2, 1, 3}) {
    set_num_threads(threads);
    uint32_t seed = 100;
    for (const DwCase& c : dw_cases()) {
      if (threads != 2 && !c.all_thread_counts) continue;
      set_stream_min_bytes(c.stream_min_bytes);
      check_dw_all(*kt, c.d, seed++);
    }
  }
  set_stream_min_bytes(0);
  set_num_threads(2);
}

TEST_CASE("depthwise AVX2 kernels against the reference" * doctest::skip(cpu_isa() == "ref") *
          doctest::description("skipped on a CPU without AVX2")) {
  check_dw_cases("avx2");
}

// The AVX-512 table cannot run on a CPU without AVX-512 (doctest reports the test as skipped there);
// its variants are still covered above by the chooser.
TEST_CASE("depthwise AVX-512 kernels against the reference" * doctest::skip(cpu_isa() != "avx512") *
          doctest::description("skipped on a CPU without AVX-512")) {
  check_dw_cases("avx512");
}

TEST_CASE("dw_variant: what it chooses applies; a forced variant is returned where it applies, else ignored") {
  for (Isa isa : {Isa::avx2, Isa::avx512}) {
    for (const DwCase& c : dw_cases()) {
      set_stream_min_bytes(c.stream_min_bytes);
      for (DwDirection dir : kDirections) {
        const DwVariant chosen = dw_variant(c.d, dir, isa).variant;
        INFO(isa_name(isa), " ", shape_name(c.d), " ", dw_direction_name(dir), " chose ", dw_variant_name(chosen));
        CHECK(dw_variant_applies(c.d, dir, isa, chosen));
        for (DwVariant v : kDwVariants) {
          force_dw_variant(dir, v);
          const DwChoice got = dw_variant(c.d, dir, isa);
          clear_forced_dw_variants();
          CHECK(got.variant == (dw_variant_applies(c.d, dir, isa, v) ? v : chosen));
        }
      }
    }
  }
  // The weight gradient's knobs follow the forced variant: the band forced onto an image shape of a
  // 16x16 map walks bands sized for L2, as the band would there.
  const DwConvDesc d = dwconv_desc(64, 16, 16, 240, 3, 1);
  force_dw_variant(DwDirection::backward_weights, DwVariant::wgrad_band);
  CHECK_FALSE(dw_variant(d, DwDirection::backward_weights, Isa::avx2).band_whole_range);
  clear_forced_dw_variants();
  // Neither the forward's 5x5 band (AVX2 has 16 registers) nor a SIMD reference forward exists.
  CHECK_FALSE(dw_variant_applies(dwconv_desc(1, 8, 8, 16, 5, 1), DwDirection::backward_weights, Isa::avx2,
                                 DwVariant::wgrad_band));
  CHECK_FALSE(dw_variant_applies(d, DwDirection::forward, Isa::avx2, DwVariant::reference));
  set_stream_min_bytes(0);
}

// Every variant on every case it applies to (not only where the chooser picks it), on the isa's table.
void check_forced_variants(const std::string& isa) {
  const KernelTable* kt = kernels_for(isa);
  REQUIRE(kt != nullptr);
  const Isa kt_isa = isa_named(isa);
  set_num_threads(2);
  uint32_t seed = 900;
  for (const DwCase& c : dw_cases()) {
    set_stream_min_bytes(c.stream_min_bytes);
    for (int di = 0; di < 3; ++di) {
      const DwDirection dir = kDirections[di];
      const DwVariant chosen = dw_variant(c.d, dir, kt_isa).variant;
      for (DwVariant v : kDwVariants) {
        if (v == chosen || !dw_variant_applies(c.d, dir, kt_isa, v)) continue;
        INFO("forced ", dw_variant_name(v));
        force_dw_variant(dir, v);
        check_dw_all(*kt, c.d, seed++, 1u << di);
        clear_forced_dw_variants();
      }
    }
  }
  set_stream_min_bytes(0);
}

TEST_CASE("depthwise AVX2 kernels, every variant forced onto every case it applies to" *
          doctest::skip(cpu_isa() == "ref") * doctest::description("skipped on a CPU without AVX2")) {
  check_forced_variants("avx2");
}

TEST_CASE("depthwise AVX-512 kernels, every variant forced onto every case it applies to" *
          doctest::skip(cpu_isa() != "avx512") * doctest::description("skipped on a CPU without AVX-512")) {
  check_forced_variants("avx512");
}

TEST_CASE("depthwise: the streaming threshold defaults to the L3-derived value") {
  set_stream_min_bytes(123456);
  CHECK(stream_min_bytes() == 123456);
  set_stream_min_bytes(0);
  CHECK(stream_min_bytes() >= (int64_t(1) << 20));  // 3/4 of the L3 (24 MiB if unreadable)
}

TEST_CASE("batch norm kernels against the reference") {
  struct S {
    int64_t M, C;
  };
  uint32_t seed = 500;
  for (const std::string& isa : fast_isas()) {
    const KernelTable& kt = *kernels_for(isa);
    // The last two are large enough (>= kBnStreamBytes) for the non-temporal-store path.
    for (S s : {S{2, 1}, S{37, 21}, S{1000, 35}, S{64 * 9, 16}, S{130, 160}, S{5, 1280}, S{3001, 7},
                S{kBnStreamBytes / (4 * 64), 64}, S{kBnStreamBytes / (4 * 96) + 3, 96}})
      for (Act act : {Act::None, Act::ReLU, Act::ReLU6}) {
        INFO(isa, " M", s.M, " C", s.C, " act ", int(act));
        BnDesc d{s.M, s.C, act};
        const size_t n = size_t(s.M * s.C);
        // Offset inputs (mean ~ 3) so that the variance test sees some cancellation.
        const auto x = random_vec(n, seed++, 1.0f, 5.0f), dy = random_vec(n, seed++);
        const auto gamma = random_vec(s.C, seed++, 0.5f, 2.0f), beta = random_vec(s.C, seed++, -1.0f, 4.0f);

        std::vector<float> mean_ref(s.C), var_ref(s.C), mean(s.C), var(s.C);
        bn_stats_ref(d, x.data(), mean_ref.data(), var_ref.data());
        kt.bn_stats(d, x.data(), mean.data(), var.data());
        CHECK(compare(mean, mean_ref, 0).worst < 1e-6);
        CHECK(compare(var, var_ref, 0).worst < 1e-5);

        std::vector<float> invstd(s.C), scale(s.C), shift(s.C);
        for (int64_t c = 0; c < s.C; ++c) {
          invstd[c] = 1.0f / std::sqrt(var_ref[c] + 1e-3f);
          scale[c] = gamma[c] * invstd[c];
          shift[c] = beta[c] - mean_ref[c] * scale[c];
        }
        std::vector<float> y_ref(n);
        AVec y(n, 7.0f);
        bn_act_forward_ref(d, x.data(), scale.data(), shift.data(), y_ref.data());
        kt.bn_act_forward(d, x.data(), scale.data(), shift.data(), y.data());
        CHECK(compare(y, y_ref, 10).worst < 1e-6);  // fma vs multiply-add rounding on |x*scale| ~ 10

        std::vector<float> dg_ref(s.C), db_ref(s.C), dg(s.C), db(s.C);
        bn_act_backward_reduce_ref(d, x.data(), scale.data(), shift.data(), dy.data(), mean_ref.data(), invstd.data(),
                                   dg_ref.data(), db_ref.data());
        kt.bn_act_backward_reduce(d, x.data(), scale.data(), shift.data(), dy.data(), mean_ref.data(), invstd.data(), dg.data(),
                                  db.data());
        const double rows = std::sqrt(double(s.M));
        CHECK(compare(dg, dg_ref, rows).worst < 1e-6);
        CHECK(compare(db, db_ref, rows).worst < 1e-6);

        for (bool training : {true, false})
          for (bool acc : {false, true}) {
            INFO("training ", training, " accumulate ", acc);
            const auto init = random_vec(n, seed++);
            std::vector<float> dx_ref = init;
            AVec dx = acc ? aligned(init) : AVec(n, 7.0f);
            bn_act_backward_data_ref(d, x.data(), scale.data(), shift.data(), dy.data(), mean_ref.data(), invstd.data(),
                                     gamma.data(), dg_ref.data(), db_ref.data(), training, dx_ref.data(), acc);
            kt.bn_act_backward_data(d, x.data(), scale.data(), shift.data(), dy.data(), mean_ref.data(), invstd.data(), gamma.data(),
                                    dg_ref.data(), db_ref.data(), training, dx.data(), acc);
            CHECK(compare(dx, dx_ref, 10).worst < 1e-6);
          }
      }
  }
}

struct PwShape {
  int64_t M, Cin, Cout;
};

// The three pointwise products of s (and backward-data / weights again with accumulate) through the
// active table and implementation, against double-precision loops. The outputs are 64-byte aligned,
// as engine tensors are, so the non-temporal store path is reachable.
void check_pointwise(const PwShape& s, uint32_t seed) {
  // fp32 sums of up to 2,000 products: rounding reaches ~1e-6 of the scale; a wrong index is ~1e-2.
  const double kTol = 4e-6;
  const auto x = random_vec(size_t(s.M * s.Cin), seed), w = random_vec(size_t(s.Cin * s.Cout), seed + 1),
             dy = random_vec(size_t(s.M * s.Cout), seed + 2);
  std::vector<float> y_ref(s.M * s.Cout), dx_ref(s.M * s.Cin), dw_ref(s.Cin * s.Cout);
  for (int64_t m = 0; m < s.M; ++m)
    for (int64_t o = 0; o < s.Cout; ++o) {
      double a = 0;
      for (int64_t i = 0; i < s.Cin; ++i) a += double(x[m * s.Cin + i]) * w[i * s.Cout + o];
      y_ref[m * s.Cout + o] = float(a);
    }
  for (int64_t m = 0; m < s.M; ++m)
    for (int64_t i = 0; i < s.Cin; ++i) {
      double a = 0;
      for (int64_t o = 0; o < s.Cout; ++o) a += double(dy[m * s.Cout + o]) * w[i * s.Cout + o];
      dx_ref[m * s.Cin + i] = float(a);
    }
  for (int64_t i = 0; i < s.Cin; ++i)
    for (int64_t o = 0; o < s.Cout; ++o) {
      double a = 0;
      for (int64_t m = 0; m < s.M; ++m) a += double(x[m * s.Cin + i]) * dy[m * s.Cout + o];
      dw_ref[i * s.Cout + o] = float(a);
    }
  AVec y(y_ref.size(), 7.0f), dx(dx_ref.size(), 7.0f), dw(dw_ref.size(), 7.0f);
  pointwise_forward(s.M, s.Cin, s.Cout, x.data(), w.data(), y.data());
  CHECK(compare(y, y_ref, std::sqrt(double(s.Cin))).worst < kTol);
  pointwise_backward_data(s.M, s.Cin, s.Cout, dy.data(), w.data(), dx.data(), false);
  CHECK(compare(dx, dx_ref, std::sqrt(double(s.Cout))).worst < kTol);
  pointwise_backward_weights(s.M, s.Cin, s.Cout, x.data(), dy.data(), dw.data(), false);
  CHECK(compare(dw, dw_ref, std::sqrt(double(s.M))).worst < kTol);
  // accumulate: adds the same product again
  pointwise_backward_data(s.M, s.Cin, s.Cout, dy.data(), w.data(), dx.data(), true);
  pointwise_backward_weights(s.M, s.Cin, s.Cout, x.data(), dy.data(), dw.data(), true);
  for (auto& v : dx_ref) v *= 2;
  for (auto& v : dw_ref) v *= 2;
  CHECK(compare(dx, dx_ref, std::sqrt(double(s.Cout))).worst < kTol);
  CHECK(compare(dw, dw_ref, std::sqrt(double(s.M))).worst < kTol);
}

TEST_CASE("pointwise GEMMs against a double-precision loop") {
  uint32_t seed = 900;
  // Every ISA table this CPU has, each with OpenBLAS and with our register-blocked GEMMs (the shapes
  // cover row and channel tails of every tile size: N of 1..5 vectors, leftover rows and k's; and
  // both ways of splitting the work across threads, by rows and by output columns).
  // Our GEMMs run once with the ISA's own table for every N and once with the rule that may hand
  // some N to another table (pointwise_gemm_table).
  for (const std::string& isa : all_isas())
  for (const char* impl : {"blas", "own"})
  for (const std::string& gemm : {std::string("auto"), isa})
  for (int threads : {2, 1, 3}) {
    if (gemm != "auto" && (isa == "ref" || std::string(impl) == "blas")) continue;
    set_isa(isa);
    set_pointwise_impl(impl);
    set_pointwise_gemm_isa(gemm);
    set_num_threads(threads);
    for (PwShape s : {PwShape{1, 3, 5}, PwShape{63, 17, 9}, PwShape{64, 16, 96}, PwShape{1000, 40, 240},
                      PwShape{129, 33, 7}, PwShape{389, 24, 144}, PwShape{397, 144, 24}, PwShape{211, 70, 50},
                      PwShape{13, 130, 33}, PwShape{200, 8, 72}, PwShape{1500, 200, 300},
                      // fewer rows than output channels: split by columns (pointwise.cpp), tails included
                      PwShape{16, 96, 200}, PwShape{5, 300, 129}, PwShape{40, 77, 500}, PwShape{33, 640, 48},
                      // N tiles of 3 + 2 + 2 vectors (AVX2), K tiles of KB then 4, 2, 1 input channels
                      // (gemm_tn), B packed into panels; K = 700 takes row blocks of fewer than 192 rows
                      PwShape{250, 48, 56}, PwShape{100, 29, 24}, PwShape{70, 13, 40}, PwShape{90, 11, 16},
                      PwShape{300, 700, 40}}) {
      INFO("isa ", isa, " impl ", std::string(impl), " gemm ", gemm, " threads ", threads, " M", s.M, " Cin", s.Cin,
           " Cout", s.Cout);
      check_pointwise(s, seed);
      seed += 3;
    }
  }
  set_pointwise_gemm_isa("auto");
  set_pointwise_impl("auto");
  set_isa("auto");
  set_num_threads(2);
}

TEST_CASE("gemm_tn without accumulate: what C held before does not matter, and no rows give zeros") {
  // The first chain of rows sets C rather than adding to it (gemm_simd.h): C starts as NaN here, which
  // any read of the old C would carry into the result. 150 rows are three chains; 5 x 20 takes tails.
  for (const std::string& isa : all_isas()) {
    set_isa(isa);
    if (!kernels().gemm_tn) continue;  // (the reference table has none: pointwise uses OpenBLAS there)
    for (int64_t rows : {int64_t(0), int64_t(1), int64_t(64), int64_t(150)}) {
      const int64_t K = 5, N = 20;
      const auto a = random_vec(size_t(rows * K + 1), 41), b = random_vec(size_t(rows * N + 1), 42);
      AVec c(size_t(K * N), std::numeric_limits<float>::quiet_NaN());
      GemmTN g;
      g.rows = rows, g.K = K, g.N = N;
      g.A = a.data(), g.lda = K, g.B = b.data(), g.ldb = N, g.C = c.data(), g.ldc = N;
      kernels().gemm_tn(g);
      double worst = 0;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t n = 0; n < N; ++n) {
          double want = 0;
          for (int64_t r = 0; r < rows; ++r) want += double(a[r * K + k]) * b[r * N + n];
          const double err = std::fabs(c[k * N + n] - want);
          worst = std::isnan(err) ? 1e30 : std::max(worst, err);
        }
      INFO("isa ", isa, " rows ", rows);
      CHECK(worst < 1e-4);
    }
  }
  set_isa("auto");
}

TEST_CASE("pointwise: where 512-bit FMAs run as two halves, N with a half-empty last vector takes the AVX2 table") {
  // The rule: the last 16-float vector at most half used, and only on such a CPU.
  for (int64_t n : {8, 24, 40, 20, 1, 1000}) CHECK(pointwise_prefers_256(n, true));
  for (int64_t n : {16, 32, 28, 15, 1280}) CHECK_FALSE(pointwise_prefers_256(n, true));
  for (int64_t n : {8, 24, 40}) CHECK_FALSE(pointwise_prefers_256(n, false));
  // The tables on this machine.
  for (const std::string& isa : all_isas()) {
    if (isa == "ref") continue;
    INFO("isa ", isa);
    set_isa(isa);
    const bool halves = isa == "avx512" && cpu_info().fma512_halves;
    CHECK(std::string(pointwise_gemm_table(24).name) == (halves ? "avx2" : isa));
    CHECK(std::string(pointwise_gemm_table(40).name) == (halves ? "avx2" : isa));
    CHECK(std::string(pointwise_gemm_table(32).name) == isa);
    CHECK(set_pointwise_gemm_isa(isa) == "auto");  // forced: the table asked for, whatever N
    CHECK(std::string(pointwise_gemm_table(24).name) == isa);
    CHECK(set_pointwise_gemm_isa("auto") == isa);
  }
  set_isa("auto");
  CHECK_THROWS_WITH_AS(set_pointwise_gemm_isa("sse4"), doctest::Contains("got 'sse4'"), std::invalid_argument);
  if (cpu_isa() != "avx512")
    CHECK_THROWS_WITH_AS(set_pointwise_gemm_isa("avx512"), doctest::Contains("an ISA this CPU runs"), std::invalid_argument);
}

TEST_CASE("pointwise weight gradient through a column map equals the materialized input's, bit for bit") {
  // pointwise_backward_weights(x, map) against bn_act_forward(x) followed by the plain weight
  // gradient, on every table, our GEMMs and OpenBLAS, row and column splits, with and without
  // accumulate. Inputs span [-4, 8] so that ReLU6 clamps both ends.
  uint32_t seed = 2900;
  for (int64_t min_bytes : {int64_t(64) << 10, int64_t(1) << 30})  // with and without the prefetch
  for (const std::string& isa : all_isas())
  for (const char* impl : {"own", "blas"})
  for (int threads : {2, 1, 3})
  for (PwShape s : {PwShape{389, 24, 144}, PwShape{2000, 144, 32}, PwShape{40, 96, 512}, PwShape{300, 17, 40}})
  for (Act act : {Act::ReLU6, Act::ReLU, Act::None}) {
    INFO("isa ", isa, " impl ", std::string(impl), " threads ", threads, " M", s.M, " Cin", s.Cin, " Cout", s.Cout,
         " act ", int(act), " min_bytes ", min_bytes);
    set_stream_min_bytes(min_bytes);
    set_isa(isa);
    set_pointwise_impl(impl);
    set_num_threads(threads);
    const auto x = random_vec(size_t(s.M * s.Cin), seed, -4.0f, 8.0f), dy = random_vec(size_t(s.M * s.Cout), seed + 1);
    const auto scale = random_vec(size_t(s.Cin), seed + 2, 0.5f, 2.0f), shift = random_vec(size_t(s.Cin), seed + 3);
    seed += 4;
    AVec mapped(x.size());
    kernels().bn_act_forward(BnDesc{s.M, s.Cin, act}, x.data(), scale.data(), shift.data(), mapped.data());
    const ColumnMap map{scale.data(), shift.data(), act};
    for (bool acc : {false, true}) {
      AVec want(size_t(s.Cin * s.Cout), 0.5f), got(want.size(), 0.5f);
      pointwise_backward_weights(s.M, s.Cin, s.Cout, mapped.data(), dy.data(), want.data(), acc);
      pointwise_backward_weights(s.M, s.Cin, s.Cout, x.data(), dy.data(), got.data(), acc, &map);
      CHECK(std::memcmp(want.data(), got.data(), sizeof(float) * want.size()) == 0);
    }
  }
  set_stream_min_bytes(0);
  set_pointwise_impl("auto");
  set_isa("auto");
  set_num_threads(2);
}

TEST_CASE("pointwise: streamed outputs and prefetched row blocks (large products) against the loop") {
  // Products whose input and output exceed stream_min_bytes() store an output at least as large as
  // the input non-temporally (whole 16-float lines only), and weight gradients over such operands
  // with K >= 64 prefetch each next row block: the shapes above never reach either. The threshold is
  // lowered to 64 KiB here, then raised above every shape (normal stores, no prefetch).
  //   {1000, 96, 144}:  forward streamed (144 columns = 9 lines), row blocks of 1000 / threads rows
  //   {2000, 144, 32}:  backward-data streamed (dX 144 wide); weight gradient K = 144 prefetched
  //                     across the 704-row blocks (two or more per thread)
  //   {3000, 64, 40}:   K = 64 prefetched; N = 40 ends in a masked vector; forward not streamed
  //   {40, 96, 512}:    fewer rows than columns: column slices streamed, 16-aligned
  //   {500, 48, 136}:   136 columns: not whole lines, normal stores
  uint32_t seed = 1900;
  for (int64_t min_bytes : {int64_t(64) << 10, int64_t(1) << 30}) {
    set_stream_min_bytes(min_bytes);
    for (const std::string& isa : fast_isas())
      for (int threads : {2, 1, 3}) {
        set_isa(isa);
        set_pointwise_impl("own");
        set_num_threads(threads);
        for (PwShape s : {PwShape{1000, 96, 144}, PwShape{2000, 144, 32}, PwShape{3000, 64, 40},
                          PwShape{40, 96, 512}, PwShape{500, 48, 136}}) {
          INFO("isa ", isa, " threads ", threads, " min_bytes ", min_bytes, " M", s.M, " Cin", s.Cin, " Cout",
               s.Cout);
          check_pointwise(s, seed);
          seed += 3;
        }
      }
  }
  set_stream_min_bytes(0);
  set_pointwise_impl("auto");
  set_isa("auto");
  set_num_threads(2);
}
