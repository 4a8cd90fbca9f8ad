#include "nas/run.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "engine/io.h"

namespace spnas {

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// ---- stopping ----------------------------------------------------------------------------------

namespace {
std::atomic<int> g_stop_signal{0};
void on_signal(int sig) { g_stop_signal.store(sig); }
}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}
bool stop_requested() { return g_stop_signal.load() != 0; }
int stop_signal() { return g_stop_signal.load(); }
void request_stop(int signal) { g_stop_signal.store(signal); }
void clear_stop_request() { g_stop_signal.store(0); }

void throw_if_interrupted(const std::string& what, int64_t step, const std::string& checkpoint,
                          const std::string& note) {
  if (!stop_requested()) return;
  const int sig = stop_signal();
  throw Interrupted(sig, what + ": interrupted by " + (sig == 2 ? "SIGINT" : sig == 15 ? "SIGTERM" : "a signal") +
                             " at step " + std::to_string(step) + "; the checkpoint '" + checkpoint +
                             "' is saved: continue with --resume" + note);
}

// ---- output folder -------------------------------------------------------------------------------

namespace {

std::string clean_dir(const std::string& dir, const std::string& what) {
  if (dir.empty()) throw std::runtime_error(what + ": the output folder is empty (--out)");
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  if (d == "/") throw std::runtime_error(what + ": refusing to write into '/' (--out)");
  return d;
}

std::string this_command() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (char& c : s)
    if (c == '\0') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s.empty() ? "?" : s;
}

}  // namespace

RunFolder::RunFolder(const std::string& dir, const std::string& what, bool writer)
    : dir_(clean_dir(dir, what)), writer_(writer) {
  if (!writer) return;
  make_dirs(dir_);
  const std::string lock = file(".lock");
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0)
    throw std::runtime_error(what + ": cannot write in the output folder '" + dir_ + "': " + std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[512] = {0};
    const ssize_t n = ::pread(lock_fd_, buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(buf, size_t(n)) : "another process";
    while (!holder.empty() && holder.back() == '\n') holder.pop_back();
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw std::runtime_error(what + ": the output folder '" + dir_ + "' is in use by " + holder +
                             "; one run per folder (choose another --out, or wait for it)");
  }
  char when[64];
  const std::time_t t = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  const std::string me = "pid " + std::to_string(::getpid()) + " (" + this_command() + ", since " + when + ")\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, me.data(), me.size(), 0) != ssize_t(me.size()))
    throw std::runtime_error(what + ": cannot write in the output folder '" + dir_ + "': " + std::strerror(errno));
}

RunFolder::~RunFolder() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock; the file stays (harmless, reused)
}

void RunFolder::log_change(const std::string& line) const {
  std::fprintf(stderr, "%s\n", line.c_str());
  if (writer_) std::ofstream(file("config_changes.log"), std::ios::app) << line << '\n';
}

void check_output_file(const std::string& path, const std::string& what) {
  if (path.empty()) throw std::runtime_error(what + ": the output file name is empty");
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw std::runtime_error(what + ": the output '" + path + "' is a directory, not a file");
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  make_dirs(dir);
  const std::string probe = dir + "/.spnas-write-test." + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    throw std::runtime_error(what + ": cannot write '" + path + "' (folder '" + dir + "'): " + std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

// ---- progress --------------------------------------------------------------------------------------

namespace {
std::string duration_text(double s) {
  char buf[32];
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 100) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 6000) std::snprintf(buf, sizeof buf, "%.0fm%02.0fs", std::floor(s / 60), std::fmod(s, 60));
  else std::snprintf(buf, sizeof buf, "%.0fh%02.0fm", std::floor(s / 3600), std::floor(std::fmod(s, 3600) / 60));
  return buf;
}
}  // namespace

Progress::Progress(std::string what, int64_t first, int64_t total, int batch, bool quiet)
    : what_(std::move(what)), first_(first), total_(total), batch_(batch), tty_(isatty(2)), quiet_(quiet),
      start_(now_seconds()), last_time_(start_), last_done_(first) {}

void Progress::update(int64_t done, double lr, const std::string& status) {
  if (quiet_) return;
  const double now = now_seconds();
  if (now - last_time_ >= 1.0 || (rate_ == 0 && done > first_)) {
    const double r = (done - last_done_) / std::max(1e-9, now - last_time_);
    rate_ = rate_ == 0 ? r : 0.7 * rate_ + 0.3 * r;
    last_time_ = now, last_done_ = done;
  }
  const int64_t every = std::max<int64_t>(1, (total_ - first_) / 20);
  const bool print = tty_ || done == total_ || (done - first_) / every != last_printed_;
  if (!print) return;
  last_printed_ = (done - first_) / every;
  char line[512];
  std::snprintf(line, sizeof line, "%s %lld/%lld  %.2f steps/s (%.0f images/s)  lr %.3g  %s  elapsed %s, eta %s",
                what_.c_str(), (long long)done, (long long)total_, rate_, rate_ * batch_, lr, status.c_str(),
                duration_text(now - start_).c_str(), duration_text(rate_ > 0 ? (total_ - done) / rate_ : NAN).c_str());
  if (tty_) std::fprintf(stderr, "\r\033[K%s", line);
  else std::fprintf(stderr, "%s\n", line);
  std::fflush(stderr);
}

void Progress::note(const std::string& line) {
  if (quiet_) return;
  std::fprintf(stderr, tty_ ? "\r\033[K%s\n" : "%s\n", line.c_str());
}

void Progress::finish() {
  if (!quiet_ && tty_) std::fprintf(stderr, "\n");
}

// ---- divergence ------------------------------------------------------------------------------------

void DivergenceCheck::check_loss(int64_t step, double ce, double runtime_term, double lambda) const {
  const double uniform = std::log(std::max(2, num_classes));
  std::string cause;
  if (!std::isfinite(runtime_term) || (lambda > 0 && std::fabs(runtime_term) > 1e6))
    cause = "the runtime term is " + fmt(runtime_term, 3) + ": lower --lambda (now " + fmt(lambda, 6) + ")";
  else if (!std::isfinite(ce))
    cause = "the cross-entropy is not finite: lower the learning rate (--lr)";
  else if (ce > 20 * uniform + 10)
    cause = "the cross-entropy is " + fmt(ce, 1) + " (a uniform guess costs " + fmt(uniform, 2) +
            "): the weights are exploding; lower the learning rate (--lr)";
  if (cause.empty()) return;
  throw std::runtime_error(what + " diverged at step " + std::to_string(step) + ": " + cause +
                           (checkpoint.empty() ? std::string() : "; the last checkpoint '" + checkpoint + "' is intact"));
}

void DivergenceCheck::check_params(int64_t step, double weights_sq, double thresholds_sq) const {
  std::string cause;
  if (!std::isfinite(thresholds_sq) && thresholds_sq != -1)
    cause = "a threshold is no longer finite: lower --threshold-lr-mult or --lambda";
  else if (!std::isfinite(weights_sq))
    cause = "a weight is no longer finite: lower the learning rate (--lr)";
  if (cause.empty()) return;
  throw std::runtime_error(what + " diverged at step " + std::to_string(step) + ": " + cause +
                           (checkpoint.empty() ? std::string() : "; the last checkpoint '" + checkpoint + "' is intact"));
}

// ---- recorded configuration ------------------------------------------------------------------------

std::vector<std::string> compare_run_config(const nlohmann::json& recorded, const nlohmann::json& now,
                                            const std::vector<std::string>& may_differ, bool allow,
                                            const std::string& checkpoint) {
  std::vector<std::string> diffs;
  auto free = [&](const std::string& k) { return std::find(may_differ.begin(), may_differ.end(), k) != may_differ.end(); };
  for (auto it = now.begin(); it != now.end(); ++it) {
    if (free(it.key())) continue;
    if (!recorded.contains(it.key())) {
      diffs.push_back(it.key() + ": not recorded, now " + it.value().dump());
    } else if (recorded[it.key()] != it.value()) {
      diffs.push_back(it.key() + ": was " + recorded[it.key()].dump() + ", now " + it.value().dump());
    }
  }
  // Settings recorded only where they differ from the default (the data-parallel ones) may be gone.
  for (auto it = recorded.begin(); it != recorded.end(); ++it)
    if (!free(it.key()) && !now.contains(it.key()))
      diffs.push_back(it.key() + ": was " + it.value().dump() + ", now not set");
  if (diffs.empty() || allow) return diffs;
  std::string msg = "the checkpoint '" + checkpoint + "' was written with another configuration:";
  for (const std::string& d : diffs) msg += "\n  " + d;
  msg += "\nresume with the same options, start afresh in another --out, or pass --allow-config-change to continue "
         "anyway (the changes are logged)";
  throw std::runtime_error(msg);
}

// ---- memory --------------------------------------------------------------------------------------

double memory_limit_bytes(double limit_gib) {
  if (limit_gib > 0) return limit_gib * double(1 << 30);
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kb = 0;
  while (f >> key >> kb) {
    if (key == "MemTotal:") return 0.8 * kb * 1024;
    f.ignore(256, '\n');
  }
  return 0.8 * double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
}

void check_memory(double needed, double limit, const std::string& what) {
  if (needed <= limit) return;
  throw std::runtime_error(what + " needs about " + fmt(needed / double(1 << 30), 2) + " GiB, more than the limit of " +
                           fmt(limit / double(1 << 30), 2) + " GiB (80 % of this machine's memory; --memory-limit GIB "
                           "sets another): lower the batch, the width or the input size");
}

}  // namespace spnas
