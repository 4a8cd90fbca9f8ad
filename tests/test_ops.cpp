// Every op's backward against central finite differences, plus autodiff-core behaviour.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <sstream>
#include <stdexcept>

#include "engine/alloc.h"
#include "engine/threads.h"
#include "gradcheck.h"

using namespace spnas;

static Var P(const Tensor& t) { return leaf(t, true); }

TEST_CASE("step indicator: forward is the step, backward is sigmoid'") {
  Var x = P(Tensor::from({3}, {-0.5f, 0.0f, 0.7f}));
  Var y = step_indicator(x);
  CHECK(y->value.data()[0] == 0.0f);
  CHECK(y->value.data()[1] == 1.0f);
  CHECK(y->value.data()[2] == 1.0f);
  backward(sum(y));
  auto sp = [](float v) { float s = 1 / (1 + std::exp(-v)); return s * (1 - s); };
  CHECK(x->grad.data()[0] == doctest::Approx(sp(-0.5f)));
  CHECK(x->grad.data()[1] == doctest::Approx(0.25f));
  CHECK(x->grad.data()[2] == doctest::Approx(sp(0.7f)));
  // Far from the step the derivative is small but not flushed to zero (margins can be large).
  Var far = P(Tensor::scalar(30.0f));
  backward(step_indicator(far));
  CHECK(far->grad.item() > 0.0f);
  CHECK(far->grad.item() == doctest::Approx(std::exp(-30.0)).epsilon(1e-3));
  // Gradient with respect to a threshold t in 1(norm - t) is -sigmoid'(margin) * upstream.
  Var t = P(Tensor::scalar(0.3f));
  Var w = P(Tensor::from({2}, {0.6f, 0.8f}));  // norm 1
  Var d = step_indicator(sub(l2norm(w), t));
  backward(scale(d, 2.0f));
  CHECK(t->grad.item() == doctest::Approx(-2.0f * sp(0.7f)));
}

TEST_CASE("elementwise algebra gradients") {
  Rng rng(1);
  Var a = P(random_tensor({3, 4}, rng)), b = P(random_tensor({3, 4}, rng, 0.5f, 2.0f));
  Var s = P(random_tensor({}, rng, 0.5f, 1.5f));
  CHECK(gradcheck("add", {a, b}, [](auto& v) { return add(v[0], v[1]); }) == 0);
  CHECK(gradcheck("sub", {a, b}, [](auto& v) { return sub(v[0], v[1]); }) == 0);
  CHECK(gradcheck("mul", {a, b}, [](auto& v) { return mul(v[0], v[1]); }) == 0);
  CHECK(gradcheck("div", {a, b}, [](auto& v) { return div(v[0], v[1]); }) == 0);
  CHECK(gradcheck("mul scalar broadcast", {a, s}, [](auto& v) { return mul(v[0], v[1]); }) == 0);
  CHECK(gradcheck("mul scalar broadcast left", {s, a}, [](auto& v) { return mul(v[0], v[1]); }) == 0);
  CHECK(gradcheck("add scalar broadcast", {a, s}, [](auto& v) { return add(v[0], v[1]); }) == 0);
  CHECK(gradcheck("div by scalar", {a, s}, [](auto& v) { return div(v[0], v[1]); }) == 0);
  CHECK(gradcheck("scale", {a}, [](auto& v) { return scale(v[0], -2.5f); }) == 0);
  CHECK(gradcheck("add_scalar", {a}, [](auto& v) { return add_scalar(v[0], 3.0f); }) == 0);
  CHECK(gradcheck("log", {b}, [](auto& v) { return log(v[0]); }) == 0);
  CHECK(gradcheck("sum", {a}, [](auto& v) { return sum(v[0]); }) == 0);
  CHECK(gradcheck("l2norm", {a}, [](auto& v) { return l2norm(v[0]); }) == 0);
  CHECK(gradcheck("sqnorm", {a}, [](auto& v) { return sqnorm(v[0]); }) == 0);
  CHECK(gradcheck("slice", {a}, [](auto& v) { return slice(v[0], 1, 1, 3); }) == 0);
  CHECK(gradcheck("mask_axis", {a}, [](auto& v) { return mask_axis(v[0], 0, 1, 2); }) == 0);
  CHECK(gradcheck("reshape", {a}, [](auto& v) { return reshape(v[0], {4, 3}); }) == 0);
  CHECK(gradcheck("sigmoid", {a}, [](auto& v) { return sigmoid(v[0]); }) == 0);
  CHECK(gradcheck("hswish", {P(avoid_kinks(random_tensor({50}, rng, -5, 5), {-3, 3}))}, [](auto& v) { return hswish(v[0]); }) == 0);
  CHECK(gradcheck("relu", {P(avoid_kinks(random_tensor({40}, rng), {0}))}, [](auto& v) { return relu(v[0]); }) == 0);
  CHECK(gradcheck("relu6", {P(avoid_kinks(random_tensor({40}, rng, -2, 8), {0, 6}))}, [](auto& v) { return relu6(v[0]); }) == 0);
}

TEST_CASE("slice and mask_axis values") {
  Var a = P(Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6}));
  Var s = slice(a, 1, 1, 3);
  CHECK(s->value.shape() == Shape{2, 2});
  CHECK(s->value.at({1, 0}) == 5.0f);
  Var m = mask_axis(a, 1, 0, 1);
  CHECK(m->value.at({0, 0}) == 1.0f);
  CHECK(m->value.at({0, 1}) == 0.0f);
  CHECK(m->value.at({1, 0}) == 4.0f);
}

TEST_CASE("convolution gradients: dense, depthwise, pointwise") {
  Rng rng(2);
  for (int stride : {1, 2}) {
    Var x = P(random_tensor({2, 7, 6, 3}, rng));
    Var w = P(random_tensor({3, 3, 3, 5}, rng));
    CAPTURE(stride);
    CHECK(gradcheck("conv2d", {x, w}, [stride](auto& v) { return conv2d(v[0], v[1], stride, 1); }) == 0);
    CHECK(gradcheck("conv2d_same", {x, w}, [stride](auto& v) { return conv2d_same(v[0], v[1], stride); }) == 0);
    for (int k : {3, 5}) {
      Var xd = P(random_tensor({2, 7, 8, 5}, rng));
      Var wd = P(random_tensor({k, k, 5}, rng));
      CAPTURE(k);
      CHECK(gradcheck("dwconv2d", {xd, wd}, [stride](auto& v) { return dwconv2d(v[0], v[1], stride); }) == 0);
    }
    Var xp = P(random_tensor({2, 5, 5, 6}, rng));
    Var wp = P(random_tensor({6, 4}, rng));
    CHECK(gradcheck("pwconv", {xp, wp}, [stride](auto& v) { return pwconv(v[0], v[1], stride); }) == 0);
  }
}

TEST_CASE("convolution gradients: an input and weights used twice get the sum of both uses") {
  // The second backward must add to the gradient the first one wrote (the kernels' accumulate flag).
  Rng rng(3);
  for (int stride : {1, 2}) {
    CAPTURE(stride);
    Var x1 = P(random_tensor({2, 6, 7, 5}, rng)), x2 = P(random_tensor({2, 6, 7, 5}, rng));
    Var w1 = P(random_tensor({3, 3, 5}, rng)), w2 = P(random_tensor({3, 3, 5}, rng));
    CHECK(gradcheck("dwconv2d twice", {x1, x2, w1, w2}, [stride](auto& v) {
            return add(add(dwconv2d(v[0], v[2], stride), dwconv2d(v[0], v[3], stride)), dwconv2d(v[1], v[2], stride));
          }) == 0);
    Var p1 = P(random_tensor({2, 5, 5, 6}, rng)), p2 = P(random_tensor({2, 5, 5, 6}, rng));
    Var q1 = P(random_tensor({6, 4}, rng)), q2 = P(random_tensor({6, 4}, rng));
    CHECK(gradcheck("pwconv twice", {p1, p2, q1, q2}, [stride](auto& v) {
            return add(add(pwconv(v[0], v[2], stride), pwconv(v[0], v[3], stride)), pwconv(v[1], v[2], stride));
          }) == 0);
  }
}

TEST_CASE("dense conv forward against a direct loop") {
  Rng rng(3);
  Tensor X = random_tensor({1, 5, 4, 2}, rng), W = random_tensor({3, 3, 2, 3}, rng);
  Var y = conv2d(constant(X), constant(W), 2, 1);
  REQUIRE(y->value.shape() == Shape{1, 3, 2, 3});
  for (int oh = 0; oh < 3; ++oh)
    for (int ow = 0; ow < 2; ++ow)
      for (int co = 0; co < 3; ++co) {
        double s = 0;
        for (int kh = 0; kh < 3; ++kh)
          for (int kw = 0; kw < 3; ++kw)
            for (int ci = 0; ci < 2; ++ci) {
              int ih = oh * 2 - 1 + kh, iw = ow * 2 - 1 + kw;
              if (ih < 0 || ih >= 5 || iw < 0 || iw >= 4) continue;
              s += X.at({0, ih, iw, ci}) * W.at({kh, kw, ci, co});
            }
        CHECK(y->value.at({0, oh, ow, co}) == doctest::Approx(s).epsilon(1e-5));
      }
}

TEST_CASE("batchnorm with fused activations: training and evaluation gradients") {
  Rng rng(4);
  for (Act act : {Act::None, Act::ReLU, Act::ReLU6}) {
    for (bool training : {true, false}) {
      CAPTURE(int(act));
      CAPTURE(training);
      BatchNorm bn;
      bn.running_mean = random_tensor({4}, rng, -0.2f, 0.2f);
      bn.running_var = random_tensor({4}, rng, 0.5f, 1.5f);
      Var x = P(random_tensor({3, 3, 2, 4}, rng, -2, 4));
      Var g = P(random_tensor({4}, rng, 0.5f, 2.0f));
      Var b = P(random_tensor({4}, rng, -0.5f, 0.5f));
      GradCheckOptions o;
      o.eps = 1e-3f;
      o.atol = 5e-3f;
      CHECK(gradcheck("batchnorm", {x, g, b}, [&](auto& v) { return batchnorm(v[0], v[1], v[2], bn, training, act); },
                      o) == 0);
      // The same batch norm read by a pointwise convolution without its output being stored.
      Var w = P(random_tensor({4, 3}, rng));
      CHECK(gradcheck("bn_act_pwconv", {x, g, b, w},
                      [&](auto& v) { return bn_act_pwconv(v[0], v[1], v[2], bn, training, act, v[3]); }, o) == 0);
    }
  }
}

TEST_CASE("batchnorm statistics and running averages") {
  BatchNorm bn;
  bn.running_mean = Tensor::zeros({1});
  bn.running_var = Tensor::full({1}, 1.0f);
  bn.momentum = 0.9f;
  bn.eps = 0.0f;
  Var x = constant(Tensor::from({4, 1}, {1, 2, 3, 4}));
  Var y = batchnorm(x, constant(Tensor::full({1}, 1.0f)), constant(Tensor::zeros({1})), bn, true);
  // mean 2.5, biased var 1.25
  CHECK(y->value.data()[0] == doctest::Approx(-1.5 / std::sqrt(1.25)));
  CHECK(bn.running_mean.item() == doctest::Approx(0.25f));
  CHECK(bn.running_var.item() == doctest::Approx(0.9f + 0.1f * 1.25f * 4 / 3));
}

// Every kernel table this CPU has: the reference and the SIMD ones.
static std::vector<std::string> kernel_tables() {
  std::vector<std::string> isas = {"ref"};
  for (const char* isa : {"avx2", "avx512"})
    if (kernels_for(isa)) isas.push_back(isa);
  return isas;
}

TEST_CASE("inference ops with batch norm folded in equal conv then batchnorm(eval)") {
  Rng rng(77);
  for (const std::string& isa : kernel_tables())
    for (const char* impl : {"blas", "own"})
      for (Act act : {Act::None, Act::ReLU, Act::ReLU6}) {
        set_isa(isa);
        set_pointwise_impl(impl);
        INFO("isa ", isa, " pointwise ", std::string(impl), " act ", int(act));
        for (int C : {5, 24, 37}) {
          const int Cout = C + 11;
          BatchNorm bn;
          bn.running_mean = random_tensor({Cout}, rng, -0.5f, 0.5f);
          bn.running_var = random_tensor({Cout}, rng, 0.2f, 2.0f);
          Var gamma = leaf(random_tensor({Cout}, rng, 0.5f, 3.0f), true), beta = leaf(random_tensor({Cout}, rng), true);
          Var x = leaf(random_tensor({2, 7, 9, C}, rng, -2.0f, 2.0f), true);
          Var w = leaf(random_tensor({C, Cout}, rng), true);
          NoGrad ng;
          Tensor ref = batchnorm(pwconv(x, w), gamma, beta, bn, false, act)->value;
          Tensor got = pwconv_bn_act(x, w, gamma, beta, bn, act)->value;
          REQUIRE(got.shape() == ref.shape());
          double worst = 0;
          for (int64_t i = 0; i < ref.numel(); ++i)
            worst = std::max(worst, std::fabs(double(got.data()[i]) - ref.data()[i]) / (1 + std::fabs(ref.data()[i])));
          CHECK(worst < 1e-5);
          // depthwise, both strides and kernel sizes, over Cout channels
          BatchNorm bd = bn;
          for (int k : {3, 5})
            for (int stride : {1, 2}) {
              Var xd = leaf(random_tensor({2, 7, 9, Cout}, rng, -2.0f, 2.0f), true);
              Var wd = leaf(random_tensor({k, k, Cout}, rng), true);
              Tensor rd = batchnorm(dwconv2d(xd, wd, stride), gamma, beta, bd, false, act)->value;
              Tensor gd = dwconv_bn_act(xd, wd, stride, gamma, beta, bd, act)->value;
              REQUIRE(gd.shape() == rd.shape());
              double wd_worst = 0;
              for (int64_t i = 0; i < rd.numel(); ++i)
                wd_worst = std::max(wd_worst, std::fabs(double(gd.data()[i]) - rd.data()[i]) / (1 + std::fabs(rd.data()[i])));
              CHECK(wd_worst < 1e-5);
            }
        }
      }
  set_isa("auto");
  set_pointwise_impl("auto");
  // Not under NoGrad: refused, naming the op.
  BatchNorm bn;
  bn.running_mean = Tensor::zeros({3});
  bn.running_var = Tensor::full({3}, 1.0f);
  Var x = leaf(random_tensor({1, 2, 2, 3}, rng), true), w = leaf(random_tensor({3, 3}, rng), true);
  Var g = leaf(Tensor::full({3}, 1.0f), true), b = leaf(Tensor::zeros({3}), true);
  CHECK_THROWS_WITH_AS(pwconv_bn_act(x, w, g, b, bn, Act::ReLU), doctest::Contains("pwconv_bn_act"), std::exception);
}

TEST_CASE("network ops gradients") {
  Rng rng(5);
  Var x = P(random_tensor({2, 3, 3, 4}, rng));
  Var s = P(random_tensor({2, 4}, rng));
  CHECK(gradcheck("channel_scale", {x, s}, [](auto& v) { return channel_scale(v[0], v[1]); }) == 0);
  CHECK(gradcheck("global_avgpool", {x}, [](auto& v) { return global_avgpool(v[0]); }) == 0);
  Var xi = P(random_tensor({3, 5}, rng)), w = P(random_tensor({5, 4}, rng)), b = P(random_tensor({4}, rng));
  CHECK(gradcheck("linear", {xi, w, b}, [](auto& v) { return linear(v[0], v[1], v[2]); }) == 0);
  CHECK(gradcheck("dropout", {xi}, [](auto& v) { Rng r(9); return dropout(v[0], 0.3f, r, true); }) == 0);
  std::vector<int> labels = {1, 0, 3};
  for (float smooth : {0.0f, 0.1f}) {
    Var logits = P(random_tensor({3, 4}, rng, -2, 2));
    CHECK(gradcheck("softmax_cross_entropy", {logits},
                    [&](auto& v) { return softmax_cross_entropy(v[0], labels, smooth); }) == 0);
  }
}

TEST_CASE("cross-entropy value with label smoothing") {
  Var logits = constant(Tensor::from({1, 2}, {0.0f, 0.0f}));
  CHECK(softmax_cross_entropy(logits, {0}, 0.1f)->value.item() == doctest::Approx(std::log(2.0)));
  Var l2 = constant(Tensor::from({1, 2}, {2.0f, 0.0f}));
  double lp0 = 2 - std::log(std::exp(2.0) + 1), lp1 = -std::log(std::exp(2.0) + 1);
  CHECK(softmax_cross_entropy(l2, {0}, 0.2f)->value.item() == doctest::Approx(-(0.9 * lp0 + 0.1 * lp1)));
  CHECK_THROWS_WITH_AS(softmax_cross_entropy(l2, {2}, 0.0f), doctest::Contains("label 2"), std::runtime_error);
}

TEST_CASE("autodiff: a value used twice gets the sum of its gradients") {
  Var x = P(Tensor::from({2}, {3.0f, -1.0f}));
  backward(sum(add(mul(x, x), x)));  // d/dx (x^2 + x) = 2x + 1
  CHECK(x->grad.data()[0] == doctest::Approx(7.0f));
  CHECK(x->grad.data()[1] == doctest::Approx(-1.0f));
}

TEST_CASE("autodiff: missing backward rule fails loudly naming the op") {
  Var x = P(Tensor::scalar(1.0f));
  Var y = record("my_new_op", Tensor::scalar(2.0f), {x}, nullptr);
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("my_new_op"), std::runtime_error);
  clear_tape();
}

TEST_CASE("autodiff: no-grad mode records nothing; the tape is released after backward") {
  Var x = P(Tensor::full({1000}, 1.0f));
  {
    NoGrad ng;
    Var y = relu(scale(x, 2.0f));
    CHECK(tape_size() == 0);
    CHECK_FALSE(y->requires_grad);
  }
  size_t before = pool_stats().bytes_in_use;
  {
    Var loss = sum(relu(scale(x, 2.0f)));
    CHECK(tape_size() == 3);
    backward(loss);
    CHECK(tape_size() == 0);
  }
  // Only the gradient of x (1000 floats) remains in use.
  CHECK(pool_stats().bytes_in_use <= before + 1000 * sizeof(float) + 64);
}

TEST_CASE("shape errors name the op and both shapes") {
  Var x = constant(Tensor::zeros({1, 4, 4, 3}));
  Var w = constant(Tensor::zeros({3, 3, 5}));
  CHECK_THROWS_WITH_AS(dwconv2d(x, w, 1), doctest::Contains("dwconv2d"), std::runtime_error);
  CHECK_THROWS_WITH_AS(dwconv2d(x, w, 1), doctest::Contains("[3, 3, 5]"), std::runtime_error);
  CHECK_THROWS_WITH_AS(dwconv2d(x, w, 1), doctest::Contains("[1, 4, 4, 3]"), std::runtime_error);
  CHECK_THROWS_WITH_AS(add(constant(Tensor::zeros({2, 3})), constant(Tensor::zeros({3, 2}))),
                       doctest::Contains("[2, 3] vs [3, 2]"), std::runtime_error);
  CHECK_THROWS_WITH_AS(pwconv(x, constant(Tensor::zeros({4, 2}))), doctest::Contains("pwconv"), std::runtime_error);
}

TEST_CASE("tensor storage is 64-byte aligned and reused across steps") {
  Tensor a = Tensor::empty({123});
  CHECK(reinterpret_cast<uintptr_t>(a.data()) % 64 == 0);
  const float* p = a.data();
  a = Tensor();
  Tensor b = Tensor::empty({123});
  CHECK(b.data() == p);
}

TEST_CASE("released batch-norm outputs are recomputed bit-exactly in backward") {
  set_low_memory(true);
  Rng rng(21);
  Tensor X = random_tensor({2, 5, 5, 6}, rng, -2, 2), W = random_tensor({3, 3, 6}, rng), G = random_tensor({6}, rng, 0.5f, 1.5f);
  auto run = [&](bool release, std::vector<Tensor>* grads) {
    BatchNorm bn;
    bn.running_mean = Tensor::zeros({6});
    bn.running_var = Tensor::full({6}, 1.0f);
    Var x = P(X.clone()), w = P(W.clone()), g = P(G.clone()), b = P(Tensor::zeros({6}));
    Var y = batchnorm(x, g, b, bn, true, Act::ReLU6);
    Var z = dwconv2d(y, w, 2);
    if (release) {
      release_value(y);
      CHECK_FALSE(y->value.defined());
      CHECK(y->shape() == Shape{2, 5, 5, 6});
    }
    Var p = pwconv(z, constant(random_tensor({6, 4}, rng)));
    backward(sum(mul(p, p)));
    *grads = {x->grad.clone(), w->grad.clone(), g->grad.clone(), b->grad.clone()};
  };
  std::vector<Tensor> a, b;
  Rng keep = rng;
  run(false, &a);
  rng = keep;
  run(true, &b);
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].numel() == b[i].numel());
    CHECK(std::memcmp(a[i].data(), b[i].data(), sizeof(float) * a[i].numel()) == 0);
  }
  set_low_memory(false);
  BatchNorm bn2;
  bn2.running_mean = Tensor::zeros({6});
  bn2.running_var = Tensor::full({6}, 1.0f);
  Var y = batchnorm(P(X.clone()), P(G.clone()), P(Tensor::zeros({6})), bn2, true, Act::ReLU);
  release_value(y);  // off: kept
  CHECK(y->value.defined());
  clear_tape();
  set_low_memory(true);
}

TEST_CASE("bn_act_pwconv equals pwconv(batchnorm(...)) bit for bit, values, gradients and running statistics") {
  // Every ISA table, our GEMMs and OpenBLAS (which materializes the map), 1 and 2 threads, every
  // activation, training and evaluation statistics, low-memory mode on and off, with gradients and
  // under NoGrad; and a frozen batch norm over a constant input with a trainable w (the batch-norm
  // node is then off the tape: bn_act_pwconv materializes). 37 channels: a masked tail everywhere.
  Rng rng(23);
  const int64_t C = 37, Co = 20;
  Tensor X = random_tensor({3, 6, 7, C}, rng, -2, 2), Wd = random_tensor({3, 3, C}, rng),
         G = random_tensor({C}, rng, 0.5f, 1.5f), B = random_tensor({C}, rng, -0.5f, 0.5f),
         Wp = random_tensor({C, Co}, rng), RM = random_tensor({C}, rng, -0.3f, 0.3f), RV = random_tensor({C}, rng, 0.5f, 2.0f);
  auto same = [](const Tensor& a, const Tensor& b) {
    return a.numel() == b.numel() && std::memcmp(a.data(), b.data(), sizeof(float) * a.numel()) == 0;
  };
  for (const std::string& isa : kernel_tables())
  for (const char* impl : {"own", "blas"})
  for (int threads : {1, 2})
  for (Act act : {Act::ReLU6, Act::ReLU, Act::None})
  for (bool training : {true, false})
  for (bool low : {true, false})
  for (int mode : {0, 1, 2}) {  // 0: gradients; 1: NoGrad; 2: frozen batch norm, constant input
    INFO("isa ", isa, " impl ", std::string(impl), " threads ", threads, " act ", int(act), " training ", training,
         " low-memory ", low, " mode ", mode);
    set_isa(isa);
    set_pointwise_impl(impl);
    set_num_threads(threads);
    set_low_memory(low);
    auto run = [&](bool fused, std::vector<Tensor>* out) {
      BatchNorm bn;
      bn.running_mean = RM.clone();
      bn.running_var = RV.clone();
      Var x = mode == 2 ? constant(X.clone()) : P(X.clone()), wd = P(Wd.clone()), wp = P(Wp.clone());
      Var g = mode == 2 ? constant(G.clone()) : P(G.clone()), b = mode == 2 ? constant(B.clone()) : P(B.clone());
      auto forward = [&] {
        Var h = mode == 2 ? x : dwconv2d(x, wd, 1);
        if (fused) return bn_act_pwconv(h, g, b, bn, training, act, wp);
        Var y = batchnorm(h, g, b, bn, training, act);
        Var p = pwconv(y, wp);
        release_value(y);
        return p;
      };
      if (mode == 1) {
        NoGrad ng;
        *out = {forward()->value.clone(), bn.running_mean.clone(), bn.running_var.clone()};
        return;
      }
      Var p = forward();
      backward(sum(mul(p, p)));
      *out = {p->value.clone(), bn.running_mean.clone(), bn.running_var.clone(), wp->grad.clone()};
      if (mode == 0) {
        out->push_back(x->grad.clone());
        out->push_back(wd->grad.clone());
        out->push_back(g->grad.clone());
        out->push_back(b->grad.clone());
      }
    };
    std::vector<Tensor> want, got;
    run(false, &want);
    run(true, &got);
    REQUIRE(want.size() == got.size());
    for (size_t i = 0; i < want.size(); ++i) {
      INFO("output ", i);
      CHECK(same(want[i], got[i]));
    }
  }
  set_low_memory(true);
  set_pointwise_impl("auto");
  set_isa("auto");
  set_num_threads(2);
}

TEST_CASE("pwconv's weight gradient reads a released batch-norm output through its map, bit-exactly") {
  // dwconv -> batchnorm + act -> pwconv, as in every MBConv block: with the batch-norm output
  // released, pwconv's weight gradient reads the batch-norm input through scale/shift/act instead of
  // recomputing the output. Gradients must equal the kept-output run bit for bit, and the output
  // must stay released (nothing recomputed it). Every ISA table, our GEMMs and OpenBLAS (which
  // materializes the map), 1 and 2 threads; 37 channels leave a masked tail on every ISA.
  set_low_memory(true);
  Rng rng(22);
  const int64_t C = 37, Co = 20;
  Tensor X = random_tensor({3, 6, 7, C}, rng, -2, 2), Wd = random_tensor({3, 3, C}, rng),
         G = random_tensor({C}, rng, 0.5f, 1.5f), B = random_tensor({C}, rng, -0.5f, 0.5f),
         Wp = random_tensor({C, Co}, rng);
  for (const std::string& isa : kernel_tables())
    for (const char* impl : {"own", "blas"})
      for (int threads : {1, 2})
        for (Act act : {Act::ReLU6, Act::ReLU, Act::None}) {
          INFO("isa ", isa, " impl ", std::string(impl), " threads ", threads, " act ", int(act));
          set_isa(isa);
          set_pointwise_impl(impl);
          set_num_threads(threads);
          auto run = [&](bool release, std::vector<Tensor>* grads) {
            BatchNorm bn;
            bn.running_mean = Tensor::zeros({C});
            bn.running_var = Tensor::full({C}, 1.0f);
            Var x = P(X.clone()), wd = P(Wd.clone()), g = P(G.clone()), b = P(B.clone()), wp = P(Wp.clone());
            Var y = batchnorm(dwconv2d(x, wd, 1), g, b, bn, true, act);
            Var p = pwconv(y, wp);
            if (release) release_value(y);
            backward(sum(mul(p, p)));
            CHECK(y->value.defined() == !release);  // released: never recomputed
            *grads = {x->grad.clone(), wd->grad.clone(), g->grad.clone(), b->grad.clone(), wp->grad.clone()};
          };
          std::vector<Tensor> kept, released;
          run(false, &kept);
          run(true, &released);
          for (size_t i = 0; i < kept.size(); ++i) {
            REQUIRE(kept[i].numel() == released[i].numel());
            CHECK(std::memcmp(kept[i].data(), released[i].data(), sizeof(float) * kept[i].numel()) == 0);
          }
        }
  set_pointwise_impl("auto");
  set_isa("auto");
  set_num_threads(2);
}

TEST_CASE("op profile: a row per op and output shape, then per-op totals that add them up") {
  set_op_profile(true);
  Rng rng(24);
  BatchNorm bn;
  bn.running_mean = Tensor::zeros({8});
  bn.running_var = Tensor::full({8}, 1.0f);
  Var wd = P(random_tensor({3, 3, 8}, rng)), g = P(Tensor::full({8}, 1.0f)), b = P(Tensor::zeros({8}));
  Var w1 = P(random_tensor({8, 4}, rng)), w2 = P(random_tensor({8, 6}, rng));
  for (int step = 0; step < 2; ++step) {
    Var x = P(random_tensor({2, 5, 5, 8}, rng));
    Var h = dwconv2d(x, wd, 1);
    Var p1 = bn_act_pwconv(h, g, b, bn, true, Act::ReLU6, w1);  // batchnorm [2,5,5,8], pwconv [2,5,5,4]
    Var p2 = pwconv(dwconv2d(x, wd, 2), w2);                    // pwconv [2,3,3,6]
    backward(add(sum(mul(p1, p1)), sum(p2)));
  }
  const std::string report = op_profile_report(2);
  set_op_profile(false);
  INFO(report);
  // Per-shape rows come first, then "by op"; each op's total is the sum of its rows.
  const size_t by_op = report.find("by op\n");
  REQUIRE(by_op != std::string::npos);
  std::map<std::string, double> row_sum, op_total;
  std::map<std::string, long> op_calls;
  std::istringstream in(report);
  std::string line;
  bool in_ops = false;
  while (std::getline(in, line)) {
    if (line == "by op") {
      in_ops = true;
      continue;
    }
    if (line.rfind("op output-shape", 0) == 0 || line.rfind("total", 0) == 0) continue;
    std::istringstream ls(line);
    std::string op;
    ls >> op;
    if (!in_ops) {
      std::string rest = line.substr(line.find(']') + 1);
      std::istringstream rs(rest);
      long calls;
      double fwd, bwd, rec, tot;
      rs >> calls >> fwd >> bwd >> rec >> tot;
      row_sum[op] += tot;
    } else {
      long calls;
      double fwd, bwd, rec, tot;
      ls >> calls >> fwd >> bwd >> rec >> tot;
      op_total[op] = tot;
      op_calls[op] = calls;
    }
  }
  CHECK(op_calls["pwconv"] == 2);  // two shapes, one call each per step
  CHECK(op_calls["dwconv2d"] == 2);
  CHECK(op_calls["batchnorm"] == 1);
  REQUIRE(op_total.size() == row_sum.size());
  for (auto& kv : op_total) CHECK(kv.second == doctest::Approx(row_sum[kv.first]).epsilon(0.01));
}

TEST_CASE("op profile: inference (NoGrad) ops only when asked for") {
  Rng rng(25);
  BatchNorm bn;
  bn.running_mean = Tensor::zeros({4});
  bn.running_var = Tensor::full({4}, 1.0f);
  Var x = P(random_tensor({1, 4, 4, 8}, rng)), w = P(random_tensor({8, 4}, rng));
  Var g = P(Tensor::full({4}, 1.0f)), b = P(Tensor::zeros({4}));
  for (bool inference : {false, true}) {
    set_op_profile(true, inference);
    {
      NoGrad ng;
      pwconv_bn_act(x, w, g, b, bn, Act::ReLU);
    }
    const std::string report = op_profile_report(1);
    set_op_profile(false);
    CHECK((report.find("pwconv_bn_act [1, 4, 4, 4]") != std::string::npos) == inference);
  }
}
