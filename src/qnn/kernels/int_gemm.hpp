// Integer GEMM micro-kernels: C (int32) = A (int8) · B (int8), optionally with a fused
// per-output-channel requantization to int8. The lowest layer of the integer inference
// engine (docs/quantization.md, "Integer GEMM").
//
// Numeric contract (every path is bit-exact; the tests compare all of them with the
// references below):
//
//   A      int8, row-major (M, K) with leading dimension lda >= K; no zero point.
//   B      int8, (K, N) (or given transposed as (N, K)), packed once into PackedB; no zero point.
//   acc    int32: acc[m][n] = sum_k A[m][k] * B[k][n], exact. Guaranteed for K <= kMaxK
//          (|acc| <= 128*128*K < 2^31). Kernels may wrap intermediates modulo 2^32 (the
//          VNNI paths accumulate (A+128)*B and subtract 128*colsum(B)); the result is
//          exact because the true value fits.
//   requantization (optional, per output channel n):
//          x  = acc + bias[n]                             int32, two's-complement wrap-around
//          y  = SaturatingRoundingDoublingHighMul(x, multiplier[n])
//                                                         = floor((x*mult + 2^30) / 2^31),
//                                                           saturated (only x = mult = INT32_MIN)
//          z  = RoundingDivideByPOT(y, shift[n])          round half away from zero
//          C  = clamp(z, -127, 127) as int8               (symmetric int8, -128 never produced)
//          (gemmlowp fixedpoint.h semantics). multiplier is any int32, shift in [0, 31].
//          The real scale it represents is multiplier * 2^-31 * 2^-shift;
//          quantize_multiplier() converts a real scale in [0, 1).
//
// Paths (Isa): scalar (portable C++), avx2 (sign-extension to int16 + vpmaddwd: exact, no
// vpmaddubsw int16 saturation), avxvnni (vpdpbusd on ymm), avx512vnni (vpdpbusd on zmm).
// The VNNI instructions multiply u8 by s8: the kernels feed A+128 (a XOR 0x80) as u8 and
// start the accumulators at -128*colsum(B), kept by PackedB.
//
// Threading: every function here is single-threaded and thread-safe; callers parallelize
// over row blocks of A. No function allocates except the PackedB/Requant constructors.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "qnn/kernels/aligned.hpp"

namespace qnn::igemm {

// Largest K for which the int32 accumulator is guaranteed exact (128*128*K < 2^31).
inline constexpr int kMaxK = 131071;
// Output range of the requantizing GEMM (symmetric int8).
inline constexpr int kQMin = -127;
inline constexpr int kQMax = 127;
// Columns per packed panel, and k values per interleaved group ("quad").
inline constexpr int kPanelCols = 16;
inline constexpr int kQuad = 4;

// Instruction-set paths, slowest first.
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvxVnni = 2, kAvx512Vnni = 3 };
inline constexpr Isa kAllIsas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvxVnni, Isa::kAvx512Vnni};

// Lower-case name as accepted by QNN_ISA: "scalar", "avx2", "avxvnni", "avx512vnni".
const char* isa_name(Isa isa);
// Parses a QNN_ISA value; throws qnn::Error listing the valid names.
Isa parse_isa(const std::string& name);
// True when the path is compiled in and this CPU (and OS) supports it.
bool isa_available(Isa isa);
// The fastest available path.
Isa best_isa();
// The path used by default: $QNN_ISA if set (throws qnn::Error if unknown or not supported
// by this CPU), else best_isa(). Read once per process.
Isa active_isa();

// 64-byte-aligned allocator (qnn/kernels/aligned.hpp), so packed panels start on cache lines.
using qnn::AlignedAllocator;

// How the unpacked B is stored.
enum class BLayout {
  kKN,  // (K, N) row-major, element (k, n) at b[k*ldb + n]   (layer weights W: (in, out))
  kNK,  // (N, K) row-major, element (k, n) at b[n*ldb + k]   (W^T, for the backward pass)
};

// B packed once for all paths. Layout: ceil(N/16) column panels; panel p holds columns
// 16p..16p+15 as ceil(K/4) quads of 64 bytes, quad q = 16 columns x 4 consecutive k:
//   data[(p*K4/4 + q)*64 + c*4 + i] = B[4q + i][16p + c]
// zero-padded in k (K4 = K rounded up to 4) and in n. This is the vpdpbusd operand order:
// one 64-byte load is one zmm of 16 int32 columns, each fed 4 k values.
class PackedB {
 public:
  PackedB() = default;
  // Packs B (K, N); 1 <= K <= kMaxK, N >= 1, ldb >= N (kKN) or >= K (kNK). Throws qnn::Error.
  PackedB(const int8_t* b, int k, int n, int ldb, BLayout layout = BLayout::kKN);

  int k() const { return k_; }
  int n() const { return n_; }
  int k4() const { return (k_ + kQuad - 1) / kQuad * kQuad; }
  int panels() const { return (n_ + kPanelCols - 1) / kPanelCols; }
  // Bytes between consecutive panels: K4 * 16.
  std::ptrdiff_t panel_stride() const { return static_cast<std::ptrdiff_t>(k4()) * kPanelCols; }
  const int8_t* data() const { return data_.data(); }  // (panels, K4/4, 16, 4)
  // -128 * sum_k B[k][n], zero-padded: (panels * 16). The VNNI accumulators start here.
  const int32_t* neg128_colsum() const { return colterm_.data(); }

 private:
  int k_ = 0, n_ = 0;
  std::vector<int8_t, AlignedAllocator<int8_t>> data_;
  std::vector<int32_t, AlignedAllocator<int32_t>> colterm_;
};

// Per-output-channel requantization parameters (see the contract above), copied and
// zero-padded to whole panels so the kernels may load full vectors.
class Requant {
 public:
  Requant() = default;
  // n channels; bias may be nullptr (zero). shift[i] must be in [0, 31]. Throws qnn::Error.
  Requant(int n, const int32_t* bias, const int32_t* multiplier, const int32_t* shift);

  int n() const { return n_; }
  const int32_t* bias() const { return bias_.data(); }              // (padded n)
  const int32_t* multiplier() const { return multiplier_.data(); }  // (padded n)
  const int32_t* shift() const { return shift_.data(); }            // (padded n)

 private:
  int n_ = 0;
  std::vector<int32_t, AlignedAllocator<int32_t>> bias_, multiplier_, shift_;
};

// C (M, N) int32, row-major with ldc >= N, = A (M, K) · B. M may be 0. Throws qnn::Error on
// bad sizes or an unavailable isa.
void gemm_s8s8s32(int m, const int8_t* a, int lda, const PackedB& b, int32_t* c, int ldc,
                  Isa isa = active_isa());

// C (M, N) int8, row-major with ldc >= N, = requantize(A · B) with rq.n() == N.
void gemm_s8s8s8(int m, const int8_t* a, int lda, const PackedB& b, const Requant& rq, int8_t* c,
                 int ldc, Isa isa = active_isa());

// ---------------------------------------------------------------------------- references
// THE reference GEMM: plain triple loop on the unpacked B (K, N), int32 accumulation.
void gemm_s8s8s32_reference(int m, int n, int k, const int8_t* a, int lda, const int8_t* b,
                            int ldb, int32_t* c, int ldc);

// gemmlowp SaturatingRoundingDoublingHighMul: (a*b + 2^30) / 2^31 with gemmlowp's nudge
// (rounds half up), INT32_MAX for a = b = INT32_MIN.
int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b);
// gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero, exponent in [0, 31].
int32_t rounding_divide_by_pot(int32_t x, int exponent);
// One output of the requantization contract.
int8_t requantize_reference(int32_t acc, int32_t bias, int32_t multiplier, int shift);
// The requantization contract on an (M, N) int32 matrix; bias may be nullptr.
void requantize_reference(int m, int n, const int32_t* acc, int ldacc, const int32_t* bias,
                          const int32_t* multiplier, const int32_t* shift, int8_t* c, int ldc);

// Fixed-point form of a real scale in [0, 1): real ~= multiplier * 2^-31 * 2^-shift with
// multiplier in [2^30, 2^31) (or 0 for real == 0) and shift in [0, 31]. Scales below 2^-32
// lose mantissa bits (multiplier < 2^30, shift 31). Throws qnn::Error outside [0, 1).
void quantize_multiplier(double real, int32_t* multiplier, int32_t* shift);

}  // namespace qnn::igemm
