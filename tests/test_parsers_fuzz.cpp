// Seeded mutation fuzzing of every parser (fuzz/targets.h: space, architecture, latency table JSON
// and CSV, checkpoint, profiler samples, predictor, idx, CIFAR-10 binary, gzip, images): every
// mutated input must parse into a consistent result or throw std::runtime_error - no other
// exception, no crash, no sanitizer report (under -DSPNAS_SANITIZE=address,undefined), no hang (the
// test's timeout) and no allocation beyond a limit set for the process. Fixed seeds, bounded
// iterations: a few seconds in all. SPNAS_FUZZ_ITERS scales the counts (e.g. 10 for a longer run,
// 0.2 for a slow sanitizer build). libFuzzer's coverage-guided runs of the same targets: tools/fuzz.sh.
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>

#include "engine/rng.h"
#include "fuzz/targets.h"

using namespace spnas;
using spnas::fuzz::parser_targets;

#if defined(__SANITIZE_ADDRESS__)
#define SPNAS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPNAS_ASAN 1
#endif
#endif

// No input here is larger than a few kilobytes: an allocation beyond this comes from a count read
// from the input, which the parser should have checked first.
constexpr size_t kAllocationLimitMb = 512;

#ifdef SPNAS_ASAN
// AddressSanitizer reserves terabytes of address space, so RLIMIT_AS cannot be used: its allocator
// refuses single allocations above the limit instead (operator new then throws std::bad_alloc).
extern "C" const char* __asan_default_options() { return "allocator_may_return_null=1:max_allocation_size_mb=512"; }
#endif

namespace {

// Caps the process's address space at its current size plus kAllocationLimitMb while alive, so that a
// huge allocation fails with std::bad_alloc instead of taking the machine's memory.
class AddressSpaceLimit {
 public:
  AddressSpaceLimit() {
#ifndef SPNAS_ASAN
    std::ifstream status("/proc/self/status");
    std::string key;
    size_t vm_kb = 0;
    while (status >> key)
      if (key == "VmSize:" && status >> vm_kb) break;
    REQUIRE(vm_kb > 0);
    REQUIRE(getrlimit(RLIMIT_AS, &old_) == 0);
    rlimit lim = old_;
    lim.rlim_cur = rlim_t(vm_kb + kAllocationLimitMb * 1024) * 1024;
    if (old_.rlim_cur == RLIM_INFINITY || lim.rlim_cur < old_.rlim_cur) active_ = setrlimit(RLIMIT_AS, &lim) == 0;
    REQUIRE(active_);
#endif
  }
  ~AddressSpaceLimit() {
    if (active_) setrlimit(RLIMIT_AS, &old_);
  }

 private:
  rlimit old_{};
  bool active_ = false;
};

int iters(int base) {
  const char* e = std::getenv("SPNAS_FUZZ_ITERS");
  if (!e) return base;
  return std::max(1, int(std::atof(e) * base));
}

// Where a text mutation can act: the start and end of every number and every string literal.
struct Token {
  size_t begin, end;
};

std::vector<Token> tokens(const std::vector<uint8_t>& v, bool numbers) {
  std::vector<Token> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (numbers && (std::isdigit(v[i]) || v[i] == '-')) {
      size_t j = i + 1;
      while (j < v.size() && (std::isdigit(v[j]) || std::strchr(".eE+-", v[j]))) ++j;
      out.push_back({i, j});
      i = j;
    } else if (!numbers && v[i] == '"') {
      size_t j = i + 1;
      while (j < v.size() && v[j] != '"') ++j;
      if (j < v.size()) out.push_back({i, j + 1});
      i = j;
    }
  }
  return out;
}

void replace(std::vector<uint8_t>& v, Token t, const std::string& with) {
  v.erase(v.begin() + long(t.begin), v.begin() + long(t.end));
  v.insert(v.begin() + long(t.begin), with.begin(), with.end());
}

// One round of 1..8 random mutations: byte-level ones (for the binary formats and the syntax of
// the text ones) and token-level ones (numbers at the edges of ranges, values of another JSON type,
// strings and lines copied elsewhere) that keep a text input parseable often enough to reach the
// checks after the syntax.
std::vector<uint8_t> mutate(const std::vector<uint8_t>& in, Rng& r) {
  static const uint32_t words[] = {0, 1, 2, 3, 9, 10, 11, 28, 255, 256, 1024, 3073, 10000, 10001, 60000,
                                   0x7fffffff, 0x80000000u, 0xffffffffu, 0x800, 0x801, 0x803, 0x0d08};
  static const char* numbers[] = {"0", "-1", "1", "2", "3", "4", "7", "8", "64", "65", "0.5", "1.5", "-0.0",
                                  "2049", "16385", "100001", "1e9", "2147483647", "2147483648", "-2147483649",
                                  "4294967297", "9223372036854775808", "1e30", "1e308", "1e400", "1e-320"};
  static const char* values[] = {"null", "[]", "{}", "true", "\"x\"", "[1,2]", "{\"a\":1}", "\"\"", "-5"};
  std::vector<uint8_t> v = in;
  // Text (JSON, CSV): fewer mutations, half of them on tokens, so that more inputs stay parseable.
  const bool text = !in.empty() && (in[0] == '{' || in[0] == 'b');
  const int n = 1 + int(r.below(text ? 3 : 8));
  for (int k = 0; k < n; ++k) {
    const size_t sz = v.size();
    switch (text && r.bernoulli(0.5f) ? 9 + int(r.below(4)) : int(r.below(13))) {
      case 0:  // flip a bit
        if (sz) v[r.below(sz)] ^= uint8_t(1u << r.below(8));
        break;
      case 1:  // random byte
        if (sz) v[r.below(sz)] = uint8_t(r.next_u32());
        break;
      case 2: {  // interesting byte
        static const uint8_t bytes[] = {0, 1, 0x7f, 0x80, 0xff, 9, 10};
        if (sz) v[r.below(sz)] = bytes[r.below(sizeof bytes)];
        break;
      }
      case 3:  // truncate
        v.resize(size_t(r.below(sz + 1)));
        break;
      case 4: {  // append random bytes
        const size_t m = size_t(r.below(64));
        for (size_t i = 0; i < m; ++i) v.push_back(uint8_t(r.next_u32()));
        break;
      }
      case 5: {  // big-endian interesting word, mostly in the header
        if (sz >= 4) {
          const size_t pos = r.bernoulli(0.7f) ? size_t(r.below(std::min<size_t>(sz - 3, 24))) : size_t(r.below(sz - 3));
          const uint32_t w = words[r.below(sizeof words / sizeof words[0])];
          for (int b = 0; b < 4; ++b) v[pos + size_t(b)] = uint8_t(w >> (24 - 8 * b));
        }
        break;
      }
      case 6: {  // copy a chunk over another place
        if (sz >= 2) {
          const size_t a = size_t(r.below(sz)), b = size_t(r.below(sz));
          const size_t len = size_t(r.below(std::min<size_t>(sz - std::max(a, b), 32) + 1));
          std::memmove(v.data() + b, v.data() + a, len);
        }
        break;
      }
      case 7: {  // delete a chunk
        if (sz >= 2) {
          const size_t a = size_t(r.below(sz)), len = size_t(r.below(std::min<size_t>(sz - a, 64) + 1));
          v.erase(v.begin() + long(a), v.begin() + long(a + len));
        }
        break;
      }
      case 8: {  // insert a chunk
        const size_t a = size_t(r.below(sz + 1)), len = size_t(r.below(16));
        std::vector<uint8_t> ins(len);
        for (auto& b : ins) b = uint8_t(r.next_u32());
        v.insert(v.begin() + long(a), ins.begin(), ins.end());
        break;
      }
      case 9: {  // a number becomes an edge value
        auto t = tokens(v, true);
        if (!t.empty()) replace(v, t[r.below(t.size())], numbers[r.below(sizeof numbers / sizeof numbers[0])]);
        break;
      }
      case 10: {  // a number or string becomes a value of another type
        auto t = tokens(v, r.bernoulli(0.5f));
        if (!t.empty()) replace(v, t[r.below(t.size())], values[r.below(sizeof values / sizeof values[0])]);
        break;
      }
      case 11: {  // a string copied over another (a field name or value where another belongs)
        auto t = tokens(v, false);
        if (t.size() >= 2) {
          const Token from = t[r.below(t.size())];
          replace(v, t[r.below(t.size())], std::string(v.begin() + long(from.begin), v.begin() + long(from.end)));
        }
        break;
      }
      default: {  // a line repeated (a CSV row, a JSON list entry)
        std::vector<size_t> starts = {0};
        for (size_t i = 0; i < sz; ++i)
          if (v[i] == '\n') starts.push_back(i + 1);
        const size_t line = size_t(r.below(starts.size()));
        const size_t b = starts[line], e = line + 1 < starts.size() ? starts[line + 1] : sz;
        const std::vector<uint8_t> copy(v.begin() + long(b), v.begin() + long(e));
        v.insert(v.begin() + long(e), copy.begin(), copy.end());
        break;
      }
    }
  }
  return v;
}

// The input, printable, for a failure message (and for a regression test).
std::string escaped(const std::vector<uint8_t>& v) {
  std::string s;
  char buf[8];
  for (size_t i = 0; i < std::min<size_t>(v.size(), 4096); ++i) {
    const uint8_t c = v[i];
    if (c == '\\' || c == '"') s += '\\', s += char(c);
    else if (c >= 32 && c < 127) s += char(c);
    else if (c == '\n') s += "\\n";
    else std::snprintf(buf, sizeof buf, "\\x%02x", c), s += buf, s += "\"\"";  // "" ends the hex escape
  }
  return "\"" + s + "\"" + (v.size() > 4096 ? " (first 4096 of " + std::to_string(v.size()) + " bytes)" : "");
}

// Runs the target on `count` mutations of its seeds; fails if an input breaks the contract (an
// exception other than std::runtime_error), printing the first input of each distinct message.
void fuzz_target(const spnas::fuzz::ParserTarget& target, int count, uint64_t seed) {
  const char* name = target.name;
  std::vector<std::vector<uint8_t>> seeds;
  for (const std::string& s : target.seeds()) seeds.emplace_back(s.begin(), s.end());
  REQUIRE(!seeds.empty());
  AddressSpaceLimit limit;
  Rng r(seed);
  int parsed = 0, rejected = 0, broke = 0;
  std::set<std::string> messages;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < count; ++i) {
    std::vector<uint8_t> m = mutate(seeds[size_t(i) % seeds.size()], r);
    if (r.bernoulli(0.2f)) m = mutate(m, r);  // deeper mutations now and then
    std::string error;
    try {
      target.parse(m.data(), m.size());
      ++parsed;
    } catch (const std::runtime_error&) {
      ++rejected;
    } catch (const std::exception& e) {
      error = std::string("exception other than std::runtime_error: ") + e.what();
    } catch (...) {
      error = "exception of an unknown type";
    }
    if (error.empty()) continue;
    ++broke;
    if (messages.size() < 10 && messages.insert(error).second)
      FAIL_CHECK(std::string(name) << " input " << i << ": " << error << "\ninput: " << escaped(m));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE(std::string(name) << ": " << count << " mutated inputs in " << secs << " s, " << parsed << " parsed, " << rejected
               << " rejected, " << broke << " broke the contract");
  CHECK(parsed + rejected + broke == count);
  CHECK(broke == 0);
  CHECK(parsed > 0);  // the mutations reach past the syntax checks
}

}  // namespace

TEST_CASE("every target's seeds parse and pass its checks") {
  for (const auto& t : parser_targets()) {
    const std::vector<std::string> seeds = t.seeds();
    CHECK(!seeds.empty());
    for (size_t i = 0; i < seeds.size(); ++i) {
      INFO(std::string(t.name) << " seed " << i);
      CHECK_NOTHROW(t.parse(reinterpret_cast<const uint8_t*>(seeds[i].data()), seeds[i].size()));
    }
  }
}

TEST_CASE("mutated inputs, every parser (one subcase per target: -sc=NAME)") {
  uint64_t seed = 0;
  for (const auto& t : parser_targets()) {
    ++seed;  // fixed per target: a failure reproduces
    SUBCASE(t.name) { fuzz_target(t, iters(t.ctest_inputs), seed); }
  }
}
