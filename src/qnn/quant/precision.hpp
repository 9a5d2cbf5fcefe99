// The precision vocabulary of qnn (docs/quantization.md, "Plans and modes"):
//
//   Mode       (qnn/engine/evaluator.hpp) how a whole model runs: fp32, weight-only, int8,
//              mixed, fp64. A file's default_mode is one of these names.
//   LayerBits  the precision of one dense layer: weight and activation bits, 0 = float. The
//              only per-layer fact: a file stores it as QuantSpec::weight_bits / act_bits, a
//              quantization plan (qnn/quant/plan.hpp) as one LayerBits per layer.
//   LayerExec  how one layer runs under a Mode (float or integer arithmetic), derived from its
//              bits by layer_exec(): the one rule the evaluator and the compressed engine share.
//   layer_mode the name of a layer's bits ("", "weight-only", "int8", "int16";
//              QuantSpec::label() is the rule): what the file's per-layer "mode" key carries.
//              It is derived from the bits, written for people and older readers, never
//              stored in memory and never read to decide how a layer runs.
#pragma once
#include <string>

#include "qnn/format/model.hpp"

namespace qnn {

// Precision of one layer: 0 = float. weight_bits > 0 with act_bits == 0 is weight-only.
struct LayerBits {
  int weight_bits = 0;
  int act_bits = 0;
  bool operator==(const LayerBits& o) const { return weight_bits == o.weight_bits && act_bits == o.act_bits; }
  bool operator!=(const LayerBits& o) const { return !(*this == o); }
};

// The bits a layer's quantization metadata carries.
inline LayerBits layer_bits(const QuantSpec& q) { return {q.weight_bits, q.act_bits}; }

// The name of a layer with these bits: "" (fp32), "weight-only", "int8" (both set, both <= 8),
// "int16" (both set, one of them in 9..16). Throws qnn::Error for bits outside 0, 2..16 and for
// activation-only layers (act_bits without weight_bits), which no execution mode runs.
std::string layer_mode(const LayerBits& b);

// Sets the bits of `q`; validates as layer_mode does. Scales are left to the caller.
void set_layer_bits(QuantSpec& q, const LayerBits& b);

// How one dense layer of a file runs, from its bits.
enum class LayerExec {
  Float,    // float activations, the layer's weights as stored (fp32, weight-only)
  Integer,  // integer activations (act_bits) and weights (weight_bits)
};

// integer_all (mode int8): the layer must be integer with at most 8 bits. Throws qnn::Error
// naming the layer (`name`) when its plan cannot run so, or when it quantizes activations
// but not weights (no mode runs that).
LayerExec layer_exec(const DenseLayer& layer, bool integer_all, const std::string& name);

}  // namespace qnn
