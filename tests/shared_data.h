// Tests on the real datasets in ../shared/data. Where a dataset is absent (a user's fresh clone has no
// ../shared) the test executable exits with code 77, which CTest reports as skipped (SKIP_RETURN_CODE
// 77 in CMakeLists.txt), not as passed. Only tests that need nothing else use this.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace spnas {

inline std::string shared_data_or_skip(const std::string& sub) {
  const std::filesystem::path p = std::filesystem::path(SPNAS_SHARED_DIR) / "data" / sub;
  std::error_code ec;
  if (!std::filesystem::is_directory(p, ec)) {
    std::printf("skipped: %s is absent (a fresh clone has no ../shared)\n", p.string().c_str());
    std::fflush(stdout);
    std::exit(77);
  }
  return p.string();
}

}  // namespace spnas
