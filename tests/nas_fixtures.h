// A tiny search space and latency table for fast NAS tests.
#pragma once
#include <cstdio>
#include <fstream>
#include <string>

#include "nas/runtime.h"
#include "nas/space.h"

namespace spnas {

// 16x16 input, two searchable stages of 2 layers (first strides 1 and 2), 4 classes.
inline const char* kTinySpaceJson = R"({
  "name": "tiny",
  "input_size": 16,
  "num_classes": 4,
  "stem": {"channels": 8, "kernel": 3, "stride": 1},
  "blocks": [
    {"type": "fixed", "expansion": 1, "kernel": 3, "channels": 8, "stride": 1},
    {"type": "searchable", "channels": 8, "repeats": 2, "stride": 1},
    {"type": "searchable", "channels": 16, "repeats": 2, "stride": 2},
    {"type": "fixed", "expansion": 6, "kernel": 3, "channels": 16, "stride": 1}
  ],
  "head": {"channels": 32, "dropout": 0.0}
})";

inline std::string tiny_space_file() {
  std::string path = "tiny_space_test.json";
  std::ofstream(path) << kTinySpaceJson;
  return path;
}

inline LatencyTable tiny_table(const SearchSpace& s) {
  LatencyTable t;
  t.source = "tiny-table";
  t.fixed_ms = 2.0;
  int i = 0;
  for (int li : s.searchable_indices()) {
    LayerCost c;
    c.cin = s.layers[li].cin;
    c.cout = s.layers[li].cout;
    c.stride = s.layers[li].stride;
    c.skip_allowed = s.layers[li].skip_allowed;
    c.k3_e3 = 1.0 + i, c.k3_e6 = 2.0 + i, c.k5_e3 = 1.5 + i, c.k5_e6 = 3.0 + i;
    c.se = 0.25;
    t.layers.push_back(c);
    ++i;
  }
  return t;
}

}  // namespace spnas
