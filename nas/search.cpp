#include "nas/search.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "engine/checkpoint.h"
#include "engine/io.h"
#include "engine/optim.h"
#include "engine/threads.h"
#include "ops/ops.h"

namespace spnas {

// ---- the log ---------------------------------------------------------------------------------------

namespace {

const char* kCsvHead = "step,epoch,lr,ce,runtime_term,R,R_decoded,val_accuracy";
constexpr size_t kCsvFixed = 8;  // columns before the per-layer ones

std::string csv_header(size_t layers) {
  std::string h = kCsvHead;
  for (size_t i = 0; i < layers; ++i) {
    const std::string p = ",l" + std::to_string(i) + "_";
    h += p + "d_k5" + p + "d_e6" + p + "d_skip" + p + "d_se" + p + "m_k5" + p + "m_e6" + p + "m_skip" + p + "m_se";
  }
  return h;
}

std::string csv_row(const SearchLogRow& r) {
  std::ostringstream os;
  os.precision(7);
  auto opt = [&](double v) {
    os << ',';
    if (!std::isnan(v)) os << v;
  };
  os << r.step << ',' << r.epoch << ',' << r.lr << ',' << r.ce << ',' << r.runtime_term << ',' << r.R << ','
     << r.R_decoded;
  opt(r.val_accuracy);
  for (size_t i = 0; i < r.d_k5.size(); ++i) {
    opt(r.d_k5[i]), opt(r.d_e6[i]), opt(r.d_skip[i]), opt(r.d_se[i]);
    opt(r.m_k5[i]), opt(r.m_e6[i]), opt(r.m_skip[i]), opt(r.m_se[i]);
  }
  return os.str();
}

}  // namespace

std::vector<SearchLogRow> read_search_csv(const std::string& path, int64_t up_to_step, size_t layers) {
  std::vector<SearchLogRow> rows;
  std::ifstream in(path);
  if (!in) return rows;
  std::string line;
  std::getline(in, line);
  if (line.rfind(kCsvHead, 0) != 0)
    throw std::runtime_error("search log '" + path + "' does not start with the header '" + kCsvHead +
                             "' (another program's file, or an older version's log)");
  // Rows of another length would be read past their end by the verdict and the plot.
  if (line != csv_header(layers))
    throw std::runtime_error("search log '" + path + "' is not the log of a search with " + std::to_string(layers) +
                             " searchable layers");
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::string cur;
    for (char c : line) {
      if (c == ',') f.push_back(cur), cur.clear();
      else cur += c;
    }
    f.push_back(cur);
    if (f.size() != kCsvFixed + 8 * layers) break;  // a torn last line
    auto num = [](const std::string& s) { return s.empty() ? NAN : std::strtod(s.c_str(), nullptr); };
    SearchLogRow r;
    r.step = std::atoll(f[0].c_str());
    if (r.step >= up_to_step) break;
    r.epoch = num(f[1]), r.lr = num(f[2]), r.ce = num(f[3]), r.runtime_term = num(f[4]), r.R = num(f[5]);
    r.R_decoded = num(f[6]), r.val_accuracy = num(f[7]);
    for (size_t i = kCsvFixed; i + 8 <= f.size(); i += 8) {
      r.d_k5.push_back(num(f[i])), r.d_e6.push_back(num(f[i + 1])), r.d_skip.push_back(num(f[i + 2]));
      r.d_se.push_back(num(f[i + 3])), r.m_k5.push_back(num(f[i + 4])), r.m_e6.push_back(num(f[i + 5]));
      r.m_skip.push_back(num(f[i + 6])), r.m_se.push_back(num(f[i + 7]));
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

// A row's decisions and margins from the supernet's indicators (no dropping).
static void record_decisions(SearchLogRow& row, const std::vector<LayerIndicators>& indicators) {
  for (const LayerIndicators& d : indicators) {
    row.d_k5.push_back(d.m_k5 >= 0), row.d_e6.push_back(d.m_e6 >= 0);
    row.d_skip.push_back(d.has_skip ? float(d.m_skip >= 0) : NAN);
    row.d_se.push_back(d.has_se ? float(d.m_se >= 0) : NAN);
    row.m_k5.push_back(d.m_k5), row.m_e6.push_back(d.m_e6);
    row.m_skip.push_back(d.has_skip ? d.m_skip : NAN);
    row.m_se.push_back(d.has_se ? d.m_se : NAN);
  }
}

Choice logged_choice(const SearchLogRow& r, size_t l) {
  const bool skip = !std::isnan(r.d_skip[l]) && r.d_skip[l] < 0.5f;
  return decode_choice(r.d_k5[l] > 0.5f, r.d_e6[l] > 0.5f, !skip);
}

Arch logged_arch(const SearchLogRow& r, const std::string& space_source, float width) {
  Arch a;
  a.space = space_source;
  a.width = width;
  bool any_se = false;
  for (size_t l = 0; l < r.d_k5.size(); ++l) {
    a.layers.push_back(logged_choice(r, l));
    const bool has_se = !std::isnan(r.d_se[l]);
    a.se.push_back(has_se && r.d_se[l] > 0.5f && a.layers.back() != Choice::Skip);
    any_se |= has_se;
  }
  if (!any_se) a.se.clear();
  return a;
}

int64_t last_row_in_band(const std::vector<SearchLogRow>& rows, int64_t first_row, const LatencyTable& table,
                         const std::string& space_source, float width, double lo_ms, double hi_ms) {
  for (int64_t i = int64_t(rows.size()) - 1; i >= std::max<int64_t>(first_row, 0); --i) {
    // From the decisions, not the logged R_decoded: the log's text is rounded.
    const double R = predict_runtime(table, logged_arch(rows[size_t(i)], space_source, width));
    if (R >= lo_ms && R <= hi_ms) return i;
  }
  return -1;
}

// The indicators of searchable layer l that must flip for `from`'s decisions to become choice c (with
// SE on or off where searched): the cost of an option and, for the one chosen, what the verdict lists.
static std::vector<DecisionFlip> flips_to(const SearchLogRow& from, size_t l, Choice c, bool se) {
  std::vector<DecisionFlip> f;
  const int li = int(l);
  const bool kept = std::isnan(from.d_skip[l]) || from.d_skip[l] > 0.5f;
  if (kept != (c != Choice::Skip)) f.push_back({li, "skip", std::fabs(from.m_skip[l])});
  if (c == Choice::Skip) return f;
  if ((choice_kernel(c) == 5) != (from.d_k5[l] > 0.5f)) f.push_back({li, "kernel", std::fabs(from.m_k5[l])});
  if ((choice_expansion(c) == 6) != (from.d_e6[l] > 0.5f)) f.push_back({li, "expansion", std::fabs(from.m_e6[l])});
  if (!std::isnan(from.d_se[l]) && se != (from.d_se[l] > 0.5f)) f.push_back({li, "se", std::fabs(from.m_se[l])});
  return f;
}

Rounding round_into_band(const SearchLogRow& from, const LatencyTable& table, const std::string& space_source,
                         float width, double lo_ms, double hi_ms) {
  const size_t L = from.d_k5.size();
  check(L == table.layers.size(), "round_into_band",
        "the decisions have " + std::to_string(L) + " layers but the table has " + std::to_string(table.layers.size()));
  // A layer's options: each choice it allows (with SE on or off where searched), what it costs in
  // flipped margins from the current decisions and what the table says it takes.
  struct Option {
    Choice c;
    bool se;
    double ms, cost;
  };
  std::vector<std::vector<Option>> options(L);
  double most = table.fixed_ms;
  bool any_se = false;
  for (size_t l = 0; l < L; ++l) {
    const bool has_se = !std::isnan(from.d_se[l]);
    any_se |= has_se;
    auto add = [&](Choice c, bool se) {
      double cost = 0;
      for (const DecisionFlip& f : flips_to(from, l, c, se)) cost += f.margin;
      const double ms = choice_runtime(table.layers[l], c, RuntimeMode::Table) + (se ? table.layers[l].se : 0);
      check(ms >= 0, "round_into_band", "the table's layer " + std::to_string(l) + " has a negative time");
      options[l].push_back({c, se, ms, cost});
    };
    if (!std::isnan(from.d_skip[l])) add(Choice::Skip, false);
    for (Choice c : {Choice::K3E3, Choice::K3E6, Choice::K5E3, Choice::K5E6}) {
      add(c, false);
      if (has_se) add(c, true);
    }
    double top = 0;
    for (const Option& o : options[l]) top = std::max(top, o.ms);
    most += top;
  }
  Rounding out;
  if (!(hi_ms >= lo_ms) || hi_ms < table.fixed_ms) return out;
  // States: R (without the fixed part) in bins; per bin the cheapest way there and its exact R. Times
  // are >= 0, so a partial sum above hi never comes back into the band.
  const double span = std::min(hi_ms, most) - table.fixed_ms;
  const double h = std::max({(hi_ms - lo_ms) / (8.0 * double(std::max<size_t>(L, 1))), span / 2e5, 1e-12});
  const size_t bins = size_t(std::ceil(span / h)) + 2 + L;  // + L: each layer's rounding may add half a bin
  std::vector<double> cost(bins, INFINITY), R(bins, 0), next_cost(bins), next_R(bins);
  std::vector<std::vector<int32_t>> from_bin(L, std::vector<int32_t>(bins, -1));
  std::vector<std::vector<uint8_t>> via(L, std::vector<uint8_t>(bins, 0));
  cost[0] = 0;
  for (size_t l = 0; l < L; ++l) {
    std::fill(next_cost.begin(), next_cost.end(), INFINITY);
    for (size_t b = 0; b < bins; ++b) {
      if (!std::isfinite(cost[b])) continue;
      for (size_t o = 0; o < options[l].size(); ++o) {
        const Option& op = options[l][o];
        const double r = R[b] + op.ms;
        if (table.fixed_ms + r > hi_ms) continue;
        const size_t nb = b + size_t(std::llround(op.ms / h));
        if (nb >= bins) continue;
        const double c = cost[b] + op.cost;
        if (c < next_cost[nb] || (c == next_cost[nb] && r > next_R[nb])) {
          next_cost[nb] = c, next_R[nb] = r;
          from_bin[l][nb] = int32_t(b), via[l][nb] = uint8_t(o);
        }
      }
    }
    cost.swap(next_cost), R.swap(next_R);
  }
  int64_t best = -1;
  for (size_t b = 0; b < bins; ++b) {
    if (!std::isfinite(cost[b]) || table.fixed_ms + R[b] < lo_ms) continue;
    if (best < 0 || cost[b] < cost[size_t(best)] || (cost[b] == cost[size_t(best)] && R[b] > R[size_t(best)]))
      best = int64_t(b);
  }
  if (best < 0) return out;
  out.found = true;
  out.cost = cost[size_t(best)];
  out.arch.space = space_source;
  out.arch.width = width;
  out.arch.layers.assign(L, Choice::K5E6);
  std::vector<bool> se(L, false);
  for (size_t l = L, b = size_t(best); l-- > 0;) {
    const Option& op = options[l][via[l][b]];
    out.arch.layers[l] = op.c, se[l] = op.se;
    b = size_t(from_bin[l][b]);
  }
  if (any_se) out.arch.se = se;
  out.R_ms = predict_runtime(table, out.arch);
  for (size_t l = 0; l < L; ++l)
    for (const DecisionFlip& f : flips_to(from, l, out.arch.layers[l], se[l])) out.flips.push_back(f);
  return out;
}

// ---- checks before the work ------------------------------------------------------------------------

namespace {

// What a resume must match (the table by its content: a re-profiled table is another search).
nlohmann::json config_record(const SearchConfig& c, const LatencyTable& t) {
  std::string table;
  for (const LayerCost& l : t.layers)
    table += fmt(l.k3_e3, 6) + "," + fmt(l.k3_e6, 6) + "," + fmt(l.k5_e3, 6) + "," + fmt(l.k5_e6, 6) + "," + fmt(l.se, 6) + ";";
  nlohmann::json r = training_record(c);
  r.update({{"space", c.space},
            {"width", c.space_options.width},
            {"input_size", c.space_options.input_size},
            {"num_classes", c.space_options.num_classes},
            {"warmup_epochs", c.warmup_epochs},
            {"drop", c.indicator_drop},
            {"threshold_lr_mult", c.threshold_lr_mult},
            {"lambda", c.lambda},
            {"runtime_loss", int(c.runtime_loss)},
            {"target_ms", c.target_ms},
            {"runtime_model", int(c.runtime_mode)},
            {"se", c.search_se},
            {"squared_norm", c.squared_norm},
            {"threshold_margin", c.threshold_margin},
            {"bilevel", c.bilevel},
            {"table", "fixed " + fmt(t.fixed_ms, 6) + "; " + table}});
  // Absent when at the default: older records stay comparable.
  if (c.freeze_thresholds_in_warmup) r["warmup_thresholds"] = "freeze";
  if (c.threshold_momentum >= 0) r["threshold_momentum"] = c.threshold_momentum;
  return r;
}

}  // namespace

std::vector<std::string> check_search_config(const SearchConfig& cfg, const LatencyTable& table) {
  std::vector<std::string> w;
  if (cfg.runtime_loss == RuntimeLoss::Target && !(cfg.target_ms > 0))
    throw std::runtime_error("search: --runtime-loss target needs --target-ms");
  if (!(cfg.threshold_momentum < 1))
    throw std::runtime_error("search: --threshold-momentum must be below 1, got " + fmt(cfg.threshold_momentum, 3));
  if (cfg.decode != DecodeRule::Final && !(cfg.target_ms > 0))
    throw std::runtime_error(std::string("search: --decode ") + (cfg.decode == DecodeRule::Round ? "round" : "band") +
                             " returns an architecture within --decode-band of the target: it needs --target-ms");
  if (!(cfg.decode_band > 0 && cfg.decode_band <= 1))
    throw std::runtime_error("search: --decode-band must be in (0, 1], got " + fmt(cfg.decode_band, 3));
  if (cfg.bilevel && !(cfg.val_fraction > 0))
    throw std::runtime_error("search: --bilevel trains the thresholds on a held-out split: --val-fraction must be > 0");
  if (cfg.warmup_epochs >= cfg.epochs)
    w.push_back("the warm-up (" + fmt(cfg.warmup_epochs, 2) + " epochs) lasts the whole search (" + fmt(cfg.epochs, 2) +
                " epochs): the runtime term never acts and the thresholds only see the cross-entropy");
  if (cfg.lambda == 0) w.push_back("--lambda 0: the search has no runtime term");
  const double supernet = runtime_all_on(table, cfg.runtime_mode, cfg.search_se);
  const double smallest = table_runtime_bounds(table, load_space(cfg.space, cfg.space_options)).min_ms;
  if (cfg.target_ms > 0) {
    if (cfg.runtime_loss != RuntimeLoss::Target)
      w.push_back("--target-ms " + fmt(cfg.target_ms, 3) + " is only reported against: the loss uses the " +
                  (cfg.runtime_loss == RuntimeLoss::Log ? "log" : "linear") +
                  " form (add --runtime-loss target to search for the target)");
    if (cfg.target_ms >= supernet)
      w.push_back("the target " + fmt(cfg.target_ms, 3) + " ms is at or above the supernet's R (" + fmt(supernet, 3) +
                  " ms): every architecture meets it" +
                  (cfg.runtime_loss == RuntimeLoss::Target ? ", so the target term is zero throughout" : ""));
    if (cfg.target_ms < smallest)
      w.push_back("the target " + fmt(cfg.target_ms, 3) + " ms is below the smallest network the table allows (" +
                  fmt(smallest, 3) + " ms): no architecture can meet it");
  }
  return w;
}

// ---- verdict -------------------------------------------------------------------------------------

// --decode band's band, one definition for the rule and the verdict.
namespace {
struct DecodeBand {
  double lo, hi;
  explicit DecodeBand(const SearchConfig& cfg)
      : lo((1 - double(cfg.decode_band)) * double(cfg.target_ms)), hi(cfg.target_ms) {}
  bool contains(double R) const { return R >= lo && R <= hi; }
};
}  // namespace

SearchVerdict search_verdict(const std::vector<SearchLogRow>& rows, int64_t warmup_steps, const Arch& arch,
                             const LatencyTable& table, const SearchConfig& cfg, int64_t decoded_at_step,
                             const Arch* final_arch, const Rounding* rounding) {
  SearchVerdict v;
  if (rounding) v.rounded_flips = int(rounding->flips.size());
  v.layers = int(arch.layers.size());
  v.predicted_ms = predict_runtime(table, arch);
  v.decoded_at_step = decoded_at_step;
  v.final_ms = final_arch ? predict_runtime(table, *final_arch) : v.predicted_ms;
  v.supernet_ms = runtime_all_on(table, RuntimeMode::Table, cfg.search_se);
  v.is_supernet = std::all_of(arch.layers.begin(), arch.layers.end(), [](Choice c) { return c == Choice::K5E6; }) &&
                  (arch.se.empty() || std::all_of(arch.se.begin(), arch.se.end(), [](bool b) { return b; }));
  const int64_t after = int64_t(rows.size()) - warmup_steps;
  if (after > 0 && warmup_steps > 0) {
    const SearchLogRow& w = rows[size_t(warmup_steps - 1)];
    for (size_t l = 0; l < arch.layers.size(); ++l) v.changed_after_warmup += logged_choice(w, l) != arch.layers[l];
  } else if (after > 0) {
    v.changed_after_warmup = int(std::count_if(arch.layers.begin(), arch.layers.end(), [](Choice c) { return c != Choice::K5E6; }));
  }
  for (size_t i = size_t(std::max<int64_t>(warmup_steps, 1)); i < rows.size(); ++i)
    for (size_t l = 0; l < arch.layers.size(); ++l) v.flips_after_warmup += logged_choice(rows[i - 1], l) != logged_choice(rows[i], l);
  v.smallest_margin = INFINITY;
  if (!rows.empty())
    for (const auto* m : {&rows.back().m_k5, &rows.back().m_e6, &rows.back().m_skip, &rows.back().m_se})
      for (float x : *m)
        if (std::isfinite(x)) v.smallest_margin = std::min(v.smallest_margin, double(std::fabs(x)));
  v.has_target = cfg.target_ms > 0;
  v.target_ms = cfg.target_ms;
  v.target_met = v.has_target && v.predicted_ms <= cfg.target_ms;

  int counts[5] = {0, 0, 0, 0, 0};
  for (Choice c : arch.layers) ++counts[int(c)];
  std::string mix;
  for (Choice c : {Choice::K3E3, Choice::K3E6, Choice::K5E3, Choice::K5E6, Choice::Skip})
    if (counts[int(c)]) mix += (mix.empty() ? "" : ", ") + std::to_string(counts[int(c)]) + "x " + choice_name(c);
  v.lines.push_back("decisions: " + std::to_string(v.changed_after_warmup) + " of " + std::to_string(v.layers) +
                    " layers changed after the warm-up (" + std::to_string(v.flips_after_warmup) + " flips); result " + mix +
                    (v.is_supernet ? " - the supernet itself" : ""));
  v.lines.push_back("runtime: " + fmt(v.predicted_ms, 3) + " ms predicted by the table, the supernet " +
                    fmt(v.supernet_ms, 3) + " ms (" + fmt(100 * (v.predicted_ms / v.supernet_ms - 1), 1) + " %)");
  if (cfg.decode != DecodeRule::Final) {
    const DecodeBand b(cfg);
    const std::string band = "[" + fmt(b.lo, 3) + ", " + fmt(b.hi, 3) + "] ms";
    const std::string rule = cfg.decode == DecodeRule::Round ? "decoded (--decode round): " : "decoded (--decode band): ";
    if (decoded_at_step >= 0 && decoded_at_step < int64_t(rows.size())) {
      v.lines.push_back(rule + "the decisions held at step " + std::to_string(rows[size_t(decoded_at_step)].step) +
                        " (epoch " + fmt(rows[size_t(decoded_at_step)].epoch, 2) + "), the last in the band " + band +
                        "; the final ones predict " + fmt(v.final_ms, 3) + " ms");
    } else if (rounding) {
      std::string flips;
      for (const DecisionFlip& f : rounding->flips)
        flips += (flips.empty() ? "" : ", ") + std::string("layer ") + std::to_string(f.layer) + " " + f.indicator +
                 " (margin " + fmt(f.margin, 4) + ")";
      v.lines.push_back(rule + "no step after the warm-up was in the band " + band + ": the final decisions (" +
                        fmt(v.final_ms, 3) + " ms) rounded into it, " + std::to_string(rounding->flips.size()) +
                        " flipped (summed margin " + fmt(rounding->cost, 4) + "): " + flips);
    } else if (b.contains(v.predicted_ms)) {
      v.lines.push_back(rule + "the final decisions, in the band " + band);
    } else {
      v.lines.push_back(rule + "no step after the warm-up was in the band " + band + ": the final decisions" +
                        (cfg.decode == DecodeRule::Round ? " (rounding found no architecture in it)" : ""));
    }
  }
  if (v.has_target)
    v.lines.push_back("target " + fmt(cfg.target_ms, 3) + " ms: " +
                      (v.target_met ? "met (R/T = " + fmt(v.predicted_ms / cfg.target_ms, 3) + ")"
                                    : "missed by " + fmt(100 * (v.predicted_ms / cfg.target_ms - 1), 1) + " %"));
  if (after <= 0) {
    v.lines.push_back("the search ended within its warm-up: the runtime term never acted (more --epochs, or a shorter "
                      "--warmup-epochs)");
  } else if (v.changed_after_warmup == 0 || v.is_supernet) {
    const double m = v.smallest_margin;
    v.lines.push_back(
        "nothing was decided after the warm-up: the closest threshold is " + fmt(m, 2) +
        " from its norm, where the straight-through gradient sigma'(" + fmt(m, 1) + ") = " +
        fmt(std::exp(-m) / ((1 + std::exp(-m)) * (1 + std::exp(-m))), 6) +
        " barely moves it. Start the thresholds near the norms (--threshold-margin 1), let them move faster "
        "(--threshold-lr-mult 10), or search longer; `spnas tune` chooses lambda for a target "
        "(nas/README.md: why a full-width search may not move)");
  } else if (v.has_target && !v.target_met) {
    v.lines.push_back("to reach the target: a larger --lambda (now " + fmt(cfg.lambda, 4) + ")" +
                      (cfg.runtime_loss == RuntimeLoss::Target ? "" : ", or --runtime-loss target") +
                      ", or `spnas tune`, which searches lambda for the target");
  }
  return v;
}

// ---- the search ----------------------------------------------------------------------------------

namespace {

// The search on this rank (every rank of a data-parallel run runs it; rank 0 writes the files).
SearchResult search_on_this_rank(const SearchConfig& cfg, const LatencyTable& table) {
  const double t0 = now_seconds();
  // The result is assembled at the end, from what the run wrote.
  std::vector<std::string> warnings = check_search_config(cfg, table);
  RunFolder folder(cfg.out_dir, "search", is_writer());
  install_stop_handlers();
  struct Paths {
    std::string csv, svg, arch, checkpoint;
  } const files{folder.file("search_log.csv"), folder.file("search_plot.svg"), folder.file("arch.json"),
                folder.file("search.ckpt")};

  // Data: train, and the held-out split (monitoring; bi-level: the thresholds' data).
  Splits data = open_dataset(cfg.data, cfg.val_fraction, cfg.seed);
  if (data.train->num_classes() < 2)
    throw std::runtime_error("search: dataset '" + data.train->name() + "' has " +
                             std::to_string(data.train->num_classes()) + " class(es); a classifier needs at least 2");
  SpaceOptions so = cfg.space_options;
  if (!so.num_classes) so.num_classes = data.train->num_classes();
  if (so.num_classes != data.train->num_classes())
    throw std::runtime_error("search: --num-classes " + std::to_string(so.num_classes) + " but dataset '" +
                             data.train->name() + "' has " + std::to_string(data.train->num_classes()) + " classes");
  so.input_channels = data.train->channels();
  SearchSpace space = load_space(cfg.space, so);
  check_table_matches(table, space);
  SupernetConfig ncfg;
  ncfg.search_se = cfg.search_se;
  ncfg.squared_norm = cfg.squared_norm;
  ncfg.threshold_margin = cfg.threshold_margin;
  ncfg.bn_momentum = cfg.bn_momentum;
  ncfg.seed = cfg.seed;
  const int slots = cfg.optimizer == "sgd" ? 1 : 2;
  check_memory(supernet_cost(space, ncfg).training_bytes(cfg.batch, cfg.bilevel ? 2 * slots : slots, false),
               memory_limit_bytes(cfg.memory_limit_gib), "search: the supernet at batch " + std::to_string(cfg.batch));

  AugmentConfig aug = cfg.augment ? default_train_augment(*data.train) : default_eval_augment(*data.train);
  aug.out_size = space.input_size;
  Loader loader(data.train, cfg.batch, true, aug, cfg.seed, cfg.workers, true, batch_shard());
  std::unique_ptr<Loader> val_loader;
  if (cfg.bilevel)
    val_loader = std::make_unique<Loader>(data.val, cfg.batch, true, aug, cfg.seed + 1, cfg.workers, true, batch_shard());

  Supernet net(space, ncfg);
  const int64_t spe = loader.batches_per_epoch();
  const int64_t total = std::max<int64_t>(1, int64_t(cfg.epochs * spe + 0.5));
  const int64_t warmup = int64_t(cfg.warmup_epochs * spe + 0.5);
  const int64_t monitor_every = cfg.monitor_every > 0 ? cfg.monitor_every : std::max<int64_t>(1, spe / 8);
  LrConfig lrc = cfg.lr;
  if (lrc.lr <= 0) lrc.lr = default_learning_rate(cfg.optimizer, cfg.batch);
  Schedule schedule = make_schedule(lrc, spe, total);

  // One optimizer over weights and thresholds (one-level); bi-level: two, each blind to the other's group.
  std::unique_ptr<Optimizer> opt = make_optimizer(cfg.optimizer, net.params(), cfg.weight_decay);
  const GroupConfig thresholds{cfg.threshold_lr_mult, 1.0f, !cfg.bilevel, cfg.threshold_momentum};
  opt->set_group("thresholds", thresholds);
  std::unique_ptr<Optimizer> topt;
  if (cfg.bilevel) {
    topt = make_optimizer(cfg.optimizer, net.params(), cfg.weight_decay);
    topt->set_group("weights", GroupConfig{1.0f, 1.0f, false});
    topt->set_group("bn", GroupConfig{1.0f, 1.0f, false});
    GroupConfig trained = thresholds;  // this optimizer trains only them
    trained.trainable = true;
    topt->set_group("thresholds", trained);
  }
  Rng rng(rank_seed(cfg.seed ^ 0x5eedULL));
  RankRng rank_rng("search", rng);
  DataParallelStep dp(net.params(), cfg.parallel);

  const nlohmann::json config = with_parallel_record(config_record(cfg, table), cfg.parallel);
  const nlohmann::json meta = {{"kind", "spnas-search"}, {"config", config}};
  auto make_ck = [&] { return rank_checkpoint(net.params(), opt.get(), nullptr, rank_rng, meta.dump()); };
  auto save = [&](int64_t step) {
    Checkpoint ck = make_ck();
    ck.step = step;
    put_loader_position(ck, "loader", loader);
    if (topt) {
      // The threshold optimizer's slots travel as a blob-encoded second checkpoint.
      Checkpoint t;
      t.params = &net.params();
      t.optimizer = topt.get();
      ck.blobs["threshold_optimizer"] = encode_checkpoint(t);
      put_loader_position(ck, "val_loader", *val_loader);
    }
    save_checkpoint_from_rank0(files.checkpoint, ck, rank_rng);
  };

  int64_t step = 0;
  std::vector<SearchLogRow> rows;
  if (cfg.resume) {
    const CheckpointData recorded = read_checkpoint(files.checkpoint);
    const nlohmann::json m = parse_json(recorded.metadata, "search checkpoint", files.checkpoint);
    if (m.value("kind", "") != "spnas-search")
      throw std::runtime_error("search: '" + files.checkpoint + "' is not a search checkpoint (kind '" +
                               m.value("kind", "?") + "')");
    for (const std::string& change : compare_run_config(m.value("config", nlohmann::json::object()), config, {},
                                                        cfg.allow_config_change, files.checkpoint))
      folder.log_change("search: resuming with a changed setting (--allow-config-change): " + change);
    Checkpoint ck = make_ck();
    load_checkpoint(files.checkpoint, ck);
    step = ck.step;
    seek_loader(loader, ck, "loader", files.checkpoint, "search");
    if (topt) {
      auto it = ck.blobs.find("threshold_optimizer");
      if (it == ck.blobs.end()) throw std::runtime_error("search: checkpoint has no threshold optimizer (was it a one-level search?)");
      CheckpointData td = decode_checkpoint(it->second, files.checkpoint + " (threshold optimizer)");
      topt->load_state(td.optimizer);
      seek_loader(*val_loader, ck, "val_loader", files.checkpoint, "search");
    }
    rows = read_search_csv(files.csv, step, net.layers().size());
    if (int64_t(rows.size()) != step)
      throw std::runtime_error("search: the log '" + files.csv + "' holds " + std::to_string(rows.size()) +
                               " steps but the checkpoint is at step " + std::to_string(step) +
                               " (the log was truncated or deleted): restore it, or start afresh in another --out");
    if (!cfg.quiet) std::fprintf(stderr, "search: resumed from %s at step %lld\n", files.checkpoint.c_str(), (long long)step);
  }
  {
    // (Re)write the log: header plus the rows that precede the starting step.
    std::string text = csv_header(net.layers().size()) + "\n";
    for (const auto& r : rows) text += csv_row(r) + "\n";
    if (is_writer()) write_file_atomic(files.csv, text);
  }
  std::ofstream csv;
  if (is_writer()) csv.open(files.csv, std::ios::app);
  // Warnings print even with --quiet (which hides progress only); once, from the rank that writes.
  if (is_writer())
    for (const std::string& w : warnings) std::fprintf(stderr, "search: warning: %s\n", w.c_str());

  // The supernet's accuracy with its current decisions on a few held-out batches (no dropping).
  auto monitor = [&]() -> double {
    if (!data.val) return NAN;
    NoGrad ng;
    AugmentConfig ea = default_eval_augment(*data.val);
    ea.out_size = space.input_size;
    // The same seeded draw every time: the same images, from every class (a split's own order may
    // be sorted by class, as an image folder's is).
    Loader vl(data.val, cfg.batch, true, ea, cfg.seed + 7, 1, false);
    Tensor im;
    std::vector<int> lb;
    int64_t correct = 0, seen = 0;
    ForwardOptions fo;
    fo.training = false;
    for (int b = 0; b < cfg.monitor_batches && vl.next(im, lb); ++b) {
      Var logits = net.forward(constant(im), fo);
      const int64_t N = logits->value.dim(0), K = logits->value.dim(1);
      for (int64_t n = 0; n < N; ++n) {
        const float* l = logits->value.data() + n * K;
        correct += int64_t(std::max_element(l, l + K) - l) == lb[size_t(n)];
      }
      seen += N;
    }
    return seen ? double(correct) / seen : NAN;
  };

  const int64_t end = cfg.max_steps >= 0 ? std::min(total, cfg.max_steps) : total;
  Progress progress("search", step, end, cfg.batch, cfg.quiet);
  DivergenceCheck diverged{space.num_classes, files.checkpoint, "search"};
  Tensor images, vimages;
  std::vector<int> labels, vlabels;
  auto next_batch = [](Loader& ld, Tensor& im, std::vector<int>& lb) {
    if (!ld.next(im, lb) && !ld.next(im, lb)) throw std::runtime_error("search: the training split yields no batch (batch size larger than the dataset?)");
  };
  auto sum_sq = [&](bool thresholds) {
    double s = 0;
    for (const Param& p : net.params().params()) {
      if ((p.group == "thresholds") != thresholds) continue;
      const float* v = p.var->value.data();
      for (int64_t i = 0; i < p.var->value.numel(); ++i) s += double(v[i]) * v[i];
    }
    return s;
  };
  double ce_value = 0, last_val = NAN;
  const int64_t first_step = step;
  for (; step < end; ++step) {
    const bool in_warmup = step < warmup;
    const float lr = schedule(step);
    ForwardOptions fo;
    fo.training = true;
    fo.indicator_drop = in_warmup ? cfg.indicator_drop : 0.0f;
    fo.rng = &rng;
    if (cfg.freeze_thresholds_in_warmup && !cfg.bilevel) {
      GroupConfig now = thresholds;
      now.trainable = !in_warmup;
      opt->set_group("thresholds", now);
    }

    next_batch(loader, images, labels);
    op_profile_mark();  // loading the batch is not the first op's time
    Var logits = net.forward(constant(images), fo);
    Var ce = softmax_cross_entropy(logits, labels, cfg.label_smoothing);
    Var R = runtime_model(table, net.indicators(), cfg.runtime_mode);
    Var rt = runtime_loss(R, cfg.runtime_loss, cfg.lambda, cfg.target_ms);
    const bool term_in_loss = !in_warmup;  // one-level: in this loss; bi-level: in the thresholds' loss
    Var loss = (in_warmup || cfg.bilevel) ? ce : ce + rt;
    ce_value = dp.mean(ce->value.item());
    diverged.check_loss(step, ce_value, term_in_loss ? rt->value.item() : 0.0, cfg.lambda);
    SearchLogRow row;
    row.step = step;
    row.epoch = double(step) / spe;
    row.lr = lr;
    row.ce = ce_value;
    row.runtime_term = term_in_loss ? rt->value.item() : 0.0;
    row.R = R->value.item();
    // The log and the decided architecture read the indicators without dropping: during the warm-up
    // the forward pass's own are dropped at random, which is regularisation, not a decision.
    record_decisions(row, net.current_indicators());
    row.R_decoded = predict_runtime(table, logged_arch(row, cfg.space, space.width));
    net.params().zero_grad();
    dp.backward(loss);
    opt->step(lr);

    if (cfg.bilevel && !in_warmup) {
      // Thresholds on held-out data: CE + runtime term, only the thresholds move.
      next_batch(*val_loader, vimages, vlabels);
      ForwardOptions vo = fo;
      Var vlogits = net.forward(constant(vimages), vo);
      Var vrt = runtime_loss(runtime_model(table, net.indicators(), cfg.runtime_mode), cfg.runtime_loss, cfg.lambda,
                             cfg.target_ms);
      Var vloss = softmax_cross_entropy(vlogits, vlabels, cfg.label_smoothing) + vrt;
      row.runtime_term = vrt->value.item();
      diverged.check_loss(step, ce_value, row.runtime_term, cfg.lambda);
      net.params().zero_grad();
      dp.backward(vloss);
      topt->step(lr);
    }
    diverged.check_params(step, sum_sq(false), sum_sq(true));
    if ((step + 1) % monitor_every == 0 || step + 1 == end) {
      last_val = monitor();
      row.val_accuracy = last_val;
    }

    csv << csv_row(row) << '\n';
    rows.push_back(std::move(row));
    char status[160];
    std::snprintf(status, sizeof status, "ce %.3f  R %.3f ms (decided %.3f)%s%s", ce_value, rows.back().R,
                  rows.back().R_decoded, std::isnan(last_val) ? "" : ("  val " + fmt(100 * last_val, 1) + " %").c_str(),
                  in_warmup ? "  warm-up" : "");
    progress.update(step + 1, lr, status);
    if (cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0) {
      csv.flush();
      save(step + 1);
    }
    if (dp.stop_requested()) {
      ++step;
      break;
    }
  }
  progress.finish();
  if (op_profile())
    std::fprintf(stderr, "op profile (SPNAS_PROFILE), %lld steps:\n%s", (long long)(step - first_step),
                 op_profile_report(int(step - first_step)).c_str());
  csv.flush();
  save(step);
  throw_if_interrupted("search", step, files.checkpoint, " (no architecture was written)");
  const Arch final_arch = net.decode(cfg.space);
  Arch arch = final_arch;
  int64_t decoded_at = -1;
  Rounding rounding;
  if (cfg.decode != DecodeRule::Final) {
    const DecodeBand b(cfg);
    // The final decisions come after every logged row: they win when they are in the band themselves.
    if (!b.contains(predict_runtime(table, final_arch))) {
      decoded_at = last_row_in_band(rows, warmup, table, cfg.space, space.width, b.lo, b.hi);
      if (decoded_at >= 0) {
        arch = logged_arch(rows[size_t(decoded_at)], cfg.space, space.width);
      } else if (cfg.decode == DecodeRule::Round) {
        SearchLogRow last;  // the final decisions and their margins
        record_decisions(last, net.current_indicators());
        rounding = round_into_band(last, table, cfg.space, space.width, b.lo, b.hi);
        if (rounding.found) arch = rounding.arch;
      }
    }
  }
  // The architecture file is self-contained: it records the input size, classes and channels searched for.
  arch.input_size = space.input_size;
  arch.num_classes = space.num_classes;
  arch.input_channels = space.input_channels;
  if (is_writer()) save_arch(files.arch, arch);
  SearchPlotInfo plot;
  plot.title = "Single-Path NAS search: " + space.name + " at width " + fmt(space.width, 2) + ", " +
               std::to_string(step) + " steps";
  plot.subtitle = "found: " + arch_summary(arch) +
                  (rounding.found ? " (the final decisions, " + std::to_string(rounding.flips.size()) + " flipped into the band)" : "");
  plot.warmup_steps = warmup;
  plot.target_ms = cfg.target_ms;
  plot.supernet_ms = runtime_all_on(table, RuntimeMode::Table, cfg.search_se);
  plot.steps_per_epoch = spe;
  plot.decoded_step = decoded_at >= 0 ? rows[size_t(decoded_at)].step : -1;
  if (is_writer()) write_search_svg(files.svg, rows, plot);
  SearchVerdict verdict =
      search_verdict(rows, warmup, arch, table, cfg, decoded_at, &final_arch, rounding.found ? &rounding : nullptr);

  SearchResult res;
  res.warnings = std::move(warnings);
  res.csv_path = files.csv, res.svg_path = files.svg, res.arch_path = files.arch, res.checkpoint_path = files.checkpoint;
  res.steps = step;
  res.finished = step >= total;
  res.arch = std::move(arch);
  res.predicted_ms = verdict.predicted_ms;
  res.supernet_ms = plot.supernet_ms;
  res.final_ce = ce_value;
  res.final_val_accuracy = std::isnan(last_val) ? -1 : last_val;
  res.verdict = std::move(verdict);
  res.seconds = now_seconds() - t0;
  return res;
}

}  // namespace

SearchResult run_search(const SearchConfig& cfg, const LatencyTable& table) {
  SearchConfig mine = cfg;
  mine.quiet = cfg.quiet || !is_writer();  // one progress line: rank 0's
  return run_data_parallel("search", cfg.parallel, cfg.batch, cfg.quiet,
                           [&] { return search_on_this_rank(mine, table); });
}

// ---- SVG plot --------------------------------------------------------------------------------------

namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

// Round tick positions covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.
std::vector<double> ticks(double lo, double hi, int want = 5) {
  const double raw = (hi - lo) / want, mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) t.push_back(std::fabs(v) < 1e-12 ? 0 : v);
  return t;
}

std::string num_label(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

// One chart area: maps steps (x) and a value range (y) to pixels and draws its frame and axes.
struct Chart {
  double x0, y0, w, h, steps, lo, hi;
  double X(double step) const { return x0 + (steps > 0 ? step / steps : 0.5) * w; }
  double Y(double v) const { return y0 + h - (v - lo) / (hi - lo) * h; }
};

Chart chart_for(double x0, double y0, double w, double h, double steps, double lo, double hi) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi - lo < 1e-9) hi = lo + 1e-3 + std::fabs(lo) * 1e-2;
  const double pad = 0.06 * (hi - lo);
  return {x0, y0, w, h, steps, lo - pad, hi + pad};
}

void axes(std::ostringstream& svg, const Chart& c, const std::string& ylabel, int64_t spe, bool xlabels) {
  svg << "<rect x='" << c.x0 << "' y='" << c.y0 << "' width='" << c.w << "' height='" << c.h
      << "' fill='none' stroke='#888'/>\n";
  for (double v : ticks(c.lo, c.hi)) {
    svg << "<line x1='" << c.x0 - 4 << "' x2='" << c.x0 + c.w << "' y1='" << c.Y(v) << "' y2='" << c.Y(v)
        << "' stroke='#eee'/><text x='" << c.x0 - 7 << "' y='" << c.Y(v) + 4
        << "' font-size='11' text-anchor='end'>" << num_label(v) << "</text>\n";
  }
  svg << "<text transform='translate(" << c.x0 - 46 << "," << c.y0 + c.h / 2
      << ") rotate(-90)' font-size='12' text-anchor='middle'>" << esc(ylabel) << "</text>\n";
  const double epochs = c.steps / std::max<int64_t>(1, spe);
  for (double e : ticks(0, std::max(epochs, 1e-3), 8)) {
    const double x = c.X(e * spe);
    svg << "<line x1='" << x << "' x2='" << x << "' y1='" << c.y0 + c.h << "' y2='" << c.y0 + c.h + 4
        << "' stroke='#888'/>\n";
    if (xlabels)
      svg << "<text x='" << x << "' y='" << c.y0 + c.h + 16 << "' font-size='11' text-anchor='middle'>" << num_label(e)
          << "</text>\n";
  }
}

void polyline(std::ostringstream& svg, const Chart& c, const std::vector<SearchLogRow>& rows,
              double (*get)(const SearchLogRow&), const char* colour, double width, const char* extra = "") {
  svg << "<polyline fill='none' stroke='" << colour << "' stroke-width='" << width << "' " << extra << " points='";
  const size_t stride = std::max<size_t>(1, rows.size() / 1500);
  for (size_t i = 0; i < rows.size(); i += stride) {
    const double v = get(rows[i]);
    if (std::isfinite(v)) svg << c.X(double(rows[i].step)) << ',' << c.Y(v) << ' ';
  }
  svg << "'/>\n";
}

void hline(std::ostringstream& svg, const Chart& c, double v, const char* colour, const std::string& label) {
  if (!(v >= c.lo && v <= c.hi)) return;
  svg << "<line x1='" << c.x0 << "' x2='" << c.x0 + c.w << "' y1='" << c.Y(v) << "' y2='" << c.Y(v) << "' stroke='"
      << colour << "' stroke-dasharray='6,4'/><text x='" << c.x0 + c.w - 4 << "' y='" << c.Y(v) - 4
      << "' font-size='11' text-anchor='end' fill='" << colour << "'>" << esc(label) << "</text>\n";
}

}  // namespace

void write_search_svg(const std::string& path, const std::vector<SearchLogRow>& rows, const SearchPlotInfo& info) {
  const double W = 980, x0 = 80, pw = 800, ph = 170;
  const size_t L = rows.empty() ? 0 : rows.front().d_k5.size();
  const double cell = 14, top = 64;
  const double y_r = top + 24, y_ce = y_r + ph + 60, y_dec = y_ce + ph + 60;
  const double H = y_dec + L * cell + 80;
  const double steps = rows.empty() ? 1 : double(rows.back().step + 1);
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
      << "' font-family='sans-serif'>\n<rect width='100%' height='100%' fill='white'/>\n";
  svg << "<text x='" << x0 << "' y='24' font-size='15'>" << esc(info.title) << "</text>\n";
  if (!info.subtitle.empty())
    svg << "<text x='" << x0 << "' y='44' font-size='11' fill='#444'>" << esc(info.subtitle) << "</text>\n";

  // 1. Runtime: what the term saw (dropped indicators) and the decoded architecture's R.
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& r : rows)
    for (double v : {r.R, r.R_decoded})
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (info.target_ms > 0) lo = std::min(lo, info.target_ms), hi = std::max(hi, info.target_ms);
  Chart cr = chart_for(x0, y_r, pw, ph, steps, lo, hi);
  svg << "<text x='" << x0 << "' y='" << y_r - 8 << "' font-size='13'>runtime R: decoded architecture (dark), as the "
      << "runtime term saw it with dropped indicators (light)</text>\n";
  axes(svg, cr, "R (ms)", info.steps_per_epoch, false);
  polyline(svg, cr, rows, [](const SearchLogRow& r) { return r.R; }, "#f1948a", 0.8);
  polyline(svg, cr, rows, [](const SearchLogRow& r) { return r.R_decoded; }, "#922b21", 1.6);
  if (info.target_ms > 0) hline(svg, cr, info.target_ms, "#1e8449", "target " + fmt(info.target_ms, 3) + " ms");
  if (info.supernet_ms > 0) hline(svg, cr, info.supernet_ms, "#7f8c8d", "supernet " + fmt(info.supernet_ms, 3) + " ms");

  // 2. Cross-entropy (left axis) and the monitored accuracy (right axis, %).
  lo = INFINITY, hi = -INFINITY;
  for (const auto& r : rows)
    if (std::isfinite(r.ce)) lo = std::min(lo, r.ce), hi = std::max(hi, r.ce);
  Chart cc = chart_for(x0, y_ce, pw, ph, steps, lo, hi);
  svg << "<text x='" << x0 << "' y='" << y_ce - 8 << "' font-size='13'>training cross-entropy (dark) and the "
      << "supernet's held-out accuracy with its current decisions (blue, right axis)</text>\n";
  axes(svg, cc, "cross-entropy", info.steps_per_epoch, true);
  polyline(svg, cc, rows, [](const SearchLogRow& r) { return r.ce; }, "#2c3e50", 0.8);
  Chart ca{x0, y_ce, pw, ph, steps, 0, 100};
  for (double v : ticks(0, 100))
    svg << "<text x='" << x0 + pw + 7 << "' y='" << ca.Y(v) + 4 << "' font-size='11' fill='#2471a3'>" << num_label(v)
        << "</text>\n";
  svg << "<text transform='translate(" << x0 + pw + 44 << "," << y_ce + ph / 2
      << ") rotate(90)' font-size='12' text-anchor='middle' fill='#2471a3'>held-out accuracy (%)</text>\n";
  std::vector<SearchLogRow> acc;
  for (const auto& r : rows)
    if (std::isfinite(r.val_accuracy)) acc.push_back(r), acc.back().val_accuracy *= 100;
  polyline(svg, ca, acc, [](const SearchLogRow& r) { return r.val_accuracy; }, "#2471a3", 1.8);
  for (const auto& r : acc)
    svg << "<circle cx='" << ca.X(double(r.step)) << "' cy='" << ca.Y(r.val_accuracy) << "' r='2.2' fill='#2471a3'/>\n";
  svg << "<text x='" << x0 + pw / 2 << "' y='" << y_ce + ph + 34 << "' font-size='12' text-anchor='middle'>epochs</text>\n";

  // 3. Decisions per layer; warm-up cells faded (indicators dropped at random there, so they flicker).
  svg << "<text x='" << x0 << "' y='" << y_dec - 8 << "' font-size='13'>decoded choice of each searchable layer "
      << "(faded: warm-up, where random indicator dropping makes decisions flicker)</text>\n";
  const char* colours[5] = {"#aed6f1", "#2e86c1", "#f9e79f", "#d68910", "#d5d8dc"};  // 3x3-3 3x3-6 5x5-3 5x5-6 skip
  const size_t n = rows.size();
  const size_t cols = std::min<size_t>(n, 400);
  for (size_t l = 0; l < L; ++l) {
    svg << "<text x='" << x0 - 8 << "' y='" << y_dec + l * cell + 11 << "' font-size='10' text-anchor='end'>layer " << l
        << "</text>\n";
    for (size_t c = 0; c < cols; ++c) {
      const SearchLogRow& r = rows[c * n / cols];
      const double xa = x0 + double(c) * pw / cols;
      svg << "<rect x='" << xa << "' y='" << y_dec + l * cell << "' width='" << pw / double(cols) + 0.4
          << "' height='" << cell - 1 << "' fill='" << colours[int(logged_choice(r, l))] << "'"
          << (r.step < info.warmup_steps ? " fill-opacity='0.35'" : "") << "/>\n";
    }
  }
  // The end of the warm-up, across all three panels.
  if (info.warmup_steps > 0 && info.warmup_steps < steps) {
    const double xw = cr.X(double(info.warmup_steps));
    svg << "<line x1='" << xw << "' x2='" << xw << "' y1='" << y_r << "' y2='" << y_dec + L * cell
        << "' stroke='#555' stroke-dasharray='3,3'/><text x='" << xw + 4 << "' y='" << y_r + 12
        << "' font-size='11' fill='#555'>end of warm-up</text>\n";
  }
  // --decode band: the step whose decisions arch.json holds.
  if (info.decoded_step >= 0 && info.decoded_step < steps) {
    const double xd = cr.X(double(info.decoded_step));
    svg << "<line x1='" << xd << "' x2='" << xd << "' y1='" << y_r << "' y2='" << y_dec + L * cell
        << "' stroke='#1e8449' stroke-width='1.4'/><text x='" << xd + 4 << "' y='" << y_r + 26
        << "' font-size='11' fill='#1e8449'>decoded here (last in the band)</text>\n";
  }
  const double ly = y_dec + L * cell + 22;
  for (int k = 0; k < 5; ++k)
    svg << "<rect x='" << x0 + k * 120 << "' y='" << ly << "' width='14' height='14' fill='" << colours[k]
        << "' stroke='#777'/><text x='" << x0 + k * 120 + 20 << "' y='" << ly + 12 << "' font-size='12'>"
        << choice_name(Choice(k)) << "</text>\n";
  svg << "<text x='" << x0 << "' y='" << ly + 38 << "' font-size='11' fill='#555'>steps 0 .. " << (n ? rows.back().step : 0)
      << ", " << info.steps_per_epoch << " steps per epoch</text>\n";
  svg << "</svg>\n";
  write_file_atomic(path, svg.str());
}

}  // namespace spnas
