// `spnas compare`: trains every architecture (searched ones and a random set) with one protocol,
// several seeds each, and reports whether the searched ones beat the average random architecture
// (nas/baseline/README.md). Accuracy is measured on a validation split held out of the training
// images (for choosing) and on the test set (for the report); the two are never mixed. The relative improvement (Yang et al., "NAS evaluation is frustratingly
// hard", ICLR 2020):
//   RI = 100 * (Acc_searched - Acc_random) / Acc_random,
// Acc_searched = the searched architecture's mean over its seeds, Acc_random = the mean over the
// random architectures of each one's mean over its seeds. Its spread comes from a two-level
// bootstrap (architectures of the random set, then seeds within each architecture, and the searched
// architecture's seeds), computed separately on validation and on test accuracies.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nas/space.h"
#include "nas/train.h"

namespace spnas {

struct CompareConfig {
  std::vector<std::string> arch_paths;  // the searched architectures (or any to evaluate)
  std::string random_dir;               // a `spnas random` output folder: its random_*.json
  std::string table_path;               // for R; "" : the random folder's summary.json names one
  double fixed_ms = -1;                 // the table's fixed cost override (CSV tables)
  double target_ms = 0;                 // drawn as a line in the plot (0: none)
  TrainConfig train;                    // the protocol; arch, out_dir, seed, resume are set per run
  int seeds = 2;                        // seeds 1 .. seeds
  // Held out of the training images, chosen by the training seed: every architecture's seed-s run
  // holds out the same images.
  double val_fraction = 0.1;
  std::string out_dir = "runs/compare";
  int jobs = 1;                         // > 1: `spnas train` children, at most this many at once
  int threads = 0;                      // in all (0: every CPU), shared among the jobs
  // The protocol as `spnas train` flags, for the children (the command line fills it from the same
  // parse as `train`); required when jobs > 1.
  std::vector<std::string> train_args;
  std::string program = "/proc/self/exe";  // what the children run
  int bootstrap = 10000;                // bootstrap replicates of RI
  bool report_only = false;             // train nothing: the report of the finished runs (while another compare runs)
  bool quiet = false;
};

// Mean and sample standard deviation (n - 1; 0 for n < 2).
struct MeanStd {
  double mean = 0, std = 0;
  int n = 0;
};
MeanStd mean_std(const std::vector<double>& v);

// One training of one architecture with one seed.
struct RunRecord {
  int seed = 0;
  std::string dir;
  bool done = false;  // its result.json exists
  double val_accuracy = 0, test_accuracy = 0;
  int64_t steps = 0;
  double seconds = 0;
};

struct ArchRecord {
  std::string name;       // arch_1, arch_2 ... (searched), random_000 ... (random set)
  std::string path;       // its architecture file
  bool random = false;
  Arch arch;
  double runtime_ms = 0;  // the table's additive prediction
  int64_t params = 0, macs = 0;
  std::vector<RunRecord> runs;
  MeanStd val, test;      // over the finished runs
};

struct Improvement {
  double ri = 0;             // per cent
  double std = 0;            // bootstrap standard deviation
  double lo = 0, hi = 0;     // bootstrap 2.5 % and 97.5 % quantiles
  int random_below = 0;      // random architectures whose mean accuracy is below the searched one's
  int undefined_replicates = 0;  // bootstrap replicates whose random mean was 0 (left out)
};

struct SearchedVerdict {
  std::string name;
  Improvement val, test;
};

struct CompareReport {
  std::vector<ArchRecord> archs;
  MeanStd random_val, random_test;  // over the random architectures' means
  std::vector<SearchedVerdict> searched;
  int bootstrap = 0;
  double target_ms = 0;
  int finished_runs = 0, total_runs = 0;
};

// Fills the statistics of a report whose archs' runs are filled: per-architecture means, the random
// set's, and RI for every searched architecture (bootstrap with a fixed seed: the same results give
// the same report).
void summarize(CompareReport& report, int bootstrap);

// RI of `searched` (its seeds' accuracies) against the random set (each architecture's seeds'
// accuracies): the point value and its bootstrap spread. NaN where undefined (a random mean of 0).
Improvement relative_improvement(const std::vector<double>& searched, const std::vector<std::vector<double>>& random,
                                 int bootstrap, uint64_t seed = 2020);

std::string compare_table(const CompareReport& report);
nlohmann::json compare_json(const CompareReport& report, const CompareConfig& cfg);
// Accuracy (test, mean +- std over seeds) against R: random architectures, searched ones, the random
// set's mean, and the target.
void write_compare_svg(const std::string& path, const CompareReport& report, const std::string& title);

// Runs everything not yet done (a run with result.json is skipped; one with a checkpoint resumes),
// one after another in this process or as `jobs` children, then writes OUT/compare.json,
// OUT/compare.txt (the table) and OUT/compare.svg. Interrupted (SIGINT/SIGTERM), it writes the report
// of what finished and throws Interrupted; a failed training throws naming it (and its log).
CompareReport run_compare(const CompareConfig& cfg);

}  // namespace spnas
