#include "nas/space.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "engine/checkpoint.h"
#include "engine/tensor.h"
#include "nas/run_util.h"

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

namespace {
// Field access with errors that name the file and the field.
struct Reader {
  const std::string& src;
  int get_int(const json& j, const char* key, const std::string& where, int def = -1) const {
    if (!j.contains(key)) {
      if (def >= 0) return def;
      throw std::runtime_error("space '" + src + "': " + where + " is missing \"" + key + "\"");
    }
    if (!j[key].is_number_integer() || j[key].get<int>() < 0)
      throw std::runtime_error("space '" + src + "': " + where + "." + key + " must be a non-negative integer");
    return j[key].get<int>();
  }
};
}  // namespace

SearchSpace parse_space(const std::string& text, const std::string& source, const SpaceOptions& options) {
  json j = parse_json(text, "space", source);
  Reader r{source};
  SearchSpace s;
  s.source = source;
  s.name = j.value("name", source);
  s.width = options.width;
  if (!(options.width > 0)) throw std::runtime_error("space: width multiplier must be positive");
  s.input_size = options.input_size ? options.input_size : r.get_int(j, "input_size", "the space");
  s.num_classes = options.num_classes ? options.num_classes : r.get_int(j, "num_classes", "the space");
  s.activation = j.value("activation", "relu");
  if (s.activation != "relu" && s.activation != "relu6")
    throw std::runtime_error("space '" + source + "': activation must be \"relu\" or \"relu6\"");
  if (!j.contains("stem") || !j["stem"].is_object()) throw std::runtime_error("space '" + source + "': missing \"stem\"");
  s.stem_channels = round_channels(r.get_int(j["stem"], "channels", "stem"), s.width);
  s.stem_kernel = r.get_int(j["stem"], "kernel", "stem", 3);
  s.stem_stride = r.get_int(j["stem"], "stride", "stem", 1);
  if (!j.contains("head") || !j["head"].is_object()) throw std::runtime_error("space '" + source + "': missing \"head\"");
  s.head_channels = round_channels(r.get_int(j["head"], "channels", "head"), s.width);
  s.dropout = j["head"].value("dropout", 0.0f);
  if (!j.contains("blocks") || !j["blocks"].is_array() || j["blocks"].empty())
    throw std::runtime_error("space '" + source + "': \"blocks\" must be a non-empty list");

  int size = (s.input_size + s.stem_stride - 1) / s.stem_stride;
  int cin = s.stem_channels;
  int bi = 0;
  for (const json& b : j["blocks"]) {
    std::string where = "blocks[" + std::to_string(bi++) + "]";
    std::string type = b.value("type", "");
    int cout = round_channels(r.get_int(b, "channels", where), s.width);
    int stride = r.get_int(b, "stride", where, 1);
    if (stride != 1 && stride != 2) throw std::runtime_error("space '" + source + "': " + where + ".stride must be 1 or 2");
    if (type == "fixed") {
      LayerSpec l;
      l.cin = cin, l.cout = cout, l.stride = stride;
      l.expansion = r.get_int(b, "expansion", where);
      l.kernel = r.get_int(b, "kernel", where);
      if (l.expansion < 1 || l.kernel < 1 || l.kernel % 2 == 0)
        throw std::runtime_error("space '" + source + "': " + where + " needs expansion >= 1 and an odd kernel");
      l.residual = stride == 1 && cin == cout;
      l.in_size = size;
      size = (size + stride - 1) / stride;
      l.out_size = size;
      s.layers.push_back(l);
      cin = cout;
    } else if (type == "searchable") {
      int repeats = r.get_int(b, "repeats", where, 1);
      if (repeats < 1) throw std::runtime_error("space '" + source + "': " + where + ".repeats must be >= 1");
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
      throw std::runtime_error("space '" + source + "': " + where + ".type must be \"fixed\" or \"searchable\", got \"" +
                               type + "\"");
    }
  }
  if (s.num_searchable() == 0) throw std::runtime_error("space '" + source + "': no searchable block");
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
  json j = parse_json(text, "arch", source);
  Arch a;
  if (!j.is_object()) throw std::runtime_error("arch '" + source + "': must be a JSON object");
  if (j.contains("space")) {
    if (!j["space"].is_string()) throw std::runtime_error("arch '" + source + "': \"space\" must be a string");
    a.space = j["space"].get<std::string>();
  }
  if (j.contains("width")) {
    if (!j["width"].is_number() || !(j["width"].get<float>() > 0))
      throw std::runtime_error("arch '" + source + "': \"width\" must be a positive number");
    a.width = j["width"].get<float>();
  }
  if (!j.contains("layers") || !j["layers"].is_array())
    throw std::runtime_error("arch '" + source + "': \"layers\" must be a list of choices");
  for (size_t i = 0; i < j["layers"].size(); ++i) {
    const json& v = j["layers"][i];
    std::string where = "arch '" + source + "': layers[" + std::to_string(i) + "]";
    if (!v.is_string()) throw std::runtime_error(where + " must be a string");
    a.layers.push_back(parse_choice(v.get<std::string>(), where));
  }
  if (j.contains("se")) {
    if (!j["se"].is_array()) throw std::runtime_error("arch '" + source + "': \"se\" must be a list of booleans");
    for (size_t i = 0; i < j["se"].size(); ++i) {
      if (!j["se"][i].is_boolean())
        throw std::runtime_error("arch '" + source + "': se[" + std::to_string(i) + "] must be true or false");
      a.se.push_back(j["se"][i].get<bool>());
    }
    if (a.se.size() != a.layers.size())
      throw std::runtime_error("arch '" + source + "': \"se\" has " + std::to_string(a.se.size()) +
                               " entries but \"layers\" has " + std::to_string(a.layers.size()));
  }
  a.input_size = j.value("input_size", 0);
  a.num_classes = j.value("num_classes", 0);
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
