// See layer_exec.hpp.
#include "qnn/quant/layer_exec.hpp"

#include "qnn/error.hpp"

namespace qnn {

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
