// Seeded mutation fuzzing of the parsers (idx, CIFAR-10 binary, gzip, JPEG/PNG/BMP): every mutated
// input must either parse into consistent output or throw std::runtime_error - no crash, no hang,
// no sanitizer report (run this under -DSPNAS_SANITIZE=address,undefined). Bounded iterations,
// a few seconds in all. SPNAS_FUZZ_ITERS scales the iteration counts for longer runs.
#include <doctest/doctest.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "test_data_jpeg.h"
#include "test_data_util.h"

using namespace spnas;
using namespace datatest;

static int iters(int base) {
  const char* e = std::getenv("SPNAS_FUZZ_ITERS");
  if (!e) return base;
  return std::max(1, int(std::atof(e) * base));
}

// One round of 1..8 random mutations.
static std::vector<uint8_t> mutate(const std::vector<uint8_t>& in, Rng& r) {
  std::vector<uint8_t> v = in;
  const int n = 1 + int(r.below(8));
  static const uint32_t interesting[] = {0, 1, 2, 3, 9, 10, 11, 28, 255, 256, 1024, 3073, 10000, 10001, 60000,
                                         0x7fffffff, 0x80000000u, 0xffffffffu, 0x800, 0x801, 0x803, 0x0d08};
  for (int k = 0; k < n; ++k) {
    const int op = int(r.below(9));
    const size_t sz = v.size();
    switch (op) {
      case 0:  // flip a bit
        if (sz) v[r.below(sz)] ^= uint8_t(1u << r.below(8));
        break;
      case 1:  // random byte
        if (sz) v[r.below(sz)] = uint8_t(r.next_u32());
        break;
      case 2:  // interesting byte
        if (sz) v[r.below(sz)] = uint8_t(std::vector<int>{0, 1, 0x7f, 0x80, 0xff, 9, 10}[r.below(7)]);
        break;
      case 3:  // truncate
        v.resize(size_t(r.below(sz + 1)));
        break;
      case 4: {  // append random bytes
        const size_t m = size_t(r.below(64));
        for (size_t i = 0; i < m; ++i) v.push_back(uint8_t(r.next_u32()));
        break;
      }
      case 5: {  // big-endian interesting word, mostly in the header
        if (sz >= 4) {
          const size_t pos = r.bernoulli(0.7f) ? size_t(r.below(std::min<size_t>(sz - 3, 24))) : size_t(r.below(sz - 3));
          const uint32_t w = interesting[r.below(sizeof interesting / sizeof interesting[0])];
          v[pos] = uint8_t(w >> 24);
          v[pos + 1] = uint8_t(w >> 16);
          v[pos + 2] = uint8_t(w >> 8);
          v[pos + 3] = uint8_t(w);
        }
        break;
      }
      case 6: {  // copy a chunk over another place
        if (sz >= 2) {
          const size_t a = size_t(r.below(sz)), b = size_t(r.below(sz)), len = size_t(r.below(std::min<size_t>(sz - std::max(a, b), 32) + 1));
          std::memmove(v.data() + b, v.data() + a, len);
        }
        break;
      }
      case 7: {  // delete a chunk
        if (sz >= 2) {
          const size_t a = size_t(r.below(sz)), len = size_t(r.below(std::min<size_t>(sz - a, 64) + 1));
          v.erase(v.begin() + long(a), v.begin() + long(a + len));
        }
        break;
      }
      default: {  // insert a chunk
        const size_t a = size_t(r.below(sz + 1)), len = size_t(r.below(16));
        std::vector<uint8_t> ins(len);
        for (auto& b : ins) b = uint8_t(r.next_u32());
        v.insert(v.begin() + long(a), ins.begin(), ins.end());
        break;
      }
    }
  }
  return v;
}

// Runs fn on `count` mutations of each seed input; returns how many parsed without error.
template <class F>
static int fuzz(const char* what, const std::vector<std::vector<uint8_t>>& seeds, int count, uint64_t seed, F fn) {
  Rng r(seed);
  int ok = 0, threw = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < count; ++i) {
    const auto& s = seeds[size_t(i) % seeds.size()];
    std::vector<uint8_t> m = mutate(s, r);
    if (r.bernoulli(0.2f)) m = mutate(m, r);  // deeper mutations now and then
    try {
      fn(m);
      ++ok;
    } catch (const std::runtime_error&) {
      ++threw;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE(std::string(what) << ": " << count << " mutated inputs in " << secs << " s, " << ok << " parsed, " << threw << " rejected");
  CHECK(ok + threw == count);
  return ok;
}

TEST_CASE("fuzz idx parsers") {
  std::vector<std::vector<uint8_t>> img = {idx_images(3, 4, 5), idx_images(1, 28, 28), idx_images(7, 2, 2)};
  std::vector<std::vector<uint8_t>> lab = {idx_labels(5), idx_labels(1), idx_labels(40)};
  fuzz("idx images", img, iters(20000), 1, [](const std::vector<uint8_t>& m) {
    IdxImages im = parse_idx_images(m.data(), m.size(), "fuzz-images");
    REQUIRE(int64_t(im.pixels.size()) == im.count * im.rows * im.cols);
    REQUIRE(im.pixels.size() + 16 == m.size());
  });
  fuzz("idx labels", lab, iters(20000), 2, [](const std::vector<uint8_t>& m) {
    auto l = parse_idx_labels(m.data(), m.size(), "fuzz-labels");
    REQUIRE(l.size() + 8 == m.size());
    for (int v : l) REQUIRE((v >= 0 && v < 10));
  });
}

TEST_CASE("fuzz CIFAR-10 binary parser") {
  std::vector<std::vector<uint8_t>> seeds = {cifar_records(1), cifar_records(3)};
  fuzz("cifar10 bin", seeds, iters(10000), 3, [](const std::vector<uint8_t>& m) {
    std::vector<uint8_t> px;
    std::vector<int32_t> l;
    parse_cifar10_bin(m.data(), m.size(), "fuzz.bin", &px, &l);
    REQUIRE(px.size() == l.size() * 3072);
    REQUIRE(l.size() * 3073 == m.size());
  });
}

static std::vector<uint8_t> gz_bytes(const std::vector<uint8_t>& raw) {
  TempDir d("fuzzgz");
  write_gz(d / "x.gz", raw);
  return read_file_bytes(d / "x.gz", false);
}

TEST_CASE("fuzz gzip + idx") {
  std::vector<std::vector<uint8_t>> seeds = {gz_bytes(idx_images(4, 6, 6)), gz_bytes(idx_labels(30))};
  fuzz("gzip", seeds, iters(30000), 4, [](const std::vector<uint8_t>& m) {
    auto raw = gunzip(m.data(), m.size(), "fuzz.gz", size_t(1) << 20);
    REQUIRE(raw.size() <= (size_t(1) << 20));
    if (raw.size() > 3 && raw[3] == 3) parse_idx_images(raw.data(), raw.size(), "fuzz.gz");
    else parse_idx_labels(raw.data(), raw.size(), "fuzz.gz");
  });
}

static void to_vec(void* ctx, void* data, int size) {
  auto* v = static_cast<std::vector<uint8_t>*>(ctx);
  v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
}

TEST_CASE("fuzz image decoder (JPEG, PNG, BMP)") {
  std::vector<uint8_t> rgb(16 * 12 * 3), grey(9 * 7), rgba(5 * 6 * 4);
  Rng r(9);
  for (auto& b : rgb) b = uint8_t(r.next_u32());
  for (auto& b : grey) b = uint8_t(r.next_u32());
  for (auto& b : rgba) b = uint8_t(r.next_u32());
  std::vector<std::vector<uint8_t>> seeds(7);
  seeds[0] = jpeg_rgb_8x8();  // stb_image_write's JPEG encoder is not UBSan-clean: embedded
  REQUIRE(stbi_write_png_to_func(to_vec, &seeds[1], 16, 12, 3, rgb.data(), 48));
  REQUIRE(stbi_write_bmp_to_func(to_vec, &seeds[2], 16, 12, 3, rgb.data()));
  REQUIRE(stbi_write_png_to_func(to_vec, &seeds[3], 9, 7, 1, grey.data(), 9));
  REQUIRE(stbi_write_png_to_func(to_vec, &seeds[4], 5, 6, 4, rgba.data(), 20));
  seeds[5] = jpeg_grey_9x7();
  REQUIRE(stbi_write_bmp_to_func(to_vec, &seeds[6], 5, 6, 4, rgba.data()));
  for (const auto& s : seeds) {  // the seeds themselves decode
    int h = 0, w = 0;
    auto px = decode_image(s.data(), s.size(), "seed", &h, &w);
    CHECK(px.size() == size_t(h) * w * 3);
  }
  fuzz("images", seeds, iters(40000), 5, [](const std::vector<uint8_t>& m) {
    int h = 0, w = 0;
    auto px = decode_image(m.data(), m.size(), "fuzz.img", &h, &w);
    REQUIRE(px.size() == size_t(h) * w * 3);
  });
}

TEST_CASE("decoder guards: oversized JPEG Huffman table rejected, empty PNG IDAT chunks tolerated") {
  // A DHT segment whose 16 code-length counts add up to more than 256 symbols (stb_image 2.27
  // would write past its table).
  std::vector<uint8_t> j = jpeg_rgb_8x8();
  size_t dht = 0;
  for (size_t i = 2; i + 1 < j.size(); ++i)
    if (j[i] == 0xFF && j[i + 1] == 0xC4) {
      dht = i;
      break;
    }
  REQUIRE(dht > 0);
  for (int k = 0; k < 16; ++k) j[dht + 5 + size_t(k)] = 0x40;  // 16 * 64 = 1024 symbols
  int h = 0, w = 0;
  std::string e = error_of([&] { decode_image(j.data(), j.size(), "bad.jpg", &h, &w); });
  CHECK(contains(e, "bad.jpg: corrupt JPEG: Huffman table with 1024 symbols"));

  // A PNG with a zero-length IDAT chunk inserted before the real one decodes like the original.
  std::vector<uint8_t> rgb(6 * 5 * 3), png;
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(i * 5);
  REQUIRE(stbi_write_png_to_func(to_vec, &png, 6, 5, 3, rgb.data(), 18));
  auto ref = decode_image(png.data(), png.size(), "ok.png", &h, &w);
  CHECK(ref == rgb);
  size_t idat = 0;
  for (size_t i = 8; i + 4 < png.size(); ++i)
    if (std::memcmp(png.data() + i, "IDAT", 4) == 0) {
      idat = i - 4;
      break;
    }
  REQUIRE(idat > 0);
  const uint8_t empty[12] = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xAF, 0x06, 0x1E};
  png.insert(png.begin() + long(idat), empty, empty + 12);
  CHECK(decode_image(png.data(), png.size(), "empty-idat.png", &h, &w) == rgb);
}
