// See calibrate.hpp.
#include "qnn/quant/calibrate.hpp"

#include <cstdint>
#include <vector>

#include "qnn/error.hpp"
#include "qnn/quant/calibration_forward.hpp"
#include "qnn/quant/common.hpp"

namespace qnn {

namespace {

struct CalibrationTap final : LayerTap {
  Calibration* cal = nullptr;
  std::vector<std::vector<std::vector<int>>> index;  // [family][net][layer] -> observer
  void layer_input(int family, int net, int layer, const double* x, int n) override {
    cal->inputs.at(static_cast<std::size_t>(index.at(static_cast<std::size_t>(family))
                                                .at(static_cast<std::size_t>(net))
                                                .at(static_cast<std::size_t>(layer))))
        .observe(x, static_cast<std::size_t>(n));
  }
  void embed_output(int net, const double* g, int n) override {
    cal->embed_out.at(static_cast<std::size_t>(net)).observe(g, static_cast<std::size_t>(n));
  }
};

}  // namespace

Calibration calibrate(const Model& fp32, const FrameSet& frames, std::size_t capacity) {
  if (is_quantized(fp32))
    throw Error("calibration needs the FP32 model; this one is already quantized");
  if (frames.size() == 0) throw Error("calibration needs at least one frame");
  const std::vector<LayerRef> layers = list_layers(fp32);
  Calibration cal;
  for (std::size_t i = 0; i < layers.size(); ++i) cal.inputs.emplace_back(capacity, 0x5eed + i);
  for (int s = 0; s < fp32.n_embed_nets(); ++s) cal.embed_out.emplace_back(capacity, 0xe3bd + static_cast<std::uint64_t>(s));
  CalibrationTap tap;
  tap.cal = &cal;
  tap.index.resize(2);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    auto& nets = tap.index[static_cast<std::size_t>(layers[i].family)];
    if (nets.size() <= static_cast<std::size_t>(layers[i].net)) nets.resize(static_cast<std::size_t>(layers[i].net) + 1);
    auto& ls = nets[static_cast<std::size_t>(layers[i].net)];
    if (ls.size() <= static_cast<std::size_t>(layers[i].layer)) ls.resize(static_cast<std::size_t>(layers[i].layer) + 1);
    ls[static_cast<std::size_t>(layers[i].layer)] = static_cast<int>(i);
  }
  for (const NeighborGraph& g : frames.graphs) {
    calibration_forward(fp32, g, &tap);
    ++cal.frames;
  }
  for (std::size_t i = 0; i < layers.size(); ++i)
    if (cal.inputs[i].count() == 0)
      throw Error("calibration saw no input of layer " + layers[i].name +
                  " (do the frames contain every species of the model?)");
  return cal;
}

}  // namespace qnn
