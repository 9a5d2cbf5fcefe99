// The LibTorch se_e2_a module (autograd forces) against the Kokkos engine (hand-derived
// forces) on the same random weights: energies and forces agree to 1e-10 relative in double
// and 1e-5 in float (the project's acceptance test for the independent reference). Also the
// Model <-> module conversion and batching of several frames.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "qnn/data/data.hpp"
#include "qnn/error.hpp"
#include "qnn/engine/exact_engine.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"
#include "test_util.hpp"
#include "torch/embedding_jet.hpp"
#include "torch/jet_kernels.hpp"
#include "torch/se2a_module.hpp"

namespace {

using qnn::Model;
using qnn::NeighborGraph;
namespace lt = qnn::libtorch;

using qnn::test::water_dir;

const qnn::System& water() {
  static const qnn::System sys = qnn::read_system(water_dir() + "/data_0", {"O", "H"});
  return sys;
}

// Random statistics and biases on top of Model::make_random, so normalisation is exercised.
Model with_random_stats(Model m, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  for (std::size_t k = 0; k < m.mean_s.size(); ++k) {
    m.mean_s[k] = 0.4 * (u(rng) - 1.0);
    m.std_s[k] = u(rng);
    m.std_r[k] = u(rng);
  }
  for (auto& b : m.energy_bias) b = 2.0 * (u(rng) - 1.0);
  return m;
}

// The water architecture at a smaller width: rcut 6, sel [46, 92], embedding 1->8->16->32
// (doubling residuals), fitting 256->32->32->1 (timestep residual).
Model water_like_model() {
  return with_random_stats(Model::make_random({"O", "H"}, 6.0, 0.5, {46, 92}, {8, 16, 32}, 8, {32, 32}, true, 101), 3);
}

// Identity residuals in the embedding (8 -> 8) and fitting nets, no timestep, rcut_smth 2.
Model identity_model() {
  return with_random_stats(Model::make_random({"O", "H"}, 5.0, 2.0, {30, 60}, {4, 8, 8}, 4, {16, 16}, false, 202), 4);
}

struct Reference {
  double energy = 0;
  std::vector<double> atom_energy;  // (nlocal)
  std::vector<double> force;        // (nlocal, 3) folded
};

// The Kokkos engine's energy, per-atom energies and folded forces.
template <class Real>
Reference engine_eval(const Model& m, const NeighborGraph& g) {
  qnn::ensure_kokkos_initialized(2);
  qnn::Engine<Real> engine(m);
  qnn::EvalResult r;
  engine.compute(g, r);
  return {r.energy, r.atom_energy, qnn::fold_ghost_forces(g, r.force)};
}

// The module's results as doubles (by the embedding jet unless autograd_only).
Reference module_eval(const Model& m, const NeighborGraph& g, torch::Dtype dtype, bool autograd_only = false) {
  lt::Se2aModule module(m, dtype);
  lt::EnergyForces ef = lt::energy_and_forces(module, lt::edges_from_graph(g, dtype), false, autograd_only);
  Reference out;
  out.energy = ef.frame_energy.to(torch::kFloat64)[0].item<double>();
  torch::Tensor ae = ef.atom_energy.to(torch::kFloat64).contiguous();
  torch::Tensor f = ef.forces.to(torch::kFloat64).contiguous();
  out.atom_energy.assign(ae.data_ptr<double>(), ae.data_ptr<double>() + ae.numel());
  out.force.assign(f.data_ptr<double>(), f.data_ptr<double>() + f.numel());
  return out;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (std::size_t k = 0; k < std::min(a.size(), b.size()); ++k) m = std::max(m, std::abs(a[k] - b[k]));
  return m;
}

// Relative agreement: energy against Σ|E_i| (robust when E is near zero), per-atom energies
// and forces against their largest magnitude.
void expect_agree(const Reference& ref, const Reference& got, double tol) {
  double scale_e = 0;
  for (double e : ref.atom_energy) scale_e += std::abs(e);
  std::printf("    relative differences: E %.2e, E_i %.2e, F %.2e (tolerance %.0e)\n",
              std::abs(ref.energy - got.energy) / scale_e,
              max_abs_diff(ref.atom_energy, got.atom_energy) / max_abs(ref.atom_energy),
              max_abs_diff(ref.force, got.force) / max_abs(ref.force), tol);
  EXPECT_LE(std::abs(ref.energy - got.energy), tol * scale_e) << "E " << ref.energy << " vs " << got.energy;
  EXPECT_LE(max_abs_diff(ref.atom_energy, got.atom_energy), tol * max_abs(ref.atom_energy));
  const double fmax = max_abs(ref.force);
  ASSERT_GT(fmax, 0.0);
  EXPECT_LE(max_abs_diff(ref.force, got.force), tol * fmax) << "max |F| " << fmax;
}

// A small triclinic box (edges < 2·rcut): atoms see several images of one another.
NeighborGraph small_box_graph(double rcut, unsigned seed) {
  const qnn::Cell cell{4.1, 0.0, 0.0, 0.7, 3.9, 0.0, -0.4, 0.5, 4.3};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> pos;
  std::vector<int> species;
  while (species.size() < 6) {
    const double a = u(rng), b = u(rng), c = u(rng);
    double x[3];
    for (int d = 0; d < 3; ++d) x[d] = a * cell[d] + b * cell[3 + d] + c * cell[6 + d];
    bool ok = true;
    for (std::size_t j = 0; j < species.size() && ok; ++j) {
      for (int i0 = -1; i0 <= 1; ++i0)
        for (int i1 = -1; i1 <= 1; ++i1)
          for (int i2 = -1; i2 <= 1; ++i2) {
            double r2 = 0;
            for (int d = 0; d < 3; ++d) {
              const double dx = pos[3 * j + d] + i0 * cell[d] + i1 * cell[3 + d] + i2 * cell[6 + d] - x[d];
              r2 += dx * dx;
            }
            ok = ok && r2 > 1.0;
          }
    }
    if (!ok) continue;
    pos.insert(pos.end(), x, x + 3);
    species.push_back(species.size() % 3 == 0 ? 0 : 1);
  }
  return qnn::build_periodic_graph(cell, pos, species, rcut);
}

NeighborGraph water_graph(int frame, double rcut) {
  const qnn::System& w = water();
  return qnn::build_periodic_graph(w.cell(frame), w.positions(frame), w.species, rcut);
}

// ---------------------------------------------------------------------------- agreement

TEST(TorchModule, MatchesEngineDoubleOnWater) {
  const Model m = water_like_model();
  for (int frame : {0, 37}) {
    SCOPED_TRACE(frame);
    const NeighborGraph g = water_graph(frame, m.rcut);
    expect_agree(engine_eval<double>(m, g), module_eval(m, g, torch::kFloat64), 1e-10);
  }
}

TEST(TorchModule, MatchesEngineDoubleIdentityResiduals) {
  const Model m = identity_model();
  const NeighborGraph g = water_graph(5, m.rcut);
  expect_agree(engine_eval<double>(m, g), module_eval(m, g, torch::kFloat64), 1e-10);
}

TEST(TorchModule, MatchesEngineDoubleSmallBoxManyImages) {
  const Model m = qnn::test::small_water_model(9, 4.0);
  const NeighborGraph g = small_box_graph(m.rcut, 17);
  ASSERT_GT(g.ntotal - g.nlocal, 6 * 8);  // many images per atom
  expect_agree(engine_eval<double>(m, g), module_eval(m, g, torch::kFloat64), 1e-10);
}

// env_mat "deepmd" (docs/model.md): the shifted first column and the empty slots, on water
// (sel well above the neighbour counts of rcut 4) and in a small box with many images.
TEST(TorchModule, MatchesEngineDoubleDeepmdEnvMat) {
  Model m = qnn::test::small_water_model(21, 4.0);
  m.env_mat = "deepmd";
  m.sel = {30, 60};
  m.neighbor_norm = 90;
  const NeighborGraph g = water_graph(3, m.rcut);
  expect_agree(engine_eval<double>(m, g), module_eval(m, g, torch::kFloat64), 1e-10);
  expect_agree(engine_eval<double>(m, g), module_eval(m, g, torch::kFloat64, /*autograd_only=*/true), 1e-10);
  const NeighborGraph b = small_box_graph(m.rcut, 5);
  expect_agree(engine_eval<double>(m, b), module_eval(m, b, torch::kFloat64), 1e-10);
  // the convention changes the energy: the check above compares two different things
  Model q = m;
  q.env_mat = "qnn";
  EXPECT_GT(std::abs(engine_eval<double>(q, g).energy - engine_eval<double>(m, g).energy), 1e-3);
}

// Pair embedding nets (type_one_side false), on water and in a small box with many images.
TEST(TorchModule, MatchesEngineDoublePairNets) {
  const Model m = qnn::test::small_pair_model(25, 4.0, {30, 60});
  const NeighborGraph g = water_graph(3, m.rcut);
  expect_agree(engine_eval<double>(m, g), module_eval(m, g, torch::kFloat64), 1e-10);
  const NeighborGraph b = small_box_graph(m.rcut, 5);
  expect_agree(engine_eval<double>(m, b), module_eval(m, b, torch::kFloat64), 1e-10);
  // the nets of different centres differ: swapping two changes the energy
  Model q = m;
  std::swap(q.embed[0], q.embed[2]);
  EXPECT_GT(std::abs(engine_eval<double>(q, g).energy - engine_eval<double>(m, g).energy), 1e-6);
  // and the module round-trips all S*S nets
  lt::Se2aModule mod(m, torch::kFloat64);
  EXPECT_EQ(mod->to_model().embed[3].layers[1].weight, m.embed[3].layers[1].weight);
}

// DeePMD-kit's embedding resnet_dt: y = [x, x] + dt ⊙ tanh(z) on a doubling layer.
TEST(TorchModule, MatchesEngineDoubleDoublingTimestep) {
  Model m = qnn::test::small_pair_model(27, 4.0, {30, 60});
  for (qnn::Net& n : m.embed) {
    qnn::DenseLayer& L = n.layers[1];  // 4 -> 8
    ASSERT_EQ(L.residual, qnn::Residual::Doubling);
    L.residual = qnn::Residual::DoublingTimestep;
    L.dt.assign(static_cast<std::size_t>(L.out), 0.0);
    for (int o = 0; o < L.out; ++o) L.dt[static_cast<std::size_t>(o)] = 0.05 + 0.01 * o;
  }
  m.validate("doubling timestep");
  const NeighborGraph g = water_graph(4, m.rcut);
  expect_agree(engine_eval<double>(m, g), module_eval(m, g, torch::kFloat64), 1e-10);
  expect_agree(engine_eval<double>(m, g), module_eval(m, g, torch::kFloat64, /*autograd_only=*/true), 1e-10);
  const NeighborGraph b = small_box_graph(m.rcut, 7);
  expect_agree(engine_eval<double>(m, b), module_eval(m, b, torch::kFloat64), 1e-10);
}

TEST(TorchModule, MatchesEngineFloatOnWater) {
  for (const Model& m : {water_like_model(), identity_model()}) {
    const NeighborGraph g = water_graph(11, m.rcut);
    const Reference exact = engine_eval<double>(m, g);
    const Reference torch_f = module_eval(m, g, torch::kFloat32);
    // float module against float engine, and each against the double result
    expect_agree(engine_eval<float>(m, g), torch_f, 1e-5);
    expect_agree(exact, torch_f, 1e-5);
    expect_agree(exact, module_eval(m, g, torch::kFloat32, /*autograd_only=*/true), 1e-5);
  }
}

// ---------------------------------------------------------------------------- the embedding jet

// The gradient of a training loss (energy and force terms, as the trainer's) with respect to
// every weight, bias and dt, on a batch of two frames: by the embedding jet, or by autograd
// through the whole network twice (autograd_only, the reference).
std::vector<torch::Tensor> loss_gradients(const Model& m, const std::vector<NeighborGraph>& graphs, torch::Dtype dtype,
                                          bool autograd_only) {
  lt::Se2aModule module(m, dtype);
  std::vector<lt::EdgeBatch> parts;
  for (const NeighborGraph& g : graphs) parts.push_back(lt::edges_from_graph(g, dtype));
  std::vector<const lt::EdgeBatch*> ptrs;
  for (const auto& b : parts) ptrs.push_back(&b);
  const lt::EdgeBatch batch = lt::concat(ptrs);
  lt::EnergyForces ef = lt::energy_and_forces(module, batch, true, autograd_only);
  // Fixed, non-trivial references, so that every term has a gradient.
  const auto n = ef.forces.numel();
  torch::Tensor fref = torch::sin(torch::arange(n, torch::TensorOptions().dtype(dtype)) * 0.37).view_as(ef.forces);
  torch::Tensor eref = ef.frame_energy.detach() + 0.25;
  torch::Tensor loss = 0.3 * (ef.frame_energy - eref).pow(2).sum() + 10.0 * (ef.forces - fref).pow(2).mean();
  loss.backward();
  std::vector<torch::Tensor> out;
  for (const torch::Tensor& p : module->network_parameters()) {
    EXPECT_TRUE(p.grad().defined());
    out.push_back(p.grad().defined() ? p.grad().to(torch::kFloat64) : torch::zeros_like(p, torch::kFloat64));
  }
  return out;
}

// Jet against reference, tensor by tensor, relative to each tensor's largest entry; every
// embedding tensor must have a gradient (the check is not vacuous).
void expect_same_gradients(const Model& m, torch::Dtype dtype, double tol) {
  const std::vector<NeighborGraph> graphs{water_graph(5, m.rcut), small_box_graph(m.rcut, 9)};
  const std::vector<torch::Tensor> jet = loss_gradients(m, graphs, dtype, false);
  const std::vector<torch::Tensor> ref = loss_gradients(m, graphs, dtype, true);
  ASSERT_EQ(jet.size(), ref.size());
  double worst = 0;
  for (std::size_t k = 0; k < ref.size(); ++k) {
    const double scale = ref[k].abs().max().item<double>();
    ASSERT_GT(scale, 0.0) << "parameter " << k << " has no gradient";
    const double rel = (jet[k] - ref[k]).abs().max().item<double>() / scale;
    worst = std::max(worst, rel);
    EXPECT_LE(rel, tol) << "parameter " << k;
  }
  std::printf("    %zu parameter tensors, worst relative difference %.2e (tolerance %.0e)\n", ref.size(), worst, tol);
}

TEST(EmbeddingJet, LossGradientsEqualAutogradDoublingResiduals) {
  expect_same_gradients(water_like_model(), torch::kFloat64, 1e-10);
}

TEST(EmbeddingJet, LossGradientsEqualAutogradIdentityResiduals) {
  expect_same_gradients(identity_model(), torch::kFloat64, 1e-10);
}

TEST(EmbeddingJet, LossGradientsEqualAutogradDeepmdPairNetsTimestep) {
  Model m = qnn::test::small_pair_model(27, 4.0, {30, 60});
  for (qnn::Net& n : m.embed) {
    qnn::DenseLayer& L = n.layers[1];
    L.residual = qnn::Residual::DoublingTimestep;
    L.dt.assign(static_cast<std::size_t>(L.out), 0.0);
    for (int o = 0; o < L.out; ++o) L.dt[static_cast<std::size_t>(o)] = 0.05 + 0.01 * o;
  }
  m.env_mat = "deepmd";
  m.validate("jet test");
  expect_same_gradients(m, torch::kFloat64, 1e-10);
}

// The largest relative difference, tensor by tensor, of float gradients from double ones.
double worst_relative(const std::vector<torch::Tensor>& got, const std::vector<torch::Tensor>& exact) {
  double worst = 0;
  EXPECT_EQ(got.size(), exact.size());
  for (std::size_t k = 0; k < std::min(got.size(), exact.size()); ++k) {
    const double scale = exact[k].abs().max().item<double>();
    EXPECT_GT(scale, 0.0);
    worst = std::max(worst, (got[k] - exact[k]).abs().max().item<double>() / scale);
  }
  return worst;
}

// In float the jet (its own tanh, FMA) and autograd round differently: each is compared with
// the double-precision gradient, and the jet may not be much further from it than autograd.
// Every vector variant of the jet's loops that this CPU runs is checked.
TEST(EmbeddingJet, LossGradientsInFloatAsCloseToDoubleAsAutograd) {
  Model m = water_like_model();
  m.env_mat = "deepmd";
  const std::vector<NeighborGraph> graphs{water_graph(5, m.rcut), small_box_graph(m.rcut, 9)};
  const std::vector<torch::Tensor> exact = loss_gradients(m, graphs, torch::kFloat64, true);
  const double worst_autograd = worst_relative(loss_gradients(m, graphs, torch::kFloat32, true), exact);
  const std::string best = qnn::libtorch::jet::float_isa();
  int variants = 0;
  for (const char* isa : {"baseline", "avx2", "avx512"}) {
    if (!qnn::libtorch::jet::use_float_isa(isa)) {
      std::printf("    %s: not available on this CPU\n", isa);
      continue;
    }
    ++variants;
    const double worst_jet = worst_relative(loss_gradients(m, graphs, torch::kFloat32, false), exact);
    std::printf("    float against double: jet (%s) %.2e, autograd %.2e\n", isa, worst_jet, worst_autograd);
    EXPECT_LE(worst_jet, 1e-5) << isa;
    EXPECT_LE(worst_jet, 4.0 * worst_autograd) << isa;
  }
  ASSERT_TRUE(qnn::libtorch::jet::use_float_isa(best.c_str()));
  EXPECT_GE(variants, 1);
  EXPECT_FALSE(qnn::libtorch::jet::use_float_isa("sse9"));
  EXPECT_EQ(best, qnn::libtorch::jet::float_isa());
}

// A batch prepared once (what the trainer keeps per frame) gives what a fresh evaluation
// gives, and is refused once the statistics it was computed with have changed.
TEST(EmbeddingJet, PreparedBatchIsReusableUntilTheStatisticsChange) {
  Model m = water_like_model();
  m.env_mat = "deepmd";
  lt::Se2aModule module(m, torch::kFloat64);
  const lt::EdgeBatch b = lt::edges_from_graph(water_graph(7, m.rcut));
  const lt::Se2aModuleImpl::JetInput in = module->prepare_jet(b);
  EXPECT_GT(in.bytes(), static_cast<std::size_t>(b.nedges()) * 20 * sizeof(double));
  const lt::EnergyForces fresh = lt::energy_and_forces(module, b, false);
  for (int k = 0; k < 2; ++k) {
    const lt::EnergyForces kept = lt::energy_and_forces(module, in, false);
    EXPECT_TRUE(torch::equal(kept.atom_energy, fresh.atom_energy));
    EXPECT_TRUE(torch::equal(kept.forces, fresh.forces));
  }
  module->set_statistics(m.mean_s, m.std_s, m.std_r);  // the same values, but set again
  try {
    lt::energy_and_forces(module, in, false);
    ADD_FAILURE() << "no error";
  } catch (const qnn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("other statistics"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(lt::energy_and_forces(module, module->prepare_jet(b), false));
}

TEST(EmbeddingJet, RefusesFakeQuantizedLayers) {
  const Model m = water_like_model();
  lt::Se2aModule module(m, torch::kFloat64);
  std::vector<lt::TorchLayer> net = module->embed_layers()[0];
  net[1].fq.weight_bits = 8;
  try {
    lt::embedding_jet(net, torch::zeros({3}, torch::kFloat64));
    ADD_FAILURE() << "no error";
  } catch (const qnn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("fake-quantized"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------- conversion, batching

TEST(TorchModule, ModelRoundTripIsExact) {
  const Model m = water_like_model();
  lt::Se2aModule module(m, torch::kFloat64);
  const Model back = module->to_model();
  for (std::size_t s = 0; s < 2; ++s) {
    for (std::size_t l = 0; l < m.fit[s].layers.size(); ++l) {
      EXPECT_EQ(back.fit[s].layers[l].weight, m.fit[s].layers[l].weight);
      EXPECT_EQ(back.fit[s].layers[l].bias, m.fit[s].layers[l].bias);
      EXPECT_EQ(back.fit[s].layers[l].dt, m.fit[s].layers[l].dt);
    }
    for (std::size_t l = 0; l < m.embed[s].layers.size(); ++l) {
      EXPECT_EQ(back.embed[s].layers[l].weight, m.embed[s].layers[l].weight);
      EXPECT_EQ(back.embed[s].layers[l].bias, m.embed[s].layers[l].bias);
    }
  }
  EXPECT_EQ(back.mean_s, m.mean_s);
  EXPECT_EQ(back.std_s, m.std_s);
  EXPECT_EQ(back.std_r, m.std_r);
  EXPECT_EQ(back.energy_bias, m.energy_bias);
  EXPECT_NO_THROW(back.validate());

  // load_model overwrites every tensor: a module built from another seed becomes identical.
  Model other = Model::make_random({"O", "H"}, 6.0, 0.5, {46, 92}, {8, 16, 32}, 8, {32, 32}, true, 999);
  lt::Se2aModule module2(other, torch::kFloat64);
  module2->load_model(m);
  const NeighborGraph g = water_graph(2, m.rcut);
  auto e1 = lt::energy_and_forces(module, lt::edges_from_graph(g), false);
  auto e2 = lt::energy_and_forces(module2, lt::edges_from_graph(g), false);
  EXPECT_TRUE(torch::equal(e1.atom_energy, e2.atom_energy));
  EXPECT_TRUE(torch::equal(e1.forces, e2.forces));
}

TEST(TorchModule, BatchOfFramesEqualsSeparateFrames) {
  const Model m = identity_model();
  lt::Se2aModule module(m, torch::kFloat64);
  std::vector<lt::EdgeBatch> parts;
  for (int f : {3, 4, 9}) parts.push_back(lt::edges_from_graph(water_graph(f, m.rcut)));
  lt::EnergyForces joint = lt::energy_and_forces(module, lt::concat({&parts[0], &parts[1], &parts[2]}), false);
  ASSERT_EQ(joint.frame_energy.size(0), 3);
  std::int64_t offset = 0;
  for (std::size_t k = 0; k < parts.size(); ++k) {
    lt::EnergyForces one = lt::energy_and_forces(module, parts[k], false);
    const std::int64_t n = parts[k].natoms();
    const double e1 = one.frame_energy[0].item<double>(), ej = joint.frame_energy[static_cast<std::int64_t>(k)].item<double>();
    EXPECT_NEAR(e1, ej, 1e-12 * std::abs(e1));
    EXPECT_LE((one.forces - joint.forces.narrow(0, offset, n)).abs().max().item<double>(),
              1e-12 * one.forces.abs().max().item<double>());
    offset += n;
  }
}

TEST(TorchModule, EdgeOrderDoesNotMatter) {
  // The module groups edges itself: a random permutation of the edge list changes nothing
  // beyond round-off.
  const Model m = water_like_model();
  lt::Se2aModule module(m, torch::kFloat64);
  lt::EdgeBatch b = lt::edges_from_graph(water_graph(6, m.rcut));
  torch::manual_seed(3);
  torch::Tensor perm = torch::randperm(b.nedges(), torch::kInt64);
  lt::EdgeBatch p = b;
  p.edge_i = b.edge_i.index_select(0, perm);
  p.edge_j = b.edge_j.index_select(0, perm);
  p.edge_shift = b.edge_shift.index_select(0, perm);
  lt::EnergyForces e1 = lt::energy_and_forces(module, b, false);
  lt::EnergyForces e2 = lt::energy_and_forces(module, p, false);
  EXPECT_LE((e1.atom_energy - e2.atom_energy).abs().max().item<double>(), 1e-12 * e1.atom_energy.abs().max().item<double>());
  EXPECT_LE((e1.forces - e2.forces).abs().max().item<double>(), 1e-12 * e1.forces.abs().max().item<double>());
}

}  // namespace
