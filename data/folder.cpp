// Image folders (ROOT/<split>/<class>/<image>, JPEG/PNG/BMP) decoded with stb_image, cached in
// memory as uint8 on first decode when the whole split fits the cache budget.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_FAILURE_USERMSG
// Zeroed allocations: on corrupt JPEGs that it still accepts, stb_image reads table memory that the
// file never defined (valgrind shows it); calloc makes such output deterministic.
#include <cstdlib>
#define STBI_MALLOC(sz) std::calloc(1, sz)
#define STBI_REALLOC(p, newsz) std::realloc(p, newsz)
#define STBI_FREE(p) std::free(p)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb_image.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "data/data.h"
#include "data/image_ops.h"

namespace fs = std::filesystem;

namespace spnas {

using dataimpl::data_error;
using dataimpl::data_warning;

static constexpr int kMaxSide = 16384;
static constexpr int64_t kMaxPixels = int64_t(1) << 28;

// Debian's stb_image (2.27) lacks upstream's check that a JPEG Huffman table holds at most 256
// symbols, so a corrupt DHT segment makes it write past a 257-byte array (found by
// the parser fuzzing under ASan, tests/README.md). This walks the JPEG's markers the way stb_image does and
// rejects such tables before stb_image sees them.
static void check_jpeg_huffman_tables(const uint8_t* d, size_t n, const std::string& name) {
  size_t p = 0;
  if (n < 2 || d[0] != 0xFF) return;
  while (p < n && d[p] == 0xFF) ++p;
  if (p >= n || d[p] != 0xD8) return;  // not a JPEG: stb_image's JPEG reader will not claim it
  ++p;
  auto at = [&](size_t i) -> unsigned { return i < n ? d[i] : 0u; };  // stb reads 0 past the end
  while (p < n) {
    if (d[p] != 0xFF) {  // entropy-coded data or padding: stb scans byte by byte too
      ++p;
      continue;
    }
    while (p < n && d[p] == 0xFF) ++p;
    if (p >= n) break;
    const unsigned m = d[p++];
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD9)) continue;  // no length field
    const size_t L = (at(p) << 8) | at(p + 1);
    if (L < 2) data_error(name, "corrupt JPEG: marker segment length " + std::to_string(L));
    if (m == 0xC4) {  // DHT: tables follow one another while the remaining length is positive
      long rem = long(L) - 2;
      size_t q = p + 2;
      while (rem > 0 && q < n) {
        const unsigned tcth = at(q);
        if ((tcth >> 4) > 1 || (tcth & 15) > 3) break;  // stb rejects this itself
        unsigned sum = 0;
        for (int i = 0; i < 16; ++i) sum += at(q + 1 + size_t(i));
        if (sum > 256)
          data_error(name, "corrupt JPEG: Huffman table with " + std::to_string(sum) + " symbols (at most 256)");
        q += 17 + sum;
        rem -= long(17 + sum);
      }
      p = q;
    } else {
      p += L;
    }
  }
}

static bool is_png(const uint8_t* d, size_t n) { return n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0; }

static uint32_t png_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

// Walks a PNG's chunks (4-byte length, 4-byte type, data, 4-byte CRC) from the one after the
// signature, as long as each is whole in the file: visit(offset, data length, type) until it returns
// false. Returns the offset where the walk stopped: that chunk (not whole, or refused by visit) or the
// end of the whole chunks.
template <class Visit>
static size_t walk_png_chunks(const uint8_t* d, size_t n, Visit visit) {
  size_t p = 8;
  while (p + 12 <= n) {
    const uint32_t len = png_be32(d + p);
    if (len > n - p - 12 || !visit(p, size_t(len), d + p + 4)) break;
    p += 12 + size_t(len);
  }
  return p;
}

// stb_image reserves a PNG chunk's declared length before reading it: a 59-byte file declaring a
// 1.36 GB IDAT chunk made it allocate that much (found by fuzzing). Every chunk up to IEND must fit.
static void check_png_chunks(const uint8_t* d, size_t n, const std::string& name) {
  if (!is_png(d, n)) return;
  auto before_iend = [](size_t, size_t, const uint8_t* type) { return std::memcmp(type, "IEND", 4) != 0; };
  const size_t p = walk_png_chunks(d, n, before_iend);  // at IEND, at a chunk not whole, or at the end
  if (p + 8 > n) return;                                 // no chunk length left to check
  const uint64_t len = png_be32(d + p);
  if (len + 12 > n - p)
    data_error(name, "corrupt PNG: the chunk at byte " + std::to_string(p) + " declares " + std::to_string(len) +
                         " bytes of data, more than the " + std::to_string(n - p) + " bytes left in the file");
}

// stb_image copies a zero-length first IDAT chunk with memcpy(NULL, p, 0), which UBSan reports.
// Empty IDAT chunks carry no data: when a PNG has any, this returns a copy without them.
static bool strip_empty_png_idat(const uint8_t* d, size_t n, std::vector<uint8_t>* out) {
  if (!is_png(d, n)) return false;
  auto empty_idat = [](size_t len, const uint8_t* type) { return len == 0 && std::memcmp(type, "IDAT", 4) == 0; };
  bool any = false;
  walk_png_chunks(d, n, [&](size_t, size_t len, const uint8_t* type) {
    any = any || empty_idat(len, type);
    return !any;
  });
  if (!any) return false;
  out->assign(d, d + 8);
  const size_t end = walk_png_chunks(d, n, [&](size_t p, size_t len, const uint8_t* type) {
    if (!empty_idat(len, type)) out->insert(out->end(), d + p, d + p + 12 + len);
    return true;
  });
  out->insert(out->end(), d + end, d + n);  // whatever does not parse as chunks, unchanged
  return true;
}

std::vector<uint8_t> decode_image(const uint8_t* data, size_t n, const std::string& name, int* h, int* w) {
  if (n == 0) data_error(name, "corrupt image: empty file");
  if (n > size_t(INT32_MAX)) data_error(name, "image file too large");
  check_jpeg_huffman_tables(data, n, name);
  check_png_chunks(data, n, name);
  std::vector<uint8_t> stripped;
  if (strip_empty_png_idat(data, n, &stripped)) {
    data = stripped.data();
    n = stripped.size();
  }
  int x = 0, y = 0, comp = 0;
  const std::string limit = " (at most " + std::to_string(kMaxSide) + " pixels per side and " +
                            std::to_string(kMaxPixels >> 20) + " Mpixels in all)";
  // stb refuses sides beyond its own limit as "corrupt": read a PNG's or BMP's declared size first,
  // so that a huge image is called too large.
  int64_t hx = 0, hy = 0;
  auto le32 = [&](size_t o) { return int64_t(int32_t(uint32_t(data[o]) | uint32_t(data[o + 1]) << 8 | uint32_t(data[o + 2]) << 16 | uint32_t(data[o + 3]) << 24)); };
  if (n >= 24 && is_png(data, n) && std::memcmp(data + 12, "IHDR", 4) == 0)
    hx = png_be32(data + 16), hy = png_be32(data + 20);
  else if (n >= 26 && data[0] == 'B' && data[1] == 'M')
    hx = le32(18), hy = std::llabs(le32(22));
  if (hx > kMaxSide || hy > kMaxSide || hx * hy > kMaxPixels)
    data_error(name, "image too large: " + std::to_string(hx) + "x" + std::to_string(hy) + limit);
  if (!stbi_info_from_memory(data, int(n), &x, &y, &comp))
    data_error(name, std::string("corrupt or unsupported image (") + stbi_failure_reason() +
                         "); JPEG, PNG and BMP are supported");
  if (x <= 0 || y <= 0) data_error(name, "corrupt image: size " + std::to_string(x) + "x" + std::to_string(y));
  if (x > kMaxSide || y > kMaxSide || int64_t(x) * y > kMaxPixels)
    data_error(name, "image too large: " + std::to_string(x) + "x" + std::to_string(y) + limit);
  unsigned char* px = stbi_load_from_memory(data, int(n), &x, &y, &comp, 3);
  if (!px) data_error(name, std::string("corrupt image (") + stbi_failure_reason() + ")");
  std::vector<uint8_t> out(px, px + size_t(x) * y * 3);
  stbi_image_free(px);
  *h = y;
  *w = x;
  return out;
}

static bool is_image_name(const std::string& n) {
  auto dot = n.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = n.substr(dot + 1);
  for (auto& ch : ext) ch = char(std::tolower((unsigned char)ch));
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "bmp";
}

static void read_into(const std::string& path, std::vector<uint8_t>& buf) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) data_error(path, std::string("cannot open: ") + std::strerror(errno));
  buf.clear();
  size_t used = 0;
  for (;;) {
    if (buf.size() < used + 65536) buf.resize(used + 65536);
    size_t k = std::fread(buf.data() + used, 1, buf.size() - used, f);
    used += k;
    if (k == 0) break;
  }
  bool err = std::ferror(f);
  std::fclose(f);
  if (err) data_error(path, "read error");
  buf.resize(used);
}

namespace {

class FolderDataset : public Dataset {
 public:
  FolderDataset(std::string name, std::vector<std::string> files, std::vector<int32_t> labels,
                std::vector<std::string> classes, int h, int w, bool cache)
      : files_(std::move(files)), labels_(std::move(labels)) {
    name_ = std::move(name);
    class_names_ = std::move(classes);
    height_ = h;
    width_ = w;
    channels_ = 3;
    if (cache) {
      cache_.reset(new uint8_t[size_t(files_.size()) * h * w * 3]);
      state_.reset(new std::atomic<uint8_t>[files_.size()]);
      for (size_t i = 0; i < files_.size(); ++i) state_[i].store(0, std::memory_order_relaxed);
    }
  }
  int64_t size() const override { return int64_t(files_.size()); }
  int label(int64_t i) const override {
    check(i >= 0 && i < size(), "Dataset::label", "index out of range in " + name_);
    return labels_[size_t(i)];
  }
  void image(int64_t i, uint8_t* out) const override {
    check(i >= 0 && i < size(), "Dataset::image", "index out of range in " + name_);
    const size_t b = size_t(image_bytes());
    if (cache_) {
      uint8_t st = state_[i].load(std::memory_order_acquire);
      if (st == 2) {
        std::memcpy(out, cache_.get() + i * b, b);
        return;
      }
      decode(i, out);
      uint8_t expected = 0;
      if (state_[i].compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
        std::memcpy(cache_.get() + i * b, out, b);
        state_[i].store(2, std::memory_order_release);
      }
      return;
    }
    decode(i, out);
  }
  const std::string& file(int64_t i) const { return files_[size_t(i)]; }
  bool cached() const { return bool(cache_); }

 private:
  void decode(int64_t i, uint8_t* out) const {
    static thread_local std::vector<uint8_t> bytes;
    const std::string& path = files_[size_t(i)];
    read_into(path, bytes);
    int h = 0, w = 0;
    std::vector<uint8_t> px = decode_image(bytes.data(), bytes.size(), path, &h, &w);
    if (h == height_ && w == width_) {
      std::memcpy(out, px.data(), px.size());
    } else {  // scale the short side to the dataset size, centre crop
      float s = std::min(float(h) / height_, float(w) / width_);
      float rh = height_ * s, rw = width_ * s;
      dataimpl::resize_bilinear_u8(px.data(), h, w, 3, (h - rh) / 2, (w - rw) / 2, rh, rw, out, height_, width_);
    }
  }

  std::vector<std::string> files_;
  std::vector<int32_t> labels_;
  std::unique_ptr<uint8_t[]> cache_;
  std::unique_ptr<std::atomic<uint8_t>[]> state_;  // 0 not cached, 1 being written, 2 cached
};

struct Listing {
  std::vector<std::string> files;
  std::vector<int32_t> labels;
  std::vector<std::string> classes;
};

std::vector<fs::directory_entry> sorted_entries(const std::string& dir) {
  std::vector<fs::directory_entry> v;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  if (ec) data_error(dir, "cannot list directory: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) data_error(dir, "cannot list directory: " + ec.message());
    v.push_back(*it);
  }
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.path().filename() < b.path().filename(); });
  return v;
}

Listing list_split(const std::string& dir, const std::vector<std::string>* classes) {
  std::error_code ec;
  auto st = fs::status(dir, ec);
  if (ec || !fs::exists(st)) data_error(dir, "cannot open image folder: " + (ec ? ec.message() : std::string("no such directory")));
  if (!fs::is_directory(st)) data_error(dir, "expected a directory of class folders, found a file");
  Listing L;
  std::vector<std::string> class_dirs;
  int stray_top = 0;
  for (const auto& e : sorted_entries(dir)) {
    std::error_code ec2;
    if (e.is_directory(ec2)) {
      class_dirs.push_back(e.path().filename().string());
    } else if (stray_top++ < 5) {
      data_warning(e.path().string() + ": not a class folder, skipped");
    }
  }
  if (class_dirs.empty()) data_error(dir, "no class folders (expected " + dir + "/<class>/<image>)");
  if (classes) {
    L.classes = *classes;
    for (const auto& c : class_dirs)
      if (std::find(classes->begin(), classes->end(), c) == classes->end())
        data_error((fs::path(dir) / c).string(), "class folder '" + c + "' does not exist in the training split");
  } else {
    L.classes = class_dirs;
  }
  int64_t skipped = 0;
  for (const auto& c : class_dirs) {
    const int32_t label = int32_t(std::find(L.classes.begin(), L.classes.end(), c) - L.classes.begin());
    const std::string cdir = (fs::path(dir) / c).string();
    int64_t found = 0;
    for (const auto& e : sorted_entries(cdir)) {
      const std::string name = e.path().filename().string();
      std::error_code ec2;
      if (!e.is_regular_file(ec2) || !is_image_name(name)) {
        if (skipped++ < 10) data_warning(e.path().string() + ": not a JPEG/PNG/BMP image file, skipped");
        continue;
      }
      L.files.push_back(e.path().string());
      L.labels.push_back(label);
      ++found;
    }
    if (found == 0) data_error(cdir, "empty class folder: no JPEG/PNG/BMP image in it");
  }
  if (skipped > 10) data_warning(dir + ": skipped " + std::to_string(skipped) + " non-image entries in all");
  return L;
}

}  // namespace

std::shared_ptr<Dataset> open_image_folder_split(const std::string& dir, const std::vector<std::string>* classes,
                                                 int image_size, int64_t cache_bytes, const std::string& kind) {
  Listing L = list_split(dir, classes);
  int h = image_size, w = image_size;
  if (image_size <= 0) {  // native: the first image's size
    std::vector<uint8_t> bytes;
    read_into(L.files[0], bytes);
    decode_image(bytes.data(), bytes.size(), L.files[0], &h, &w);
  }
  const bool cache = int64_t(L.files.size()) * h * w * 3 <= cache_bytes;
  std::string split = fs::path(dir).filename().string();
  auto ds = std::make_shared<FolderDataset>(kind + " " + split + " (" + dir + ")", std::move(L.files),
                                            std::move(L.labels), std::move(L.classes), h, w, cache);
  return ds;
}

Splits open_image_folder(const std::string& root, const OpenOptions& o, int expect_classes, const std::string& kind) {
  std::error_code ec;
  auto st = fs::status(root, ec);
  if (ec || !fs::exists(st))
    data_error(root, "cannot open " + kind + " dataset: " + (ec ? ec.message() : std::string("no such directory")));
  if (!fs::is_directory(st)) data_error(root, "expected a directory holding train/ and test/, found a file");
  const std::string train_dir = (fs::path(root) / "train").string();
  if (!fs::is_directory(train_dir, ec)) data_error(root, "no train/ folder (expected " + root + "/train/<class>/<image>)");
  Splits s;
  s.train = open_image_folder_split(train_dir, nullptr, o.image_size, o.cache_bytes, kind);
  if (expect_classes > 0 && s.train->num_classes() != expect_classes)
    data_error(train_dir, "has " + std::to_string(s.train->num_classes()) + " class folders, expected " +
                              std::to_string(expect_classes) + " for " + kind);
  auto classes = s.train->class_names();
  const int size = o.image_size > 0 ? o.image_size : s.train->height();
  const std::string test_dir = (fs::path(root) / "test").string(), val_dir = (fs::path(root) / "val").string();
  const bool has_test = fs::is_directory(test_dir, ec), has_val = fs::is_directory(val_dir, ec);
  if (has_test) s.test = open_image_folder_split(test_dir, &classes, size, o.cache_bytes, kind);
  if (has_val) {
    auto v = open_image_folder_split(val_dir, &classes, size, o.cache_bytes, kind);
    if (has_test) s.val = v;
    else s.test = v;  // ImageNet layout: train/ and val/, val is the held-out test set
  }
  if (!s.test) data_error(root, "no test/ or val/ folder next to train/");
  std::vector<float> m, sd;
  if (kind == "cifar10-folder") {
    m = {0.4914f, 0.4822f, 0.4465f};
    sd = {0.2470f, 0.2435f, 0.2616f};
  } else {
    m = {0.485f, 0.456f, 0.406f};
    sd = {0.229f, 0.224f, 0.225f};
  }
  for (auto* d : {&s.train, &s.val, &s.test})
    if (*d) (*d)->set_normalization(m, sd);
  return s;
}

std::vector<std::string> list_image_files(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const std::string& p : paths) {
    std::error_code ec;
    const auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) data_error(p, "cannot open: " + (ec ? ec.message() : std::string("no such file or directory")));
    if (!fs::is_directory(st)) {
      if (!is_image_name(p)) data_error(p, "not a JPEG/PNG/BMP image file (by its extension)");
      files.push_back(p);
      continue;
    }
    std::vector<std::string> found;
    fs::recursive_directory_iterator it(p, ec), end;
    for (; !ec && it != end; it.increment(ec))
      if (it->is_regular_file(ec) && is_image_name(it->path().filename().string())) found.push_back(it->path().string());
    if (ec) data_error(p, "cannot list directory: " + ec.message());
    if (found.empty()) data_error(p, "no JPEG/PNG/BMP image in this folder or below it");
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

std::shared_ptr<Dataset> open_image_files(std::vector<std::string> files, int height, int width,
                                          std::vector<std::string> class_names, std::vector<float> mean,
                                          std::vector<float> stddev) {
  check(height > 0 && width > 0 && height <= kMaxSide && width <= kMaxSide, "open_image_files",
        "bad image size " + std::to_string(height) + "x" + std::to_string(width));
  std::vector<int32_t> labels(files.size(), 0);
  auto ds = std::make_shared<FolderDataset>("image files", std::move(files), std::move(labels), std::move(class_names),
                                            height, width, false);
  ds->set_normalization(std::move(mean), std::move(stddev));
  return ds;
}

}  // namespace spnas
