// Data pipeline: dataset sources (MNIST/Fashion-MNIST idx, CIFAR-10 binary, image folders, an
// embedded procedural dataset), per-sample transforms, and a prefetching, seeded, resumable loader.
// See data/README.md for formats, defaults, error behaviour and measured throughput.
//
// Images are stored and handed between stages as HWC uint8. channels() is 1 for MNIST and
// Fashion-MNIST (grey, as in the files) and 3 for every other source (grey and RGBA image files
// are converted to RGB). Batches come out of the Loader as NHWC float32 Tensors.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace spnas {

// ---- naming a dataset ----------------------------------------------------------------------------

// kind: synthetic | mnist | fashion-mnist | cifar10-bin | cifar10-folder | folder
// path: a directory for every kind but synthetic, whose "path" is an optional option list
//       "train=N,test=M,seed=S" (defaults 10000, 2000, 1).
struct DataSpec {
  std::string kind;
  std::string path;
  // A tuning view (nas/tune): when holdout > 0, that fraction of the training split (chosen by
  // view_seed) replaces the test split, so a search or training run on this spec never sees the real
  // test set; then only train_fraction of the remaining training images is kept (seeded likewise).
  double holdout = 0;
  double train_fraction = 1;
  uint64_t view_seed = 0;
};

// Parses "KIND:PATH" or "synthetic[:OPTIONS]". Throws std::runtime_error naming the accepted kinds.
DataSpec parse_data_spec(const std::string& s);
const std::vector<std::string>& data_kinds();
std::string data_spec_help();  // one paragraph for --help texts

// ---- datasets --------------------------------------------------------------------------------------

// One split of a dataset. image() writes height()*width()*channels() bytes (HWC) and, like
// label(), is safe to call from several threads at once. Errors (a corrupt image file found while
// decoding on the fly, say) are std::runtime_error naming the file.
class Dataset {
 public:
  virtual ~Dataset();
  virtual int64_t size() const = 0;
  virtual int height() const { return height_; }
  virtual int width() const { return width_; }
  virtual int channels() const { return channels_; }
  virtual int num_classes() const { return int(class_names_.size()); }
  virtual std::vector<std::string> class_names() const { return class_names_; }
  virtual int label(int64_t i) const = 0;
  virtual void image(int64_t i, uint8_t* hwc_out) const = 0;

  // Per-channel mean and std on the 0..1 scale that default augmentations normalize with
  // (the usual published figures for MNIST/CIFAR/ImageNet-style folders, measured for synthetic).
  virtual std::vector<float> mean() const { return mean_; }
  virtual std::vector<float> stddev() const { return std_; }
  virtual std::string name() const { return name_; }  // e.g. "cifar10-bin train (PATH)"
  int64_t image_bytes() const { return int64_t(height()) * width() * channels(); }
  void set_normalization(std::vector<float> mean, std::vector<float> stddev) {
    mean_ = std::move(mean);
    std_ = std::move(stddev);
  }

 protected:
  int height_ = 0, width_ = 0, channels_ = 0;
  std::vector<std::string> class_names_;
  std::vector<float> mean_, std_;
  std::string name_;
};

// A dataset held in memory: pixels [N,H,W,C] uint8 and one label per image.
class InMemoryDataset : public Dataset {
 public:
  InMemoryDataset(std::string name, int h, int w, int c, std::vector<std::string> class_names,
                  std::vector<uint8_t> pixels, std::vector<int32_t> labels, std::vector<float> mean,
                  std::vector<float> stddev);
  int64_t size() const override { return int64_t(labels_.size()); }
  int label(int64_t i) const override;
  void image(int64_t i, uint8_t* hwc_out) const override;
  const uint8_t* pixels() const { return pixels_.data(); }

 private:
  std::vector<uint8_t> pixels_;
  std::vector<int32_t> labels_;
};

// A view of some images of another dataset (validation splits).
class SubsetDataset : public Dataset {
 public:
  SubsetDataset(std::shared_ptr<Dataset> base, std::vector<int64_t> indices, std::string name);
  int64_t size() const override { return int64_t(indices_.size()); }
  int height() const override { return base_->height(); }
  int width() const override { return base_->width(); }
  int channels() const override { return base_->channels(); }
  int num_classes() const override { return base_->num_classes(); }
  std::vector<std::string> class_names() const override { return base_->class_names(); }
  std::vector<float> mean() const override { return base_->mean(); }
  std::vector<float> stddev() const override { return base_->stddev(); }
  int label(int64_t i) const override;
  void image(int64_t i, uint8_t* hwc_out) const override;
  const std::vector<int64_t>& indices() const { return indices_; }

 private:
  std::shared_ptr<Dataset> base_;
  std::vector<int64_t> indices_;
};

// Bilinear resize on the fly to size x size (short side scaled to `size`, then centre crop).
class ResizedDataset : public Dataset {
 public:
  ResizedDataset(std::shared_ptr<Dataset> base, int size);
  int64_t size() const override { return base_->size(); }
  int num_classes() const override { return base_->num_classes(); }
  std::vector<std::string> class_names() const override { return base_->class_names(); }
  std::vector<float> mean() const override { return base_->mean(); }
  std::vector<float> stddev() const override { return base_->stddev(); }
  int label(int64_t i) const override { return base_->label(i); }
  void image(int64_t i, uint8_t* hwc_out) const override;

 private:
  std::shared_ptr<Dataset> base_;
};

struct Splits {
  std::shared_ptr<Dataset> train, val, test;  // val is null unless val_fraction > 0 (or ROOT/val exists)
};

struct OpenOptions {
  double val_fraction = 0.0;  // hold out this fraction of the training set (seeded) as `val`
  uint64_t seed = 0;          // seed of the validation hold-out
  int image_size = 0;         // 0 = native; otherwise images are resized to image_size^2 (bilinear)
  // Image folders whose decoded size (N*H*W*3 bytes) fits in this budget are cached in memory as
  // uint8 the first time each image is decoded; larger ones are decoded on every access.
  int64_t cache_bytes = int64_t(2) << 30;
};

Splits open_dataset(const DataSpec& spec, double val_fraction = 0.0, uint64_t seed = 0, int image_size = 0);
Splits open_dataset(const DataSpec& spec, const OpenOptions& options);

// `--check-data`: reads every image of every split once, in parallel, and collects every failure,
// so that a corrupt file deep in a large image folder is found before a long run rather than
// stopping it mid-epoch. Throws one error naming the bad files (up to 20, and their count).
struct DataCheck {
  int64_t images = 0;
  double seconds = 0;
};
DataCheck check_data(const Splits& splits);

// Holds out round(fraction * N) images of `train` (chosen by `seed`); both parts keep index order.
void split_train_val(const std::shared_ptr<Dataset>& train, double fraction, uint64_t seed,
                     std::shared_ptr<Dataset>* train_out, std::shared_ptr<Dataset>* val_out);

// ---- individual sources (open_dataset calls these; tests and tools may too) -------------------------

// Parsers over bytes in memory; `name` is the file name used in error messages. They throw
// std::runtime_error("data: NAME: what is wrong") on any malformed input and never read out of bounds.
struct IdxImages {
  int64_t count = 0;
  int rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count*rows*cols
};
IdxImages parse_idx_images(const uint8_t* data, size_t n, const std::string& name);
std::vector<int32_t> parse_idx_labels(const uint8_t* data, size_t n, const std::string& name, int num_classes = 10);
// CIFAR-10 binary: records of 1 label byte + 3072 bytes (R plane, G plane, B plane). Appends HWC
// pixels and labels. Files holding more than 10,000 records (a CIFAR-10 batch) are rejected.
void parse_cifar10_bin(const uint8_t* data, size_t n, const std::string& name, std::vector<uint8_t>* pixels,
                       std::vector<int32_t>* labels);
// gzip-compressed bytes -> bytes (at most max_out bytes). Throws naming `name` when corrupt or truncated.
std::vector<uint8_t> gunzip(const uint8_t* data, size_t n, const std::string& name, size_t max_out = size_t(1) << 31);
// Whole file -> bytes; .gz content (by magic bytes) is decompressed. Throws naming the path.
std::vector<uint8_t> read_file_bytes(const std::string& path, bool decompress = true);
// JPEG/PNG/BMP in memory -> RGB HWC (grey and RGBA converted). Throws naming `name` when corrupt.
std::vector<uint8_t> decode_image(const uint8_t* data, size_t n, const std::string& name, int* h, int* w);

Splits open_synthetic(int train_count = 10000, int test_count = 2000, uint64_t seed = 1);
Splits open_mnist(const std::string& dir, bool fashion = false);
Splits open_cifar10_bin(const std::string& dir);
// ROOT/train/<class>/<image>, ROOT/test (or ROOT/val) likewise. Classes are the sorted folder
// names of train/. Non-image files are skipped with a warning on stderr.
Splits open_image_folder(const std::string& root, const OpenOptions& options, int expect_classes = 0,
                         const std::string& kind = "folder");
// One split folder (ROOT/<split>): every image under <class>/ subfolders.
std::shared_ptr<Dataset> open_image_folder_split(const std::string& dir, const std::vector<std::string>* classes,
                                                 int image_size, int64_t cache_bytes, const std::string& kind);

// The image files a user names: each path is a JPEG/PNG/BMP file, or a folder whose image files
// (recursively, in sorted order) are taken. Throws naming a missing path, a file without an image
// extension, or a folder without images.
std::vector<std::string> list_image_files(const std::vector<std::string>& paths);
// A dataset of these image files (every label 0), decoded when read and fitted to height x width as
// image folders fit an image of another size (short side scaled, centre crop); not cached.
std::shared_ptr<Dataset> open_image_files(std::vector<std::string> files, int height, int width,
                                          std::vector<std::string> class_names, std::vector<float> mean,
                                          std::vector<float> stddev);

// The synthetic generator itself: one 32x32 RGB image of class `label` from `seed` (deterministic).
constexpr int kSyntheticSize = 32;
constexpr int kSyntheticClasses = 10;
void synthetic_image(int label, uint64_t seed, uint8_t* hwc_out);
const std::vector<std::string>& synthetic_class_names();

// ---- transforms ------------------------------------------------------------------------------------

struct AugmentConfig {
  bool random_crop = false;  // CIFAR-style: zero-pad by crop_pad, take a random out_size crop
  int crop_pad = 4;
  bool hflip = false;  // mirror with probability 1/2
  bool random_resized_crop = false;  // Inception-style
  float area_min = 0.08f, area_max = 1.0f, ratio_min = 3.f / 4, ratio_max = 4.f / 3;
  bool center_crop = false;  // crop crop_fraction of the short side around the centre, resize
  float crop_fraction = 0.875f;
  int out_size = 0;  // 0 = dataset size (height x width); else out_size x out_size
  std::vector<float> mean, std;  // per channel, 0..1 scale; empty = the dataset's mean()/stddev()
};
AugmentConfig default_train_augment(const Dataset& ds);
AugmentConfig default_eval_augment(const Dataset& ds);

// A prepared transform for one dataset geometry. apply() is const and thread-safe.
class Transform {
 public:
  Transform(const AugmentConfig& cfg, int in_h, int in_w, int channels);
  int out_h() const { return out_h_; }
  int out_w() const { return out_w_; }
  int channels() const { return c_; }
  // src: in_h*in_w*C uint8 HWC; dst: out_h*out_w*C float HWC. rng supplies this sample's randomness.
  void apply(const uint8_t* src, float* dst, Rng& rng) const;
  // The crop rectangle (in source pixels) and flip a sample would use; for tests.
  struct Geometry {
    float y0, x0, h, w;  // source rectangle mapped onto the output
    bool flip;
    int pad_dy, pad_dx;  // random_crop: output(y,x) = padded source(y + pad_dy, x + pad_dx) - pad
  };
  Geometry sample_geometry(Rng& rng) const;
  void apply_geometry(const uint8_t* src, float* dst, const Geometry& g) const;

 private:
  AugmentConfig cfg_;
  int in_h_, in_w_, c_, out_h_, out_w_;
  std::vector<float> lut_;  // [C][256] normalized values
};

// Mixes (seed, a, b) into one 64-bit seed; the loader seeds each sample with (seed, epoch, index).
uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b);
// The loader's shuffle of epoch `epoch`: a permutation of [0, n).
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

// ---- loader ----------------------------------------------------------------------------------------

// Which share of every batch a loader delivers: part `index` of `count` equal, consecutive parts
// (data-parallel rank `index` of `count`, engine/dist.h). The batch size stays the global one.
struct BatchShard {
  int index = 0, count = 1;
};

// Batches of NHWC float32 images and int labels, shuffled per epoch from `seed`, prefetched by
// `workers` background std::threads (0 = load synchronously in next()). The batches are a function
// of (seed, epoch, batch) only: the same for any worker count, and reproducible after seek(). With a
// shard, next() returns only that share of each batch, the same images as the whole batch's rows.
class Loader {
 public:
  Loader(std::shared_ptr<Dataset> ds, int batch_size, bool shuffle, AugmentConfig aug, uint64_t seed,
         int workers = 1, bool drop_last = true, BatchShard shard = {});
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Writes the next batch: images [B,H,W,C] (reused in place when it already has that shape,
  // else given new pooled storage) and B labels. Returns false, writing nothing, at the end of an
  // epoch; the following call starts the next epoch with a new shuffle. Rethrows a worker's error.
  bool next(Tensor& images, std::vector<int>& labels);
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  int batch_size() const { return batch_size_; }  // the whole batch, of which a shard is a part
  const Dataset& dataset() const { return *ds_; }
  Shape batch_shape() const;  // full-batch shape [B / shard count, out_h, out_w, C]

  struct Position {
    int64_t epoch;
    int64_t batch;  // the next batch next() returns; == batches_per_epoch() at an epoch's end
  };
  Position position() const;
  void seek(Position p);  // resume: the following next() returns what it did after position() == p

 private:
  struct Slot {
    Tensor images;
    std::vector<int> labels;
    int64_t seq = -1;  // global batch number held (epoch * bpe + batch), -1 = free/being filled
    int64_t count = 0;
    std::exception_ptr error;
  };
  void worker_loop();
  void fill(Slot& s, int64_t seq, std::vector<uint8_t>& scratch);
  std::shared_ptr<const std::vector<int64_t>> perm_for(int64_t epoch);
  void stop_workers();
  void start_workers();

  std::shared_ptr<Dataset> ds_;
  int batch_size_;
  bool shuffle_;
  uint64_t seed_;
  int workers_;
  bool drop_last_;
  BatchShard shard_;
  int64_t batches_per_epoch_;
  Transform transform_;

  int64_t epoch_ = 0, batch_ = 0;  // consumer position

  std::mutex mu_;
  std::condition_variable cv_worker_, cv_consumer_;
  std::vector<Slot> slots_;
  int64_t issue_seq_ = 0;     // next global batch number to hand to a worker
  int64_t consume_seq_ = 0;   // global batch number next() will return
  bool stopping_ = false;
  std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> perms_;
  std::vector<std::thread> threads_;
  std::vector<uint8_t> sync_scratch_;
};

}  // namespace spnas
