// AVX2 int16 GEMM path: vpmaddwd (int16 x int16, pairs summed into int32: at most
// 2 * 32768 * 128, exact) + vpaddd (wrapping) on ymm. Compiled with -mavx2
// (CMakeLists.txt); see int16_gemm_kernel.hpp.
#include "qnn/kernels/int16_gemm_kernel.hpp"

#if defined(__AVX2__)
#include <immintrin.h>

#include "qnn/kernels/int_gemm_ymm.hpp"

namespace qnn::igemm::detail16 {
namespace {

// One unit = 8 columns = one ymm of int32; a packed pair of a unit is 32 bytes, the
// operand order of vpmaddwd against the broadcast pair of A.
struct Avx2 {
  static constexpr int kUnitCols = 8;
  // 16 ymm: 8 accumulators + 2 B + A + vpmaddwd results.
  static constexpr int kMR = 4, kNU = 2;
  // A GNU vector, not __m256i: see Avx512Vnni::Acc (int16_gemm_avx512vnni.cpp).
  using Acc = int32_t __attribute__((vector_size(32)));  // (8) int32
  using A = __m256i;  // (16) int16: a[2q], a[2q+1] repeated
  using B = __m256i;  // (16) int16: 8 columns x 2 k

  static Acc zero() { return Acc{}; }
  static A a_from_pair(int32_t w) { return _mm256_set1_epi32(w); }
  static B load_b(const int16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void madd(Acc& acc, const A& a, const B& b) {
    acc = (Acc)_mm256_add_epi32((__m256i)acc, _mm256_madd_epi16(a, b));
  }
  static void store_i32(int32_t* c, const Acc& acc, int n) { detail::Ymm::store_i32(c, (__m256i)acc, n); }
};

}  // namespace

bool avx2_compiled() { return true; }
void gemm_avx2(const GemmArgs& g) { run<Avx2>(g); }

}  // namespace qnn::igemm::detail16

#else

namespace qnn::igemm::detail16 {
bool avx2_compiled() { return false; }
void gemm_avx2(const GemmArgs&) {}
}  // namespace qnn::igemm::detail16

#endif
