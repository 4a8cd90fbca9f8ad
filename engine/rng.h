// Seeded random generator (xoshiro256**) whose whole state is four words, so it can be saved in a
// checkpoint and restored exactly.
#pragma once
#include <array>
#include <cstdint>

namespace spnas {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { seed_with(seed); }
  void seed_with(uint64_t seed);
  uint64_t next_u64();
  uint32_t next_u32() { return uint32_t(next_u64() >> 32); }
  float uniform();                       // [0, 1)
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  float normal();                        // standard normal (Box-Muller, no cached state)
  uint64_t below(uint64_t n);            // uniform integer in [0, n)
  bool bernoulli(float p) { return uniform() < p; }

  std::array<uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<uint64_t, 4>& s) { s_ = s; }

 private:
  std::array<uint64_t, 4> s_{};
};

}  // namespace spnas
