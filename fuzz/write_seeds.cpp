// Writes the valid example inputs of every fuzz target (fuzz/targets.h) as files, one folder per
// target: the starting corpus of tools/fuzz.sh.
//   fuzz_write_seeds DIR        -> DIR/space/seed-0, DIR/space/seed-1, ..., DIR/image/seed-6
//   fuzz_write_seeds --list     -> one line per target: name, tab, the parser(s) it drives
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "fuzz/targets.h"

int main(int argc, char** argv) {
  using spnas::fuzz::parser_targets;
  const std::string arg = argc == 2 ? argv[1] : "";
  if (arg.empty() || arg == "--help") {
    std::fprintf(stderr, "usage: %s DIR | --list\n", argv[0]);
    return 2;
  }
  for (const auto& t : parser_targets()) {
    if (arg == "--list") {
      std::printf("%s\t%s\n", t.name, t.what);
      continue;
    }
    const std::filesystem::path dir = std::filesystem::path(arg) / t.name;
    std::filesystem::create_directories(dir);
    const std::vector<std::string> seeds = t.seeds();
    for (size_t i = 0; i < seeds.size(); ++i) {
      const std::filesystem::path file = dir / ("seed-" + std::to_string(i));
      std::ofstream out(file, std::ios::binary);
      if (!(out << seeds[i])) {
        std::fprintf(stderr, "fuzz_write_seeds: cannot write %s\n", file.c_str());
        return 1;
      }
    }
  }
  return 0;
}
