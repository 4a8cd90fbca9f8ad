// The timed network in OpenCV's dnn module (builds with SPNAS_HAVE_ONNX and SPNAS_HAVE_OPENCV): the
// network ChildNet builds for the architecture, exported to ONNX as `spnas export` writes it
// (onnx_model_bytes: batch norm folded, a fixed batch) and run whole by OpenCV, as a user who deploys
// the file runs it. Per-piece times come from OpenCV's own per-layer timing of that run, the layers
// assigned to pieces by the exporter's node names. Inference only; SE included.
#pragma once
#if SPNAS_HAVE_ONNX && SPNAS_HAVE_OPENCV
#include <memory>
#include <string>
#include <vector>

#include "nas/latency/networks.h"

namespace spnas {

// The network of `choice` and `se` in `space` (loaded again by its name or file, as ChildNet does);
// `images` (NHWC) are its input, converted once to the file's NCHW.
std::unique_ptr<PieceNet> make_opencv_net(const SearchSpace& space, const std::vector<Choice>& choice,
                                          const std::vector<bool>& se, const Tensor& images, uint64_t seed);

// The piece (0: stem, 1..blocks: block i - 1, blocks + 1: head) an exported layer belongs to, from
// its node name: "blockN/..." is block N's; "head/..." and the classifier "logits" are the head's;
// everything else (the normalisation, the stem) the stem's.
int opencv_layer_piece(const std::string& layer_name, int blocks);

}  // namespace spnas
#endif
