// Data pipeline: every loader on small files the test writes itself, every bad-input case, the
// transforms' geometry, the loader's determinism and resume, and the synthetic dataset.
#include <doctest/doctest.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <set>
#include <sstream>

#include "test_data_jpeg.h"
#include "test_data_util.h"

using namespace spnas;
using namespace datatest;

// ---- specs -----------------------------------------------------------------------------------------

TEST_CASE("data spec parsing") {
  auto s = parse_data_spec("cifar10-folder:/a/b:c");
  CHECK(s.kind == "cifar10-folder");
  CHECK(s.path == "/a/b:c");
  CHECK(parse_data_spec("synthetic").kind == "synthetic");
  CHECK(parse_data_spec("synthetic").path.empty());
  CHECK(parse_data_spec("mnist:x").path == "x");
  std::string e = error_of([] { parse_data_spec("imagenet:/x"); });
  CHECK(contains(e, "unknown dataset kind 'imagenet'"));
  for (const auto& k : data_kinds()) CHECK(contains(e, k));
  CHECK(contains(error_of([] { parse_data_spec("mnist"); }), "needs a path"));
  CHECK(contains(error_of([] { open_dataset(parse_data_spec("synthetic:train=abc")); }), "integer"));
  CHECK(contains(error_of([] { open_dataset(parse_data_spec("synthetic:colour=3")); }), "unknown synthetic option"));
  auto sp = open_dataset(parse_data_spec("synthetic:train=50,test=20,seed=4"));
  CHECK(sp.train->size() == 50);
  CHECK(sp.test->size() == 20);
  CHECK(!sp.val);
}

// ---- idx -------------------------------------------------------------------------------------------

static void check_idx_content(const Dataset& d, int n, int rows, int cols) {
  REQUIRE(d.size() == n);
  CHECK(d.height() == rows);
  CHECK(d.width() == cols);
  CHECK(d.channels() == 1);
  CHECK(d.num_classes() == 10);
  std::vector<uint8_t> px(size_t(rows) * cols);
  for (int i = 0; i < n; i += std::max(1, n / 7)) {
    CHECK(d.label(i) == (i * 3) % 10);
    d.image(i, px.data());
    bool ok = true;
    for (int y = 0; y < rows; ++y)
      for (int x = 0; x < cols; ++x) ok &= px[size_t(y) * cols + x] == uint8_t((i * 7 + y * 3 + x) & 255);
    CHECK(ok);
  }
}

TEST_CASE("mnist loader: plain and gz idx files, fashion-mnist names, .firstN naming") {
  TempDir dir("mnist");
  write_bytes(dir / "train-images-idx3-ubyte", idx_images(30, 28, 28));
  write_bytes(dir / "train-labels-idx1-ubyte", idx_labels(30));
  write_gz(dir / "t10k-images-idx3-ubyte.gz", idx_images(12, 28, 28));
  write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_labels(12));
  Splits s = open_dataset(parse_data_spec("mnist:" + dir.path.string()));
  check_idx_content(*s.train, 30, 28, 28);
  check_idx_content(*s.test, 12, 28, 28);
  CHECK(s.train->class_names()[3] == "3");
  CHECK(s.train->mean().size() == 1);

  Splits f = open_dataset(parse_data_spec("fashion-mnist:" + dir.path.string()));
  CHECK(f.train->class_names()[9] == "Ankle boot");

  TempDir d2("mnist_first");  // shared/'s naming: images only as .firstN, labels both complete .gz and .firstN
  write_bytes(d2 / "train-images-idx3-ubyte.first9", idx_images(9, 5, 4));
  write_bytes(d2 / "train-labels-idx1-ubyte.first9", idx_labels(9));
  write_gz(d2 / "train-labels-idx1-ubyte.gz", idx_labels(40));
  write_bytes(d2 / "t10k-images-idx3-ubyte.first3", idx_images(3, 5, 4));
  write_bytes(d2 / "t10k-labels-idx1-ubyte.first3", idx_labels(3));
  Splits g = open_mnist(d2.path.string(), true);
  check_idx_content(*g.train, 9, 5, 4);
  check_idx_content(*g.test, 3, 5, 4);
}

TEST_CASE("idx bad input: each error names the file and what is wrong") {
  TempDir dir("mnist_bad");
  const std::string img = dir / "train-images-idx3-ubyte", lab = dir / "train-labels-idx1-ubyte";
  write_bytes(dir / "t10k-images-idx3-ubyte", idx_images(4, 3, 3));
  write_bytes(dir / "t10k-labels-idx1-ubyte", idx_labels(4));
  auto open = [&] { open_mnist(dir.path.string()); };
  auto expect = [&](const std::string& file, const std::string& what) {
    std::string e = error_of(open);
    INFO(e);
    CHECK(contains(e, file));
    CHECK(contains(e, what));
  };
  // Truncated images.
  auto good = idx_images(10, 3, 3);
  auto cut = good;
  cut.resize(cut.size() - 5);
  write_bytes(img, cut);
  write_bytes(lab, idx_labels(10));
  expect(img, "truncated");
  // Truncated inside the header.
  write_bytes(img, std::vector<uint8_t>(good.begin(), good.begin() + 9));
  expect(img, "truncated");
  write_bytes(img, std::vector<uint8_t>(good.begin(), good.begin() + 2));
  expect(img, "truncated");
  // Oversized.
  auto big = good;
  big.push_back(1);
  big.push_back(2);
  write_bytes(img, big);
  expect(img, "oversized");
  // Wrong magic (a labels file where images are expected, and garbage).
  write_bytes(img, idx_labels(10));
  expect(img, "wrong magic number 0x00000801");
  auto bad = good;
  bad[2] = 0x0d;  // float data
  write_bytes(img, bad);
  expect(img, "wrong magic number");
  // Image and label counts that disagree.
  write_bytes(img, good);
  write_bytes(lab, idx_labels(9));
  expect(img, "10 images");
  expect(lab, "9 labels");
  // Label out of range.
  auto labs = idx_labels(10);
  labs[8 + 4] = 11;
  write_bytes(lab, labs);
  expect(lab, "label 11");
  // Truncated gzip.
  write_bytes(lab, idx_labels(10));
  fs::remove(img);
  write_gz(img + ".gz", good);
  {
    auto gz = read_file_bytes(img + ".gz", false);
    gz.resize(gz.size() / 2);
    write_bytes(img + ".gz", gz);
  }
  expect(img + ".gz", "truncated gzip");
  fs::remove(img + ".gz");
  // Missing file and unreadable path.
  expect(dir.path.string(), "no train-images-idx3-ubyte");
  CHECK(contains(error_of([] { open_mnist("/nonexistent/spnas/mnist"); }), "/nonexistent/spnas/mnist"));
  fs::create_directories(img);  // a directory where the file should be
  write_bytes(lab, idx_labels(10));
  expect(img, "is a directory");
}

// ---- CIFAR-10 binary -----------------------------------------------------------------------------------

TEST_CASE("cifar10-bin loader: records to HWC, several batches, class names from batches.meta.txt") {
  TempDir dir("cifar");
  write_bytes(dir / "data_batch_1.bin", cifar_records(7, 0));
  write_bytes(dir / "data_batch_2.bin", cifar_records(5, 7));
  write_bytes(dir / "test_batch.bin", cifar_records(4, 100));
  std::string meta = "a0\na1\na2\na3\na4\na5\na6\na7\na8\na9\n\n";
  write_bytes(dir / "batches.meta.txt", std::vector<uint8_t>(meta.begin(), meta.end()));
  Splits s = open_dataset(parse_data_spec("cifar10-bin:" + dir.path.string()));
  REQUIRE(s.train->size() == 12);
  REQUIRE(s.test->size() == 4);
  CHECK(s.train->class_names()[7] == "a7");
  std::vector<uint8_t> px(3072);
  for (int r : {0, 6, 7, 11}) {
    s.train->image(r, px.data());
    CHECK(s.train->label(r) == r % 10);
    bool ok = true;
    for (int p = 0; p < 1024; ++p)
      for (int c = 0; c < 3; ++c) ok &= px[size_t(p) * 3 + c] == uint8_t((r + 5 * c + p) & 255);
    CHECK(ok);
  }
  s.test->image(2, px.data());
  CHECK(px[0] == 102);
  CHECK(px[1] == 107);
}

TEST_CASE("cifar10-bin bad input") {
  TempDir dir("cifar_bad");
  const std::string tr = dir / "data_batch_1.bin";
  write_bytes(dir / "test_batch.bin", cifar_records(2));
  auto expect = [&](const std::string& file, const std::string& what) {
    std::string e = error_of([&] { open_cifar10_bin(dir.path.string()); });
    INFO(e);
    CHECK(contains(e, file));
    CHECK(contains(e, what));
  };
  auto recs = cifar_records(3);
  recs.resize(recs.size() - 100);
  write_bytes(tr, recs);
  expect(tr, "truncated");
  expect(tr, "2 records and 2973 bytes left over");
  recs = cifar_records(3);
  recs.push_back(0);
  write_bytes(tr, recs);
  expect(tr, "oversized");
  write_bytes(tr, {});
  expect(tr, "empty");
  recs = cifar_records(3);
  recs[3073] = 42;
  write_bytes(tr, recs);
  expect(tr, "record 1 has label 42");
  write_bytes(tr, cifar_records(3));
  std::string meta = "a\nb\n";
  write_bytes(dir / "batches.meta.txt", std::vector<uint8_t>(meta.begin(), meta.end()));
  expect(dir / "batches.meta.txt", "2 class names");
  fs::remove(dir / "batches.meta.txt");
  fs::remove(tr);
  expect(dir.path.string(), "no data_batch");
  CHECK(contains(error_of([] { open_cifar10_bin("/nonexistent/cifar"); }), "/nonexistent/cifar"));
  // More records than a CIFAR-10 batch holds.
  std::vector<uint8_t> huge(size_t(10001) * 3073, 0);
  CHECK(contains(error_of([&] {
                   std::vector<uint8_t> px;
                   std::vector<int32_t> l;
                   parse_cifar10_bin(huge.data(), huge.size(), "big.bin", &px, &l);
                 }),
                 "big.bin: oversized: 10001 records"));
}

// ---- image folders --------------------------------------------------------------------------------------

// Writes an image whose pixel (y, x) is (x * 8 + tag, y * 8, 255 - tag) in RGB.
static std::vector<uint8_t> pattern(int h, int w, int tag) {
  std::vector<uint8_t> p(size_t(h) * w * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      p[(size_t(y) * w + x) * 3 + 0] = uint8_t(x * 8 + tag);
      p[(size_t(y) * w + x) * 3 + 1] = uint8_t(y * 8);
      p[(size_t(y) * w + x) * 3 + 2] = uint8_t(255 - tag);
    }
  return p;
}

static void write_png(const std::string& path, int h, int w, int tag) {
  fs::create_directories(fs::path(path).parent_path());
  auto p = pattern(h, w, tag);
  REQUIRE(stbi_write_png(path.c_str(), w, h, 3, p.data(), w * 3));
}

// The embedded 8x8 JPEG of pattern(8, 8, 4) (stb_image_write's JPEG encoder is not UBSan-clean).
static void write_jpg(const std::string& path) { write_bytes(path, jpeg_rgb_8x8()); }

TEST_CASE("image folder: classes from sorted folder names, PNG/BMP/JPEG, grey and RGBA to RGB, resize") {
  TempDir dir("folder");
  const std::string root = dir.path.string();
  write_png(dir / "train/zebra/a.png", 8, 8, 1);
  write_png(dir / "train/zebra/b.PNG", 8, 8, 2);
  write_png(dir / "train/apple/x.png", 8, 8, 3);
  write_jpg(dir / "train/apple/y.jpg");
  {  // BMP
    fs::create_directories(dir / "train/mango");
    auto p = pattern(8, 8, 5);
    REQUIRE(stbi_write_bmp((dir / "train/mango/m.bmp").c_str(), 8, 8, 3, p.data()));
  }
  {  // grey and RGBA PNGs
    fs::create_directories(dir / "train/mango");
    std::vector<uint8_t> g(64);
    for (int i = 0; i < 64; ++i) g[size_t(i)] = uint8_t(i * 4);
    REQUIRE(stbi_write_png((dir / "train/mango/grey.png").c_str(), 8, 8, 1, g.data(), 8));
    std::vector<uint8_t> rgba(64 * 4);
    for (int i = 0; i < 64; ++i) {
      rgba[size_t(i) * 4] = 10;
      rgba[size_t(i) * 4 + 1] = 20;
      rgba[size_t(i) * 4 + 2] = 30;
      rgba[size_t(i) * 4 + 3] = uint8_t(i);
    }
    REQUIRE(stbi_write_png((dir / "train/mango/rgba.png").c_str(), 8, 8, 4, rgba.data(), 32));
  }
  write_png(dir / "test/zebra/t.png", 16, 12, 9);  // other size: resized to 8x8
  write_png(dir / "test/apple/u.png", 8, 8, 7);

  Splits s = open_dataset(parse_data_spec("folder:" + root));
  REQUIRE(s.train->size() == 7);
  CHECK(s.train->class_names() == std::vector<std::string>{"apple", "mango", "zebra"});
  CHECK(s.train->height() == 8);
  CHECK(s.train->channels() == 3);
  // Files are sorted within a class: apple/x.png, apple/y.jpg, mango/grey.png, mango/m.bmp, mango/rgba.png, zebra/a, zebra/b
  std::vector<int> labels;
  for (int i = 0; i < 7; ++i) labels.push_back(s.train->label(i));
  CHECK(labels == std::vector<int>{0, 0, 1, 1, 1, 2, 2});
  std::vector<uint8_t> px(8 * 8 * 3);
  s.train->image(0, px.data());
  CHECK(px == pattern(8, 8, 3));
  s.train->image(0, px.data());  // second read comes from the cache
  CHECK(px == pattern(8, 8, 3));
  s.train->image(1, px.data());  // JPEG: lossy, close
  auto ref = pattern(8, 8, 4);
  int maxdiff = 0;
  for (size_t i = 0; i < px.size(); ++i) maxdiff = std::max(maxdiff, std::abs(int(px[i]) - int(ref[i])));
  CHECK(maxdiff < 40);
  s.train->image(2, px.data());  // grey -> RGB
  CHECK(px[3 * 9] == 36);
  CHECK(px[3 * 9 + 1] == 36);
  CHECK(px[3 * 9 + 2] == 36);
  s.train->image(3, px.data());
  CHECK(px == pattern(8, 8, 5));
  s.train->image(4, px.data());  // RGBA -> RGB (alpha dropped)
  CHECK(px[0] == 10);
  CHECK(px[1] == 20);
  CHECK(px[2] == 30);
  REQUIRE(s.test->size() == 2);
  CHECK(s.test->label(0) == 0);
  CHECK(s.test->label(1) == 2);
  s.test->image(1, px.data());  // 16x12 -> short side 12 scaled to 8, centre crop
  CHECK(px[2] == 255 - 9);

  // Forced size, no cache.
  OpenOptions o;
  o.image_size = 4;
  o.cache_bytes = 0;
  Splits r = open_dataset(parse_data_spec("folder:" + root), o);
  CHECK(r.train->height() == 4);
  std::vector<uint8_t> small(4 * 4 * 3);
  r.train->image(0, small.data());
  // 8 -> 4: every output pixel is the average of a 2x2 block (bilinear at the centres).
  CHECK(std::abs(int(small[0]) - (3 + 4)) <= 1);

  // cifar10-folder insists on 10 classes.
  CHECK(contains(error_of([&] { open_dataset(parse_data_spec("cifar10-folder:" + root)); }),
                 "3 class folders, expected 10"));
}

TEST_CASE("image folder bad input") {
  TempDir dir("folder_bad");
  const std::string root = dir.path.string();
  write_png(dir / "train/a/1.png", 8, 8, 1);
  write_png(dir / "train/b/1.png", 8, 8, 2);
  write_png(dir / "test/a/1.png", 8, 8, 3);
  // A stray non-image file: a warning and a skip.
  write_bytes(dir / "train/a/notes.txt", {'h', 'i'});
  {
    std::stringstream captured;
    auto* old = std::cerr.rdbuf(captured.rdbuf());
    Splits s = open_image_folder(root, OpenOptions{});
    std::cerr.rdbuf(old);
    CHECK(s.train->size() == 2);
    CHECK(contains(captured.str(), "notes.txt: not a JPEG/PNG/BMP image file, skipped"));
  }
  // An empty class folder.
  fs::create_directories(dir / "train/c");
  {
    std::string e = error_of([&] { open_image_folder(root, OpenOptions{}); });
    CHECK(contains(e, dir / "train/c"));
    CHECK(contains(e, "empty class folder"));
  }
  fs::remove(dir / "train/c");
  // A test class that the training split lacks.
  write_png(dir / "test/zz/1.png", 8, 8, 1);
  CHECK(contains(error_of([&] { open_image_folder(root, OpenOptions{}); }), "does not exist in the training split"));
  fs::remove_all(dir / "test/zz");
  // A corrupt JPEG: found when it is decoded, the error names the file.
  const std::string bad = dir / "train/b/2.jpg";
  {
    write_jpg(bad);
    auto bytes = read_file_bytes(bad, false);
    for (size_t i = 0; i < 24; ++i) bytes[i] = uint8_t(0xA5 ^ i);
    write_bytes(bad, bytes);
  }
  {
    Splits s = open_image_folder(root, OpenOptions{});
    std::vector<uint8_t> px(8 * 8 * 3);
    std::string e = error_of([&] { s.train->image(2, px.data()); });
    CHECK(contains(e, bad));
    CHECK(contains(e, "corrupt"));
    // The loader passes a worker's error on to next().
    Loader L(s.train, 3, false, AugmentConfig{}, 1, 2, true);
    Tensor x;
    std::vector<int> y;
    std::string le = error_of([&] { L.next(x, y); });
    CHECK(contains(le, bad));
  }
  {  // A truncated JPEG (header only).
    write_jpg(bad);
    auto bytes = read_file_bytes(bad, false);
    bytes.resize(40);
    write_bytes(bad, bytes);
    Splits s = open_image_folder(root, OpenOptions{});
    std::vector<uint8_t> px(8 * 8 * 3);
    CHECK(contains(error_of([&] { s.train->image(2, px.data()); }), bad));
  }
  fs::remove(bad);
  // An empty file with an image extension.
  write_bytes(bad, {});
  {
    Splits s = open_image_folder(root, OpenOptions{});
    std::vector<uint8_t> px(8 * 8 * 3);
    CHECK(contains(error_of([&] { s.train->image(2, px.data()); }), bad + ": corrupt image: empty file"));
  }
  fs::remove(bad);
  // Unreadable paths.
  CHECK(contains(error_of([] { open_dataset(parse_data_spec("folder:/nonexistent/spnas")); }), "/nonexistent/spnas"));
  CHECK(contains(error_of([&] { open_image_folder(dir / "train/a/1.png", OpenOptions{}); }), "found a file"));
  fs::remove_all(dir / "test");
  CHECK(contains(error_of([&] { open_image_folder(root, OpenOptions{}); }), "no test/ or val/"));
  CHECK(contains(error_of([&] { open_image_folder(dir / "train", OpenOptions{}); }), "no train/"));
  // A file that vanished after listing.
  {
    write_png(dir / "test/a/1.png", 8, 8, 3);
    Splits s = open_image_folder(root, OpenOptions{});
    fs::remove(dir / "train/b/1.png");
    std::vector<uint8_t> px(8 * 8 * 3);
    std::string e = error_of([&] { s.train->image(1, px.data()); });
    CHECK(contains(e, dir / "train/b/1.png"));
    CHECK(contains(e, "cannot open"));
  }
}

TEST_CASE("--check-data: every bad file of every split in one report; a huge image is called too large") {
  TempDir dir("folder_check");
  const std::string root = dir.path.string();
  for (int i = 0; i < 40; ++i) write_png(dir / ("train/a/" + std::to_string(i) + ".png"), 8, 8, i);
  write_png(dir / "train/b/1.png", 8, 8, 1);
  write_png(dir / "test/a/1.png", 8, 8, 3);
  write_png(dir / "test/b/1.png", 8, 8, 4);
  // Opening reads one image (the size); the check reads all of them.
  const DataCheck good = check_data(open_image_folder(root, OpenOptions{}));
  CHECK(good.images == 43);
  write_bytes(dir / "train/a/17.png", {0x89, 'P', 'N', 'G', 1, 2, 3});
  write_bytes(dir / "test/b/1.png", {'B', 'M', 0, 0});
  const std::string e = error_of([&] { check_data(open_image_folder(root, OpenOptions{})); });
  CHECK(contains(e, "2 of 43 images cannot be read"));
  CHECK(contains(e, dir / "train/a/17.png"));
  CHECK(contains(e, dir / "test/b/1.png"));

  // A PNG declaring 100000 x 100000 pixels: "too large", not "corrupt" (stb calls it corrupt).
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  put_be32(png, 100000);
  put_be32(png, 100000);
  for (uint8_t b : {8, 2, 0, 0, 0, 0, 0, 0, 0}) png.push_back(b);
  int h = 0, w = 0;
  const std::string big = error_of([&] { decode_image(png.data(), png.size(), "big.png", &h, &w); });
  CHECK(contains(big, "big.png: image too large: 100000x100000 (at most 16384 pixels per side"));

  // Found by libFuzzer (tools/fuzz.sh, target image): 59 bytes whose IDAT chunk declares 1.36 GB,
  // which stb_image allocated before reading; refused before stb sees it.
  const std::vector<uint8_t> oom = {
      0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
      0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x07, 0x08, 0x00, 0x00, 0x00, 0x00, 0xff, 0xf0, 0x00,
      0xbc, 0x51, 0x00, 0x00, 0x38, 0x49, 0x44, 0x41, 0x54, 0x7a, 0x5e, 0x01, 0x46, 0x00, 0xb9, 0xfe,
      0x58, 0x31, 0x00, 0x99, 0x04, 0xd0, 0x68, 0xf2, 0x69, 0xfa, 0x82};
  const std::string e2 = error_of([&] { decode_image(oom.data(), oom.size(), "oom.png", &h, &w); });
  CHECK(contains(e2, "oom.png: corrupt PNG: the chunk at byte 33 declares 1358954552 bytes of data"));
}

// ---- validation split -------------------------------------------------------------------------------------

TEST_CASE("validation hold-out: seeded, disjoint, complete") {
  Splits a = open_dataset(parse_data_spec("synthetic:train=1000,test=10"), 0.1, 7);
  Splits b = open_dataset(parse_data_spec("synthetic:train=1000,test=10"), 0.1, 7);
  Splits c = open_dataset(parse_data_spec("synthetic:train=1000,test=10"), 0.1, 8);
  REQUIRE(a.val);
  CHECK(a.val->size() == 100);
  CHECK(a.train->size() == 900);
  auto* av = dynamic_cast<SubsetDataset*>(a.val.get());
  auto* at = dynamic_cast<SubsetDataset*>(a.train.get());
  auto* bv = dynamic_cast<SubsetDataset*>(b.val.get());
  auto* cv = dynamic_cast<SubsetDataset*>(c.val.get());
  REQUIRE((av && at && bv && cv));
  CHECK(av->indices() == bv->indices());
  CHECK(av->indices() != cv->indices());
  std::set<int64_t> all(av->indices().begin(), av->indices().end());
  all.insert(at->indices().begin(), at->indices().end());
  CHECK(all.size() == 1000);
  CHECK(a.val->num_classes() == 10);
  CHECK(contains(error_of([] { open_dataset(parse_data_spec("synthetic:train=10,test=10"), 1.0); }), "[0, 1)"));
}

// ---- transforms -------------------------------------------------------------------------------------------

static std::vector<uint8_t> ramp(int h, int w, int c) {
  std::vector<uint8_t> p(size_t(h) * w * c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) p[(size_t(y) * w + x) * c + k] = uint8_t(y * 16 + x + 100 * k);
  return p;
}

TEST_CASE("transform: normalization, pad-and-crop and flip geometry") {
  const int H = 6, W = 5, C = 2;
  auto src = ramp(H, W, C);
  AugmentConfig a;
  a.mean = {0.5f, 0.25f};
  a.std = {0.5f, 2.0f};
  Transform id(a, H, W, C);
  std::vector<float> out(size_t(H) * W * C);
  Rng rng(1);
  id.apply(src.data(), out.data(), rng);
  for (size_t i = 0; i < out.size(); ++i) {
    const int k = int(i % 2);
    CHECK(out[i] == doctest::Approx((src[i] / 255.0f - a.mean[k]) / a.std[k]));
  }
  a.random_crop = true;
  a.crop_pad = 2;
  a.hflip = true;
  Transform t(a, H, W, C);
  std::set<std::pair<int, int>> offsets;
  int flips = 0;
  for (int s = 0; s < 400; ++s) {
    Rng r(s);
    auto g = t.sample_geometry(r);
    CHECK(g.pad_dy >= 0);
    CHECK(g.pad_dy <= 4);
    CHECK(g.pad_dx >= 0);
    CHECK(g.pad_dx <= 4);
    offsets.insert({g.pad_dy, g.pad_dx});
    flips += g.flip;
    t.apply_geometry(src.data(), out.data(), g);
    bool ok = true;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const int sx0 = g.flip ? W - 1 - x : x;
        const int sy = y + g.pad_dy - 2, sx = sx0 + g.pad_dx - 2;
        for (int k = 0; k < C; ++k) {
          const float v = (sy < 0 || sy >= H || sx < 0 || sx >= W) ? 0.0f : src[(size_t(sy) * W + sx) * C + k] / 255.0f;
          ok &= std::fabs(out[(size_t(y) * W + x) * C + k] - (v - a.mean[k]) / a.std[k]) < 1e-5f;
        }
      }
    CHECK(ok);
  }
  CHECK(offsets.size() == 25);  // every offset occurs
  CHECK(flips > 150);
  CHECK(flips < 250);
}

TEST_CASE("transform: centre crop and random-resized-crop geometry, bilinear resize") {
  const int H = 40, W = 60;
  AugmentConfig a;
  a.center_crop = true;
  a.crop_fraction = 0.5f;
  a.out_size = 10;
  Transform t(a, H, W, 3);
  Rng r(0);
  auto g = t.sample_geometry(r);
  CHECK(g.h == doctest::Approx(20));
  CHECK(g.w == doctest::Approx(20));
  CHECK(g.y0 == doctest::Approx(10));
  CHECK(g.x0 == doctest::Approx(20));
  // A linear ramp survives bilinear resampling exactly: output pixel (y, x) samples the source at
  // y0 + (y + 0.5) * 2 - 0.5 = 10.5 + 2y, x0 + ... = 20.5 + 2x.
  std::vector<uint8_t> src(size_t(H) * W * 3);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      src[(size_t(y) * W + x) * 3 + 0] = uint8_t(2 * x);
      src[(size_t(y) * W + x) * 3 + 1] = uint8_t(4 * y);
      src[(size_t(y) * W + x) * 3 + 2] = 7;
    }
  std::vector<float> out(10 * 10 * 3);
  t.apply_geometry(src.data(), out.data(), g);
  bool ok = true;
  for (int y = 0; y < 10; ++y)
    for (int x = 0; x < 10; ++x) {
      ok &= std::fabs(out[(size_t(y) * 10 + x) * 3] * 255.0f - 2 * (20.5f + 2 * x)) < 1e-2f;
      ok &= std::fabs(out[(size_t(y) * 10 + x) * 3 + 1] * 255.0f - 4 * (10.5f + 2 * y)) < 1e-2f;
    }
  CHECK(ok);

  AugmentConfig b;
  b.random_resized_crop = true;
  b.out_size = 16;
  Transform rr(b, H, W, 3);
  double area_sum = 0;
  for (int s = 0; s < 500; ++s) {
    Rng q(s);
    auto e = rr.sample_geometry(q);
    CHECK(e.y0 >= 0);
    CHECK(e.x0 >= 0);
    CHECK(e.y0 + e.h <= H);
    CHECK(e.x0 + e.w <= W);
    const float area = e.h * e.w / (H * W), ratio = e.w / e.h;
    // Rounding to whole pixels can move the figures slightly past the ranges.
    CHECK(area >= 0.08f * 0.8f);
    CHECK(area <= 1.0f);
    CHECK(ratio >= 0.75f * 0.85f);
    CHECK(ratio <= 4.0f / 3 * 1.15f);
    area_sum += area;
  }
  CHECK(area_sum / 500 > 0.35);  // mean of U(0.08, 1) is 0.54, minus rejections
  std::vector<float> o2(16 * 16 * 3);
  Rng q(3);
  rr.apply(src.data(), o2.data(), q);
  for (float v : o2) CHECK(std::isfinite(v));

  // Mutually exclusive crops, and bad configurations.
  AugmentConfig c;
  c.random_crop = c.center_crop = true;
  CHECK(contains(error_of([&] { Transform(c, 8, 8, 3); }), "mutually exclusive"));
  AugmentConfig d;
  d.mean = {0.5f};
  d.std = {0.5f};
  CHECK(contains(error_of([&] { Transform(d, 8, 8, 3); }), "one value per channel"));
}

TEST_CASE("default augmentations") {
  Splits s = open_synthetic(20, 10, 1);
  auto tr = default_train_augment(*s.train);
  CHECK(tr.random_crop);
  CHECK(tr.crop_pad == 4);
  CHECK(tr.hflip);
  auto ev = default_eval_augment(*s.train);
  CHECK(!ev.random_crop);
  CHECK(!ev.hflip);
  auto big = std::make_shared<ResizedDataset>(s.train, 256);
  auto tb = default_train_augment(*big);
  CHECK(tb.random_resized_crop);
  CHECK(tb.out_size == 224);
  auto eb = default_eval_augment(*big);
  CHECK(eb.center_crop);
  CHECK(eb.out_size == 224);
  Loader L(big, 2, true, tb, 1, 1);
  CHECK(L.batch_shape() == Shape{2, 224, 224, 3});
}

// ---- loader -----------------------------------------------------------------------------------------------

static std::vector<std::pair<std::vector<float>, std::vector<int>>> run_epochs(std::shared_ptr<Dataset> ds, int workers,
                                                                             int epochs, bool drop_last, uint64_t seed,
                                                                             int batch = 32) {
  Loader L(ds, batch, true, default_train_augment(*ds), seed, workers, drop_last);
  std::vector<std::pair<std::vector<float>, std::vector<int>>> out;
  Tensor x;
  std::vector<int> y;
  for (int e = 0; e < epochs; ++e) {
    while (L.next(x, y)) out.push_back({std::vector<float>(x.data(), x.data() + x.numel()), y});
    out.push_back({{}, {}});  // epoch marker
  }
  return out;
}

TEST_CASE("loader: identical batches for any worker count; shuffled per epoch; every image once") {
  Splits s = open_synthetic(300, 10, 3);
  auto ref = run_epochs(s.train, 0, 3, false, 11);
  CHECK(ref.size() == 3 * (10 + 1));  // 300 / 32 -> 9 full + 1 partial, + marker
  CHECK(ref[9].second.size() == 300 - 9 * 32);
  for (int w : {1, 2, 3}) {
    auto got = run_epochs(s.train, w, 3, false, 11);
    REQUIRE(got.size() == ref.size());
    bool same = true;
    for (size_t i = 0; i < ref.size(); ++i) same &= got[i] == ref[i];
    CHECK_MESSAGE(same, "workers=" << w);
  }
  // Every label count per epoch matches the dataset (each image exactly once).
  std::vector<int> per(10, 0);
  for (int i = 0; i < 11; ++i)
    for (int l : ref[size_t(i)].second) per[size_t(l)]++;
  for (int c = 0; c < 10; ++c) CHECK(per[size_t(c)] == 30);
  // Epochs are shuffled differently, and another seed gives other batches.
  CHECK(ref[0].second != ref[11].second);
  auto other = run_epochs(s.train, 1, 1, true, 12);
  CHECK(other[0].second != ref[0].second);
  // drop_last
  auto dl = run_epochs(s.train, 2, 1, true, 11);
  CHECK(dl.size() == 9 + 1);
  CHECK(dl[0] == ref[0]);
}

TEST_CASE("loader: no shuffle keeps dataset order; seek resumes exactly; batch tensor reused") {
  Splits s = open_synthetic(100, 10, 3);
  {
    Loader L(s.test, 4, false, AugmentConfig{}, 0, 1);
    Tensor x;
    std::vector<int> y;
    REQUIRE(L.next(x, y));
    CHECK(y == std::vector<int>{0, 1, 2, 3});
    CHECK(L.batches_per_epoch() == 2);
    CHECK(x.shape() == Shape{4, 32, 32, 3});
  }
  for (int workers : {0, 2}) {
    Loader A(s.train, 8, true, default_train_augment(*s.train), 5, workers);
    CHECK(A.batches_per_epoch() == 12);
    Tensor x;
    std::vector<int> y;
    std::vector<std::vector<float>> seq;
    std::vector<Loader::Position> pos;
    const float* first_data = nullptr;
    for (int i = 0; i < 40; ++i) {
      pos.push_back(A.position());
      if (!A.next(x, y)) {
        seq.push_back({});
        continue;
      }
      if (!first_data) first_data = x.data();
      CHECK(x.data() == first_data);  // same storage every batch
      std::vector<float> v(x.data(), x.data() + x.numel());
      v.insert(v.end(), y.begin(), y.end());
      seq.push_back(v);
    }
    CHECK(pos[12].epoch == 0);
    CHECK(pos[12].batch == 12);
    CHECK(pos[13].epoch == 1);
    CHECK(pos[13].batch == 0);
    for (int start : {0, 5, 12, 13, 30}) {
      Loader B(s.train, 8, true, default_train_augment(*s.train), 5, 3 - workers / 2);
      B.seek(pos[size_t(start)]);
      bool same = true;
      for (int i = start; i < 40; ++i) {
        if (!B.next(x, y)) {
          same &= seq[size_t(i)].empty();
          continue;
        }
        std::vector<float> v(x.data(), x.data() + x.numel());
        v.insert(v.end(), y.begin(), y.end());
        same &= v == seq[size_t(i)];
      }
      CHECK_MESSAGE(same, "resume from " << start << " workers " << workers);
    }
    // Seeking the same loader backwards mid-run works too.
    A.seek(pos[3]);
    REQUIRE(A.next(x, y));
    std::vector<float> v(x.data(), x.data() + x.numel());
    v.insert(v.end(), y.begin(), y.end());
    CHECK(v == seq[3]);
  }
  CHECK(contains(error_of([&] { Loader(s.test, 64, true, AugmentConfig{}, 0, 1); }), "fewer than one batch"));
  Loader C(s.test, 4, true, AugmentConfig{}, 0, 1);
  CHECK(contains(error_of([&] { C.seek({0, 99}); }), "outside"));
}

// ---- synthetic --------------------------------------------------------------------------------------------

// Its generation speed is measured by bench_data, not here: a shared machine makes any time limit flaky.
TEST_CASE("synthetic dataset: seeded, balanced, distinct splits") {
  Splits a = open_synthetic();
  CHECK(a.train->size() == 10000);
  CHECK(a.test->size() == 2000);
  CHECK(a.train->num_classes() == 10);
  CHECK(a.train->class_names()[9] == "dots");
  Splits b = open_synthetic(50, 50, 1);
  Splits c = open_synthetic(50, 50, 2);
  std::vector<uint8_t> p(3072), q(3072), r(3072), t(3072);
  a.train->image(17, p.data());
  b.train->image(17, q.data());
  c.train->image(17, r.data());
  b.test->image(17, t.data());
  CHECK(p == q);
  CHECK(p != r);
  CHECK(p != t);
  std::vector<int> per(10, 0);
  for (int64_t i = 0; i < a.train->size(); ++i) per[size_t(a.train->label(i))]++;
  for (int n : per) CHECK(n == 1000);
  auto m = a.train->mean(), sd = a.train->stddev();
  for (int k = 0; k < 3; ++k) {
    CHECK(m[size_t(k)] > 0.3f);
    CHECK(m[size_t(k)] < 0.7f);
    CHECK(sd[size_t(k)] > 0.15f);
  }
}

// ---- decoder regressions (found by fuzzing) ---------------------------------------------------------

static void to_vec(void* ctx, void* data, int size) {
  auto* v = static_cast<std::vector<uint8_t>*>(ctx);
  v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
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
