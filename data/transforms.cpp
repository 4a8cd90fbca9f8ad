// Per-sample transforms: crops (CIFAR pad-and-crop, Inception random-resized-crop, centre crop),
// horizontal flip, bilinear resize and per-channel normalization, fused into one pass from uint8
// HWC to float HWC.
#include <algorithm>
#include <cmath>

#include "data/data.h"

namespace spnas {

uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b) {
  auto sm = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  uint64_t h = sm(seed ^ 0x5350'4e41'5344'4154ULL);
  h = sm(h ^ a);
  h = sm(h ^ (b * 0xd1342543de82ef95ULL));
  return h;
}

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> p(size_t(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  Rng r(mix_seed(seed, 0x7368756666ULL, uint64_t(epoch)));
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[size_t(i)], p[size_t(r.below(uint64_t(i + 1)))]);
  return p;
}

static bool is_small(const Dataset& ds) { return std::min(ds.height(), ds.width()) <= 64; }

AugmentConfig default_train_augment(const Dataset& ds) {
  AugmentConfig a;
  if (is_small(ds)) {
    a.random_crop = true;
    a.crop_pad = std::max(1, std::min(ds.height(), ds.width()) / 8);  // 4 for 32x32, 3 for 28x28
    a.hflip = ds.channels() == 3;  // not for digits (MNIST and Fashion-MNIST are grey)
  } else {
    a.random_resized_crop = true;
    a.hflip = true;
    a.out_size = int(std::lround(a.crop_fraction * std::min(ds.height(), ds.width())));
  }
  return a;
}

AugmentConfig default_eval_augment(const Dataset& ds) {
  AugmentConfig a;
  if (!is_small(ds)) {
    a.center_crop = true;
    a.out_size = int(std::lround(a.crop_fraction * std::min(ds.height(), ds.width())));
  }
  return a;
}

Transform::Transform(const AugmentConfig& cfg, int in_h, int in_w, int channels)
    : cfg_(cfg), in_h_(in_h), in_w_(in_w), c_(channels) {
  check(in_h > 0 && in_w > 0 && channels > 0, "Transform", "bad input geometry");
  check(int(cfg.random_crop) + int(cfg.random_resized_crop) + int(cfg.center_crop) <= 1, "Transform",
        "random_crop, random_resized_crop and center_crop are mutually exclusive");
  check(cfg.out_size >= 0 && cfg.out_size <= 8192, "Transform", "bad out_size " + std::to_string(cfg.out_size));
  out_h_ = cfg.out_size > 0 ? cfg.out_size : in_h;
  out_w_ = cfg.out_size > 0 ? cfg.out_size : in_w;
  if (cfg.random_crop) {
    check(cfg.crop_pad >= 0, "Transform", "crop_pad must be >= 0");
    check(out_h_ <= in_h + 2 * cfg.crop_pad && out_w_ <= in_w + 2 * cfg.crop_pad, "Transform",
          "random_crop output " + std::to_string(out_h_) + "x" + std::to_string(out_w_) + " larger than the padded input");
  }
  if (cfg.random_resized_crop)
    check(cfg.area_min > 0 && cfg.area_min <= cfg.area_max && cfg.area_max <= 1 && cfg.ratio_min > 0 &&
              cfg.ratio_min <= cfg.ratio_max,
          "Transform", "random_resized_crop needs 0 < area_min <= area_max <= 1 and 0 < ratio_min <= ratio_max");
  if (cfg.center_crop)
    check(cfg.crop_fraction > 0 && cfg.crop_fraction <= 1, "Transform", "crop_fraction must be in (0, 1]");
  check(cfg.mean.size() == cfg.std.size() && (cfg.mean.empty() || int(cfg.mean.size()) == channels), "Transform",
        "mean and std need one value per channel (" + std::to_string(channels) + ")");
  lut_.resize(size_t(channels) * 256);
  for (int c = 0; c < channels; ++c) {
    float m = cfg.mean.empty() ? 0.0f : cfg.mean[c], s = cfg.std.empty() ? 1.0f : cfg.std[c];
    check(s > 0, "Transform", "std must be positive");
    for (int v = 0; v < 256; ++v) lut_[size_t(c) * 256 + v] = (v / 255.0f - m) / s;
  }
}

Transform::Geometry Transform::sample_geometry(Rng& rng) const {
  Geometry g{0, 0, float(in_h_), float(in_w_), false, 0, 0};
  const float H = float(in_h_), W = float(in_w_);
  if (cfg_.random_resized_crop) {
    bool found = false;
    const float lr0 = std::log(cfg_.ratio_min), lr1 = std::log(cfg_.ratio_max);
    for (int attempt = 0; attempt < 10 && !found; ++attempt) {
      const float area = H * W * rng.uniform(cfg_.area_min, cfg_.area_max);
      const float ratio = std::exp(rng.uniform(lr0, lr1));
      const float w = std::round(std::sqrt(area * ratio)), h = std::round(std::sqrt(area / ratio));
      if (w >= 1 && h >= 1 && w <= W && h <= H) {
        g.h = h;
        g.w = w;
        g.y0 = std::floor(rng.uniform(0, H - h + 1));
        g.x0 = std::floor(rng.uniform(0, W - w + 1));
        found = true;
      }
    }
    if (!found) {  // as torchvision: the central crop with the ratio clamped to the range
      const float r = W / H;
      if (r < cfg_.ratio_min) g.w = W, g.h = std::round(W / cfg_.ratio_min);
      else if (r > cfg_.ratio_max) g.h = H, g.w = std::round(H * cfg_.ratio_max);
      else g.h = H, g.w = W;
      g.y0 = std::floor((H - g.h) / 2);
      g.x0 = std::floor((W - g.w) / 2);
    }
  } else if (cfg_.center_crop) {
    const float s = cfg_.crop_fraction * std::min(H, W);
    // Keep the output's aspect ratio (square output: a square crop).
    const float ch = out_h_ >= out_w_ ? s : s * out_h_ / out_w_, cw = out_w_ >= out_h_ ? s : s * out_w_ / out_h_;
    g.h = ch;
    g.w = cw;
    g.y0 = (H - ch) / 2;
    g.x0 = (W - cw) / 2;
  } else if (cfg_.random_crop) {
    g.pad_dy = int(rng.below(uint64_t(in_h_ + 2 * cfg_.crop_pad - out_h_ + 1)));
    g.pad_dx = int(rng.below(uint64_t(in_w_ + 2 * cfg_.crop_pad - out_w_ + 1)));
    g.h = float(out_h_);
    g.w = float(out_w_);
    g.y0 = float(g.pad_dy - cfg_.crop_pad);
    g.x0 = float(g.pad_dx - cfg_.crop_pad);
  }
  if (cfg_.hflip) g.flip = rng.bernoulli(0.5f);
  return g;
}

void Transform::apply(const uint8_t* src, float* dst, Rng& rng) const { apply_geometry(src, dst, sample_geometry(rng)); }

void Transform::apply_geometry(const uint8_t* src, float* dst, const Geometry& g) const {
  const int C = c_, OH = out_h_, OW = out_w_;
  const float* lut = lut_.data();
  const bool integer_map = cfg_.random_crop || (!cfg_.random_resized_crop && !cfg_.center_crop && OH == in_h_ && OW == in_w_);
  if (integer_map) {
    // Output pixel (y, x) reads source (y + y0, x + x0); outside the image is the zero padding.
    const int oy = int(g.y0), ox = int(g.x0);
    for (int y = 0; y < OH; ++y) {
      const int sy = y + oy;
      float* row = dst + int64_t(y) * OW * C;
      for (int x = 0; x < OW; ++x) {
        const int tx = g.flip ? OW - 1 - x : x;
        const int sx = tx + ox;
        float* o = row + x * C;
        if (sy < 0 || sy >= in_h_ || sx < 0 || sx >= in_w_) {
          for (int c = 0; c < C; ++c) o[c] = lut[c * 256];
        } else {
          const uint8_t* s = src + (int64_t(sy) * in_w_ + sx) * C;
          for (int c = 0; c < C; ++c) o[c] = lut[c * 256 + s[c]];
        }
      }
    }
    return;
  }
  // Bilinear resample of the rectangle onto the output, normalized on the fly (affine per channel).
  float scale[8], bias[8];
  std::vector<float> sb;
  float* sc = scale;
  float* bi = bias;
  if (C > 8) {
    sb.resize(size_t(2 * C));
    sc = sb.data();
    bi = sb.data() + C;
  }
  for (int c = 0; c < C; ++c) {
    bi[c] = lut[c * 256];
    sc[c] = (lut[c * 256 + 255] - lut[c * 256]) / 255.0f;
  }
  const float sy = g.h / OH, sx = g.w / OW;
  for (int y = 0; y < OH; ++y) {
    float fy = g.y0 + (y + 0.5f) * sy - 0.5f;
    fy = std::min(std::max(fy, 0.0f), float(in_h_ - 1));
    const int j = std::min(int(fy), in_h_ - 1), j1 = std::min(j + 1, in_h_ - 1);
    const float wy = fy - j;
    const uint8_t* r0 = src + int64_t(j) * in_w_ * C;
    const uint8_t* r1 = src + int64_t(j1) * in_w_ * C;
    float* row = dst + int64_t(y) * OW * C;
    for (int x = 0; x < OW; ++x) {
      const int tx = g.flip ? OW - 1 - x : x;
      float fx = g.x0 + (tx + 0.5f) * sx - 0.5f;
      fx = std::min(std::max(fx, 0.0f), float(in_w_ - 1));
      const int i = std::min(int(fx), in_w_ - 1), i1 = std::min(i + 1, in_w_ - 1);
      const float wx = fx - i;
      float* o = row + x * C;
      for (int c = 0; c < C; ++c) {
        const float a = r0[i * C + c], b = r0[i1 * C + c], d = r1[i * C + c], e = r1[i1 * C + c];
        const float top = a + wx * (b - a), bot = d + wx * (e - d);
        o[c] = (top + wy * (bot - top)) * sc[c] + bi[c];
      }
    }
  }
}

}  // namespace spnas
