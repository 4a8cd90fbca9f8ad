#include "nas/latency/opencv_backend.h"
#if SPNAS_HAVE_ONNX && SPNAS_HAVE_OPENCV

#include <chrono>
#include <stdexcept>

#include "deploy/onnx_export.h"
#include "deploy/opencv_runner.h"
#include "deploy/predict.h"
#include "nas/latency/harness.h"

namespace spnas {

namespace {

double wall_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The file a user deploys needs class names and a normalisation; timing needs neither to mean anything.
InputRecord timing_input(const SearchSpace& s) {
  InputRecord in;
  in.data = "latency timing (random weights)";
  in.image_height = in.image_width = s.input_size;
  for (int k = 0; k < s.num_classes; ++k) in.class_names.push_back(std::to_string(k));
  in.mean.assign(size_t(s.input_channels), 0.0f);
  in.std.assign(size_t(s.input_channels), 1.0f);
  return in;
}

class OpenCvPieceNet : public PieceNet {
 public:
  OpenCvPieceNet(const SearchSpace& space, const std::vector<Choice>& choice, const std::vector<bool>& se,
                 const Tensor& images, uint64_t seed) {
    Arch a;
    a.space = space.source.empty() ? space.name : space.source;
    a.width = space.width;
    a.input_size = space.input_size;
    a.num_classes = space.num_classes;
    a.input_channels = space.input_channels;
    a.layers = choice;
    a.se = se;
    NetConfig cfg;
    cfg.seed = seed;
    const ChildNet child(a, cfg);
    const int batch = int(images.dim(0));
    net_ = std::make_unique<OpenCvNet>(onnx_model_bytes(child, timing_input(space), batch), batch,
                                       "the " + arch_summary(a) + " network");
    input_ = nhwc_to_nchw(images);
    blocks_ = int(child.blocks().size());
    layer_piece_.assign(space.layers.size(), -1);
    int si = 0, b = 0;
    for (size_t i = 0; i < space.layers.size(); ++i) {
      if (space.layers[i].searchable && choice[size_t(si++)] == Choice::Skip) continue;
      layer_piece_[i] = ++b;
    }
    for (const std::string& name : net_->layer_names()) piece_of_layer_.push_back(opencv_layer_piece(name, blocks_));
  }

  int num_pieces() const override { return blocks_ + 2; }

  // OpenCV's per-layer wall times apportion the run's time (on the measurement's clock) among the
  // pieces; what forward() spends outside the layers is the head's, part of the fixed cost.
  double run(const Var&, const std::vector<int>&, bool training, Rng&, double* piece_ms) override {
    check(!training, "profile", "the OpenCV backend times inference only");
    const double w0 = wall_ms(), t0 = stamp_now();
    net_->forward(input_);
    const double t1 = stamp_now(), w1 = wall_ms();
    const double wall = w1 - w0, scale = wall > 0 ? (t1 - t0) / wall : 1.0;
    const std::vector<double> layer_ms = net_->last_layer_ms();
    check(layer_ms.size() == piece_of_layer_.size(), "profile", "OpenCV timed another number of layers than it has");
    std::fill(piece_ms, piece_ms + num_pieces(), 0.0);
    double in_layers = 0;
    for (size_t l = 0; l < layer_ms.size(); ++l) {
      piece_ms[piece_of_layer_[l]] += layer_ms[l] * scale;
      in_layers += layer_ms[l];
    }
    piece_ms[blocks_ + 1] += (wall - in_layers) * scale;
    return t1 - t0;
  }

 private:
  std::unique_ptr<OpenCvNet> net_;
  Tensor input_;
  int blocks_ = 0;
  std::vector<int> piece_of_layer_;
};

}  // namespace

int opencv_layer_piece(const std::string& name, int blocks) {
  if (name.rfind("block", 0) == 0) {
    const size_t slash = name.find('/');
    const std::string digits = name.substr(5, slash == std::string::npos ? std::string::npos : slash - 5);
    if (!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos) {
      const int b = std::stoi(digits);
      if (b >= blocks) throw std::runtime_error("profile: OpenCV layer '" + name + "' names a block the network lacks");
      return 1 + b;
    }
  }
  if (name.rfind("head/", 0) == 0 || name == "logits") return blocks + 1;
  return 0;
}

std::unique_ptr<PieceNet> make_opencv_net(const SearchSpace& space, const std::vector<Choice>& choice,
                                          const std::vector<bool>& se, const Tensor& images, uint64_t seed) {
  return std::make_unique<OpenCvPieceNet>(space, choice, se, images, seed);
}

}  // namespace spnas
#endif
