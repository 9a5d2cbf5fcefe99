// Launchers of the fitting-net kernels (fitting.cu), called by the pipeline (pipeline.cu).
// nvcc only. Every matrix is row-major with an explicit leading dimension; M counts rows
// (centres of one species), all launches are asynchronous on `st`.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace qnn::cuda::detail {

// C (M, N) = A (M, K) · B (K, N) in fp32, each element summed over k = 0 .. K−1 in order with
// separately rounded products and sums (the CPU `sgemm`'s order).
void launch_sgemm(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
                  int ldc, cudaStream_t st);

// C (M, N) int32 = A (M, Kp) int8 · B, B given column by column as Bt (N, Kp) (ldb); Kp and
// lda, ldb multiples of 32, N a multiple of 8, padding zero. Exact, so any summation order.
// mma = true: mma.sync m16n8k32 (sm_80+); false: the SIMT reference kernel.
void launch_igemm(int M, int N, int Kp, const std::int8_t* A, int lda, const std::int8_t* Bt,
                  int ldb, std::int32_t* C, int ldc, bool mma, cudaStream_t st);

// a8 (M, Kp) = round_clamp(x · inv_scale, qmax) for k < K, 0 for K <= k < Kp.
void launch_quantize(int M, int K, int Kp, const float* x, int ldx, float inv_scale, float qmax,
                     std::int8_t* a8, cudaStream_t st);

// xq (M, K) = round_clamp(x · inv_scale, qmax) · scale (the fake-quant input of a > 8-bit layer).
void launch_fake_quant(int M, int K, const float* x, int ldx, float inv_scale, float qmax,
                       float scale, float* xq, int ldq, cudaStream_t st);

struct EpilogueArgs {
  int out = 0, in = 0, ld = 0;  // widths; ld: stride of t and y (>= out)
  int tanh = 1, residual = 0;
  const float* b = nullptr;
  const float* dt = nullptr;
  const float* zscale = nullptr;         // int8: z = float(acc) · zscale + b
  const std::int32_t* acc = nullptr;     // int8 accumulators (M, ld), else nullptr
  const float* x = nullptr;              // layer input (residual)
  int ldx = 0;
  float* t = nullptr;  // in: raw fp32 GEMM sums (float layers); out: tanh(z) (kept for backward)
  float* y = nullptr;  // layer output
};
void launch_forward_epilogue(int M, const EpilogueArgs& a, cudaStream_t st);

// E_r = b_out + Σ_o x[r][o]·w_out[o] in double, onto the 2^-24 eV grid at eatom[atoms[r]].
void launch_energy(int M, const float* x, int ldx, int width, const float* w_out, double b_out,
                   const int* atoms, std::int64_t* eatom, unsigned long long* bad, cudaStream_t st);

// gy (M, width) = w_out (broadcast).
void launch_grad_init(int M, int width, const float* w_out, float* gy, int ldg, cudaStream_t st);

struct BackwardArgs {
  int out = 0, in = 0, tanh = 1, residual = 0;
  const float* dt = nullptr;
  const float* wscale = nullptr;  // int8 layers
  const float* gy = nullptr;      // dE/dy (M, ldg)
  int ldg = 0;
  int ldgx = 0;                   // stride of dE/dx (the output of the layer's backward)
  const float* t = nullptr;  // tanh(z) (M, ldt)
  int ldt = 0;
};
// float layers: gz (M, out) = gy ⊙ (1 − t²) (⊙ dt).
void launch_backward_gz(int M, const BackwardArgs& a, float* gz, int ldz, cudaStream_t st);
// int8 layers: h = gz ⊙ wscale, per row s = max|h| / 127, g8 = round_clamp(h / s, 127),
// padded with zeros to ldq (a multiple of 32); sg[r] = s.
void launch_backward_gz_int8(int M, const BackwardArgs& a, std::int8_t* g8, int ldq, float* sg,
                             cudaStream_t st);
// gx (M, in) with stride ldgx: int8 (acc != nullptr) gx = float(acc) · sg[r]; then the residual's gradient
// (gx += gy, or gy[k] + gy[in + k] for Doubling).
void launch_backward_epilogue(int M, const BackwardArgs& a, const std::int32_t* acc, int ldc,
                              const float* sg, float* gx, cudaStream_t st);

}  // namespace qnn::cuda::detail
