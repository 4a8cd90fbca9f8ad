// What search and train need to run data-parallel under mpirun (engine/dist.h has the transport):
// the settings, the one writer (rank 0), each rank's share of the batch and its own random stream,
// the step (gradients averaged, stopping agreed), checkpoints that hold every rank's random state,
// and a wrapper that turns one rank's error into a stop of all ranks. With one process every piece
// is what the program did before: rank 0 of 1 writes, the shard is the batch, the seed is the seed.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "data/data.h"
#include "engine/checkpoint.h"
#include "engine/dist.h"
#include "nas/run.h"
#include "ops/ops.h"

namespace spnas {

struct ParallelConfig {
  // Batch norm's statistics: per rank by default (as the reference, per TPU core); sync_bn: over the
  // global batch; bn_groups: over that many parts of each rank's share (ghost batch norm).
  bool sync_bn = false;
  int bn_groups = 1;
  double timeout_s = 300;  // a collective that takes longer stops every rank (a rank died or hangs)
  // Each fused gradient allreduce's size: a smaller bucket is complete (and starts) earlier in
  // backward, a larger one costs fewer calls. With 2 ranks the sums do not depend on it (with more,
  // MPI may pick another reduction order for another message size).
  double bucket_mb = 4;
};

// Rank 0 (or the only process): the one that writes logs, plots, architectures and checkpoints.
bool is_writer();
// This rank's seed for what each rank draws on its own (indicator dropping, dropout): rank 0 keeps
// `seed` (so one process draws as before), rank r mixes r in.
uint64_t rank_seed(uint64_t seed);
// This rank's share of every global batch.
BatchShard batch_shard();
// `config` (what a resume must match) with the rank count and batch-norm mode where they differ
// from one process with batch statistics (older records stay comparable).
nlohmann::json with_parallel_record(nlohmann::json config, const ParallelConfig& pc);

// Sets up one run on every rank and runs body(): checks that the batch splits over the ranks (and
// each share over bn_groups), sets batch norm's statistics for the run (restored after), sets the
// collectives' deadline, and says on rank 0 how the work is split. An error on one rank (a bad file,
// a divergence) is printed and stops every rank, which would otherwise wait for it until the
// deadline; an agreed interruption (Interrupted) is rethrown as it is.
class ParallelRun {
 public:
  ParallelRun(const std::string& what, const ParallelConfig& pc, int batch, bool quiet);
  ~ParallelRun();
  ParallelRun(const ParallelRun&) = delete;
  ParallelRun& operator=(const ParallelRun&) = delete;
  [[noreturn]] void fail(const std::string& message) const;

 private:
  std::string what_;
  BatchNormStats previous_;
};

template <class Body>
auto run_data_parallel(const std::string& what, const ParallelConfig& pc, int batch, bool quiet, Body&& body) {
  ParallelRun run(what, pc, batch, quiet);
  try {
    return body();
  } catch (const Interrupted&) {
    throw;
  } catch (const std::exception& e) {
    if (world().size() > 1) run.fail(e.what());
    throw;
  }
}

// One training step's backward on every rank: the gradients averaged over ranks (and per-rank batch
// norm's running statistics), and one answer on every rank to "stop here?" (a signal reaches the
// ranks at different moments; they must leave the loop at the same step).
class DataParallelStep {
 public:
  DataParallelStep(ParamSet& params, const ParallelConfig& pc, Communicator& comm = world());
  void backward(const Var& loss);
  bool stop_requested() const;
  double mean(double x);  // the mean over ranks (the loss every rank logs and checks)
  const GradientAverager& averager() const { return averager_; }

 private:
  GradientAverager averager_;
};

// Every rank's random generator in the checkpoint: rank 0's under `name` (a one-process checkpoint
// is unchanged), rank r's under name/rank<r>.
class RankRng {
 public:
  RankRng(std::string name, Rng& rng) : name_(std::move(name)), rng_(rng) {}
  std::vector<std::pair<std::string, Rng*>> mine();  // this rank's entry (to load)
  std::vector<std::pair<std::string, Rng*>> all();   // every rank's, gathered (collective: all ranks call it)

 private:
  std::string name_;
  Rng& rng_;
  std::vector<Rng> gathered_;
};

// This rank's training state as a checkpoint to save or load into: parameters, optimizer slots, EMA
// shadows (nullptr: none), this rank's random state and the run's metadata.
Checkpoint rank_checkpoint(ParamSet& params, Optimizer* opt, Ema* ema, RankRng& rng, const std::string& metadata);

// Collective: gathers every rank's random state into ck, checks that the ranks' parameters and
// buffers are the same bits (they take identical steps), and rank 0 writes the file (atomically).
void save_checkpoint_from_rank0(const std::string& path, Checkpoint& ck, RankRng& rng);

// A loader's place in the data, kept in a checkpoint as blob `key` ("epoch batch"), and the loader
// moved back there on resume (a checkpoint without the blob is refused, naming the file and the key).
void put_loader_position(Checkpoint& ck, const std::string& key, const Loader& loader);
void seek_loader(Loader& loader, const Checkpoint& ck, const std::string& key, const std::string& path,
                 const std::string& what);

}  // namespace spnas
