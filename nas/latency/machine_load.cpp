#include "nas/latency/machine_load.h"

#include <cctype>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "engine/cpu.h"
#include "engine/io.h"

namespace spnas {

namespace {

std::string read_file_or_empty(const char* path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

CpuTimes parse_proc_stat(const std::string& text, const std::string& source) {
  CpuTimes t;
  bool found = false;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("cpu", 0) != 0) continue;
    std::istringstream in(line);
    std::string name;
    long long v[8] = {};  // user nice system idle iowait irq softirq steal (guest time is inside user)
    in >> name;
    int n = 0;
    while (n < 8 && in >> v[n]) ++n;
    if (name == "cpu") {
      if (n < 4) throw std::runtime_error("'" + source + "': the \"cpu\" line needs at least 4 counters: " + line);
      for (int i = 0; i < 8; ++i) t.total += v[i];
      t.steal = v[7];
      found = true;
    } else if (name.size() > 3 && std::isdigit((unsigned char)name[3]) && n >= 5) {
      t.idle_per_cpu.push_back(v[3] + v[4]);
    }
  }
  if (!found) throw std::runtime_error("'" + source + "': no \"cpu\" line");
  return t;
}

double steal_fraction(const CpuTimes& before, const CpuTimes& after) {
  return after.total > before.total ? double(after.steal - before.steal) / double(after.total - before.total) : -1.0;
}

double parse_loadavg(const std::string& text, const std::string& source) {
  std::istringstream in(text);
  double load = -1;
  if (!(in >> load) || !(load >= 0))
    throw std::runtime_error("'" + source + "': expected the load averages, got \"" + text.substr(0, 40) + "\"");
  return load;
}

CpuTimes read_cpu_times() {
  const std::string text = read_file_or_empty("/proc/stat");
  return text.empty() ? CpuTimes{} : parse_proc_stat(text);
}

double read_loadavg() {
  const std::string text = read_file_or_empty("/proc/loadavg");
  return text.empty() ? -1.0 : parse_loadavg(text);
}

std::vector<std::string> load_warnings(const MachineLoad& m, const LoadLimits& limits) {
  std::vector<std::string> out;
  if (m.load_average >= 0 && m.load_average + m.threads > m.online_cpus + limits.load_slack)
    out.push_back("load average " + fmt(m.load_average, 2) + " on " + std::to_string(m.online_cpus) +
                  " online CPUs: other processes compete for the CPUs this " + std::to_string(m.threads) +
                  "-thread measurement needs");
  if (m.steal_fraction > limits.max_steal_fraction)
    out.push_back(fmt(100 * m.steal_fraction, 1) +
                  " % of the CPU time was stolen by the hypervisor during the measurement (a busy host)");
  if (m.runs > 0 && m.preempted > limits.max_preempted_fraction * m.runs)
    out.push_back(std::to_string(m.preempted) + " of " + std::to_string(m.runs) +
                  " timed runs were preempted by other processes (dropped from the statistics)");
  return out;
}

LoadMonitor::LoadMonitor(int threads)
    : threads_(threads), load_average_(read_loadavg()), start_(read_cpu_times()) {}

MachineLoad LoadMonitor::finish(int preempted, int runs) const {
  MachineLoad m;
  m.load_average = load_average_;
  m.online_cpus = cpu_info().online_cpus;
  m.threads = threads_;
  m.preempted = preempted;
  m.runs = runs;
  m.steal_fraction = steal_fraction(start_, read_cpu_times());
  return m;
}

}  // namespace spnas
