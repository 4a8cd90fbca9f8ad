// Piece samples: one timed piece of a network (an MBConv layer in one candidate, the stem, the head)
// with its configuration and time. The profiler produces them, the predictor learns from them, and
// their JSON file ("spnas-piece-samples") lets a predictor be refitted offline.
#pragma once
#include <string>
#include <vector>

#include "nas/space.h"

namespace spnas {

struct PieceSample {
  std::string kind = "mbconv";  // "mbconv", "stem" or "head"
  int cin = 0, cout = 0;        // stem: cin = 3; head: cout = head channels
  int in_size = 0;              // spatial input size (H = W)
  int kernel = 1, stride = 1, expansion = 1;
  bool se = false;
  bool residual = false;
  int classes = 0;              // head only
  int batch = 1;
  double ms = 0;                // measured (the profile's statistic) or predicted
  double spread = 0;            // (p90 - p10) / median
  int out_size() const { return (in_size + stride - 1) / stride; }
};

// The piece of one MBConv layer of a space with a given kernel, expansion and SE flag.
PieceSample mbconv_piece(const LayerSpec& l, int kernel, int expansion, bool se, int batch);
// The stem and the head of a space.
PieceSample stem_piece(const SearchSpace& space, int batch);
PieceSample head_piece(const SearchSpace& space, int batch);

std::string piece_samples_to_json(const std::vector<PieceSample>& samples);
std::vector<PieceSample> parse_piece_samples(const std::string& json_text, const std::string& source);
void save_piece_samples(const std::string& path, const std::vector<PieceSample>& samples);
std::vector<PieceSample> load_piece_samples(const std::string& path);

}  // namespace spnas
