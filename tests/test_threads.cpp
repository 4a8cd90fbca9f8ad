// Tests for the engine's thread pool (engine/threads.h): every share of a region runs exactly once
// with the right share count, whether the workers are spinning or asleep (then a free thread, often
// the caller, takes their shares); nested regions run serially; regions from two threads take turns;
// resizing between regions; pinning within the process's CPU mask (CTest also runs this file
// under `taskset -c 0`, where that mask is one CPU of several).
#include <doctest/doctest.h>

#include <sched.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "engine/threads.h"

using namespace spnas;

namespace {
// Runs one region and returns the shares that did not run exactly once, plus any call with a share
// or share count out of range.
int wrong_shares(int threads) {
  std::vector<std::atomic<int>> hits(size_t(threads) + 1);  // the last one counts bad calls
  for (auto& h : hits) h.store(0);
  parallel_run([&](int tid, int nt) {
    if (nt != threads || tid < 0 || tid >= threads) hits[size_t(threads)].fetch_add(1);
    else hits[size_t(tid)].fetch_add(1);
  });
  int bad = hits[size_t(threads)].load();
  for (int t = 0; t < threads; ++t) bad += hits[size_t(t)].load() != 1;
  return bad;
}
}  // namespace

TEST_CASE("thread pool: every share runs exactly once, with workers awake and asleep") {
  for (int threads : {2, 3, 4}) {
    set_num_threads(threads);
    REQUIRE(num_threads() == threads);
    int bad = 0;
    for (int round = 0; round < 3000; ++round) {
      // Every 100th region comes after a pause long enough for the workers to block on their
      // condition variable; the rest arrive back to back, while they spin.
      if (round % 100 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      bad += wrong_shares(threads);
    }
    INFO("threads ", threads);
    CHECK(bad == 0);
  }
  set_num_threads(2);
}

TEST_CASE("thread pool: shares write disjoint slices; parallel_for covers the range once") {
  set_num_threads(3);
  for (int64_t n : {int64_t(1), int64_t(2), int64_t(3), int64_t(7), int64_t(1000), int64_t(100003)}) {
    std::vector<int> seen(size_t(n), 0);
    parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) seen[size_t(i)] += 1;
    });
    int wrong = 0;
    for (int v : seen) wrong += v != 1;
    INFO("n ", n);
    CHECK(wrong == 0);
  }
  set_num_threads(2);
}

TEST_CASE("thread pool: a nested region runs serially on the share's thread") {
  set_num_threads(2);
  std::atomic<int> inner_calls{0}, bad{0};
  parallel_run([&](int, int) {
    const std::thread::id me = std::this_thread::get_id();
    parallel_run([&](int tid, int nt) {
      if (tid != 0 || nt != 1 || std::this_thread::get_id() != me) bad.fetch_add(1);
      inner_calls.fetch_add(1);
    });
  });
  CHECK(inner_calls.load() == 2);
  CHECK(bad.load() == 0);
}

TEST_CASE("thread pool: regions issued from two threads take turns") {
  set_num_threads(2);
  std::atomic<int> bad{0};
  auto issue = [&] {
    for (int i = 0; i < 2000; ++i) {
      std::atomic<int> a{0}, b{0};
      parallel_run([&](int tid, int nt) { (tid == 0 ? a : b).fetch_add(nt == 2 ? 1 : 100); });
      if (a.load() != 1 || b.load() != 1) bad.fetch_add(1);
    }
  };
  std::thread other(issue);
  issue();
  other.join();
  CHECK(bad.load() == 0);
}

TEST_CASE("thread pool: resizing between regions") {
  for (int threads : {1, 4, 2, 3, 1, 2}) {
    set_num_threads(threads);
    INFO("threads ", threads);
    CHECK(wrong_shares(threads) == 0);
  }
  set_num_threads(2);
}

TEST_CASE("thread pool: pinning stays inside the process's CPU mask, unpinning restores it") {
  set_num_threads(2);
  parallel_run([](int, int) {});  // both threads exist
  cpu_set_t start;
  CPU_ZERO(&start);
  REQUIRE(sched_getaffinity(0, sizeof(start), &start) == 0);
  std::vector<int> allowed = allowed_cpus();
  REQUIRE(!allowed.empty());
  for (int c : allowed) CHECK(CPU_ISSET(c, &start));
  CHECK(int(allowed.size()) == CPU_COUNT(&start));
  // After pinning, every thread of this process is confined to CPUs of the starting mask.
  if (pin_threads()) {
    int outside = 0, tasks = 0;
    for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
      cpu_set_t m;
      CPU_ZERO(&m);
      if (sched_getaffinity(pid_t(std::stoi(t.path().filename().string())), sizeof(m), &m) != 0) continue;
      ++tasks;
      for (int c = 0; c < CPU_SETSIZE; ++c) outside += CPU_ISSET(c, &m) && !CPU_ISSET(c, &start);
    }
    CHECK(tasks >= 2);
    CHECK(outside == 0);
  }
  unpin_threads();
  cpu_set_t after;
  CPU_ZERO(&after);
  REQUIRE(sched_getaffinity(0, sizeof(after), &after) == 0);
  CHECK(CPU_EQUAL(&after, &start));  // the starting mask again, not every CPU of the machine
  set_num_threads(2);
}
