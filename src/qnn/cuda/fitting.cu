// Fitting-net kernels of the CUDA engine: the fp32 GEMM, the int8 (w8a8) GEMM and the fused
// element-wise epilogues of the forward and backward passes, mirroring the fitting-net part of
// run_block_tables in src/qnn/kernels/block_kernel_impl.hpp (generic path) operation by
// operation. See pipeline.cu for the bitwise-equality argument.
//
// int8 GEMM: mma.sync.aligned.m16n8k32 s8·s8 → s32 tiles (sm_80+), one warp per 16×8 output
// tile, fragments loaded straight from global memory (32-bit loads along k).
// TODO: a cuBLASLt int8 IMMA path (cublasLtMatmul with CUDA_R_8I inputs, CUBLAS_COMPUTE_32I)
// as an alternative for large blocks; it is not implemented (nothing selects it).
// TODO: the fp32 GEMM is a plain 16×16 shared-memory tiled kernel, chosen over cuBLAS because
// its per-element summation order is the CPU's (k sequential); it is not tuned.
#include <algorithm>
#include <vector>

#include "qnn/cuda/common.cuh"
#include "qnn/cuda/kernels.cuh"
#include "qnn/cuda/pipeline.cuh"

namespace qnn::cuda::detail {
namespace {

constexpr int kTile = 16;

__global__ void sgemm_kernel(int M, int N, int K, const float* __restrict__ A, int lda,
                             const float* __restrict__ B, int ldb, float* __restrict__ C,
                             int ldc) {
  __shared__ float As[kTile][kTile + 1];
  __shared__ float Bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int col = blockIdx.x * kTile + tx;
  for (int mt = blockIdx.y; mt * kTile < M; mt += gridDim.y) {  // uniform over the block
    const int row = mt * kTile + ty;
    float acc = 0.0f;  // the CPU's accumulator starts at +0 too
    for (int k0 = 0; k0 < K; k0 += kTile) {
      As[ty][tx] = (row < M && k0 + tx < K) ? A[static_cast<std::size_t>(row) * lda + k0 + tx] : 0.0f;
      Bs[ty][tx] = (k0 + ty < K && col < N) ? B[static_cast<std::size_t>(k0 + ty) * ldb + col] : 0.0f;
      __syncthreads();
      const int kn = min(kTile, K - k0);  // exactly k < K: no padded products enter the sum
      for (int kk = 0; kk < kn; ++kk) acc = fadd(acc, fmul(As[ty][kk], Bs[kk][tx]));
      __syncthreads();
    }
    if (row < M && col < N) C[static_cast<std::size_t>(row) * ldc + col] = acc;
  }
}

__device__ __forceinline__ unsigned ld32(const std::int8_t* p) {
  return *reinterpret_cast<const unsigned*>(p);
}

// One warp per 16×8 tile of C; four warps per block along N. Fragment layout of
// mma.m16n8k32 .s8 (PTX ISA), g = lane / 4, q = lane % 4:
//   A (16×32, row): a0 = A[g][4q..4q+3], a1 = A[g+8][4q..], a2 = A[g][16+4q..], a3 = A[g+8][16+4q..]
//   B (32×8, col):  b0 = B[4q..4q+3][g], b1 = B[16+4q..][g]
//   C (16×8):       c0 = C[g][2q], c1 = C[g][2q+1], c2 = C[g+8][2q], c3 = C[g+8][2q+1]
__global__ void igemm_mma_kernel(int M, int N, int Kp, const std::int8_t* __restrict__ A, int lda,
                                 const std::int8_t* __restrict__ Bt, int ldb,
                                 std::int32_t* __restrict__ C, int ldc) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n0 = (blockIdx.x * 4 + warp) * 8;
  if (n0 >= N) return;  // uniform over the warp
  for (int m0 = blockIdx.y * 16; m0 < M; m0 += gridDim.y * 16) {
    const int g = lane >> 2, q = lane & 3;
    const int ra = m0 + g, rb = m0 + g + 8;
    const std::int8_t* pa = A + static_cast<std::size_t>(ra) * lda + 4 * q;
    const std::int8_t* pb = A + static_cast<std::size_t>(rb) * lda + 4 * q;
    const std::int8_t* pw = Bt + static_cast<std::size_t>(n0 + g) * ldb + 4 * q;
    int c0 = 0, c1 = 0, c2 = 0, c3 = 0;
    for (int k0 = 0; k0 < Kp; k0 += 32) {
      const unsigned a0 = ra < M ? ld32(pa + k0) : 0u;
      const unsigned a1 = rb < M ? ld32(pb + k0) : 0u;
      const unsigned a2 = ra < M ? ld32(pa + k0 + 16) : 0u;
      const unsigned a3 = rb < M ? ld32(pb + k0 + 16) : 0u;
      const unsigned b0 = ld32(pw + k0), b1 = ld32(pw + k0 + 16);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
      asm volatile(
          "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
          "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
          : "+r"(c0), "+r"(c1), "+r"(c2), "+r"(c3)
          : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
      (void)a0; (void)a1; (void)a2; (void)a3; (void)b0; (void)b1;
      __trap();  // not built for this architecture (CMake builds sm_80 and sm_90 only)
#endif
    }
    const int col = n0 + 2 * q;
    if (ra < M) {
      C[static_cast<std::size_t>(ra) * ldc + col] = c0;
      C[static_cast<std::size_t>(ra) * ldc + col + 1] = c1;
    }
    if (rb < M) {
      C[static_cast<std::size_t>(rb) * ldc + col] = c2;
      C[static_cast<std::size_t>(rb) * ldc + col + 1] = c3;
    }
  }
}

// Reference: one thread per element, dp4a-free plain int32 sum.
__global__ void igemm_simt_kernel(int M, int N, int Kp, const std::int8_t* __restrict__ A, int lda,
                                  const std::int8_t* __restrict__ Bt, int ldb,
                                  std::int32_t* __restrict__ C, int ldc) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  for (int r = blockIdx.y; r < M; r += gridDim.y) {
    const std::int8_t* a = A + static_cast<std::size_t>(r) * lda;
    const std::int8_t* b = Bt + static_cast<std::size_t>(n) * ldb;
    int acc = 0;
    for (int k = 0; k < Kp; ++k) acc += static_cast<int>(a[k]) * static_cast<int>(b[k]);
    C[static_cast<std::size_t>(r) * ldc + n] = acc;
  }
}

__global__ void quantize_kernel(int M, int K, int Kp, const float* __restrict__ x, int ldx,
                                float inv_scale, float qmax, std::int8_t* __restrict__ a8) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= Kp) return;
  for (int r = blockIdx.y; r < M; r += gridDim.y) {
    std::int8_t v = 0;
    if (k < K)
      v = static_cast<std::int8_t>(
          __float2int_rz(round_clamp(fmul(x[static_cast<std::size_t>(r) * ldx + k], inv_scale), qmax)));
    a8[static_cast<std::size_t>(r) * Kp + k] = v;
  }
}

__global__ void fake_quant_kernel(int M, int K, const float* __restrict__ x, int ldx,
                                  float inv_scale, float qmax, float scale,
                                  float* __restrict__ xq, int ldq) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= K) return;
  for (int r = blockIdx.y; r < M; r += gridDim.y) {
    xq[static_cast<std::size_t>(r) * ldq + k] =
        fmul(round_clamp(fmul(x[static_cast<std::size_t>(r) * ldx + k], inv_scale), qmax), scale);
  }
}

__global__ void forward_epilogue_kernel(int M, EpilogueArgs a) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= a.ld) return;
  for (int r = blockIdx.y; r < M; r += gridDim.y) {
    const std::size_t at = static_cast<std::size_t>(r) * a.ld + o;
    if (o >= a.out) {
      a.t[at] = 0.0f;
      a.y[at] = 0.0f;
      continue;
    }
    const float z = a.acc ? fadd(fmul(static_cast<float>(a.acc[at]), a.zscale[o]), a.b[o])
                          : fadd(a.t[at], a.b[o]);
    const float t = a.tanh ? qnn_tanh(z) : z;
    const float* xr = a.x + static_cast<std::size_t>(r) * a.ldx;
    float y;
    switch (a.residual) {
      case kResNone: y = t; break;
      case kResIdentity: y = fadd(xr[o], t); break;
      case kResDoubling: y = fadd(xr[o % a.in], t); break;
      default: y = fadd(xr[o], fmul(a.dt[o], t)); break;
    }
    a.t[at] = t;
    a.y[at] = y;
  }
}

__global__ void energy_kernel(int M, const float* __restrict__ x, int ldx, int width,
                              const float* __restrict__ w_out, double b_out,
                              const int* __restrict__ atoms, std::int64_t* __restrict__ eatom,
                              unsigned long long* bad) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= M) return;
  const float* xr = x + static_cast<std::size_t>(r) * ldx;
  double e = b_out;
  for (int o = 0; o < width; ++o)
    e = __dadd_rn(e, __dmul_rn(static_cast<double>(xr[o]), static_cast<double>(w_out[o])));
  int b = 0;
  eatom[atoms[r]] = to_grid(e, 0x1p24, &b);
  if (b) atomicOr(bad, 1ull);
}

__global__ void grad_init_kernel(int M, int width, const float* __restrict__ w_out,
                                 float* __restrict__ gy, int ldg) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= width) return;
  for (int r = blockIdx.y; r < M; r += gridDim.y) {
    gy[static_cast<std::size_t>(r) * ldg + o] = w_out[o];
  }
}

__device__ __forceinline__ float gz_of(const BackwardArgs& a, int r, int o) {
  float v = a.gy[static_cast<std::size_t>(r) * a.ldg + o];
  if (a.tanh) {
    const float t = a.t[static_cast<std::size_t>(r) * a.ldt + o];
    v = fmul(v, fsub(1.0f, fmul(t, t)));
  }
  if (a.residual == kResTimestep) v = fmul(v, a.dt[o]);
  return v;
}

__global__ void backward_gz_kernel(int M, BackwardArgs a, float* __restrict__ gz, int ldz) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= a.out) return;
  for (int r = blockIdx.y; r < M; r += gridDim.y) {
    gz[static_cast<std::size_t>(r) * ldz + o] = gz_of(a, r, o);
  }
}

// One warp per row: the row's max |h| (a max is exact whatever its order), then quantize.
__global__ void backward_gz_int8_kernel(int M, BackwardArgs a, std::int8_t* __restrict__ g8,
                                        int ldq, float* __restrict__ sg) {
  const int lane = threadIdx.x & 31;
  const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= M) return;
  float amax = 0.0f;
  for (int o = lane; o < a.out; o += 32) amax = fmaxf(amax, fabsf(fmul(gz_of(a, r, o), a.wscale[o])));
  for (int s = 16; s > 0; s >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, s));
  const float sc = fdiv(amax, 127.0f);
  const float inv = sc > 0.0f ? fdiv(1.0f, sc) : 0.0f;
  std::int8_t* q = g8 + static_cast<std::size_t>(r) * ldq;
  for (int o = lane; o < ldq; o += 32) {
    std::int8_t v = 0;
    if (o < a.out)
      v = static_cast<std::int8_t>(
          __float2int_rz(round_clamp(fmul(fmul(gz_of(a, r, o), a.wscale[o]), inv), 127.0f)));
    q[o] = v;
  }
  if (lane == 0) sg[r] = sc;
}

__global__ void backward_epilogue_kernel(int M, BackwardArgs a, const std::int32_t* __restrict__ acc,
                                         int ldc, const float* __restrict__ sg,
                                         float* __restrict__ gx) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= a.in) return;
  for (int r = blockIdx.y; r < M; r += gridDim.y) {
    float* xr = gx + static_cast<std::size_t>(r) * a.ldgx;
    const float* gr = a.gy + static_cast<std::size_t>(r) * a.ldg;
    float v = acc ? fmul(static_cast<float>(acc[static_cast<std::size_t>(r) * ldc + k]), sg[r]) : xr[k];
    if (a.residual == kResIdentity || a.residual == kResTimestep)
      v = fadd(v, gr[k]);
    else if (a.residual == kResDoubling)
      v = fadd(v, fadd(gr[k], gr[a.in + k]));
    xr[k] = v;
  }
}

// columns in x, rows in y (kernels loop over rows with stride gridDim.y: M may exceed 65535)
inline dim3 grid_rows(int cols, int M, int bs) { return dim3((cols + bs - 1) / bs, std::min(M, 65535)); }

}  // namespace

void launch_sgemm(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
                  int ldc, cudaStream_t st) {
  if (M <= 0 || N <= 0) return;
  const dim3 block(kTile, kTile), grid((N + kTile - 1) / kTile, std::min((M + kTile - 1) / kTile, 65535));
  sgemm_kernel<<<grid, block, 0, st>>>(M, N, K, A, lda, B, ldb, C, ldc);
  QNN_CUDA_LAUNCH_CHECK();
}

void launch_igemm(int M, int N, int Kp, const std::int8_t* A, int lda, const std::int8_t* Bt,
                  int ldb, std::int32_t* C, int ldc, bool mma, cudaStream_t st) {
  if (M <= 0 || N <= 0) return;
  if (Kp % 32 != 0 || lda % 32 != 0 || ldb % 32 != 0 || N % 8 != 0)
    throw Error("cuda: int8 GEMM needs K and strides padded to 32 and N to 8");
  if (mma) {
    const dim3 grid((N + 31) / 32, std::min((M + 15) / 16, 65535));
    igemm_mma_kernel<<<grid, 128, 0, st>>>(M, N, Kp, A, lda, Bt, ldb, C, ldc);
  } else {
    igemm_simt_kernel<<<grid_rows(N, M, 64), 64, 0, st>>>(M, N, Kp, A, lda, Bt, ldb, C, ldc);
  }
  QNN_CUDA_LAUNCH_CHECK();
}

void launch_quantize(int M, int K, int Kp, const float* x, int ldx, float inv_scale, float qmax,
                     std::int8_t* a8, cudaStream_t st) {
  if (M <= 0) return;
  quantize_kernel<<<grid_rows(Kp, M, 128), 128, 0, st>>>(M, K, Kp, x, ldx, inv_scale, qmax, a8);
  QNN_CUDA_LAUNCH_CHECK();
}

void launch_fake_quant(int M, int K, const float* x, int ldx, float inv_scale, float qmax,
                       float scale, float* xq, int ldq, cudaStream_t st) {
  if (M <= 0 || K <= 0) return;
  fake_quant_kernel<<<grid_rows(K, M, 128), 128, 0, st>>>(M, K, x, ldx, inv_scale, qmax, scale, xq, ldq);
  QNN_CUDA_LAUNCH_CHECK();
}

void launch_forward_epilogue(int M, const EpilogueArgs& a, cudaStream_t st) {
  if (M <= 0) return;
  forward_epilogue_kernel<<<grid_rows(a.ld, M, 128), 128, 0, st>>>(M, a);
  QNN_CUDA_LAUNCH_CHECK();
}

void launch_energy(int M, const float* x, int ldx, int width, const float* w_out, double b_out,
                   const int* atoms, std::int64_t* eatom, unsigned long long* bad, cudaStream_t st) {
  if (M <= 0) return;
  energy_kernel<<<(M + 127) / 128, 128, 0, st>>>(M, x, ldx, width, w_out, b_out, atoms, eatom, bad);
  QNN_CUDA_LAUNCH_CHECK();
}

void launch_grad_init(int M, int width, const float* w_out, float* gy, int ldg, cudaStream_t st) {
  if (M <= 0 || width <= 0) return;
  grad_init_kernel<<<grid_rows(width, M, 128), 128, 0, st>>>(M, width, w_out, gy, ldg);
  QNN_CUDA_LAUNCH_CHECK();
}

void launch_backward_gz(int M, const BackwardArgs& a, float* gz, int ldz, cudaStream_t st) {
  if (M <= 0 || a.out <= 0) return;
  backward_gz_kernel<<<grid_rows(a.out, M, 128), 128, 0, st>>>(M, a, gz, ldz);
  QNN_CUDA_LAUNCH_CHECK();
}

void launch_backward_gz_int8(int M, const BackwardArgs& a, std::int8_t* g8, int ldq, float* sg,
                             cudaStream_t st) {
  if (M <= 0) return;
  constexpr int kWarps = 4;
  backward_gz_int8_kernel<<<(M + kWarps - 1) / kWarps, 32 * kWarps, 0, st>>>(M, a, g8, ldq, sg);
  QNN_CUDA_LAUNCH_CHECK();
}

void launch_backward_epilogue(int M, const BackwardArgs& a, const std::int32_t* acc, int ldc,
                              const float* sg, float* gx, cudaStream_t st) {
  if (M <= 0 || a.in <= 0) return;
  backward_epilogue_kernel<<<grid_rows(a.in, M, 128), 128, 0, st>>>(M, a, acc, ldc, sg, gx);
  QNN_CUDA_LAUNCH_CHECK();
}

void gemm_s8s8s32_test(int M, int N, int K, const std::int8_t* A, const std::int8_t* Bt,
                       std::int32_t* C, bool mma) {
  if (M <= 0 || N <= 0 || K <= 0) throw Error("cuda: gemm test needs positive sizes");
  const int Kp = pad32(K), Np = pad8(N);
  std::vector<std::int8_t> a(static_cast<std::size_t>(M) * Kp, 0), b(static_cast<std::size_t>(Np) * Kp, 0);
  for (int r = 0; r < M; ++r)
    std::copy(A + static_cast<std::size_t>(r) * K, A + static_cast<std::size_t>(r + 1) * K,
              a.begin() + static_cast<std::ptrdiff_t>(r) * Kp);
  for (int n = 0; n < N; ++n)
    std::copy(Bt + static_cast<std::size_t>(n) * K, Bt + static_cast<std::size_t>(n + 1) * K,
              b.begin() + static_cast<std::ptrdiff_t>(n) * Kp);
  std::int8_t *da = nullptr, *db = nullptr;
  std::int32_t* dc = nullptr;
  auto release = [&] {
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
  };
  try {
    QNN_CUDA_CHECK(cudaMalloc(&da, a.size()));
    QNN_CUDA_CHECK(cudaMalloc(&db, b.size()));
    QNN_CUDA_CHECK(cudaMalloc(&dc, sizeof(std::int32_t) * static_cast<std::size_t>(M) * Np));
    QNN_CUDA_CHECK(cudaMemcpy(da, a.data(), a.size(), cudaMemcpyHostToDevice));
    QNN_CUDA_CHECK(cudaMemcpy(db, b.data(), b.size(), cudaMemcpyHostToDevice));
    launch_igemm(M, Np, Kp, da, Kp, db, Kp, dc, Np, mma, nullptr);
    std::vector<std::int32_t> c(static_cast<std::size_t>(M) * Np);
    QNN_CUDA_CHECK(cudaMemcpy(c.data(), dc, sizeof(std::int32_t) * c.size(), cudaMemcpyDeviceToHost));
    for (int r = 0; r < M; ++r)
      for (int n = 0; n < N; ++n) C[static_cast<std::size_t>(r) * N + n] = c[static_cast<std::size_t>(r) * Np + n];
  } catch (...) {
    release();
    throw;
  }
  release();
}

}  // namespace qnn::cuda::detail
