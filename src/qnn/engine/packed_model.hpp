// Engine v2's model, checked and packed once for every back end (docs/model.md, "Compressed
// embedding" and "Determinism"; docs/quantization.md, "Execution modes"): the embedding table,
// the statistics as reciprocals, the fixed-point scale of the descriptor terms, the empty-slot
// terms of env_mat "deepmd", and each hidden fitting layer in fp32 (W and Wᵀ) and, where it
// runs w8a8, as int8 weights with their per-channel scales. CompressedEngine
// (compressed_engine.cpp) copies this into its labelled Kokkos Views, with the padding and
// packed int8 panels of the CPU block kernel; the CUDA engine (src/qnn/cuda/cuda_engine.cpp)
// lays it out for its kernels and uploads it. Every value here is what both read, so the two
// engines run the same numbers.
//
// Plain host data: std::vector, no Kokkos, unpadded (row-major, true widths).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "qnn/engine/compressed_engine.hpp"  // CompressedOptions, FitPrecision
#include "qnn/engine/embedding_table.hpp"
#include "qnn/format/model.hpp"

namespace qnn {

// One hidden fitting layer.
struct PackedLayer {
  enum Kind : int {
    Float = 0,      // fp32 GEMM on the weights as the file stores them (fp32, weight-only)
    FakeQuant = 1,  // integer layer wider than 8 bits, run in float on its activation grid
    Int8 = 2,       // w8a8
    W8A16 = 3,      // int8 weights, int16 activations (mode w8a16)
  };
  int in = 0, out = 0;
  int residual = 0;  // static_cast<int>(Residual)
  int tanh = 1;      // activation tanh (1) or linear (0)
  Kind kind = Float;
  // FakeQuant and Int8: the static input scale, its reciprocal, 2^(act_bits-1) - 1.
  float act_scale = 0.0f, inv_act_scale = 0.0f, qmax_a = 0.0f;
  std::vector<float> w;   // (in, out) row-major
  std::vector<float> wt;  // (out, in) row-major: Wᵀ, for the backward pass
  std::vector<float> b;   // (out)
  std::vector<float> dt;  // (out) Residual::Timestep only, else empty
  // Int8 and W8A16 only (else empty): act_scale * weight_scale[o] (Int8), weight_scale[o],
  // and the weights as exact multiples of their scales, (in, out) row-major. W8A16 scales its
  // int16 activations per row (dynamic, like the backward's gradients): qmax_a =
  // igemm::max_abs_a16(in) and qmax_g = igemm::max_abs_a16(out) are the grids' largest values.
  std::vector<float> zscale, wscale;  // (out)
  std::vector<std::int8_t> wq;        // (in, out)
  float qmax_g = 0.0f;                // W8A16: largest |int16| of the backward's input
};

struct PackedNet {
  std::vector<PackedLayer> layers;  // hidden layers
  std::vector<float> w_out;         // (last hidden width) output layer weights
  double b_out = 0.0;               // output bias + energy bias of the species
  std::string label;                // per layer, e.g. "int8 int8 fp32 fp64-out"
};

struct PackedZone {
  double lo, inv_h1, mid, inv_h2;
  int n1, n2;
};

struct PackedModel {
  EmbeddingTable table;
  int S = 0;             // species
  int m1 = 0, m1p = 0;   // last embedding width, the table's padded row stride
  int m2 = 0, k0 = 0;    // axis_neuron, descriptor width m1 * m2
  double rc = 0, rs = 0, inv_nc = 0;
  double s_fast = 0;     // edges with s <= s_fast: the table's fine zone (r >= TableSpec::r_fine)
  double t_scale = 0;    // fixed-point scale of the descriptor terms G·R̂ (a power of two)
  bool deepmd = false;   // env_mat "deepmd"
  std::vector<double> mean_s, inv_std_s, inv_std_r;  // (S*S) [centre][neighbour]
  std::vector<PackedZone> zones;                     // (S) per neighbour species
  // The table's coefficients: table.coefficients(0, 0), ncoef() floats; the tables of centre
  // species c start coef_centre_stride * c floats further (0 for type_one_side models).
  std::size_t coef_centre_stride = 0;
  std::vector<int> sel;             // (S) env_mat "deepmd", else empty
  std::vector<std::int64_t> pad64;  // (S*S, m1p) env_mat "deepmd": empty-slot terms on t_scale
  std::vector<PackedNet> nets;      // (S)

  const float* coef() const { return table.coefficients(0, 0); }
  std::size_t ncoef() const {
    return static_cast<std::size_t>(table.ntables()) * table.intervals() * 6 * table.m1_padded();
  }
};

// Checks `m` for engine v2 and packs it; throws qnn::Error ("model: ...") on anything either
// engine would refuse: inconsistent shapes or statistics, a fitting net that does not end in
// one linear output, a residual that does not fit its layer, scales that are not positive and
// finite, int8 weights that are not 8-bit multiples of their scales, a descriptor range that
// is not finite. Which fitting layers run int8 follows opt.fit (layer_exec of quant/).
PackedModel pack_model(const Model& m, const CompressedOptions& opt);

}  // namespace qnn
