// Option helpers shared by the subcommands.
#pragma once
#include "nas/runtime.h"
#include "nas/search.h"
#include "tools/args.h"

namespace spnas {
void add_common_options(Args& a);
void apply_common_options(const Args& a);
void add_space_options(Args& a);
SpaceOptions space_options(const Args& a);
void add_lut_options(Args& a);
LatencyTable load_lut(const Args& a);
void print_search_result(const SearchResult& r, const SearchConfig& c);
}  // namespace spnas
