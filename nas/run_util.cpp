#include "nas/run_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <stdexcept>

namespace spnas {

static std::atomic<bool> g_stop{false};

static void on_signal(int) { g_stop.store(true); }

void install_stop_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}
bool stop_requested() { return g_stop.load(); }
void request_stop() { g_stop.store(true); }
void clear_stop_request() { g_stop.store(false); }

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string what, int64_t total, bool quiet)
    : what_(std::move(what)), total_(total), tty_(isatty(2)), quiet_(quiet), start_(now_seconds()) {}

void Progress::update(int64_t done, const std::string& status) {
  if (quiet_) return;
  double el = now_seconds() - start_;
  double eta = done > 0 ? el / done * (total_ - done) : 0;
  if (tty_) {
    const int width = 28;
    int fill = total_ ? int(width * done / total_) : width;
    std::string bar(fill, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld %s  %.0fs, eta %.0fs   ", what_.c_str(), bar.c_str(), (long long)done,
                 (long long)total_, status.c_str(), el, eta);
    std::fflush(stderr);
  } else {
    int64_t every = std::max<int64_t>(1, total_ / 20);
    if (done == total_ || done / every != last_printed_) {
      last_printed_ = done / every;
      std::fprintf(stderr, "%s %lld/%lld %s  %.0fs\n", what_.c_str(), (long long)done, (long long)total_, status.c_str(),
                   el);
    }
  }
}

void Progress::finish() {
  if (!quiet_ && tty_) std::fprintf(stderr, "\n");
}

void make_dirs(const std::string& dir) {
  std::string cur;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if ((i == dir.size() || dir[i] == '/') && !cur.empty() && ::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
      throw std::runtime_error("cannot create directory '" + cur + "'");
    if (i < dir.size()) cur += dir[i];
  }
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, ParamSet& ps, float wd) {
  if (kind == "rmsprop") return std::make_unique<RMSProp>(ps, 0.9f, 0.9f, 1e-3f, wd);
  if (kind == "sgd") return std::make_unique<SGD>(ps, 0.9f, true, wd);
  if (kind == "adam") return std::make_unique<Adam>(ps, 0.9f, 0.999f, 1e-8f, wd);
  throw std::runtime_error("optimizer must be rmsprop, sgd or adam, got \"" + kind + "\"");
}

std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(what + ": cannot open '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

nlohmann::json parse_json(const std::string& text, const std::string& what, const std::string& source) {
  try {
    return nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw std::runtime_error(what + " '" + source + "': not valid JSON: " + e.what());
  }
}

Schedule make_schedule(const LrConfig& c, int64_t spe, int64_t total_steps) {
  if (!(c.lr > 0)) throw std::runtime_error("learning rate must be positive");
  Schedule s = Schedule::constant(c.lr);
  if (c.kind == "exponential") {
    if (!(c.decay_epochs > 0)) throw std::runtime_error("--lr-decay-epochs must be positive");
    s = Schedule::exponential(c.lr, c.decay_rate, double(c.decay_epochs) * spe, true);
  } else if (c.kind == "cosine") {
    s = Schedule::cosine(c.lr, total_steps, 0.0f);
  } else if (c.kind != "constant") {
    throw std::runtime_error("learning-rate schedule must be exponential, cosine or constant, got \"" + c.kind + "\"");
  }
  int64_t w = int64_t(c.warmup_epochs * spe + 0.5f);
  if (w > 0) s = s.with_warmup(w, 0.0f);
  return s;
}

std::string fmt(double v, int prec) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

}  // namespace spnas
