// See common.hpp.
#include "qnn/quant/common.hpp"

#include "qnn/error.hpp"
#include "qnn/quant/observer.hpp"

namespace qnn {

int qmax_of(int bits) {
  if (bits < 2 || bits > 16)
    throw Error("bit width " + std::to_string(bits) + " is outside 2..16");
  return (1 << (bits - 1)) - 1;
}

float range_scale(double range, int bits) {
  const float s = static_cast<float>(range / qmax_of(bits));
  return (s > 0 && std::isfinite(s)) ? s : 1.0f;
}

std::vector<LayerRef> list_layers(const Model& m) {
  std::vector<LayerRef> out;
  for (int fam = 0; fam < 2; ++fam) {
    const std::vector<Net>& nets = fam == 0 ? m.embed : m.fit;
    for (int s = 0; s < static_cast<int>(nets.size()); ++s)
      for (int l = 0; l < static_cast<int>(nets[static_cast<std::size_t>(s)].layers.size()); ++l)
        out.push_back({fam, s, l, (fam == 0 ? m.embed_name(s) : "fit." + std::to_string(s)) + "." + std::to_string(l)});
  }
  return out;
}

const DenseLayer& layer_of(const Model& m, const LayerRef& r) {
  const std::vector<Net>& nets = r.family == 0 ? m.embed : m.fit;
  return nets.at(static_cast<std::size_t>(r.net)).layers.at(static_cast<std::size_t>(r.layer));
}
DenseLayer& layer_of(Model& m, const LayerRef& r) {
  std::vector<Net>& nets = r.family == 0 ? m.embed : m.fit;
  return nets.at(static_cast<std::size_t>(r.net)).layers.at(static_cast<std::size_t>(r.layer));
}

std::optional<LayerRef> first_quantized_layer(const Model& m) {
  for (const LayerRef& r : list_layers(m))
    if (layer_of(m, r).quant.quantized()) return r;
  return std::nullopt;
}

std::vector<float> minmax_quantize_weights(std::vector<double>& w, int in, int out, int bits, bool per_channel) {
  std::vector<float> scales = weight_scales(w, in, out, bits, per_channel, ObserverKind::MinMax);
  quantize_weights(w, in, out, bits, scales);
  return scales;
}

}  // namespace qnn
