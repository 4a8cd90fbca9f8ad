// Reverse-mode automatic differentiation on an explicit tape.
//
// A Var is a node: a value, a gradient, the op that made it and that op's backward rule. While grad
// mode is on, every op whose inputs need a gradient appends its output node to the thread's tape.
// The tape is in creation order, which is a topological order, so backward(loss) simply walks it in
// reverse and calls each rule; rules *add* into their inputs' gradients, so a value used twice gets
// the sum. backward() then clears the tape, which frees the step's intermediate values.
//
//   Var x = param(...);              // leaf that wants a gradient
//   Var y = relu(matmul(x, w));      // ops record themselves
//   backward(sum(y));                // x->grad now holds d sum(y) / dx
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace spnas {

struct Node;
using Var = std::shared_ptr<Node>;
struct ChannelAffine;  // ops/ops.h

struct Node {
  Tensor value;
  Tensor grad;              // valid only when grad_valid
  bool grad_valid = false;  // false: gradient is zero (buffer may be kept for reuse)
  bool requires_grad = false;
  const char* op = "leaf";
  std::string name;         // parameters: their registered name
  std::vector<Var> inputs;
  std::function<void(Node& self)> backward_fn;  // empty for leaves
  // Optional: recomputes `value` from the node's inputs. An op that can cheaply redo its forward
  // (batch norm + activation) sets it; release_value() then frees the value after the forward
  // consumers have run, and backward rules get it back with materialize(). Trades one cheap pass
  // for a whole activation tensor of memory per layer.
  std::function<Tensor()> recompute;
  Shape released_shape;  // shape of a released value
  // Optional, set by batch norm: the value is act(inputs[0]'s value * scale + shift) per channel
  // (ops/ops.h). A consumer that can apply that map while reading (the pointwise weight gradient)
  // reads the input instead of recomputing a released value.
  std::shared_ptr<const ChannelAffine> channel_affine;

  // The value, recomputed first if it was released.
  const Tensor& materialize();
  const Shape& shape() const { return value.defined() ? value.shape() : released_shape; }

  // The gradient buffer of this node for a backward rule to add into. A new (or zeroed) buffer is
  // handed out without clearing and *overwrite is set: the rule must then write, not add.
  float* grad_buffer(bool* overwrite);
  // Same, but always ready to add into (cleared when new).
  Tensor& grad_accumulator();
  void zero_grad() { grad_valid = false; }
};

// A leaf holding a constant (no gradient) or a trainable value.
Var constant(const Tensor& value);
// The output of an inference-only op (ops/ops.h pwconv_bn_act, ...): a constant that the op profile
// times like a recorded op when inference profiling is on (set_op_profile).
Var inference_result(const char* op, Tensor value);
Var leaf(const Tensor& value, bool requires_grad, const std::string& name = "");

// Grad mode. NoGrad disables recording in its scope (evaluation, EMA updates, decoding).
bool grad_enabled();
struct NoGrad {
  NoGrad();
  ~NoGrad();
  bool prev;
};

// Frees v's value if v can recompute it (see Node::recompute) and is on the tape; call it once the
// forward consumers of v have run. A no-op otherwise (no-grad mode, leaves, other ops), and when
// low-memory mode is off. On by default: in bench_train it cuts peak RSS from 1113 to 863 MiB and
// the throughput is the same within noise (149.9 vs 148.9 images/s, one run).
void release_value(const Var& v);
void set_low_memory(bool on);  // SPNAS_LOW_MEMORY=0 turns it off
bool low_memory();

// Called by ops: makes the output node, and records it on the tape when grad mode is on and any
// input requires a gradient. `backward` receives the output node; it reads self.grad and adds into
// self.inputs[i]->grad_... for each input that requires a gradient.
Var record(const char* op, Tensor value, std::vector<Var> inputs, std::function<void(Node&)> backward);
// Same for a node whose value is not computed: it starts released with this shape, for a consumer
// that reads the inputs through channel_affine instead (bn_act_pwconv, ops/ops.h); materialize()
// computes it through recompute.
Var record_released(const char* op, Shape shape, std::vector<Var> inputs, std::function<void(Node&)> backward);

// Watches a backward() walk: begin() sees the tape (creation order) before any rule runs, and
// rule_done(i) follows each rule that ran, tape[i]'s (i descending). A leaf's gradient is complete
// once the walk has passed its first consumer on the tape: engine/dist.h starts the allreduce of a
// bucket of parameter gradients there, while the rest of backward still runs.
struct BackwardListener {
  virtual ~BackwardListener() = default;
  virtual void begin(const std::vector<Var>& tape) = 0;
  virtual void rule_done(size_t index) = 0;
};

// Runs the tape backwards from `loss` (seeded with d loss = 1, or with `seed` when given), then
// clears the tape. An op recorded without a backward rule fails here, naming the op. Gradients are
// kept for leaves (parameters) and the loss; intermediate nodes release their gradient as soon as
// their rule has run, and their value too when nothing outside the tape holds the node.
void backward(const Var& loss, const Tensor* seed = nullptr, BackwardListener* listener = nullptr);
// Drops the tape without running it (e.g. after a forward pass that is not differentiated).
void clear_tape();
size_t tape_size();

// Op profile (SPNAS_PROFILE=1, or set_op_profile): wall time per (op, output shape), forward,
// backward and recompute. An op's forward time is the time since the previous recorded op (ops
// record themselves after computing), so call op_profile_mark() after work that is not an op
// (loading a batch); backward() marks when it finishes. Costs a map lookup per op: off by default.
// Ops run under NoGrad are left out unless `inference` is set (inference benchmarks): otherwise an
// evaluation inside a training run would land in the training step's profile. Also resets.
void set_op_profile(bool on, bool inference = false);
bool op_profile();
void op_profile_reset();
void op_profile_mark();
// A table sorted by total time, in ms per step.
std::string op_profile_report(int steps);

}  // namespace spnas
