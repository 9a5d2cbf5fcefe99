// Engine v2: the compressed se_e2_a pipeline (docs/model.md, "Compressed embedding";
// docs/quantization.md, "Execution modes").
//
//   per block of up to kBlockAtoms centres of one species (one thread each):
//     edges -> geometry -> tabulated G fused into T = Σ G ⊗ R̂  (fixed-point sum, G never stored)
//     T -> D -> fitting net as blocked GEMMs (fp32, or w8a8 int8 per layer) -> E_i
//     backward through the fitting net -> dE/dT -> per edge: G, dG/dŝ again, dE/dx_ij
//     dE/dx_ij rounded to a fixed-point grid, summed exactly into forces and virials
//
// Every order-dependent sum is an integer sum, so results are bitwise independent of the
// thread count, the order of atoms and edges, and (in LAMMPS) the MPI decomposition.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qnn/engine/exact_engine.hpp"
#include "qnn/engine/embedding_table.hpp"
#include "qnn/kernels/int_gemm.hpp"  // igemm::Isa
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"

namespace qnn {

// Fixed-point grids of the outputs (powers of two; see docs/model.md, "Determinism").
inline constexpr double kV2ForceGrid = 0x1p-32;   // eV/Å, each dE/dx_ij component
inline constexpr double kV2EnergyGrid = 0x1p-24;  // eV, each atomic energy
inline constexpr double kV2VirialGrid = 0x1p-32;  // eV, each −x_a g_b term

// How the fitting net's hidden layers run.
enum class FitPrecision {
  Float,  // fp32 GEMMs on the weights as the file stores them (fp32 / weight-only files)
  Int8,   // every hidden layer w8a8 (static activation scale, per-channel weight scales)
  W8A16,  // every hidden layer int8 weights, int16 activations (the int8 file's range, 16 bits)
  Mixed,  // per layer, as the file's plan says (8-bit layers int8, others float)
};

struct CompressedOptions {
  FitPrecision fit = FitPrecision::Float;
  TableSpec table;
  // Kernel paths (tests run every compiled path in one process; benchmarks compare them).
  // float_kernel: the block kernel, "avx512", "avx2" or "generic"; empty: from $QNN_ISA and
  // the CPU (the default). gemm_isa: the integer GEMMs' path (int_gemm.hpp, int16_gemm.hpp);
  // empty: igemm::active_isa(). A path this build or CPU lacks is refused with qnn::Error.
  std::string float_kernel;
  std::optional<igemm::Isa> gemm_isa;
};

class CompressedEngine {
 public:
  CompressedEngine(const Model& model, const CompressedOptions& opt = {},
                   ExecSpace space = ExecSpace::OpenMP);
  ~CompressedEngine();
  CompressedEngine(const CompressedEngine&) = delete;
  CompressedEngine& operator=(const CompressedEngine&) = delete;

  // Same contract as Engine::compute: forces on local and ghost atoms (not folded).
  void compute(const NeighborGraph& graph, EvalResult& out, const EvalOptions& opt = {});
  const Model& model() const;
  const EmbeddingTable& table() const;
  // e.g. "tabulated embedding (...); fitting O [int8 int8 int8 fp32] ...; kernels avx512"
  std::string describe() const;
  // The float kernel path in use ("avx512", "avx2", "generic") and its measured peak on one
  // thread in lane-FMAs per second (qnn bench's descriptor roofline; runs about 20 ms).
  const std::string& kernel_name() const;
  double kernel_fma_peak() const;

  struct Impl;  // compressed_engine.cpp

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace qnn
