#include "nas/latency/harness.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <thread>

#include <sched.h>
#include <sys/resource.h>
#include <time.h>

#include "engine/rng.h"
#include "engine/threads.h"
#include "nas/latency/machine_load.h"

namespace spnas {

namespace {

using Clock = std::chrono::steady_clock;

bool g_cpu_clock = false;
int g_cpu_threads = 1;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Involuntary context switches of the whole process so far (all threads): a run during which this
// count moves was preempted by another process, and its time says more about the machine's load
// than about the network.
long involuntary_switches() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_nivcsw;
}

// Pins the engine's threads. One thread goes to the CPU that was idlest over the last 0.2 s (other
// processes on a shared machine often pin themselves to CPU 0); more threads use pin_threads().
bool pin_for_timing(int threads) {
  if (threads > 1) return pin_threads();
  const std::vector<int> cpus = allowed_cpus();  // only CPUs this process may use (taskset, cgroups)
  if (cpus.empty()) return false;
  const std::vector<long long> a = read_cpu_times().idle_per_cpu;
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::vector<long long> b = read_cpu_times().idle_per_cpu;
  auto idle = [&](int c) { return a.size() == b.size() && size_t(c) < a.size() ? b[size_t(c)] - a[size_t(c)] : -1; };
  int best = cpus[0];
  for (int c : cpus)
    if (idle(c) > idle(best)) best = c;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(best, &set);
  return sched_setaffinity(0, sizeof(set), &set) == 0;
}

}  // namespace

double stamp_now() {
  if (!g_cpu_clock) return std::chrono::duration<double, std::milli>(Clock::now().time_since_epoch()).count();
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) * 1e-6) / g_cpu_threads;
}

ClockScope::ClockScope(const std::string& clock, int threads) : prev_cpu_(g_cpu_clock), prev_threads_(g_cpu_threads) {
  if (clock != "wall" && clock != "cpu")
    throw std::runtime_error("latency clock must be \"wall\" or \"cpu\", got \"" + clock + "\"");
  g_cpu_clock = clock == "cpu";
  g_cpu_threads = std::max(1, threads);
}

ClockScope::~ClockScope() {
  g_cpu_clock = prev_cpu_;
  g_cpu_threads = prev_threads_;
}

ThreadScope::ThreadScope(int threads) : prev_(num_threads()) { set_num_threads(threads); }
ThreadScope::~ThreadScope() { set_num_threads(prev_); }

// oneDNN runs on OpenMP threads that its parallel regions create from the calling thread, with that
// thread's CPU mask. Pinning the caller to one CPU put every OpenMP thread on that CPU, where they
// spin-wait on each other at every barrier (a network hundreds of times slower, bench/RESULTS.md).
// An untimed first run does not reliably create them all before the pinning, so with several
// threads the oneDNN backend is not pinned at all, and a pin left by an earlier measurement in the
// same process is undone first. OpenCV's pool threads are created the same way, so the same holds
// for the OpenCV backend.
bool place_threads(const std::string& backend, int threads, bool pin) {
  if (backend != "spnas" && threads > 1) {
    unpin_threads();
    return true;
  }
  return !pin || pin_for_timing(threads);
}

RoundRobinStats round_robin(int items, const Repetitions& r, const std::function<double(int item)>& run_one,
                            const std::function<void(int item, bool keep)>& commit) {
  for (int w = 0; w < r.warmup; ++w)
    for (int i = 0; i < items; ++i) run_one(i);
  std::vector<double> spent(items, 0.0);
  std::vector<int> kept(items, 0);
  RoundRobinStats st;
  const Clock::time_point start = Clock::now();
  int rounds = 0;
  for (;;) {
    bool enough = true;
    for (int i = 0; i < items; ++i) enough &= kept[i] >= std::max(1, r.reps) && spent[i] >= r.min_seconds * 1000.0;
    if (enough || rounds >= std::max(r.max_reps, 1)) break;
    if (rounds >= 3 && ms_since(start) > r.max_seconds * 1000.0) break;
    for (int i = 0; i < items; ++i) {
      long before = involuntary_switches();
      double ms = run_one(i);
      bool keep = !r.drop_preempted || involuntary_switches() == before;
      commit(i, keep);
      st.total++;
      if (keep) {
        kept[i]++;
        spent[i] += ms;
      } else {
        st.disturbed++;
      }
    }
    ++rounds;
  }
  st.clean = *std::min_element(kept.begin(), kept.end());
  st.fell_back = st.clean < std::max(5, r.reps / 4);
  return st;
}

Tensor random_images(int batch, int size, uint64_t seed) {
  Rng rng(seed);
  Tensor t = Tensor::empty({batch, size, size, 3});
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = rng.normal();
  return t;
}

std::vector<int> make_labels(int batch, int classes) {
  std::vector<int> l(batch);
  for (int i = 0; i < batch; ++i) l[i] = i % std::max(1, classes);
  return l;
}

}  // namespace spnas
