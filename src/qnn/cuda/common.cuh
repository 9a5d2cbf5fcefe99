// Device helpers shared by the CUDA kernels (pipeline.cu, fitting.cu): the scalar arithmetic
// of the generic CPU block kernel (src/qnn/kernels/block_kernel_impl.hpp with QNN_VW 4),
// written out with explicit round-to-nearest intrinsics where the CPU rounds each operation
// separately, and CUDA error checks. nvcc only.
#pragma once
#include <cstdint>
#include <string>

#include <cuda_runtime.h>

#include "qnn/error.hpp"

// The whole of src/qnn/cuda is compiled with -fmad=false (no multiply-add contraction, in
// float or double), as the generic CPU kernel is compiled with -ffp-contract=off; CMake
// defines QNN_CUDA_NO_FMAD together with the flag. Without it the double-precision geometry
// and force arithmetic, written as plain expressions, could be contracted into FMAs.
#ifndef QNN_CUDA_NO_FMAD
#error "src/qnn/cuda must be compiled with -fmad=false and -DQNN_CUDA_NO_FMAD (see CMakeLists.txt)"
#endif

#define QNN_CUDA_CHECK(expr)                                                                 \
  do {                                                                                       \
    const cudaError_t qnn_err_ = (expr);                                                     \
    if (qnn_err_ != cudaSuccess)                                                             \
      throw ::qnn::Error(std::string("cuda: ") + #expr + ": " + cudaGetErrorString(qnn_err_)); \
  } while (0)
#define QNN_CUDA_LAUNCH_CHECK() QNN_CUDA_CHECK(cudaGetLastError())

namespace qnn::cuda::detail {

constexpr int kResNone = 0, kResIdentity = 1, kResDoubling = 2, kResTimestep = 3;
constexpr double kMaxGridValue = 0x1p61;  // block_kernel_impl.hpp
constexpr double kMinDistance = 1e-4;     // kMinPairDistance (graph.hpp)

// float ops, each rounded to nearest even (never fused)
__device__ __forceinline__ float fmul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float fadd(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float fsub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float fdiv(float a, float b) { return __fdiv_rn(a, b); }
// a * b + c as two roundings (the CPU's `p * f + c` under -ffp-contract=off)
__device__ __forceinline__ float fmuladd(float a, float b, float c) { return fadd(fmul(a, b), c); }

// tanh of block_kernel_impl.hpp `vtanh`, one lane: sign(x) (1 − e)/(1 + e), e = 2^y,
// y = −2 log2(e) |x| clamped at |x| = 9, 2^f by a degree-7 polynomial, 2^n from the exponent.
__device__ __forceinline__ float qnn_tanh(float x) {
  const unsigned sign = __float_as_uint(x) & 0x80000000u;
  float ax = __uint_as_float(__float_as_uint(x) & 0x7fffffffu);
  ax = ax < 9.0f ? ax : 9.0f;
  const float y = fmul(ax, -2.8853900817779268f);
  const int n = __float2int_rz(fsub(y, 0.5f));  // cvttps2dq: truncation toward zero
  const float f = fsub(y, __int2float_rn(n));
  const float l1 = 0.6931471805599453f, l2 = 0.2402265069591007f, l3 = 0.05550410866482158f,
              l4 = 0.009618129107628477f, l5 = 0.0013333558146428443f,
              l6 = 0.00015403530393381608f, l7 = 1.525273380405984e-05f;
  float p = l7;
  p = fmuladd(p, f, l6);
  p = fmuladd(p, f, l5);
  p = fmuladd(p, f, l4);
  p = fmuladd(p, f, l3);
  p = fmuladd(p, f, l2);
  p = fmuladd(p, f, l1);
  p = fmuladd(p, f, 1.0f);
  const int bits = (n + 127) << 23;
  const float e = fmul(p, __int_as_float(bits));
  const float t = fdiv(fsub(1.0f, e), fadd(1.0f, e));
  return __uint_as_float(__float_as_uint(t) | sign);
}

// round_clamp of block_kernel_impl.hpp: clamp to ±qmax, round half away from zero.
__device__ __forceinline__ float round_clamp(float v, float qmax) {
  v = v > qmax ? qmax : (v < -qmax ? -qmax : v);
  return __int2float_rn(__float2int_rz(fadd(v, v >= 0.0f ? 0.5f : -0.5f)));
}

// Onto a fixed-point grid: nearest (ties to even, std::nearbyint), flagging out-of-range.
__device__ __forceinline__ std::int64_t to_grid(double v, double inv_grid, int* bad) {
  const double q = rint(v * inv_grid);
  if (!(fabs(q) < kMaxGridValue)) {
    *bad = 1;
    return 0;
  }
  return static_cast<std::int64_t>(q);
}

__device__ __forceinline__ void atomic_add64(std::int64_t* p, std::int64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

}  // namespace qnn::cuda::detail
