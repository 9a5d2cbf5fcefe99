// AVX2 integer GEMM path: int8 sign-extended to int16 and multiplied with vpmaddwd, which
// is exact (|2*128*128| fits int32). vpmaddubsw is not used: its int16 pair sums saturate
// (255*127*2 > 32767). Compiled with -mavx2 (CMakeLists.txt); see int_gemm_kernel.hpp.
#include "qnn/kernels/int_gemm_kernel.hpp"

#if defined(__AVX2__)
#include <immintrin.h>

#include "qnn/kernels/int_gemm_ymm.hpp"

namespace qnn::igemm::detail {
namespace {

// One unit = 8 columns. A packed quad of a unit is 32 bytes [c0k0..c0k3, c1k0.., .., c7k3];
// sign-extended it is two int16 vectors (columns 0..3 and 4..7). vpmaddwd against the
// broadcast int16 [a0 a1 a2 a3]x4 leaves two partial sums per column (k0+k1, k2+k3) in
// adjacent lanes; finish() adds the pairs once per tile.
struct Avx2 : Ymm {
  // 16 ymm: 2x2 units = 8 accumulators + 4 sign-extended B + 1 A.
  static constexpr int kMR = 2, kNU = 2;
  struct Acc {
    __m256i lo, hi;  // (8) int32: columns 0..3, 4..7, two partial sums each
  };
  using A = __m256i;  // (16) int16: a0 a1 a2 a3 repeated
  struct B {
    __m256i lo, hi;  // (16) int16 each: columns 0..3, 4..7 x k0..k3
  };
  using Vec = __m256i;

  static Acc init(const int32_t*) { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
  static A a_from_word(int32_t w) { return _mm256_cvtepi8_epi16(_mm_set1_epi32(w)); }
  static B load_b(const int8_t* p) {
    return {_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
            _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)))};
  }
  static void madd(Acc& acc, const A& a, const B& b) {
    acc.lo = _mm256_add_epi32(acc.lo, _mm256_madd_epi16(b.lo, a));
    acc.hi = _mm256_add_epi32(acc.hi, _mm256_madd_epi16(b.hi, a));
  }
  // hadd gives [c0 c1 c4 c5 | c2 c3 c6 c7]; the 64-bit permute (0, 2, 1, 3) restores order.
  static Vec finish(const Acc& acc) {
    return _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc.lo, acc.hi), 0xD8);
  }
};

}  // namespace

bool avx2_compiled() { return true; }
void gemm_avx2(const GemmArgs& g) { gemm<Avx2>(g); }

}  // namespace qnn::igemm::detail

#else

namespace qnn::igemm::detail {
bool avx2_compiled() { return false; }
void gemm_avx2(const GemmArgs&) {}
}  // namespace qnn::igemm::detail

#endif
