#include "nas/baseline/sampling.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/checkpoint.h"
#include "nas/model.h"
#include "engine/io.h"

namespace spnas {

static std::string sample_file_name(size_t i) {
  std::string n = std::to_string(i);
  if (n.size() < 3) n.insert(0, 3 - n.size(), '0');
  return "random_" + n + ".json";
}

Arch sample_uniform_arch(const SearchSpace& space, Rng& rng) {
  Arch a = uniform_arch(space, Choice::K5E6);
  a.input_size = space.input_size;
  a.num_classes = space.num_classes;
  const std::vector<int> idx = space.searchable_indices();
  for (size_t l = 0; l < idx.size(); ++l) {
    const std::vector<Choice> allowed = allowed_choices(space.layers[idx[l]]);
    a.layers[l] = allowed[rng.below(allowed.size())];
  }
  return a;
}

SampleResult sample_architectures(const SearchSpace& space, const LatencyTable* table, const SampleConfig& cfg) {
  if (cfg.count < 1) throw std::runtime_error("random: the count must be at least 1");
  const bool matched = cfg.target_ms > 0;
  if (matched && !table) throw std::runtime_error("random: a latency target needs a latency table (--lut)");
  if (matched && !(cfg.window > 0 && cfg.window < 1))
    throw std::runtime_error("random: the window must be in (0, 1), got " + fmt(cfg.window, 4));
  SampleResult res;
  if (table) res.range = table_runtime_bounds(*table, space);
  const double lo = cfg.target_ms * (1 - cfg.window), hi = cfg.target_ms * (1 + cfg.window);
  auto window_text = [&]() {
    return "the window " + fmt(lo) + " .. " + fmt(hi) + " ms (" + fmt(cfg.target_ms) + " ms +- " +
           fmt(100 * cfg.window, 1) + " %)";
  };
  auto range_text = [&]() {
    return "the space's predicted R spans " + fmt(res.range.min_ms) + " .. " + fmt(res.range.max_ms) + " ms under '" +
           table->source + "'";
  };
  if (matched && (hi < res.range.min_ms || lo > res.range.max_ms))
    throw std::runtime_error("random: no architecture can fall in " + window_text() + ": " + range_text());

  Rng rng(cfg.seed);
  NoGrad no_grad;  // ChildNet is built only to count its parameters and multiply-adds
  while (int(res.archs.size()) < cfg.count) {
    if (matched && res.draws >= cfg.max_draws)
      throw std::runtime_error("random: only " + std::to_string(res.archs.size()) + " of " + std::to_string(cfg.count) +
                               " draws fell in " + window_text() + " after " + std::to_string(res.draws) +
                               " draws; " + range_text() + " (widen --window or move --target-ms toward the middle)");
    SampledArch s;
    s.draw = res.draws++;
    s.arch = sample_uniform_arch(space, rng);
    if (table) s.runtime_ms = predict_runtime(*table, s.arch, RuntimeMode::Table);
    if (matched && (s.runtime_ms < lo || s.runtime_ms > hi)) continue;
    ChildNet net(s.arch);
    s.params = net.params().count();
    s.macs = net.macs();
    res.archs.push_back(std::move(s));
  }
  return res;
}

std::vector<std::string> write_samples(const std::string& dir, const SampleResult& r, const SampleConfig& cfg,
                                       const std::string& table_path) {
  make_dirs(dir);
  std::vector<std::string> paths;
  nlohmann::json archs = nlohmann::json::array();
  for (size_t i = 0; i < r.archs.size(); ++i) {
    const std::string name = sample_file_name(i);
    const std::string path = dir + "/" + name;
    save_arch(path, r.archs[i].arch);
    paths.push_back(path);
    nlohmann::json a = {{"file", name}, {"layers", arch_summary(r.archs[i].arch)}, {"params", r.archs[i].params},
                        {"macs", r.archs[i].macs}, {"draw", r.archs[i].draw}};
    if (!table_path.empty()) a["runtime_ms"] = r.archs[i].runtime_ms;
    archs.push_back(a);
  }
  nlohmann::json j = {{"kind", "spnas-random"}, {"count", cfg.count}, {"seed", cfg.seed}, {"draws", r.draws},
                      {"architectures", archs}};
  if (!r.archs.empty()) j["space"] = r.archs[0].arch.space, j["width"] = r.archs[0].arch.width;
  if (!table_path.empty()) {
    j["table"] = table_path;
    j["space_min_ms"] = r.range.min_ms;
    j["space_max_ms"] = r.range.max_ms;
  }
  if (cfg.target_ms > 0) j["target_ms"] = cfg.target_ms, j["window"] = cfg.window;
  write_file_atomic(dir + "/summary.json", j.dump(2) + "\n");
  return paths;
}

std::string samples_table(const SampleResult& r, bool with_runtime) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-16s %9s %9s %9s  %s\n", "file", with_runtime ? "R (ms)" : "", "params (M)",
                "MACs (M)", "layers");
  out += line;
  for (size_t i = 0; i < r.archs.size(); ++i) {
    const SampledArch& s = r.archs[i];
    std::snprintf(line, sizeof line, "%-16s %9s %9.3f %9.2f  ", sample_file_name(i).c_str(), with_runtime ? fmt(s.runtime_ms).c_str() : "",
                  s.params / 1e6, s.macs / 1e6);
    out += line + arch_summary(s.arch) + "\n";
  }
  return out;
}

}  // namespace spnas
