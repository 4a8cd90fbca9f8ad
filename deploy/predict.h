// Classifying image files with a trained network: `spnas predict`. Images are prepared exactly as
// evaluation prepares them (nas/train.h eval_loader over data/'s image-file dataset: fitted to the
// training set's image size, cropped / resized to the network's input, normalised), then run by our
// engine or, with `onnx` set, by OpenCV's dnn on the exported file (fed [0, 1] NCHW input: the file
// normalises inside).
#pragma once
#include <string>
#include <vector>

#include "data/data.h"
#include "engine/tensor.h"

namespace spnas {

struct PredictOptions {
  std::string checkpoint;           // written by `spnas train`: network, class names, preprocessing
  std::vector<std::string> inputs;  // JPEG/PNG/BMP files or folders of them (recursive)
  int top_k = 5;                    // clipped to the number of classes
  bool use_ema = true;              // false: the raw trained weights
  std::string onnx;                 // empty: our engine; else this .onnx file through OpenCV dnn
  int batch = 32;
  DataSpec data;                    // as ExportOptions::data, for checkpoints without an input record
};

struct ClassScore {
  int index = 0;
  std::string name;
  double probability = 0;
};

struct ImagePrediction {
  std::string path;
  std::vector<ClassScore> top;  // most probable first
  std::vector<float> logits;
};

// Throws naming the file for a missing or corrupt image, a bad checkpoint, or an .onnx file whose
// output does not have one value per class; the onnx backend in a build without OpenCV says so.
std::vector<ImagePrediction> predict_images(const PredictOptions& options);

// "path\n  81.23 %  cat\n ..." per image, and the JSON list
// [{"path": ..., "top": [{"class": "cat", "index": 3, "probability": 0.8123}, ...]}, ...].
std::string predictions_text(const std::vector<ImagePrediction>& predictions);
std::string predictions_json(const std::vector<ImagePrediction>& predictions);

// Softmax of one row of logits, the k most probable classes (ties: the lower index first).
std::vector<ClassScore> top_classes(const float* logits, const std::vector<std::string>& class_names, int k);

// [N, H, W, C] -> [N, C, H, W]: our engine's layout to ONNX's.
Tensor nhwc_to_nchw(const Tensor& x);

}  // namespace spnas
