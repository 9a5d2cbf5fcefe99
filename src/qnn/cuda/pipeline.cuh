// Private interface between the host side of the CUDA engine (cuda_engine.cpp, compiled by the
// C++ compiler: it packs the model with qnn_core) and its device side (pipeline.cu,
// fitting.cu, compiled by nvcc without any qnn_core header but error.hpp). Plain C++ only: no
// CUDA types, so both compilers read it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qnn::cuda::detail {

// Row stride unit of every activation buffer and the K tile of the int8 mma (m16n8k32).
inline constexpr int kPad = 32;
inline int pad32(int n) { return (n + kPad - 1) / kPad * kPad; }
inline int pad8(int n) { return (n + 7) / 8 * 8; }

enum LayerMode : int {
  kLayerFloat = 0,      // fp32 GEMM on the weights as stored (fp32, weight-only)
  kLayerFakeQuant = 1,  // > 8-bit integer layer in float: input rounded to its activation grid
  kLayerInt8 = 2,       // w8a8
};

// One hidden fitting layer, packed as CompressedEngine packs it (same float and int8 values).
struct LayerData {
  int in = 0, out = 0;
  int residual = 0;  // static_cast<int>(Residual): None, Identity, Doubling, Timestep
  int tanh = 1;
  int mode = kLayerFloat;
  float act_scale = 0.0f, inv_act_scale = 0.0f, qmax_a = 0.0f;
  std::vector<float> w;   // (in, out) row-major: forward B
  std::vector<float> wt;  // (out, in) row-major: backward B (Wᵀ)
  std::vector<float> b;   // (out)
  std::vector<float> dt;  // (out) Timestep only, else empty
  // int8: per-output scales and the weights twice, as the mma's column-major B operand
  // (rows n, k contiguous, zero padded to pad8 rows and pad32 columns):
  std::vector<float> zscale, wscale;  // (out) act_scale * weight_scale[o], weight_scale[o]
  std::vector<std::int8_t> wq_fwd;    // (pad8(out), pad32(in)): Wᵀ, for x·W
  std::vector<std::int8_t> wq_bwd;    // (pad8(in), pad32(out)): W, for gz·Wᵀ
};

struct NetData {
  std::vector<LayerData> layers;
  std::vector<float> w_out;  // (last width)
  double b_out = 0.0;        // output bias + energy bias of the species
};

struct ZoneData {
  double lo, inv_h1, mid, inv_h2;
  int n1, n2;
};

struct ModelData {
  int S = 0, m1 = 0, m1p = 0, m2 = 0, k0 = 0;
  double rc = 0, rs = 0, inv_nc = 0, s_fast = 0, t_scale = 0;
  bool deepmd = false;
  std::vector<double> mean_s, inv_std_s, inv_std_r;  // (S*S)
  std::vector<ZoneData> zones;                       // (S)
  std::vector<float> coef;             // every table: (ntables, n1+n2, 6, m1p)
  std::size_t coef_centre_stride = 0;  // floats between the tables of centre species c and c+1
  std::vector<int> sel;                // (S) env_mat "deepmd"
  std::vector<std::int64_t> pad64;     // (S*S, m1p) env_mat "deepmd"
  std::vector<NetData> nets;           // (S)
};

// The graph of one call, with the centres grouped by species (rows of the fitting GEMMs).
struct GraphView {
  int nlocal = 0, ntotal = 0, nedges = 0;
  const int* offsets = nullptr;    // (nlocal + 1)
  const int* neighbors = nullptr;  // (nedges)
  const double* pos = nullptr;     // (ntotal, 3)
  const int* species = nullptr;    // (ntotal)
  const int* order = nullptr;      // (nlocal) row r holds centre order[r]
  const int* row_start = nullptr;  // (S + 1) rows of species c: [row_start[c], row_start[c+1])
};

struct Results {
  std::vector<std::int64_t> force;  // (ntotal, 3) kV2ForceGrid units
  std::vector<std::int64_t> eatom;  // (nlocal) kV2EnergyGrid units
  std::vector<std::int64_t> vatom;  // (ntotal, 6) kV2VirialGrid units, when asked
  std::int64_t virial[6] = {0, 0, 0, 0, 0, 0};
  double min_distance = 1e300;
  int bad = 0;
  // With timing: device seconds of the descriptor forward, the fitting net (both passes) and
  // the descriptor backward, and the wall seconds of the whole call.
  double phase_s[3] = {0, 0, 0};
  double total_s = 0;
};

class Pipeline {
 public:
  Pipeline(const ModelData& model, int device);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;
  void run(const GraphView& g, bool atom_virial, bool timing, Results& out);
  std::string describe() const;  // device name, compute capability, int8 GEMM path

  struct State;

 private:
  std::unique_ptr<State> s_;
};

int device_count();
bool device_available(std::string* why);

// Test hook (tests/test_cuda.cpp): C (M, N) int32 = A (M, K) int8 · B where Bt (N, K) holds B
// column by column, all row-major and unpadded; through the mma.sync kernel (mma = true) or the
// plain SIMT reference kernel. Synchronous; throws qnn::Error on a CUDA error.
void gemm_s8s8s32_test(int M, int N, int K, const std::int8_t* A, const std::int8_t* Bt,
                       std::int32_t* C, bool mma);

}  // namespace qnn::cuda::detail
