// The command line: one CLI11 app (tools/spnas.cpp), one subcommand per tools/cmd_*.cpp. Options are
// bound straight to the library's config structs (SearchConfig, TrainConfig, ...), so what a flag
// sets is visible where it is declared, and every number is range-checked before any work starts.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "engine/io.h"
#include "engine/schedule.h"
#include "nas/data_parallel.h"
#include "nas/runtime.h"
#include "nas/space.h"
#include "nas/train.h"

namespace spnas {
struct MeasureOptions;
}

namespace spnas::cli {

// A subcommand and what to run when it was chosen (returns the process exit code).
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// One per tools/cmd_*.cpp, in the order `spnas --help` lists them.
Command add_demo(CLI::App& app);
Command add_profile(CLI::App& app);
Command add_search(CLI::App& app);
Command add_train(CLI::App& app);
Command add_eval(CLI::App& app);
Command add_info(CLI::App& app);
Command add_latency(CLI::App& app);
Command add_random(CLI::App& app);
Command add_compare(CLI::App& app);
Command add_tune(CLI::App& app);
Command add_tune_trial(CLI::App& app);  // hidden: one trial of tune --jobs N in its own process
Command add_export(CLI::App& app);
Command add_predict(CLI::App& app);

// ---- validators --------------------------------------------------------------------------------
// A finite number in [lo, hi] (CLI11's Range lets "nan" through: every comparison with NaN is false).
CLI::Validator number_in(double lo, double hi);
// A finite number > lo (and <= hi).
CLI::Validator number_above(double lo, double hi = 1e300);
// An integer-valued number in [lo, hi] (rejects 2.5 and 1e30).
CLI::Validator integer_in(double lo, double hi);

// ---- option groups shared by several subcommands ------------------------------------------------
// --threads N (0: every core) -> set_num_threads when the command runs.
void add_threads(CLI::App* c, int& threads, int default_threads = 0);
// set_num_threads for a command that may run under mpirun: there 0 means the CPUs of this rank's
// slot (default_threads_for_rank, engine/dist.h), elsewhere every core as before.
void set_threads_for_rank(int threads);
// --sync-bn, --bn-groups, --dist-timeout: the data-parallel settings (nas/data_parallel.h).
void add_parallel(CLI::App* c, ParallelConfig& p);
// --data KIND[:PATH], with the one help text of the data module.
void add_data(CLI::App* c, std::string& spec);
// --check-data: every image of the dataset read once before the run (check_data, data/data.h).
void add_check_data(CLI::App* c, bool& check);
void run_check_data(const DataSpec& spec);  // prints what was checked; throws naming the bad files
// --space, --width, --input-size, --num-classes
void add_space(CLI::App* c, std::string& space, SpaceOptions& so);
// --lut, --fixed-ms, --runtime-model
struct TableFlags {
  std::string path;
  double fixed_ms = -1;
  std::string runtime_model = "formula";
};
void add_table(CLI::App* c, TableFlags& t, bool with_runtime_model = true);
LatencyTable load_table(const TableFlags& t);  // throws if no --lut was given
// A table records what it was measured for (space, width, input size): a flag the user gave must
// agree with it (else an error naming both values), and one not given is taken from it.
void apply_table_settings(CLI::App* c, const LatencyTable& t, std::string& space, SpaceOptions& so);
// --verify: after a search or tune, the found network measured end to end as `spnas latency` does
// (the table's settings, the reference interleaved) and the target judged on the measurement too.
void add_verify(CLI::App* c, bool& verify);
// The measurement settings a table records (batch, threads, quantile, clock, backend, mode), for each
// one whose flag was not given on `c` (null: none given). A given setting that differs stays, and
// measure_arch_latency warns about it.
void measure_settings_from_table(const LatencyTable& t, MeasureOptions& o, CLI::App* c = nullptr);
void verify_latency(const Arch& arch, const LatencyTable& t, double target_ms);
// --memory-limit GIB (0: 80 % of the machine's memory)
void add_memory_limit(CLI::App* c, double& gib);
// --lr, --lr-schedule, --lr-decay, --lr-decay-epochs, --lr-warmup-epochs
void add_lr(CLI::App* c, LrConfig& lr);
// The training protocol: every flag of `train` that decides what a training learns (data, batch,
// epochs, learning rate, optimizer, regularisation, augmentation, step cap), in one option group.
// `train` and `compare` bind the same flags, and `compare` hands exactly the ones given to its
// `spnas train` children (given_args).
struct TrainFlags {
  TrainConfig config;
  std::string data = "synthetic";
  bool no_augment = false, no_low_memory = false;
  CLI::Option_group* group = nullptr;
  TrainConfig resolved() const;               // config with the data and augmentation flags applied
  std::vector<std::string> given_args() const;  // the group's flags given on the command line
};
void add_train_protocol(CLI::App* c, TrainFlags& f);

}  // namespace spnas::cli
