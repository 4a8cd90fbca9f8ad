// What this machine is: CPU model, vector ISA, cache sizes and core count, read once from
// /proc/cpuinfo, sysfs and cpuid. The one place the engine, the kernels, the latency laboratory and
// the benchmarks ask; every other file calls these instead of parsing system files itself.
#pragma once
#include <cstdint>
#include <string>

namespace spnas {

struct CpuInfo {
  std::string model_name = "unknown";  // /proc/cpuinfo "model name"
  std::string vendor;                  // "AuthenticAMD", "GenuineIntel", ...
  int family = 0, model = 0;           // /proc/cpuinfo "cpu family", "model"
  int64_t l1d_bytes = 0, l2_bytes = 0, l3_bytes = 0;  // as CPU 0 sees them (0: unknown)
  int online_cpus = 1;                 // sysconf(_SC_NPROCESSORS_ONLN)
  // A note on the microarchitecture where it changes what a figure means (e.g. Zen 4 runs 512-bit
  // FMAs as two 256-bit halves, so its AVX-512 peak per cycle is that of AVX2 on Zen 3); "" otherwise.
  std::string microarch_note;
  // The CPU runs a 512-bit FMA as two 256-bit halves (Zen 4): a vector of 16 floats with only 8 in use
  // costs as much as a full one, where two 8-float vectors would cost half.
  bool fma512_halves = false;
};

const CpuInfo& cpu_info();

// Best vector ISA this CPU supports that the engine has kernels for: "avx512", "avx2" or "ref".
std::string cpu_isa();

// "MODEL (family F, model M)[: note]", for benchmark headers and table metadata.
std::string cpu_description();

}  // namespace spnas
