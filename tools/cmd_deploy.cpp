// spnas export / spnas predict: the trained network leaves the project (deploy/, deploy/README.md).
#include <cstdio>

#include "deploy/onnx_export.h"
#include "deploy/predict.h"
#include "engine/threads.h"
#include "tools/cli.h"

namespace spnas::cli {

Command add_export(CLI::App& app) {
  struct Flags {
    ExportOptions o;
    std::string data;
    bool raw = false, dynamic = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand(
      "export",
      "Writes the trained network of a `spnas train` checkpoint as an ONNX file: batch norm folded into the "
      "convolutions, the input normalisation inside (input \"image\": RGB float in [0, 1], NCHW), class names in the "
      "metadata; checked by ONNX's checker and shape inference, written atomically (deploy/README.md).");
  s->add_option("--checkpoint", f->o.checkpoint, "checkpoint written by `spnas train` (OUT/model.ckpt)")->required();
  s->add_option("--out", f->o.out, "the .onnx file to write")->required();
  s->add_flag("--raw-weights", f->raw, "the raw trained weights instead of their moving average (EMA)");
  s->add_option("--batch", f->o.batch, "the input's batch dimension")->capture_default_str()->check(integer_in(1, 65536));
  s->add_flag("--dynamic-batch", f->dynamic, "a symbolic batch dimension (N) instead of --batch");
  s->add_option("--data", f->data,
                "only for checkpoints older than the input record: the dataset it was trained on (class names, "
                "image size, normalisation)");
  return {s, [f]() -> int {
#ifdef SPNAS_HAVE_ONNX
            ExportOptions o = f->o;
            o.use_ema = !f->raw;
            if (f->dynamic) o.batch = 0;
            if (!f->data.empty()) o.data = parse_data_spec(f->data);
            const ExportResult r = export_onnx(o);
            std::printf("exported %s: %d nodes, %lld parameters, %lld bytes, opset %d, %s weights, batch %s\n",
                        r.path.c_str(), r.nodes, (long long)r.parameters, (long long)r.bytes, kOnnxOpset,
                        o.use_ema ? "EMA" : "raw", o.batch == 0 ? "dynamic" : std::to_string(o.batch).c_str());
            std::printf("architecture: %s\n", arch_summary(r.arch).c_str());
            return 0;
#else
            throw std::runtime_error(
                "this spnas was built without ONNX (tools/setup.sh installs libonnx-dev and libprotobuf-dev; then rebuild)");
#endif
          }};
}

Command add_predict(CLI::App& app) {
  struct Flags {
    PredictOptions o;
    std::string data;
    bool raw = false, json = false;
    int threads = 0;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* s = app.add_subcommand(
      "predict",
      "Classifies JPEG/PNG/BMP files (or folders of them) with a trained network, prepared exactly as evaluation "
      "prepares images; prints the top classes with their probabilities.");
  s->add_option("--checkpoint", f->o.checkpoint, "checkpoint written by `spnas train`")->required();
  s->add_option("images", f->o.inputs, "image files or folders (searched recursively)")->required();
  s->add_option("--top", f->o.top_k, "classes to print per image")->capture_default_str()->check(integer_in(1, 100000));
  s->add_option("--onnx", f->o.onnx,
                "run this exported .onnx file through OpenCV's dnn module instead of our engine (the preprocessing "
                "still comes from the checkpoint)");
  s->add_flag("--raw-weights", f->raw, "the raw trained weights instead of their moving average (EMA)");
  s->add_option("--batch", f->o.batch, "images per forward pass")->capture_default_str()->check(integer_in(1, 4096));
  s->add_option("--data", f->data, "only for checkpoints older than the input record (as export --data)");
  s->add_flag("--json", f->json, "JSON instead of text");
  add_threads(s, f->threads);
  return {s, [f] {
            set_num_threads(f->threads);
            PredictOptions o = f->o;
            o.use_ema = !f->raw;
            if (!f->data.empty()) o.data = parse_data_spec(f->data);
            const std::vector<ImagePrediction> p = predict_images(o);
            std::fputs((f->json ? predictions_json(p) : predictions_text(p)).c_str(), stdout);
            return 0;
          }};
}

}  // namespace spnas::cli
