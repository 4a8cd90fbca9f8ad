// Small pieces shared by the search and the training loops: stopping on SIGINT/SIGTERM, a terminal
// progress bar, and the learning-rate schedule built from epochs.
#pragma once
#include <cstdint>
#include <string>

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
