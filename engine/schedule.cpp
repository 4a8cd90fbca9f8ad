// Learning-rate schedules (see schedule.h). Values are computed in double and rounded once to float.
#include "engine/schedule.h"

#include <cmath>
#include <stdexcept>
#include <sstream>

#include "engine/tensor.h"

namespace spnas {

Schedule Schedule::constant(float lr) {
  Schedule s;
  s.kind_ = Kind::Constant;
  s.lr0_ = lr;
  return s;
}

Schedule Schedule::exponential(float lr0, float rate, double decay_steps, bool staircase) {
  check(decay_steps > 0, "Schedule::exponential", "decay_steps must be positive, got " + std::to_string(decay_steps));
  Schedule s;
  s.kind_ = Kind::Exponential;
  s.lr0_ = lr0;
  s.rate_ = rate;
  s.decay_steps_ = decay_steps;
  s.staircase_ = staircase;
  return s;
}

Schedule Schedule::piecewise(std::vector<int64_t> boundaries, std::vector<float> values) {
  const char* op = "Schedule::piecewise";
  check(values.size() == boundaries.size() + 1, op,
        std::to_string(values.size()) + " values for " + std::to_string(boundaries.size()) +
            " boundaries (need one more value than boundaries)");
  for (size_t i = 1; i < boundaries.size(); ++i)
    check(boundaries[i] > boundaries[i - 1], op, "boundaries must increase");
  Schedule s;
  s.kind_ = Kind::Piecewise;
  s.lr0_ = values[0];
  s.boundaries_ = std::move(boundaries);
  s.values_ = std::move(values);
  return s;
}

Schedule Schedule::cosine(float lr0, int64_t total_steps, float final_lr) {
  check(total_steps > 0, "Schedule::cosine", "total_steps must be positive, got " + std::to_string(total_steps));
  Schedule s;
  s.kind_ = Kind::Cosine;
  s.lr0_ = lr0;
  s.total_steps_ = total_steps;
  s.final_lr_ = final_lr;
  return s;
}

Schedule Schedule::with_warmup(int64_t steps, float warmup_start) const {
  check(steps >= 0, "Schedule::with_warmup", "negative warm-up length " + std::to_string(steps));
  Schedule s = *this;
  s.warmup_steps_ = steps;
  s.warmup_start_ = warmup_start;
  return s;
}

float Schedule::operator()(int64_t step) const {
  if (step < 0) step = 0;
  if (step < warmup_steps_)
    return float(warmup_start_ + (double(lr0_) - warmup_start_) * double(step) / double(warmup_steps_));
  switch (kind_) {
    case Kind::Constant:
      return lr0_;
    case Kind::Exponential: {
      double e = double(step) / decay_steps_;
      if (staircase_) e = std::floor(e);
      return float(lr0_ * std::pow(double(rate_), e));
    }
    case Kind::Piecewise: {
      size_t i = 0;
      while (i < boundaries_.size() && step >= boundaries_[i]) ++i;
      return values_[i];
    }
    case Kind::Cosine: {
      if (step >= total_steps_) return final_lr_;
      const double pi = 3.14159265358979323846;
      double c = 0.5 * (1.0 + std::cos(pi * double(step) / double(total_steps_)));
      return float(final_lr_ + (double(lr0_) - final_lr_) * c);
    }
  }
  return lr0_;
}

std::string Schedule::describe() const {
  std::ostringstream os;
  switch (kind_) {
    case Kind::Constant:
      os << "constant(" << lr0_ << ")";
      break;
    case Kind::Exponential:
      os << "exponential(lr0=" << lr0_ << ", rate=" << rate_ << ", every " << decay_steps_ << " steps"
         << (staircase_ ? ", staircase)" : ")");
      break;
    case Kind::Piecewise:
      os << "piecewise(" << values_[0];
      for (size_t i = 0; i < boundaries_.size(); ++i) os << ", from " << boundaries_[i] << ": " << values_[i + 1];
      os << ")";
      break;
    case Kind::Cosine:
      os << "cosine(lr0=" << lr0_ << " to " << final_lr_ << " over " << total_steps_ << " steps)";
      break;
  }
  if (warmup_steps_ > 0) os << " + warmup " << warmup_steps_ << " steps from " << warmup_start_;
  return os.str();
}

Schedule make_schedule(const LrConfig& c, int64_t spe, int64_t total_steps) {
  if (!(c.lr > 0)) throw std::runtime_error("learning rate must be positive");
  Schedule s = Schedule::constant(c.lr);
  if (c.kind == "exponential") {
    if (!(c.decay_epochs > 0)) throw std::runtime_error("--lr-decay-epochs must be positive");
    s = Schedule::exponential(c.lr, c.decay_rate, double(c.decay_epochs) * spe, true);
  } else if (c.kind == "cosine") {
    s = Schedule::cosine(c.lr, total_steps, 0.0f);
  } else if (c.kind != "constant") {
    throw std::runtime_error("learning-rate schedule must be exponential, cosine or constant, got \"" + c.kind + "\"");
  }
  int64_t w = int64_t(c.warmup_epochs * spe + 0.5f);
  if (w > 0) s = s.with_warmup(w, 0.0f);
  return s;
}

}  // namespace spnas
