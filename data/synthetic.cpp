// The embedded default dataset: procedurally generated, seeded, 10 classes of 32x32 RGB images.
//
// Five shape classes (disc, ring, square, triangle, cross) and five texture classes (horizontal,
// vertical and diagonal stripes, checkerboard, dots). The class is carried only by spatial
// structure: foreground and background colours are drawn at random for every image (so the sign of
// the contrast varies), the background has a random gradient, shapes move +-6 px, scale
// 4.5..10.5 px and rotate +-20 degrees, textures have random period, phase, +-12 degree orientation
// jitter and fill a random window of the image, up to three small distractor blobs (discs or
// squares) are scattered over every image, and every pixel gets noise of random strength. A linear classifier on
// raw pixels cannot use colour or position templates and stays far below a small ConvNet. Every
// class is closed under horizontal mirroring, so hflip augmentation is label-preserving.
// Anti-aliasing is analytic (coverage = clamp(0.5 - signed distance)), so generation is one pass.
#include <algorithm>
#include <cmath>
#include <thread>

#include "data/data.h"

namespace spnas {

const std::vector<std::string>& synthetic_class_names() {
  static const std::vector<std::string> n = {"disc",      "ring",      "square",    "triangle", "cross",
                                             "h-stripes", "v-stripes", "d-stripes", "checker",  "dots"};
  return n;
}

namespace {

constexpr float kPi = 3.14159265358979f;

inline uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline float clamp01(float v) { return v < 0 ? 0 : (v > 1 ? 1 : v); }
inline float cover(float sd) { return clamp01(0.5f - sd); }  // signed distance (px) -> coverage

// Distance (in px, signed) to the edge of a square wave of the given period along coordinate t:
// negative inside the "on" half-periods.
inline float stripe_sd(float t, float period, float phase) {
  float f = t / period + phase;
  f -= std::floor(f);                    // [0,1)
  return (std::fabs(2 * f - 1) - 0.5f) * period * 0.5f;  // on where |2f-1| < 0.5
}

struct Colour {
  float r, g, b;
};

Colour random_colour(Rng& r) { return {r.uniform(), r.uniform(), r.uniform()}; }

float dist(const Colour& a, const Colour& b) {
  return std::sqrt((a.r - b.r) * (a.r - b.r) + (a.g - b.g) * (a.g - b.g) + (a.b - b.b) * (a.b - b.b));
}

}  // namespace

void synthetic_image(int label, uint64_t seed, uint8_t* out) {
  Rng r(seed);
  const int S = kSyntheticSize;
  Colour bg = random_colour(r), fg = random_colour(r);
  for (int tries = 0; tries < 32 && dist(bg, fg) < 0.3f; ++tries) fg = random_colour(r);
  // Background gradient: random direction, amplitude up to 0.2 per channel.
  const float ga = r.uniform(0, 2 * kPi), gamp = r.uniform(0.0f, 0.2f);
  const float gx = std::cos(ga) * gamp / S, gy = std::sin(ga) * gamp / S;
  const float noise = r.uniform(0.03f, 0.15f);

  // Geometry.
  const float cx = S / 2.0f + r.uniform(-6, 6), cy = S / 2.0f + r.uniform(-6, 6);
  const float size = r.uniform(4.5f, 10.5f);
  float theta = r.uniform(-20, 20) * kPi / 180;
  const float period = r.uniform(4.0f, 9.0f), phase = r.uniform(), phase2 = r.uniform();
  if (label == 5) theta = r.uniform(-12, 12) * kPi / 180;
  if (label == 6) theta = (90 + r.uniform(-12, 12)) * kPi / 180;
  if (label == 7) theta = ((r.bernoulli(0.5f) ? 45 : 135) + r.uniform(-12, 12)) * kPi / 180;
  if (label == 8 || label == 9) theta = r.uniform(-15, 15) * kPi / 180;
  const float ct = std::cos(theta), st = std::sin(theta);
  const float dot_spacing = r.uniform(7, 10), dot_radius = dot_spacing * r.uniform(0.22f, 0.32f);
  const float checker = r.uniform(6, 10);
  // Textures fill a random window (45..100 % of each side), not always the whole image.
  const float win_w = S * r.uniform(0.45f, 1.0f), win_h = S * r.uniform(0.45f, 1.0f);
  const float win_x = r.uniform(0, S - win_w), win_y = r.uniform(0, S - win_h);
  // Up to three small distractor blobs (discs or squares) in random colours.
  const int ndistract = int(r.below(4));
  Colour dcol[3];
  float dxs[3], dys[3], drs[3];
  bool dsq[3];
  for (int k = 0; k < 3; ++k) {
    dcol[k] = random_colour(r);
    dxs[k] = r.uniform(2, S - 2);
    dys[k] = r.uniform(2, S - 2);
    drs[k] = r.uniform(1.5f, 3.5f);
    dsq[k] = r.bernoulli(0.5f);
  }
  uint64_t noise_state = r.next_u64();

  for (int y = 0; y < S; ++y) {
    for (int x = 0; x < S; ++x) {
      const float px = x + 0.5f, py = y + 0.5f;
      // Coordinates in the rotated frame of the pattern (rotation about the shape centre).
      const float qx = px - cx, qy = py - cy;
      const float u = ct * qx + st * qy, v = -st * qx + ct * qy;
      float sd;
      switch (label) {
        case 0: sd = std::sqrt(qx * qx + qy * qy) - size; break;
        case 1: sd = std::fabs(std::sqrt(qx * qx + qy * qy) - size * 0.75f) - std::max(1.5f, size * 0.22f); break;
        case 2: sd = std::max(std::fabs(u), std::fabs(v)) - size * 0.8f; break;
        case 3: {  // equilateral triangle, apex up (v grows downwards), circumradius `size`
          const float a = size * 0.5f;  // inradius
          const float e1 = v - a;                                // bottom edge
          const float e2 = -0.8660254f * u - 0.5f * v - a;       // upper-left edge
          const float e3 = 0.8660254f * u - 0.5f * v - a;        // upper-right edge
          sd = std::max(e1, std::max(e2, e3));
          break;
        }
        case 4: {
          const float t = std::max(1.5f, size * 0.28f);
          const float au = std::fabs(u), av = std::fabs(v);
          sd = std::min(std::max(au - size, av - t), std::max(au - t, av - size));
          break;
        }
        case 5: case 6: case 7: sd = stripe_sd(v, period, phase); break;
        case 8: {
          const float s1 = stripe_sd(u, checker, phase), s2 = stripe_sd(v, checker, phase2);
          // XOR of two square waves: inside when exactly one is inside.
          sd = (s1 < 0) != (s2 < 0) ? -std::min(std::fabs(s1), std::fabs(s2)) : std::min(std::fabs(s1), std::fabs(s2));
          break;
        }
        default: {  // dots on a rotated square lattice
          float fu = u / dot_spacing + phase, fv = v / dot_spacing + phase2;
          fu = (fu - std::floor(fu) - 0.5f) * dot_spacing;
          fv = (fv - std::floor(fv) - 0.5f) * dot_spacing;
          sd = std::sqrt(fu * fu + fv * fv) - dot_radius;
          break;
        }
      }
      float a = cover(sd);
      if (label >= 5) {  // texture window with anti-aliased edges
        const float wd = std::max(std::max(win_x - px, px - (win_x + win_w)), std::max(win_y - py, py - (win_y + win_h)));
        a *= cover(wd);
      }
      const float grad = gx * (px - S / 2.0f) + gy * (py - S / 2.0f);
      float c[3] = {bg.r + grad + a * (fg.r - bg.r), bg.g + grad + a * (fg.g - bg.g), bg.b + grad + a * (fg.b - bg.b)};
      for (int k = 0; k < ndistract; ++k) {
        const float ddx = px - dxs[k], ddy = py - dys[k];
        const float dd = dsq[k] ? std::max(std::fabs(ddx), std::fabs(ddy)) : std::sqrt(ddx * ddx + ddy * ddy);
        const float b = cover(dd - drs[k]);
        c[0] += b * (dcol[k].r - c[0]);
        c[1] += b * (dcol[k].g - c[1]);
        c[2] += b * (dcol[k].b - c[2]);
      }
      // Noise: sum of four 16-bit uniforms (near-Gaussian), one 64-bit draw per channel.
      uint8_t* o = out + (y * S + x) * 3;
      for (int ch = 0; ch < 3; ++ch) {
        const uint64_t w = splitmix(noise_state);
        const float s4 = float((w & 0xffff) + ((w >> 16) & 0xffff) + ((w >> 32) & 0xffff) + (w >> 48)) * (1.0f / 65536.0f);
        const float n = (s4 - 2.0f) * 1.7320508f;  // unit variance
        o[ch] = uint8_t(clamp01(c[ch] + noise * n) * 255.0f + 0.5f);
      }
    }
  }
}

static std::shared_ptr<Dataset> make_synthetic_split(int count, uint64_t seed, uint64_t split_tag, const char* split,
                                                     std::vector<float> mean, std::vector<float> sd) {
  const int64_t bytes = int64_t(kSyntheticSize) * kSyntheticSize * 3;
  std::vector<uint8_t> pixels(size_t(count) * bytes);
  std::vector<int32_t> labels(count);
  for (int i = 0; i < count; ++i) labels[i] = i % kSyntheticClasses;
  int nt = int(std::min<unsigned>(std::max(1u, std::thread::hardware_concurrency()), 8u));
  nt = std::min(nt, std::max(1, count / 256));
  auto work = [&](int t) {
    int64_t b = int64_t(count) * t / nt, e = int64_t(count) * (t + 1) / nt;
    for (int64_t i = b; i < e; ++i)
      synthetic_image(labels[size_t(i)], mix_seed(seed, split_tag, uint64_t(i)), pixels.data() + i * bytes);
  };
  std::vector<std::thread> th;
  for (int t = 1; t < nt; ++t) th.emplace_back(work, t);
  work(0);
  for (auto& t : th) t.join();
  if (mean.empty()) {  // measure on this (training) split: exact integer sums
    uint64_t s[3] = {0, 0, 0}, q[3] = {0, 0, 0};
    for (size_t i = 0; i < pixels.size(); i += 3)
      for (int c = 0; c < 3; ++c) {
        const uint64_t v = pixels[i + c];
        s[c] += v;
        q[c] += v * v;
      }
    const double n = double(pixels.size() / 3);
    for (int c = 0; c < 3; ++c) {
      const double m = double(s[c]) / n / 255.0, m2 = double(q[c]) / n / (255.0 * 255.0);
      mean.push_back(float(m));
      sd.push_back(float(std::sqrt(std::max(1e-8, m2 - m * m))));
    }
  }
  std::string name = std::string("synthetic ") + split + " (" + std::to_string(count) + " images, seed " +
                     std::to_string(seed) + ")";
  return std::make_shared<InMemoryDataset>(name, kSyntheticSize, kSyntheticSize, 3, synthetic_class_names(),
                                           std::move(pixels), std::move(labels), mean, sd);
}

Splits open_synthetic(int train_count, int test_count, uint64_t seed) {
  check(train_count > 0 && test_count > 0, "open_synthetic", "image counts must be positive");
  Splits s;
  s.train = make_synthetic_split(train_count, seed, 0x747261696eULL, "train", {}, {});
  s.test = make_synthetic_split(test_count, seed, 0x74657374ULL, "test", s.train->mean(), s.train->stddev());
  return s;
}

}  // namespace spnas
