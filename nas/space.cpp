#include "nas/space.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "engine/checkpoint.h"
#include "engine/tensor.h"
#include "engine/io.h"

namespace spnas {

const std::map<std::string, std::string>& builtin_spaces();  // generated from nas/spaces/*.json

using json = nlohmann::json;

int SearchSpace::num_searchable() const {
  int n = 0;
  for (const LayerSpec& l : layers) n += l.searchable;
  return n;
}

std::vector<int> SearchSpace::searchable_indices() const {
  std::vector<int> v;
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].searchable) v.push_back(int(i));
  return v;
}

int round_channels(int channels, float width) {
  if (width == 1.0f) return channels;
  const int divisor = 8;
  float f = channels * width;
  int n = std::max(divisor, int(f + divisor / 2.0f) / divisor * divisor);
  if (n < 0.9f * f) n += divisor;
  return n;
}

std::vector<std::string> builtin_space_names() {
  std::vector<std::string> v;
  for (auto& kv : builtin_spaces()) v.push_back(kv.first);
  return v;
}

SearchSpace load_space(const std::string& name_or_file, const SpaceOptions& options) {
  auto it = builtin_spaces().find(name_or_file);
  if (it != builtin_spaces().end()) return parse_space(it->second, name_or_file, options);
  std::ifstream probe(name_or_file);
  if (!probe) {
    std::string names;
    for (auto& n : builtin_space_names()) names += (names.empty() ? "" : ", ") + n;
    throw std::runtime_error("space: '" + name_or_file + "' is neither a built-in space (" + names +
                             ") nor a readable file");
  }
  return parse_space(read_text_file(name_or_file, "space"), name_or_file, options);
}

SearchSpace parse_space(const std::string& text, const std::string& source, const SpaceOptions& options) {
  const json j = parse_json(text, "space", source);
  const std::string file = "space '" + source + "'";
  JsonFields top(j, file, "");
  SearchSpace s;
  s.source = source;
  s.name = top.string("name", source);
  if (!(options.width > 0 && options.width <= kMaxWidth))
    throw std::runtime_error(file + ": the width multiplier must be in (0, " + fmt(kMaxWidth, 0) + "], got " +
                             fmt(options.width, 3));
  s.width = options.width;
  s.input_size = options.input_size ? options.input_size : int(top.integer("input_size", 8, kMaxInputSize));
  s.num_classes = options.num_classes ? options.num_classes : int(top.integer("num_classes", 2, kMaxClasses));
  if (s.input_size < 8 || s.input_size > kMaxInputSize)
    throw std::runtime_error(file + ": input size must be in 8.." + std::to_string(kMaxInputSize) + ", got " +
                             std::to_string(s.input_size));
  if (s.num_classes < 2 || s.num_classes > kMaxClasses)
    throw std::runtime_error(file + ": the class count must be in 2.." + std::to_string(kMaxClasses) + ", got " +
                             std::to_string(s.num_classes));
  s.input_channels = options.input_channels ? options.input_channels : 3;
  if (s.input_channels != 1 && s.input_channels != 3)
    throw std::runtime_error(file + ": input channels must be 1 or 3, got " + std::to_string(s.input_channels));
  s.activation = top.string("activation", "relu");
  if (s.activation != "relu" && s.activation != "relu6")
    throw std::runtime_error(file + ": activation must be \"relu\" or \"relu6\", got \"" + s.activation + "\"");
  // Channels after the width multiplier must stay within bounds too.
  auto channels = [&](const JsonFields& f, const std::string& where) {
    const int c = round_channels(int(f.integer("channels", 1, kMaxChannels)), s.width);
    if (c > kMaxChannels)
      throw std::runtime_error(file + ": " + where + " has " + std::to_string(c) + " channels at width " +
                               fmt(s.width, 3) + ", more than " + std::to_string(kMaxChannels));
    return c;
  };
  // One rule for every convolution kernel, stem and blocks: odd, 1..7.
  auto kernel = [&](const JsonFields& f, int def) {
    const int k = int(def ? f.integer("kernel", 1, kMaxKernel, def) : f.integer("kernel", 1, kMaxKernel));
    if (k % 2 == 0) f.fail("kernel", "must be odd (1, 3, 5 or 7), got " + std::to_string(k));
    return k;
  };
  JsonFields stem(top.object("stem"), file, "stem");
  s.stem_channels = channels(stem, "stem");
  s.stem_kernel = kernel(stem, 3);
  s.stem_stride = int(stem.integer("stride", 1, 2, 1));
  JsonFields head(top.object("head"), file, "head");
  s.head_channels = channels(head, "head");
  s.dropout = float(head.number("dropout", 0.0, 0.95, 0.0));
  const json& blocks = top.array("blocks");
  if (blocks.empty()) throw std::runtime_error(file + ": \"blocks\" must be a non-empty list");
  if (blocks.size() > 256) throw std::runtime_error(file + ": more than 256 blocks");

  int size = (s.input_size + s.stem_stride - 1) / s.stem_stride;
  int cin = s.stem_channels;
  for (size_t bi = 0; bi < blocks.size(); ++bi) {
    const std::string where = "blocks[" + std::to_string(bi) + "]";
    JsonFields b(blocks[bi], file, where);
    const std::string type = b.string("type", "");
    const int cout = channels(b, where);
    const int stride = int(b.integer("stride", 1, 2, 1));
    if (type == "fixed") {
      LayerSpec l;
      l.cin = cin, l.cout = cout, l.stride = stride;
      l.expansion = int(b.integer("expansion", 1, kMaxExpansion));
      l.kernel = kernel(b, 0);
      l.residual = stride == 1 && cin == cout;
      l.in_size = size;
      size = (size + stride - 1) / stride;
      l.out_size = size;
      s.layers.push_back(l);
      cin = cout;
    } else if (type == "searchable") {
      const int repeats = int(b.integer("repeats", 1, kMaxRepeats, 1));
      for (int k = 0; k < repeats; ++k) {
        LayerSpec l;
        l.cin = cin, l.cout = cout, l.stride = k == 0 ? stride : 1;
        l.searchable = true;
        l.expansion = 6, l.kernel = 5;
        l.residual = l.stride == 1 && cin == cout;
        // The first layer of a stage is never removable, even when its stride is 1 and its channels
        // happen to match.
        l.skip_allowed = k > 0 && l.residual;
        l.in_size = size;
        size = (size + l.stride - 1) / l.stride;
        l.out_size = size;
        s.layers.push_back(l);
        cin = cout;
      }
    } else {
      b.fail("type", "must be \"fixed\" or \"searchable\", got \"" + type + "\"");
    }
  }
  if (s.num_searchable() == 0) throw std::runtime_error(file + ": no searchable block");
  return s;
}

// ---- choices and architectures ----

const char* choice_name(Choice c) {
  switch (c) {
    case Choice::K3E3: return "3x3-3";
    case Choice::K3E6: return "3x3-6";
    case Choice::K5E3: return "5x5-3";
    case Choice::K5E6: return "5x5-6";
    case Choice::Skip: return "skip";
  }
  return "?";
}

Choice parse_choice(const std::string& s, const std::string& where) {
  for (Choice c : {Choice::K3E3, Choice::K3E6, Choice::K5E3, Choice::K5E6, Choice::Skip})
    if (s == choice_name(c)) return c;
  throw std::runtime_error(where + ": unknown layer choice \"" + s + "\" (expected 3x3-3, 3x3-6, 5x5-3, 5x5-6 or skip)");
}

Choice decode_choice(bool d_k5, bool d_e6, bool d_skip) {
  if (!d_skip) return Choice::Skip;
  if (d_k5) return d_e6 ? Choice::K5E6 : Choice::K5E3;
  return d_e6 ? Choice::K3E6 : Choice::K3E3;
}

Arch parse_arch(const std::string& text, const std::string& source) {
  const json j = parse_json(text, "arch", source);
  const std::string file = "arch '" + source + "'";
  JsonFields f(j, file, "");
  Arch a;
  a.space = f.string("space", a.space);
  a.width = float(f.number("width", 1e-3, kMaxWidth, 1.0));
  const json& layers = f.array("layers");
  if (layers.size() > 1000) throw std::runtime_error(file + ": more than 1000 layers");
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string where = file + ": layers[" + std::to_string(i) + "]";
    if (!layers[i].is_string()) throw std::runtime_error(where + " must be a string");
    a.layers.push_back(parse_choice(layers[i].get<std::string>(), where));
  }
  if (f.has("se")) {
    const json& se = f.array("se");
    for (size_t i = 0; i < se.size(); ++i) {
      if (!se[i].is_boolean()) throw std::runtime_error(file + ": se[" + std::to_string(i) + "] must be true or false");
      a.se.push_back(se[i].get<bool>());
    }
    if (a.se.size() != a.layers.size())
      throw std::runtime_error(file + ": \"se\" has " + std::to_string(a.se.size()) + " entries but \"layers\" has " +
                               std::to_string(a.layers.size()));
  }
  // 0 (or absent) means the space's own.
  a.input_size = int(f.integer("input_size", 0, kMaxInputSize, 0));
  if (a.input_size && a.input_size < 8) f.fail("input_size", "must be 0 (the space's) or at least 8");
  a.num_classes = int(f.integer("num_classes", 0, kMaxClasses, 0));
  if (a.num_classes == 1) f.fail("num_classes", "must be 0 (the space's) or at least 2");
  a.input_channels = int(f.integer("input_channels", 0, 3, 0));
  if (a.input_channels == 2) f.fail("input_channels", "must be 1 or 3");
  return a;
}

Arch load_arch(const std::string& path) { return parse_arch(read_text_file(path, "arch"), path); }

std::string arch_to_json(const Arch& a) {
  json j;
  j["space"] = a.space;
  j["width"] = a.width;
  json layers = json::array();
  for (Choice c : a.layers) layers.push_back(choice_name(c));
  j["layers"] = layers;
  if (!a.se.empty()) j["se"] = a.se;
  if (a.input_size) j["input_size"] = a.input_size;
  if (a.num_classes) j["num_classes"] = a.num_classes;
  if (a.input_channels && a.input_channels != 3) j["input_channels"] = a.input_channels;
  return j.dump(2) + "\n";
}

void save_arch(const std::string& path, const Arch& a) { write_file_atomic(path, arch_to_json(a)); }

void validate_arch(const Arch& a, const SearchSpace& s, const std::string& source) {
  auto idx = s.searchable_indices();
  if (a.layers.size() != idx.size())
    throw std::runtime_error("arch '" + source + "': \"layers\" has " + std::to_string(a.layers.size()) +
                             " entries but space '" + s.name + "' has " + std::to_string(idx.size()) +
                             " searchable layers");
  for (size_t i = 0; i < idx.size(); ++i)
    if (a.layers[i] == Choice::Skip && !s.layers[idx[i]].skip_allowed)
      throw std::runtime_error("arch '" + source + "': layers[" + std::to_string(i) +
                               "] is \"skip\" but that layer cannot be removed (it changes stride or channels)");
}

std::string arch_summary(const Arch& a) {
  std::string s;
  for (size_t i = 0; i < a.layers.size(); ++i) {
    s += (i ? " " : "");
    s += choice_name(a.layers[i]);
    if (!a.se.empty() && a.se[i]) s += "+se";
  }
  return s;
}

}  // namespace spnas
