// The core's Kokkos kernels on the OpenMP backend with several threads give exactly what the
// Serial backend (a plain loop) gives: the engine's gathers have no atomics and no
// thread-dependent reductions, so the results must agree bit for bit.
#include <gtest/gtest.h>

#include <Kokkos_Core.hpp>
#include <cstdlib>

#include "qnn/engine/exact_engine.hpp"
#include "qnn/graph/graph.hpp"
#include "test_util.hpp"

TEST(Kokkos, OpenMPRunsWithTheRequestedThreads) {
  const char* env = std::getenv("OMP_NUM_THREADS");
  const int want = env ? std::atoi(env) : 2;
  qnn::ensure_kokkos_initialized(want);
  ASSERT_TRUE(Kokkos::is_initialized());
  EXPECT_EQ(Kokkos::OpenMP::concurrency(), want);
  // A plain reduction over a range on OpenMP equals the serial loop (integers: exact).
  long serial = 0;
  for (long i = 0; i < 100000; ++i) serial += (i * i) % 97;
  long par = 0;
  Kokkos::parallel_reduce(
      "qnn:test_reduce", Kokkos::RangePolicy<Kokkos::OpenMP>(0, 100000),
      KOKKOS_LAMBDA(const long i, long& acc) { acc += (i * i) % 97; }, par);
  EXPECT_EQ(par, serial);
}

TEST(Kokkos, EngineOpenMPEqualsSerialBitwise) {
  qnn::ensure_kokkos_initialized(2);
  const qnn::Model m = qnn::test::small_water_model(5, 4.0);
  // 96 atoms in a 10 Å box: random but not overlapping too much.
  std::vector<double> pos;
  std::vector<int> species;
  std::srand(3);
  for (int i = 0; i < 96; ++i) {
    for (int d = 0; d < 3; ++d) pos.push_back(10.0 * std::rand() / RAND_MAX);
    species.push_back(i % 3 == 0 ? 0 : 1);
  }
  const auto g = qnn::build_periodic_graph({10, 0, 0, 0, 10, 0, 0, 0, 10}, pos, species, m.rcut);
  qnn::EvalOptions opt;
  opt.atom_virial = true;
  qnn::EvalResult serial, omp;
  qnn::Engine<double>(m, qnn::ExecSpace::Serial).compute(g, serial, opt);
  qnn::Engine<double>(m, qnn::ExecSpace::OpenMP).compute(g, omp, opt);
  EXPECT_EQ(serial.energy, omp.energy);
  EXPECT_EQ(serial.atom_energy, omp.atom_energy);
  EXPECT_EQ(serial.force, omp.force);
  EXPECT_EQ(serial.virial, omp.virial);
  EXPECT_EQ(serial.atom_virial, omp.atom_virial);
  double fsum = 0;
  for (double f : serial.force) fsum += std::abs(f);
  EXPECT_GT(fsum, 0.0);
}
