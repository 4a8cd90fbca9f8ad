#include "engine/autograd.h"

#include <cstdlib>
#include <string>

namespace spnas {
namespace {
thread_local bool g_grad_enabled = true;
thread_local std::vector<Var> g_tape;
}  // namespace

float* Node::grad_buffer(bool* overwrite) {
  if (grad_valid) {
    *overwrite = false;
    return grad.data();
  }
  if (!grad.defined() || grad.shape() != shape()) grad = Tensor::empty(shape());
  grad_valid = true;
  *overwrite = true;
  return grad.data();
}

Tensor& Node::grad_accumulator() {
  bool overwrite;
  grad_buffer(&overwrite);
  if (overwrite) grad.zero();
  return grad;
}

const Tensor& Node::materialize() {
  if (!value.defined()) {
    check(bool(recompute), op, "value was released and cannot be recomputed");
    value = recompute();
  }
  return value;
}

static int g_low_memory = -1;  // -1: not decided yet (read SPNAS_LOW_MEMORY)

void set_low_memory(bool on) { g_low_memory = on; }

bool low_memory() {
  if (g_low_memory < 0) {
    const char* e = std::getenv("SPNAS_LOW_MEMORY");
    g_low_memory = !(e && std::string(e) == "0");
  }
  return g_low_memory == 1;
}

void release_value(const Var& v) {
  if (!low_memory()) return;
  if (!v->recompute || !v->requires_grad || !v->backward_fn) return;
  v->released_shape = v->value.shape();
  v->value = Tensor();
}

Var constant(const Tensor& value) {
  auto n = std::make_shared<Node>();
  n->value = value;
  n->op = "constant";
  return n;
}

Var leaf(const Tensor& value, bool requires_grad, const std::string& name) {
  auto n = std::make_shared<Node>();
  n->value = value;
  n->requires_grad = requires_grad;
  n->name = name;
  return n;
}

bool grad_enabled() { return g_grad_enabled; }
NoGrad::NoGrad() : prev(g_grad_enabled) { g_grad_enabled = false; }
NoGrad::~NoGrad() { g_grad_enabled = prev; }

Var record(const char* op, Tensor value, std::vector<Var> inputs, std::function<void(Node&)> backward) {
  auto n = std::make_shared<Node>();
  n->value = std::move(value);
  n->op = op;
  bool needs = false;
  if (g_grad_enabled)
    for (const Var& in : inputs) needs |= in->requires_grad;
  if (needs) {
    n->requires_grad = true;
    n->inputs = std::move(inputs);
    n->backward_fn = std::move(backward);
    g_tape.push_back(n);
  }
  return n;
}

void backward(const Var& loss, const Tensor* seed) {
  check(loss->requires_grad, "backward", "the loss does not depend on any value that requires a gradient");
  if (seed) {
    check_same_shape("backward", loss->value, *seed);
    loss->grad = seed->clone();
  } else {
    check(loss->value.numel() == 1, "backward",
          "needs a scalar loss or a seed gradient, got shape " + shape_str(loss->value.shape()));
    loss->grad = Tensor::full(loss->value.shape(), 1.0f);
  }
  loss->grad_valid = true;
  // Reverse creation order is a reverse topological order of the graph.
  for (auto it = g_tape.rbegin(); it != g_tape.rend(); ++it) {
    Node& n = **it;
    if (!n.grad_valid) continue;  // does not influence the loss
    if (!n.backward_fn) fail(n.op, "this op has no backward rule");
    n.backward_fn(n);
    // Every consumer of n came later on the tape and has run: n's gradient, its rule (with what the
    // rule saved) and its links to its inputs are no longer needed. Its value goes too unless
    // someone besides the tape still holds the node (the caller's logits, say). This releases the
    // step's memory progressively instead of holding activations and gradients until the end.
    n.backward_fn = nullptr;
    n.recompute = nullptr;
    n.inputs.clear();
    if (&n != loss.get()) {
      n.grad = Tensor();
      n.grad_valid = false;
      if (it->use_count() == 1) n.value = Tensor();
    }
  }
  clear_tape();
}

void clear_tape() {
  // Break input links so intermediate values are freed even if the caller keeps the output.
  for (Var& n : g_tape) {
    n->inputs.clear();
    n->backward_fn = nullptr;
    n->recompute = nullptr;
  }
  g_tape.clear();
}

size_t tape_size() { return g_tape.size(); }

}  // namespace spnas
