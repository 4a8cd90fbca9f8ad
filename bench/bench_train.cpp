// bench_train: end-to-end training throughput (images/s) and peak resident memory of a
// MobileNetV2-style network on 32x32 inputs, batch 64: stem 3x3/32 stride 1; MBConv stages
// (expansion, channels, repeats, stride) = (1,16,1,1) (6,24,2,1) (6,32,3,2) (6,64,4,2) (6,96,3,1)
// (6,160,3,2) (6,320,1,1); 1x1 to 1280; average pool; linear to 10; batch norm + ReLU6 throughout.
// Plain SGD with momentum on a fixed synthetic batch (throughput does not depend on the data).
//
//   bench_train [--k 3|5] [--threads N] [--batch B] [--steps S] [--warmup W] [--json FILE]
//               [--keep-openblas-coretype] [--no-low-memory] [--profile] [--losses]
// --profile prints the engine's op profile (time per op and output shape, forward/backward/
// recompute) over the timed steps. --losses prints every step's loss, exactly (hex float), so two
// builds' trajectories can be compared bit for bit (diff their outputs' "loss" lines).
//
// After the timed steps it measures the machine's FMA peak (bench/machine.h) and prints the step's
// FLOPs per image, the GFLOP/s achieved, its share of the peak and the images/s the peak would allow.
//
// Without --k it runs k = 3 and k = 5 each in a fresh process, so each gets its own peak RSS.
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <string>
#include <vector>

#include "bench/machine.h"
#include "engine/optim.h"
#include "engine/params.h"
#include "engine/rng.h"
#include "engine/threads.h"
#include "ops/ops.h"

extern "C" char* openblas_get_corename(void);
extern char** environ;

using namespace spnas;

namespace {

struct Model {
  ParamSet ps;
  std::deque<BatchNorm> bns;  // stable addresses
  Rng rng{42};
  int k = 3;
  int counter = 0;

  Var weight(const Shape& shape, int64_t fan_in) {
    Tensor t = Tensor::empty(shape);
    float sd = std::sqrt(2.0f / float(fan_in));
    for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = sd * rng.normal();
    return ps.add("w" + std::to_string(counter++), t);
  }
  struct BnParams {
    Var gamma, beta;
    BatchNorm* bn;
  };
  std::vector<BnParams> bn_params;
  std::vector<Var> weights;
  size_t bn_i = 0, w_i = 0;
  bool building = true;
  int64_t macs = 0;  // multiply-adds per image of the forward pass, counted while building

  // Adds the multiply-adds of an op whose output `out` ([N, H, W, C]) costs `per_pixel` each.
  void count(const Var& out, int64_t per_pixel) {
    if (building) macs += out->value.dim(1) * out->value.dim(2) * per_pixel;
  }

  // Parameters are created on the first forward pass and reused in order afterwards.
  Var W(const Shape& shape, int64_t fan_in) {
    if (building) weights.push_back(weight(shape, fan_in));
    return weights[w_i++];
  }
  // The next batch norm's parameters (created on the first pass) for an input like x.
  BnParams& bn_next(const Var& x) {
    if (building) {
      int64_t C = x->value.dim(-1);
      std::string n = "bn" + std::to_string(counter++);
      BatchNorm& b = bns.emplace_back();
      b.running_mean = ps.add_buffer(n + ".mean", Tensor::zeros({C}));
      b.running_var = ps.add_buffer(n + ".var", Tensor::full({C}, 1.0f));
      bn_params.push_back({ps.add(n + ".gamma", Tensor::full({C}, 1.0f), false, "bn"),
                           ps.add(n + ".beta", Tensor::zeros({C}), false, "bn"), &b});
    }
    return bn_params[bn_i++];
  }
  Var bn_act(const Var& x, Act act) {
    BnParams& p = bn_next(x);
    return batchnorm(x, p.gamma, p.beta, *p.bn, true, act);
  }
  Var bn_act_pwconv(const Var& x, Act act, const Var& w) {
    BnParams& p = bn_next(x);
    return spnas::bn_act_pwconv(x, p.gamma, p.beta, *p.bn, true, act, w);
  }

  Var mbconv(Var x, int64_t cout, int e, int stride) {
    const int64_t cin = x->value.dim(-1);
    Var h = x;
    const int64_t ch = cin * e;
    // As nas/model.cpp's mbconv_forward: the post-activation tensors are released after their
    // consumer and recomputed in backward (release_value).
    if (e != 1) {
      Var z = pwconv(h, W({cin, cin * e}, cin));
      count(z, cin * ch);
      Var a = bn_act(z, Act::ReLU6);
      h = dwconv2d(a, W({k, k, ch}, int64_t(k) * k), stride);
      release_value(a);
    } else {
      h = dwconv2d(h, W({k, k, ch}, int64_t(k) * k), stride);
    }
    count(h, int64_t(k) * k * ch);
    // The depthwise output's batch norm + ReLU6 is read by the project GEMM, never stored.
    Var p = bn_act_pwconv(h, Act::ReLU6, W({ch, cout}, ch));
    count(p, ch * cout);
    h = bn_act(p, Act::None);
    if (stride == 1 && cin == cout) h = add(h, x);
    return h;
  }

  Var forward(const Var& x, const std::vector<int>& labels) {
    bn_i = w_i = 0;
    Var stem = conv2d_same(x, W({3, 3, 3, 32}, 27), 1);
    count(stem, 27 * 32);
    Var h = bn_act(stem, Act::ReLU6);
    const int stages[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 1}, {6, 32, 3, 2}, {6, 64, 4, 2},
                              {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    for (auto& s : stages)
      for (int r = 0; r < s[2]; ++r) h = mbconv(h, s[1], s[0], r == 0 ? s[3] : 1);
    Var head = pwconv(h, W({320, 1280}, 320));
    count(head, 320 * 1280);
    h = bn_act(head, Act::ReLU6);
    h = global_avgpool(h);
    if (building) {
      macs += 1280 * 10;
      weights.push_back(weight({1280, 10}, 1280));
      weights.push_back(ps.add("fc.b", Tensor::zeros({10}), false, "bias"));
    }
    Var logits = linear(h, weights[w_i], weights[w_i + 1]);
    w_i += 2;
    building = false;
    return softmax_cross_entropy(logits, labels);
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

bool g_profile = false;
bool g_losses = false;

int run_one(int k, int threads, int batch, int steps, int warmup, const std::string& json) {
  set_num_threads(threads);
  Model m;
  m.k = k;
  Tensor xb = Tensor::empty({batch, 32, 32, 3});
  for (int64_t i = 0; i < xb.numel(); ++i) xb.data()[i] = m.rng.normal();
  std::vector<int> labels(batch);
  for (int i = 0; i < batch; ++i) labels[i] = int(m.rng.below(10));
  Var x = constant(xb);

  // Build the parameters with one forward pass, then make the optimizer.
  clear_tape();
  { Var loss = m.forward(x, labels); backward(loss); }
  m.ps.zero_grad();
  SGD opt(m.ps, 0.9f, false, 4e-5f);

  std::vector<double> step_s;
  double optim_s = 0;
  float loss_first = 0, loss_last = 0;
  for (int s = 0; s < warmup + steps; ++s) {
    if (g_profile && s == warmup) set_op_profile(true);
    auto t0 = std::chrono::steady_clock::now();
    op_profile_mark();
    Var loss = m.forward(x, labels);
    float lv = loss->value.item();
    backward(loss);
    auto tb = std::chrono::steady_clock::now();
    opt.step(0.01f);
    m.ps.zero_grad();
    if (g_profile && s >= warmup) optim_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - tb).count();
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (g_losses) std::printf("loss step %d: %a (%.9g)\n", s, lv, lv);
    if (s == 0) loss_first = lv;
    loss_last = lv;
    if (s >= warmup) step_s.push_back(dt);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  const double peak_mib = ru.ru_maxrss / 1024.0;
  const double med = median(step_s);
  const double best = *std::min_element(step_s.begin(), step_s.end());
  std::printf("k=%d threads=%d batch=%d kernels=%s: %.1f images/s (median step %.1f ms, best %.1f ms, %d steps), "
              "peak RSS %.0f MiB, loss %.3f -> %.3f, %lld parameters\n",
              k, threads, batch, kernels().name, batch / med, med * 1e3, best * 1e3, steps, peak_mib, loss_first,
              loss_last, (long long)m.ps.count());
  // The work against the machine's limit, measured now, after the timed steps.
  const double flop_img = bench::training_flops_per_image(m.macs);
  const bench::FmaPeak fma = bench::measure_fma_peak();
  const double peak = fma.gflops;
  const double achieved = flop_img * batch / med / 1e9;
  std::printf("compute: %.3f GFLOP per image (3 x 2 x %.1f M forward multiply-adds); %.1f GFLOP/s achieved = %.0f %% "
              "of the FMA peak measured now (%.1f GFLOP/s); at 100 %% of that peak: %.0f images/s\n",
              flop_img / 1e9, m.macs / 1e6, achieved, peak > 0 ? 100.0 * achieved / peak : 0.0, peak,
              peak > 0 ? peak * 1e9 / flop_img : 0.0);
  std::printf("%s\ncpu: %s\n", fma.describe().c_str(), cpu_description().c_str());
  if (g_profile) {
    std::printf("%s", op_profile_report(steps).c_str());
    std::printf("optimizer step + zero_grad: %.3f ms per step (not in the table)\n", optim_s * 1e3 / steps);
    std::printf("median step: %.3f ms\n", med * 1e3);
  }
  std::fflush(stdout);
  if (!json.empty()) {
    std::ofstream out(json, std::ios::app);
    out << "{\"k\": " << k << ", \"threads\": " << threads << ", \"batch\": " << batch << ", \"kernels\": \""
        << kernels().name << "\", \"images_per_s\": " << batch / med << ", \"step_ms_median\": " << med * 1e3
        << ", \"step_ms_best\": " << best * 1e3 << ", \"peak_rss_mib\": " << peak_mib
        << ", \"gflop_per_image\": " << flop_img / 1e9 << ", \"gflops_achieved\": " << achieved
        << ", \"fma_peak_gflops\": " << peak << "}\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int k = 0, threads = 2, batch = 64, steps = 20, warmup = 3;
  bool keep_coretype = false;
  std::string json;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--k") k = std::stoi(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--batch") batch = std::stoi(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--warmup") warmup = std::stoi(next());
    else if (a == "--json") json = next();
    else if (a == "--keep-openblas-coretype") keep_coretype = true;
    else if (a == "--no-low-memory") spnas::set_low_memory(false);
    else if (a == "--profile") g_profile = true;
    else if (a == "--losses") g_losses = true;
    else {
      std::fprintf(stderr, "usage: bench_train [--k 3|5] [--threads N] [--batch B] [--steps S] [--warmup W] "
                           "[--json FILE (JSON lines, appended)] [--keep-openblas-coretype] [--no-low-memory] [--profile] "
                           "[--losses]\n");
      return 2;
    }
  }
  if (const char* ct = std::getenv("OPENBLAS_CORETYPE"); ct && !keep_coretype) {
    std::fprintf(stderr, "bench_train: OPENBLAS_CORETYPE=%s is set; re-running without it "
                         "(pass --keep-openblas-coretype to keep it)\n", ct);
    unsetenv("OPENBLAS_CORETYPE");
    execv("/proc/self/exe", argv);
    std::perror("bench_train: re-exec failed");
  }
  if (k) {
    std::printf("bench_train: OpenBLAS core '%s'%s\n", openblas_get_corename(),
                std::getenv("OPENBLAS_CORETYPE") ? "  WARNING: forced by OPENBLAS_CORETYPE" : "");
    std::printf("bench_train: low-memory mode %s\n", spnas::low_memory() ? "on (post-activation tensors recomputed in backward)" : "off");
    return run_one(k, threads, batch, steps, warmup, json);
  }
  // One fresh process per kernel size.
  int rc = 0;
  for (int kk : {3, 5}) {
    std::vector<std::string> args(argv, argv + argc);
    args.push_back("--k");
    args.push_back(std::to_string(kk));
    std::vector<char*> cargs;
    for (auto& s : args) cargs.push_back(s.data());
    cargs.push_back(nullptr);
    pid_t pid;
    if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, cargs.data(), environ) != 0) {
      std::perror("bench_train: spawn");
      return 1;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
  }
  return rc;
}
