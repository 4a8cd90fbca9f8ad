// Checkpoint files: encoding, verified decoding, atomic writing, and all-or-nothing loading.
// Layout (all integers little-endian, see engine/README.md):
//   header  "SPNASCKP" | u32 version | u32 section count | u64 payload bytes | u32 payload crc32 | u32 header crc32
//   payload sections, each: char[4] tag | u64 content bytes | content
#include "engine/checkpoint.h"

#include "engine/io.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace spnas {
namespace {

static_assert(sizeof(float) == 4, "checkpoints store float32");
constexpr char kMagic[8] = {'S', 'P', 'N', 'A', 'S', 'C', 'K', 'P'};
constexpr size_t kHeaderBytes = 32;
constexpr int kMaxRank = 8;

uint32_t crc32_of(const char* p, size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  // zlib's length argument is a uInt: feed large buffers in chunks.
  while (n > 0) {
    uInt chunk = uInt(std::min<size_t>(n, 1u << 30));
    c = crc32(c, reinterpret_cast<const Bytef*>(p), chunk);
    p += chunk;
    n -= chunk;
  }
  return uint32_t(c);
}

// ---- writing ----

struct Writer {
  std::string out;
  template <class T>
  void pod(T v) { out.append(reinterpret_cast<const char*>(&v), sizeof(T)); }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    out += s;
  }
  void tensor(const std::string& name, const Tensor& t) {
    str(name);
    pod<uint32_t>(uint32_t(t.rank()));
    for (int64_t d : t.shape()) pod<int64_t>(d);
    out.append(reinterpret_cast<const char*>(t.data()), size_t(t.numel()) * sizeof(float));
  }
  void tensors(const NamedTensors& ts) {
    pod<uint32_t>(uint32_t(ts.size()));
    for (const auto& [name, t] : ts) tensor(name, t);
  }
};

void add_section(std::string& payload, uint32_t& count, const char tag[4], const std::string& content) {
  payload.append(tag, 4);
  uint64_t n = content.size();
  payload.append(reinterpret_cast<const char*>(&n), 8);
  payload += content;
  ++count;
}

// ---- reading ----

// Bounds-checked reader over one section; errors name the file and the section.
struct Reader {
  const char* p;
  size_t n, pos = 0;
  std::string where;  // "'file': section PARA"

  [[noreturn]] void bad(const std::string& why) const { fail("load_checkpoint", where + ": " + why); }
  void need(size_t k) const {
    if (k > n - pos) bad("malformed content (needs " + std::to_string(k) + " bytes at offset " + std::to_string(pos) +
                         ", " + std::to_string(n - pos) + " left)");
  }
  template <class T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string str() {
    uint64_t len = pod<uint64_t>();
    need(len);
    std::string s(p + pos, size_t(len));
    pos += size_t(len);
    return s;
  }
  std::pair<std::string, Tensor> tensor() {
    std::string name = str();
    uint32_t rank = pod<uint32_t>();
    if (rank > kMaxRank) bad("tensor '" + name + "' has rank " + std::to_string(rank));
    Shape shape(rank);
    int64_t numel = 1;
    for (auto& d : shape) {
      d = pod<int64_t>();
      if (d < 0 || (d > 0 && numel > int64_t(n) / d)) bad("tensor '" + name + "' has an impossible shape");
      numel *= d;
    }
    need(size_t(numel) * sizeof(float));
    Tensor t = Tensor::empty(shape);
    std::memcpy(t.data(), p + pos, size_t(numel) * sizeof(float));
    pos += size_t(numel) * sizeof(float);
    return {name, t};
  }
  NamedTensors tensors() {
    uint32_t count = pod<uint32_t>();
    NamedTensors ts;
    std::set<std::string> names;
    for (uint32_t i = 0; i < count; ++i) {
      ts.push_back(tensor());
      if (!names.insert(ts.back().first).second) bad("duplicate name '" + ts.back().first + "'");
    }
    return ts;
  }
  void done() const {
    if (pos != n) bad(std::to_string(n - pos) + " unexpected bytes at the end");
  }
};

std::string quoted(const std::string& path) { return "'" + path + "'"; }

// Index tensors by name (names are unique after decoding).
std::map<std::string, const Tensor*> by_name(const NamedTensors& ts) {
  std::map<std::string, const Tensor*> m;
  for (const auto& [name, t] : ts) m[name] = &t;
  return m;
}

// Checks that `file` holds exactly the tensors of `model`, with the same shapes.
void check_match(const std::string& where, const char* what, const NamedTensors& file,
                 const std::vector<std::pair<std::string, Shape>>& model) {
  auto m = by_name(file);
  for (const auto& [name, shape] : model) {
    auto it = m.find(name);
    if (it == m.end()) fail("load_checkpoint", where + ": " + what + " '" + name + "' of the model is missing from the file");
    if (it->second->shape() != shape)
      fail("load_checkpoint", where + ": " + what + " '" + name + "' has shape " + shape_str(it->second->shape()) +
                                  " in the file but " + shape_str(shape) + " in the model");
    m.erase(it);
  }
  if (!m.empty())
    fail("load_checkpoint", where + ": the file has an extra " + what + " '" + m.begin()->first +
                                "' that the model does not have (" + std::to_string(m.size()) + " extra in all)");
}

}  // namespace

std::string encode_checkpoint(const Checkpoint& ck) {
  const char* op = "save_checkpoint";
  check(ck.params != nullptr, op, "Checkpoint::params is not set");
  check(!ck.ema || !ck.ema->swapped_in(), op, "the EMA shadows are swapped into the model; call restore() first");
  std::string payload;
  uint32_t count = 0;
  {
    Writer w;
    w.pod<int64_t>(ck.step);
    add_section(payload, count, "STEP", w.out);
  }
  {
    Writer w;
    w.str(ck.metadata);
    add_section(payload, count, "META", w.out);
  }
  {
    Writer w;
    NamedTensors ps;
    for (const Param& p : ck.params->params()) ps.emplace_back(p.name, p.var->value);
    w.tensors(ps);
    add_section(payload, count, "PARA", w.out);
  }
  {
    Writer w;
    w.tensors(ck.params->buffers());
    add_section(payload, count, "BUFF", w.out);
  }
  if (ck.optimizer) {
    OptimizerState s = ck.optimizer->state();
    Writer w;
    w.str(s.kind);
    w.pod<int64_t>(s.updates);
    w.tensors(s.slots);
    add_section(payload, count, "OPTI", w.out);
  }
  if (ck.ema) {
    Writer w;
    w.tensors(ck.ema->shadows());
    add_section(payload, count, "EMAS", w.out);
  }
  {
    Writer w;
    w.pod<uint32_t>(uint32_t(ck.rngs.size()));
    for (const auto& [name, rng] : ck.rngs) {
      check(rng != nullptr, op, "RNG '" + name + "' is null");
      w.str(name);
      for (uint64_t x : rng->state()) w.pod<uint64_t>(x);
    }
    add_section(payload, count, "RNGS", w.out);
  }
  {
    Writer w;
    w.pod<uint32_t>(uint32_t(ck.blobs.size()));
    for (const auto& [name, bytes] : ck.blobs) {
      w.str(name);
      w.str(bytes);
    }
    add_section(payload, count, "BLOB", w.out);
  }
  Writer h;
  h.out.append(kMagic, 8);
  h.pod<uint32_t>(kCheckpointVersion);
  h.pod<uint32_t>(count);
  h.pod<uint64_t>(payload.size());
  h.pod<uint32_t>(crc32_of(payload.data(), payload.size()));
  h.pod<uint32_t>(crc32_of(h.out.data(), h.out.size()));
  return h.out + payload;
}

CheckpointData decode_checkpoint(const std::string& bytes, const std::string& name) {
  const std::string file = quoted(name);
  auto bad = [&](const std::string& why) { fail("load_checkpoint", file + ": " + why); };
  const size_t size = bytes.size();
  const char* b = bytes.data();

  // Header: magic, then version (a future version may lay out the rest differently), then the rest.
  if (size < 8 || std::memcmp(b, kMagic, 8) != 0) {
    if (size < 8 && std::memcmp(b, kMagic, size) == 0)
      bad("truncated: " + std::to_string(size) + " bytes, shorter than the " + std::to_string(kHeaderBytes) + "-byte header");
    bad("not a spnas checkpoint (wrong magic number)");
  }
  if (size < kHeaderBytes)
    bad("truncated: " + std::to_string(size) + " bytes, shorter than the " + std::to_string(kHeaderBytes) + "-byte header");
  CheckpointData d;
  uint32_t sections, payload_crc, header_crc;
  uint64_t payload_size;
  std::memcpy(&d.version, b + 8, 4);
  std::memcpy(&sections, b + 12, 4);
  std::memcpy(&payload_size, b + 16, 8);
  std::memcpy(&payload_crc, b + 24, 4);
  std::memcpy(&header_crc, b + 28, 4);
  if (d.version > kCheckpointVersion)
    bad("written by a newer format version " + std::to_string(d.version) + "; this build reads version " +
        std::to_string(kCheckpointVersion) + " (or the file is corrupt)");
  if (d.version != kCheckpointVersion)
    bad("unsupported format version " + std::to_string(d.version) + " (this build reads version " +
        std::to_string(kCheckpointVersion) + ")");
  if (crc32_of(b, 28) != header_crc) bad("corrupt: header checksum mismatch");
  if (size - kHeaderBytes < payload_size)
    bad("truncated: " + std::to_string(size) + " bytes, the header announces " +
        std::to_string(kHeaderBytes + payload_size));
  if (size - kHeaderBytes > payload_size)
    bad("corrupt: " + std::to_string(size - kHeaderBytes - payload_size) + " unexpected bytes after the payload");
  const char* payload = b + kHeaderBytes;
  if (crc32_of(payload, size_t(payload_size)) != payload_crc) bad("corrupt: payload checksum mismatch");

  // Sections.
  Reader top{payload, size_t(payload_size), 0, file + ": section table"};
  std::set<std::string> seen;
  for (uint32_t i = 0; i < sections; ++i) {
    top.need(12);
    std::string tag(payload + top.pos, 4);
    top.pos += 4;
    uint64_t len = top.pod<uint64_t>();
    top.need(len);
    Reader r{payload + top.pos, size_t(len), 0, file + ": section " + tag};
    top.pos += size_t(len);
    if (!seen.insert(tag).second) r.bad("appears twice");
    if (tag == "STEP") {
      d.step = r.pod<int64_t>();
    } else if (tag == "META") {
      d.metadata = r.str();
    } else if (tag == "PARA") {
      d.params = r.tensors();
    } else if (tag == "BUFF") {
      d.buffers = r.tensors();
    } else if (tag == "OPTI") {
      d.has_optimizer = true;
      d.optimizer.kind = r.str();
      d.optimizer.updates = r.pod<int64_t>();
      d.optimizer.slots = r.tensors();
    } else if (tag == "EMAS") {
      d.has_ema = true;
      d.ema = r.tensors();
    } else if (tag == "RNGS") {
      uint32_t count = r.pod<uint32_t>();
      for (uint32_t k = 0; k < count; ++k) {
        std::string rname = r.str();
        std::array<uint64_t, 4> s;
        for (auto& x : s) x = r.pod<uint64_t>();
        for (const auto& other : d.rngs)
          if (other.first == rname) r.bad("duplicate RNG '" + rname + "'");
        d.rngs.emplace_back(rname, s);
      }
    } else if (tag == "BLOB") {
      uint32_t count = r.pod<uint32_t>();
      for (uint32_t k = 0; k < count; ++k) {
        std::string bname = r.str();
        if (d.blobs.count(bname)) r.bad("duplicate blob '" + bname + "'");
        d.blobs[bname] = r.str();
      }
    } else {
      r.bad("unknown section tag");
    }
    r.done();
  }
  top.done();
  for (const char* required : {"STEP", "META", "PARA", "BUFF", "RNGS", "BLOB"})
    if (!seen.count(required)) bad(std::string("corrupt: section ") + required + " is missing");
  return d;
}

CheckpointData read_checkpoint(const std::string& path) {
  // read_text_file names a folder as such (a run's folder given for its checkpoint file).
  return decode_checkpoint(read_text_file(path, "load_checkpoint"), path);
}

void load_checkpoint(const std::string& path, Checkpoint& ck) {
  restore_checkpoint(read_checkpoint(path), path, ck);
}

void restore_checkpoint(CheckpointData d, const std::string& name, Checkpoint& ck) {
  check(ck.params != nullptr, "load_checkpoint", "Checkpoint::params is not set");
  const std::string file = quoted(name);

  // 1. Validate everything against the targets; nothing is modified yet.
  std::vector<std::pair<std::string, Shape>> pshapes, bshapes;
  for (const Param& p : ck.params->params()) pshapes.emplace_back(p.name, p.var->value.shape());
  for (const auto& [name, t] : ck.params->buffers()) bshapes.emplace_back(name, t.shape());
  check_match(file, "parameter", d.params, pshapes);
  check_match(file, "buffer", d.buffers, bshapes);
  if (ck.optimizer) {
    if (!d.has_optimizer) fail("load_checkpoint", file + ": the file holds no optimizer state");
    try {
      ck.optimizer->check_state(d.optimizer);
    } catch (const std::exception& e) {
      fail("load_checkpoint", file + ": optimizer state does not match: " + e.what());
    }
  }
  if (ck.ema) {
    if (!d.has_ema) fail("load_checkpoint", file + ": the file holds no EMA shadows");
    check(!ck.ema->swapped_in(), "load_checkpoint", file + ": the EMA shadows are swapped in; call restore() first");
    try {
      ck.ema->check_shadows(d.ema);
    } catch (const std::exception& e) {
      fail("load_checkpoint", file + ": EMA shadows do not match: " + e.what());
    }
  }
  std::vector<std::pair<Rng*, std::array<uint64_t, 4>>> rng_states;
  for (const auto& [name, rng] : ck.rngs) {
    check(rng != nullptr, "load_checkpoint", "RNG '" + name + "' is null");
    const std::array<uint64_t, 4>* s = nullptr;
    for (const auto& [fname, fs] : d.rngs)
      if (fname == name) s = &fs;
    if (!s) fail("load_checkpoint", file + ": RNG '" + name + "' is missing from the file");
    rng_states.emplace_back(rng, *s);
  }

  // 2. Commit (cannot fail: names and shapes were checked above).
  auto params = by_name(d.params);
  for (Param& p : ck.params->params()) p.var->value.copy_from(*params.at(p.name));
  auto buffers = by_name(d.buffers);
  for (const auto& [name, t] : ck.params->buffers()) {
    Tensor target = t;  // shares the model's storage
    target.copy_from(*buffers.at(name));
  }
  if (ck.optimizer) ck.optimizer->load_state(d.optimizer);
  if (ck.ema) ck.ema->load_shadows(d.ema);
  for (auto& [rng, s] : rng_states) rng->set_state(s);
  ck.step = d.step;
  ck.metadata = std::move(d.metadata);
  ck.blobs = std::move(d.blobs);
}

void save_checkpoint(const std::string& path, const Checkpoint& ck) { write_file_atomic(path, encode_checkpoint(ck)); }

}  // namespace spnas
