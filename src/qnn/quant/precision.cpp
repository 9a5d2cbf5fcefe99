// See precision.hpp.
#include "qnn/quant/precision.hpp"

#include "qnn/error.hpp"

namespace qnn {

namespace {

void check_bits(int b, const std::string& what) {
  if (b != 0 && (b < 2 || b > 16))
    throw Error(what + ": bit width " + std::to_string(b) + " is outside 2..16 (0 = float)");
}

}  // namespace

std::string layer_mode(const LayerBits& b) {
  check_bits(b.weight_bits, "weight_bits");
  check_bits(b.act_bits, "act_bits");
  if (b.weight_bits == 0 && b.act_bits == 0) return "";
  if (b.weight_bits == 0)
    throw Error("act_bits " + std::to_string(b.act_bits) +
                " without weight_bits: integer activations need integer weights (give "
                "weight_bits too, e.g. 16)");
  QuantSpec q;
  q.weight_bits = b.weight_bits;
  q.act_bits = b.act_bits;
  return q.label();  // the one naming rule (format/model.hpp)
}

void set_layer_bits(QuantSpec& q, const LayerBits& b) {
  (void)layer_mode(b);  // validates
  q.weight_bits = b.weight_bits;
  q.act_bits = b.act_bits;
}

LayerExec layer_exec(const DenseLayer& L, bool integer_all, const std::string& name) {
  const QuantSpec& q = L.quant;
  const std::string run_mixed = "; run the file in mode mixed, or quantize every layer to 8 bits";
  if (q.weight_bits == 0 && q.act_bits != 0)
    throw Error(name + ": activations are quantized but the weights are float, which is not an "
                       "execution mode; quantize the weights too (16 bits is nearly exact)");
  if (q.weight_bits == 0) {
    if (integer_all) throw Error(name + " is fp32 in the file's plan, so mode int8 cannot run it" + run_mixed);
    return LayerExec::Float;
  }
  if (q.act_bits == 0) {
    if (integer_all)
      throw Error(name + " is weight-only in the file's plan, so mode int8 cannot run it" + run_mixed);
    return LayerExec::Float;
  }
  if (integer_all && (q.weight_bits > 8 || q.act_bits > 8))
    throw Error(name + " has " + std::to_string(q.weight_bits) + "-bit weights and " +
                std::to_string(q.act_bits) + "-bit activations; mode int8 runs at most 8 bits" +
                run_mixed);
  return LayerExec::Integer;
}

}  // namespace qnn
