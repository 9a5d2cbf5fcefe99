// AVX-512 VNNI integer GEMM path: vpdpbusd on zmm, u8 x s8 with A+128 as the u8 operand
// and accumulators starting at -128*colsum(B). Compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512vnni (CMakeLists.txt); see int_gemm_kernel.hpp.
#include "qnn/kernels/int_gemm_kernel.hpp"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
// GCC 12.2's AVX-512 intrinsics self-initialize their "undefined" pass-through operand and
// then warn about it when inlined (GCC bug 105593, fixed in 12.3); silence that here only.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

namespace qnn::igemm::detail {
namespace {

// One unit = one packed panel = 16 columns = one zmm of int32; a quad is 64 bytes.
struct Avx512Vnni {
  static constexpr int kUnitCols = 16;
  // 32 zmm: 24 accumulators + 4 B + A + the 0x80 constant; 64 columns cover N = 50 at once.
  static constexpr int kMR = 6, kNU = 4;
  using Acc = __m512i;  // (16) int32
  using A = __m512i;    // (64) u8: a0^0x80 .. a3^0x80 repeated
  using B = __m512i;    // (64) s8: 16 columns x 4 k
  using Vec = __m512i;

  static Acc init(const int32_t* colterm) { return _mm512_loadu_si512(colterm); }
  static A a_from_word(int32_t w) {
    return _mm512_xor_si512(_mm512_set1_epi32(w), _mm512_set1_epi8(static_cast<char>(0x80)));
  }
  static B load_b(const int8_t* p) { return _mm512_loadu_si512(p); }
  static void madd(Acc& acc, const A& a, const B& b) { acc = _mm512_dpbusd_epi32(acc, a, b); }
  static Vec finish(const Acc& acc) { return acc; }

  // Requantization constants of 16 channels, derived once per tile and unit.
  struct Rq {
    __m512i bias, multiplier, multiplier_odd, shift, mask, half;
    __mmask16 multiplier_is_min;
  };
  static Rq requant_params(const int32_t* bias, const int32_t* multiplier, const int32_t* shift) {
    const __m512i one = _mm512_set1_epi32(1);
    Rq rq;
    rq.bias = _mm512_loadu_si512(bias);
    rq.multiplier = _mm512_loadu_si512(multiplier);
    rq.multiplier_odd = _mm512_srli_epi64(rq.multiplier, 32);
    rq.shift = _mm512_loadu_si512(shift);
    rq.mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, rq.shift), one);
    rq.half = _mm512_srli_epi32(rq.mask, 1);
    rq.multiplier_is_min = _mm512_cmpeq_epi32_mask(rq.multiplier, _mm512_set1_epi32(INT32_MIN));
    return rq;
  }

  // The requantization contract on 16 columns; the bit argument is in Ymm::requant
  // (int_gemm_ymm.hpp).
  static __m512i requant(__m512i v, const Rq& rq) {
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i x = _mm512_add_epi32(v, rq.bias);
    const __m512i nudge = _mm512_set1_epi64(int64_t{1} << 30);
    const __m512i even = _mm512_add_epi64(_mm512_mul_epi32(x, rq.multiplier), nudge);
    const __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), rq.multiplier_odd), nudge);
    __m512i y = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 31), _mm512_slli_epi64(odd, 1));
    const __mmask16 overflow =
        _mm512_mask_cmpeq_epi32_mask(rq.multiplier_is_min, x, _mm512_set1_epi32(INT32_MIN));
    y = _mm512_mask_mov_epi32(y, overflow, _mm512_set1_epi32(INT32_MAX));
    const __m512i threshold = _mm512_sub_epi32(rq.half, _mm512_srai_epi32(y, 31));  // + (y < 0)
    const __mmask16 up = _mm512_cmpgt_epi32_mask(_mm512_and_si512(y, rq.mask), threshold);
    const __m512i q = _mm512_srav_epi32(y, rq.shift);
    const __m512i z = _mm512_mask_add_epi32(q, up, q, one);
    return _mm512_max_epi32(_mm512_min_epi32(z, _mm512_set1_epi32(kQMax)), _mm512_set1_epi32(kQMin));
  }

  static __m512i load_i32(const int32_t* c) { return _mm512_loadu_si512(c); }
  static __mmask16 first(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static void store_i32(int32_t* c, __m512i v, int n) {
    if (n == kUnitCols) {
      _mm512_storeu_si512(c, v);
    } else {
      _mm512_mask_storeu_epi32(c, first(n), v);
    }
  }
  static void store_i8(int8_t* c, __m512i v, int n) {
    if (n == kUnitCols) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(c), _mm512_cvtepi32_epi8(v));
    } else {
      _mm512_mask_cvtepi32_storeu_epi8(c, first(n), v);
    }
  }
};

}  // namespace

bool avx512vnni_compiled() { return true; }
void gemm_avx512vnni(const GemmArgs& g) { gemm<Avx512Vnni>(g); }

}  // namespace qnn::igemm::detail

#else

namespace qnn::igemm::detail {
bool avx512vnni_compiled() { return false; }
void gemm_avx512vnni(const GemmArgs&) {}
}  // namespace qnn::igemm::detail

#endif
