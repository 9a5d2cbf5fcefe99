// AVX-512 VNNI int16 GEMM path: vpdpwssd on zmm (int16 x int16 pairs summed into int32,
// wrapping, never saturating: not vpdpwssds). Compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512vnni (CMakeLists.txt); see int16_gemm_kernel.hpp.
#include "qnn/kernels/int16_gemm_kernel.hpp"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>

namespace qnn::igemm::detail16 {
namespace {

// One unit = one packed panel = 16 columns = one zmm of int32; a pair is 64 bytes.
struct Avx512Vnni {
  static constexpr int kUnitCols = 16;
  // 32 zmm: 16 accumulators + 4 B + A broadcasts. 16 independent vpdpwssd chains cover
  // their latency (about 6 cycles, 2 issued per cycle), and 4 rows x 64 columns tile the
  // engine's blocks (M = 32, N = 128 or 1024) exactly. Of 8x2, 4x4, 8x3, 4x6 and 16x1 units,
  // 4x4 was fastest on those shapes (8x2 and 8x3 tie at K = 1024, a few % slower at K = 128).
  static constexpr int kMR = 4, kNU = 4;
  // A GNU vector, not __m512i: with __m512i accumulators GCC 12's tree-PRE moves the
  // intrinsics' __m512i <-> __v16si conversions across the k loop, and the loop then copies
  // every accumulator register once per pair.
  using Acc = int32_t __attribute__((vector_size(64)));  // (16) int32
  using A = __m512i;  // (32) int16: a[2q], a[2q+1] repeated
  using B = __m512i;  // (32) int16: 16 columns x 2 k

  static Acc zero() { return Acc{}; }
  static A a_from_pair(int32_t w) { return _mm512_set1_epi32(w); }
  static B load_b(const int16_t* p) { return _mm512_loadu_si512(p); }
  static void madd(Acc& acc, const A& a, const B& b) { acc = (Acc)_mm512_dpwssd_epi32((__m512i)acc, a, b); }
  static void store_i32(int32_t* c, const Acc& acc, int n) {
    const __m512i v = (__m512i)acc;
    if (n == kUnitCols) {
      _mm512_storeu_si512(c, v);
    } else {
      _mm512_mask_storeu_epi32(c, static_cast<__mmask16>((1u << n) - 1u), v);
    }
  }
};

}  // namespace

bool avx512vnni_compiled() { return true; }
void gemm_avx512vnni(const GemmArgs& g) { run<Avx512Vnni>(g); }

}  // namespace qnn::igemm::detail16

#else

namespace qnn::igemm::detail16 {
bool avx512vnni_compiled() { return false; }
void gemm_avx512vnni(const GemmArgs&) {}
}  // namespace qnn::igemm::detail16

#endif
