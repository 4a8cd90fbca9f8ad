#include "nas/latency/profile.h"

#include <algorithm>
#include <memory>

#include "engine/cpu.h"
#include "engine/io.h"
#include "engine/rng.h"
#include "nas/latency/harness.h"
#include "nas/latency/networks.h"
#include "nas/latency/predictor.h"
#include "nas/latency/stats.h"
#include "nas/run.h"
#include "ops/kernels.h"

namespace spnas {

namespace {

const Choice kCandidates[4] = {Choice::K3E3, Choice::K3E6, Choice::K5E3, Choice::K5E6};

// One profiled network: a choice per searchable layer, SE on every searchable layer or on none.
struct Plan {
  std::vector<Choice> choice;
  bool se = false;
  int twin = -1;  // SE plans: the plan without SE
};

// The networks: `rounds` groups of 4; in each group every searchable layer takes each candidate
// once, in an order drawn at random per layer (round 0 of a one-round profile: the uniform
// networks). So every entry is measured `rounds` times, each time between neighbours of random
// candidates, as in the architectures the search decodes. Where the space allows skipping, each
// group has a fifth network: every layer that may be skipped is skipped in one of the five, and the
// others take a random candidate twice. With SE, each network has a twin with SE on every
// searchable layer.
std::vector<Plan> plan_networks(const SearchSpace& space, int context_rounds, bool search_se, uint64_t seed) {
  const int L = space.num_searchable();
  const std::vector<int> sidx = space.searchable_indices();
  std::vector<Plan> plans;
  const int rounds = std::max(1, context_rounds);
  Rng plan_rng(seed + 101);
  bool any_skip = false;
  for (int l = 0; l < L; ++l) any_skip |= space.layers[sidx[l]].skip_allowed;
  const int cols = any_skip ? 5 : 4;
  const Choice options[5] = {Choice::K3E3, Choice::K3E6, Choice::K5E3, Choice::K5E6, Choice::Skip};
  for (int r = 0; r < rounds; ++r) {
    std::vector<std::vector<int>> perm(L);
    for (int l = 0; l < L; ++l) {
      perm[l] = {0, 1, 2, 3};
      if (any_skip) perm[l].push_back(space.layers[sidx[l]].skip_allowed ? 4 : int(plan_rng.below(4)));
      if (rounds > 1)
        for (int i = cols - 1; i > 0; --i) std::swap(perm[l][i], perm[l][plan_rng.below(i + 1)]);
    }
    for (int j = 0; j < cols; ++j) {
      Plan pl;
      for (int l = 0; l < L; ++l) pl.choice.push_back(options[perm[l][j]]);
      plans.push_back(pl);
    }
  }
  if (search_se) {
    const int n = int(plans.size());
    for (int i = 0; i < n; ++i) {
      Plan pl = plans[i];
      pl.se = true;
      pl.twin = i;
      plans.push_back(pl);
    }
  }
  return plans;
}

// The runs of a profile: times[net][piece][rep].
using PieceTimes = std::vector<std::vector<std::vector<double>>>;

// The stem, the fixed layers and the head of a network, as piece indices in that order.
std::vector<int> fixed_pieces(const SearchSpace& space, const PieceNet& net) {
  std::vector<int> f = {0, net.num_pieces() - 1};
  for (size_t i = 0; i < space.layers.size(); ++i)
    if (!space.layers[i].searchable) f.push_back(net.layer_piece()[i]);
  return f;
}

// Calibration. An entry is a piece's statistic (median or lower quantile) averaged over random
// neighbours, but what a table must predict is a whole network's statistic, and that is not the sum
// of its pieces' statistics: noise is right-skewed (a run slowed in one piece is not slowed in the
// others), so a total's statistic exceeds the sum of its pieces', by an amount that depends on what
// the network is made of. The residual of each profiled network without SE (the statistic of its
// per-run totals - fixed - its entries) is fitted by ridge least squares as a constant plus a
// per-candidate cost per layer; the constant goes into the fixed cost, each candidate's term into
// every layer's entry for it. The totals come from the same runs: no extra measurement, and no drift
// between the two. Few networks (context_rounds < 3): only the constant. Returns the 5 terms.
std::vector<double> calibrate_table(LatencyTable& t, const std::vector<Plan>& plans, const PieceTimes& times,
                                    double q) {
  const int L = int(t.layers.size());
  // Columns (weighted_lstsq's layout): [constant, k3-e3, k3-e6, k5-e3, k5-e6] layer counts.
  std::vector<std::vector<double>> X(5);
  std::vector<double> resid;
  for (size_t n = 0; n < plans.size(); ++n) {
    if (plans[n].se) continue;
    const size_t runs = times[n][0].size();
    std::vector<double> total(runs, 0.0);
    for (size_t p = 0; p < times[n].size(); ++p)
      for (size_t r = 0; r < runs; ++r) total[r] += times[n][p][r];
    double row[5] = {1, 0, 0, 0, 0};
    double pred = t.fixed_ms;
    for (int l = 0; l < L; ++l) {
      const Choice ch = plans[n].choice[size_t(l)];
      if (ch == Choice::Skip) continue;
      row[1 + int(ch)] += 1;
      pred += t.layers[size_t(l)].cost(ch);
    }
    for (int j = 0; j < 5; ++j) X[size_t(j)].push_back(row[j]);
    resid.push_back(quantile(total, q) - pred);
  }
  const bool per_candidate = resid.size() >= 10;
  std::vector<int> cols = {0};
  if (per_candidate) {
    cols = {0, 1, 2, 3, 4};
    // Ridge, as one pseudo-row per candidate term (its count 1, residual 0): one layer's worth of
    // shrinkage towards 0.
    for (int j = 1; j < 5; ++j) {
      for (int k = 0; k < 5; ++k) X[size_t(k)].push_back(k == j ? 1.0 : 0.0);
      resid.push_back(0.0);
    }
  }
  const std::vector<double> fit = weighted_lstsq(X, cols, resid, std::vector<double>(resid.size(), 1.0));
  std::vector<double> coef(5, 0.0);
  for (size_t j = 0; j < cols.size(); ++j) coef[size_t(cols[j])] = fit[j];
  t.fixed_calibration_ms = coef[0];
  t.fixed_ms += coef[0];
  for (int k = 0; k < 4; ++k) t.candidate_calibration_ms[k] = coef[size_t(1 + k)];
  for (LayerCost& c : t.layers) {
    double* slot[4] = {&c.k3_e3, &c.k3_e6, &c.k5_e3, &c.k5_e6};
    for (int k = 0; k < 4; ++k) *slot[k] = std::max(1e-6, *slot[k] + coef[size_t(1 + k)]);
  }
  return coef;
}

}  // namespace

LatencyTable profile_space(const ProfileOptions& options) {
  SpaceOptions so;
  so.width = options.width;
  so.input_size = options.input_size;
  SearchSpace s = load_space(options.space, so);
  ProfileResult r = profile_space_full(s, options);
  r.table.space = options.space;
  return r.table;
}

ProfileResult profile_space_full(const SearchSpace& space, const ProfileOptions& opt) {
  check(opt.batch >= 1, "profile", "batch must be >= 1");
  check(opt.threads >= 1, "profile", "threads must be >= 1");
  check(space.num_searchable() > 0, "profile", "space '" + space.name + "' has no searchable layer");
  prepare_backend(opt.backend, opt.training_step, opt.threads);
  auto say = [&](const std::string& m) {
    if (opt.progress) opt.progress(m);
  };
  ProfileResult res;
  auto warn = [&](const std::string& m) {
    res.warnings.push_back(m);
    say("warning: " + m);
  };
  ThreadScope threads(opt.threads);
  ClockScope clock_scope(opt.clock, opt.threads);
  check_quantile(opt.quantile);
  if (!place_threads(opt.backend, opt.threads, opt.pin))
    warn("could not pin the engine's threads to CPUs (timings may move between cores)");

  const int L = space.num_searchable();
  const std::vector<int> sidx = space.searchable_indices();
  const std::vector<Plan> plans = plan_networks(space, opt.context_rounds, opt.search_se, opt.seed);
  Var images = constant(random_images(opt.batch, space.input_size, opt.seed + 7));
  std::vector<std::unique_ptr<PieceNet>> nets;
  for (const Plan& pl : plans)
    nets.push_back(make_piece_net(opt.backend, space, pl.choice, std::vector<bool>(pl.se ? L : 0, true),
                                  images->value, opt.seed));
  std::vector<int> labels = make_labels(opt.batch, space.num_classes);
  Rng rng(opt.seed + 11);
  say("profiling space '" + space.name + "' (width " + fmt(space.width, 2) + ", input " +
      std::to_string(space.input_size) + "): " + std::to_string(nets.size()) + " networks, batch " +
      std::to_string(opt.batch) + ", " + std::to_string(opt.threads) + " thread(s), " +
      (opt.training_step ? "training step" : "inference") + ", backend " + opt.backend + (opt.backend == "spnas" ? std::string(", isa ") + kernels().name : ""));

  // times: undisturbed runs; all_times: every run (the fallback).
  PieceTimes times(nets.size());
  std::vector<std::vector<double>> piece(nets.size());
  for (size_t n = 0; n < nets.size(); ++n) {
    times[n].resize(nets[n]->num_pieces());
    piece[n].resize(nets[n]->num_pieces());
  }
  PieceTimes all_times = times;
  const double t_start = now_seconds();
  LoadMonitor load(opt.threads);
  RoundRobinStats st = round_robin(
      int(nets.size()), repetitions_of(opt),
      [&](int i) { return nets[i]->run(images, labels, opt.training_step, rng, piece[i].data()); },
      [&](int i, bool keep) {
        for (size_t p = 0; p < piece[i].size(); ++p) {
          all_times[i][p].push_back(piece[i][p]);
          if (keep) times[i][p].push_back(piece[i][p]);
        }
      });
  res.load = load.finish(st.disturbed, st.total);
  if (st.fell_back) {
    times = all_times;
    warn("only " + std::to_string(st.clean) + " of " + std::to_string(st.total / int(nets.size())) +
         " runs per network were not preempted by other processes; using every run (the machine is overloaded: "
         "entries are inflated)");
  }
  int reps = int(times[0][0].size());
  for (auto& tn : times) reps = std::min(reps, int(tn[0].size()));
  say("  " + std::to_string(reps) + " repetitions per network in " + fmt(now_seconds() - t_start, 1) + " s (" +
      std::to_string(st.disturbed) + " preempted runs dropped)");
  if (st.disturbed > st.total / 2)
    warn(std::to_string(st.disturbed) + " of " + std::to_string(st.total) +
         " runs were preempted by other processes (dropped): the machine is busy");
  for (const std::string& w : load_warnings(res.load)) warn(w);

  auto stat = [&](size_t n, int p) { return quantile(times[n][size_t(p)], opt.quantile); };  // the entry statistic
  auto spread_of = [&](size_t n, int p) { return relative_spread(times[n][size_t(p)]); };

  LatencyTable& t = res.table;
  t.source = "profile";
  t.space = space.source.empty() ? space.name : space.source;
  t.width = space.width;
  t.input_size = space.input_size;
  t.batch = opt.batch;
  t.threads = opt.threads;
  t.cpu = cpu_info().model_name;
  t.isa = opt.backend == "spnas" ? kernels().name : opt.backend;
  t.mode = opt.training_step ? "training" : "inference";
  t.backend = opt.backend;
  t.clock = opt.clock;
  t.quantile = opt.quantile;

  // Fixed part: stem, fixed layers, head; per network the statistic of their per-run sum.
  double fixed_sum = 0, fixed_spread = 0;
  for (size_t n = 0; n < nets.size(); ++n) {
    const size_t runs = times[n][0].size();
    std::vector<double> sums(runs, 0.0);
    for (int p : fixed_pieces(space, *nets[n]))
      for (size_t r = 0; r < runs; ++r) sums[r] += times[n][size_t(p)][r];
    fixed_sum += quantile(sums, opt.quantile);
    fixed_spread = std::max(fixed_spread, relative_spread(sums));
  }
  t.fixed_ms = fixed_sum / double(nets.size());
  t.fixed_spread = fixed_spread;

  // Entries: per layer and candidate, the mean over the networks that contain it of its statistic.
  int noisy = 0;
  double worst = 0;
  for (int l = 0; l < L; ++l) {
    const LayerSpec& ls = space.layers[sidx[l]];
    LayerCost c;
    c.cin = ls.cin;
    c.cout = ls.cout;
    c.stride = ls.stride;
    c.skip_allowed = ls.skip_allowed;
    c.count = reps;
    // [se][candidate]: sum of statistics, largest spread, measurements
    double sum[2][4] = {}, spread[2][4] = {}, se_extra = 0;
    int cnt[2][4] = {}, se_n = 0;
    for (size_t n = 0; n < nets.size(); ++n) {
      const int p = nets[n]->layer_piece()[sidx[l]];
      if (p < 0) continue;  // skipped in this network
      const int k = int(plans[n].choice[size_t(l)]), e = plans[n].se ? 1 : 0;
      const double m = stat(n, p), sp = spread_of(n, p);
      sum[e][k] += m;
      cnt[e][k]++;
      spread[e][k] = std::max(spread[e][k], sp);
      if (sp > opt.spread_warning) ++noisy;
      worst = std::max(worst, sp);
      if (plans[n].se) {
        se_extra += std::max(0.0, m - stat(size_t(plans[n].twin), p));
        se_n++;
      }
    }
    double* slot[4] = {&c.k3_e3, &c.k3_e6, &c.k5_e3, &c.k5_e6};
    for (int e = 0; e < (opt.search_se ? 2 : 1); ++e)
      for (int k = 0; k < 4; ++k) {
        const double m = sum[e][k] / std::max(1, cnt[e][k]);
        if (e == 0) *slot[k] = m;
        c.spread = std::max(c.spread, spread[e][k]);
        PieceSample s = mbconv_piece(ls, choice_kernel(kCandidates[k]), choice_expansion(kCandidates[k]), e == 1,
                                     opt.batch);
        s.ms = m;
        s.spread = spread[e][k];
        res.samples.push_back(s);
      }
    c.se = se_n ? se_extra / se_n : 0.0;
    t.layers.push_back(c);
  }
  if (opt.calibrate) {
    const std::vector<double> coef = calibrate_table(t, plans, times, opt.quantile);
    say("  calibration: fixed " + fmt(coef[0], 4) + " ms; per layer k3-e3 " + fmt(coef[1], 4) + ", k3-e6 " +
        fmt(coef[2], 4) + ", k5-e3 " + fmt(coef[3], 4) + ", k5-e6 " + fmt(coef[4], 4) + " ms");
  }

  // The fixed pieces as samples: the mean over the networks of their statistic, the largest spread.
  // `which` is a position in fixed_pieces(): 0 the stem, 1 the head, 2 + j the j-th fixed layer.
  auto fixed_sample = [&](PieceSample s, int which) {
    double sum = 0, spread = 0;
    for (size_t n = 0; n < nets.size(); ++n) {
      const int p = fixed_pieces(space, *nets[n])[size_t(which)];
      sum += stat(n, p);
      spread = std::max(spread, spread_of(n, p));
    }
    s.ms = sum / double(nets.size());
    s.spread = spread;
    res.samples.push_back(s);
  };
  fixed_sample(stem_piece(space, opt.batch), 0);
  int fixed_layer = 0;
  for (const LayerSpec& ls : space.layers)
    if (!ls.searchable) fixed_sample(mbconv_piece(ls, ls.kernel, ls.expansion, false, opt.batch), 2 + fixed_layer++);
  fixed_sample(head_piece(space, opt.batch), 1);

  if (noisy > 0)
    warn(std::to_string(noisy) + " of " + std::to_string(L * int(nets.size())) +
         " entries have a spread (p90 - p10) / median above " + fmt(opt.spread_warning, 2) + " (worst " +
         fmt(worst, 2) + "): the machine is noisy; consider more --reps or an idle machine");
  double all_on = t.fixed_ms;
  for (const LayerCost& c : t.layers) all_on += c.k5_e6;
  say("  fixed " + fmt(t.fixed_ms) + " ms, all-k5-e6 network " + fmt(all_on) + " ms");
  return res;
}

}  // namespace spnas
