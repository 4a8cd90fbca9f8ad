#include "nas/latency/networks.h"

#include <stdexcept>

#include "nas/latency/harness.h"
#include "nas/latency/onednn_backend.h"
#include "nas/latency/opencv_backend.h"
#include "ops/ops.h"

#if SPNAS_HAVE_ONNX && SPNAS_HAVE_OPENCV
#include "deploy/opencv_runner.h"
#endif

namespace spnas {

namespace {

// Identity on the tape whose backward rule records when it runs. It hands its gradient to its input
// without copying (the input has no other consumer), so it costs nothing but the timestamp.
Var time_marker(const Var& x, std::vector<double>* stamps) {
  return record("time_marker", x->value, {x}, [stamps](Node& self) {
    stamps->push_back(stamp_now());
    Node& in = *self.inputs[0];
    if (!in.requires_grad) return;
    if (!in.grad_valid) {
      in.grad = self.grad;
      in.grad_valid = true;
    } else {
      float* g = in.grad.data();
      const float* d = self.grad.data();
      for (int64_t i = 0; i < in.grad.numel(); ++i) g[i] += d[i];
    }
  });
}

}  // namespace

Act space_activation(const SearchSpace& s) { return s.activation == "relu6" ? Act::ReLU6 : Act::ReLU; }

TimedNet::TimedNet(const SearchSpace& s, const std::vector<Choice>& choice, const std::vector<bool>& se, uint64_t seed) {
  // The order of ChildNet's constructor, so the same seed gives the same weights.
  space_ = s;
  act_ = space_activation(s);
  cfg_.seed = seed;
  init_rng_.seed_with(seed);
  build_stem(cfg_);
  int si = 0, cin = s.stem_channels;
  layer_piece_.assign(s.layers.size(), -1);
  for (size_t i = 0; i < s.layers.size(); ++i) {
    const LayerSpec& l = s.layers[i];
    int k = l.kernel, e = l.expansion;
    bool with_se = false;
    if (l.searchable) {
      const Choice c = choice[size_t(si)];
      with_se = !se.empty() && se[size_t(si)];
      ++si;
      if (c == Choice::Skip) continue;
      k = choice_kernel(c);
      e = choice_expansion(c);
    }
    blocks_.push_back(make_mbconv(params_, "layer" + std::to_string(i), l, k, e, with_se, cfg_, init_rng_));
    layer_piece_[i] = int(blocks_.size());
    cin = l.cout;
  }
  build_head(cin, cfg_);
}

Var TimedNet::forward(const Var& images, const ForwardOptions& opt) {
  Var x = stem(images, opt.training);
  for (MBConvBlock& b : blocks_) x = mbconv_forward(b, x, opt.training, act_);
  return head(x, opt);
}

double TimedNet::run(const Var& images, const std::vector<int>& labels, bool training, Rng& rng, double* piece_ms) {
  return training ? run_training_step(images, labels, rng, piece_ms) : run_inference(images, piece_ms);
}

double TimedNet::run_inference(const Var& images, double* piece_ms) {
  const int nb = int(blocks_.size());
  NoGrad ng;
  ForwardOptions fo;
  fo.training = false;
  const double t0 = stamp_now();
  Var x = stem(images, false);
  double t1 = stamp_now();
  piece_ms[0] = t1 - t0;
  for (int i = 0; i < nb; ++i) {
    x = mbconv_forward(blocks_[size_t(i)], x, false, act_);
    const double t2 = stamp_now();
    piece_ms[1 + i] = t2 - t1;
    t1 = t2;
  }
  Var logits = head(x, fo);
  const double t3 = stamp_now();
  piece_ms[nb + 1] = t3 - t1;
  return t3 - t0;
}

double TimedNet::run_training_step(const Var& images, const std::vector<int>& labels, Rng& rng, double* piece_ms) {
  const int nb = int(blocks_.size());
  params_.zero_grad();
  stamps_.clear();
  stamps_.reserve(size_t(nb) + 2);
  std::vector<double> fwd(size_t(nb) + 2);
  ForwardOptions fo;
  fo.training = true;
  fo.rng = &rng;
  const double t0 = stamp_now();
  Var x = time_marker(stem(images, true), &stamps_);
  double t1 = stamp_now();
  fwd[0] = t1 - t0;
  for (int i = 0; i < nb; ++i) {
    x = time_marker(mbconv_forward(blocks_[size_t(i)], x, true, act_), &stamps_);
    const double t2 = stamp_now();
    fwd[size_t(1 + i)] = t2 - t1;
    t1 = t2;
  }
  Var loss = softmax_cross_entropy(head(x, fo), labels, 0.1f);
  const double tb0 = stamp_now();
  fwd[size_t(nb + 1)] = tb0 - t1;
  backward(loss);
  const double tb1 = stamp_now();
  check(int(stamps_.size()) == nb + 1, "profile", "backward did not pass every time marker");
  // stamps_[j] is the marker after piece nb - j (the markers fire in reverse order).
  piece_ms[nb + 1] = fwd[size_t(nb + 1)] + (stamps_[0] - tb0);
  for (int i = 1; i <= nb; ++i) piece_ms[i] = fwd[size_t(i)] + (stamps_[size_t(nb - i + 1)] - stamps_[size_t(nb - i)]);
  piece_ms[0] = fwd[0] + (tb1 - stamps_[size_t(nb)]);
  return tb1 - t0;
}

namespace {

// Why `backend` cannot be used in this build ("": it can).
std::string backend_unavailable(const std::string& backend) {
  if (backend == "spnas") return "";
  if (backend == "onednn") {
#ifdef SPNAS_HAVE_DNNL
    return "";
#else
    return "the onednn backend is not in this build: it needs oneDNN (Debian's libdnnl-dev), found by CMake";
#endif
  }
  if (backend == "opencv") {
#if SPNAS_HAVE_ONNX && SPNAS_HAVE_OPENCV
    return "";
#else
    return "the opencv backend is not in this build: it needs OpenCV dnn (libopencv-dnn-dev) and the ONNX exporter "
           "(libonnx-dev, libprotobuf-dev), found by CMake";
#endif
  }
  return "unknown backend '" + backend + "' (spnas, onednn or opencv)";
}

}  // namespace

std::unique_ptr<PieceNet> make_piece_net(const std::string& backend, const SearchSpace& space,
                                         const std::vector<Choice>& choice, const std::vector<bool>& se,
                                         const Tensor& images, uint64_t seed) {
  const std::string why = backend_unavailable(backend);
  if (!why.empty()) throw std::runtime_error("profile: " + why);
  if (backend == "spnas") return std::make_unique<TimedNet>(space, choice, se, seed);
#ifdef SPNAS_HAVE_DNNL
  if (backend == "onednn") return make_onednn_net(space, choice, se, images, seed);
#endif
#if SPNAS_HAVE_ONNX && SPNAS_HAVE_OPENCV
  if (backend == "opencv") return make_opencv_net(space, choice, se, images, seed);
#endif
  throw std::logic_error("make_piece_net: backend '" + backend + "' available but not built");
}

void prepare_backend(const std::string& backend, bool training_step, int threads) {
  const std::string why = backend_unavailable(backend);
  if (!why.empty()) throw std::runtime_error("profile: " + why);
  if (backend != "spnas" && training_step)
    throw std::runtime_error("profile: the " + backend + " backend times inference only (not --train-step)");
#ifdef SPNAS_HAVE_DNNL
  if (backend == "onednn") set_onednn_threads(threads);
#endif
#if SPNAS_HAVE_ONNX && SPNAS_HAVE_OPENCV
  if (backend == "opencv") set_opencv_threads(threads);
#endif
}

}  // namespace spnas
