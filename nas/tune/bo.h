// Constraint-aware Bayesian optimisation after HyperPower (Stamoulis et al., DATE 2018): one
// Gaussian process on log R (the found network's predicted latency, known for every trial), one on
// the objective (proxy validation accuracy, known only for trials that met the constraint), and the
// acquisition EI(accuracy) x P(R in the goal band). Points live in the unit cube [0, 1]^d; a
// TuneVariable maps a coordinate to a hyperparameter value (log or linear). nas/tune/README.md has
// the formulas.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace spnas {

// ---- the standard normal and the acquisition's pieces ------------------------------------------------

double normal_pdf(double z);
double normal_cdf(double z);
double log_normal_cdf(double z);  // log Phi(z), accurate far into the lower tail

// Expected improvement of a maximised objective Y ~ N(mean, sd^2) over `best`:
// (mean - best) Phi(z) + sd phi(z), z = (mean - best) / sd; max(0, mean - best) when sd = 0.
double expected_improvement(double mean, double sd, double best);
// log of the same, accurate where the value itself underflows (z far below 0); -inf when it is 0.
double log_expected_improvement(double mean, double sd, double best);
// log P(lo <= Y <= hi) for Y ~ N(mean, sd^2); lo may be -infinity.
double log_probability_between(double mean, double sd, double lo, double hi);

// ---- variables -------------------------------------------------------------------------------------

// A tuned hyperparameter: unit coordinate u in [0, 1] <-> value in [lo, hi], on a log scale
// (lo * (hi / lo)^u) or a linear one.
struct TuneVariable {
  std::string name;
  double lo = 0, hi = 1;
  bool log_scale = false;
  double value(double u) const;
  double unit(double value) const;
};

// ---- proposals -------------------------------------------------------------------------------------

// A finished trial as the optimiser sees it.
struct BoObservation {
  std::vector<double> u;  // unit-cube coordinates of its hyperparameters
  double R_ms = 0;        // predicted latency of the architecture its search found
  bool trained = false;   // R met the constraint, so the proxy training ran
  double accuracy = 0;    // proxy validation accuracy (trained only)
};

struct BoSettings {
  double target_ms = 0;  // T
  // Goal band [(1 - window) T, T]. The acquisition's probability is that of R landing in it; 0 makes
  // it HyperPower's plain P(R <= T).
  double window = 0.03;
  int candidates = 1024;  // low-discrepancy points scored per proposal
  int refine = 4;         // best candidates refined by a compass search
  int gp_restarts = 6;    // random starts of each likelihood maximisation (plus two fixed ones)
};

struct BoProposal {
  std::vector<double> u;
  double log_acquisition = 0;
  double p_goal = 0;            // P(R in the goal band) at u
  double expected_improvement = 0;
  bool has_incumbent = false;   // a trained trial in the goal band existed (else: acquisition = P(goal))
};

// The next point: fits both processes on `done`, then maximises
//   a(u) = EI(u; best accuracy among trained trials in the goal band) * P(goal | u),
// or P(goal | u) alone while no trained trial is in the band, over the points farther than 1e-3
// from every done one (a trial is a deterministic function of its point) and farther than 0.05 from
// every pending (running) one (parallel proposals spread out). `done` must not be empty.
BoProposal propose_bo(const std::vector<BoObservation>& done, const std::vector<std::vector<double>>& pending,
                      int dims, const BoSettings& settings, uint64_t seed);
// A uniform point of the unit cube drawn from `seed` (the random method, and BO's first trials).
std::vector<double> propose_random(int dims, uint64_t seed);

// The goal band [(1 - window) T, T] (window 0: [0, T]), shared by the optimiser and the reports.
inline double goal_band_low(double target_ms, double window) { return window > 0 ? (1.0 - window) * target_ms : 0.0; }
inline bool in_goal_band(double R_ms, double target_ms, double window) {
  return R_ms <= target_ms && R_ms >= goal_band_low(target_ms, window);
}

}  // namespace spnas
