#include "engine/cpu.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace spnas {

namespace {

// sysfs cache sizes look like "32K" or "32768K" or "1M".
int64_t parse_cache_size(const std::string& s) {
  if (s.empty()) return 0;
  int64_t v = std::atoll(s.c_str());
  const char unit = s.back();
  if (unit == 'K') v <<= 10;
  else if (unit == 'M') v <<= 20;
  return v > 0 ? v : 0;
}

CpuInfo read_cpu_info() {
  CpuInfo c;
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  bool name = false, family = false, model = false, vendor = false;
  while (std::getline(in, line) && !(name && family && model && vendor)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    std::string value = line.substr(colon + 1);
    const size_t b = value.find_first_not_of(" \t");
    value = b == std::string::npos ? "" : value.substr(b);
    if (key == "model name" && !name) c.model_name = value, name = true;
    else if (key == "vendor_id" && !vendor) c.vendor = value, vendor = true;
    else if (key == "cpu family" && !family) c.family = std::atoi(value.c_str()), family = true;
    else if (key == "model" && !model) c.model = std::atoi(value.c_str()), model = true;
  }
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream level(dir + "level"), type(dir + "type"), size(dir + "size");
    int lv = 0;
    std::string ty, sz;
    if (!(level >> lv) || !(type >> ty) || !(size >> sz)) continue;
    const int64_t bytes = parse_cache_size(sz);
    if (lv == 1 && ty == "Data") c.l1d_bytes = bytes;
    else if (lv == 2 && !c.l2_bytes) c.l2_bytes = bytes;
    else if (lv == 3 && !c.l3_bytes) c.l3_bytes = bytes;
  }
  c.online_cpus = std::max(1, int(sysconf(_SC_NPROCESSORS_ONLN)));
  const int f = c.family, m = c.model;
  if (c.vendor == "AuthenticAMD" && f == 25 && ((m >= 0x10 && m <= 0x1f) || (m >= 0x60 && m <= 0x7f) || (m >= 0xa0 && m <= 0xaf))) {
    c.microarch_note = "AMD Zen 4, 512-bit FMAs as two 256-bit halves (1 per cycle per core)";
    c.fma512_halves = true;
  }
  else if (c.vendor == "AuthenticAMD" && f == 25)
    c.microarch_note = "AMD Zen 3, AVX2 only (two 256-bit FMA pipes per core)";
  else if (c.vendor == "AuthenticAMD" && f == 26)
    c.microarch_note = "AMD Zen 5";
  return c;
}

}  // namespace

const CpuInfo& cpu_info() {
  static const CpuInfo info = read_cpu_info();
  return info;
}

std::string cpu_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return "avx512";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
  return "ref";
}

std::string cpu_description() {
  const CpuInfo& c = cpu_info();
  std::string d = c.model_name + " (family " + std::to_string(c.family) + ", model " + std::to_string(c.model) + ")";
  if (!c.microarch_note.empty()) d += ": " + c.microarch_note;
  return d;
}

}  // namespace spnas
