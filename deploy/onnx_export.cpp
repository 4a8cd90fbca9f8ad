// ONNX export of a trained child network (see onnx_export.h and deploy/README.md).
#include "deploy/onnx_export.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/io.h"
#include "ops/ops.h"

namespace spnas {

namespace {

// ONNX weight layout [O, I, KH, KW] from ours [KH, KW, I, O]. The same map serves the stem
// ([K, K, 3, C]), pointwise and SE weights ([Cin, Cout] = [1, 1, Cin, Cout]), depthwise weights
// ([K, K, C] = [K, K, 1, C]) and the classifier ([C, classes] -> Gemm's transposed B [classes, C]).
std::vector<float> oihw_from_hwio(const float* w, int KH, int KW, int I, int O) {
  std::vector<float> out(size_t(O) * I * KH * KW);
  for (int o = 0; o < O; ++o)
    for (int i = 0; i < I; ++i)
      for (int kh = 0; kh < KH; ++kh)
        for (int kw = 0; kw < KW; ++kw)
          out[((size_t(o) * I + i) * KH + kh) * KW + kw] = w[((size_t(kh) * KW + kw) * I + i) * O + o];
  return out;
}

// Pads [top, left, bottom, right] of our "SAME" convolutions: dwconv_desc's top / left, and the rest
// of the total padding at the bottom / right (TensorFlow's rule, also conv2d_same's).
std::vector<int64_t> same_pads(int size, int kernel, int stride) {
  const DwConvDesc d = dwconv_desc(1, size, size, 1, kernel, stride);
  const int64_t total = std::max<int64_t>((d.OH - 1) * stride + kernel - size, 0);
  return {d.pad_t, d.pad_l, total - d.pad_t, total - d.pad_l};
}

class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* g) : g_(g) {}

  std::string initializer(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& values) {
    onnx::TensorProto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    // Raw little-endian bytes: the compact form every runtime reads (x86 is little-endian).
    t->set_raw_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
    parameters_ += int64_t(values.size());
    return name;
  }

  onnx::NodeProto* node(const std::string& op, const std::vector<std::string>& inputs, const std::string& output) {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(output);
    for (const std::string& i : inputs) n->add_input(i);
    n->add_output(output);
    return n;
  }

  static void ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void real(onnx::NodeProto* n, const std::string& name, float v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void integer(onnx::NodeProto* n, const std::string& name, int64_t v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }

  // y = act(conv(x, w) * scale + shift) with the batch norm's scale folded into the weights
  // (w: [O, I/group, K, K]) and its shift as the bias.
  std::string conv_bn_act(const std::string& name, const std::string& x, std::vector<float> w, int O, int I_per_group,
                          int K, int stride, int group, const std::vector<int64_t>& pads, const BNLayer& bn, Act act) {
    Tensor scale, shift;
    batchnorm_fold("onnx export", bn.gamma, bn.beta, bn.state, O, &scale, &shift);
    const size_t per_out = size_t(I_per_group) * K * K;
    for (int o = 0; o < O; ++o)
      for (size_t j = 0; j < per_out; ++j) w[o * per_out + j] *= scale.data()[o];
    const std::string wn = initializer(name + "/weight", {O, I_per_group, K, K}, w);
    const std::string bnm = initializer(name + "/bias", {O}, std::vector<float>(shift.data(), shift.data() + O));
    onnx::NodeProto* n = node("Conv", {x, wn, bnm}, name);
    ints(n, "kernel_shape", {K, K});
    ints(n, "strides", {stride, stride});
    ints(n, "pads", pads);
    ints(n, "dilations", {1, 1});
    integer(n, "group", group);
    return activation(name, n->output(0), act);
  }

  // A 1x1 convolution with a bias and no batch norm (the SE branch), w [O, I, 1, 1].
  std::string conv1x1_bias(const std::string& name, const std::string& x, const std::vector<float>& w,
                           const Tensor& bias, int O, int I) {
    const std::string wn = initializer(name + "/weight", {O, I, 1, 1}, w);
    const std::string bnm = initializer(name + "/bias", {O}, std::vector<float>(bias.data(), bias.data() + O));
    onnx::NodeProto* n = node("Conv", {x, wn, bnm}, name);
    ints(n, "kernel_shape", {1, 1});
    return n->output(0);
  }

  std::string activation(const std::string& name, const std::string& x, Act act) {
    switch (act) {
      case Act::None:
        return x;
      case Act::ReLU:
        return node("Relu", {x}, name + "/relu")->output(0);
      case Act::ReLU6: {
        // Opset 10's Clip: min and max as attributes (see kOnnxOpset).
        onnx::NodeProto* n = node("Clip", {x}, name + "/relu6");
        real(n, "min", 0.0f);
        real(n, "max", 6.0f);
        return n->output(0);
      }
    }
    throw std::runtime_error("export: an activation the exporter cannot express");
  }

  int64_t parameters() const { return parameters_; }

 private:
  onnx::GraphProto* g_;
  int64_t parameters_ = 0;
};

void set_tensor_type(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& dims) {
  v->set_name(name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) {
    onnx::TensorShapeProto_Dimension* dim = t->mutable_shape()->add_dim();
    if (d > 0) dim->set_dim_value(d);
    else dim->set_dim_param("N");
  }
}

void add_metadata(onnx::ModelProto& m, const std::string& key, const std::string& value) {
  onnx::StringStringEntryProto* e = m.add_metadata_props();
  e->set_key(key);
  e->set_value(value);
}

// The MBConv block as in mbconv_forward's inference path.
std::string mbconv(GraphBuilder& gb, const std::string& name, const MBConvBlock& b, const std::string& x, Act act) {
  const LayerSpec& l = b.spec;
  std::string h = x;
  if (b.expansion != 1)
    h = gb.conv_bn_act(name + "/expand", h, oihw_from_hwio(b.w_expand->value.data(), 1, 1, l.cin, b.hidden),
                       b.hidden, l.cin, 1, 1, 1, {0, 0, 0, 0}, b.bn_expand, act);
  std::string a = gb.conv_bn_act(name + "/depthwise", h, oihw_from_hwio(b.w_dw->value.data(), b.kernel, b.kernel, 1, b.hidden),
                                 b.hidden, 1, b.kernel, l.stride, b.hidden, same_pads(l.in_size, b.kernel, l.stride),
                                 b.bn_dw, act);
  if (b.se) {
    const int s = int(b.w_se_reduce->value.dim(1));
    std::string p = gb.node("GlobalAveragePool", {a}, name + "/se/pool")->output(0);
    p = gb.conv1x1_bias(name + "/se/reduce", p, oihw_from_hwio(b.w_se_reduce->value.data(), 1, 1, b.hidden, s),
                        b.b_se_reduce->value, s, b.hidden);
    p = gb.node("Relu", {p}, name + "/se/relu")->output(0);
    p = gb.conv1x1_bias(name + "/se/expand", p, oihw_from_hwio(b.w_se_expand->value.data(), 1, 1, s, b.hidden),
                        b.b_se_expand->value, b.hidden, s);
    p = gb.node("Sigmoid", {p}, name + "/se/sigmoid")->output(0);
    a = gb.node("Mul", {a, p}, name + "/se/scale")->output(0);
  }
  std::string y = gb.conv_bn_act(name + "/project", a, oihw_from_hwio(b.w_project->value.data(), 1, 1, b.hidden, l.cout),
                                 l.cout, b.hidden, 1, 1, 1, {0, 0, 0, 0}, b.bn_project, Act::None);
  if (l.residual) y = gb.node("Add", {y, x}, name + "/residual")->output(0);
  return y;
}

// The whole model, checked by ONNX's checker and strict shape inference.
onnx::ModelProto checked_model(const ChildNet& net, const InputRecord& input, int batch, const std::string& checkpoint,
                               const std::string& weights) {
  const SearchSpace& sp = net.space();
  const int S = sp.input_size, K = sp.num_classes, channels = sp.input_channels;
  if (batch < 0) throw std::runtime_error("export: batch must be >= 1, or 0 for a dynamic batch; got " + std::to_string(batch));
  if (int(input.class_names.size()) != K)
    throw std::runtime_error("export: " + std::to_string(input.class_names.size()) + " class names for a network of " +
                             std::to_string(K) + " classes");
  if (int(input.mean.size()) != channels || int(input.std.size()) != channels)
    throw std::runtime_error("export: the normalisation needs one mean and std per input channel (" +
                             std::to_string(channels) + ")");
  const std::string pixels = channels == 3 ? "RGB" : channels == 1 ? "grey" : std::to_string(channels) + "-channel";
  const std::string input_text = "image: float32 [N, " + std::to_string(channels) + ", " + std::to_string(S) + ", " +
                                 std::to_string(S) + "], " + pixels + " in [0, 1], NCHW; normalised inside the graph";

  onnx::ModelProto model;
  model.set_ir_version(onnx::IR_VERSION);
  model.set_producer_name("spnas");
  model.set_producer_version("1");
  model.set_doc_string("Single-Path NAS child network (" + arch_summary(net.arch()) + "), space " + sp.name + ". " +
                       input_text + ". Output 'logits': [N, " + std::to_string(K) + "].");
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name("spnas_" + sp.name);
  const int64_t N = batch > 0 ? batch : -1;
  set_tensor_type(g->add_input(), "image", {N, channels, S, S});
  set_tensor_type(g->add_output(), "logits", {N, K});

  GraphBuilder gb(g);
  // Evaluation's normalisation, (x - mean) / std per channel, as the graph's first nodes. The
  // constants are [C, 1, 1], not [1, C, 1, 1]: OpenCV 4.6 cannot broadcast the latter over a batch.
  const std::string mean = gb.initializer("normalize/mean", {channels, 1, 1}, input.mean);
  const std::string stdv = gb.initializer("normalize/std", {channels, 1, 1}, input.std);
  std::string x = gb.node("Sub", {"image", mean}, "normalize/center")->output(0);
  x = gb.node("Div", {x, stdv}, "normalize/scale")->output(0);

  const Act act = net.activation();
  const int k = sp.stem_kernel, C = sp.stem_channels;
  x = gb.conv_bn_act("stem", x, oihw_from_hwio(net.stem_weight()->value.data(), k, k, channels, C), C, channels, k,
                     sp.stem_stride, 1, same_pads(S, k, sp.stem_stride), net.stem_bn(), act);
  int i = 0;
  for (const MBConvBlock& b : net.blocks()) x = mbconv(gb, "block" + std::to_string(i++), b, x, act);

  const int cin = int(net.head_weight()->value.dim(0)), hc = sp.head_channels;
  x = gb.conv_bn_act("head/conv", x, oihw_from_hwio(net.head_weight()->value.data(), 1, 1, cin, hc), hc, cin, 1, 1, 1,
                     {0, 0, 0, 0}, net.head_bn(), act);
  x = gb.node("GlobalAveragePool", {x}, "head/pool")->output(0);
  onnx::NodeProto* flat = gb.node("Flatten", {x}, "head/flatten");
  GraphBuilder::integer(flat, "axis", 1);
  const std::string fw = gb.initializer("head/fc/weight", {K, hc}, oihw_from_hwio(net.fc_weight()->value.data(), 1, 1, hc, K));
  const std::string fb = gb.initializer("head/fc/bias", {K}, std::vector<float>(net.fc_bias()->value.data(), net.fc_bias()->value.data() + K));
  onnx::NodeProto* fc = gb.node("Gemm", {flat->output(0), fw, fb}, "logits");
  GraphBuilder::integer(fc, "transB", 1);

  add_metadata(model, "class_names", nlohmann::json(input.class_names).dump());
  add_metadata(model, "input", input_text);
  add_metadata(model, "input_size", std::to_string(S));
  add_metadata(model, "mean", nlohmann::json(input.mean).dump());
  add_metadata(model, "std", nlohmann::json(input.std).dump());
  add_metadata(model, "image_size", std::to_string(input.image_height) + "x" + std::to_string(input.image_width));
  add_metadata(model, "preprocessing",
               "as spnas evaluation: an image of another size than image_size has its short side scaled to it and is "
               "centre-cropped (bilinear); then, for images larger than 64 px, a centre crop of 0.875 of the short "
               "side resized to input_size, else a bilinear resize to input_size if the sizes differ");
  add_metadata(model, "output", "logits: float32 [N, " + std::to_string(K) + "]; softmax gives the probabilities");
  add_metadata(model, "architecture", arch_to_json(net.arch()));
  add_metadata(model, "data", input.data);
  if (!checkpoint.empty()) add_metadata(model, "checkpoint", checkpoint);
  if (!weights.empty()) add_metadata(model, "weights", weights);

  try {
    onnx::checker::check_model(model);
    // Strict: a node whose shape cannot be inferred, or an inferred output shape other than the
    // declared [N, classes], throws.
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(true, 1, false));
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("export: ONNX's checker refused the model: ") + e.what());
  }
  return model;
}

std::string serialize(const onnx::ModelProto& model) {
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw std::runtime_error("export: could not serialize the ONNX model");
  return bytes;
}

}  // namespace

std::string onnx_model_bytes(const ChildNet& net, const InputRecord& input, int batch, const std::string& checkpoint,
                             const std::string& weights) {
  return serialize(checked_model(net, input, batch, checkpoint, weights));
}

ExportResult export_onnx(const ExportOptions& o) {
  if (o.out.empty()) throw std::runtime_error("export: no output file given");
  TrainedNetwork t = load_trained_network(o.checkpoint, o.use_ema, "export", o.data);
  const InputRecord& input = t.input_or_throw("export");
  const onnx::ModelProto model = checked_model(*t.net, input, o.batch, o.checkpoint, o.use_ema ? "ema" : "raw");
  const std::string bytes = serialize(model);
  write_file_atomic(o.out, bytes);
  ExportResult r;
  r.path = o.out;
  r.bytes = int64_t(bytes.size());
  r.arch = t.arch;
  r.nodes = model.graph().node_size();
  for (const onnx::TensorProto& init : model.graph().initializer()) {
    int64_t n = 1;
    for (int64_t d : init.dims()) n *= d;
    r.parameters += n;
  }
  return r;
}

OnnxFileInfo read_onnx_file(const std::string& path) {
  onnx::ModelProto m;
  if (!m.ParseFromString(read_text_file(path, "onnx"))) throw std::runtime_error("onnx: '" + path + "' is not an ONNX model (protobuf parse failed)");
  try {
    onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    throw std::runtime_error("onnx: '" + path + "' fails ONNX's checker: " + e.what());
  }
  OnnxFileInfo info;
  info.ir_version = m.ir_version();
  for (const auto& op : m.opset_import())
    if (op.domain().empty() || op.domain() == "ai.onnx") info.opset = op.version();
  info.producer = m.producer_name();
  auto dims = [](const onnx::ValueInfoProto& v) {
    std::vector<int64_t> d;
    for (const auto& dim : v.type().tensor_type().shape().dim()) d.push_back(dim.has_dim_value() ? dim.dim_value() : -1);
    return d;
  };
  if (m.graph().input_size() > 0) {
    info.input_name = m.graph().input(0).name();
    info.input_shape = dims(m.graph().input(0));
  }
  if (m.graph().output_size() > 0) {
    info.output_name = m.graph().output(0).name();
    info.output_shape = dims(m.graph().output(0));
  }
  for (const auto& n : m.graph().node()) ++info.op_counts[n.op_type()];
  for (const auto& e : m.metadata_props()) info.metadata[e.key()] = e.value();
  return info;
}

}  // namespace spnas
