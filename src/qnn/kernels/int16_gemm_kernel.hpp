// Internal: the blocked driver and micro-kernel template of the int16 GEMM (int16_gemm.hpp),
// instantiated per ISA by int16_gemm.cpp (scalar) and int16_gemm_<isa>.cpp with a traits type.
//
// Everything after the includes is in an anonymous namespace: each ISA translation unit is
// compiled with its own -m flags, and internal linkage keeps the linker from merging an
// AVX-512 instantiation into code that runs on a CPU without AVX-512.
//
// A traits type T provides:
//   kUnitCols            int32 columns per accumulator unit (16 or 8; divides kPanelCols)
//   kMR, kNU             register tile: kMR rows x kNU units
//   Acc, A, B            accumulator of one unit, broadcast A operand, B operand
//   zero()               accumulator start
//   a_from_pair(w)       A operand from 2 consecutive int16 of one row, packed in an int32
//   load_b(p)            B operand of one unit and pair (p: 2*kUnitCols packed int16)
//   madd(acc, a, b)      acc += a . b over the pair, per column, modulo 2^32
//   store_i32(c, acc, n) store the first n int32 columns of the unit
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "qnn/kernels/int16_gemm.hpp"

namespace qnn::igemm::detail16 {

// One GEMM call, resolved to raw pointers (padded panels from PackedB16).
struct GemmArgs {
  int m = 0, n = 0, k = 0;
  const int16_t* a = nullptr;  // (m, k), row stride lda
  int lda = 0;
  const int16_t* b = nullptr;  // packed panels, see PackedB16
  std::ptrdiff_t panel_stride = 0;  // int16 elements
  int32_t* c = nullptr;             // (m, n), row stride ldc
  int ldc = 0;
  std::ptrdiff_t block_bytes = 0;   // packed B per n-block, kept in L2 (half of it)
};

// Per-ISA entry points (int16_gemm_<isa>.cpp). *_compiled() is false when the translation
// unit was built without its instruction set (then the gemm function must not be called).
bool avx2_compiled();
void gemm_avx2(const GemmArgs& g);
bool avxvnni_compiled();
void gemm_avxvnni(const GemmArgs& g);
bool avx512vnni_compiled();
void gemm_avx512vnni(const GemmArgs& g);

namespace {

// Packed B int16 elements between consecutive pairs of one panel.
constexpr int kPairElems = kPanelCols * kPair;

inline int min_int(int x, int y) { return x < y ? x : y; }

// 2 int16 of one A row as an int32 word (little-endian: p[0] in the low half).
struct LoadPair {
  int32_t operator()(const int16_t* p) const {
    int32_t w;
    std::memcpy(&w, p, sizeof w);
    return w;
  }
};

// The last int16 of a row (odd K), zero-padded, so the partial pair never reads past the row.
struct LoadPairTail {
  int32_t operator()(const int16_t* p) const { return static_cast<int32_t>(static_cast<uint16_t>(p[0])); }
};

// One pair q of the tile: acc += A rows [0, MR) at k = 2q, 2q+1 (2 int16 per row, read by
// `pair`: LoadPair, or LoadPairTail for the last k of an odd K) . B units at pair q.
template <class T, int MR, int NU, class Pair>
inline void pair_step(typename T::Acc (&acc)[MR][NU], const int16_t* const (&bp)[NU], const int16_t* a,
                      std::ptrdiff_t lda, int q, Pair pair) {
  typename T::B b[NU];
#pragma GCC unroll 16
  for (int j = 0; j < NU; ++j) b[j] = T::load_b(bp[j] + static_cast<std::ptrdiff_t>(q) * kPairElems);
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    const typename T::A av = T::a_from_pair(pair(a + r * lda + q * kPair));
#pragma GCC unroll 16
    for (int j = 0; j < NU; ++j) T::madd(acc[r][j], av, b[j]);
  }
}

// The micro-kernel: rows [row0, row0+MR) x units [unit0, unit0+NU) of C, full K.
template <class T, int MR, int NU>
void tile(const GemmArgs& g, int row0, int unit0) {
  constexpr int kUnitsPerPanel = kPanelCols / T::kUnitCols;
  const int16_t* bp[NU];
  typename T::Acc acc[MR][NU];
#pragma GCC unroll 16
  for (int j = 0; j < NU; ++j) {
    const int u = unit0 + j;
    bp[j] = g.b + (u / kUnitsPerPanel) * g.panel_stride + (u % kUnitsPerPanel) * (T::kUnitCols * kPair);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) acc[r][j] = T::zero();
  }
  const std::ptrdiff_t lda = g.lda;
  const int16_t* a = g.a + row0 * lda;
  const int kfull = g.k / kPair;
  for (int q = 0; q < kfull; ++q) pair_step<T, MR, NU>(acc, bp, a, lda, q, LoadPair{});
  if (g.k % kPair != 0) pair_step<T, MR, NU>(acc, bp, a, lda, kfull, LoadPairTail{});
  // Locals, not g's fields: int32 stores into C could alias them.
  const int n = g.n, ldc = g.ldc;
  int32_t* const c = g.c;
#pragma GCC unroll 16
  for (int j = 0; j < NU; ++j) {
    const int col0 = (unit0 + j) * T::kUnitCols;
    const int ncols = min_int(T::kUnitCols, n - col0);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) T::store_i32(c + static_cast<std::ptrdiff_t>(row0 + r) * ldc + col0, acc[r][j], ncols);
  }
}

using TileFn = void (*)(const GemmArgs&, int, int);

// The tile for mr rows (1..kMR) and nu units (1..kNU), for the edges of C.
template <class T, int... I>
TileFn edge_tile(int mr, int nu, std::integer_sequence<int, I...>) {
  static constexpr TileFn table[] = {&tile<T, I / T::kNU + 1, I % T::kNU + 1>...};
  return table[(mr - 1) * T::kNU + (nu - 1)];
}

// Blocked driver: n-blocks of B of at most g.block_bytes (held in L2 while all rows of A
// pass; the engine's shapes are one block, so each row tile of A is read once and stays in
// L1 while B streams from L2), row tiles of kMR, unit tiles of kNU.
template <class T>
void run(const GemmArgs& g) {
  const int units = (g.n + T::kUnitCols - 1) / T::kUnitCols;
  const std::ptrdiff_t unit_bytes =
      static_cast<std::ptrdiff_t>((g.k + kPair - 1) / kPair * kPair) * T::kUnitCols * sizeof(int16_t);
  int block_units = static_cast<int>(g.block_bytes / unit_bytes) / T::kNU * T::kNU;
  if (block_units < T::kNU) block_units = T::kNU;
  for (int u0 = 0; u0 < units; u0 += block_units) {
    const int u1 = min_int(units, u0 + block_units);
    for (int r = 0; r < g.m; r += T::kMR) {
      const int mr = min_int(T::kMR, g.m - r);
      for (int u = u0; u < u1; u += T::kNU) {
        const int nu = min_int(T::kNU, u1 - u);
        if (mr == T::kMR && nu == T::kNU) {
          tile<T, T::kMR, T::kNU>(g, r, u);
        } else {
          edge_tile<T>(mr, nu, std::make_integer_sequence<int, T::kMR * T::kNU>())(g, r, u);
        }
      }
    }
  }
}

}  // namespace
}  // namespace qnn::igemm::detail16
