#include "nas/latency/predictor.h"
#include "engine/io.h"

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "engine/cpu.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace spnas {

namespace {

using json = nlohmann::json;

// Per-core L2 cache size, 1 MiB if unknown.
double l2_bytes() { return cpu_info().l2_bytes > 0 ? double(cpu_info().l2_bytes) : 1048576.0; }

struct Term {
  std::string name;
  double value;
};

// The candidate terms of one piece. Names are stable (they are saved in predictor files).
std::vector<Term> terms_of(const PieceSample& s) {
  const double B = s.batch, H = s.in_size, Ho = s.out_size();
  const double Pi = B * H * H, Po = B * Ho * Ho;
  const double cin = s.cin, cout = s.cout, k2 = double(s.kernel) * s.kernel;
  std::vector<Term> t;
  t.push_back({"1", 1.0});
  if (s.kind == "stem") {
    t.push_back({"Po*k2*cin*C", Po * k2 * cin * cout});  // multiply-adds of the dense convolution
    t.push_back({"Pi*cin", Pi * cin});
    t.push_back({"Po*C", Po * cout});
    t.push_back({"C", cout});
    return t;
  }
  if (s.kind == "head") {
    const double K = s.classes;
    t.push_back({"P*cin*C", Pi * cin * cout});  // 1x1 conv multiply-adds
    t.push_back({"P*cin", Pi * cin});
    t.push_back({"P*C", Pi * cout});
    t.push_back({"B*C*K", B * cout * K});
    t.push_back({"C", cout});
    return t;
  }
  // mbconv
  const double e = s.expansion, hid = cin * e, ex = s.expansion != 1 ? 1.0 : 0.0, se = s.se ? 1.0 : 0.0;
  const double res = s.residual ? 1.0 : 0.0, s2 = s.stride == 2 ? 1.0 : 0.0;
  t.push_back({"ex", ex});
  t.push_back({"se", se});
  t.push_back({"res", res});
  t.push_back({"Pi*cin*hid*ex", Pi * cin * hid * ex});  // expansion MACs
  t.push_back({"Po*k2*hid", Po * k2 * hid});            // depthwise MACs
  t.push_back({"Po*k2*hid*s2", Po * k2 * hid * s2});
  t.push_back({"Po*hid*cout", Po * hid * cout});        // projection MACs
  t.push_back({"Pi*hid*ex", Pi * hid * ex});            // expansion output (BN + act pass)
  t.push_back({"Pi*hid", Pi * hid});                    // depthwise input read
  t.push_back({"Pi*hid*s2", Pi * hid * s2});
  t.push_back({"Po*hid", Po * hid});                    // depthwise output (BN + act pass)
  t.push_back({"Pi*cin", Pi * cin});
  t.push_back({"Po*cout", Po * cout});
  t.push_back({"Po*cout*res", Po * cout * res});
  t.push_back({"se*Po*hid", se * Po * hid});  // SE pooling and scaling passes
  t.push_back({"se*B*hid*cin", se * B * hid * cin});
  t.push_back({"se*hid", se * hid});
  // Working set of the expanded activations against the per-core L2 cache: past it, every pass over
  // them streams from L3 (a layer's cost per element jumps).
  const double act_bytes = 4.0 * (Pi * hid * ex + Po * hid), spill = act_bytes > l2_bytes() ? 1.0 : 0.0;
  t.push_back({"Pi*hid*spill", Pi * hid * spill});
  t.push_back({"Po*hid*spill", Po * hid * spill});
  t.push_back({"Pi*hid*log", Pi * hid * std::log2(std::max(1.0, act_bytes / 1024.0))});
  t.push_back({"cin*hid*ex", cin * hid * ex});  // weights
  t.push_back({"hid*cout", hid * cout});
  t.push_back({"k2*hid", k2 * hid});
  t.push_back({"hid", hid});
  // NeuralPower's generic polynomial of degree <= 2 over normalised features.
  const char* vn[7] = {"cin", "cout", "HW", "k2", "s", "e", "se"};
  const double v[7] = {cin / 100.0, cout / 100.0, H * H / 1024.0, k2 / 25.0, s.stride / 2.0, e / 6.0, se};
  for (int i = 0; i < 7; ++i) t.push_back({std::string("p:") + vn[i], v[i]});
  for (int i = 0; i < 7; ++i)
    for (int j = i; j < 7; ++j) {
      if (i == 6 && j == 6) continue;  // se^2 = se
      t.push_back({std::string("p:") + vn[i] + "*" + vn[j], v[i] * v[j]});
    }
  return t;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Orthogonalises q against the orthonormal vectors Q (twice, for stability).
void orthogonalize(std::vector<double>& q, const std::vector<std::vector<double>>& Q) {
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& u : Q) {
      double c = dot(q, u);
      for (size_t i = 0; i < q.size(); ++i) q[i] -= c * u[i];
    }
}

// Weighted, unit-norm column j (scale returned: column = weighted / scale).
std::vector<double> weighted_column(const std::vector<double>& x, const std::vector<double>& w, double* scale) {
  std::vector<double> c(x.size());
  for (size_t i = 0; i < x.size(); ++i) c[i] = x[i] * w[i];
  double n = std::sqrt(dot(c, c));
  *scale = n;
  if (n > 0)
    for (double& v : c) v /= n;
  return c;
}

}  // namespace

std::vector<std::string> predictor_feature_names(const std::string& kind) {
  PieceSample s;
  s.kind = kind;
  s.cin = s.cout = s.in_size = s.kernel = s.stride = s.expansion = s.batch = 1;
  std::vector<std::string> out;
  for (const Term& t : terms_of(s)) out.push_back(t.name);
  return out;
}

std::vector<double> predictor_features(const PieceSample& s) {
  std::vector<double> out;
  for (const Term& t : terms_of(s)) out.push_back(t.value);
  return out;
}

std::vector<int> stepwise_path(const std::vector<std::vector<double>>& X, const std::vector<double>& y,
                               const std::vector<double>& w, int max_terms) {
  const size_t p = X.size(), n = y.size();
  std::vector<std::vector<double>> cols(p);
  for (size_t j = 0; j < p; ++j) {
    double sc;
    cols[j] = weighted_column(X[j], w, &sc);
  }
  std::vector<double> r(n);
  for (size_t i = 0; i < n; ++i) r[i] = y[i] * w[i];
  const double y2 = dot(r, r);
  std::vector<std::vector<double>> Q;
  std::vector<int> path;
  std::vector<bool> used(p, false);
  while (int(path.size()) < max_terms && path.size() < n) {
    int best = -1;
    double best_gain = 0;
    std::vector<double> best_q;
    for (size_t j = 0; j < p; ++j) {
      if (used[j]) continue;
      std::vector<double> q = cols[j];
      if (dot(q, q) == 0) continue;
      orthogonalize(q, Q);
      double nq = std::sqrt(dot(q, q));
      if (nq < 1e-7) continue;  // (nearly) a combination of the chosen terms
      double c = dot(q, r) / nq;
      double gain = c * c;
      if (gain > best_gain) {
        best_gain = gain;
        best = int(j);
        for (double& v : q) v /= nq;
        best_q = std::move(q);
      }
    }
    if (best < 0) break;
    used[best] = true;
    path.push_back(best);
    double c = dot(best_q, r);
    for (size_t i = 0; i < n; ++i) r[i] -= c * best_q[i];
    Q.push_back(std::move(best_q));
    if (dot(r, r) <= 1e-24 * y2) break;  // exact fit
  }
  return path;
}

std::vector<double> weighted_lstsq(const std::vector<std::vector<double>>& X, const std::vector<int>& cols,
                                   const std::vector<double>& y, const std::vector<double>& w) {
  const size_t m = cols.size(), n = y.size();
  // Modified Gram-Schmidt QR of the weighted, normalised columns.
  std::vector<std::vector<double>> Q;
  std::vector<std::vector<double>> R(m, std::vector<double>(m, 0.0));
  std::vector<double> scale(m);
  std::vector<bool> dropped(m, false);
  for (size_t a = 0; a < m; ++a) {
    std::vector<double> q = weighted_column(X[cols[a]], w, &scale[a]);
    std::vector<double> orig = q;
    for (size_t b = 0; b < Q.size(); ++b) {
      if (Q[b].empty()) continue;
      double c = dot(q, Q[b]);
      R[b][a] += c;
      for (size_t i = 0; i < n; ++i) q[i] -= c * Q[b][i];
    }
    for (size_t b = 0; b < Q.size(); ++b) {  // second pass
      if (Q[b].empty()) continue;
      double c = dot(q, Q[b]);
      R[b][a] += c;
      for (size_t i = 0; i < n; ++i) q[i] -= c * Q[b][i];
    }
    double nq = std::sqrt(dot(q, q));
    if (scale[a] == 0 || nq < 1e-10) {
      dropped[a] = true;
      Q.push_back({});
      continue;
    }
    R[a][a] = nq;
    for (double& v : q) v /= nq;
    Q.push_back(std::move(q));
  }
  std::vector<double> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = y[i] * w[i];
  std::vector<double> qtb(m, 0.0);
  for (size_t a = 0; a < m; ++a)
    if (!dropped[a]) qtb[a] = dot(Q[a], b);
  std::vector<double> z(m, 0.0);
  for (int a = int(m) - 1; a >= 0; --a) {
    if (dropped[a]) continue;
    double s = qtb[a];
    for (size_t c = a + 1; c < m; ++c) s -= R[a][c] * z[c];
    z[a] = s / R[a][a];
  }
  std::vector<double> coef(m, 0.0);
  for (size_t a = 0; a < m; ++a) coef[a] = dropped[a] ? 0.0 : z[a] / scale[a];
  return coef;
}

LatencyPredictor LatencyPredictor::fit(const std::vector<PieceSample>& samples, const PredictorOptions& opt) {
  LatencyPredictor P;
  std::map<std::string, std::vector<const PieceSample*>> by_kind;
  for (const PieceSample& s : samples) {
    // Weights are 1 / ms: a time below a nanosecond (a denormal, say) would make them infinite.
    check(s.ms >= 1e-6 && s.ms <= 1e9, "LatencyPredictor::fit",
          "a sample has a time outside [1e-6, 1e9] ms: " + std::to_string(s.ms));
    by_kind[s.kind].push_back(&s);
  }
  check(!by_kind.empty(), "LatencyPredictor::fit", "no samples");
  for (auto& [kind, rows] : by_kind) {
    const std::vector<std::string> names = predictor_feature_names(kind);
    const size_t n = rows.size(), p = names.size();
    std::vector<std::vector<double>> X(p, std::vector<double>(n));
    std::vector<double> y(n), w(n);
    for (size_t i = 0; i < n; ++i) {
      std::vector<double> f = predictor_features(*rows[i]);
      for (size_t j = 0; j < p; ++j) X[j][i] = f[j];
      y[i] = rows[i]->ms;
      w[i] = 1.0 / rows[i]->ms;  // relative error
    }
    Model M;
    M.samples = int(n);
    // Columns outside the chosen family are left out of the selection (set to zero).
    check(opt.terms == "all" || opt.terms == "cost" || opt.terms == "poly", "LatencyPredictor::fit",
          "terms must be all, cost or poly");
    for (size_t j = 1; j < p; ++j) {
      bool poly = names[j].rfind("p:", 0) == 0;
      if ((opt.terms == "cost" && poly) || (opt.terms == "poly" && !poly && kind == "mbconv"))
        std::fill(X[j].begin(), X[j].end(), 0.0);
    }
    std::vector<int> chosen;
    if (n <= 4) {
      // Too few rows to select terms (the stem and head of two profiled tables): the piece's cost
      // term (index 1, its multiply-adds), plus a constant when there are two rows or more.
      chosen = {1};
      if (n >= 2) chosen.push_back(0);
      M.cv_mape = std::numeric_limits<double>::quiet_NaN();
    } else {
      std::vector<int> path = stepwise_path(X, y, w, opt.max_terms);
      check(!path.empty(), "LatencyPredictor::fit", "no term explains the times of the " + kind + " pieces");
      // Cross-validate every prefix of the path.
      const int K = int(std::min<size_t>(size_t(std::max(2, opt.folds)), n));
      std::vector<int> fold(n);
      {
        std::vector<size_t> perm(n);
        for (size_t i = 0; i < n; ++i) perm[i] = i;
        Rng rng(opt.seed);
        for (size_t i = n; i > 1; --i) std::swap(perm[i - 1], perm[rng.below(i)]);
        for (size_t i = 0; i < n; ++i) fold[perm[i]] = int(i % K);
      }
      std::vector<double> cv(path.size(), std::numeric_limits<double>::infinity());
      for (size_t m = 1; m <= path.size(); ++m) {
        std::vector<int> cols(path.begin(), path.begin() + m);
        double err = 0;
        bool ok = true;
        for (int f = 0; f < K && ok; ++f) {
          std::vector<std::vector<double>> Xt(p);
          std::vector<double> yt, wt;
          for (size_t i = 0; i < n; ++i)
            if (fold[i] != f) {
              for (size_t j = 0; j < p; ++j) Xt[j].push_back(X[j][i]);
              yt.push_back(y[i]);
              wt.push_back(w[i]);
            }
          if (yt.size() < m) {
            ok = false;
            break;
          }
          std::vector<double> c = weighted_lstsq(Xt, cols, yt, wt);
          for (size_t i = 0; i < n; ++i)
            if (fold[i] == f) {
              double pr = 0;
              for (size_t a = 0; a < m; ++a) pr += c[a] * X[cols[a]][i];
              err += std::fabs(std::max(pr, 1e-6) - y[i]) / y[i];
            }
        }
        if (ok) cv[m - 1] = err / double(n) * 100.0;
      }
      double best = *std::min_element(cv.begin(), cv.end());
      size_t m = 1;
      while (m < path.size() && !(cv[m - 1] <= best * opt.parsimony + 1e-9)) ++m;
      chosen.assign(path.begin(), path.begin() + m);
      M.cv_mape = cv[m - 1];
    }
    M.coef = weighted_lstsq(X, chosen, y, w);
    M.index = chosen;
    for (int j : chosen) M.terms.push_back(names[j]);
    P.models_[kind] = M;
  }
  return P;
}

const LatencyPredictor::Model& LatencyPredictor::model(const std::string& kind) const {
  auto it = models_.find(kind);
  if (it == models_.end())
    throw std::runtime_error("latency predictor: no model for pieces of kind '" + kind +
                             "' (no such piece among the training samples)");
  return it->second;
}

double LatencyPredictor::predict(const PieceSample& s) const {
  const Model& M = model(s.kind);
  std::vector<double> f = predictor_features(s);
  double t = 0;
  for (size_t a = 0; a < M.index.size(); ++a) t += M.coef[a] * f[M.index[a]];
  return std::max(t, 1e-6);
}

std::string LatencyPredictor::describe() const {
  std::string out;
  for (const auto& [kind, M] : models_) {
    if (!out.empty()) out += "; ";
    out += kind + ": " + std::to_string(M.terms.size()) + " terms from " + std::to_string(M.samples) + " samples";
    if (std::isfinite(M.cv_mape)) out += " (cv " + fmt(M.cv_mape, 2) + " %)";
    out += " [";
    for (size_t i = 0; i < M.terms.size(); ++i) out += (i ? ", " : "") + M.terms[i];
    out += "]";
  }
  return out;
}

std::string LatencyPredictor::to_json() const {
  json j;
  j["format"] = "spnas-latency-predictor";
  j["version"] = 1;
  json models = json::object();
  for (const auto& [kind, M] : models_) {
    json m;
    m["terms"] = M.terms;
    m["coef"] = M.coef;
    m["samples"] = M.samples;
    if (std::isfinite(M.cv_mape)) m["cv_mape"] = M.cv_mape;
    models[kind] = m;
  }
  j["models"] = models;
  return j.dump(2) + "\n";
}

LatencyPredictor LatencyPredictor::from_json(const std::string& text, const std::string& source) {
  json j = parse_json(text, "latency predictor", source);
  const std::string file = "latency predictor '" + source + "'";
  const JsonFields root(j, file, "");
  if (root.string("format", "") != "spnas-latency-predictor" ||
      root.integer("version", 0, std::numeric_limits<int>::max(), 0) != 1 || !root.has("models") ||
      !j["models"].is_object())
    throw std::runtime_error(file + ": expected {\"format\": \"spnas-latency-predictor\", \"version\": 1, \"models\": {...}}");
  LatencyPredictor P;
  for (auto it = j["models"].begin(); it != j["models"].end(); ++it) {
    const std::string kind = it.key();
    if (kind != "mbconv" && kind != "stem" && kind != "head")
      throw std::runtime_error(file + ": unknown kind '" + kind + "'");
    const JsonFields m(it.value(), file, "models." + kind);
    Model M;
    for (const json& t : m.array("terms")) {
      if (!t.is_string()) m.fail("terms", "must be a list of strings");
      M.terms.push_back(t.get<std::string>());
    }
    for (const json& c : m.array("coef")) {
      if (!c.is_number() || !std::isfinite(c.get<double>())) m.fail("coef", "must be a list of numbers");
      M.coef.push_back(c.get<double>());
    }
    if (M.terms.size() != M.coef.size())
      m.fail("terms", "has " + std::to_string(M.terms.size()) + " entries but coef has " + std::to_string(M.coef.size()));
    M.samples = int(m.integer("samples", 0, std::numeric_limits<int>::max(), 0));
    M.cv_mape = m.number("cv_mape", 0, std::numeric_limits<double>::max(), std::numeric_limits<double>::quiet_NaN());
    std::vector<std::string> names = predictor_feature_names(kind);
    for (const std::string& t : M.terms) {
      auto f = std::find(names.begin(), names.end(), t);
      if (f == names.end()) m.fail("terms", "has an unknown term '" + t + "'");
      M.index.push_back(int(f - names.begin()));
    }
    P.models_[kind] = M;
  }
  return P;
}

void LatencyPredictor::save(const std::string& path) const { write_file_atomic(path, to_json()); }

LatencyPredictor LatencyPredictor::load(const std::string& path) {
  return from_json(read_text_file(path, "latency predictor"), path);
}

PredictionError evaluate_predictor(const LatencyPredictor& p, const std::vector<PieceSample>& samples) {
  PredictionError e;
  for (const PieceSample& s : samples) {
    if (!(s.ms > 0)) continue;
    double ape = std::fabs(p.predict(s) - s.ms) / s.ms * 100.0;
    e.mean_ape += ape;
    e.max_ape = std::max(e.max_ape, ape);
    ++e.count;
  }
  if (e.count) e.mean_ape /= e.count;
  return e;
}

std::vector<PieceSample> space_pieces(const SearchSpace& space, int batch, bool search_se) {
  std::vector<PieceSample> out;
  const Choice cands[4] = {Choice::K3E3, Choice::K3E6, Choice::K5E3, Choice::K5E6};
  for (int idx : space.searchable_indices()) {
    const LayerSpec& l = space.layers[idx];
    for (int se = 0; se <= (search_se ? 1 : 0); ++se)
      for (Choice c : cands) out.push_back(mbconv_piece(l, choice_kernel(c), choice_expansion(c), se == 1, batch));
  }
  out.push_back(stem_piece(space, batch));
  for (const LayerSpec& l : space.layers)
    if (!l.searchable) out.push_back(mbconv_piece(l, l.kernel, l.expansion, false, batch));
  out.push_back(head_piece(space, batch));
  return out;
}

LatencyTable predict_table(const LatencyPredictor& p, const SearchSpace& space, int batch, bool search_se) {
  LatencyTable t;
  t.source = "predicted";
  t.space = space.source.empty() ? space.name : space.source;
  t.width = space.width;
  t.input_size = space.input_size;
  t.batch = batch;
  t.cpu = cpu_info().model_name;
  t.isa = "";
  t.mode = "inference";
  t.backend = "spnas";
  const Choice cands[4] = {Choice::K3E3, Choice::K3E6, Choice::K5E3, Choice::K5E6};
  for (int idx : space.searchable_indices()) {
    const LayerSpec& l = space.layers[idx];
    LayerCost c;
    c.cin = l.cin;
    c.cout = l.cout;
    c.stride = l.stride;
    c.skip_allowed = l.skip_allowed;
    double* slot[4] = {&c.k3_e3, &c.k3_e6, &c.k5_e3, &c.k5_e6};
    double se_extra = 0;
    for (int k = 0; k < 4; ++k) {
      PieceSample s = mbconv_piece(l, choice_kernel(cands[k]), choice_expansion(cands[k]), false, batch);
      *slot[k] = p.predict(s);
      if (search_se) {
        s.se = true;
        se_extra += std::max(0.0, p.predict(s) - *slot[k]) / 4.0;
      }
    }
    c.se = se_extra;
    t.layers.push_back(c);
  }
  // The fixed pieces (stem, fixed layers, head) follow the 4 entries of every searchable layer.
  double fixed = 0;
  std::vector<PieceSample> pieces = space_pieces(space, batch, false);
  const size_t first_fixed = size_t(space.num_searchable()) * 4;
  for (size_t i = first_fixed; i < pieces.size(); ++i) fixed += p.predict(pieces[i]);
  t.fixed_ms = fixed;
  return t;
}

}  // namespace spnas
