// Tests for checkpoints: exact round trip of everything a checkpoint holds, refusal of truncated,
// corrupt, foreign, newer-version and mismatched files (leaving the model unchanged), and atomic writes.
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <zlib.h>

#include "engine/checkpoint.h"

using namespace spnas;
namespace fs = std::filesystem;

namespace {

// A small model with parameters, buffers, an optimizer, an EMA and two RNGs.
struct Model {
  ParamSet ps;
  std::unique_ptr<RMSProp> opt;
  std::unique_ptr<Ema> ema;
  Rng data_rng{1}, aug_rng{2};

  explicit Model(uint64_t seed, int64_t width = 4, bool extra_param = false) {
    Rng r(seed);
    auto randn = [&](const Shape& s) {
      Tensor t = Tensor::empty(s);
      for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = r.normal();
      return t;
    };
    ps.add("conv/w", randn({3, 3, 1, width}));
    ps.add("bn/gamma", randn({width}), false, "bn");
    ps.add("thr", randn({2}), true, "thresholds");
    if (extra_param) ps.add("head/w", randn({width, 2}));
    ps.add_buffer("bn/mean", randn({width}));
    ps.add_buffer("bn/var", randn({width}));
    opt = std::make_unique<RMSProp>(ps, 0.9f, 0.9f, 1e-3f, 1e-5f);
    ema = std::make_unique<Ema>(ps, 0.99f, true);
    data_rng.seed_with(seed * 7 + 1);
    aug_rng.seed_with(seed * 7 + 2);
  }

  // A few training-like steps so that slots, shadows and RNGs hold non-trivial values.
  void train(int steps) {
    for (int s = 0; s < steps; ++s) {
      for (Param& p : ps.params()) {
        Tensor g = Tensor::empty(p.var->value.shape());
        for (int64_t i = 0; i < g.numel(); ++i) g.data()[i] = data_rng.normal();
        p.var->grad = g;
        p.var->grad_valid = true;
      }
      opt->step(0.01f);
      for (const auto& b : ps.buffers()) {
        Tensor t = b.second;
        for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] += aug_rng.uniform();
      }
      ema->update(s);
    }
  }

  Checkpoint ck() {
    Checkpoint c;
    c.params = &ps;
    c.optimizer = opt.get();
    c.ema = ema.get();
    c.rngs = {{"data", &data_rng}, {"aug", &aug_rng}};
    return c;
  }
};

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("spnas_test_ckpt_" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// Everything the model holds, serialized: equal strings mean bitwise-equal state.
std::string snapshot(Model& m) {
  Checkpoint c = m.ck();
  return encode_checkpoint(c);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("checkpoint: round trip is bitwise exact") {
  TempDir dir;
  const std::string path = dir.file("a.ckpt");
  Model a(11);
  a.train(3);
  Checkpoint ca = a.ck();
  ca.step = 123456789012345;
  ca.metadata = R"({"arch": "single-path", "lr": 0.064})";
  ca.blobs["loader"] = std::string("pos\0\x01\xff", 6);
  ca.blobs["search_config"] = "{}";
  save_checkpoint(path, ca);

  Model b(99);  // same structure, different values
  CHECK(snapshot(a) != snapshot(b));
  Checkpoint cb = b.ck();
  load_checkpoint(path, cb);

  // Parameters, buffers, slots, shadows and RNG states: compare element bits.
  for (size_t i = 0; i < a.ps.params().size(); ++i) {
    const Tensor& x = a.ps.params()[i].var->value;
    const Tensor& y = b.ps.params()[i].var->value;
    CHECK(std::memcmp(x.data(), y.data(), size_t(x.numel()) * 4) == 0);
  }
  for (size_t i = 0; i < a.ps.buffers().size(); ++i) {
    const Tensor& x = a.ps.buffers()[i].second;
    const Tensor& y = b.ps.buffers()[i].second;
    CHECK(std::memcmp(x.data(), y.data(), size_t(x.numel()) * 4) == 0);
  }
  OptimizerState sa = a.opt->state(), sb = b.opt->state();
  CHECK(sa.updates == 3);
  CHECK(sb.updates == 3);
  REQUIRE(sa.slots.size() == sb.slots.size());
  for (size_t i = 0; i < sa.slots.size(); ++i) {
    CHECK(sa.slots[i].first == sb.slots[i].first);
    CHECK(std::memcmp(sa.slots[i].second.data(), sb.slots[i].second.data(), size_t(sa.slots[i].second.numel()) * 4) == 0);
  }
  auto ea = a.ema->shadows(), eb = b.ema->shadows();
  for (size_t i = 0; i < ea.size(); ++i)
    CHECK(std::memcmp(ea[i].second.data(), eb[i].second.data(), size_t(ea[i].second.numel()) * 4) == 0);
  CHECK(a.data_rng.state() == b.data_rng.state());
  CHECK(a.aug_rng.state() == b.aug_rng.state());
  CHECK(cb.step == 123456789012345);
  CHECK(cb.metadata == ca.metadata);
  CHECK(cb.blobs == ca.blobs);
  // And as a whole: the two models now serialize identically, and the RNGs continue identically.
  CHECK(snapshot(a) == snapshot(b));
  CHECK(a.data_rng.next_u64() == b.data_rng.next_u64());

  // Continuing training from both gives identical results.
  a.train(2);
  b.train(2);
  CHECK(snapshot(a) == snapshot(b));

  // read_checkpoint works without a model.
  CheckpointData d = read_checkpoint(path);
  CHECK(d.version == kCheckpointVersion);
  CHECK(d.params.size() == 3);
  CHECK(d.buffers.size() == 2);
  CHECK(d.has_optimizer);
  CHECK(d.optimizer.kind == "rmsprop");
  CHECK(d.has_ema);
  CHECK(d.rngs.size() == 2);
}

TEST_CASE("checkpoint: optional sections") {
  TempDir dir;
  const std::string path = dir.file("p.ckpt");
  Model a(1);
  Checkpoint only_params;
  only_params.params = &a.ps;
  save_checkpoint(path, only_params);
  // Loading just the parameters works; asking for optimizer, EMA or an RNG the file lacks does not.
  Model b(2);
  Checkpoint cb;
  cb.params = &b.ps;
  load_checkpoint(path, cb);
  Model c(3);
  const std::string before = snapshot(c);
  Checkpoint cc = c.ck();
  CHECK(error_of([&] { load_checkpoint(path, cc); }).find("no optimizer state") != std::string::npos);
  cc.optimizer = nullptr;
  CHECK(error_of([&] { load_checkpoint(path, cc); }).find("no EMA shadows") != std::string::npos);
  cc.ema = nullptr;
  CHECK(error_of([&] { load_checkpoint(path, cc); }).find("RNG 'data' is missing") != std::string::npos);
  CHECK(snapshot(c) == before);
}

TEST_CASE("checkpoint: damaged files are refused and change nothing") {
  TempDir dir;
  const std::string good = dir.file("good.ckpt");
  const std::string bad = dir.file("bad.ckpt");
  Model a(5);
  a.train(2);
  Checkpoint ca = a.ck();
  ca.metadata = "meta";
  save_checkpoint(good, ca);
  const std::string bytes = read_bytes(good);
  REQUIRE(bytes.size() > 200);

  Model target(6);
  target.train(1);
  const std::string before = snapshot(target);
  auto refused = [&](const std::string& contents, const std::string& reason) {
    write_bytes(bad, contents);
    Checkpoint ct = target.ck();
    std::string msg = error_of([&] { load_checkpoint(bad, ct); });
    INFO("message: " << msg);
    CHECK(msg.find("load_checkpoint") == 0);
    CHECK(msg.find(bad) != std::string::npos);
    CHECK(msg.find(reason) != std::string::npos);
    CHECK(snapshot(target) == before);
    CHECK(ct.metadata.empty());
  };

  SUBCASE("truncated") {
    for (size_t cut : {size_t(0), size_t(3), size_t(8), size_t(20), size_t(31), size_t(32), size_t(33), size_t(100),
                       bytes.size() / 2, bytes.size() - 1})
      refused(bytes.substr(0, cut), "truncated");
  }
  SUBCASE("corrupted: one byte flipped") {
    for (size_t at : {size_t(20), size_t(28), size_t(40), size_t(60), bytes.size() / 3, bytes.size() / 2, bytes.size() - 1}) {
      std::string c = bytes;
      c[at] ^= 0x10;
      refused(c, "corrupt");
    }
    refused(bytes + "x", "corrupt");  // trailing garbage
  }
  SUBCASE("wrong magic") {
    std::string c = bytes;
    c[0] = 'X';
    refused(c, "wrong magic");
    refused("hello, this is not a checkpoint at all, just some text", "wrong magic");
  }
  SUBCASE("newer version") {
    std::string c = bytes;
    uint32_t v = kCheckpointVersion + 1;
    std::memcpy(&c[8], &v, 4);
    uint32_t crc = uint32_t(crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(c.data()), 28));
    std::memcpy(&c[28], &crc, 4);
    refused(c, "newer format version 2");
  }
  SUBCASE("missing file") {
    Checkpoint ct = target.ck();
    std::string msg = error_of([&] { load_checkpoint(dir.file("nope.ckpt"), ct); });
    CHECK(msg.find("nope.ckpt") != std::string::npos);
    CHECK(msg.find("cannot open") != std::string::npos);
  }
  SUBCASE("a folder given for the file") {
    Checkpoint ct = target.ck();
    std::string msg = error_of([&] { load_checkpoint(dir.path.string(), ct); });
    CHECK(msg.find("is a directory, not a file") != std::string::npos);
  }
}

TEST_CASE("checkpoint: mismatched models are refused and change nothing") {
  TempDir dir;
  const std::string path = dir.file("m.ckpt");
  Model a(7);
  a.train(1);
  Checkpoint ca = a.ck();
  save_checkpoint(path, ca);

  auto refused = [&](Model& target, Checkpoint ct, const std::string& reason) {
    const std::string before = snapshot(target);
    std::string msg = error_of([&] { load_checkpoint(path, ct); });
    INFO("message: " << msg);
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find(reason) != std::string::npos);
    CHECK(snapshot(target) == before);
  };
  SUBCASE("different shape") {
    Model t(8, 5);
    refused(t, t.ck(), "parameter 'conv/w' has shape [3, 3, 1, 4] in the file but [3, 3, 1, 5] in the model");
  }
  SUBCASE("parameter missing from the file") {
    Model t(8, 4, true);
    refused(t, t.ck(), "parameter 'head/w' of the model is missing from the file");
  }
  SUBCASE("extra parameter in the file") {
    Model big(9, 4, true);
    Checkpoint cbig = big.ck();
    save_checkpoint(path, cbig);
    Model t(8);
    refused(t, t.ck(), "extra parameter 'head/w'");
  }
  SUBCASE("other optimizer") {
    Model t(8);
    SGD sgd(t.ps, 0.9f);
    Checkpoint ct = t.ck();
    ct.optimizer = &sgd;
    refused(t, ct, "optimizer state does not match");
  }
}

TEST_CASE("checkpoint: a failed write leaves the previous file intact") {
  TempDir dir;
  const std::string path = dir.file("c.ckpt");
  Model small(1);
  Checkpoint cs = small.ck();
  cs.metadata = "old";
  save_checkpoint(path, cs);
  const std::string old_bytes = read_bytes(path);

  SUBCASE("unwritable location") {
    std::string msg = error_of([&] { save_checkpoint(dir.file("no/such/dir/c.ckpt"), cs); });
    CHECK(msg.find("no/such/dir/c.ckpt") != std::string::npos);
    CHECK(msg.find("cannot create temporary file") != std::string::npos);
  }
  SUBCASE("write fails midway (file size limit, like a full disk)") {
    Model large(2, 4096);  // ~150 KB checkpoint
    Checkpoint cl = large.ck();
    struct rlimit old_limit;
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old_limit;
    lim.rlim_cur = 4096;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    std::string msg = error_of([&] { save_checkpoint(path, cl); });
    setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);
    INFO("message: " << msg);
    CHECK(msg.find("write failed") != std::string::npos);
    CHECK(msg.find(path) != std::string::npos);
  }
  CHECK(read_bytes(path) == old_bytes);
  // No temporary file is left behind.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) files += e.is_regular_file();
  CHECK(files == 1);
  Model back(3);
  Checkpoint cb = back.ck();
  load_checkpoint(path, cb);
  CHECK(cb.metadata == "old");
}

TEST_CASE("checkpoint: refuses to save or load while EMA shadows are swapped in") {
  TempDir dir;
  Model a(4);
  a.ema->swap_in();
  Checkpoint ca = a.ck();
  CHECK(error_of([&] { save_checkpoint(dir.file("x.ckpt"), ca); }).find("restore()") != std::string::npos);
  a.ema->restore();
  save_checkpoint(dir.file("x.ckpt"), ca);
  a.ema->swap_in();
  CHECK(error_of([&] { load_checkpoint(dir.file("x.ckpt"), ca); }).find("restore()") != std::string::npos);
  a.ema->restore();
}
