// OpenCV dnn runner (see opencv_runner.h).
#include "deploy/opencv_runner.h"

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include <algorithm>
#include <stdexcept>
#include <vector>

namespace spnas {

struct OpenCvNet::Impl {
  cv::dnn::Net net;
};

namespace {

// readNetFromONNX's result on the CPU with OpenCV's own backend; `read` loads it from a file or bytes.
template <class Read>
cv::dnn::Net load_net(const std::string& name, Read read) {
  cv::dnn::Net net;
  try {
    net = read();
  } catch (const cv::Exception& e) {
    throw std::runtime_error("opencv: cannot load '" + name + "': " + e.what());
  }
  if (net.empty()) throw std::runtime_error("opencv: '" + name + "' holds no network");
  net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  return net;
}

}  // namespace

OpenCvNet::OpenCvNet(const std::string& onnx_path, int file_batch)
    : impl_(std::make_unique<Impl>()), path_(onnx_path), chunk_(std::max(file_batch, 1)) {
  impl_->net = load_net(onnx_path, [&] { return cv::dnn::readNetFromONNX(onnx_path); });
}

OpenCvNet::OpenCvNet(const std::string& model_bytes, int file_batch, const std::string& name)
    : impl_(std::make_unique<Impl>()), path_(name), chunk_(std::max(file_batch, 1)) {
  impl_->net = load_net(name, [&] { return cv::dnn::readNetFromONNX(model_bytes.data(), model_bytes.size()); });
}

OpenCvNet::~OpenCvNet() = default;

Tensor OpenCvNet::forward(const Tensor& x) {
  check(x.rank() == 4, "OpenCvNet::forward", "images must be NCHW [N, C, H, W], got " + shape_str(x.shape()));
  const int64_t N = x.dim(0), image = x.numel() / std::max<int64_t>(N, 1);
  const int dims[4] = {chunk_, int(x.dim(1)), int(x.dim(2)), int(x.dim(3))};
  cv::Mat blob(4, dims, CV_32F);
  Tensor y;
  for (int64_t n0 = 0; n0 < N; n0 += chunk_) {
    const int64_t n = std::min<int64_t>(chunk_, N - n0);
    std::copy(x.data() + n0 * image, x.data() + (n0 + n) * image, blob.ptr<float>());
    std::fill(blob.ptr<float>() + n * image, blob.ptr<float>() + chunk_ * image, 0.0f);
    cv::Mat out;
    try {
      impl_->net.setInput(blob);
      out = impl_->net.forward();
    } catch (const cv::Exception& e) {
      throw std::runtime_error("opencv: running '" + path_ + "' on a batch of " + shape_str(x.shape()) +
                               " failed: " + e.what());
    }
    check(out.dims >= 2 && out.size[0] == chunk_ && out.isContinuous() && out.type() == CV_32F, "OpenCvNet::forward",
          "'" + path_ + "' gave an output that is not [" + std::to_string(chunk_) + ", K] float");
    const int64_t K = int64_t(out.total()) / chunk_;
    if (!y.numel()) y = Tensor::empty({N, K});
    std::copy(out.ptr<float>(), out.ptr<float>() + n * K, y.data() + n0 * K);
  }
  return y;
}

std::vector<std::string> OpenCvNet::layer_names() const {
  std::vector<std::string> out;
  for (const cv::String& name : impl_->net.getLayerNames()) {  // layer ids 1.., as the timings
    const std::string prefix = "onnx_node!";  // what OpenCV 4.6's importer puts before a node's name
    out.push_back(name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name);
  }
  return out;
}

std::vector<double> OpenCvNet::last_layer_ms() const {
  std::vector<double> ms;
  impl_->net.getPerfProfile(ms);  // ticks
  const double ms_per_tick = 1000.0 / cv::getTickFrequency();
  for (double& t : ms) t *= ms_per_tick;
  return ms;
}

void set_opencv_threads(int threads) { cv::setNumThreads(threads); }

}  // namespace spnas
