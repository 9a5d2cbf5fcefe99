// The short-range ZBL repulsion of a model (src/qnn/engine/repulsion.hpp, docs/model.md
// "Short-range repulsion"): its switching, forces and virial as derivatives of its energy,
// determinism, the file format and its refusals. The comparison with LAMMPS's own
// pair_style zbl is tests/test_plugin.cpp, BuiltInRepulsionEqualsLammpsZblOverlay.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "qnn/error.hpp"
#include "qnn/engine/evaluator.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"
#include "qnn/engine/repulsion.hpp"
#include "test_util.hpp"

namespace qnn {
namespace {

Model with_repulsion(Model m) {
  m.repulsion.z = {8.0, 1.0};
  m.repulsion.pairs = {{0, 0}};
  m.repulsion.r_inner = 1.6;
  m.repulsion.r_outer = 2.2;
  return m;
}

// Three water molecules, the first two O-O `oo` apart, in a 12 Å periodic box.
struct Three {
  Cell cell{};
  std::vector<double> pos;
  std::vector<int> species{0, 1, 1, 0, 1, 1, 0, 1, 1};
  explicit Three(double oo) {
    cell = {12, 0, 0, 0, 12, 0, 0, 0, 12};
    const double x2 = 5.0 + oo, x3 = x2 + 2.0;
    pos = {5.0, 5.0, 5.0, 4.414, 5.757, 5.0, 4.414, 4.243, 5.0,
           x2, 5.0, 5.0, x2 + 0.586, 5.757, 5.0, x2 + 0.586, 4.243, 5.0,
           x3 - 1.1, 6.4, 5.2, x3 - 0.5, 7.1, 5.2, x3 - 0.4, 5.9, 5.3};
  }
};

double energy_of(Evaluator& ev, const Cell& cell, const std::vector<double>& pos, const std::vector<int>& sp, double rcut) {
  EvalResult r;
  ev.compute(build_periodic_graph(cell, pos, sp, rcut), r);
  return r.energy;
}

TEST(Repulsion, SwitchingBringsEnergyAndDerivativesToZeroAtTheOuterCutoff) {
  const ZblPair z(8.0, 8.0, 1.6, 2.2);
  double d = 0;
  EXPECT_EQ(z.energy(2.2, &d), 0.0);
  EXPECT_EQ(d, 0.0);
  double d1 = 0, d2 = 0;
  const double h = 1e-5;
  const double e1 = z.energy(2.2 - h, &d1);
  z.energy(2.2 - 2 * h, &d2);
  EXPECT_LT(std::abs(e1), 1e-9);   // E ~ h^3
  EXPECT_LT(std::abs(d1), 1e-6);   // E' ~ h^2
  EXPECT_LT(std::abs((d1 - d2) / h), 1e-2);  // E'' ~ h
  // dE/dr is the derivative of E everywhere (central differences), in both zones.
  for (double r : {0.3, 0.7, 1.0, 1.3, 1.59, 1.61, 1.8, 2.0, 2.19}) {
    double dd = 0, dp = 0, dm = 0;
    const double e = z.energy(r, &dd);
    const double fd = (z.energy(r + 1e-6, &dp) - z.energy(r - 1e-6, &dm)) / 2e-6;
    EXPECT_NEAR(dd, fd, 1e-6 * (1.0 + std::abs(dd))) << "r " << r;
    EXPECT_GT(e, 0.0) << "r " << r;  // repulsive throughout
  }
  // Steep where the network has no data: O-O at 1.0 Å is tens of eV, and monotonic.
  double prev = 1e300;
  for (double r = 0.2; r < 2.2; r += 0.05) {
    const double e = z.energy(r, &d);
    EXPECT_LT(e, prev) << r;
    EXPECT_LT(d, 0.0) << r;
    prev = e;
  }
  EXPECT_GT(z.energy(1.0, &d), 20.0);
}

TEST(Repulsion, ForcesAndVirialAreTheDerivativesOfTheEnergyInEveryMode) {
  ensure_kokkos_initialized(2);
  const Model base = test::small_water_model(7, 4.0);
  const Model m = with_repulsion(base);
  for (Mode mode : {Mode::FP64, Mode::FP32}) {
    auto ev = make_evaluator(m, mode);
    auto ev0 = make_evaluator(base, mode);
    for (double oo : {1.2, 1.9}) {
      const Three t(oo);
      const NeighborGraph g = build_periodic_graph(t.cell, t.pos, t.species, m.rcut);
      EvalResult r, r0;
      ev->compute(g, r);
      ev0->compute(g, r0);
      EXPECT_GT(r.energy - r0.energy, 0.1) << "O-O " << oo;  // the repulsion acts
      // The network's part is the same computation with and without the repulsion (same
      // bits), so differences isolate the repulsion: E_rep = E - E0, F_rep = F - F0.
      const std::vector<double> f1 = fold_ghost_forces(g, r.force), f0 = fold_ghost_forces(g, r0.force);
      std::vector<double> f(f1.size());
      for (std::size_t k = 0; k < f.size(); ++k) f[k] = f1[k] - f0[k];
      auto erep = [&](const Cell& c, const std::vector<double>& p) {
        return energy_of(*ev, c, p, t.species, m.rcut) - energy_of(*ev0, c, p, t.species, m.rcut);
      };
      // Five-point differences: energies are summed on a 2^-24 eV grid (6e-8 eV), so the
      // step is large (2e-3 Å) and the stencil fourth order; tolerance 1e-4 relative.
      auto five = [](auto&& e, double h) { return (-e(2 * h) + 8 * e(h) - 8 * e(-h) + e(-2 * h)) / (12 * h); };
      for (int atom : {0, 3})
        for (int d = 0; d < 3; ++d) {
          const double fd = -five(
              [&](double dx) {
                std::vector<double> p = t.pos;
                p[3 * atom + d] += dx;
                return erep(t.cell, p);
              },
              2e-3);
          EXPECT_NEAR(f[3 * atom + d], fd, 1e-4 * (1.0 + std::abs(fd))) << to_string(mode) << " O-O " << oo << " atom " << atom << " dim " << d;
        }
      // virial xx = -dE/dε_xx under a homogeneous strain of the cell and positions
      const double wxx = -five(
          [&](double e) {
            Cell c = t.cell;
            std::vector<double> p = t.pos;
            c[0] *= 1 + e;
            for (std::size_t k = 0; k < p.size(); k += 3) p[k] *= 1 + e;
            return erep(c, p);
          },
          1e-3);
      EXPECT_NEAR(r.virial[0] - r0.virial[0], wxx, 1e-4 * (1.0 + std::abs(wxx))) << to_string(mode) << " O-O " << oo;
    }
  }
}

TEST(Repulsion, AtomOrderDoesNotChangeABit) {
  ensure_kokkos_initialized(2);
  const Model m = with_repulsion(test::small_water_model(7, 4.0));
  auto ev = make_evaluator(m, Mode::FP32);
  const Three t(1.3);
  const int n = 9;
  std::vector<int> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937 rng(5);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<double> pos(3 * n);
  std::vector<int> sp(n);
  for (int k = 0; k < n; ++k) {
    sp[k] = t.species[perm[k]];
    for (int d = 0; d < 3; ++d) pos[3 * k + d] = t.pos[3 * perm[k] + d];
  }
  const NeighborGraph g1 = build_periodic_graph(t.cell, t.pos, t.species, m.rcut);
  const NeighborGraph g2 = build_periodic_graph(t.cell, pos, sp, m.rcut);
  EvalResult a, b;
  ev->compute(g1, a);
  ev->compute(g2, b);
  EXPECT_EQ(a.energy, b.energy);
  EXPECT_EQ(a.virial, b.virial);
  const std::vector<double> fa = fold_ghost_forces(g1, a.force), fb = fold_ghost_forces(g2, b.force);
  for (int k = 0; k < n; ++k)
    for (int d = 0; d < 3; ++d) EXPECT_EQ(fb[3 * k + d], fa[3 * perm[k] + d]) << k;
}

TEST(Repulsion, RoundTripsThroughTheFileAndIsRefusedWhenMalformed) {
  const Model m = with_repulsion(test::small_water_model(7, 4.0));
  test::TempPath f(".qnn");
  write_model(m, f.str());
  const Model r = read_model(f.str());
  EXPECT_EQ(r.repulsion.z, m.repulsion.z);
  EXPECT_EQ(r.repulsion.pairs, m.repulsion.pairs);
  EXPECT_EQ(r.repulsion.r_inner, 1.6);
  EXPECT_EQ(r.repulsion.r_outer, 2.2);
  EXPECT_NE(describe(r).find("ZBL on O-O"), std::string::npos);
  auto refused = [&](Model bad, const std::string& expect) {
    try {
      bad.validate("m");
      ADD_FAILURE() << "accepted; expected: " << expect;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
    }
  };
  Model b = m;
  b.repulsion.z = {8.0};
  refused(b, "one atomic number per species");
  b = m;
  b.repulsion.z = {8.5, 1.0};
  refused(b, "not an integer in 1..118");
  b = m;
  b.repulsion.pairs = {{0, 2}};
  refused(b, "species the model does not have");
  b = m;
  b.repulsion.r_inner = 2.2;
  refused(b, "0 < r_inner < r_outer <= rcut");
  b = m;
  b.repulsion.r_outer = 9.0;
  refused(b, "0 < r_inner < r_outer <= rcut");
  b = m;
  b.repulsion.r_inner = 2.18;
  refused(b, "at least 0.05 A");
}

}  // namespace
}  // namespace qnn
