// spnas compare: searched architectures against a random set, trained with one protocol over several
// seeds (nas/baseline/compare.h).
#include <cstdio>

#include "engine/autograd.h"
#include "engine/threads.h"
#include "nas/baseline/compare.h"
#include "tools/cli.h"

namespace spnas::cli {

Command add_compare(CLI::App& app) {
  struct Flags {
    CompareConfig c;
    TrainFlags protocol;
    TableFlags table;
  };
  auto f = std::make_shared<Flags>();
  CompareConfig& c = f->c;
  CLI::App* s = app.add_subcommand(
      "compare",
      "Trains searched architectures and a random set with the same protocol (the `train` flags, given once), --seeds "
      "seeds each, and reports accuracy (validation split and test set) against R and the relative improvement over the "
      "random set's mean.\nWrites OUT/compare.json, OUT/compare.txt, OUT/compare.svg and OUT/runs/NAME/seed_S/ (one "
      "`train` folder per run). A rerun skips finished runs and resumes interrupted ones.");
  s->add_option("--arch", c.arch_paths, "searched architecture file(s)");
  s->add_option("--random-dir", c.random_dir, "folder of `spnas random` (its random_*.json are the random set)");
  add_table(s, f->table, false);
  s->add_option("--target-ms", c.target_ms, "latency target drawn in the plot (ms; 0: none)")
      ->capture_default_str()
      ->check(number_in(0, 1e6));
  s->add_option("--seeds", c.seeds, "trainings per architecture (seeds 1..K)")->capture_default_str()->check(integer_in(1, 1000));
  s->add_option("--val-fraction", c.val_fraction,
                "training images held out for the validation accuracy (chosen by the seed: the same for every "
                "architecture's seed-s run)")
      ->capture_default_str()
      ->check(number_above(0, 0.9));
  s->add_option("--jobs", c.jobs, "trainings at once, each a `spnas train` process with its share of --threads")
      ->capture_default_str()
      ->check(integer_in(1, 256));
  add_threads(s, c.threads);
  s->add_option("--bootstrap", c.bootstrap, "bootstrap replicates for the spread of RI")
      ->capture_default_str()
      ->check(integer_in(0, 10000000));
  s->add_option("--out", c.out_dir, "output folder")->capture_default_str();
  s->add_flag("--report", c.report_only,
              "train nothing: write the report of the runs finished so far (e.g. while the compare runs)");
  s->add_flag("--quiet", c.quiet, "no progress output from the trainings (in this process, or in the children's logs)");
  add_train_protocol(s, f->protocol);
  return {s, [f] {
            CompareConfig& c = f->c;
            c.table_path = f->table.path;
            c.fixed_ms = f->table.fixed_ms;
            c.train = f->protocol.resolved();
            c.train_args = f->protocol.given_args();
            if (c.jobs <= 1) {
              set_num_threads(c.threads);
              if (f->protocol.no_low_memory) set_low_memory(false);
            }
            const CompareReport r = run_compare(c);
            std::printf("%s", compare_table(r).c_str());
            std::printf("files: %s/compare.json %s/compare.txt %s/compare.svg\n", c.out_dir.c_str(), c.out_dir.c_str(),
                        c.out_dir.c_str());
            return 0;
          }};
}

}  // namespace spnas::cli
