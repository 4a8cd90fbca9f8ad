// libFuzzer harness for one parser of fuzz/targets.h: CMake compiles this file once per target with
// SPNAS_FUZZ_TARGET set to its name (fuzz_space, fuzz_arch, ...); tools/fuzz.sh runs them.
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return spnas::fuzz::run_fuzz_input(SPNAS_FUZZ_TARGET, data, size);
}
