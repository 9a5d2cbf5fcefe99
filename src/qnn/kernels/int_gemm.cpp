// Integer GEMM: packing, run-time ISA dispatch, the portable scalar path and the references.
// Contract: int_gemm.hpp and docs/quantization.md ("Integer GEMM").
#include "qnn/kernels/int_gemm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include <unistd.h>

#include "qnn/error.hpp"
#include "qnn/kernels/int_gemm_kernel.hpp"

namespace qnn::igemm {

namespace detail {
namespace {

// Portable path: the same packed layout and driver, 16 columns per unit in plain C++.
struct Scalar {
  static constexpr int kUnitCols = 16;
  static constexpr int kMR = 4, kNU = 1;
  struct Acc {
    int32_t v[kUnitCols];  // (16) int32
  };
  struct A {
    int32_t v[kQuad];  // (4) a0..a3
  };
  using B = const int8_t*;  // (16, 4) packed quad
  using Vec = Acc;

  static Acc init(const int32_t*) { return Acc{}; }
  static A a_from_word(int32_t w) {
    int8_t b[kQuad];
    std::memcpy(b, &w, sizeof b);
    return {{b[0], b[1], b[2], b[3]}};
  }
  static B load_b(const int8_t* p) { return p; }
  static void madd(Acc& acc, const A& a, B b) {
    for (int c = 0; c < kUnitCols; ++c) {
      int32_t s = 0;
      for (int i = 0; i < kQuad; ++i) s += a.v[i] * b[c * kQuad + i];
      acc.v[c] += s;
    }
  }
  static Vec finish(const Acc& acc) { return acc; }

  // The requantization contract in the floor form the SIMD paths use (int_gemm_ymm.hpp).
  static int32_t requant1(int32_t acc, int32_t bias, int32_t multiplier, int32_t shift) {
    const int32_t x = static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(bias));
    int32_t y;
    if (x == std::numeric_limits<int32_t>::min() && multiplier == std::numeric_limits<int32_t>::min()) {
      y = std::numeric_limits<int32_t>::max();
    } else {
      // Arithmetic right shift of a signed value (implementation-defined before C++20,
      // arithmetic on every supported compiler).
      y = static_cast<int32_t>((static_cast<int64_t>(x) * multiplier + (int64_t{1} << 30)) >> 31);
    }
    const int32_t mask = static_cast<int32_t>((uint32_t{1} << shift) - 1u);
    const int32_t threshold = (mask >> 1) + (y < 0 ? 1 : 0);
    const int32_t z = (y >> shift) + ((y & mask) > threshold ? 1 : 0);
    return z < kQMin ? kQMin : (z > kQMax ? kQMax : z);
  }
  struct Rq {
    const int32_t *bias, *multiplier, *shift;  // (16) each
  };
  static Rq requant_params(const int32_t* bias, const int32_t* multiplier, const int32_t* shift) {
    return {bias, multiplier, shift};
  }
  static Vec requant(const Vec& v, const Rq& rq) {
    Vec r;
    for (int c = 0; c < kUnitCols; ++c) r.v[c] = requant1(v.v[c], rq.bias[c], rq.multiplier[c], rq.shift[c]);
    return r;
  }
  static Vec load_i32(const int32_t* c) {
    Vec v;
    std::memcpy(v.v, c, sizeof v.v);
    return v;
  }
  static void store_i32(int32_t* c, const Vec& v, int n) {
    for (int i = 0; i < n; ++i) c[i] = v.v[i];
  }
  static void store_i8(int8_t* c, const Vec& v, int n) {
    for (int i = 0; i < n; ++i) c[i] = static_cast<int8_t>(v.v[i]);
  }
};

}  // namespace
}  // namespace detail

// ---------------------------------------------------------------------------- dispatch

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvxVnni: return "avxvnni";
    case Isa::kAvx512Vnni: return "avx512vnni";
  }
  return "unknown";
}

Isa parse_isa(const std::string& name) {
  for (Isa isa : kAllIsas) {
    if (name == isa_name(isa)) return isa;
  }
  throw Error("unknown integer GEMM ISA '" + name + "': use one of scalar, avx2, avxvnni, avx512vnni");
}

bool isa_available(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
#if defined(__x86_64__) || defined(__i386__)
    case Isa::kAvx2: return detail::avx2_compiled() && __builtin_cpu_supports("avx2");
    case Isa::kAvxVnni:
      return detail::avxvnni_compiled() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
    case Isa::kAvx512Vnni:
      return detail::avx512vnni_compiled() && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512vnni");
#else
    default: return false;
#endif
  }
  return false;
}

Isa best_isa() {
  for (Isa isa : {Isa::kAvx512Vnni, Isa::kAvxVnni, Isa::kAvx2}) {
    if (isa_available(isa)) return isa;
  }
  return Isa::kScalar;
}

namespace {

// $QNN_ISA or the best path; throws if the requested path cannot run here.
Isa resolve_active_isa() {
  const char* env = std::getenv("QNN_ISA");
  if (env == nullptr || *env == '\0') return best_isa();
  const Isa isa = parse_isa(env);
  if (!isa_available(isa)) {
    throw Error(std::string("QNN_ISA=") + env + " requests an instruction set this CPU (or this build) " +
                "lacks; unset QNN_ISA or use " + isa_name(best_isa()) + " or a slower path");
  }
  return isa;
}

}  // namespace

Isa active_isa() {
  static const Isa isa = resolve_active_isa();
  return isa;
}

// ---------------------------------------------------------------------------- packing

PackedB::PackedB(const int8_t* b, int k, int n, int ldb, BLayout layout) : k_(k), n_(n) {
  if (k < 1 || k > kMaxK || n < 1) {
    throw Error("PackedB: need 1 <= K <= " + std::to_string(kMaxK) + " and N >= 1, got K = " +
                std::to_string(k) + ", N = " + std::to_string(n));
  }
  const int min_ld = layout == BLayout::kKN ? n : k;
  if (ldb < min_ld) throw Error("PackedB: ldb = " + std::to_string(ldb) + " < " + std::to_string(min_ld));
  const int npanel = panels();
  const int nquad = k4() / kQuad;
  data_.assign(static_cast<std::size_t>(panel_stride()) * npanel, 0);
  colterm_.assign(static_cast<std::size_t>(npanel) * kPanelCols, 0);
  for (int kk = 0; kk < k; ++kk) {
    for (int j = 0; j < n; ++j) {
      const int8_t v = layout == BLayout::kKN ? b[static_cast<std::ptrdiff_t>(kk) * ldb + j]
                                              : b[static_cast<std::ptrdiff_t>(j) * ldb + kk];
      const int p = j / kPanelCols, c = j % kPanelCols, q = kk / kQuad, i = kk % kQuad;
      data_[(static_cast<std::size_t>(p) * nquad + q) * (kPanelCols * kQuad) + c * kQuad + i] = v;
      colterm_[j] -= 128 * v;
    }
  }
}

Requant::Requant(int n, const int32_t* bias, const int32_t* multiplier, const int32_t* shift) : n_(n) {
  if (n < 1) throw Error("Requant: need N >= 1, got " + std::to_string(n));
  const std::size_t padded = static_cast<std::size_t>((n + kPanelCols - 1) / kPanelCols * kPanelCols);
  bias_.assign(padded, 0);
  multiplier_.assign(padded, 0);
  shift_.assign(padded, 0);
  for (int j = 0; j < n; ++j) {
    if (shift[j] < 0 || shift[j] > 31) {
      throw Error("Requant: shift[" + std::to_string(j) + "] = " + std::to_string(shift[j]) +
                  " is outside [0, 31]; build multipliers with quantize_multiplier()");
    }
    bias_[j] = bias ? bias[j] : 0;
    multiplier_[j] = multiplier[j];
    shift_[j] = shift[j];
  }
}

// ---------------------------------------------------------------------------- GEMM entry points

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

// Checks the sizes and runs the selected path.
void dispatch(detail::GemmArgs& g, const PackedB& b, Isa isa) {
  if (b.n() == 0) throw Error("integer GEMM: B is not packed");
  if (g.m < 0) throw Error("integer GEMM: M = " + std::to_string(g.m) + " < 0");
  if (g.lda < b.k() || g.ldc < b.n()) {
    throw Error("integer GEMM: lda = " + std::to_string(g.lda) + " < K = " + std::to_string(b.k()) +
                " or ldc = " + std::to_string(g.ldc) + " < N = " + std::to_string(b.n()));
  }
  if (!isa_available(isa)) {
    throw Error(std::string("integer GEMM: path ") + isa_name(isa) + " is not available on this CPU/build");
  }
  if (g.m == 0) return;
  g.n = b.n();
  g.k = b.k();
  g.b = b.data();
  g.panel_stride = b.panel_stride();
  g.colterm = b.neg128_colsum();
  g.block_bytes = block_bytes();
  switch (isa) {
    case Isa::kScalar: detail::gemm<detail::Scalar>(g); break;
    case Isa::kAvx2: detail::gemm_avx2(g); break;
    case Isa::kAvxVnni: detail::gemm_avxvnni(g); break;
    case Isa::kAvx512Vnni: detail::gemm_avx512vnni(g); break;
  }
}

}  // namespace

void gemm_s8s8s32(int m, const int8_t* a, int lda, const PackedB& b, int32_t* c, int ldc, Isa isa) {
  detail::GemmArgs g;
  g.m = m;
  g.a = a;
  g.lda = lda;
  g.c32 = c;
  g.ldc = ldc;
  dispatch(g, b, isa);
}

void gemm_s8s8s8(int m, const int8_t* a, int lda, const PackedB& b, const Requant& rq, int8_t* c, int ldc,
                 Isa isa) {
  if (rq.n() != b.n()) {
    throw Error("integer GEMM: requantization has " + std::to_string(rq.n()) + " channels, B has N = " +
                std::to_string(b.n()));
  }
  detail::GemmArgs g;
  g.m = m;
  g.a = a;
  g.lda = lda;
  g.bias = rq.bias();
  g.multiplier = rq.multiplier();
  g.shift = rq.shift();
  g.c8 = c;
  g.ldc = ldc;
  dispatch(g, b, isa);
}

// ---------------------------------------------------------------------------- references

void gemm_s8s8s32_reference(int m, int n, int k, const int8_t* a, int lda, const int8_t* b, int ldb, int32_t* c,
                            int ldc) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      int32_t acc = 0;
      for (int kk = 0; kk < k; ++kk) {
        acc += int32_t{a[static_cast<std::ptrdiff_t>(i) * lda + kk]} * int32_t{b[static_cast<std::ptrdiff_t>(kk) * ldb + j]};
      }
      c[static_cast<std::ptrdiff_t>(i) * ldc + j] = acc;
    }
  }
}

// Transcribed from gemmlowp fixedpoint.h.
int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  const bool overflow = a == b && a == std::numeric_limits<int32_t>::min();
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = ab >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
  const int32_t ab_x2_high32 = static_cast<int32_t>((ab + nudge) / (int64_t{1} << 31));
  return overflow ? std::numeric_limits<int32_t>::max() : ab_x2_high32;
}

// Transcribed from gemmlowp fixedpoint.h.
int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int8_t requantize_reference(int32_t acc, int32_t bias, int32_t multiplier, int shift) {
  const int32_t x = static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(bias));
  const int32_t z = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, multiplier), shift);
  return static_cast<int8_t>(z < kQMin ? kQMin : (z > kQMax ? kQMax : z));
}

void requantize_reference(int m, int n, const int32_t* acc, int ldacc, const int32_t* bias, const int32_t* multiplier,
                          const int32_t* shift, int8_t* c, int ldc) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      c[static_cast<std::ptrdiff_t>(i) * ldc + j] = requantize_reference(
          acc[static_cast<std::ptrdiff_t>(i) * ldacc + j], bias ? bias[j] : 0, multiplier[j], shift[j]);
    }
  }
}

void quantize_multiplier(double real, int32_t* multiplier, int32_t* shift) {
  if (!(real >= 0.0 && real < 1.0)) {
    throw Error("quantize_multiplier: the real scale " + std::to_string(real) +
                " must be in [0, 1); an int8 output scale finer than the accumulator's is not supported");
  }
  if (real == 0.0) {
    *multiplier = 0;
    *shift = 0;
    return;
  }
  int exponent = 0;
  const double mantissa = std::frexp(real, &exponent);  // real = mantissa * 2^exponent, mantissa in [0.5, 1)
  int64_t q = std::llround(mantissa * static_cast<double>(int64_t{1} << 31));
  if (q == (int64_t{1} << 31)) {  // mantissa rounded up to 1
    q /= 2;
    ++exponent;
  }
  int s = -exponent;
  if (s < 0) {  // real rounded up to 1: take the largest representable scale
    q = std::numeric_limits<int32_t>::max();
    s = 0;
  }
  if (s > 31) {  // below 2^-32: keep shift 31 and give up mantissa bits
    const int extra = s - 31;
    q = extra >= 63 ? 0 : (q + (int64_t{1} << (extra - 1))) >> extra;
    s = 31;
  }
  *multiplier = static_cast<int32_t>(q);
  *shift = s;
}

}  // namespace qnn::igemm
