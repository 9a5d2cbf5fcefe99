// Vector vocabulary of the block kernel (block_kernel_impl.hpp, descriptor_impl.hpp): GCC vector
// extensions of QNN_VW float lanes, so that each per-ISA translation unit compiles the same
// code for its own -m flags. Included inside the per-ISA namespace, after QNN_VW is defined.
//
// Rounding contract: vfma is one fused multiply-add (single rounding) on the avx2/avx512
// paths and a separately rounded product and sum on the generic path (which has no FMA
// instruction and is compiled with -ffp-contract=off). Each path is deterministic on its own.
#if QNN_VW == 16 || QNN_VW == 8 || defined(__SSE2__)
#include <immintrin.h>
#endif

constexpr int VW = QNN_VW;
typedef float vf __attribute__((vector_size(VW * 4)));
typedef std::int32_t vi __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));
typedef std::int32_t viu __attribute__((vector_size(VW * 4), aligned(4)));

inline vf vload(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void vstore(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
inline vi viload(const std::int32_t* p) { return *reinterpret_cast<const viu*>(p); }
inline void vistore(std::int32_t* p, vi v) { *reinterpret_cast<viu*>(p) = v; }
// x in every lane: a broadcast (`vf{} + x` would be an addition, -0 + 0 being +0).
#if QNN_VW == 16
inline vf vset(float x) { return (vf)_mm512_set1_ps(x); }
#elif QNN_VW == 8
inline vf vset(float x) { return (vf)_mm256_set1_ps(x); }
#elif defined(__SSE2__)
inline vf vset(float x) { return (vf)_mm_set1_ps(x); }
#else
inline vf vset(float x) {
  vf v;
  for (int l = 0; l < VW; ++l) v[l] = x;
  return v;
}
#endif

// Round each lane to the nearest int32, ties to even (the values are within int32 range). The
// conversions follow MXCSR's rounding mode, which run_block sets to nearest-even for the block
// (RoundNearest); the embedded-rounding form {rn-sae} runs 40% slower on Sapphire Rapids.
#if QNN_VW == 16
inline vi vround(vf x) {
  // (the zero-masked form: GCC 12 warns about the unmasked one's undefined source)
  return (vi)_mm512_maskz_cvtps_epi32(0xFFFF, (__m512)x);
}
#elif QNN_VW == 8
inline vi vround(vf x) { return (vi)_mm256_cvtps_epi32((__m256)x); }
#elif defined(__SSE2__)
inline vi vround(vf x) { return (vi)_mm_cvtps_epi32((__m128)x); }
#else
inline vi vround(vf x) {
  vi r;
  for (int l = 0; l < VW; ++l) r[l] = static_cast<std::int32_t>(std::nearbyint(x[l]));
  return r;
}
#endif

#if QNN_VW == 16
inline vf vfma(vf a, vf b, vf c) { return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c); }
#elif QNN_VW == 8
inline vf vfma(vf a, vf b, vf c) { return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }
#else
inline vf vfma(vf a, vf b, vf c) { return a * b + c; }
#endif

// Half as many double lanes (edge loops in double precision), their int64 and float peers.
constexpr int DW = VW / 2;
typedef double vd __attribute__((vector_size(DW * 8)));
typedef std::int64_t vl __attribute__((vector_size(DW * 8)));
typedef std::int32_t vih __attribute__((vector_size(DW * 4)));
typedef float vfh __attribute__((vector_size(DW * 4)));
typedef double vdu __attribute__((vector_size(DW * 8), aligned(8)));
typedef std::int64_t vlu __attribute__((vector_size(DW * 8), aligned(8)));
typedef float vfhu __attribute__((vector_size(DW * 4), aligned(4)));
typedef std::int32_t vihu __attribute__((vector_size(DW * 4), aligned(4)));
inline vd vdload(const double* p) { return *reinterpret_cast<const vdu*>(p); }
inline void vdstore(double* p, vd v) { *reinterpret_cast<vdu*>(p) = v; }
inline void vlstore(std::int64_t* p, vl v) { *reinterpret_cast<vlu*>(p) = v; }
inline vfh vfhload(const float* p) { return *reinterpret_cast<const vfhu*>(p); }
inline void vfhstore(float* p, vfh v) { *reinterpret_cast<vfhu*>(p) = v; }
inline vih vihload(const std::int32_t* p) { return *reinterpret_cast<const vihu*>(p); }
inline void vihstore(std::int32_t* p, vih v) { *reinterpret_cast<vihu*>(p) = v; }
inline vd vdset(double x) {
  vd v;
  for (int l = 0; l < DW; ++l) v[l] = x;
  return v;
}
#if QNN_VW == 16
inline vd vsqrt(vd x) { return (vd)_mm512_maskz_sqrt_pd(0xFF, (__m512d)x); }
#elif QNN_VW == 8
inline vd vsqrt(vd x) { return (vd)_mm256_sqrt_pd((__m256d)x); }
#elif defined(__SSE2__)
inline vd vsqrt(vd x) { return (vd)_mm_sqrt_pd((__m128d)x); }
#else
inline vd vsqrt(vd x) {
  for (int l = 0; l < DW; ++l) x[l] = std::sqrt(x[l]);
  return x;
}
#endif
inline vd vabs(vd x) { return (vd)((vl)x & (vl{} + 0x7fffffffffffffffLL)); }

// Sum of the lanes as a fixed pairwise tree (same order on every call): halves added
// until 4 lanes remain, then (l0 + l2) + (l1 + l3).
typedef float v4f __attribute__((vector_size(16)));
inline float hsum4(v4f b) { return (b[0] + b[2]) + (b[1] + b[3]); }
#if QNN_VW == 16
typedef float v8f __attribute__((vector_size(32)));
inline float hsum(vf v) {
  const v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  return hsum4(__builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7));
}
#elif QNN_VW == 8
inline float hsum(vf v) {
  return hsum4(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7));
}
#else
inline float hsum(vf v) { return hsum4(v); }
#endif

// Lane sums of VW vectors at once: lane i of the result is hsum(x[i]), by the same pairwise
// tree, with two-source shuffles that halve the lanes of two vectors per addition (about 3
// operations per sum instead of hsum's 9).
#if QNN_VW == 16
inline vf hsum_lanes(const vf* x) {
  vf y[8], z[4], w[2];
  for (int i = 0; i < 8; ++i)
    y[i] = __builtin_shufflevector(x[2 * i], x[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19,
                                   20, 21, 22, 23) +
           __builtin_shufflevector(x[2 * i], x[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25,
                                   26, 27, 28, 29, 30, 31);
  for (int i = 0; i < 4; ++i)
    z[i] = __builtin_shufflevector(y[2 * i], y[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18,
                                   19, 24, 25, 26, 27) +
           __builtin_shufflevector(y[2 * i], y[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22,
                                   23, 28, 29, 30, 31);
  for (int i = 0; i < 2; ++i)
    w[i] = __builtin_shufflevector(z[2 * i], z[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20,
                                   21, 24, 25, 28, 29) +
           __builtin_shufflevector(z[2 * i], z[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22,
                                   23, 26, 27, 30, 31);
  return __builtin_shufflevector(w[0], w[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                 30) +
         __builtin_shufflevector(w[0], w[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29,
                                 31);
}
#elif QNN_VW == 8
inline vf hsum_lanes(const vf* x) {
  vf y[4], z[2];
  for (int i = 0; i < 4; ++i)
    y[i] = __builtin_shufflevector(x[2 * i], x[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(x[2 * i], x[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15);
  for (int i = 0; i < 2; ++i)
    z[i] = __builtin_shufflevector(y[2 * i], y[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13) +
           __builtin_shufflevector(y[2 * i], y[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15);
  return __builtin_shufflevector(z[0], z[1], 0, 2, 4, 6, 8, 10, 12, 14) +
         __builtin_shufflevector(z[0], z[1], 1, 3, 5, 7, 9, 11, 13, 15);
}
#else
inline vf hsum_lanes(const vf* x) {
  vf y[2];
  for (int i = 0; i < 2; ++i)
    y[i] = __builtin_shufflevector(x[2 * i], x[2 * i + 1], 0, 1, 4, 5) +
           __builtin_shufflevector(x[2 * i], x[2 * i + 1], 2, 3, 6, 7);
  return __builtin_shufflevector(y[0], y[1], 0, 2, 4, 6) +
         __builtin_shufflevector(y[0], y[1], 1, 3, 5, 7);
}
#endif

// Sets MXCSR's rounding to nearest-even for a scope and restores the caller's mode (x86 only;
// elsewhere vround uses std::nearbyint, which follows the C rounding mode, nearest by default).
struct RoundNearest {
#if defined(__SSE2__)
  unsigned saved = _mm_getcsr();
  RoundNearest() { _mm_setcsr(saved & ~0x6000u); }
  ~RoundNearest() { _mm_setcsr(saved); }
#endif
};
