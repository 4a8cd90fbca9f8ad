// A small command-line parser: each subcommand declares its options (with defaults and help), so
// --help is generated and an unknown or malformed option is an error that names it.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace spnas {

class Args {
 public:
  Args(std::string command, std::string summary) : command_(std::move(command)), summary_(std::move(summary)) {}

  void option(const std::string& name, const std::string& def, const std::string& help) {
    opts_.push_back({name, def, help, false});
  }
  void flag(const std::string& name, const std::string& help) { opts_.push_back({name, "", help, true}); }

  // Returns false if --help was asked for (help printed).
  bool parse(int argc, char** argv) {
    for (int i = 0; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        print_help();
        return false;
      }
      if (a.rfind("--", 0) != 0) throw std::runtime_error(command_ + ": unexpected argument '" + a + "' (see --help)");
      std::string key = a.substr(2), value;
      size_t eq = key.find('=');
      bool has_value = eq != std::string::npos;
      if (has_value) value = key.substr(eq + 1), key = key.substr(0, eq);
      const Opt* o = find(key);
      if (!o) throw std::runtime_error(command_ + ": unknown option --" + key + " (see --help)");
      if (o->is_flag) {
        if (has_value) throw std::runtime_error(command_ + ": --" + key + " takes no value");
        values_[key] = "1";
      } else {
        if (!has_value) {
          if (i + 1 >= argc) throw std::runtime_error(command_ + ": --" + key + " needs a value");
          value = argv[++i];
        }
        values_[key] = value;
      }
    }
    return true;
  }

  bool has(const std::string& k) const { return values_.count(k) > 0; }
  std::string str(const std::string& k) const {
    auto it = values_.find(k);
    if (it != values_.end()) return it->second;
    const Opt* o = find(k);
    return o ? o->def : "";
  }
  double num(const std::string& k) const {
    std::string s = str(k);
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end) throw std::runtime_error(command_ + ": --" + k + " must be a number, got '" + s + "'");
    return v;
  }
  int64_t integer(const std::string& k) const {
    double v = num(k);
    if (v != double(int64_t(v))) throw std::runtime_error(command_ + ": --" + k + " must be an integer");
    return int64_t(v);
  }
  bool on(const std::string& k) const { return values_.count(k) > 0; }

  void print_help() const {
    std::printf("usage: spnas %s [options]\n\n%s\n\noptions:\n", command_.c_str(), summary_.c_str());
    for (const Opt& o : opts_) {
      std::string lhs = "  --" + o.name + (o.is_flag ? "" : " X");
      std::printf("%-28s %s", lhs.c_str(), o.help.c_str());
      if (!o.is_flag && !o.def.empty()) std::printf(" [%s]", o.def.c_str());
      std::printf("\n");
    }
  }

 private:
  struct Opt {
    std::string name, def, help;
    bool is_flag;
  };
  const Opt* find(const std::string& k) const {
    for (const Opt& o : opts_)
      if (o.name == k) return &o;
    return nullptr;
  }
  std::string command_, summary_;
  std::vector<Opt> opts_;
  std::map<std::string, std::string> values_;
};

}  // namespace spnas
