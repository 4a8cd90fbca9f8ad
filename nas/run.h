// What every long run (search, train, and the runs that tune and compare start) shares: its output
// folder (validated, writable, locked against a second writer), stopping on SIGINT/SIGTERM with an
// honest exit code, progress lines with rate and ETA, divergence checks that stop with a diagnosis,
// and the configuration a checkpoint records so that a resume cannot silently change it.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace spnas {

double now_seconds();

// ---- stopping on a signal ------------------------------------------------------------------------
// After install_stop_handlers(), SIGINT/SIGTERM make stop_requested() true; the loops then save a
// checkpoint and throw Interrupted. Idempotent.
void install_stop_handlers();
bool stop_requested();
int stop_signal();                    // the signal that asked to stop (0: none)
void request_stop(int signal = 15);  // as if `signal` had arrived (tests)
void clear_stop_request();

// A run that stopped on a signal after saving its checkpoint. It writes no final result files, and
// the program exits with 128 + signal (130 for SIGINT, 143 for SIGTERM): interrupted is not done.
struct Interrupted : std::runtime_error {
  int signal;
  Interrupted(int sig, const std::string& what) : std::runtime_error(what), signal(sig) {}
};
// After a loop has saved its checkpoint at `step`: if a signal asked to stop, throws Interrupted
// ("WHAT: interrupted by SIGINT at step N; the checkpoint 'PATH' is saved: continue with --resume"
// and `note`).
void throw_if_interrupted(const std::string& what, int64_t step, const std::string& checkpoint,
                          const std::string& note = "");

// ---- output folder and files -------------------------------------------------------------------
// Holds a run's output folder: refuses "" and "/", creates it, checks that a file can be created in
// it, and takes an exclusive lock (DIR/.lock, flock) for its lifetime, so a second run on the same
// folder fails at once, naming the process that holds it. writer = false (the ranks of a
// data-parallel run other than rank 0, which writes): only names the folder's files.
class RunFolder {
 public:
  RunFolder(const std::string& dir, const std::string& what, bool writer = true);
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;
  const std::string& dir() const { return dir_; }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }
  // A line saying how this run differs from the one it continues (a resume with a changed setting):
  // printed to stderr and, by the writer, appended to DIR/config_changes.log.
  void log_change(const std::string& line) const;

 private:
  std::string dir_;
  bool writer_;
  int lock_fd_ = -1;
};

// Checks before any work that `path` can be written as a file: its folder exists (or can be made) and
// a file can be created there, and `path` is not a directory. Throws naming the path and the reason.
void check_output_file(const std::string& path, const std::string& what);

// ---- progress --------------------------------------------------------------------------------------
// One line per update: done/total, steps/s and images/s over the last stretch, the learning rate,
// the caller's status and the ETA; redrawn in place on a terminal, otherwise printed every ~5 %.
class Progress {
 public:
  Progress(std::string what, int64_t first, int64_t total, int batch, bool quiet = false);
  void update(int64_t done, double lr, const std::string& status);
  void note(const std::string& line);  // a line of its own (keeps the in-place line intact)
  void finish();

 private:
  std::string what_;
  int64_t first_, total_;
  int batch_;
  bool tty_, quiet_;
  int64_t last_printed_ = -1;
  double start_, last_time_;
  int64_t last_done_;
  double rate_ = 0;  // steps/s, smoothed
};

// ---- divergence ------------------------------------------------------------------------------------
// A run has diverged when its loss or its parameters stop being finite, or when the cross-entropy
// reaches many times what a uniform prediction costs (ln K): finite but exploding. `check` throws with
// the step, the last checkpoint (left intact: a diverged state is never saved) and the likely cause.
struct DivergenceCheck {
  int num_classes = 10;
  std::string checkpoint;  // named in the message
  std::string what = "run";
  // Loss terms of this step: the cross-entropy and the runtime term (0 where there is none).
  void check_loss(int64_t step, double ce, double runtime_term, double lambda) const;
  // After the optimizer step: sum of squares of the weights, and of the thresholds (-1: none).
  void check_params(int64_t step, double weights_sq, double thresholds_sq) const;
};

// ---- the configuration a checkpoint records ------------------------------------------------------
// A resume compares the recorded configuration with the new one, field by field. Fields in
// `may_differ` (threads, output verbosity, step limits) are free; any other difference is an error that
// lists each field (was / now), unless `allow` is set, in which case the differences are returned (for
// the caller to log) and the run continues.
std::vector<std::string> compare_run_config(const nlohmann::json& recorded, const nlohmann::json& now,
                                            const std::vector<std::string>& may_differ, bool allow,
                                            const std::string& checkpoint);

// The settings of the training loop that search and train share (data, augmentation, batch, length,
// learning rate, optimizer, regularisation, held-out split, seed), as a record's fields; Config is a
// SearchConfig or a TrainConfig.
template <class Config>
nlohmann::json training_record(const Config& c) {
  return {{"data", c.data.kind + ":" + c.data.path},
          {"augment", c.augment},
          {"batch", c.batch},
          {"epochs", c.epochs},
          {"lr", {c.lr.kind, c.lr.lr, c.lr.decay_rate, c.lr.decay_epochs, c.lr.warmup_epochs}},
          {"optimizer", c.optimizer},
          {"weight_decay", c.weight_decay},
          {"label_smoothing", c.label_smoothing},
          {"bn_momentum", c.bn_momentum},
          {"val_fraction", c.val_fraction},
          {"seed", c.seed}};
}

// ---- memory ------------------------------------------------------------------------------------------
// The memory a run may use: `limit_gib` if > 0, else 80 % of the machine's (MemTotal).
double memory_limit_bytes(double limit_gib);
// Throws, naming both figures, when `needed` bytes exceed the limit (before anything is allocated).
void check_memory(double needed_bytes, double limit_bytes, const std::string& what);

}  // namespace spnas
