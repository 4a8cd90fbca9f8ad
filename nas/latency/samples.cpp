#include "nas/latency/samples.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/io.h"

namespace spnas {

using json = nlohmann::json;

PieceSample mbconv_piece(const LayerSpec& l, int kernel, int expansion, bool se, int batch) {
  PieceSample s;
  s.kind = "mbconv";
  s.cin = l.cin;
  s.cout = l.cout;
  s.in_size = l.in_size;
  s.kernel = kernel;
  s.expansion = expansion;
  s.stride = l.stride;
  s.se = se;
  s.residual = l.residual;
  s.batch = batch;
  return s;
}

PieceSample stem_piece(const SearchSpace& space, int batch) {
  PieceSample s;
  s.kind = "stem";
  s.cin = 3;
  s.cout = space.stem_channels;
  s.in_size = space.input_size;
  s.kernel = space.stem_kernel;
  s.stride = space.stem_stride;
  s.batch = batch;
  return s;
}

PieceSample head_piece(const SearchSpace& space, int batch) {
  PieceSample s;
  s.kind = "head";
  s.cin = space.layers.back().cout;
  s.cout = space.head_channels;
  s.in_size = space.layers.back().out_size;
  s.classes = space.num_classes;
  s.batch = batch;
  return s;
}

std::string piece_samples_to_json(const std::vector<PieceSample>& samples) {
  json j;
  j["format"] = "spnas-piece-samples";
  j["version"] = 1;
  json a = json::array();
  for (const PieceSample& s : samples) {
    json o;
    o["kind"] = s.kind;
    o["cin"] = s.cin;
    o["cout"] = s.cout;
    o["in_size"] = s.in_size;
    o["kernel"] = s.kernel;
    o["stride"] = s.stride;
    o["expansion"] = s.expansion;
    o["se"] = s.se;
    o["residual"] = s.residual;
    o["classes"] = s.classes;
    o["batch"] = s.batch;
    o["ms"] = s.ms;
    o["spread"] = s.spread;
    a.push_back(o);
  }
  j["samples"] = a;
  return j.dump(1) + "\n";
}

std::vector<PieceSample> parse_piece_samples(const std::string& text, const std::string& source) {
  json j = parse_json(text, "piece samples", source);
  if (j.value("format", "") != "spnas-piece-samples" || j.value("version", 0) != 1 || !j.contains("samples") ||
      !j["samples"].is_array())
    throw std::runtime_error("piece samples '" + source +
                             "': expected {\"format\": \"spnas-piece-samples\", \"version\": 1, \"samples\": [...]}");
  std::vector<PieceSample> out;
  for (size_t i = 0; i < j["samples"].size(); ++i) {
    const json& o = j["samples"][i];
    PieceSample s;
    try {
      s.kind = o.at("kind").get<std::string>();
      s.cin = o.at("cin").get<int>();
      s.cout = o.at("cout").get<int>();
      s.in_size = o.at("in_size").get<int>();
      s.kernel = o.value("kernel", 1);
      s.stride = o.value("stride", 1);
      s.expansion = o.value("expansion", 1);
      s.se = o.value("se", false);
      s.residual = o.value("residual", false);
      s.classes = o.value("classes", 0);
      s.batch = o.value("batch", 1);
      s.ms = o.at("ms").get<double>();
      s.spread = o.value("spread", 0.0);
    } catch (const std::exception& e) {
      throw std::runtime_error("piece samples '" + source + "': samples[" + std::to_string(i) + "]: " + e.what());
    }
    if (s.kind != "mbconv" && s.kind != "stem" && s.kind != "head")
      throw std::runtime_error("piece samples '" + source + "': samples[" + std::to_string(i) +
                               "]: kind must be mbconv, stem or head");
    out.push_back(s);
  }
  return out;
}

void save_piece_samples(const std::string& path, const std::vector<PieceSample>& samples) {
  write_file_atomic(path, piece_samples_to_json(samples));
}

std::vector<PieceSample> load_piece_samples(const std::string& path) {
  return parse_piece_samples(read_text_file(path, "piece samples"), path);
}

}  // namespace spnas
