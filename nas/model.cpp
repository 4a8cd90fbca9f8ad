#include "nas/model.h"

#include <cmath>

namespace spnas {

// ---- building blocks -------------------------------------------------------------------------

void BNLayer::init(ParamSet& ps, const std::string& name, int64_t channels, const NetConfig& cfg) {
  gamma = ps.add(name + "/gamma", Tensor::full({channels}, 1.0f), false, "bn");
  beta = ps.add(name + "/beta", Tensor::zeros({channels}), false, "bn");
  state.running_mean = ps.add_buffer(name + "/running_mean", Tensor::zeros({channels}));
  state.running_var = ps.add_buffer(name + "/running_var", Tensor::full({channels}, 1.0f));
  state.momentum = cfg.bn_momentum;
  state.eps = cfg.bn_eps;
}

Var BNLayer::operator()(const Var& x, bool training, Act act) { return batchnorm(x, gamma, beta, state, training, act); }
Var BNLayer::then_pwconv(const Var& x, bool training, Act act, const Var& w) {
  return bn_act_pwconv(x, gamma, beta, state, training, act, w);
}

Tensor he_normal(Rng& rng, const Shape& shape, int64_t fan_out) {
  Tensor t = Tensor::empty(shape);
  const float std = std::sqrt(2.0f / float(fan_out));
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = std * rng.normal();
  return t;
}

static Act space_act(const SearchSpace& s) { return s.activation == "relu6" ? Act::ReLU6 : Act::ReLU; }

static int se_channels(int cin) { return std::max(1, cin / 4); }

int64_t mbconv_macs(const LayerSpec& l, int kernel, int expansion, bool se) {
  const int64_t hidden = int64_t(l.cin) * expansion;
  const int64_t in_px = int64_t(l.in_size) * l.in_size, out_px = int64_t(l.out_size) * l.out_size;
  int64_t m = 0;
  if (expansion != 1) m += in_px * l.cin * hidden;
  m += out_px * kernel * kernel * hidden;
  if (se) m += 2 * hidden * se_channels(l.cin);
  m += out_px * hidden * l.cout;
  return m;
}

MBConvBlock make_mbconv(ParamSet& ps, const std::string& p, const LayerSpec& spec, int kernel, int expansion, bool se,
                        const NetConfig& cfg, Rng& rng) {
  MBConvBlock b;
  b.spec = spec;
  b.kernel = kernel;
  b.expansion = expansion;
  b.hidden = spec.cin * expansion;
  b.se = se;
  if (expansion != 1) {
    b.w_expand = ps.add(p + "/expand", he_normal(rng, {spec.cin, b.hidden}, b.hidden));
    b.bn_expand.init(ps, p + "/expand_bn", b.hidden, cfg);
  }
  b.w_dw = ps.add(p + "/depthwise", he_normal(rng, {kernel, kernel, b.hidden}, kernel * kernel));
  b.bn_dw.init(ps, p + "/depthwise_bn", b.hidden, cfg);
  if (se) {
    int s = se_channels(spec.cin);
    b.w_se_reduce = ps.add(p + "/se_reduce", he_normal(rng, {b.hidden, s}, s));
    b.b_se_reduce = ps.add(p + "/se_reduce_bias", Tensor::zeros({s}));
    b.w_se_expand = ps.add(p + "/se_expand", he_normal(rng, {s, b.hidden}, b.hidden));
    b.b_se_expand = ps.add(p + "/se_expand_bias", Tensor::zeros({b.hidden}));
  }
  b.w_project = ps.add(p + "/project", he_normal(rng, {b.hidden, spec.cout}, spec.cout));
  b.bn_project.init(ps, p + "/project_bn", spec.cout, cfg);
  return b;
}

// Squeeze-and-excitation gate s(x) in (0, 1), [N, hidden]: pool -> linear + ReLU -> linear + sigmoid.
static Var se_gate(const Var& h, const Var& wr, const Var& br, const Var& we, const Var& be) {
  Var pooled = global_avgpool(h);
  return sigmoid(linear(relu(linear(pooled, wr, br)), we, be));
}

// The two hidden-size activations after batch norm + act are released once their consumers have
// run and recomputed in backward (release_value): a step then keeps two of the four hidden-size
// tensors of every block.
Var mbconv_forward(MBConvBlock& b, const Var& x, bool training, Act act) {
  if (!training && !grad_enabled()) {
    // Inference: every convolution with its batch norm folded in, one pass over each output.
    Var h = x;
    if (b.expansion != 1) h = pwconv_bn_act(h, b.w_expand, b.bn_expand.gamma, b.bn_expand.beta, b.bn_expand.state, act);
    Var a = dwconv_bn_act(h, b.w_dw, b.spec.stride, b.bn_dw.gamma, b.bn_dw.beta, b.bn_dw.state, act);
    if (b.se) a = channel_scale(a, se_gate(a, b.w_se_reduce, b.b_se_reduce, b.w_se_expand, b.b_se_expand));
    Var y = pwconv_bn_act(a, b.w_project, b.bn_project.gamma, b.bn_project.beta, b.bn_project.state, Act::None);
    return b.spec.residual ? y + x : y;
  }
  Var h = x;
  if (b.expansion != 1) {
    Var e = b.bn_expand(pwconv(h, b.w_expand), training, act);
    h = dwconv2d(e, b.w_dw, b.spec.stride);
    release_value(e);
  } else {
    h = dwconv2d(h, b.w_dw, b.spec.stride);
  }
  Var p;
  if (b.se) {
    Var a = b.bn_dw(h, training, act);
    Var s = channel_scale(a, se_gate(a, b.w_se_reduce, b.b_se_reduce, b.w_se_expand, b.b_se_expand));
    release_value(a);
    p = pwconv(s, b.w_project);
  } else {
    // The depthwise output's batch norm + activation is read by the project GEMM, never stored.
    p = b.bn_dw.then_pwconv(h, training, act, b.w_project);
  }
  Var y = b.bn_project(p, training, Act::None);
  return b.spec.residual ? y + x : y;
}

// ---- costs from shapes -----------------------------------------------------------------------

namespace {

// One MBConv layer's parameters (with batch norm's gamma and beta) and the activations a training
// step keeps: the expansion's output, the depthwise output, and the projection's output, its batch
// norm and the residual sum (the batch-norm + activation outputs inside are released, as built).
void add_mbconv_cost(NetCost& n, const LayerSpec& l, int kernel, int expansion, bool se) {
  const int64_t hidden = int64_t(l.cin) * expansion;
  if (expansion != 1) n.params += int64_t(l.cin) * hidden + 2 * hidden;
  n.params += int64_t(kernel) * kernel * hidden + 2 * hidden;
  if (se) n.params += 2 * hidden * se_channels(l.cin) + se_channels(l.cin) + hidden;
  n.params += hidden * l.cout + 2 * int64_t(l.cout);
  n.macs += mbconv_macs(l, kernel, expansion, se);
  const double in = double(l.in_size) * l.in_size, out = double(l.out_size) * l.out_size;
  n.activations_per_image += (expansion != 1 ? hidden * in : 0) + hidden * out * (se ? 3 : 1) + 3.0 * l.cout * out;
  n.largest_per_image = std::max(n.largest_per_image, hidden * std::max(in, out));
}

// Stem (conv + batch norm) and head (1x1 conv + batch norm, pool, classifier), shared by both networks.
void add_stem_head_cost(NetCost& n, const SearchSpace& s) {
  const int k = s.stem_kernel, c = s.stem_channels, hc = s.head_channels, K = s.num_classes;
  const int64_t out = (s.input_size + s.stem_stride - 1) / s.stem_stride;
  n.params += int64_t(k) * k * s.input_channels * c + 2 * int64_t(c);
  n.macs += out * out * k * k * s.input_channels * c;
  n.activations_per_image += double(s.input_channels) * s.input_size * s.input_size + 2.0 * c * out * out;
  const int64_t cin = s.layers.back().cout, size = s.layers.back().out_size;
  n.params += int64_t(cin) * hc + 2 * int64_t(hc) + int64_t(hc) * K + K;
  n.macs += size * size * cin * hc + int64_t(hc) * K;
  n.activations_per_image += 2.0 * hc * size * size;
  n.largest_per_image = std::max(n.largest_per_image, double(c) * out * out);
}

}  // namespace

double NetCost::training_bytes(int batch, int optimizer_slots, bool ema) const {
  const double weights = double(params) * (2 + optimizer_slots + (ema ? 1 : 0));
  return 4.0 * (weights + double(batch) * (activations_per_image + 2 * largest_per_image));
}

NetCost child_cost(const SearchSpace& s, const Arch& arch) {
  validate_arch(arch, s, "architecture");
  NetCost n;
  add_stem_head_cost(n, s);
  int si = 0;
  for (const LayerSpec& l : s.layers) {
    if (!l.searchable) {
      add_mbconv_cost(n, l, l.kernel, l.expansion, false);
      continue;
    }
    const Choice c = arch.layers[si];
    const bool se = !arch.se.empty() && arch.se[si];
    ++si;
    if (c != Choice::Skip) add_mbconv_cost(n, l, choice_kernel(c), choice_expansion(c), se);
  }
  return n;
}

NetCost supernet_cost(const SearchSpace& s, const SupernetConfig& cfg) {
  NetCost n;
  add_stem_head_cost(n, s);
  for (const LayerSpec& l : s.layers) {
    if (!l.searchable) {
      add_mbconv_cost(n, l, l.kernel, l.expansion, false);
      continue;
    }
    add_mbconv_cost(n, l, 5, 6, cfg.search_se);
    n.params += 2 + (l.skip_allowed ? 1 : 0) + (cfg.search_se ? 1 : 0);  // the thresholds
  }
  return n;
}

// ---- stem and head ---------------------------------------------------------------------------

void Network::build_stem(const NetConfig& cfg) {
  const int k = space_.stem_kernel, c = space_.stem_channels;
  stem_w_ = params_.add("stem/conv", he_normal(init_rng_, {k, k, space_.input_channels, c}, int64_t(k) * k * c));
  stem_bn_.init(params_, "stem/bn", c, cfg);
}

void Network::build_head(int cin, const NetConfig& cfg) {
  const int c = space_.head_channels, K = space_.num_classes;
  head_w_ = params_.add("head/conv", he_normal(init_rng_, {cin, c}, c));
  head_bn_.init(params_, "head/bn", c, cfg);
  Tensor w = Tensor::empty({c, K});
  const float r = 1.0f / std::sqrt(float(K));
  for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] = init_rng_.uniform(-r, r);
  fc_w_ = params_.add("head/fc", w);
  fc_b_ = params_.add("head/fc_bias", Tensor::zeros({K}));
}

Var Network::stem(const Var& x, bool training) {
  const Tensor& X = x->value;
  check(X.rank() == 4 && X.dim(3) == space_.input_channels, "network",
        "input images must be [N, H, W, " + std::to_string(space_.input_channels) + "], got " + shape_str(X.shape()));
  return stem_bn_(conv2d_same(x, stem_w_, space_.stem_stride), training, act_);
}

Var Network::head(const Var& x, const ForwardOptions& opt) {
  Var h = !opt.training && !grad_enabled()
              ? pwconv_bn_act(x, head_w_, head_bn_.gamma, head_bn_.beta, head_bn_.state, act_)
              : head_bn_(pwconv(x, head_w_), opt.training, act_);
  h = global_avgpool(h);
  float p = cfg_.dropout >= 0 ? cfg_.dropout : space_.dropout;
  if (opt.training && p > 0) {
    check(opt.rng != nullptr, "network", "training with dropout needs a random generator");
    h = dropout(h, p, *opt.rng, true);
  }
  return linear(h, fc_w_, fc_b_);
}

// ---- child network ---------------------------------------------------------------------------

Arch uniform_arch(const SearchSpace& s, Choice c) {
  Arch a;
  a.space = s.source;
  a.width = s.width;
  a.layers.assign(s.num_searchable(), c);
  return a;
}

ChildNet::ChildNet(const Arch& arch, const NetConfig& cfg) : arch_(arch) {
  SpaceOptions so;
  so.width = arch.width;
  so.input_size = arch.input_size;
  so.num_classes = arch.num_classes;
  so.input_channels = arch.input_channels;
  space_ = load_space(arch.space, so);
  validate_arch(arch, space_, "architecture");
  cfg_ = cfg;
  act_ = space_act(space_);
  init_rng_.seed_with(cfg.seed);
  build_stem(cfg);
  int si = 0, cin = space_.stem_channels;
  for (size_t i = 0; i < space_.layers.size(); ++i) {
    LayerSpec l = space_.layers[i];
    int k = l.kernel, e = l.expansion;
    bool se = false;
    if (l.searchable) {
      Choice c = arch.layers[si];
      se = !arch.se.empty() && arch.se[si];
      ++si;
      if (c == Choice::Skip) continue;  // removed: an identity (skip is only allowed where shapes match)
      k = choice_kernel(c);
      e = choice_expansion(c);
    }
    blocks_.push_back(make_mbconv(params_, "layer" + std::to_string(i), l, k, e, se, cfg, init_rng_));
    cin = l.cout;
  }
  build_head(cin, cfg);
  macs_ = child_cost(space_, arch).macs;
}

Var ChildNet::forward(const Var& images, const ForwardOptions& opt) {
  Var x = stem(images, opt.training);
  for (MBConvBlock& b : blocks_) x = mbconv_forward(b, x, opt.training, act_);
  return head(x, opt);
}

// ---- supernet --------------------------------------------------------------------------------

// Ring (outer 16 taps of the 5x5) and centre (inner 3x3) masks over [5, 5, C].
static void superkernel_masks(int64_t C, Tensor* ring, Tensor* center) {
  *ring = Tensor::empty({5, 5, C});
  *center = Tensor::empty({5, 5, C});
  for (int kh = 0; kh < 5; ++kh)
    for (int kw = 0; kw < 5; ++kw) {
      bool inner = kh >= 1 && kh <= 3 && kw >= 1 && kw <= 3;
      for (int64_t c = 0; c < C; ++c) {
        ring->data()[(kh * 5 + kw) * C + c] = inner ? 0.0f : 1.0f;
        center->data()[(kh * 5 + kw) * C + c] = inner ? 1.0f : 0.0f;
      }
    }
}

Supernet::Supernet(const SearchSpace& space, const SupernetConfig& cfg) : scfg_(cfg) {
  space_ = space;
  cfg_ = cfg;
  act_ = space_act(space_);
  init_rng_.seed_with(cfg.seed);
  build_stem(cfg);
  for (size_t i = 0; i < space_.layers.size(); ++i) {
    const LayerSpec& l = space_.layers[i];
    std::string p = "layer" + std::to_string(i);
    if (!l.searchable) {
      order_.push_back(int(fixed_.size()));
      fixed_.push_back(make_mbconv(params_, p, l, l.kernel, l.expansion, false, cfg, init_rng_));
      continue;
    }
    order_.push_back(-1 - int(layers_.size()));
    SuperLayer L;
    L.spec = l;
    L.hidden = 6 * l.cin;
    L.half = 3 * l.cin;
    L.se = cfg.search_se;
    L.w_expand = params_.add(p + "/expand", he_normal(init_rng_, {l.cin, L.hidden}, L.hidden));
    L.bn_expand.init(params_, p + "/expand_bn", L.hidden, cfg);
    L.w_dw = params_.add(p + "/depthwise", he_normal(init_rng_, {5, 5, L.hidden}, 25));
    superkernel_masks(L.hidden, &L.ring_mask, &L.center_mask);
    L.bn_dw.init(params_, p + "/depthwise_bn", L.hidden, cfg);
    if (L.se) {
      int s = se_channels(l.cin);
      L.w_se_reduce = params_.add(p + "/se_reduce", he_normal(init_rng_, {L.hidden, s}, s));
      L.b_se_reduce = params_.add(p + "/se_reduce_bias", Tensor::zeros({s}));
      L.w_se_expand = params_.add(p + "/se_expand", he_normal(init_rng_, {s, L.hidden}, L.hidden));
      L.b_se_expand = params_.add(p + "/se_expand_bias", Tensor::zeros({L.hidden}));
    }
    L.w_project = params_.add(p + "/project", he_normal(init_rng_, {L.hidden, l.cout}, l.cout));
    L.bn_project.init(params_, p + "/project_bn", l.cout, cfg);
    L.t_k5 = params_.add(p + "/t_k5", Tensor::scalar(0.0f), true, "thresholds");
    L.t_e6 = params_.add(p + "/t_e6", Tensor::scalar(0.0f), true, "thresholds");
    if (l.skip_allowed) L.t_skip = params_.add(p + "/t_skip", Tensor::scalar(0.0f), true, "thresholds");
    if (L.se) L.t_se = params_.add(p + "/t_se", Tensor::scalar(0.0f), true, "thresholds");
    layers_.push_back(L);
  }
  build_head(space_.layers.back().cout, cfg);
  macs_ = supernet_cost(space_, cfg).macs;
  last_.resize(layers_.size());
  if (cfg.threshold_margin >= 0) {
    // With the thresholds at 0 the margins are the norms themselves (nesting included: every d is 1).
    NoGrad ng;
    ForwardOptions fo;
    fo.training = false;
    const float m = cfg.threshold_margin;
    for (SuperLayer& L : layers_) {
      LayerIndicators ind;
      effective_kernel(L, ind, fo);
      L.t_k5->value.data()[0] = ind.m_k5 - m;
      L.t_e6->value.data()[0] = ind.m_e6 - m;
      if (L.t_skip) L.t_skip->value.data()[0] = ind.m_skip - m;
      if (L.se) {
        Var n = cfg.squared_norm ? sqnorm(L.w_se_reduce) : l2norm(L.w_se_reduce);
        L.t_se->value.data()[0] = n->value.item() - m;
      }
    }
  }
}

// Warm-up regularisation of an indicator: 0 with probability p, else d / (1 - p).
static Var drop_indicator(const Var& d, const ForwardOptions& opt) {
  if (opt.indicator_drop <= 0) return d;
  check(opt.rng != nullptr, "supernet", "indicator dropping needs a random generator");
  return d * (opt.rng->bernoulli(opt.indicator_drop) ? 0.0f : 1.0f / (1.0f - opt.indicator_drop));
}

// The superkernel, as in the README (1(x): a hard step forward, sigmoid'(x) backward):
//   d_k5   = 1(||K_ring|| - t_k5)          K_k   = K_3x3 + d_k5 * K_ring
//   d_e6   = 1(||K_k[B]|| - t_e6)          A = the first 3*cin channels of K_k, B = the rest
//   d_skip = 1(||K_k[A]|| - t_skip)        only where the layer may be removed, else 1
//   K_eff  = d_skip * (K_k[A] + d_e6 * K_k[B])
Var Supernet::effective_kernel(SuperLayer& L, LayerIndicators& ind, const ForwardOptions& opt) {
  auto norm = [&](const Var& v) { return scfg_.squared_norm ? sqnorm(v) : l2norm(v); };
  auto indicator = [&](const Var& margin, float* logged) {
    *logged = margin->value.item();
    return drop_indicator(step_indicator(margin), opt);
  };
  const Var K_3x3 = mask(L.w_dw, L.center_mask), K_ring = mask(L.w_dw, L.ring_mask);
  ind.d_k5 = indicator(norm(K_ring) - L.t_k5, &ind.m_k5);
  const Var K_k = K_3x3 + K_ring * ind.d_k5;
  const Var A = mask_axis(K_k, 2, 0, L.half), B = mask_axis(K_k, 2, L.half, L.hidden);
  ind.d_e6 = indicator(norm(B) - L.t_e6, &ind.m_e6);
  Var K_eff = A + B * ind.d_e6;
  ind.has_skip = L.spec.skip_allowed;
  if (ind.has_skip) {
    ind.d_skip = indicator(norm(A) - L.t_skip, &ind.m_skip);
    K_eff = K_eff * ind.d_skip;
  } else {
    ind.d_skip = constant(Tensor::scalar(1.0f));
  }
  return K_eff;
}

Var Supernet::forward(const Var& images, const ForwardOptions& opt) {
  Var x = stem(images, opt.training);
  for (size_t i = 0; i < order_.size(); ++i) {
    if (order_[i] >= 0) {
      x = mbconv_forward(fixed_[order_[i]], x, opt.training, act_);
      continue;
    }
    int li = -1 - order_[i];
    SuperLayer& L = layers_[li];
    LayerIndicators& ind = last_[li];
    ind = LayerIndicators();
    Var e = L.bn_expand(pwconv(x, L.w_expand), opt.training, act_);
    Var h = dwconv2d(e, effective_kernel(L, ind, opt), L.spec.stride);
    release_value(e);  // recomputed in backward (see mbconv_forward)
    ind.has_se = L.se;
    Var p;
    if (L.se) {
      Var a = L.bn_dw(h, opt.training, act_);
      // x * (1 + d_se * (s(x) - 1)): d_se = 0 is exactly "no SE".
      Var m_se = (scfg_.squared_norm ? sqnorm(L.w_se_reduce) : l2norm(L.w_se_reduce)) - L.t_se;
      ind.m_se = m_se->value.item();
      ind.d_se = drop_indicator(step_indicator(m_se), opt);
      Var s = se_gate(a, L.w_se_reduce, L.b_se_reduce, L.w_se_expand, L.b_se_expand);
      Var gated = channel_scale(a, (s - 1.0f) * ind.d_se + 1.0f);
      release_value(a);
      p = pwconv(gated, L.w_project);
    } else {
      ind.d_se = constant(Tensor::scalar(0.0f));
      p = L.bn_dw.then_pwconv(h, opt.training, act_, L.w_project);  // as in mbconv_forward
    }
    Var y = L.bn_project(p, opt.training, Act::None);
    x = L.spec.residual ? y + x : y;
  }
  return head(x, opt);
}

std::vector<LayerIndicators> Supernet::current_indicators() {
  NoGrad ng;
  ForwardOptions opt;  // no dropping
  std::vector<LayerIndicators> all;
  for (SuperLayer& L : layers_) {
    LayerIndicators ind;
    effective_kernel(L, ind, opt);
    ind.has_se = L.se;
    if (L.se) {
      ind.m_se = ((scfg_.squared_norm ? sqnorm(L.w_se_reduce) : l2norm(L.w_se_reduce)) - L.t_se)->value.item();
      ind.d_se = constant(Tensor::scalar(ind.m_se >= 0 ? 1.0f : 0.0f));
    }
    all.push_back(ind);
  }
  return all;
}

Arch Supernet::decode(const std::string& space_source) {
  Arch a;
  a.space = space_source;
  a.width = space_.width;
  bool any_se = false;
  for (const LayerIndicators& ind : current_indicators()) {
    const Choice c = decode_choice(ind.m_k5 >= 0, ind.m_e6 >= 0, !ind.has_skip || ind.m_skip >= 0);
    a.layers.push_back(c);
    a.se.push_back(ind.has_se && ind.m_se >= 0 && c != Choice::Skip);
    any_se |= ind.has_se;
  }
  if (!any_se) a.se.clear();
  return a;
}

}  // namespace spnas
