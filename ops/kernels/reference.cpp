// Scalar reference kernels: the clearest possible loops, used as the oracle in tests and as the
// fallback on CPUs without AVX2. Single-threaded on purpose.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/tensor.h"
#include "ops/kernels.h"

namespace spnas {

DwConvDesc dwconv_desc(int64_t N, int64_t H, int64_t W, int64_t C, int K, int S) {
  check(K >= 1 && S >= 1, "dwconv", "kernel size and stride must be positive");
  DwConvDesc d;
  d.N = N, d.H = H, d.W = W, d.C = C, d.K = K, d.S = S;
  d.OH = (H + S - 1) / S;
  d.OW = (W + S - 1) / S;
  d.pad_t = int(std::max<int64_t>((d.OH - 1) * S + K - H, 0) / 2);
  d.pad_l = int(std::max<int64_t>((d.OW - 1) * S + K - W, 0) / 2);
  return d;
}

void dwconv_forward_ref(const DwConvDesc& d, const float* x, const float* w, float* y) {
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t oh = 0; oh < d.OH; ++oh)
      for (int64_t ow = 0; ow < d.OW; ++ow)
        for (int64_t c = 0; c < d.C; ++c) {
          float acc = 0;
          for (int kh = 0; kh < d.K; ++kh) {
            int64_t ih = oh * d.S - d.pad_t + kh;
            if (ih < 0 || ih >= d.H) continue;
            for (int kw = 0; kw < d.K; ++kw) {
              int64_t iw = ow * d.S - d.pad_l + kw;
              if (iw < 0 || iw >= d.W) continue;
              acc += x[((n * d.H + ih) * d.W + iw) * d.C + c] * w[(kh * d.K + kw) * d.C + c];
            }
          }
          y[((n * d.OH + oh) * d.OW + ow) * d.C + c] = acc;
        }
}

void dwconv_backward_data_ref(const DwConvDesc& d, const float* dy, const float* w, float* dx, bool accumulate) {
  if (!accumulate) std::fill(dx, dx + d.in_elems(), 0.0f);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t oh = 0; oh < d.OH; ++oh)
      for (int64_t ow = 0; ow < d.OW; ++ow)
        for (int kh = 0; kh < d.K; ++kh) {
          int64_t ih = oh * d.S - d.pad_t + kh;
          if (ih < 0 || ih >= d.H) continue;
          for (int kw = 0; kw < d.K; ++kw) {
            int64_t iw = ow * d.S - d.pad_l + kw;
            if (iw < 0 || iw >= d.W) continue;
            for (int64_t c = 0; c < d.C; ++c)
              dx[((n * d.H + ih) * d.W + iw) * d.C + c] +=
                  dy[((n * d.OH + oh) * d.OW + ow) * d.C + c] * w[(kh * d.K + kw) * d.C + c];
          }
        }
}

void dwconv_backward_weights_ref(const DwConvDesc& d, const float* x, const float* dy, float* dw, bool accumulate) {
  // Accumulate in double so the oracle is more accurate than the kernels it checks.
  std::vector<double> acc(size_t(d.K) * d.K * d.C, 0.0);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t oh = 0; oh < d.OH; ++oh)
      for (int64_t ow = 0; ow < d.OW; ++ow)
        for (int kh = 0; kh < d.K; ++kh) {
          int64_t ih = oh * d.S - d.pad_t + kh;
          if (ih < 0 || ih >= d.H) continue;
          for (int kw = 0; kw < d.K; ++kw) {
            int64_t iw = ow * d.S - d.pad_l + kw;
            if (iw < 0 || iw >= d.W) continue;
            for (int64_t c = 0; c < d.C; ++c)
              acc[(kh * d.K + kw) * d.C + c] += double(x[((n * d.H + ih) * d.W + iw) * d.C + c]) *
                                               dy[((n * d.OH + oh) * d.OW + ow) * d.C + c];
          }
        }
  for (size_t i = 0; i < acc.size(); ++i) dw[i] = float(accumulate ? dw[i] + acc[i] : acc[i]);
}

static inline float act_forward(Act a, float v) {
  switch (a) {
    case Act::ReLU: return v > 0 ? v : 0;
    case Act::ReLU6: return v > 0 ? (v < 6 ? v : 6) : 0;
    default: return v;
  }
}

// d act / d pre-activation v (0 where clipped). v is recomputed exactly as the forward computed it.
static inline float act_grad_from_pre(Act a, float v) {
  switch (a) {
    case Act::ReLU: return v > 0 ? 1.0f : 0.0f;
    case Act::ReLU6: return (v > 0 && v < 6) ? 1.0f : 0.0f;
    default: return 1.0f;
  }
}

void bn_stats_ref(const BnDesc& d, const float* x, float* mean, float* var) {
  std::vector<double> s(d.C, 0.0), ss(d.C, 0.0);
  for (int64_t m = 0; m < d.M; ++m)
    for (int64_t c = 0; c < d.C; ++c) {
      double v = x[m * d.C + c];
      s[c] += v;
      ss[c] += v * v;
    }
  for (int64_t c = 0; c < d.C; ++c) {
    double mu = d.M ? s[c] / d.M : 0.0;
    mean[c] = float(mu);
    var[c] = float(d.M ? std::max(ss[c] / d.M - mu * mu, 0.0) : 0.0);
  }
}

void bn_act_forward_ref(const BnDesc& d, const float* x, const float* scale, const float* shift, float* y) {
  for (int64_t m = 0; m < d.M; ++m)
    for (int64_t c = 0; c < d.C; ++c) y[m * d.C + c] = act_forward(d.act, x[m * d.C + c] * scale[c] + shift[c]);
}

void bn_act_backward_reduce_ref(const BnDesc& d, const float* x, const float* scale, const float* shift,
                                const float* dy, const float* mean, const float* invstd, float* dgamma, float* dbeta) {
  std::vector<double> gb(d.C, 0.0), gg(d.C, 0.0);
  for (int64_t m = 0; m < d.M; ++m)
    for (int64_t c = 0; c < d.C; ++c) {
      int64_t i = m * d.C + c;
      double g = dy[i] * act_grad_from_pre(d.act, x[i] * scale[c] + shift[c]);
      gb[c] += g;
      gg[c] += g * (x[i] - mean[c]) * invstd[c];
    }
  for (int64_t c = 0; c < d.C; ++c) {
    dbeta[c] = float(gb[c]);
    dgamma[c] = float(gg[c]);
  }
}

void bn_act_backward_data_ref(const BnDesc& d, const float* x, const float* scale, const float* shift, const float* dy,
                              const float* mean, const float* invstd, const float* gamma, const float* dgamma,
                              const float* dbeta, bool training, float* dx, bool accumulate) {
  for (int64_t m = 0; m < d.M; ++m)
    for (int64_t c = 0; c < d.C; ++c) {
      int64_t i = m * d.C + c;
      float g = dy[i] * act_grad_from_pre(d.act, x[i] * scale[c] + shift[c]);
      float v;
      if (training) {
        float xhat = (x[i] - mean[c]) * invstd[c];
        v = gamma[c] * invstd[c] / float(d.M) * (float(d.M) * g - dbeta[c] - xhat * dgamma[c]);
      } else {
        v = g * gamma[c] * invstd[c];
      }
      dx[i] = accumulate ? dx[i] + v : v;
    }
}

}  // namespace spnas
