// Calibration of activation ranges on DFT frames, and the observer choices a quantization
// uses (docs/quantization.md, "Post-training quantization").
#pragma once
#include <cstddef>

#include "qnn/format/model.hpp"
#include "qnn/quant/frames.hpp"
#include "qnn/quant/observer.hpp"

namespace qnn {

// Activation statistics of the FP32 network on calibration frames: the input of every layer
// (list_layers order) and the output G of every embedding net, gathered with the integer
// calibration forward (qnn/quant/calibration_forward.hpp, with a LayerTap).
struct Calibration {
  std::vector<TensorObserver> inputs;      // one per layer
  std::vector<TensorObserver> embed_out;   // one per embedding net (Model::embed)
  int frames = 0;
};
Calibration calibrate(const Model& fp32, const FrameSet& frames,
                      std::size_t sample_capacity = std::size_t{1} << 17);

struct QuantOptions {
  ObserverKind act_observer = ObserverKind::MinMax;
  double percentile = 99.99;
  ObserverKind weight_observer = ObserverKind::MinMax;
  bool per_channel = true;
};

}  // namespace qnn
