// Data loaders on the real files in ../shared/data, and a small ConvNet learning real MNIST. Where
// ../shared/data is absent the executable exits 77 and CTest reports it as skipped (shared_data.h).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "data/data.h"
#include "shared_data.h"

using namespace spnas;
namespace fs = std::filesystem;


TEST_CASE("real MNIST: 60,000 / 10,000, first labels") {
  const std::string dir = shared_data_or_skip("mnist");
  Splits s = open_dataset(parse_data_spec("mnist:" + dir));
  REQUIRE(s.train->size() == 60000);
  REQUIRE(s.test->size() == 10000);
  CHECK(s.train->height() == 28);
  CHECK(s.train->width() == 28);
  CHECK(s.train->channels() == 1);
  std::vector<int> first, tfirst;
  for (int i = 0; i < 10; ++i) first.push_back(s.train->label(i));
  for (int i = 0; i < 10; ++i) tfirst.push_back(s.test->label(i));
  CHECK(first == std::vector<int>{5, 0, 4, 1, 9, 2, 1, 3, 1, 4});
  CHECK(tfirst == std::vector<int>{7, 2, 1, 0, 4, 1, 4, 9, 5, 9});
  std::vector<uint8_t> px(28 * 28);
  s.train->image(0, px.data());
  CHECK(px[0] == 0);
  int ink = 0;
  for (auto v : px) ink += v > 128;
  CHECK(ink > 50);
  CHECK(ink < 300);
  // Validation hold-out on real data.
  Splits v = open_dataset(parse_data_spec("mnist:" + dir), 0.1, 3);
  CHECK(v.val->size() == 6000);
  CHECK(v.train->size() == 54000);
}

TEST_CASE("real Fashion-MNIST subset (.firstN files)") {
  const std::string dir = shared_data_or_skip("fashion-mnist");
  Splits s = open_dataset(parse_data_spec("fashion-mnist:" + dir));
  CHECK(s.train->size() == 1813);
  CHECK(s.test->size() == 1770);
  CHECK(s.train->class_names()[0] == "T-shirt/top");
  // The complete .gz label files agree with the subset's labels.
  auto gz = read_file_bytes(dir + "/train-labels-idx1-ubyte.gz");
  auto all = parse_idx_labels(gz.data(), gz.size(), "train-labels-idx1-ubyte.gz");
  CHECK(all.size() == 60000);
  bool same = true;
  for (int i = 0; i < 1813; ++i) same &= all[size_t(i)] == s.train->label(i);
  CHECK(same);
  CHECK(s.train->label(0) == 9);  // the first Fashion-MNIST training item is an ankle boot
}

TEST_CASE("real CIFAR-10 binary subset") {
  const std::string dir = shared_data_or_skip("cifar-10-batches-bin");
  Splits s = open_dataset(parse_data_spec("cifar10-bin:" + dir));
  CHECK(s.train->size() == 4000);
  CHECK(s.test->size() == 1000);
  CHECK(s.train->class_names() ==
        std::vector<std::string>{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"});
  std::vector<int> first, tfirst;
  for (int i = 0; i < 10; ++i) first.push_back(s.train->label(i));
  for (int i = 0; i < 10; ++i) tfirst.push_back(s.test->label(i));
  CHECK(first == std::vector<int>{6, 9, 9, 4, 1, 1, 2, 7, 8, 3});   // frog, truck, truck, deer, ...
  CHECK(tfirst == std::vector<int>{3, 8, 8, 0, 6, 6, 1, 6, 3, 1});  // cat, ship, ship, airplane, ...
  std::vector<int> per(10, 0);
  for (int64_t i = 0; i < s.train->size(); ++i) per[size_t(s.train->label(i))]++;
  for (int n : per) CHECK(n > 300);
}

TEST_CASE("real CIFAR-10 JPEG folder: 50,000 / 10,000 images, 10 classes; agrees with the binary copy") {
  const std::string dir = shared_data_or_skip("cifar10-jpg");
  Splits s = open_dataset(parse_data_spec("cifar10-folder:" + dir));
  REQUIRE(s.train->size() == 50000);
  REQUIRE(s.test->size() == 10000);
  CHECK(s.train->num_classes() == 10);
  CHECK(s.train->class_names()[0] == "airplane");
  CHECK(s.train->class_names()[9] == "truck");
  CHECK(s.train->height() == 32);
  CHECK(s.train->width() == 32);
  std::vector<int> per(10, 0);
  for (int64_t i = 0; i < s.train->size(); ++i) per[size_t(s.train->label(i))]++;
  for (int n : per) CHECK(n == 5000);
  // Decode a sample (spread over the classes) through the loader.
  std::vector<int64_t> pick;
  for (int64_t i = 0; i < 50000; i += 250) pick.push_back(i);
  auto sample = std::make_shared<SubsetDataset>(s.train, pick, "sample");
  Loader L(sample, 50, true, default_train_augment(*sample), 1, 2);
  Tensor x;
  std::vector<int> y;
  int batches = 0;
  double sum = 0;
  while (L.next(x, y)) {
    ++batches;
    for (int64_t i = 0; i < x.numel(); ++i) sum += x.data()[i];
  }
  CHECK(batches == 4);
  CHECK(std::isfinite(sum));
  // The JPEG copy's test image 0 of class "cat" (CIFAR test record 0 is a cat) is close to the binary record.
  const std::string bin = std::string(SPNAS_SHARED_DIR) + "/data/cifar-10-batches-bin";
  if (fs::is_directory(bin)) {
    Splits b = open_cifar10_bin(bin);
    std::vector<uint8_t> pj(3072), pb(3072);
    // Find the first test image labelled cat in both: JPEG files are numbered per class in record order.
    int64_t jcat = -1;
    for (int64_t i = 0; i < s.test->size() && jcat < 0; ++i)
      if (s.test->label(i) == 3) jcat = i;
    s.test->image(jcat, pj.data());
    b.test->image(0, pb.data());
    double mad = 0;
    for (int i = 0; i < 3072; ++i) mad += std::abs(int(pj[size_t(i)]) - int(pb[size_t(i)]));
    mad /= 3072;
    MESSAGE("mean |JPEG - binary| on test image 0: " << mad);
    CHECK(mad < 12);
  }
}
