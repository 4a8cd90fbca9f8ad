#include "nas/latency/onednn_backend.h"
#ifdef SPNAS_HAVE_DNNL

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <unordered_map>

#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "nas/latency/harness.h"
#include "nas/latency/stats.h"

namespace spnas {

namespace {

// Buffers are allocated once; weights are random (timing only).
class OneDnnNet : public PieceNet {
 public:
  struct Step {
    std::string kind;  // onednn_time_by_kind's
    dnnl::primitive prim;
    std::unordered_map<int, dnnl::memory> args;
  };
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::vector<std::vector<Step>> pieces;
  Rng rng{1};
  dnnl::memory input;

  using md = dnnl::memory::desc;
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;

  dnnl::memory random_memory(const md& d, float scale) {
    dnnl::memory m(d, eng);
    float* p = static_cast<float*>(m.get_data_handle());
    for (size_t i = 0; i < d.get_size() / sizeof(float); ++i) p[i] = scale * rng.normal();
    return m;
  }
  // Random weights in a plain layout, reordered into the primitive's.
  dnnl::memory weights(const md& plain, const md& want, float scale) {
    dnnl::memory u = random_memory(plain, scale);
    if (plain == want) return u;
    dnnl::memory m(want, eng);
    dnnl::reorder(u, m).execute(strm, u, m);
    strm.wait();
    return m;
  }
  static void activation(dnnl::post_ops& po, Act act) {
    if (act == Act::ReLU) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    if (act == Act::ReLU6) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, 0.0f, 6.0f);
  }

  // k x k convolution with TensorFlow SAME padding (depthwise: groups = channels), bias, activation
  // and optional residual; returns the output (NHWC).
  dnnl::memory conv(std::vector<Step>& steps, const dnnl::memory& src, int64_t N, int64_t IC, int64_t H, int64_t OC,
                    int K, int S, bool depthwise, Act act, const dnnl::memory* residual) {
    using namespace dnnl;
    const int64_t OH = (H + S - 1) / S;
    const int64_t pad_total = std::max<int64_t>((OH - 1) * S + K - H, 0), pad_t = pad_total / 2;
    md dst_md({N, OC, OH, OH}, dt::f32, tag::nhwc);
    memory::dims wdims = depthwise ? memory::dims{OC, 1, 1, K, K} : memory::dims{OC, IC, K, K};
    md wany(wdims, dt::f32, tag::any), wplain(wdims, dt::f32, depthwise ? tag::goihw : tag::oihw);
    md bias_md({OC}, dt::f32, tag::x);
    auto d = convolution_forward::desc(prop_kind::forward_inference, algorithm::convolution_direct, src.get_desc(),
                                       wany, bias_md, dst_md, {S, S}, {pad_t, pad_t},
                                       {pad_total - pad_t, pad_total - pad_t});
    post_ops po;
    activation(po, act);
    int binary_index = -1;
    if (residual) {
      binary_index = po.len();
      po.append_binary(algorithm::binary_add, residual->get_desc());
    }
    primitive_attr attr;
    attr.set_post_ops(po);
    convolution_forward::primitive_desc pd(d, attr, eng);
    Step st;
    st.kind = depthwise ? "depthwise" : K == 1 ? "pointwise" : "stem";
    st.prim = convolution_forward(pd);
    const float fan = float(depthwise ? K * K : K * K * IC);
    st.args[DNNL_ARG_SRC] = src;
    st.args[DNNL_ARG_WEIGHTS] = weights(wplain, pd.weights_desc(), std::sqrt(2.0f / fan));
    st.args[DNNL_ARG_BIAS] = random_memory(bias_md, 0.01f);
    memory dst(pd.dst_desc(), eng);
    st.args[DNNL_ARG_DST] = dst;
    if (residual) st.args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(binary_index) | DNNL_ARG_SRC_1] = *residual;
    steps.push_back(st);
    return dst;
  }

  OneDnnNet(const SearchSpace& space, const std::vector<Choice>& choice, const std::vector<bool>& se,
            const Tensor& images, uint64_t seed) {
    using namespace dnnl;
    rng.seed_with(seed);
    const Act act = space_activation(space);
    const int64_t N = images.dim(0), S0 = space.input_size;
    // The engine's NHWC images, used in place.
    input = memory(md({N, 3, S0, S0}, dt::f32, tag::nhwc), eng, const_cast<float*>(images.data()));
    pieces.emplace_back();
    memory x = conv(pieces.back(), input, N, 3, S0, space.stem_channels, space.stem_kernel, space.stem_stride, false,
                    act, nullptr);
    int si = 0;
    layer_piece_.assign(space.layers.size(), -1);
    for (size_t i = 0; i < space.layers.size(); ++i) {
      const LayerSpec& l = space.layers[i];
      int k = l.kernel, e = l.expansion;
      if (l.searchable) {
        Choice c = choice[si];
        if (!se.empty() && se[si])
          throw std::runtime_error("profile: the oneDNN backend does not implement squeeze-and-excitation");
        ++si;
        if (c == Choice::Skip) continue;
        k = choice_kernel(c);
        e = choice_expansion(c);
      }
      pieces.emplace_back();
      std::vector<Step>& steps = pieces.back();
      const int64_t hid = int64_t(l.cin) * e;
      memory h = x;
      if (e != 1) h = conv(steps, h, N, l.cin, l.in_size, hid, 1, 1, false, act, nullptr);
      h = conv(steps, h, N, hid, l.in_size, hid, k, l.stride, true, act, nullptr);
      x = conv(steps, h, N, hid, l.out_size, l.cout, 1, 1, false, Act::None, l.residual ? &x : nullptr);
      layer_piece_[i] = int(pieces.size()) - 1;
    }
    // Head: 1x1 conv + act, global average pool, linear.
    pieces.emplace_back();
    std::vector<Step>& steps = pieces.back();
    const int64_t Hs = space.layers.back().out_size, C = space.head_channels, K = space.num_classes;
    memory h = conv(steps, x, N, space.layers.back().cout, Hs, C, 1, 1, false, act, nullptr);
    md pooled_md({N, C, 1, 1}, dt::f32, tag::nhwc);
    auto pd_desc = pooling_forward::desc(prop_kind::forward_inference, algorithm::pooling_avg_include_padding,
                                         h.get_desc(), pooled_md, {1, 1}, {Hs, Hs}, {0, 0}, {0, 0});
    pooling_forward::primitive_desc ppd(pd_desc, eng);
    Step pool;
    pool.kind = "pool";
    pool.prim = pooling_forward(ppd);
    memory pooled(ppd.dst_desc(), eng);
    pool.args[DNNL_ARG_SRC] = h;
    pool.args[DNNL_ARG_DST] = pooled;
    steps.push_back(pool);
    md w_any({K, C, 1, 1}, dt::f32, tag::any), w_plain({K, C, 1, 1}, dt::f32, tag::oihw), b_md({K}, dt::f32, tag::x);
    md logits_md({N, K}, dt::f32, tag::nc);
    auto ip_desc = inner_product_forward::desc(prop_kind::forward_inference, ppd.dst_desc(), w_any, b_md, logits_md);
    inner_product_forward::primitive_desc ipd(ip_desc, eng);
    Step fc;
    fc.kind = "classifier";
    fc.prim = inner_product_forward(ipd);
    fc.args[DNNL_ARG_SRC] = pooled;
    fc.args[DNNL_ARG_WEIGHTS] = weights(w_plain, ipd.weights_desc(), 1.0f / std::sqrt(float(K)));
    fc.args[DNNL_ARG_BIAS] = random_memory(b_md, 0.0f);
    fc.args[DNNL_ARG_DST] = memory(ipd.dst_desc(), eng);
    steps.push_back(fc);
  }

  int num_pieces() const override { return int(pieces.size()); }

  double run(const Var&, const std::vector<int>&, bool training, Rng&, double* piece_ms) override {
    check(!training, "profile", "the oneDNN backend times inference only");
    double t0 = stamp_now(), t1 = t0;
    for (size_t p = 0; p < pieces.size(); ++p) {
      for (Step& st : pieces[p]) st.prim.execute(strm, st.args);
      strm.wait();
      double t2 = stamp_now();
      piece_ms[p] = t2 - t1;
      t1 = t2;
    }
    return t1 - t0;
  }
};

}  // namespace

std::vector<std::pair<std::string, double>> onednn_time_by_kind(PieceNet& piece_net, int runs) {
  OneDnnNet& net = dynamic_cast<OneDnnNet&>(piece_net);
  std::vector<std::string> kinds;
  for (const auto& steps : net.pieces)
    for (const OneDnnNet::Step& st : steps)
      if (std::find(kinds.begin(), kinds.end(), st.kind) == kinds.end()) kinds.push_back(st.kind);
  std::vector<std::vector<double>> per_run(kinds.size());  // [kind][run]
  for (int r = 0; r < runs; ++r) {
    std::vector<double> ms(kinds.size(), 0.0);
    for (auto& steps : net.pieces)
      for (OneDnnNet::Step& st : steps) {
        const double t0 = stamp_now();
        st.prim.execute(net.strm, st.args);
        net.strm.wait();
        ms[size_t(std::find(kinds.begin(), kinds.end(), st.kind) - kinds.begin())] += stamp_now() - t0;
      }
    for (size_t k = 0; k < kinds.size(); ++k) per_run[k].push_back(ms[k]);
  }
  std::vector<std::pair<std::string, double>> out;
  for (size_t k = 0; k < kinds.size(); ++k) out.push_back({kinds[k], quantile(per_run[k], 0.5)});
  return out;
}

std::unique_ptr<PieceNet> make_onednn_net(const SearchSpace& space, const std::vector<Choice>& choice,
                                          const std::vector<bool>& se, const Tensor& images, uint64_t seed) {
  return std::make_unique<OneDnnNet>(space, choice, se, images, seed);
}

void set_onednn_threads(int n) {
  using Fn = void (*)(int);
  if (auto f = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"))) f(n);
}

}  // namespace spnas
#endif
