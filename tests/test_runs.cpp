// What every long run (search, train) promises a user: one writer per output folder, outputs
// checked before the work, an interruption that is not success, resumes that refuse a changed
// configuration or a damaged log, divergence stopped with a diagnosis, the search's verdict and
// warnings, training's extension / fine-tuning / EMA rules, eval's per-class report, and networks
// on one-channel data. Everything runs on the embedded synthetic set and tiny networks.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/checkpoint.h"
#include "engine/io.h"
#include "nas/search.h"
#include "nas/train.h"
#include "nas_fixtures.h"
#include "test_data_util.h"

using namespace spnas;

namespace {

SearchConfig tiny_search(const std::string& out) {
  SearchConfig c;
  c.space = tiny_space_file();
  c.data = parse_data_spec("synthetic:train=192,test=64,seed=3");
  c.batch = 16;
  c.epochs = 2;
  c.warmup_epochs = 1;
  c.lambda = 5e-4f;
  c.threshold_lr_mult = 20;
  c.val_fraction = 0.1f;
  c.out_dir = out;
  c.checkpoint_every = 0;
  c.quiet = true;
  c.space_options.input_size = 16;
  std::filesystem::remove_all(out);  // a fresh folder, whatever an earlier run left
  return c;
}

TrainConfig tiny_train(const std::string& out) {
  TrainConfig c;
  c.arch.space = tiny_space_file();
  c.arch.layers = {Choice::K3E3, Choice::Skip, Choice::K5E6, Choice::K3E6};
  c.arch.input_size = 16;
  c.data = parse_data_spec("synthetic:train=160,test=64,seed=4");
  c.batch = 16;
  c.epochs = 2;
  c.out_dir = out;
  c.quiet = true;
  std::filesystem::remove_all(out);
  return c;
}

// A 24-bit BMP of w x h pixels whose colour depends on `seed` (stb reads BMP).
void write_bmp(const std::string& path, int w, int h, int seed) {
  const int row = (3 * w + 3) / 4 * 4, size = 54 + row * h;
  std::vector<uint8_t> b(size_t(size), 0);
  auto put32 = [&](int at, uint32_t v) {
    for (int i = 0; i < 4; ++i) b[size_t(at + i)] = uint8_t(v >> (8 * i));
  };
  b[0] = 'B', b[1] = 'M';
  put32(2, uint32_t(size)), put32(10, 54), put32(14, 40), put32(18, uint32_t(w)), put32(22, uint32_t(h));
  b[26] = 1, b[28] = 24;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) b[size_t(54 + y * row + 3 * x + c)] = uint8_t(seed * 40 + x * 5 + y * 3 + c * 60);
  datatest::write_bytes(path, b);
}

// An image folder ROOT/{train,test}/<class>/*.bmp with `classes` classes of 16x16 images.
void write_folder(const std::string& root, int classes) {
  for (const char* split : {"train", "test"})
    for (int k = 0; k < classes; ++k) {
      const std::string dir = root + "/" + split + "/c" + std::to_string(k);
      make_dirs(dir);
      for (int i = 0; i < 8; ++i) write_bmp(dir + "/" + std::to_string(i) + ".bmp", 16, 16, k * 8 + i);
    }
}

std::string text_of(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("output folders: '' and '/' refused, a file refused, one writer at a time, naming the holder") {
  CHECK_THROWS_WITH_AS(RunFolder("", "train"), doctest::Contains("output folder is empty"), std::runtime_error);
  CHECK_THROWS_WITH_AS(RunFolder("/", "train"), doctest::Contains("refusing to write into '/'"), std::runtime_error);
  CHECK_THROWS_WITH_AS(RunFolder("///", "train"), doctest::Contains("refusing"), std::runtime_error);
  std::ofstream("runs_a_file") << "x";
  CHECK_THROWS_WITH_AS(RunFolder("runs_a_file", "train"), doctest::Contains("not a directory"), std::runtime_error);
  CHECK_THROWS_WITH_AS(RunFolder("/dev/null", "train"), doctest::Contains("not a directory"), std::runtime_error);
  {
    RunFolder first("runs_locked", "search");
    CHECK_THROWS_WITH_AS(RunFolder("runs_locked", "search"),
                         doctest::Contains(("in use by pid " + std::to_string(getpid())).c_str()), std::runtime_error);
    // A whole run on a held folder fails before any work.
    TrainConfig c = tiny_train("runs_other");
    c.out_dir = "runs_locked";
    CHECK_THROWS_WITH_AS(run_train(c), doctest::Contains("in use"), std::runtime_error);
  }
  RunFolder again("runs_locked", "search");  // released with its holder
  CHECK_THROWS_WITH_AS(check_output_file("/proc/no-such-dir/x.json", "profile"), doctest::Contains("cannot"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(check_output_file(".", "profile"), doctest::Contains("is a directory"), std::runtime_error);
  check_output_file("runs_out/table.json", "profile");  // creates the folder, leaves no file behind
  CHECK_FALSE(std::ifstream("runs_out/table.json").good());
}

TEST_CASE("search: a resume with another configuration or a damaged log is refused; allowed changes are logged") {
  SearchSpace s = load_space(tiny_space_file());
  LatencyTable t = tiny_table(s);
  SearchConfig c = tiny_search("runs_resume_rules");
  c.max_steps = 6;
  run_search(c, t);
  c.resume = true;
  c.max_steps = 8;
  SearchConfig other = c;
  other.lambda = 1e-3f;
  other.seed = 9;
  const std::string err = [&] {
    try {
      run_search(other, t);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  }();
  CHECK(err.find("another configuration") != std::string::npos);
  CHECK(err.find("lambda: was 0.0005") != std::string::npos);
  CHECK(err.find("seed: was 1, now 9") != std::string::npos);
  other.allow_config_change = true;
  run_search(other, t);
  CHECK(text_of("runs_resume_rules/config_changes.log").find("lambda") != std::string::npos);
  // A log that lost its rows cannot continue silently with a gap.
  c.allow_config_change = true;
  c.max_steps = 10;
  std::string header;  // the log's own header (its layer columns included), and no rows
  std::getline(std::ifstream("runs_resume_rules/search_log.csv") >> std::ws, header);
  std::ofstream("runs_resume_rules/search_log.csv", std::ios::trunc) << header << "\n";
  CHECK_THROWS_WITH_AS(run_search(c, t), doctest::Contains("holds 0 steps but the checkpoint is at step 8"), std::runtime_error);
  // A training checkpoint is not a search checkpoint.
  TrainConfig tc = tiny_train("runs_resume_rules_train");
  tc.max_steps = 2;
  run_train(tc);
  std::rename("runs_resume_rules_train/model.ckpt", "runs_resume_rules/search.ckpt");
  CHECK_THROWS_WITH_AS(run_search(c, t), doctest::Contains("not a search checkpoint"), std::runtime_error);
}

TEST_CASE("search verdict: says what was decided, compares with the target, and what to change") {
  SearchSpace s = load_space(tiny_space_file());
  LatencyTable t = tiny_table(s);
  SearchConfig c = tiny_search("unused");
  auto row = [](int64_t step, std::vector<float> k5, float margin) {
    SearchLogRow r;
    r.step = step;
    r.d_k5 = k5;
    r.d_e6 = {1, 1, 1, 1};
    r.d_skip = {NAN, 1, NAN, 1};
    r.d_se = {NAN, NAN, NAN, NAN};
    r.m_k5 = {margin, margin, margin, margin};
    r.m_e6 = {margin, margin, margin, margin};
    r.m_skip = {NAN, margin, NAN, margin};
    r.m_se = {NAN, NAN, NAN, NAN};
    return r;
  };
  // Nothing moved: every layer 5x5-6, margins 9 -> the advice names the margin and the options.
  std::vector<SearchLogRow> still = {row(0, {1, 1, 1, 1}, 9), row(1, {1, 1, 1, 1}, 9), row(2, {1, 1, 1, 1}, 9)};
  Arch super = uniform_arch(s, Choice::K5E6);
  c.target_ms = 10;
  SearchVerdict v = search_verdict(still, 1, super, t, c);
  CHECK(v.is_supernet);
  CHECK(v.changed_after_warmup == 0);
  CHECK_FALSE(v.target_met);
  CHECK(v.predicted_ms == doctest::Approx(2 + 3 + 4 + 5 + 6));
  std::string all;
  for (const std::string& l : v.lines) all += l + "\n";
  CHECK(all.find("missed by 100.0 %") != std::string::npos);
  CHECK(all.find("nothing was decided") != std::string::npos);
  CHECK(all.find("--threshold-margin 1") != std::string::npos);
  // Two layers moved to 3x3 after the warm-up (one flip back and forth in between): target met.
  std::vector<SearchLogRow> moved = {row(0, {1, 1, 1, 1}, 0.5f), row(1, {0, 1, 1, 1}, 0.5f), row(2, {1, 1, 1, 1}, 0.5f),
                                     row(3, {0, 0, 1, 1}, 0.5f)};
  Arch a = super;
  a.layers[0] = a.layers[1] = Choice::K3E6;
  c.target_ms = 20;
  v = search_verdict(moved, 1, a, t, c);
  CHECK(v.changed_after_warmup == 2);
  CHECK(v.flips_after_warmup == 4);
  CHECK(v.target_met);
  CHECK_FALSE(v.is_supernet);
  // A search that ended inside its warm-up says so.
  v = search_verdict(still, 5, super, t, c);
  CHECK(v.lines.back().find("never acted") != std::string::npos);
}

TEST_CASE("decode band: the last logged decisions after the warm-up within the band, else none") {
  SearchSpace s = load_space(tiny_space_file());
  LatencyTable t = tiny_table(s);
  auto row = [](int64_t step, std::vector<float> k5, std::vector<float> skip) {
    SearchLogRow r;
    r.step = step;
    r.epoch = 0.5 * double(step);
    r.d_k5 = k5;
    r.d_e6 = {1, 1, 1, 1};
    r.d_skip = skip;
    r.d_se = {NAN, NAN, NAN, NAN};
    r.m_k5 = r.m_e6 = {1, 1, 1, 1};
    r.m_skip = {NAN, 1, NAN, 1};
    r.m_se = {NAN, NAN, NAN, NAN};
    return r;
  };
  const std::vector<float> keep = {NAN, 1, NAN, 1};
  // Fixed 2 ms; layer i costs 3 + i at 5x5-6, 2 + i at 3x3-6, 0 skipped. R per row:
  // 20 (warm-up), 19, 18, 20, 19, 16 (layer 1 skipped).
  const std::vector<SearchLogRow> rows = {row(0, {1, 1, 1, 1}, keep), row(1, {0, 1, 1, 1}, keep),
                                          row(2, {0, 0, 1, 1}, keep), row(3, {1, 1, 1, 1}, keep),
                                          row(4, {0, 1, 1, 1}, keep), row(5, {1, 1, 1, 1}, {NAN, 0, NAN, 1})};
  const Arch skipped = logged_arch(rows[5], "tiny", 1.0f);
  CHECK(skipped.layers[1] == Choice::Skip);
  CHECK(skipped.se.empty());  // no layer searched SE
  CHECK(predict_runtime(t, skipped) == doctest::Approx(16));
  CHECK(last_row_in_band(rows, 1, t, "tiny", 1.0f, 18.5, 19) == 4);
  CHECK(last_row_in_band(rows, 1, t, "tiny", 1.0f, 17.9, 18.1) == 2);
  CHECK(last_row_in_band(rows, 1, t, "tiny", 1.0f, 19.9, 20) == 3);
  CHECK(last_row_in_band(rows, 4, t, "tiny", 1.0f, 19.9, 20) == -1);  // row 3 precedes the first allowed
  CHECK(last_row_in_band(rows, 1, t, "tiny", 1.0f, 16.5, 17.5) == -1);
  // A searched SE layer: on where logged 1, never on a skipped layer.
  SearchLogRow se = rows[5];
  se.d_se = {1, 1, 0, NAN};
  const Arch with_se = logged_arch(se, "tiny", 1.0f);
  REQUIRE(with_se.se.size() == 4);
  CHECK((with_se.se[0] && !with_se.se[1] && !with_se.se[2] && !with_se.se[3]));

  // The verdict names the step and the final decisions' R.
  SearchConfig c = tiny_search("unused");
  c.decode = DecodeRule::LastInBand;
  c.target_ms = 19;
  c.decode_band = 0.03f;
  const Arch held = logged_arch(rows[4], "tiny", 1.0f);
  SearchVerdict v = search_verdict(rows, 1, held, t, c, 4, &skipped);
  CHECK(v.decoded_at_step == 4);
  CHECK(v.predicted_ms == doctest::Approx(19));
  CHECK(v.final_ms == doctest::Approx(16));
  CHECK(v.target_met);
  std::string all;
  for (const std::string& l : v.lines) all += l + "\n";
  CHECK(all.find("held at step 4 (epoch 2.00), the last in the band [18.430, 19.000] ms; the final ones predict 16.000 ms") !=
        std::string::npos);
  v = search_verdict(rows, 1, skipped, t, c, -1, &skipped);
  all.clear();
  for (const std::string& l : v.lines) all += l + "\n";
  CHECK(all.find("no step after the warm-up was in the band") != std::string::npos);
  // The rule needs a target and a band in (0, 1).
  c.target_ms = 0;
  CHECK_THROWS_WITH_AS(check_search_config(c, t), doctest::Contains("--decode band"), std::runtime_error);
  c.target_ms = 19;
  c.decode_band = 1.5f;
  CHECK_THROWS_WITH_AS(check_search_config(c, t), doctest::Contains("--decode-band must be in (0, 1]"), std::runtime_error);
  c.decode_band = 1;  // [0, T]: the last decisions with R <= T
  CHECK_NOTHROW(check_search_config(c, t));
  CHECK(last_row_in_band(rows, 1, t, "tiny", 1.0f, 0, 18.5) == 5);
}

TEST_CASE("decode round: the final decisions with the fewest margins' worth flipped into the band") {
  SearchSpace s = load_space(tiny_space_file());
  LatencyTable t = tiny_table(s);
  // Fixed 2 ms; layer i: 3x3-3 1 + i, 3x3-6 2 + i, 5x5-3 1.5 + i, 5x5-6 3 + i, SE 0.25; skip allowed on 1
  // and 3. Every layer 5x5-6: R = 20.
  SearchLogRow r;
  r.d_k5 = r.d_e6 = {1, 1, 1, 1};
  r.d_skip = {NAN, 1, NAN, 1};
  r.d_se = {NAN, NAN, NAN, NAN};
  r.m_k5 = {0.5f, 0.1f, 0.9f, 0.8f};
  r.m_e6 = {0.4f, 0.7f, 0.2f, 0.6f};
  r.m_skip = {NAN, 0.3f, NAN, 0.05f};
  r.m_se = {NAN, NAN, NAN, NAN};
  auto names = [](const Rounding& x) {
    std::string n;
    for (const DecisionFlip& f : x.flips) n += std::to_string(f.layer) + " " + f.indicator + ";";
    return n;
  };
  // [18.5, 19]: layer 1's kernel (margin 0.1, -1 ms) beats layer 2's expansion (0.2, -1.5) and layer 0's kernel (0.5).
  Rounding x = round_into_band(r, t, "tiny", 1.0f, 18.5, 19);
  REQUIRE(x.found);
  CHECK(names(x) == "1 kernel;");
  CHECK(x.R_ms == doctest::Approx(19));
  CHECK(x.cost == doctest::Approx(0.1));
  CHECK(x.arch.layers[1] == Choice::K3E6);
  CHECK(predict_runtime(t, x.arch) == doctest::Approx(x.R_ms));
  CHECK(x.arch.se.empty());
  // [16.5, 17.5]: two flips (0.1 + 0.2, -2.5 ms); skipping layer 1 (0.3, -4 ms) lands below, both of its
  // other flips cost 0.8.
  x = round_into_band(r, t, "tiny", 1.0f, 16.5, 17.5);
  REQUIRE(x.found);
  CHECK(names(x) == "1 kernel;2 expansion;");
  CHECK(x.R_ms == doctest::Approx(17.5));
  CHECK(x.cost == doctest::Approx(0.3));
  // [13.9, 14.2]: skipping layer 3 alone (margin 0.05, -6 ms).
  x = round_into_band(r, t, "tiny", 1.0f, 13.9, 14.2);
  REQUIRE(x.found);
  CHECK(names(x) == "3 skip;");
  CHECK(x.arch.layers[3] == Choice::Skip);
  // Below the smallest network (2 + 1 + 0 + 3 + 0 = 6 ms): none.
  CHECK_FALSE(round_into_band(r, t, "tiny", 1.0f, 1, 5).found);
  CHECK(round_into_band(r, t, "tiny", 1.0f, 5.9, 6.1).R_ms == doctest::Approx(6));
  // Decisions already in the band: nothing flipped.
  x = round_into_band(r, t, "tiny", 1.0f, 19.5, 20);
  CHECK(x.flips.empty());
  CHECK(x.cost == 0);
  // From a skipped layer: un-skipping it (its kernel and expansion as decided) is the cheap way up.
  SearchLogRow skipped = r;
  skipped.d_skip[3] = 0, skipped.m_skip[3] = -0.05f;
  x = round_into_band(skipped, t, "tiny", 1.0f, 19.5, 20);
  REQUIRE(x.found);
  CHECK(names(x) == "3 skip;");
  CHECK(x.arch.layers[3] == Choice::K5E6);
  // Searched SE: turning it off on layer 0 (margin 0.01) takes 0.25 ms off 20.25.
  SearchLogRow se = r;
  se.d_se = {1, 0, NAN, NAN};
  se.m_se = {0.01f, -0.02f, NAN, NAN};
  CHECK(predict_runtime(t, logged_arch(se, "tiny", 1.0f)) == doctest::Approx(20.25));
  x = round_into_band(se, t, "tiny", 1.0f, 19.9, 20.1);
  REQUIRE(x.found);
  CHECK(names(x) == "0 se;");
  REQUIRE(x.arch.se.size() == 4);
  CHECK_FALSE(x.arch.se[0]);
  // The verdict lists the flips and the final decisions' R; a band rounding cannot reach says so.
  SearchConfig c = tiny_search("unused");
  c.decode = DecodeRule::Round;
  c.target_ms = 19;
  const std::vector<SearchLogRow> rows = {r, r};
  x = round_into_band(r, t, "tiny", 1.0f, 0.97 * 19, 19);
  const Arch fin = logged_arch(r, "tiny", 1.0f);
  SearchVerdict v = search_verdict(rows, 1, x.arch, t, c, -1, &fin, &x);
  CHECK(v.rounded_flips == 1);
  CHECK(v.target_met);
  std::string all;
  for (const std::string& l : v.lines) all += l + "\n";
  CHECK(all.find("decoded (--decode round): no step after the warm-up was in the band [18.430, 19.000] ms: the final "
                 "decisions (20.000 ms) rounded into it, 1 flipped (summed margin 0.1000): layer 1 kernel (margin 0.1000)") !=
        std::string::npos);
  c.target_ms = 5;
  v = search_verdict(rows, 1, fin, t, c, -1, &fin);
  CHECK(v.rounded_flips == -1);
  all.clear();
  for (const std::string& l : v.lines) all += l + "\n";
  CHECK(all.find("rounding found no architecture in it") != std::string::npos);
  c.target_ms = 0;
  CHECK_THROWS_WITH_AS(check_search_config(c, t), doctest::Contains("--decode round"), std::runtime_error);
}

TEST_CASE("search warnings: a target the loss does not use, a target above the supernet, a warm-up as long as the run") {
  SearchSpace s = load_space(tiny_space_file());
  LatencyTable t = tiny_table(s);
  SearchConfig c = tiny_search("unused");
  c.target_ms = 30;  // the supernet's R is 2 + 3 + 4 + 5 + 6 = 20
  std::vector<std::string> w = check_search_config(c, t);
  REQUIRE(w.size() == 2);
  CHECK(w[0].find("only reported against") != std::string::npos);
  CHECK(w[1].find("at or above the supernet's R (20.000 ms)") != std::string::npos);
  c.runtime_loss = RuntimeLoss::Target;
  c.target_ms = 1;
  c.warmup_epochs = 2;
  w = check_search_config(c, t);
  REQUIRE(w.size() == 2);
  CHECK(w[0].find("runtime term never acts") != std::string::npos);
  CHECK(w[1].find("below the smallest network") != std::string::npos);
  c.target_ms = 0;
  CHECK_THROWS_WITH_AS(check_search_config(c, t), doctest::Contains("needs --target-ms"), std::runtime_error);
}

TEST_CASE("divergence is caught while the values are still finite, with the step and the likely cause") {
  TrainConfig c = tiny_train("runs_diverge");
  c.optimizer = "sgd";
  c.lr.lr = 1e6f;
  c.lr.warmup_epochs = 0;
  const std::string err = [&] {
    try {
      run_train(c);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  }();
  CHECK(err.find("training diverged at step") != std::string::npos);
  CHECK(err.find("learning rate") != std::string::npos);
  // The search names lambda when the runtime term explodes.
  DivergenceCheck d{10, "x.ckpt", "search"};
  CHECK_THROWS_WITH_AS(d.check_loss(7, 2.3, 5e8, 1e5), doctest::Contains("lower --lambda"), std::runtime_error);
  CHECK_THROWS_WITH_AS(d.check_loss(7, 1e30, 0, 0.02), doctest::Contains("exploding"), std::runtime_error);
  CHECK_THROWS_WITH_AS(d.check_params(7, 1.0, INFINITY), doctest::Contains("threshold"), std::runtime_error);
  d.check_loss(7, 2.3, 20 * std::log(5.0), 0.02);  // a normal step passes
}

TEST_CASE("train: an interruption saves and is not success; --extend is explicit; resume refuses other options") {
  TrainConfig c = tiny_train("runs_train_rules");
  request_stop(15);
  CHECK_THROWS_WITH_AS(run_train(c), doctest::Contains("interrupted by SIGTERM at step 1"), Interrupted);
  clear_stop_request();
  c.resume = true;
  TrainResult done = run_train(c);
  CHECK(done.finished);
  CHECK(done.test.weights == "EMA");
  CHECK(done.ema_decay == doctest::Approx(ema_decay_for(20)));
  // A longer run is refused without --extend, then extended with the change logged.
  c.epochs = 3;
  CHECK_THROWS_WITH_AS(run_train(c), doctest::Contains("epochs: was 2"), std::runtime_error);
  c.extend = true;
  TrainResult longer = run_train(c);
  CHECK(longer.steps == 30);
  CHECK(text_of("runs_train_rules/config_changes.log").find("extending the run from 2.00 to 3.00 epochs") !=
        std::string::npos);
  // The log keeps one row per epoch, none twice.
  int rows = 0;
  std::ifstream log("runs_train_rules/train_log.csv");
  for (std::string line; std::getline(log, line);) rows += line.rfind("10,", 0) == 0 || line.rfind("20,", 0) == 0 || line.rfind("30,", 0) == 0;
  CHECK(rows == 3);
}

TEST_CASE("train: fine-tuning from another checkpoint re-makes a classifier of another class count") {
  TrainConfig base = tiny_train("runs_init_base");
  base.max_steps = 3;
  run_train(base);
  TrainConfig same = tiny_train("runs_init_same");
  same.init_from = "runs_init_base/model.ckpt";
  same.max_steps = 0;
  same.ema_decay = 0;
  TrainResult r = run_train(same);
  // With no step taken, the weights are the base's: the same test accuracy.
  EvalResult base_raw = evaluate_checkpoint("runs_init_base/model.ckpt", base.data, false, 32);
  CHECK(r.test.accuracy == doctest::Approx(base_raw.accuracy));
  // Two classes instead of ten: every tensor but the classifier comes from the base.
  write_folder("runs_two_classes", 2);
  TrainConfig two = tiny_train("runs_init_two");
  two.data = parse_data_spec("folder:runs_two_classes");
  two.init_from = "runs_init_base/model.ckpt";
  two.max_steps = 2;
  CHECK(run_train(two).steps == 2);
  CHECK(checkpoint_arch("runs_init_two/model.ckpt").num_classes == 2);
  // Another architecture cannot be a starting point.
  TrainConfig other = tiny_train("runs_init_other");
  other.arch.layers = {Choice::K5E6, Choice::K5E6, Choice::K5E6, Choice::K5E6};
  other.init_from = "runs_init_base/model.ckpt";
  CHECK_THROWS_WITH_AS(run_train(other), doctest::Contains("another architecture"), std::runtime_error);
  // A search checkpoint is named as such.
  SearchConfig sc = tiny_search("runs_init_search");
  sc.max_steps = 1;
  run_search(sc, tiny_table(load_space(tiny_space_file())));
  CHECK_THROWS_WITH_AS(checkpoint_arch("runs_init_search/search.ckpt"), doctest::Contains("is a search checkpoint"),
                       std::runtime_error);
  other.init_from = "runs_init_search/search.ckpt";
  CHECK_THROWS_WITH_AS(run_train(other), doctest::Contains("is a search checkpoint"), std::runtime_error);
}

TEST_CASE("eval: per-class accuracy and a confusion matrix that add up") {
  TrainConfig c = tiny_train("runs_eval");
  c.max_steps = 4;
  c.val_fraction = 0.25f;
  TrainResult r = run_train(c);
  REQUIRE(r.has_val);
  CHECK(r.val.images == 40);
  EvalResult e = evaluate_checkpoint(r.checkpoint_path, c.data, true, 16);
  REQUIRE(e.confusion.size() == 10);
  int64_t total = 0, diagonal = 0;
  for (size_t i = 0; i < 10; ++i)
    for (size_t j = 0; j < 10; ++j) total += e.confusion[i][j], diagonal += i == j ? e.confusion[i][j] : 0;
  CHECK(total == e.images);
  CHECK(double(diagonal) / total == doctest::Approx(e.accuracy));
  CHECK(e.class_names.size() == 10);
  CHECK(ema_decay_for(100) == doctest::Approx(0.9));
  CHECK(ema_decay_for(1000000) == doctest::Approx(0.9999));
  CHECK(ema_decay_for(5000) == doctest::Approx(0.998));
}

TEST_CASE("networks take one-channel data (MNIST-like) and refuse a one-class dataset") {
  make_dirs("runs_grey");
  datatest::write_bytes("runs_grey/train-images-idx3-ubyte", datatest::idx_images(64, 28, 28));
  datatest::write_bytes("runs_grey/train-labels-idx1-ubyte", datatest::idx_labels(64));
  datatest::write_bytes("runs_grey/t10k-images-idx3-ubyte", datatest::idx_images(32, 28, 28));
  datatest::write_bytes("runs_grey/t10k-labels-idx1-ubyte", datatest::idx_labels(32));
  TrainConfig c = tiny_train("runs_grey_train");
  c.data = parse_data_spec("mnist:runs_grey");
  c.arch.input_size = 28;
  c.max_steps = 2;
  TrainResult r = run_train(c);
  CHECK(r.steps == 2);
  CHECK(checkpoint_arch(r.checkpoint_path).input_channels == 1);
  SearchSpace s = load_space(tiny_space_file());
  SearchConfig sc = tiny_search("runs_grey_search");
  sc.data = c.data;
  sc.space_options.input_size = 28;
  sc.max_steps = 2;
  SearchResult sr = run_search(sc, tiny_table(s));
  CHECK(sr.arch.input_channels == 1);
  // A dataset with one class would train a classifier with nothing to learn.
  write_folder("runs_one_class", 1);
  sc.data = parse_data_spec("folder:runs_one_class");
  sc.space_options.input_size = 16;
  sc.out_dir = "runs_one_class_search";
  CHECK_THROWS_WITH_AS(run_search(sc, tiny_table(s)), doctest::Contains("1 class(es); a classifier needs at least 2"),
                       std::runtime_error);
}
