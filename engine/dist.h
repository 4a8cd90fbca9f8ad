// Data-parallel runs across processes: `mpirun -np N spnas search ...`.
//
// Every process (rank) holds the whole model, takes its share of each global batch, computes its
// gradients and then averages them with the others' (allreduce) before the one optimizer step that
// every rank takes identically. This file has the two pieces that need to know about MPI:
//
//   Communicator      rank, size, sums over ranks (in place), gather, broadcast, barrier, with a
//                     deadline: a collective that does not complete in time (a rank died or hangs)
//                     stops every rank with a message naming this rank and the operation.
//   GradientAverager  backward() that averages the gradients over ranks in a few large buckets, each
//                     started as soon as backward has completed its gradients (BackwardListener),
//                     so the communication overlaps the rest of backward.
//
// Without MPI (not built with it, or not started by a launcher) world() is a single process whose
// collectives do nothing, and GradientAverager::backward is plain backward(): today's program.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/params.h"

namespace spnas {

// What the launcher said in the environment before MPI is initialised: Open MPI sets
// OMPI_COMM_WORLD_SIZE/RANK/LOCAL_SIZE, MPICH's Hydra and Slurm set PMI_SIZE/PMI_RANK.
struct LaunchInfo {
  bool launched = false;  // started by mpirun/mpiexec (even with one process)
  int rank = 0, size = 1;
  int local_size = 0;     // processes on this machine, when the launcher says (0: unknown)
};
LaunchInfo launch_info_from_env();
bool built_with_mpi();

// The independent streams of collectives. Each has its own MPI communicator, so that the gradient
// buckets in flight during backward never pair up with a batch-norm reduction started meanwhile.
enum class Stream { Gradients, Sync, Node };

// One collective in flight (the MPI build derives its request from it).
struct CollectiveOp {
  virtual ~CollectiveOp() = default;
  std::string what;                 // named in the timeout message
  double started = 0, completed = 0;  // seconds, steady clock (dist_seconds())
  std::atomic<bool> done{false};
};
using OpHandle = std::shared_ptr<CollectiveOp>;

double dist_seconds();

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  virtual int local_rank() const { return 0; }  // among the ranks on this machine
  virtual int local_size() const { return 1; }
  // "rank 1 of 2 (host, pid 4242)": how messages name this process.
  virtual std::string name() const;

  // Starts the sum over ranks of n floats, in place (each rank's data becomes the total). The
  // buffer must stay untouched until wait() or test() says it is done.
  virtual OpHandle start_sum(float* data, size_t n, Stream stream, std::string what);
  virtual bool test(const OpHandle& op) { return op->done.load(); }
  // Waits for op; past the deadline (set_timeout) prints why and stops every rank (MPI_Abort).
  virtual void wait(const OpHandle& op) {}

  // Blocking collectives on the Sync stream (or the one given), each with the same deadline.
  void sum(float* data, size_t n, const std::string& what);
  virtual void sum(double* data, size_t n, const std::string& what) {}
  // Every rank's `bytes` bytes, in rank order, into all (size() * bytes).
  virtual void allgather(const void* mine, size_t bytes, void* all, const std::string& what, Stream stream = Stream::Sync);
  virtual void broadcast(void* data, size_t bytes, int root, const std::string& what) {}
  virtual void barrier(const std::string& what) {}
  double mean(double x, const std::string& what);

  // Prints "spnas rank R of N (...): message" and ends every rank with `code`.
  [[noreturn]] virtual void abort(const std::string& message, int code);

  void set_timeout(double seconds) { timeout_ = seconds; }
  double timeout() const { return timeout_; }

 protected:
  double timeout_ = 300;
};

// The processes of this run: under mpirun, MPI is initialised on the first call (and finalised at
// exit); otherwise one process. Throws, naming the launcher's variables, when started as one of
// several ranks by a build without MPI.
Communicator& world();

// Threads for this rank when --threads is 0: one process keeps today's default (0: every online
// CPU); a rank gets the CPUs it may run on, divided among the ranks of this machine that share the
// same CPU mask (so `mpirun -np 2` on 2 cores runs 1 thread each instead of 2 + 2).
int default_threads_for_rank(Communicator& comm);

// ---- gradient averaging -------------------------------------------------------------------------

// Per-run totals of what averaging cost, for progress lines and bench_dist.
struct GradSyncStats {
  int64_t steps = 0;
  int64_t bytes_per_step = 0;   // the floats summed per step (gradients, and buffers when averaged), in bytes
  int buckets = 0;
  double comm_seconds = 0;      // per step: from the first bucket's start to the last one's completion
  double wait_seconds = 0;      // per step: backward's caller blocked in finish, waiting for the sums
  double backward_seconds = 0;  // per step: the backward walk itself (buckets started within it)
};

class GradientAverager : private BackwardListener {
 public:
  // average_buffers: also average the buffers (batch-norm running statistics), which per-rank batch
  // norm updates from each rank's own statistics; the mean of the ranks' updates is the update with
  // the mean of their statistics. bucket_bytes: the size each fused allreduce aims at.
  GradientAverager(ParamSet& params, Communicator& comm, bool average_buffers, size_t bucket_bytes = size_t(4) << 20);

  // backward(loss), with every parameter's gradient then replaced by its mean over ranks (a
  // parameter without a gradient on a rank counts as zero there). `local_stop_signal`: this rank's
  // pending stop request (0: none); every rank learns the same agreed one (stop_signal()). One
  // process: exactly backward(loss).
  void backward(const Var& loss, int local_stop_signal = 0);
  int stop_signal() const { return stop_signal_; }  // the agreed signal of the last backward (0: none)
  const GradSyncStats& stats() const { return stats_; }
  int64_t gradient_floats() const { return grad_floats_; }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_.params(), in launch order
    std::vector<float> buffer;
    size_t ready_at = 0;         // the bucket's gradients are complete once the walk reaches this tape index
    OpHandle op;
  };
  void begin(const std::vector<Var>& tape) override;
  void rule_done(size_t index) override;
  void launch(Bucket& b);
  void finish(int local_stop_signal);

  ParamSet& params_;
  Communicator& comm_;
  bool average_buffers_;
  std::vector<Bucket> buckets_;
  Bucket control_;  // buffers and the stop request, summed after the gradients
  size_t next_ = 0;  // the next bucket to launch (buckets start in the same order on every rank)
  int64_t grad_floats_ = 0;
  int64_t calls_ = 0;
  double first_start_ = 0;
  int stop_signal_ = 0;
  GradSyncStats stats_;
};

}  // namespace spnas
