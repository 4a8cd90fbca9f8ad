// NeuralPower-style latency predictor: a layer's time from its configuration, by sparse polynomial
// regression, fitted to profiled pieces (samples.h, profile.h) and used to fill a latency table for a width
// multiplier or input size that was never profiled.
//
// Model (per piece kind: "mbconv", "stem", "head"): t = sum_j c_j f_j(config), where the candidate
// terms f_j are
//   - cost-like products of the configuration (multiply-adds of each convolution, elements read and
//     written by each pass, weight sizes, per-op constants), e.g. "Po*k2*hid" (depthwise MACs);
//   - NeuralPower's generic polynomial: every monomial of degree <= 2 of the normalised features
//     (cin, cout, H*W, k^2, stride, expansion, se) (PredictorOptions::terms = "all" or "poly").
// The cost-like terms are themselves monomials of degree 2-4 in those features, plus two that know
// the L2 cache: the expanded activations' elements when their working set exceeds it, and
// elements x log2(working set).
// The terms are chosen by forward stepwise selection (greedy, each step the term that most reduces
// the residual, via modified Gram-Schmidt), minimising *relative* squared error (rows weighted by
// 1 / t), and the number of terms by K-fold cross-validation. No external ML library.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "nas/latency/samples.h"
#include "nas/latency/table.h"
#include "nas/space.h"

namespace spnas {

// Names and values of the candidate terms of a piece's kind (same order).
std::vector<std::string> predictor_feature_names(const std::string& kind);
std::vector<double> predictor_features(const PieceSample& s);

struct PredictorOptions {
  int max_terms = 20;    // longest stepwise path
  int folds = 5;         // cross-validation folds (fewer samples: leave-one-out)
  double parsimony = 1.02;  // smallest term count whose CV error is within this factor of the best
  uint64_t seed = 1;     // fold assignment
  // Candidate terms: "cost" (the cost-like products, default: the best on held-out widths), "all"
  // (cost-like and generic) or "poly" (the generic polynomial only, NeuralPower's own choice).
  std::string terms = "cost";
};

struct PredictionError {
  double mean_ape = 0, max_ape = 0;  // absolute percentage errors
  int count = 0;
};

class LatencyPredictor {
 public:
  struct Model {
    std::vector<std::string> terms;  // selected term names, in selection order
    std::vector<int> index;          // their positions in predictor_feature_names(kind)
    std::vector<double> coef;        // ms per unit of the term
    double cv_mape = 0;              // cross-validated mean |error| % of the chosen size
    int samples = 0;
  };

  static LatencyPredictor fit(const std::vector<PieceSample>& samples, const PredictorOptions& options = {});
  // Predicted ms (clamped to >= 1e-6); throws if no model of the sample's kind was fitted.
  double predict(const PieceSample& s) const;
  bool has_kind(const std::string& kind) const { return models_.count(kind) > 0; }
  const Model& model(const std::string& kind) const;
  std::string describe() const;  // "mbconv: 7 terms (cv 1.2 %) [..]; stem: ..."

  std::string to_json() const;
  static LatencyPredictor from_json(const std::string& text, const std::string& source);
  void save(const std::string& path) const;
  static LatencyPredictor load(const std::string& path);

 private:
  std::map<std::string, Model> models_;
};

PredictionError evaluate_predictor(const LatencyPredictor& p, const std::vector<PieceSample>& samples);

// The pieces of a space as the profiler names them (every searchable layer in each candidate, with
// SE too when search_se; the stem, the fixed layers and the head), with ms = 0.
std::vector<PieceSample> space_pieces(const SearchSpace& space, int batch, bool search_se);

// A latency table for `space` (any width / input size) filled from the predictor: entries, SE costs
// (search_se) and the fixed cost (stem + fixed layers + head). source = "predicted".
LatencyTable predict_table(const LatencyPredictor& p, const SearchSpace& space, int batch, bool search_se);

// Forward stepwise least squares, exposed for tests: columns X[j][i] (feature j of row i), target y,
// row weights w. Returns the selection path (column indices), at most max_terms long; stops early
// when the weighted residual is (numerically) zero.
std::vector<int> stepwise_path(const std::vector<std::vector<double>>& X, const std::vector<double>& y,
                               const std::vector<double>& w, int max_terms);
// Weighted least squares on the given columns; returns one coefficient per column.
std::vector<double> weighted_lstsq(const std::vector<std::vector<double>>& X, const std::vector<int>& cols,
                                   const std::vector<double>& y, const std::vector<double>& w);

}  // namespace spnas
