// Scalar and elementwise algebra: enough to write formulas on tensors (the superkernel's indicator
// nesting and the runtime model are written with these, so their gradients come from these rules).
#include <cmath>
#include <cstring>

#include "ops/ops.h"

namespace spnas {

// Binary ops take equal shapes, or one operand with a single element (broadcast to the other).
// The gradient of a broadcast operand is the sum over the broadcast.
namespace {
struct Broadcast {
  int64_t n;     // output elements
  bool a1, b1;   // operand has one element
  Shape shape;
};

Broadcast broadcast(const char* op, const Tensor& a, const Tensor& b) {
  if (a.shape() == b.shape()) return {a.numel(), false, false, a.shape()};
  if (b.numel() == 1) return {a.numel(), false, true, a.shape()};
  if (a.numel() == 1) return {b.numel(), true, false, b.shape()};
  fail(op, "shapes differ and neither is a single element: " + shape_str(a.shape()) + " vs " + shape_str(b.shape()));
}

// Adds k * g (elementwise, or summed when the target is a broadcast single element) into v's gradient.
void add_grad(const Var& v, bool single, int64_t n, const float* g, const float* coef, float k) {
  if (!v->requires_grad) return;
  if (single) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += double(g[i]) * (coef ? coef[i] : 1.0f);
    v->grad_accumulator().data()[0] += float(k * s);
    return;
  }
  bool ow;
  float* d = v->grad_buffer(&ow);
  for (int64_t i = 0; i < n; ++i) {
    float t = k * g[i] * (coef ? coef[i] : 1.0f);
    d[i] = ow ? t : d[i] + t;
  }
}
}  // namespace

#define BINARY_FORWARD(EXPR)                                        \
  const Tensor& A = a->value;                                      \
  const Tensor& B = b->value;                                      \
  Broadcast bc = broadcast(OP, A, B);                              \
  Tensor Y = Tensor::empty(bc.shape);                              \
  for (int64_t i = 0; i < bc.n; ++i) {                             \
    float x = A.data()[bc.a1 ? 0 : i], y = B.data()[bc.b1 ? 0 : i]; \
    Y.data()[i] = (EXPR);                                          \
  }

Var add(const Var& a, const Var& b) {
  static const char* OP = "add";
  BINARY_FORWARD(x + y)
  return record(OP, Y, {a, b}, [bc](Node& self) {
    add_grad(self.inputs[0], bc.a1, bc.n, self.grad.data(), nullptr, 1.0f);
    add_grad(self.inputs[1], bc.b1, bc.n, self.grad.data(), nullptr, 1.0f);
  });
}

Var sub(const Var& a, const Var& b) {
  static const char* OP = "sub";
  BINARY_FORWARD(x - y)
  return record(OP, Y, {a, b}, [bc](Node& self) {
    add_grad(self.inputs[0], bc.a1, bc.n, self.grad.data(), nullptr, 1.0f);
    add_grad(self.inputs[1], bc.b1, bc.n, self.grad.data(), nullptr, -1.0f);
  });
}

// Expands a (possibly single-element) operand to n values for use as a gradient coefficient.
static Tensor expand(const Tensor& t, int64_t n) {
  if (t.numel() == n) return t;
  return Tensor::full({n}, t.data()[0]);
}

Var mul(const Var& a, const Var& b) {
  static const char* OP = "mul";
  BINARY_FORWARD(x * y)
  return record(OP, Y, {a, b}, [bc](Node& self) {
    const Var& a = self.inputs[0];
    const Var& b = self.inputs[1];
    if (a->requires_grad) add_grad(a, bc.a1, bc.n, self.grad.data(), expand(b->value, bc.n).data(), 1.0f);
    if (b->requires_grad) add_grad(b, bc.b1, bc.n, self.grad.data(), expand(a->value, bc.n).data(), 1.0f);
  });
}

Var div(const Var& a, const Var& b) {
  static const char* OP = "div";
  for (int64_t i = 0; i < b->value.numel(); ++i)
    check(b->value.data()[i] != 0, OP, "division by zero at element " + std::to_string(i));
  BINARY_FORWARD(x / y)
  return record(OP, Y, {a, b}, [bc](Node& self) {
    const Var& a = self.inputs[0];
    const Var& b = self.inputs[1];
    Tensor Bx = expand(b->value, bc.n);
    if (a->requires_grad) {
      Tensor inv = Tensor::empty({bc.n});
      for (int64_t i = 0; i < bc.n; ++i) inv.data()[i] = 1.0f / Bx.data()[i];
      add_grad(a, bc.a1, bc.n, self.grad.data(), inv.data(), 1.0f);
    }
    if (b->requires_grad) {  // d(a/b)/db = -(a/b)/b = -y/b
      Tensor c = Tensor::empty({bc.n});
      for (int64_t i = 0; i < bc.n; ++i) c.data()[i] = -self.value.data()[i] / Bx.data()[i];
      add_grad(b, bc.b1, bc.n, self.grad.data(), c.data(), 1.0f);
    }
  });
}
#undef BINARY_FORWARD

Var scale(const Var& a, float k) {
  Tensor Y = Tensor::empty(a->value.shape());
  for (int64_t i = 0; i < Y.numel(); ++i) Y.data()[i] = k * a->value.data()[i];
  return record("scale", Y, {a}, [k](Node& self) {
    add_grad(self.inputs[0], false, self.value.numel(), self.grad.data(), nullptr, k);
  });
}

Var add_scalar(const Var& a, float k) {
  Tensor Y = Tensor::empty(a->value.shape());
  for (int64_t i = 0; i < Y.numel(); ++i) Y.data()[i] = a->value.data()[i] + k;
  return record("add_scalar", Y, {a}, [](Node& self) {
    add_grad(self.inputs[0], false, self.value.numel(), self.grad.data(), nullptr, 1.0f);
  });
}

Var sum(const Var& a) {
  double s = 0;
  for (int64_t i = 0; i < a->value.numel(); ++i) s += a->value.data()[i];
  return record("sum", Tensor::scalar(float(s)), {a}, [](Node& self) {
    const Var& a = self.inputs[0];
    float g = self.grad.data()[0];
    bool ow;
    float* d = a->grad_buffer(&ow);
    for (int64_t i = 0; i < a->value.numel(); ++i) d[i] = ow ? g : d[i] + g;
  });
}

Var sqnorm(const Var& a) {
  double s = 0;
  for (int64_t i = 0; i < a->value.numel(); ++i) s += double(a->value.data()[i]) * a->value.data()[i];
  return record("sqnorm", Tensor::scalar(float(s)), {a}, [](Node& self) {
    add_grad(self.inputs[0], false, self.inputs[0]->value.numel(), self.inputs[0]->value.data(), nullptr,
             2.0f * self.grad.data()[0]);
  });
}

Var l2norm(const Var& a) {
  double s = 0;
  for (int64_t i = 0; i < a->value.numel(); ++i) s += double(a->value.data()[i]) * a->value.data()[i];
  float norm = float(std::sqrt(s));
  return record("l2norm", Tensor::scalar(norm), {a}, [norm](Node& self) {
    if (norm == 0) return;  // subgradient 0 at the origin
    add_grad(self.inputs[0], false, self.inputs[0]->value.numel(), self.inputs[0]->value.data(), nullptr,
             self.grad.data()[0] / norm);
  });
}

// Views a along `axis` as [outer, len, inner].
static void axis_split(const char* op, const Tensor& t, int axis, int64_t begin, int64_t end, int64_t* outer,
                       int64_t* len, int64_t* inner) {
  int r = t.rank();
  if (axis < 0) axis += r;
  check(axis >= 0 && axis < r, op, "axis " + std::to_string(axis) + " out of range for " + shape_str(t.shape()));
  *len = t.shape()[axis];
  check(0 <= begin && begin <= end && end <= *len, op,
        "range [" + std::to_string(begin) + ", " + std::to_string(end) + ") out of bounds for axis " +
            std::to_string(axis) + " of " + shape_str(t.shape()));
  *outer = 1;
  *inner = 1;
  for (int i = 0; i < axis; ++i) *outer *= t.shape()[i];
  for (int i = axis + 1; i < r; ++i) *inner *= t.shape()[i];
}

Var slice(const Var& a, int axis, int64_t begin, int64_t end) {
  int64_t outer, len, inner;
  axis_split("slice", a->value, axis, begin, end, &outer, &len, &inner);
  Shape s = a->value.shape();
  s[axis < 0 ? axis + a->value.rank() : axis] = end - begin;
  Tensor Y = Tensor::empty(s);
  const int64_t w = (end - begin) * inner;
  for (int64_t o = 0; o < outer; ++o)
    std::memcpy(Y.data() + o * w, a->value.data() + (o * len + begin) * inner, sizeof(float) * w);
  return record("slice", Y, {a}, [outer, len, inner, begin, w](Node& self) {
    Tensor& d = self.inputs[0]->grad_accumulator();
    for (int64_t o = 0; o < outer; ++o) {
      float* dst = d.data() + (o * len + begin) * inner;
      const float* src = self.grad.data() + o * w;
      for (int64_t i = 0; i < w; ++i) dst[i] += src[i];
    }
  });
}

Var mask_axis(const Var& a, int axis, int64_t begin, int64_t end) {
  int64_t outer, len, inner;
  axis_split("mask_axis", a->value, axis, begin, end, &outer, &len, &inner);
  Tensor m = Tensor::zeros(a->value.shape());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = (o * len + begin) * inner; i < (o * len + end) * inner; ++i) m.data()[i] = 1.0f;
  return mask(a, m);
}

Var mask(const Var& a, const Tensor& m) {
  check_same_shape("mask", a->value, m);
  Tensor Y = Tensor::empty(a->value.shape());
  for (int64_t i = 0; i < Y.numel(); ++i) Y.data()[i] = a->value.data()[i] * m.data()[i];
  return record("mask", Y, {a}, [m](Node& self) {
    add_grad(self.inputs[0], false, m.numel(), self.grad.data(), m.data(), 1.0f);
  });
}

Var reshape(const Var& x, const Shape& shape) {
  Tensor Y = x->value.reshape(shape);
  return record("reshape", Y, {x}, [](Node& self) {
    add_grad(self.inputs[0], false, self.value.numel(), self.grad.data(), nullptr, 1.0f);
  });
}

}  // namespace spnas
