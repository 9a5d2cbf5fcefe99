// What a quantization costs and saves: predictions of a model on frames, RMSEs against DFT
// and against the FP32 original, the energy offset correction, parameter bytes and the
// estimated arithmetic cost of a plan (docs/quantization.md).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "qnn/engine/evaluator.hpp"
#include "qnn/format/model.hpp"
#include "qnn/quant/frames.hpp"
#include "qnn/quant/plan.hpp"

namespace qnn {

// Folded forces and energies of every frame.
struct Prediction {
  std::vector<double> energy;
  std::vector<std::vector<double>> force;
};
Prediction predict(Evaluator& ev, const FrameSet& frames);
// The reference prediction of an FP32 model: the float engine in double precision.
Prediction predict_reference(const Model& fp32, const FrameSet& frames);
// Runs the model in its default mode (make_evaluator) and returns what ran (describe()).
Prediction predict_default(const Model& m, const FrameSet& frames, std::string* engine = nullptr);

// Energy offset correction (docs/quantization.md, "Energy offset"): quantization shifts
// the energy of every atom by nearly the same amount (rounding is unbiased per value but
// not through tanh), a constant that moves no force. Shifts every species' energy_bias of
// `q` by the mean per-atom energy difference fp32 - q on `frames` (fp32 in the exact fp64
// engine, q in its default mode), which sets that mean to zero; returns the shift (eV per
// atom) and records it in q's provenance. Forces and virials are unchanged bit for bit.
double correct_energy_offset(Model& q, const Model& fp32, const FrameSet& frames);

// RMSEs of a prediction, energies per atom.
struct Errors {
  double e_dft = 0, f_dft = 0;   // vs DFT: meV/atom, meV/Å (per component)
  double e_ref = 0, f_ref = 0;   // vs the reference (FP32) prediction
};
Errors compare(const Prediction& p, const Prediction& ref, const FrameSet& frames);

// Bytes of the network parameters as the .qnn file stores them (weights as i8 / i16 / f32,
// scales, biases, dt; no header, no padding). fp32 layers count 4 bytes per weight.
std::size_t parameter_bytes(const Model& m, const QuantPlan& p);
// Multiply-accumulates per frame of every layer (embedding layers once per edge of their
// neighbour species, fitting layers once per atom of their centre species), averaged over
// the frames.
std::vector<double> layer_macs(const Model& m, const FrameSet& frames);
// Estimated arithmetic cost of a plan: sum over layers of MACs times a relative cost per
// MAC (int8 = 1, int16 = 2, float = 4: the SIMD throughput ratio of vpdpbusd, vpmaddwd and
// FMA on one vector register), normalised so that the all-fp32 plan costs 1.
double estimated_cost(const Model& m, const QuantPlan& p, const std::vector<double>& macs);

}  // namespace qnn
