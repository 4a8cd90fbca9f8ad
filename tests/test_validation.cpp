// Files and sizes are checked where they are read, before anything is built: every numeric field of a
// space or an architecture file against its range (naming the file and the field), the costs of a
// network computed from shapes alone (equal to the built network's), and the memory a run would need
// checked against the limit before allocating.
#include <doctest/doctest.h>

#include <string>

#include "nas/model.h"
#include "nas/run.h"
#include "nas/space.h"
#include "nas_fixtures.h"

using namespace spnas;

namespace {

// The tiny space with one field replaced (a JSON fragment such as "\"input_size\": 1e9").
std::string tiny_with(const std::string& from, const std::string& to) {
  std::string s = kTinySpaceJson;
  const size_t at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

std::string space_error(const std::string& json) {
  try {
    parse_space(json, "bad.json");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

std::string arch_error(const std::string& json) {
  try {
    parse_arch(json, "a.json");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("space files: every size is range-checked at parse time, naming the file and the field") {
  CHECK(space_error(tiny_with("\"input_size\": 16", "\"input_size\": 1000000000")).find("bad.json': input_size must be in 8..2048") != std::string::npos);
  CHECK(space_error(tiny_with("\"input_size\": 16", "\"input_size\": -32")).find("input_size must be in") != std::string::npos);
  CHECK(space_error(tiny_with("\"num_classes\": 4", "\"num_classes\": 2000000000")).find("num_classes must be in 2..100000") != std::string::npos);
  CHECK(space_error(tiny_with("\"num_classes\": 4", "\"num_classes\": 1e12")).find("num_classes must be in") != std::string::npos);
  CHECK(space_error(tiny_with("\"channels\": 8, \"kernel\": 3, \"stride\": 1}", "\"channels\": 100000000, \"kernel\": 3, \"stride\": 1}")).find("stem.channels must be in 1..16384") != std::string::npos);
  CHECK(space_error(tiny_with("\"repeats\": 2, \"stride\": 1", "\"repeats\": 1000000, \"stride\": 1")).find("blocks[1].repeats must be in 1..64") != std::string::npos);
  CHECK(space_error(tiny_with("\"dropout\": 0.0", "\"dropout\": 1.5")).find("head.dropout must be in") != std::string::npos);
  CHECK(space_error(tiny_with("\"num_classes\": 4", "\"num_classes\": 4.5")).find("num_classes must be an integer") != std::string::npos);
  // One kernel rule for the stem and the blocks: odd, 1..7.
  CHECK(space_error(tiny_with("\"channels\": 8, \"kernel\": 3, \"stride\": 1}", "\"channels\": 8, \"kernel\": 4, \"stride\": 1}")).find("stem.kernel must be odd") != std::string::npos);
  CHECK(space_error(tiny_with("\"expansion\": 1, \"kernel\": 3", "\"expansion\": 1, \"kernel\": 4")).find("blocks[0].kernel must be odd") != std::string::npos);
  CHECK(space_error(tiny_with("\"expansion\": 1, \"kernel\": 3", "\"expansion\": 1, \"kernel\": 9")).find("blocks[0].kernel must be in 1..7") != std::string::npos);
  // The width multiplier: bounded before any channel count is computed from it.
  SpaceOptions huge;
  huge.width = 1e30f;
  CHECK_THROWS_WITH_AS(parse_space(kTinySpaceJson, "t.json", huge), doctest::Contains("width multiplier must be in (0, 8]"),
                       std::runtime_error);
  huge.width = 8;  // allowed, and the channels after it still within bounds
  CHECK(parse_space(kTinySpaceJson, "t.json", huge).head_channels == 256);
  CHECK(space_error(kTinySpaceJson).empty());
}

TEST_CASE("architecture files: width, sizes and choices checked, naming the file and the field") {
  CHECK(arch_error(R"({"space": "cifar10", "width": 1000, "layers": []})").find("a.json': width must be in") != std::string::npos);
  CHECK(arch_error(R"({"space": "cifar10", "width": 1e30, "layers": []})").find("width must be in") != std::string::npos);
  CHECK(arch_error(R"({"layers": ["3x3-3"], "num_classes": 1})").find("num_classes must be 0") != std::string::npos);
  CHECK(arch_error(R"({"layers": ["3x3-3"], "input_size": 1e9})").find("input_size must be in") != std::string::npos);
  CHECK(arch_error(R"({"layers": ["3x3-3"], "input_size": "big"})").find("input_size must be an integer") != std::string::npos);
  CHECK(arch_error(R"({"layers": ["7x7-6"]})").find("layers[0]: unknown layer choice") != std::string::npos);
  CHECK(arch_error(R"({"layers": "3x3-3"})").find("layers must be a list") != std::string::npos);
  CHECK(arch_error(R"([1, 2])").find("must be a JSON object") != std::string::npos);
  CHECK(arch_error(R"({"layers": ["3x3-3"], "input_channels": 2})").find("input_channels must be 1 or 3") != std::string::npos);
}

TEST_CASE("costs from shapes equal the built networks' parameters and multiply-adds") {
  const std::string tiny = tiny_space_file();
  for (float width : {0.5f, 1.0f}) {
    SpaceOptions so;
    so.width = width;
    for (const std::string& name : {tiny, std::string("cifar10")}) {
      const SearchSpace s = load_space(name, so);
      std::vector<Arch> archs = {uniform_arch(s, Choice::K3E3), uniform_arch(s, Choice::K5E6)};
      Arch mixed = uniform_arch(s, Choice::K3E6);
      const auto idx = s.searchable_indices();
      for (size_t i = 0; i < idx.size(); ++i)
        if (s.layers[idx[i]].skip_allowed) mixed.layers[i] = Choice::Skip;
      mixed.se.assign(idx.size(), false);
      mixed.se[0] = true;
      archs.push_back(mixed);
      for (const Arch& a : archs) {
        ChildNet net(a);
        const NetCost c = child_cost(s, a);
        CHECK(c.params == net.params().count());
        CHECK(c.macs == net.macs());
      }
      for (bool se : {false, true}) {
        SupernetConfig sc;
        sc.search_se = se;
        Supernet net(s, sc);
        CHECK(supernet_cost(s, sc).params == net.params().count());
      }
    }
  }
}

TEST_CASE("a run's memory is checked before anything is allocated, naming both figures") {
  SpaceOptions so;
  so.width = 8;
  so.input_size = 2048;
  const SearchSpace s = load_space("cifar10", so);
  const double need = supernet_cost(s, SupernetConfig()).training_bytes(64, 2, false);
  CHECK(need > 1e12);  // terabytes: refused without building anything
  CHECK_THROWS_WITH_AS(check_memory(need, memory_limit_bytes(0), "search"), doctest::Contains("GiB, more than the limit of"),
                       std::runtime_error);
  CHECK(memory_limit_bytes(2) == doctest::Approx(2.0 * (1 << 30)));
  check_memory(1e6, memory_limit_bytes(0), "search");  // a small run passes
}
