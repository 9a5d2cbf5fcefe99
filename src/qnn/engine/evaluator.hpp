// One interface over every execution mode of a model file (docs/quantization.md, "Execution
// modes"): fp64 runs the exact float engine (qnn::Engine<double>), the reference; fp32,
// weight-only, int8 and mixed run engine v2 (qnn::CompressedEngine: tabulated embedding,
// GEMM fitting nets). A model's short-range repulsion is added in every mode. The LAMMPS
// plugin, `qnn eval` and `qnn bench` use this.
#pragma once
#include <memory>
#include <string>
#include <utility>

#include "qnn/engine/exact_engine.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"

namespace qnn {

// fp32: float network. weight-only: the file's integer weights dequantized, float arithmetic.
// w8a16: every fitting layer with int8 weights and int16 activations, exact int32 sums (a
// conserving integer mode). int8: w8a8. mixed: per layer, as the file's plan says. fp64: the
// exact network in double (the reference). docs/quantization.md, "Execution modes".
enum class Mode { FP32, WeightOnly, W8A16, Int8, Mixed, FP64 };
const char* to_string(Mode m);  // "fp32", "weight-only", "w8a16", "int8", "mixed", "fp64"
Mode parse_mode(const std::string& s);  // throws qnn::Error listing the valid names
// "fp32, weight-only, w8a16, int8, mixed, fp64": for help texts and error messages.
const char* mode_names();
// The mode a file was made for (Model::default_mode), or fp32 when it is empty.
Mode default_mode(const Model& m);
// Empty when `m` can run in `mode`, else a sentence saying why not and what to do (e.g.
// "int8 needs a quantized file; run `qnn quantize` first").
std::string mode_unsupported_reason(const Model& m, Mode mode);

class Evaluator {
 public:
  virtual ~Evaluator() = default;
  // Same contract as Engine::compute (forces include ghosts, not folded).
  virtual void compute(const NeighborGraph& graph, EvalResult& out,
                       const EvalOptions& opt = {}) = 0;
  virtual Mode mode() const = 0;
  // The model as this evaluator runs it (weights as used, e.g. dequantized).
  virtual const Model& model() const = 0;
  // One line: mode, precision per family, ISA path of the integer kernels.
  virtual std::string describe() const = 0;
};

// The Evaluator of an engine with CompressedEngine's interface (compute, model, describe),
// constructed in place from `args`; `label` names the engine in describe(). Engine v2 on the
// CPU and the CUDA engine are both run through it.
template <class EngineT>
class EngineEvaluator final : public Evaluator {
 public:
  template <class... Args>
  EngineEvaluator(const char* label, Mode mode, Args&&... args)
      : engine_(std::forward<Args>(args)...), mode_(mode), label_(label) {}
  void compute(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt) override {
    engine_.compute(g, out, opt);
  }
  Mode mode() const override { return mode_; }
  const Model& model() const override { return engine_.model(); }
  std::string describe() const override;

 private:
  EngineT engine_;
  Mode mode_;
  const char* label_;
};

template <class EngineT>
std::string EngineEvaluator<EngineT>::describe() const {
  return std::string(to_string(mode_)) + ": " + label_ + ": " + engine_.describe();
}

// Where an evaluator runs. Cpu: make_evaluator below. Cuda: qnn::cuda::make_cuda_evaluator
// (src/qnn/cuda/cuda_engine.hpp), which exists only in builds with -DQNN_ENABLE_CUDA=ON (the
// targets that link qnn_cuda see QNN_HAVE_CUDA); qnn_core itself never depends on CUDA.
enum class Device { Cpu, Cuda };
const char* to_string(Device d);            // "cpu", "cuda"
Device parse_device(const std::string& s);  // throws qnn::Error naming the valid devices

struct CompressedOptions;  // compressed_engine.hpp
// Engine v2's options for a mode other than fp64 (which fitting layers run int8), on any device.
CompressedOptions compressed_options(Mode mode);
// `net` with the model's short-range repulsion added when the model has one (the same
// double-precision pair term on every device and in every mode), else `net` itself. For
// evaluators made outside make_evaluator (make_cuda_evaluator).
std::unique_ptr<Evaluator> with_repulsion(std::unique_ptr<Evaluator> net);

// Throws qnn::Error (with mode_unsupported_reason) when the file cannot run `mode`.
// fp32 on a quantized file runs the float engine on the weights as the file stores them
// (q * scale, i.e. numerically the weight-only model): a quantized file does not keep the
// original FP32 weights. Compare against the FP32 file itself for the full quantization error.
std::unique_ptr<Evaluator> make_evaluator(const Model& m, Mode mode,
                                          ExecSpace space = ExecSpace::OpenMP);

}  // namespace qnn
