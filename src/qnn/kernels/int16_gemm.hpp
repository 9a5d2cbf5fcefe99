// Integer GEMM for the w8a16 mode: C (int32) = A (int16 activations) · B (int8 weights).
// The int16 sibling of int_gemm.hpp; it reuses that header's Isa paths, dispatch (QNN_ISA)
// and BLayout (docs/quantization.md, "int16 GEMM (w8a16)").
//
// Numeric contract (every path is bit-exact; the tests compare all of them with the
// reference below):
//
//   A      int16, row-major (M, K) with leading dimension lda >= K; no zero point.
//   B      int8 in [-127, 127] (symmetric weights; -128 is rejected), (K, N) or given
//          transposed as (N, K), packed once into PackedB16; no zero point.
//   C      int32: C[m][n] = sum_k A[m][k] * B[k][n]. Every path adds the exact products
//          modulo 2^32 (vpmaddwd / vpdpwssd pair sums are exact; no saturating
//          instruction), so C is exact whenever the exact sum fits in int32, whatever the
//          partial sums do on the way. The caller's a-priori guarantee:
//              max|A| <= max_abs_a16(K)   <=>   max|A| * 127 * K < 2^31,
//          e.g. K <= 516: any int16 A; K = 1024: |A| <= 16513. Beyond it C is unspecified
//          (today: the exact sum modulo 2^32, the same on every path).
//
// Paths (Isa, as for int8): scalar (portable C++), avx2 (vpmaddwd + vpaddd on ymm), avxvnni
// (vpdpwssd on ymm), avx512vnni (vpdpwssd on zmm). B is sign-extended to int16 when packed,
// so every path multiplies int16 by int16.
//
// Threading: every function here is single-threaded and thread-safe; callers parallelize
// over row blocks of A. No function allocates except the PackedB16 constructor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "qnn/kernels/aligned.hpp"
#include "qnn/kernels/int_gemm.hpp"

namespace qnn::igemm {

// Largest K for which the guarantee holds for some A != 0 (max_abs_a16(K) >= 1).
inline constexpr int kMaxK16 = 16909320;  // floor((2^31 - 1) / 127)
// k values per interleaved group ("pair") of the int16 packing.
inline constexpr int kPair = 2;

// Largest |A| (<= 32767) with |A| * 127 * k < 2^31, i.e. for which every C of a K = k GEMM
// is exact: 32767 for k <= 516, 16513 for k = 1024, 0 beyond kMaxK16. Throws qnn::Error for
// k < 0.
int max_abs_a16(int k);

// B packed once for all paths, sign-extended to int16. Layout: ceil(N/16) column panels;
// panel p holds columns 16p..16p+15 as ceil(K/2) pairs of 32 int16 (64 bytes), pair q =
// 16 columns x 2 consecutive k:
//   data[(p*K2/2 + q)*32 + c*2 + i] = B[2q + i][16p + c]
// zero-padded in k (K2 = K rounded up to 2) and in n. This is the vpdpwssd operand order:
// one 64-byte load is one zmm of 16 int32 columns, each fed 2 k values.
class PackedB16 {
 public:
  PackedB16() = default;
  // Packs B (K, N); 1 <= K <= kMaxK16, N >= 1, ldb >= N (kKN) or >= K (kNK), every entry in
  // [-127, 127]. Throws qnn::Error.
  PackedB16(const int8_t* b, int k, int n, int ldb, BLayout layout = BLayout::kKN);

  int k() const { return k_; }
  int n() const { return n_; }
  int k2() const { return (k_ + kPair - 1) / kPair * kPair; }
  int panels() const { return (n_ + kPanelCols - 1) / kPanelCols; }
  // int16 elements between consecutive panels: K2 * 16.
  std::ptrdiff_t panel_stride() const { return static_cast<std::ptrdiff_t>(k2()) * kPanelCols; }
  const int16_t* data() const { return data_.data(); }  // (panels, K2/2, 16, 2)

 private:
  int k_ = 0, n_ = 0;
  std::vector<int16_t, AlignedAllocator<int16_t>> data_;
};

// C (M, N) int32, row-major with ldc >= N, = A (M, K) · B; columns N..ldc-1 are left
// untouched. M may be 0 (no-op). Throws qnn::Error on bad sizes, an unpacked B or an
// unavailable isa.
void gemm_s16s8s32(int m, const int16_t* a, int lda, const PackedB16& b, int32_t* c, int ldc,
                   Isa isa = active_isa());

// THE reference: plain triple loop on the unpacked B (K, N) (element (k, n) at b[k*ldb + n]),
// exact int64 accumulation. Throws qnn::Error if a result does not fit in int32, i.e. if the
// inputs break the contract (so a test can never compare against a wrapped value). k = 0
// gives C = 0.
void gemm_s16s8s32_reference(int m, int n, int k, const int16_t* a, int lda, const int8_t* b, int ldb,
                             int32_t* c, int ldc);

}  // namespace qnn::igemm
