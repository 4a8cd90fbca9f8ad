// Running child processes a few at a time: the parallel trainings of `spnas compare` and the trials
// of `spnas tune` are each a child of this same program (/proc/self/exe with a subcommand's
// arguments), given its share of the threads. Each child's stdout and stderr go to a log file of its
// own; the pool collects every exit status and names the job and its log when one fails.
//
// Interrupts: the caller passes `interrupted` (for example nas/run.h stop_requested); once it
// turns true the pool starts nothing new and sends SIGINT to the running children (which, being
// `spnas` commands, checkpoint and stop), then waits for them. A Ctrl-C at a terminal reaches the
// children directly too (they stay in the caller's process group); a second SIGINT is harmless.
// If the calling thread dies, the children get SIGTERM (PR_SET_PDEATHSIG), so none is orphaned.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace spnas {

struct ChildJob {
  std::string name;               // for messages, e.g. "random_003 seed 2"
  std::vector<std::string> args;  // the program's arguments (argv[1..])
  std::string log_path;           // stdout and stderr of the child (appended; the folder must exist)
};

struct ChildOutcome {
  bool started = false;
  int exit_code = -1;  // when the child exited normally
  int signal = 0;      // the signal that ended it (0: none)
  bool stopped = false;  // the pool sent it SIGINT (an interrupt, or another job's failure)
  double seconds = 0;
  bool ok() const { return started && signal == 0 && exit_code == 0; }
};

struct ProcessPoolOptions {
  std::string program = "/proc/self/exe";  // this program (the same binary, so the same flags)
  int jobs = 1;                            // children running at once
  // After a failure start nothing new and send SIGINT to the running children (their work is kept
  // by their own checkpoints); false: run every job regardless.
  bool stop_on_failure = true;
  std::function<bool()> interrupted;  // polled; may be empty
  std::function<void(size_t job)> on_start;
  std::function<void(size_t job, const ChildOutcome&)> on_exit;
};

// Runs every job (at most options.jobs at once, in order) and returns their outcomes, one per job
// (started == false for jobs never started after a failure or an interrupt). Throws only if a log
// file cannot be opened or fork fails (naming the job and the log).
std::vector<ChildOutcome> run_children(const std::vector<ChildJob>& jobs, const ProcessPoolOptions& options);

// "exit code 3" / "killed by signal 9 (Killed)" / "not started".
std::string describe_outcome(const ChildOutcome& o);
// Throws one error naming every job that failed by itself (not stopped by the pool), with its log
// path and the log's last lines; does nothing when there is none.
void check_children(const std::vector<ChildJob>& jobs, const std::vector<ChildOutcome>& outcomes);

// Threads for each of `jobs` children out of `total` (0: every online CPU): at least 1.
int thread_share(int total, int jobs);

}  // namespace spnas
