// `spnas predict` (see predict.h).
#include "deploy/predict.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <stdexcept>

#include "nas/train.h"
#include "ops/ops.h"
#if SPNAS_HAVE_ONNX && SPNAS_HAVE_OPENCV
#include "deploy/onnx_export.h"
#include "deploy/opencv_runner.h"
#define SPNAS_PREDICT_ONNX 1
#endif

namespace spnas {

Tensor nhwc_to_nchw(const Tensor& x) {
  check(x.rank() == 4, "nhwc_to_nchw", "expected [N, H, W, C], got " + shape_str(x.shape()));
  const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  Tensor y = Tensor::empty({N, C, H, W});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w)
        for (int64_t c = 0; c < C; ++c) y.data()[((n * C + c) * H + h) * W + w] = x.data()[((n * H + h) * W + w) * C + c];
  return y;
}

std::vector<ClassScore> top_classes(const float* logits, const std::vector<std::string>& names, int k) {
  const size_t K = names.size();
  const double mx = *std::max_element(logits, logits + K);
  std::vector<double> p(K);
  double sum = 0;
  for (size_t i = 0; i < K; ++i) sum += p[i] = std::exp(double(logits[i]) - mx);
  std::vector<int> order(K);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[size_t(a)] > p[size_t(b)]; });
  std::vector<ClassScore> top;
  for (size_t i = 0; i < std::min(size_t(k), K); ++i) {
    const size_t c = size_t(order[i]);
    top.push_back(ClassScore{int(c), names[c], p[c] / sum});
  }
  return top;
}

#if SPNAS_PREDICT_ONNX
// The exported file in OpenCV, after checking that it takes the checkpoint's input size and names
// its classes; its declared batch tells the runner how to feed it.
static std::unique_ptr<OpenCvNet> open_exported(const std::string& path, const std::string& checkpoint, int input_size,
                                                const std::vector<std::string>& class_names) {
  const OnnxFileInfo info = read_onnx_file(path);
  const std::vector<int64_t>& s = info.input_shape;
  if (s.size() != 4 || s[1] != 3 || s[2] != input_size || s[3] != input_size)
    throw std::runtime_error("predict: '" + path + "' does not take [N, 3, " + std::to_string(input_size) + ", " +
                             std::to_string(input_size) + "] images, the input of the network of '" + checkpoint + "'");
  auto names = info.metadata.find("class_names");
  if (names != info.metadata.end() &&
      nlohmann::json::parse(names->second, nullptr, false) != nlohmann::json(class_names))
    throw std::runtime_error("predict: '" + path + "' names other classes than '" + checkpoint + "'");
  return std::make_unique<OpenCvNet>(path, int(std::max<int64_t>(s[0], 0)));
}
#endif

std::vector<ImagePrediction> predict_images(const PredictOptions& o) {
  if (o.top_k < 1) throw std::runtime_error("predict: top-k must be at least 1, got " + std::to_string(o.top_k));
  if (o.batch < 1) throw std::runtime_error("predict: batch must be at least 1, got " + std::to_string(o.batch));
  if (o.inputs.empty()) throw std::runtime_error("predict: no image file or folder given");
  TrainedNetwork t = load_trained_network(o.checkpoint, o.use_ema, "predict", o.data);
  const InputRecord& in = t.input_or_throw("predict");
  if (t.net->space().input_channels != 3)
    throw std::runtime_error("predict: image files are read as RGB, but the network of '" + o.checkpoint + "' takes " +
                             std::to_string(t.net->space().input_channels) + "-channel images (trained on " + in.data + ")");
  const std::vector<std::string> files = list_image_files(o.inputs);
  const int S = t.net->space().input_size, K = t.net->space().num_classes;

#if SPNAS_PREDICT_ONNX
  std::unique_ptr<OpenCvNet> onnx_net;
  if (!o.onnx.empty()) onnx_net = open_exported(o.onnx, o.checkpoint, S, in.class_names);
#else
  if (!o.onnx.empty())
    throw std::runtime_error("predict: running '" + o.onnx + "' needs a build with ONNX and OpenCV (install " +
                             "libonnx-dev, libprotobuf-dev and libopencv-dnn-dev, and rebuild); without it our " +
                             "engine runs the checkpoint");
#endif
  // The exported file normalises inside: it is fed the same pixels on the 0..1 scale.
  const bool normalise_here = o.onnx.empty();
  std::shared_ptr<Dataset> ds = open_image_files(files, in.image_height, in.image_width, in.class_names,
                                                 normalise_here ? in.mean : std::vector<float>{0, 0, 0},
                                                 normalise_here ? in.std : std::vector<float>{1, 1, 1});
  std::unique_ptr<Loader> loader = eval_loader(ds, S, o.batch);
  NoGrad ng;
  ForwardOptions fo;
  fo.training = false;
  std::vector<ImagePrediction> out;
  Tensor images;
  std::vector<int> labels;
  auto run = [&](const Tensor& batch) -> Tensor {
#if SPNAS_PREDICT_ONNX
    if (onnx_net) {
      Tensor logits = onnx_net->forward(nhwc_to_nchw(batch));
      if (logits.dim(1) != K)
        throw std::runtime_error("predict: '" + o.onnx + "' gives " + std::to_string(logits.dim(1)) +
                                 " outputs per image, but the network of '" + o.checkpoint + "' has " +
                                 std::to_string(K) + " classes");
      return logits;
    }
#endif
    return t.net->forward(constant(batch), fo)->value;
  };
  while (loader->next(images, labels)) {
    const Tensor logits = run(images);
    for (int64_t n = 0; n < logits.dim(0); ++n) {
      ImagePrediction p;
      p.path = files[out.size()];
      p.logits.assign(logits.data() + n * K, logits.data() + (n + 1) * K);
      p.top = top_classes(p.logits.data(), in.class_names, o.top_k);
      out.push_back(std::move(p));
    }
  }
  return out;
}

std::string predictions_text(const std::vector<ImagePrediction>& ps) {
  std::string s;
  char line[64];
  for (const ImagePrediction& p : ps) {
    s += p.path + "\n";
    for (const ClassScore& c : p.top) {
      std::snprintf(line, sizeof line, "  %6.2f %%  ", 100.0 * c.probability);
      s += line + c.name + "\n";
    }
  }
  return s;
}

std::string predictions_json(const std::vector<ImagePrediction>& ps) {
  nlohmann::json j = nlohmann::json::array();
  for (const ImagePrediction& p : ps) {
    nlohmann::json top = nlohmann::json::array();
    for (const ClassScore& c : p.top) top.push_back({{"class", c.name}, {"index", c.index}, {"probability", c.probability}});
    j.push_back({{"path", p.path}, {"top", top}});
  }
  return j.dump(2) + "\n";
}

}  // namespace spnas
