// AVX-VNNI int16 GEMM path: vpdpwssd on ymm (VEX encoding, 16 registers; wrapping, not
// vpdpwssds). Compiled with -mavx2 -mavxvnni (CMakeLists.txt); see int16_gemm_kernel.hpp.
#include "qnn/kernels/int16_gemm_kernel.hpp"

#if defined(__AVXVNNI__)
#include <immintrin.h>

#include "qnn/kernels/int_gemm_ymm.hpp"

namespace qnn::igemm::detail16 {
namespace {

// One unit = 8 columns = one ymm of int32; a packed pair of a unit is 32 bytes.
struct AvxVnni {
  static constexpr int kUnitCols = 8;
  // 16 ymm (VEX): 12 accumulators + 3 B + A; 12 independent vpdpwssd chains cover their
  // latency at 2 per cycle.
  static constexpr int kMR = 4, kNU = 3;
  // A GNU vector, not __m256i: see Avx512Vnni::Acc (int16_gemm_avx512vnni.cpp).
  using Acc = int32_t __attribute__((vector_size(32)));  // (8) int32
  using A = __m256i;  // (16) int16: a[2q], a[2q+1] repeated
  using B = __m256i;  // (16) int16: 8 columns x 2 k

  static Acc zero() { return Acc{}; }
  static A a_from_pair(int32_t w) { return _mm256_set1_epi32(w); }
  static B load_b(const int16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void madd(Acc& acc, const A& a, const B& b) { acc = (Acc)_mm256_dpwssd_avx_epi32((__m256i)acc, a, b); }
  static void store_i32(int32_t* c, const Acc& acc, int n) { detail::Ymm::store_i32(c, (__m256i)acc, n); }
};

}  // namespace

bool avxvnni_compiled() { return true; }
void gemm_avxvnni(const GemmArgs& g) { run<AvxVnni>(g); }

}  // namespace qnn::igemm::detail16

#else

namespace qnn::igemm::detail16 {
bool avxvnni_compiled() { return false; }
void gemm_avxvnni(const GemmArgs&) {}
}  // namespace qnn::igemm::detail16

#endif
