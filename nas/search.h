// The Single-Path NAS search: one supernet, weights and thresholds trained together (one-level, as
// the reference) or thresholds on a held-out split (bi-level), loss = CE (label smoothing) +
// L2 weight decay + the runtime term (off during warm-up). Writes a per-step CSV, an SVG plot,
// checkpoints (every N steps and on SIGINT/SIGTERM), the decoded architecture, and a verdict that
// says what the search decided and whether the result meets the latency target.
#pragma once
#include <string>
#include <vector>

#include "data/data.h"
#include "engine/schedule.h"
#include "nas/data_parallel.h"
#include "nas/model.h"
#include "nas/run.h"
#include "nas/runtime.h"

namespace spnas {

// Which architecture the search returns.
enum class DecodeRule {
  Final,       // the thresholds' decisions after the last step (the reference)
  LastInBand,  // the last decisions after the warm-up whose R lay in [(1 - band) T, T], else Final
  // LastInBand, and where no step was in the band the final decisions with their least confident ones
  // flipped (round_into_band) so that R lands in it; Final when no architecture of the space is in it.
  Round,
};

struct SearchConfig {
  std::string space = "cifar10";
  SpaceOptions space_options;
  DataSpec data{"synthetic", ""};
  bool augment = true;
  int batch = 64;
  float epochs = 8;
  float warmup_epochs = 5;        // indicator dropping on, runtime term off
  float indicator_drop = 0.4f;
  LrConfig lr{"exponential", 0.0f /* 0: default_learning_rate (engine/optim.h) */, 0.97f, 2.4f, 0.0f};
  float threshold_lr_mult = 1.0f;
  // true: the thresholds stay where they started until the warm-up ends, so every decision is taken
  // with the runtime term in the loss (one-level; bi-level thresholds never train in the warm-up).
  // false: they train on CE from the first step, as in the reference.
  bool freeze_thresholds_in_warmup = false;
  // The thresholds' momentum (RMSProp/SGD momentum, Adam beta1); < 0: the optimizer's (0.9, as the
  // reference). Lower, a threshold stops sooner once the runtime term no longer pushes it.
  float threshold_momentum = -1.0f;
  std::string optimizer = "rmsprop";  // rmsprop (TF-1) | sgd | adam
  float weight_decay = 1e-5f;
  float label_smoothing = 0.1f;
  float lambda = 0.02f;            // in the reference's units: the log form adds lambda * 1e3 * ln R
  RuntimeLoss runtime_loss = RuntimeLoss::Log;
  float target_ms = 0;             // the target form's T; with any form, the verdict compares R with it
  // LastInBand keeps an architecture a search passed through on its way past the target (needs
  // target_ms); the weights are not kept, as the decoded network is trained from scratch anyway.
  DecodeRule decode = DecodeRule::Final;
  float decode_band = 0.03f;       // LastInBand's band: [(1 - decode_band) T, T], in (0, 1] (1: any R <= T)
  RuntimeMode runtime_mode = RuntimeMode::Formula;
  bool search_se = false;
  bool squared_norm = false;
  float threshold_margin = -1.0f;  // SupernetConfig::threshold_margin
  bool bilevel = false;
  // Held-out fraction of the training set: the supernet's accuracy with its current decisions is
  // measured on it every monitor_every steps (monitor_batches batches, no indicator dropping), and
  // with bilevel the thresholds train on it. 0: no held-out split (bilevel needs one).
  float val_fraction = 0.05f;
  int64_t monitor_every = 0;       // steps (0: eight times per epoch)
  int monitor_batches = 4;
  float bn_momentum = 0.99f;
  uint64_t seed = 1;
  int workers = 1;
  std::string out_dir = "runs/search";
  int64_t checkpoint_every = 500;  // steps; 0: only at the end / on a signal
  bool resume = false;
  bool allow_config_change = false;  // resume even if the recorded configuration differs (logged)
  int64_t max_steps = -1;          // stop after this many steps in total (tests, quick runs)
  double memory_limit_gib = 0;     // 0: 80 % of the machine's memory
  bool quiet = false;              // no progress lines (warnings still print)
  ParallelConfig parallel;  // under mpirun (nas/data_parallel.h)
};

// What the search decided, in words a user can act on.
struct SearchVerdict {
  int layers = 0;
  int changed_after_warmup = 0;   // layers whose decoded choice at the end differs from the end of warm-up
  int flips_after_warmup = 0;     // decision changes after warm-up, all layers, all steps
  bool is_supernet = false;       // every searchable layer still 5x5-6 (and SE on where searched)
  double predicted_ms = 0, supernet_ms = 0, target_ms = 0;
  bool has_target = false, target_met = false;
  double smallest_margin = 0;     // |norm - threshold| closest to 0 at the end, over every indicator
  int64_t decoded_at_step = -1;   // LastInBand: the logged step whose decisions were returned (-1: the final ones)
  int rounded_flips = -1;         // Round: how many final decisions were flipped into the band (-1: not rounded)
  double final_ms = 0;            // R of the final decisions (= predicted_ms unless decoded_at_step >= 0)
  std::vector<std::string> lines;  // the verdict as printed: what happened and, if needed, what to change
};

struct SearchResult {
  Arch arch;                   // arch.json: as cfg.decode chose
  double predicted_ms = 0;     // the table's (additive) prediction of the decoded architecture
  double supernet_ms = 0;      // R with every indicator 1
  int64_t steps = 0;
  bool finished = false;       // false when stopped early by max_steps
  double seconds = 0;
  double final_ce = 0;
  double final_val_accuracy = -1;  // last monitored accuracy of the supernet (-1: none)
  SearchVerdict verdict;
  std::vector<std::string> warnings;  // settings that cannot do what the user may expect
  std::string arch_path, csv_path, svg_path, checkpoint_path;
};

// Checks a configuration against a table before any work: errors for what cannot run, warnings
// (returned) for what runs but cannot do what the user may expect.
std::vector<std::string> check_search_config(const SearchConfig& cfg, const LatencyTable& table);

// Throws Interrupted (after saving the checkpoint) when a signal stops it.
SearchResult run_search(const SearchConfig& cfg, const LatencyTable& table);

// One row of the search log. R is what the runtime term saw (indicators after warm-up dropping);
// R_decoded is the table's prediction of the architecture decoded at that step (no dropping).
struct SearchLogRow {
  int64_t step = 0;
  double epoch = 0, lr = 0, ce = 0, runtime_term = 0, R = 0, R_decoded = 0;
  double val_accuracy = NAN;  // measured at this step, else NaN
  std::vector<float> d_k5, d_e6, d_skip, d_se, m_k5, m_e6, m_skip, m_se;
};
// The log's rows before `up_to_step`, each with `layers` searchable layers; throws when the file's
// header is not the log of a search with that many layers. Rows stop at the first one that is not
// complete (a torn last line).
std::vector<SearchLogRow> read_search_csv(const std::string& path, int64_t up_to_step, size_t layers);
// The decoded choice of searchable layer l at a logged step.
Choice logged_choice(const SearchLogRow& r, size_t l);
// The architecture decided at a logged step (the layers' choices and, where searched, SE).
Arch logged_arch(const SearchLogRow& r, const std::string& space_source, float width);
// DecodeRule::LastInBand's choice: the last row at or after `first_row` whose architecture the table
// predicts within [lo_ms, hi_ms]; -1 when none.
int64_t last_row_in_band(const std::vector<SearchLogRow>& rows, int64_t first_row, const LatencyTable& table,
                         const std::string& space_source, float width, double lo_ms, double hi_ms);

// DecodeRule::Round: one decision of the final ones that rounding changed.
struct DecisionFlip {
  int layer = 0;           // searchable layer, from 0
  std::string indicator;   // "kernel" | "expansion" | "skip" | "se"
  double margin = 0;       // |norm - threshold| of that indicator: how far the search was from flipping it
};
struct Rounding {
  bool found = false;      // false: no architecture of the space lies in the band
  Arch arch;
  double R_ms = 0;         // the table's prediction of arch
  double cost = 0;         // the summed margins of the flips
  std::vector<DecisionFlip> flips;
};
// The architecture nearest to `from`'s decisions, measured by the summed |margin| of the indicators it
// flips, whose table R lies in [lo_ms, hi_ms] (equal cost: the larger R). Exact in R; the search over
// the layers' choices is a dynamic programme on R in bins of 1/8 of the band per layer, so the cost is
// minimal up to that binning.
Rounding round_into_band(const SearchLogRow& from, const LatencyTable& table, const std::string& space_source,
                         float width, double lo_ms, double hi_ms);

struct SearchPlotInfo {
  std::string title, subtitle;
  int64_t warmup_steps = 0;
  double target_ms = 0;       // 0: no target line
  double supernet_ms = 0;
  int64_t steps_per_epoch = 1;
  int64_t decoded_step = -1;  // --decode band: the step whose decisions were returned (-1: the final ones)
};
void write_search_svg(const std::string& path, const std::vector<SearchLogRow>& rows, const SearchPlotInfo& info);

// `arch` is what the search returns; `decoded_at_step` >= 0 when it is a logged step's (LastInBand),
// `rounding` set when it is the final decisions rounded into the band (Round); `final_arch` is the final
// decisions' (else the same as arch).
SearchVerdict search_verdict(const std::vector<SearchLogRow>& rows, int64_t warmup_steps, const Arch& arch,
                             const LatencyTable& table, const SearchConfig& cfg, int64_t decoded_at_step = -1,
                             const Arch* final_arch = nullptr, const Rounding* rounding = nullptr);

}  // namespace spnas
