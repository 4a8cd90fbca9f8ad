// Networks built for timing: a network that runs piece by piece (stem, each MBConv layer, head) and
// takes a timestamp after every piece, so one run splits exactly into per-piece times. The engine's
// network (TimedNet: the same pieces and weights as ChildNet), the same network in oneDNN
// primitives (onednn_backend.h), or its exported ONNX file in OpenCV dnn (opencv_backend.h).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/rng.h"
#include "nas/model.h"
#include "nas/space.h"

namespace spnas {

class PieceNet {
 public:
  virtual ~PieceNet() = default;
  // Piece 0 is the stem, pieces 1..B the MBConv layers present, B + 1 the head.
  virtual int num_pieces() const = 0;
  // One run; piece_ms[i] gets the time of piece i (stamp_now's clock, harness.h). Returns the total.
  virtual double run(const Var& images, const std::vector<int>& labels, bool training, Rng& rng, double* piece_ms) = 0;
  // For each space layer: its piece index, or -1 where the layer is skipped.
  const std::vector<int>& layer_piece() const { return layer_piece_; }

 protected:
  std::vector<int> layer_piece_;
};

// The activation a space names.
Act space_activation(const SearchSpace& space);

// The decoded network of `choice` (one per searchable layer) with SE where `se` says (empty: none),
// built and initialised exactly as ChildNet builds it (model.h: the same stem, MBConv blocks and
// head, the same weights for the same seed), run piece by piece. Inference is NoGrad with batch norm
// folded in; a training step is forward (batch statistics, dropout) + cross-entropy + backward, with
// an identity marker on the tape after each piece that timestamps the backward pass too.
class TimedNet : public PieceNet, public Network {
 public:
  TimedNet(const SearchSpace& space, const std::vector<Choice>& choice, const std::vector<bool>& se, uint64_t seed);
  int num_pieces() const override { return int(blocks_.size()) + 2; }
  double run(const Var& images, const std::vector<int>& labels, bool training, Rng& rng, double* piece_ms) override;
  // The whole network untimed, as ChildNet::forward (tests check that the two agree).
  Var forward(const Var& images, const ForwardOptions& opt) override;

 private:
  double run_inference(const Var& images, double* piece_ms);
  double run_training_step(const Var& images, const std::vector<int>& labels, Rng& rng, double* piece_ms);
  std::vector<MBConvBlock> blocks_;
  std::vector<double> stamps_;  // the backward pass's time markers
};

// The network of `backend`: "spnas", "onednn" (built with oneDNN) or "opencv" (built with ONNX and
// OpenCV); throws naming the backend and what the build lacks when it is not available. `images`
// are the other backends' input (oneDNN: used in place; OpenCV: copied).
std::unique_ptr<PieceNet> make_piece_net(const std::string& backend, const SearchSpace& space,
                                         const std::vector<Choice>& choice, const std::vector<bool>& se,
                                         const Tensor& images, uint64_t seed);
// Throws unless `backend` exists in this build and can time this kind of run (oneDNN and OpenCV:
// inference only); gives oneDNN's or OpenCV's own threads the thread count.
void prepare_backend(const std::string& backend, bool training_step, int threads);

}  // namespace spnas
