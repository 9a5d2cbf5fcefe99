// AVX-VNNI integer GEMM path: vpdpbusd on ymm (VEX encoding, 16 registers), u8 x s8 with
// A+128 as the u8 operand and accumulators starting at -128*colsum(B). Compiled with
// -mavx2 -mavxvnni (CMakeLists.txt); see int_gemm_kernel.hpp.
#include "qnn/kernels/int_gemm_kernel.hpp"

#if defined(__AVXVNNI__)
#include <immintrin.h>

#include "qnn/kernels/int_gemm_ymm.hpp"

namespace qnn::igemm::detail {
namespace {

// One unit = 8 columns = one ymm of int32; a packed quad of a unit is 32 bytes.
struct AvxVnni : Ymm {
  // 16 ymm (VEX): 8 accumulators + 2 B + A + the 0x80 constant.
  static constexpr int kMR = 4, kNU = 2;
  using Acc = __m256i;  // (8) int32
  using A = __m256i;    // (32) u8: a0^0x80 .. a3^0x80 repeated
  using B = __m256i;    // (32) s8: 8 columns x 4 k
  using Vec = __m256i;

  static Acc init(const int32_t* colterm) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colterm)); }
  static A a_from_word(int32_t w) {
    return _mm256_xor_si256(_mm256_set1_epi32(w), _mm256_set1_epi8(static_cast<char>(0x80)));
  }
  static B load_b(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void madd(Acc& acc, const A& a, const B& b) { acc = _mm256_dpbusd_avx_epi32(acc, a, b); }
  static Vec finish(const Acc& acc) { return acc; }
};

}  // namespace

bool avxvnni_compiled() { return true; }
void gemm_avxvnni(const GemmArgs& g) { gemm<AvxVnni>(g); }

}  // namespace qnn::igemm::detail

#else

namespace qnn::igemm::detail {
bool avxvnni_compiled() { return false; }
void gemm_avxvnni(const GemmArgs&) {}
}  // namespace qnn::igemm::detail

#endif
