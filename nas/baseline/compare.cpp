#include "nas/baseline/compare.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/checkpoint.h"
#include "engine/process.h"
#include "engine/rng.h"
#include "engine/io.h"
#include "nas/run.h"
#include "nas/runtime.h"

namespace spnas {

namespace {

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Everything that decides what a training learns, for the protocol check and compare.json.
nlohmann::json protocol_json(const CompareConfig& cfg) {
  const TrainConfig& t = cfg.train;
  return {{"data", t.data.kind + (t.data.path.empty() ? "" : ":" + t.data.path)},
          {"augment", t.augment},
          {"batch", t.batch},
          {"epochs", t.epochs},
          {"lr", {{"schedule", t.lr.kind}, {"lr", t.lr.lr}, {"decay_rate", t.lr.decay_rate},
                  {"decay_epochs", t.lr.decay_epochs}, {"warmup_epochs", t.lr.warmup_epochs}}},
          {"optimizer", t.optimizer},
          {"weight_decay", t.weight_decay},
          {"label_smoothing", t.label_smoothing},
          {"ema_decay", t.ema_decay},
          {"bn_momentum", t.bn_momentum},
          {"dropout", t.dropout},
          {"max_steps", t.max_steps},
          {"val_fraction", cfg.val_fraction}};
}

// The same protocol for every run of an output folder: a rerun with other options would mix results.
void check_protocol(const CompareConfig& cfg) {
  const std::string path = cfg.out_dir + "/protocol.json";
  const nlohmann::json now = protocol_json(cfg);
  if (file_exists(path)) {
    const nlohmann::json before = parse_json(read_text_file(path, "compare"), "compare protocol", path);
    for (auto it = now.begin(); it != now.end(); ++it)
      if (!before.contains(it.key()) || before[it.key()] != it.value())
        throw std::runtime_error("compare: '" + path + "' records another training protocol: \"" + it.key() + "\" was " +
                                 (before.contains(it.key()) ? before[it.key()].dump() : "absent") + ", now " +
                                 it.value().dump() + " (give the same options, or another --out)");
    return;
  }
  write_file_atomic(path, now.dump(2) + "\n");
}

std::vector<std::string> random_files(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw std::runtime_error("compare: --random-dir '" + dir + "' is not a folder");
  std::vector<std::string> files;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("random_", 0) == 0 && e.path().extension() == ".json") files.push_back(e.path().string());
  }
  if (ec) throw std::runtime_error("compare: cannot list '" + dir + "': " + ec.message());
  if (files.empty()) throw std::runtime_error("compare: '" + dir + "' has no random_*.json (make them with `spnas random`)");
  std::sort(files.begin(), files.end());
  return files;
}

std::string table_path_of(const CompareConfig& cfg) {
  if (!cfg.table_path.empty()) return cfg.table_path;
  const std::string summary = cfg.random_dir + "/summary.json";
  if (!cfg.random_dir.empty() && file_exists(summary)) {
    const nlohmann::json j = parse_json(read_text_file(summary, "compare"), "random summary", summary);
    if (j.contains("table") && j["table"].is_string()) return j["table"].get<std::string>();
  }
  throw std::runtime_error("compare: a latency table is needed for R: --lut FILE (or a --random-dir whose summary.json "
                           "names the table `spnas random --lut` used)");
}

ArchRecord describe_arch(const std::string& name, const std::string& path, bool random, const LatencyTable& table) {
  ArchRecord a;
  a.name = name;
  a.path = path;
  a.random = random;
  a.arch = load_arch(path);
  NoGrad no_grad;  // built only to count parameters and multiply-adds
  ChildNet net(a.arch);
  check_table_matches(table, net.space());
  a.params = net.params().count();
  a.macs = net.macs();
  a.runtime_ms = predict_runtime(table, a.arch, RuntimeMode::Table);
  return a;
}

// Reads DIR/result.json into `r` if it exists; checks that it is this architecture and seed.
void read_result(RunRecord& r, const ArchRecord& a) {
  const std::string path = r.dir + "/result.json";
  r.done = file_exists(path);
  if (!r.done) return;
  const nlohmann::json j = parse_json(read_text_file(path, "compare"), "training result", path);
  try {
    const Arch trained = parse_arch(j.at("arch").dump(), path);
    if (trained.layers != a.arch.layers || trained.width != a.arch.width)
      throw std::runtime_error("it is for " + arch_summary(trained) + " (width " + fmt(trained.width, 2) +
                               "), not for '" + a.path + "': " + arch_summary(a.arch) + "; use another --out");
    if (j.at("seed").get<int>() != r.seed)
      throw std::runtime_error("it is for seed " + j.at("seed").dump() + ", not " + std::to_string(r.seed));
    if (!j.contains("val")) throw std::runtime_error("it has no validation accuracy (trained without a held-out split)");
    r.val_accuracy = j.at("val").at("accuracy").get<double>();
    r.test_accuracy = j.at("test").at("accuracy").get<double>();
    r.steps = j.at("steps").get<int64_t>();
    r.seconds = j.at("seconds").get<double>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("compare: '" + path + "': a field is missing or has the wrong type: " + e.what());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("compare: '" + path + "': " + e.what());
  }
}

std::string run_name(const ArchRecord& a, const RunRecord& r) { return a.name + " seed " + std::to_string(r.seed); }

std::string run_line(const ArchRecord& a, const RunRecord& r) {
  return run_name(a, r) + ": val " + fmt(100 * r.val_accuracy, 2) + " %, test " + fmt(100 * r.test_accuracy, 2) +
         " % (" + fmt(r.seconds, 0) + " s)";
}

double quantile_sorted(const std::vector<double>& v, double q) {
  const double pos = q * double(v.size() - 1);
  const size_t i = size_t(pos);
  const double f = pos - double(i);
  return i + 1 < v.size() ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / double(v.size());
}

// Mean of len(v) draws from v with replacement.
double resampled_mean(const std::vector<double>& v, Rng& rng) {
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += v[rng.below(v.size())];
  return s / double(v.size());
}

std::string pm(const MeanStd& m) {
  if (m.n == 0) return "-";
  return fmt(100 * m.mean, 2) + " +- " + fmt(100 * m.std, 2);
}

// A figure that may be undefined (NaN): "n/a".
std::string figure(double v, int prec) { return std::isnan(v) ? "n/a" : fmt(v, prec); }
std::string signed_pct(double v, int prec) { return (v >= 0 ? "+" : "") + figure(v, prec); }

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
  return o;
}

// Tick positions for [lo, hi]: steps of 1, 2 or 5 times a power of ten, about `count` of them.
std::vector<double> nice_ticks(double lo, double hi, int count) {
  const double raw = (hi - lo) / count;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * p;
  for (double m : {1.0, 2.0, 5.0})
    if (raw <= m * p) {
      step = m * p;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) t.push_back(std::abs(v) < 1e-12 ? 0 : v);
  return t;
}

}  // namespace

MeanStd mean_std(const std::vector<double>& v) {
  MeanStd m;
  m.n = int(v.size());
  m.mean = mean_of(v);
  if (m.n > 1) {
    double ss = 0;
    for (double x : v) ss += (x - m.mean) * (x - m.mean);
    m.std = std::sqrt(ss / (m.n - 1));
  }
  return m;
}

Improvement relative_improvement(const std::vector<double>& searched, const std::vector<std::vector<double>>& random,
                                 int bootstrap, uint64_t seed) {
  if (searched.empty() || random.empty()) throw std::runtime_error("relative_improvement: no searched or no random accuracies");
  std::vector<double> arch_means;
  for (const std::vector<double>& r : random) {
    if (r.empty()) throw std::runtime_error("relative_improvement: a random architecture has no accuracy");
    arch_means.push_back(mean_of(r));
  }
  const double s = mean_of(searched), base = mean_of(arch_means);
  Improvement imp;
  for (double m : arch_means) imp.random_below += m < s;
  if (!(base > 0)) {  // RI is a ratio to the random mean: undefined when every random run scored 0
    imp.ri = imp.std = imp.lo = imp.hi = NAN;
    return imp;
  }
  imp.ri = 100 * (s - base) / base;
  if (bootstrap < 1) {
    imp.lo = imp.hi = imp.ri;
    return imp;
  }
  Rng rng(seed);
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(bootstrap));
  for (int b = 0; b < bootstrap; ++b) {
    const double sb = resampled_mean(searched, rng);
    double rb = 0;
    for (size_t i = 0; i < random.size(); ++i) rb += resampled_mean(random[rng.below(random.size())], rng);
    rb /= double(random.size());
    if (rb > 0) samples.push_back(100 * (sb - rb) / rb);
    else ++imp.undefined_replicates;
  }
  if (samples.empty()) {
    imp.std = imp.lo = imp.hi = NAN;
    return imp;
  }
  imp.std = mean_std(samples).std;
  std::sort(samples.begin(), samples.end());
  imp.lo = quantile_sorted(samples, 0.025);
  imp.hi = quantile_sorted(samples, 0.975);
  return imp;
}

void summarize(CompareReport& report, int bootstrap) {
  report.bootstrap = bootstrap;
  report.finished_runs = report.total_runs = 0;
  std::vector<std::vector<double>> random_val, random_test;
  std::vector<double> random_val_means, random_test_means;
  for (ArchRecord& a : report.archs) {
    std::vector<double> val, test;
    for (const RunRecord& r : a.runs) {
      ++report.total_runs;
      if (!r.done) continue;
      ++report.finished_runs;
      val.push_back(r.val_accuracy);
      test.push_back(r.test_accuracy);
    }
    a.val = mean_std(val);
    a.test = mean_std(test);
    if (a.random && !val.empty()) {
      random_val.push_back(val);
      random_test.push_back(test);
      random_val_means.push_back(a.val.mean);
      random_test_means.push_back(a.test.mean);
    }
  }
  report.random_val = mean_std(random_val_means);
  report.random_test = mean_std(random_test_means);
  report.searched.clear();
  if (random_val.empty()) return;
  for (const ArchRecord& a : report.archs) {
    if (a.random || a.val.n == 0) continue;
    std::vector<double> val, test;
    for (const RunRecord& r : a.runs)
      if (r.done) val.push_back(r.val_accuracy), test.push_back(r.test_accuracy);
    report.searched.push_back({a.name, relative_improvement(val, random_val, bootstrap),
                               relative_improvement(test, random_test, bootstrap)});
  }
}

std::string compare_table(const CompareReport& report) {
  std::ostringstream os;
  char line[512];
  std::snprintf(line, sizeof line, "%-12s %-8s %8s %10s %9s %6s %16s %16s  %s\n", "architecture", "kind", "R (ms)",
                "params (M)", "MACs (M)", "seeds", "val acc (%)", "test acc (%)", "layers");
  os << line;
  for (const ArchRecord& a : report.archs) {
    const std::string seeds = std::to_string(a.val.n) + "/" + std::to_string(a.runs.size());
    std::snprintf(line, sizeof line, "%-12s %-8s %8.3f %10.3f %9.2f %6s %16s %16s  ", a.name.c_str(),
                  a.random ? "random" : "searched", a.runtime_ms, a.params / 1e6, a.macs / 1e6, seeds.c_str(),
                  pm(a.val).c_str(), pm(a.test).c_str());
    os << line << arch_summary(a.arch) << "\n";
  }
  if (report.random_val.n > 0) {
    const std::string what = "random set (" + std::to_string(report.random_val.n) + " architectures, mean +- std of their means)";
    std::snprintf(line, sizeof line, "%-65s %16s %16s\n", what.c_str(), pm(report.random_val).c_str(),
                  pm(report.random_test).c_str());
    os << line;
  }
  for (const SearchedVerdict& v : report.searched) {
    for (const auto& [split, imp] : {std::make_pair("test", &v.test), std::make_pair("val", &v.val)}) {
      os << v.name << ": RI (" << split << ") = " << signed_pct(imp->ri, 2) << " % (bootstrap std " << figure(imp->std, 2)
         << ", 95 % interval " << signed_pct(imp->lo, 2) << " .. " << signed_pct(imp->hi, 2) << "); above "
         << imp->random_below << " of " << report.random_val.n << " random architectures";
      if (imp->undefined_replicates)
        os << " (" << imp->undefined_replicates << " bootstrap replicates with a random mean of 0 left out)";
      os << "\n";
    }
  }
  if (report.finished_runs < report.total_runs)
    os << "(" << report.finished_runs << " of " << report.total_runs << " trainings finished: rerun to complete)\n";
  return os.str();
}

nlohmann::json compare_json(const CompareReport& report, const CompareConfig& cfg) {
  auto ms = [](const MeanStd& m) { return nlohmann::json{{"mean", m.mean}, {"std", m.std}, {"n", m.n}}; };
  auto imp = [](const Improvement& i) {
    // JSON has no NaN: an undefined figure is null.
    auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
    return nlohmann::json{{"ri_percent", num(i.ri)},         {"bootstrap_std", num(i.std)},
                          {"ci95", {num(i.lo), num(i.hi)}},  {"random_below", i.random_below},
                          {"undefined_replicates", i.undefined_replicates}};
  };
  nlohmann::json archs = nlohmann::json::array();
  for (const ArchRecord& a : report.archs) {
    nlohmann::json runs = nlohmann::json::array();
    for (const RunRecord& r : a.runs) {
      nlohmann::json jr = {{"seed", r.seed}, {"dir", r.dir}, {"done", r.done}};
      if (r.done)
        jr.update({{"val_accuracy", r.val_accuracy}, {"test_accuracy", r.test_accuracy}, {"steps", r.steps},
                   {"seconds", r.seconds}});
      runs.push_back(jr);
    }
    archs.push_back({{"name", a.name}, {"kind", a.random ? "random" : "searched"}, {"file", a.path},
                     {"layers", arch_summary(a.arch)}, {"runtime_ms", a.runtime_ms}, {"params", a.params},
                     {"macs", a.macs}, {"val_accuracy", ms(a.val)}, {"test_accuracy", ms(a.test)}, {"runs", runs}});
  }
  nlohmann::json searched = nlohmann::json::array();
  for (const SearchedVerdict& v : report.searched) searched.push_back({{"name", v.name}, {"val", imp(v.val)}, {"test", imp(v.test)}});
  return {{"kind", "spnas-compare"},
          {"protocol", protocol_json(cfg)},
          {"seeds", cfg.seeds},
          {"random_dir", cfg.random_dir},
          {"table", cfg.table_path},
          {"target_ms", cfg.target_ms},
          {"finished_runs", report.finished_runs},
          {"total_runs", report.total_runs},
          {"architectures", archs},
          {"random_set", {{"val_accuracy", ms(report.random_val)}, {"test_accuracy", ms(report.random_test)}}},
          {"relative_improvement",
           {{"formula", "100 * (Acc_searched - Acc_random) / Acc_random; Acc = mean over seeds, Acc_random = mean over the "
                        "random architectures of their means"},
            {"spread", "two-level bootstrap: random architectures with replacement, then each one's seeds, and the "
                       "searched architecture's seeds"},
            {"replicates", report.bootstrap},
            {"searched", searched}}}};
}

void write_compare_svg(const std::string& path, const CompareReport& report, const std::string& title) {
  const double W = 880, H = 520, left = 80, right = 250, top = 60, bottom = 70;
  const double pw = W - left - right, ph = H - top - bottom;
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (const ArchRecord& a : report.archs) {
    xlo = std::min(xlo, a.runtime_ms), xhi = std::max(xhi, a.runtime_ms);
    if (a.test.n == 0) continue;
    ylo = std::min(ylo, 100 * (a.test.mean - a.test.std)), yhi = std::max(yhi, 100 * (a.test.mean + a.test.std));
  }
  if (report.target_ms > 0) xlo = std::min(xlo, report.target_ms), xhi = std::max(xhi, report.target_ms);
  if (!std::isfinite(xlo)) xlo = 0, xhi = 1;
  if (!std::isfinite(ylo)) ylo = 0, yhi = 100;
  const double xpad = std::max(0.05 * (xhi - xlo), 0.02 * std::max(std::abs(xhi), 1e-3));
  const double ypad = std::max(0.08 * (yhi - ylo), 0.5);
  xlo -= xpad, xhi += xpad, ylo -= ypad, yhi += ypad;
  auto X = [&](double v) { return left + (v - xlo) / (xhi - xlo) * pw; };
  auto Y = [&](double v) { return top + (yhi - v) / (yhi - ylo) * ph; };

  std::ostringstream s;
  s.precision(6);
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' font-family='sans-serif'>\n"
    << "<rect width='100%' height='100%' fill='white'/>\n"
    << "<text x='" << W / 2 << "' y='28' font-size='16' text-anchor='middle'>" << esc(title) << "</text>\n";
  for (double t : nice_ticks(xlo, xhi, 6)) {
    s << "<line x1='" << X(t) << "' y1='" << top << "' x2='" << X(t) << "' y2='" << top + ph << "' stroke='#e4e4e4'/>\n"
      << "<text x='" << X(t) << "' y='" << top + ph + 18 << "' font-size='12' text-anchor='middle'>" << t << "</text>\n";
  }
  for (double t : nice_ticks(ylo, yhi, 6)) {
    s << "<line x1='" << left << "' y1='" << Y(t) << "' x2='" << left + pw << "' y2='" << Y(t) << "' stroke='#e4e4e4'/>\n"
      << "<text x='" << left - 8 << "' y='" << Y(t) + 4 << "' font-size='12' text-anchor='end'>" << t << "</text>\n";
  }
  s << "<rect x='" << left << "' y='" << top << "' width='" << pw << "' height='" << ph
    << "' fill='none' stroke='black'/>\n"
    << "<text x='" << left + pw / 2 << "' y='" << H - 22
    << "' font-size='13' text-anchor='middle'>predicted runtime R (ms, the latency table's additive prediction)</text>\n"
    << "<text transform='translate(22," << top + ph / 2
    << ") rotate(-90)' font-size='13' text-anchor='middle'>test accuracy (%), mean ± std over seeds</text>\n";
  if (report.random_test.n > 0) {
    const double m = 100 * report.random_test.mean, sd = 100 * report.random_test.std;
    s << "<rect x='" << left << "' y='" << Y(std::min(yhi, m + sd)) << "' width='" << pw << "' height='"
      << Y(std::max(ylo, m - sd)) - Y(std::min(yhi, m + sd)) << "' fill='#9ecae1' fill-opacity='0.25'/>\n"
      << "<line x1='" << left << "' y1='" << Y(m) << "' x2='" << left + pw << "' y2='" << Y(m)
      << "' stroke='#3182bd' stroke-dasharray='6,4'/>\n";
  }
  if (report.target_ms > 0)
    s << "<line x1='" << X(report.target_ms) << "' y1='" << top << "' x2='" << X(report.target_ms) << "' y2='" << top + ph
      << "' stroke='#2ca02c' stroke-width='1.5' stroke-dasharray='8,4'/>\n";
  for (const ArchRecord& a : report.archs) {
    if (a.test.n == 0) continue;
    const double x = X(a.runtime_ms), y = Y(100 * a.test.mean);
    const char* colour = a.random ? "#555555" : "#d62728";
    s << "<line x1='" << x << "' y1='" << Y(100 * (a.test.mean + a.test.std)) << "' x2='" << x << "' y2='"
      << Y(100 * (a.test.mean - a.test.std)) << "' stroke='" << colour << "'/>\n";
    if (a.random)
      s << "<circle cx='" << x << "' cy='" << y << "' r='5' fill='" << colour << "'/>\n";
    else
      s << "<rect x='" << x - 6 << "' y='" << y - 6 << "' width='12' height='12' fill='" << colour
        << "' transform='rotate(45 " << x << ' ' << y << ")'/>\n"
        << "<text x='" << x + 10 << "' y='" << y - 8 << "' font-size='12' fill='" << colour << "'>" << esc(a.name)
        << "</text>\n";
  }
  // Legend, right of the plot.
  const double lx = left + pw + 20;
  double ly = top + 10;
  s << "<circle cx='" << lx + 6 << "' cy='" << ly << "' r='5' fill='#555555'/><text x='" << lx + 18 << "' y='" << ly + 4
    << "' font-size='12'>random architecture</text>\n";
  ly += 22;
  s << "<rect x='" << lx << "' y='" << ly - 6 << "' width='12' height='12' fill='#d62728' transform='rotate(45 " << lx + 6
    << ' ' << ly << ")'/><text x='" << lx + 18 << "' y='" << ly + 4 << "' font-size='12'>searched</text>\n";
  if (report.random_test.n > 0) {
    ly += 22;
    s << "<line x1='" << lx << "' y1='" << ly << "' x2='" << lx + 14 << "' y2='" << ly
      << "' stroke='#3182bd' stroke-dasharray='6,4'/><text x='" << lx + 18 << "' y='" << ly + 4
      << "' font-size='12'>random set: mean ± std</text>\n";
  }
  if (report.target_ms > 0) {
    ly += 22;
    s << "<line x1='" << lx << "' y1='" << ly << "' x2='" << lx + 14 << "' y2='" << ly
      << "' stroke='#2ca02c' stroke-width='1.5' stroke-dasharray='8,4'/><text x='" << lx + 18 << "' y='" << ly + 4
      << "' font-size='12'>target " << fmt(report.target_ms, 3) << " ms</text>\n";
  }
  ly += 30;
  for (const SearchedVerdict& v : report.searched) {
    s << "<text x='" << lx << "' y='" << ly << "' font-size='12'>" << esc(v.name) << ": RI " << signed_pct(v.test.ri, 1)
      << " %</text>\n"
      << "<text x='" << lx << "' y='" << ly + 16 << "' font-size='11'>95 %: " << signed_pct(v.test.lo, 1) << " .. "
      << signed_pct(v.test.hi, 1) << "</text>\n";
    ly += 38;
  }
  s << "</svg>\n";
  write_file_atomic(path, s.str());
}

CompareReport run_compare(const CompareConfig& cfg) {
  if (cfg.arch_paths.empty() && cfg.random_dir.empty())
    throw std::runtime_error("compare: nothing to train: give --arch FILE... and/or --random-dir DIR");
  if (cfg.seeds < 1) throw std::runtime_error("compare: --seeds must be at least 1");
  if (!(cfg.val_fraction > 0 && cfg.val_fraction < 1))
    throw std::runtime_error("compare: the validation fraction must be in (0, 1), got " + fmt(cfg.val_fraction, 4));
  if (cfg.jobs > 1 && cfg.train_args.empty() && cfg.program == "/proc/self/exe")
    throw std::runtime_error("compare: parallel jobs need the protocol as `spnas train` flags (CompareConfig::train_args)");

  CompareConfig c = cfg;
  c.table_path = table_path_of(cfg);
  const LatencyTable table = load_latency_table(c.table_path, c.fixed_ms);
  CompareReport report;
  report.target_ms = c.target_ms;
  for (size_t i = 0; i < c.arch_paths.size(); ++i)
    report.archs.push_back(describe_arch("arch_" + std::to_string(i + 1), c.arch_paths[i], false, table));
  if (!c.random_dir.empty())
    for (const std::string& f : random_files(c.random_dir))
      report.archs.push_back(
          describe_arch(std::filesystem::path(f).stem().string(), f, true, table));
  // One compare per folder (a second one fails naming the first); --report only reads and rewrites
  // the report files, atomically.
  std::unique_ptr<RunFolder> folder;
  if (c.report_only) make_dirs(c.out_dir);
  else folder = std::make_unique<RunFolder>(c.out_dir, "compare");
  // Open the data once before any training, so a wrong --data fails now, not in every run.
  if (!c.report_only) open_dataset(c.train.data, c.val_fraction, 1);
  check_protocol(c);

  // Runs in seed-major order: after an interruption every architecture has its first seeds.
  struct Pending {
    size_t arch, run;
  };
  std::vector<Pending> pending;
  for (ArchRecord& a : report.archs)
    for (int s = 1; s <= c.seeds; ++s) a.runs.push_back({s, c.out_dir + "/runs/" + a.name + "/seed_" + std::to_string(s)});
  for (int s = 0; s < c.seeds; ++s)
    for (size_t i = 0; i < report.archs.size(); ++i) {
      RunRecord& r = report.archs[i].runs[size_t(s)];
      read_result(r, report.archs[i]);
      if (!r.done && !c.report_only) pending.push_back({i, size_t(s)});
    }
  const size_t already = size_t(report.archs.size() * c.seeds) - pending.size();
  if (!c.quiet && !c.report_only)
    std::fprintf(stderr, "compare: %zu architectures x %d seeds: %zu trainings done, %zu to run%s\n", report.archs.size(),
                 c.seeds, already, pending.size(),
                 c.jobs > 1 ? (", " + std::to_string(c.jobs) + " at a time").c_str() : "");

  install_stop_handlers();
  size_t finished = already;
  const size_t total = report.archs.size() * size_t(c.seeds);
  auto after_run = [&](const Pending& p) {
    ArchRecord& a = report.archs[p.arch];
    RunRecord& r = a.runs[p.run];
    read_result(r, a);
    if (r.done && !c.quiet) std::fprintf(stderr, "compare: [%zu/%zu] %s\n", ++finished, total, run_line(a, r).c_str());
  };
  std::string failure;
  if (c.jobs <= 1) {
    for (const Pending& p : pending) {
      if (stop_requested()) break;
      const ArchRecord& a = report.archs[p.arch];
      const RunRecord& r = a.runs[p.run];
      TrainConfig t = c.train;
      t.arch = a.arch;
      t.arch_source = a.path;
      t.seed = uint64_t(r.seed);
      t.out_dir = r.dir;
      t.resume = file_exists(r.dir + "/model.ckpt");
      t.val_fraction = float(c.val_fraction);
      t.quiet = c.quiet;
      try {
        run_train(t);
      } catch (const Interrupted&) {
        break;  // its checkpoint is saved; the report of what finished is written below
      } catch (const std::exception& e) {
        failure = run_name(a, r) + " failed: " + e.what() + " (its folder: " + r.dir + ")";
        break;
      }
      after_run(p);
    }
  } else {
    std::vector<ChildJob> jobs;
    const int share = thread_share(c.threads, c.jobs);
    for (const Pending& p : pending) {
      const ArchRecord& a = report.archs[p.arch];
      const RunRecord& r = a.runs[p.run];
      make_dirs(r.dir);
      ChildJob j;
      j.name = run_name(a, r);
      j.log_path = r.dir + "/train.log";
      j.args = {"train", "--arch", a.path, "--seed", std::to_string(r.seed), "--out", r.dir, "--val-fraction",
                fmt(c.val_fraction, 6), "--threads", std::to_string(share)};
      if (c.quiet) j.args.push_back("--quiet");  // else the log shows the run's progress
      if (file_exists(r.dir + "/model.ckpt")) j.args.push_back("--resume");
      j.args.insert(j.args.end(), c.train_args.begin(), c.train_args.end());
      jobs.push_back(std::move(j));
    }
    ProcessPoolOptions po;
    po.program = c.program;
    po.jobs = c.jobs;
    po.interrupted = stop_requested;
    po.on_start = [&](size_t i) {
      if (!c.quiet) std::fprintf(stderr, "compare: started %s (log %s)\n", jobs[i].name.c_str(), jobs[i].log_path.c_str());
    };
    po.on_exit = [&](size_t i, const ChildOutcome& o) {
      if (o.ok()) after_run(pending[i]);
    };
    const std::vector<ChildOutcome> outcomes = run_children(jobs, po);
    try {
      check_children(jobs, outcomes);
    } catch (const std::exception& e) {
      failure = e.what();  // the report of what did finish is still written below
    }
  }

  summarize(report, c.bootstrap);
  write_file_atomic(c.out_dir + "/compare.json", compare_json(report, c).dump(2) + "\n");
  write_file_atomic(c.out_dir + "/compare.txt", compare_table(report));
  write_compare_svg(c.out_dir + "/compare.svg", report,
                    "Searched vs random architectures (" + std::to_string(report.random_test.n) + " random; " +
                        std::to_string(report.finished_runs) + " of " + std::to_string(report.total_runs) +
                        " trainings, " + std::to_string(c.seeds) + " seeds each)");
  if (!failure.empty()) throw std::runtime_error("compare: " + failure);
  if (stop_requested())
    throw Interrupted(stop_signal(), "compare: interrupted: " + std::to_string(report.finished_runs) + " of " +
                                         std::to_string(report.total_runs) +
                                         " trainings finished (the others saved their checkpoints); the same "
                                         "command continues");
  return report;
}

}  // namespace spnas
