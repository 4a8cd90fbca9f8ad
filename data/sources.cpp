// Dataset sources: file reading, the idx / CIFAR-10 binary parsers, MNIST and CIFAR-10 binary
// loaders, generic dataset wrappers, dataset specs and open_dataset().
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "data/data.h"
#include "data/image_ops.h"

namespace fs = std::filesystem;

namespace spnas {
namespace dataimpl {

void data_error(const std::string& name, const std::string& message) {
  throw std::runtime_error("data: " + name + ": " + message);
}

void data_warning(const std::string& message) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::cerr << "data: warning: " << message << "\n";
}

void resize_bilinear_u8(const uint8_t* src, int sh, int sw, int c, float y0, float x0, float rh, float rw,
                        uint8_t* dst, int dh, int dw) {
  const float sy = rh / dh, sx = rw / dw;
  // Horizontal taps are the same for every row: precompute them.
  std::vector<int> xi0(dw), xi1(dw);
  std::vector<float> xf(dw);
  for (int x = 0; x < dw; ++x) {
    float fx = x0 + (x + 0.5f) * sx - 0.5f;
    fx = std::min(std::max(fx, 0.0f), float(sw - 1));
    int i = std::min(int(fx), sw - 1);
    xi0[x] = i * c;
    xi1[x] = std::min(i + 1, sw - 1) * c;
    xf[x] = fx - i;
  }
  for (int y = 0; y < dh; ++y) {
    float fy = y0 + (y + 0.5f) * sy - 0.5f;
    fy = std::min(std::max(fy, 0.0f), float(sh - 1));
    int j = std::min(int(fy), sh - 1);
    int j1 = std::min(j + 1, sh - 1);
    float wy = fy - j;
    const uint8_t* r0 = src + int64_t(j) * sw * c;
    const uint8_t* r1 = src + int64_t(j1) * sw * c;
    uint8_t* out = dst + int64_t(y) * dw * c;
    for (int x = 0; x < dw; ++x) {
      float wx = xf[x];
      for (int ch = 0; ch < c; ++ch) {
        float top = r0[xi0[x] + ch] + wx * (r0[xi1[x] + ch] - r0[xi0[x] + ch]);
        float bot = r1[xi0[x] + ch] + wx * (r1[xi1[x] + ch] - r1[xi0[x] + ch]);
        float v = top + wy * (bot - top);
        out[x * c + ch] = uint8_t(std::min(std::max(v + 0.5f, 0.0f), 255.0f));
      }
    }
  }
}

}  // namespace dataimpl

using dataimpl::data_error;
using dataimpl::data_warning;

// ---- datasets ----------------------------------------------------------------------------------------

Dataset::~Dataset() = default;

InMemoryDataset::InMemoryDataset(std::string name, int h, int w, int c, std::vector<std::string> class_names,
                                 std::vector<uint8_t> pixels, std::vector<int32_t> labels, std::vector<float> mean,
                                 std::vector<float> stddev)
    : pixels_(std::move(pixels)), labels_(std::move(labels)) {
  name_ = std::move(name);
  height_ = h;
  width_ = w;
  channels_ = c;
  class_names_ = std::move(class_names);
  mean_ = std::move(mean);
  std_ = std::move(stddev);
  if (int64_t(pixels_.size()) != int64_t(labels_.size()) * h * w * c)
    data_error(name_, "internal: " + std::to_string(pixels_.size()) + " pixel bytes for " +
                          std::to_string(labels_.size()) + " images");
}

int InMemoryDataset::label(int64_t i) const {
  check(i >= 0 && i < size(), "Dataset::label", "index " + std::to_string(i) + " out of range in " + name_);
  return labels_[size_t(i)];
}

void InMemoryDataset::image(int64_t i, uint8_t* out) const {
  check(i >= 0 && i < size(), "Dataset::image", "index " + std::to_string(i) + " out of range in " + name_);
  const int64_t b = image_bytes();
  std::memcpy(out, pixels_.data() + i * b, size_t(b));
}

SubsetDataset::SubsetDataset(std::shared_ptr<Dataset> base, std::vector<int64_t> indices, std::string name)
    : base_(std::move(base)), indices_(std::move(indices)) {
  name_ = std::move(name);
  for (int64_t i : indices_)
    check(i >= 0 && i < base_->size(), "SubsetDataset", "index " + std::to_string(i) + " out of range");
}

int SubsetDataset::label(int64_t i) const {
  check(i >= 0 && i < size(), "Dataset::label", "index out of range in " + name_);
  return base_->label(indices_[size_t(i)]);
}

void SubsetDataset::image(int64_t i, uint8_t* out) const {
  check(i >= 0 && i < size(), "Dataset::image", "index out of range in " + name_);
  base_->image(indices_[size_t(i)], out);
}

ResizedDataset::ResizedDataset(std::shared_ptr<Dataset> base, int size) : base_(std::move(base)) {
  check(size > 0 && size <= 8192, "ResizedDataset", "bad image size " + std::to_string(size));
  height_ = width_ = size;
  channels_ = base_->channels();
  name_ = base_->name() + " resized to " + std::to_string(size);
}

void ResizedDataset::image(int64_t i, uint8_t* out) const {
  static thread_local std::vector<uint8_t> buf;
  const int h = base_->height(), w = base_->width(), c = base_->channels();
  buf.resize(size_t(h) * w * c);
  base_->image(i, buf.data());
  const int s = std::min(h, w);
  dataimpl::resize_bilinear_u8(buf.data(), h, w, c, float(h - s) / 2, float(w - s) / 2, float(s), float(s), out,
                               height_, width_);
}

void split_train_val(const std::shared_ptr<Dataset>& train_in, double fraction, uint64_t seed,
                     std::shared_ptr<Dataset>* train_out, std::shared_ptr<Dataset>* val_out) {
  const std::shared_ptr<Dataset> train = train_in;  // train_out may alias train_in
  check(fraction >= 0.0 && fraction < 1.0, "split_train_val",
        "validation fraction must be in [0, 1), got " + std::to_string(fraction));
  const int64_t n = train->size();
  const int64_t nv = int64_t(std::llround(fraction * double(n)));
  if (nv == 0) {
    *train_out = train;
    *val_out = nullptr;
    return;
  }
  check(nv < n, "split_train_val", "validation fraction leaves no training images");
  std::vector<int64_t> perm = epoch_permutation(n, mix_seed(seed, 0x76616cULL, 0), 0);
  std::vector<int64_t> val(perm.begin(), perm.begin() + nv), tr(perm.begin() + nv, perm.end());
  std::sort(val.begin(), val.end());
  std::sort(tr.begin(), tr.end());
  std::string base = train->name();
  *train_out = std::make_shared<SubsetDataset>(train, std::move(tr), base + " [train part]");
  *val_out = std::make_shared<SubsetDataset>(train, std::move(val), base + " [validation part]");
}

// ---- bytes -----------------------------------------------------------------------------------------------

std::vector<uint8_t> gunzip(const uint8_t* data, size_t n, const std::string& name, size_t max_out) {
  z_stream zs;
  std::memset(&zs, 0, sizeof zs);
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) data_error(name, "zlib: inflateInit2 failed");
  std::vector<uint8_t> out;
  out.resize(std::min<size_t>(std::max<size_t>(n * 4, 1 << 16), max_out));
  size_t produced = 0;
  size_t consumed = 0;
  int rc = Z_OK;
  for (;;) {
    if (produced == out.size()) {
      if (out.size() >= max_out) {
        inflateEnd(&zs);
        data_error(name, "decompressed size exceeds " + std::to_string(max_out) + " bytes");
      }
      out.resize(std::min(max_out, out.size() * 2));
    }
    const size_t in_chunk = std::min<size_t>(n - consumed, 1u << 30);
    const size_t out_chunk = std::min<size_t>(out.size() - produced, 1u << 30);
    zs.next_in = const_cast<Bytef*>(data + consumed);
    zs.avail_in = uInt(in_chunk);
    zs.next_out = out.data() + produced;
    zs.avail_out = uInt(out_chunk);
    rc = inflate(&zs, Z_NO_FLUSH);
    consumed += in_chunk - zs.avail_in;
    produced += out_chunk - zs.avail_out;
    if (rc == Z_STREAM_END) {
      // Concatenated gzip members are legal: continue with the next one if bytes remain.
      if (consumed < n && inflateReset(&zs) == Z_OK) continue;
      break;
    }
    if (rc == Z_BUF_ERROR && consumed == n && zs.avail_out != 0) {
      inflateEnd(&zs);
      data_error(name, "truncated gzip data (stream ends after " + std::to_string(n) + " bytes)");
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      std::string msg = zs.msg ? zs.msg : ("zlib error " + std::to_string(rc));
      inflateEnd(&zs);
      data_error(name, "corrupt gzip data: " + msg);
    }
    if (consumed == n && zs.avail_out != 0) {
      inflateEnd(&zs);
      data_error(name, "truncated gzip data (stream ends after " + std::to_string(n) + " bytes)");
    }
  }
  inflateEnd(&zs);
  out.resize(produced);
  return out;
}

std::vector<uint8_t> read_file_bytes(const std::string& path, bool decompress) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) data_error(path, "cannot open: " + (ec ? ec.message() : std::string("no such file")));
  if (fs::is_directory(st)) data_error(path, "cannot read: is a directory, expected a file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) data_error(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  for (;;) {
    size_t k = std::fread(buf, 1, sizeof buf, f);
    bytes.insert(bytes.end(), buf, buf + k);
    if (k < sizeof buf) {
      if (std::ferror(f)) {
        int e = errno;
        std::fclose(f);
        data_error(path, std::string("read error: ") + std::strerror(e));
      }
      break;
    }
  }
  std::fclose(f);
  if (decompress && bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b)
    return gunzip(bytes.data(), bytes.size(), path);
  return bytes;
}

// ---- idx -------------------------------------------------------------------------------------------------

static uint32_t be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }

static std::string hex32(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}

// Checks the idx header: unsigned-byte data with `ndim` dimensions. Returns the dimensions.
static std::vector<uint32_t> idx_header(const uint8_t* data, size_t n, const std::string& name, int ndim,
                                        const char* what) {
  const uint32_t expected_magic = 0x00000800u | uint32_t(ndim);
  if (n < 4)
    data_error(name, "truncated: " + std::to_string(n) + " bytes, shorter than the 4-byte idx magic number");
  const uint32_t magic = be32(data);
  if (magic != expected_magic)
    data_error(name, "wrong magic number " + hex32(magic) + ", expected " + hex32(expected_magic) + " (idx " + what +
                         ": unsigned bytes, " + std::to_string(ndim) + " dimension" + (ndim > 1 ? "s" : "") + ")");
  const size_t header = 4 + 4 * size_t(ndim);
  if (n < header)
    data_error(name, "truncated: " + std::to_string(n) + " bytes, shorter than the " + std::to_string(header) +
                         "-byte idx header");
  std::vector<uint32_t> dims(ndim);
  for (int i = 0; i < ndim; ++i) dims[i] = be32(data + 4 + 4 * i);
  return dims;
}

static void check_idx_size(const std::string& name, size_t n, size_t header, uint64_t payload, const std::string& what) {
  const uint64_t expected = header + payload;
  if (n < expected)
    data_error(name, "truncated: the header announces " + what + " (" + std::to_string(expected) +
                         " bytes with the header) but the file has " + std::to_string(n) + " bytes");
  if (n > expected)
    data_error(name, "oversized: " + std::to_string(n - expected) + " unexpected bytes after the " + what +
                         " that the header announces (" + std::to_string(expected) + " bytes expected)");
}

IdxImages parse_idx_images(const uint8_t* data, size_t n, const std::string& name) {
  auto dims = idx_header(data, n, name, 3, "images");
  const uint32_t count = dims[0], rows = dims[1], cols = dims[2];
  if (count == 0) data_error(name, "the header announces 0 images");
  if (rows == 0 || cols == 0 || rows > 4096 || cols > 4096)
    data_error(name, "implausible image size " + std::to_string(rows) + "x" + std::to_string(cols) + " in the header");
  const uint64_t payload = uint64_t(count) * rows * cols;
  check_idx_size(name, n, 16, payload,
                 std::to_string(count) + " images of " + std::to_string(rows) + "x" + std::to_string(cols));
  IdxImages out;
  out.count = count;
  out.rows = int(rows);
  out.cols = int(cols);
  out.pixels.assign(data + 16, data + 16 + payload);
  return out;
}

std::vector<int32_t> parse_idx_labels(const uint8_t* data, size_t n, const std::string& name, int num_classes) {
  auto dims = idx_header(data, n, name, 1, "labels");
  const uint32_t count = dims[0];
  if (count == 0) data_error(name, "the header announces 0 labels");
  check_idx_size(name, n, 8, count, std::to_string(count) + " labels");
  std::vector<int32_t> labels(count);
  for (uint32_t i = 0; i < count; ++i) {
    int v = data[8 + i];
    if (v >= num_classes)
      data_error(name, "label " + std::to_string(v) + " of item " + std::to_string(i) + " is outside 0.." +
                           std::to_string(num_classes - 1));
    labels[i] = v;
  }
  return labels;
}

// ---- CIFAR-10 binary ----------------------------------------------------------------------------------------

void parse_cifar10_bin(const uint8_t* data, size_t n, const std::string& name, std::vector<uint8_t>* pixels,
                       std::vector<int32_t>* labels) {
  constexpr size_t kRecord = 1 + 3072;
  if (n == 0) data_error(name, "empty file (a CIFAR-10 batch holds records of 3073 bytes)");
  if (n % kRecord != 0) {
    data_error(name, "truncated or oversized: " + std::to_string(n) + " bytes is not a whole number of 3073-byte records (" +
                         std::to_string(n / kRecord) + " records and " + std::to_string(n % kRecord) + " bytes left over)");
  }
  const size_t count = n / kRecord;
  if (count > 10000)
    data_error(name, "oversized: " + std::to_string(count) +
                         " records, more than the 10,000 of a CIFAR-10 batch file");
  const size_t base = pixels->size();
  pixels->resize(base + count * 3072);
  labels->reserve(labels->size() + count);
  for (size_t r = 0; r < count; ++r) {
    const uint8_t* rec = data + r * kRecord;
    if (rec[0] > 9)
      data_error(name, "record " + std::to_string(r) + " has label " + std::to_string(int(rec[0])) +
                           ", outside 0..9 (is this a CIFAR-100 file?)");
    labels->push_back(rec[0]);
    uint8_t* dst = pixels->data() + base + r * 3072;
    const uint8_t* R = rec + 1;
    const uint8_t* G = R + 1024;
    const uint8_t* B = G + 1024;
    for (int i = 0; i < 1024; ++i) {
      dst[3 * i] = R[i];
      dst[3 * i + 1] = G[i];
      dst[3 * i + 2] = B[i];
    }
  }
}

// ---- directory helpers ----------------------------------------------------------------------------------------

static void require_dir(const std::string& dir, const std::string& kind) {
  std::error_code ec;
  auto st = fs::status(dir, ec);
  if (ec || !fs::exists(st))
    data_error(dir, "cannot open " + kind + " dataset directory: " + (ec ? ec.message() : std::string("no such directory")));
  if (!fs::is_directory(st)) data_error(dir, "expected a directory holding the " + kind + " files, found a file");
}

static std::vector<std::string> list_names(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  if (ec) data_error(dir, "cannot list directory: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) data_error(dir, "cannot list directory: " + ec.message());
    names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

static bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
static bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// ---- MNIST / Fashion-MNIST ----------------------------------------------------------------------------------

// Finds "<prefix>-images-idx3-ubyte" with an optional suffix (.gz, or .firstN as in shared/) and the
// labels file with the same suffix. Accepts the common "-images.idx3-ubyte" spelling too.
static void find_idx_pair(const std::string& dir, const std::vector<std::string>& names, const std::string& prefix,
                          std::string* images, std::string* labels) {
  const std::string img_bases[] = {prefix + "-images-idx3-ubyte", prefix + "-images.idx3-ubyte"};
  const std::string lab_bases[] = {prefix + "-labels-idx1-ubyte", prefix + "-labels.idx1-ubyte"};
  auto has = [&](const std::string& n) { return std::binary_search(names.begin(), names.end(), n); };
  for (int b = 0; b < 2; ++b) {
    std::vector<std::string> suffixes = {"", ".gz"};
    for (const auto& n : names)
      if (starts_with(n, img_bases[b] + ".") && n != img_bases[b] + ".gz") suffixes.push_back(n.substr(img_bases[b].size()));
    for (const auto& suf : suffixes) {
      if (!has(img_bases[b] + suf)) continue;
      *images = (fs::path(dir) / (img_bases[b] + suf)).string();
      if (has(lab_bases[b] + suf)) {
        *labels = (fs::path(dir) / (lab_bases[b] + suf)).string();
        return;
      }
      for (const auto& ls : {std::string(""), std::string(".gz")})
        if (has(lab_bases[b] + ls)) {
          *labels = (fs::path(dir) / (lab_bases[b] + ls)).string();
          return;
        }
      data_error(dir, "found " + img_bases[b] + suf + " but no " + lab_bases[b] + suf);
    }
  }
  data_error(dir, "no " + img_bases[0] + " (or .gz) file in the directory");
}

static std::vector<std::string> mnist_names() { return {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}; }
static std::vector<std::string> fashion_names() {
  return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
}

static std::shared_ptr<Dataset> load_idx_split(const std::string& dir, const std::vector<std::string>& names,
                                               const std::string& prefix, bool fashion) {
  std::string img_path, lab_path;
  find_idx_pair(dir, names, prefix, &img_path, &lab_path);
  std::vector<uint8_t> ib = read_file_bytes(img_path), lb = read_file_bytes(lab_path);
  IdxImages im = parse_idx_images(ib.data(), ib.size(), img_path);
  std::vector<int32_t> labels = parse_idx_labels(lb.data(), lb.size(), lab_path);
  if (int64_t(labels.size()) != im.count)
    data_error(img_path, "holds " + std::to_string(im.count) + " images but " + lab_path + " holds " +
                             std::to_string(labels.size()) + " labels");
  const char* kind = fashion ? "fashion-mnist" : "mnist";
  std::vector<float> mean = {fashion ? 0.2860f : 0.1307f}, sd = {fashion ? 0.3530f : 0.3081f};
  return std::make_shared<InMemoryDataset>(std::string(kind) + " " + prefix + " (" + dir + ")", im.rows, im.cols, 1,
                                           fashion ? fashion_names() : mnist_names(), std::move(im.pixels),
                                           std::move(labels), mean, sd);
}

Splits open_mnist(const std::string& dir, bool fashion) {
  require_dir(dir, fashion ? "fashion-mnist" : "mnist");
  auto names = list_names(dir);
  Splits s;
  s.train = load_idx_split(dir, names, "train", fashion);
  s.test = load_idx_split(dir, names, "t10k", fashion);
  return s;
}

// ---- CIFAR-10 binary -----------------------------------------------------------------------------------------

static std::vector<std::string> cifar10_default_names() {
  return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
}

static std::shared_ptr<Dataset> load_cifar_files(const std::string& dir, const std::vector<std::string>& files,
                                                 const std::vector<std::string>& classes, const std::string& split) {
  std::vector<uint8_t> pixels;
  std::vector<int32_t> labels;
  for (const auto& f : files) {
    auto bytes = read_file_bytes(f, false);
    parse_cifar10_bin(bytes.data(), bytes.size(), f, &pixels, &labels);
  }
  return std::make_shared<InMemoryDataset>("cifar10-bin " + split + " (" + dir + ")", 32, 32, 3, classes,
                                           std::move(pixels), std::move(labels),
                                           std::vector<float>{0.4914f, 0.4822f, 0.4465f},
                                           std::vector<float>{0.2470f, 0.2435f, 0.2616f});
}

Splits open_cifar10_bin(const std::string& dir) {
  require_dir(dir, "cifar10-bin");
  auto names = list_names(dir);
  std::vector<std::string> train_files, test_files;
  for (const auto& n : names) {
    if (!ends_with(n, ".bin")) continue;
    if (starts_with(n, "data_batch_")) train_files.push_back((fs::path(dir) / n).string());
    else if (starts_with(n, "test_batch")) test_files.push_back((fs::path(dir) / n).string());
  }
  if (train_files.empty()) data_error(dir, "no data_batch_*.bin file in the directory");
  if (test_files.empty()) data_error(dir, "no test_batch*.bin file in the directory");
  std::vector<std::string> classes = cifar10_default_names();
  const std::string meta = (fs::path(dir) / "batches.meta.txt").string();
  if (std::binary_search(names.begin(), names.end(), std::string("batches.meta.txt"))) {
    auto bytes = read_file_bytes(meta, false);
    std::vector<std::string> read;
    std::string line;
    for (size_t i = 0; i <= bytes.size(); ++i) {
      if (i == bytes.size() || bytes[i] == '\n') {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
        if (!line.empty()) read.push_back(line);
        line.clear();
      } else {
        line.push_back(char(bytes[i]));
      }
    }
    if (read.size() != 10)
      data_error(meta, "lists " + std::to_string(read.size()) + " class names, expected 10 (one per line)");
    classes = read;
  }
  Splits s;
  s.train = load_cifar_files(dir, train_files, classes, "train");
  s.test = load_cifar_files(dir, test_files, classes, "test");
  return s;
}

// ---- specs ---------------------------------------------------------------------------------------------------

const std::vector<std::string>& data_kinds() {
  static const std::vector<std::string> k = {"synthetic", "mnist", "fashion-mnist", "cifar10-bin", "cifar10-folder",
                                             "folder"};
  return k;
}

std::string data_spec_help() {
  return "--data KIND[:PATH]  where KIND is synthetic (embedded procedural 10-class 32x32 set, no file; "
         "options synthetic:train=N,test=M,seed=S), mnist:DIR or fashion-mnist:DIR (idx files, plain or .gz), "
         "cifar10-bin:DIR (data_batch_N.bin, test_batch.bin, batches.meta.txt), cifar10-folder:DIR or "
         "folder:DIR (DIR/train/<class>/<image> and DIR/test/<class>/<image>, JPEG/PNG/BMP)";
}

DataSpec parse_data_spec(const std::string& s) {
  const auto& kinds = data_kinds();
  std::string list;
  for (size_t i = 0; i < kinds.size(); ++i) list += (i ? ", " : "") + kinds[i];
  const size_t colon = s.find(':');
  DataSpec spec;
  spec.kind = s.substr(0, colon);
  spec.path = colon == std::string::npos ? "" : s.substr(colon + 1);
  if (std::find(kinds.begin(), kinds.end(), spec.kind) == kinds.end())
    throw std::runtime_error("data: unknown dataset kind '" + spec.kind + "' in '" + s + "'; accepted: " + list +
                             " (as KIND:PATH, or just 'synthetic')");
  if (spec.kind != "synthetic" && spec.path.empty())
    throw std::runtime_error("data: '" + s + "' needs a path: write " + spec.kind + ":PATH");
  return spec;
}

static Splits open_synthetic_spec(const std::string& options) {
  int train = 10000, test = 2000;
  uint64_t seed = 1;
  std::stringstream ss(options);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    std::string key = item.substr(0, eq), val = eq == std::string::npos ? "" : item.substr(eq + 1);
    long long v = 0;
    try {
      size_t used = 0;
      v = std::stoll(val, &used);
      if (used != val.size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      throw std::runtime_error("data: synthetic option '" + item + "' needs an integer value (train=N,test=M,seed=S)");
    }
    if (key == "train") train = int(v);
    else if (key == "test") test = int(v);
    else if (key == "seed") seed = uint64_t(v);
    else throw std::runtime_error("data: unknown synthetic option '" + key + "'; accepted: train, test, seed");
    if ((key == "train" || key == "test") && (v < 1 || v > 10000000))
      throw std::runtime_error("data: synthetic " + key + " count must be in 1..10000000, got " + val);
  }
  return open_synthetic(train, test, seed);
}

Splits open_dataset(const DataSpec& spec, double val_fraction, uint64_t seed, int image_size) {
  OpenOptions o;
  o.val_fraction = val_fraction;
  o.seed = seed;
  o.image_size = image_size;
  return open_dataset(spec, o);
}

Splits open_dataset(const DataSpec& spec, const OpenOptions& o) {
  check(o.val_fraction >= 0.0 && o.val_fraction < 1.0, "open_dataset",
        "validation fraction must be in [0, 1), got " + std::to_string(o.val_fraction));
  check(o.image_size >= 0 && o.image_size <= 8192, "open_dataset", "bad image size " + std::to_string(o.image_size));
  Splits s;
  bool resized = false;
  if (spec.kind == "synthetic") s = open_synthetic_spec(spec.path);
  else if (spec.kind == "mnist") s = open_mnist(spec.path, false);
  else if (spec.kind == "fashion-mnist") s = open_mnist(spec.path, true);
  else if (spec.kind == "cifar10-bin") s = open_cifar10_bin(spec.path);
  else if (spec.kind == "cifar10-folder" || spec.kind == "folder") {
    s = open_image_folder(spec.path, o, spec.kind == "cifar10-folder" ? 10 : 0, spec.kind);
    resized = true;  // folders resize while decoding
  } else {
    parse_data_spec(spec.kind);  // throws the list of kinds
  }
  if (!resized && o.image_size > 0) {
    auto wrap = [&](std::shared_ptr<Dataset>& d) {
      if (d && (d->height() != o.image_size || d->width() != o.image_size))
        d = std::make_shared<ResizedDataset>(d, o.image_size);
    };
    wrap(s.train);
    wrap(s.val);
    wrap(s.test);
  }
  if (spec.holdout > 0) {
    // The held-out images are the only evaluation split of the view (a folder's own val/ is dropped:
    // it may be what stands in for a missing test/).
    const int64_t n = s.train->size();
    split_train_val(s.train, spec.holdout, spec.view_seed, &s.train, &s.test);
    check(s.test != nullptr, "open_dataset",
          "holding out " + std::to_string(spec.holdout) + " of " + std::to_string(n) + " training images keeps none");
    s.val = nullptr;
  }
  check(spec.train_fraction > 0.0 && spec.train_fraction <= 1.0, "open_dataset",
        "training fraction must be in (0, 1], got " + std::to_string(spec.train_fraction));
  if (spec.train_fraction < 1.0) {
    std::shared_ptr<Dataset> unused;
    split_train_val(s.train, 1.0 - spec.train_fraction, mix_seed(spec.view_seed, 0x66726163ULL, 0), &s.train, &unused);
  }
  if (o.val_fraction > 0) {
    if (s.val)
      data_warning(spec.path + ": has its own validation folder; holding out " + std::to_string(o.val_fraction) +
                   " of train replaces it as the validation split");
    split_train_val(s.train, o.val_fraction, o.seed, &s.train, &s.val);
  }
  return s;
}

}  // namespace spnas
