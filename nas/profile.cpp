#include "nas/profile.h"
#include "nas/predictor.h"
#include "engine/io.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include <dlfcn.h>
#include <sched.h>
#include <time.h>
#include <sys/resource.h>

#include <cctype>
#include <thread>
#include <unordered_map>

#ifdef SPNAS_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include "engine/checkpoint.h"
#include "engine/cpu.h"
#include "engine/params.h"
#include "engine/rng.h"
#include "engine/threads.h"
#include "nas/model.h"
#include "ops/ops.h"

namespace spnas {

PieceSample mbconv_piece(const LayerSpec& l, int kernel, int expansion, bool se, int batch) {
  PieceSample s;
  s.kind = "mbconv";
  s.cin = l.cin;
  s.cout = l.cout;
  s.in_size = l.in_size;
  s.kernel = kernel;
  s.expansion = expansion;
  s.stride = l.stride;
  s.se = se;
  s.residual = l.residual;
  s.batch = batch;
  return s;
}


namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

Act space_act(const SearchSpace& s) { return s.activation == "relu6" ? Act::ReLU6 : Act::ReLU; }

Tensor he_normal(Rng& rng, const Shape& shape, int64_t fan_out) {
  Tensor t = Tensor::empty(shape);
  const float std = std::sqrt(2.0f / float(fan_out));
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = std * rng.normal();
  return t;
}

// The time base of a measurement: wall clock (steady_clock), or the process's CPU time divided by the
// number of threads ("cpu": on a machine shared with other jobs it leaves out the time the process
// was not running; on an idle machine the two agree). Set for the duration of a measurement.
bool g_cpu_clock = false;
int g_cpu_threads = 1;

double stamp_now() {
  if (!g_cpu_clock) return std::chrono::duration<double, std::milli>(Clock::now().time_since_epoch()).count();
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) * 1e-6) / g_cpu_threads;
}

double span(double a, double b) { return b - a; }

struct ClockScope {
  bool prev_cpu;
  int prev_threads;
  ClockScope(const std::string& clock, int threads) : prev_cpu(g_cpu_clock), prev_threads(g_cpu_threads) {
    if (clock != "wall" && clock != "cpu")
      throw std::runtime_error("latency clock must be \"wall\" or \"cpu\", got \"" + clock + "\"");
    g_cpu_clock = clock == "cpu";
    g_cpu_threads = std::max(1, threads);
  }
  ~ClockScope() {
    g_cpu_clock = prev_cpu;
    g_cpu_threads = prev_threads;
  }
};

// Identity on the tape whose backward rule records when it runs. It hands its gradient to its input
// without copying (the input has no other consumer), so it costs nothing but the timestamp.
Var time_marker(const Var& x, std::vector<double>* stamps) {
  return record("time_marker", x->value, {x}, [stamps](Node& self) {
    stamps->push_back(stamp_now());
    Node& in = *self.inputs[0];
    if (!in.requires_grad) return;
    if (!in.grad_valid) {
      in.grad = self.grad;
      in.grad_valid = true;
    } else {
      float* g = in.grad.data();
      const float* d = self.grad.data();
      for (int64_t i = 0; i < in.grad.numel(); ++i) g[i] += d[i];
    }
  });
}

// A network run piece by piece with a timestamp after each: piece 0 is the stem, pieces 1..B the
// MBConv layers present, B + 1 the head.
struct PieceNet {
  std::vector<int> layer_piece;  // for each space layer: its piece index, or -1 (skipped)
  virtual ~PieceNet() = default;
  virtual int num_pieces() const = 0;
  // One run; piece_ms[i] gets the time of piece i. Returns the total.
  virtual double run(const Var& images, const std::vector<int>& labels, bool training, Rng& rng, double* piece_ms) = 0;
};

// A child network built from the same pieces as ChildNet (nas/model.cpp), with the engine's ops.
struct TimedNet : PieceNet {
  SearchSpace space;
  Act act = Act::ReLU;
  NetConfig cfg;
  ParamSet ps;
  Rng init_rng{1};
  Var stem_w, head_w, fc_w, fc_b;
  BNLayer stem_bn, head_bn;
  std::vector<MBConvBlock> blocks;
  std::vector<int> block_layer;  // index into space.layers
  std::vector<double> stamps;

  TimedNet(const SearchSpace& s, const std::vector<Choice>& choice, const std::vector<bool>& se, uint64_t seed)
      : space(s) {
    act = space_act(space);
    init_rng.seed_with(seed);
    const int k = space.stem_kernel, c = space.stem_channels;
    stem_w = ps.add("stem/conv", he_normal(init_rng, {k, k, 3, c}, int64_t(k) * k * c));
    stem_bn.init(ps, "stem/bn", c, cfg);
    int si = 0, cin = c;
    layer_piece.assign(space.layers.size(), -1);
    for (size_t i = 0; i < space.layers.size(); ++i) {
      const LayerSpec& l = space.layers[i];
      int kk = l.kernel, e = l.expansion;
      bool s_e = false;
      if (l.searchable) {
        Choice ch = choice[si];
        s_e = !se.empty() && se[si];
        ++si;
        if (ch == Choice::Skip) continue;
        kk = choice_kernel(ch);
        e = choice_expansion(ch);
      }
      blocks.push_back(make_mbconv(ps, "layer" + std::to_string(i), l, kk, e, s_e, cfg, init_rng));
      block_layer.push_back(int(i));
      layer_piece[i] = int(blocks.size());
      cin = l.cout;
    }
    const int hc = space.head_channels, K = space.num_classes;
    head_w = ps.add("head/conv", he_normal(init_rng, {cin, hc}, hc));
    head_bn.init(ps, "head/bn", hc, cfg);
    Tensor w = Tensor::empty({hc, K});
    const float r = 1.0f / std::sqrt(float(K));
    for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] = init_rng.uniform(-r, r);
    fc_w = ps.add("head/fc", w);
    fc_b = ps.add("head/fc_bias", Tensor::zeros({K}));
  }

  int num_pieces() const override { return int(blocks.size()) + 2; }

  double run(const Var& images, const std::vector<int>& labels, bool training, Rng& rng, double* piece_ms) override {
    const int nb = int(blocks.size());
    if (!training) {
      NoGrad ng;
      double t0 = stamp_now();
      Var x = stem_bn(conv2d_same(images, stem_w, space.stem_stride), false, act);
      double t1 = stamp_now();
      piece_ms[0] = span(t0, t1);
      for (int i = 0; i < nb; ++i) {
        x = mbconv_forward(blocks[i], x, false, act);
        double t2 = stamp_now();
        piece_ms[1 + i] = span(t1, t2);
        t1 = t2;
      }
      Var h = global_avgpool(head_bn(pwconv(x, head_w), false, act));
      Var logits = linear(h, fc_w, fc_b);
      double t3 = stamp_now();
      piece_ms[nb + 1] = span(t1, t3);
      return span(t0, t3);
    }
    ps.zero_grad();
    stamps.clear();
    stamps.reserve(nb + 2);
    std::vector<double> fwd(nb + 2);
    double t0 = stamp_now();
    Var x = time_marker(stem_bn(conv2d_same(images, stem_w, space.stem_stride), true, act), &stamps);
    double t1 = stamp_now();
    fwd[0] = span(t0, t1);
    for (int i = 0; i < nb; ++i) {
      x = time_marker(mbconv_forward(blocks[i], x, true, act), &stamps);
      double t2 = stamp_now();
      fwd[1 + i] = span(t1, t2);
      t1 = t2;
    }
    Var h = global_avgpool(head_bn(pwconv(x, head_w), true, act));
    if (space.dropout > 0) h = dropout(h, space.dropout, rng, true);
    Var loss = softmax_cross_entropy(linear(h, fc_w, fc_b), labels, 0.1f);
    double tb0 = stamp_now();
    fwd[nb + 1] = span(t1, tb0);
    backward(loss);
    double tb1 = stamp_now();
    check(int(stamps.size()) == nb + 1, "profile", "backward did not pass every time marker");
    // stamps[j] is the marker after piece nb - j (the markers fire in reverse order).
    piece_ms[nb + 1] = fwd[nb + 1] + span(tb0, stamps[0]);
    for (int i = 1; i <= nb; ++i) piece_ms[i] = fwd[i] + span(stamps[nb - i], stamps[nb - i + 1]);
    piece_ms[0] = fwd[0] + span(stamps[nb], tb1);
    return span(t0, tb1);
  }
};

#ifdef SPNAS_HAVE_DNNL
// The same network with oneDNN as the inference backend: every convolution a dnnl convolution
// primitive (NHWC activations, weights in the layout oneDNN picks, batch norm folded into a bias, the
// activation and the residual addition fused as post-ops), the head's pooling and linear layer
// dnnl pooling / inner product. Buffers are allocated once; weights are random (timing only).
struct OneDnnNet : PieceNet {
  struct Step {
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
    const Act act = space_act(space);
    const int64_t N = images.dim(0), S0 = space.input_size;
    // The engine's NHWC images, used in place.
    input = memory(md({N, 3, S0, S0}, dt::f32, tag::nhwc), eng, const_cast<float*>(images.data()));
    pieces.emplace_back();
    memory x = conv(pieces.back(), input, N, 3, S0, space.stem_channels, space.stem_kernel, space.stem_stride, false,
                    act, nullptr);
    int si = 0;
    layer_piece.assign(space.layers.size(), -1);
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
      layer_piece[i] = int(pieces.size()) - 1;
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
      piece_ms[p] = span(t1, t2);
      t1 = t2;
    }
    return span(t0, t1);
  }
};

// oneDNN runs on its own OpenMP threads.
void set_onednn_threads(int n) {
  using Fn = void (*)(int);
  if (auto f = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"))) f(n);
}
#endif

std::unique_ptr<PieceNet> make_piece_net(const std::string& backend, const SearchSpace& space,
                                         const std::vector<Choice>& choice, const std::vector<bool>& se,
                                         const Tensor& images, uint64_t seed) {
  if (backend == "spnas") return std::make_unique<TimedNet>(space, choice, se, seed);
#ifdef SPNAS_HAVE_DNNL
  if (backend == "onednn") return std::make_unique<OneDnnNet>(space, choice, se, images, seed);
#endif
  throw std::runtime_error("profile: backend '" + backend + "' is not available (\"spnas\"" +
#ifdef SPNAS_HAVE_DNNL
                           std::string(" or \"onednn\")")
#else
                           std::string("; this build has no oneDNN)")
#endif
  );
}

void check_backend(const std::string& backend, bool training_step) {
  if (backend == "onednn" && training_step)
    throw std::runtime_error("profile: the oneDNN backend times inference only (not --train-step)");
#ifdef SPNAS_HAVE_DNNL
  if (backend == "onednn") return;
#endif
  if (backend != "spnas") make_piece_net(backend, SearchSpace(), {}, {}, Tensor(), 0);  // throws
}

Tensor random_images(int batch, int size, uint64_t seed) {
  Rng rng(seed);
  Tensor t = Tensor::empty({batch, size, size, 3});
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = rng.normal();
  return t;
}

std::vector<int> make_labels(int batch, int classes) {
  std::vector<int> l(batch);
  for (int i = 0; i < batch; ++i) l[i] = i % std::max(1, classes);
  return l;
}

// Involuntary context switches of the whole process so far (all threads): a run during which this
// count moves was preempted by another process, and its time says more about the machine's load
// than about the network.
long involuntary_switches() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_nivcsw;
}

struct RoundRobinStats {
  int clean = 0;      // runs kept per item (the minimum over items)
  int disturbed = 0;  // runs dropped because they were preempted
  int total = 0;
  bool fell_back = false;  // too few undisturbed runs: every run was kept
};

// Runs run_one(i) for every item round-robin: `warmup` rounds untimed, then rounds until every item
// has at least `reps` undisturbed runs and `min_seconds` of their measured time (or the limits).
// commit(i, keep) is called after every timed run: keep is false for a preempted run.
// The statistic of a measurement's repetitions (ProfileOptions / MeasureOptions::quantile).
void check_quantile(double q) {
  if (!(q > 0 && q < 1))
    throw std::runtime_error("latency quantile must be in (0, 1) (0.5: the median), got " + fmt(q, 3));
}

RoundRobinStats round_robin(int items, int warmup, int reps, double min_seconds, int max_reps, double max_seconds,
                            bool drop_preempted, const std::function<double(int item)>& run_one,
                            const std::function<void(int item, bool keep)>& commit) {
  for (int w = 0; w < warmup; ++w)
    for (int i = 0; i < items; ++i) run_one(i);
  std::vector<double> spent(items, 0.0);
  std::vector<int> kept(items, 0);
  RoundRobinStats st;
  const Clock::time_point start = Clock::now();
  int rounds = 0;
  for (;;) {
    bool enough = true;
    for (int i = 0; i < items; ++i) enough &= kept[i] >= std::max(1, reps) && spent[i] >= min_seconds * 1000.0;
    if (enough || rounds >= std::max(max_reps, 1)) break;
    if (rounds >= 3 && ms_between(start, Clock::now()) > max_seconds * 1000.0) break;
    for (int i = 0; i < items; ++i) {
      long before = involuntary_switches();
      double ms = run_one(i);
      bool keep = !drop_preempted || involuntary_switches() == before;
      commit(i, keep);
      st.total++;
      if (keep) {
        kept[i]++;
        spent[i] += ms;
      } else {
        st.disturbed++;
      }
    }
    ++rounds;
  }
  st.clean = *std::min_element(kept.begin(), kept.end());
  return st;
}

// Idle jiffies of each CPU (/proc/stat), empty if unreadable.
std::vector<long long> cpu_idle() {
  std::ifstream f("/proc/stat");
  std::string line;
  std::vector<long long> out;
  while (std::getline(f, line)) {
    if (line.rfind("cpu", 0) != 0 || line.size() < 4 || !std::isdigit((unsigned char)line[3])) continue;
    std::istringstream in(line);
    std::string name;
    long long v[5] = {};
    in >> name >> v[0] >> v[1] >> v[2] >> v[3] >> v[4];
    out.push_back(v[3] + v[4]);  // idle + iowait
  }
  return out;
}

// Pins the engine's threads. One thread goes to the CPU that was idlest over the last 0.2 s (other
// processes on a shared machine often pin themselves to CPU 0); more threads use pin_threads().
bool pin_for_timing(int threads) {
  if (threads > 1) return pin_threads();
  const std::vector<int> cpus = allowed_cpus();  // only CPUs this process may use (taskset, cgroups)
  if (cpus.empty()) return false;
  std::vector<long long> a = cpu_idle();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::vector<long long> b = cpu_idle();
  auto idle = [&](int c) { return a.size() == b.size() && size_t(c) < a.size() ? b[size_t(c)] - a[size_t(c)] : -1; };
  int best = cpus[0];
  for (int c : cpus)
    if (idle(c) > idle(best)) best = c;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(best, &set);
  return sched_setaffinity(0, sizeof(set), &set) == 0;
}

// The threads' placement before a measurement (profile and latency alike); false only when pinning
// was asked for and refused. oneDNN runs on OpenMP threads that its parallel regions create from the
// calling thread, with that thread's CPU mask. Pinning the caller to one CPU put every OpenMP thread
// on that CPU, where they spin-wait on each other at every barrier: `latency --backend onednn
// --threads 2` took 456 ms for a network that takes 0.35 ms. An untimed first run does not reliably
// create them all before the pinning, so with several threads the oneDNN backend is not pinned at
// all, and a pin left by an earlier measurement in the same process is undone first.
bool place_threads(const std::string& backend, int threads, bool pin) {
  if (backend == "onednn" && threads > 1) {
    unpin_threads();
    return true;
  }
  return !pin || pin_for_timing(threads);
}

struct ThreadScope {
  int prev;
  explicit ThreadScope(int threads) : prev(num_threads()) { set_num_threads(threads); }
  ~ThreadScope() { set_num_threads(prev); }
};

}  // namespace

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  double pos = q * double(v.size() - 1);
  size_t lo = size_t(std::floor(pos)), hi = std::min(v.size() - 1, lo + 1);
  double f = pos - double(lo);
  return v[lo] * (1 - f) + v[hi] * f;
}

double kendall_tau(const std::vector<double>& a, const std::vector<double>& b) {
  check(a.size() == b.size(), "kendall_tau", "the two lists differ in length");
  const size_t n = a.size();
  double conc = 0, disc = 0, ta = 0, tb = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) {
      double da = a[i] - a[j], db = b[i] - b[j];
      if (da == 0 && db == 0) continue;
      if (da == 0) {
        ta += 1;
      } else if (db == 0) {
        tb += 1;
      } else if ((da > 0) == (db > 0)) {
        conc += 1;
      } else {
        disc += 1;
      }
    }
  double denom = std::sqrt((conc + disc + ta) * (conc + disc + tb));
  return denom > 0 ? (conc - disc) / denom : 0.0;
}

LatencyTable profile_space(const ProfileOptions& options) {
  SpaceOptions so;
  so.width = options.width;
  so.input_size = options.input_size;
  SearchSpace s = load_space(options.space, so);
  ProfileResult r = profile_space_full(s, options);
  r.table.space = options.space;
  return r.table;
}

ProfileResult profile_space_full(const SearchSpace& space, const ProfileOptions& opt) {
  check_backend(opt.backend, opt.training_step);
  check(opt.batch >= 1, "profile", "batch must be >= 1");
  check(opt.threads >= 1, "profile", "threads must be >= 1");
  check(space.num_searchable() > 0, "profile", "space '" + space.name + "' has no searchable layer");
  auto say = [&](const std::string& m) {
    if (opt.progress) opt.progress(m);
  };
  ProfileResult res;
  ThreadScope threads(opt.threads);
  ClockScope clock_scope(opt.clock, opt.threads);
  check_quantile(opt.quantile);
  if (!place_threads(opt.backend, opt.threads, opt.pin)) {
    res.warnings.push_back("could not pin the engine's threads to CPUs (timings may move between cores)");
    say("warning: " + res.warnings.back());
  }

  const std::vector<Choice> cands = {Choice::K3E3, Choice::K3E6, Choice::K5E3, Choice::K5E6};
  const int L = space.num_searchable();
  const std::vector<int> sidx = space.searchable_indices();
  // The networks: `rounds` groups of 4; in each group every searchable layer takes each candidate
  // once, in an order drawn at random per layer (round 0 of a one-round profile: the uniform
  // networks). So every entry is measured `rounds` times, each time between neighbours of random
  // candidates, as in the architectures the search decodes. With SE, each network has a twin with
  // SE on every searchable layer.
  struct Plan {
    std::vector<Choice> choice;
    bool se = false;
    int twin = -1;  // SE plans: the plan without SE
  };
  std::vector<Plan> plans;
  const int rounds = std::max(1, opt.context_rounds);
  Rng plan_rng(opt.seed + 101);
  // Where the space allows skipping, each group has a fifth network: every layer that may be skipped
  // is skipped in one of the five, and the others take a random candidate twice.
  bool any_skip = false;
  for (int l = 0; l < L; ++l) any_skip |= space.layers[sidx[l]].skip_allowed;
  const int cols = any_skip ? 5 : 4;
  const Choice options[5] = {Choice::K3E3, Choice::K3E6, Choice::K5E3, Choice::K5E6, Choice::Skip};
  for (int r = 0; r < rounds; ++r) {
    std::vector<std::vector<int>> perm(L);
    for (int l = 0; l < L; ++l) {
      perm[l] = {0, 1, 2, 3};
      if (any_skip) perm[l].push_back(space.layers[sidx[l]].skip_allowed ? 4 : int(plan_rng.below(4)));
      if (rounds > 1)
        for (int i = cols - 1; i > 0; --i) std::swap(perm[l][i], perm[l][plan_rng.below(i + 1)]);
    }
    for (int j = 0; j < cols; ++j) {
      Plan pl;
      for (int l = 0; l < L; ++l) pl.choice.push_back(options[perm[l][j]]);
      plans.push_back(pl);
    }
  }
  if (opt.search_se) {
    const int n = int(plans.size());
    for (int i = 0; i < n; ++i) {
      Plan pl = plans[i];
      pl.se = true;
      pl.twin = i;
      plans.push_back(pl);
    }
  }

  Var images = constant(random_images(opt.batch, space.input_size, opt.seed + 7));
#ifdef SPNAS_HAVE_DNNL
  if (opt.backend == "onednn") set_onednn_threads(opt.threads);
#endif
  std::vector<std::unique_ptr<PieceNet>> nets;
  for (const Plan& pl : plans)
    nets.push_back(make_piece_net(opt.backend, space, pl.choice, std::vector<bool>(pl.se ? L : 0, true),
                                  images->value, opt.seed));
  std::vector<int> labels = make_labels(opt.batch, space.num_classes);
  Rng rng(opt.seed + 11);
  say("profiling space '" + space.name + "' (width " + fmt(space.width, 2) + ", input " +
      std::to_string(space.input_size) + "): " + std::to_string(nets.size()) + " networks, batch " +
      std::to_string(opt.batch) + ", " + std::to_string(opt.threads) + " thread(s), " +
      (opt.training_step ? "training step" : "inference") + ", backend " + opt.backend + ", isa " + kernels().name);

  // times[net][piece][rep]: undisturbed runs; all_times: every run (the fallback).
  std::vector<std::vector<std::vector<double>>> times(nets.size());
  std::vector<std::vector<double>> piece(nets.size());
  for (size_t n = 0; n < nets.size(); ++n) {
    times[n].resize(nets[n]->num_pieces());
    piece[n].resize(nets[n]->num_pieces());
  }
  auto all_times = times;
  auto t_start = Clock::now();
  RoundRobinStats st = round_robin(
      int(nets.size()), opt.warmup, opt.reps, opt.min_seconds, opt.max_reps, opt.max_seconds, opt.drop_preempted && opt.clock == "wall",
      [&](int i) { return nets[i]->run(images, labels, opt.training_step, rng, piece[i].data()); },
      [&](int i, bool keep) {
        for (size_t p = 0; p < piece[i].size(); ++p) {
          all_times[i][p].push_back(piece[i][p]);
          if (keep) times[i][p].push_back(piece[i][p]);
        }
      });
  if (st.clean < std::max(5, opt.reps / 4)) {
    times = all_times;
    res.warnings.push_back("only " + std::to_string(st.clean) + " of " + std::to_string(st.total / int(nets.size())) +
                           " runs per network were not preempted by other processes; using every run (the "
                           "machine is overloaded: entries are inflated)");
    say("warning: " + res.warnings.back());
  }
  int reps = int(times[0][0].size());
  for (auto& tn : times) reps = std::min(reps, int(tn[0].size()));
  say("  " + std::to_string(reps) + " repetitions per network in " + fmt(ms_between(t_start, Clock::now()) / 1000, 1) +
      " s (" + std::to_string(st.disturbed) + " preempted runs dropped)");
  if (st.disturbed > st.total / 2) {
    res.warnings.push_back(std::to_string(st.disturbed) + " of " + std::to_string(st.total) +
                           " runs were preempted by other processes (dropped): the machine is busy");
    say("warning: " + res.warnings.back());
  }

  auto med = [&](int n, int p) { return quantile(times[n][p], opt.quantile); };  // the entry statistic
  auto spread_of = [&](int n, int p) {
    double m = quantile(times[n][p], 0.5);
    return m > 0 ? (quantile(times[n][p], 0.9) - quantile(times[n][p], 0.1)) / m : 0.0;
  };

  LatencyTable& t = res.table;
  t.source = "profile";
  t.space = space.source.empty() ? space.name : space.source;
  t.width = space.width;
  t.input_size = space.input_size;
  t.batch = opt.batch;
  t.threads = opt.threads;
  t.cpu = cpu_info().model_name;
  t.isa = opt.backend == "spnas" ? kernels().name : "onednn";
  t.mode = opt.training_step ? "training" : "inference";
  t.backend = opt.backend;
  t.quantile = opt.quantile;

  // Fixed part: stem, fixed layers, head; per network the statistic (opt.quantile) of their per-run sum.
  // The stem, the fixed layers and the head of network n (piece indices).
  auto fixed_pieces = [&](size_t n) {
    std::vector<int> f = {0, nets[n]->num_pieces() - 1};
    for (size_t i = 0; i < space.layers.size(); ++i)
      if (!space.layers[i].searchable) f.push_back(nets[n]->layer_piece[i]);
    return f;
  };
  double fixed_sum = 0, fixed_spread = 0;
  for (size_t n = 0; n < nets.size(); ++n) {
    const size_t runs = times[n][0].size();
    std::vector<double> sums(runs, 0.0);
    for (int p : fixed_pieces(n))
      for (size_t r = 0; r < runs; ++r) sums[r] += times[n][p][r];
    double m = quantile(sums, 0.5);
    fixed_sum += quantile(sums, opt.quantile);
    fixed_spread = std::max(fixed_spread, m > 0 ? (quantile(sums, 0.9) - quantile(sums, 0.1)) / m : 0.0);
  }
  t.fixed_ms = fixed_sum / double(nets.size());
  t.fixed_spread = fixed_spread;

  int noisy = 0;
  double worst = 0;
  const int cand_index[5] = {0, 1, 2, 3, -1};
  for (int l = 0; l < L; ++l) {
    const LayerSpec& ls = space.layers[sidx[l]];
    LayerCost c;
    c.cin = ls.cin;
    c.cout = ls.cout;
    c.stride = ls.stride;
    c.skip_allowed = ls.skip_allowed;
    c.count = reps;
    // [se][candidate]: sum of medians, largest spread, measurements
    double sum[2][4] = {}, spread[2][4] = {}, se_extra = 0;
    int cnt[2][4] = {}, se_n = 0;
    for (size_t n = 0; n < nets.size(); ++n) {
      const int p = nets[n]->layer_piece[sidx[l]];
      if (p < 0) continue;  // skipped in this network
      int k = cand_index[int(plans[n].choice[l])], e = plans[n].se ? 1 : 0;
      double m = med(int(n), p), sp = spread_of(int(n), p);
      sum[e][k] += m;
      cnt[e][k]++;
      spread[e][k] = std::max(spread[e][k], sp);
      if (sp > opt.spread_warning) ++noisy;
      worst = std::max(worst, sp);
      if (plans[n].se) {
        se_extra += std::max(0.0, m - med(plans[n].twin, p));
        se_n++;
      }
    }
    double* slot[4] = {&c.k3_e3, &c.k3_e6, &c.k5_e3, &c.k5_e6};
    for (int e = 0; e < (opt.search_se ? 2 : 1); ++e)
      for (int k = 0; k < 4; ++k) {
        double m = sum[e][k] / std::max(1, cnt[e][k]);
        if (e == 0) *slot[k] = m;
        c.spread = std::max(c.spread, spread[e][k]);
        PieceSample s = mbconv_piece(ls, choice_kernel(cands[k]), choice_expansion(cands[k]), e == 1, opt.batch);
        s.ms = m;
        s.spread = spread[e][k];
        res.samples.push_back(s);
      }
    c.se = se_n ? se_extra / se_n : 0.0;
    t.layers.push_back(c);
  }
  // Calibration. An entry is a piece's statistic (median or lower quantile) averaged over random
  // neighbours, but what a table must predict is a whole network's statistic, and that is not the
  // sum of its pieces' statistics: noise is right-skewed (a run slowed in one piece is not slowed in
  // the others), so a total's statistic exceeds the sum of its pieces' (by 1-2 % of a network at
  // the median here), and by an amount that depends on what the network is made of. With
  // `calibrate`, the residual of each profiled network without SE (the statistic of its per-run
  // totals - fixed - its entries) is fitted by ridge least squares as a constant plus a
  // per-candidate cost per layer; the constant goes into the fixed cost, each candidate's term into
  // every layer's entry for it. The totals come from the same runs: no extra measurement, and no
  // drift between the two. Few networks (context_rounds < 3): only the constant.
  if (opt.calibrate) {
    // Columns (weighted_lstsq's layout): [constant, k3-e3, k3-e6, k5-e3, k5-e6] layer counts.
    std::vector<std::vector<double>> X(5);
    std::vector<double> resid;
    for (size_t n = 0; n < nets.size(); ++n) {
      if (plans[n].se) continue;
      const size_t runs = times[n][0].size();
      std::vector<double> total(runs, 0.0);
      for (size_t p = 0; p < times[n].size(); ++p)
        for (size_t r = 0; r < runs; ++r) total[r] += times[n][p][r];
      double row[5] = {1, 0, 0, 0, 0};
      double pred = t.fixed_ms;
      for (int l = 0; l < L; ++l) {
        const Choice ch = plans[n].choice[size_t(l)];
        if (ch == Choice::Skip) continue;
        row[1 + int(ch)] += 1;
        pred += t.layers[size_t(l)].cost(ch);
      }
      for (int j = 0; j < 5; ++j) X[size_t(j)].push_back(row[j]);
      resid.push_back(quantile(total, opt.quantile) - pred);
    }
    const bool per_candidate = resid.size() >= 10;
    std::vector<int> cols = {0};
    if (per_candidate) {
      cols = {0, 1, 2, 3, 4};
      // Ridge, as one pseudo-row per candidate term (its count 1, residual 0): one layer's worth
      // of shrinkage towards 0.
      for (int j = 1; j < 5; ++j) {
        for (int k = 0; k < 5; ++k) X[size_t(k)].push_back(k == j ? 1.0 : 0.0);
        resid.push_back(0.0);
      }
    }
    const std::vector<double> fit = weighted_lstsq(X, cols, resid, std::vector<double>(resid.size(), 1.0));
    double coef[5] = {};
    for (size_t j = 0; j < cols.size(); ++j) coef[cols[j]] = fit[j];
    t.fixed_calibration_ms = coef[0];
    t.fixed_ms += coef[0];
    for (int k = 0; k < 4; ++k) t.candidate_calibration_ms[k] = coef[1 + k];
    for (LayerCost& c : t.layers) {
      double* slot[4] = {&c.k3_e3, &c.k3_e6, &c.k5_e3, &c.k5_e6};
      for (int k = 0; k < 4; ++k) *slot[k] = std::max(1e-6, *slot[k] + coef[1 + k]);
    }
    say("  calibration: fixed " + fmt(coef[0], 4) + " ms; per layer k3-e3 " + fmt(coef[1], 4) + ", k3-e6 " +
        fmt(coef[2], 4) + ", k5-e3 " + fmt(coef[3], 4) + ", k5-e6 " + fmt(coef[4], 4) + " ms");
  }

  // Fixed pieces as samples (mean of the per-network medians).
  // `which`: 0 the stem, 1 the head, 2 + j the j-th fixed layer (positions in fixed_pieces(n)).
  auto mean_med = [&](int which) {
    double s = 0;
    for (size_t n = 0; n < nets.size(); ++n) s += med(int(n), fixed_pieces(n)[which]);
    return s / double(nets.size());
  };
  auto max_spread = [&](int which) {
    double s = 0;
    for (size_t n = 0; n < nets.size(); ++n) s = std::max(s, spread_of(int(n), fixed_pieces(n)[which]));
    return s;
  };
  int fixed_layer = 0;
  {
    PieceSample s;
    s.kind = "stem";
    s.cin = 3;
    s.cout = space.stem_channels;
    s.in_size = space.input_size;
    s.kernel = space.stem_kernel;
    s.stride = space.stem_stride;
    s.batch = opt.batch;
    s.ms = mean_med(0);
    s.spread = max_spread(0);
    res.samples.push_back(s);
  }
  for (size_t i = 0; i < space.layers.size(); ++i) {
    const LayerSpec& ls = space.layers[i];
    if (ls.searchable) continue;
    PieceSample s = mbconv_piece(ls, ls.kernel, ls.expansion, false, opt.batch);
    s.ms = mean_med(2 + fixed_layer);
    s.spread = max_spread(2 + fixed_layer);
    ++fixed_layer;
    res.samples.push_back(s);
  }
  {
    PieceSample s;
    s.kind = "head";
    s.cin = space.layers.back().cout;
    s.cout = space.head_channels;
    s.in_size = space.layers.back().out_size;
    s.classes = space.num_classes;
    s.batch = opt.batch;
    s.ms = mean_med(1);
    s.spread = max_spread(1);
    res.samples.push_back(s);
  }

  if (noisy > 0) {
    res.warnings.push_back(std::to_string(noisy) + " of " + std::to_string(L * int(nets.size())) +
                           " entries have a spread (p90 - p10) / median above " + fmt(opt.spread_warning, 2) +
                           " (worst " + fmt(worst, 2) +
                           "): the machine is noisy; consider more --reps or an idle machine");
    say("warning: " + res.warnings.back());
  }
  double all_on = t.fixed_ms;
  for (const LayerCost& c : t.layers) all_on += c.k5_e6;
  say("  fixed " + fmt(t.fixed_ms) + " ms, all-k5-e6 network " + fmt(all_on) + " ms");
  return res;
}

std::vector<LatencyMeasurement> measure_archs_latency(const std::vector<Arch>& archs, const MeasureOptions& opt) {
  check(opt.batch >= 1 && opt.threads >= 1, "measure_arch_latency", "batch and threads must be >= 1");
  ThreadScope threads(opt.threads);
  ClockScope clock_scope(opt.clock, opt.threads);
  check_quantile(opt.quantile);
  place_threads(opt.backend, opt.threads, opt.pin);
  NetConfig cfg;
  cfg.seed = opt.seed;
  std::vector<std::unique_ptr<ChildNet>> nets;
  std::vector<Var> images;
  std::vector<std::vector<int>> labels;
  check_backend(opt.backend, opt.training_step);
  std::vector<std::unique_ptr<PieceNet>> other;  // another backend's networks
  std::vector<double> piece_ms;
#ifdef SPNAS_HAVE_DNNL
  if (opt.backend == "onednn") set_onednn_threads(opt.threads);
#endif
  for (size_t i = 0; i < archs.size(); ++i) {
    nets.push_back(std::make_unique<ChildNet>(archs[i], cfg));
    const SearchSpace& s = nets.back()->space();
    images.push_back(constant(random_images(opt.batch, s.input_size, opt.seed + 7)));
    labels.push_back(make_labels(opt.batch, s.num_classes));
    if (opt.backend != "spnas") {
      other.push_back(make_piece_net(opt.backend, s, archs[i].layers, archs[i].se, images.back()->value, opt.seed));
      piece_ms.resize(std::max<size_t>(piece_ms.size(), size_t(other.back()->num_pieces())));
      nets.back().reset();  // only its space was needed
    }
  }
  Rng rng(opt.seed + 11);
  std::vector<std::vector<double>> times(archs.size()), all_times(archs.size());
  std::vector<double> last(archs.size());
  RoundRobinStats st = round_robin(
      int(archs.size()), opt.warmup, opt.reps, opt.min_seconds, opt.max_reps, opt.max_seconds, opt.drop_preempted && opt.clock == "wall",
      [&](int i) {
        if (!other.empty()) return last[i] = other[i]->run(images[i], labels[i], false, rng, piece_ms.data());
        ChildNet& net = *nets[i];
        double ms;
        if (!opt.training_step) {
          NoGrad ng;
          ForwardOptions fo;
          fo.training = false;
          double t0 = stamp_now();
          Var logits = net.forward(images[i], fo);
          ms = span(t0, stamp_now());
        } else {
          net.params().zero_grad();
          ForwardOptions fo;
          fo.training = true;
          fo.rng = &rng;
          double t0 = stamp_now();
          Var loss = softmax_cross_entropy(net.forward(images[i], fo), labels[i], 0.1f);
          backward(loss);
          ms = span(t0, stamp_now());
        }
        last[i] = ms;
        return ms;
      },
      [&](int i, bool keep) {
        all_times[i].push_back(last[i]);
        if (keep) times[i].push_back(last[i]);
      });
  if (st.clean < std::max(5, opt.reps / 4)) times = all_times;
  std::vector<LatencyMeasurement> out;
  for (auto& v : times) {
    LatencyMeasurement m;
    m.median_ms = quantile(v, 0.5);
    m.ms = quantile(v, opt.quantile);
    m.p10_ms = quantile(v, 0.1);
    m.p90_ms = quantile(v, 0.9);
    m.count = int(v.size());
    out.push_back(m);
  }
  return out;
}

LatencyMeasurement measure_arch_latency(const Arch& arch, const MeasureOptions& options) {
  return measure_archs_latency({arch}, options)[0];
}

LatencyMeasurement measure_arch_latency(const Arch& arch, int batch, int threads, bool training_step) {
  MeasureOptions o;
  o.batch = batch;
  o.threads = threads;
  o.training_step = training_step;
  return measure_arch_latency(arch, o);
}

// ---- piece samples as JSON ---------------------------------------------------------------------

std::string piece_samples_to_json(const std::vector<PieceSample>& samples) {
  json j;
  j["format"] = "spnas-piece-samples";
  j["version"] = 1;
  json a = json::array();
  for (const PieceSample& s : samples) {
    json o;
    o["kind"] = s.kind;
    o["cin"] = s.cin;
    o["cout"] = s.cout;
    o["in_size"] = s.in_size;
    o["kernel"] = s.kernel;
    o["stride"] = s.stride;
    o["expansion"] = s.expansion;
    o["se"] = s.se;
    o["residual"] = s.residual;
    o["classes"] = s.classes;
    o["batch"] = s.batch;
    o["ms"] = s.ms;
    o["spread"] = s.spread;
    a.push_back(o);
  }
  j["samples"] = a;
  return j.dump(1) + "\n";
}

std::vector<PieceSample> parse_piece_samples(const std::string& text, const std::string& source) {
  json j = parse_json(text, "piece samples", source);
  const std::string file = "piece samples '" + source + "'";
  const JsonFields root(j, file, "");
  if (root.string("format", "") != "spnas-piece-samples" ||
      root.integer("version", 0, std::numeric_limits<int>::max(), 0) != 1 || !root.has("samples") ||
      !j["samples"].is_array())
    throw std::runtime_error(file + ": expected {\"format\": \"spnas-piece-samples\", \"version\": 1, \"samples\": [...]}");
  // Sizes as a space file may have them (nas/space.h), so that every feature the predictor computes
  // from them is finite.
  std::vector<PieceSample> out;
  for (size_t i = 0; i < j["samples"].size(); ++i) {
    const JsonFields o(j["samples"][i], file, "samples[" + std::to_string(i) + "]");
    PieceSample s;
    s.kind = o.string("kind");
    if (s.kind != "mbconv" && s.kind != "stem" && s.kind != "head") o.fail("kind", "must be mbconv, stem or head");
    s.cin = int(o.integer("cin", 1, kMaxChannels));
    s.cout = int(o.integer("cout", 1, kMaxChannels));
    s.in_size = int(o.integer("in_size", 1, kMaxInputSize));
    s.kernel = int(o.integer("kernel", 1, kMaxKernel, 1));
    if (s.kernel % 2 == 0) o.fail("kernel", "must be odd, got " + std::to_string(s.kernel));
    s.stride = int(o.integer("stride", 1, 2, 1));
    s.expansion = int(o.integer("expansion", 1, kMaxExpansion, 1));
    s.se = o.boolean("se", false);
    s.residual = o.boolean("residual", false);
    s.classes = int(o.integer("classes", 0, kMaxClasses, 0));
    s.batch = int(o.integer("batch", 1, 65536, 1));
    s.ms = o.number("ms", 0, 1e9);
    s.spread = o.number("spread", 0, 1e9, 0.0);
    out.push_back(s);
  }
  return out;
}

void save_piece_samples(const std::string& path, const std::vector<PieceSample>& samples) {
  write_file_atomic(path, piece_samples_to_json(samples));
}

std::vector<PieceSample> load_piece_samples(const std::string& path) {
  return parse_piece_samples(read_text_file(path, "piece samples"), path);
}

}  // namespace spnas
