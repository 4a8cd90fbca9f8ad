// The timed network in oneDNN primitives (builds with SPNAS_HAVE_DNNL): every convolution a oneDNN
// convolution (NHWC activations, weights in the layout oneDNN picks, batch norm folded into a bias,
// activation and residual addition fused as post-ops), the head's pooling and linear layer oneDNN
// pooling and inner product. Inference only, no SE. The peer the engine's latency is compared with.
#pragma once
#ifdef SPNAS_HAVE_DNNL
#include <memory>
#include <vector>

#include "nas/latency/networks.h"

namespace spnas {

// The network of `choice` (se must be empty or all false); `images` (NHWC) are its input, used in place.
std::unique_ptr<PieceNet> make_onednn_net(const SearchSpace& space, const std::vector<Choice>& choice,
                                          const std::vector<bool>& se, const Tensor& images, uint64_t seed);
// oneDNN runs on its own OpenMP threads: their number.
void set_onednn_threads(int n);

}  // namespace spnas
#endif
