#include "fuzz/targets.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <stdexcept>

#include "data/data.h"
#include "engine/checkpoint.h"
#include "nas/latency/predictor.h"
#include "nas/latency/samples.h"
#include "nas/latency/table.h"
#include "nas/runtime.h"
#include "nas/search.h"
#include "nas/space.h"
#include "tests/nas_fixtures.h"
#include "tests/test_data_jpeg.h"
#include "tests/test_data_util.h"

// Only the PNG and BMP writers are used (for image seeds); static so that a test linking this file
// may define the implementation too.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace spnas {
const std::map<std::string, std::string>& builtin_spaces();  // nas/spaces/*.json, compiled in by CMake
}

namespace spnas::fuzz {
namespace {

// A parsed result that breaks the parser's promises: a bug, reported as such (not a refusal).
void expect(bool ok, const std::string& what) {
  if (!ok) throw std::logic_error("fuzz: parser accepted an input but " + what);
}

std::string text_of(const uint8_t* data, size_t size) { return std::string(reinterpret_cast<const char*>(data), size); }

bool finite_nonneg(double v) { return std::isfinite(v) && v >= 0; }

int ceil_div(int a, int b) { return a / b + (a % b != 0); }

// ---- search spaces and architectures ----

void check_space(const SearchSpace& s) {
  expect(s.width > 0 && s.width <= kMaxWidth, "the width multiplier is out of range");
  expect(s.input_size >= 1 && s.input_size <= kMaxInputSize, "input_size is out of range");
  expect(s.num_classes >= 2 && s.num_classes <= kMaxClasses, "num_classes is out of range");
  expect(s.input_channels == 1 || s.input_channels == 3, "input_channels is not 1 or 3");
  expect(s.activation == "relu" || s.activation == "relu6", "the activation is unknown");
  expect(std::isfinite(s.dropout) && s.dropout >= 0 && s.dropout < 1, "dropout is not in [0, 1)");
  auto channels_ok = [&](int c) { return c >= 1 && c <= kMaxChannels; };
  expect(channels_ok(s.stem_channels) && channels_ok(s.head_channels), "stem or head channels are out of range");
  expect(s.stem_stride == 1 || s.stem_stride == 2, "the stem stride is not 1 or 2");
  expect(s.stem_kernel >= 1 && s.stem_kernel <= kMaxKernel && s.stem_kernel % 2 == 1, "the stem kernel is invalid");
  expect(s.num_searchable() >= 1, "there is no searchable layer");
  int size = ceil_div(s.input_size, s.stem_stride), cin = s.stem_channels;
  for (const LayerSpec& l : s.layers) {
    expect(l.cin == cin && channels_ok(l.cout), "layer channels do not chain or are out of range");
    expect(l.stride == 1 || l.stride == 2, "a layer stride is not 1 or 2");
    expect(l.in_size == size && l.out_size == ceil_div(size, l.stride), "spatial sizes do not chain");
    expect(l.expansion >= 1 && l.expansion <= kMaxExpansion && l.kernel >= 1 && l.kernel <= kMaxKernel &&
               l.kernel % 2 == 1,
           "a layer's expansion or kernel is invalid");
    expect(l.residual == (l.stride == 1 && l.cin == l.cout), "a residual flag is wrong");
    expect(!l.skip_allowed || (l.searchable && l.residual), "a layer that cannot be removed may be skipped");
    size = l.out_size;
    cin = l.cout;
  }
}

void parse_space_input(const uint8_t* data, size_t size) { check_space(parse_space(text_of(data, size), "fuzz-space.json")); }

std::vector<std::string> space_seeds() {
  std::vector<std::string> v;
  for (const auto& [name, json] : builtin_spaces()) v.push_back(json);
  v.push_back(kTinySpaceJson);
  return v;
}

bool same_arch(const Arch& a, const Arch& b) {
  return a.space == b.space && a.width == b.width && a.layers == b.layers && a.se == b.se &&
         a.input_size == b.input_size && a.num_classes == b.num_classes && a.input_channels == b.input_channels;
}

void parse_arch_input(const uint8_t* data, size_t size) {
  const Arch a = parse_arch(text_of(data, size), "fuzz-arch.json");
  expect(a.width > 0 && a.width <= kMaxWidth, "the width is out of range");
  expect(a.input_size >= 0 && a.input_size <= kMaxInputSize, "input_size is out of range");
  expect(a.num_classes >= 0 && a.num_classes <= kMaxClasses, "num_classes is out of range");
  expect(a.input_channels >= 0 && a.input_channels <= 3, "input_channels is out of range");
  expect(a.se.empty() || a.se.size() == a.layers.size(), "\"se\" and \"layers\" differ in length");
  expect(same_arch(parse_arch(arch_to_json(a), "round trip"), a), "the architecture does not survive a round trip");
  arch_summary(a);
  // What `info`, `train` and `latency` do next: the space with the architecture's overrides, then the
  // match. Only built-in spaces: a fuzzed name must not open files.
  const std::vector<std::string> names = builtin_space_names();
  if (std::find(names.begin(), names.end(), a.space) == names.end()) return;
  const SearchSpace s = load_space(a.space, SpaceOptions{a.width, a.input_size, a.num_classes, a.input_channels});
  check_space(s);
  validate_arch(a, s, "fuzz-arch.json");
}

std::vector<std::string> arch_seeds() {
  const SearchSpace cifar = load_space("cifar10"), mnas = load_space("mnasnet-imagenet");
  const Choice cycle[5] = {Choice::K3E3, Choice::K3E6, Choice::K5E3, Choice::K5E6, Choice::Skip};
  std::vector<std::string> v;
  for (const SearchSpace* s : {&cifar, &mnas}) {
    Arch a;
    a.space = s->name;
    int i = 0;
    for (int li : s->searchable_indices()) {
      const Choice c = cycle[i++ % 5];
      a.layers.push_back(c == Choice::Skip && !s->layers[li].skip_allowed ? Choice::K5E6 : c);
    }
    v.push_back(arch_to_json(a));
    a.width = 0.5f;
    a.se.assign(a.layers.size(), false);
    for (size_t k = 0; k < a.se.size(); k += 2) a.se[k] = true;
    a.input_size = s->input_size / 2;
    a.num_classes = 7;
    a.input_channels = 1;
    v.push_back(arch_to_json(a));
  }
  return v;
}

// ---- latency tables ----

bool same_table(const LatencyTable& a, const LatencyTable& b) {
  bool same = a.space == b.space && a.width == b.width && a.input_size == b.input_size && a.batch == b.batch &&
              a.threads == b.threads && a.cpu == b.cpu && a.isa == b.isa && a.mode == b.mode &&
              a.backend == b.backend && a.quantile == b.quantile && a.fixed_ms == b.fixed_ms &&
              a.fixed_spread == b.fixed_spread && a.fixed_calibration_ms == b.fixed_calibration_ms &&
              std::equal(a.candidate_calibration_ms, a.candidate_calibration_ms + 4, b.candidate_calibration_ms) &&
              a.layers.size() == b.layers.size();
  for (size_t i = 0; same && i < a.layers.size(); ++i) {
    const LayerCost &x = a.layers[i], &y = b.layers[i];
    same = x.k3_e3 == y.k3_e3 && x.k3_e6 == y.k3_e6 && x.k5_e3 == y.k5_e3 && x.k5_e6 == y.k5_e6 && x.se == y.se &&
           x.cin == y.cin && x.cout == y.cout && x.stride == y.stride && x.skip_allowed == y.skip_allowed &&
           x.spread == y.spread && x.count == y.count;
  }
  return same;
}

void parse_table_input(const uint8_t* data, size_t size) {
  const std::string text = text_of(data, size);
  const size_t first = text.find_first_not_of(" \t\r\n");
  // A CSV table needs its fixed cost from the command line (the Pixel 1 table's); a JSON one has its own.
  const bool json = first != std::string::npos && text[first] == '{';
  const LatencyTable t = parse_latency_table(text, "fuzz-table", json ? -1 : 19.5999);
  expect(!t.layers.empty(), "the table has no layers");
  expect(finite_nonneg(t.fixed_ms) && finite_nonneg(t.fixed_spread) && std::isfinite(t.fixed_calibration_ms),
         "a fixed cost is negative or not finite");
  expect(std::isfinite(t.width) && std::isfinite(t.quantile), "width or quantile is not finite");
  for (double c : t.candidate_calibration_ms) expect(std::isfinite(c), "a calibration term is not finite");
  for (const LayerCost& c : t.layers) {
    for (double v : {c.k3_e3, c.k3_e6, c.k5_e3, c.k5_e6, c.se, c.spread})
      expect(finite_nonneg(v), "an entry is negative or not finite");
    expect(c.k5_e6 > 0, "a k5_e6 entry is 0 (the formula divides by it)");
  }
  expect(same_table(parse_latency_table(latency_table_to_json(t), "fuzz-table"), t),
         "the table does not survive a round trip through its JSON");
  // What `search` and `info` do next: match the table to a space and predict an architecture.
  static const SearchSpace cifar = load_space("cifar10");
  if (t.layers.size() != size_t(cifar.num_searchable())) return;
  try {
    check_table_matches(t, cifar);
  } catch (const std::runtime_error&) {
  }
  Arch a;
  a.layers.assign(t.layers.size(), Choice::K3E6);
  for (RuntimeMode mode : {RuntimeMode::Table, RuntimeMode::Formula}) {
    const double ms = predict_runtime(t, a, mode);
    expect(std::isfinite(ms) && ms >= t.fixed_ms, "a predicted runtime is not finite");
  }
}

// A table as the profiler writes it: every field set, calibration terms included.
std::vector<std::string> table_json_seeds() {
  const SearchSpace cifar = load_space("cifar10");
  LatencyTable t = tiny_table(cifar);
  t.space = "cifar10";
  t.input_size = cifar.input_size;
  t.batch = 1;
  t.threads = 2;
  t.cpu = "Fuzz CPU @ 2.0GHz";
  t.isa = "avx2";
  t.backend = "spnas";
  t.mode = "inference";
  t.clock = "wall";
  t.quantile = 0.2;
  t.fixed_spread = 0.03;
  t.fixed_calibration_ms = 0.4;
  for (int k = 0; k < 4; ++k) t.candidate_calibration_ms[k] = 0.01 * (k + 1);
  for (LayerCost& c : t.layers) c.spread = 0.05, c.count = 40;
  const LatencyTable small = tiny_table(parse_space(kTinySpaceJson, "tiny"));
  return {latency_table_to_json(t), latency_table_to_json(small)};
}

// The Single-Path NAS authors' CSV (their Pixel 1 table's first rows, in their format).
std::vector<std::string> table_csv_seeds() {
  const std::string header =
      "block,cin,cout,stride,expanded_channels_e6,skip_allowed,ms_k3_e3,ms_k3_e6,ms_k5_e3,ms_k5_e6\n";
  return {header +
              "1,16,24,2,96,no,4.4905,9.2015,5.9248,11.5892\n"
              "2,24,24,1,144,yes,3.4111,6.4022,4.8853,9.1518\n"
              "3,24,24,1,144,yes,3.4223,6.3511,4.9721,9.1756\n"
              "4,24,40,2,144,no,2.0215,3.5013,2.6021,4.8517\n",
          header + "1,32,32,1,192,yes,0.5,1.0,0.75,1.5\r\n\r\n"};
}

// ---- checkpoints ----

// A model with every kind of checkpoint content: parameters (one a threshold), buffers, optimizer
// slots, EMA shadows and RNGs.
struct CheckpointModel {
  ParamSet ps;
  std::unique_ptr<RMSProp> opt;
  std::unique_ptr<SGD> threshold_opt;
  std::unique_ptr<Ema> ema;
  Rng data_rng{1}, aug_rng{2};

  CheckpointModel() {
    Rng r(5);
    auto randn = [&](const Shape& s) {
      Tensor t = Tensor::empty(s);
      for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = r.normal();
      return t;
    };
    ps.add("conv/w", randn({3, 3, 1, 4}));
    ps.add("bn/gamma", randn({4}), false, "bn");
    ps.add("thr", randn({2}), true, "thresholds");
    ps.add_buffer("bn/mean", randn({4}));
    opt = std::make_unique<RMSProp>(ps, 0.9f, 0.9f, 1e-3f, 1e-5f);
    threshold_opt = std::make_unique<SGD>(ps, 0.9f, true, 0.0f);
    ema = std::make_unique<Ema>(ps, 0.99f, true);
  }
  Checkpoint checkpoint() {
    Checkpoint ck;
    ck.params = &ps;
    ck.optimizer = opt.get();
    ck.ema = ema.get();
    ck.rngs = {{"data", &data_rng}, {"aug", &aug_rng}};
    return ck;
  }
};

// The header's two checksums recomputed over the bytes as they are, so that a mutated payload
// reaches the section parser instead of stopping at the checksum.
std::string with_valid_checksums(std::string bytes) {
  if (bytes.size() < 32 || bytes.compare(0, 8, "SPNASCKP") != 0) return bytes;
  auto crc = [](const char* p, size_t n) {
    return uint32_t(crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(p), uInt(n)));
  };
  const uint32_t payload = crc(bytes.data() + 32, bytes.size() - 32);
  std::memcpy(&bytes[24], &payload, 4);
  const uint32_t header = crc(bytes.data(), 28);
  std::memcpy(&bytes[28], &header, 4);
  return bytes;
}

void check_checkpoint(const CheckpointData& d, size_t file_size) {
  expect(d.version == kCheckpointVersion, "the version is not the supported one");
  size_t floats = 0;
  for (const NamedTensors* ts : {&d.params, &d.buffers, &d.ema, &d.optimizer.slots})
    for (const auto& [name, t] : *ts) floats += size_t(t.numel());
  expect(floats * sizeof(float) <= file_size, "its tensors hold more data than the file");
}

void parse_checkpoint_input(const uint8_t* data, size_t size) {
  static CheckpointModel model;
  const std::string as_is = text_of(data, size);
  try {
    check_checkpoint(decode_checkpoint(as_is, "fuzz.ckpt"), size);
  } catch (const std::runtime_error&) {
  }
  CheckpointData d = decode_checkpoint(with_valid_checksums(as_is), "fuzz.ckpt");
  check_checkpoint(d, size);
  // What `search --resume` does with the blob holding the threshold optimizer: a checkpoint inside.
  auto blob = d.blobs.find("threshold_optimizer");
  if (blob != d.blobs.end()) {
    CheckpointData inner = decode_checkpoint(with_valid_checksums(blob->second), "fuzz.ckpt (blob)");
    check_checkpoint(inner, blob->second.size());
    model.threshold_opt->load_state(inner.optimizer);
  }
  // Restored as `train --resume` (optimizer, EMA) or `eval` (neither) would, by what the file holds.
  Checkpoint ck = model.checkpoint();
  if (!d.has_optimizer) ck.optimizer = nullptr;
  if (!d.has_ema) ck.ema = nullptr;
  restore_checkpoint(std::move(d), "fuzz.ckpt", ck);
}

std::vector<std::string> checkpoint_seeds() {
  CheckpointModel model;
  Checkpoint ck = model.checkpoint();
  ck.step = 1234;
  ck.metadata = R"({"kind": "spnas-search", "seed": 1})";
  Checkpoint inner;
  inner.params = &model.ps;
  inner.optimizer = model.threshold_opt.get();
  ck.blobs["threshold_optimizer"] = encode_checkpoint(inner);
  ck.blobs["loader"] = "3 17";
  const std::string full = encode_checkpoint(ck);
  ck.ema = nullptr;
  ck.optimizer = nullptr;
  ck.blobs.clear();
  return {full, encode_checkpoint(ck)};
}

// ---- profiler samples and the latency predictor ----

void check_piece(const PieceSample& s) {
  expect(s.kind == "mbconv" || s.kind == "stem" || s.kind == "head", "a piece kind is unknown");
  expect(s.cin >= 1 && s.cout >= 1 && s.in_size >= 1 && s.batch >= 1 && s.expansion >= 1,
         "a size is below 1");
  expect(s.kernel >= 1 && s.kernel % 2 == 1 && (s.stride == 1 || s.stride == 2), "a kernel or stride is invalid");
  expect(s.classes >= 0 && std::isfinite(s.ms) && s.ms >= 0 && finite_nonneg(s.spread), "a count or time is invalid");
  for (double f : predictor_features(s)) expect(std::isfinite(f), "a predictor feature is not finite");
}

void parse_pieces_input(const uint8_t* data, size_t size) {
  const std::vector<PieceSample> samples = parse_piece_samples(text_of(data, size), "fuzz-pieces.json");
  for (const PieceSample& s : samples) check_piece(s);
  // What `profile --fit` does next, kept small so that one input stays fast.
  if (samples.size() > 64) return;
  const LatencyPredictor p = LatencyPredictor::fit(samples);
  for (const PieceSample& s : samples) expect(std::isfinite(p.predict(s)), "the fitted predictor is not finite");
}

// Samples of the tiny space's pieces, with times that grow with the multiply-adds.
std::vector<PieceSample> timed_pieces() {
  std::vector<PieceSample> v = space_pieces(parse_space(kTinySpaceJson, "tiny"), 1, true);
  for (PieceSample& s : v) {
    s.ms = 0.01 + 1e-6 * s.cin * s.cout * s.in_size * s.in_size * s.kernel * s.expansion;
    s.spread = 0.02;
  }
  return v;
}

std::vector<std::string> pieces_seeds() {
  std::vector<PieceSample> v = timed_pieces();
  return {piece_samples_to_json(v), piece_samples_to_json({v.begin(), v.begin() + 6})};
}

bool same_predictor(const LatencyPredictor& a, const LatencyPredictor& b) {
  for (const char* kind : {"mbconv", "stem", "head"}) {
    if (a.has_kind(kind) != b.has_kind(kind)) return false;
    if (!a.has_kind(kind)) continue;
    const auto &x = a.model(kind), &y = b.model(kind);
    if (x.terms != y.terms || x.coef != y.coef || x.index != y.index || x.samples != y.samples) return false;
  }
  return true;
}

void parse_predictor_input(const uint8_t* data, size_t size) {
  const LatencyPredictor p = LatencyPredictor::from_json(text_of(data, size), "fuzz-predictor.json");
  for (const char* kind : {"mbconv", "stem", "head"}) {
    if (!p.has_kind(kind)) continue;
    const auto& m = p.model(kind);
    const size_t features = predictor_feature_names(kind).size();
    expect(m.terms.size() == m.coef.size() && m.index.size() == m.coef.size(), "terms and coefficients differ");
    for (size_t i = 0; i < m.index.size(); ++i)
      expect(m.index[i] >= 0 && size_t(m.index[i]) < features && std::isfinite(m.coef[i]),
             "a term index or coefficient is invalid");
    expect(m.samples >= 0, "the sample count is negative");
  }
  expect(same_predictor(LatencyPredictor::from_json(p.to_json(), "round trip"), p),
         "the predictor does not survive a round trip");
  for (const PieceSample& s : timed_pieces())
    if (p.has_kind(s.kind)) p.predict(s);
}

std::vector<std::string> predictor_seeds() {
  std::vector<PieceSample> v = timed_pieces();
  PredictorOptions all;
  all.terms = "all";
  return {LatencyPredictor::fit(v).to_json(), LatencyPredictor::fit(v, all).to_json()};
}

// ---- the search log (read back when a search resumes) ----

constexpr size_t kLogLayers = 4;  // the tiny space's searchable layers

// read_search_csv reads a file: each input goes through this one (removed at exit).
struct LogFile {
  std::string path = (std::filesystem::temp_directory_path() /
                      ("spnas_fuzz_search_log_" + std::to_string(::getpid()) + ".csv"))
                         .string();
  ~LogFile() { std::remove(path.c_str()); }
};

void parse_search_log_input(const uint8_t* data, size_t size) {
  static const LogFile file;
  {
    std::ofstream out(file.path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  }
  const std::vector<SearchLogRow> rows = read_search_csv(file.path, std::numeric_limits<int64_t>::max(), kLogLayers);
  for (const SearchLogRow& r : rows)
    for (const auto* v : {&r.d_k5, &r.d_e6, &r.d_skip, &r.d_se, &r.m_k5, &r.m_e6, &r.m_skip, &r.m_se})
      expect(v->size() == kLogLayers, "a row has another number of layers than the search");
  // What the search does with them when it ends: the verdict reads every row's decisions.
  static const SearchSpace tiny = parse_space(kTinySpaceJson, "tiny");
  static const LatencyTable table = tiny_table(tiny);
  Arch a;
  a.layers.assign(kLogLayers, Choice::K5E6);
  search_verdict(rows, 2, a, table, SearchConfig());
}

// A log as `search` writes it (nas/search.cpp, csv_header and csv_row), for the tiny space.
std::vector<std::string> search_log_seeds() {
  std::string text = "step,epoch,lr,ce,runtime_term,R,R_decoded,val_accuracy";
  for (size_t l = 0; l < kLogLayers; ++l)
    for (const char* column : {"d_k5", "d_e6", "d_skip", "d_se", "m_k5", "m_e6", "m_skip", "m_se"})
      text += ",l" + std::to_string(l) + "_" + column;
  text += "\n";
  for (int step = 0; step < 6; ++step) {
    text += std::to_string(step) + "," + std::to_string(step / 3.0) + ",0.01,2.3,0.5,9.5,8.25,";
    if (step == 5) text += "0.41";
    for (size_t l = 0; l < kLogLayers; ++l)
      text += ",1," + std::to_string((step + l) % 2) + ",1,,0.25,-0.125,0.5,";
    text += "\n";
  }
  return {text};
}

// ---- data files ----

void parse_idx_images_input(const uint8_t* data, size_t size) {
  const IdxImages im = parse_idx_images(data, size, "fuzz-images");
  expect(int64_t(im.pixels.size()) == im.count * im.rows * im.cols, "pixel count and header differ");
  expect(im.pixels.size() + 16 == size, "the file holds more or fewer bytes than its header says");
}

void parse_idx_labels_input(const uint8_t* data, size_t size) {
  const std::vector<int32_t> labels = parse_idx_labels(data, size, "fuzz-labels");
  expect(labels.size() + 8 == size, "the file holds more or fewer bytes than its header says");
  for (int v : labels) expect(v >= 0 && v < 10, "a label is out of range");
}

void parse_cifar_input(const uint8_t* data, size_t size) {
  std::vector<uint8_t> pixels;
  std::vector<int32_t> labels;
  parse_cifar10_bin(data, size, "fuzz.bin", &pixels, &labels);
  expect(pixels.size() == labels.size() * 3072 && labels.size() * 3073 == size, "records and bytes differ");
  for (int v : labels) expect(v >= 0 && v < 10, "a label is out of range");
}

void parse_gzip_input(const uint8_t* data, size_t size) {
  const size_t limit = size_t(1) << 20;
  const std::vector<uint8_t> raw = gunzip(data, size, "fuzz.gz", limit);
  expect(raw.size() <= limit, "the output exceeds the limit");
  // What the MNIST loader does next with the decompressed bytes.
  if (raw.size() > 3 && raw[3] == 3) parse_idx_images(raw.data(), raw.size(), "fuzz.gz");
  else parse_idx_labels(raw.data(), raw.size(), "fuzz.gz");
}

void parse_image_input(const uint8_t* data, size_t size) {
  int h = 0, w = 0;
  const std::vector<uint8_t> px = decode_image(data, size, "fuzz.img", &h, &w);
  expect(h >= 1 && w >= 1 && px.size() == size_t(h) * size_t(w) * 3, "pixels and size differ");
}

std::string bytes_string(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

std::vector<std::string> idx_images_seeds() {
  return {bytes_string(datatest::idx_images(3, 4, 5)), bytes_string(datatest::idx_images(1, 28, 28)),
          bytes_string(datatest::idx_images(7, 2, 2))};
}

std::vector<std::string> idx_labels_seeds() {
  return {bytes_string(datatest::idx_labels(5)), bytes_string(datatest::idx_labels(1)),
          bytes_string(datatest::idx_labels(40))};
}

std::vector<std::string> cifar_seeds() {
  return {bytes_string(datatest::cifar_records(1)), bytes_string(datatest::cifar_records(3))};
}

// gzip in memory (zlib's deflate with the gzip wrapper), as `gzip` writes it.
std::string gzip_bytes(const std::vector<uint8_t>& raw) {
  z_stream z{};
  if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::logic_error("deflateInit2");
  std::string out(deflateBound(&z, uLong(raw.size())) + 32, '\0');
  z.next_in = const_cast<Bytef*>(raw.data());
  z.avail_in = uInt(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(&out[0]);
  z.avail_out = uInt(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) throw std::logic_error("deflate did not finish");
  return out;
}

std::vector<std::string> gzip_seeds() {
  return {gzip_bytes(datatest::idx_images(4, 6, 6)), gzip_bytes(datatest::idx_labels(30))};
}

void append_bytes(void* ctx, void* data, int size) {
  static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), size_t(size));
}

// PNG and BMP in RGB, grey and RGBA (stb_image_write), and two JPEGs (embedded: stb's JPEG writer
// is not UBSan-clean).
std::vector<std::string> image_seeds() {
  Rng r(9);
  auto noise = [&](size_t n) {
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = uint8_t(r.next_u32());
    return v;
  };
  const std::vector<uint8_t> rgb = noise(16 * 12 * 3), grey = noise(9 * 7), rgba = noise(5 * 6 * 4);
  std::vector<std::string> v(7);
  v[0] = bytes_string(datatest::jpeg_rgb_8x8());
  v[1] = bytes_string(datatest::jpeg_grey_9x7());
  stbi_write_png_to_func(append_bytes, &v[2], 16, 12, 3, rgb.data(), 48);
  stbi_write_bmp_to_func(append_bytes, &v[3], 16, 12, 3, rgb.data());
  stbi_write_png_to_func(append_bytes, &v[4], 9, 7, 1, grey.data(), 9);
  stbi_write_png_to_func(append_bytes, &v[5], 5, 6, 4, rgba.data(), 20);
  stbi_write_bmp_to_func(append_bytes, &v[6], 5, 6, 4, rgba.data());
  return v;
}

}  // namespace

const std::vector<ParserTarget>& parser_targets() {
  static const std::vector<ParserTarget> targets = {
      {"space", "parse_space (search space JSON)", parse_space_input, space_seeds, 10000},
      {"arch", "parse_arch, then load_space + validate_arch (architecture JSON)", parse_arch_input, arch_seeds, 10000},
      {"table", "parse_latency_table (latency table JSON)", parse_table_input, table_json_seeds, 5000},
      {"table_csv", "parse_latency_table (the paper's CSV)", parse_table_input, table_csv_seeds, 10000},
      {"checkpoint", "decode_checkpoint + restore_checkpoint (checkpoint file)", parse_checkpoint_input,
       checkpoint_seeds, 10000},
      {"pieces", "parse_piece_samples + LatencyPredictor::fit (profiler samples JSON)", parse_pieces_input,
       pieces_seeds, 1000},
      {"predictor", "LatencyPredictor::from_json (predictor JSON)", parse_predictor_input, predictor_seeds, 5000},
      {"search_log", "read_search_csv + search_verdict (the search log a resume reads)", parse_search_log_input,
       search_log_seeds, 2000},
      {"idx_images", "parse_idx_images (MNIST idx3)", parse_idx_images_input, idx_images_seeds, 20000},
      {"idx_labels", "parse_idx_labels (MNIST idx1)", parse_idx_labels_input, idx_labels_seeds, 20000},
      {"cifar", "parse_cifar10_bin (CIFAR-10 binary)", parse_cifar_input, cifar_seeds, 10000},
      {"gzip", "gunzip + idx (gzip'd MNIST)", parse_gzip_input, gzip_seeds, 30000},
      {"image", "decode_image (JPEG, PNG, BMP)", parse_image_input, image_seeds, 40000},
  };
  return targets;
}

const ParserTarget& parser_target(const std::string& name) {
  for (const ParserTarget& t : parser_targets())
    if (name == t.name) return t;
  throw std::invalid_argument("fuzz: no parser target '" + name + "'");
}

int run_fuzz_input(const char* target, const uint8_t* data, size_t size) {
  static const ParserTarget& t = parser_target(target);
  try {
    t.parse(data, size);
  } catch (const std::runtime_error&) {
  }
  return 0;
}

}  // namespace spnas::fuzz
