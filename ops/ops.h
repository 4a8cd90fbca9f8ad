// Differentiable ops. Each op computes its forward value with a kernel (ops/kernels.h), records
// itself on the tape (engine/autograd.h) with a hand-written backward rule, and checks shapes with
// messages that name the op and the shapes involved.
//
// Shapes: activations NHWC [N, H, W, C]; vectors [N, C]; scalars have shape [] (or any 1-element
// shape). Binary elementwise ops take equal shapes, or one side with a single element (broadcast).
#pragma once
#include <vector>

#include "engine/autograd.h"
#include "engine/rng.h"
#include "ops/kernels.h"

namespace spnas {

// ---- convolutions ----
// Dense convolution, w [KH, KW, Cin, Cout], explicit padding (top/left = pad, output
// OH = (H + 2*pad - KH) / S + 1). Used for the stem; im2col + GEMM.
Var conv2d(const Var& x, const Var& w, int stride, int pad);
// Same, with TensorFlow "SAME" padding (as dwconv2d).
Var conv2d_same(const Var& x, const Var& w, int stride);
// Depthwise k x k convolution, w [K, K, C], stride 1 or 2, "SAME" padding.
Var dwconv2d(const Var& x, const Var& w, int stride);
// Pointwise 1x1 convolution, w [Cin, Cout]; stride > 1 subsamples the input first.
Var pwconv(const Var& x, const Var& w, int stride = 1);

// ---- normalization and activations ----
struct BatchNorm {
  Tensor running_mean, running_var;  // [C]
  float momentum = 0.99f;            // running = momentum * running + (1 - momentum) * batch
  float eps = 1e-3f;
};
// Batch normalization over all but the last axis, followed by an optional activation (fused:
// one op, one pass). training: batch statistics (and running stats are updated); otherwise the
// running statistics are used. The output node carries its map (Node::channel_affine), so that
// pwconv's weight gradient reads x through it when the output was released (release_value)
// instead of recomputing the output.
struct ChannelAffine {
  Tensor scale, shift;  // [C]: value = act(x * scale + shift)
  Act act = Act::None;
};
Var batchnorm(const Var& x, const Var& gamma, const Var& beta, BatchNorm& bn, bool training, Act act = Act::None);
// Where training-mode batch norm takes its statistics (process-wide; the default is the batch):
//   groups G > 1: each of G equal, consecutive parts of the batch on its own ("ghost" batch norm: what
//     G data-parallel ranks with per-rank statistics compute, in one process); the running
//     statistics move by the mean of the groups' statistics.
//   sync: over the global batch of every data-parallel rank (engine/dist.h; --sync-bn): the
//     per-channel sums are summed over ranks in forward, and the gradient's reductions in backward.
struct BatchNormStats {
  int groups = 1;
  bool sync = false;
};
void set_batchnorm_stats(const BatchNormStats& s);
const BatchNormStats& batchnorm_stats();
// pwconv(batchnorm(x, gamma, beta, bn, training, act), w) without ever materializing the batch-norm
// output: the GEMMs read x through its scale/shift/act (an MBConv block's depthwise -> BN + act ->
// project). Saves writing that output in the forward and recomputing it in the backward; values,
// gradients and running statistics equal the two ops' bit for bit.
Var bn_act_pwconv(const Var& x, const Var& gamma, const Var& beta, BatchNorm& bn, bool training, Act act,
                  const Var& w);
// Used between the ops files: batchnorm's node with its value not computed (it starts released;
// channel_affine describes it), for a consumer that reads x through that map.
Var batchnorm_unmaterialized(const Var& x, const Var& gamma, const Var& beta, BatchNorm& bn, bool training,
                             Act act);

// Evaluation mode's batch norm as y = x * scale + shift (the running statistics folded in; checks
// the parameters' shapes against C, naming op). The same arithmetic as batchnorm(training = false).
void batchnorm_fold(const char* op, const Var& gamma, const Var& beta, const BatchNorm& bn, int64_t C, Tensor* scale,
                    Tensor* shift);

// Inference only (no gradient may flow: call under NoGrad): convolution + batch norm with its
// running statistics + activation in one pass over the output, batch norm folded into a per-channel
// scale gamma / sqrt(var + eps) and shift beta - mean * scale. Equal to conv then batchnorm(...,
// training = false, act) up to rounding.
Var pwconv_bn_act(const Var& x, const Var& w, const Var& gamma, const Var& beta, const BatchNorm& bn, Act act);
Var dwconv_bn_act(const Var& x, const Var& w, int stride, const Var& gamma, const Var& beta, const BatchNorm& bn,
                  Act act);

Var relu(const Var& x);
Var relu6(const Var& x);
Var sigmoid(const Var& x);
Var hswish(const Var& x);  // x * relu6(x + 3) / 6

// ---- shape-changing and network ops ----
Var channel_scale(const Var& x, const Var& s);  // x [N,H,W,C] * s [N,C] (squeeze-and-excitation)
Var global_avgpool(const Var& x);               // [N,H,W,C] -> [N,C]
Var linear(const Var& x, const Var& w, const Var& b);  // x [N,Cin], w [Cin,Cout], b [Cout]
Var dropout(const Var& x, float p, Rng& rng, bool training);
Var reshape(const Var& x, const Shape& shape);
// Mean over the batch of softmax cross-entropy with label smoothing: target = (1 - s) * onehot + s / K.
Var softmax_cross_entropy(const Var& logits, const std::vector<int>& labels, float smoothing = 0.0f);

// ---- scalar and elementwise algebra ----
Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var div(const Var& a, const Var& b);
Var scale(const Var& a, float k);       // k * a
Var add_scalar(const Var& a, float k);  // a + k
Var log(const Var& a);
Var sum(const Var& a);                  // -> scalar
Var l2norm(const Var& a);               // sqrt(sum a^2) -> scalar (gradient 0 at a = 0)
Var sqnorm(const Var& a);               // sum a^2 -> scalar
Var maximum0(const Var& a);             // max(a, 0) (same as relu, for formulas)
// Elements [begin, end) along `axis`.
Var slice(const Var& a, int axis, int64_t begin, int64_t end);
// Same shape as a, zero outside [begin, end) along `axis`.
Var mask_axis(const Var& a, int axis, int64_t begin, int64_t end);
// Elementwise product with a constant 0/1 (or any) tensor of the same shape.
Var mask(const Var& a, const Tensor& m);

// The same algebra as operators, so formulas read as written on paper: Supernet::effective_kernel
// and runtime_model are the README's equations line by line. A float operand is a constant.
inline Var operator+(const Var& a, const Var& b) { return add(a, b); }
inline Var operator-(const Var& a, const Var& b) { return sub(a, b); }
inline Var operator*(const Var& a, const Var& b) { return mul(a, b); }
inline Var operator/(const Var& a, const Var& b) { return div(a, b); }
inline Var operator*(const Var& a, float k) { return scale(a, k); }
inline Var operator*(float k, const Var& a) { return scale(a, k); }
inline Var operator/(const Var& a, float k) { return scale(a, 1.0f / k); }
inline Var operator+(const Var& a, float k) { return add_scalar(a, k); }
inline Var operator+(float k, const Var& a) { return add_scalar(a, k); }
inline Var operator-(const Var& a, float k) { return add_scalar(a, -k); }
inline Var operator-(float k, const Var& a) { return add_scalar(scale(a, -1.0f), k); }

// Step indicator with straight-through gradient: forward 1 if x >= 0 else 0;
// backward dy * sigmoid(x) * (1 - sigmoid(x)).
Var step_indicator(const Var& x);

}  // namespace spnas
