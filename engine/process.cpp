#include "engine/process.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "engine/cpu.h"

namespace spnas {

namespace {

double seconds_now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

struct Running {
  size_t job = 0;
  pid_t pid = 0;
  double start = 0;
};

// argv[0] of a child: /proc/self/exe resolved, so that `ps` shows which program runs.
std::string display_name(const std::string& program) {
  if (program != "/proc/self/exe") return program;
  char buf[4096];
  const ssize_t n = ::readlink(program.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, size_t(n)) : program;
}

// fork + exec with stdout/stderr on the job's log. Everything the child needs is built before fork:
// between fork and exec only async-signal-safe calls are allowed (the parent has threads).
pid_t spawn(const std::string& program, const ChildJob& job) {
  const int log = ::open(job.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0)
    throw std::runtime_error("job '" + job.name + "': cannot open its log '" + job.log_path + "': " + std::strerror(errno));
  std::vector<std::string> strings;
  strings.push_back(display_name(program));
  strings.insert(strings.end(), job.args.begin(), job.args.end());
  std::vector<char*> argv;
  for (std::string& s : strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log);
    throw std::runtime_error("job '" + job.name + "': fork failed: " + std::strerror(errno));
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(126);  // the parent died before prctl took effect
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    ::execv(program.c_str(), argv.data());
    const char* what = "process pool: exec failed: ";
    (void)!::write(2, what, std::strlen(what));
    (void)!::write(2, program.c_str(), program.size());
    (void)!::write(2, "\n", 1);
    ::_exit(127);
  }
  ::close(log);
  return pid;
}

ChildOutcome outcome_of(int status, double seconds) {
  ChildOutcome o;
  o.started = true;
  o.seconds = seconds;
  if (WIFEXITED(status)) o.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) o.signal = WTERMSIG(status);
  return o;
}

// The last `lines` lines of a file ("" if unreadable).
std::string tail_of(const std::string& path, int lines) {
  std::ifstream in(path);
  std::vector<std::string> last;
  std::string line;
  while (std::getline(in, line)) {
    last.push_back(line);
    if (int(last.size()) > lines) last.erase(last.begin());
  }
  std::string out;
  for (const std::string& l : last) out += "    | " + l + "\n";
  return out;
}

}  // namespace

std::vector<ChildOutcome> run_children(const std::vector<ChildJob>& jobs, const ProcessPoolOptions& options) {
  std::vector<ChildOutcome> outcomes(jobs.size());
  std::vector<Running> running;
  const size_t limit = size_t(std::max(1, options.jobs));
  size_t next = 0;
  bool stopping = false;  // after a failure or an interrupt: nothing new starts
  auto stop_running = [&]() {
    if (stopping) return;
    stopping = true;
    for (const Running& r : running) {
      ::kill(r.pid, SIGINT);
      outcomes[r.job].stopped = true;
    }
  };
  try {
    while (true) {
      if (options.interrupted && options.interrupted()) stop_running();
      while (!stopping && next < jobs.size() && running.size() < limit) {
        running.push_back({next, spawn(options.program, jobs[next]), seconds_now()});
        if (options.on_start) options.on_start(next);
        ++next;
      }
      if (running.empty()) break;
      bool reaped = false;
      for (size_t i = 0; i < running.size();) {
        int status = 0;
        const pid_t r = ::waitpid(running[i].pid, &status, WNOHANG);
        if (r == 0 || (r < 0 && errno == EINTR)) {
          ++i;
          continue;
        }
        const Running done = running[i];
        running.erase(running.begin() + long(i));
        reaped = true;
        ChildOutcome& o = outcomes[done.job];
        const bool stopped = o.stopped;
        if (r < 0) {  // cannot happen for our own child; recorded as a failure rather than lost
          o.started = true;
          o.exit_code = 127;
        } else {
          o = outcome_of(status, seconds_now() - done.start);
        }
        o.stopped = stopped;
        if (options.on_exit) options.on_exit(done.job, o);
        if (!o.ok() && !o.stopped && options.stop_on_failure) stop_running();
      }
      // Children run for seconds to hours: polling at 20 Hz costs nothing and needs no SIGCHLD handler.
      if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  } catch (...) {
    // A spawn or a callback failed: do not leave children behind.
    for (const Running& r : running) {
      ::kill(r.pid, SIGINT);
      int status = 0;
      ::waitpid(r.pid, &status, 0);
    }
    throw;
  }
  return outcomes;
}

std::string describe_outcome(const ChildOutcome& o) {
  if (!o.started) return "not started";
  if (o.signal) {
    const char* name = ::strsignal(o.signal);
    return "killed by signal " + std::to_string(o.signal) + (name ? std::string(" (") + name + ")" : "");
  }
  return "exit code " + std::to_string(o.exit_code);
}

void check_children(const std::vector<ChildJob>& jobs, const std::vector<ChildOutcome>& outcomes) {
  std::string msg;
  int failed = 0;
  for (size_t i = 0; i < jobs.size() && i < outcomes.size(); ++i) {
    if (!outcomes[i].started || outcomes[i].ok() || outcomes[i].stopped) continue;
    ++failed;
    msg += "\n  job '" + jobs[i].name + "' failed (" + describe_outcome(outcomes[i]) + "); its log: " +
           jobs[i].log_path + "\n" + tail_of(jobs[i].log_path, 5);
  }
  if (failed) throw std::runtime_error(std::to_string(failed) + " of " + std::to_string(jobs.size()) + " jobs failed:" + msg);
}

int thread_share(int total, int jobs) {
  if (total <= 0) total = cpu_info().online_cpus;
  return std::max(1, total / std::max(1, jobs));
}

}  // namespace spnas
