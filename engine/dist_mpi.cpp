// The MPI transport of engine/dist.h (only the MPI standard's API, so Open MPI and MPICH both build
// it). Compiled when CMake finds MPI.
//
// Threads: MPI is initialised MPI_THREAD_SERIALIZED and every call holds mpi_mu_, so two threads use
// it: the caller (the training loop: starts sums, waits) and a progress thread that, while gradient
// buckets are in flight, calls MPI_Test on them every few tens of microseconds. Nonblocking
// collectives only move when some thread calls into MPI; without that thread the buckets started
// during backward would wait for the end of backward and nothing would overlap.
//
// Deadlines: every wait polls with MPI_Test and compares with the deadline instead of blocking in
// MPI_Wait, so a rank that died or hangs ends in a message naming this rank and the operation
// (then MPI_Abort), not in a wait without end.
#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "engine/dist.h"

namespace spnas {
namespace {

struct MpiOp : CollectiveOp {
  MPI_Request request = MPI_REQUEST_NULL;
  double deadline = 0;
};

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator() {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
      throw std::runtime_error("MPI_Init_thread failed");
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    if (provided < MPI_THREAD_SERIALIZED)
      abort("this MPI library gives thread level " + std::to_string(provided) +
                ", below MPI_THREAD_SERIALIZED, which the progress thread needs",
            2);
    // Errors come back as codes (checked), not as the default handler's silent abort.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_dup(MPI_COMM_WORLD, &grads_);
    MPI_Comm_dup(MPI_COMM_WORLD, &sync_);
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_);
    MPI_Comm_rank(node_, &local_rank_);
    MPI_Comm_size(node_, &local_size_);
    progress_ = std::thread([this] { progress_loop(); });
  }

  ~MpiCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(list_mu_);
      quit_ = true;
    }
    list_cv_.notify_all();
    progress_.join();
    std::lock_guard<std::mutex> lock(mpi_mu_);
    MPI_Comm_free(&node_);
    MPI_Comm_free(&sync_);
    MPI_Comm_free(&grads_);
    MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }

  OpHandle start_sum(float* data, size_t n, Stream stream, std::string what) override {
    auto op = make_op(std::move(what));
    {
      std::lock_guard<std::mutex> lock(mpi_mu_);
      check(MPI_Iallreduce(MPI_IN_PLACE, data, count(n, op->what), MPI_FLOAT, MPI_SUM, comm(stream), &op->request),
            op->what);
    }
    if (stream == Stream::Gradients) {
      std::lock_guard<std::mutex> lock(list_mu_);
      in_flight_.push_back(op);
      list_cv_.notify_all();
    }
    return op;
  }

  bool test(const OpHandle& h) override {
    auto* op = static_cast<MpiOp*>(h.get());
    if (op->done.load()) return true;
    std::lock_guard<std::mutex> lock(mpi_mu_);
    return test_locked(*op);
  }

  void wait(const OpHandle& h) override {
    auto* op = static_cast<MpiOp*>(h.get());
    for (int i = 0; !test(h); ++i) {
      if (dist_seconds() > op->deadline)
        abort("'" + op->what + "' has not completed after " + std::to_string(int(timeout_)) +
                  " s: another rank died or hangs (the launcher names a rank that died); stopping every rank. "
                  "The last checkpoint is intact. --dist-timeout sets this limit.",
              3);
      // Spin briefly (a sum between ranks in step takes microseconds), then give the core away.
      if (i > 200) std::this_thread::sleep_for(std::chrono::microseconds(20));
      else sched_yield();
    }
  }

  void sum(double* data, size_t n, const std::string& what) override {
    auto op = make_op(what);
    {
      std::lock_guard<std::mutex> lock(mpi_mu_);
      check(MPI_Iallreduce(MPI_IN_PLACE, data, count(n, what), MPI_DOUBLE, MPI_SUM, sync_, &op->request), what);
    }
    wait(op);
  }

  void allgather(const void* mine, size_t bytes, void* all, const std::string& what, Stream stream) override {
    auto op = make_op(what);
    {
      std::lock_guard<std::mutex> lock(mpi_mu_);
      check(MPI_Iallgather(mine, count(bytes, what), MPI_BYTE, all, count(bytes, what), MPI_BYTE, comm(stream),
                           &op->request),
            what);
    }
    wait(op);
  }

  void broadcast(void* data, size_t bytes, int root, const std::string& what) override {
    auto op = make_op(what);
    {
      std::lock_guard<std::mutex> lock(mpi_mu_);
      check(MPI_Ibcast(data, count(bytes, what), MPI_BYTE, root, sync_, &op->request), what);
    }
    wait(op);
  }

  void barrier(const std::string& what) override {
    auto op = make_op(what);
    {
      std::lock_guard<std::mutex> lock(mpi_mu_);
      check(MPI_Ibarrier(sync_, &op->request), what);
    }
    wait(op);
  }

  [[noreturn]] void abort(const std::string& message, int code) override {
    std::fprintf(stderr, "spnas %s: %s\n", name().c_str(), message.c_str());
    std::fflush(stderr);
    // Not under mpi_mu_: the thread holding it may be the one that is stuck.
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  std::shared_ptr<MpiOp> make_op(std::string what) {
    auto op = std::make_shared<MpiOp>();
    op->what = std::move(what);
    op->started = dist_seconds();
    op->deadline = op->started + timeout_;
    return op;
  }

  MPI_Comm comm(Stream s) const { return s == Stream::Gradients ? grads_ : s == Stream::Sync ? sync_ : node_; }

  int count(size_t n, const std::string& what) {
    if (n > size_t(INT32_MAX)) abort("'" + what + "': " + std::to_string(n) + " elements, more than one MPI call takes", 2);
    return int(n);
  }

  void check(int rc, const std::string& what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    abort("'" + what + "' failed: " + std::string(text, size_t(len)), 3);
  }

  // Under mpi_mu_.
  bool test_locked(MpiOp& op) {
    if (op.done.load()) return true;
    int flag = 0;
    check(MPI_Test(&op.request, &flag, MPI_STATUS_IGNORE), op.what);
    if (flag) {
      op.completed = dist_seconds();
      op.done = true;
    }
    return flag != 0;
  }

  void progress_loop() {
    std::unique_lock<std::mutex> lock(list_mu_);
    for (;;) {
      list_cv_.wait(lock, [&] { return quit_ || !in_flight_.empty(); });
      if (quit_) return;
      std::vector<std::shared_ptr<MpiOp>> ops = in_flight_;
      lock.unlock();
      for (auto& op : ops) {
        std::lock_guard<std::mutex> mpi(mpi_mu_);
        test_locked(*op);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(30));
      lock.lock();
      in_flight_.erase(std::remove_if(in_flight_.begin(), in_flight_.end(), [](const auto& op) { return op->done.load(); }),
                       in_flight_.end());
    }
  }

  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  MPI_Comm grads_ = MPI_COMM_NULL, sync_ = MPI_COMM_NULL, node_ = MPI_COMM_NULL;
  std::mutex mpi_mu_;  // one MPI call at a time (MPI_THREAD_SERIALIZED)
  std::thread progress_;
  std::mutex list_mu_;
  std::condition_variable list_cv_;
  std::vector<std::shared_ptr<MpiOp>> in_flight_;  // gradient buckets the progress thread tests
  bool quit_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() { return std::make_unique<MpiCommunicator>(); }

}  // namespace spnas
