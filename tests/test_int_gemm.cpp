// Integer GEMM paths (src/qnn/kernels/int_gemm.hpp) against the one reference, bit-exact: random
// inputs, awkward sizes, saturating values, the requantization epilogue over the whole
// int32 range. Each test body runs on every ISA path; paths this CPU lacks are skipped.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "qnn/error.hpp"
#include "qnn/kernels/int_gemm.hpp"

namespace qnn::igemm {
// gtest prints test parameters through PrintTo, found by argument-dependent lookup.
void PrintTo(Isa isa, std::ostream* os) { *os << isa_name(isa); }
}  // namespace qnn::igemm

namespace {

using qnn::igemm::BLayout;
using qnn::igemm::Isa;
using qnn::igemm::PackedB;
using qnn::igemm::Requant;

constexpr int32_t kI32Min = std::numeric_limits<int32_t>::min();
constexpr int32_t kI32Max = std::numeric_limits<int32_t>::max();
// Written into the padding of C (columns n..ldc-1); a kernel must leave it alone.
constexpr int32_t kSentinel32 = 0x5a5a5a5a;
constexpr int8_t kSentinel8 = 0x5a;

// (rows, cols) int8 matrix with row stride ld, entries uniform in [lo, hi].
std::vector<int8_t> random_i8(std::mt19937& rng, int rows, int ld, int lo, int hi) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int8_t> v(static_cast<std::size_t>(rows) * ld);
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  return v;
}

// (rows, cols) int8 matrix with row stride ld, entries drawn from {x, y}.
std::vector<int8_t> extremes_i8(std::mt19937& rng, int rows, int ld, int8_t x, int8_t y) {
  std::bernoulli_distribution d(0.5);
  std::vector<int8_t> v(static_cast<std::size_t>(rows) * ld);
  for (auto& e : v) e = d(rng) ? x : y;
  return v;
}

// Equality of the (m, n) blocks of two matrices with row stride ld, plus the untouched
// padding columns of `got`; names the first mismatch.
template <class T>
::testing::AssertionResult same_matrix(const std::vector<T>& got, const std::vector<T>& want, int m, int n,
                                       int ld, T sentinel) {
  int bad = 0;
  std::string first;
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < ld; ++j) {
      const std::size_t at = static_cast<std::size_t>(i) * ld + j;
      const T expect = j < n ? want[at] : sentinel;
      if (got[at] != expect) {
        if (bad++ == 0) {
          first = "C(" + std::to_string(i) + ", " + std::to_string(j) + ") = " + std::to_string(got[at]) +
                  ", expected " + std::to_string(expect) + (j < n ? "" : " (padding)");
        }
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " mismatches in (" << m << ", " << n << "); first " << first;
}

// B (k, n) as (n, k) row-major with row stride ld.
std::vector<int8_t> transpose(const std::vector<int8_t>& b, int k, int n, int ldb, int ld) {
  std::vector<int8_t> t(static_cast<std::size_t>(n) * ld, 0);
  for (int kk = 0; kk < k; ++kk) {
    for (int j = 0; j < n; ++j) t[static_cast<std::size_t>(j) * ld + kk] = b[static_cast<std::size_t>(kk) * ldb + j];
  }
  return t;
}

class IntGemm : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!qnn::igemm::isa_available(GetParam())) {
      GTEST_SKIP() << "the " << qnn::igemm::isa_name(GetParam()) << " path is not available on this CPU/build";
    }
  }

  // int32 GEMM of the given A (m, k; stride lda) and B (k, n; stride ldb) against the
  // reference, with ldc = n + 3 and B packed from both layouts.
  ::testing::AssertionResult check_s32(int m, int n, int k, const std::vector<int8_t>& a, int lda,
                                       const std::vector<int8_t>& b, int ldb) {
    const int ldc = n + 3;
    std::vector<int32_t> want(static_cast<std::size_t>(m) * ldc, kSentinel32);
    qnn::igemm::gemm_s8s8s32_reference(m, n, k, a.data(), lda, b.data(), ldb, want.data(), ldc);
    for (BLayout layout : {BLayout::kKN, BLayout::kNK}) {
      const std::vector<int8_t> bt = transpose(b, k, n, ldb, k + 1);
      const PackedB pb = layout == BLayout::kKN ? PackedB(b.data(), k, n, ldb, layout)
                                                : PackedB(bt.data(), k, n, k + 1, layout);
      std::vector<int32_t> got(static_cast<std::size_t>(m) * ldc, kSentinel32);
      qnn::igemm::gemm_s8s8s32(m, a.data(), lda, pb, got.data(), ldc, GetParam());
      auto r = same_matrix(got, want, m, n, ldc, kSentinel32);
      if (!r) return r << " (M, N, K) = (" << m << ", " << n << ", " << k << ")"
                       << (layout == BLayout::kNK ? ", B packed from (N, K)" : "");
    }
    return ::testing::AssertionSuccess();
  }

  // Requantizing GEMM against reference GEMM + reference requantization, ldc = n + 5.
  ::testing::AssertionResult check_s8(int m, int n, int k, const std::vector<int8_t>& a, int lda,
                                      const std::vector<int8_t>& b, int ldb, const std::vector<int32_t>& bias,
                                      const std::vector<int32_t>& mult, const std::vector<int32_t>& shift) {
    std::vector<int32_t> acc(static_cast<std::size_t>(m) * n);
    qnn::igemm::gemm_s8s8s32_reference(m, n, k, a.data(), lda, b.data(), ldb, acc.data(), n);
    const int ldc = n + 5;
    std::vector<int8_t> want(static_cast<std::size_t>(m) * ldc, kSentinel8);
    qnn::igemm::requantize_reference(m, n, acc.data(), n, bias.data(), mult.data(), shift.data(), want.data(), ldc);
    const PackedB pb(b.data(), k, n, ldb);
    const Requant rq(n, bias.data(), mult.data(), shift.data());
    std::vector<int8_t> got(static_cast<std::size_t>(m) * ldc, kSentinel8);
    qnn::igemm::gemm_s8s8s8(m, a.data(), lda, pb, rq, got.data(), ldc, GetParam());
    auto r = same_matrix(got, want, m, n, ldc, kSentinel8);
    if (!r) r << " (M, N, K) = (" << m << ", " << n << ", " << k << ")";
    return r;
  }
};

// Sizes 1..10 and 2^n +- 1 around the vector widths (8, 16) and the register tiles.
const std::vector<int> kAwkward = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 33, 63, 65, 127, 129};

TEST_P(IntGemm, AwkwardSizesRandom) {
  std::mt19937 rng(1234);
  for (int m : kAwkward) {
    for (int n : kAwkward) {
      for (int k : kAwkward) {
        const int lda = k + (m % 3), ldb = n + (k % 2);
        const auto a = random_i8(rng, m, lda, -128, 127);
        const auto b = random_i8(rng, k, ldb, -128, 127);
        ASSERT_TRUE(check_s32(m, n, k, a, lda, b, ldb));
      }
    }
  }
}

TEST_P(IntGemm, ModelShapesRandom) {
  std::mt19937 rng(99);
  // (rows, K, N): embedding 1 -> 25 -> 50 -> 100 (edges), fitting 1600 -> 240 -> 240 (atoms).
  const int shapes[][3] = {{333, 25, 50}, {333, 50, 100}, {192, 1600, 240}, {193, 240, 240}, {61, 240, 1}};
  for (const auto& s : shapes) {
    const auto a = random_i8(rng, s[0], s[1], -128, 127);
    const auto b = random_i8(rng, s[1], s[2], -128, 127);
    ASSERT_TRUE(check_s32(s[0], s[2], s[1], a, s[1], b, s[2]));
  }
}

// K large enough that B is split into several n-blocks (each at most half the L2 cache,
// capped at 4 MiB) with a partial last block.
TEST_P(IntGemm, SeveralColumnBlocks) {
  std::mt19937 rng(3);
  const int m = 11, k = 20001, n = 300;
  const auto a = random_i8(rng, m, k, -128, 127);
  const auto b = random_i8(rng, k, n, -128, 127);
  ASSERT_TRUE(check_s32(m, n, k, a, k, b, n));
}

// All-extreme operands: the largest |acc| (up to 128*128*K), the u8 trick's wrapping
// intermediates ((a+128)*b sums exceed int32 for large K), and K at the contract's limit.
TEST_P(IntGemm, SaturatingValues) {
  std::mt19937 rng(7);
  const int8_t lo = -128, hi = 127;
  for (int k : {1600, 1601, 1603}) {
    for (auto [x, y] : {std::pair<int8_t, int8_t>{lo, lo}, {lo, hi}, {hi, hi}, {hi, lo}}) {
      const int m = 13, n = 35;
      const std::vector<int8_t> a(static_cast<std::size_t>(m) * k, x);
      const std::vector<int8_t> b(static_cast<std::size_t>(k) * n, y);
      ASSERT_TRUE(check_s32(m, n, k, a, k, b, n));
    }
    const int m = 29, n = 241;
    ASSERT_TRUE(check_s32(m, n, k, extremes_i8(rng, m, k, lo, hi), k, extremes_i8(rng, k, n, lo, hi), n));
  }
  const int k = qnn::igemm::kMaxK, m = 7, n = 17;
  const std::vector<int8_t> a(static_cast<std::size_t>(m) * k, lo);
  std::vector<int8_t> b(static_cast<std::size_t>(k) * n, lo);
  for (int j = 0; j < n; j += 2) {
    for (int kk = 0; kk < k; ++kk) b[static_cast<std::size_t>(kk) * n + j] = hi;
  }
  ASSERT_TRUE(check_s32(m, n, k, a, k, b, n));  // +-128*128*kMaxK, just inside int32
}

TEST_P(IntGemm, RequantRandom) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int32_t> any(kI32Min, kI32Max);
  std::uniform_int_distribution<int32_t> sh(0, 31);
  for (int m : {1, 5, 7, 17, 64}) {
    for (int n : {1, 9, 16, 50, 100}) {
      for (int k : {3, 25, 50, 240}) {
        const auto a = random_i8(rng, m, k, -128, 127);
        const auto b = random_i8(rng, k, n, -128, 127);
        std::vector<int32_t> bias(n), mult(n), shift(n);
        for (int j = 0; j < n; ++j) {
          int32_t real_mult;
          int32_t real_shift;
          qnn::igemm::quantize_multiplier(std::ldexp(1.0 + (j % 7) / 7.0, -(4 + j % 20)), &real_mult, &real_shift);
          // Mix realistic multipliers with arbitrary int32 ones.
          mult[j] = j % 3 == 0 ? any(rng) : real_mult;
          shift[j] = j % 3 == 0 ? sh(rng) : real_shift;
          bias[j] = j % 4 == 0 ? any(rng) : any(rng) % 100000;
        }
        ASSERT_TRUE(check_s8(m, n, k, a, k, b, n, bias, mult, shift));
      }
    }
  }
}

// K = 1 with A = 1 and B = 1 makes acc = 1, so acc + bias reaches every int32 (and wraps at
// INT32_MAX); multipliers 2^30 and shifts >= 1 produce exact rounding ties.
TEST_P(IntGemm, RequantTiesClampingAndWrap) {
  std::mt19937 rng(11);
  const int m = 9, k = 1;
  const std::vector<int32_t> special_x = {kI32Min, kI32Min + 1, -257, -256, -255, -3, -2, -1, 0, 1, 2, 3,
                                          127, 128, 255, 256, 257, kI32Max - 1, kI32Max};
  const std::vector<int32_t> special_mult = {kI32Min, kI32Min + 1, -(1 << 30), -1, 0, 1, 1 << 30, (1 << 30) + 1,
                                             kI32Max};
  std::vector<int32_t> bias, mult, shift;
  for (int32_t x : special_x) {
    for (int32_t mu : special_mult) {
      for (int32_t s : {0, 1, 2, 7, 30, 31}) {
        // acc = 1 is added back by the GEMM; x - 1 wraps for x = INT32_MIN.
        bias.push_back(static_cast<int32_t>(static_cast<uint32_t>(x) - 1u));
        mult.push_back(mu);
        shift.push_back(s);
      }
    }
  }
  const int n = static_cast<int>(bias.size());
  std::vector<int8_t> a(static_cast<std::size_t>(m) * k, 1);
  a[3] = 0;   // acc = 0 in row 3: bias alone
  a[5] = -1;  // acc = -1 in row 5
  const std::vector<int8_t> b(static_cast<std::size_t>(k) * n, 1);
  ASSERT_TRUE(check_s8(m, n, k, a, k, b, n, bias, mult, shift));

  // Small accumulators with multiplier 1/2 and power-of-two shifts: ties everywhere, and
  // multiplier ~1 with shift 0: clamping at +-127.
  for (int32_t mu : {1 << 30, kI32Max}) {
    const int mm = 40, nn = 33, kk = 6;
    const auto aa = random_i8(rng, mm, kk, -3, 3);
    const auto bb = random_i8(rng, kk, nn, -128, 127);
    std::vector<int32_t> bi(nn), mu_v(nn, mu), sh(nn);
    for (int j = 0; j < nn; ++j) {
      bi[j] = j - 16;
      sh[j] = mu == kI32Max ? 0 : j % 4;
    }
    ASSERT_TRUE(check_s8(mm, nn, kk, aa, kk, bb, nn, bi, mu_v, sh));
  }
}

std::string isa_param_name(const ::testing::TestParamInfo<Isa>& info) {
  return qnn::igemm::isa_name(info.param);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, IntGemm, ::testing::ValuesIn(qnn::igemm::kAllIsas), isa_param_name);

// ---------------------------------------------------------------------------- references

// Values worked by hand from the gemmlowp definitions.
TEST(IntGemmReference, SaturatingRoundingDoublingHighMul) {
  using qnn::igemm::saturating_rounding_doubling_high_mul;
  EXPECT_EQ(saturating_rounding_doubling_high_mul(kI32Min, kI32Min), kI32Max);
  EXPECT_EQ(saturating_rounding_doubling_high_mul(kI32Max, kI32Max), kI32Max - 1);
  EXPECT_EQ(saturating_rounding_doubling_high_mul(kI32Min, kI32Max), kI32Min + 1);
  EXPECT_EQ(saturating_rounding_doubling_high_mul(100, 1 << 30), 50);  // x * 0.5
  EXPECT_EQ(saturating_rounding_doubling_high_mul(3, 1 << 30), 2);     // 1.5 -> 2 (half up)
  EXPECT_EQ(saturating_rounding_doubling_high_mul(-3, 1 << 30), -1);   // -1.5 -> -1 (half up)
  EXPECT_EQ(saturating_rounding_doubling_high_mul(-1, 1 << 30), 0);    // -0.5 -> 0
  EXPECT_EQ(saturating_rounding_doubling_high_mul(1, 1 << 30), 1);     // 0.5 -> 1
  EXPECT_EQ(saturating_rounding_doubling_high_mul(12345, 0), 0);
}

TEST(IntGemmReference, RoundingDivideByPot) {
  using qnn::igemm::rounding_divide_by_pot;
  EXPECT_EQ(rounding_divide_by_pot(5, 1), 3);     // 2.5 -> 3 (away from zero)
  EXPECT_EQ(rounding_divide_by_pot(-5, 1), -3);   // -2.5 -> -3
  EXPECT_EQ(rounding_divide_by_pot(-6, 2), -2);   // -1.5 -> -2
  EXPECT_EQ(rounding_divide_by_pot(6, 2), 2);     // 1.5 -> 2
  EXPECT_EQ(rounding_divide_by_pot(5, 2), 1);     // 1.25 -> 1
  EXPECT_EQ(rounding_divide_by_pot(-5, 2), -1);   // -1.25 -> -1
  EXPECT_EQ(rounding_divide_by_pot(7, 0), 7);
  EXPECT_EQ(rounding_divide_by_pot(kI32Min, 31), -1);
  EXPECT_EQ(rounding_divide_by_pot(kI32Max, 31), 1);  // 0.99999... -> 1
  EXPECT_EQ(rounding_divide_by_pot(1 << 30, 31), 1);  // 0.5 -> 1
  EXPECT_EQ(rounding_divide_by_pot(-(1 << 30), 31), -1);
}

TEST(IntGemmReference, RequantizeClampsSymmetric) {
  using qnn::igemm::requantize_reference;
  EXPECT_EQ(requantize_reference(1000, 0, kI32Max, 0), 127);
  EXPECT_EQ(requantize_reference(-1000, 0, kI32Max, 0), -127);  // never -128
  EXPECT_EQ(requantize_reference(-1000, 0, kI32Max, 3), -125);
  EXPECT_EQ(requantize_reference(kI32Max, 1, kI32Max, 0), -127);  // bias wraps to INT32_MIN
  EXPECT_EQ(requantize_reference(21, -1, 1 << 30, 1), 5);         // 20 * 0.5 / 2
}

TEST(IntGemmReference, QuantizeMultiplier) {
  int32_t mult = 0, shift = 0;
  qnn::igemm::quantize_multiplier(0.5, &mult, &shift);
  EXPECT_EQ(mult, 1 << 30);
  EXPECT_EQ(shift, 0);
  qnn::igemm::quantize_multiplier(0.75 / 8, &mult, &shift);
  EXPECT_EQ(mult, 3 << 29);
  EXPECT_EQ(shift, 3);
  qnn::igemm::quantize_multiplier(0.0, &mult, &shift);
  EXPECT_EQ(mult, 0);
  qnn::igemm::quantize_multiplier(std::ldexp(1.0, -40), &mult, &shift);
  EXPECT_EQ(mult, 1 << 22);
  EXPECT_EQ(shift, 31);
  qnn::igemm::quantize_multiplier(1.0 - 1e-12, &mult, &shift);
  EXPECT_EQ(mult, kI32Max);
  EXPECT_EQ(shift, 0);
  EXPECT_THROW(qnn::igemm::quantize_multiplier(1.0, &mult, &shift), qnn::Error);
  EXPECT_THROW(qnn::igemm::quantize_multiplier(-0.1, &mult, &shift), qnn::Error);
  // The fixed-point scale reproduces round(acc * real) up to the rounding of the multiplier.
  const double real = 0.0123456789;
  qnn::igemm::quantize_multiplier(real, &mult, &shift);
  for (int32_t acc : {-10000, -1234, -81, 0, 81, 1234, 10000}) {
    EXPECT_EQ(qnn::igemm::requantize_reference(acc, 0, mult, shift), static_cast<int>(std::lround(acc * real)));
  }
}

TEST(IntGemmApi, IsaNamesAndErrors) {
  for (Isa isa : qnn::igemm::kAllIsas) EXPECT_EQ(qnn::igemm::parse_isa(qnn::igemm::isa_name(isa)), isa);
  EXPECT_THROW(qnn::igemm::parse_isa("avx9000"), qnn::Error);
  EXPECT_TRUE(qnn::igemm::isa_available(Isa::kScalar));
  EXPECT_TRUE(qnn::igemm::isa_available(qnn::igemm::best_isa()));
  EXPECT_TRUE(qnn::igemm::isa_available(qnn::igemm::active_isa()));

  const std::vector<int8_t> a(8, 1), b(8, 1);
  const PackedB pb(b.data(), 4, 2, 2);
  std::vector<int32_t> c(4, 0);
  for (Isa isa : qnn::igemm::kAllIsas) {
    if (!qnn::igemm::isa_available(isa)) {
      EXPECT_THROW(qnn::igemm::gemm_s8s8s32(2, a.data(), 4, pb, c.data(), 2, isa), qnn::Error);
    }
  }
  EXPECT_THROW(qnn::igemm::gemm_s8s8s32(2, a.data(), 3, pb, c.data(), 2), qnn::Error);  // lda < K
  EXPECT_THROW(qnn::igemm::gemm_s8s8s32(2, a.data(), 4, pb, c.data(), 1), qnn::Error);  // ldc < N
  EXPECT_THROW(PackedB(b.data(), 0, 2, 2), qnn::Error);
  EXPECT_THROW(PackedB(b.data(), qnn::igemm::kMaxK + 1, 2, 2), qnn::Error);
  const std::vector<int32_t> one(2, 1), bad_shift = {0, 32};
  EXPECT_THROW(Requant(2, nullptr, one.data(), bad_shift.data()), qnn::Error);
  const Requant rq3(3, nullptr, std::vector<int32_t>(3, 1).data(), std::vector<int32_t>(3, 0).data());
  std::vector<int8_t> c8(4, 0);
  EXPECT_THROW(qnn::igemm::gemm_s8s8s8(2, a.data(), 4, pb, rq3, c8.data(), 2), qnn::Error);  // N mismatch
  qnn::igemm::gemm_s8s8s32(0, a.data(), 4, pb, c.data(), 2);                                // M = 0: no-op
  EXPECT_EQ(c, std::vector<int32_t>(4, 0));
}

// ctest also runs this with QNN_ISA=scalar and with an unknown name (tests/CMakeLists.txt).
TEST(IntGemmApi, QnnIsaOverride) {
  const char* env = std::getenv("QNN_ISA");
  if (env == nullptr) GTEST_SKIP() << "QNN_ISA is not set";
  bool runnable = false;
  for (Isa isa : qnn::igemm::kAllIsas) {
    if (env == std::string(qnn::igemm::isa_name(isa))) runnable = qnn::igemm::isa_available(isa);
  }
  if (runnable) {
    EXPECT_EQ(qnn::igemm::active_isa(), qnn::igemm::parse_isa(env));
  } else {
    EXPECT_THROW(qnn::igemm::active_isa(), qnn::Error);
  }
}

}  // namespace
