// spnas info: parameters, multiply-adds and predicted runtime of an architecture or of a space's supernet.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "nas/model.h"
#include "tools/cli.h"

namespace spnas::cli {

namespace {

void print_human(const nlohmann::json& j) {
  auto row = [](const char* label, const std::string& value) { std::printf("%-30s %s\n", label, value.c_str()); };
  auto num = [](double v, int prec) { return fmt(v, prec); };
  if (j.contains("arch")) row("architecture", j["arch"].get<std::string>());
  row("space", j["space"].get<std::string>());
  if (j.contains("searchable_layers")) row("searchable layers", std::to_string(j["searchable_layers"].get<int>()));
  row("trainable parameters", std::to_string(j["params"].get<int64_t>()));
  if (j.contains("params_reference"))
    row("  as the reference counts them", std::to_string(j["params_reference"].get<int64_t>()) +
                                              " (t50c in every layer, also where unused)");
  if (j.contains("thresholds"))
    row("thresholds", std::to_string(j["thresholds"].get<int64_t>()) + " (reference: " +
                          std::to_string(j["thresholds_reference"].get<int64_t>()) + ")");
  row("multiply-adds per image", num(j["macs"].get<double>() / 1e6, 2) + " M");
  if (j.contains("runtime_ms")) {
    row("predicted runtime", num(j["runtime_ms"].get<double>(), 3) + " ms (" + j["runtime_model"].get<std::string>() +
                                 " model)");
    if (j.contains("runtime_ms_formula"))
      row("  formula / table", num(j["runtime_ms_formula"].get<double>(), 3) + " / " +
                                   num(j["runtime_ms_table"].get<double>(), 3) + " ms");
  }
}

}  // namespace

Command add_info(CLI::App& app) {
  struct Flags {
    std::string arch, space = "cifar10";
    SpaceOptions so;
    TableFlags table;
    bool se = false, json = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand("info",
                                   "Trainable parameters, multiply-adds (one image) and predicted runtime of an "
                                   "architecture; without --arch, of the space's supernet (thresholds included, R with "
                                   "every indicator 1).");
  s->add_option("--arch", f->arch, "architecture JSON (its space, width, input size and classes are the file's)");
  add_space(s, f->space, f->so);
  add_table(s, f->table);
  s->add_flag("--se", f->se, "the supernet with searchable SE (without --arch)");
  s->add_flag("--json", f->json, "print JSON");
  return {s, [f, s] {
            nlohmann::json j;
            const RuntimeMode mode = parse_runtime_mode(f->table.runtime_model);
            if (!f->arch.empty()) {
              Arch arch = load_arch(f->arch);
              // Flags given explicitly override the file's.
              if (s->count("--space")) arch.space = f->space;
              if (s->count("--width")) arch.width = f->so.width;
              if (f->so.input_size) arch.input_size = f->so.input_size;
              if (f->so.num_classes) arch.num_classes = f->so.num_classes;
              SpaceOptions so;
              so.width = arch.width, so.input_size = arch.input_size, so.num_classes = arch.num_classes;
              so.input_channels = arch.input_channels;
              const SearchSpace sp = load_space(arch.space, so);
              const NetCost cost = child_cost(sp, arch);  // from shapes: no tensor is built
              j["arch"] = arch_summary(arch);
              j["space"] = arch.space;
              j["params"] = cost.params;
              j["macs"] = cost.macs;
              if (!f->table.path.empty()) {
                LatencyTable t = load_table(f->table);
                check_table_matches(t, sp);
                const double formula = predict_runtime(t, arch, RuntimeMode::Formula);
                const double table = predict_runtime(t, arch, RuntimeMode::Table);
                j["runtime_model"] = f->table.runtime_model;
                j["runtime_ms"] = mode == RuntimeMode::Formula ? formula : table;
                j["runtime_ms_formula"] = formula;
                j["runtime_ms_table"] = table;
              }
            } else {
              if (!f->table.path.empty()) apply_table_settings(s, load_table(f->table), f->space, f->so);
              SearchSpace sp = load_space(f->space, f->so);
              SupernetConfig sc;
              sc.search_se = f->se;
              const NetCost cost = supernet_cost(sp, sc);
              int64_t th = 0, skippable = 0;
              for (const LayerSpec& l : sp.layers)
                if (l.searchable) th += 2 + l.skip_allowed + sc.search_se, skippable += l.skip_allowed;
              j["space"] = sp.name;
              j["searchable_layers"] = sp.num_searchable();
              j["params"] = cost.params;
              j["thresholds"] = th;
              // The reference creates t5x5, t50c and t100c in every searchable layer (t50c unused where
              // the layer may not be skipped) and counts them among the trainable parameters.
              j["thresholds_reference"] = th + sp.num_searchable() - skippable;
              j["params_reference"] = cost.params + sp.num_searchable() - skippable;
              j["macs"] = cost.macs;
              if (!f->table.path.empty()) {
                LatencyTable t = load_table(f->table);
                check_table_matches(t, sp);
                j["runtime_model"] = f->table.runtime_model;
                j["runtime_ms"] = runtime_all_on(t, mode, sc.search_se);
              }
            }
            if (f->json) std::printf("%s\n", j.dump(2).c_str());
            else print_human(j);
            return 0;
          }};
}

}  // namespace spnas::cli
