// The small helpers every part of the quantizer shares (and the LibTorch QAT code, `qnn eval`
// and the trainer): the integer range of a bit width, the layers of a model and whether any
// of them is quantized, the min/max quantizer, and RMS error sums. docs/quantization.md.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "qnn/format/model.hpp"

namespace qnn {

// ----------------------------------------------------------------------------- integer range
// Largest integer magnitude of a symmetric `bits`-bit quantizer: 2^(bits-1) - 1.
// Throws qnn::Error unless 2 <= bits <= 16. The one definition of qmax in qnn's C++ code
// (the LibTorch quant_max() forwards here).
int qmax_of(int bits);

// The scale of a symmetric `bits`-bit quantizer with clipping range `range`: range / qmax,
// rounded to the float the file stores; 1 when that is not a positive finite float (range 0:
// a tensor that was never seen or is all zero).
float range_scale(double range, int bits);

// ----------------------------------------------------------------------------- layers
// One dense layer of a model, in the file's order: embed.0.*, embed.1.*, ..., fit.0.*, ...
struct LayerRef {
  int family = 0;   // 0: embedding net (per neighbour species), 1: fitting net (per centre species)
  int net = 0;      // species index
  int layer = 0;    // index in the net
  std::string name; // "embed.<s>.<l>" / "fit.<s>.<l>" as in the .qnn header
};
std::vector<LayerRef> list_layers(const Model& m);
const DenseLayer& layer_of(const Model& m, const LayerRef& r);
DenseLayer& layer_of(Model& m, const LayerRef& r);

// The first layer (list_layers order) with integer weights or activations, if any.
std::optional<LayerRef> first_quantized_layer(const Model& m);
// Whether any layer of `m` is quantized (QuantSpec::quantized()).
inline bool is_quantized(const Model& m) { return first_quantized_layer(m).has_value(); }

// ----------------------------------------------------------------------------- min/max quantizer
// The min/max weight quantizer: scales max |w| / qmax (per output channel, or one per tensor)
// as float, and `w` ((in, out) row-major) rounded onto that grid in place: w = q * scale with
// q = round(w / scale), ties away from zero, |q| <= qmax. Returns the scales. The same as
// weight_scales(..., ObserverKind::MinMax) followed by quantize_weights (observer.hpp).
std::vector<float> minmax_quantize_weights(std::vector<double>& w, int in, int out, int bits, bool per_channel);

// ----------------------------------------------------------------------------- RMS errors
// Root mean square of errors, accumulated one error at a time (add) or as a partial sum of
// squares over `n` errors (add_squares). rms(unit) = unit * sqrt(sum / n), e.g. unit 1000 for
// eV -> meV; NaN when nothing was added.
class RmsError {
 public:
  void add(double d) {
    sum_sq_ += d * d;
    ++n_;
  }
  void add_squares(double sum_sq, std::int64_t n) {
    sum_sq_ += sum_sq;
    n_ += n;
  }
  std::int64_t count() const { return n_; }
  double sum_squares() const { return sum_sq_; }
  double rms(double unit = 1.0) const {
    return n_ ? unit * std::sqrt(sum_sq_ / static_cast<double>(n_)) : std::numeric_limits<double>::quiet_NaN();
  }

 private:
  double sum_sq_ = 0;
  std::int64_t n_ = 0;
};

}  // namespace qnn
