#include "nas/data_parallel.h"

#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "engine/threads.h"

namespace spnas {

bool is_writer() { return world().rank() == 0; }

uint64_t rank_seed(uint64_t seed) {
  const int r = world().rank();
  return r == 0 ? seed : mix_seed(seed, uint64_t(r), 0x7a4bULL);
}

BatchShard batch_shard() { return {world().rank(), world().size()}; }

nlohmann::json with_parallel_record(nlohmann::json config, const ParallelConfig& pc) {
  if (world().size() > 1) config["ranks"] = world().size();
  if (pc.sync_bn) config["sync_bn"] = true;
  if (pc.bn_groups > 1) config["bn_groups"] = pc.bn_groups;
  return config;
}

// ---- the run ------------------------------------------------------------------------------------

ParallelRun::ParallelRun(const std::string& what, const ParallelConfig& pc, int batch, bool quiet)
    : what_(what), previous_(batchnorm_stats()) {
  Communicator& w = world();
  const int n = w.size();
  if (batch % n != 0)
    throw std::runtime_error(what + ": --batch " + std::to_string(batch) + " does not split over " + std::to_string(n) +
                             " ranks: the global batch is shared equally; use a multiple of " + std::to_string(n));
  const int share = batch / n;
  if (pc.bn_groups < 1 || share % pc.bn_groups != 0 || share / pc.bn_groups < 2)
    throw std::runtime_error(what + ": --bn-groups " + std::to_string(pc.bn_groups) + " does not split " +
                             (n > 1 ? "each rank's share of " : "the batch of ") + std::to_string(share) +
                             " images into equal groups of at least 2");
  if (pc.sync_bn && pc.bn_groups > 1)
    throw std::runtime_error(what + ": --sync-bn (statistics over the global batch) and --bn-groups (over parts of it) "
                             "exclude each other");
  if (!(pc.timeout_s > 0)) throw std::runtime_error(what + ": --dist-timeout must be > 0");
  if (!(pc.bucket_mb > 0 && pc.bucket_mb <= 4096))  // also from a trial file: before it sizes the buckets
    throw std::runtime_error(what + ": --bucket-mb must be in (0, 4096], got " + std::to_string(pc.bucket_mb));
  w.set_timeout(pc.timeout_s);
  set_batchnorm_stats(BatchNormStats{pc.bn_groups, pc.sync_bn && n > 1});
  if (n > 1 && w.rank() == 0 && !quiet) {
    const int groups = pc.bn_groups;
    const std::string bn = pc.sync_bn ? "over the global batch of " + std::to_string(batch) + " (--sync-bn)"
                           : groups > 1 ? "over " + std::to_string(groups) + " groups of " + std::to_string(share / groups) +
                                              " images on each rank (--bn-groups)"
                                        : "over each rank's " + std::to_string(share) + " images (--sync-bn: the global batch)";
    std::fprintf(stderr,
                 "%s: data-parallel over %d ranks (%d on this machine): global batch %d = %d x %d images per rank; "
                 "batch-norm statistics %s; %d thread(s) per rank; rank 0 writes the files\n",
                 what.c_str(), n, w.local_size(), batch, n, share, bn.c_str(), num_threads());
    // Statistics from a handful of images are noisy enough to hurt what is learned.
    if (!pc.sync_bn && share / groups < 8)
      std::fprintf(stderr, "%s: warning: each rank normalises over only %d images; --sync-bn takes the statistics over "
                   "the global batch (or raise --batch)\n", what.c_str(), share / groups);
  }
}

ParallelRun::~ParallelRun() { set_batchnorm_stats(previous_); }

void ParallelRun::fail(const std::string& message) const {
  world().abort(what_ + " failed: " + message + " (stopping every rank)", 1);
  std::abort();  // not reached: GCC does not carry [[noreturn]] through the virtual call
}

// ---- the step -------------------------------------------------------------------------------------

DataParallelStep::DataParallelStep(ParamSet& params, const ParallelConfig& pc, Communicator& comm)
    : averager_(params, comm, /*average_buffers=*/!pc.sync_bn, size_t(pc.bucket_mb * (1 << 20))) {}

void DataParallelStep::backward(const Var& loss) {
  averager_.backward(loss, stop_signal());
  // A signal that reached another rank stops this one at the same step.
  if (world().size() > 1 && averager_.stop_signal() != 0 && !spnas::stop_requested()) request_stop(averager_.stop_signal());
}

bool DataParallelStep::stop_requested() const {
  return world().size() == 1 ? spnas::stop_requested() : averager_.stop_signal() != 0;
}

double DataParallelStep::mean(double x) { return world().mean(x, "mean loss over ranks"); }

// ---- checkpoints ----------------------------------------------------------------------------------

std::vector<std::pair<std::string, Rng*>> RankRng::mine() {
  const int r = world().rank();
  return {{r == 0 ? name_ : name_ + "/rank" + std::to_string(r), &rng_}};
}

std::vector<std::pair<std::string, Rng*>> RankRng::all() {
  Communicator& w = world();
  const std::array<uint64_t, 4> state = rng_.state();
  std::vector<std::array<uint64_t, 4>> states(size_t(w.size()));
  w.allgather(state.data(), sizeof state, states.data(), "random states for the checkpoint");
  gathered_.assign(size_t(w.size()), Rng());
  std::vector<std::pair<std::string, Rng*>> out;
  for (int r = 0; r < w.size(); ++r) {
    gathered_[size_t(r)].set_state(states[size_t(r)]);
    out.push_back({r == 0 ? name_ : name_ + "/rank" + std::to_string(r), &gathered_[size_t(r)]});
  }
  return out;
}

namespace {

// A 64-bit fingerprint of every parameter's and buffer's bits.
uint64_t fingerprint(const ParamSet& ps) {
  uint64_t h = 0xcbf29ce484222325ULL;
  auto add = [&](const Tensor& t) {
    const uint32_t* w = reinterpret_cast<const uint32_t*>(t.data());
    for (int64_t i = 0; i < t.numel(); ++i) h = (h ^ w[i]) * 0x100000001b3ULL;
  };
  for (const Param& p : ps.params()) add(p.var->value);
  for (const auto& b : ps.buffers()) add(b.second);
  return h;
}

}  // namespace

Checkpoint rank_checkpoint(ParamSet& params, Optimizer* opt, Ema* ema, RankRng& rng, const std::string& metadata) {
  Checkpoint ck;
  ck.params = &params;
  ck.optimizer = opt;
  ck.ema = ema;
  ck.rngs = rng.mine();
  ck.metadata = metadata;
  return ck;
}

void save_checkpoint_from_rank0(const std::string& path, Checkpoint& ck, RankRng& rng) {
  Communicator& w = world();
  ck.rngs = rng.all();
  if (w.size() > 1) {
    const uint64_t mine = fingerprint(*ck.params);
    std::vector<uint64_t> all(size_t(w.size()));
    w.allgather(&mine, sizeof mine, all.data(), "parameter fingerprints for the checkpoint");
    for (int r = 1; r < w.size(); ++r)
      if (all[size_t(r)] != all[0])
        throw std::runtime_error("the parameters of rank " + std::to_string(r) + " differ from rank 0's at step " +
                                 std::to_string(ck.step) + " (the ranks should take identical steps: was every rank "
                                 "started with the same options?); '" + path + "' was not written");
  }
  if (is_writer()) save_checkpoint(path, ck);
}

void put_loader_position(Checkpoint& ck, const std::string& key, const Loader& loader) {
  const Loader::Position p = loader.position();
  ck.blobs[key] = std::to_string(p.epoch) + " " + std::to_string(p.batch);
}

void seek_loader(Loader& loader, const Checkpoint& ck, const std::string& key, const std::string& path,
                 const std::string& what) {
  auto it = ck.blobs.find(key);
  if (it == ck.blobs.end()) throw std::runtime_error(what + ": checkpoint '" + path + "' has no " + key + " position");
  Loader::Position p{};
  std::istringstream(it->second) >> p.epoch >> p.batch;
  loader.seek(p);
}

}  // namespace spnas
