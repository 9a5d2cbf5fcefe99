// Range observers for post-training quantization (docs/quantization.md, "Post-training
// quantization"). Every quantizer in qnn is symmetric: a real value x is represented as
// q * scale with q an integer in [-qmax, qmax], qmax = 2^(bits-1) - 1. An observer chooses
// the clipping range c (the largest representable magnitude) of a tensor; the scale is then
// c / qmax.
//
//   minmax      c = max |x|
//   percentile  c = the p-th percentile of |x| (p in (0, 100], e.g. 99.99)
//   mse         c minimising the mean squared quantization error sum (x - Q_c(x))^2 / n over
//               candidate ranges in (0, max |x|]
//
// Activations are streamed through a TensorObserver, which keeps the exact count and max |x|
// and a uniform random sample (reservoir sampling, fixed seed, so calibration is
// reproducible) of at most `capacity` values of |x|. Percentile and MSE are computed exactly
// on that sample; they are exact for the whole tensor whenever it has at most `capacity`
// values.
#pragma once
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "qnn/quant/common.hpp"  // qmax_of

namespace qnn {

enum class ObserverKind { MinMax, Percentile, MSE };
const char* to_string(ObserverKind k);                 // "minmax", "percentile", "mse"
ObserverKind parse_observer(const std::string& s);     // throws qnn::Error naming the choices

// round(x / scale) with ties away from zero, clamped to [-qmax, qmax] (the contract of
// docs/quantization.md for activations and weights alike).
std::int32_t quantize_symmetric(double x, double scale, int bits);
// quantize then multiply back by the scale.
double fake_quantize(double x, double scale, int bits);

// Mean of (x - fake_quantize(x, c / qmax, bits))^2 over `abs_values` (magnitudes |x|: the
// quantizer is symmetric, so the sign does not matter).
double quantization_mse(const std::vector<double>& abs_values, double range, int bits);

// The p-th percentile of `abs_values` (0 < p <= 100), linear interpolation between order
// statistics (numpy's default): sorted a[0..n-1], position p/100 * (n-1). Sorts its copy.
double percentile_of(std::vector<double> abs_values, double p);

// The MSE-optimal clipping range of `abs_values` for a `bits`-bit symmetric quantizer:
// a scan of 200 evenly spaced candidates in (0, max], then 100 candidates between the best
// one's neighbours. Returns max |x| when all values are zero.
double mse_optimal_range(const std::vector<double>& abs_values, int bits);

// The clipping range chosen by `kind` for `abs_values` (percentile: `percentile`).
double observe_range(ObserverKind kind, const std::vector<double>& abs_values, int bits,
                     double percentile);

// Streaming observer of one activation tensor (see the header comment).
class TensorObserver {
 public:
  explicit TensorObserver(std::size_t capacity = std::size_t{1} << 17,
                          std::uint64_t seed = 0x5eed);
  void observe(const double* x, std::size_t n);
  std::size_t count() const { return count_; }            // values seen
  double absmax() const { return absmax_; }               // exact over all values seen
  const std::vector<double>& sample() const { return sample_; }  // |x|, <= capacity values
  bool exact() const { return count_ == sample_.size(); } // the sample is the whole tensor
  // Clipping range by `kind`; minmax uses the exact max, the others the sample. 0 when no
  // value was seen or all were zero.
  double range(ObserverKind kind, int bits, double percentile) const;

 private:
  std::size_t capacity_;
  std::size_t count_ = 0;
  double absmax_ = 0.0;
  std::vector<double> sample_;
  std::mt19937_64 rng_;
};

// Symmetric weight scales of a (in, out) row-major matrix: per output channel (out scales)
// or per tensor (1 scale). `kind` is MinMax or MSE (Percentile is treated as MinMax: weights
// are few and every one of them matters). A channel whose weights are all zero gets scale 1.
// Scales are returned as float, the precision the file stores.
std::vector<float> weight_scales(const std::vector<double>& w, int in, int out, int bits,
                                 bool per_channel, ObserverKind kind);

// Quantizes `w` in place with those scales: w[k] = q * (double)scale[c], |q| <= qmax.
// Returns the integers.
std::vector<std::int32_t> quantize_weights(std::vector<double>& w, int in, int out, int bits,
                                           const std::vector<float>& scales);

}  // namespace qnn
