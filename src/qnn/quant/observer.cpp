// Range observers for post-training quantization (see observer.hpp).
#include "qnn/quant/observer.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "qnn/error.hpp"

namespace qnn {

const char* to_string(ObserverKind k) {
  switch (k) {
    case ObserverKind::MinMax: return "minmax";
    case ObserverKind::Percentile: return "percentile";
    case ObserverKind::MSE: return "mse";
  }
  return "?";
}

ObserverKind parse_observer(const std::string& s) {
  if (s == "minmax") return ObserverKind::MinMax;
  if (s == "percentile") return ObserverKind::Percentile;
  if (s == "mse") return ObserverKind::MSE;
  throw Error("unknown observer '" + s + "'; valid observers: minmax, percentile, mse");
}

namespace {

// round half away from zero of x / scale, clamped; `qmax` precomputed.
inline double qround(double x, double inv_scale, double qmax) {
  const double r = std::round(x * inv_scale);  // std::round: halves away from zero
  return std::min(std::max(r, -qmax), qmax);
}

// A stratified subsample of at most `cap` values from sorted data, always keeping the
// largest: used so the MSE scan stays cheap on big samples.
std::vector<double> thin_sorted(const std::vector<double>& sorted, std::size_t cap) {
  if (sorted.size() <= cap) return sorted;
  std::vector<double> out;
  out.reserve(cap);
  const double step = static_cast<double>(sorted.size() - 1) / static_cast<double>(cap - 1);
  for (std::size_t k = 0; k < cap; ++k)
    out.push_back(sorted[std::min(sorted.size() - 1, static_cast<std::size_t>(std::llround(k * step)))]);
  return out;
}

}  // namespace

std::int32_t quantize_symmetric(double x, double scale, int bits) {
  const double qmax = qmax_of(bits);
  const double r = std::round(x / scale);
  return static_cast<std::int32_t>(std::min(std::max(r, -qmax), qmax));
}

double fake_quantize(double x, double scale, int bits) {
  return static_cast<double>(quantize_symmetric(x, scale, bits)) * scale;
}

double quantization_mse(const std::vector<double>& abs_values, double range, int bits) {
  if (abs_values.empty()) return 0.0;
  const double qmax = qmax_of(bits);
  if (!(range > 0)) {
    double s = 0;
    for (double v : abs_values) s += v * v;
    return s / static_cast<double>(abs_values.size());
  }
  const double scale = range / qmax;
  const double inv = 1.0 / scale;
  double s = 0;
  for (double v : abs_values) {
    const double e = v - qround(v, inv, qmax) * scale;
    s += e * e;
  }
  return s / static_cast<double>(abs_values.size());
}

double percentile_of(std::vector<double> v, double p) {
  if (!(p > 0 && p <= 100)) throw Error("percentile must be in (0, 100], got " + std::to_string(p));
  if (v.empty()) return 0.0;
  const double pos = p / 100.0 * static_cast<double>(v.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(v.size() - 1, lo + 1);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(lo), v.end());
  const double a = v[lo];
  double b = a;
  if (hi != lo) b = *std::min_element(v.begin() + static_cast<std::ptrdiff_t>(hi), v.end());
  return a + (pos - static_cast<double>(lo)) * (b - a);
}

double mse_optimal_range(const std::vector<double>& abs_values, int bits) {
  qmax_of(bits);  // validates
  double mx = 0;
  for (double v : abs_values) mx = std::max(mx, v);
  if (!(mx > 0)) return mx;
  std::vector<double> sorted = abs_values;
  std::sort(sorted.begin(), sorted.end());
  const std::vector<double> v = thin_sorted(sorted, 32768);
  const int n1 = 200, n2 = 100;
  double best_c = mx, best_e = quantization_mse(v, mx, bits);
  int best_k = n1;
  for (int k = 1; k < n1; ++k) {
    const double c = mx * k / n1;
    const double e = quantization_mse(v, c, bits);
    if (e < best_e) best_e = e, best_c = c, best_k = k;
  }
  const double lo = mx * std::max(best_k - 1, 0) / n1, hi = mx * std::min(best_k + 1, n1) / n1;
  for (int k = 1; k < n2; ++k) {
    const double c = lo + (hi - lo) * k / n2;
    if (!(c > 0)) continue;
    const double e = quantization_mse(v, c, bits);
    if (e < best_e) best_e = e, best_c = c;
  }
  return best_c;
}

double observe_range(ObserverKind kind, const std::vector<double>& abs_values, int bits,
                     double percentile) {
  switch (kind) {
    case ObserverKind::MinMax: {
      double mx = 0;
      for (double v : abs_values) mx = std::max(mx, v);
      return mx;
    }
    case ObserverKind::Percentile: return percentile_of(abs_values, percentile);
    case ObserverKind::MSE: return mse_optimal_range(abs_values, bits);
  }
  return 0.0;
}

TensorObserver::TensorObserver(std::size_t capacity, std::uint64_t seed)
    : capacity_(std::max<std::size_t>(capacity, 1)), rng_(seed) {
  sample_.reserve(std::min<std::size_t>(capacity_, 1 << 16));
}

void TensorObserver::observe(const double* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const double a = std::abs(x[i]);
    if (!std::isfinite(a)) throw Error("calibration saw a non-finite activation");
    absmax_ = std::max(absmax_, a);
    ++count_;
    if (sample_.size() < capacity_) {
      sample_.push_back(a);
    } else {
      // Algorithm R: keep the new value with probability capacity / count.
      const std::uint64_t j = std::uniform_int_distribution<std::uint64_t>(0, count_ - 1)(rng_);
      if (j < capacity_) sample_[static_cast<std::size_t>(j)] = a;
    }
  }
}

double TensorObserver::range(ObserverKind kind, int bits, double percentile) const {
  if (count_ == 0) return 0.0;
  if (kind == ObserverKind::MinMax) return absmax_;
  return observe_range(kind, sample_, bits, percentile);
}

std::vector<float> weight_scales(const std::vector<double>& w, int in, int out, int bits,
                                 bool per_channel, ObserverKind kind) {
  const int qmax = qmax_of(bits);
  if (in <= 0 || out <= 0 || w.size() != static_cast<std::size_t>(in) * static_cast<std::size_t>(out))
    throw Error("weight_scales: weight size does not match its shape");
  const int nch = per_channel ? out : 1;
  std::vector<float> scales(static_cast<std::size_t>(nch));
  std::vector<double> col;
  for (int c = 0; c < nch; ++c) {
    col.clear();
    for (int i = 0; i < in; ++i) {
      if (per_channel) {
        col.push_back(std::abs(w[static_cast<std::size_t>(i) * out + c]));
      } else {
        for (int o = 0; o < out; ++o) col.push_back(std::abs(w[static_cast<std::size_t>(i) * out + o]));
      }
    }
    const double r = kind == ObserverKind::MSE ? mse_optimal_range(col, bits)
                                               : observe_range(ObserverKind::MinMax, col, bits, 100);
    float s = r > 0 ? static_cast<float>(r / qmax) : 1.0f;
    if (!(s > 0) || !std::isfinite(s)) s = std::numeric_limits<float>::min();
    scales[static_cast<std::size_t>(c)] = s;
  }
  return scales;
}

std::vector<std::int32_t> quantize_weights(std::vector<double>& w, int in, int out, int bits,
                                           const std::vector<float>& scales) {
  if (w.size() != static_cast<std::size_t>(in) * static_cast<std::size_t>(out))
    throw Error("quantize_weights: weight size does not match its shape");
  if (scales.size() != 1 && scales.size() != static_cast<std::size_t>(out))
    throw Error("quantize_weights: need 1 or `out` scales");
  std::vector<std::int32_t> q(w.size());
  for (std::size_t k = 0; k < w.size(); ++k) {
    const std::size_t c = scales.size() == 1 ? 0 : k % static_cast<std::size_t>(out);
    const double s = static_cast<double>(scales[c]);
    q[k] = quantize_symmetric(w[k], s, bits);
    w[k] = static_cast<double>(q[k]) * s;
  }
  return q;
}

}  // namespace qnn
