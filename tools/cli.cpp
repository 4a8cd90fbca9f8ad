#include "tools/cli.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "data/data.h"
#include "nas/latency/measure.h"
#include "engine/dist.h"
#include "engine/threads.h"

namespace spnas::cli {

namespace {

// Parses the whole string as a number; false on trailing text or nothing.
bool parse_number(const std::string& s, double* v) {
  char* end = nullptr;
  *v = std::strtod(s.c_str(), &end);
  return !s.empty() && end && *end == '\0';
}

std::string show(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// A validator for a numeric option: the text must parse whole as a number (else "must be KIND, got
// '...'"); out_of_range(v, text) then returns the error for a value outside the range, or "".
CLI::Validator numeric(const std::string& kind, const std::string& range,
                       std::function<std::string(double, const std::string&)> out_of_range) {
  return CLI::Validator(
      [kind, out_of_range](std::string& s) -> std::string {
        double v;
        if (!parse_number(s, &v)) return "must be " + kind + ", got '" + s + "'";
        return out_of_range(v, s);
      },
      range);
}

}  // namespace

CLI::Validator number_in(double lo, double hi) {
  return numeric("a number", "[" + show(lo) + ", " + show(hi) + "]", [lo, hi](double v, const std::string& s) {
    return !std::isfinite(v) || v < lo || v > hi ? "must be in [" + show(lo) + ", " + show(hi) + "], got " + s : "";
  });
}

CLI::Validator number_above(double lo, double hi) {
  const std::string range = hi < 1e300 ? "(" + show(lo) + ", " + show(hi) + "]" : "> " + show(lo);
  return numeric("a number", range, [lo, hi](double v, const std::string& s) {
    return !std::isfinite(v) || !(v > lo) || v > hi
               ? "must be > " + show(lo) + (hi < 1e300 ? " and <= " + show(hi) : std::string()) + ", got " + s
               : "";
  });
}

CLI::Validator integer_in(double lo, double hi) {
  return numeric("an integer", show(lo) + ".." + show(hi), [lo, hi](double v, const std::string& s) {
    if (v != std::floor(v)) return "must be an integer, got '" + s + "'";
    return v < lo || v > hi ? "must be in " + show(lo) + ".." + show(hi) + ", got " + s : "";
  });
}

void add_threads(CLI::App* c, int& threads, int default_threads) {
  threads = default_threads;
  c->add_option("--threads", threads, "threads for the engine's kernels (0: every core; or SPNAS_THREADS)")
      ->capture_default_str()
      ->check(integer_in(0, 4096));
}

void set_threads_for_rank(int threads) {
  set_num_threads(threads > 0 ? threads : default_threads_for_rank(world()));
}

void add_parallel(CLI::App* c, ParallelConfig& p) {
  c->add_flag("--sync-bn", p.sync_bn,
              "under mpirun: batch-norm statistics over the global batch (default: over each rank's share, as the "
              "reference per TPU core)");
  c->add_option("--bn-groups", p.bn_groups,
                "ghost batch norm: statistics over this many equal parts of the batch (of each rank's share under "
                "mpirun); --bn-groups N in one process computes what N ranks with per-rank statistics do")
      ->capture_default_str()
      ->check(integer_in(1, 65536));
  c->add_option("--dist-timeout", p.timeout_s,
                "under mpirun: seconds a collective may wait for the other ranks before every rank is stopped (a rank "
                "died or hangs)")
      ->capture_default_str()
      ->check(number_above(0, 1e7));
  c->add_option("--bucket-mb", p.bucket_mb,
                "under mpirun: the size of each fused gradient allreduce, in MB (a smaller bucket starts earlier in "
                "backward and overlaps more; a larger one costs fewer calls)")
      ->capture_default_str()
      ->check(number_above(0, 4096));
}

void add_data(CLI::App* c, std::string& spec) {
  c->add_option("--data", spec, data_spec_help())
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            try {
              parse_data_spec(s);
              return "";
            } catch (const std::exception& e) {
              return e.what();
            }
          },
          "KIND[:PATH]"));
}

void add_space(CLI::App* c, std::string& space, SpaceOptions& so) {
  std::string names;
  for (const std::string& n : builtin_space_names()) names += (names.empty() ? "" : ", ") + n;
  c->add_option("--space", space, "search space: " + names + ", or a space JSON file (nas/README.md)")
      ->capture_default_str();
  c->add_option("--width", so.width, "width multiplier (channels rounded to multiples of 8, as MnasNet)")
      ->capture_default_str()
      ->check(number_above(0, kMaxWidth));
  c->add_option("--input-size", so.input_size, "input size in pixels (0: the space's)")
      ->capture_default_str()
      ->check(integer_in(0, kMaxInputSize));
  c->add_option("--num-classes", so.num_classes, "number of classes (0: the dataset's, else the space's)")
      ->capture_default_str()
      ->check(integer_in(0, kMaxClasses));
}

void add_table(CLI::App* c, TableFlags& t, bool with_runtime_model) {
  c->add_option("--lut", t.path, "latency table: JSON from `spnas profile`, or the paper's Pixel 1 CSV");
  c->add_option("--fixed-ms", t.fixed_ms,
                "cost (ms) of everything outside the searchable layers: needed for a CSV table, overrides a JSON "
                "table's (-1: the table's)")
      ->capture_default_str()
      ->check(number_in(-1, 1e6));
  if (with_runtime_model)
    c->add_option("--runtime-model", t.runtime_model,
                  "formula (the reference's: a 3x3 layer costs R(5x5)*R36/R56) or table (the four entries)")
        ->capture_default_str()
        ->check(CLI::IsMember({"formula", "table"}));
}

LatencyTable load_table(const TableFlags& t) {
  if (t.path.empty()) throw std::runtime_error("a latency table is needed: --lut FILE (make one with `spnas profile`)");
  return load_latency_table(t.path, t.fixed_ms);
}

void add_check_data(CLI::App* c, bool& check) {
  c->add_flag("--check-data", check,
              "first read every image of the dataset once (in parallel) and report every unreadable file at once: "
              "for a large image folder before a long run");
}

void run_check_data(const DataSpec& spec) {
  const DataCheck r = check_data(open_dataset(spec));
  std::fprintf(stderr, "data check: %lld images read in %.1f s, none bad\n", (long long)r.images, r.seconds);
}

void apply_table_settings(CLI::App* c, const LatencyTable& t, std::string& space, SpaceOptions& so) {
  const bool given_space = c->count("--space") > 0, given_width = c->count("--width") > 0;
  const bool given_input = c->count("--input-size") > 0 && so.input_size > 0;
  TableSettings s;
  if (given_space) {
    // A space file and the name inside it are the same space (a table records one or the other).
    s.space = space;
    if (!t.space.empty() && space != t.space) {
      const SearchSpace sp = load_space(space);
      if (sp.name == t.space || sp.source == t.space) s.space = t.space;
    }
  }
  if (given_width) s.width = so.width;
  if (given_input) s.input_size = so.input_size;
  reconcile_with_table(t, s);
  if (!given_space && s.space) space = *s.space;  // the table's own record: a built-in name or a file
  if (!given_width && s.width) so.width = *s.width;
  if (!given_input && s.input_size) so.input_size = *s.input_size;
}

void add_verify(CLI::App* c, bool& verify) {
  c->add_flag("--verify", verify,
              "at the end, measure the found network on this machine (as `spnas latency`, with the table's settings) "
              "and judge the target on the measurement too");
}

void measure_settings_from_table(const LatencyTable& t, MeasureOptions& o, CLI::App* c) {
  auto open = [&](const char* flag) { return !c || c->count(flag) == 0; };
  if (open("--batch") && t.batch > 0) o.batch = t.batch;
  if (open("--threads") && t.threads > 0) o.threads = t.threads;
  if (open("--quantile") && t.quantile > 0) o.quantile = t.quantile;
  if (open("--clock") && !t.clock.empty()) o.clock = t.clock;
  if (open("--backend") && !t.backend.empty()) o.backend = t.backend;
  if (open("--train-step") && !t.mode.empty()) o.training_step = t.mode == "training";
}

void verify_latency(const Arch& arch, const LatencyTable& t, double target_ms) {
  MeasureOptions o;
  measure_settings_from_table(t, o);
  const ArchLatency r = measure_arch_latency(arch, o, &t);
  std::printf("verify: the found network measured on this machine\n%s", arch_latency_report(r, o).c_str());
  if (target_ms <= 0) return;
  auto judged = [&](double ms) {
    return ms <= target_ms ? "met (" + fmt(100 * (1 - ms / target_ms), 1) + " % below)"
                           : "missed by " + fmt(100 * (ms / target_ms - 1), 1) + " %";
  };
  std::printf("target %.3f ms: measured %.3f ms, %s", target_ms, r.ms, judged(r.ms).c_str());
  // The table's scale: the measurement divided by how much slower the machine runs now than when the
  // table was profiled (the interleaved reference against its prediction).
  if (r.has_reference && r.machine_factor > 0)
    std::printf("; at the table's machine speed %.3f ms, %s", r.ms / r.machine_factor,
                judged(r.ms / r.machine_factor).c_str());
  std::printf("\n");
}

void add_memory_limit(CLI::App* c, double& gib) {
  c->add_option("--memory-limit", gib,
                "memory the run may use, in GiB (0: 80 % of this machine's); checked before anything is allocated")
      ->capture_default_str()
      ->check(number_in(0, 1 << 20));
}

void add_lr(CLI::App* c, LrConfig& lr) {
  c->add_option("--lr", lr.lr,
                "initial learning rate (0: the optimizer's default at this batch: rmsprop 0.016*batch/256, the "
                "reference's; sgd 0.1*batch/64; adam 1e-3*batch/64)")
      ->capture_default_str()
      ->check(number_in(0, 1e6));
  c->add_option("--lr-schedule", lr.kind, "exponential (staircase) | cosine (to 0 over the run) | constant")
      ->capture_default_str()
      ->check(CLI::IsMember({"exponential", "cosine", "constant"}));
  c->add_option("--lr-decay", lr.decay_rate, "exponential decay rate")->capture_default_str()->check(number_above(0, 1));
  c->add_option("--lr-decay-epochs", lr.decay_epochs, "epochs between exponential decays")
      ->capture_default_str()
      ->check(number_above(0));
  c->add_option("--lr-warmup-epochs", lr.warmup_epochs, "linear learning-rate warm-up from 0 (epochs)")
      ->capture_default_str()
      ->check(number_in(0, 1e6));
}

void add_train_protocol(CLI::App* c, TrainFlags& f) {
  TrainConfig& t = f.config;
  CLI::Option_group* g = f.group = c->add_option_group("training protocol");
  add_data(g, f.data);
  g->add_option("--batch", t.batch, "batch size")->capture_default_str()->check(integer_in(2, 65536));
  g->add_option("--epochs", t.epochs, "training length in epochs")->capture_default_str()->check(number_above(0, 1e5));
  add_lr(g, t.lr);
  g->add_option("--optimizer", t.optimizer, "rmsprop (TF-1 semantics) | sgd (Nesterov) | adam")
      ->capture_default_str()
      ->check(CLI::IsMember({"rmsprop", "sgd", "adam"}));
  g->add_option("--weight-decay", t.weight_decay, "L2 weight decay (batch norm excluded)")
      ->capture_default_str()
      ->check(number_in(0, 1));
  g->add_option("--label-smoothing", t.label_smoothing, "label smoothing")->capture_default_str()->check(number_in(0, 0.99));
  g->add_option("--ema", t.ema_decay,
                "EMA decay of the weights used for evaluation (-1: from the run's length, an average over about a "
                "tenth of it; 0: off)")
      ->capture_default_str()
      ->check(number_in(-1, 0.99999));
  g->add_option("--bn-momentum", t.bn_momentum, "batch-norm running-average momentum")
      ->capture_default_str()
      ->check(number_in(0, 0.9999));
  g->add_option("--dropout", t.dropout, "dropout before the classifier (-1: the space's)")
      ->capture_default_str()
      ->check(number_in(-1, 0.95));
  g->add_option("--workers", t.workers, "data-loading threads")->capture_default_str()->check(integer_in(1, 64));
  g->add_flag("--no-augment", f.no_augment, "no random crop / flip");
  g->add_option("--max-steps", t.max_steps, "stop after this many steps in all (-1: no limit)")
      ->capture_default_str()
      ->check(integer_in(-1, 1e12));
  g->add_flag("--no-low-memory", f.no_low_memory, "keep post-activation tensors instead of recomputing them (more memory)");
  add_memory_limit(g, t.memory_limit_gib);
}

TrainConfig TrainFlags::resolved() const {
  TrainConfig t = config;
  t.data = parse_data_spec(data);
  t.augment = !no_augment;
  return t;
}

std::vector<std::string> TrainFlags::given_args() const {
  std::vector<std::string> args;
  for (const CLI::Option* o : group->get_options()) {
    if (o->count() == 0) continue;
    args.push_back(o->get_name());
    if (o->get_type_size() == 0) continue;  // a flag: its name is all
    for (const std::string& r : o->results()) args.push_back(r);
  }
  return args;
}

}  // namespace spnas::cli
