// Internal: the 8-column (ymm, AVX2) epilogue shared by the avx2 and avxvnni kernels:
// requantization (the contract of int_gemm.hpp) and partial-width stores. Included only by
// translation units compiled with -mavx2; internal linkage (see int_gemm_kernel.hpp).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace qnn::igemm::detail {
namespace {

struct Ymm {
  static constexpr int kUnitCols = 8;

  // Requantization constants of 8 channels, derived once per tile and unit.
  struct Rq {
    __m256i bias, multiplier, multiplier_odd, shift, mask, half, multiplier_is_min;
  };
  static Rq requant_params(const int32_t* bias, const int32_t* multiplier, const int32_t* shift) {
    const auto ld = [](const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); };
    Rq rq;
    rq.bias = ld(bias);
    rq.multiplier = ld(multiplier);
    rq.multiplier_odd = _mm256_srli_epi64(rq.multiplier, 32);
    rq.shift = ld(shift);
    rq.mask = _mm256_sub_epi32(_mm256_sllv_epi32(_mm256_set1_epi32(1), rq.shift), _mm256_set1_epi32(1));
    rq.half = _mm256_srli_epi32(rq.mask, 1);
    rq.multiplier_is_min = _mm256_cmpeq_epi32(rq.multiplier, _mm256_set1_epi32(INT32_MIN));
    return rq;
  }

  // The requantization contract on 8 columns, clamped to [kQMin, kQMax].
  static __m256i requant(__m256i v, const Rq& rq) {
    const __m256i x = _mm256_add_epi32(v, rq.bias);
    // SaturatingRoundingDoublingHighMul = floor((x*m + 2^30) / 2^31): bits 31..62 of the
    // 64-bit x*m + 2^30 are the low 32 bits of the (arithmetically) shifted value, so
    // logical 64-bit shifts suffice. Saturates (to INT32_MAX = INT32_MIN ^ ~0) only for
    // x = m = INT32_MIN.
    const __m256i nudge = _mm256_set1_epi64x(int64_t{1} << 30);
    const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(x, rq.multiplier), nudge);
    const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), rq.multiplier_odd), nudge);
    __m256i y = _mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(odd, 1), 0xAA);
    y = _mm256_xor_si256(y, _mm256_and_si256(_mm256_cmpeq_epi32(x, _mm256_set1_epi32(INT32_MIN)), rq.multiplier_is_min));
    // RoundingDivideByPOT: (y >> shift) + ((y & mask) > mask/2 + (y < 0)); y >> 31 and
    // cmpgt give -1 for true.
    const __m256i threshold = _mm256_sub_epi32(rq.half, _mm256_srai_epi32(y, 31));
    const __m256i z = _mm256_sub_epi32(_mm256_srav_epi32(y, rq.shift),
                                       _mm256_cmpgt_epi32(_mm256_and_si256(y, rq.mask), threshold));
    return _mm256_max_epi32(_mm256_min_epi32(z, _mm256_set1_epi32(kQMax)), _mm256_set1_epi32(kQMin));
  }

  static __m256i load_i32(const int32_t* c) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)); }

  // Stores the first n (1..8) int32 columns.
  static void store_i32(int32_t* c, __m256i v, int n) {
    if (n == kUnitCols) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(c), v);
    } else {
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      _mm256_maskstore_epi32(reinterpret_cast<int*>(c), _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane), v);
    }
  }

  // Stores the first n (1..8) columns of v (already in int8 range) as int8.
  static void store_i8(int8_t* c, __m256i v, int n) {
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    const __m128i w8 = _mm_packs_epi16(w16, w16);  // bytes 0..7 = columns 0..7
    if (n == kUnitCols) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(c), w8);
    } else {
      alignas(16) int8_t tmp[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), w8);
      std::memcpy(c, tmp, static_cast<std::size_t>(n));
    }
  }
};

}  // namespace
}  // namespace qnn::igemm::detail
