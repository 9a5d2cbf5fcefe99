// int16 GEMM (w8a16): packing, dispatch to the ISA paths, the portable scalar path and the
// reference. Contract: int16_gemm.hpp and docs/quantization.md ("int16 GEMM (w8a16)").
#include "qnn/kernels/int16_gemm.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include <unistd.h>

#include "qnn/error.hpp"
#include "qnn/kernels/int16_gemm_kernel.hpp"

namespace qnn::igemm {

namespace detail16 {
namespace {

// Portable path: the same packed layout and driver, 16 columns per unit in plain C++. Sums
// are kept in uint32 so that they wrap modulo 2^32 like the SIMD paths (no signed overflow).
struct Scalar {
  static constexpr int kUnitCols = 16;
  static constexpr int kMR = 4, kNU = 1;
  struct Acc {
    uint32_t v[kUnitCols];  // (16) int32 bits
  };
  struct A {
    int32_t lo, hi;  // a[2q], a[2q+1]
  };
  using B = const int16_t*;  // (16, 2) packed pair

  static Acc zero() { return Acc{}; }
  static A a_from_pair(int32_t w) {
    int16_t h[kPair];
    std::memcpy(h, &w, sizeof h);
    return {h[0], h[1]};
  }
  static B load_b(const int16_t* p) { return p; }
  // One pair sum is at most 2 * 32768 * 128 = 2^23 in magnitude: exact in int.
  static void madd(Acc& acc, const A& a, B b) {
    for (int c = 0; c < kUnitCols; ++c) {
      acc.v[c] += static_cast<uint32_t>(a.lo * b[c * kPair] + a.hi * b[c * kPair + 1]);
    }
  }
  static void store_i32(int32_t* c, const Acc& acc, int n) {
    for (int i = 0; i < n; ++i) c[i] = static_cast<int32_t>(acc.v[i]);
  }
};

}  // namespace
}  // namespace detail16

int max_abs_a16(int k) {
  if (k < 0) throw Error("max_abs_a16: K = " + std::to_string(k) + " < 0");
  if (k == 0) return 32767;
  const int64_t bound = (int64_t{1} << 31) - 1;
  return static_cast<int>(std::min<int64_t>(32767, bound / (int64_t{127} * k)));
}

// ---------------------------------------------------------------------------- packing

PackedB16::PackedB16(const int8_t* b, int k, int n, int ldb, BLayout layout) : k_(k), n_(n) {
  if (k < 1 || k > kMaxK16 || n < 1) {
    throw Error("PackedB16: need 1 <= K <= " + std::to_string(kMaxK16) + " and N >= 1, got K = " +
                std::to_string(k) + ", N = " + std::to_string(n));
  }
  const int min_ld = layout == BLayout::kKN ? n : k;
  if (ldb < min_ld) throw Error("PackedB16: ldb = " + std::to_string(ldb) + " < " + std::to_string(min_ld));
  const int npair = k2() / kPair;
  data_.assign(static_cast<std::size_t>(panel_stride()) * panels(), 0);
  for (int kk = 0; kk < k; ++kk) {
    for (int j = 0; j < n; ++j) {
      const int8_t v = layout == BLayout::kKN ? b[static_cast<std::ptrdiff_t>(kk) * ldb + j]
                                              : b[static_cast<std::ptrdiff_t>(j) * ldb + kk];
      if (v == -128) {
        throw Error("PackedB16: B(" + std::to_string(kk) + ", " + std::to_string(j) +
                    ") = -128; w8a16 weights are symmetric int8 in [-127, 127]");
      }
      const int p = j / kPanelCols, c = j % kPanelCols, q = kk / kPair, i = kk % kPair;
      data_[(static_cast<std::size_t>(p) * npair + q) * (kPanelCols * kPair) + c * kPair + i] = v;
    }
  }
}

// ---------------------------------------------------------------------------- GEMM entry point

namespace {

// Packed B per n-block: half the L2 cache (the rest holds A and C tiles), 256 KiB if the OS
// does not say.
std::ptrdiff_t block_bytes() {
  static const std::ptrdiff_t bytes = [] {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    const std::ptrdiff_t half = l2 > 0 ? l2 / 2 : 256 * 1024;
    return std::min<std::ptrdiff_t>(std::max<std::ptrdiff_t>(half, 64 * 1024), 4 * 1024 * 1024);
  }();
  return bytes;
}

// isa_available(isa), and the int16 translation unit of that path compiled with its
// instruction set.
bool available16(Isa isa) {
  if (!isa_available(isa)) return false;
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2: return detail16::avx2_compiled();
    case Isa::kAvxVnni: return detail16::avxvnni_compiled();
    case Isa::kAvx512Vnni: return detail16::avx512vnni_compiled();
  }
  return false;
}

}  // namespace

void gemm_s16s8s32(int m, const int16_t* a, int lda, const PackedB16& b, int32_t* c, int ldc, Isa isa) {
  if (b.n() == 0) throw Error("int16 GEMM: B is not packed");
  if (m < 0) throw Error("int16 GEMM: M = " + std::to_string(m) + " < 0");
  if (lda < b.k() || ldc < b.n()) {
    throw Error("int16 GEMM: lda = " + std::to_string(lda) + " < K = " + std::to_string(b.k()) + " or ldc = " +
                std::to_string(ldc) + " < N = " + std::to_string(b.n()));
  }
  if (!available16(isa)) {
    throw Error(std::string("int16 GEMM: path ") + isa_name(isa) + " is not available on this CPU/build");
  }
  if (m == 0) return;
  detail16::GemmArgs g;
  g.m = m;
  g.n = b.n();
  g.k = b.k();
  g.a = a;
  g.lda = lda;
  g.b = b.data();
  g.panel_stride = b.panel_stride();
  g.c = c;
  g.ldc = ldc;
  g.block_bytes = block_bytes();
  switch (isa) {
    case Isa::kScalar: detail16::run<detail16::Scalar>(g); break;
    case Isa::kAvx2: detail16::gemm_avx2(g); break;
    case Isa::kAvxVnni: detail16::gemm_avxvnni(g); break;
    case Isa::kAvx512Vnni: detail16::gemm_avx512vnni(g); break;
  }
}

// ---------------------------------------------------------------------------- reference

void gemm_s16s8s32_reference(int m, int n, int k, const int16_t* a, int lda, const int8_t* b, int ldb, int32_t* c,
                             int ldc) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      int64_t acc = 0;  // |acc| <= 32768 * 128 * K < 2^63
      for (int kk = 0; kk < k; ++kk) {
        const int64_t x = a[static_cast<std::ptrdiff_t>(i) * lda + kk];
        const int64_t w = b[static_cast<std::ptrdiff_t>(kk) * ldb + j];
        acc += x * w;
      }
      if (acc < INT32_MIN || acc > INT32_MAX) {
        throw Error("gemm_s16s8s32_reference: C(" + std::to_string(i) + ", " + std::to_string(j) + ") = " +
                    std::to_string(acc) + " does not fit in int32; keep max|A| <= max_abs_a16(K)");
      }
      c[static_cast<std::ptrdiff_t>(i) * ldc + j] = static_cast<int32_t>(acc);
    }
  }
}

}  // namespace qnn::igemm
