// Post-training quantization of a qnn model (docs/quantization.md, "Post-training
// quantization"): precision plans, calibration of activation ranges on DFT frames, writing
// the plan into a model's QuantSpec metadata, evaluation of a quantized model against DFT
// and against its FP32 original, the bit-width sweep and the mixed-precision search.
// The arithmetic is the engines' (qnn/engine/evaluator.hpp); this code only chooses bits and
// scales and measures what they cost.
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qnn/engine/evaluator.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"
#include "qnn/quant/observer.hpp"

namespace qnn {

// ----------------------------------------------------------------------------- layers
// One dense layer of a model, in the file's order: embed.0.*, embed.1.*, ..., fit.0.*, ...
struct LayerRef {
  int family = 0;   // 0: embedding net (per neighbour species), 1: fitting net (per centre species)
  int net = 0;      // species index
  int layer = 0;    // index in the net
  std::string name; // "embed.<s>.<l>" / "fit.<s>.<l>" as in the .qnn header
};
std::vector<LayerRef> list_layers(const Model& m);
const DenseLayer& layer_of(const Model& m, const LayerRef& r);
DenseLayer& layer_of(Model& m, const LayerRef& r);

// ----------------------------------------------------------------------------- plans
// Precision of one layer: 0 = float. weight_bits > 0 with act_bits == 0 is weight-only.
struct LayerBits {
  int weight_bits = 0;
  int act_bits = 0;
  bool operator==(const LayerBits& o) const { return weight_bits == o.weight_bits && act_bits == o.act_bits; }
  bool operator!=(const LayerBits& o) const { return !(*this == o); }
};
// The QuantSpec mode string of a layer with these bits: "" (fp32), "weight-only", "int8"
// (both set, both <= 8), "int16" (both set, one of them in 9..16). Throws qnn::Error for bits
// outside 0, 2..16 and for activation-only layers (act_bits without weight_bits), which no
// execution mode runs.
std::string layer_mode(const LayerBits& b);
// "fp32", "w8a8", "w8" (weight-only), ...
std::string bits_label(const LayerBits& b);

// Bits for every layer, in list_layers() order.
struct QuantPlan {
  std::vector<LayerBits> layers;
};
QuantPlan uniform_plan(const Model& m, LayerBits b);

// A plan file (JSON): an object whose keys are layer names and whose values are
//   {"weight_bits": B, "act_bits": B}  (either may be 0 or omitted = float; B in 2..16)
//   "fp32"            float weights and activations
//   "weight-only"     integer weights at the default weight bits, float activations
//   "int8"            {"weight_bits": 8, "act_bits": 8};  "int16": 16 and 16
// Layer names are those of the file ("embed.1.0"); the species may also be given by name
// ("embed.H.0"). The optional key "default" (same value forms) sets every layer the file does
// not list; without it they get `defaults` (the command line's bits). Unknown layer names,
// keys or values, and bits outside 2..16 are errors naming the file and the entry.
QuantPlan parse_plan(const nlohmann::json& j, const Model& m, LayerBits defaults,
                     const std::string& what);
QuantPlan read_plan(const std::string& path, const Model& m, LayerBits defaults);
nlohmann::json plan_to_json(const Model& m, const QuantPlan& p);
// Compact one-line form, e.g. "embed.0 [w8a8 w8a8 w8a8] ... fit.1 [w8a8 w8a8 w8a8 w16a16]".
std::string plan_summary(const Model& m, const QuantPlan& p);

// ----------------------------------------------------------------------------- frames
// Frames with their DFT labels and neighbour graphs (built once).
struct FrameSet {
  std::vector<NeighborGraph> graphs;
  std::vector<int> natoms;
  std::vector<double> energy;               // eV
  std::vector<std::vector<double>> force;   // (natoms, 3) eV/Å
  std::vector<std::string> labels;
  std::size_t size() const { return graphs.size(); }
};
// Up to `max_frames` frames (<= 0: all) from the systems, evenly spaced over all of their
// frames in order (deterministic). Throws qnn::Error when the systems have no frames.
FrameSet load_frames(const std::vector<std::string>& dirs, const Model& m, int max_frames);

// ----------------------------------------------------------------------------- calibration
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

// The FP32 model with the plan applied: quantized weights (stored dequantized, q * scale),
// weight scales, activation scales from the calibration, out_scale of every integer last
// embedding layer (8 bits: G enters the descriptor as int8), per-layer modes, default_mode
// ("int8" when every layer is integer with <= 8 bits, "weight-only" when every layer is
// weight-only, "fp32" when none is quantized, else "mixed"), and a provenance record.
// Throws qnn::Error when the model is already quantized or the plan does not fit it.
Model apply_plan(const Model& fp32, const QuantPlan& plan, const Calibration& cal,
                 const QuantOptions& opt);

// ----------------------------------------------------------------------------- evaluation
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

// ----------------------------------------------------------------------------- sweep
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

// ----------------------------------------------------------------------------- mixed search
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
