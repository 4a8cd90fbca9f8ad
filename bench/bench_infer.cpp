// End-to-end inference race of one network across runtimes (issue 23): our engine (ChildNet,
// NoGrad, batch norm folded into the convolutions), our oneDNN backend (nas/latency/measure.h,
// measure_arch_latency), OpenCV dnn on the exported ONNX file, and ONNX Runtime on the same file
// when an external command is given (--ort "node bench/ort_bench.js"; it is not a Debian package).
//
// Per network and configuration (batch x threads): one fixed-batch .onnx file is exported from the
// network (onnx_model_bytes: the exporter of `spnas export`), every runtime is first checked against
// our logits on the same random images (max relative difference per image), then timed in
// alternating blocks: `--rounds` rounds, in each every runtime runs a block of at least 5 calls and
// `--seconds`, after a 10 ms pause (the previous runtime's threads go idle) and 2 untimed calls. A
// runtime's figure is the median of its block medians; images/s = batch / that.
//
// Usage: kUsage below (`bench_infer --help`).
//   --arch: "searched" (default; the architecture of the full 8-epoch cifar10 search, README), "5x5-6"
//           (every searchable layer), or an architecture file; --width: default 1.0 and 0.5;
//   --config: default 1x1, 1x2, 64x1, 64x2; --checkpoint runs a trained network instead.
//   --ort: when the command fails, the run says why and goes on without ONNX Runtime;
//   --dir: where the .onnx files and ONNX Runtime's inputs and outputs go (kept); default a temporary
//          folder, removed at the end;
//   --profile: after each configuration, our per-op times (as SPNAS_PROFILE=1) for that network;
//   --breakdown: after each configuration, the time per piece (stem, each MBConv layer, head) of our
//          engine, oneDNN and OpenCV (the profiler's networks, nas/latency/networks.h, timed
//          round-robin), and oneDNN's time per kind of primitive (pointwise, depthwise, ...);
//   --clock cpu: process CPU time / threads instead of the wall clock, for every runtime.
// Run it under the shared lock: flock /work/.bench.lock build/bench_infer ...
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "engine/io.h"
#include "engine/cpu.h"
#include "engine/threads.h"
#include "nas/model.h"
#include "nas/latency/harness.h"
#include "nas/latency/measure.h"
#include "nas/latency/networks.h"
#include "nas/latency/onednn_backend.h"
#include "nas/latency/stats.h"
#include "nas/train.h"
#include "ops/ops.h"

#if SPNAS_HAVE_ONNX && SPNAS_HAVE_OPENCV
#include "deploy/onnx_export.h"
#include "deploy/opencv_runner.h"
#include "deploy/predict.h"

using namespace spnas;

namespace {

// The architecture found by the full 8-epoch search on CIFAR-10 (README, "Measured here").
const char* const kSearchedArch[] = {"3x3-3", "5x5-6", "3x3-3", "skip",  "3x3-3", "5x5-6", "5x5-6",
                                     "5x5-6", "5x5-6", "5x5-6", "5x5-6", "skip",  "5x5-6", "5x5-6",
                                     "5x5-6", "5x5-6", "5x5-6", "5x5-6", "5x5-6", "5x5-6"};

const char* kUsage =
    "usage: bench_infer [--arch A]... [--width W]... [--config BxT]... [--rounds 5] [--seconds 0.25]\n"
    "                   [--ort \"node bench/ort_bench.js\"] [--no-onednn] [--checkpoint C] [--dir DIR] [--profile]\n"
    "                   [--breakdown] [--clock wall|cpu]\n";

[[noreturn]] void usage_error(const std::string& m) {
  std::fprintf(stderr, "bench_infer: %s\n%s", m.c_str(), kUsage);
  std::exit(2);
}

// The time base, as nas/latency/harness.h's: the wall clock, or ("cpu") the process's CPU time divided by
// its threads, which on a machine shared with other jobs leaves out the time the process was not
// running (spin-waiting threads count, so it suits 1-thread runs best).
bool g_cpu_clock = false;
int g_clock_threads = 1;

double now_ms() {
  if (!g_cpu_clock)
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) * 1e-6) / g_clock_threads;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Median ms of a block: 2 untimed calls, then calls until at least 5 and `seconds` (wall) are done.
double time_block(const std::function<void()>& call, double seconds) {
  call();
  call();
  std::vector<double> ms;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (ms.size() < 5 || std::chrono::steady_clock::now() < end) {
    const double t0 = now_ms();
    call();
    ms.push_back(now_ms() - t0);
  }
  return median(ms);
}

struct RacedNet {
  std::string name;
  std::unique_ptr<ChildNet> net;
  InputRecord input;
};

// A random-weight network (speed does not depend on the values) with batch-norm statistics away
// from 0 / 1, so the checks below compare a real folding.
RacedNet random_network(const std::string& arch_name, float width) {
  SearchSpace s = load_space("cifar10", SpaceOptions{width, 0, 0});
  Arch a = uniform_arch(s, Choice::K5E6);
  if (arch_name == "searched") {
    for (size_t i = 0; i < a.layers.size(); ++i) a.layers[i] = parse_choice(kSearchedArch[i], "searched architecture");
  } else if (arch_name != "5x5-6") {
    a = load_arch(arch_name);
    a.width = width;
  }
  RacedNet n;
  n.name = arch_name + " w" + std::to_string(width).substr(0, 4);
  n.net = std::make_unique<ChildNet>(a);
  Rng rng(5);
  for (const auto& b : n.net->params().buffers()) {
    Tensor t = b.second;
    const bool var = b.first.find("running_var") != std::string::npos;
    for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = var ? rng.uniform(0.5f, 2.0f) : rng.uniform(-0.2f, 0.2f);
  }
  n.input.data = "cifar10 (benchmark: random weights)";
  n.input.image_height = n.input.image_width = 32;
  for (int k = 0; k < n.net->space().num_classes; ++k) n.input.class_names.push_back("class" + std::to_string(k));
  n.input.mean = {0.4914f, 0.4822f, 0.4465f};
  n.input.std = {0.2470f, 0.2435f, 0.2616f};
  return n;
}

// Random pixels in [0, 1], NHWC.
Tensor random_pixels(int64_t N, int S, uint64_t seed) {
  Tensor x = Tensor::empty({N, S, S, 3});
  Rng rng(seed);
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = float(rng.below(256)) / 255.0f;
  return x;
}

// What the exported graph's first nodes compute, (x - mean) / std: our engine's input.
Tensor normalised(const Tensor& x, const InputRecord& in) {
  Tensor y = Tensor::empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) y.data()[i] = (x.data()[i] - in.mean[size_t(i % 3)]) / in.std[size_t(i % 3)];
  return y;
}

// Worst over the images of max |a - b| / max |a|.
double relative_difference(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return INFINITY;
  const int64_t N = a.dim(0), K = a.dim(1);
  double worst = 0;
  for (int64_t n = 0; n < N; ++n) {
    double d = 0, s = 0;
    for (int64_t k = 0; k < K; ++k) {
      d = std::max(d, double(std::fabs(a.data()[n * K + k] - b.data()[n * K + k])));
      s = std::max(s, double(std::fabs(a.data()[n * K + k])));
    }
    worst = std::max(worst, d / s);
  }
  return worst;
}

void write_floats(const std::string& path, const Tensor& t) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(t.data()), std::streamsize(t.numel() * sizeof(float)));
  if (!f) usage_error("cannot write " + path);
}

Tensor read_floats(const std::string& path, const Shape& shape) {
  std::ifstream f(path, std::ios::binary);
  Tensor t = Tensor::empty(shape);
  f.read(reinterpret_cast<char*>(t.data()), std::streamsize(t.numel() * sizeof(float)));
  if (!f) throw std::runtime_error("ort: " + path + " does not hold " + shape_str(shape) + " floats");
  return t;
}

// One block of the external ONNX Runtime command: its median ms (and the logits of its first run).
struct OrtBlock {
  double median_ms = 0;
  std::string version;
};
OrtBlock run_ort(const std::string& command, const std::string& model, const std::string& input, int N, int threads,
                 double seconds, const std::string& out) {
  const std::string cmd = command + " '" + model + "' '" + input + "' " + std::to_string(N) + " " +
                          std::to_string(threads) + " " + std::to_string(seconds) + " '" + out + "' " +
                          (g_cpu_clock ? "cpu" : "wall");
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("ort: cannot run " + cmd);
  std::string text;
  char buf[4096];
  while (size_t k = fread(buf, 1, sizeof buf, p)) text.append(buf, k);
  const int rc = pclose(p);
  if (rc != 0) throw std::runtime_error("ort: `" + cmd + "` failed (status " + std::to_string(rc) + ")");
  nlohmann::json j = nlohmann::json::parse(text.substr(text.find('{')));
  return {j.at("median_ms").get<double>(), j.at("ort").get<std::string>()};
}

std::string g_ort_version;  // reported by the ONNX Runtime command

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

struct Options {
  std::vector<std::string> archs;
  std::vector<float> widths;
  std::vector<std::pair<int, int>> configs;
  int rounds = 5;
  double seconds = 0.25;
  std::string ort;
  bool onednn = true;
  std::string checkpoint;
  std::string dir;  // empty: a temporary folder
  bool profile = false, breakdown = false;
  std::string clock = "wall";
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::printf("%s", kUsage);
      std::exit(0);
    } else if (a == "--arch") o.archs.push_back(value());
    else if (a == "--width") o.widths.push_back(std::stof(value()));
    else if (a == "--config") {
      const std::string c = value();
      const auto x = c.find('x');
      if (x == std::string::npos) usage_error("config '" + c + "' must be BATCHxTHREADS");
      o.configs.push_back({std::stoi(c.substr(0, x)), std::stoi(c.substr(x + 1))});
    } else if (a == "--rounds") o.rounds = std::stoi(value());
    else if (a == "--seconds") o.seconds = std::stod(value());
    else if (a == "--ort") o.ort = value();
    else if (a == "--no-onednn") o.onednn = false;
    else if (a == "--checkpoint") o.checkpoint = value();
    else if (a == "--dir") o.dir = value();
    else if (a == "--profile") o.profile = true;
    else if (a == "--breakdown") o.breakdown = true;
    else if (a == "--clock") o.clock = value();
    else usage_error("unknown option " + a);
  }
  if (o.clock != "wall" && o.clock != "cpu") usage_error("--clock must be wall or cpu");
  if (o.archs.empty()) o.archs = {"searched"};
  if (o.widths.empty()) o.widths = {1.0f, 0.5f};
  if (o.configs.empty()) o.configs = {{1, 1}, {1, 2}, {64, 1}, {64, 2}};
#if !SPNAS_HAVE_DNNL
  o.onednn = false;
#endif
  return o;
}

// The ONNX Runtime command is outside the project: when it fails (not installed, no NODE_PATH, a
// crash), the race says why and goes on without it.
void drop_ort_if_failing(Options& o, const std::function<void()>& use_ort) {
  try {
    use_ort();
  } catch (const std::exception& e) {
    std::printf("ONNX Runtime left out of the race: %s\n", e.what());
    std::fflush(stdout);
    o.ort.clear();
  }
}

// Median of each piece's runs, per backend: [backend][piece].
using PieceMedians = std::vector<std::vector<double>>;

// --breakdown (see the header): the profiler's piece networks of each backend, timed round-robin in
// one run, and oneDNN's time per kind of primitive.
void breakdown(const Arch& arch, int B, int T, const Options& o) {
  SpaceOptions so;
  so.width = arch.width;
  so.input_size = arch.input_size;
  so.num_classes = arch.num_classes;
  const SearchSpace space = load_space(arch.space, so);
  std::vector<std::string> backends = {"spnas"};
  if (o.onednn && arch.se.empty()) backends.push_back("onednn");
  backends.push_back("opencv");
  ThreadScope threads(T);
  ClockScope clock(o.clock, T);
  const Var images = constant(random_pixels(B, space.input_size, 7));
  const std::vector<int> labels = make_labels(B, space.num_classes);
  std::vector<std::unique_ptr<PieceNet>> nets;
  for (const std::string& b : backends) {
    prepare_backend(b, false, T);
    nets.push_back(make_piece_net(b, space, arch.layers, arch.se, images->value, 1));
  }
  const size_t pieces = size_t(nets[0]->num_pieces());
  std::vector<std::vector<std::vector<double>>> runs(nets.size(), std::vector<std::vector<double>>(pieces));
  std::vector<std::vector<double>> last(nets.size(), std::vector<double>(pieces));
  std::vector<std::vector<double>> totals(nets.size());
  std::vector<double> last_total(nets.size());
  Repetitions reps;
  reps.warmup = 3;
  reps.reps = 10 * o.rounds;
  reps.min_seconds = o.seconds * o.rounds;
  reps.drop_preempted = false;  // as the race's blocks
  Rng rng(3);
  round_robin(
      int(nets.size()), reps,
      [&](int i) { return last_total[size_t(i)] = nets[size_t(i)]->run(images, labels, false, rng, last[size_t(i)].data()); },
      [&](int i, bool) {
        for (size_t p = 0; p < pieces; ++p) runs[size_t(i)][p].push_back(last[size_t(i)][p]);
        totals[size_t(i)].push_back(last_total[size_t(i)]);
      });
  PieceMedians med(nets.size(), std::vector<double>(pieces));
  for (size_t i = 0; i < nets.size(); ++i)
    for (size_t p = 0; p < pieces; ++p) med[i][p] = quantile(runs[i][p], 0.5);

  std::printf("time per piece, %dx%d, median ms of %zu round-robin runs (%s clock):\n%-34s", B, T, runs[0][0].size(),
              o.clock.c_str(), "piece");
  for (const std::string& b : backends) std::printf(" %9s", b.c_str());
  std::printf("   onednn/ours\n");
  auto row = [&](const std::string& what, size_t p) {
    std::printf("%-34s", what.c_str());
    for (size_t i = 0; i < nets.size(); ++i) std::printf(" %9.4f", med[i][p]);
    if (backends.size() > 2) std::printf("   %.2f", med[1][p] / med[0][p]);
    std::printf("\n");
  };
  row("stem", 0);
  int si = 0;
  for (size_t l = 0; l < space.layers.size(); ++l) {
    const LayerSpec& ls = space.layers[l];
    std::string what = "layer " + std::to_string(l) + " " + std::to_string(ls.cin) + "->" + std::to_string(ls.cout) +
                       " s" + std::to_string(ls.stride) + " " + std::to_string(ls.in_size) + "px";
    if (ls.searchable) what += std::string(" ") + choice_name(arch.layers[size_t(si++)]);
    const int p = nets[0]->layer_piece()[l];
    if (p >= 0) row(what, size_t(p));
  }
  row("head", pieces - 1);
  std::printf("%-34s", "sum of the pieces");
  for (size_t i = 0; i < nets.size(); ++i) {
    double sum = 0;
    for (double m : med[i]) sum += m;
    std::printf(" %9.4f", sum);
  }
  std::printf("\n%-34s", "whole runs");
  for (size_t i = 0; i < nets.size(); ++i) std::printf(" %9.4f", quantile(totals[i], 0.5));
  std::printf("\n");
#ifdef SPNAS_HAVE_DNNL
  if (backends.size() > 2) {
    std::printf("oneDNN per kind of primitive, %dx%d, median ms per run:", B, T);
    for (const auto& [kind, ms] : onednn_time_by_kind(*nets[1], std::max(20, reps.reps))) std::printf("  %s %.4f", kind.c_str(), ms);
    std::printf("\n");
  }
#endif
  std::fflush(stdout);
}

void race(RacedNet& n, Options& o) {
  const int S = n.net->space().input_size, K = n.net->space().num_classes;
  const bool onednn = o.onednn && n.net->arch().se.empty();  // the oneDNN backend has no SE
  std::printf("\n== %s: %s, %.1f M MACs/image, %lld parameters\n", n.name.c_str(), arch_summary(n.net->arch()).c_str(),
              n.net->macs() / 1e6, (long long)n.net->params().count());
  std::printf("%-7s %8s %8s %8s %8s   %9s %9s %9s %9s   %s\n", "config", "ours", "onednn", "opencv", "ort", "ours/s",
              "onednn/s", "opencv/s", "ort/s", "ours vs fastest peer (>1: ours faster)");
  ForwardOptions fo;
  fo.training = false;
  for (auto [B, T] : o.configs) {
    const std::string tag = o.dir + "/" + std::to_string(B) + "x" + std::to_string(T);
    const std::string model = o.dir + "/b" + std::to_string(B) + ".onnx";
    write_file_atomic(model, onnx_model_bytes(*n.net, n.input, B));
    const Tensor images = random_pixels(B, S, 7);
    const Tensor ours_in = normalised(images, n.input);
    const Tensor peer_in = nhwc_to_nchw(images);
    set_num_threads(T);
    set_opencv_threads(T);
    g_clock_threads = T;
    OpenCvNet cv(model, B);
    // The check: every runtime's logits against ours, on the same images.
    NoGrad ng;
    const Tensor ours = n.net->forward(constant(ours_in), fo)->value.clone();
    char check[96];
    const double d_cv = relative_difference(ours, cv.forward(peer_in));
    std::snprintf(check, sizeof check, "opencv %.1e", d_cv);
    if (!o.ort.empty())
      drop_ort_if_failing(o, [&] {
        write_floats(tag + ".input.f32", peer_in);
        run_ort(o.ort, model, tag + ".input.f32", B, T, 0.0, tag + ".ort.f32");
        const double d_ort = relative_difference(ours, read_floats(tag + ".ort.f32", {B, K}));
        std::snprintf(check + std::strlen(check), sizeof check - std::strlen(check), ", ort %.1e", d_ort);
      });
    std::vector<double> t_ours, t_dnnl, t_cv, t_ort;
    const auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(10)); };
    for (int r = 0; r < o.rounds; ++r) {
      pause();
      set_num_threads(T);
      t_ours.push_back(time_block([&] { n.net->forward(constant(ours_in), fo); }, o.seconds));
      pause();
      t_cv.push_back(time_block([&] { cv.forward(peer_in); }, o.seconds));
      if (onednn) {
        pause();
        MeasureOptions mo;
        mo.batch = B;
        mo.threads = T;
        mo.backend = "onednn";
        mo.warmup = 2;
        mo.reps = 5;
        mo.min_seconds = o.seconds;
        mo.drop_preempted = false;  // as the other runtimes' blocks
        mo.pin = false;
        mo.clock = o.clock;
        t_dnnl.push_back(measure_arch_latency(n.net->arch(), mo).median_ms);
      }
      if (!o.ort.empty()) {
        pause();
        drop_ort_if_failing(o, [&] {
          OrtBlock b = run_ort(o.ort, model, tag + ".input.f32", B, T, o.seconds, tag + ".ort.f32");
          t_ort.push_back(b.median_ms);
          g_ort_version = b.version;
        });
      }
    }
    auto ms = [](const std::vector<double>& v) { return v.empty() ? NAN : median(v); };
    auto rate = [&](double m) { return B / (m / 1000.0); };
    const double mo_ = ms(t_ours), md = ms(t_dnnl), mc = ms(t_cv), mr = ms(t_ort);
    double fastest = mc;
    if (!std::isnan(md)) fastest = std::min(fastest, md);
    if (!std::isnan(mr)) fastest = std::min(fastest, mr);
    std::printf("%3dx%-3d %8.3f %8.3f %8.3f %8.3f   %9.0f %9.0f %9.0f %9.0f   %.2fx  (check: %s)\n", B, T, mo_, md, mc,
                mr, rate(mo_), rate(md), rate(mc), rate(mr), fastest / mo_, check);
    std::fflush(stdout);
    if (o.profile) {
      set_op_profile(true, true);
      const int calls = std::max(5, int(1000.0 * o.seconds / std::max(mo_, 0.01)));
      for (int i = 0; i < calls; ++i) {
        op_profile_mark();
        n.net->forward(constant(ours_in), fo);
      }
      std::printf("our op profile, %dx%d, per call:\n%s", B, T, op_profile_report(calls).c_str());
      set_op_profile(false);
    }
    if (o.breakdown) breakdown(n.net->arch(), B, T, o);
  }
}

// The folder of the files the race writes: --dir (created, kept), or a new temporary folder that is
// removed again at the end.
struct WorkDir {
  std::string path;
  bool temporary = false;
  explicit WorkDir(const std::string& dir) {
    if (!dir.empty()) {
      std::filesystem::create_directories(dir);
      path = dir;
      return;
    }
    std::string pattern = (std::filesystem::temp_directory_path() / "bench_infer.XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("cannot create a temporary folder " + pattern);
    path = pattern;
    temporary = true;
  }
  ~WorkDir() {
    std::error_code ignored;
    if (temporary) std::filesystem::remove_all(path, ignored);
  }
};

int run(Options& o) {
  g_cpu_clock = o.clock == "cpu";
  const WorkDir dir(o.dir);
  o.dir = dir.path;
  std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::localtime(&now));
  std::printf("bench_infer  %s\nmachine: %s\nour kernels: %s; load average at start: %s\n", date,
              cpu_description().c_str(), kernels().name, load_average().c_str());
  std::printf("figures: median ms per call (median of %d alternating blocks of >= %.2f s), %s clock, images/s = "
              "batch / that%s\n",
              o.rounds, o.seconds, o.clock.c_str(), o.ort.empty() ? "; ONNX Runtime: not run (no --ort command)" : "");
  const std::string ort_command = o.ort;
  if (o.checkpoint.empty()) {
    for (const std::string& a : o.archs)
      for (float w : o.widths) {
        RacedNet n = random_network(a, w);
        race(n, o);
      }
  } else {
    TrainedNetwork t = load_trained_network(o.checkpoint, true, "bench_infer");
    RacedNet n;
    n.name = o.checkpoint;
    n.net = std::move(t.net);
    n.input = t.input_or_throw("bench_infer");
    race(n, o);
  }
  if (!g_ort_version.empty()) std::printf("\nONNX Runtime %s (%s)\n", g_ort_version.c_str(), ort_command.c_str());
  std::printf("load average at end: %s\n", load_average().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_infer: %s\n", e.what());
    return 1;
  }
}

#else

int main() {
  std::printf("bench_infer needs ONNX (libonnx-dev, libprotobuf-dev) and OpenCV dnn (libopencv-dnn-dev); this build "
              "has not found them\n");
  return 0;
}

#endif
