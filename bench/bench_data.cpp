// Data-pipeline throughput: images/s that the Loader delivers for each source, with and without
// augmentation, with 1 and 2 worker threads, compared with the images/s a training step consumes.
//
//   bench_data [--train-ips N] [--seconds S] [--batch B] [--mnist DIR] [--cifar10-bin DIR]
//              [--cifar10-folder DIR] [--only synthetic|mnist|cifar10-bin|cifar10-folder]
//   bench_data --learnability [--epochs E]   linear vs small ConvNet on the synthetic dataset
//
// Sources default to ../shared/data/... relative to the working directory or to the source tree.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "bench/args.h"
#include "data/data.h"

using namespace spnas;
namespace fs = std::filesystem;

static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

static std::string find_shared(const std::string& sub) {
  // The working directory's ../shared, or the one beside the source tree (this file is bench/ in it).
  const fs::path here = fs::path(__FILE__).parent_path().parent_path();
  for (const fs::path& base : {fs::path("../shared/data"), fs::path("../../shared/data"), here / "../shared/data"}) {
    fs::path p = base / sub;
    std::error_code ec;
    if (fs::is_directory(p, ec)) return fs::canonical(p).string();
  }
  return "";
}

struct Row {
  std::string source, aug;
  int workers;
  double ips;
};

// Images/s over at least `seconds` (whole batches, across epochs).
static double measure(std::shared_ptr<Dataset> ds, const AugmentConfig& aug, int workers, int batch, double seconds) {
  Loader L(ds, std::min<int64_t>(batch, ds->size()), true, aug, 1, workers);
  Tensor x;
  std::vector<int> y;
  L.next(x, y);  // start-up (threads, first batch) excluded
  int64_t images = 0;
  const double t0 = now();
  double t = t0;
  while (t - t0 < seconds) {
    if (L.next(x, y)) images += int64_t(y.size());
    t = now();
  }
  return double(images) / (t - t0);
}

// ---- learnability: softmax regression vs a small ConvNet (im2col + sgemm), on the synthetic set ----

namespace {

struct Conv {  // 3x3, stride 1, pad 1, NHWC; weights [9*cin, cout]
  int cin, cout, h, w;
  std::vector<float> W, b, gW, gb, mW, mb, cols;
  Conv(int ci, int co, int hh, int ww, Rng& r) : cin(ci), cout(co), h(hh), w(ww) {
    W.resize(size_t(9) * ci * co);
    const float s = std::sqrt(2.0f / (9 * ci));
    for (auto& v : W) v = r.normal() * s;
    b.assign(size_t(co), 0.0f);
    gW.assign(W.size(), 0.0f);
    gb.assign(b.size(), 0.0f);
    mW.assign(W.size(), 0.0f);
    mb.assign(b.size(), 0.0f);
  }
  void im2col(const float* x, int B) {
    const int K = 9 * cin;
    cols.assign(size_t(B) * h * w * K, 0.0f);
    for (int n = 0; n < B; ++n)
      for (int y = 0; y < h; ++y)
        for (int xx = 0; xx < w; ++xx) {
          float* c = cols.data() + ((size_t(n) * h + y) * w + xx) * K;
          for (int ky = 0; ky < 3; ++ky)
            for (int kx = 0; kx < 3; ++kx) {
              const int sy = y + ky - 1, sx = xx + kx - 1;
              if (sy < 0 || sy >= h || sx < 0 || sx >= w) continue;
              std::memcpy(c + (ky * 3 + kx) * cin, x + ((size_t(n) * h + sy) * w + sx) * cin, sizeof(float) * cin);
            }
        }
  }
  void forward(const float* x, float* out, int B) {
    im2col(x, B);
    const int M = B * h * w, K = 9 * cin;
    for (int m = 0; m < M; ++m) std::memcpy(out + size_t(m) * cout, b.data(), sizeof(float) * cout);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, cout, K, 1.0f, cols.data(), K, W.data(), cout, 1.0f, out,
                cout);
  }
  void backward(const float* dout, float* dx, int B) {  // dx may be null
    const int M = B * h * w, K = 9 * cin;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, cout, M, 1.0f, cols.data(), K, dout, cout, 0.0f, gW.data(),
                cout);
    std::fill(gb.begin(), gb.end(), 0.0f);
    for (int m = 0; m < M; ++m)
      for (int c = 0; c < cout; ++c) gb[size_t(c)] += dout[size_t(m) * cout + c];
    if (!dx) return;
    std::vector<float> dcols(size_t(M) * K);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, cout, 1.0f, dout, cout, W.data(), cout, 0.0f,
                dcols.data(), K);
    std::fill(dx, dx + size_t(B) * h * w * cin, 0.0f);
    for (int n = 0; n < B; ++n)
      for (int y = 0; y < h; ++y)
        for (int xx = 0; xx < w; ++xx) {
          const float* c = dcols.data() + ((size_t(n) * h + y) * w + xx) * K;
          for (int ky = 0; ky < 3; ++ky)
            for (int kx = 0; kx < 3; ++kx) {
              const int sy = y + ky - 1, sx = xx + kx - 1;
              if (sy < 0 || sy >= h || sx < 0 || sx >= w) continue;
              float* d = dx + ((size_t(n) * h + sy) * w + sx) * cin;
              for (int i = 0; i < cin; ++i) d[i] += c[(ky * 3 + kx) * cin + i];
            }
        }
  }
  void step(float lr, float mom, float wd, int B) {
    for (size_t i = 0; i < W.size(); ++i) {
      mW[i] = mom * mW[i] + gW[i] / B + wd * W[i];
      W[i] -= lr * mW[i];
    }
    for (size_t i = 0; i < b.size(); ++i) {
      mb[i] = mom * mb[i] + gb[i] / B;
      b[i] -= lr * mb[i];
    }
  }
};

void relu_fwd(std::vector<float>& a) {
  for (auto& v : a) v = v > 0 ? v : 0;
}
void relu_bwd(const std::vector<float>& a, std::vector<float>& g) {
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] <= 0) g[i] = 0;
}
// 2x2 max pool, NHWC.
void pool_fwd(const std::vector<float>& x, int B, int h, int w, int c, std::vector<float>& y, std::vector<int>& arg) {
  const int oh = h / 2, ow = w / 2;
  y.assign(size_t(B) * oh * ow * c, 0.0f);
  arg.assign(y.size(), 0);
  for (int n = 0; n < B; ++n)
    for (int i = 0; i < oh; ++i)
      for (int j = 0; j < ow; ++j)
        for (int k = 0; k < c; ++k) {
          float best = -1e30f;
          int bi = 0;
          for (int dy = 0; dy < 2; ++dy)
            for (int dx = 0; dx < 2; ++dx) {
              const int idx = int(((size_t(n) * h + 2 * i + dy) * w + 2 * j + dx) * c + k);
              if (x[size_t(idx)] > best) best = x[size_t(idx)], bi = idx;
            }
          const size_t o = ((size_t(n) * oh + i) * ow + j) * c + k;
          y[o] = best;
          arg[o] = bi;
        }
}

struct SmallConvNet {  // conv16-pool-conv32-pool-conv64-gap-fc10
  Rng r{42};
  Conv c1{3, 16, 32, 32, r}, c2{16, 32, 16, 16, r}, c3{32, 64, 8, 8, r};
  std::vector<float> fcW, fcb, gfcW, gfcb, mfcW, mfcb;
  std::vector<float> a1, p1, a2, p2, a3, g, logits;
  std::vector<int> arg1, arg2;
  SmallConvNet() {
    fcW.resize(64 * 10);
    for (auto& v : fcW) v = r.normal() * std::sqrt(1.0f / 64);
    fcb.assign(10, 0.0f);
    gfcW.assign(fcW.size(), 0);
    gfcb.assign(10, 0);
    mfcW.assign(fcW.size(), 0);
    mfcb.assign(10, 0);
  }
  void forward(const float* x, int B) {
    a1.resize(size_t(B) * 32 * 32 * 16);
    c1.forward(x, a1.data(), B);
    relu_fwd(a1);
    pool_fwd(a1, B, 32, 32, 16, p1, arg1);
    a2.resize(size_t(B) * 16 * 16 * 32);
    c2.forward(p1.data(), a2.data(), B);
    relu_fwd(a2);
    pool_fwd(a2, B, 16, 16, 32, p2, arg2);
    a3.resize(size_t(B) * 8 * 8 * 64);
    c3.forward(p2.data(), a3.data(), B);
    relu_fwd(a3);
    g.assign(size_t(B) * 64, 0.0f);
    for (int n = 0; n < B; ++n)
      for (int p = 0; p < 64; ++p)
        for (int k = 0; k < 64; ++k) g[size_t(n) * 64 + k] += a3[(size_t(n) * 64 + p) * 64 + k] / 64;
    logits.assign(size_t(B) * 10, 0.0f);
    for (int n = 0; n < B; ++n)
      for (int o = 0; o < 10; ++o) {
        float s = fcb[size_t(o)];
        for (int k = 0; k < 64; ++k) s += g[size_t(n) * 64 + k] * fcW[size_t(k) * 10 + o];
        logits[size_t(n) * 10 + o] = s;
      }
  }
  void train_step(const float* x, const std::vector<int>& y, float lr) {
    const int B = int(y.size());
    forward(x, B);
    std::vector<float> dlog(size_t(B) * 10);
    for (int n = 0; n < B; ++n) {
      float m = *std::max_element(&logits[size_t(n) * 10], &logits[size_t(n) * 10] + 10), z = 0;
      for (int o = 0; o < 10; ++o) z += std::exp(logits[size_t(n) * 10 + o] - m);
      for (int o = 0; o < 10; ++o)
        dlog[size_t(n) * 10 + o] = std::exp(logits[size_t(n) * 10 + o] - m) / z - (o == y[size_t(n)] ? 1.0f : 0.0f);
    }
    std::fill(gfcW.begin(), gfcW.end(), 0.0f);
    std::fill(gfcb.begin(), gfcb.end(), 0.0f);
    std::vector<float> dg(size_t(B) * 64, 0.0f);
    for (int n = 0; n < B; ++n)
      for (int o = 0; o < 10; ++o) {
        const float d = dlog[size_t(n) * 10 + o];
        gfcb[size_t(o)] += d;
        for (int k = 0; k < 64; ++k) {
          gfcW[size_t(k) * 10 + o] += d * g[size_t(n) * 64 + k];
          dg[size_t(n) * 64 + k] += d * fcW[size_t(k) * 10 + o];
        }
      }
    std::vector<float> d3(a3.size());
    for (int n = 0; n < B; ++n)
      for (int p = 0; p < 64; ++p)
        for (int k = 0; k < 64; ++k) d3[(size_t(n) * 64 + p) * 64 + k] = dg[size_t(n) * 64 + k] / 64;
    relu_bwd(a3, d3);
    std::vector<float> dp2(p2.size()), d2(a2.size(), 0.0f), dp1(p1.size()), d1(a1.size(), 0.0f);
    c3.backward(d3.data(), dp2.data(), B);
    for (size_t i = 0; i < dp2.size(); ++i) d2[size_t(arg2[i])] += dp2[i];
    relu_bwd(a2, d2);
    c2.backward(d2.data(), dp1.data(), B);
    for (size_t i = 0; i < dp1.size(); ++i) d1[size_t(arg1[i])] += dp1[i];
    relu_bwd(a1, d1);
    c1.backward(d1.data(), nullptr, B);
    const float mom = 0.9f, wd = 5e-4f;
    c1.step(lr, mom, wd, B);
    c2.step(lr, mom, wd, B);
    c3.step(lr, mom, wd, B);
    for (size_t i = 0; i < fcW.size(); ++i) {
      mfcW[i] = mom * mfcW[i] + gfcW[i] / B + wd * fcW[i];
      fcW[i] -= lr * mfcW[i];
    }
    for (size_t i = 0; i < 10; ++i) {
      mfcb[i] = mom * mfcb[i] + gfcb[i] / B;
      fcb[i] -= lr * mfcb[i];
    }
  }
};

double evaluate_convnet(SmallConvNet& net, std::shared_ptr<Dataset> test) {
  Loader L(test, 100, false, default_eval_augment(*test), 0, 1, false);
  Tensor x;
  std::vector<int> y;
  int64_t right = 0, total = 0;
  while (L.next(x, y)) {
    net.forward(x.data(), int(y.size()));
    for (size_t n = 0; n < y.size(); ++n) {
      const float* l = &net.logits[n * 10];
      right += int(std::max_element(l, l + 10) - l) == y[n];
      ++total;
    }
  }
  return double(right) / double(total);
}

// Softmax regression on raw normalized pixels: minibatch SGD, a few epochs.
double linear_accuracy(std::shared_ptr<Dataset> train, std::shared_ptr<Dataset> test, int epochs, bool augment) {
  const int D = int(train->image_bytes()), K = train->num_classes();
  std::vector<float> W(size_t(D) * K, 0.0f), b(size_t(K), 0.0f);
  Loader L(train, 50, true, augment ? default_train_augment(*train) : default_eval_augment(*train), 3, 1);
  Tensor x;
  std::vector<int> y;
  std::vector<float> p(static_cast<size_t>(K));
  for (int e = 0; e < epochs; ++e) {
    const float lr = 0.002f / (1 + e);
    while (L.next(x, y)) {
      for (size_t n = 0; n < y.size(); ++n) {
        const float* xi = x.data() + n * size_t(D);
        for (int k = 0; k < K; ++k) p[size_t(k)] = b[size_t(k)];
        for (int d = 0; d < D; ++d)
          for (int k = 0; k < K; ++k) p[size_t(k)] += xi[d] * W[size_t(d) * K + k];
        const float m = *std::max_element(p.begin(), p.end());
        float z = 0;
        for (auto& v : p) z += (v = std::exp(v - m));
        for (int k = 0; k < K; ++k) p[size_t(k)] = p[size_t(k)] / z - (k == y[n] ? 1.0f : 0.0f);
        for (int d = 0; d < D; ++d)
          for (int k = 0; k < K; ++k) W[size_t(d) * K + k] -= lr * p[size_t(k)] * xi[d];
        for (int k = 0; k < K; ++k) b[size_t(k)] -= lr * p[size_t(k)];
      }
    }
  }
  Loader T(test, 100, false, default_eval_augment(*test), 0, 1, false);
  int64_t right = 0, total = 0;
  while (T.next(x, y)) {
    for (size_t n = 0; n < y.size(); ++n) {
      const float* xi = x.data() + n * size_t(D);
      for (int k = 0; k < K; ++k) p[size_t(k)] = b[size_t(k)];
      for (int d = 0; d < D; ++d)
        for (int k = 0; k < K; ++k) p[size_t(k)] += xi[d] * W[size_t(d) * K + k];
      right += int(std::max_element(p.begin(), p.end()) - p.begin()) == y[n];
      ++total;
    }
  }
  return double(right) / double(total);
}

int learnability(int epochs, const std::string& spec) {
  Splits s = open_dataset(parse_data_spec(spec));
  std::printf("dataset: %s, %lld train / %lld test\n", spec.c_str(), (long long)s.train->size(),
              (long long)s.test->size());
  for (int e : {1, 5, 15}) {
    const double t0 = now();
    const double acc = linear_accuracy(s.train, s.test, e, false);
    std::printf("linear softmax regression on raw pixels, %2d epochs: test accuracy %.1f %%  (%.1f s)\n", e, 100 * acc,
                now() - t0);
    std::fflush(stdout);
  }
  SmallConvNet net;
  Loader L(s.train, 64, true, default_train_augment(*s.train), 7, 1);
  Tensor x;
  std::vector<int> y;
  const double t0 = now();
  for (int e = 0; e < epochs; ++e) {
    const float lr = 0.05f * 0.5f * (1 + std::cos(3.14159265f * e / epochs));
    while (L.next(x, y)) net.train_step(x.data(), y, lr);
    std::printf("small ConvNet (conv16-pool-conv32-pool-conv64-gap-fc, 3x3, ~24k params) epoch %2d: test accuracy "
                "%.1f %%  (%.0f s)\n",
                e + 1, 100 * evaluate_convnet(net, s.test), now() - t0);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  double train_ips = 325, seconds = 1.0;
  int batch = 128, epochs = 10;
  bool learn = false;
  std::string only, learn_spec = "synthetic";
  std::string mnist = find_shared("mnist"), cbin = find_shared("cifar-10-batches-bin"),
              cfold = find_shared("cifar10-jpg");
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&] { return flag_value("bench_data", argc, argv, i); };
    if (a == "--train-ips") train_ips = std::atof(val().c_str());
    else if (a == "--seconds") seconds = std::atof(val().c_str());
    else if (a == "--batch") batch = std::atoi(val().c_str());
    else if (a == "--mnist") mnist = val();
    else if (a == "--cifar10-bin") cbin = val();
    else if (a == "--cifar10-folder") cfold = val();
    else if (a == "--only") only = val();
    else if (a == "--learnability") learn = true;
    else if (a == "--epochs") epochs = std::atoi(val().c_str());
    else if (a == "--data") learn_spec = val();
    else {
      std::fprintf(stderr,
                   "usage: bench_data [--train-ips N] [--seconds S] [--batch B] [--mnist DIR] [--cifar10-bin DIR]\n"
                   "                  [--cifar10-folder DIR] [--only SOURCE]\n"
                   "       bench_data --learnability [--epochs E] [--data SPEC]\n");
      return 2;
    }
  }
  try {
    if (learn) return learnability(epochs, learn_spec);
    std::vector<Row> rows;
    auto run = [&](const std::string& name, std::shared_ptr<Dataset> ds) {
      for (int aug = 0; aug < 2; ++aug)
        for (int w : {1, 2}) {
          AugmentConfig cfg = aug ? default_train_augment(*ds) : default_eval_augment(*ds);
          double ips = measure(ds, cfg, w, batch, seconds);
          rows.push_back({name, aug ? "train (crop+flip)" : "none (normalize)", w, ips});
          std::printf("  %-34s %-18s workers %d: %9.0f images/s\n", name.c_str(), rows.back().aug.c_str(), w, ips);
          std::fflush(stdout);
        }
    };
    auto want = [&](const std::string& s) { return only.empty() || only == s; };
    std::printf("data pipeline throughput, batch %d, %.1f s per measurement\n", batch, seconds);
    if (want("synthetic")) {
      const double t0 = now();
      Splits s = open_synthetic();
      std::printf("  synthetic: generated 10000+2000 images in %.3f s\n", now() - t0);
      run("synthetic", s.train);
    }
    if (want("mnist")) {
      if (mnist.empty()) std::printf("  mnist: no directory (pass --mnist DIR), skipped\n");
      else run("mnist", open_mnist(mnist).train);
    }
    if (want("cifar10-bin")) {
      if (cbin.empty()) std::printf("  cifar10-bin: no directory (pass --cifar10-bin DIR), skipped\n");
      else run("cifar10-bin", open_cifar10_bin(cbin).train);
    }
    double folder_1w = -1;
    if (want("cifar10-folder")) {
      if (cfold.empty()) {
        std::printf("  cifar10-folder: no directory (pass --cifar10-folder DIR), skipped\n");
      } else {
        OpenOptions nocache;
        nocache.cache_bytes = 0;
        const double t0 = now();
        Splits s = open_image_folder(cfold, nocache, 10, "cifar10-folder");
        std::printf("  cifar10-folder: listed %lld + %lld files in %.2f s\n", (long long)s.train->size(),
                    (long long)s.test->size(), now() - t0);
        const size_t before = rows.size();
        run("cifar10-folder (JPEG decode)", s.train);
        for (size_t i = before; i < rows.size(); ++i)
          if (rows[i].workers == 1 && rows[i].aug[0] == 't') folder_1w = rows[i].ips;
        Splits c = open_image_folder(cfold, OpenOptions{}, 10, "cifar10-folder");
        const double t1 = now();
        {
          Loader warm(c.train, batch, false, default_eval_augment(*c.train), 0, 2, false);
          Tensor x;
          std::vector<int> y;
          while (warm.next(x, y)) {
          }
        }
        std::printf("  cifar10-folder: first pass, decoding and caching 50000 images with 2 workers: %.2f s (%.0f "
                    "images/s)\n",
                    now() - t1, 50000 / (now() - t1));
        run("cifar10-folder (cached uint8)", c.train);
      }
    }
    std::printf("\n| source | augmentation | 1 worker (images/s) | 2 workers (images/s) |\n|---|---|---:|---:|\n");
    for (size_t i = 0; i + 1 < rows.size(); i += 2)
      std::printf("| %s | %s | %.0f | %.0f |\n", rows[i].source.c_str(), rows[i].aug.c_str(), rows[i].ips,
                  rows[i + 1].ips);
    if (folder_1w > 0)
      std::printf("\nCIFAR-10 from the JPEG folder, 1 worker, training augmentation, every image decoded: %.0f images/s "
                  "= %.1fx the %.0f images/s a training step consumes (needs >= 5x): %s\n",
                  folder_1w, folder_1w / train_ips, train_ips, folder_1w >= 5 * train_ips ? "OK" : "TOO SLOW");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_data: %s\n", e.what());
    return 1;
  }
  return 0;
}
