#include "nas/latency/table.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "engine/io.h"
#include "engine/tensor.h"

namespace spnas {

using json = nlohmann::json;

double LayerCost::cost(Choice c) const {
  switch (c) {
    case Choice::K3E3: return k3_e3;
    case Choice::K3E6: return k3_e6;
    case Choice::K5E3: return k5_e3;
    case Choice::K5E6: return k5_e6;
    case Choice::Skip: return 0.0;
  }
  return 0.0;
}

static std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == sep) {
      out.push_back(cur);
      cur.clear();
    } else if (ch != '\r') {
      cur += ch;
    }
  }
  out.push_back(cur);
  return out;
}

// Bounds on a table's fields. Times: far beyond any layer's, and they keep the runtime model's sums
// and its ratio k3_e6 / k5_e6 finite (k5_e6 is at least a nanosecond).
constexpr double kMaxMs = 1e9, kMinK5E6Ms = 1e-6, kMaxSpread = 1e9;
constexpr int kMaxTableChannels = 1 << 20, kMaxTableBatch = 65536, kMaxTableThreads = 4096;

static double parse_number(const std::string& s, const std::string& where) {
  try {
    size_t pos = 0;
    double v = std::stod(s, &pos);
    if (pos != s.size() || !std::isfinite(v)) throw std::invalid_argument("x");
    return v;
  } catch (...) {
    throw std::runtime_error(where + ": \"" + s + "\" is not a number");
  }
}

static int parse_int(const std::string& s, int lo, int hi, const std::string& where) {
  const double v = parse_number(s, where);
  if (!(v >= lo && v <= hi && v == std::floor(v)))
    throw std::runtime_error(where + ": \"" + s + "\" is not an integer in [" + std::to_string(lo) + ", " +
                             std::to_string(hi) + "]");
  return int(v);
}

static LatencyTable parse_csv(const std::string& text, const std::string& source, double fixed_ms) {
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  auto header = split(line, ',');
  const std::vector<std::string> expect = {"block", "cin", "cout", "stride", "expanded_channels_e6", "skip_allowed",
                                           "ms_k3_e3", "ms_k3_e6", "ms_k5_e3", "ms_k5_e6"};
  if (header != expect)
    throw std::runtime_error("latency table '" + source + "': CSV header must be " +
                             "block,cin,cout,stride,expanded_channels_e6,skip_allowed,ms_k3_e3,ms_k3_e6,ms_k5_e3,ms_k5_e6");
  if (fixed_ms < 0)
    throw std::runtime_error("latency table '" + source +
                             "': a CSV table has no fixed cost; pass it (--fixed-ms, e.g. 19.5999 for the Pixel 1 table)");
  LatencyTable t;
  t.source = source;
  t.fixed_ms = fixed_ms;
  int lineno = 1;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line == "\r") continue;
    auto f = split(line, ',');
    std::string where = "latency table '" + source + "' line " + std::to_string(lineno);
    if (f.size() != expect.size())
      throw std::runtime_error(where + ": " + std::to_string(f.size()) + " fields, expected " +
                               std::to_string(expect.size()));
    LayerCost c;
    c.cin = parse_int(f[1], 1, kMaxTableChannels, where + " cin");
    c.cout = parse_int(f[2], 1, kMaxTableChannels, where + " cout");
    c.stride = parse_int(f[3], 1, 2, where + " stride");
    if (f[5] != "yes" && f[5] != "no") throw std::runtime_error(where + ": skip_allowed must be yes or no");
    c.skip_allowed = f[5] == "yes";
    c.k3_e3 = parse_number(f[6], where + " ms_k3_e3");
    c.k3_e6 = parse_number(f[7], where + " ms_k3_e6");
    c.k5_e3 = parse_number(f[8], where + " ms_k5_e3");
    c.k5_e6 = parse_number(f[9], where + " ms_k5_e6");
    t.layers.push_back(c);
  }
  return t;
}

namespace {

LatencyTable parse_json_table(const std::string& text, const std::string& source) {
  json j = parse_json(text, "latency table", source);
  LatencyTable t;
  t.source = source;
  const std::string file = "latency table '" + source + "'";
  const JsonFields root(j, file, "");
  if (root.string("format", "") != "spnas-latency-table") root.fail("format", "must be \"spnas-latency-table\"");
  const int64_t version = root.integer("version", 0, std::numeric_limits<int>::max(), 0);
  if (version != 1) throw std::runtime_error(file + ": unsupported version " + std::to_string(version));
  // Metadata: a missing field is unknown (0 or ""; older tables have no clock), a present one must
  // have the right type and range.
  auto one_of = [&](const char* key, std::initializer_list<const char*> allowed) {
    const std::string v = root.string(key, "");
    if (v.empty()) return v;
    std::string list;
    for (const char* a : allowed) {
      if (v == a) return v;
      list += std::string(list.empty() ? "" : " or ") + a;
    }
    root.fail(key, "must be " + list + ", got \"" + v + "\"");
  };
  t.space = root.string("space", "");
  t.width = float(root.number("width", 1e-3, kMaxWidth, 0.0));
  t.input_size = int(root.integer("input_size", 1, kMaxInputSize, 0));
  t.batch = int(root.integer("batch", 1, kMaxTableBatch, 0));
  t.threads = int(root.integer("threads", 1, kMaxTableThreads, 0));
  t.mode = one_of("mode", {"inference", "training"});
  t.backend = root.string("backend", "");
  t.clock = one_of("clock", {"wall", "cpu"});
  t.quantile = root.number("quantile", 0, 1, 0.0);
  t.cpu = root.string("cpu", "");
  t.isa = root.string("isa", "");
  t.fixed_ms = root.number("fixed_ms", 0, kMaxMs);
  t.fixed_spread = root.number("fixed_spread", 0, kMaxSpread, 0.0);
  t.fixed_calibration_ms = root.number("fixed_calibration_ms", -kMaxMs, kMaxMs, 0.0);
  if (root.has("candidate_calibration_ms")) {
    const json& cc = j["candidate_calibration_ms"];
    auto in_range = [](const json& v) { return v.is_number() && std::fabs(v.get<double>()) <= kMaxMs; };
    if (!cc.is_array() || cc.size() != 4 || !std::all_of(cc.begin(), cc.end(), in_range))
      throw std::runtime_error(file + ": \"candidate_calibration_ms\" must be a list of 4 numbers");
    for (int k = 0; k < 4; ++k) t.candidate_calibration_ms[k] = cc[size_t(k)].get<double>();
  }
  const json& layers = root.array("layers");
  for (size_t i = 0; i < layers.size(); ++i) {
    const JsonFields l(layers[i], file, "layers[" + std::to_string(i) + "]");
    LayerCost c;
    c.k3_e3 = l.number("k3_e3", 0, kMaxMs);
    c.k3_e6 = l.number("k3_e6", 0, kMaxMs);
    c.k5_e3 = l.number("k5_e3", 0, kMaxMs);
    c.k5_e6 = l.number("k5_e6", 0, kMaxMs);
    c.se = l.number("se", 0, kMaxMs, 0.0);
    c.cin = int(l.integer("cin", 0, kMaxTableChannels, 0));
    c.cout = int(l.integer("cout", 0, kMaxTableChannels, 0));
    c.stride = int(l.integer("stride", 0, 2, 0));
    c.skip_allowed = l.boolean("skip_allowed", false);
    c.spread = l.number("spread", 0, kMaxSpread, 0.0);
    c.count = int(l.integer("count", 0, std::numeric_limits<int>::max(), 0));
    t.layers.push_back(c);
  }
  return t;
}

}  // namespace

LatencyTable parse_latency_table(const std::string& text, const std::string& source, double fixed_ms) {
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) throw std::runtime_error("latency table '" + source + "': empty file");
  LatencyTable t;
  if (text[first] != '{') {
    t = parse_csv(text, source, fixed_ms);
  } else {
    t = parse_json_table(text, source);
    if (fixed_ms >= 0) t.fixed_ms = fixed_ms;
  }
  if (t.layers.empty()) throw std::runtime_error("latency table '" + source + "': no layers");
  for (size_t i = 0; i < t.layers.size(); ++i) {
    const LayerCost& c = t.layers[i];
    for (double v : {c.k3_e3, c.k3_e6, c.k5_e3, c.k5_e6, c.se})
      if (!(v >= 0 && v <= kMaxMs))
        throw std::runtime_error("latency table '" + source + "': layer " + std::to_string(i) +
                                 " has a cost outside [0, 1e9] ms");
    if (!(c.k5_e6 >= kMinK5E6Ms))
      throw std::runtime_error("latency table '" + source + "': layer " + std::to_string(i) +
                               " needs a k5_e6 of at least 1e-6 ms (the formula divides by it)");
  }
  if (!(t.fixed_ms >= 0 && t.fixed_ms <= kMaxMs))
    throw std::runtime_error("latency table '" + source + "': fixed cost must be in [0, 1e9] ms");
  return t;
}

LatencyTable load_latency_table(const std::string& path, double fixed_ms) {
  return parse_latency_table(read_text_file(path, "latency table"), path, fixed_ms);
}

std::string latency_table_to_json(const LatencyTable& t) {
  json j;
  j["format"] = "spnas-latency-table";
  j["version"] = 1;
  auto text = [&](const char* key, const std::string& v) {
    if (!v.empty()) j[key] = v;
  };
  auto count = [&](const char* key, int v) {
    if (v > 0) j[key] = v;
  };
  text("space", t.space);
  if (t.width > 0) j["width"] = t.width;
  count("input_size", t.input_size);
  count("batch", t.batch);
  count("threads", t.threads);
  text("cpu", t.cpu);
  text("isa", t.isa);
  text("mode", t.mode);
  text("backend", t.backend);
  text("clock", t.clock);
  if (t.quantile > 0) j["quantile"] = t.quantile;
  j["unit"] = "ms";
  j["fixed_ms"] = t.fixed_ms;
  j["fixed_spread"] = t.fixed_spread;
  j["fixed_calibration_ms"] = t.fixed_calibration_ms;
  j["candidate_calibration_ms"] = {t.candidate_calibration_ms[0], t.candidate_calibration_ms[1],
                                   t.candidate_calibration_ms[2], t.candidate_calibration_ms[3]};
  json layers = json::array();
  for (const LayerCost& c : t.layers) {
    json l;
    l["cin"] = c.cin;
    l["cout"] = c.cout;
    l["stride"] = c.stride;
    l["skip_allowed"] = c.skip_allowed;
    l["k3_e3"] = c.k3_e3;
    l["k3_e6"] = c.k3_e6;
    l["k5_e3"] = c.k5_e3;
    l["k5_e6"] = c.k5_e6;
    if (c.se > 0) l["se"] = c.se;
    l["spread"] = c.spread;
    l["count"] = c.count;
    layers.push_back(l);
  }
  j["layers"] = layers;
  return j.dump(2) + "\n";
}

void save_latency_table(const std::string& path, const LatencyTable& t) {
  write_file_atomic(path, latency_table_to_json(t));
}

void check_table_matches(const LatencyTable& t, const SearchSpace& s) {
  auto idx = s.searchable_indices();
  if (t.layers.size() != idx.size())
    throw std::runtime_error("latency table '" + t.source + "' has " + std::to_string(t.layers.size()) +
                             " layers but space '" + s.name + "' has " + std::to_string(idx.size()) +
                             " searchable layers");
  for (size_t i = 0; i < idx.size(); ++i) {
    const LayerCost& c = t.layers[i];
    const LayerSpec& l = s.layers[idx[i]];
    if ((c.cin && c.cin != l.cin) || (c.cout && c.cout != l.cout) || (c.stride && c.stride != l.stride))
      throw std::runtime_error("latency table '" + t.source + "' layer " + std::to_string(i) + " is " +
                               std::to_string(c.cin) + "->" + std::to_string(c.cout) + " stride " +
                               std::to_string(c.stride) + " but the space's is " + std::to_string(l.cin) + "->" +
                               std::to_string(l.cout) + " stride " + std::to_string(l.stride) +
                               " (measured for another space or width?)");
  }
}

namespace {

// A width or quantile as a user writes it: "1.0", "0.5", "0.25".
std::string number_text(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  std::string s = b;
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

}  // namespace

std::vector<std::string> table_conflicts(const LatencyTable& t, const TableSettings& s) {
  std::vector<std::string> out;
  auto conflict = [&](const std::string& given, const std::string& measured) {
    out.push_back(given + " conflicts with the latency table '" + t.source + "' (" + measured + ")");
  };
  if (s.space && !t.space.empty() && *s.space != t.space)
    conflict("--space " + *s.space, "measured for space '" + t.space + "'");
  if (s.width && t.width > 0 && std::fabs(*s.width - t.width) > 1e-6f)
    conflict("--width " + number_text(*s.width), "measured at width " + number_text(t.width));
  if (s.input_size && t.input_size > 0 && *s.input_size != t.input_size)
    conflict("--input-size " + std::to_string(*s.input_size), "measured at input size " + std::to_string(t.input_size));
  if (s.batch && t.batch > 0 && *s.batch != t.batch)
    conflict("--batch " + std::to_string(*s.batch), "measured at batch " + std::to_string(t.batch));
  if (s.threads && t.threads > 0 && *s.threads != t.threads)
    conflict("--threads " + std::to_string(*s.threads), "measured with " + std::to_string(t.threads) + " thread(s)");
  if (s.quantile && t.quantile > 0 && std::fabs(*s.quantile - t.quantile) > 1e-9)
    conflict("--quantile " + number_text(*s.quantile), "its entries are the " + number_text(t.quantile) + " quantile");
  if (s.clock && !t.clock.empty() && *s.clock != t.clock)
    conflict("--clock " + *s.clock, "measured with the " + t.clock + " clock");
  if (s.backend && !t.backend.empty() && *s.backend != t.backend)
    conflict("--backend " + *s.backend, "measured with the " + t.backend + " backend");
  if (s.training_step && !t.mode.empty() && *s.training_step != (t.mode == "training"))
    conflict(*s.training_step ? "--train-step" : "inference (no --train-step)", "measured for " + t.mode);
  return out;
}

void reconcile_with_table(const LatencyTable& t, TableSettings& s) {
  const std::vector<std::string> conflicts = table_conflicts(t, s);
  if (!conflicts.empty()) {
    std::string message = conflicts[0];
    for (size_t i = 1; i < conflicts.size(); ++i) message += "; " + conflicts[i];
    throw std::runtime_error(message);
  }
  if (!s.space && !t.space.empty()) s.space = t.space;
  if (!s.width && t.width > 0) s.width = t.width;
  if (!s.input_size && t.input_size > 0) s.input_size = t.input_size;
  if (!s.batch && t.batch > 0) s.batch = t.batch;
  if (!s.threads && t.threads > 0) s.threads = t.threads;
  if (!s.quantile && t.quantile > 0) s.quantile = t.quantile;
  if (!s.clock && !t.clock.empty()) s.clock = t.clock;
  if (!s.backend && !t.backend.empty()) s.backend = t.backend;
  if (!s.training_step && !t.mode.empty()) s.training_step = t.mode == "training";
}

RuntimeMode parse_runtime_mode(const std::string& s) {
  if (s == "formula") return RuntimeMode::Formula;
  if (s == "table") return RuntimeMode::Table;
  throw std::runtime_error("runtime model must be \"formula\" or \"table\", got \"" + s + "\"");
}

double choice_runtime(const LayerCost& c, Choice choice, RuntimeMode mode) {
  if (mode == RuntimeMode::Table || choice == Choice::Skip) return c.cost(choice);
  // runtime_model's formula with every indicator 0 or 1.
  const double rc = choice_expansion(choice) == 6 ? c.k5_e6 : c.k5_e3;
  return choice_kernel(choice) == 5 ? rc : rc * c.k3_e6 / c.k5_e6;
}

double predict_runtime(const LatencyTable& t, const Arch& a, RuntimeMode mode) {
  check(a.layers.size() == t.layers.size(), "predict_runtime",
        "architecture has " + std::to_string(a.layers.size()) + " searchable layers but the table has " +
            std::to_string(t.layers.size()));
  double R = t.fixed_ms;
  for (size_t l = 0; l < a.layers.size(); ++l) {
    R += choice_runtime(t.layers[l], a.layers[l], mode);
    if (!a.se.empty() && a.se[l] && a.layers[l] != Choice::Skip) R += t.layers[l].se;
  }
  return R;
}

std::vector<Choice> allowed_choices(const LayerSpec& layer) {
  std::vector<Choice> c = {Choice::K3E3, Choice::K3E6, Choice::K5E3, Choice::K5E6};
  if (layer.skip_allowed) c.push_back(Choice::Skip);
  return c;
}

RuntimeBounds table_runtime_bounds(const LatencyTable& t, const SearchSpace& s, bool with_se) {
  check_table_matches(t, s);
  const std::vector<int> searchable = s.searchable_indices();
  RuntimeBounds b;
  b.smallest.space = b.largest.space = s.source;
  b.smallest.width = b.largest.width = s.width;
  b.min_ms = b.max_ms = t.fixed_ms;
  for (size_t l = 0; l < t.layers.size(); ++l) {
    const LayerCost& c = t.layers[l];
    const std::vector<Choice> allowed = allowed_choices(s.layers[searchable[l]]);
    Choice lo = allowed[0], hi = allowed[0];
    for (Choice k : allowed) {
      if (c.cost(k) < c.cost(lo)) lo = k;
      if (c.cost(k) > c.cost(hi)) hi = k;
    }
    b.smallest.layers.push_back(lo);
    b.largest.layers.push_back(hi);
    b.min_ms += c.cost(lo);
    b.max_ms += c.cost(hi) + (with_se ? c.se : 0.0);
  }
  if (with_se) b.largest.se.assign(t.layers.size(), true);
  return b;
}

}  // namespace spnas
