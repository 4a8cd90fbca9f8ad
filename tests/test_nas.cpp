// Single-Path NAS semantics: superkernel reduction, nesting, skip, SE, runtime model, decoding,
// and an end-to-end search with resume.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "engine/checkpoint.h"
#include "engine/optim.h"
#include "gradcheck.h"
#include "nas/search.h"
#include "nas/train.h"
#include "nas_fixtures.h"

using namespace spnas;

static void set_scalar(const Var& v, float x) { v->value.data()[0] = x; }

// The inner 3x3 taps of a [5, 5, C] kernel as a [3, 3, C] kernel.
static Tensor centre_taps(const Tensor& k5) {
  const int64_t C = k5.dim(2);
  Tensor k3 = Tensor::empty({3, 3, C});
  for (int kh = 0; kh < 3; ++kh)
    for (int kw = 0; kw < 3; ++kw)
      std::memcpy(k3.data() + (kh * 3 + kw) * C, k5.data() + ((kh + 1) * 5 + kw + 1) * C, sizeof(float) * C);
  return k3;
}

static SearchSpace tiny() { return parse_space(kTinySpaceJson, "tiny"); }

TEST_CASE("space files: cifar10 and mnasnet-imagenet expand as the paper describes") {
  SearchSpace c = load_space("cifar10");
  REQUIRE(c.num_searchable() == 20);
  auto idx = c.searchable_indices();
  const int strides[5] = {1, 2, 2, 1, 2}, sizes[5] = {32, 16, 8, 8, 4}, outs[5] = {24, 40, 80, 96, 192};
  for (int s = 0; s < 5; ++s) {
    const LayerSpec& first = c.layers[idx[4 * s]];
    CHECK(first.stride == strides[s]);
    CHECK(first.out_size == sizes[s]);
    CHECK(first.cout == outs[s]);
    CHECK_FALSE(first.skip_allowed);  // including the stride-1 first layer of the 96 stage
    for (int k = 1; k < 4; ++k) CHECK(c.layers[idx[4 * s + k]].skip_allowed);
  }
  SearchSpace m = load_space("mnasnet-imagenet");
  CHECK(m.input_size == 224);
  CHECK(m.num_classes == 1000);
  CHECK(m.layers[m.searchable_indices()[0]].in_size == 112);
  CHECK(m.layers.back().out_size == 7);
  SearchSpace w = load_space("cifar10", {0.5f, 0, 0});
  CHECK(w.stem_channels == 16);
  CHECK(w.layers.back().cout == 160);
  CHECK_THROWS_WITH_AS(load_space("nope"), doctest::Contains("neither a built-in space"), std::runtime_error);
  CHECK_THROWS_WITH_AS(parse_space("{\"input_size\": 8}", "bad.json"), doctest::Contains("bad.json"), std::runtime_error);
}

TEST_CASE("kernel reduction: with d_k5 = 0 the superkernel is the 3x3 centre") {
  Supernet net(tiny());
  for (SuperLayer& L : net.layers()) {
    set_scalar(L.t_k5, 1e9f);  // d_k5 = 0
    set_scalar(L.t_e6, -1e9f);
    if (L.t_skip) set_scalar(L.t_skip, -1e9f);
    for (int stride : {1, 2})
      for (int size : {6, 7}) {
        Rng rng(size * 10 + stride);
        Var x = constant(random_tensor({2, size, size, L.hidden}, rng));
        LayerIndicators ind;
        ForwardOptions fo;
        Var k = net.effective_kernel(L, ind, fo);
        CHECK(ind.d_k5->value.item() == 0.0f);
        Var y5 = dwconv2d(x, k, stride);
        Var y3 = dwconv2d(x, constant(centre_taps(L.w_dw->value)), stride);
        REQUIRE(y5->value.shape() == y3->value.shape());
        float maxdiff = 0;
        for (int64_t i = 0; i < y5->value.numel(); ++i)
          maxdiff = std::max(maxdiff, std::fabs(y5->value.data()[i] - y3->value.data()[i]));
        CAPTURE(stride);
        CAPTURE(size);
        CHECK(maxdiff <= 1e-5f);
      }
  }
}

TEST_CASE("expansion: with d_e6 = 0 the channels of B are exactly 0 before batch norm") {
  Supernet net(tiny());
  SuperLayer& L = net.layers()[1];
  set_scalar(L.t_e6, 1e9f);
  LayerIndicators ind;
  ForwardOptions fo;
  Var k = net.effective_kernel(L, ind, fo);
  CHECK(ind.d_e6->value.item() == 0.0f);
  Rng rng(3);
  Var y = dwconv2d(constant(random_tensor({2, 5, 5, L.hidden}, rng)), k, 1);
  bool b_zero = true, a_nonzero = false;
  for (int64_t i = 0; i < y->value.numel(); ++i) {
    int64_t c = i % L.hidden;
    if (c >= L.half) b_zero &= y->value.data()[i] == 0.0f;
    else a_nonzero |= y->value.data()[i] != 0.0f;
  }
  CHECK(b_zero);
  CHECK(a_nonzero);
}

TEST_CASE("skip: d_skip = 0 zeroes the kernel; a non-removable layer has no skip threshold") {
  Supernet net(tiny());
  SuperLayer& removable = net.layers()[1];  // second layer of the first stage
  REQUIRE(removable.spec.skip_allowed);
  set_scalar(removable.t_skip, 1e9f);
  LayerIndicators ind;
  Var k = net.effective_kernel(removable, ind, ForwardOptions());
  for (int64_t i = 0; i < k->value.numel(); ++i) REQUIRE(k->value.data()[i] == 0.0f);
  SuperLayer& fixed = net.layers()[0];  // first layer of a stage: never removable
  CHECK_FALSE(fixed.spec.skip_allowed);
  CHECK_FALSE(fixed.t_skip);
  CHECK(net.params().find("layer1/t_skip") == nullptr);
  LayerIndicators ind2;
  net.effective_kernel(fixed, ind2, ForwardOptions());
  CHECK(ind2.d_skip->value.item() == 1.0f);
  CHECK_FALSE(ind2.d_skip->requires_grad);
}

TEST_CASE("nesting: with d_k5 = 0 the ring weights do not affect d_e6 or d_skip; d_k5 = 1 does") {
  Supernet net(tiny());
  SuperLayer& L = net.layers()[1];
  set_scalar(L.t_k5, 1e9f);
  LayerIndicators a;
  net.effective_kernel(L, a, ForwardOptions());
  // Scale the ring taps up: margins of e6 and skip must not change.
  Tensor& K = L.w_dw->value;
  for (int kh = 0; kh < 5; ++kh)
    for (int kw = 0; kw < 5; ++kw)
      if (kh == 0 || kh == 4 || kw == 0 || kw == 4)
        for (int c = 0; c < L.hidden; ++c) K.data()[(kh * 5 + kw) * L.hidden + c] *= 10.0f;
  LayerIndicators b;
  net.effective_kernel(L, b, ForwardOptions());
  CHECK(a.m_e6 == b.m_e6);
  CHECK(a.m_skip == b.m_skip);
  set_scalar(L.t_k5, -1e9f);  // now the ring is in: the norms change
  LayerIndicators c;
  net.effective_kernel(L, c, ForwardOptions());
  CHECK(c.m_e6 > b.m_e6);
  CHECK(c.m_skip > b.m_skip);
  // Gradients flow through the nesting: d m_e6 / d t_k5 exists through d_k5's straight-through rule.
  set_scalar(L.t_k5, 0.0f);
  LayerIndicators n0;
  net.effective_kernel(L, n0, ForwardOptions());
  set_scalar(L.t_k5, n0.m_k5 - 0.5f);  // margin +0.5: d_k5 = 1 with a sizeable sigmoid'
  net.params().zero_grad();
  LayerIndicators d;
  Var k = net.effective_kernel(L, d, ForwardOptions());
  backward(add(scale(d.d_e6, 1.0f), scale(d.d_skip, 1.0f)));
  REQUIRE(L.t_k5->grad_valid);
  CHECK(L.t_k5->grad.item() != 0.0f);
}

TEST_CASE("indicator gradient with respect to a threshold is -sigmoid'(margin) * upstream") {
  Supernet net(tiny());
  SuperLayer& L = net.layers()[1];
  LayerIndicators ind;
  net.params().zero_grad();
  Var k = net.effective_kernel(L, ind, ForwardOptions());
  backward(scale(ind.d_skip, 3.0f));
  float s = 1 / (1 + std::exp(-ind.m_skip));
  CHECK(L.t_skip->grad.item() == doctest::Approx(-3.0f * s * (1 - s)));
}

TEST_CASE("runtime model: formula and table modes against hand-computed values") {
  SearchSpace s = tiny();
  LatencyTable t = tiny_table(s);  // layer i: R33 = 1+i, R36 = 2+i, R53 = 1.5+i, R56 = 3+i; fixed 2
  auto ind = [](float k5, float e6, float skip) {
    LayerIndicators d;
    d.d_k5 = constant(Tensor::scalar(k5));
    d.d_e6 = constant(Tensor::scalar(e6));
    d.d_skip = constant(Tensor::scalar(skip));
    d.d_se = constant(Tensor::scalar(0));
    return d;
  };
  std::vector<LayerIndicators> v = {ind(1, 1, 1), ind(0, 1, 1), ind(1, 0, 1), ind(0, 0, 0)};
  // formula: layer0 = R56 = 3; layer1 (k3 e6) = R56 * rho = R36 = 3; layer2 (k5 e3) = R53 = 3.5; layer3 skipped.
  CHECK(runtime_model(t, v, RuntimeMode::Formula)->value.item() == doctest::Approx(2 + 3 + 3 + 3.5));
  // table: the same except layer with k3-e3 would differ; here identical choices.
  CHECK(runtime_model(t, v, RuntimeMode::Table)->value.item() == doctest::Approx(2 + 3 + 3 + 3.5));
  std::vector<LayerIndicators> w = {ind(0, 0, 1), ind(0, 0, 1), ind(0, 0, 1), ind(0, 0, 1)};
  // formula's k3-e3 is R53 * R36 / R56 (not R33): layer i: (1.5+i)(2+i)/(3+i)
  double f = 2;
  for (int i = 0; i < 4; ++i) f += (1.5 + i) * (2 + i) / (3 + i);
  CHECK(runtime_model(t, w, RuntimeMode::Formula)->value.item() == doctest::Approx(f));
  CHECK(runtime_model(t, w, RuntimeMode::Table)->value.item() == doctest::Approx(2 + 1 + 2 + 3 + 4));
  // Additive prediction of a decoded architecture equals the sum of the entries.
  Arch a;
  a.space = "tiny";
  a.layers = {Choice::K5E6, Choice::K3E6, Choice::K5E3, Choice::Skip};
  CHECK(predict_runtime(t, a) == doctest::Approx(2 + 3 + 3 + 3.5));
  // Under the formula a decoded layer costs what the search optimized: equal here except k3-e3.
  CHECK(predict_runtime(t, a, RuntimeMode::Formula) == doctest::Approx(2 + 3 + 3 + 3.5));
  Arch b = a;
  b.layers = {Choice::K3E3, Choice::K3E3, Choice::K3E3, Choice::K3E3};
  CHECK(predict_runtime(t, b, RuntimeMode::Formula) == doctest::Approx(f));
  CHECK(predict_runtime(t, b, RuntimeMode::Table) == doctest::Approx(2 + 1 + 2 + 3 + 4));
  a.se = {true, false, true, true};
  CHECK(predict_runtime(t, a) == doctest::Approx(2 + 3 + 3 + 3.5 + 0.5));
  // Loss forms.
  Var R = constant(Tensor::scalar(10.0f));
  // The log form has the reference's scale: lambda * 1e3 * ln(R), 20 ln(R) at the paper's lambda = 0.02.
  CHECK(runtime_loss(R, RuntimeLoss::Log, 0.02f, 0)->value.item() == doctest::Approx(20 * std::log(10.0)));
  CHECK(runtime_loss(R, RuntimeLoss::Linear, 0.5f, 0)->value.item() == doctest::Approx(5.0));
  CHECK(runtime_loss(R, RuntimeLoss::Target, 0.5f, 8)->value.item() == doctest::Approx(0.5 * 0.25));
  CHECK(runtime_loss(R, RuntimeLoss::Target, 0.5f, 20)->value.item() == doctest::Approx(0.0));
}

TEST_CASE("runtime term alone: one optimizer step raises every active threshold") {
  SearchSpace s = tiny();
  LatencyTable t = tiny_table(s);
  Supernet net(s);
  RMSProp opt(net.params(), 0.9f, 0.9f, 1e-3f, 0.0f);
  std::vector<float> before;
  for (SuperLayer& L : net.layers()) {
    // Bring each margin near 0 so sigmoid' is not negligible.
    ForwardOptions fo;
    LayerIndicators ind;
    net.effective_kernel(L, ind, fo);
    set_scalar(L.t_k5, ind.m_k5 - 0.1f);
  }
  Rng rng(1);
  ForwardOptions fo;
  fo.rng = &rng;
  net.forward(constant(random_tensor({2, 16, 16, 3}, rng)), fo);
  clear_tape();  // cross-entropy gradients masked: only the runtime term is differentiated
  for (SuperLayer& L : net.layers()) {
    before.push_back(L.t_k5->value.item());
    before.push_back(L.t_e6->value.item());
    before.push_back(L.t_skip ? L.t_skip->value.item() : NAN);
  }
  std::vector<LayerIndicators> ind;
  for (SuperLayer& L : net.layers()) {
    LayerIndicators d;
    net.effective_kernel(L, d, ForwardOptions());
    ind.push_back(d);
  }
  net.params().zero_grad();
  backward(runtime_loss(runtime_model(t, ind, RuntimeMode::Formula), RuntimeLoss::Log, 1e-4f, 0));
  opt.step(0.01f);
  size_t k = 0;
  for (SuperLayer& L : net.layers()) {
    CHECK(L.t_k5->value.item() > before[k++]);
    CHECK(L.t_e6->value.item() > before[k++]);
    if (L.t_skip) CHECK(L.t_skip->value.item() > before[k]);
    ++k;
  }
}

TEST_CASE("decoder mapping for all five choices") {
  CHECK(decode_choice(true, true, true) == Choice::K5E6);
  CHECK(decode_choice(true, false, true) == Choice::K5E3);
  CHECK(decode_choice(false, true, true) == Choice::K3E6);  // k3 with e6 is 3x3-6
  CHECK(decode_choice(false, false, true) == Choice::K3E3);
  CHECK(decode_choice(true, true, false) == Choice::Skip);
  CHECK(std::string(choice_name(Choice::K3E6)) == "3x3-6");
  CHECK(std::string(choice_name(Choice::K5E3)) == "5x5-3");
  // From thresholds.
  Supernet net(tiny());
  auto& Ls = net.layers();
  set_scalar(Ls[0].t_k5, 1e9f);                               // 3x3-6
  set_scalar(Ls[1].t_skip, 1e9f);                             // skip
  set_scalar(Ls[2].t_e6, 1e9f);                               // 5x5-3
  set_scalar(Ls[3].t_k5, 1e9f), set_scalar(Ls[3].t_e6, 1e9f); // 3x3-3
  Arch a = net.decode("tiny");
  REQUIRE(a.layers.size() == 4);
  CHECK(a.layers[0] == Choice::K3E6);
  CHECK(a.layers[1] == Choice::Skip);
  CHECK(a.layers[2] == Choice::K5E3);
  CHECK(a.layers[3] == Choice::K3E3);
  // Architecture files round-trip and are validated against the space.
  Arch b = parse_arch(arch_to_json(a), "x");
  CHECK(b.layers == a.layers);
  Arch bad = a;
  bad.layers[0] = Choice::Skip;  // first layer of a stage cannot be removed
  CHECK_THROWS_WITH_AS(validate_arch(bad, tiny(), "bad.json"), doctest::Contains("cannot be removed"), std::runtime_error);
  CHECK_THROWS_WITH_AS(parse_arch(R"({"layers": ["7x7-6"]})", "a.json"), doctest::Contains("layers[0]"),
                       std::runtime_error);
}

TEST_CASE("searchable SE with d_se = 0 is bit-identical to the network without SE") {
  SearchSpace s = tiny();
  SupernetConfig with;
  with.search_se = true;
  Supernet a(s, with), b(s);
  // Copy every parameter b has into a (same names), so the only difference is the SE branch.
  for (const Param& p : b.params().params()) a.params().find(p.name)->var->value.copy_from(p.var->value);
  for (SuperLayer& L : a.layers()) set_scalar(L.t_se, 1e9f);
  Rng r1(5), r2(5);
  Rng data(7);
  Tensor x = random_tensor({2, 16, 16, 3}, data);
  ForwardOptions fa, fb;
  fa.rng = &r1, fb.rng = &r2;
  NoGrad ng;
  Var ya = a.forward(constant(x), fa), yb = b.forward(constant(x), fb);
  REQUIRE(ya->value.numel() == yb->value.numel());
  CHECK(std::memcmp(ya->value.data(), yb->value.data(), sizeof(float) * ya->value.numel()) == 0);
  // And with d_se = 1 the output differs.
  for (SuperLayer& L : a.layers()) set_scalar(L.t_se, -1e9f);
  Var yc = a.forward(constant(x), fa);
  CHECK(std::memcmp(yc->value.data(), yb->value.data(), sizeof(float) * yc->value.numel()) != 0);
}

TEST_CASE("threshold margin: thresholds start at the initial norms minus the margin") {
  SearchSpace s = tiny();
  SupernetConfig paper, near;
  paper.search_se = near.search_se = true;
  near.threshold_margin = 0.5f;
  Supernet a(s, paper), b(s, near);  // same seed: same weights
  ForwardOptions fo;
  fo.training = false;
  NoGrad ng;
  for (size_t i = 0; i < a.layers().size(); ++i) {
    LayerIndicators ia, ib;
    a.effective_kernel(a.layers()[i], ia, fo);
    b.effective_kernel(b.layers()[i], ib, fo);
    CHECK(a.layers()[i].t_k5->value.item() == 0.0f);  // the paper's initialisation is untouched
    CHECK(ia.m_k5 > 0.5f);
    CHECK(ib.m_k5 == doctest::Approx(0.5f).epsilon(1e-4));
    CHECK(ib.m_e6 == doctest::Approx(0.5f).epsilon(1e-4));
    if (ib.has_skip) CHECK(ib.m_skip == doctest::Approx(0.5f).epsilon(1e-4));
    CHECK(b.layers()[i].t_k5->value.item() == doctest::Approx(ia.m_k5 - 0.5f).epsilon(1e-5));
    const float se_norm = l2norm(b.layers()[i].w_se_reduce)->value.item();
    CHECK(se_norm - b.layers()[i].t_se->value.item() == doctest::Approx(0.5f).epsilon(1e-4));
  }
  // Every candidate is still on: the decoded supernet is all 5x5-6.
  Arch arch = b.decode("tiny");
  for (Choice c : arch.layers) CHECK(c == Choice::K5E6);
}

TEST_CASE("warm-up dropping: indicators are 0 or 1/0.6 with the right frequency") {
  Supernet net(tiny());
  Rng rng(11);
  ForwardOptions fo;
  fo.indicator_drop = 0.4f;
  fo.rng = &rng;
  int zeros = 0, n = 0;
  for (int it = 0; it < 500; ++it) {
    LayerIndicators ind;
    net.effective_kernel(net.layers()[1], ind, fo);
    for (const Var& d : {ind.d_k5, ind.d_e6, ind.d_skip}) {
      float v = d->value.item();
      CHECK((v == 0.0f || v == doctest::Approx(1 / 0.6f)));
      zeros += v == 0.0f;
      ++n;
    }
  }
  CHECK(double(zeros) / n == doctest::Approx(0.4).epsilon(0.1));
}

static SearchConfig tiny_search_config(const std::string& out) {
  SearchConfig c;
  c.space = tiny_space_file();
  c.data = parse_data_spec("synthetic:train=192,test=64,seed=3");
  c.batch = 16;
  c.epochs = 2;           // 12 steps per epoch
  c.warmup_epochs = 1;
  c.lambda = 5e-4f;
  c.threshold_lr_mult = 20;
  c.out_dir = out;
  c.checkpoint_every = 0;
  c.quiet = true;
  c.space_options.input_size = 16;
  c.val_fraction = 0;  // the whole synthetic training split: 12 steps per epoch
  std::filesystem::remove_all(out);  // a fresh folder, whatever an earlier run left
  return c;
}

static std::string read_all(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

TEST_CASE("search end-to-end on the embedded data; resume equals an uninterrupted run") {
  SearchSpace s = load_space(tiny_space_file());
  LatencyTable t = tiny_table(s);
  SearchConfig full = tiny_search_config("nas_test_full");
  SearchResult a = run_search(full, t);
  CHECK(a.finished);
  CHECK(a.steps == 24);
  CHECK(a.arch.layers.size() == 4);
  CHECK(std::isfinite(a.final_ce));
  auto rows = read_search_csv(a.csv_path, 1 << 30, 4);
  CHECK(rows.size() == 24);
  CHECK(rows.front().runtime_term == 0);  // the log holds what enters the loss: nothing during warm-up
  CHECK(rows.back().runtime_term > 0);
  CHECK(read_all(a.svg_path).find("<svg") != std::string::npos);

  SearchConfig part = tiny_search_config("nas_test_resume");
  part.max_steps = 10;  // stops mid-epoch, after warm-up's boundary is still ahead
  SearchResult b1 = run_search(part, t);
  CHECK_FALSE(b1.finished);
  part.max_steps = -1;
  part.resume = true;
  SearchResult b2 = run_search(part, t);
  CHECK(b2.finished);
  CHECK(arch_to_json(b2.arch) == arch_to_json(a.arch));
  CheckpointData ca = read_checkpoint(a.checkpoint_path), cb = read_checkpoint(b2.checkpoint_path);
  REQUIRE(ca.params.size() == cb.params.size());
  bool identical = true;
  for (size_t i = 0; i < ca.params.size(); ++i)
    identical &= std::memcmp(ca.params[i].second.data(), cb.params[i].second.data(),
                             sizeof(float) * ca.params[i].second.numel()) == 0;
  CHECK(identical);
  CHECK(read_all(a.csv_path) == read_all(b2.csv_path));

  // A stop request (what SIGINT/SIGTERM set) ends the search after the current step with a checkpoint,
  // as an interruption (exit 130/143 in the program), and writes no architecture.
  SearchConfig sig = tiny_search_config("nas_test_signal");
  request_stop(2);
  CHECK_THROWS_WITH_AS(run_search(sig, t), doctest::Contains("interrupted by SIGINT at step 1"), Interrupted);
  clear_stop_request();
  CHECK(read_checkpoint(sig.out_dir + "/search.ckpt").step == 1);
  CHECK_FALSE(std::ifstream(sig.out_dir + "/arch.json").good());
  sig.resume = true;
  SearchResult c2 = run_search(sig, t);
  CHECK(c2.finished);
  CHECK(arch_to_json(c2.arch) == arch_to_json(a.arch));
  CHECK(read_all(a.csv_path) == read_all(c2.csv_path));
}

// Every threshold's value in a search checkpoint.
static std::vector<float> thresholds_in(const std::string& checkpoint) {
  std::vector<float> v;
  for (const auto& [name, t] : read_checkpoint(checkpoint).params)
    if (name.find("/t_") != std::string::npos) v.push_back(t.data()[0]);
  return v;
}

TEST_CASE("freezing the thresholds in the warm-up: they keep their start until it ends, then train") {
  SearchSpace s = load_space(tiny_space_file());
  LatencyTable t = tiny_table(s);
  auto nonzero = [](const std::vector<float>& v) { return std::count_if(v.begin(), v.end(), [](float x) { return x != 0; }); };
  SearchConfig trained = tiny_search_config("nas_test_warm_trained");
  trained.max_steps = 12;  // exactly the warm-up
  run_search(trained, t);
  const std::vector<float> a = thresholds_in(trained.out_dir + "/search.ckpt");
  REQUIRE(a.size() >= 8);
  CHECK(nonzero(a) > 0);  // the reference's way: CE moves them from the first step

  SearchConfig frozen = tiny_search_config("nas_test_warm_frozen");
  frozen.freeze_thresholds_in_warmup = true;
  frozen.max_steps = 12;
  run_search(frozen, t);
  const std::vector<float> b = thresholds_in(frozen.out_dir + "/search.ckpt");
  REQUIRE(b.size() == a.size());
  CHECK(nonzero(b) == 0);
  frozen.max_steps = -1;
  frozen.resume = true;
  run_search(frozen, t);
  CHECK(nonzero(thresholds_in(frozen.out_dir + "/search.ckpt")) > 0);  // after the warm-up they train
}

TEST_CASE("the thresholds' momentum reaches their group only: 0.9 given = the optimizer's, 0 moves them differently") {
  SearchSpace s = load_space(tiny_space_file());
  LatencyTable t = tiny_table(s);
  auto run = [&](const std::string& out, float momentum) {
    SearchConfig c = tiny_search_config(out);
    c.threshold_momentum = momentum;
    // Two warm-up steps: after the first the momentum is 0 either way; the second adds 0.9 of the first
    // step to each threshold or not, while every weight's second step is still computed from the
    // same thresholds.
    c.max_steps = 2;
    run_search(c, t);
    return read_checkpoint(c.out_dir + "/search.ckpt").params;
  };
  const auto base = run("nas_test_tmom_default", -1.0f);
  const auto same = run("nas_test_tmom_09", 0.9f);
  const auto zero = run("nas_test_tmom_0", 0.0f);
  REQUIRE(base.size() == zero.size());
  int thresholds = 0, thresholds_changed = 0, weights_changed = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    const Tensor& a = base[i].second;
    const bool is_threshold = base[i].first.find("/t_") != std::string::npos;
    bool differs = false;
    for (int64_t j = 0; j < a.numel(); ++j) {
      CHECK(same[i].second.data()[j] == a.data()[j]);  // exactly the optimizer's own momentum
      differs |= zero[i].second.data()[j] != a.data()[j];
    }
    thresholds += is_threshold;
    (is_threshold ? thresholds_changed : weights_changed) += differs;
  }
  CHECK(thresholds >= 8);
  CHECK(thresholds_changed > 0);  // momentum 0: the second step no longer carries the first
  CHECK(weights_changed == 0);    // the weights keep the optimizer's momentum
  SearchConfig bad = tiny_search_config("nas_test_tmom_bad");
  bad.threshold_momentum = 1.0f;
  CHECK_THROWS_WITH_AS(run_search(bad, t), doctest::Contains("--threshold-momentum"), std::runtime_error);
}

TEST_CASE("decode band: the same search returns the last decisions it held in the band, the final ones otherwise") {
  SearchSpace s = load_space(tiny_space_file());
  LatencyTable t = tiny_table(s);
  // The log form: the target is only reported against, so both runs take the same steps.
  SearchConfig fin = tiny_search_config("nas_test_decode_final");
  fin.lambda = 5e-3f;
  fin.threshold_margin = 0.1f;  // thresholds near the norms: decisions change within the 12 steps
  const SearchResult a = run_search(fin, t);
  const auto rows = read_search_csv(a.csv_path, 1 << 30, 4);
  REQUIRE(rows.size() == 24);
  const double R_final = predict_runtime(t, a.arch);
  // The latest step after the warm-up (12 steps) whose decisions predict more than the final ones.
  int64_t passed = -1;
  for (int64_t i = 12; i < 24; ++i)
    if (predict_runtime(t, logged_arch(rows[size_t(i)], fin.space, 1.0f)) > R_final + 0.5) passed = i;
  REQUIRE_MESSAGE(passed >= 0, "the tiny search did not lower R after its warm-up; R_final " << R_final);
  const double T = predict_runtime(t, logged_arch(rows[size_t(passed)], fin.space, 1.0f));

  SearchConfig band = tiny_search_config("nas_test_decode_band");
  band.lambda = fin.lambda;
  band.threshold_margin = fin.threshold_margin;
  band.decode = DecodeRule::LastInBand;
  band.target_ms = float(T);
  band.decode_band = 0.01f;  // the final decisions, at least 0.5 ms below T, are outside
  const SearchResult b = run_search(band, t);
  CHECK(read_all(a.csv_path) == read_all(b.csv_path));  // the rule changes what is returned, not the search
  CHECK(b.verdict.decoded_at_step >= passed);
  const int64_t at = b.verdict.decoded_at_step;
  REQUIRE(at >= 12);
  REQUIRE(at < 24);
  for (size_t l = 0; l < 4; ++l) CHECK(b.arch.layers[l] == logged_choice(rows[size_t(at)], l));
  CHECK(b.predicted_ms <= T);
  CHECK(b.predicted_ms >= 0.99 * T);
  CHECK(b.verdict.final_ms == doctest::Approx(R_final));
  // arch.json holds the held decisions.
  CHECK(load_arch(b.arch_path).layers == b.arch.layers);
  CHECK(read_all(b.svg_path).find("decoded here") != std::string::npos);

  // A band nothing reached after the warm-up: the final decisions.
  SearchConfig none = tiny_search_config("nas_test_decode_none");
  none.lambda = fin.lambda;
  none.threshold_margin = fin.threshold_margin;
  none.decode = DecodeRule::LastInBand;
  none.target_ms = 0.5f;  // below every architecture
  none.decode_band = 0.01f;
  const SearchResult c = run_search(none, t);
  CHECK(c.verdict.decoded_at_step == -1);
  CHECK(c.arch.layers == a.arch.layers);
}

TEST_CASE("decode round: a band no step reached gets the final decisions rounded into it") {
  SearchSpace s = load_space(tiny_space_file());
  LatencyTable t = tiny_table(s);
  SearchConfig fin = tiny_search_config("nas_test_round_final");
  fin.lambda = 5e-3f;
  fin.threshold_margin = 0.1f;
  const SearchResult a = run_search(fin, t);
  const auto rows = read_search_csv(a.csv_path, 1 << 30, 4);
  REQUIRE(rows.size() == 24);
  const double R_final = predict_runtime(t, a.arch);
  // A target 1 to 4 ms below the final decisions, else 1 to 8 ms above, whose 1 % band no step after
  // the warm-up reached (the tiny table's networks, 6 to 20 ms, are 0.5 ms apart: one lies at T).
  double T = 0;
  for (double d : {-1.0, -1.5, -2.0, -3.0, -4.0, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0}) {
    const double cand = R_final + d;
    if (T > 0 || cand < 6.5 || cand > 19.5) continue;
    bool reached = false;
    for (size_t i = 12; i < rows.size(); ++i) {
      const double R = predict_runtime(t, logged_arch(rows[i], fin.space, 1.0f));
      reached |= R >= 0.99 * cand && R <= cand;
    }
    if (!reached) T = cand;
  }
  REQUIRE_MESSAGE(T > 0, "every candidate target's band was reached by a step; R_final " << R_final);

  SearchConfig round = tiny_search_config("nas_test_round");
  round.lambda = fin.lambda;
  round.threshold_margin = fin.threshold_margin;
  round.decode = DecodeRule::Round;
  round.target_ms = float(T);
  round.decode_band = 0.01f;
  const SearchResult b = run_search(round, t);
  CHECK(read_all(a.csv_path) == read_all(b.csv_path));  // the rule changes what is returned, not the search
  CHECK(b.verdict.decoded_at_step == -1);
  REQUIRE(b.verdict.rounded_flips >= 1);
  CHECK(b.predicted_ms <= float(T));
  CHECK(b.predicted_ms >= 0.99 * float(T));
  CHECK(b.verdict.final_ms == doctest::Approx(R_final));
  CHECK(b.verdict.target_met);
  bool said = false;
  for (const std::string& l : b.verdict.lines) said |= l.find("rounded into it") != std::string::npos;
  CHECK(said);
  // Only the flipped layers differ from the final decisions.
  int differ = 0;
  for (size_t l = 0; l < 4; ++l) differ += b.arch.layers[l] != a.arch.layers[l];
  CHECK(differ >= 1);
  CHECK(differ <= b.verdict.rounded_flips);
  CHECK(load_arch(b.arch_path).layers == b.arch.layers);
  CHECK(read_all(b.svg_path).find("flipped into the band") != std::string::npos);
  // With --decode band the same search returns its final decisions.
  SearchConfig band = round;
  band.out_dir = "nas_test_round_band";
  band.decode = DecodeRule::LastInBand;
  const SearchResult c = run_search(band, t);
  CHECK(c.arch.layers == a.arch.layers);
  CHECK(c.verdict.rounded_flips == -1);
}

TEST_CASE("search refuses a table that does not fit the space, naming it") {
  SearchSpace s = load_space(tiny_space_file());
  LatencyTable t = tiny_table(s);
  t.layers.pop_back();
  CHECK_THROWS_WITH_AS(run_search(tiny_search_config("nas_test_bad"), t), doctest::Contains("tiny-table"),
                       std::runtime_error);
}

TEST_CASE("child network: trains, resumes exactly, and eval reloads the checkpoint") {
  Arch arch;
  arch.space = tiny_space_file();
  arch.layers = {Choice::K3E3, Choice::Skip, Choice::K5E6, Choice::K3E6};
  arch.input_size = 16;
  arch.num_classes = 10;
  ChildNet probe(arch);
  // Skipped layers are removed: 2 fixed + 3 searchable blocks remain.
  CHECK(probe.blocks().size() == 5);
  auto cfg = [&](const std::string& out) {
    TrainConfig c;
    c.arch = arch;
    c.data = parse_data_spec("synthetic:train=160,test=64,seed=4");
    c.batch = 16;
    c.epochs = 2;
    c.out_dir = out;
    c.quiet = true;
    c.ema_decay = 0.9f;
    std::filesystem::remove_all(out);
    return c;
  };
  TrainResult full = run_train(cfg("nas_train_full"));
  CHECK(full.finished);
  CHECK(full.steps == 20);
  TrainConfig part = cfg("nas_train_resume");
  part.max_steps = 7;
  run_train(part);
  part.max_steps = -1;
  part.resume = true;
  TrainResult resumed = run_train(part);
  CHECK(resumed.finished);
  CheckpointData a = read_checkpoint(full.checkpoint_path), b = read_checkpoint(resumed.checkpoint_path);
  REQUIRE(a.params.size() == b.params.size());
  bool same = true;
  for (size_t i = 0; i < a.params.size(); ++i)
    same &= std::memcmp(a.params[i].second.data(), b.params[i].second.data(),
                        sizeof(float) * a.params[i].second.numel()) == 0;
  CHECK(same);
  EvalResult e = evaluate_checkpoint(full.checkpoint_path, parse_data_spec("synthetic:train=160,test=64,seed=4"), true, 32);
  CHECK(e.images == 64);
  CHECK(e.accuracy == doctest::Approx(full.test.accuracy));
}
