// The single-process Communicator, the launcher's environment, threads per rank, and the gradient
// averager (transport-independent: it only starts sums and waits for them). The MPI transport is
// engine/dist_mpi.cpp, compiled when CMake finds MPI.
#include "engine/dist.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <unordered_map>

#include "engine/tensor.h"
#include "engine/threads.h"

namespace spnas {

double dist_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

static int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

LaunchInfo launch_info_from_env() {
  LaunchInfo li;
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) {
    li.launched = true;
    li.size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    li.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    li.local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 0);
  } else if (std::getenv("PMI_SIZE")) {
    li.launched = true;
    li.size = env_int("PMI_SIZE", 1);
    li.rank = env_int("PMI_RANK", 0);
    li.local_size = env_int("MPI_LOCALNRANKS", 0);
  }
  return li;
}

// ---- the single process ------------------------------------------------------------------------

std::string Communicator::name() const {
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  return "rank " + std::to_string(rank()) + " of " + std::to_string(size()) + " (" + host + ", pid " +
         std::to_string(getpid()) + ")";
}

OpHandle Communicator::start_sum(float*, size_t, Stream, std::string what) {
  auto op = std::make_shared<CollectiveOp>();
  op->what = std::move(what);
  op->started = op->completed = dist_seconds();
  op->done = true;
  return op;
}

void Communicator::sum(float* data, size_t n, const std::string& what) {
  if (size() == 1) return;
  OpHandle op = start_sum(data, n, Stream::Sync, what);
  wait(op);
}

void Communicator::allgather(const void* mine, size_t bytes, void* all, const std::string&, Stream) {
  std::memcpy(all, mine, bytes);
}

double Communicator::mean(double x, const std::string& what) {
  if (size() == 1) return x;
  sum(&x, 1, what);
  return x / size();
}

void Communicator::abort(const std::string& message, int code) {
  std::fprintf(stderr, "spnas %s: %s\n", name().c_str(), message.c_str());
  std::fflush(stderr);
  std::_Exit(code);
}

#ifdef SPNAS_HAVE_MPI
bool built_with_mpi() { return true; }
std::unique_ptr<Communicator> make_mpi_communicator();  // engine/dist_mpi.cpp
#else
bool built_with_mpi() { return false; }
#endif

Communicator& world() {
  static std::unique_ptr<Communicator> w = [] {
    const LaunchInfo li = launch_info_from_env();
#ifdef SPNAS_HAVE_MPI
    if (li.launched) return make_mpi_communicator();
#else
    if (li.size > 1)
      throw std::runtime_error("this process was started as rank " + std::to_string(li.rank) + " of " +
                               std::to_string(li.size) + " (by mpirun/mpiexec: OMPI_COMM_WORLD_SIZE or PMI_SIZE is set), "
                               "but this spnas was built without MPI: install libopenmpi-dev (tools/setup.sh does) and "
                               "rebuild, or run it without mpirun");
#endif
    return std::make_unique<Communicator>();
  }();
  return *w;
}

int default_threads_for_rank(Communicator& comm) {
  if (comm.size() == 1) return 0;
  // Ranks that may run on exactly the same CPUs share them; a rank bound to its own cores keeps them.
  std::vector<int> cpus = allowed_cpus();
  std::vector<uint8_t> mask(1024, 0);
  for (int c : cpus)
    if (c >= 0 && c < int(mask.size()) * 8) mask[size_t(c / 8)] |= uint8_t(1u << (c % 8));
  std::vector<uint8_t> all(mask.size() * size_t(comm.local_size()));
  comm.allgather(mask.data(), mask.size(), all.data(), "CPU masks of the ranks on this machine", Stream::Node);
  int sharing = 0;
  for (int r = 0; r < comm.local_size(); ++r)
    sharing += std::memcmp(all.data() + size_t(r) * mask.size(), mask.data(), mask.size()) == 0;
  return std::max(1, int(cpus.size()) / std::max(1, sharing));
}

// ---- gradient averaging ---------------------------------------------------------------------------

GradientAverager::GradientAverager(ParamSet& params, Communicator& comm, bool average_buffers, size_t bucket_bytes)
    : params_(params), comm_(comm), average_buffers_(average_buffers) {
  if (comm_.size() == 1) return;
  // Backward produces gradients roughly in reverse registration order (the head first), so buckets
  // are filled from the last parameter back.
  const auto& ps = params_.params();
  const size_t per_bucket = std::max<size_t>(1, bucket_bytes / sizeof(float));
  Bucket cur;
  size_t n = 0;
  for (size_t i = ps.size(); i-- > 0;) {
    cur.params.push_back(i);
    n += size_t(ps[i].var->value.numel());
    if (n >= per_bucket || i == 0) {
      cur.buffer.resize(n);
      grad_floats_ += int64_t(n);
      buckets_.push_back(std::move(cur));
      cur = Bucket();
      n = 0;
    }
  }
  size_t control = 2;  // ranks that asked to stop with SIGINT, with another signal
  if (average_buffers_)
    for (const auto& b : params_.buffers()) control += size_t(b.second.numel());
  control_.buffer.resize(control);
  stats_.buckets = int(buckets_.size());
  stats_.bytes_per_step = int64_t((size_t(grad_floats_) + control) * sizeof(float));
}

void GradientAverager::begin(const std::vector<Var>& tape) {
  // A parameter's gradient is complete once the walk has run the rule of its first consumer.
  const auto& ps = params_.params();
  std::unordered_map<const Node*, size_t> index;
  for (size_t i = 0; i < ps.size(); ++i) index[ps[i].var.get()] = i;
  std::vector<size_t> first(ps.size(), SIZE_MAX);
  for (size_t t = 0; t < tape.size(); ++t)
    for (const Var& in : tape[t]->inputs) {
      auto it = index.find(in.get());
      if (it != index.end()) first[it->second] = std::min(first[it->second], t);
    }
  for (Bucket& b : buckets_) {
    b.ready_at = SIZE_MAX;  // a bucket no rule writes to is complete from the start
    for (size_t p : b.params) b.ready_at = std::min(b.ready_at, first[p]);
  }
  next_ = 0;
  rule_done(tape.size());
}

void GradientAverager::rule_done(size_t index) {
  // Every rank starts the buckets in the same order: the sums pair up by order, not by name.
  while (next_ < buckets_.size() && buckets_[next_].ready_at >= index) launch(buckets_[next_++]);
}

void GradientAverager::launch(Bucket& b) {
  const auto& ps = params_.params();
  float* dst = b.buffer.data();
  for (size_t p : b.params) {
    const Node& v = *ps[p].var;
    const size_t n = size_t(v.value.numel());
    if (v.grad_valid) std::memcpy(dst, v.grad.data(), n * sizeof(float));
    else std::fill(dst, dst + n, 0.0f);
    dst += n;
  }
  if (next_ == 1) first_start_ = dist_seconds();
  b.op = comm_.start_sum(b.buffer.data(), b.buffer.size(), Stream::Gradients,
                         "gradient sum, bucket " + std::to_string(&b - buckets_.data() + 1) + " of " +
                             std::to_string(buckets_.size()) + ", backward pass " + std::to_string(calls_));
}

void GradientAverager::backward(const Var& loss, int local_stop_signal) {
  if (comm_.size() == 1) {
    spnas::backward(loss);
    stop_signal_ = local_stop_signal;
    return;
  }
  ++calls_;
  const double t0 = dist_seconds();
  spnas::backward(loss, nullptr, this);
  const double t1 = dist_seconds();
  finish(local_stop_signal);
  stats_.backward_seconds += t1 - t0;
  stats_.wait_seconds += dist_seconds() - t1;
  ++stats_.steps;
}

void GradientAverager::finish(int local_stop_signal) {
  while (next_ < buckets_.size()) launch(buckets_[next_++]);
  float* c = control_.buffer.data();
  c[0] = local_stop_signal == 2 ? 1.0f : 0.0f;
  c[1] = local_stop_signal != 0 && local_stop_signal != 2 ? 1.0f : 0.0f;
  if (average_buffers_) {
    float* dst = c + 2;
    for (const auto& b : params_.buffers()) {
      std::memcpy(dst, b.second.data(), size_t(b.second.numel()) * sizeof(float));
      dst += b.second.numel();
    }
  }
  control_.op = comm_.start_sum(c, control_.buffer.size(), Stream::Gradients,
                                "buffer and stop-request sum, backward pass " + std::to_string(calls_));

  const float inv = 1.0f / float(comm_.size());
  const auto& ps = params_.params();
  double last = 0;
  for (Bucket& b : buckets_) {
    comm_.wait(b.op);
    last = std::max(last, b.op->completed);
    const float* src = b.buffer.data();
    for (size_t p : b.params) {
      Node& v = *ps[p].var;
      bool overwrite;
      float* g = v.grad_buffer(&overwrite);
      const int64_t n = v.value.numel();
      for (int64_t i = 0; i < n; ++i) g[i] = src[i] * inv;
      src += n;
    }
    b.op.reset();
  }
  comm_.wait(control_.op);
  last = std::max(last, control_.op->completed);
  stats_.comm_seconds += last - first_start_;
  if (average_buffers_) {
    const float* src = c + 2;
    for (const auto& b : params_.buffers()) {
      Tensor t = b.second;  // a handle: writes reach the model's buffer
      for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = src[i] * inv;
      src += t.numel();
    }
  }
  stop_signal_ = c[0] > 0 ? 2 : c[1] > 0 ? (local_stop_signal != 0 ? local_stop_signal : 15) : 0;
  control_.op.reset();
}

}  // namespace spnas
