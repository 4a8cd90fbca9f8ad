#include "engine/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace spnas {

namespace {
std::string in_quotes(const std::string& path) { return "'" + path + "'"; }
}  // namespace

std::string read_text_file(const std::string& path, const std::string& what) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw std::runtime_error(what + ": " + in_quotes(path) + " is a directory, not a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(what + ": cannot open " + in_quotes(path) + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw std::runtime_error(what + ": read error in " + in_quotes(path));
  return ss.str();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  auto fail = [&](const std::string& what, bool remove_tmp) {
    const std::string msg = in_quotes(path) + ": " + what + ": " + std::strerror(errno) + " (the previous file is unchanged)";
    if (remove_tmp) ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + msg);
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create temporary file " + in_quotes(tmp), false);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t k = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      const int e = errno;
      ::close(fd);
      errno = e;
      fail("write failed after " + std::to_string(done) + " of " + std::to_string(bytes.size()) + " bytes", true);
    }
    done += size_t(k);
  }
  if (::fsync(fd) != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    fail("fsync failed", true);
  }
  if (::close(fd) != 0) fail("close failed", true);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename from " + in_quotes(tmp) + " failed", true);
  // Make the rename itself durable.
  const std::string dir = std::filesystem::path(path).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void make_dirs(const std::string& dir) {
  std::string cur;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if ((i == dir.size() || dir[i] == '/') && !cur.empty() && ::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
      throw std::runtime_error("cannot create directory " + in_quotes(cur) + ": " + std::strerror(errno));
    if (i < dir.size()) cur += dir[i];
  }
  struct stat st;
  if (!dir.empty() && (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)))
    throw std::runtime_error(in_quotes(dir) + " exists and is not a directory");
}

nlohmann::json parse_json(const std::string& text, const std::string& what, const std::string& source) {
  try {
    return nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw std::runtime_error(what + " " + in_quotes(source) + ": not valid JSON: " + e.what());
  }
}

JsonFields::JsonFields(const nlohmann::json& obj, std::string file, std::string where)
    : obj_(obj), file_(std::move(file)), where_(std::move(where)) {
  if (!obj_.is_object()) throw std::runtime_error(file_ + ": " + (where_.empty() ? "the file" : where_) + " must be a JSON object");
}

void JsonFields::fail(const char* key, const std::string& why) const {
  throw std::runtime_error(file_ + ": " + (where_.empty() ? std::string() : where_ + ".") + key + " " + why);
}

int64_t JsonFields::integer(const char* key, int64_t lo, int64_t hi) const {
  if (!obj_.contains(key)) fail(key, "is missing");
  const nlohmann::json& v = obj_[key];
  const bool integral = v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
  if (!integral) fail(key, "must be an integer, got " + v.dump());
  const double d = v.get<double>();
  if (d < double(lo) || d > double(hi))
    fail(key, "must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + v.dump());
  return v.is_number_float() ? int64_t(d) : v.get<int64_t>();
}

int64_t JsonFields::integer(const char* key, int64_t lo, int64_t hi, int64_t def) const {
  return obj_.contains(key) ? integer(key, lo, hi) : def;
}

double JsonFields::number(const char* key, double lo, double hi) const {
  if (!obj_.contains(key)) fail(key, "is missing");
  const nlohmann::json& v = obj_[key];
  if (!v.is_number()) fail(key, "must be a number, got " + v.dump());
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) fail(key, "must be in [" + fmt(lo, 6) + ", " + fmt(hi, 6) + "], got " + v.dump());
  return d;
}

double JsonFields::number(const char* key, double lo, double hi, double def) const {
  return obj_.contains(key) ? number(key, lo, hi) : def;
}

std::string JsonFields::string(const char* key) const {
  if (!obj_.contains(key)) fail(key, "is missing");
  if (!obj_[key].is_string()) fail(key, "must be a string, got " + obj_[key].dump());
  return obj_[key].get<std::string>();
}

std::string JsonFields::string(const char* key, const std::string& def) const {
  return obj_.contains(key) ? string(key) : def;
}

bool JsonFields::boolean(const char* key, bool def) const {
  if (!obj_.contains(key)) return def;
  if (!obj_[key].is_boolean()) fail(key, "must be true or false, got " + obj_[key].dump());
  return obj_[key].get<bool>();
}

const nlohmann::json& JsonFields::object(const char* key) const {
  if (!obj_.contains(key) || !obj_[key].is_object()) fail(key, "must be a JSON object");
  return obj_[key];
}

const nlohmann::json& JsonFields::array(const char* key) const {
  if (!obj_.contains(key) || !obj_[key].is_array()) fail(key, "must be a list");
  return obj_[key];
}

std::string fmt(double v, int prec) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

}  // namespace spnas
