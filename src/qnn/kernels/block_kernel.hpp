// Internal interface between the compressed engine (compressed_engine.cpp) and its per-block
// kernel, compiled once per instruction set (block_kernel_<isa>.cpp from
// block_kernel_impl.hpp) and picked at run time. Plain data only.
#pragma once
#include <cstddef>
#include <cstdint>

#include "qnn/kernels/int16_gemm.hpp"
#include "qnn/kernels/int_gemm.hpp"

namespace qnn::v2 {

inline constexpr int kBlockAtoms = 32;  // centres per block (GEMM rows)
inline constexpr int kColPad = 64;      // activation/weight widths padded to this

inline int pad_cols(int n) { return (n + kColPad - 1) / kColPad * kColPad; }
// Where element (k, n) of a (rows, pad_cols(n)) matrix lies in its panel-packed layout.
inline std::size_t packed_panel_index(int rows, int k, int n) {
  return static_cast<std::size_t>(n / kColPad) * kColPad * rows +
         static_cast<std::size_t>(k) * kColPad + n % kColPad;
}

// One hidden layer of a fitting net: y = residual(x, tanh(x·W + b)).
struct FitLayer {
  int in = 0, out = 0;      // true widths
  int in_p = 0, out_p = 0;  // padded (kColPad) widths: strides of activations
  int residual = 0;         // static_cast<int>(Residual)
  int tanh = 1;
  // W (in, out_p) and Wᵀ (out, in_p), zero-padded columns, each in panels of kColPad columns:
  // element (k, n) at (n / kColPad)·kColPad·rows + k·kColPad + n % kColPad
  // (packed_panel_index), so that the GEMM reads each panel contiguously.
  const float* w = nullptr;
  const float* wt = nullptr;
  const float* b = nullptr;   // (out_p)
  const float* dt = nullptr;  // (out_p) Timestep residual, else nullptr
  // int8 (w8a8) execution, when pk != nullptr
  const igemm::PackedB* pk = nullptr;   // W (in, out) as int8
  const igemm::PackedB* pkt = nullptr;  // W^T (out, in) as int8
  float act_scale = 0.0f;               // static input scale (int8 and fake-quant layers)
  float inv_act_scale = 0.0f;
  float qmax_a = 0.0f;                  // 2^(act_bits-1) - 1; 0: float input
  bool fake_quant = false;              // float layer whose input is rounded to the act grid
  // w8a16 execution (int8 weights widened to int16, int16 activations), when pk16 != nullptr;
  // act_scale, qmax_a, zscale and wscale as for int8, on the int16 grid
  const igemm::PackedB16* pk16 = nullptr;   // W (in, out)
  const igemm::PackedB16* pkt16 = nullptr;  // W^T (out, in)
  float qmax_g = 0.0f;                      // largest |int16| of the backward's input
  const float* zscale = nullptr;  // (out_p) act_scale * weight_scale[o]
  const float* wscale = nullptr;  // (out_p) weight_scale[o]
};

struct FitNet {
  int nlayers = 0;
  const FitLayer* layers = nullptr;
  const float* w_out = nullptr;  // (last width) output layer weights
  double b_out = 0.0;            // output layer bias + energy bias of the species
};

struct TableZone {
  double lo, inv_h1, mid, inv_h2;
  int n1, n2;
};

struct ModelArgs {
  igemm::Isa gemm_isa = igemm::Isa::kScalar;  // the integer GEMMs' path
  int S = 0, m1 = 0, m1p = 0, m2 = 0;
  int k0 = 0, k0_p = 0;  // descriptor width M1*M2 and its padded stride
  double rc = 0, rs = 0, inv_nc = 0;
  const double* mean_s = nullptr;  // (S*S) [centre][neighbour]
  const double* inv_std_s = nullptr;
  const double* inv_std_r = nullptr;
  const TableZone* zones = nullptr;  // (S) per neighbour species
  const float* coef = nullptr;       // (S, n1+n2, 6, m1p), neighbour species a at a*(n1+n2)*6*m1p
  // Pair embedding nets (type_one_side false): the tables of centre species c start at
  // coef + c*coef_centre_stride (the kernel of a block of species c offsets coef); 0: one side.
  std::size_t coef_centre_stride = 0;
  double s_fast = 0;        // edges with s <= s_fast take the vectorised int32 path
  double t_scale = 0;       // fixed-point scale of the descriptor terms G·R̂
  // env_mat "deepmd" (model.hpp): R̂₀ = ŝ, and each empty slot of neighbour species a adds
  // pad64[(c·S + a)·m1p + m] (G_a(ŝ₀)[m]·ŝ₀ on the t_scale grid) to column 0 of T.
  bool deepmd = false;
  const int* sel = nullptr;             // (S)
  const std::int64_t* pad64 = nullptr;  // (S*S, m1p)
  const FitNet* fit = nullptr;  // (S)
  int max_width_p = 0;      // largest padded activation width of any fitting layer (k0_p incl.)
  int max_out_p = 0;        // largest padded hidden width
  int max_layers = 0;
};

struct GraphArgs {
  int nlocal = 0, ntotal = 0;
  const int* offsets = nullptr;
  const int* neighbors = nullptr;
  const double* pos = nullptr;
  const int* species = nullptr;
};

struct OutArgs {
  std::int64_t* force = nullptr;   // (ntotal, 3), kV2ForceGrid units
  std::int64_t* vatom = nullptr;   // (ntotal, 6) or nullptr
  std::int64_t* eatom = nullptr;   // (nlocal), kV2EnergyGrid units
  bool atomic = false;             // more than one thread: scatter with atomic adds
  bool timing = false;             // fill BlockResult::phase_s (qnn bench)
};

// Per-thread scratch: sizes from scratch_floats(); all pointers 64-byte aligned.
std::size_t scratch_bytes(const ModelArgs& m);

struct BlockResult {
  std::int64_t virial[6] = {0, 0, 0, 0, 0, 0};
  double min_distance = 1e300;  // smallest active r seen
  int bad = 0;                  // a non-finite or out-of-grid value was produced
  // With OutArgs::timing: seconds in the descriptor forward (geometry, table, T, D), the
  // fitting net forward and backward, and the descriptor backward (table derivative, chain
  // rule, force and virial scatter).
  double phase_s[3] = {0, 0, 0};
};

// Processes centres atoms[0..n) (all of species c, n <= kBlockAtoms).
using BlockFn = void (*)(const ModelArgs&, const GraphArgs&, const OutArgs&, const int* atoms,
                         int n, int c, void* scratch, BlockResult& res);

void block_generic(const ModelArgs&, const GraphArgs&, const OutArgs&, const int*, int, int,
                   void*, BlockResult&);
void block_avx2(const ModelArgs&, const GraphArgs&, const OutArgs&, const int*, int, int, void*,
                BlockResult&);
void block_avx512(const ModelArgs&, const GraphArgs&, const OutArgs&, const int*, int, int,
                  void*, BlockResult&);
bool avx2_compiled();
bool avx512_compiled();
// Lane-FMAs per second of each path's vectors on one thread (fma_peak in block_kernel_impl.hpp).
double fma_peak_generic();
double fma_peak_avx2();
double fma_peak_avx512();

// The fp32 GEMM of the fitting layers (block_kernel_impl.hpp, `sgemm`), exposed so that
// bench/bench_fit_gemm.cpp can measure it against oneDNN, OpenBLAS and libxsmm on the real
// shapes: C (M, Np) = A (M, K) · B (K, Np), row-major; M a multiple of 4, Np of 64 (avx512) or
// 32 (avx2). Throws std::logic_error when the path was not compiled in.
void sgemm_avx512(int M, int Np, int K, const float* A, int lda, const float* B, int ldb, float* C,
                  int ldc);
void sgemm_avx2(int M, int Np, int K, const float* A, int lda, const float* B, int ldb, float* C,
                int ldc);

}  // namespace qnn::v2
