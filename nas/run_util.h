// Small pieces shared by the search and the training loops: stopping on SIGINT/SIGTERM, a terminal
// progress bar, and the learning-rate schedule built from epochs.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/optim.h"
#include "engine/schedule.h"

namespace spnas {

// Installs handlers that make stop_requested() true on SIGINT/SIGTERM (the loops then checkpoint
// and return). Idempotent.
void install_stop_handlers();
bool stop_requested();
void request_stop();        // as if a signal had arrived (tests)
void clear_stop_request();

// One line, redrawn in place when stderr is a terminal; otherwise a line every `every` calls.
class Progress {
 public:
  Progress(std::string what, int64_t total, bool quiet = false);
  void update(int64_t done, const std::string& status);
  void finish();

 private:
  std::string what_;
  int64_t total_;
  bool tty_, quiet_;
  int64_t last_printed_ = -1;
  double start_;
};

double now_seconds();

// mkdir -p; throws naming the directory that could not be made.
void make_dirs(const std::string& dir);
// "rmsprop" (TF-1: decay 0.9, momentum 0.9, eps 1e-3), "sgd" (Nesterov, momentum 0.9) or "adam".
std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, ParamSet& ps, float weight_decay);
// The whole file as bytes; throws "WHAT: cannot open 'PATH'".
std::string read_text_file(const std::string& path, const std::string& what);

// v with `prec` digits after the point ("%.*f"), for messages and reports.
std::string fmt(double v, int prec = 3);
// Parses JSON; throws "WHAT 'SOURCE': not valid JSON: ..." on malformed text.
nlohmann::json parse_json(const std::string& text, const std::string& what, const std::string& source);

// Learning rate schedule with epochs as the unit (so it scales with batch size):
//   kind "exponential": lr * rate^floor(epoch / decay_epochs)
//   kind "cosine":      cosine from lr to 0 over total_epochs
//   kind "constant"
// plus a linear warm-up over warmup_epochs from 0.
struct LrConfig {
  std::string kind = "exponential";
  float lr = 0.0f;
  float decay_rate = 0.97f;
  float decay_epochs = 2.4f;
  float warmup_epochs = 0.0f;
};
Schedule make_schedule(const LrConfig& c, int64_t steps_per_epoch, int64_t total_steps);

}  // namespace spnas
