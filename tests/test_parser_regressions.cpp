// Inputs that the parser fuzzing (tests/test_parsers_fuzz.cpp, tools/fuzz.sh; tests/README.md)
// found breaking a parser, rebuilt here from valid files by one substitution each. Before the fixes
// they crashed (a division by zero, a segmentation fault), threw nlohmann's type_error instead of
// std::runtime_error, overflowed an int, or were accepted with values no network can have; now each
// is refused with a std::runtime_error naming the file and the field.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "fuzz/targets.h"
#include "nas/latency/predictor.h"
#include "nas/latency/samples.h"
#include "nas/latency/table.h"
#include "nas/search.h"
#include "nas_fixtures.h"

using namespace spnas;
using doctest::Contains;

namespace {

// `text` with the first `from` replaced by `to` (the substitution must apply).
std::string with(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, "'" << from << "' not in the seed");
  return text.replace(at, from.size(), to);
}

std::string seed_of(const char* target, size_t i = 0) { return fuzz::parser_target(target).seeds().at(i); }

// `parse` refuses `seed` with `from` replaced by `to`, with a std::runtime_error whose message
// contains `message` (any other exception fails the test case).
template <class Parse>
void check_refused(Parse parse, const std::string& seed, const std::string& from, const std::string& to,
                   const std::string& message) {
  CHECK_THROWS_WITH_AS(parse(with(seed, from, to)), Contains(message.c_str()), std::runtime_error);
}

}  // namespace

TEST_CASE("space and architecture files: a zero stride, values of the wrong JSON type") {
  // Found at bd17a4b and fixed since by the range-checked fields of e4a5629 (engine/io.h JsonFields);
  // test_validation.cpp has the size cases, these are the crashes and type errors.
  const std::string tiny = kTinySpaceJson;
  auto refused = [&](const std::string& from, const std::string& to, const std::string& message) {
    check_refused([](const std::string& t) { return parse_space(t, "bad.json"); }, tiny, from, to, message);
  };
  // Was a division by zero (SIGFPE) computing the stem's output size.
  refused("\"stride\": 1}", "\"stride\": 0}", "space 'bad.json': stem.stride must be in 1..2, got 0");
  // Were nlohmann::json::type_error, reported by the program as an internal error.
  refused("\"type\": \"searchable\"", "\"type\": 1", "blocks[1].type must be a string, got 1");
  refused("\"name\": \"tiny\"", "\"name\": {\"a\":1}", "name must be a string, got {\"a\":1}");
  refused("\"blocks\": [", "\"blocks\": [3, ", "blocks[0] must be a JSON object");
  check_refused([](const std::string& t) { return parse_arch(t, "bad.json"); }, seed_of("arch"), "\"space\": \"cifar10\"",
                "\"space\": 3", "arch 'bad.json': space must be a string, got 3");
}

TEST_CASE("latency table: wrong types, negative spreads, values out of range") {
  const std::string table = seed_of("table");
  auto refused = [&](const std::string& from, const std::string& to, const std::string& message) {
    check_refused([](const std::string& t) { return parse_latency_table(t, "bad.json"); }, table, from, to, message);
  };
  // Were nlohmann::json::type_error.
  refused("\"count\": 40", "\"count\": \"\"", "latency table 'bad.json': layers[0].count must be an integer, got \"\"");
  refused("\"backend\": \"spnas\"", "\"backend\": []", "latency table 'bad.json': backend must be a string, got []");
  refused("\"cpu\": \"Fuzz CPU @ 2.0GHz\"", "\"cpu\": true", "cpu must be a string, got true");
  refused("\"batch\": 1", "\"batch\": null", "batch must be an integer, got null");
  // Were accepted: a negative spread, and entries whose sum (the runtime model's R) is infinite.
  refused("\"spread\": 0.05", "\"spread\": -5", "layers[0].spread must be in [");
  refused("\"k5_e6\": 3.0", "\"k5_e6\": 1e308", "layers[0].k5_e6 must be in [");
  // A denormal k5_e6 made the formula's k3_e6 / k5_e6 infinite.
  refused("\"k5_e6\": 3.0", "\"k5_e6\": 1e-320", "layer 0 needs a k5_e6 of at least 1e-6 ms");
  // Was a float-to-int conversion out of range (undefined behaviour).
  refused("\"version\": 1", "\"version\": 1e300", "version must be in 0..2147483647, got 1e+300");
  refused("\"stride\": 1", "\"stride\": 7", "layers[0].stride must be in 0..2, got 7");
  refused("\"quantile\": 0.2", "\"quantile\": 5", "quantile must be in [");

  const std::string csv = seed_of("table_csv");
  auto csv_refused = [&](const std::string& from, const std::string& to, const std::string& message) {
    check_refused([](const std::string& t) { return parse_latency_table(t, "bad.csv", 19.6); }, csv, from, to, message);
  };
  // Was a float-to-int conversion out of range (undefined behaviour).
  csv_refused("1,16,24,2", "1,1e300,24,2", "'bad.csv' line 2 cin: \"1e300\" is not an integer in [1, 1048576]");
  csv_refused("1,16,24,2", "1,16,24,0", "line 2 stride: \"0\" is not an integer in [1, 2]");
  csv_refused("9.2015,5.9248,11.5892", "9.2015,5.9248,1e300", "layer 0 has a cost outside [0, 1e9] ms");
}

TEST_CASE("profiler samples: a zero stride, even kernels, a denormal time") {
  const std::string pieces = seed_of("pieces");
  auto refused = [&](const std::string& from, const std::string& to, const std::string& message) {
    check_refused([](const std::string& t) { return parse_piece_samples(t, "bad.json"); }, pieces, from, to, message);
  };
  // Was a division by zero (SIGFPE) in PieceSample::out_size when the predictor computed features.
  refused("\"stride\": 1", "\"stride\": 0", "piece samples 'bad.json': samples[0].stride must be in 1..2, got 0");
  refused("\"kernel\": 3", "\"kernel\": 4", "samples[0].kernel must be odd, got 4");
  refused("\"cin\": 8", "\"cin\": 0", "samples[0].cin must be in 1..16384, got 0");
  refused("\"in_size\": 16", "\"in_size\": 1e10", "samples[0].in_size must be in 1..2048");
  // Was nlohmann::json::type_error.
  refused("\"ms\": 0.", "\"ms\": null, \"x\": 0.", "samples[0].ms must be a number, got null");

  // A time of 1e-320 ms gave infinite weights, an empty term selection and then a segmentation
  // fault (the smallest cross-validation error of no candidates) in LatencyPredictor::fit.
  std::vector<PieceSample> samples = parse_piece_samples(with(pieces, "\"ms\": 0.", "\"ms\": 1e-320, \"x\": 0."), "x");
  CHECK_THROWS_WITH_AS(LatencyPredictor::fit(samples), Contains("a sample has a time outside [1e-6, 1e9] ms"),
                       std::runtime_error);
}

TEST_CASE("predictor file: wrong types and negative counts") {
  const std::string predictor = seed_of("predictor");
  auto refused = [&](const std::string& from, const std::string& to, const std::string& message) {
    check_refused([](const std::string& t) { return LatencyPredictor::from_json(t, "bad.json"); }, predictor, from, to,
                  message);
  };
  // Were nlohmann::json::type_error.
  refused("\"format\": \"spnas-latency-predictor\"", "\"format\": -5",
          "latency predictor 'bad.json': format must be a string, got -5");
  refused("\"samples\": ", "\"samples\": null, \"x\": ", "models.head.samples must be an integer, got null");
  refused("\"coef\": [", "\"coef\": [\"x\", ", "models.head.coef must be a list of numbers");
  refused("\"terms\": [", "\"terms\": [{}, ", "models.head.terms must be a list of strings");
  // Was accepted.
  refused("\"samples\": ", "\"samples\": -5, \"x\": ", "models.head.samples must be in 0..2147483647, got -5");
}

TEST_CASE("search log: rows and headers with another number of layers than the search") {
  // Rows with fewer layers than the network were accepted (any multiple of 8 columns), and the
  // verdict at the end of a resumed search read their decisions past the end of the vectors.
  const std::string log = seed_of("search_log");  // 4 layers, 6 rows
  const size_t row2 = log.find("\n2,"), row3 = log.find("\n3,");
  REQUIRE((row2 != std::string::npos && row3 != std::string::npos));
  // Row 2 cut after its second layer: 8 + 16 columns.
  std::string short_row = log.substr(row2 + 1, row3 - row2 - 1);
  size_t cut = 0;
  for (int commas = 0; commas < 8 + 16; ++cut)
    if (short_row[cut] == ',') ++commas;
  const std::string damaged = log.substr(0, row2 + 1) + short_row.substr(0, cut - 1) + log.substr(row3);
  {
    std::ofstream("damaged_log.csv") << damaged;
  }
  const std::vector<SearchLogRow> rows = read_search_csv("damaged_log.csv", 100, 4);
  CHECK(rows.size() == 2);  // stops at the damaged row (the resume then refuses the short log)
  for (const SearchLogRow& r : rows) CHECK(r.d_k5.size() == 4);
  CHECK_THROWS_WITH_AS(read_search_csv("damaged_log.csv", 100, 2),
                       Contains("search log 'damaged_log.csv' is not the log of a search with 2 searchable layers"),
                       std::runtime_error);
}
