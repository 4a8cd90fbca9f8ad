// Networks of the search: the supernet (one superkernel per searchable layer, with its trainable
// thresholds) and the child network (a decoded architecture, skipped layers removed).
//
// Both are stem -> MBConv layers -> head:
//   stem:   conv KxK (SAME) + BN + act
//   MBConv: [1x1 expand + BN + act] -> kxk depthwise + BN + act -> [SE] -> 1x1 project + BN -> [+ x]
//   head:   1x1 conv + BN + act -> global average pool -> dropout -> linear (with bias)
// Convolutions have no bias (batch norm follows them).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/params.h"
#include "engine/rng.h"
#include "nas/space.h"
#include "ops/ops.h"

namespace spnas {

struct NetConfig {
  float bn_momentum = 0.99f;
  float bn_eps = 1e-3f;
  float dropout = -1.0f;  // < 0: the space's
  uint64_t seed = 1;      // initialisation
};

// Batch norm parameters (gamma, beta: no weight decay, group "bn") and running statistics (buffers).
struct BNLayer {
  Var gamma, beta;
  BatchNorm state;
  void init(ParamSet& ps, const std::string& name, int64_t channels, const NetConfig& cfg);
  Var operator()(const Var& x, bool training, Act act);
  // pwconv(this(x), w) without materializing this layer's output (bn_act_pwconv, ops/ops.h).
  Var then_pwconv(const Var& x, bool training, Act act, const Var& w);
};

// Indicator values of one searchable layer in one forward pass (after warm-up dropping), and the
// margins norm - threshold that produced them (for logging).
struct LayerIndicators {
  Var d_k5, d_e6, d_skip, d_se;  // d_skip / d_se are constants 1 / 0 where not searched
  float m_k5 = 0, m_e6 = 0, m_skip = 0, m_se = 0;
  bool has_skip = false, has_se = false;
};

struct ForwardOptions {
  bool training = true;
  // Warm-up regularisation: drop each indicator with this probability (0 after warm-up), scaling the
  // kept ones by 1 / (1 - p).
  float indicator_drop = 0.0f;
  Rng* rng = nullptr;  // for dropout and indicator dropping
};

class Network {
 public:
  virtual ~Network() = default;
  virtual Var forward(const Var& images, const ForwardOptions& opt) = 0;
  ParamSet& params() { return params_; }
  const SearchSpace& space() const { return space_; }
  int64_t macs() const { return macs_; }  // multiply-adds per image (convolutions and linear)
  Act activation() const { return act_; }
  // The stem and head's weights, for exporters (deploy/onnx_export.cpp) that rebuild the network.
  const Var& stem_weight() const { return stem_w_; }  // [K, K, 3, C]
  const BNLayer& stem_bn() const { return stem_bn_; }
  const Var& head_weight() const { return head_w_; }  // [Cin, C] (1x1 convolution)
  const BNLayer& head_bn() const { return head_bn_; }
  const Var& fc_weight() const { return fc_w_; }  // [C, classes]
  const Var& fc_bias() const { return fc_b_; }

 protected:
  ParamSet params_;
  SearchSpace space_;
  int64_t macs_ = 0;
  Act act_ = Act::ReLU;
  NetConfig cfg_;
  // stem and head, shared by both networks
  Var stem_w_, head_w_, fc_w_, fc_b_;
  BNLayer stem_bn_, head_bn_;
  void build_stem(const NetConfig& cfg);
  void build_head(int cin, const NetConfig& cfg);
  Var stem(const Var& x, bool training);
  Var head(const Var& x, const ForwardOptions& opt);
  Rng init_rng_{1};
};

// One MBConv layer with a fixed kernel size, expansion and SE flag (child layers, fixed layers).
struct MBConvBlock {
  LayerSpec spec;
  int kernel = 3, expansion = 6, hidden = 0;
  bool se = false;
  Var w_expand, w_dw, w_project, w_se_reduce, b_se_reduce, w_se_expand, b_se_expand;
  BNLayer bn_expand, bn_dw, bn_project;
};

class ChildNet : public Network {
 public:
  ChildNet(const Arch& arch, const NetConfig& cfg = {});
  Var forward(const Var& images, const ForwardOptions& opt) override;
  const Arch& arch() const { return arch_; }
  const std::vector<MBConvBlock>& blocks() const { return blocks_; }

 private:
  Arch arch_;
  std::vector<MBConvBlock> blocks_;
};

// A searchable layer: full-size 1x1 convolutions, one 5x5 depthwise superkernel over 6*cin
// channels, thresholds t_k5, t_e6, t_skip (and t_se with searchable SE), all initialised to 0.
struct SuperLayer {
  LayerSpec spec;
  int hidden = 0, half = 0;  // 6 * cin and 3 * cin
  bool se = false;           // SE branch present (searchable SE on)
  Var w_expand, w_dw, w_project, w_se_reduce, b_se_reduce, w_se_expand, b_se_expand;
  BNLayer bn_expand, bn_dw, bn_project;
  Var t_k5, t_e6, t_skip, t_se;
  Tensor ring_mask, center_mask;  // [5, 5, hidden]: outer 16 taps / inner 3x3 (constants)
};

struct SupernetConfig : NetConfig {
  bool search_se = false;    // journal version: a fourth threshold gating an SE branch
  bool squared_norm = false;  // use ||.||^2 instead of ||.|| in the indicators
  // < 0 (default, the paper): every threshold starts at 0. >= 0: each starts at its indicator's
  // norm at initialisation minus this margin, so every candidate is still on but the margins start
  // small. At full width the initial norms are 8-50, where sigma' (the straight-through gradient)
  // is 3e-4 to 1e-21 and the thresholds cannot move within a search of a few epochs.
  float threshold_margin = -1.0f;
};

class Supernet : public Network {
 public:
  Supernet(const SearchSpace& space, const SupernetConfig& cfg = {});
  Var forward(const Var& images, const ForwardOptions& opt) override;
  // Indicators of the last forward pass, one per searchable layer.
  const std::vector<LayerIndicators>& indicators() const { return last_; }
  std::vector<SuperLayer>& layers() { return layers_; }
  // The superkernel of searchable layer i as a differentiable expression of its weights and
  // thresholds (also fills `ind`). Exposed for tests.
  Var effective_kernel(SuperLayer& L, LayerIndicators& ind, const ForwardOptions& opt);
  // The indicators and margins of the current weights and thresholds, without dropping (what the
  // search logs and decodes; during warm-up the forward pass's own indicators are dropped at random).
  std::vector<LayerIndicators> current_indicators();
  // Decodes the current thresholds (no dropping) into an architecture.
  Arch decode(const std::string& space_source);
  const SupernetConfig& config() const { return scfg_; }

 private:
  SupernetConfig scfg_;
  std::vector<MBConvBlock> fixed_;    // fixed layers, in order of appearance
  std::vector<SuperLayer> layers_;    // searchable layers
  std::vector<int> order_;            // for each space layer: index into fixed_ (>= 0) or -(1 + searchable index)
  std::vector<LayerIndicators> last_;
};

// MnasNet's initialisation: normal with std sqrt(2 / fan_out), fan_out = kh * kw * out_channels
// (for a depthwise kernel out_channels is its depth multiplier, 1).
Tensor he_normal(Rng& rng, const Shape& shape, int64_t fan_out);

// Builds an MBConv block's parameters (used by ChildNet and for the supernet's fixed layers).
MBConvBlock make_mbconv(ParamSet& ps, const std::string& prefix, const LayerSpec& spec, int kernel, int expansion,
                        bool se, const NetConfig& cfg, Rng& rng);
Var mbconv_forward(MBConvBlock& b, const Var& x, bool training, Act act);
int64_t mbconv_macs(const LayerSpec& spec, int kernel, int expansion, bool se);

// The space's architecture with every searchable layer at `c` (e.g. all 5x5-6).
Arch uniform_arch(const SearchSpace& s, Choice c);

// What a network costs, from its shapes alone: no tensor is built, so a file that asks for an absurd
// size is refused before any memory is touched, and `info` answers instantly at any width.
struct NetCost {
  int64_t params = 0;                // trainable parameters: ParamSet::count() of the built network
  int64_t macs = 0;                  // multiply-adds per image (convolutions and the classifier)
  double activations_per_image = 0;  // floats a training step keeps for backward, per image
  double largest_per_image = 0;      // floats of the largest single activation, per image
  // Bytes of a training step at `batch`: weights, gradients, optimizer slots and EMA shadows, the
  // activations kept for backward and the transient gradients of the largest tensors (an estimate).
  double training_bytes(int batch, int optimizer_slots, bool ema) const;
};
NetCost child_cost(const SearchSpace& space, const Arch& arch);
NetCost supernet_cost(const SearchSpace& space, const SupernetConfig& cfg);

}  // namespace spnas
