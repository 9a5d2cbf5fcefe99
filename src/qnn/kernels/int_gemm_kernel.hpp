// Internal: the one blocked GEMM driver and micro-kernel template, instantiated per ISA by
// int_gemm.cpp (scalar) and int_gemm_<isa>.cpp with an ISA "traits" type.
//
// Everything after the includes is in an anonymous namespace: each ISA translation unit is
// compiled with its own -m flags, and internal linkage keeps the linker from merging an
// AVX-512 instantiation into code that runs on a CPU without AVX-512.
//
// A traits type T provides:
//   kUnitCols            int32 columns per accumulator unit (16 or 8; divides kPanelCols)
//   kMR, kNU             register tile: kMR rows x kNU units
//   Acc, A, B, Vec       accumulator of one unit, broadcast A operand, B operand, int32 result
//   init(colterm)        accumulator start (colterm = -128*colsum of the unit's columns)
//   a_from_word(w)       A operand from 4 consecutive int8 of one row, packed in an int32
//   load_b(p)            B operand of one unit and quad (p: 4*kUnitCols packed bytes)
//   madd(acc, a, b)      acc += a . b over the quad, per column
//   finish(acc) -> Vec   int32 columns of the unit, in order
//   Rq, requant_params(bias, multiplier, shift)  per-unit requantization constants
//   requant(v, rq) -> Vec                        the requantization contract, clamped
//   store_i32(c, v, n), store_i8(c, v, n)        store the first n columns
//   load_i32(c) -> Vec                           load kUnitCols int32
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "qnn/kernels/int_gemm.hpp"

namespace qnn::igemm::detail {

// One GEMM call, resolved to raw pointers (padded arrays from PackedB / Requant).
struct GemmArgs {
  int m = 0, n = 0, k = 0;
  const int8_t* a = nullptr;  // (m, k), row stride lda
  int lda = 0;
  const int8_t* b = nullptr;  // packed panels, see PackedB
  std::ptrdiff_t panel_stride = 0;
  const int32_t* colterm = nullptr;     // (padded n) -128*colsum(B)
  const int32_t* bias = nullptr;        // (padded n), requantizing calls only
  const int32_t* multiplier = nullptr;  // (padded n)
  const int32_t* shift = nullptr;       // (padded n)
  int32_t* c32 = nullptr;               // (m, n) int32 output, or
  int8_t* c8 = nullptr;                 // (m, n) int8 output (requantizing)
  int ldc = 0;
  std::ptrdiff_t block_bytes = 0;       // packed B per n-block, kept in L2 (half of it)
};

// Per-ISA entry points (int_gemm_<isa>.cpp). *_compiled() is false when the translation
// unit was built without its instruction set (then the gemm function must not be called).
bool avx2_compiled();
void gemm_avx2(const GemmArgs& g);
bool avxvnni_compiled();
void gemm_avxvnni(const GemmArgs& g);
bool avx512vnni_compiled();
void gemm_avx512vnni(const GemmArgs& g);

namespace {

// Packed B bytes between consecutive quads of one panel.
constexpr int kQuadBytes = kPanelCols * kQuad;

inline int min_int(int x, int y) { return x < y ? x : y; }

// 4 int8 of one A row as an int32 word (little-endian: p[0] in the low byte).
inline int32_t load_word(const int8_t* p) {
  int32_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
}

// The last `count` (1..3) int8 of a row, zero-padded, so the partial quad never reads past
// the row. Fixed-size byte loads: no memcpy call in the loop.
inline int32_t load_word_tail(const int8_t* p, int count) {
  const uint32_t b0 = static_cast<uint8_t>(p[0]);
  const uint32_t b1 = count > 1 ? static_cast<uint8_t>(p[1]) : 0u;
  const uint32_t b2 = count > 2 ? static_cast<uint8_t>(p[2]) : 0u;
  return static_cast<int32_t>(b0 | (b1 << 8) | (b2 << 16));
}

// The micro-kernel: rows [row0, row0+MR) x units [unit0, unit0+NU) of C, full K.
template <class T, bool kRequant, int MR, int NU>
void tile(const GemmArgs& g, int row0, int unit0) {
  constexpr int kUnitsPerPanel = kPanelCols / T::kUnitCols;
  const int8_t* bp[NU];
  typename T::Acc acc[MR][NU];
#pragma GCC unroll 16
  for (int j = 0; j < NU; ++j) {
    const int u = unit0 + j;
    bp[j] = g.b + (u / kUnitsPerPanel) * g.panel_stride + (u % kUnitsPerPanel) * (T::kUnitCols * kQuad);
    const typename T::Acc start = T::init(g.colterm + u * T::kUnitCols);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) acc[r][j] = start;
  }
  const int8_t* a = g.a + static_cast<std::ptrdiff_t>(row0) * g.lda;
  const int kfull = g.k / kQuad;
  const int krem = g.k % kQuad;
  for (int q = 0; q < kfull; ++q) {
    typename T::B b[NU];
#pragma GCC unroll 16
    for (int j = 0; j < NU; ++j) b[j] = T::load_b(bp[j] + static_cast<std::ptrdiff_t>(q) * kQuadBytes);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const typename T::A av = T::a_from_word(load_word(a + r * g.lda + q * kQuad));
#pragma GCC unroll 16
      for (int j = 0; j < NU; ++j) T::madd(acc[r][j], av, b[j]);
    }
  }
  if (krem != 0) {
    typename T::B b[NU];
#pragma GCC unroll 16
    for (int j = 0; j < NU; ++j) b[j] = T::load_b(bp[j] + static_cast<std::ptrdiff_t>(kfull) * kQuadBytes);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const typename T::A av = T::a_from_word(load_word_tail(a + r * g.lda + kfull * kQuad, krem));
#pragma GCC unroll 16
      for (int j = 0; j < NU; ++j) T::madd(acc[r][j], av, b[j]);
    }
  }
  // Epilogue. Locals, not g's fields: int8/int32 stores into C could alias them.
  const int n = g.n, ldc = g.ldc;
  if constexpr (kRequant) {
    // The sums go through an L1 buffer first: that frees the accumulator registers, so the
    // requantization constants stay in registers instead of being rebuilt for every vector.
    alignas(64) int32_t sums[NU][MR][T::kUnitCols];
#pragma GCC unroll 16
    for (int j = 0; j < NU; ++j) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) T::store_i32(sums[j][r], T::finish(acc[r][j]), T::kUnitCols);
    }
    int8_t* const c8 = g.c8;
    for (int j = 0; j < NU; ++j) {
      const int col0 = (unit0 + j) * T::kUnitCols;
      const int ncols = min_int(T::kUnitCols, n - col0);
      const typename T::Rq rq = T::requant_params(g.bias + col0, g.multiplier + col0, g.shift + col0);
      for (int r = 0; r < MR; ++r) {
        T::store_i8(c8 + static_cast<std::ptrdiff_t>(row0 + r) * ldc + col0, T::requant(T::load_i32(sums[j][r]), rq),
                    ncols);
      }
    }
  } else {
    int32_t* const c32 = g.c32;
#pragma GCC unroll 16
    for (int j = 0; j < NU; ++j) {
      const int col0 = (unit0 + j) * T::kUnitCols;
      const int ncols = min_int(T::kUnitCols, n - col0);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        T::store_i32(c32 + static_cast<std::ptrdiff_t>(row0 + r) * ldc + col0, T::finish(acc[r][j]), ncols);
      }
    }
  }
}

using TileFn = void (*)(const GemmArgs&, int, int);

// The tile for mr rows (1..kMR) and nu units (1..kNU), for the edges of C.
template <class T, bool kRequant, int... I>
TileFn edge_tile(int mr, int nu, std::integer_sequence<int, I...>) {
  static constexpr TileFn table[] = {&tile<T, kRequant, I / T::kNU + 1, I % T::kNU + 1>...};
  return table[(mr - 1) * T::kNU + (nu - 1)];
}

// Blocked driver: n-blocks of B of at most g.block_bytes (held in L2 while all rows of A
// pass; the common case is one block, so each row tile of A is read once), row tiles of
// kMR, unit tiles of kNU.
template <class T, bool kRequant>
void run(const GemmArgs& g) {
  const int units = (g.n + T::kUnitCols - 1) / T::kUnitCols;
  const std::ptrdiff_t unit_bytes = static_cast<std::ptrdiff_t>((g.k + kQuad - 1) / kQuad * kQuad) * T::kUnitCols;
  int block_units = static_cast<int>(g.block_bytes / unit_bytes) / T::kNU * T::kNU;
  if (block_units < T::kNU) block_units = T::kNU;
  for (int u0 = 0; u0 < units; u0 += block_units) {
    const int u1 = min_int(units, u0 + block_units);
    for (int r = 0; r < g.m; r += T::kMR) {
      const int mr = min_int(T::kMR, g.m - r);
      for (int u = u0; u < u1; u += T::kNU) {
        const int nu = min_int(T::kNU, u1 - u);
        if (mr == T::kMR && nu == T::kNU) {
          tile<T, kRequant, T::kMR, T::kNU>(g, r, u);
        } else {
          edge_tile<T, kRequant>(mr, nu, std::make_integer_sequence<int, T::kMR * T::kNU>())(g, r, u);
        }
      }
    }
  }
}

// Entry point of one ISA: int32 or requantized int8 output.
template <class T>
void gemm(const GemmArgs& g) {
  if (g.c8 != nullptr) {
    run<T, true>(g);
  } else {
    run<T, false>(g);
  }
}

}  // namespace
}  // namespace qnn::igemm::detail
