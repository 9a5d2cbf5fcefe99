// Helpers of the plugin tests (test_plugin_*.cpp): a weight-only quantization of a model.
#pragma once
#include <algorithm>
#include <cmath>

#include "qnn/format/model.hpp"

namespace qnn::test {

// Symmetric per-channel 8-bit weights: scale_o = max_k |W[k,o]| / 127 (as float), weights
// replaced by round(w / scale) * scale; the file's default mode becomes weight-only.
inline Model quantize_weight_only(Model m) {
  for (auto* fam : {&m.embed, &m.fit})
    for (Net& net : *fam)
      for (DenseLayer& L : net.layers) {
        L.quant.weight_bits = 8;
        L.quant.weight_scale.assign(static_cast<std::size_t>(L.out), 1.0f);
        for (int o = 0; o < L.out; ++o) {
          double mx = 0;
          for (int k = 0; k < L.in; ++k) mx = std::max(mx, std::abs(L.weight[static_cast<std::size_t>(k * L.out + o)]));
          if (mx > 0) L.quant.weight_scale[static_cast<std::size_t>(o)] = static_cast<float>(mx / 127.0);
        }
        for (int k = 0; k < L.in; ++k)
          for (int o = 0; o < L.out; ++o) {
            double& w = L.weight[static_cast<std::size_t>(k * L.out + o)];
            const double s = static_cast<double>(L.quant.weight_scale[static_cast<std::size_t>(o)]);
            w = std::nearbyint(w / s) * s;
          }
      }
  m.default_mode = "weight-only";
  return m;
}

}  // namespace qnn::test
