// spnas random: architectures drawn uniformly from a space, optionally matched to a latency target
// (nas/baseline/sampling.h), written as architecture files for `train` and `compare`.
#include <cstdio>

#include "nas/baseline/sampling.h"
#include "tools/cli.h"

namespace spnas::cli {

Command add_random(CLI::App& app) {
  struct Flags {
    std::string space = "cifar10", out_dir = "runs/random";
    SpaceOptions so;
    TableFlags table;
    SampleConfig c;
  };
  auto f = std::make_shared<Flags>();
  SampleConfig& c = f->c;
  CLI::App* s = app.add_subcommand(
      "random",
      "Draws architectures uniformly from a space (each searchable layer uniform over the choices it allows), or, with "
      "--target-ms, until --count of them have a predicted runtime within +-window of the target.\nWrites "
      "OUT/random_NNN.json (for `train --arch` and `compare --random-dir`) and OUT/summary.json.");
  add_space(s, f->space, f->so);
  add_table(s, f->table, false);
  s->add_option("--count", c.count, "architectures to draw")->capture_default_str()->check(integer_in(1, 100000));
  s->add_option("--seed", c.seed, "random seed of the draws")->capture_default_str();
  s->add_option("--target-ms", c.target_ms, "keep only draws whose predicted runtime is within --window of this (ms; 0: off)")
      ->capture_default_str()
      ->check(number_in(0, 1e6));
  s->add_option("--window", c.window, "relative half-width of the target window (0.02: +-2 %)")
      ->capture_default_str()
      ->check(number_above(0, 0.5));
  s->add_option("--max-draws", c.max_draws, "with a target: give up after this many draws")
      ->capture_default_str()
      ->check(integer_in(1, 1e12));
  s->add_option("--out", f->out_dir, "output folder")->capture_default_str();
  return {s, [f, s] {
            LatencyTable table;
            if (!f->table.path.empty()) {
              table = load_table(f->table);
              apply_table_settings(s, table, f->space, f->so);
            }
            const SearchSpace space = load_space(f->space, f->so);
            const LatencyTable* t = f->table.path.empty() ? nullptr : &table;
            const SampleResult r = sample_architectures(space, t, f->c);
            write_samples(f->out_dir, r, f->c, f->table.path);
            std::printf("%s", samples_table(r, t != nullptr).c_str());
            if (t)
              std::printf("%zu of %lld draws kept; the space's predicted R spans %s .. %s ms\n", r.archs.size(),
                          (long long)r.draws, fmt(r.range.min_ms).c_str(), fmt(r.range.max_ms).c_str());
            std::printf("files: %s/random_*.json, %s/summary.json\n", f->out_dir.c_str(), f->out_dir.c_str());
            return 0;
          }};
}

}  // namespace spnas::cli
