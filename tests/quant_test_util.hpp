// Test helper: the simplest post-training quantization (min/max calibration through the
// calibration forward's tap, symmetric per-channel weights). `qnn quantize` is the real
// tool; tests use this to get quantized models without depending on it.
#pragma once
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <tuple>
#include <vector>

#include "qnn/engine/exact_engine.hpp"
#include "qnn/format/model.hpp"
#include "qnn/quant/calibration_forward.hpp"

namespace qnn::test {

struct MaxTap final : LayerTap {
  std::map<std::tuple<int, int, int>, double> in_max;  // (family, net, layer) -> max |x|
  std::map<int, double> g_max;                         // embedding net -> max |G|
  void layer_input(int f, int n, int l, const double* x, int k) override {
    double& m = in_max[{f, n, l}];
    for (int i = 0; i < k; ++i) m = std::max(m, std::abs(x[i]));
  }
  void embed_output(int n, const double* g, int k) override {
    double& m = g_max[n];
    for (int i = 0; i < k; ++i) m = std::max(m, std::abs(g[i]));
  }
};

// Bits per layer: (family, net, layer) -> {weight_bits, act_bits}; {0, 0} keeps it float,
// {b, 0} makes it weight-only.
using BitsFn = std::function<std::pair<int, int>(int family, int net, int layer)>;

inline void quantize_weights(DenseLayer& L, int bits, bool per_channel) {
  const double qmax = std::pow(2.0, bits - 1) - 1;
  std::vector<double> amax(per_channel ? L.out : 1, 0.0);
  for (int k = 0; k < L.in; ++k)
    for (int o = 0; o < L.out; ++o) {
      double& a = amax[per_channel ? o : 0];
      a = std::max(a, std::abs(L.weight[static_cast<std::size_t>(k) * L.out + o]));
    }
  L.quant.weight_bits = bits;
  L.quant.weight_scale.clear();
  for (double a : amax) L.quant.weight_scale.push_back(static_cast<float>(a > 0 ? a / qmax : 1.0));
  for (int k = 0; k < L.in; ++k)
    for (int o = 0; o < L.out; ++o) {
      double& w = L.weight[static_cast<std::size_t>(k) * L.out + o];
      const double sc = static_cast<double>(L.quant.weight_scale[per_channel ? o : 0]);
      w = std::min(std::max(std::round(w / sc), -qmax), qmax) * sc;
    }
}

inline Model quantize_minmax(const Model& fp, const std::vector<NeighborGraph>& calib,
                             const BitsFn& bits, bool per_channel = true) {
  MaxTap tap;
  for (const auto& g : calib) {
    calibration_forward(fp, g, &tap);
  }
  Model m = fp;
  bool all8 = true;
  for (int f = 0; f < 2; ++f) {
    auto& nets = f == 0 ? m.embed : m.fit;
    for (int n = 0; n < static_cast<int>(nets.size()); ++n) {
      auto& layers = nets[n].layers;
      for (int l = 0; l < static_cast<int>(layers.size()); ++l) {
        auto [wb, ab] = bits(f, n, l);
        DenseLayer& L = layers[l];
        if (wb == 0) {
          all8 = false;
          continue;
        }
        quantize_weights(L, wb, per_channel);
        if (ab > 0) {
          L.quant.act_bits = ab;
          const double amax = std::max(tap.in_max[{f, n, l}], 1e-6);
          L.quant.act_scale = static_cast<float>(amax / (std::pow(2.0, ab - 1) - 1));
          all8 = all8 && wb <= 8 && ab <= 8;
        } else {
          all8 = false;
        }
        if (f == 0 && l + 1 == static_cast<int>(layers.size()))
          L.quant.out_scale = static_cast<float>(std::max(tap.g_max[n], 1e-6) / 127.0);
      }
    }
  }
  m.default_mode = all8 ? "int8" : "mixed";
  return m;
}

inline Model quantize_int8(const Model& fp, const std::vector<NeighborGraph>& calib) {
  return quantize_minmax(fp, calib, [](int, int, int) { return std::make_pair(8, 8); });
}

}  // namespace qnn::test
