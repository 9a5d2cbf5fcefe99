// How one dense layer of a file runs, from its QuantSpec (docs/quantization.md, "Plans and
// modes"): the one rule the evaluator and the compressed engine share.
#pragma once
#include <string>

#include "qnn/format/model.hpp"

namespace qnn {

enum class LayerExec {
  Float,    // float activations, the layer's weights as stored (fp32, weight-only)
  Integer,  // integer activations (act_bits) and weights (weight_bits)
};

// integer_all (mode int8): the layer must be integer with at most 8 bits. Throws qnn::Error
// naming the layer (`name`) when its plan cannot run so, or when it quantizes activations
// but not weights (no mode runs that).
LayerExec layer_exec(const DenseLayer& layer, bool integer_all, const std::string& name);

}  // namespace qnn
