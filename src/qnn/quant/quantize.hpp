// Post-training quantization of a qnn model (docs/quantization.md, "Post-training
// quantization"): the public header of qnn/quant/, which includes every part of it. The
// arithmetic is the engines' (qnn/engine/evaluator.hpp); this code only chooses bits and
// scales and measures what they cost.
//
//   common.hpp        qmax_of, the layers of a model, is_quantized, the min/max quantizer, RmsError
//   precision.hpp     the precision vocabulary: LayerBits, layer_mode, LayerExec (and Mode)
//   observer.hpp      range observers (minmax, percentile, mse) and weight scales
//   frames.hpp        FrameSet, load_frames: DFT frames with their neighbour graphs
//   calibrate.hpp     Calibration, calibrate, QuantOptions
//   plan.hpp          QuantPlan, plan files, plan_summary, apply_plan
//   metrics.hpp       predictions, Errors/compare, energy offset, bytes, MACs, cost
//   sweep.hpp         the bit-width sweep (`qnn sweep`)
//   mixed_search.hpp  the mixed-precision search (`qnn quantize --search`)
//   (qnn/util/plot.hpp, finding and running the plot scripts, is not part of quant/)
#pragma once
#include "qnn/quant/calibrate.hpp"
#include "qnn/quant/common.hpp"
#include "qnn/quant/frames.hpp"
#include "qnn/quant/metrics.hpp"
#include "qnn/quant/mixed_search.hpp"
#include "qnn/quant/observer.hpp"
#include "qnn/quant/plan.hpp"
#include "qnn/quant/precision.hpp"
#include "qnn/quant/sweep.hpp"
