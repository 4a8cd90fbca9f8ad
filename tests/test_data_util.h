// Helpers shared by the data-pipeline tests: temporary directories, writing small dataset files.
#pragma once
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "data/data.h"

namespace datatest {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("spnas_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("test: cannot write " + path);
  if (!bytes.empty()) std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

inline void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile g = gzopen(path.c_str(), "wb");
  if (!g) throw std::runtime_error("test: cannot write " + path);
  gzwrite(g, bytes.data(), unsigned(bytes.size()));
  gzclose(g);
}

inline void put_be32(std::vector<uint8_t>& v, uint32_t x) {
  v.push_back(uint8_t(x >> 24));
  v.push_back(uint8_t(x >> 16));
  v.push_back(uint8_t(x >> 8));
  v.push_back(uint8_t(x));
}

// idx3 images: pixel (n, y, x) = (n * 7 + y * 3 + x) & 255.
inline std::vector<uint8_t> idx_images(uint32_t n, uint32_t rows, uint32_t cols) {
  std::vector<uint8_t> v;
  put_be32(v, 0x803);
  put_be32(v, n);
  put_be32(v, rows);
  put_be32(v, cols);
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t y = 0; y < rows; ++y)
      for (uint32_t x = 0; x < cols; ++x) v.push_back(uint8_t((i * 7 + y * 3 + x) & 255));
  return v;
}

// idx1 labels: label i = (i * 3) % 10.
inline std::vector<uint8_t> idx_labels(uint32_t n) {
  std::vector<uint8_t> v;
  put_be32(v, 0x801);
  put_be32(v, n);
  for (uint32_t i = 0; i < n; ++i) v.push_back(uint8_t((i * 3) % 10));
  return v;
}

// CIFAR-10 records: label r % 10; channel c of pixel p = (r + 5 * c + p) & 255.
inline std::vector<uint8_t> cifar_records(int n, int first = 0) {
  std::vector<uint8_t> v;
  for (int r = first; r < first + n; ++r) {
    v.push_back(uint8_t(r % 10));
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p) v.push_back(uint8_t((r + 5 * c + p) & 255));
  }
  return v;
}

// The message of the std::exception fn throws, or "" when it does not throw.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace datatest
