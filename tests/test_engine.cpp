// The floating-point Kokkos engine against the math contract (docs/model.md): a plain
// reference implementation of the energy, finite differences for forces and virial,
// invariances, smoothness at the cutoff, determinism across execution spaces and chunkings.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <sys/stat.h>

#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "qnn/engine/exact_engine.hpp"
#include "qnn/error.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"
#include "test_util.hpp"

namespace {

using qnn::Cell;
using qnn::Engine;
using qnn::EvalOptions;
using qnn::EvalResult;
using qnn::ExecSpace;
using qnn::Model;
using qnn::NeighborGraph;

// ---------------------------------------------------------------------------- fixtures

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { qnn::ensure_kokkos_initialized(2); }
};

// Model A: test_util's small water model (embed 1->4->8 with a doubling residual, fit with a
// timestep residual), non-trivial statistics and biases, Nc = 6.
Model model_a(double rcut = 4.0, double rcut_smth = 0.5) {
  Model m = qnn::test::small_water_model(11, rcut);
  m.rcut_smth = rcut_smth;
  m.neighbor_norm = 6.0;  // larger descriptors than the default sum(sel): a more non-linear test
  return m;
}

// Model B: embed 1->4->8->8 (doubling, identity), fit 32->16->16->1 (identity residual),
// random statistics, Nc = 4.
Model model_b(double rcut = 3.5) {
  Model m = Model::make_random({"O", "H"}, rcut, 1.0, {10, 20}, {4, 8, 8}, 4, {16, 16}, false, 23);
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(0.6, 1.4);
  for (std::size_t k = 0; k < m.mean_s.size(); ++k) {
    m.mean_s[k] = 0.5 * (u(rng) - 1.0);
    m.std_s[k] = u(rng);
    m.std_r[k] = u(rng);
  }
  m.energy_bias = {0.3, -0.2};
  m.neighbor_norm = 4.0;
  return m;
}

// A model with zero energy bias: keeps |E| small so finite differences are not limited by
// the round-off of a large constant.
Model without_bias(Model m) {
  std::fill(m.energy_bias.begin(), m.energy_bias.end(), 0.0);
  return m;
}

struct Frame {
  Cell cell{};
  std::vector<double> pos;  // (N, 3)
  std::vector<int> species; // (N)
  int natoms() const { return static_cast<int>(species.size()); }
};

using qnn::test::water_dir;

// Frame `k` of water data_0 (192 atoms, species O=0, H=1).
Frame water_frame(int k) {
  const std::string dir = water_dir() + "/data_0";
  Frame f;
  std::ifstream types(dir + "/type.raw");
  for (int t; types >> t;) f.species.push_back(t);
  const auto box = xt::load_npy<float>(dir + "/set.000/box.npy");
  const auto coord = xt::load_npy<float>(dir + "/set.000/coord.npy");
  const std::size_t n = f.species.size();
  EXPECT_EQ(n, 192u);
  EXPECT_EQ(coord.shape()[1], 3 * n);
  for (int d = 0; d < 9; ++d) f.cell[d] = box(k, d);
  f.pos.resize(3 * n);
  for (std::size_t a = 0; a < 3 * n; ++a) f.pos[a] = coord(k, a);
  return f;
}

// `n` atoms of two species at random in a general triclinic cell, no pair closer than rmin
// (periodic images included).
Frame random_frame(int n, unsigned seed, double rmin = 0.9) {
  Frame f;
  f.cell = {5.6, 0.0, 0.0, 1.1, 5.3, 0.0, -0.7, 0.8, 5.9};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  while (f.natoms() < n) {
    const double a = u(rng), b = u(rng), c = u(rng);
    double x[3];
    for (int d = 0; d < 3; ++d) x[d] = a * f.cell[d] + b * f.cell[3 + d] + c * f.cell[6 + d];
    bool ok = true;
    for (int j = 0; j < f.natoms() && ok; ++j)
      for (int i0 = -1; i0 <= 1 && ok; ++i0)
        for (int i1 = -1; i1 <= 1 && ok; ++i1)
          for (int i2 = -1; i2 <= 1 && ok; ++i2) {
            double r2 = 0;
            for (int d = 0; d < 3; ++d) {
              const double dx = f.pos[3 * j + d] + i0 * f.cell[d] + i1 * f.cell[3 + d] +
                                i2 * f.cell[6 + d] - x[d];
              r2 += dx * dx;
            }
            ok = r2 > rmin * rmin;
          }
    if (!ok) continue;
    f.pos.insert(f.pos.end(), x, x + 3);
    f.species.push_back(f.natoms() % 3 == 0 ? 0 : 1);
  }
  return f;
}

// A non-periodic graph: all ordered pairs closer than `rgraph` (which may exceed the model's
// rcut, so that inactive edges appear), no ghosts, neighbours in increasing index.
NeighborGraph cluster_graph(const std::vector<double>& pos, const std::vector<int>& species,
                            double rgraph, bool reverse_index = true) {
  NeighborGraph g;
  g.nlocal = g.ntotal = static_cast<int>(species.size());
  g.positions = pos;
  g.species = species;
  g.offsets.push_back(0);
  for (int i = 0; i < g.nlocal; ++i) {
    for (int j = 0; j < g.nlocal; ++j) {
      if (j == i) continue;
      double r2 = 0;
      for (int d = 0; d < 3; ++d) r2 += std::pow(pos[3 * j + d] - pos[3 * i + d], 2);
      if (r2 < rgraph * rgraph) g.neighbors.push_back(j);
    }
    g.offsets.push_back(g.nedges());
  }
  if (reverse_index) g.build_reverse_index();
  return g;
}

NeighborGraph periodic_graph(const Frame& f, double rcut) {
  return qnn::build_periodic_graph(f.cell, f.pos, f.species, rcut);
}

template <class Real>
EvalResult evaluate(Engine<Real>& engine, const NeighborGraph& g, EvalOptions opt = {}) {
  EvalResult r;
  engine.compute(g, r, opt);
  return r;
}

template <class Real>
double periodic_energy(Engine<Real>& engine, const Frame& f) {
  return evaluate(engine, periodic_graph(f, engine.model().rcut)).energy;
}

double norm(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

double diff_norm(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double s = 0;
  for (std::size_t k = 0; k < std::min(a.size(), b.size()); ++k) s += (a[k] - b[k]) * (a[k] - b[k]);
  return std::sqrt(s);
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// ---------------------------------------------------------------------------- reference

// Plain double implementation of eqs. S, R, G, D, F written from docs/model.md, sharing no
// code with the engine: returns the per-atom energies of the local atoms.
std::vector<double> reference_atom_energies(const Model& m, const NeighborGraph& g) {
  const int M1 = m.m1(), M2 = m.axis_neuron, S = m.nspecies();
  auto sw = [&](double r) {
    if (r >= m.rcut) return 0.0;
    if (r < m.rcut_smth) return 1.0 / r;
    const double u = (r - m.rcut_smth) / (m.rcut - m.rcut_smth);
    return (std::pow(u, 3) * (-6 * u * u + 15 * u - 10) + 1) / r;
  };
  auto run = [](const qnn::Net& net, std::vector<double> x) {
    for (const qnn::DenseLayer& L : net.layers) {
      std::vector<double> y(L.out);
      for (int o = 0; o < L.out; ++o) {
        double z = L.bias[o];
        for (int k = 0; k < L.in; ++k) z += x[k] * L.weight[k * L.out + o];
        const double t = L.activation == qnn::Activation::Tanh ? std::tanh(z) : z;
        switch (L.residual) {
          case qnn::Residual::None: y[o] = t; break;
          case qnn::Residual::Identity: y[o] = x[o] + t; break;
          case qnn::Residual::Doubling: y[o] = x[o % L.in] + t; break;
          case qnn::Residual::DoublingTimestep: y[o] = x[o % L.in] + L.dt[o] * t; break;
          case qnn::Residual::Timestep: y[o] = x[o] + L.dt[o] * t; break;
        }
      }
      x = y;
    }
    return x;
  };
  std::vector<double> energies;
  for (int i = 0; i < g.nlocal; ++i) {
    const int c = g.species[i];
    std::vector<double> T(M1 * 4, 0.0);
    for (int e = g.offsets[i]; e < g.offsets[i + 1]; ++e) {
      const int j = g.neighbors[e], a = g.species[j];
      double x[3];
      for (int d = 0; d < 3; ++d) x[d] = g.positions[3 * j + d] - g.positions[3 * i + d];
      const double r = std::sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2]);
      if (r >= m.rcut) continue;
      const double s = sw(r);
      const int p = c * S + a;
      const double R[4] = {s / m.std_s[p], s * x[0] / (r * m.std_r[p]), s * x[1] / (r * m.std_r[p]),
                           s * x[2] / (r * m.std_r[p])};
      const std::vector<double> G = run(m.embed[a], {(s - m.mean_s[p]) / m.std_s[p]});
      for (int mm = 0; mm < M1; ++mm)
        for (int k = 0; k < 4; ++k) T[mm * 4 + k] += G[mm] * R[k] / m.neighbor_norm;
    }
    std::vector<double> D(M1 * M2);
    for (int mm = 0; mm < M1; ++mm)
      for (int n = 0; n < M2; ++n)
        for (int k = 0; k < 4; ++k) D[mm * M2 + n] += T[mm * 4 + k] * T[n * 4 + k];
    energies.push_back(run(m.fit[c], D)[0] + m.energy_bias[c]);
  }
  return energies;
}

// ---------------------------------------------------------------------------- energy

TEST_F(EngineTest, EnergyMatchesPlainReference) {
  for (const Model& m : {model_a(), model_b()}) {
    Engine<double> engine(m, ExecSpace::Serial);
    const Frame w = water_frame(0);
    const Frame r = random_frame(14, 3);
    const std::vector<NeighborGraph> graphs = {
        periodic_graph(w, m.rcut), periodic_graph(r, m.rcut),
        cluster_graph(r.pos, r.species, m.rcut + 1.5)};
    for (const NeighborGraph& g : graphs) {
      const std::vector<double> ref = reference_atom_energies(m, g);
      const EvalResult res = evaluate(engine, g);
      ASSERT_EQ(res.atom_energy.size(), ref.size());
      double ref_total = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) {
        EXPECT_NEAR(res.atom_energy[i], ref[i], 1e-12 * (1 + std::abs(ref[i]))) << "atom " << i;
        ref_total += ref[i];
      }
      EXPECT_NEAR(res.energy, ref_total, 1e-12 * std::abs(ref_total));
    }
  }
}

// ---------------------------------------------------------------------------- forces

// Folded engine forces against central differences of E over the local atoms `atoms`.
// Finite-difference tests run many tiny evaluations and use the Serial space: OpenMP
// barriers on an oversubscribed machine would dominate their run time.
void check_forces_fd(Engine<double>& engine, const Frame& f, const std::vector<int>& atoms) {
  const double h = 1e-5;
  const NeighborGraph g = periodic_graph(f, engine.model().rcut);
  const std::vector<double> force = qnn::fold_ghost_forces(g, evaluate(engine, g).force);
  std::vector<double> fd, an;
  for (int a : atoms) {
    for (int d = 0; d < 3; ++d) {
      Frame p = f, q = f;
      p.pos[3 * a + d] += h;
      q.pos[3 * a + d] -= h;
      fd.push_back(-(periodic_energy(engine, p) - periodic_energy(engine, q)) / (2 * h));
      an.push_back(force[3 * a + d]);
    }
  }
  ASSERT_GT(norm(fd), 1e-3) << "degenerate test: no forces";
  EXPECT_LE(diff_norm(an, fd) / norm(fd), 1e-6);
}

TEST_F(EngineTest, ForcesMatchFiniteDifferencesOnWater) {
  Engine<double> engine(without_bias(model_a()), ExecSpace::Serial);
  const Frame w = water_frame(3);
  std::vector<int> atoms;
  for (int a = 0; a < w.natoms(); a += 13) atoms.push_back(a);  // O and H atoms
  check_forces_fd(engine, w, atoms);
}

TEST_F(EngineTest, ForcesMatchFiniteDifferencesOnRandomConfigurations) {
  for (const Model& m : {without_bias(model_a()), without_bias(model_b())}) {
    Engine<double> engine(m, ExecSpace::Serial);
    for (unsigned seed : {1u, 2u}) {
      const Frame f = random_frame(12, seed);  // cell narrower than 2 rcut: several images
      std::vector<int> atoms(f.natoms());
      std::iota(atoms.begin(), atoms.end(), 0);
      check_forces_fd(engine, f, atoms);
    }
  }
}

// ---------------------------------------------------------------------------- virial

// The frame with cell and positions mapped by (I + eps): r' = (I + eps) r.
Frame strained(const Frame& f, const std::array<double, 9>& eps) {
  Frame s = f;
  auto map = [&](const double* x, double* y) {
    for (int a = 0; a < 3; ++a)
      y[a] = x[a] + eps[3 * a] * x[0] + eps[3 * a + 1] * x[1] + eps[3 * a + 2] * x[2];
  };
  for (int v = 0; v < 3; ++v) map(&f.cell[3 * v], &s.cell[3 * v]);
  for (int i = 0; i < f.natoms(); ++i) map(&f.pos[3 * i], &s.pos[3 * i]);
  return s;
}

TEST_F(EngineTest, VirialMatchesStrainDerivative) {
  Engine<double> engine(without_bias(model_b()), ExecSpace::Serial);
  for (const Frame& f : {water_frame(1), random_frame(12, 7)}) {
    const EvalResult res = evaluate(engine, periodic_graph(f, engine.model().rcut));
    const double h = 1e-5;
    std::array<double, 9> w_fd{};  // W_ab = -dE/d eps_ab
    for (int k = 0; k < 9; ++k) {
      std::array<double, 9> ep{}, em{};
      ep[k] = h;
      em[k] = -h;
      w_fd[k] = -(periodic_energy(engine, strained(f, ep)) - periodic_energy(engine, strained(f, em))) /
                (2 * h);
    }
    // LAMMPS order xx yy zz xy xz yz; a symmetric virial matches both (a,b) and (b,a).
    const int ab[6][2] = {{0, 0}, {1, 1}, {2, 2}, {0, 1}, {0, 2}, {1, 2}};
    std::vector<double> an, fd;
    for (int c = 0; c < 6; ++c) {
      an.push_back(res.virial[c]);
      fd.push_back(w_fd[3 * ab[c][0] + ab[c][1]]);
      an.push_back(res.virial[c]);
      fd.push_back(w_fd[3 * ab[c][1] + ab[c][0]]);
    }
    ASSERT_GT(norm(fd), 1e-3);
    EXPECT_LE(diff_norm(an, fd) / norm(fd), 1e-6);
  }
}

// ---------------------------------------------------------------------------- invariances

TEST_F(EngineTest, TranslationInvariance) {
  Engine<double> engine(model_a(), ExecSpace::OpenMP);
  const Frame r = random_frame(14, 9);
  const EvalResult base = evaluate(engine, cluster_graph(r.pos, r.species, 5.0));
  const EvalResult pbase = evaluate(engine, periodic_graph(r, engine.model().rcut));
  std::vector<double> shifted = r.pos;
  const double t[3] = {3.7, -12.1, 0.45};
  for (std::size_t k = 0; k < shifted.size(); ++k) shifted[k] += t[k % 3];
  const EvalResult moved = evaluate(engine, cluster_graph(shifted, r.species, 5.0));
  EXPECT_NEAR(moved.energy, base.energy, 1e-12 * std::abs(base.energy));
  EXPECT_LE(diff_norm(moved.force, base.force), 1e-9 * norm(base.force));
  Frame ps = r;
  ps.pos = shifted;
  const NeighborGraph pg = periodic_graph(ps, engine.model().rcut);
  const EvalResult pmoved = evaluate(engine, pg);
  EXPECT_NEAR(pmoved.energy, pbase.energy, 1e-12 * std::abs(pbase.energy));
}

// A random proper rotation (Gram-Schmidt of random vectors, det +1), row-major.
std::array<double, 9> random_rotation(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  std::array<double, 9> q{};
  for (int r = 0; r < 3; ++r) {
    double v[3] = {n(rng), n(rng), n(rng)};
    for (int p = 0; p < r; ++p) {
      const double dot = v[0] * q[3 * p] + v[1] * q[3 * p + 1] + v[2] * q[3 * p + 2];
      for (int d = 0; d < 3; ++d) v[d] -= dot * q[3 * p + d];
    }
    const double len = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    for (int d = 0; d < 3; ++d) q[3 * r + d] = v[d] / len;
  }
  const double det = q[0] * (q[4] * q[8] - q[5] * q[7]) - q[1] * (q[3] * q[8] - q[5] * q[6]) +
                     q[2] * (q[3] * q[7] - q[4] * q[6]);
  if (det < 0)
    for (int d = 0; d < 3; ++d) q[6 + d] = -q[6 + d];
  return q;
}

std::vector<double> rotate(const std::array<double, 9>& q, const std::vector<double>& v) {
  std::vector<double> out(v.size());
  for (std::size_t i = 0; i < v.size() / 3; ++i)
    for (int a = 0; a < 3; ++a)
      out[3 * i + a] = q[3 * a] * v[3 * i] + q[3 * a + 1] * v[3 * i + 1] + q[3 * a + 2] * v[3 * i + 2];
  return out;
}

TEST_F(EngineTest, RotationInvarianceAndForceCovariance) {
  Engine<double> engine(model_a(), ExecSpace::OpenMP);
  const std::array<double, 9> q = random_rotation(4);
  // Cluster.
  const Frame r = random_frame(14, 10);
  const EvalResult base = evaluate(engine, cluster_graph(r.pos, r.species, 5.0));
  const EvalResult rot = evaluate(engine, cluster_graph(rotate(q, r.pos), r.species, 5.0));
  EXPECT_NEAR(rot.energy, base.energy, 1e-12 * std::abs(base.energy));
  EXPECT_LE(diff_norm(rot.force, rotate(q, base.force)), 1e-9 * norm(base.force));
  // Periodic water: rotate positions and cell (a general triclinic cell results).
  const Frame w = water_frame(2);
  Frame wr = w;
  wr.pos = rotate(q, w.pos);
  const std::vector<double> cell_rot = rotate(q, std::vector<double>(w.cell.begin(), w.cell.end()));
  std::copy(cell_rot.begin(), cell_rot.end(), wr.cell.begin());
  const NeighborGraph g0 = periodic_graph(w, engine.model().rcut);
  const NeighborGraph g1 = periodic_graph(wr, engine.model().rcut);
  const EvalResult e0 = evaluate(engine, g0);
  const EvalResult e1 = evaluate(engine, g1);
  EXPECT_NEAR(e1.energy, e0.energy, 1e-12 * std::abs(e0.energy));
  const std::vector<double> f0 = qnn::fold_ghost_forces(g0, e0.force);
  const std::vector<double> f1 = qnn::fold_ghost_forces(g1, e1.force);
  EXPECT_LE(diff_norm(f1, rotate(q, f0)), 1e-9 * norm(f0));
}

TEST_F(EngineTest, PermutationInvarianceAndForceCovariance) {
  Engine<double> engine(model_b(), ExecSpace::OpenMP);
  const Frame w = water_frame(4);
  std::vector<int> perm(w.natoms());
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(8));
  Frame p = w;
  for (int k = 0; k < w.natoms(); ++k) {
    p.species[k] = w.species[perm[k]];
    for (int d = 0; d < 3; ++d) p.pos[3 * k + d] = w.pos[3 * perm[k] + d];
  }
  const NeighborGraph g0 = periodic_graph(w, engine.model().rcut);
  const NeighborGraph g1 = periodic_graph(p, engine.model().rcut);
  const EvalResult e0 = evaluate(engine, g0);
  const EvalResult e1 = evaluate(engine, g1);
  EXPECT_NEAR(e1.energy, e0.energy, 1e-12 * std::abs(e0.energy));
  const std::vector<double> f0 = qnn::fold_ghost_forces(g0, e0.force);
  const std::vector<double> f1 = qnn::fold_ghost_forces(g1, e1.force);
  std::vector<double> f0p(f0.size());
  for (int k = 0; k < w.natoms(); ++k) {
    EXPECT_NEAR(e1.atom_energy[k], e0.atom_energy[perm[k]], 1e-12 * std::abs(e0.atom_energy[perm[k]]));
    for (int d = 0; d < 3; ++d) f0p[3 * k + d] = f0[3 * perm[k] + d];
  }
  EXPECT_LE(diff_norm(f1, f0p), 1e-10 * norm(f0));
}

// ---------------------------------------------------------------------------- smoothness

// Three atoms on a line: B at -2 Å, A at 0, C at +r; only the A-C pair can cross rcut.
EvalResult trimer(Engine<double>& engine, double r) {
  const std::vector<double> pos = {0, 0, 0, -2.0, 0, 0, r, 0, 0};
  return evaluate(engine, cluster_graph(pos, {0, 1, 1}, engine.model().rcut + 2.0));
}

TEST_F(EngineTest, TrimerIsSmoothAcrossTheCutoff) {
  // Narrow switching region (rc - rs = 1 Å) so that the asymptotics are visible.
  Engine<double> engine(model_a(4.0, 3.0), ExecSpace::Serial);
  const double rc = engine.model().rcut;
  const EvalResult far = trimer(engine, rc + 1.0);
  // Beyond the cutoff the pair contributes exactly nothing.
  for (double d : {0.5, 1e-3, 1e-9}) {
    const EvalResult out = trimer(engine, rc + d);
    EXPECT_EQ(out.energy, far.energy);
    EXPECT_EQ(out.force[6], 0.0);
  }
  // Inside, s ~ 10 (1-u)^3 / r: the energy step vanishes like d^3 and the force like d^2.
  std::vector<double> de, fc;
  for (double d : {1e-1, 1e-2, 1e-3}) {
    const EvalResult in = trimer(engine, rc - d);
    de.push_back(std::abs(in.energy - far.energy));
    fc.push_back(std::abs(in.force[6]));
  }
  ASSERT_GT(de[0], 0.0);
  ASSERT_GT(fc[0], 0.0);
  EXPECT_LT(de[1], 3e-3 * de[0]);
  EXPECT_LT(fc[1], 3e-2 * fc[0]);
  EXPECT_LT(fc[2], 3e-2 * fc[1]);
  // Scan through rc: energy differences match the trapezoidal integral of the force on C.
  const double dr = 1e-3;
  EvalResult prev = trimer(engine, rc - 0.05);
  for (int k = 1; k <= 100; ++k) {
    const EvalResult cur = trimer(engine, rc - 0.05 + k * dr);
    const double work = -0.5 * (prev.force[6] + cur.force[6]) * dr;
    EXPECT_NEAR(cur.energy - prev.energy, work, 1e-3 * std::abs(work) + 1e-11) << "step " << k;
    prev = cur;
  }
}

TEST_F(EngineTest, DimerForcesVanishAtTheCutoff) {
  Engine<double> engine(model_a(4.0, 3.0), ExecSpace::Serial);
  const double rc = engine.model().rcut;
  auto dimer = [&](double r) {
    const double e[3] = {0.48, -0.6, 0.64};  // unit vector
    const std::vector<double> pos = {0.1, 0.2, 0.3, 0.1 + r * e[0], 0.2 + r * e[1], 0.3 + r * e[2]};
    return evaluate(engine, cluster_graph(pos, {0, 1}, rc + 1.0));
  };
  const EvalResult iso = dimer(rc + 0.5);
  EXPECT_EQ(dimer(rc + 1e-6).energy, iso.energy);
  EXPECT_EQ(max_abs(dimer(rc + 1e-6).force), 0.0);
  // For an isolated pair D ~ s^2 ~ d^6, so the force ~ d^5.
  const double f1 = max_abs(dimer(rc - 1e-1).force);
  const double f2 = max_abs(dimer(rc - 1e-2).force);
  ASSERT_GT(f1, 0.0);
  EXPECT_LT(f2, 1e-3 * f1);
  EXPECT_NEAR(dimer(rc - 1e-2).energy, iso.energy, 1e-10);
}

// ---------------------------------------------------------------------------- sums

TEST_F(EngineTest, PerAtomEnergiesAndVirialsSumToTotals) {
  Engine<double> engine(model_a(), ExecSpace::OpenMP);
  EvalOptions opt;
  opt.atom_virial = true;
  const NeighborGraph g = periodic_graph(water_frame(5), engine.model().rcut);
  const EvalResult res = evaluate(engine, g, opt);
  ASSERT_EQ(res.atom_energy.size(), static_cast<std::size_t>(g.nlocal));
  ASSERT_EQ(res.atom_virial.size(), 6 * static_cast<std::size_t>(g.ntotal));
  double e = 0;
  for (double x : res.atom_energy) e += x;
  EXPECT_NEAR(e, res.energy, 1e-13 * std::abs(res.energy));
  double vmax = 0;
  for (double v : res.virial) vmax = std::max(vmax, std::abs(v));
  ASSERT_GT(vmax, 0.0);
  for (int c = 0; c < 6; ++c) {
    double v = 0;
    for (int a = 0; a < g.ntotal; ++a) v += res.atom_virial[6 * a + c];
    EXPECT_NEAR(v, res.virial[c], 1e-12 * vmax) << "component " << c;
  }
  // Newton's third law over local + ghost atoms: the forces sum to zero.
  for (int d = 0; d < 3; ++d) {
    double s = 0;
    for (int a = 0; a < g.ntotal; ++a) s += res.force[3 * a + d];
    EXPECT_NEAR(s, 0.0, 1e-12 * norm(res.force));
  }
  // Options off: no per-atom arrays, same totals.
  EvalOptions off;
  off.atom_energy = false;
  const EvalResult lean = evaluate(engine, g, off);
  EXPECT_TRUE(lean.atom_energy.empty());
  EXPECT_TRUE(lean.atom_virial.empty());
  EXPECT_EQ(lean.energy, res.energy);
  EXPECT_EQ(lean.virial, res.virial);
}

// ---------------------------------------------------------------------------- determinism

void expect_close(const EvalResult& a, const EvalResult& b, double rel) {
  EXPECT_NEAR(a.energy, b.energy, rel * std::abs(b.energy));
  EXPECT_LE(diff_norm(a.force, b.force), rel * norm(b.force));
  EXPECT_LE(diff_norm(a.atom_energy, b.atom_energy), rel * norm(b.atom_energy));
  EXPECT_LE(diff_norm(std::vector<double>(a.virial.begin(), a.virial.end()),
                      std::vector<double>(b.virial.begin(), b.virial.end())),
            rel * max_abs(std::vector<double>(b.virial.begin(), b.virial.end())));
  EXPECT_LE(diff_norm(a.atom_virial, b.atom_virial), rel * (norm(b.atom_virial) + 1e-300));
}

TEST_F(EngineTest, OpenMPMatchesSerial) {
  const Model m = model_a();
  Engine<double> serial(m, ExecSpace::Serial);
  Engine<double> omp(m, ExecSpace::OpenMP);
  EvalOptions opt;
  opt.atom_virial = true;
  const NeighborGraph g = periodic_graph(water_frame(6), m.rcut);
  expect_close(evaluate(omp, g, opt), evaluate(serial, g, opt), 1e-12);
}

TEST_F(EngineTest, ChunkingBufferReuseAndPrivateReverseIndexGiveIdenticalResults) {
  const Model m = model_b();
  Engine<double> engine(m, ExecSpace::OpenMP);
  EvalOptions opt;
  opt.atom_virial = true;
  const NeighborGraph big = periodic_graph(water_frame(7), m.rcut);
  const NeighborGraph small = periodic_graph(random_frame(10, 4), m.rcut);
  const EvalResult ref_big = evaluate(engine, big, opt);
  const EvalResult ref_small = evaluate(engine, small, opt);
  const EvalResult again_big = evaluate(engine, big, opt);  // buffers grown, then reused
  EXPECT_EQ(again_big.force, ref_big.force);
  EXPECT_EQ(again_big.energy, ref_big.energy);
  Engine<double> fresh(m, ExecSpace::OpenMP);
  EXPECT_EQ(evaluate(fresh, small, opt).force, ref_small.force);
  for (int chunk : {1, 5, 200}) {
    EvalOptions c = opt;
    c.chunk_edges = chunk;
    const EvalResult r = evaluate(engine, big, c);
    EXPECT_EQ(r.energy, ref_big.energy) << "chunk " << chunk;
    EXPECT_EQ(r.force, ref_big.force) << "chunk " << chunk;
    EXPECT_EQ(r.atom_virial, ref_big.atom_virial) << "chunk " << chunk;
  }
  NeighborGraph bare = big;
  bare.rev_offsets.clear();
  bare.rev_edges.clear();
  const EvalResult r = evaluate(engine, bare, opt);
  EXPECT_EQ(r.force, ref_big.force);
  EXPECT_EQ(r.virial, ref_big.virial);
}

// ---------------------------------------------------------------------------- precision

TEST_F(EngineTest, FloatEngineAgreesWithDoubleEngine) {
  const Model m = model_a();
  Engine<double> dbl(m, ExecSpace::OpenMP);
  Engine<float> flt(m, ExecSpace::OpenMP);
  const NeighborGraph g = periodic_graph(water_frame(8), m.rcut);
  EvalOptions opt;
  opt.atom_virial = true;
  const EvalResult d = evaluate(dbl, g, opt);
  const EvalResult f = evaluate(flt, g, opt);
  // Compare the network part of the energies (the bias is added in double by both).
  std::vector<double> net_d, net_f;
  double enet = 0;
  for (int i = 0; i < g.nlocal; ++i) {
    net_d.push_back(d.atom_energy[i] - m.energy_bias[g.species[i]]);
    net_f.push_back(f.atom_energy[i] - m.energy_bias[g.species[i]]);
    enet += std::abs(net_d.back());
  }
  EXPECT_LE(diff_norm(net_f, net_d), 1e-5 * norm(net_d));
  EXPECT_LE(std::abs(f.energy - d.energy), 1e-5 * enet);
  EXPECT_LE(diff_norm(f.force, d.force), 1e-5 * norm(d.force));
  EXPECT_LE(diff_norm(std::vector<double>(f.virial.begin(), f.virial.end()),
                      std::vector<double>(d.virial.begin(), d.virial.end())),
            1e-5 * max_abs(std::vector<double>(d.virial.begin(), d.virial.end())));
}

// ---------------------------------------------------------------------------- edge cases

TEST_F(EngineTest, EmptyAndEdgelessGraphs) {
  const Model m = model_a();
  Engine<double> engine(m, ExecSpace::OpenMP);
  NeighborGraph empty;
  EvalResult r = evaluate(engine, empty);
  EXPECT_EQ(r.energy, 0.0);
  EXPECT_TRUE(r.force.empty());
  EXPECT_TRUE(r.atom_energy.empty());
  // Ghosts only, no centres.
  NeighborGraph ghosts;
  ghosts.ntotal = 2;
  ghosts.positions = {0, 0, 0, 1, 0, 0};
  ghosts.species = {0, 1};
  r = evaluate(engine, ghosts);
  EXPECT_EQ(r.energy, 0.0);
  EXPECT_EQ(r.force, std::vector<double>(6, 0.0));
  // Isolated atoms: every atom has the energy of an empty neighbourhood.
  const std::vector<double> pos = {0, 0, 0, 10, 0, 0, 0, 10, 0};
  const NeighborGraph lone = cluster_graph(pos, {0, 1, 1}, m.rcut);
  ASSERT_EQ(lone.nedges(), 0);
  r = evaluate(engine, lone);
  const std::vector<double> ref = reference_atom_energies(m, lone);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(r.atom_energy[i], ref[i], 1e-12 * std::abs(ref[i]));
  EXPECT_EQ(r.force, std::vector<double>(9, 0.0));
}

TEST_F(EngineTest, RejectsBadSpeciesAndStaleReverseIndex) {
  const Model m = model_a();
  Engine<double> engine(m, ExecSpace::Serial);
  const Frame w = water_frame(0);
  NeighborGraph g = periodic_graph(w, m.rcut);
  for (int bad : {2, -1}) {
    for (int atom : {5, g.ntotal - 1}) {  // a local atom and a ghost
      NeighborGraph b = g;
      b.species[atom] = bad;
      try {
        evaluate(engine, b);
        ADD_FAILURE() << "species " << bad << " on atom " << atom << " was accepted";
      } catch (const qnn::Error& e) {
        EXPECT_NE(std::string(e.what()).find("species index"), std::string::npos) << e.what();
      }
    }
  }
  NeighborGraph stale = g;
  stale.neighbors[0] = stale.neighbors[0] == 1 ? 2 : 1;  // edges changed, index not rebuilt
  EXPECT_THROW(evaluate(engine, stale), qnn::Error);
  NeighborGraph truncated = g;
  truncated.offsets.pop_back();
  EXPECT_THROW(evaluate(engine, truncated), qnn::Error);
}

}  // namespace

TEST(Engine, RejectsOverlappingAtoms) {
  const qnn::Model m = qnn::test::small_water_model(3, 4.0);
  qnn::NeighborGraph g;
  g.nlocal = 2;
  g.ntotal = 2;
  g.offsets = {0, 1, 2};
  g.neighbors = {1, 0};
  g.positions = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0};
  g.species = {0, 1};
  qnn::Engine<double> engine(m, qnn::ExecSpace::Serial);
  qnn::EvalResult r;
  try {
    engine.compute(g, r);
    ADD_FAILURE() << "coincident atoms were accepted";
  } catch (const qnn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("overlapping atoms"), std::string::npos) << e.what();
  }
}
