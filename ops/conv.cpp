// Convolution ops: dense (stem), depthwise, pointwise. Forward + hand-written backward.
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>

#include "engine/threads.h"
#include "ops/ops.h"

namespace spnas {

static void check_nhwc(const char* op, const Tensor& x) {
  check(x.rank() == 4, op, "input must be NHWC [N, H, W, C], got " + shape_str(x.shape()));
}

// ---------------------------------------------------------------------------------------------
// Dense convolution via im2col + GEMM. Columns: [N*OH*OW, KH*KW*Cin], weights [KH*KW*Cin, Cout].
struct ConvGeom {
  int64_t N, H, W, Cin, Cout, OH, OW;
  int KH, KW, S, pad_t, pad_l;
  int64_t rows() const { return N * OH * OW; }
  int64_t cols() const { return int64_t(KH) * KW * Cin; }
};

static void im2col(const ConvGeom& g, const float* x, float* col) {
  parallel_for(g.rows(), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      int64_t ow = r % g.OW, oh = (r / g.OW) % g.OH, n = r / (g.OW * g.OH);
      float* dst = col + r * g.cols();
      for (int kh = 0; kh < g.KH; ++kh) {
        int64_t ih = oh * g.S - g.pad_t + kh;
        for (int kw = 0; kw < g.KW; ++kw, dst += g.Cin) {
          int64_t iw = ow * g.S - g.pad_l + kw;
          if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W)
            std::memset(dst, 0, sizeof(float) * g.Cin);
          else
            std::memcpy(dst, x + ((n * g.H + ih) * g.W + iw) * g.Cin, sizeof(float) * g.Cin);
        }
      }
    }
  }, 64);
}

// Adds columns back into the image (the adjoint of im2col). Parallel over images so writes never race.
static void col2im_add(const ConvGeom& g, const float* col, float* dx) {
  parallel_for(g.N, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const float* src = col + ((n * g.OH + oh) * g.OW + ow) * g.cols();
          for (int kh = 0; kh < g.KH; ++kh) {
            int64_t ih = oh * g.S - g.pad_t + kh;
            for (int kw = 0; kw < g.KW; ++kw, src += g.Cin) {
              int64_t iw = ow * g.S - g.pad_l + kw;
              if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
              float* d = dx + ((n * g.H + ih) * g.W + iw) * g.Cin;
              for (int64_t c = 0; c < g.Cin; ++c) d[c] += src[c];
            }
          }
        }
  });
}

static Var conv2d_impl(const char* op, const Var& x, const Var& w, int stride, int pad_t, int pad_l, int64_t OH,
                       int64_t OW) {
  const Tensor& X = x->value;
  const Tensor& Wt = w->value;
  check_nhwc(op, X);
  check(Wt.rank() == 4 && Wt.dim(2) == X.dim(3), op,
        "weights must be [KH, KW, Cin, Cout] with Cin = " + std::to_string(X.dim(3)) + ", got " + shape_str(Wt.shape()) +
            " for input " + shape_str(X.shape()));
  check(stride >= 1 && OH > 0 && OW > 0, op, "empty output for input " + shape_str(X.shape()));
  ConvGeom g{X.dim(0), X.dim(1), X.dim(2), X.dim(3), Wt.dim(3), OH, OW, int(Wt.dim(0)), int(Wt.dim(1)),
             stride, pad_t, pad_l};
  Tensor col = Tensor::empty({g.rows(), g.cols()});
  im2col(g, X.data(), col.data());
  Tensor Y = Tensor::empty({g.N, OH, OW, g.Cout});
  // The column matrix is exactly a pointwise input with cols() channels.
  pointwise_forward(g.rows(), g.cols(), g.Cout, col.data(), Wt.data(), Y.data());
  return record(op, Y, {x, w}, [g, col](Node& self) {
    const Var& x = self.inputs[0];
    const Var& w = self.inputs[1];
    const float* dy = self.grad.data();
    if (w->requires_grad) {
      bool ow;
      float* dw = w->grad_buffer(&ow);
      pointwise_backward_weights(g.rows(), g.cols(), g.Cout, col.data(), dy, dw, !ow);
    }
    if (x->requires_grad) {
      Tensor dcol = Tensor::empty({g.rows(), g.cols()});
      pointwise_backward_data(g.rows(), g.cols(), g.Cout, dy, w->value.data(), dcol.data(), false);
      col2im_add(g, dcol.data(), x->grad_accumulator().data());
    }
  });
}

Var conv2d(const Var& x, const Var& w, int stride, int pad) {
  check_nhwc("conv2d", x->value);
  check(w->value.rank() == 4, "conv2d", "weights must be [KH, KW, Cin, Cout], got " + shape_str(w->value.shape()));
  int64_t OH = (x->value.dim(1) + 2 * pad - w->value.dim(0)) / stride + 1;
  int64_t OW = (x->value.dim(2) + 2 * pad - w->value.dim(1)) / stride + 1;
  return conv2d_impl("conv2d", x, w, stride, pad, pad, OH, OW);
}

Var conv2d_same(const Var& x, const Var& w, int stride) {
  check_nhwc("conv2d_same", x->value);
  check(w->value.rank() == 4, "conv2d_same",
        "weights must be [KH, KW, Cin, Cout], got " + shape_str(w->value.shape()));
  int64_t H = x->value.dim(1), W = x->value.dim(2);
  int64_t OH = (H + stride - 1) / stride, OW = (W + stride - 1) / stride;
  int pad_t = int(std::max<int64_t>((OH - 1) * stride + w->value.dim(0) - H, 0) / 2);
  int pad_l = int(std::max<int64_t>((OW - 1) * stride + w->value.dim(1) - W, 0) / 2);
  return conv2d_impl("conv2d_same", x, w, stride, pad_t, pad_l, OH, OW);
}

// ---------------------------------------------------------------------------------------------
// Checks a depthwise convolution's input, weights [K, K, C] and stride; returns its descriptor.
static DwConvDesc dw_args(const char* op, const Tensor& X, const Tensor& Wt, int stride) {
  check_nhwc(op, X);
  check(Wt.rank() == 3 && Wt.dim(0) == Wt.dim(1) && Wt.dim(2) == X.dim(3), op,
        "weights must be [K, K, C] with C = " + std::to_string(X.dim(3)) + ", got " + shape_str(Wt.shape()) +
            " for input " + shape_str(X.shape()));
  check(stride == 1 || stride == 2, op, "stride must be 1 or 2, got " + std::to_string(stride));
  return dwconv_desc(X.dim(0), X.dim(1), X.dim(2), X.dim(3), int(Wt.dim(0)), stride);
}

// Checks a pointwise convolution's input and weights [Cin, Cout].
static void pw_args(const char* op, const Tensor& X, const Tensor& Wt) {
  check_nhwc(op, X);
  check(Wt.rank() == 2 && Wt.dim(0) == X.dim(3), op,
        "weights must be [Cin, Cout] with Cin = " + std::to_string(X.dim(3)) + ", got " + shape_str(Wt.shape()) +
            " for input " + shape_str(X.shape()));
}

Var dwconv2d(const Var& x, const Var& w, int stride) {
  const Tensor& X = x->value;
  const Tensor& Wt = w->value;
  DwConvDesc d = dw_args("dwconv2d", X, Wt, stride);
  Tensor Y = Tensor::empty({d.N, d.OH, d.OW, d.C});
  kernels().dwconv_forward(d, X.data(), Wt.data(), Y.data());
  return record("dwconv2d", Y, {x, w}, [d](Node& self) {
    const Var& x = self.inputs[0];
    const Var& w = self.inputs[1];
    bool ow;
    if (w->requires_grad) {
      float* dw = w->grad_buffer(&ow);
      kernels().dwconv_backward_weights(d, x->materialize().data(), self.grad.data(), dw, !ow);
    }
    if (x->requires_grad) {
      float* dx = x->grad_buffer(&ow);
      kernels().dwconv_backward_data(d, self.grad.data(), w->value.data(), dx, !ow);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Subsamples every `stride`-th row and column (the input a strided 1x1 convolution actually reads).
static Tensor subsample(const Tensor& X, int stride) {
  int64_t N = X.dim(0), H = X.dim(1), W = X.dim(2), C = X.dim(3);
  int64_t OH = (H + stride - 1) / stride, OW = (W + stride - 1) / stride;
  Tensor Y = Tensor::empty({N, OH, OW, C});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        std::memcpy(Y.data() + ((n * OH + oh) * OW + ow) * C, X.data() + ((n * H + oh * stride) * W + ow * stride) * C,
                    sizeof(float) * C);
  return Y;
}

// pwconv, or with x_src (stride 1 only) the product of x's value read as act(x_src * scale + shift)
// through x's channel_affine, x's value never computed (bn_act_pwconv).
static Var pwconv_node(const Var& x, const Var& w, int stride, const Tensor* x_src) {
  const Tensor& Xfull = x_src ? *x_src : x->value;
  const Tensor& Wt = w->value;
  pw_args("pwconv", Xfull, Wt);
  check(stride >= 1, "pwconv", "stride must be positive");
  Tensor X = stride == 1 ? Xfull : subsample(Xfull, stride);
  int64_t M = X.dim(0) * X.dim(1) * X.dim(2), Cin = Wt.dim(0), Cout = Wt.dim(1);
  Tensor Y = Tensor::empty({X.dim(0), X.dim(1), X.dim(2), Cout});
  if (x_src) {
    const ChannelAffine& a = *x->channel_affine;
    const ColumnMap map{a.scale.data(), a.shift.data(), a.act};
    pointwise_forward(M, Cin, Cout, X.data(), Wt.data(), Y.data(), &map);
  } else {
    pointwise_forward(M, Cin, Cout, X.data(), Wt.data(), Y.data());
  }
  // Stride 1 reads the input through the node (it may have been released and be recomputed);
  // a strided 1x1 keeps its subsampled copy.
  Tensor Xsub = stride == 1 ? Tensor() : X;
  Shape xshape = X.shape();
  return record("pwconv", Y, {x, w}, [Xsub, xshape, M, Cin, Cout, stride](Node& self) {
    const Var& x = self.inputs[0];
    const Var& w = self.inputs[1];
    bool ow;
    if (w->requires_grad) {
      float* dw = w->grad_buffer(&ow);
      if (stride == 1 && !x->value.defined() && x->channel_affine && !x->inputs.empty()) {
        // x is a released batch-norm output: read its input through the map (no recompute pass,
        // no x-sized buffer; the same bits as the recomputed x would give).
        const ChannelAffine& a = *x->channel_affine;
        const ColumnMap map{a.scale.data(), a.shift.data(), a.act};
        pointwise_backward_weights(M, Cin, Cout, x->inputs[0]->materialize().data(), self.grad.data(), dw, !ow, &map);
      } else {
        const float* xin = stride == 1 ? x->materialize().data() : Xsub.data();
        pointwise_backward_weights(M, Cin, Cout, xin, self.grad.data(), dw, !ow);
      }
    }
    if (!x->requires_grad) return;
    if (stride == 1) {
      float* dx = x->grad_buffer(&ow);
      pointwise_backward_data(M, Cin, Cout, self.grad.data(), w->value.data(), dx, !ow);
      return;
    }
    Tensor dsub = Tensor::empty(xshape);
    pointwise_backward_data(M, Cin, Cout, self.grad.data(), w->value.data(), dsub.data(), false);
    Tensor& dx = x->grad_accumulator();
    int64_t N = dx.dim(0), H = dx.dim(1), W = dx.dim(2), OH = xshape[1], OW = xshape[2];
    for (int64_t n = 0; n < N; ++n)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow2 = 0; ow2 < OW; ++ow2) {
          float* d = dx.data() + ((n * H + oh * stride) * W + ow2 * stride) * Cin;
          const float* s = dsub.data() + ((n * OH + oh) * OW + ow2) * Cin;
          for (int64_t c = 0; c < Cin; ++c) d[c] += s[c];
        }
  });
}

Var pwconv(const Var& x, const Var& w, int stride) { return pwconv_node(x, w, stride, nullptr); }

Var bn_act_pwconv(const Var& x, const Var& gamma, const Var& beta, BatchNorm& bn, bool training, Act act,
                  const Var& w) {
  // The batch-norm node is on the tape when any of its inputs wants a gradient; if only w does,
  // pwconv's weight gradient needs the output's value, which nothing could then recompute.
  const bool bn_recorded = grad_enabled() && (x->requires_grad || gamma->requires_grad || beta->requires_grad);
  // Ghost batch norm has a scale/shift per group, which the GEMMs' per-channel map cannot express.
  const bool per_group = training && batchnorm_stats().groups > 1;
  if (per_group || (grad_enabled() && w->requires_grad && !bn_recorded))
    return pwconv(batchnorm(x, gamma, beta, bn, training, act), w);
  Var y = batchnorm_unmaterialized(x, gamma, beta, bn, training, act);
  return pwconv_node(y, w, 1, &x->value);
}

// ---------------------------------------------------------------------------------------------
// Inference: convolution + folded batch norm + activation.

// Inference ops record nothing: refuse to run where a gradient would be expected.
static void check_inference(const char* op, std::initializer_list<const Var*> vars) {
  bool needs = false;
  for (const Var* v : vars) needs |= (*v)->requires_grad;
  check(!grad_enabled() || !needs, op, "is inference only: call it under NoGrad (it records no gradient)");
}

Var pwconv_bn_act(const Var& x, const Var& w, const Var& gamma, const Var& beta, const BatchNorm& bn, Act act) {
  const Tensor& X = x->value;
  const Tensor& Wt = w->value;
  pw_args("pwconv_bn_act", X, Wt);
  check_inference("pwconv_bn_act", {&x, &w, &gamma, &beta});
  const int64_t M = X.dim(0) * X.dim(1) * X.dim(2), Cin = Wt.dim(0), Cout = Wt.dim(1);
  Tensor scale, shift;
  batchnorm_fold("pwconv_bn_act", gamma, beta, bn, Cout, &scale, &shift);
  Tensor Y = Tensor::empty({X.dim(0), X.dim(1), X.dim(2), Cout});
  pointwise_forward_bn_act(M, Cin, Cout, X.data(), Wt.data(), scale.data(), shift.data(), act, Y.data());
  return inference_result("pwconv_bn_act", Y);
}

Var dwconv_bn_act(const Var& x, const Var& w, int stride, const Var& gamma, const Var& beta, const BatchNorm& bn,
                  Act act) {
  const Tensor& X = x->value;
  const Tensor& Wt = w->value;
  DwConvDesc d = dw_args("dwconv_bn_act", X, Wt, stride);
  check_inference("dwconv_bn_act", {&x, &w, &gamma, &beta});
  Tensor scale, shift;
  batchnorm_fold("dwconv_bn_act", gamma, beta, bn, d.C, &scale, &shift);
  Tensor Y = Tensor::empty({d.N, d.OH, d.OW, d.C});
  kernels().dwconv_bn_act_forward(d, X.data(), Wt.data(), scale.data(), shift.data(), act, Y.data());
  return inference_result("dwconv_bn_act", Y);
}

}  // namespace spnas
