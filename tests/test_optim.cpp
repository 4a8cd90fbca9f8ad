// Tests for optimizers (single-step values against hand computation), weight decay by group,
// learning-rate schedules and the EMA of weights.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>

#include "engine/ema.h"
#include "engine/optim.h"
#include "engine/schedule.h"

using namespace spnas;

namespace {
// Sets the gradient of a parameter to a constant.
void set_grad(const Var& v, float g) {
  v->grad = Tensor::full(v->value.shape(), g);
  v->grad_valid = true;
}
}  // namespace

TEST_CASE("TF RMSProp: one step from fresh state") {
  ParamSet ps;
  Var x = ps.add("x", Tensor::scalar(0.5f));
  RMSProp opt(ps, 0.9f, 0.9f, 1e-3f);
  set_grad(x, 1.0f);
  opt.step(0.064f);
  // ms = 0.9 * 1 + 0.1 * 1 = 1;  mom = 0.064 / sqrt(1.001);  x = 0.5 - mom
  CHECK(x->value.item() == doctest::Approx(0.5 - 0.064 / std::sqrt(1.001)).epsilon(1e-6));
  // Second step, same gradient: ms stays 1, mom = 0.9 * mom + 0.064 / sqrt(1.001).
  opt.step(0.064f);
  double m1 = 0.064 / std::sqrt(1.001), m2 = 0.9 * m1 + m1;
  CHECK(x->value.item() == doctest::Approx(0.5 - m1 - m2).epsilon(1e-6));
  auto s = opt.state();
  REQUIRE(s.slots.size() == 2);
  CHECK(s.kind == "rmsprop");
  CHECK(s.slots[0].first == "x/ms");
  CHECK(s.slots[1].first == "x/mom");
  CHECK(s.slots[0].second.item() == doctest::Approx(1.0));
  CHECK(s.updates == 2);
}

TEST_CASE("TF RMSProp: mean square is initialised to 1") {
  ParamSet ps;
  Var x = ps.add("x", Tensor::scalar(0.0f));
  RMSProp opt(ps, 0.9f, 0.0f, 1e-3f);
  set_grad(x, 3.0f);
  opt.step(0.1f);
  double ms = 0.9 * 1.0 + 0.1 * 9.0;
  CHECK(x->value.item() == doctest::Approx(-0.1 * 3.0 / std::sqrt(ms + 1e-3)).epsilon(1e-6));
}

TEST_CASE("SGD: plain, momentum and Nesterov two-step values") {
  ParamSet ps;
  Var a = ps.add("a", Tensor::scalar(1.0f));
  SUBCASE("plain") {
    SGD opt(ps);
    set_grad(a, 2.0f);
    opt.step(0.1f);
    CHECK(a->value.item() == doctest::Approx(0.8));
  }
  SUBCASE("momentum") {
    SGD opt(ps, 0.9f);
    set_grad(a, 1.0f);
    opt.step(0.1f);  // acc = 1,   a = 1 - 0.1
    CHECK(a->value.item() == doctest::Approx(0.9));
    set_grad(a, 2.0f);
    opt.step(0.1f);  // acc = 0.9 + 2 = 2.9,  a = 0.9 - 0.29
    CHECK(a->value.item() == doctest::Approx(0.61));
  }
  SUBCASE("nesterov") {
    SGD opt(ps, 0.9f, true);
    set_grad(a, 1.0f);
    opt.step(0.1f);  // acc = 1,   a = 1 - 0.1 * (1 + 0.9 * 1) = 0.81
    CHECK(a->value.item() == doctest::Approx(0.81));
    set_grad(a, 2.0f);
    opt.step(0.1f);  // acc = 2.9, a = 0.81 - 0.1 * (2 + 0.9 * 2.9) = 0.349
    CHECK(a->value.item() == doctest::Approx(0.349));
  }
}

TEST_CASE("Adam: first step is about -lr * sign(g), bias correction on step 2") {
  ParamSet ps;
  Var w = ps.add("w", Tensor::from({3}, {1.0f, 1.0f, 1.0f}));
  Adam opt(ps);
  w->grad = Tensor::from({3}, {0.5f, -3.0f, 1e-3f});
  w->grad_valid = true;
  opt.step(0.01f);
  CHECK(w->value.at({0}) == doctest::Approx(0.99).epsilon(1e-6));
  CHECK(w->value.at({1}) == doctest::Approx(1.01).epsilon(1e-6));
  CHECK(w->value.at({2}) == doctest::Approx(0.99).epsilon(1e-4));
  // Step 2 with g = 0.5 again on element 0: m = 0.5, s = 0.25 after correction -> another -lr.
  w->grad = Tensor::from({3}, {0.5f, 0.0f, 0.0f});
  opt.step(0.01f);
  CHECK(w->value.at({0}) == doctest::Approx(0.98).epsilon(1e-6));
}

TEST_CASE("weight decay: included or excluded per parameter and group") {
  ParamSet ps;
  Var w = ps.add("conv/w", Tensor::scalar(2.0f));                     // decayed
  Var g = ps.add("bn/gamma", Tensor::scalar(2.0f), false, "bn");     // excluded (BN)
  Var t = ps.add("thr", Tensor::scalar(2.0f), true, "thresholds");   // decay_mult 0
  Var h = ps.add("head/w", Tensor::scalar(2.0f), true, "head");      // lr_mult 2
  SGD opt(ps, 0.0f, false, 0.1f);
  opt.set_group("thresholds", {1.0f, 0.0f, true});
  opt.set_group("head", {2.0f, 1.0f, true});
  for (const Var& v : {w, g, t, h}) set_grad(v, 1.0f);
  CHECK(opt.decay_of(ps.params()[0]) == doctest::Approx(0.1));
  CHECK(opt.decay_of(ps.params()[1]) == 0.0f);
  CHECK(opt.decay_of(ps.params()[2]) == 0.0f);

  // Penalty for logging: 0.1 * (4 + 4) / 2 (conv/w and head/w).
  Var pen = opt.l2_penalty();
  CHECK(pen->value.item() == doctest::Approx(0.4));

  opt.step(0.5f);
  CHECK(w->value.item() == doctest::Approx(2.0 - 0.5 * (1.0 + 0.2)));
  CHECK(g->value.item() == doctest::Approx(2.0 - 0.5 * 1.0));
  CHECK(t->value.item() == doctest::Approx(2.0 - 0.5 * 1.0));
  CHECK(h->value.item() == doctest::Approx(2.0 - 1.0 * (1.0 + 0.2)));
}

TEST_CASE("weight decay: a parameter without gradient is still decayed; frozen groups are untouched") {
  ParamSet ps;
  Var w = ps.add("w", Tensor::scalar(1.0f));
  Var f = ps.add("f", Tensor::scalar(1.0f), true, "frozen");
  SGD opt(ps, 0.9f, false, 0.1f);
  opt.set_group("frozen", {1.0f, 1.0f, false});
  set_grad(w, 1.0f);
  set_grad(f, 1.0f);
  opt.step(1.0f);  // acc = 1.1, w = -0.1
  CHECK(w->value.item() == doctest::Approx(-0.1));
  CHECK(f->value.item() == 1.0f);
  w->zero_grad();
  opt.step(1.0f);  // g = 0.1 * -0.1 = -0.01; acc = 0.99 - 0.01 = 0.98; w = -0.1 - 0.98
  CHECK(w->value.item() == doctest::Approx(-1.08));
  CHECK(f->value.item() == 1.0f);
}

TEST_CASE("a group's momentum overrides the optimizer's (RMSProp, SGD, Adam's beta1)") {
  ParamSet ps;
  Var w = ps.add("w", Tensor::scalar(0.0f));
  Var t = ps.add("t", Tensor::scalar(0.0f), true, "thresholds");
  SUBCASE("RMSProp") {
    RMSProp opt(ps, 0.9f, 0.9f, 1e-3f);
    opt.set_group("thresholds", {1.0f, 1.0f, true, 0.0f});
    for (int i = 0; i < 2; ++i) {
      set_grad(w, 1.0f);
      set_grad(t, 1.0f);
      opt.step(0.064f);
    }
    // ms stays 1 for g = 1; step m1 = 0.064 / sqrt(1.001); w carries 0.9 of it, t none.
    const double m1 = 0.064 / std::sqrt(1.001);
    CHECK(w->value.item() == doctest::Approx(-(m1 + 1.9 * m1)).epsilon(1e-6));
    CHECK(t->value.item() == doctest::Approx(-2 * m1).epsilon(1e-6));
  }
  SUBCASE("SGD (Nesterov)") {
    SGD opt(ps, 0.9f, true);
    opt.set_group("thresholds", {1.0f, 1.0f, true, 0.5f});
    set_grad(w, 1.0f);
    set_grad(t, 1.0f);
    opt.step(0.1f);  // w: 1 - 0.1 * (1 + 0.9);  t: 0.1 * (1 + 0.5)
    CHECK(w->value.item() == doctest::Approx(-0.19));
    CHECK(t->value.item() == doctest::Approx(-0.15));
  }
  SUBCASE("Adam") {
    Adam opt(ps);
    opt.set_group("thresholds", {1.0f, 1.0f, true, 0.0f});
    set_grad(w, 1.0f);
    set_grad(t, 1.0f);
    opt.step(0.01f);
    set_grad(w, -1.0f);
    set_grad(t, -1.0f);
    opt.step(0.01f);
    // beta1 0: the second step follows the new gradient alone (+lr / (sqrt(s_hat) + eps) with s_hat = 1);
    // beta1 0.9: m_hat = (0.09 - 0.1) / 0.19 < 0, a small step back.
    CHECK(t->value.item() == doctest::Approx(0.0).epsilon(1e-6));
    CHECK(w->value.item() < -0.009);
  }
}

TEST_CASE("l2_penalty: gradient is wd * v") {
  ParamSet ps;
  Var w = ps.add("w", Tensor::from({2}, {1.0f, -3.0f}));
  SGD opt(ps, 0.0f, false, 0.5f);
  Var pen = opt.l2_penalty();
  CHECK(pen->value.item() == doctest::Approx(0.5 * 10.0 / 2));
  backward(pen);
  CHECK(w->grad.at({0}) == doctest::Approx(0.5));
  CHECK(w->grad.at({1}) == doctest::Approx(-1.5));
}

TEST_CASE("optimizer state: round trip and refusal of mismatches") {
  ParamSet ps;
  Var w = ps.add("w", Tensor::from({2}, {1.0f, 2.0f}));
  RMSProp a(ps);
  set_grad(w, 0.3f);
  a.step(0.1f);
  OptimizerState s = a.state();
  RMSProp b(ps);
  b.load_state(s);
  CHECK(b.updates() == 1);
  OptimizerState s2 = b.state();
  for (size_t i = 0; i < s.slots.size(); ++i)
    for (int64_t j = 0; j < 2; ++j) CHECK(s.slots[i].second.data()[j] == s2.slots[i].second.data()[j]);

  SGD sgd(ps, 0.9f);
  CHECK_THROWS_WITH_AS(sgd.load_state(s), doctest::Contains("'rmsprop'"), std::runtime_error);
  OptimizerState bad = s;
  bad.slots[1].second = Tensor::zeros({3});
  CHECK_THROWS_WITH_AS(b.load_state(bad), doctest::Contains("w/mom"), std::runtime_error);
  bad = s;
  bad.slots.pop_back();
  CHECK_THROWS_WITH_AS(b.load_state(bad), doctest::Contains("missing"), std::runtime_error);
  bad = s;
  bad.slots.emplace_back("v/ms", Tensor::zeros({2}));
  CHECK_THROWS_WITH_AS(b.load_state(bad), doctest::Contains("belongs to no parameter"), std::runtime_error);
  CHECK(b.updates() == 1);
}

TEST_CASE("schedules: exponential staircase, piecewise, cosine, warm-up") {
  Schedule e = Schedule::exponential(0.1f, 0.5f, 10);
  CHECK(e(0) == doctest::Approx(0.1));
  CHECK(e(9) == doctest::Approx(0.1));
  CHECK(e(10) == doctest::Approx(0.05));
  CHECK(e(25) == doctest::Approx(0.025));
  Schedule es = Schedule::exponential(0.1f, 0.5f, 10, false);
  CHECK(es(5) == doctest::Approx(0.1 * std::pow(0.5, 0.5)));
  Schedule ef = Schedule::exponential(1.0f, 0.97f, 2.4);  // fractional decay_steps, as MnasNet
  CHECK(ef(5) == doctest::Approx(0.97 * 0.97));

  Schedule p = Schedule::piecewise({100, 200}, {1.0f, 0.1f, 0.01f});
  CHECK(p(0) == 1.0f);
  CHECK(p(99) == 1.0f);
  CHECK(p(100) == 0.1f);
  CHECK(p(199) == 0.1f);
  CHECK(p(200) == 0.01f);
  CHECK(p(10000) == 0.01f);
  CHECK_THROWS_AS(Schedule::piecewise({100}, {1.0f}), std::runtime_error);

  Schedule c = Schedule::cosine(1.0f, 100, 0.1f);
  CHECK(c(0) == doctest::Approx(1.0));
  CHECK(c(50) == doctest::Approx(0.55));
  CHECK(c(25) == doctest::Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI / 4))));
  CHECK(c(100) == doctest::Approx(0.1));
  CHECK(c(1000) == doctest::Approx(0.1));

  Schedule w = Schedule::exponential(0.2f, 0.5f, 10).with_warmup(5, 0.0f);
  CHECK(w(0) == doctest::Approx(0.0));
  CHECK(w(1) == doctest::Approx(0.04));
  CHECK(w(4) == doctest::Approx(0.16));
  CHECK(w(5) == doctest::Approx(0.2));   // main schedule at the global step
  CHECK(w(10) == doctest::Approx(0.1));
  Schedule wc = Schedule::cosine(1.0f, 100).with_warmup(10, 0.5f);
  CHECK(wc(5) == doctest::Approx(0.75));
  CHECK(wc(50) == doctest::Approx(0.5));
  CHECK(Schedule::constant(0.3f)(12345) == doctest::Approx(0.3));
  CHECK(w.describe().find("warmup") != std::string::npos);
}

TEST_CASE("EMA: fixed and num_updates decay, swap in and restore") {
  ParamSet ps;
  Var w = ps.add("w", Tensor::scalar(1.0f));
  Tensor buf = ps.add_buffer("bn/mean", Tensor::scalar(0.0f));
  SUBCASE("fixed decay") {
    Ema ema(ps, 0.9f);
    w->value.fill(2.0f);
    buf.fill(10.0f);
    ema.update();
    auto s = ema.shadows();
    REQUIRE(s.size() == 2);
    CHECK(s[0].first == "w");
    CHECK(s[0].second.item() == doctest::Approx(1.1));  // 0.9 * 1 + 0.1 * 2
    CHECK(s[1].first == "bn/mean");
    CHECK(s[1].second.item() == doctest::Approx(1.0));
    ema.update();
    CHECK(ema.shadows()[0].second.item() == doctest::Approx(0.9 * 1.1 + 0.2));

    ema.swap_in();
    CHECK(w->value.item() == doctest::Approx(1.19));
    CHECK(buf.item() == doctest::Approx(1.9));
    CHECK_THROWS_AS(ema.update(), std::runtime_error);
    ema.restore();
    CHECK(w->value.item() == 2.0f);
    CHECK(buf.item() == 10.0f);
  }
  SUBCASE("num_updates decay") {
    Ema ema(ps, 0.999f, true, false);
    CHECK(ema.decay_at(0) == doctest::Approx(0.1));
    CHECK(ema.decay_at(10) == doctest::Approx(11.0 / 20.0));
    CHECK(ema.decay_at(100000) == doctest::Approx(0.999));
    w->value.fill(2.0f);
    ema.update(0);  // decay 0.1: shadow = 0.1 * 1 + 0.9 * 2
    CHECK(ema.shadows().size() == 1);
    CHECK(ema.shadows()[0].second.item() == doctest::Approx(1.9));
  }
}
