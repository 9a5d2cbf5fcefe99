// Execution modes behind one interface (docs/quantization.md, "Execution modes").
#include "qnn/engine/evaluator.hpp"

#include <sstream>

#include "qnn/engine/compressed_engine.hpp"
#include "qnn/error.hpp"
#include "qnn/kernels/int_gemm.hpp"
#include "qnn/quant/layer_exec.hpp"
#include "qnn/engine/repulsion.hpp"

namespace qnn {

const char* to_string(Mode m) {
  switch (m) {
    case Mode::FP32: return "fp32";
    case Mode::WeightOnly: return "weight-only";
    case Mode::W8A16: return "w8a16";
    case Mode::Int8: return "int8";
    case Mode::Mixed: return "mixed";
    case Mode::FP64: return "fp64";
  }
  return "?";
}

Mode parse_mode(const std::string& s) {
  if (s == "fp32" || s.empty()) return Mode::FP32;
  if (s == "weight-only") return Mode::WeightOnly;
  if (s == "w8a16") return Mode::W8A16;
  if (s == "int8") return Mode::Int8;
  if (s == "mixed") return Mode::Mixed;
  if (s == "fp64") return Mode::FP64;
  throw Error("unknown execution mode '" + s + "'; valid modes: " + mode_names());
}

const char* mode_names() { return "fp32, weight-only, w8a16, int8, mixed, fp64"; }

Mode default_mode(const Model& m) { return parse_mode(m.default_mode); }

const char* to_string(Device d) { return d == Device::Cuda ? "cuda" : "cpu"; }

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::Cpu;
  if (s == "cuda") return Device::Cuda;
  throw Error("unknown device '" + s + "'; valid devices: cpu, cuda");
}

CompressedOptions compressed_options(Mode mode) {
  CompressedOptions o;
  o.fit = mode == Mode::Int8    ? FitPrecision::Int8
          : mode == Mode::W8A16 ? FitPrecision::W8A16
          : mode == Mode::Mixed ? FitPrecision::Mixed
                                : FitPrecision::Float;
  return o;
}

namespace {

bool any_layer(const Model& m, bool (*pred)(const DenseLayer&)) {
  for (const auto* fam : {&m.embed, &m.fit})
    for (const Net& n : *fam)
      for (const DenseLayer& L : n.layers)
        if (pred(L)) return true;
  return false;
}

}  // namespace

std::string mode_unsupported_reason(const Model& m, Mode mode) {
  switch (mode) {
    case Mode::FP32:
    case Mode::FP64:
      return "";
    case Mode::WeightOnly:
      if (!any_layer(m, [](const DenseLayer& L) { return L.quant.weight_bits != 0; }))
        return "mode weight-only needs a file with quantized weights; this file is FP32 (make "
               "one with `qnn quantize`, or run it in mode fp32)";
      return "";
    case Mode::W8A16:
    case Mode::Int8:
    case Mode::Mixed: {
      const bool all = mode != Mode::Mixed;
      if (!any_layer(m, [](const DenseLayer& L) { return L.quant.quantized(); }))
        return std::string("mode ") + to_string(mode) +
               " needs a quantized file; this file is FP32 (make one with `qnn quantize`, or "
               "run it in mode fp32)";
      try {
        // The embedding nets are tabulated from their weights as stored (any precision); only
        // the fitting layers decide whether int8 can run.
        for (int n = 0; n < m.n_embed_nets(); ++n)
          for (std::size_t l = 0; l < m.embed[n].layers.size(); ++l)
            layer_exec(m.embed[n].layers[l], false, m.embed_label(n) + " layer " + std::to_string(l));
        for (int s = 0; s < m.nspecies(); ++s) {
          for (std::size_t l = 0; l < m.fit[s].layers.size(); ++l)
            layer_exec(m.fit[s].layers[l], all,
                       "fit " + m.species[s] + " layer " + std::to_string(l));
        }
      } catch (const Error& e) {
        return e.what();
      }
      return "";
    }
  }
  return "unknown mode";
}

namespace {

// fp32 and weight-only: Engine<float>; fp64: Engine<double>.
template <class Real>
class FloatEvaluator final : public Evaluator {
 public:
  FloatEvaluator(const Model& m, Mode mode, ExecSpace space) : engine_(m, space), mode_(mode) {}
  void compute(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt) override {
    engine_.compute(g, out, opt);
  }
  Mode mode() const override { return mode_; }
  const Model& model() const override { return engine_.model(); }
  std::string describe() const override {
    const std::string engine = sizeof(Real) == sizeof(double) ? "float engine (double precision)"
                                                              : "float engine (single precision)";
    return std::string(to_string(mode_)) + ": " + engine +
           (mode_ == Mode::WeightOnly
                ? ", weights dequantized from the file's integers (q * scale), float activations"
                : "");
  }

 private:
  Engine<Real> engine_;
  Mode mode_;
};

// The network of any mode plus the model's short-range repulsion (repulsion.hpp), which is
// the same double-precision pair term in every mode.
class WithRepulsion final : public Evaluator {
 public:
  explicit WithRepulsion(std::unique_ptr<Evaluator> net) : net_(std::move(net)), rep_(net_->model()) {}
  void compute(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt) override {
    net_->compute(g, out, opt);
    rep_.add(g, out, opt);
  }
  Mode mode() const override { return net_->mode(); }
  const Model& model() const override { return net_->model(); }
  std::string describe() const override {
    const Repulsion& R = net_->model().repulsion;
    std::ostringstream o;
    o << net_->describe() << "; + ZBL repulsion on";
    for (const auto& p : R.pairs)
      o << " " << net_->model().species[static_cast<std::size_t>(p[0])] << "-"
        << net_->model().species[static_cast<std::size_t>(p[1])];
    o << " (" << R.r_inner << "-" << R.r_outer << " A)";
    return o.str();
  }

 private:
  std::unique_ptr<Evaluator> net_;
  RepulsionTerm rep_;
};

}  // namespace

std::unique_ptr<Evaluator> make_evaluator(const Model& m, Mode mode, ExecSpace space) {
  const std::string why = mode_unsupported_reason(m, mode);
  if (!why.empty()) throw Error(why);
  std::unique_ptr<Evaluator> net;
  if (mode == Mode::FP64) net = std::make_unique<FloatEvaluator<double>>(m, mode, space);
  else  // engine v2: fp32, weight-only, w8a16, int8 and mixed, all with the tabulated embedding
    net = std::make_unique<EngineEvaluator<CompressedEngine>>("compressed engine", mode, m,
                                                              compressed_options(mode), space);
  return with_repulsion(std::move(net));
}

std::unique_ptr<Evaluator> with_repulsion(std::unique_ptr<Evaluator> net) {
  if (!net->model().repulsion.enabled()) return net;
  return std::make_unique<WithRepulsion>(std::move(net));
}

}  // namespace qnn
