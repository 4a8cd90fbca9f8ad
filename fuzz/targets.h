// The parsers of every file the program reads, as fuzz targets: one function per parser that takes
// raw bytes, parses them and checks the result, plus valid example inputs to start mutating from.
// Used by the libFuzzer harnesses (fuzz/fuzz_*.cpp, built with -DSPNAS_FUZZ=ON, run by tools/fuzz.sh)
// and by the seeded mutation loop in CTest (tests/test_parsers_fuzz.cpp).
//
// The contract a target checks: an input either parses into a result that is consistent (sizes,
// ranges, round trip through the writer where there is one) or the parser throws std::runtime_error.
// An inconsistent result throws std::logic_error; any exception other than std::runtime_error is a
// bug, and so are crashes, sanitizer reports, hangs and huge allocations.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace spnas::fuzz {

struct ParserTarget {
  const char* name;  // "space", "arch", ...: the harness is fuzz/fuzz_NAME.cpp
  const char* what;  // the parser(s) it drives
  void (*parse)(const uint8_t* data, size_t size);
  std::vector<std::string> (*seeds)();  // valid inputs (each one parses)
  int ctest_inputs;                     // mutated inputs per CTest run (about a second in Release)
};

const std::vector<ParserTarget>& parser_targets();
// The target called `name`; throws std::invalid_argument for an unknown name.
const ParserTarget& parser_target(const std::string& name);

// libFuzzer's entry point for one target: std::runtime_error (a refused input) is the expected
// outcome, anything else escapes and is reported by libFuzzer as a crash.
int run_fuzz_input(const char* target, const uint8_t* data, size_t size);

}  // namespace spnas::fuzz
