// bench_conv: races our depthwise and pointwise kernels against oneDNN, the bare OpenBLAS sgemm
// (pointwise), the scalar reference and any user variants (bench/variants/), for each shape of a
// benchdnn-style list and each direction (fwd, bwd_d, bwd_w). Every result is checked against the
// reference before it is timed. Prints a table (median ms, GB/s, GFLOP/s, ratio to oneDNN) and writes
// the same records as JSON with --json. Also measures the machine's streaming bandwidth (2 threads).
//
//   bench_conv [--shapes FILE]... [--json FILE] [--threads N] [--ops dw,pw] [--dirs fwd,bwd_d,bwd_w]
//              [--time SEC] [--filter SUBSTR] [--keep-openblas-coretype]
//
// Shape lines: depthwise `mb64ic144ih32kh5sh1` (groups = channels; iw/kw/sw default to ih/kh/sh),
// pointwise `mb64ic144oc24ih32kh1`; `#` starts a comment. Padding is TensorFlow "SAME" (ops/kernels.h).
#include <cblas.h>
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/machine.h"
#include "bench/variants/variant.h"
#include "engine/aligned_vector.h"
#include "engine/threads.h"
#include "ops/kernels.h"
#include "ops/kernels/dw_variant.h"

#ifdef SPNAS_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

extern "C" char* openblas_get_corename(void);
extern "C" void openblas_set_num_threads(int);

using namespace spnas;

namespace {

using bench::seconds_now;

// ---- shapes ----
struct Shape {
  std::string text;
  bool depthwise = true;
  int64_t mb = 1, ic = 0, oc = 0, ih = 0, iw = 0;
  int kh = 1, kw = 1, sh = 1, sw = 1;
};

bool parse_shape(const std::string& line, Shape* s) {
  std::string t = line.substr(0, line.find('#'));
  t.erase(std::remove_if(t.begin(), t.end(), ::isspace), t.end());
  if (t.empty()) return false;
  s->text = t;
  std::map<std::string, int64_t> kv;
  size_t i = 0;
  while (i < t.size()) {
    size_t k = i;
    while (k < t.size() && std::isalpha(static_cast<unsigned char>(t[k]))) ++k;
    size_t v = k;
    while (v < t.size() && std::isdigit(static_cast<unsigned char>(t[v]))) ++v;
    if (k == i || v == k) throw std::runtime_error("bench_conv: cannot parse shape '" + line + "' near '" + t.substr(i) + "'");
    kv[t.substr(i, k - i)] = std::stoll(t.substr(k, v - k));
    i = v;
  }
  auto get = [&](const char* key, int64_t def) { return kv.count(key) ? kv[key] : def; };
  s->mb = get("mb", 1);
  s->ic = get("ic", 0);
  s->ih = get("ih", 0);
  s->iw = get("iw", s->ih);
  s->kh = int(get("kh", 1));
  s->kw = int(get("kw", s->kh));
  s->sh = int(get("sh", 1));
  s->sw = int(get("sw", s->sh));
  s->depthwise = !(kv.count("oc") && s->kh == 1 && get("g", 1) == 1);
  s->oc = get("oc", s->ic);
  if (s->ic <= 0 || s->ih <= 0) throw std::runtime_error("bench_conv: shape '" + line + "' needs ic and ih");
  if (s->depthwise && (s->kh != s->kw || s->sh != s->sw || s->oc != s->ic))
    throw std::runtime_error("bench_conv: depthwise shape '" + line + "' must be square with oc = ic");
  if (!s->depthwise && s->sh != 1) throw std::runtime_error("bench_conv: pointwise shape '" + line + "': stride 1 only");
  return true;
}

// ---- measurement ----
struct Timing {
  double ms_median = 0, ms_min = 0;
  int reps = 0;
};

// Lets the idle spinning threads of the previous implementation's pool go to sleep.
void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(10)); }

// Times several implementations of one problem in interleaved blocks: `rounds` rounds, in each every
// implementation gets a block of budget / rounds seconds (after settle() and one untimed warm-up
// call), so a machine whose speed drifts during the run (other tenants; several per cent within
// minutes here) moves every implementation alike and the ratios stay fair. Each gets at least
// min_reps and at most 200 timed calls in all; the median and minimum are over all its blocks.
// enter[i] / leave[i] (may be empty) run around each of implementation i's blocks, untimed.
std::vector<Timing> time_interleaved(const std::vector<std::function<void()>>& fns,
                                     const std::vector<std::function<void()>>& enter,
                                     const std::vector<std::function<void()>>& leave, double budget, int rounds = 4,
                                     int min_reps = 5) {
  std::vector<std::vector<double>> ms(fns.size());
  const int per_block_min = (min_reps + rounds - 1) / rounds, per_block_max = 200 / rounds;
  for (int r = 0; r < rounds; ++r)
    for (size_t i = 0; i < fns.size(); ++i) {
      if (enter[i]) enter[i]();
      settle();
      fns[i]();
      double start = seconds_now();
      int n = 0;
      while (n < per_block_min || (seconds_now() - start < budget / rounds && n < per_block_max)) {
        double t0 = seconds_now();
        fns[i]();
        ms[i].push_back((seconds_now() - t0) * 1e3);
        ++n;
      }
      if (leave[i]) leave[i]();
    }
  std::vector<Timing> out;
  for (auto& v : ms) {
    std::sort(v.begin(), v.end());
    out.push_back({v[v.size() / 2], v[0], int(v.size())});
  }
  return out;
}

// 64-byte-aligned buffers, as engine Tensors are.
using Buf = AlignedVector;

Buf random_vec(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Buf v(n);
  for (auto& x : v) x = u(g);
  return v;
}

// max |a - b| / (1 + |b| + scale)
double max_err(const float* a, const float* b, size_t n, double scale) {
  double w = 0;
  for (size_t i = 0; i < n; ++i) {
    double e = std::fabs(double(a[i]) - b[i]) / (1.0 + std::fabs(b[i]) + scale);
    if (!(e <= w)) w = std::isnan(e) ? 1e30 : e;
  }
  return w;
}

// ---- records ----
struct Record {
  std::string op, direction, shape, impl, impl_info;
  double ms_median = 0, ms_min = 0, gbs = 0, gflops = 0, vs_onednn = 0, max_err = 0;
  int reps = 0;
  bool checked = false;
};

struct Problem {  // byte and flop counts of one (shape, direction)
  double bytes = 0, flops = 0;
};

const char* kDirs[] = {"fwd", "bwd_d", "bwd_w"};

#ifdef SPNAS_HAVE_DNNL
// oneDNN convolution for one shape and direction, in the layouts it prefers (format_tag::any);
// user NHWC data is reordered in before timing, results reordered back for the check.
struct OneDnnConv {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::primitive prim;
  std::unordered_map<int, dnnl::memory> args;
  dnnl::memory out_prim, out_user;  // result in the primitive's and the user's layout
  std::string impl;

  // x/w/y/dy are user buffers (NHWC activations, our weight layout); `dir` selects the primitive.
  OneDnnConv(const Shape& s, const DwConvDesc& d, const std::string& dir, float* x, float* w, float* y_or_dx_or_dw,
             float* dy) {
    using namespace dnnl;
    using dt = memory::data_type;
    using tag = memory::format_tag;
    const int64_t N = s.mb, IC = s.ic, OC = s.oc, H = s.ih, W = s.iw, OH = d.OH, OW = d.OW, K = s.kh;
    memory::dims src_dims = {N, IC, H, W}, dst_dims = {N, OC, OH, OW};
    memory::dims wei_dims, wei_strides;
    if (s.depthwise) {
      wei_dims = {IC, 1, 1, K, K};
      wei_strides = {1, K * K * IC, K * K * IC, K * IC, IC};  // ours: [K, K, C]
    } else {
      wei_dims = {OC, IC, 1, 1};
      wei_strides = {1, OC, IC * OC, IC * OC};  // ours: [Cin, Cout]
    }
    memory::dims strides = {s.sh, s.sw}, pad_l = {d.pad_t, d.pad_l};
    memory::dims pad_r = {(OH - 1) * s.sh + K - H - d.pad_t, (OW - 1) * s.sw + K - W - d.pad_l};
    auto any = [](const memory::dims& dims) { return memory::desc(dims, dt::f32, tag::any); };
    memory::desc src_user(src_dims, dt::f32, tag::nhwc), dst_user(dst_dims, dt::f32, tag::nhwc);
    memory::desc wei_user(wei_dims, dt::f32, wei_strides);
    auto fwd_d = convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct, any(src_dims),
                                           any(wei_dims), any(dst_dims), strides, pad_l, pad_r);
    auto fwd_pd = convolution_forward::primitive_desc(fwd_d, eng);
    // Reorders user data into `want`, returns the primitive-layout memory.
    auto in = [&](const memory::desc& user_md, float* p, const memory::desc& want) {
      memory user(user_md, eng, p), m(want, eng);
      reorder(user, m).execute(strm, user, m);
      strm.wait();
      return m;
    };
    if (dir == "fwd") {
      prim = convolution_forward(fwd_pd);
      impl = fwd_pd.impl_info_str();
      args[DNNL_ARG_SRC] = in(src_user, x, fwd_pd.src_desc());
      args[DNNL_ARG_WEIGHTS] = in(wei_user, w, fwd_pd.weights_desc());
      out_prim = memory(fwd_pd.dst_desc(), eng);
      args[DNNL_ARG_DST] = out_prim;
      out_user = memory(dst_user, eng, y_or_dx_or_dw);
    } else if (dir == "bwd_d") {
      auto bd = convolution_backward_data::desc(algorithm::convolution_direct, any(src_dims), any(wei_dims),
                                                any(dst_dims), strides, pad_l, pad_r);
      auto pd = convolution_backward_data::primitive_desc(bd, eng, fwd_pd);
      prim = convolution_backward_data(pd);
      impl = pd.impl_info_str();
      args[DNNL_ARG_DIFF_DST] = in(dst_user, dy, pd.diff_dst_desc());
      args[DNNL_ARG_WEIGHTS] = in(wei_user, w, pd.weights_desc());
      out_prim = memory(pd.diff_src_desc(), eng);
      args[DNNL_ARG_DIFF_SRC] = out_prim;
      out_user = memory(src_user, eng, y_or_dx_or_dw);
    } else {
      auto bw = convolution_backward_weights::desc(algorithm::convolution_direct, any(src_dims), any(wei_dims),
                                                   any(dst_dims), strides, pad_l, pad_r);
      auto pd = convolution_backward_weights::primitive_desc(bw, eng, fwd_pd);
      prim = convolution_backward_weights(pd);
      impl = pd.impl_info_str();
      args[DNNL_ARG_SRC] = in(src_user, x, pd.src_desc());
      args[DNNL_ARG_DIFF_DST] = in(dst_user, dy, pd.diff_dst_desc());
      out_prim = memory(pd.diff_weights_desc(), eng);
      args[DNNL_ARG_DIFF_WEIGHTS] = out_prim;
      out_user = memory(wei_user, eng, y_or_dx_or_dw);
    }
  }
  void run() {
    prim.execute(strm, args);
    strm.wait();
  }
  void result_to_user() {
    dnnl::reorder(out_prim, out_user).execute(strm, out_prim, out_user);
    strm.wait();
  }
};
#endif

void set_omp_threads(int n) {
  using Fn = void (*)(int);
  if (auto f = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"))) f(n);
}

// Naive single-threaded pointwise GEMMs (the pointwise "reference": what the kernel computes, no BLAS).
void pw_ref(const std::string& dir, int64_t M, int64_t Cin, int64_t Cout, const float* x, const float* w,
            const float* dy, float* out) {
  if (dir == "fwd") {
    for (int64_t m = 0; m < M; ++m) {
      float* y = out + m * Cout;
      std::fill(y, y + Cout, 0.0f);
      for (int64_t i = 0; i < Cin; ++i) {
        const float a = x[m * Cin + i];
        const float* wr = w + i * Cout;
        for (int64_t o = 0; o < Cout; ++o) y[o] += a * wr[o];
      }
    }
  } else if (dir == "bwd_d") {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t i = 0; i < Cin; ++i) {
        float a = 0;
        for (int64_t o = 0; o < Cout; ++o) a += dy[m * Cout + o] * w[i * Cout + o];
        out[m * Cin + i] = a;
      }
  } else {
    // Summed in double: a float running sum over the 800k rows of an ImageNet batch drifts by more
    // than the check's tolerance, and the oracle must be the more accurate side.
    std::vector<double> acc(size_t(Cin * Cout), 0.0);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t i = 0; i < Cin; ++i) {
        const double a = x[m * Cin + i];
        double* d = acc.data() + i * Cout;
        const float* g = dy + m * Cout;
        for (int64_t o = 0; o < Cout; ++o) d[o] += a * g[o];
      }
    for (size_t j = 0; j < acc.size(); ++j) out[j] = float(acc[j]);
  }
}

struct Options {
  std::vector<std::string> shape_files;
  std::string json;
  std::string filter;
  int threads = 2;
  double budget = 0.25;
  bool do_dw = true, do_pw = true;
  bool dw_variants = false;  // also race every other depthwise variant that can run the shape
  std::vector<std::string> dirs = {"fwd", "bwd_d", "bwd_w"};
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string t;
  while (std::getline(ss, t, ',')) v.push_back(t);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  bool keep_coretype = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("bench_conv: " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--shapes") opt.shape_files.push_back(next());
    else if (a == "--json") opt.json = next();
    else if (a == "--threads") opt.threads = std::stoi(next());
    else if (a == "--time") opt.budget = std::stod(next());
    else if (a == "--filter") opt.filter = next();
    else if (a == "--keep-openblas-coretype") keep_coretype = true;
    else if (a == "--dw-variants") opt.dw_variants = true;
    else if (a == "--ops") {
      auto v = split_commas(next());
      opt.do_dw = std::count(v.begin(), v.end(), "dw") > 0;
      opt.do_pw = std::count(v.begin(), v.end(), "pw") > 0;
    } else if (a == "--dirs") opt.dirs = split_commas(next());
    else {
      std::fprintf(stderr,
                   "usage: bench_conv [--shapes FILE]... [--json FILE] [--threads N] [--ops dw,pw] "
                   "[--dirs fwd,bwd_d,bwd_w] [--time SEC] [--filter SUBSTR] [--dw-variants] [--keep-openblas-coretype]\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  // OPENBLAS_CORETYPE (e.g. Haswell) would pin the sgemm peer, and our GEMMs, to slower kernels.
  if (const char* ct = std::getenv("OPENBLAS_CORETYPE"); ct && !keep_coretype) {
    std::fprintf(stderr, "bench_conv: OPENBLAS_CORETYPE=%s is set; re-running without it "
                         "(pass --keep-openblas-coretype to keep it)\n", ct);
    unsetenv("OPENBLAS_CORETYPE");
    execv("/proc/self/exe", argv);
    std::perror("bench_conv: re-exec failed");
  }
  if (opt.shape_files.empty()) {
    std::string here = __FILE__;  // absolute under CMake: the shipped lists sit next to this file
    opt.shape_files.push_back(here.substr(0, here.find_last_of('/')) + "/shapes/cifar_mb64.txt");
  }

  set_num_threads(opt.threads);
  set_omp_threads(opt.threads);
  std::printf("bench_conv: %d threads, kernels '%s' (CPU %s), OpenBLAS core '%s'%s\n", opt.threads, kernels().name,
              cpu_isa().c_str(), openblas_get_corename(),
              std::getenv("OPENBLAS_CORETYPE") ? "  WARNING: forced by OPENBLAS_CORETYPE" : "");
#ifndef SPNAS_HAVE_DNNL
  std::printf("bench_conv: built without oneDNN: no oneDNN column\n");
#endif
  const bench::Bandwidth bw = bench::measure_bandwidth();
  const bench::FmaPeak fma = bench::measure_fma_peak();
  const double peak = fma.gflops;
  std::printf("memory bandwidth (%d threads): copy %.1f GB/s (read + write bytes), read %.1f GB/s; %%bw below is of copy\n",
              opt.threads, bw.copy_gbs, bw.read_gbs);
  std::printf("compute: %s; %%peak below is of it\n", fma.describe().c_str());
  std::printf("cpu: %s\n\n", cpu_description().c_str());

  std::vector<Shape> shapes;
  for (const auto& f : opt.shape_files) {
    std::ifstream in(f);
    if (!in) throw std::runtime_error("bench_conv: cannot open shape list " + f);
    std::string line;
    while (std::getline(in, line)) {
      Shape s;
      if (parse_shape(line, &s) && (opt.filter.empty() || s.text.find(opt.filter) != std::string::npos) &&
          (s.depthwise ? opt.do_dw : opt.do_pw))
        shapes.push_back(s);
    }
  }

  std::vector<Record> records;
  std::printf("%-4s %-6s %-26s %-16s %9s %8s %8s %6s %6s %7s %9s  %s\n", "op", "dir", "shape", "impl", "ms", "GB/s",
              "GFLOP/s", "%bw", "%peak", "vs_dnnl", "max_err", "info");
  uint32_t seed = 1;
  for (const Shape& s : shapes) {
    const DwConvDesc d = dwconv_desc(s.mb, s.ih, s.iw, s.ic, s.kh, s.sh);
    const int64_t M = s.mb * d.OH * d.OW, Cin = s.ic, Cout = s.oc;
    const size_t n_in = size_t(s.mb * s.ih * s.iw * s.ic);
    const size_t n_out = s.depthwise ? size_t(d.out_elems()) : size_t(M * Cout);
    const size_t n_w = s.depthwise ? size_t(s.kh) * s.kh * s.ic : size_t(Cin * Cout);
    auto x = random_vec(n_in, seed++), w = random_vec(n_w, seed++), dy = random_vec(n_out, seed++);
    for (const std::string& dir : opt.dirs) {
      const size_t n_res = dir == "fwd" ? n_out : dir == "bwd_d" ? n_in : n_w;
      Problem pb;
      if (s.depthwise) {
        pb.flops = 2.0 * double(d.out_elems()) * s.kh * s.kh;
        pb.bytes = 4.0 * (dir == "fwd" ? n_in + n_w + n_out : dir == "bwd_d" ? n_out + n_w + n_in : n_in + n_out + n_w);
      } else {
        pb.flops = 2.0 * double(M) * Cin * Cout;
        pb.bytes = 4.0 * double(n_in + n_w + n_out);
      }
      const double err_scale = s.depthwise ? (dir == "bwd_w" ? std::sqrt(double(M)) : s.kh * s.kh)
                                           : std::sqrt(double(dir == "fwd" ? Cin : dir == "bwd_d" ? Cout : M));

      // Reference result (timed once: it is the slow oracle).
      Buf ref(n_res), res(n_res);
      std::vector<Record> recs;
      auto add = [&](const std::string& impl, Timing t, double err, const std::string& info) {
        Record r;
        r.op = s.depthwise ? "dw" : "pw";
        r.direction = dir, r.shape = s.text, r.impl = impl, r.impl_info = info;
        r.ms_median = t.ms_median, r.ms_min = t.ms_min, r.reps = t.reps;
        r.gbs = pb.bytes / (t.ms_median * 1e-3) / 1e9;
        r.gflops = pb.flops / (t.ms_median * 1e-3) / 1e9;
        r.max_err = err;
        r.checked = true;
        recs.push_back(r);
      };
      {
        double t0 = seconds_now();
        if (s.depthwise) {
          if (dir == "fwd") dwconv_forward_ref(d, x.data(), w.data(), ref.data());
          else if (dir == "bwd_d") dwconv_backward_data_ref(d, dy.data(), w.data(), ref.data(), false);
          else dwconv_backward_weights_ref(d, x.data(), dy.data(), ref.data(), false);
        } else {
          pw_ref(dir, M, Cin, Cout, x.data(), w.data(), dy.data(), ref.data());
        }
        double ms = (seconds_now() - t0) * 1e3;
        add("ref", Timing{ms, ms, 1}, 0.0, "scalar, 1 thread");
      }
      // Checks one implementation's result and enters it in the race; the entrants are timed together
      // (time_interleaved) once all are checked.
      struct Entrant {
        std::string impl, info;
        std::function<void()> fn;
        double err;
        std::function<void()> enter, leave;  // untimed, around each of its timed blocks
      };
      std::vector<Entrant> entrants;
      auto race = [&](const std::string& impl, const std::function<void()>& fn, const std::string& info,
                      const std::function<void()>& fetch = nullptr) {
        std::fill(res.begin(), res.end(), 1e30f);
        fn();
        if (fetch) fetch();
        double err = max_err(res.data(), ref.data(), n_res, err_scale);
        if (!(err < 1e-5)) {
          std::fprintf(stderr, "bench_conv: %s %s %s: result differs from the reference (max err %.3g)\n",
                       impl.c_str(), dir.c_str(), s.text.c_str(), err);
          std::exit(1);
        }
        entrants.push_back({impl, info, fn, err, nullptr, nullptr});
      };
      if (s.depthwise) {
        const KernelTable& K = kernels();
        // The ISA and the variant that runs (the buffers are 64-byte aligned, as engine tensors are).
        const DwDirection dw_dir = dir == "fwd"     ? DwDirection::forward
                                   : dir == "bwd_d" ? DwDirection::backward_data
                                                    : DwDirection::backward_weights;
        const Isa isa = isa_named(K.name);
        const DwVariant chosen = dw_variant(d, dw_dir, isa).variant;
        const std::string what = std::string(K.name) + " " + dw_variant_name(chosen);
        std::function<void()> ours;  // (K by reference to the table: the entrants outlive this block)
        if (dir == "fwd") ours = [&, &K = K] { K.dwconv_forward(d, x.data(), w.data(), res.data()); };
        else if (dir == "bwd_d") ours = [&, &K = K] { K.dwconv_backward_data(d, dy.data(), w.data(), res.data(), false); };
        else ours = [&, &K = K] { K.dwconv_backward_weights(d, x.data(), dy.data(), res.data(), false); };
        race("ours", ours, what);
        if (opt.dw_variants) {
          // Every other variant that can run this shape, forced while it is checked and timed.
          for (DwVariant v : kDwVariants) {
            if (v == chosen || v == DwVariant::reference || !dw_variant_applies(d, dw_dir, isa, v)) continue;
            auto enter = [dw_dir, v] { force_dw_variant(dw_dir, v); };
            auto leave = [] { clear_forced_dw_variants(); };
            enter();
            race(std::string("ours:") + (dw_variant_name(v) + 3), ours, std::string(K.name) + " forced");
            leave();
            entrants.back().enter = enter;
            entrants.back().leave = leave;
          }
        }
        for (const BenchVariant& v : bench_variants()) {
          if (dir == "fwd" && v.dw_forward) race(v.name, [&, &v = v] { v.dw_forward(d, x.data(), w.data(), res.data()); }, "variant");
          if (dir == "bwd_d" && v.dw_backward_data)
            race(v.name, [&, &v = v] { v.dw_backward_data(d, dy.data(), w.data(), res.data(), false); }, "variant");
          if (dir == "bwd_w" && v.dw_backward_weights)
            race(v.name, [&, &v = v] { v.dw_backward_weights(d, x.data(), dy.data(), res.data(), false); }, "variant");
        }
      } else {
        // (captured by value: the entrants run after this block has ended)
        const int m = int(M), k = int(Cin), n = int(Cout);
        const std::string how = pointwise_uses_own_gemm()
                                    ? std::string("register-blocked GEMM, ") + pointwise_gemm_table(dir == "bwd_d" ? Cin : Cout).name
                                    : "row-split OpenBLAS sgemm";
        if (dir == "fwd") race("ours", [&] { pointwise_forward(M, Cin, Cout, x.data(), w.data(), res.data()); }, how);
        else if (dir == "bwd_d")
          race("ours", [&] { pointwise_backward_data(M, Cin, Cout, dy.data(), w.data(), res.data(), false); }, how);
        else race("ours", [&] { pointwise_backward_weights(M, Cin, Cout, x.data(), dy.data(), res.data(), false); }, how);
        // The bare OpenBLAS sgemm of the same product, OpenBLAS using the threads itself.
        openblas_set_num_threads(opt.threads);
        if (dir == "fwd")
          race("sgemm", [&, m, n, k] { cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, x.data(), k, w.data(), n, 0.0f, res.data(), n); }, "cblas_sgemm NN");
        else if (dir == "bwd_d")
          race("sgemm", [&, m, n, k] { cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, k, n, 1.0f, dy.data(), n, w.data(), n, 0.0f, res.data(), k); }, "cblas_sgemm NT");
        else
          race("sgemm", [&, m, n, k] { cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, n, m, 1.0f, x.data(), k, dy.data(), n, 0.0f, res.data(), n); }, "cblas_sgemm TN");
        openblas_set_num_threads(1);
        entrants.back().enter = [&] { openblas_set_num_threads(opt.threads); };  // for its timed blocks too
        entrants.back().leave = [] { openblas_set_num_threads(1); };
        for (const BenchVariant& v : bench_variants()) {
          if (dir == "fwd" && v.pw_forward) race(v.name, [&, &v = v] { v.pw_forward(M, Cin, Cout, x.data(), w.data(), res.data()); }, "variant");
          if (dir == "bwd_d" && v.pw_backward_data)
            race(v.name, [&, &v = v] { v.pw_backward_data(M, Cin, Cout, dy.data(), w.data(), res.data(), false); }, "variant");
          if (dir == "bwd_w" && v.pw_backward_weights)
            race(v.name, [&, &v = v] { v.pw_backward_weights(M, Cin, Cout, x.data(), dy.data(), res.data(), false); }, "variant");
        }
      }
#ifdef SPNAS_HAVE_DNNL
      OneDnnConv dc(s, d, dir, x.data(), w.data(), res.data(), dy.data());
      race("onednn", [&] { dc.run(); }, dc.impl, [&] { dc.result_to_user(); });
#endif
      {
        std::vector<std::function<void()>> fns, enter, leave;
        for (const Entrant& e : entrants) fns.push_back(e.fn), enter.push_back(e.enter), leave.push_back(e.leave);
        std::vector<Timing> t = time_interleaved(fns, enter, leave, opt.budget);
        for (size_t i = 0; i < entrants.size(); ++i) add(entrants[i].impl, t[i], entrants[i].err, entrants[i].info);
      }
      double dnnl_ms = 0;
      for (const Record& r : recs)
        if (r.impl == "onednn") dnnl_ms = r.ms_median;
      for (Record& r : recs) {
        r.vs_onednn = dnnl_ms > 0 ? dnnl_ms / r.ms_median : 0;  // > 1: faster than oneDNN
        std::printf("%-4s %-6s %-26s %-16s %9.3f %8.1f %8.1f %5.0f%% %5.0f%% %6.2fx %9.2g  %s\n", r.op.c_str(),
                    r.direction.c_str(), r.shape.c_str(), r.impl.c_str(), r.ms_median, r.gbs, r.gflops,
                    100.0 * r.gbs / bw.copy_gbs, peak > 0 ? 100.0 * r.gflops / peak : 0.0, r.vs_onednn, r.max_err,
                    r.impl_info.c_str());
        records.push_back(r);
      }
      std::fflush(stdout);
    }
  }

  // Summary: per op and direction, geometric-mean speed-up of ours over oneDNN and the worst shape.
  std::printf("\nsummary (ours vs oneDNN, >1 = faster; pointwise also vs bare sgemm)\n");
  for (const char* op : {"dw", "pw"})
    for (const char* dir : kDirs) {
      double lg = 0, lg_sg = 0, worst = 1e30;
      int n = 0, n_sg = 0;
      std::string worst_shape;
      for (const Record& r : records) {
        if (r.op != op || r.direction != dir || r.impl != "ours") continue;
        if (r.vs_onednn > 0) {
          lg += std::log(r.vs_onednn), ++n;
          if (r.vs_onednn < worst) worst = r.vs_onednn, worst_shape = r.shape;
        }
        for (const Record& q : records)
          if (q.op == r.op && q.direction == r.direction && q.shape == r.shape && q.impl == "sgemm")
            lg_sg += std::log(q.ms_median / r.ms_median), ++n_sg;
      }
      if (!n) continue;
      std::printf("  %-3s %-6s geomean %.2fx over %d shapes, worst %.2fx (%s)", op, dir, std::exp(lg / n), n, worst,
                  worst_shape.c_str());
      if (n_sg) std::printf("; vs sgemm %.2fx", std::exp(lg_sg / n_sg));
      std::printf("\n");
    }

  // The peak bounds every kernel: a record above it means the probe under-read.
  int above = 0;
  for (const Record& r : records)
    if (peak > 0 && r.gflops > peak) {
      std::printf("  above the FMA peak: %s %s %s %s %.1f GFLOP/s\n", r.op.c_str(), r.direction.c_str(),
                  r.shape.c_str(), r.impl.c_str(), r.gflops);
      ++above;
    }
  if (peak > 0) std::printf("  %d of %zu records above the FMA peak (%.1f GFLOP/s)\n", above, records.size(), peak);

  if (!opt.json.empty()) {
    // A list of records; the run's context (threads, kernels, bandwidth) is repeated in each.
    nlohmann::json j = nlohmann::json::array();
    for (const Record& r : records)
      j.push_back({{"op", r.op}, {"direction", r.direction}, {"shape", r.shape}, {"impl", r.impl},
                   {"impl_info", r.impl_info}, {"ms_median", r.ms_median}, {"ms_min", r.ms_min}, {"reps", r.reps},
                   {"gbs", r.gbs}, {"gflops", r.gflops}, {"pct_bandwidth", 100.0 * r.gbs / bw.copy_gbs},
                   {"vs_onednn", r.vs_onednn}, {"max_err", r.max_err}, {"checked", r.checked},
                   {"threads", opt.threads}, {"kernels", kernels().name}, {"openblas_core", openblas_get_corename()},
                   {"bandwidth_copy_gbs", bw.copy_gbs}, {"bandwidth_read_gbs", bw.read_gbs},
                   {"fma_peak_gflops", peak}, {"pct_peak", peak > 0 ? 100.0 * r.gflops / peak : 0.0}});
    std::ofstream out(opt.json);
    out << j.dump(1) << "\n";
    std::printf("wrote %s (%zu records)\n", opt.json.c_str(), records.size());
  }
  return 0;
}
