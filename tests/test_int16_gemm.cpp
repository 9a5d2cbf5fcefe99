// int16 GEMM paths (src/qnn/kernels/int16_gemm.hpp) against the one reference, bit-exact:
// random inputs on every row count 1..37, column count 1..200 and depth 1..1100, the engine's
// shapes, values at the exactness limit, partial sums that wrap, A ending at a guard page.
// Each test body runs on every ISA path; paths this CPU lacks are skipped.
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "qnn/error.hpp"
#include "qnn/kernels/int16_gemm.hpp"

namespace qnn::igemm {
// gtest prints test parameters through PrintTo, found by argument-dependent lookup.
void PrintTo(Isa isa, std::ostream* os) { *os << isa_name(isa); }
}  // namespace qnn::igemm

namespace {

using qnn::igemm::BLayout;
using qnn::igemm::Isa;
using qnn::igemm::PackedB16;

constexpr int64_t kI32Max = 2147483647;
// Written into the padding of C (columns n..ldc-1); a kernel must leave it alone.
constexpr int32_t kSentinel = 0x5a5a5a5a;

// (rows, ld) int16 matrix, entries uniform in [lo, hi].
std::vector<int16_t> random_i16(std::mt19937& rng, int rows, int ld, int lo, int hi) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int16_t> v(static_cast<std::size_t>(rows) * ld);
  for (auto& x : v) x = static_cast<int16_t>(d(rng));
  return v;
}

// (rows, ld) int8 weights, uniform in [-127, 127].
std::vector<int8_t> random_w8(std::mt19937& rng, int rows, int ld) {
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> v(static_cast<std::size_t>(rows) * ld);
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  return v;
}

// Random A for depth k inside the contract: |A| <= max_abs_a16(k), and -32768 too where even
// that cannot overflow (k <= 516).
std::vector<int16_t> random_a(std::mt19937& rng, int rows, int ld, int k) {
  const int hi = qnn::igemm::max_abs_a16(k);
  return random_i16(rng, rows, ld, k <= 516 ? -32768 : -hi, hi);
}

// B (k, n) with row stride ldb as (n, k) with row stride ld.
std::vector<int8_t> transpose(const std::vector<int8_t>& b, int k, int n, int ldb, int ld) {
  std::vector<int8_t> t(static_cast<std::size_t>(n) * ld, 0);
  for (int kk = 0; kk < k; ++kk) {
    for (int j = 0; j < n; ++j) t[static_cast<std::size_t>(j) * ld + kk] = b[static_cast<std::size_t>(kk) * ldb + j];
  }
  return t;
}

// Equality of the (m, n) blocks of two matrices with row stride ld, plus the untouched
// padding columns of `got`; names the first mismatch.
::testing::AssertionResult same_matrix(const std::vector<int32_t>& got, const std::vector<int32_t>& want, int m,
                                       int n, int ld) {
  int bad = 0;
  std::string first;
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < ld; ++j) {
      const std::size_t at = static_cast<std::size_t>(i) * ld + j;
      const int32_t expect = j < n ? want[at] : kSentinel;
      if (got[at] != expect && bad++ == 0) {
        first = "C(" + std::to_string(i) + ", " + std::to_string(j) + ") = " + std::to_string(got[at]) +
                ", expected " + std::to_string(expect) + (j < n ? "" : " (padding)");
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " mismatches in (" << m << ", " << n << "); first " << first;
}

class Int16Gemm : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!qnn::igemm::isa_available(GetParam())) {
      GTEST_SKIP() << "the " << qnn::igemm::isa_name(GetParam()) << " path is not available on this CPU/build";
    }
  }

  // GEMM of A (m, k; stride lda) and B (k, n; stride ldb) against the reference, with
  // ldc = n + 3 and B packed from both layouts (the (N, K) copy with row stride k + 1).
  ::testing::AssertionResult check(int m, int n, int k, const int16_t* a, int lda, const std::vector<int8_t>& b,
                                   int ldb) {
    const int ldc = n + 3;
    std::vector<int32_t> want(static_cast<std::size_t>(m) * ldc, kSentinel);
    qnn::igemm::gemm_s16s8s32_reference(m, n, k, a, lda, b.data(), ldb, want.data(), ldc);
    const std::vector<int8_t> bt = transpose(b, k, n, ldb, k + 1);
    for (BLayout layout : {BLayout::kKN, BLayout::kNK}) {
      const PackedB16 pb = layout == BLayout::kKN ? PackedB16(b.data(), k, n, ldb, layout)
                                                  : PackedB16(bt.data(), k, n, k + 1, layout);
      std::vector<int32_t> got(static_cast<std::size_t>(m) * ldc, kSentinel);
      qnn::igemm::gemm_s16s8s32(m, a, lda, pb, got.data(), ldc, GetParam());
      auto r = same_matrix(got, want, m, n, ldc);
      if (!r) {
        return r << " (M, N, K) = (" << m << ", " << n << ", " << k << ")"
                 << (layout == BLayout::kNK ? ", B packed from (N, K)" : "");
      }
    }
    return ::testing::AssertionSuccess();
  }

  // Random A and B of the given sizes, lda = k + lda_pad, ldb = n + 1.
  ::testing::AssertionResult check_random(std::mt19937& rng, int m, int n, int k, int lda_pad) {
    const int lda = k + lda_pad, ldb = n + 1;
    const auto a = random_a(rng, m, lda, k);
    return check(m, n, k, a.data(), lda, random_w8(rng, k, ldb), ldb);
  }
};

// Sizes 1..10 and 2^n +- 1 around the vector widths (8, 16 columns), the register tiles
// (up to 8 rows, 48 columns) and the pairs of k.
TEST_P(Int16Gemm, AwkwardSizesRandom) {
  std::mt19937 rng(1234);
  for (int m : {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33}) {
    for (int n : {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 49, 65}) {
      for (int k : {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 64, 65}) {
        ASSERT_TRUE(check_random(rng, m, n, k, m % 3));
      }
    }
  }
}

// Every row count 1..37 (row tiles of 4 or 8 and their edges), odd K, lda > K.
TEST_P(Int16Gemm, EveryRowCount) {
  std::mt19937 rng(1);
  for (int m = 1; m <= 37; ++m) {
    for (int n : {33, 128}) ASSERT_TRUE(check_random(rng, m, n, 129, 5));
  }
}

// Every column count 1..200 (units of 8 or 16 columns, tiles of up to 3 units, edges).
TEST_P(Int16Gemm, EveryColumnCount) {
  std::mt19937 rng(2);
  for (int n = 1; n <= 200; ++n) ASSERT_TRUE(check_random(rng, 19, n, 67, 2));
}

// Every depth 1..1100: odd and even K, the partial last pair, K past the |A| <= 32767 limit.
TEST_P(Int16Gemm, EveryDepth) {
  std::mt19937 rng(3);
  for (int k = 1; k <= 1100; ++k) ASSERT_TRUE(check_random(rng, 5, 19, k, k % 4));
}

// The engine's GEMMs on a block of 32 atoms: forward (K, N) = (1024, 128), (128, 128) and the
// backward pass through the transposed weights, 128 -> 1024 and 128 -> 128.
TEST_P(Int16Gemm, EngineShapes) {
  std::mt19937 rng(4);
  for (auto [k, n] : {std::pair{1024, 128}, {128, 128}, {128, 1024}}) ASSERT_TRUE(check_random(rng, 32, n, k, 0));
}

// K large enough that B is split into several n-blocks (each at most half the L2 cache,
// capped at 4 MiB) with a partial last block.
TEST_P(Int16Gemm, SeveralColumnBlocks) {
  std::mt19937 rng(5);
  ASSERT_TRUE(check_random(rng, 11, 300, 20001, 0));
}

// |A| = max_abs_a16(K), |B| = 127, all of one sign: |C| = max|A| * 127 * K, the largest value
// the guarantee allows (within 0.01% of 2^31 for K = 1024).
TEST_P(Int16Gemm, ExtremesAtExactnessLimit) {
  for (int k : {1, 2, 3, 515, 516, 517, 1023, 1024, 1025, 1100, 4097, 131071}) {
    const int amax = qnn::igemm::max_abs_a16(k);
    for (int sa : {1, -1}) {
      for (int sb : {1, -1}) {
        const int m = 9, n = 18;
        const std::vector<int16_t> a(static_cast<std::size_t>(m) * k, static_cast<int16_t>(sa * amax));
        const std::vector<int8_t> b(static_cast<std::size_t>(k) * n, static_cast<int8_t>(sb * 127));
        ASSERT_TRUE(check(m, n, k, a.data(), k, b, n));
      }
    }
    if (k >= 517) {
      EXPECT_GT(int64_t{amax} * 127 * k, kI32Max - int64_t{127} * k) << "K = " << k;
    }
  }
}

// The result fits in int32 but the partial sums do not: the first half of k adds
// 32767 * 127 per step (past 2^31 after 517 steps), the second half takes it back. A path
// that saturated (vpdpwssds, or int32 arithmetic clamped anywhere) would fail here.
TEST_P(Int16Gemm, PartialSumsWrap) {
  const int m = 10, n = 40, k = 1100;
  std::vector<int16_t> a(static_cast<std::size_t>(m) * k);
  std::vector<int8_t> b(static_cast<std::size_t>(k) * n);
  for (int i = 0; i < m; ++i) {
    const int16_t x = static_cast<int16_t>(i % 2 ? -32768 : 32767);
    for (int kk = 0; kk < k; ++kk) a[static_cast<std::size_t>(i) * k + kk] = x;
  }
  for (int kk = 0; kk < k; ++kk) {
    for (int j = 0; j < n; ++j) {
      // Column j: +127 for k < 550, then -127, except for j extra steps of +127 (C = j*2*127*A).
      b[static_cast<std::size_t>(kk) * n + j] = static_cast<int8_t>(kk < 550 + j ? 127 : -127);
    }
  }
  ASSERT_TRUE(check(m, n, k, a.data(), k, b, n));
}

// A's last row ends at a page the process may not read: the partial pair of an odd K must
// load one int16, not two.
TEST_P(Int16Gemm, NoReadPastLastRow) {
  const long page = sysconf(_SC_PAGESIZE);
  void* mem = mmap(nullptr, static_cast<std::size_t>(2 * page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  char* guard = static_cast<char*>(mem) + page;
  ASSERT_EQ(mprotect(guard, static_cast<std::size_t>(page), PROT_NONE), 0);
  std::mt19937 rng(6);
  for (int k : {1, 3, 17, 33}) {
    for (int m : {1, 5, 8, 9}) {
      const auto src = random_a(rng, m, k, k);
      int16_t* a = reinterpret_cast<int16_t*>(guard) - src.size();
      std::memcpy(a, src.data(), src.size() * sizeof(int16_t));
      const int n = 20;
      EXPECT_TRUE(check(m, n, k, a, k, random_w8(rng, k, n), n));
    }
  }
  munmap(mem, static_cast<std::size_t>(2 * page));
}

std::string isa_param_name(const ::testing::TestParamInfo<Isa>& info) { return qnn::igemm::isa_name(info.param); }

INSTANTIATE_TEST_SUITE_P(AllIsas, Int16Gemm, ::testing::ValuesIn(qnn::igemm::kAllIsas), isa_param_name);

// ---------------------------------------------------------------------------- contract pieces

TEST(Int16GemmReference, WorkedExample) {
  // A (2, 3) with lda 4, B (3, 2) with ldb 3; C worked by hand.
  const int16_t a[] = {1, -2, 3, 99, 32767, -32768, 0, 99};
  const int8_t b[] = {4, -5, 99, 6, 7, 99, -127, 127, 99};
  int32_t c[2 * 3] = {0, 0, kSentinel, 0, 0, kSentinel};
  qnn::igemm::gemm_s16s8s32_reference(2, 2, 3, a, 4, b, 3, c, 3);
  EXPECT_EQ(c[0], 1 * 4 - 2 * 6 + 3 * -127);                  // -389
  EXPECT_EQ(c[1], 1 * -5 - 2 * 7 + 3 * 127);                  // 362
  EXPECT_EQ(c[3], 32767 * 4 + -32768 * 6);                    // -65540
  EXPECT_EQ(c[4], 32767 * -5 + -32768 * 7);                   // -393211
  EXPECT_EQ(c[2], kSentinel);
  EXPECT_EQ(c[5], kSentinel);
  qnn::igemm::gemm_s16s8s32_reference(2, 2, 0, a, 4, b, 3, c, 3);  // K = 0: empty sums
  EXPECT_EQ(c[0], 0);
  EXPECT_EQ(c[4], 0);
}

TEST(Int16GemmReference, RejectsResultsOutsideInt32) {
  const int k = 1025;  // 16513 * 127 * 1025 > 2^31 - 1
  const std::vector<int16_t> a(k, 16513);
  const std::vector<int8_t> b(k, 127);
  int32_t c = 0;
  EXPECT_THROW(qnn::igemm::gemm_s16s8s32_reference(1, 1, k, a.data(), k, b.data(), 1, &c, 1), qnn::Error);
  const std::vector<int8_t> neg(k, -127);
  EXPECT_THROW(qnn::igemm::gemm_s16s8s32_reference(1, 1, k, a.data(), k, neg.data(), 1, &c, 1), qnn::Error);
  qnn::igemm::gemm_s16s8s32_reference(1, 1, 1024, a.data(), k, b.data(), 1, &c, 1);  // K = 1024 fits
  EXPECT_EQ(c, 16513 * 127 * 1024);
}

TEST(Int16GemmReference, MaxAbsA16) {
  using qnn::igemm::max_abs_a16;
  EXPECT_EQ(max_abs_a16(0), 32767);
  EXPECT_EQ(max_abs_a16(1), 32767);
  EXPECT_EQ(max_abs_a16(128), 32767);
  EXPECT_EQ(max_abs_a16(516), 32767);
  EXPECT_EQ(max_abs_a16(517), 32706);
  EXPECT_EQ(max_abs_a16(1024), 16513);
  EXPECT_EQ(max_abs_a16(qnn::igemm::kMaxK16), 1);
  EXPECT_EQ(max_abs_a16(qnn::igemm::kMaxK16 + 1), 0);
  EXPECT_THROW(max_abs_a16(-1), qnn::Error);
  // The defining property: the largest |A| <= 32767 with |A| * 127 * K <= 2^31 - 1.
  for (int k : {2, 3, 100, 517, 999, 1023, 1025, 1600, 65536, 1000003}) {
    const int64_t x = max_abs_a16(k);
    EXPECT_LE(x * 127 * k, kI32Max) << "K = " << k;
    EXPECT_TRUE(x == 32767 || (x + 1) * 127 * k > kI32Max) << "K = " << k;
  }
}

// The documented packed layout, from both source layouts: data[(p*K2/2 + q)*32 + c*2 + i] =
// B[2q + i][16p + c], zero-padded in k and n.
TEST(Int16GemmApi, PackedLayout) {
  const int k = 5, n = 19;
  std::vector<int8_t> b(static_cast<std::size_t>(k) * n);
  for (int kk = 0; kk < k; ++kk) {
    for (int j = 0; j < n; ++j) b[static_cast<std::size_t>(kk) * n + j] = static_cast<int8_t>(kk * 20 + j - 60);
  }
  const std::vector<int8_t> bt = transpose(b, k, n, n, k);
  for (const PackedB16& pb : {PackedB16(b.data(), k, n, n), PackedB16(bt.data(), k, n, k, BLayout::kNK)}) {
    EXPECT_EQ(pb.k(), k);
    EXPECT_EQ(pb.n(), n);
    EXPECT_EQ(pb.k2(), 6);
    EXPECT_EQ(pb.panels(), 2);
    EXPECT_EQ(pb.panel_stride(), 6 * 16);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(pb.data()) % 64, 0u);
    for (int p = 0; p < 2; ++p) {
      for (int q = 0; q < 3; ++q) {
        for (int c = 0; c < 16; ++c) {
          for (int i = 0; i < 2; ++i) {
            const int kk = 2 * q + i, j = 16 * p + c;
            const int expect = kk < k && j < n ? b[static_cast<std::size_t>(kk) * n + j] : 0;
            ASSERT_EQ(pb.data()[(p * 3 + q) * 32 + c * 2 + i], expect) << "k = " << kk << ", n = " << j;
          }
        }
      }
    }
  }
}

TEST(Int16GemmApi, SizesAndErrors) {
  const std::vector<int16_t> a(8, 1);
  const std::vector<int8_t> b(8, 1);
  const PackedB16 pb(b.data(), 4, 2, 2);  // K = 4, N = 2
  std::vector<int32_t> c(4, kSentinel);
  for (Isa isa : qnn::igemm::kAllIsas) {
    if (!qnn::igemm::isa_available(isa)) {
      EXPECT_THROW(qnn::igemm::gemm_s16s8s32(2, a.data(), 4, pb, c.data(), 2, isa), qnn::Error);
    }
  }
  EXPECT_THROW(qnn::igemm::gemm_s16s8s32(2, a.data(), 3, pb, c.data(), 2), qnn::Error);   // lda < K
  EXPECT_THROW(qnn::igemm::gemm_s16s8s32(2, a.data(), 4, pb, c.data(), 1), qnn::Error);   // ldc < N
  EXPECT_THROW(qnn::igemm::gemm_s16s8s32(-1, a.data(), 4, pb, c.data(), 2), qnn::Error);  // M < 0
  EXPECT_THROW(qnn::igemm::gemm_s16s8s32(2, a.data(), 4, PackedB16(), c.data(), 2), qnn::Error);  // not packed
  EXPECT_THROW(PackedB16(b.data(), 0, 2, 2), qnn::Error);                                 // K = 0
  EXPECT_THROW(PackedB16(b.data(), qnn::igemm::kMaxK16 + 1, 2, 2), qnn::Error);
  EXPECT_THROW(PackedB16(b.data(), 4, 0, 2), qnn::Error);                                 // N = 0
  EXPECT_THROW(PackedB16(b.data(), 2, 4, 3), qnn::Error);                                 // ldb < N
  EXPECT_THROW(PackedB16(b.data(), 4, 2, 3, BLayout::kNK), qnn::Error);                   // ldb < K
  std::vector<int8_t> with_min = b;
  with_min[5] = -128;
  EXPECT_THROW(PackedB16(with_min.data(), 4, 2, 2), qnn::Error);                          // not symmetric
  qnn::igemm::gemm_s16s8s32(0, a.data(), 4, pb, c.data(), 2);                             // M = 0: no-op
  EXPECT_EQ(c, std::vector<int32_t>(4, kSentinel));
  qnn::igemm::gemm_s16s8s32(2, a.data(), 4, pb, c.data(), 2);                             // default path
  EXPECT_EQ(c, std::vector<int32_t>(4, 4));
}

// ctest runs this with QNN_ISA set to every path name and to an unknown one
// (tests/CMakeLists.txt): the default path argument is then that path, or an error.
TEST(Int16GemmApi, QnnIsaDefault) {
  const char* env = std::getenv("QNN_ISA");
  if (env == nullptr) GTEST_SKIP() << "QNN_ISA is not set";
  bool runnable = false;
  for (Isa isa : qnn::igemm::kAllIsas) {
    if (env == std::string(qnn::igemm::isa_name(isa))) runnable = qnn::igemm::isa_available(isa);
  }
  std::mt19937 rng(7);
  const int m = 13, n = 37, k = 51;
  const auto a = random_a(rng, m, k, k);
  const auto b = random_w8(rng, k, n);
  const PackedB16 pb(b.data(), k, n, n);
  std::vector<int32_t> want(static_cast<std::size_t>(m) * n), got(want.size());
  qnn::igemm::gemm_s16s8s32_reference(m, n, k, a.data(), k, b.data(), n, want.data(), n);
  if (runnable) {
    EXPECT_EQ(qnn::igemm::active_isa(), qnn::igemm::parse_isa(env));
    qnn::igemm::gemm_s16s8s32(m, a.data(), k, pb, got.data(), n);
    EXPECT_EQ(got, want);
  } else {
    EXPECT_THROW(qnn::igemm::gemm_s16s8s32(m, a.data(), k, pb, got.data(), n), qnn::Error);
  }
}

}  // namespace
