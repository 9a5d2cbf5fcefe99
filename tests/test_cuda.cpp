// The CUDA engine (src/qnn/cuda, issue 18) against the CPU compressed engine on its generic
// kernels, which this test forces (QNN_ISA=scalar, set below before any engine exists and by
// tests/CMakeLists.txt): the device mirrors that path operation by operation
// (src/qnn/cuda/pipeline.cu), so int8 and mixed results must be bitwise equal and fp32 within
// 1e-6 relative (bitwise is expected too and reported). Also: fp32 forces against finite
// differences of the device's own energy, the int8 mma GEMM against a host reference, device
// buffers reused across calls with different atom counts and with unchanged topology.
//
// Label gpu. Where no usable device is present every test is skipped, saying why.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "qnn/cuda/cuda_engine.hpp"
#include "qnn/cuda/pipeline.cuh"
#include "qnn/data/data.hpp"
#include "qnn/engine/compressed_engine.hpp"
#include "qnn/engine/exact_engine.hpp"
#include "qnn/error.hpp"
#include "qnn/format/model.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/kernels/int_gemm.hpp"
#include "test_util.hpp"
#include "water_frame.hpp"

namespace qnn {
namespace {

// The CPU engine must run its generic (scalar, no FMA) kernels: the int8 GEMM ISA is read once,
// at its first use, from $QNN_ISA, so it is set before main().
const bool kScalarIsa = [] {
  setenv("QNN_ISA", "scalar", 1);
  return true;
}();

#define QNN_REQUIRE_DEVICE()                                                    \
  do {                                                                          \
    std::string why_;                                                           \
    if (!cuda::device_available(&why_)) GTEST_SKIP() << "no CUDA device: " << why_; \
  } while (0)

using test::Frame;
using test::graph_of;
using test::potential;
using test::water_frame;

// The first n atoms of f (a smaller system in the same cell).
Frame first_atoms(const Frame& f, int n) {
  Frame g = f;
  g.pos.resize(3 * static_cast<std::size_t>(n));
  g.species.resize(static_cast<std::size_t>(n));
  return g;
}


EvalOptions all_outputs() {
  EvalOptions o;
  o.atom_energy = true;
  o.atom_virial = true;
  return o;
}

int count_differences(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return -1;
  int n = 0;
  for (std::size_t q = 0; q < a.size(); ++q) n += a[q] != b[q];
  return n;
}

void expect_bitwise(const EvalResult& gpu, const EvalResult& cpu, const std::string& what) {
  EXPECT_EQ(gpu.energy, cpu.energy) << what;
  for (int q = 0; q < 6; ++q) EXPECT_EQ(gpu.virial[q], cpu.virial[q]) << what << " virial " << q;
  EXPECT_EQ(count_differences(gpu.force, cpu.force), 0) << what << ": force components differ";
  EXPECT_EQ(count_differences(gpu.atom_energy, cpu.atom_energy), 0) << what << ": atomic energies differ";
  EXPECT_EQ(count_differences(gpu.atom_virial, cpu.atom_virial), 0) << what << ": atomic virials differ";
}

void expect_close(const EvalResult& gpu, const EvalResult& cpu, double rel, const std::string& what) {
  double fmax = 0.0, fscale = 0.0;
  ASSERT_EQ(gpu.force.size(), cpu.force.size());
  for (std::size_t q = 0; q < cpu.force.size(); ++q) {
    fmax = std::max(fmax, std::abs(gpu.force[q] - cpu.force[q]));
    fscale = std::max(fscale, std::abs(cpu.force[q]));
  }
  double vmax = 0.0, vscale = 0.0;
  for (int q = 0; q < 6; ++q) {
    vmax = std::max(vmax, std::abs(gpu.virial[q] - cpu.virial[q]));
    vscale = std::max(vscale, std::abs(cpu.virial[q]));
  }
  std::printf("%s: |dE| %.3g of %.6f eV, max |dF| %.3g of %.3g, max |dW| %.3g of %.3g; bitwise: %s\n",
              what.c_str(), std::abs(gpu.energy - cpu.energy), cpu.energy, fmax, fscale, vmax, vscale,
              (gpu.energy == cpu.energy && count_differences(gpu.force, cpu.force) == 0) ? "yes" : "no");
  EXPECT_LE(std::abs(gpu.energy - cpu.energy), rel * std::abs(cpu.energy)) << what;
  EXPECT_LE(fmax, rel * fscale) << what;
  EXPECT_LE(vmax, rel * vscale) << what;
}

void compare_on_water(const std::string& file, FitPrecision fit, bool bitwise) {
  const Model m = read_model(potential(file));
  CompressedOptions opt;
  opt.fit = fit;
  ASSERT_EQ(igemm::active_isa(), igemm::Isa::kScalar) << "QNN_ISA=scalar did not take effect";
  CompressedEngine cpu(m, opt, ExecSpace::OpenMP);
  cuda::CudaEngine gpu(m, opt);
  std::printf("cpu: %s\ngpu: %s\n", cpu.describe().c_str(), gpu.describe().c_str());
  for (int frame : {0, 7, 31}) {
    const NeighborGraph g = graph_of(water_frame(m, frame), m.rcut);
    EvalResult a, b;
    gpu.compute(g, a, all_outputs());
    cpu.compute(g, b, all_outputs());
    const std::string what = file + " frame " + std::to_string(frame);
    if (bitwise)
      expect_bitwise(a, b, what);
    else
      expect_close(a, b, 1e-6, what);
  }
}

// ------------------------------------------------------------------------------- tests

TEST(CudaDevice, ReportsWhyItIsUnavailable) {
  std::string why;
  const bool ok = cuda::device_available(&why);
  if (!ok) {
    EXPECT_FALSE(why.empty());
    GTEST_SKIP() << "no CUDA device: " << why;
  }
  EXPECT_GT(cuda::device_count(), 0);
}

TEST(CudaGemm, Int8MmaAndSimtMatchTheHost) {
  QNN_REQUIRE_DEVICE();
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> u(-127, 127);
  for (const auto& [M, N, K] : std::vector<std::array<int, 3>>{{1, 1, 1}, {37, 45, 70}, {32, 240, 1600}, {17, 8, 32}}) {
    std::vector<std::int8_t> A(std::size_t(M) * K), Bt(std::size_t(N) * K);
    for (auto& v : A) v = static_cast<std::int8_t>(u(rng));
    for (auto& v : Bt) v = static_cast<std::int8_t>(u(rng));
    std::vector<std::int32_t> ref(std::size_t(M) * N, 0), mma(ref.size()), simt(ref.size());
    for (int r = 0; r < M; ++r)
      for (int n = 0; n < N; ++n) {
        std::int32_t acc = 0;
        for (int k = 0; k < K; ++k) acc += A[std::size_t(r) * K + k] * Bt[std::size_t(n) * K + k];
        ref[std::size_t(r) * N + n] = acc;
      }
    cuda::detail::gemm_s8s8s32_test(M, N, K, A.data(), Bt.data(), mma.data(), true);
    cuda::detail::gemm_s8s8s32_test(M, N, K, A.data(), Bt.data(), simt.data(), false);
    EXPECT_EQ(mma, ref) << M << "x" << N << "x" << K << " mma.sync";
    EXPECT_EQ(simt, ref) << M << "x" << N << "x" << K << " simt";
  }
}

TEST(CudaEngine, Int8IsBitwiseTheCpuGenericPath) {
  QNN_REQUIRE_DEVICE();
  compare_on_water("water-se2a.int8.qnn", FitPrecision::Int8, true);
}

TEST(CudaEngine, MixedIsBitwiseTheCpuGenericPath) {
  QNN_REQUIRE_DEVICE();
  compare_on_water("water-se2a.mixed.qnn", FitPrecision::Mixed, true);
}

TEST(CudaEngine, Fp32MatchesTheCpuGenericPath) {
  QNN_REQUIRE_DEVICE();
  compare_on_water("water-se2a.fp32.qnn", FitPrecision::Float, false);
}

TEST(CudaEngine, PairNetsAndDeepmdEnvMatMatchTheCpu) {
  QNN_REQUIRE_DEVICE();
  const Model m = test::small_pair_model(23, 6.0, {46, 92});
  CompressedEngine cpu(m);
  cuda::CudaEngine gpu(m);
  const NeighborGraph g = graph_of(water_frame(m, 6), m.rcut);
  EvalResult a, b;
  gpu.compute(g, a, all_outputs());
  cpu.compute(g, b, all_outputs());
  expect_close(a, b, 1e-6, "pair nets, env_mat deepmd");
}

// Central differences of the device's own fp32 energy. The energy is a sum of per-atom values
// on the 2^-24 eV grid and the fitting net runs in float, so this is a check for gross errors
// (a wrong sign, a missing term); the exact contract is the comparison with the CPU engine,
// whose forces tests/test_compressed.cpp checks against a double-precision reference.
TEST(CudaEngine, Fp32ForcesAreTheGradientOfItsEnergy) {
  QNN_REQUIRE_DEVICE();
  const Model m = test::small_water_model(11, 4.0);
  cuda::CudaEngine gpu(m);
  const Frame f = test::random_water_box(5);
  const NeighborGraph g = graph_of(f, m.rcut);
  EvalResult r;
  gpu.compute(g, r);
  const auto F = fold_ghost_forces(g, r.force);
  auto energy = [&](const Frame& p) {
    EvalResult e;
    gpu.compute(graph_of(p, m.rcut), e);
    return e.energy;
  };
  const double h = 1e-3;
  double worst = 0.0, scale = 0.0;
  for (int i = 0; i < 24; i += 3)
    for (int d = 0; d < 3; ++d) {
      Frame p = f, q = f;
      p.pos[3 * i + d] += h;
      q.pos[3 * i + d] -= h;
      const double fd = -(energy(p) - energy(q)) / (2 * h);
      worst = std::max(worst, std::abs(fd - F[3 * i + d]));
      scale = std::max(scale, std::abs(F[3 * i + d]));
    }
  std::printf("cuda fp32 forces vs finite differences of its energy: max err %.3g (max |F| %.3g)\n", worst, scale);
  EXPECT_GT(scale, 1e-3);
  EXPECT_LT(worst, 1e-2 * scale + 1e-3);
}

// One engine, several systems: buffers grow and are reused, the topology is re-uploaded when it
// changes and only the positions when it does not; every call must still equal the CPU.
TEST(CudaEngine, ReusesBuffersAcrossCallsWithDifferentAtomCounts) {
  QNN_REQUIRE_DEVICE();
  const Model m = read_model(potential("water-se2a.int8.qnn"));
  CompressedOptions opt;
  opt.fit = FitPrecision::Int8;
  CompressedEngine cpu(m, opt);
  cuda::CudaEngine gpu(m, opt);
  const Frame big = water_frame(m, 3);
  const Frame small = first_atoms(big, 48);
  const NeighborGraph gbig = graph_of(big, m.rcut);
  NeighborGraph gmoved = gbig;  // same neighbour lists, new positions (topology not re-sent)
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> u(-1e-3, 1e-3);
  for (double& x : gmoved.positions) x += u(rng);
  const NeighborGraph gsmall = graph_of(small, m.rcut);
  EvalResult first;
  int call = 0;
  const std::vector<const NeighborGraph*> calls{&gbig, &gsmall, &gbig, &gmoved, &gmoved, &gsmall};
  for (const NeighborGraph* g : calls) {
    EvalResult a, b;
    gpu.compute(*g, a, all_outputs());
    cpu.compute(*g, b, all_outputs());
    expect_bitwise(a, b, "call " + std::to_string(call) + " (" + std::to_string(g->nlocal) + " atoms)");
    if (call == 0) first = a;
    if (call == 2) expect_bitwise(a, first, "repeated call");
    ++call;
  }
}

TEST(CudaEngine, RefusesOverlappingAtomsLikeTheCpu) {
  QNN_REQUIRE_DEVICE();
  const Model m = test::small_water_model();
  Frame f;
  f.cell = {8, 0, 0, 0, 8, 0, 0, 0, 8};
  f.pos = {1, 1, 1, 1 + 5e-5, 1, 1, 4, 4, 4};
  f.species = {0, 1, 1};
  const NeighborGraph g = graph_of(f, m.rcut);
  cuda::CudaEngine gpu(m);
  CompressedEngine cpu(m);
  std::string egpu, ecpu;
  EvalResult r;
  try {
    gpu.compute(g, r);
  } catch (const Error& e) {
    egpu = e.what();
  }
  try {
    cpu.compute(g, r);
  } catch (const Error& e) {
    ecpu = e.what();
  }
  EXPECT_NE(egpu.find("5.000e-05 A apart"), std::string::npos) << egpu;
  EXPECT_EQ(egpu, ecpu);
}

}  // namespace
}  // namespace qnn
