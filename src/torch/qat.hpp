// Quantization-aware training (`qnn qat`): fine-tunes an FP32 model with the integer engine's
// quantization simulated in floating point ("fake quantization"), starting from the plan and
// scales of a post-training-quantized (PTQ) file, and writes a quantized .qnn with the same
// plan, the fine-tuned weights on the integer grid and the learned scales.
//
// What is simulated, per dense layer and its QuantSpec (docs/quantization.md, "Integer
// network"; engine v2 runs the fitting layers so, src/qnn/engine/):
//   weights   (weight_bits > 0)  Ŵ = s_w · clamp(round(W / s_w), ±Q_w), s_w per channel or tensor
//   input     (act_bits > 0)     x̂ = s_x · clamp(round_half_away(x · (1/s_x)), ±Q_x)
//   integer layer (both)         z = x̂·Ŵ + b, t = tanh(clamp(round_half_away(256 z), ±2048) / 256)
//                                (the engine's tanh table), y = residual(x̂, t)
//   G (out_scale > 0 on the last layer of every embedding net)
//                                Ĝ = out_scale · clamp(round_half_away(G / out_scale), ±127)
// with Q_b = 2^(b−1) − 1. Rounding has a straight-through gradient (for weights: identity
// inside the range, zero where clamped; for activations and G the identity, as the engine's
// backward pass has it); the scales get LSQ gradients (Esser et al. 2020, "Learned Step Size
// Quantization") and are learned as logarithms. Not simulated: the fixed-point R̂ of the
// integer descriptor (relative 1e-6) and the dynamic quantization of the engine's backward pass.
//
// The loop, data, loss, progress, learning curve and checkpoints are `qnn train`'s
// (train_loop.hpp).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "qnn/format/model.hpp"
#include "torch/se2a_module.hpp"
#include "torch/trainer.hpp"

namespace qnn::libtorch {

// Bits of G in the integer descriptor (int8).
inline constexpr int kEmbedOutBits = 8;
// The integer engine's tanh table: z rounded to 1/kTanhSteps, clamped to ±kTanhHalf steps.
inline constexpr int kTanhSteps = 256;
inline constexpr int kTanhHalf = 2048;

// 2^(bits−1) − 1, the symmetric integer range; throws qnn::Error unless 2 <= bits <= 16.
int quant_max(int bits);

// Rounding with halves away from zero as the integer engine does it: trunc(v ± 0.5), the sum
// rounded in the tensor's arithmetic (docs/quantization.md, Q3); no gradient.
torch::Tensor round_half_away(const torch::Tensor& v);

// The integer grid index clamp(round_half_away(x · (1/scale)), ±quant_max(bits)) (no gradient);
// `scale` broadcasts against x.
torch::Tensor quant_index(const torch::Tensor& x, const torch::Tensor& scale, int bits);

// Fake quantization scale · quant_index(x, scale, bits), exactly that value, with gradients
//   ∂/∂x = 1 where |x / scale| <= Q, 0 where clamped (straight-through estimator), or 1
//          everywhere with clip_gradient == false;
//   ∂/∂scale = g · (round(x/s) − x/s) inside, g · (±Q) where clamped (LSQ, g = grad_scale).
// The gradient ∂/∂x does not depend on the scale, so a loss on forces (which differentiates
// the network once more) sends the scales no spurious gradient through it.
// The module uses clip_gradient for weights, and not for activations and G: the integer
// engine's backward pass (its forces) treats the activation quantizer as the identity, clamped
// or not, and QAT must train the forces the engine computes.
torch::Tensor fake_quant(const torch::Tensor& x, const torch::Tensor& scale, int bits, double grad_scale = 1.0,
                         bool clip_gradient = true);

// LSQ's gradient scale 1/sqrt(n · Q) for a scale shared by n values.
double lsq_grad_scale(double n, int bits);

// The engine's table tanh: value tanh(clamp(round_half_away(256 z), ±2048) / 256), gradient
// 1 − t² (the derivative at the table point, as the engine's backward uses it).
torch::Tensor table_tanh(const torch::Tensor& z);

// ------------------------------------------------------------------------------ models

// The model `module` (with fake quantization enabled from `plan`) represents: the plan's
// metadata, the module's weights quantized to the grid of its (learned) scales, stored as
// q · (double)(float)scale, the scales as float32, default_mode from the plan.
Model quantized_model(Se2aModuleImpl& module, const Model& plan);

// Throws qnn::Error unless `plan` is a quantized model made from `fp32` (same architecture,
// statistics and energy bias; float layers equal; quantized weights within half a step of the
// FP32 weights for almost all entries). `fp32` must not be quantized.
void check_plan_matches(const Model& fp32, const Model& plan, const std::string& fp32_name,
                        const std::string& plan_name);

// A simple min/max post-training quantization (tests, and a fallback when no `qnn quantize`
// file is at hand): weight scales max|W|/Q per output channel (or per tensor), input scales
// max|x|/Q over the calibration frames, out_scale max|G|/127 on every embedding net's last
// layer (when opt.out_scale). Every layer is quantized; mode "int8" when all bits are <= 8
// and out_scale is set, else "mixed".
struct MinMaxOptions {
  int weight_bits = 8;
  int act_bits = 8;
  bool per_channel = true;
  bool out_scale = true;
};
Model minmax_quantize(const Model& fp32, const std::vector<EdgeBatch>& calibration, const MinMaxOptions& opt);

// ------------------------------------------------------------------------------ qnn qat

// The JSON config of `qnn qat`: "model" {fp32, init, precision}, "quantization" {learn_weight_scales,
// learn_act_scales, scale_lr_factor}, and the data, learning_rate, loss, training and output
// sections of `qnn train` (trainer.hpp) with fine-tuning defaults (see docs/training.md).
struct QatConfig {
  std::string fp32_model;            // required: the FP32 .qnn (weights to fine-tune)
  std::string init_model;            // required: the PTQ .qnn (plan and initial scales)
  std::string precision = "double";  // "float" | "double"
  bool learn_weight_scales = true;
  bool learn_act_scales = true;      // input and embedding-output scales
  double scale_lr_factor = 1.0;      // learning rate of the log scales relative to the weights'
  TrainConfig train;                 // data / learning_rate / loss / training / output

  QatConfig();                       // the fine-tuning defaults
  static QatConfig from_json(const nlohmann::json& j, const std::string& base_dir, const std::string& where);
  nlohmann::json to_json() const;
};
QatConfig read_qat_config(const std::string& path);

// Runs QAT; the result's model is the quantized model also written to output.model.
TrainResult qat(const QatConfig& cfg, const TrainOptions& opt = {});

}  // namespace qnn::libtorch
