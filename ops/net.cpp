// Network-level ops: squeeze-and-excitation scale, global average pooling, linear layer, dropout,
// softmax cross-entropy with label smoothing.
#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "engine/threads.h"
#include "ops/ops.h"

namespace spnas {

Var channel_scale(const Var& x, const Var& s) {
  const Tensor& X = x->value;
  check(X.rank() == 4, "channel_scale", "input must be NHWC, got " + shape_str(X.shape()));
  const int64_t N = X.dim(0), HW = X.dim(1) * X.dim(2), C = X.dim(3);
  check_shape("channel_scale", "scale", s->value, {N, C});
  Tensor Y = Tensor::empty(X.shape());
  parallel_for(N, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) {
      const float* sc = s->value.data() + n * C;
      for (int64_t p = 0; p < HW; ++p) {
        const float* xi = X.data() + (n * HW + p) * C;
        float* yi = Y.data() + (n * HW + p) * C;
        for (int64_t c = 0; c < C; ++c) yi[c] = xi[c] * sc[c];
      }
    }
  });
  return record("channel_scale", Y, {x, s}, [N, HW, C](Node& self) {
    const Var& x = self.inputs[0];
    const Var& s = self.inputs[1];
    const float* dy = self.grad.data();
    if (s->requires_grad) {
      Tensor& ds = s->grad_accumulator();
      const float* xv = x->materialize().data();
      for (int64_t n = 0; n < N; ++n)
        for (int64_t p = 0; p < HW; ++p)
          for (int64_t c = 0; c < C; ++c) ds.data()[n * C + c] += dy[(n * HW + p) * C + c] * xv[(n * HW + p) * C + c];
    }
    if (x->requires_grad) {
      bool ow;
      float* dx = x->grad_buffer(&ow);
      parallel_for(N, [&](int64_t b, int64_t e) {
        for (int64_t n = b; n < e; ++n)
          for (int64_t p = 0; p < HW; ++p)
            for (int64_t c = 0; c < C; ++c) {
              int64_t i = (n * HW + p) * C + c;
              float v = dy[i] * s->value.data()[n * C + c];
              dx[i] = ow ? v : dx[i] + v;
            }
      });
    }
  });
}

Var global_avgpool(const Var& x) {
  const Tensor& X = x->value;
  check(X.rank() == 4, "global_avgpool", "input must be NHWC, got " + shape_str(X.shape()));
  const int64_t N = X.dim(0), HW = X.dim(1) * X.dim(2), C = X.dim(3);
  Tensor Y = Tensor::zeros({N, C});
  for (int64_t n = 0; n < N; ++n) {
    float* y = Y.data() + n * C;
    for (int64_t p = 0; p < HW; ++p)
      for (int64_t c = 0; c < C; ++c) y[c] += X.data()[(n * HW + p) * C + c];
    for (int64_t c = 0; c < C; ++c) y[c] /= float(HW);
  }
  return record("global_avgpool", Y, {x}, [N, HW, C](Node& self) {
    bool ow;
    float* dx = self.inputs[0]->grad_buffer(&ow);
    const float inv = 1.0f / float(HW);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t p = 0; p < HW; ++p)
        for (int64_t c = 0; c < C; ++c) {
          float v = self.grad.data()[n * C + c] * inv;
          int64_t i = (n * HW + p) * C + c;
          dx[i] = ow ? v : dx[i] + v;
        }
  });
}

Var linear(const Var& x, const Var& w, const Var& b) {
  const Tensor& X = x->value;
  check(X.rank() == 2, "linear", "input must be [N, Cin], got " + shape_str(X.shape()));
  const int64_t N = X.dim(0), Cin = X.dim(1);
  check(w->value.rank() == 2 && w->value.dim(0) == Cin, "linear",
        "weights must be [Cin, Cout] with Cin = " + std::to_string(Cin) + ", got " + shape_str(w->value.shape()));
  const int64_t Cout = w->value.dim(1);
  check_shape("linear", "bias", b->value, {Cout});
  Tensor Y = Tensor::empty({N, Cout});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < Cout; ++o) Y.data()[n * Cout + o] = b->value.data()[o];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(N), int(Cout), int(Cin), 1.0f, X.data(), int(Cin),
              w->value.data(), int(Cout), 1.0f, Y.data(), int(Cout));
  return record("linear", Y, {x, w, b}, [N, Cin, Cout](Node& self) {
    const Var& x = self.inputs[0];
    const Var& w = self.inputs[1];
    const Var& b = self.inputs[2];
    const float* dy = self.grad.data();
    bool ow;
    if (x->requires_grad) {
      float* dx = x->grad_buffer(&ow);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(Cin), int(Cout), 1.0f, dy, int(Cout),
                  w->value.data(), int(Cout), ow ? 0.0f : 1.0f, dx, int(Cin));
    }
    if (w->requires_grad) {
      float* dw = w->grad_buffer(&ow);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(Cin), int(Cout), int(N), 1.0f, x->value.data(),
                  int(Cin), dy, int(Cout), ow ? 0.0f : 1.0f, dw, int(Cout));
    }
    if (b->requires_grad) {
      Tensor& db = b->grad_accumulator();
      for (int64_t n = 0; n < N; ++n)
        for (int64_t o = 0; o < Cout; ++o) db.data()[o] += dy[n * Cout + o];
    }
  });
}

Var dropout(const Var& x, float p, Rng& rng, bool training) {
  check(p >= 0 && p < 1, "dropout", "probability must be in [0, 1), got " + std::to_string(p));
  if (!training || p == 0) return x;
  Tensor m = Tensor::empty(x->value.shape());
  const float keep = 1.0f / (1.0f - p);
  for (int64_t i = 0; i < m.numel(); ++i) m.data()[i] = rng.uniform() < p ? 0.0f : keep;
  return mask(x, m);
}

Var softmax_cross_entropy(const Var& logits, const std::vector<int>& labels, float smoothing) {
  const Tensor& L = logits->value;
  check(L.rank() == 2, "softmax_cross_entropy", "logits must be [N, K], got " + shape_str(L.shape()));
  const int64_t N = L.dim(0), K = L.dim(1);
  check(int64_t(labels.size()) == N, "softmax_cross_entropy",
        std::to_string(labels.size()) + " labels for logits " + shape_str(L.shape()));
  check(smoothing >= 0 && smoothing < 1, "softmax_cross_entropy", "label smoothing must be in [0, 1)");
  Tensor prob = Tensor::empty({N, K});
  double loss = 0;
  for (int64_t n = 0; n < N; ++n) {
    int y = labels[n];
    check(y >= 0 && y < K, "softmax_cross_entropy",
          "label " + std::to_string(y) + " of sample " + std::to_string(n) + " is outside [0, " + std::to_string(K) + ")");
    const float* l = L.data() + n * K;
    float mx = *std::max_element(l, l + K);
    double z = 0;
    for (int64_t k = 0; k < K; ++k) z += std::exp(double(l[k] - mx));
    double logz = mx + std::log(z);
    for (int64_t k = 0; k < K; ++k) {
      double logp = l[k] - logz;
      prob.data()[n * K + k] = float(std::exp(logp));
      double target = (k == y ? 1.0 - smoothing : 0.0) + smoothing / K;
      loss -= target * logp;
    }
  }
  if (!std::isfinite(loss)) fail("softmax_cross_entropy", "loss is not finite (NaN or infinite logits)");
  return record("softmax_cross_entropy", Tensor::scalar(float(loss / N)), {logits},
                [prob, labels, smoothing, N, K](Node& self) {
                  bool ow;
                  float* d = self.inputs[0]->grad_buffer(&ow);
                  const float g = self.grad.data()[0] / float(N);
                  for (int64_t n = 0; n < N; ++n)
                    for (int64_t k = 0; k < K; ++k) {
                      float target = (k == labels[n] ? 1.0f - smoothing : 0.0f) + smoothing / K;
                      float v = g * (prob.data()[n * K + k] - target);
                      d[n * K + k] = ow ? v : d[n * K + k] + v;
                    }
                });
}

}  // namespace spnas
