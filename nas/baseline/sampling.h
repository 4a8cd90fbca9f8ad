// Random architectures of a search space: the baseline a search has to beat (`spnas random`,
// nas/baseline/README.md). Each searchable layer takes one of the choices it allows with equal
// probability (the four candidates, and skip where LayerSpec::skip_allowed), independently of the
// other layers. With a latency target the draws are kept only when the table's additive prediction
// falls within +-window of it (rejection sampling: the kept ones are uniform over the architectures
// in the window, as the paper's latency-matched random search).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/rng.h"
#include "nas/runtime.h"
#include "nas/space.h"

namespace spnas {

// One uniform draw (no SE; input size and classes the space's).
Arch sample_uniform_arch(const SearchSpace& space, Rng& rng);


struct SampleConfig {
  int count = 8;
  uint64_t seed = 1;
  double target_ms = 0;    // > 0: keep only draws with |R - T| <= window * T
  double window = 0.02;
  int64_t max_draws = 10000000;  // with a target: give up (with an error) after this many draws
};

struct SampledArch {
  Arch arch;
  double runtime_ms = 0;  // the table's additive prediction (0 without a table)
  int64_t params = 0, macs = 0;
  int64_t draw = 0;       // which draw of the generator it was (0-based)
};

struct SampleResult {
  std::vector<SampledArch> archs;
  int64_t draws = 0;     // draws made in all (more than archs.size() with a target)
  RuntimeBounds range;   // of the space under the table (table_runtime_bounds; 0, 0 without a table)
};

// `table` may be null (then no R and no target). Throws when the target window lies outside the
// space's range, or when max_draws are used up before `count` draws fell in it; both errors give the
// range and the window.
SampleResult sample_architectures(const SearchSpace& space, const LatencyTable* table, const SampleConfig& cfg);

// Writes DIR/random_NNN.json (architecture files for `spnas train --arch`) and DIR/summary.json
// (the configuration and, per draw, its file, architecture, R, parameters and MACs); returns the
// architecture files' paths. `table_path` is recorded so that `spnas compare` can find the table.
std::vector<std::string> write_samples(const std::string& dir, const SampleResult& r, const SampleConfig& cfg,
                                       const std::string& table_path);
// The printed table: one row per draw (file, R, params, MACs, layers).
std::string samples_table(const SampleResult& r, bool with_runtime);

}  // namespace spnas
