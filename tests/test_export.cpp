// The exported ONNX file computes what our engine computes: a small network trained for a few
// steps, exported, and run by OpenCV's dnn module (an ONNX importer independent of ours) on a batch
// of images gives the engine's evaluation-mode logits within 1e-4 (relative, per image) and the same
// top-1; ONNX's checker accepts the file; bad checkpoints are refused without writing anything.
// Where ONNX or OpenCV is absent the test says so and exits with 77, which CTest reports as skipped.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>

#if SPNAS_HAVE_ONNX && SPNAS_HAVE_OPENCV

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>

#include "deploy/onnx_export.h"
#include "deploy/opencv_runner.h"
#include "deploy/predict.h"
#include "engine/checkpoint.h"
#include "nas/latency/harness.h"
#include "nas/latency/measure.h"
#include "nas/latency/networks.h"
#include "nas/latency/opencv_backend.h"
#include "nas/latency/profile.h"
#include "nas/search.h"
#include "nas/train.h"
#include "tests/nas_fixtures.h"
#include "tests/test_data_util.h"

using namespace spnas;
using datatest::contains;
using datatest::error_of;
namespace fs = std::filesystem;

namespace {

const char* kData = "synthetic:train=640,test=64,seed=3";

// A width-0.25 cifar10 network with every kind of layer (the five choices, SE on some), trained for
// 30 steps with a fast batch-norm momentum, so the folded statistics are far from their initial 0 / 1.
const TrainResult& trained() {
  static const TrainResult r = [] {
    SearchSpace s = load_space("cifar10", SpaceOptions{0.25f, 0, 0});
    Arch a = uniform_arch(s, Choice::K5E6);
    const Choice cycle[] = {Choice::K3E3, Choice::K5E6, Choice::Skip, Choice::K3E6, Choice::K5E3};
    std::vector<int> idx = s.searchable_indices();
    for (size_t i = 0; i < idx.size(); ++i) {
      Choice c = cycle[i % 5];
      a.layers[i] = c == Choice::Skip && !s.layers[size_t(idx[i])].skip_allowed ? Choice::K5E3 : c;
      a.se.push_back(i % 3 == 1 && a.layers[i] != Choice::Skip);
    }
    TrainConfig c;
    c.arch = a;
    c.data = parse_data_spec(kData);
    c.batch = 32;
    c.epochs = 1.5f;  // 20 steps per epoch
    c.bn_momentum = 0.8f;
    c.ema_decay = 0.9f;
    c.out_dir = "export_train";
    c.quiet = true;
    c.eval_each_epoch = false;
    return run_train(c);
  }();
  return r;
}

// Our engine's evaluation-mode logits and the exported file's through OpenCV, on the first batch
// of the synthetic test split as evaluation prepares it (the file gets the same pixels on the
// 0..1 scale: it normalises inside).
struct Logits {
  Tensor ours, theirs;
};
Logits both(ChildNet& net, const std::string& onnx_path, int batch, int file_batch) {
  Splits d = open_dataset(parse_data_spec(kData));
  const int S = net.space().input_size;
  Tensor normalised, raw;
  std::vector<int> labels;
  REQUIRE(eval_loader(d.test, S, batch)->next(normalised, labels));
  d.test->set_normalization({0, 0, 0}, {1, 1, 1});
  REQUIRE(eval_loader(d.test, S, batch)->next(raw, labels));
  Logits l;
  NoGrad ng;
  ForwardOptions fo;
  fo.training = false;
  l.ours = net.forward(constant(normalised), fo)->value.clone();
  OpenCvNet cv(onnx_path, file_batch);
  l.theirs = cv.forward(nhwc_to_nchw(raw));
  return l;
}

int argmax(const float* v, int64_t K) { return int(std::max_element(v, v + K) - v); }

// Worst over the images of max_k |ours - theirs| / max_k |ours|; counts top-1 disagreements.
double worst_relative_error(const Logits& l, int* top1_differs) {
  REQUIRE(l.ours.shape() == l.theirs.shape());
  const int64_t N = l.ours.dim(0), K = l.ours.dim(1);
  double worst = 0;
  *top1_differs = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* a = l.ours.data() + n * K;
    const float* b = l.theirs.data() + n * K;
    double diff = 0, scale = 0;
    for (int64_t k = 0; k < K; ++k) {
      diff = std::max(diff, double(std::fabs(a[k] - b[k])));
      scale = std::max(scale, double(std::fabs(a[k])));
    }
    worst = std::max(worst, diff / scale);
    *top1_differs += argmax(a, K) != argmax(b, K);
  }
  return worst;
}

// The trained network exported to `out` (batch 0: dynamic).
void export_trained(const std::string& out, int batch, bool ema = true) {
  ExportOptions o;
  o.checkpoint = trained().checkpoint_path;
  o.out = out;
  o.batch = batch;
  o.use_ema = ema;
  export_onnx(o);
}

std::string read_all(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("the exported file passes ONNX's checker and says what it takes") {
  ExportOptions o;
  o.checkpoint = trained().checkpoint_path;
  o.out = "dynamic.onnx";
  o.batch = 0;
  ExportResult r = export_onnx(o);
  CHECK(r.bytes == int64_t(fs::file_size("dynamic.onnx")));
  OnnxFileInfo info = read_onnx_file("dynamic.onnx");  // runs the checker again on the file
  CHECK(info.opset == kOnnxOpset);
  CHECK(info.producer == "spnas");
  CHECK(info.input_name == "image");
  CHECK(info.input_shape == std::vector<int64_t>{-1, 3, 32, 32});
  CHECK(info.output_shape == std::vector<int64_t>{-1, 10});
  CHECK(nlohmann::json::parse(info.metadata.at("class_names")).get<std::vector<std::string>>() ==
        synthetic_class_names());
  CHECK(info.metadata.at("input_size") == "32");
  CHECK(info.metadata.at("weights") == "ema");
  CHECK(parse_arch(info.metadata.at("architecture"), "metadata").layers == r.arch.layers);
  // Normalisation first, then the network: no BatchNormalization node (folded), SE and residuals present.
  CHECK(info.op_counts.count("BatchNormalization") == 0);
  CHECK(info.op_counts.at("Sub") == 1);
  CHECK(info.op_counts.at("Div") == 1);
  CHECK(info.op_counts.at("Sigmoid") >= 1);
  CHECK(info.op_counts.at("Mul") == info.op_counts.at("Sigmoid"));
  CHECK(info.op_counts.at("Add") >= 1);
  CHECK(info.op_counts.at("Gemm") == 1);
  export_trained("batch4.onnx", 4);
  CHECK(read_onnx_file("batch4.onnx").input_shape == std::vector<int64_t>{4, 3, 32, 32});
}

TEST_CASE("OpenCV's dnn computes our engine's logits from the exported file (EMA and raw weights)") {
  const TrainResult& tr = trained();
  for (bool ema : {true, false}) {
    const std::string file = ema ? "ema.onnx" : "raw.onnx";
    export_trained(file, 0, ema);
    TrainedNetwork t = load_trained_network(tr.checkpoint_path, ema, "test");
    Logits l = both(*t.net, file, 32, 0);
    int differs = 0;
    const double err = worst_relative_error(l, &differs);
    MESSAGE((ema ? "EMA" : "raw") << " weights: worst per-image relative logit difference " << err);
    CHECK(err < 1e-4);
    CHECK(differs == 0);
  }
  // The two files really hold different weights (EMA 0.9 over 30 steps): each matches only its own.
  TrainedNetwork raw = load_trained_network(tr.checkpoint_path, false, "test");
  Logits cross = both(*raw.net, "ema.onnx", 32, 0);
  int differs = 0;
  CHECK(worst_relative_error(cross, &differs) > 1e-3);
}

TEST_CASE("a fixed-batch file runs in chunks of its batch") {
  export_trained("batch8.onnx", 8);
  TrainedNetwork t = load_trained_network(trained().checkpoint_path, true, "test");
  int differs = 0;
  CHECK(worst_relative_error(both(*t.net, "batch8.onnx", 20, 8), &differs) < 1e-4);
  CHECK(differs == 0);
}

// ReLU6 (Clip), SE after every expansion kind and both SAME padding cases of stride 2 (even input:
// the extra row at the bottom; odd: symmetric), random weights and batch-norm statistics.
TEST_CASE("ReLU6, SE and odd / even input sizes match too") {
  std::string space = "relu6_space.json";
  nlohmann::json j = nlohmann::json::parse(kTinySpaceJson);
  j["activation"] = "relu6";
  std::ofstream(space) << j.dump();
  for (int size : {16, 17}) {
    Arch a;
    a.space = space;
    a.layers = {Choice::K3E6, Choice::K5E3, Choice::K5E6, Choice::K3E3};
    a.se = {true, false, true, true};
    a.input_size = size;
    NetConfig nc;
    nc.seed = 7;
    ChildNet net(a, nc);
    Rng rng(11);
    for (Param& p : net.params().params())
      if (p.group == "bn")
        for (int64_t i = 0; i < p.var->value.numel(); ++i) p.var->value.data()[i] = rng.uniform(0.5f, 1.5f);
    for (const auto& b : net.params().buffers()) {
      const bool var = contains(b.first, "running_var");
      Tensor t = b.second;
      for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = var ? rng.uniform(0.5f, 2.0f) : rng.uniform(-0.5f, 0.5f);
    }
    // The normalisation both() feeds our engine with: the synthetic set's.
    InputRecord in = input_record(*open_dataset(parse_data_spec(kData)).test, parse_data_spec(kData));
    in.class_names = {"a", "b", "c", "d"};
    write_file_atomic("relu6.onnx", onnx_model_bytes(net, in, 0));
    CHECK(read_onnx_file("relu6.onnx").op_counts.at("Clip") >= 1);
    int differs = 0;
    const double err = worst_relative_error(both(net, "relu6.onnx", 16, 0), &differs);
    MESSAGE("relu6 space at " << size << "x" << size << ": worst relative difference " << err);
    CHECK(err < 1e-4);
    CHECK(differs == 0);
  }
}

TEST_CASE("predict: image files and folders, our engine and the exported file agree") {
  const TrainResult& tr = trained();
  export_trained("predict.onnx", 0);
  // Synthetic test images as PNG files: three at the training size, two of other sizes (fitted to
  // it as image folders fit theirs), one in a nested folder.
  fs::remove_all("predict_images");
  fs::create_directories("predict_images/more");
  Splits d = open_dataset(parse_data_spec(kData));
  std::vector<uint8_t> px(32 * 32 * 3);
  std::vector<std::string> written;
  for (int i = 0; i < 5; ++i) {
    d.test->image(i, px.data());
    std::string path = i == 4 ? "predict_images/more/img4.png" : "predict_images/img" + std::to_string(i) + ".png";
    if (i < 3) {
      REQUIRE(stbi_write_png(path.c_str(), 32, 32, 3, px.data(), 32 * 3));
    } else {  // nearest-neighbour upscale to 48x40
      std::vector<uint8_t> big(48 * 40 * 3);
      for (int y = 0; y < 48; ++y)
        for (int x = 0; x < 40; ++x)
          for (int c = 0; c < 3; ++c) big[(y * 40 + x) * 3 + c] = px[((y * 2 / 3) * 32 + x * 32 / 40) * 3 + c];
      REQUIRE(stbi_write_png(path.c_str(), 40, 48, 3, big.data(), 40 * 3));
    }
    written.push_back(path);
  }
  PredictOptions po;
  po.checkpoint = tr.checkpoint_path;
  po.inputs = {"predict_images"};
  po.top_k = 3;
  po.batch = 2;  // several batches, the last one short
  std::vector<ImagePrediction> ours = predict_images(po);
  po.onnx = "predict.onnx";
  std::vector<ImagePrediction> theirs = predict_images(po);
  REQUIRE(ours.size() == 5);
  REQUIRE(theirs.size() == 5);
  std::sort(written.begin(), written.end());
  for (size_t i = 0; i < 5; ++i) {
    CHECK(ours[i].path == written[i]);
    CHECK(ours[i].top.size() == 3);
    CHECK(ours[i].top[0].index == theirs[i].top[0].index);
    CHECK(ours[i].top[0].name == synthetic_class_names()[size_t(ours[i].top[0].index)]);
    CHECK(ours[i].top[0].probability >= ours[i].top[1].probability);
    for (int k = 0; k < 3; ++k) CHECK(ours[i].top[k].probability == doctest::Approx(theirs[i].top[k].probability).epsilon(1e-4));
  }
  // A native-size PNG is lossless: predict's logits are evaluation's for that test image.
  TrainedNetwork t = load_trained_network(tr.checkpoint_path, true, "test");
  Tensor batch;
  std::vector<int> labels;
  REQUIRE(eval_loader(d.test, 32, 1)->next(batch, labels));
  NoGrad ng;
  ForwardOptions fo;
  fo.training = false;
  Tensor l0 = t.net->forward(constant(batch), fo)->value;
  for (int k = 0; k < 10; ++k) CHECK(ours[0].logits[size_t(k)] == doctest::Approx(l0.data()[k]).epsilon(1e-5));
  CHECK(contains(predictions_text(ours), "predict_images/img0.png\n"));
  nlohmann::json js = nlohmann::json::parse(predictions_json(ours));
  CHECK(js.size() == 5);
  CHECK(js[0]["top"][0]["class"] == ours[0].top[0].name);
  po.inputs = {"predict_images/missing.png"};
  CHECK(contains(error_of([&] { predict_images(po); }), "predict_images/missing.png"));
}

TEST_CASE("bad checkpoints: a clear error naming the file, and nothing written") {
  const TrainResult& tr = trained();
  fs::remove_all("bad");
  fs::remove_all("bad_out");
  fs::create_directories("bad");
  fs::create_directories("bad_out");
  const std::string out = "bad_out/model.onnx";
  auto refused = [&](const std::string& ckpt, const std::string& reason, bool use_ema = true) {
    std::ofstream(out) << "previous";
    ExportOptions o;
    o.checkpoint = ckpt;
    o.out = out;
    o.use_ema = use_ema;
    const std::string e = error_of([&] { export_onnx(o); });
    MESSAGE(e);
    CHECK(contains(e, ckpt));
    CHECK(contains(e, reason));
    CHECK(read_all(out) == "previous");  // untouched
    int files = 0;
    for (const auto& f : fs::directory_iterator("bad_out")) files += f.path().filename() != "model.onnx";
    CHECK(files == 0);  // no temporary file left behind
  };

  // A search checkpoint, from a real (short) search.
  SearchConfig sc;
  sc.space = tiny_space_file();
  sc.space_options.input_size = 16;
  sc.data = parse_data_spec("synthetic:train=64,test=16,seed=3");
  sc.batch = 16;
  sc.epochs = 1;
  sc.warmup_epochs = 0.5f;
  sc.out_dir = "export_search";
  sc.checkpoint_every = 0;
  sc.quiet = true;
  SearchResult sr = run_search(sc, tiny_table(load_space(sc.space, sc.space_options)));
  refused(sr.checkpoint_path, "search checkpoint");

  const std::string bytes = read_all(tr.checkpoint_path);
  std::ofstream("bad/truncated.ckpt", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  refused("bad/truncated.ckpt", "truncated");
  std::ofstream("bad/foreign.ckpt", std::ios::binary) << read_all("dynamic.onnx");
  refused("bad/foreign.ckpt", "not a spnas checkpoint");
  refused("bad/missing.ckpt", "cannot open");

  // A training checkpoint without EMA weights asked for them; and one written before the input
  // record existed, which exports once the dataset is named.
  TrainedNetwork t = load_trained_network(tr.checkpoint_path, false, "test");
  Checkpoint ck;
  ck.params = &t.net->params();
  nlohmann::json meta = {{"kind", "spnas-train"}, {"arch", nlohmann::json::parse(arch_to_json(t.arch))}};
  ck.metadata = meta.dump();
  save_checkpoint("bad/old.ckpt", ck);
  refused("bad/old.ckpt", "no EMA weights");
  refused("bad/old.ckpt", "does not record its input", false);
  ExportOptions o;
  o.checkpoint = "bad/old.ckpt";
  o.out = "bad/old.onnx";
  o.use_ema = false;
  o.data = parse_data_spec(kData);
  export_onnx(o);
  CHECK(read_onnx_file("bad/old.onnx").metadata.at("data") == kData);
  o.batch = -2;
  CHECK(contains(error_of([&] { export_onnx(o); }), "batch"));
}

TEST_CASE("latency in OpenCV: exported layers map to pieces, a run splits exactly into them") {
  CHECK(opencv_layer_piece("normalize/center", 7) == 0);
  CHECK(opencv_layer_piece("stem/relu", 7) == 0);
  CHECK(opencv_layer_piece("block0/expand", 7) == 1);
  CHECK(opencv_layer_piece("block6/residual", 7) == 7);
  CHECK(opencv_layer_piece("head/conv", 7) == 8);
  CHECK(opencv_layer_piece("logits", 7) == 8);
  CHECK(opencv_layer_piece("blockade", 7) == 0);  // not "block" + a number
  CHECK(contains(error_of([] { opencv_layer_piece("block7/expand", 7); }), "block7/expand"));

  // cifar10 at width 0.25 on 8x8 images: every choice, SE on two layers, one skipped layer.
  const SearchSpace s = load_space("cifar10", SpaceOptions{0.25f, 8, 0});
  Arch a = uniform_arch(s, Choice::K3E3);
  const std::vector<int> idx = s.searchable_indices();
  a.layers[0] = Choice::K5E6;
  a.layers[1] = Choice::Skip;
  a.layers[2] = Choice::K3E6;
  a.layers[5] = Choice::K5E3;
  a.se.assign(idx.size(), false);
  a.se[2] = a.se[5] = true;
  REQUIRE(s.layers[size_t(idx[1])].skip_allowed);
  prepare_backend("opencv", false, 1);
  const Tensor images = random_images(2, 8, 3);
  std::unique_ptr<PieceNet> net = make_piece_net("opencv", s, a.layers, a.se, images, 1);
  const int blocks = int(s.layers.size()) - 1;  // one layer skipped
  CHECK(net->num_pieces() == blocks + 2);
  CHECK(net->layer_piece()[size_t(idx[1])] == -1);
  CHECK(net->layer_piece()[size_t(idx[2])] == idx[2]);  // the skipped layer before it shifts it down by one
  std::vector<double> piece(size_t(net->num_pieces()), -1.0);
  Rng rng(1);
  const double total = net->run(constant(images), {}, false, rng, piece.data());
  double sum = 0;
  for (double p : piece) sum += p;
  CHECK(total > 0);
  CHECK(sum == doctest::Approx(total).epsilon(1e-9));
  for (int p = 1; p <= blocks; ++p) CHECK(piece[size_t(p)] > 0);
  CHECK(contains(error_of([&] { net->run(constant(images), {0, 1}, true, rng, piece.data()); }), "inference only"));
  CHECK(contains(error_of([] { prepare_backend("opencv", true, 1); }), "inference only"));
}

TEST_CASE("latency in OpenCV: the table records its backend, and a measurement with it agrees") {
  ProfileOptions po;
  po.space = "cifar10";
  po.width = 0.25f;
  po.input_size = 8;
  po.backend = "opencv";
  po.context_rounds = 1;
  po.warmup = 1;
  po.reps = 3;
  po.min_seconds = 0;
  po.pin = false;
  const LatencyTable t = profile_space(po);
  CHECK(t.backend == "opencv");
  CHECK(t.isa == "opencv");
  CHECK(t.mode == "inference");
  CHECK(t.fixed_ms > 0);
  for (const LayerCost& c : t.layers) CHECK(c.k5_e6 > 0);
  fs::create_directories("latency_opencv");
  save_latency_table("latency_opencv/lut.json", t);
  const LatencyTable back = load_latency_table("latency_opencv/lut.json");
  CHECK(back.backend == "opencv");
  TableSettings given;
  given.backend = "spnas";
  CHECK(contains(table_conflicts(back, given).at(0), "opencv"));

  MeasureOptions mo;
  mo.backend = "opencv";
  mo.warmup = 1;
  mo.reps = 3;
  mo.min_seconds = 0;
  mo.pin = false;
  Arch a = uniform_arch(load_space("cifar10", SpaceOptions{0.25f, 8, 0}), Choice::K3E6);
  a.width = 0.25f;
  a.input_size = 8;
  const ArchLatency r = measure_arch_latency(a, mo, &back);
  CHECK(r.ms > 0);
  CHECK(r.predicted_ms > 0);
  for (const std::string& w : r.warnings) CHECK_MESSAGE(!contains(w, "backend"), w);
  CHECK(arch_latency_json(a, r, mo).at("backend") == "opencv");
}

#else

TEST_CASE("ONNX export") {
  std::printf("SKIPPED: test_export needs ONNX (libonnx-dev, libprotobuf-dev) and OpenCV dnn (libopencv-dnn-dev); "
              "this build has ONNX %s, OpenCV %s\n",
#if SPNAS_HAVE_ONNX
              "yes",
#else
              "no",
#endif
#if SPNAS_HAVE_OPENCV
              "yes");
#else
              "no");
#endif
  std::fflush(stdout);
  std::exit(77);
}

#endif
