// The timing harness shared by the profiler (profile.h) and the end-to-end measurement
// (measure.h): the clock, the threads' placement, and round-robin repetitions that drop the runs
// another process preempted.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace spnas {

// Milliseconds on the current measurement's clock (see ClockScope).
double stamp_now();

// For its lifetime, stamp_now() reads the wall clock ("wall": steady_clock) or the process's CPU
// time divided by the thread count ("cpu": leaves out the time the process was descheduled, so on a
// machine too busy for undisturbed runs it estimates the idle-machine latency).
class ClockScope {
 public:
  ClockScope(const std::string& clock, int threads);
  ~ClockScope();
  ClockScope(const ClockScope&) = delete;
  ClockScope& operator=(const ClockScope&) = delete;

 private:
  bool prev_cpu_;
  int prev_threads_;
};

// Sets the engine's thread count for its lifetime.
class ThreadScope {
 public:
  explicit ThreadScope(int threads);
  ~ThreadScope();
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int prev_;
};

// Places the threads before a measurement; false only when pinning was asked for and refused.
// T > 1 threads go to the first T CPUs the process may use, one thread to the idlest of them. The
// oneDNN and OpenCV backends with several threads are never pinned (see harness.cpp).
bool place_threads(const std::string& backend, int threads, bool pin);

// How many repetitions (the fields of ProfileOptions / MeasureOptions of the same names).
struct Repetitions {
  int warmup = 10;
  int reps = 50;             // at least this many undisturbed runs per item ...
  double min_seconds = 0.2;  // ... and at least this much of their time
  int max_reps = 20000;
  double max_seconds = 300;  // stop waiting for undisturbed runs after this long
  bool drop_preempted = true;
};
template <class Options>
Repetitions repetitions_of(const Options& o) {
  // The CPU clock does not count the time another process took, so no run needs dropping.
  return {o.warmup, o.reps, o.min_seconds, o.max_reps, o.max_seconds, o.drop_preempted && o.clock == "wall"};
}

struct RoundRobinStats {
  int clean = 0;      // undisturbed runs per item (the minimum over items)
  int disturbed = 0;  // runs preempted by another process
  int total = 0;      // timed runs
  bool fell_back = false;  // too few undisturbed runs: use every run (the statistics are inflated)
};

// Runs run_one(i) for every item round-robin (rep r of every item, then rep r + 1, so a burst of load
// hits every item alike): `warmup` untimed rounds, then rounds until every item has enough
// undisturbed runs. run_one returns the run's time (ms); commit(i, keep) follows every timed run,
// keep = false for a run during which the process was preempted.
RoundRobinStats round_robin(int items, const Repetitions& reps, const std::function<double(int item)>& run_one,
                            const std::function<void(int item, bool keep)>& commit);

// Random N x size x size x 3 images and labels 0, 1, ... (the timed networks' inputs).
Tensor random_images(int batch, int size, uint64_t seed);
std::vector<int> make_labels(int batch, int classes);

}  // namespace spnas
