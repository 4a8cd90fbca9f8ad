// One thread pool for the whole engine. set_num_threads(T) sizes it and pins OpenBLAS to one
// thread: every parallel region in the engine - our kernels and the GEMMs, which the pointwise op
// splits into row blocks itself - runs on these T threads, so the two never oversubscribe.
//
// Kernels own their partition: parallel_run hands each thread (tid, nthreads) and the kernel
// picks its slice; parallel_for is the common contiguous split.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace spnas {

void set_num_threads(int n);  // n <= 0: number of online CPUs
int num_threads();

// Runs fn(tid, nthreads) once for each share tid in [0, nthreads) (nthreads = the pool size) and
// waits for all. Share tid usually runs on pool thread tid, but a share whose thread is not awake yet
// is taken by a free one (often the caller), so fn must not assume which thread runs a share or that
// the shares run concurrently (no waiting on another share). Per-share buffers are indexed by tid.
// Nested calls from inside a parallel region run serially on the calling thread.
void parallel_run(const std::function<void(int tid, int nthreads)>& fn);

// Splits [0, n) into at most nthreads contiguous chunks of at least `grain` items.
void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn, int64_t grain = 1);

// The chunk [begin, end) of [0, n) that thread tid of nthreads owns in an even split.
inline void split_range(int64_t n, int tid, int nthreads, int64_t* begin, int64_t* end) {
  int64_t q = n / nthreads, r = n % nthreads;
  *begin = tid * q + (tid < r ? tid : r);
  *end = *begin + q + (tid < r ? 1 : 0);
}

// The CPUs this process may run on: the mask of the thread that first used the pool (a `taskset`
// or cgroup restriction), remembered before anything was pinned.
std::vector<int> allowed_cpus();
// Pins pool thread i to the i-th allowed CPU (for latency measurements; the caller is thread 0).
// Returns false if not permitted.
bool pin_threads();
// Lets the calling thread and every pool thread run on every allowed CPU again (after pinning;
// threads created later inherit the creating thread's affinity).
void unpin_threads();

}  // namespace spnas
