// Learning-rate schedules: a schedule is a pure function of the global step (callers convert
// epochs to steps). Kinds: constant, exponential (staircase or smooth), piecewise constant, cosine;
// each can have a linear warm-up.
//
// Warm-up follows the TensorFlow MnasNet / Single-Path NAS TPU code: for step < warmup_steps the rate
// is warmup_start + (lr0 - warmup_start) * step / warmup_steps; from warmup_steps on it is the main
// schedule evaluated at the *global* step (the warm-up does not shift the schedule).
//
//   Schedule s = Schedule::exponential(0.064f, 0.97f, 2.4 * steps_per_epoch).with_warmup(5 * steps_per_epoch);
//   float lr = s(step);
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace spnas {

class Schedule {
 public:
  enum class Kind { Constant, Exponential, Piecewise, Cosine };

  static Schedule constant(float lr);
  // lr0 * rate^floor(step / decay_steps)  (staircase), or lr0 * rate^(step / decay_steps).
  static Schedule exponential(float lr0, float rate, double decay_steps, bool staircase = true);
  // values[0] for step < boundaries[0], values[i] for boundaries[i-1] <= step < boundaries[i], and
  // values.back() from boundaries.back() on. Needs values.size() == boundaries.size() + 1 and
  // increasing boundaries. lr0 (the warm-up target) is values[0].
  static Schedule piecewise(std::vector<int64_t> boundaries, std::vector<float> values);
  // final_lr + (lr0 - final_lr) * (1 + cos(pi * step / total_steps)) / 2, and final_lr after total_steps.
  static Schedule cosine(float lr0, int64_t total_steps, float final_lr = 0.0f);

  // Returns a copy with a linear warm-up from warmup_start to lr0 over `steps` steps.
  Schedule with_warmup(int64_t steps, float warmup_start = 0.0f) const;

  float operator()(int64_t step) const;
  Kind kind() const { return kind_; }
  std::string describe() const;  // e.g. "exponential(lr0=0.064, rate=0.97, every 2.4 steps, staircase) + warmup 5 from 0"

 private:
  Kind kind_ = Kind::Constant;
  float lr0_ = 0.0f;
  float rate_ = 1.0f;        // exponential
  double decay_steps_ = 1.0; // exponential
  bool staircase_ = true;    // exponential
  std::vector<int64_t> boundaries_;  // piecewise
  std::vector<float> values_;        // piecewise
  int64_t total_steps_ = 1;  // cosine
  float final_lr_ = 0.0f;    // cosine
  int64_t warmup_steps_ = 0;
  float warmup_start_ = 0.0f;
};

// A schedule described in epochs (so it scales with the batch size), as the command line gives it:
//   kind "exponential": lr * rate^floor(epoch / decay_epochs)   (staircase, the reference's)
//   kind "cosine":      cosine from lr to 0 over the whole run
//   kind "constant"
// plus a linear warm-up from 0 over warmup_epochs.
struct LrConfig {
  std::string kind = "exponential";
  float lr = 0.0f;
  float decay_rate = 0.97f;
  float decay_epochs = 2.4f;
  float warmup_epochs = 0.0f;
};
Schedule make_schedule(const LrConfig& c, int64_t steps_per_epoch, int64_t total_steps);

}  // namespace spnas
