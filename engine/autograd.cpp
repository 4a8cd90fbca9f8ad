#include "engine/autograd.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
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

// ---- op profile -----------------------------------------------------------------------------
namespace {
int g_profile = -1;  // -1: not decided yet (read SPNAS_PROFILE)
bool g_profile_inference = false;
struct ProfEntry {
  double fwd = 0, bwd = 0, recompute = 0;
  long calls = 0;
};
std::map<std::string, ProfEntry> g_prof;
using Clock = std::chrono::steady_clock;
Clock::time_point g_prof_mark = Clock::now();
double g_prof_recompute_total = 0;  // recompute seconds so far (a rule's recomputes are not its own time)
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
std::string prof_key(const char* op, const Shape& s) { return std::string(op) + " " + shape_str(s); }
}  // namespace

void set_op_profile(bool on, bool inference) {
  g_profile = on;
  g_profile_inference = on && inference;
  op_profile_reset();
}

bool op_profile() {
  if (g_profile < 0) {
    const char* e = std::getenv("SPNAS_PROFILE");
    g_profile = e && std::string(e) != "0";
  }
  return g_profile == 1;
}

void op_profile_reset() {
  g_prof.clear();
  g_prof_mark = Clock::now();
}

void op_profile_mark() { g_prof_mark = Clock::now(); }

std::string op_profile_report(int steps) {
  struct Row {
    std::string key;
    ProfEntry e;
  };
  std::vector<Row> rows;
  double total = 0;
  for (auto& kv : g_prof) {
    rows.push_back({kv.first, kv.second});
    total += kv.second.fwd + kv.second.bwd + kv.second.recompute;
  }
  const double per = steps > 0 ? 1e3 / steps : 1e3;
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-52s %6s %9s %9s %9s %9s %6s\n", "op output-shape", "calls", "fwd_ms",
                "bwd_ms", "recomp_ms", "total_ms", "share");
  out += line;
  auto print = [&](const Row& r) {
    double t = r.e.fwd + r.e.bwd + r.e.recompute;
    std::snprintf(line, sizeof line, "%-52s %6ld %9.3f %9.3f %9.3f %9.3f %5.1f%%\n", r.key.c_str(),
                  steps > 0 ? r.e.calls / steps : r.e.calls, r.e.fwd * per, r.e.bwd * per, r.e.recompute * per,
                  t * per, total > 0 ? 100 * t / total : 0.0);
    out += line;
  };
  auto by_total = [](const Row& a, const Row& b) {
    return a.e.fwd + a.e.bwd + a.e.recompute > b.e.fwd + b.e.bwd + b.e.recompute;
  };
  std::sort(rows.begin(), rows.end(), by_total);
  for (const Row& r : rows) print(r);
  std::snprintf(line, sizeof line, "%-52s %6s %9s %9s %9s %9.3f  (ms per step over %d steps)\n", "total", "", "", "",
                "", total * per, steps);
  out += line;
  // The same per op, all output shapes together (where the step goes: pointwise, batch norm, ...).
  std::vector<Row> ops;
  for (const Row& r : rows) {
    const std::string op = r.key.substr(0, r.key.find(' '));
    auto it = std::find_if(ops.begin(), ops.end(), [&](const Row& o) { return o.key == op; });
    if (it == ops.end()) it = ops.insert(ops.end(), Row{op, ProfEntry()});
    it->e.fwd += r.e.fwd;
    it->e.bwd += r.e.bwd;
    it->e.recompute += r.e.recompute;
    it->e.calls += r.e.calls;
  }
  std::sort(ops.begin(), ops.end(), by_total);
  out += "by op\n";
  for (const Row& r : ops) print(r);
  return out;
}

const Tensor& Node::materialize() {
  if (!value.defined()) {
    check(bool(recompute), op, "value was released and cannot be recomputed");
    if (op_profile()) {
      auto t0 = Clock::now();
      value = recompute();
      double dt = seconds_since(t0);
      g_prof[prof_key(op, value.shape())].recompute += dt;
      g_prof_recompute_total += dt;
    } else {
      value = recompute();
    }
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

// Forward time of an op = wall time since the previous recorded op (or the last mark): the op
// computes its value before recording it.
static void profile_forward(const char* op, const Shape& shape) {
  auto now = Clock::now();
  ProfEntry& e = g_prof[prof_key(op, shape)];
  e.fwd += std::chrono::duration<double>(now - g_prof_mark).count();
  e.calls++;
  g_prof_mark = now;
}

// The node of record / record_released (released_shape: only for a value not computed).
static Var make_node(const char* op, Tensor value, Shape released_shape, std::vector<Var> inputs,
                     std::function<void(Node&)> backward) {
  auto n = std::make_shared<Node>();
  n->value = std::move(value);
  n->released_shape = std::move(released_shape);
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
  if ((g_grad_enabled || g_profile_inference) && op_profile()) profile_forward(op, n->shape());
  return n;
}

Var inference_result(const char* op, Tensor value) {
  Var n = constant(value);
  if (g_profile_inference && op_profile()) profile_forward(op, n->shape());
  return n;
}

Var record(const char* op, Tensor value, std::vector<Var> inputs, std::function<void(Node&)> backward) {
  return make_node(op, std::move(value), {}, std::move(inputs), std::move(backward));
}

Var record_released(const char* op, Shape shape, std::vector<Var> inputs, std::function<void(Node&)> backward) {
  return make_node(op, Tensor(), std::move(shape), std::move(inputs), std::move(backward));
}

void backward(const Var& loss, const Tensor* seed, BackwardListener* listener) {
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
  if (listener) listener->begin(g_tape);
  // Reverse creation order is a reverse topological order of the graph.
  for (auto it = g_tape.rbegin(); it != g_tape.rend(); ++it) {
    Node& n = **it;
    if (!n.grad_valid) continue;  // does not influence the loss
    if (!n.backward_fn) fail(n.op, "this op has no backward rule");
    if (op_profile()) {
      auto t0 = Clock::now();
      const double r0 = g_prof_recompute_total;
      std::string key = prof_key(n.op, n.shape());
      n.backward_fn(n);
      g_prof[key].bwd += seconds_since(t0) - (g_prof_recompute_total - r0);
    } else {
      n.backward_fn(n);
    }
    // Every consumer of n came later on the tape and has run: n's gradient, its rule (with what the
    // rule saved) and its links to its inputs are no longer needed. Its value goes too unless
    // someone besides the tape still holds the node (the caller's logits, say). This releases the
    // step's memory progressively instead of holding activations and gradients until the end.
    n.backward_fn = nullptr;
    n.recompute = nullptr;
    n.channel_affine = nullptr;
    n.inputs.clear();
    if (&n != loss.get()) {
      n.grad = Tensor();
      n.grad_valid = false;
      if (it->use_count() == 1) n.value = Tensor();
    }
    if (listener) listener->rule_done(size_t(g_tape.rend() - it) - 1);
  }
  clear_tape();
  g_prof_mark = Clock::now();
}

void clear_tape() {
  // Break input links so intermediate values are freed even if the caller keeps the output.
  for (Var& n : g_tape) {
    n->inputs.clear();
    n->backward_fn = nullptr;
    n->recompute = nullptr;
    n->channel_affine = nullptr;
  }
  g_tape.clear();
}

size_t tape_size() { return g_tape.size(); }

}  // namespace spnas
