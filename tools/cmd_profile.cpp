// spnas profile and spnas latency: the latency laboratory on the command line (nas/latency/, nas/latency/README.md).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "nas/latency/measure.h"
#include "nas/latency/profile.h"
#include "tools/cli.h"

namespace spnas::cli {

namespace {

void print_line(const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); }

// Options shared by profile and latency: how each measurement is taken.
void add_measure_options(CLI::App* s, int& batch, int& threads, bool& training_step, std::string& backend,
                         std::string& clock, double& quantile, int& reps) {
  s->add_option("--batch", batch, "batch size")->capture_default_str()->check(integer_in(1, 4096));
  s->add_option("--threads", threads, "threads")->capture_default_str()->check(integer_in(1, 4096));
  s->add_flag("--train-step", training_step, "time a training step (forward + backward) instead of inference");
  s->add_option("--backend", backend,
                "spnas (this engine), onednn (oneDNN primitives; inference, no SE), or opencv (the network exported "
                "to ONNX, run by OpenCV dnn; inference)")
      ->capture_default_str()
      ->check(CLI::IsMember({"spnas", "onednn", "opencv"}));
  s->add_option("--clock", clock,
                "wall, or cpu (process CPU time / threads: for a machine too loaded for clean wall-clock runs)")
      ->capture_default_str()
      ->check(CLI::IsMember({"wall", "cpu"}));
  s->add_option("--quantile", quantile,
                "statistic of the repetitions (0.5: median; 0.2 on a shared, noisy machine; use the table's)")
      ->capture_default_str()
      ->check(number_in(0, 1));
  s->add_option("--reps", reps, "at least this many repetitions per network")
      ->capture_default_str()
      ->check(integer_in(1, 1000000));
}

}  // namespace

Command add_profile(CLI::App& app) {
  struct Flags {
    ProfileOptions o;
    std::string out;
    bool no_pin = false;
  };
  auto f = std::make_shared<Flags>();
  ProfileOptions& o = f->o;
  CLI::App* s = app.add_subcommand(
      "profile",
      "Measures the latency table of a space on this machine: every searchable layer in each candidate (k3-e3, "
      "k3-e6, k5-e3, k5-e6; SE with --se) and the fixed part, timed in network context with warm-up and "
      "repetitions. The table is what `search --lut` reads.");
  s->add_option("--space", o.space, "search space: a built-in name or a space JSON file")->capture_default_str();
  s->add_option("--width", o.width, "width multiplier")->capture_default_str()->check(number_above(0, kMaxWidth));
  s->add_option("--input-size", o.input_size, "input size (0: the space's)")
      ->capture_default_str()
      ->check(integer_in(0, kMaxInputSize));
  add_measure_options(s, o.batch, o.threads, o.training_step, o.backend, o.clock, o.quantile, o.reps);
  s->add_flag("--se", o.search_se, "also measure the SE branch of every searchable layer");
  s->add_option("--min-seconds", o.min_seconds, "and at least this long per network")
      ->capture_default_str()
      ->check(number_in(0, 3600));
  s->add_option("--context-rounds", o.context_rounds, "random network contexts each entry is measured in")
      ->capture_default_str()
      ->check(integer_in(1, 100));
  s->add_flag("--no-pin", f->no_pin, "do not pin threads to CPUs");
  s->add_option("--out", f->out, "output table (JSON)")->required();
  return {s, [f] {
            ProfileOptions& o = f->o;
            o.pin = !f->no_pin;
            o.progress = print_line;
            LatencyTable t = profile_space(o);
            save_latency_table(f->out, t);
            std::printf("latency table of %s (width %g, batch %d, %d thread(s), %s, %s): fixed %.3f ms, %zu layers -> %s\n",
                        t.space.c_str(), t.width, t.batch, t.threads, t.isa.c_str(), t.mode.c_str(), t.fixed_ms,
                        t.layers.size(), f->out.c_str());
            std::printf("%-5s %8s %8s %8s %8s  %s\n", "layer", "k3-e3", "k3-e6", "k5-e3", "k5-e6", "spread");
            for (size_t i = 0; i < t.layers.size(); ++i) {
              const LayerCost& c = t.layers[i];
              std::printf("%-5zu %8.4f %8.4f %8.4f %8.4f  %.0f %%\n", i, c.k3_e3, c.k3_e6, c.k5_e3, c.k5_e6,
                          100 * c.spread);
            }
            return 0;
          }};
}

Command add_latency(CLI::App& app) {
  struct Flags {
    MeasureOptions o;
    std::string arch;
    TableFlags table;
    bool json = false;
  };
  auto f = std::make_shared<Flags>();
  MeasureOptions& o = f->o;
  CLI::App* s = app.add_subcommand("latency",
                                   "Measures the end-to-end latency of a decoded architecture (the profiler's method).");
  s->add_option("--arch", f->arch, "architecture JSON")->required();
  add_measure_options(s, o.batch, o.threads, o.training_step, o.backend, o.clock, o.quantile, o.reps);
  add_table(s, f->table, false);
  s->add_flag("--json", f->json, "print JSON");
  return {s, [f, s] {
            MeasureOptions& o = f->o;
            Arch arch = load_arch(f->arch);
            LatencyTable table;
            const LatencyTable* t = nullptr;
            if (!f->table.path.empty()) {
              table = load_table(f->table);
              t = &table;
              measure_settings_from_table(table, o, s);
            }
            const ArchLatency r = measure_arch_latency(arch, o, t);
            if (f->json) std::printf("%s\n", arch_latency_json(arch, r, o).dump(2).c_str());
            else std::printf("%s", arch_latency_report(r, o).c_str());
            return 0;
          }};
}

}  // namespace spnas::cli
