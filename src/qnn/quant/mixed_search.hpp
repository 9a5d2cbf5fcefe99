// The mixed-precision search of `qnn quantize --search` (docs/quantization.md, "Mixed
// precision"): per-layer sensitivities, a greedy path of plans, measured under a budget.
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "qnn/format/model.hpp"
#include "qnn/quant/calibrate.hpp"
#include "qnn/quant/common.hpp"
#include "qnn/quant/frames.hpp"
#include "qnn/quant/metrics.hpp"
#include "qnn/quant/plan.hpp"

namespace qnn {

struct SearchOptions {
  std::vector<int> bits = {16, 8, 6, 4};  // candidate widths (weights = activations = b)
  bool allow_fp32 = true;                 // a layer may also stay float
  double max_force_ratio = 1.03;          // budget: force RMSE vs DFT <= ratio x FP32's
  double max_force_dev = 0;               // budget: force RMSE vs FP32 <= this (meV/Å), 0 = off
  double max_size_ratio = 0;              // budget: parameter bytes <= ratio x FP32's, 0 = off
  bool objective_size = false;            // minimise bytes instead of estimated cost
};
struct PlanResult {
  std::string label;
  QuantPlan plan;
  std::size_t bytes = 0;
  double cost = 0;
  double predicted_dev = 0;  // meV/Å, from the sensitivities (sqrt of the sum of squares)
  Errors err;
  bool within_budget = false;
  bool pareto = false;
};
struct SearchResult {
  std::vector<LayerRef> layers;
  std::vector<int> levels;                     // candidate bits, 0 = fp32
  std::vector<std::vector<Errors>> sensitivity;  // [layer][level]: only that layer quantized
  std::vector<double> macs;
  Errors fp32;                                  // the FP32 model (float engine) vs DFT
  std::vector<PlanResult> tried;
  int chosen = -1;                              // index in tried, -1 if none met the budget
};
SearchResult search_mixed(const Model& fp32, const Calibration& cal, const QuantOptions& opt,
                          const FrameSet& val, const Prediction& ref, const SearchOptions& so,
                          const std::function<void(const std::string&)>& log = {});
// Markdown table of the plans tried (size, cost, RMSEs, budget, Pareto flag).
std::string pareto_markdown(const Model& m, const SearchResult& r);

}  // namespace qnn
