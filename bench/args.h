// The benchmarks' flag loops: the value after argv[i], or exit 2 naming the flag that lacks one.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>

namespace spnas {

// argv[i + 1] (and i moves to it); without one: "PROGRAM: FLAG needs a value" on stderr, exit code 2.
inline std::string flag_value(const char* program, int argc, char** argv, int& i) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "%s: %s needs a value\n", program, argv[i]);
    std::exit(2);
  }
  return argv[++i];
}

}  // namespace spnas
