// Batch normalization (with an optional fused activation) and standalone activations.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/dist.h"
#include "engine/threads.h"
#include "ops/ops.h"

namespace spnas {

static void check_bn_params(const char* op, const Var& gamma, const Var& beta, const BatchNorm& bn, int64_t C) {
  check_shape(op, "gamma", gamma->value, {C});
  check_shape(op, "beta", beta->value, {C});
  check_shape(op, "running_mean", bn.running_mean, {C});
  check_shape(op, "running_var", bn.running_var, {C});
}

// Evaluation mode's 1 / sqrt(running_var + eps).
static void running_invstd(const BatchNorm& bn, float* invstd) {
  for (int64_t c = 0; c < bn.running_var.numel(); ++c) invstd[c] = 1.0f / std::sqrt(bn.running_var.data()[c] + bn.eps);
}

// scale = gamma * invstd, shift = beta - mean * scale: y = x * scale + shift.
static void scale_shift_into(const Var& gamma, const Var& beta, const float* mean, const float* invstd, int64_t C,
                             float* scale, float* shift) {
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = gamma->value.data()[c] * invstd[c];
    shift[c] = beta->value.data()[c] - mean[c] * scale[c];
  }
}

static void scale_shift(const Var& gamma, const Var& beta, const float* mean, const float* invstd, int64_t C,
                        Tensor* scale, Tensor* shift) {
  *scale = Tensor::empty({C});
  *shift = Tensor::empty({C});
  scale_shift_into(gamma, beta, mean, invstd, C, scale->data(), shift->data());
}

static BatchNormStats g_stats;

void set_batchnorm_stats(const BatchNormStats& s) {
  check(s.groups >= 1, "batchnorm", "the number of statistics groups must be >= 1, got " + std::to_string(s.groups));
  check(!(s.sync && s.groups > 1), "batchnorm",
        "statistics over the global batch (--sync-bn) and over groups of it (--bn-groups) exclude each other");
  g_stats = s;
}
const BatchNormStats& batchnorm_stats() { return g_stats; }

// --sync-bn, forward: this rank's mean and (biased) variance over M rows become those of every
// rank's rows, from the sums of M, M * mean and M * (var + mean^2) (in double: the difference of two
// large sums loses less). Returns the global row count.
static int64_t global_statistics(int64_t M, int64_t C, float* mean, float* var) {
  std::vector<double> s(size_t(1 + 2 * C));
  s[0] = double(M);
  for (int64_t c = 0; c < C; ++c) {
    s[size_t(1 + c)] = double(M) * mean[c];
    s[size_t(1 + C + c)] = double(M) * (double(var[c]) + double(mean[c]) * mean[c]);
  }
  Communicator& w = world();
  w.sum(s.data(), s.size(), "batch-norm statistics (--sync-bn)");
  const double total = s[0];
  // The backward rule's formula assumes every rank holds the same number of rows (the batch splits evenly).
  check(total == double(M) * w.size(), "batchnorm", "--sync-bn: the ranks' batch shares differ");
  for (int64_t c = 0; c < C; ++c) {
    const double mu = s[size_t(1 + c)] / total;
    mean[c] = float(mu);
    var[c] = float(std::max(s[size_t(1 + C + c)] / total - mu * mu, 0.0));
  }
  return int64_t(total);
}

// Ghost batch norm (BatchNormStats::groups > 1, training): every group normalised with its own
// statistics and scale/shift; no channel_affine, as one per-channel map does not describe the output.
static Var grouped_batchnorm(const Var& x, const Var& gamma, const Var& beta, BatchNorm& bn, Act act, int G) {
  const Tensor& X = x->value;
  const int64_t C = X.dim(-1), M = X.numel() / C, B = X.dim(0);
  check(B % G == 0, "batchnorm", "--bn-groups " + std::to_string(G) + " does not divide the batch of " + std::to_string(B));
  const int64_t Mg = M / G;
  check(Mg > 1, "batchnorm", "training mode needs more than one value per channel in each group, got " +
                                 shape_str(X.shape()) + " in " + std::to_string(G) + " groups");
  const KernelTable& K = kernels();
  const BnDesc d{Mg, C, act};
  Tensor mean = Tensor::empty({G, C}), invstd = Tensor::empty({G, C}), scale = Tensor::empty({G, C}),
         shift = Tensor::empty({G, C}), var = Tensor::empty({C});
  std::vector<float> mean_of_means(size_t(C), 0.0f), mean_of_vars(size_t(C), 0.0f);
  const float unbias = float(Mg) / float(Mg - 1);
  for (int64_t g = 0; g < G; ++g) {
    float* mu = mean.data() + g * C;
    float* is = invstd.data() + g * C;
    K.bn_stats(d, X.data() + g * Mg * C, mu, var.data());
    for (int64_t c = 0; c < C; ++c) {
      is[c] = 1.0f / std::sqrt(var.data()[c] + bn.eps);
      mean_of_means[size_t(c)] += mu[c] / float(G);
      mean_of_vars[size_t(c)] += var.data()[c] * unbias / float(G);
    }
    scale_shift_into(gamma, beta, mu, is, C, scale.data() + g * C, shift.data() + g * C);
  }
  for (int64_t c = 0; c < C; ++c) {
    bn.running_mean.data()[c] = bn.momentum * bn.running_mean.data()[c] + (1 - bn.momentum) * mean_of_means[size_t(c)];
    bn.running_var.data()[c] = bn.momentum * bn.running_var.data()[c] + (1 - bn.momentum) * mean_of_vars[size_t(c)];
  }
  auto forward = [d, G, scale, shift](const Tensor& in) {
    Tensor out = Tensor::empty(in.shape());
    const int64_t rows = d.M * d.C;
    for (int64_t g = 0; g < G; ++g)
      kernels().bn_act_forward(d, in.data() + g * rows, scale.data() + g * d.C, shift.data() + g * d.C,
                               out.data() + g * rows);
    return out;
  };
  Var y = record("batchnorm", forward(X), {x, gamma, beta}, [d, G, mean, invstd, scale, shift](Node& self) {
    const Var& x = self.inputs[0];
    const Var& gamma = self.inputs[1];
    const Var& beta = self.inputs[2];
    const KernelTable& K = kernels();
    const float* xv = x->materialize().data();
    const int64_t rows = d.M * d.C;
    Tensor dgamma = Tensor::empty({d.C}), dbeta = Tensor::empty({d.C});
    bool ow = true;
    float* dx = x->requires_grad ? x->grad_buffer(&ow) : nullptr;
    float* gg = gamma->requires_grad ? gamma->grad_accumulator().data() : nullptr;
    float* gb = beta->requires_grad ? beta->grad_accumulator().data() : nullptr;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t o = g * rows, oc = g * d.C;
      K.bn_act_backward_reduce(d, xv + o, scale.data() + oc, shift.data() + oc, self.grad.data() + o, mean.data() + oc,
                               invstd.data() + oc, dgamma.data(), dbeta.data());
      if (dx)
        K.bn_act_backward_data(d, xv + o, scale.data() + oc, shift.data() + oc, self.grad.data() + o, mean.data() + oc,
                               invstd.data() + oc, gamma->value.data(), dgamma.data(), dbeta.data(), true, dx + o, !ow);
      for (int64_t c = 0; c < d.C; ++c) {
        if (gg) gg[c] += dgamma.data()[c];
        if (gb) gb[c] += dbeta.data()[c];
      }
    }
  });
  if (y->requires_grad) {
    Node* self = y.get();
    y->recompute = [self, forward]() { return forward(self->inputs[0]->materialize()); };
  }
  return y;
}

void batchnorm_fold(const char* op, const Var& gamma, const Var& beta, const BatchNorm& bn, int64_t C, Tensor* scale,
                    Tensor* shift) {
  check_bn_params(op, gamma, beta, bn, C);
  Tensor invstd = Tensor::empty({C});
  running_invstd(bn, invstd.data());
  scale_shift(gamma, beta, bn.running_mean.data(), invstd.data(), C, scale, shift);
}

// batchnorm, or with `computed` false its node without the value (batchnorm_unmaterialized).
static Var batchnorm_node(const Var& x, const Var& gamma, const Var& beta, BatchNorm& bn, bool training, Act act,
                          bool computed) {
  const Tensor& X = x->value;
  check(X.rank() >= 2, "batchnorm", "input needs a channel axis, got " + shape_str(X.shape()));
  const int64_t C = X.dim(-1), M = X.numel() / C;
  check_bn_params("batchnorm", gamma, beta, bn, C);
  if (training && g_stats.groups > 1) {
    check(computed, "batchnorm", "ghost batch norm (--bn-groups) has no per-channel map to read through");
    return grouped_batchnorm(x, gamma, beta, bn, act, g_stats.groups);
  }
  const bool sync = training && g_stats.sync && world().size() > 1;
  const KernelTable& K = kernels();
  BnDesc d{M, C, act};

  Tensor mean = Tensor::empty({C}), invstd = Tensor::empty({C});
  if (training) {
    check(M > 1, "batchnorm", "training mode needs more than one value per channel, got " + shape_str(X.shape()));
    Tensor var = Tensor::empty({C});
    K.bn_stats(d, X.data(), mean.data(), var.data());
    const int64_t rows = sync ? global_statistics(M, C, mean.data(), var.data()) : M;
    const float unbias = float(rows) / float(rows - 1);
    for (int64_t c = 0; c < C; ++c) {
      invstd.data()[c] = 1.0f / std::sqrt(var.data()[c] + bn.eps);
      bn.running_mean.data()[c] = bn.momentum * bn.running_mean.data()[c] + (1 - bn.momentum) * mean.data()[c];
      bn.running_var.data()[c] = bn.momentum * bn.running_var.data()[c] + (1 - bn.momentum) * var.data()[c] * unbias;
    }
  } else {
    mean.copy_from(bn.running_mean);
    running_invstd(bn, invstd.data());
  }
  Tensor scale, shift;
  scale_shift(gamma, beta, mean.data(), invstd.data(), C, &scale, &shift);
  Tensor Y;
  if (computed) {
    Y = Tensor::empty(X.shape());
    K.bn_act_forward(d, X.data(), scale.data(), shift.data(), Y.data());
  }

  // Backward needs x, the scale/shift (the activation's mask is recomputed from x) and the
  // statistics, never y: a released output is not recomputed for this node's own rule.
  auto rule = [d, mean, invstd, scale, shift, training, sync](Node& self) {
    const Var& x = self.inputs[0];
    const Var& gamma = self.inputs[1];
    const Var& beta = self.inputs[2];
    const KernelTable& K = kernels();
    const float* xv = x->materialize().data();
    Tensor dgamma = Tensor::empty({d.C}), dbeta = Tensor::empty({d.C});
    K.bn_act_backward_reduce(d, xv, scale.data(), shift.data(), self.grad.data(), mean.data(), invstd.data(),
                             dgamma.data(), dbeta.data());
    if (x->requires_grad) {
      bool ow;
      float* dx = x->grad_buffer(&ow);
      // --sync-bn: every row's gradient depends on the reductions over the global batch. With equal
      // shares, dx from this rank's M rows and the ranks' mean reductions is the global formula
      // (times the rank count, which the gradient average divides out again).
      const float* dg = dgamma.data();
      const float* db = dbeta.data();
      Tensor mean_sums;
      if (sync) {
        mean_sums = Tensor::empty({2 * d.C});
        std::copy(dg, dg + d.C, mean_sums.data());
        std::copy(db, db + d.C, mean_sums.data() + d.C);
        Communicator& w = world();
        w.sum(mean_sums.data(), size_t(2 * d.C), "batch-norm gradient sums (--sync-bn)");
        for (int64_t i = 0; i < 2 * d.C; ++i) mean_sums.data()[i] /= float(w.size());
        dg = mean_sums.data();
        db = mean_sums.data() + d.C;
      }
      K.bn_act_backward_data(d, xv, scale.data(), shift.data(), self.grad.data(), mean.data(), invstd.data(),
                             gamma->value.data(), dg, db, training, dx, !ow);
    }
    if (gamma->requires_grad) {
      float* g = gamma->grad_accumulator().data();
      for (int64_t c = 0; c < d.C; ++c) g[c] += dgamma.data()[c];
    }
    if (beta->requires_grad) {
      float* g = beta->grad_accumulator().data();
      for (int64_t c = 0; c < d.C; ++c) g[c] += dbeta.data()[c];
    }
  };
  Var y = computed ? record("batchnorm", Y, {x, gamma, beta}, rule)
                   : record_released("batchnorm", X.shape(), {x, gamma, beta}, rule);
  y->channel_affine = std::make_shared<const ChannelAffine>(ChannelAffine{scale, shift, d.act});
  if (y->requires_grad) {
    // The output is act(x * scale + shift): cheap to redo, so callers may release it (release_value)
    // and the backward rules that need it recompute it, bit for bit, with the same kernel.
    Node* self = y.get();
    y->recompute = [self, d, scale, shift]() {
      const Tensor& X = self->inputs[0]->materialize();
      Tensor out = Tensor::empty(X.shape());
      kernels().bn_act_forward(d, X.data(), scale.data(), shift.data(), out.data());
      return out;
    };
  }
  return y;
}

Var batchnorm(const Var& x, const Var& gamma, const Var& beta, BatchNorm& bn, bool training, Act act) {
  return batchnorm_node(x, gamma, beta, bn, training, act, true);
}

Var batchnorm_unmaterialized(const Var& x, const Var& gamma, const Var& beta, BatchNorm& bn, bool training,
                             Act act) {
  return batchnorm_node(x, gamma, beta, bn, training, act, false);
}

// Elementwise unary op: y = f(x), dx += dy * df(x, y).
template <class F, class DF>
static Var unary(const char* op, const Var& x, F f, DF df) {
  const Tensor& X = x->value;
  Tensor Y = Tensor::empty(X.shape());
  const float* xp = X.data();
  float* yp = Y.data();
  parallel_for(X.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) yp[i] = f(xp[i]);
  }, 1 << 14);
  return record(op, Y, {x}, [df](Node& self) {
    const Var& x = self.inputs[0];
    bool ow;
    float* dx = x->grad_buffer(&ow);
    const float* xp = x->materialize().data();
    const float* yp = self.value.data();
    const float* dy = self.grad.data();
    parallel_for(x->value.numel(), [&](int64_t b, int64_t e) {
      if (ow)
        for (int64_t i = b; i < e; ++i) dx[i] = dy[i] * df(xp[i], yp[i]);
      else
        for (int64_t i = b; i < e; ++i) dx[i] += dy[i] * df(xp[i], yp[i]);
    }, 1 << 14);
  });
}

Var relu(const Var& x) {
  return unary("relu", x, [](float v) { return v > 0 ? v : 0.0f; }, [](float v, float) { return v > 0 ? 1.0f : 0.0f; });
}
Var maximum0(const Var& x) { return relu(x); }

Var relu6(const Var& x) {
  return unary("relu6", x, [](float v) { return v > 0 ? (v < 6 ? v : 6.0f) : 0.0f; },
               [](float v, float) { return (v > 0 && v < 6) ? 1.0f : 0.0f; });
}

Var sigmoid(const Var& x) {
  return unary("sigmoid", x, [](float v) { return 1.0f / (1.0f + std::exp(-v)); },
               [](float, float y) { return y * (1.0f - y); });
}

Var hswish(const Var& x) {
  return unary("hswish", x,
               [](float v) {
                 float r = v + 3;
                 r = r > 0 ? (r < 6 ? r : 6.0f) : 0.0f;
                 return v * r / 6.0f;
               },
               [](float v, float) { return v <= -3 ? 0.0f : v >= 3 ? 1.0f : (2 * v + 3) / 6.0f; });
}

Var log(const Var& x) {
  for (int64_t i = 0; i < x->value.numel(); ++i)
    check(x->value.data()[i] > 0, "log", "argument must be positive, element " + std::to_string(i) + " is " +
                                             std::to_string(x->value.data()[i]));
  return unary("log", x, [](float v) { return std::log(v); }, [](float v, float) { return 1.0f / v; });
}

// Forward: the Heaviside step (1 at x = 0). Backward: straight-through with the sigmoid's derivative.
Var step_indicator(const Var& x) {
  return unary("step_indicator", x, [](float v) { return v >= 0 ? 1.0f : 0.0f; },
               [](float v, float) {
                 // sigma'(v) = e^-|v| / (1 + e^-|v|)^2: no cancellation in 1 - sigma for large |v|.
                 float e = std::exp(-std::fabs(v));
                 return e / ((1.0f + e) * (1.0f + e));
               });
}

}  // namespace spnas
