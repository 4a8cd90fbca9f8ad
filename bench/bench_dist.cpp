// Data-parallel search step on this machine: 1 rank x 2 threads against 2 ranks x 1 thread (under
// mpirun), the same global batch, alternated in one run; per step, the time the gradient sums were
// in flight, the time backward's caller waited for them (what overlapping did not hide), and the
// bytes summed (the supernet's gradients). The figures feed the projection in engine/README.md.
//
//   bench_dist [--width 0.5] [--batch 64] [--steps 12] [--rounds 3] [--bucket-mb 4,1] [--mpirun CMD]
//   bench_dist --worker [--width W] [--batch B] [--steps N] [--bucket-mb M]   (one measurement)
//
// The driver starts `bench_dist --worker --threads 2` and, for each bucket size, `MPIRUN -np 2
// bench_dist --worker --threads 1` in turn, `rounds` times, and prints the medians.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench/machine.h"
#include "engine/dist.h"
#include "engine/optim.h"
#include "engine/threads.h"
#include "nas/model.h"
#include "nas/run.h"
#include "nas/runtime.h"

using namespace spnas;

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// One measurement: every rank runs `steps` search steps on its share of the batch and rank 0
// prints one JSON line.
static int worker(float width, int batch, int steps, int threads, double bucket_mb) {
  Communicator& comm = world();
  set_num_threads(threads);
  const int share = batch / comm.size();
  SearchSpace space = load_space("cifar10", {width, 0, 0});
  Supernet net(space);
  LatencyTable table;  // plausible entries: their values do not change the step's cost
  table.fixed_ms = 1;
  for (int i = 0; i < space.num_searchable(); ++i) table.layers.push_back(LayerCost{1, 2, 1.2, 2.4});
  RMSProp opt(net.params(), 0.9f, 0.9f, 1e-3f, 1e-5f);
  GradientAverager avg(net.params(), comm, /*average_buffers=*/true, size_t(bucket_mb * (1 << 20)));

  Rng rng(1 + uint64_t(comm.rank()));
  Tensor x = Tensor::empty({share, space.input_size, space.input_size, 3});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = rng.normal();
  std::vector<int> labels(static_cast<size_t>(share));
  for (int i = 0; i < share; ++i) labels[size_t(i)] = i % space.num_classes;
  auto step = [&] {
    ForwardOptions fo;
    fo.rng = &rng;
    Var ce = softmax_cross_entropy(net.forward(constant(x), fo), labels, 0.1f);
    Var loss = add(ce, runtime_loss(runtime_model(table, net.indicators(), RuntimeMode::Formula), RuntimeLoss::Log,
                                    0.02f, 0));
    net.params().zero_grad();
    avg.backward(loss);
    opt.step(0.001f);
  };
  for (int i = 0; i < 2; ++i) step();  // warm-up: pools filled
  const GradSyncStats before = avg.stats();
  comm.barrier("start of the timed steps");
  std::vector<double> ms;
  for (int i = 0; i < steps; ++i) {
    const double t0 = now_seconds();
    step();
    ms.push_back(1e3 * (now_seconds() - t0));
  }
  const GradSyncStats s = avg.stats();
  const double n = double(s.steps - before.steps);
  nlohmann::json j = {{"ranks", comm.size()},
                      {"threads", threads},
                      {"ms_per_step", median(ms)},
                      {"bytes_per_step", avg.gradient_floats() * 4},
                      {"gradient_floats", avg.gradient_floats()},
                      {"buckets", s.buckets}};
  if (n > 0) {
    j["comm_ms"] = 1e3 * (s.comm_seconds - before.comm_seconds) / n;
    j["wait_ms"] = 1e3 * (s.wait_seconds - before.wait_seconds) / n;
    j["backward_ms"] = 1e3 * (s.backward_seconds - before.backward_seconds) / n;
  }
  if (comm.rank() == 0) std::printf("RESULT %s\n", j.dump().c_str());
  return 0;
}

static nlohmann::json measure(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  while (p && fgets(buf, sizeof buf, p)) out += buf;
  if (p) pclose(p);
  const size_t at = out.find("RESULT ");
  if (at == std::string::npos) {
    std::fprintf(stderr, "bench_dist: '%s' gave no result:\n%s\n", cmd.c_str(), out.c_str());
    std::exit(1);
  }
  return nlohmann::json::parse(out.substr(at + 7, out.find('\n', at) - at - 7));
}

int main(int argc, char** argv) {
  float width = 0.5f;
  int batch = 64, steps = 12, rounds = 3, threads = 2;
  std::vector<double> bucket_mb = {4};
  bool is_worker = false;
  std::string mpirun = "mpirun --allow-run-as-root --oversubscribe";
  const char* usage = "usage: bench_dist [--width W] [--batch B] [--steps N] [--rounds R] [--bucket-mb M,...] [--mpirun CMD] [--worker]\n";
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--worker") {
      is_worker = true;
      continue;
    }
    if (i + 1 == argc) return std::fprintf(stderr, "%s", usage), 2;
    const std::string value = argv[++i];
    if (flag == "--width") width = std::stof(value);
    else if (flag == "--batch") batch = std::stoi(value);
    else if (flag == "--steps") steps = std::stoi(value);
    else if (flag == "--rounds") rounds = std::stoi(value);
    else if (flag == "--threads") threads = std::stoi(value);
    else if (flag == "--mpirun") mpirun = value;
    else if (flag == "--bucket-mb") {
      bucket_mb.clear();
      std::stringstream list(value);
      for (std::string item; std::getline(list, item, ',');) bucket_mb.push_back(std::stod(item));
      if (bucket_mb.empty() || *std::min_element(bucket_mb.begin(), bucket_mb.end()) <= 0)
        return std::fprintf(stderr, "bench_dist: --bucket-mb wants sizes above 0 MB, comma-separated\n"), 2;
    }
    else return std::fprintf(stderr, "%s", usage), 2;
  }
  if (is_worker) return worker(width, batch, steps, threads, bucket_mb[0]);

  if (!built_with_mpi()) {
    std::fprintf(stderr, "bench_dist: this build has no MPI (configure with libopenmpi-dev installed)\n");
    return 1;
  }
  const std::string self = "/proc/" + std::to_string(getpid()) + "/exe";
  char exe[4096] = {0};
  if (readlink(self.c_str(), exe, sizeof exe - 1) <= 0) return 1;
  const std::string args = " --worker --width " + std::to_string(width) + " --batch " + std::to_string(batch) +
                           " --steps " + std::to_string(steps);
  std::printf("bench_dist: cifar10 supernet, width %g, global batch %d, %d timed steps per run, %d rounds\n", width,
              batch, steps, rounds);
  std::printf("cpu: %s\n", cpu_description().c_str());
  const size_t nb = bucket_mb.size();
  std::vector<nlohmann::json> one;
  std::vector<std::vector<nlohmann::json>> two(nb);  // per bucket size
  for (int r = 0; r < rounds; ++r) {
    one.push_back(measure(std::string(exe) + args + " --threads 2"));
    std::printf("round %d: 1x2 %.0f ms/step", r + 1, one.back()["ms_per_step"].get<double>());
    for (size_t b = 0; b < nb; ++b) {
      two[b].push_back(measure(mpirun + " -np 2 " + exe + args + " --threads 1 --bucket-mb " + std::to_string(bucket_mb[b])));
      const nlohmann::json& t = two[b].back();
      std::printf(" | 2x1, %g MB buckets: %.0f ms/step (sums in flight %.1f ms, waited %.1f ms, backward %.0f ms)",
                  bucket_mb[b], t["ms_per_step"].get<double>(), t["comm_ms"].get<double>(), t["wait_ms"].get<double>(),
                  t["backward_ms"].get<double>());
    }
    std::printf("\n");
  }
  auto med = [](const std::vector<nlohmann::json>& v, const char* key) {
    std::vector<double> x;
    for (const auto& j : v) x.push_back(j[key].get<double>());
    return median(x);
  };
  const double m1 = med(one, "ms_per_step");
  const int64_t bytes = two[0][0]["bytes_per_step"].get<int64_t>();
  std::printf("\ngradients summed per step: %lld floats = %.2f MB\n", (long long)two[0][0]["gradient_floats"].get<int64_t>(),
              bytes / 1e6);
  std::printf("\n%-34s %10s %10s %8s %14s %12s %8s\n", "configuration", "ms/step", "steps/s", "vs 1x2", "in flight ms",
              "waited ms", "hidden");
  std::printf("%-34s %10.1f %10.3f %8s %14s %12s %8s\n", "1 rank x 2 threads", m1, 1e3 / m1, "1.000", "", "", "");
  for (size_t b = 0; b < nb; ++b) {
    const double m2 = med(two[b], "ms_per_step"), comm = med(two[b], "comm_ms"), wait = med(two[b], "wait_ms");
    char name[64];
    std::snprintf(name, sizeof name, "2 ranks x 1 thread, %g MB (%d)", bucket_mb[b], two[b][0]["buckets"].get<int>());
    std::printf("%-34s %10.1f %10.3f %8.3f %14.2f %12.2f %7.0f%%\n", name, m2, 1e3 / m2, m1 / m2, comm, wait,
                comm > 0 ? 100.0 * std::max(0.0, 1 - wait / comm) : 0.0);
  }
  std::printf("(2 ranks: the bucket count in brackets; hidden = the share of the sums' time in flight that backward's "
              "caller did not wait for)\n");
  return 0;
}
