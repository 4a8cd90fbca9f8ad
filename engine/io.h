// Files and text: whole-file reads, atomic writes, directories, JSON parsing, number formatting.
// Every error names the file and carries the system's reason (strerror).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace spnas {

// The whole file as bytes; throws "WHAT: cannot open 'PATH': REASON" (a directory is named as one).
std::string read_text_file(const std::string& path, const std::string& what);

// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
// On failure the temp file is removed, `path` is untouched, and an error naming the file is thrown.
void write_file_atomic(const std::string& path, const std::string& bytes);

// mkdir -p; throws naming the directory that could not be made and why.
void make_dirs(const std::string& dir);

// Parses JSON; throws "WHAT 'SOURCE': not valid JSON: ..." on malformed text.
nlohmann::json parse_json(const std::string& text, const std::string& what, const std::string& source);

// Reads the fields of one JSON object with errors that name the file and the field, and checks each
// value's range when it is read (a count of 1e12 or a width of 1e30 never reaches the code):
//   JsonFields f(obj, "space 'x.json'", "blocks[2]");
//   int k = f.integer("kernel", 1, 7);          // required
//   int s = f.integer("stride", 1, 2, 1);       // optional, default 1
//   double w = f.number("width", 0.01, 8, 1.0);
class JsonFields {
 public:
  JsonFields(const nlohmann::json& obj, std::string file, std::string where);
  bool has(const char* key) const { return obj_.contains(key); }
  int64_t integer(const char* key, int64_t lo, int64_t hi) const;
  int64_t integer(const char* key, int64_t lo, int64_t hi, int64_t def) const;
  double number(const char* key, double lo, double hi) const;
  double number(const char* key, double lo, double hi, double def) const;
  std::string string(const char* key) const;
  std::string string(const char* key, const std::string& def) const;
  bool boolean(const char* key, bool def) const;
  const nlohmann::json& object(const char* key) const;  // a required JSON object
  const nlohmann::json& array(const char* key) const;   // a required JSON array
  [[noreturn]] void fail(const char* key, const std::string& why) const;

 private:
  const nlohmann::json& obj_;
  std::string file_, where_;
};

// v with `prec` digits after the point ("%.*f"), for messages and reports.
std::string fmt(double v, int prec = 3);

}  // namespace spnas
