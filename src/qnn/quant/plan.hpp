// Quantization plans: the bits of every layer, their JSON file form, and applying a plan to an
// FP32 model (docs/quantization.md, "Plans and modes").
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qnn/format/model.hpp"
#include "qnn/quant/calibrate.hpp"
#include "qnn/quant/common.hpp"
#include "qnn/quant/precision.hpp"

namespace qnn {

// Bits for every layer, in list_layers() order.
struct QuantPlan {
  std::vector<LayerBits> layers;
};
QuantPlan uniform_plan(const Model& m, LayerBits b);

// A plan file (JSON): an object whose keys are layer names and whose values are
//   {"weight_bits": B, "act_bits": B}  (either may be 0 or omitted = float; B in 2..16)
//   "fp32"            float weights and activations
//   "weight-only"     integer weights at the default weight bits, float activations
//   "int8"            {"weight_bits": 8, "act_bits": 8};  "int16": 16 and 16
// Layer names are those of the file ("embed.1.0"); the species may also be given by name
// ("embed.H.0"). The optional key "default" (same value forms) sets every layer the file does
// not list; without it they get `defaults` (the command line's bits). Unknown layer names,
// keys or values, and bits outside 2..16 are errors naming the file and the entry.
QuantPlan parse_plan(const nlohmann::json& j, const Model& m, LayerBits defaults,
                     const std::string& what);
QuantPlan read_plan(const std::string& path, const Model& m, LayerBits defaults);
nlohmann::json plan_to_json(const Model& m, const QuantPlan& p);
// Compact one-line form, e.g. "embed.0 [w8a8 w8a8 w8a8] ... fit.1 [w8a8 w8a8 w8a8 w16a16]".
std::string plan_summary(const Model& m, const QuantPlan& p);


// The FP32 model with the plan applied: quantized weights (stored dequantized, q * scale),
// weight scales, activation scales from the calibration, out_scale of every integer last
// embedding layer (8 bits: G enters the descriptor as int8), per-layer modes, default_mode
// ("int8" when every layer is integer with <= 8 bits, "weight-only" when every layer is
// weight-only, "fp32" when none is quantized, else "mixed"), and a provenance record.
// Throws qnn::Error when the model is already quantized or the plan does not fit it.
Model apply_plan(const Model& fp32, const QuantPlan& plan, const Calibration& cal,
                 const QuantOptions& opt);

}  // namespace qnn
