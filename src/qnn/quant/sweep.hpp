// The bit-width sweep of `qnn sweep` (docs/quantization.md, "Post-training quantization").
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "qnn/format/model.hpp"
#include "qnn/quant/calibrate.hpp"
#include "qnn/quant/frames.hpp"
#include "qnn/quant/metrics.hpp"

namespace qnn {

struct SweepRow {
  std::string variant;  // "fp32", "weights", "activations", "both"
  int bits = 32;
  std::string mode;     // execution mode that ran
  Errors err;
  std::size_t bytes = 0;
};
// For every bits in `bits`: weights only (w=b, float activations), activations only (a=b,
// weights at 16 bits: integer activations need integer weights) and both (w=a=b); plus the
// FP32 model itself in the float engine (single precision) as row "fp32".
std::vector<SweepRow> run_sweep(const Model& fp32, const Calibration& cal, const QuantOptions& opt,
                                const FrameSet& val, const Prediction& ref,
                                const std::vector<int>& bits,
                                const std::function<void(const SweepRow&)>& progress = {});
void write_sweep_csv(const std::vector<SweepRow>& rows, const std::string& path);

}  // namespace qnn
