// The trained child network as an ONNX file, for runtimes other than ours (OpenCV dnn, ONNX Runtime).
//
// The graph (deploy/README.md): input "image", float [N, 3, S, S], RGB in [0, 1] (grey [N, 1, S, S]
// for a network trained on grey images), NCHW (ONNX's
// convention; our engine is NHWC, so every weight is transposed); its first nodes subtract the
// training set's mean and divide by its std, as evaluation does. Then the stem, the MBConv blocks
// and the head as Conv nodes with batch norm folded into their weights and a bias, Relu or Clip
// (ReLU6), SE as GlobalAveragePool -> Conv -> Relu -> Conv -> Sigmoid -> Mul, residual Add, and
// GlobalAveragePool -> Flatten -> Gemm: output "logits", float [N, classes]. Our "SAME" padding
// (the extra row and column at the bottom / right) is written as explicit asymmetric pads.
// Class names, the normalisation and the architecture go into the model's metadata_props.
//
// Built only with ONNX (SPNAS_HAVE_ONNX: Debian's libonnx-dev and libprotobuf-dev): the model is
// made of the ONNX project's own protobuf classes and checked with its checker and strict shape
// inference before anything is written.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "data/data.h"
#include "nas/model.h"
#include "nas/train.h"

namespace spnas {

// Every node we emit exists since opset 10 or earlier; from opset 11 on, Clip (our ReLU6) takes its
// bounds as inputs, a form Debian's OpenCV 4.6 refuses, so the file says 10 (ONNX Runtime reads 7+).
constexpr int kOnnxOpset = 10;

struct ExportOptions {
  std::string checkpoint;  // written by `spnas train`
  std::string out;         // the .onnx file, written atomically
  bool use_ema = true;     // false: the raw trained weights
  int batch = 1;           // the input's batch dimension; 0: dynamic (the symbol "N")
  // Only for checkpoints written before run_train recorded its input (class names, image size,
  // normalisation): the dataset they were trained on supplies them. Empty kind: none.
  DataSpec data;
};

struct ExportResult {
  std::string path;
  int64_t bytes = 0;
  int nodes = 0;
  int64_t parameters = 0;  // floats in the file's initializers (after folding)
  Arch arch;
};

// Loads the checkpoint, builds and checks the graph, writes it. Throws, naming the file and the
// problem, for a search checkpoint, a truncated / corrupt / foreign file, a missing input record or
// an architecture the exporter cannot express; `out` is then left as it was.
ExportResult export_onnx(const ExportOptions& options);

// The serialized, checked model of a network holding the weights to export (batch 0: dynamic).
// `checkpoint` and `weights` only go into the metadata.
std::string onnx_model_bytes(const ChildNet& net, const InputRecord& input, int batch,
                             const std::string& checkpoint = "", const std::string& weights = "");

// What an .onnx file holds, read back with the ONNX classes and passed through the checker (which
// throws, naming the file, if the model is invalid).
struct OnnxFileInfo {
  int64_t ir_version = 0, opset = 0;
  std::string producer;
  std::vector<int64_t> input_shape, output_shape;  // -1: a symbolic dimension
  std::string input_name, output_name;
  std::map<std::string, int> op_counts;  // node op_type -> count
  std::map<std::string, std::string> metadata;
};
OnnxFileInfo read_onnx_file(const std::string& path);

}  // namespace spnas
