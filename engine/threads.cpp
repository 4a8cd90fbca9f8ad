#include "engine/threads.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

extern "C" void openblas_set_num_threads(int);

namespace spnas {
namespace {

// A region is split into shares 0..n-1 (n = pool size); share i normally runs on thread i. Workers
// wait for a new "generation"; they spin briefly first because training issues many short parallel
// regions back to back, then sleep on a condition variable so an idle engine costs nothing.
//
// Shares are claimed, not assigned: every thread, the caller included, takes the next unclaimed share
// of the current generation until none is left. A worker that is asleep, or that the OS has put on
// the caller's core, therefore never holds a region up - the caller runs its share too. Waking a
// sleeping thread takes 20-100 us on this VM; a batch-1 depthwise convolution takes 5-20 us, and
// with fixed assignment it took 64-162 us per call in bench_conv's timed blocks (8 us measured alone;
// engine/README.md has the before / after figures).
class Pool {
 public:
  ~Pool() { resize(1); }

  int size() const { return int(workers_.size()) + 1; }

  void resize(int n) {
    if (n < 1) n = 1;
    if (n == size()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      generation_++;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_ = false;
    // Workers start from the current generation: one that starts late must not mistake a job
    // published before it ran for an old one.
    const uint64_t start = generation_.load();
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, start] { loop(start); });
  }

  void run(const std::function<void(int, int)>& fn) {
    const int n = size();
    if (n == 1 || in_region_) {
      fn(0, 1);
      return;
    }
    std::lock_guard<std::mutex> one_region(region_mu_);  // regions from different threads take turns
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &fn;
      job_n_ = n;
      done_.store(0, std::memory_order_relaxed);
      gen = generation_.load() + 1;
      claim_.store(gen << 32, std::memory_order_release);  // this generation, share 0 next
      generation_.store(gen, std::memory_order_release);
    }
    cv_.notify_all();
    work(gen, fn, n);
    // Shares still running were claimed by awake workers: they finish about when the caller did.
    for (int i = 0; done_.load(std::memory_order_acquire) != n; ++i) {
      if (i < 4000) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

  // Pins thread i to the i-th CPU this process may use (the caller is thread 0): the CPUs of the mask
  // the process started with (a `taskset` or cgroup restriction), not CPUs 0..T-1 of the machine;
  // unpin() restores that mask rather than every CPU.
  bool pin() {
    std::vector<int> cpus = allowed_cpus();
    if (cpus.empty()) return false;
    bool ok = true;
    for (size_t i = 0; i < workers_.size(); ++i) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpus[(i + 1) % cpus.size()], &set);
      ok &= pthread_setaffinity_np(workers_[i].native_handle(), sizeof(set), &set) == 0;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpus[0], &set);
    ok &= pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
    return ok;
  }

  void unpin() {
    const cpu_set_t set = original_mask();
    for (auto& w : workers_) pthread_setaffinity_np(w.native_handle(), sizeof(set), &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  }

  // The CPU mask of the thread that first used the pool (remembered then, before any pinning).
  cpu_set_t original_mask() {
    std::lock_guard<std::mutex> lock(mask_mu_);
    if (!have_mask_) {
      CPU_ZERO(&mask_);
      if (pthread_getaffinity_np(pthread_self(), sizeof(mask_), &mask_) != 0 || CPU_COUNT(&mask_) == 0) {
        const int ncpu = int(sysconf(_SC_NPROCESSORS_ONLN));
        for (int c = 0; c < ncpu && c < CPU_SETSIZE; ++c) CPU_SET(c, &mask_);
      }
      have_mask_ = true;
    }
    return mask_;
  }

  std::vector<int> allowed_cpus() {
    const cpu_set_t set = original_mask();
    std::vector<int> out;
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) out.push_back(c);
    return out;
  }

 private:
  // Runs unclaimed shares of generation gen until there are none (or a newer generation started:
  // then fn may be gone, so the claim word carries the generation's low 32 bits).
  void work(uint64_t gen, const std::function<void(int, int)>& fn, int n) {
    const uint64_t tag = gen & 0xffffffffu;
    uint64_t c = claim_.load(std::memory_order_acquire);
    while ((c >> 32) == tag && int(c & 0xffffffffu) < n) {
      if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      in_region_ = true;
      fn(int(c & 0xffffffffu), n);
      in_region_ = false;
      done_.fetch_add(1, std::memory_order_acq_rel);
      c = claim_.load(std::memory_order_acquire);
    }
  }

  void loop(uint64_t seen) {
    for (;;) {
      // Spin for a short while (~50 us: back-to-back regions of a training step), then block, so
      // an idle pool - or one sharing the cores with other processes - costs nothing.
      for (int i = 0; i < 2000 && generation_.load(std::memory_order_acquire) == seen; ++i) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      }
      const std::function<void(int, int)>* job;
      int n;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_.load() != seen; });
        seen = generation_;
        if (stop_) return;
        job = job_;
        n = job_n_;
      }
      // job_ and generation_ were read together under mu_; work() touches the job only while the
      // claim word still belongs to that generation, and the caller waits for every claimed share.
      if (job) work(seen, *job, n);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_, region_mu_, mask_mu_;
  cpu_set_t mask_;
  bool have_mask_ = false;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint64_t> claim_{0};  // generation (low 32 bits) << 32 | next unclaimed share
  std::atomic<int> done_{0};        // shares of the current generation finished
  const std::function<void(int, int)>* job_ = nullptr;  // the latest region's (may be finished)
  int job_n_ = 0;
  bool stop_ = false;
  static thread_local bool in_region_;
};
thread_local bool Pool::in_region_ = false;

int default_threads() {
  if (const char* env = std::getenv("SPNAS_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1, int(sysconf(_SC_NPROCESSORS_ONLN)));
}

Pool& pool() {
  static Pool* p = [] {
    auto* q = new Pool();
    q->original_mask();  // remember the process's CPU mask before anything pins a thread
    q->resize(default_threads());
    openblas_set_num_threads(1);
    return q;
  }();
  return *p;
}

}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = std::max(1, int(sysconf(_SC_NPROCESSORS_ONLN)));
  pool().resize(n);
  openblas_set_num_threads(1);
}

int num_threads() { return pool().size(); }

void parallel_run(const std::function<void(int, int)>& fn) { pool().run(fn); }

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  int nt = num_threads();
  if (grain < 1) grain = 1;
  int64_t chunks = std::min<int64_t>(nt, (n + grain - 1) / grain);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  parallel_run([&](int tid, int) {
    if (tid >= chunks) return;
    int64_t b, e;
    split_range(n, tid, int(chunks), &b, &e);
    if (b < e) fn(b, e);
  });
}

bool pin_threads() { return pool().pin(); }

std::vector<int> allowed_cpus() { return pool().allowed_cpus(); }

void unpin_threads() { pool().unpin(); }

}  // namespace spnas
