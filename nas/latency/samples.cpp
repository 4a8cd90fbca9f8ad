#include "nas/latency/samples.h"

#include <limits>
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
  const std::string file = "piece samples '" + source + "'";
  const JsonFields root(j, file, "");
  if (root.string("format", "") != "spnas-piece-samples" ||
      root.integer("version", 0, std::numeric_limits<int>::max(), 0) != 1 || !root.has("samples") ||
      !j["samples"].is_array())
    throw std::runtime_error(file + ": expected {\"format\": \"spnas-piece-samples\", \"version\": 1, \"samples\": [...]}");
  // Sizes as a space file may have them (nas/space.h), so that every feature the predictor computes
  // from them is finite.
  std::vector<PieceSample> out;
  for (size_t i = 0; i < j["samples"].size(); ++i) {
    const JsonFields o(j["samples"][i], file, "samples[" + std::to_string(i) + "]");
    PieceSample s;
    s.kind = o.string("kind");
    if (s.kind != "mbconv" && s.kind != "stem" && s.kind != "head") o.fail("kind", "must be mbconv, stem or head");
    s.cin = int(o.integer("cin", 1, kMaxChannels));
    s.cout = int(o.integer("cout", 1, kMaxChannels));
    s.in_size = int(o.integer("in_size", 1, kMaxInputSize));
    s.kernel = int(o.integer("kernel", 1, kMaxKernel, 1));
    if (s.kernel % 2 == 0) o.fail("kernel", "must be odd, got " + std::to_string(s.kernel));
    s.stride = int(o.integer("stride", 1, 2, 1));
    s.expansion = int(o.integer("expansion", 1, kMaxExpansion, 1));
    s.se = o.boolean("se", false);
    s.residual = o.boolean("residual", false);
    s.classes = int(o.integer("classes", 0, kMaxClasses, 0));
    s.batch = int(o.integer("batch", 1, 65536, 1));
    s.ms = o.number("ms", 0, 1e9);
    s.spread = o.number("spread", 0, 1e9, 0.0);
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
