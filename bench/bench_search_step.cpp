// Superkernel overhead: a supernet training step (forward with indicators + runtime model +
// backward + optimizer) against a step of the fixed all-5x5-6 network of the same space, same
// batch, same threads, timed alternately in one run. Target: supernet <= 1.15x. It also prints the
// supernet step's FLOPs against the machine's FMA peak (bench/machine.h) and the shortest 8-epoch
// search that peak allows.
//
//   bench_search_step [--space cifar10] [--width 1] [--batch 64] [--threads 2] [--steps 20]
//                     [--json FILE]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/args.h"
#include "bench/machine.h"
#include "engine/alloc.h"
#include "engine/optim.h"
#include "engine/threads.h"
#include "nas/model.h"
#include "nas/run.h"
#include "nas/runtime.h"
#include "ops/kernels.h"

extern "C" char* openblas_get_corename(void);

using namespace spnas;

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int main(int argc, char** argv) {
  std::string space_name = "cifar10", json_path;
  float width = 1.0f;
  int batch = 64, threads = 2, steps = 20;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return flag_value("bench_search_step", argc, argv, i); };
    if (a == "--space") space_name = next();
    else if (a == "--width") width = std::stof(next());
    else if (a == "--batch") batch = std::stoi(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--json") json_path = next();
    else {
      std::fprintf(stderr, "usage: bench_search_step [--space S] [--width W] [--batch B] [--threads T] [--steps N] [--json F]\n");
      return 2;
    }
  }
  set_num_threads(threads);
  SearchSpace space = load_space(space_name, {width, 0, 0});
  std::printf("space %s width %g batch %d threads %d isa %s openblas %s\n", space.name.c_str(), width, batch, threads,
              kernels().name, openblas_get_corename());

  Supernet super(space);
  ChildNet child(uniform_arch(space, Choice::K5E6));
  // A latency table with plausible entries (its values do not change the step's cost).
  LatencyTable table;
  table.fixed_ms = 1;
  for (int i = 0; i < space.num_searchable(); ++i) table.layers.push_back(LayerCost{1, 2, 1.2, 2.4});
  RMSProp opt_s(super.params(), 0.9f, 0.9f, 1e-3f, 1e-5f), opt_c(child.params(), 0.9f, 0.9f, 1e-3f, 1e-5f);

  Rng rng(1);
  Tensor x = Tensor::empty({batch, space.input_size, space.input_size, 3});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = rng.normal();
  std::vector<int> labels(batch);
  for (int i = 0; i < batch; ++i) labels[i] = i % space.num_classes;

  auto step_super = [&]() {
    ForwardOptions fo;
    fo.rng = &rng;
    Var ce = softmax_cross_entropy(super.forward(constant(x), fo), labels, 0.1f);
    Var loss = add(ce, runtime_loss(runtime_model(table, super.indicators(), RuntimeMode::Formula), RuntimeLoss::Log,
                                    0.02f, 0));
    super.params().zero_grad();
    backward(loss);
    opt_s.step(0.001f);
  };
  auto step_child = [&]() {
    ForwardOptions fo;
    fo.rng = &rng;
    Var loss = softmax_cross_entropy(child.forward(constant(x), fo), labels, 0.1f);
    child.params().zero_grad();
    backward(loss);
    opt_c.step(0.001f);
  };
  for (int i = 0; i < 3; ++i) step_super(), step_child();  // warm-up: pools filled
  std::vector<double> ts, tc;
  for (int i = 0; i < steps; ++i) {
    double t0 = now_seconds();
    step_super();
    double t1 = now_seconds();
    step_child();
    double t2 = now_seconds();
    ts.push_back(1e3 * (t1 - t0));
    tc.push_back(1e3 * (t2 - t1));
  }
  double ms = median(ts), mc = median(tc);
  std::printf("%-28s %10s %12s\n", "network", "ms/step", "images/s");
  std::printf("%-28s %10.1f %12.1f\n", "supernet (superkernels)", ms, batch * 1e3 / ms);
  std::printf("%-28s %10.1f %12.1f\n", "fixed all-5x5-6 network", mc, batch * 1e3 / mc);
  std::printf("ratio supernet / fixed: %.3f (target <= 1.15)\n", ms / mc);
  std::printf("peak pooled memory: %.0f MiB\n", pool_stats().peak_bytes_in_use / 1048576.0);
  // The supernet's work against the machine's limit: an 8-epoch search on 50,000 images (the
  // CIFAR-10 training set) cannot take less than its FLOPs at the FMA peak.
  const double flop_step = bench::training_flops_per_image(super.macs()) * batch;
  const bench::FmaPeak fma = bench::measure_fma_peak();
  const double peak = fma.gflops;
  const double achieved = flop_step / (ms / 1e3) / 1e9;
  const double search_steps = 8.0 * (50000 / batch);
  std::printf("supernet compute: %.1f GFLOP per step (3 x 2 x %.1f M forward multiply-adds x %d images); %.1f GFLOP/s "
              "achieved = %.0f %% of the FMA peak measured now (%.1f GFLOP/s)\n",
              flop_step / 1e9, super.macs() / 1e6, batch, achieved, peak > 0 ? 100.0 * achieved / peak : 0.0, peak);
  std::printf("%s\ncpu: %s\n", fma.describe().c_str(), cpu_description().c_str());
  std::printf("8 epochs of 50,000 images (%.0f steps): %.1f min at this step time; >= %.1f min at 100 %% of the peak\n",
              search_steps, search_steps * ms / 6e4, peak > 0 ? search_steps * flop_step / (peak * 1e9) / 60 : 0.0);
  if (!json_path.empty()) {
    nlohmann::json j = {{"space", space.name}, {"width", width}, {"batch", batch}, {"threads", threads},
                        {"supernet_ms_median", ms}, {"fixed_ms_median", mc}, {"ratio", ms / mc},
                        {"supernet_gflop_per_step", flop_step / 1e9}, {"fma_peak_gflops", peak},
                        {"search_8_epochs_min_at_peak", peak > 0 ? search_steps * flop_step / (peak * 1e9) / 60 : 0.0}};
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return 0;
}
