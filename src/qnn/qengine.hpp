// The integer engine: the int8 and mixed execution modes of a quantized model
// (docs/quantization.md, "Execution modes" and "Integer network"). Two implementations of
// one numeric contract:
//   QEngine              Kokkos kernels over chunks of edges and atoms, rows batched per
//                        species, int8 layers through the packed int8 GEMM micro-kernels;
//   qengine_reference()  the slow scalar reference: one edge / one atom at a time, plain
//                        integer loops. Every fast path is tested bit for bit against it.
// Results do not depend on the thread count, the chunking, or the order of atoms and edges:
// integer sums are exact, and per-edge force terms and per-atom energies are rounded to a
// fixed-point grid (kForceGrid, kEnergyGrid) so that every later floating-point sum of them
// is exact too (the LAMMPS plugin's MPI reductions included).
#pragma once
#include <memory>
#include <string>

#include "qnn/engine.hpp"
#include "qnn/graph.hpp"
#include "qnn/model.hpp"

namespace qnn {

// Fixed-point grids of the integer modes' outputs (powers of two, so sums are exact in double
// while |sum| < 2^53 * grid: 2^21 eV/Å for a force, 2^29 eV for an energy, 2^21 eV for a
// virial component).
inline constexpr double kForceGrid = 0x1p-32;   // eV/Å, each dE/dx_ij component
inline constexpr double kEnergyGrid = 0x1p-24;  // eV, each atomic energy
inline constexpr double kVirialGrid = 0x1p-32;  // eV, each -x_a g_b term

// How one dense layer runs, resolved from its QuantSpec and the engine mode.
enum class LayerExec {
  Float,     // double activations, the layer's weights as stored (fp32, weight-only)
  Integer,   // integer activations (act_bits) and weights (weight_bits), exact integer GEMM
};

// Receives the input of every layer as the float network computes it (for calibration
// observers). Called from one thread, in edge / atom order.
struct LayerTap {
  virtual ~LayerTap() = default;
  // family 0: embedding net `net` (index into Model::embed: Model::embed_index(centre,
  // neighbour)); 1: fitting net of centre species `net`.
  virtual void layer_input(int family, int net, int layer, const double* x, int n) = 0;
  // G_ij, the output of embedding net `net` (its last layer's out_scale is calibrated on it).
  virtual void embed_output(int net, const double* g, int n) = 0;
};

class QEngine {
 public:
  // integer_all: every layer must be Integer (mode int8); else layers follow their QuantSpec
  // (mode mixed). Throws qnn::Error when the model's plan cannot run so.
  QEngine(const Model& model, bool integer_all, ExecSpace space = ExecSpace::OpenMP);
  ~QEngine();
  QEngine(const QEngine&) = delete;
  QEngine& operator=(const QEngine&) = delete;

  void compute(const NeighborGraph& graph, EvalResult& out, const EvalOptions& opt = {});
  const Model& model() const;
  // e.g. "int8: embed O [int8 int8 int8] ... ; GEMM path avx512vnni"
  std::string describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The scalar reference of the integer engine (same contract, same results bit for bit).
// With integer_all == false and a model without quantization metadata it is a plain double
// evaluation of the float network; `tap`, when given, sees every layer input.
void qengine_reference(const Model& model, bool integer_all, const NeighborGraph& graph,
                       EvalResult& out, const EvalOptions& opt = {}, LayerTap* tap = nullptr);

// The per-layer execution the engine would use (family 0 embed / 1 fit); throws like QEngine.
LayerExec layer_exec(const DenseLayer& layer, bool integer_all, const std::string& name);

}  // namespace qnn
