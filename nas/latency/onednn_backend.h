// The timed network in oneDNN primitives (builds with SPNAS_HAVE_DNNL): every convolution a oneDNN
// convolution (NHWC activations, weights in the layout oneDNN picks, batch norm folded into a bias,
// activation and residual addition fused as post-ops), the head's pooling and linear layer oneDNN
// pooling and inner product. Inference only, no SE. The peer the engine's latency is compared with.
#pragma once
#ifdef SPNAS_HAVE_DNNL
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nas/latency/networks.h"

namespace spnas {

// The network of `choice` (se must be empty or all false); `images` (NHWC) are its input, used in place.
std::unique_ptr<PieceNet> make_onednn_net(const SearchSpace& space, const std::vector<Choice>& choice,
                                          const std::vector<bool>& se, const Tensor& images, uint64_t seed);
// Where one inference run of `net` (made by make_onednn_net) spends its time, per kind of primitive
// ("stem", "pointwise", "depthwise", "pool", "classifier"): the median over `runs` runs of each
// kind's ms per run, every primitive timed on its own (the stream waited on after each).
std::vector<std::pair<std::string, double>> onednn_time_by_kind(PieceNet& net, int runs);
// oneDNN runs on its own OpenMP threads: their number.
void set_onednn_threads(int n);

}  // namespace spnas
#endif
