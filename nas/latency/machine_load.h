// Is the machine busy while we time? The load average against the online CPUs before a measurement,
// the CPU time the hypervisor stole during it (/proc/stat), and the share of runs preempted by other
// processes. The parsers take the files' text, so tests can feed them.
#pragma once
#include <string>
#include <vector>

namespace spnas {

// The time counters of /proc/stat (jiffies), summed over every CPU, and each CPU's idle time.
struct CpuTimes {
  long long total = 0;  // user + nice + system + idle + iowait + irq + softirq + steal
  long long steal = 0;  // time a virtual CPU was ready but the hypervisor ran something else
  std::vector<long long> idle_per_cpu;  // idle + iowait of cpu0, cpu1, ...
};
// Throws naming `source` when the aggregate "cpu" line is missing or malformed.
CpuTimes parse_proc_stat(const std::string& text, const std::string& source = "/proc/stat");
// The stolen share of the CPU time between two readings (-1 when no time passed between them).
double steal_fraction(const CpuTimes& before, const CpuTimes& after);
// The 1-minute load average (first field); throws naming `source` when malformed.
double parse_loadavg(const std::string& text, const std::string& source = "/proc/loadavg");
// The same read from /proc now; an empty CpuTimes / -1 where the file cannot be read (not Linux).
CpuTimes read_cpu_times();
double read_loadavg();

struct MachineLoad {
  double load_average = -1;  // 1-minute load average when the measurement started (-1: unknown)
  int online_cpus = 1;
  int threads = 1;           // threads the measurement itself used
  double steal_fraction = -1;  // stolen share of the CPU time during the measurement (-1: unknown)
  int preempted = 0, runs = 0;  // timed runs during which another process took our CPU
};

// What counts as loaded. Defaults: other processes' load leaves fewer idle CPUs than the measurement
// needs (with half a CPU of slack: the average moves slowly), more than 2 % of the CPU time stolen,
// more than a quarter of the runs preempted.
struct LoadLimits {
  double load_slack = 0.5;
  double max_steal_fraction = 0.02;
  double max_preempted_fraction = 0.25;
};

// One sentence per sign of load (none on a quiet machine).
std::vector<std::string> load_warnings(const MachineLoad& load, const LoadLimits& limits = {});

// Samples the machine before a measurement and computes MachineLoad after it.
class LoadMonitor {
 public:
  explicit LoadMonitor(int threads);  // reads the load average and /proc/stat now
  MachineLoad finish(int preempted, int runs) const;

 private:
  int threads_;
  double load_average_;
  CpuTimes start_;
};

}  // namespace spnas
