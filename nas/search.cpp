#include "nas/search.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "engine/checkpoint.h"
#include "engine/optim.h"
#include "engine/threads.h"
#include "ops/ops.h"

namespace spnas {

static std::string csv_header(const std::vector<SuperLayer>& layers) {
  std::string h = "step,epoch,lr,ce,runtime_term,R";
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string p = ",l" + std::to_string(i) + "_";
    h += p + "d_k5" + p + "d_e6" + p + "d_skip" + p + "d_se" + p + "m_k5" + p + "m_e6" + p + "m_skip" + p + "m_se";
  }
  return h;
}

static std::string csv_row(const SearchLogRow& r) {
  std::ostringstream os;
  os.precision(7);
  os << r.step << ',' << r.epoch << ',' << r.lr << ',' << r.ce << ',' << r.runtime_term << ',' << r.R;
  auto opt = [&](float v) {
    os << ',';
    if (!std::isnan(v)) os << v;
  };
  for (size_t i = 0; i < r.d_k5.size(); ++i) {
    opt(r.d_k5[i]), opt(r.d_e6[i]), opt(r.d_skip[i]), opt(r.d_se[i]);
    opt(r.m_k5[i]), opt(r.m_e6[i]), opt(r.m_skip[i]), opt(r.m_se[i]);
  }
  return os.str();
}

std::vector<SearchLogRow> read_search_csv(const std::string& path, int64_t up_to_step) {
  std::vector<SearchLogRow> rows;
  std::ifstream in(path);
  if (!in) return rows;
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::string cur;
    for (char c : line) {
      if (c == ',') f.push_back(cur), cur.clear();
      else cur += c;
    }
    f.push_back(cur);
    if (f.size() < 6 || (f.size() - 6) % 8 != 0) break;  // a torn last line
    auto num = [](const std::string& s) { return s.empty() ? NAN : std::strtod(s.c_str(), nullptr); };
    SearchLogRow r;
    r.step = std::atoll(f[0].c_str());
    if (r.step >= up_to_step) break;
    r.epoch = num(f[1]), r.lr = num(f[2]), r.ce = num(f[3]), r.runtime_term = num(f[4]), r.R = num(f[5]);
    for (size_t i = 6; i + 8 <= f.size(); i += 8) {
      r.d_k5.push_back(num(f[i])), r.d_e6.push_back(num(f[i + 1])), r.d_skip.push_back(num(f[i + 2]));
      r.d_se.push_back(num(f[i + 3])), r.m_k5.push_back(num(f[i + 4])), r.m_e6.push_back(num(f[i + 5]));
      r.m_skip.push_back(num(f[i + 6])), r.m_se.push_back(num(f[i + 7]));
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

SearchResult run_search(const SearchConfig& cfg, const LatencyTable& table) {
  const double t0 = now_seconds();
  SearchResult res;
  install_stop_handlers();
  make_dirs(cfg.out_dir);
  res.csv_path = cfg.out_dir + "/search_log.csv";
  res.svg_path = cfg.out_dir + "/search_plot.svg";
  res.arch_path = cfg.out_dir + "/arch.json";
  res.checkpoint_path = cfg.out_dir + "/search.ckpt";

  // Data: train (and a held-out split for bi-level).
  Splits data = open_dataset(cfg.data, cfg.bilevel ? cfg.val_fraction : 0.0, cfg.seed);
  if (cfg.bilevel && !data.val) throw std::runtime_error("search: bi-level needs a validation split (--val-fraction)");
  SpaceOptions so = cfg.space_options;
  if (!so.num_classes) so.num_classes = data.train->num_classes();
  SearchSpace space = load_space(cfg.space, so);
  if (data.train->channels() != 3)
    throw std::runtime_error("search: the networks take RGB images; dataset '" + data.train->name() + "' has " +
                             std::to_string(data.train->channels()) + " channel(s)");
  check_table_matches(table, space);
  AugmentConfig aug = cfg.augment ? default_train_augment(*data.train) : default_eval_augment(*data.train);
  aug.out_size = space.input_size;
  Loader loader(data.train, cfg.batch, true, aug, cfg.seed, cfg.workers);
  std::unique_ptr<Loader> val_loader;
  if (cfg.bilevel) val_loader = std::make_unique<Loader>(data.val, cfg.batch, true, aug, cfg.seed + 1, cfg.workers);

  SupernetConfig ncfg;
  ncfg.search_se = cfg.search_se;
  ncfg.squared_norm = cfg.squared_norm;
  ncfg.threshold_margin = cfg.threshold_margin;
  ncfg.bn_momentum = cfg.bn_momentum;
  ncfg.seed = cfg.seed;
  Supernet net(space, ncfg);

  const int64_t spe = loader.batches_per_epoch();
  const int64_t total = std::max<int64_t>(1, int64_t(cfg.epochs * spe + 0.5));
  const int64_t warmup = int64_t(cfg.warmup_epochs * spe + 0.5);
  LrConfig lrc = cfg.lr;
  if (lrc.lr <= 0) lrc.lr = 0.016f * cfg.batch / 256.0f;
  Schedule schedule = make_schedule(lrc, spe, total);

  // One optimizer over weights and thresholds (one-level); bi-level: two, each blind to the other's group.
  std::unique_ptr<Optimizer> opt = make_optimizer(cfg.optimizer, net.params(), cfg.weight_decay);
  opt->set_group("thresholds", GroupConfig{cfg.threshold_lr_mult, 1.0f, !cfg.bilevel});
  std::unique_ptr<Optimizer> topt;
  if (cfg.bilevel) {
    topt = make_optimizer(cfg.optimizer, net.params(), cfg.weight_decay);
    topt->set_group("weights", GroupConfig{1.0f, 1.0f, false});
    topt->set_group("bn", GroupConfig{1.0f, 1.0f, false});
    topt->set_group("thresholds", GroupConfig{cfg.threshold_lr_mult, 1.0f, true});
  }
  Rng rng(cfg.seed ^ 0x5eedULL);

  nlohmann::json meta = {{"kind", "spnas-search"}, {"space", cfg.space}, {"width", space.width},
                         {"batch", cfg.batch}, {"epochs", cfg.epochs}, {"seed", cfg.seed}};
  auto make_ck = [&]() {
    Checkpoint ck;
    ck.params = &net.params();
    ck.optimizer = opt.get();
    ck.rngs = {{"search", &rng}};
    ck.metadata = meta.dump();
    return ck;
  };
  auto save = [&](int64_t step) {
    Checkpoint ck = make_ck();
    ck.step = step;
    Loader::Position p = loader.position();
    ck.blobs["loader"] = std::to_string(p.epoch) + " " + std::to_string(p.batch);
    if (topt) {
      // The threshold optimizer's slots travel as a blob-encoded second checkpoint.
      Checkpoint t;
      t.params = &net.params();
      t.optimizer = topt.get();
      ck.blobs["threshold_optimizer"] = encode_checkpoint(t);
      Loader::Position vp = val_loader->position();
      ck.blobs["val_loader"] = std::to_string(vp.epoch) + " " + std::to_string(vp.batch);
    }
    save_checkpoint(res.checkpoint_path, ck);
  };

  int64_t step = 0;
  std::vector<SearchLogRow> rows;
  if (cfg.resume) {
    Checkpoint ck = make_ck();
    load_checkpoint(res.checkpoint_path, ck);
    step = ck.step;
    auto pos = [&](const char* key) {
      auto it = ck.blobs.find(key);
      if (it == ck.blobs.end()) throw std::runtime_error("search: checkpoint '" + res.checkpoint_path + "' has no " + key + " position");
      Loader::Position p{};
      std::istringstream(it->second) >> p.epoch >> p.batch;
      return p;
    };
    loader.seek(pos("loader"));
    if (topt) {
      auto it = ck.blobs.find("threshold_optimizer");
      if (it == ck.blobs.end()) throw std::runtime_error("search: checkpoint has no threshold optimizer (was it a one-level search?)");
      CheckpointData td = decode_checkpoint(it->second, res.checkpoint_path + " (threshold optimizer)");
      topt->load_state(td.optimizer);
      val_loader->seek(pos("val_loader"));
    }
    rows = read_search_csv(res.csv_path, step);
    if (!cfg.quiet) std::fprintf(stderr, "search: resumed from %s at step %lld\n", res.checkpoint_path.c_str(), (long long)step);
  }
  {
    // (Re)write the log: header plus the rows that precede the starting step.
    std::ofstream csv(res.csv_path, std::ios::trunc);
    if (!csv) throw std::runtime_error("search: cannot write '" + res.csv_path + "'");
    csv << csv_header(net.layers()) << '\n';
    for (const auto& r : rows) csv << csv_row(r) << '\n';
  }
  std::ofstream csv(res.csv_path, std::ios::app);

  const int64_t end = cfg.max_steps >= 0 ? std::min(total, cfg.max_steps) : total;
  Progress progress("search", total, cfg.quiet);
  Tensor images, vimages;
  std::vector<int> labels, vlabels;
  auto next_batch = [](Loader& ld, Tensor& im, std::vector<int>& lb) {
    if (!ld.next(im, lb) && !ld.next(im, lb)) throw std::runtime_error("search: the training split yields no batch (batch size larger than the dataset?)");
  };
  double ce_value = 0;
  const int64_t first_step = step;
  for (; step < end; ++step) {
    const bool in_warmup = step < warmup;
    const float lr = schedule(step);
    ForwardOptions fo;
    fo.training = true;
    fo.indicator_drop = in_warmup ? cfg.indicator_drop : 0.0f;
    fo.rng = &rng;

    next_batch(loader, images, labels);
    op_profile_mark();  // loading the batch is not the first op's time
    Var logits = net.forward(constant(images), fo);
    Var ce = softmax_cross_entropy(logits, labels, cfg.label_smoothing);
    Var R = runtime_model(table, net.indicators(), cfg.runtime_mode);
    Var rt = runtime_loss(R, cfg.runtime_loss, cfg.lambda, cfg.target_ms);
    Var loss = (in_warmup || cfg.bilevel) ? ce : add(ce, rt);
    ce_value = ce->value.item();
    if (!std::isfinite(loss->value.item()))
      throw std::runtime_error("search: loss is not finite at step " + std::to_string(step) +
                               " (lower the learning rate); the last checkpoint is intact");
    SearchLogRow row;
    row.step = step;
    row.epoch = double(step) / spe;
    row.lr = lr;
    row.ce = ce_value;
    row.runtime_term = rt->value.item();
    row.R = R->value.item();
    for (const LayerIndicators& d : net.indicators()) {
      row.d_k5.push_back(d.m_k5 >= 0), row.d_e6.push_back(d.m_e6 >= 0);
      row.d_skip.push_back(d.has_skip ? float(d.m_skip >= 0) : NAN);
      row.d_se.push_back(d.has_se ? float(d.m_se >= 0) : NAN);
      row.m_k5.push_back(d.m_k5), row.m_e6.push_back(d.m_e6);
      row.m_skip.push_back(d.has_skip ? d.m_skip : NAN);
      row.m_se.push_back(d.has_se ? d.m_se : NAN);
    }
    net.params().zero_grad();
    backward(loss);
    opt->step(lr);

    if (cfg.bilevel && !in_warmup) {
      // Thresholds on held-out data: CE + runtime term, only the thresholds move.
      next_batch(*val_loader, vimages, vlabels);
      ForwardOptions vo = fo;
      Var vlogits = net.forward(constant(vimages), vo);
      Var vR = runtime_model(table, net.indicators(), cfg.runtime_mode);
      Var vloss = add(softmax_cross_entropy(vlogits, vlabels, cfg.label_smoothing),
                      runtime_loss(vR, cfg.runtime_loss, cfg.lambda, cfg.target_ms));
      net.params().zero_grad();
      backward(vloss);
      topt->step(lr);
    }

    csv << csv_row(row) << '\n';
    rows.push_back(std::move(row));
    char status[96];
    std::snprintf(status, sizeof status, "ce %.3f R %.3f ms%s", ce_value, rows.back().R, in_warmup ? " (warm-up)" : "");
    progress.update(step + 1, status);
    if (cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0) {
      csv.flush();
      save(step + 1);
    }
    if (stop_requested()) {
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
  res.steps = step;
  res.finished = step >= total;
  res.arch = net.decode(cfg.space);
  // The architecture file is self-contained: it records the input size and class count searched for.
  res.arch.input_size = space.input_size;
  res.arch.num_classes = space.num_classes;
  save_arch(res.arch_path, res.arch);
  res.predicted_ms = predict_runtime(table, res.arch);
  res.supernet_ms = runtime_all_on(table, cfg.runtime_mode, cfg.search_se);
  res.final_ce = ce_value;
  write_search_svg(res.svg_path, rows, "Single-Path NAS search: " + space.name + " (" + arch_summary(res.arch) + ")");
  res.seconds = now_seconds() - t0;
  if (stop_requested() && !cfg.quiet)
    std::fprintf(stderr, "search: stopped at step %lld; checkpoint %s (continue with --resume)\n", (long long)step,
                 res.checkpoint_path.c_str());
  return res;
}

// ---- SVG plot --------------------------------------------------------------------------------

static std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

static void line_panel(std::ostringstream& svg, const std::vector<SearchLogRow>& rows, double (*get)(const SearchLogRow&),
                       const char* label, const char* colour, int x0, int y0, int w, int h) {
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& r : rows) {
    double v = get(r);
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (hi - lo < 1e-9) hi = lo + 1e-3 + std::fabs(lo) * 1e-3;
  svg << "<rect x='" << x0 << "' y='" << y0 << "' width='" << w << "' height='" << h
      << "' fill='none' stroke='#999'/>\n";
  svg << "<text x='" << x0 << "' y='" << y0 - 6 << "' font-size='13'>" << label << " (" << lo << " .. " << hi
      << ")</text>\n<polyline fill='none' stroke='" << colour << "' stroke-width='1.2' points='";
  const size_t n = rows.size();
  const size_t stride = std::max<size_t>(1, n / 1500);
  for (size_t i = 0; i < n; i += stride) {
    double v = get(rows[i]);
    if (!std::isfinite(v)) continue;
    double x = x0 + (n > 1 ? double(i) / (n - 1) : 0.5) * w;
    double y = y0 + h - (v - lo) / (hi - lo) * h;
    svg << x << ',' << y << ' ';
  }
  svg << "'/>\n";
}

void write_search_svg(const std::string& path, const std::vector<SearchLogRow>& rows, const std::string& title) {
  const int W = 900, pw = 820, ph = 130, x0 = 60;
  const size_t L = rows.empty() ? 0 : rows.front().d_k5.size();
  const int cell = 14;
  const int H = 60 + 2 * (ph + 40) + int(L) * cell + 90;
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
      << "' font-family='sans-serif'>\n<rect width='100%' height='100%' fill='white'/>\n";
  svg << "<text x='" << x0 << "' y='24' font-size='15'>" << esc(title) << "</text>\n";
  line_panel(svg, rows, [](const SearchLogRow& r) { return r.R; }, "runtime R (ms)", "#c0392b", x0, 50, pw, ph);
  line_panel(svg, rows, [](const SearchLogRow& r) { return r.ce; }, "cross-entropy", "#2c3e50", x0, 50 + ph + 40, pw, ph);
  // Decisions: one row per searchable layer, colour = decoded choice at that step.
  const int y0 = 50 + 2 * (ph + 40);
  svg << "<text x='" << x0 << "' y='" << y0 - 6 << "' font-size='13'>per-layer decision over steps</text>\n";
  const char* colours[5] = {"#aed6f1", "#2e86c1", "#f9e79f", "#d68910", "#e5e7e9"};  // 3x3-3 3x3-6 5x5-3 5x5-6 skip
  const size_t n = rows.size();
  const int cols = int(std::min<size_t>(n, 400));
  for (size_t l = 0; l < L; ++l) {
    svg << "<text x='" << x0 - 8 << "' y='" << y0 + l * cell + 11 << "' font-size='10' text-anchor='end'>" << l
        << "</text>\n";
    for (int c = 0; c < cols; ++c) {
      const SearchLogRow& r = rows[size_t(c) * n / cols];
      bool skip = !std::isnan(r.d_skip[l]) && r.d_skip[l] < 0.5f;
      Choice ch = decode_choice(r.d_k5[l] > 0.5f, r.d_e6[l] > 0.5f, !skip);
      double x = x0 + double(c) * pw / cols;
      svg << "<rect x='" << x << "' y='" << y0 + l * cell << "' width='" << double(pw) / cols + 0.5
          << "' height='" << cell - 1 << "' fill='" << colours[int(ch)] << "'/>\n";
    }
  }
  const int ly = y0 + int(L) * cell + 24;
  for (int k = 0; k < 5; ++k) {
    svg << "<rect x='" << x0 + k * 130 << "' y='" << ly << "' width='14' height='14' fill='" << colours[k]
        << "' stroke='#777'/><text x='" << x0 + k * 130 + 20 << "' y='" << ly + 12 << "' font-size='12'>"
        << choice_name(Choice(k)) << "</text>\n";
  }
  if (n)
    svg << "<text x='" << x0 << "' y='" << ly + 40 << "' font-size='12'>steps 0 .. " << rows.back().step << "</text>\n";
  svg << "</svg>\n";
  write_file_atomic(path, svg.str());
}

}  // namespace spnas
