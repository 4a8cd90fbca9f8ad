// Runs an ONNX file with OpenCV's dnn module (an ONNX importer independent of ours and of the ONNX
// project's): the second runtime of `spnas predict --onnx`, of the export test and of bench_infer.
// Built only with OpenCV (SPNAS_HAVE_OPENCV: Debian's libopencv-dnn-dev).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace spnas {

class OpenCvNet {
 public:
  // cv::dnn::readNetFromONNX, backend OpenCV, target CPU. Throws naming the file if OpenCV refuses it.
  // file_batch: the batch dimension the file declares, 0 for a symbolic one. OpenCV 4.6 fixes a
  // symbolic batch at 1 when it imports a file and then computes broadcasting products (our SE
  // layers) wrongly for other batches, so forward() feeds the network chunks of exactly the file's
  // batch (1 for a symbolic one), the last one zero-padded.
  OpenCvNet(const std::string& onnx_path, int file_batch);
  // The same from the model's bytes in memory (onnx_model_bytes); `name` stands for the file in errors.
  OpenCvNet(const std::string& model_bytes, int file_batch, const std::string& name);
  ~OpenCvNet();
  OpenCvNet(const OpenCvNet&) = delete;
  OpenCvNet& operator=(const OpenCvNet&) = delete;

  // images: float [N, C, H, W] (NCHW), any N; returns the model's first output, [N, K].
  Tensor forward(const Tensor& images_nchw);
  const std::string& path() const { return path_; }

  // The network's layers in the order they run: the ONNX nodes' names (the exporter's "block3/expand",
  // ...), as OpenCV keeps them.
  std::vector<std::string> layer_names() const;
  // OpenCV's own timing of each of those layers in the last forward() call (ms, its wall clock;
  // cv::dnn::Net::getPerfProfile). A layer OpenCV fused into the one before it (an activation into
  // its convolution, ...) shows about 0. The sum leaves out what forward() spends outside the layers
  // (the input copied in, the output out).
  std::vector<double> last_layer_ms() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  int chunk_;
};

// OpenCV's own thread pool (cv::setNumThreads), shared by every OpenCvNet of the process.
void set_opencv_threads(int threads);

}  // namespace spnas
