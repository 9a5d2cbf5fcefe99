// Engine v2 on an NVIDIA GPU: the compressed se_e2_a pipeline of CompressedEngine
// (src/qnn/engine/compressed_engine.hpp; docs/model.md "Compressed embedding" and
// "Determinism") as native CUDA kernels (src/qnn/cuda/*.cu). Built with -DQNN_ENABLE_CUDA=ON,
// which defines QNN_HAVE_CUDA=1 for the targets that link qnn_cuda.
//
// Host-only header: no CUDA or Kokkos header is included, so any C++ translation unit may use
// it. The device code mirrors the generic CPU block kernel (block_kernel_generic.cpp) step by
// step and sums every order-dependent quantity in int64 on the same fixed-point grids
// (kV2ForceGrid, kV2EnergyGrid, kV2VirialGrid), so its results do not depend on the launch
// configuration or on the order of atomics. Which steps are meant to be bitwise equal to the
// CPU generic path, and why, is written at the top of src/qnn/cuda/pipeline.cu; that equality
// is a design goal checked by tests/test_cuda.cpp on a device, not something this header can
// promise.
//
// Not implemented (throw qnn::Error "... not implemented ..."): nothing in the modes fp32,
// weight-only, int8 and mixed. The int8 GEMMs use mma.sync s8 tiles (sm_80+); a cuBLASLt
// IMMA path is a TODO (src/qnn/cuda/fitting.cu).
#pragma once
#include <memory>
#include <string>

#include "qnn/engine/compressed_engine.hpp"  // CompressedOptions, FitPrecision, grids
#include "qnn/engine/evaluator.hpp"          // Evaluator, Mode
#include "qnn/engine/exact_engine.hpp"       // EvalOptions, EvalResult
#include "qnn/format/model.hpp"
#include "qnn/graph/graph.hpp"

namespace qnn::cuda {

// Number of CUDA devices the runtime sees (0 when there is no driver or no device; never throws).
int device_count();
// True when a device this build has kernels for (sm_80 or newer) can be used; otherwise false,
// with the reason in *why (no driver, no device, compute capability too old, ...).
bool device_available(std::string* why = nullptr);

class CudaEngine {
 public:
  // Packs the model exactly as CompressedEngine does (same table, same fixed-point scale, same
  // int8 weights) and uploads it to `device` (a CUDA device ordinal). Throws qnn::Error on a
  // model CompressedEngine refuses, or when no usable device is present.
  explicit CudaEngine(const Model& model, const CompressedOptions& opt = {}, int device = 0);
  ~CudaEngine();
  CudaEngine(const CudaEngine&) = delete;
  CudaEngine& operator=(const CudaEngine&) = delete;

  // Same contract as CompressedEngine::compute: forces on local and ghost atoms (not folded).
  // Device buffers grow only and are reused; per call one host-to-device copy of the positions
  // (plus one of the topology when offsets, neighbours, species or the atom counts changed)
  // and one device-to-host copy of the fixed-point results. Not thread-safe.
  void compute(const NeighborGraph& graph, EvalResult& out, const EvalOptions& opt = {});
  const Model& model() const;
  // e.g. "tabulated embedding (...); fitting O [int8 int8 fp32-out]; cuda NVIDIA H200 (sm_90),
  // int8 mma.sync; fixed-point sums"
  std::string describe() const;

  struct Impl;  // cuda_engine.cpp

 private:
  std::unique_ptr<Impl> impl_;
};

// The Evaluator of qnn::make_evaluator (evaluator.hpp) on CUDA device `device`: a CudaEngine
// in mode fp32, weight-only, int8 or mixed, plus the model's repulsion (evaluated on the host,
// as on the CPU). Throws qnn::Error when the file cannot run `mode` (mode_unsupported_reason),
// for mode fp64 (CPU only), and when the device is not usable.
std::unique_ptr<Evaluator> make_cuda_evaluator(const Model& m, Mode mode, int device = 0);

}  // namespace qnn::cuda
