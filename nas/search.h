// The Single-Path NAS search: one supernet, weights and thresholds trained together (one-level, as
// the reference) or thresholds on a held-out split (bi-level), loss = CE (label smoothing) +
// L2 weight decay + lambda * runtime term (off during warm-up). Writes a per-step CSV, an SVG plot,
// checkpoints (every N steps and on SIGINT/SIGTERM) and the decoded architecture.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "data/data.h"
#include "nas/model.h"
#include "nas/run_util.h"
#include "nas/runtime.h"

namespace spnas {

struct SearchConfig {
  std::string space = "cifar10";
  SpaceOptions space_options;
  DataSpec data{"synthetic", ""};
  bool augment = true;
  int batch = 64;
  float epochs = 8;
  float warmup_epochs = 5;        // indicator dropping on, runtime term off
  float indicator_drop = 0.4f;
  LrConfig lr{"exponential", 0.0f /* 0: 0.016 * batch / 256 */, 0.97f, 2.4f, 0.0f};
  float threshold_lr_mult = 1.0f;
  std::string optimizer = "rmsprop";  // rmsprop (TF-1) | sgd | adam
  float weight_decay = 1e-5f;
  float label_smoothing = 0.1f;
  float lambda = 0.02f;
  RuntimeLoss runtime_loss = RuntimeLoss::Log;
  float target_ms = 0;
  RuntimeMode runtime_mode = RuntimeMode::Formula;
  std::string table_path;          // latency table (JSON or CSV)
  double fixed_ms = -1;            // override / CSV fixed cost
  bool search_se = false;
  bool squared_norm = false;
  float threshold_margin = -1.0f;  // SupernetConfig::threshold_margin
  bool bilevel = false;
  float val_fraction = 0.1f;       // bi-level: held-out fraction of the training set
  float bn_momentum = 0.99f;
  uint64_t seed = 1;
  int workers = 1;
  std::string out_dir = "runs/search";
  int64_t checkpoint_every = 500;  // steps; 0: only at the end / on a signal
  bool resume = false;
  int64_t max_steps = -1;          // stop after this many steps in total (tests, quick runs)
  bool quiet = false;
};

struct SearchResult {
  Arch arch;
  double predicted_ms = 0;     // table prediction of the decoded architecture
  double supernet_ms = 0;      // R with every indicator 1
  int64_t steps = 0;
  bool finished = false;       // false when stopped early (signal or max_steps)
  double seconds = 0;
  double final_ce = 0;
  std::string arch_path, csv_path, svg_path, checkpoint_path;
};

SearchResult run_search(const SearchConfig& cfg, const LatencyTable& table);

// One row of the search log.
struct SearchLogRow {
  int64_t step = 0;
  double epoch = 0, ce = 0, runtime_term = 0, R = 0, lr = 0;
  std::vector<float> d_k5, d_e6, d_skip, d_se, m_k5, m_e6, m_skip, m_se;
};
void write_search_svg(const std::string& path, const std::vector<SearchLogRow>& rows, const std::string& title);
std::vector<SearchLogRow> read_search_csv(const std::string& path, int64_t up_to_step);

}  // namespace spnas
