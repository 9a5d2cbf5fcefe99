// The integer engine (src/qnn/qengine.*): the fast Kokkos path against the scalar reference
// bit for bit (random models, awkward widths, saturation, mixed plans), determinism (threads,
// chunking, atom order), the float path of the reference against the float engine, the
// weight-only mode's forces against finite differences, and the mode errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <iostream>
#include <random>

#include "qnn/int_gemm.hpp"

#include "qnn/data.hpp"
#include "qnn/error.hpp"
#include "qnn/evaluator.hpp"
#include "qnn/qengine.hpp"
#include "quant_test_util.hpp"
#include "test_util.hpp"

using namespace qnn;
using qnn::test::quantize_int8;
using qnn::test::quantize_minmax;
using qnn::test::small_water_model;

namespace {

struct Frame {
  Cell cell{};
  std::vector<double> pos;
  std::vector<int> species;
};

std::string water_dir() { return std::string(QNN_WATER_DATA_DIR) + "/data_0"; }

Frame water_frame(int k) {
  static const System sys = read_system(water_dir(), {"O", "H"});
  Frame f;
  f.cell = sys.cell(k);
  f.pos = sys.positions(k);
  f.species = sys.species;
  return f;
}

NeighborGraph graph_of(const Frame& f, double rcut) {
  return build_periodic_graph(f.cell, f.pos, f.species, rcut);
}

EvalResult run_fast(const Model& m, bool all, const NeighborGraph& g, ExecSpace sp = ExecSpace::OpenMP,
                    EvalOptions opt = {}) {
  QEngine e(m, all, sp);
  EvalResult r;
  e.compute(g, r, opt);
  return r;
}

EvalResult run_ref(const Model& m, bool all, const NeighborGraph& g, EvalOptions opt = {}) {
  EvalResult r;
  qengine_reference(m, all, g, r, opt);
  return r;
}

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  // memcmp of an empty vector's data() (null) is undefined (UBSan): compare sizes first
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

void expect_bitwise(const EvalResult& a, const EvalResult& b, const std::string& what) {
  EXPECT_EQ(std::memcmp(&a.energy, &b.energy, sizeof(double)), 0) << what << ": energy " << a.energy << " vs " << b.energy;
  EXPECT_TRUE(same_bits(a.atom_energy, b.atom_energy)) << what << ": atom energies";
  EXPECT_TRUE(same_bits(a.force, b.force)) << what << ": forces";
  EXPECT_EQ(std::memcmp(a.virial.data(), b.virial.data(), sizeof(a.virial)), 0) << what << ": virial";
  EXPECT_TRUE(same_bits(a.atom_virial, b.atom_virial)) << what << ": atom virial";
}

double rel_rms(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (std::size_t k = 0; k < a.size(); ++k) {
    num += (a[k] - b[k]) * (a[k] - b[k]);
    den += b[k] * b[k];
  }
  return std::sqrt(num / den);
}

// The water model at the size of the shipped one's embedding (smaller fitting net).
Model water_like_model(std::uint64_t seed) {
  Model m = Model::make_random({"O", "H"}, 6.0, 0.5, {46, 92}, {16, 32, 64}, 16, {64, 64}, true, seed);
  m.energy_bias = {-93.5, -187.0};
  m.mean_s = {0.055, 0.089, 0.089, 0.067};
  m.std_s = {0.077, 0.196, 0.196, 0.115};
  m.std_r = {0.055, 0.124, 0.124, 0.077};
  return m;
}

}  // namespace

// With no quantization metadata the reference is a plain double evaluation of the network:
// it must agree with the float engine in double.
TEST(QEngineReference, FloatPathMatchesFloatEngine) {
  const Model m = water_like_model(3);
  const NeighborGraph g = graph_of(water_frame(0), m.rcut);
  Engine<double> eng(m, ExecSpace::Serial);
  EvalResult a;
  eng.compute(g, a, {true, true});
  const EvalResult b = run_ref(m, false, g, {true, true});
  // The reference rounds atomic energies, dE/dx_ij and virial terms to the grids of
  // qengine.hpp; the differences are bounded by half a grid step per rounded term.
  const double ne = g.nedges(), na = g.nlocal;
  EXPECT_NEAR(a.energy, b.energy, 1e-9 * std::abs(a.energy) + na * kEnergyGrid);
  double fmax = 0;
  for (std::size_t k = 0; k < a.force.size(); ++k) fmax = std::max(fmax, std::abs(a.force[k] - b.force[k]));
  EXPECT_LT(fmax, 1e-9 + 200 * kForceGrid);  // < 200 edges per atom
  for (int c = 0; c < 6; ++c)
    EXPECT_NEAR(a.virial[c], b.virial[c], 1e-9 * (1 + std::abs(a.virial[c])) + ne * kVirialGrid);
}

// Registered once per GEMM path (QNN_ISA=scalar|avx2|avxvnni|avx512vnni); skipped where the
// CPU lacks the path.
TEST(QEngine, Int8FastPathMatchesReferenceBitwise) {
  if (const char* isa = std::getenv("QNN_ISA"))
    if (!igemm::isa_available(igemm::parse_isa(isa))) GTEST_SKIP() << "CPU lacks " << isa;
  std::cout << "GEMM path: " << igemm::isa_name(igemm::active_isa()) << "\n";
  const Model fp = water_like_model(5);
  std::vector<NeighborGraph> calib = {graph_of(water_frame(0), fp.rcut)};
  const Model q = quantize_int8(fp, calib);
  for (int k : {1, 2}) {
    const NeighborGraph g = graph_of(water_frame(k), fp.rcut);
    const EvalOptions opt{true, true};
    const EvalResult ref = run_ref(q, true, g, opt);
    expect_bitwise(run_fast(q, true, g, ExecSpace::OpenMP, opt), ref, "OpenMP frame " + std::to_string(k));
    expect_bitwise(run_fast(q, true, g, ExecSpace::Serial, opt), ref, "Serial");
    // chunking does not change a bit
    expect_bitwise(run_fast(q, true, g, ExecSpace::OpenMP, {true, true, 257}), ref, "chunk 257");
    // and the result is physics, not noise: close to the float model
    EvalResult f;
    Engine<double>(fp, ExecSpace::Serial).compute(g, f, opt);
    EXPECT_LT(rel_rms(ref.force, f.force), 0.2);
    EXPECT_NEAR(ref.energy / 192, f.energy / 192, 0.05);
  }
}

// Awkward widths (not multiples of 4 or 16), small systems (1..10 atoms), and the mixed plan
// with every kind of layer: int8, 4-bit, 16-bit, weight-only, fp32.
TEST(QEngine, AwkwardSizesAndMixedPlansMatchReference) {
  const std::vector<std::vector<int>> embeds = {{3, 6, 12}, {5, 10, 20}, {7, 14}};
  const std::vector<std::vector<int>> fits = {{9, 9}, {17}, {33, 33, 33}};
  std::mt19937 rng(11);
  for (std::size_t c = 0; c < embeds.size(); ++c) {
    Model fp = Model::make_random({"O", "H"}, 4.0, 0.5, {10, 20}, embeds[c], 3, fits[c], true, 100 + c);
    fp.energy_bias = {-1.0, -2.0};
    for (int natoms : {1, 2, 3, 5, 10}) {
      std::vector<double> pos;
      std::vector<int> sp;
      std::uniform_real_distribution<double> u(0.0, 4.5);
      while (static_cast<int>(sp.size()) < natoms) {
        double x[3] = {u(rng), u(rng), u(rng)};
        bool ok = true;
        for (std::size_t j = 0; j < sp.size(); ++j) {
          double r2 = 0;
          for (int d = 0; d < 3; ++d) r2 += std::pow(pos[3 * j + d] - x[d], 2);
          ok = ok && r2 > 0.8;
        }
        if (!ok) continue;
        pos.insert(pos.end(), x, x + 3);
        sp.push_back(static_cast<int>(sp.size()) % 3 == 0 ? 0 : 1);
      }
      const Cell cell = {4.5, 0, 0, 0.3, 4.5, 0, -0.2, 0.4, 4.5};
      const NeighborGraph g = build_periodic_graph(cell, pos, sp, fp.rcut);
      const Model q8 = quantize_int8(fp, {g});
      const EvalOptions opt{true, true};
      expect_bitwise(run_fast(q8, true, g, ExecSpace::OpenMP, opt), run_ref(q8, true, g, opt),
                     "int8 case " + std::to_string(c) + " natoms " + std::to_string(natoms));
      const Model qm = quantize_minmax(fp, {g}, [](int f, int n, int l) {
        const int k = (f * 7 + n * 3 + l) % 5;
        static const std::pair<int, int> kinds[] = {{8, 8}, {4, 4}, {16, 16}, {8, 0}, {0, 0}};
        return kinds[k];
      });
      if (!qm.embed[0].layers.back().quant.quantized() || !qm.embed[1].layers.back().quant.quantized()) {
        // out_scale only set on quantized last layers: the descriptor runs in float then
      }
      expect_bitwise(run_fast(qm, false, g, ExecSpace::OpenMP, opt), run_ref(qm, false, g, opt),
                     "mixed case " + std::to_string(c) + " natoms " + std::to_string(natoms));
    }
  }
}

// Activation scales far too small: every activation saturates at ±127 (and gradients are
// large); the paths must still agree and the result must stay finite.
TEST(QEngine, SaturatingActivationsMatchReference) {
  const Model fp = water_like_model(8);
  const NeighborGraph g = graph_of(water_frame(4), fp.rcut);
  Model q = quantize_int8(fp, {g});
  for (auto* fam : {&q.embed, &q.fit})
    for (Net& n : *fam)
      for (DenseLayer& L : n.layers) {
        L.quant.act_scale *= 1e-3f;
        if (L.quant.out_scale > 0) L.quant.out_scale *= 1e-3f;
      }
  const EvalResult ref = run_ref(q, true, g, {true, true});
  for (double v : ref.force) ASSERT_TRUE(std::isfinite(v));
  expect_bitwise(run_fast(q, true, g, ExecSpace::OpenMP, {true, true}), ref, "saturating");
}

// The same atoms in another order give the same per-atom results bit for bit.
TEST(QEngine, AtomOrderDoesNotChangeABit) {
  const Model fp = water_like_model(9);
  const Frame f = water_frame(5);
  const NeighborGraph g = graph_of(f, fp.rcut);
  const Model q = quantize_int8(fp, {g});
  const EvalResult a = run_fast(q, true, g);
  const int n = static_cast<int>(f.species.size());
  std::vector<int> perm(static_cast<std::size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(42));
  Frame p = f;
  for (int k = 0; k < n; ++k) {
    p.species[k] = f.species[perm[k]];
    for (int d = 0; d < 3; ++d) p.pos[3 * k + d] = f.pos[3 * perm[k] + d];
  }
  const NeighborGraph gp = graph_of(p, fp.rcut);
  const EvalResult b = run_fast(q, true, gp);
  EXPECT_EQ(std::memcmp(&a.energy, &b.energy, sizeof(double)), 0) << a.energy << " vs " << b.energy;
  const std::vector<double> fa = fold_ghost_forces(g, a.force);
  const std::vector<double> fb = fold_ghost_forces(gp, b.force);
  int diff = 0;
  for (int k = 0; k < n; ++k) {
    if (std::memcmp(&a.atom_energy[perm[k]], &b.atom_energy[k], sizeof(double)) != 0) ++diff;
    for (int d = 0; d < 3; ++d)
      if (std::memcmp(&fa[3 * perm[k] + d], &fb[3 * k + d], sizeof(double)) != 0) ++diff;
  }
  EXPECT_EQ(diff, 0);
  for (int c = 0; c < 6; ++c) EXPECT_EQ(a.virial[c], b.virial[c]);
}

// Thread-count independence: each registration of this test (OMP_NUM_THREADS = 1, 2, 4)
// compares the OpenMP engine with the serial reference, so all of them agree bit for bit.
TEST(QEngineThreads, OpenMPMatchesReference) {
  const Model fp = water_like_model(10);
  const NeighborGraph g = graph_of(water_frame(6), fp.rcut);
  const Model q = quantize_int8(fp, {g});
  expect_bitwise(run_fast(q, true, g, ExecSpace::OpenMP, {true, true}),
                 run_ref(q, true, g, {true, true}), "OpenMP threads");
}

// weight-only: the energy is a smooth function of the positions and the forces are its exact
// gradient (central differences in double on the dequantized weights), and the evaluator of
// that mode (float engine) agrees with the double evaluation to single precision.
TEST(QEngine, WeightOnlyForcesAreTheEnergyGradient) {
  Model fp = small_water_model(12, 4.0);
  fp.energy_bias = {0.0, 0.0};  // keeps the energy's rounding error small for the differences
  Frame f = water_frame(7);
  const NeighborGraph g0 = graph_of(f, fp.rcut);
  const Model q = quantize_minmax(fp, {g0}, [](int, int, int) { return std::make_pair(8, 0); });
  EXPECT_EQ(mode_unsupported_reason(q, Mode::WeightOnly), "");
  Engine<double> eng(q, ExecSpace::Serial);
  EvalResult r0;
  eng.compute(g0, r0);
  const std::vector<double> f0 = fold_ghost_forces(g0, r0.force);
  const double h = 1e-4;
  double fscale = 0;
  for (double v : f0) fscale = std::max(fscale, std::abs(v));
  double worst = 0;
  for (int atom : {0, 1, 50, 191})
    for (int d = 0; d < 3; ++d) {
      double e[2];
      for (int s = 0; s < 2; ++s) {
        Frame p = f;
        p.pos[3 * atom + d] += s ? -h : h;
        EvalResult r;
        eng.compute(graph_of(p, fp.rcut), r);
        e[s] = r.energy;
      }
      const double fd = -(e[0] - e[1]) / (2 * h);
      worst = std::max(worst, std::abs(fd - f0[3 * atom + d]) / fscale);
    }
  EXPECT_LT(worst, 1e-6);
  auto ev = make_evaluator(q, Mode::WeightOnly, ExecSpace::Serial);
  EvalResult rw;
  ev->compute(g0, rw);
  EXPECT_LT(rel_rms(rw.force, r0.force), 1e-5);
}

TEST(QEngine, ModesThatAFileCannotRunAreClearErrors) {
  const Model fp = small_water_model(13, 4.0);
  const NeighborGraph g = graph_of(water_frame(0), fp.rcut);
  EXPECT_NE(mode_unsupported_reason(fp, Mode::Int8).find("qnn quantize"), std::string::npos);
  EXPECT_THROW(make_evaluator(fp, Mode::Mixed), Error);
  EXPECT_THROW(make_evaluator(fp, Mode::WeightOnly), Error);
  const Model mixed = quantize_minmax(fp, {g}, [](int f, int, int) {
    return f == 0 ? std::make_pair(8, 8) : std::make_pair(0, 0);
  });
  const std::string why = mode_unsupported_reason(mixed, Mode::Int8);
  EXPECT_NE(why.find("fp32 in the file's plan"), std::string::npos) << why;
  EXPECT_NE(why.find("mode mixed"), std::string::npos) << why;
  EXPECT_EQ(mode_unsupported_reason(mixed, Mode::Mixed), "");
  EXPECT_THROW(parse_mode("int4"), Error);
  EXPECT_EQ(parse_mode("weight-only"), Mode::WeightOnly);
  // a 16-bit layer is not int8
  const Model q16 = quantize_minmax(fp, {g}, [](int, int, int) { return std::make_pair(16, 16); });
  EXPECT_NE(mode_unsupported_reason(q16, Mode::Int8).find("at most 8 bits"), std::string::npos);
  EXPECT_EQ(mode_unsupported_reason(q16, Mode::Mixed), "");
  // weights off their grid are refused
  Model bad = quantize_int8(fp, {g});
  bad.fit[0].layers[0].weight[0] += 0.37 * bad.fit[0].layers[0].quant.weight_scale[0];
  EXPECT_THROW(QEngine(bad, true), Error);
}

// The quantized file round-trips and evaluates to the same bits after reading.
TEST(QEngine, QuantizedFileRoundTripEvaluatesIdentically) {
  const Model fp = small_water_model(14, 4.0);
  const NeighborGraph g = graph_of(water_frame(1), fp.rcut);
  const Model q = quantize_int8(fp, {g});
  qnn::test::TempPath tmp(".qnn");
  write_model(q, tmp.str());
  const Model r = read_model(tmp.str());
  EXPECT_EQ(r.default_mode, "int8");
  // The file stores biases in float32, so compare a second round trip with the first.
  qnn::test::TempPath tmp2(".qnn");
  write_model(r, tmp2.str());
  const Model r2 = read_model(tmp2.str());
  for (int s = 0; s < 2; ++s)
    for (std::size_t l = 0; l < r.fit[s].layers.size(); ++l) {
      const QuantSpec& a = q.fit[s].layers[l].quant;
      const QuantSpec& b = r2.fit[s].layers[l].quant;
      EXPECT_EQ(a.weight_scale, b.weight_scale);
      EXPECT_EQ(a.act_scale, b.act_scale);
      EXPECT_EQ(a.weight_bits, b.weight_bits);
    }
  EXPECT_EQ(q.embed[1].layers.back().quant.out_scale, r2.embed[1].layers.back().quant.out_scale);
  expect_bitwise(run_fast(r2, true, g), run_fast(r, true, g), "after round trip");
}
