// Checkpoints: one versioned, checksummed binary file holding everything needed to resume training
// exactly — parameters, buffers, optimizer slots, EMA shadows, RNG states, the step counter, a
// free-form metadata string (JSON by convention) and named extra blobs (e.g. a data-loader position).
// The byte layout is described in engine/README.md.
//
// Saving writes a temporary file in the same directory, fsyncs it and renames it over the target, so
// a crash or a failed write leaves the previous checkpoint intact.
// Loading parses and validates the whole file into temporaries first — a truncated, corrupt,
// foreign, newer-version or mismatched file (parameter missing, extra, or of another shape) is
// refused with a message naming the file and the reason — and only then copies into the model, so
// a refused file changes nothing.
//
//   Checkpoint ck;  ck.params = &model; ck.optimizer = &opt; ck.ema = &ema; ck.rngs = {{"data", &rng}};
//   ck.step = step; ck.metadata = config.dump(); ck.blobs["loader"] = loader_position;
//   save_checkpoint("run/ckpt.bin", ck);
//   ...
//   load_checkpoint("run/ckpt.bin", ck);   // restores all of the above, sets ck.step/metadata/blobs
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/ema.h"
#include "engine/io.h"  // write_file_atomic
#include "engine/optim.h"
#include "engine/params.h"
#include "engine/rng.h"

namespace spnas {

constexpr uint32_t kCheckpointVersion = 1;

// What to save, and where loading puts things. Only `params` is required.
struct Checkpoint {
  ParamSet* params = nullptr;     // parameters and buffers
  Optimizer* optimizer = nullptr; // slots (if set, loading requires them in the file)
  Ema* ema = nullptr;             // shadows (if set, loading requires them in the file)
  std::vector<std::pair<std::string, Rng*>> rngs;  // by name (loading requires each name in the file)
  int64_t step = 0;
  std::string metadata;                      // free-form, JSON by convention
  std::map<std::string, std::string> blobs;  // named bytes
};

// The parsed contents of a checkpoint file, independent of any model.
struct CheckpointData {
  uint32_t version = 0;
  int64_t step = 0;
  std::string metadata;
  NamedTensors params, buffers;
  bool has_optimizer = false;
  OptimizerState optimizer;
  bool has_ema = false;
  NamedTensors ema;
  std::vector<std::pair<std::string, std::array<uint64_t, 4>>> rngs;
  std::map<std::string, std::string> blobs;
};

void save_checkpoint(const std::string& path, const Checkpoint& ck);
// Reads and verifies a file (magic, version, sizes, checksums, structure); throws on any problem.
CheckpointData read_checkpoint(const std::string& path);
// read_checkpoint, checks it matches `ck` exactly, then restores everything `ck` points at and sets
// ck.step, ck.metadata and ck.blobs. RNGs and sections in the file that `ck` does not ask for are ignored.
void load_checkpoint(const std::string& path, Checkpoint& ck);
// The second half of load_checkpoint, for contents already read (`name` is used in errors).
void restore_checkpoint(CheckpointData d, const std::string& name, Checkpoint& ck);

// The serialized bytes (what save_checkpoint writes) and their parser, for tests and tools.
std::string encode_checkpoint(const Checkpoint& ck);
CheckpointData decode_checkpoint(const std::string& bytes, const std::string& name_for_errors);


}  // namespace spnas
