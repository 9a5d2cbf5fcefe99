// pair_style qnn inside LAMMPS, through the library interface, on any number of MPI ranks
// (this executable runs under mpirun -np 1, 2 and 4): the plugin loads, runs, and gives the
// core engine's energy and forces on the same configuration. These tests check the glue
// (graph, newton, decomposition, per-atom tallies, restart) to double precision, so they run
// the pair style in its "fp64" mode (qnn::Engine<double>); the execution modes themselves are
// tested in test_plugin_modes.cpp.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <array>
#include <cmath>
#include <string>

#include "lammps_util.hpp"
#include "qnn/engine/exact_engine.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"
#include "test_util.hpp"

namespace {

int g_rank = 0, g_size = 1;

// A temporary path, the same on every rank (rank 0's process id).
std::string shared_tmp_name(const std::string& tag) {
  int pid = static_cast<int>(getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return "/tmp/qnn_plugin_" + tag + "_" + std::to_string(pid);
}

// A model file path shared by all ranks (written by rank 0).
std::string shared_model_path() {
  static std::string path;
  if (path.empty()) {
    char buf[256];
    if (g_rank == 0) {
      std::snprintf(buf, sizeof buf, "/tmp/qnn_plugin_test_%d.qnn", static_cast<int>(getpid()));
      qnn::Model m = qnn::test::small_water_model(11, 6.0);
      m.provenance["storage_dtype"] = "f64";
      qnn::write_model(m, buf);
    }
    MPI_Bcast(buf, sizeof buf, MPI_CHAR, 0, MPI_COMM_WORLD);
    path = buf;
  }
  return path;
}

std::string shared_data_path(const qnn::test::Frame& f) {
  char buf[256];
  if (g_rank == 0) {
    std::snprintf(buf, sizeof buf, "/tmp/qnn_plugin_test_%d.data", static_cast<int>(getpid()));
    qnn::test::write_data_file(buf, f, {15.9994, 1.008});
  }
  MPI_Bcast(buf, sizeof buf, MPI_CHAR, 0, MPI_COMM_WORLD);
  return buf;
}

}  // namespace

TEST(Plugin, LoadsAndRegistersPairStyle) {
  void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
  EXPECT_TRUE(lammps_has_style(lmp, "pair", "qnn"));
  lammps_close(lmp);
}

TEST(Plugin, WaterFrameMatchesCoreEngine) {
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_0", 0);
  const std::string model = shared_model_path(), data = shared_data_path(frame);

  void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
  lammps_command(lmp, "units metal");
  lammps_command(lmp, "atom_style atomic");
  lammps_command(lmp, "atom_modify map array");
  lammps_command(lmp, ("read_data " + data).c_str());
  lammps_command(lmp, ("pair_style qnn " + model + " mode fp64").c_str());
  lammps_command(lmp, "pair_coeff * * O H");
  lammps_command(lmp, "thermo_style custom step pe press");
  lammps_command(lmp, "run 0");
  ASSERT_EQ(qnn::test::lammps_error(lmp), "") << "LAMMPS error";
  const double pe = lammps_get_thermo(lmp, "pe");
  const auto f = qnn::test::gather_forces(lmp, frame.natoms());
  lammps_close(lmp);

  // The same configuration through the core engine directly.
  const qnn::Model m = qnn::read_model(model);
  const auto g = qnn::build_periodic_graph(frame.cell, frame.pos, frame.species, m.rcut);
  qnn::Engine<double> engine(m, qnn::ExecSpace::Serial);
  qnn::EvalResult r;
  engine.compute(g, r);
  const auto fr = qnn::fold_ghost_forces(g, r.force);

  ASSERT_TRUE(std::isfinite(pe));
  EXPECT_NEAR(pe, r.energy, 1e-10 * std::abs(r.energy)) << "ranks: " << g_size;
  double fmax = 0;
  for (double v : fr) fmax = std::max(fmax, std::abs(v));
  ASSERT_GT(fmax, 0.0);
  for (std::size_t k = 0; k < f.size(); ++k) EXPECT_NEAR(f[k], fr[k], 1e-9 * fmax) << "component " << k;
}


namespace {

// Sets up the water frame in `lmp` with pair_style qnn; `extra` runs before read_data.
void setup_water(void* lmp, const std::string& data, const std::string& model, const std::string& extra = "") {
  lammps_command(lmp, "units metal");
  lammps_command(lmp, "atom_style atomic");
  lammps_command(lmp, "atom_modify map array");
  if (!extra.empty()) lammps_commands_string(lmp, extra.c_str());
  lammps_command(lmp, ("read_data " + data).c_str());
  lammps_command(lmp, ("pair_style qnn " + model + " mode fp64").c_str());
  lammps_command(lmp, "pair_coeff * * O H");
}

struct Snapshot {
  double pe = 0;
  std::vector<double> f;
  std::array<double, 6> pv{};  // pressure from the virial only (bar)
};

Snapshot run0(void* lmp, int natoms) {
  lammps_command(lmp, "compute qnn_pv all pressure NULL virial");
  lammps_command(lmp, "thermo_style custom step pe c_qnn_pv[*]");
  lammps_command(lmp, "run 0 post no");
  Snapshot s;
  const std::string err = qnn::test::lammps_error(lmp);
  if (!err.empty()) {
    ADD_FAILURE() << "LAMMPS error: " << err;
    return s;
  }
  s.pe = lammps_get_thermo(lmp, "pe");
  s.f = qnn::test::gather_forces(lmp, natoms);
  auto* pv = static_cast<double*>(lammps_extract_compute(lmp, "qnn_pv", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR));
  for (int k = 0; k < 6; ++k) s.pv[k] = pv[k];
  lammps_command(lmp, "thermo_style one");
  lammps_command(lmp, "uncompute qnn_pv");
  return s;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

void expect_same(const Snapshot& a, const Snapshot& b, double rel, const std::string& what) {
  EXPECT_NEAR(a.pe, b.pe, rel * std::abs(a.pe)) << what;
  const double fs = max_abs(a.f);
  ASSERT_EQ(a.f.size(), b.f.size());
  for (std::size_t k = 0; k < a.f.size(); ++k) EXPECT_NEAR(a.f[k], b.f[k], rel * fs) << what << ": force component " << k;
  double ps = 0;
  for (double p : a.pv) ps = std::max(ps, std::abs(p));
  for (int k = 0; k < 6; ++k) EXPECT_NEAR(a.pv[k], b.pv[k], rel * ps) << what << ": virial component " << k;
}

// Expects `cmd` (after `setup`) to fail with a message containing `needle`.
void expect_lammps_error(const std::string& setup, const std::string& cmd, const std::string& needle) {
  void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
  lammps_commands_string(lmp, setup.c_str());
  ASSERT_EQ(qnn::test::lammps_error(lmp), "") << "setup failed: " << setup;
  lammps_commands_string(lmp, cmd.c_str());
  const std::string msg = qnn::test::lammps_error(lmp);
  EXPECT_NE(msg, "") << "no error for: " << cmd;
  EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg;
  lammps_close(lmp);
}

}  // namespace

// A short-range safety net for configurations the training data never visits (issue 14):
// ZBL between oxygens only, switched off from 1.6 to 2.2 Å, overlaid on qnn. Liquid water never
// brings two oxygens that close, so on a water frame the overlay changes nothing (the same
// energy and forces to the last bit); two molecules pushed to O-O 1.3 Å feel it.
TEST(Plugin, ZblOverlayLeavesLiquidWaterUntouched) {
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_0", 0);
  const std::string model = shared_model_path(), data = shared_data_path(frame);
  double oo_min = 1e9;
  for (int i = 0; i < frame.natoms(); ++i)
    for (int j = 0; j < i; ++j) {
      if (frame.species[i] != 0 || frame.species[j] != 0) continue;
      double r2 = 0;
      for (int d = 0; d < 3; ++d) {
        double x = frame.pos[3 * i + d] - frame.pos[3 * j + d];
        x -= frame.cell[4 * d] * std::round(x / frame.cell[4 * d]);  // orthorhombic frame
        r2 += x * x;
      }
      oo_min = std::min(oo_min, std::sqrt(r2));
    }
  ASSERT_GT(oo_min, 2.2) << "the frame has an O-O pair inside the ZBL range";
  auto run = [&](const std::string& data_file, int natoms, bool overlay, double& pe) {
    void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
    lammps_command(lmp, "units metal");
    lammps_command(lmp, "atom_style atomic");
    lammps_command(lmp, "atom_modify map array");
    lammps_command(lmp, ("read_data " + data_file).c_str());
    if (overlay) {
      lammps_command(lmp, ("pair_style hybrid/overlay qnn " + model + " mode fp32 zbl 1.6 2.2").c_str());
      lammps_command(lmp, "pair_coeff * * qnn O H");
      lammps_command(lmp, "pair_coeff 1 1 zbl 8.0 8.0");
    } else {
      lammps_command(lmp, ("pair_style qnn " + model + " mode fp32").c_str());
      lammps_command(lmp, "pair_coeff * * O H");
    }
    lammps_command(lmp, "thermo_style custom step pe");
    lammps_command(lmp, "run 0");
    EXPECT_EQ(qnn::test::lammps_error(lmp), "") << "LAMMPS error";
    pe = lammps_get_thermo(lmp, "pe");
    auto f = qnn::test::gather_forces(lmp, natoms);
    lammps_close(lmp);
    return f;
  };
  double pe_plain = 0, pe_overlay = 0;
  const auto f_plain = run(data, frame.natoms(), false, pe_plain);
  const auto f_overlay = run(data, frame.natoms(), true, pe_overlay);
  EXPECT_EQ(pe_plain, pe_overlay);
  EXPECT_EQ(f_plain, f_overlay);

  // Two molecules, O-O 1.3 Å (hydrogens pointing away from each other).
  qnn::test::Frame two;
  two.cell = {20, 0, 0, 0, 20, 0, 0, 0, 20};
  two.pos = {5.0, 5.0, 5.0, 4.414, 5.757, 5.0, 4.414, 4.243, 5.0,
             6.3, 5.0, 5.0, 6.886, 5.757, 5.0, 6.886, 4.243, 5.0};
  two.species = {0, 1, 1, 0, 1, 1};
  const std::string close = shared_tmp_name("close") + ".data";
  if (g_rank == 0) qnn::test::write_data_file(close, two, {15.9994, 1.008});
  MPI_Barrier(MPI_COMM_WORLD);
  double pe2_plain = 0, pe2_overlay = 0;
  run(close, 6, false, pe2_plain);
  run(close, 6, true, pe2_overlay);
  std::printf("ZBL overlay: water frame dE = %g eV; two molecules at O-O 1.3 A: +%.3f eV\n", pe_overlay - pe_plain,
              pe2_overlay - pe2_plain);
  EXPECT_GT(pe2_overlay - pe2_plain, 1.0);
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank == 0) std::remove(close.c_str());
}

// A model's built-in repulsion (Model::repulsion, docs/model.md "Short-range repulsion") gives
// what LAMMPS's own pair_style zbl gives overlaid on the same network: an independent
// implementation of the same ZBL and switching. Checked at O-O distances in the pure-ZBL
// zone, in the switching zone and beyond it, on 1 or more ranks, with the virial (pressure).
TEST(Plugin, BuiltInRepulsionEqualsLammpsZblOverlay) {
  const std::string plain = shared_model_path();
  const std::string with = shared_tmp_name("repulsion") + ".qnn";
  if (g_rank == 0) {
    qnn::Model m = qnn::read_model(plain);
    m.repulsion.z = {8.0, 1.0};
    m.repulsion.pairs = {{0, 0}};
    m.repulsion.r_inner = 1.6;
    m.repulsion.r_outer = 2.2;
    qnn::write_model(m, with);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  auto run = [&](const std::string& data_file, bool builtin, double& pe, double& press) {
    void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
    lammps_command(lmp, "units metal");
    lammps_command(lmp, "atom_style atomic");
    lammps_command(lmp, "atom_modify map array");
    lammps_command(lmp, ("read_data " + data_file).c_str());
    if (builtin) {
      lammps_command(lmp, ("pair_style qnn " + with + " mode fp64").c_str());
      lammps_command(lmp, "pair_coeff * * O H");
    } else {
      lammps_command(lmp, ("pair_style hybrid/overlay qnn " + plain + " mode fp64 zbl 1.6 2.2").c_str());
      lammps_command(lmp, "pair_coeff * * qnn O H");
      lammps_command(lmp, "pair_coeff 1 1 zbl 8.0 8.0");
    }
    lammps_command(lmp, "thermo_style custom step pe press");
    lammps_command(lmp, "run 0");
    EXPECT_EQ(qnn::test::lammps_error(lmp), "") << "LAMMPS error";
    pe = lammps_get_thermo(lmp, "pe");
    press = lammps_get_thermo(lmp, "press");
    auto f = qnn::test::gather_forces(lmp, 9);
    lammps_close(lmp);
    return f;
  };
  for (double oo : {1.1, 1.45, 1.9, 2.15, 2.5}) {
    // Two molecules O-O `oo` apart (hydrogens pointing away) and a third 3.2 A from the second.
    qnn::test::Frame three;
    three.cell = {20, 0, 0, 0, 20, 0, 0, 0, 20};
    const double x2 = 5.0 + oo, x3 = x2 + 3.2;
    three.pos = {5.0, 5.0, 5.0, 4.414, 5.757, 5.0, 4.414, 4.243, 5.0,
                 x2, 5.0, 5.0, x2 + 0.586, 5.757, 5.0, x2 + 0.586, 4.243, 5.0,
                 x3, 5.3, 5.1, x3 + 0.586, 6.057, 5.1, x3 + 0.586, 4.543, 5.1};
    three.species = {0, 1, 1, 0, 1, 1, 0, 1, 1};
    const std::string file = shared_tmp_name("rep") + ".data";
    if (g_rank == 0) qnn::test::write_data_file(file, three, {15.9994, 1.008});
    MPI_Barrier(MPI_COMM_WORLD);
    double pe_b = 0, pe_o = 0, p_b = 0, p_o = 0;
    const auto fb = run(file, true, pe_b, p_b);
    const auto fo = run(file, false, pe_o, p_o);
    EXPECT_NEAR(pe_b, pe_o, 1e-8 * (1.0 + std::abs(pe_o))) << "O-O " << oo;
    EXPECT_NEAR(p_b, p_o, 1e-6 * (1.0 + std::abs(p_o))) << "O-O " << oo;
    ASSERT_EQ(fb.size(), fo.size());
    double fmax = 0, dmax = 0;
    for (std::size_t k = 0; k < fb.size(); ++k) {
      fmax = std::max(fmax, std::abs(fo[k]));
      dmax = std::max(dmax, std::abs(fb[k] - fo[k]));
    }
    EXPECT_LT(dmax, 1e-8 * (1.0 + fmax)) << "O-O " << oo;
    if (g_rank == 0)
      std::printf("repulsion O-O %.2f A: E %.6f (built-in) %.6f (overlay), max |dF| %.2e of %.3g eV/A\n", oo, pe_b, pe_o,
                  dmax, fmax);
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0) std::remove(file.c_str());
  }
  if (g_rank == 0) std::remove(with.c_str());
}

TEST(Plugin, NewtonOffMatchesNewtonOn) {
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_0", 1);
  const std::string model = shared_model_path(), data = shared_data_path(frame);
  void* a = qnn::test::open_lammps(MPI_COMM_WORLD);
  setup_water(a, data, model, "newton on");
  const Snapshot on = run0(a, frame.natoms());
  lammps_close(a);
  void* b = qnn::test::open_lammps(MPI_COMM_WORLD);
  setup_water(b, data, model, "newton off");
  const Snapshot off = run0(b, frame.natoms());
  lammps_close(b);
  expect_same(on, off, 1e-10, "newton off vs on");
}

TEST(Plugin, DecompositionDoesNotChangeResults) {
  // Reference on one rank, then the same frame on all ranks (and a 1D split along x).
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_1", 3);
  const std::string model = shared_model_path(), data = shared_data_path(frame);
  MPI_Comm self;
  MPI_Comm_split(MPI_COMM_WORLD, g_rank == 0 ? 0 : MPI_UNDEFINED, 0, &self);
  Snapshot ref;
  if (g_rank == 0) {
    void* l = qnn::test::open_lammps(self);
    setup_water(l, data, model);
    ref = run0(l, frame.natoms());
    lammps_close(l);
    MPI_Comm_free(&self);
  }
  MPI_Bcast(&ref.pe, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  ref.f.resize(3 * frame.natoms());
  MPI_Bcast(ref.f.data(), 3 * frame.natoms(), MPI_DOUBLE, 0, MPI_COMM_WORLD);
  MPI_Bcast(ref.pv.data(), 6, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  for (const std::string grid : {"", "processors * 1 1"}) {
    void* l = qnn::test::open_lammps(MPI_COMM_WORLD);
    setup_water(l, data, model, grid);
    const Snapshot s = run0(l, frame.natoms());
    lammps_close(l);
    expect_same(ref, s, 1e-10, std::to_string(g_size) + " ranks " + grid);
  }
}

TEST(Plugin, RankWithoutAtoms) {
  // Water in the left half of a box twice as long in x: with 'processors * 1 1' the right
  // ranks own no atom (and see only ghosts or nothing).
  qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_0", 2);
  for (int i = 0; i < frame.natoms(); ++i)
    for (int d = 0; d < 3; ++d) frame.pos[3 * i + d] -= frame.cell[4 * d] * std::floor(frame.pos[3 * i + d] / frame.cell[4 * d]);
  qnn::test::Frame wide = frame;
  wide.cell[0] *= 2.0;
  const std::string model = shared_model_path(), data = shared_data_path(wide);
  void* l = qnn::test::open_lammps(MPI_COMM_WORLD);
  setup_water(l, data, model, "processors * 1 1");
  const Snapshot s = run0(l, wide.natoms());
  const int nlocal = static_cast<int>(lammps_extract_setting(l, "nlocal"));
  lammps_close(l);
  int nempty = nlocal == 0 ? 1 : 0, total_empty = 0;
  MPI_Allreduce(&nempty, &total_empty, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (g_size >= 4) {
    EXPECT_GE(total_empty, 1) << "the test meant to have a rank without atoms";
  }
  // The same slab through the core engine.
  const qnn::Model m = qnn::read_model(model);
  const auto g = qnn::build_periodic_graph(wide.cell, wide.pos, wide.species, m.rcut);
  qnn::EvalResult r;
  qnn::Engine<double>(m, qnn::ExecSpace::Serial).compute(g, r);
  const auto fr = qnn::fold_ghost_forces(g, r.force);
  EXPECT_NEAR(s.pe, r.energy, 1e-10 * std::abs(r.energy));
  const double fs = max_abs(fr);
  for (std::size_t k = 0; k < fr.size(); ++k) EXPECT_NEAR(s.f[k], fr[k], 1e-9 * fs);
}

TEST(Plugin, PerAtomEnergyAndVirialSumToGlobal) {
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_2", 0);
  const std::string model = shared_model_path(), data = shared_data_path(frame);
  for (const char* newton : {"newton on", "newton off"}) {
    void* l = qnn::test::open_lammps(MPI_COMM_WORLD);
    setup_water(l, data, model, newton);
    lammps_commands_string(l,
                           "compute pea all pe/atom\n"
                           "compute sa all stress/atom NULL virial\n"
                           "compute esum all reduce sum c_pea\n"
                           "compute ssum all reduce sum c_sa[1] c_sa[2] c_sa[3] c_sa[4] c_sa[5] c_sa[6]\n"
                           "compute pv all pressure NULL virial\n"
                           "variable vol equal vol\n"
                           "thermo_style custom step pe c_esum c_ssum[*] c_pv[*]\n"
                           "run 0 post no");
    ASSERT_EQ(qnn::test::lammps_error(l), "");
    const double pe = lammps_get_thermo(l, "pe");
    const double esum = *static_cast<double*>(lammps_extract_compute(l, "esum", LMP_STYLE_GLOBAL, LMP_TYPE_SCALAR));
    auto* ssum = static_cast<double*>(lammps_extract_compute(l, "ssum", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR));
    auto* pv = static_cast<double*>(lammps_extract_compute(l, "pv", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR));
    const double vol = lammps_get_thermo(l, "vol");
    EXPECT_NEAR(esum, pe, 1e-10 * std::abs(pe)) << newton;
    double ps = 0;
    for (int k = 0; k < 6; ++k) ps = std::max(ps, std::abs(pv[k]) * vol);
    ASSERT_GT(ps, 0.0);
    // Sum of per-atom stress (pressure·volume units) = −(virial pressure)·volume.
    for (int k = 0; k < 6; ++k) EXPECT_NEAR(ssum[k], -pv[k] * vol, 1e-9 * ps) << newton << " component " << k;
    lammps_close(l);
  }
}

TEST(Plugin, VirialMatchesBoxDeformation) {
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_0", 5);
  const std::string model = shared_model_path(), data = shared_data_path(frame);
  const double nktv2p = 1.6021765e6;  // LAMMPS metal: eV/Å³ -> bar
  const double eps = 1e-5;
  auto energy_at = [&](double e, const char* dim, Snapshot* snap) {
    void* l = qnn::test::open_lammps(MPI_COMM_WORLD);
    setup_water(l, data, model);
    if (e != 0) lammps_command(l, (std::string("change_box all ") + dim + " scale " + std::to_string(1.0 + e) + " remap").c_str());
    const Snapshot s = run0(l, frame.natoms());
    const double vol = lammps_get_thermo(l, "vol");
    lammps_close(l);
    if (snap) *snap = s;
    return std::make_pair(s.pe, vol);
  };
  Snapshot s0;
  const double vol = energy_at(0.0, "x", &s0).second;
  const char* dims[3] = {"x", "y", "z"};
  for (int d = 0; d < 3; ++d) {
    const double ep = energy_at(eps, dims[d], nullptr).first, em = energy_at(-eps, dims[d], nullptr).first;
    const double w_fd = -(ep - em) / (2 * eps);        // eV
    const double w = s0.pv[d] * vol / nktv2p;          // eV
    EXPECT_NEAR(w, w_fd, 1e-6 * std::max(1.0, std::abs(w_fd))) << "component " << dims[d];
  }
}

TEST(Plugin, RestartAndDataFileGiveSameForces) {
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_0", 7);
  const std::string model = shared_model_path(), data = shared_data_path(frame);
  const std::string base = shared_tmp_name("rt");
  void* a = qnn::test::open_lammps(MPI_COMM_WORLD);
  setup_water(a, data, model);
  const Snapshot s0 = run0(a, frame.natoms());
  lammps_command(a, ("write_restart " + base + ".restart").c_str());
  lammps_command(a, ("write_data " + base + ".data").c_str());
  lammps_close(a);
  void* b = qnn::test::open_lammps(MPI_COMM_WORLD);
  lammps_command(b, ("read_restart " + base + ".restart").c_str());
  lammps_command(b, ("pair_style qnn " + model + " mode fp64").c_str());
  lammps_command(b, "pair_coeff * * O H");
  const Snapshot s1 = run0(b, frame.natoms());
  lammps_close(b);
  void* c = qnn::test::open_lammps(MPI_COMM_WORLD);
  setup_water(c, base + ".data", model);
  const Snapshot s2 = run0(c, frame.natoms());
  lammps_close(c);
  expect_same(s0, s1, 1e-12, "read_restart");
  expect_same(s0, s2, 1e-10, "read_data of write_data");
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank == 0) {
    std::remove((base + ".restart").c_str());
    std::remove((base + ".data").c_str());
  }
}

TEST(Plugin, ClearErrorsForBadInput) {
  const std::string model = shared_model_path();
  const std::string box =
      "region b block 0 10 0 10 0 10\ncreate_box 2 b\ncreate_atoms 1 single 1 1 1\ncreate_atoms 2 single 2 1 1\n"
      "mass * 1.0\n";
  expect_lammps_error("units real\natom_style atomic\n" + box, "pair_style qnn " + model + "\npair_coeff * * O H\nrun 0",
                      "units metal");
  expect_lammps_error("units metal\natom_style atomic\n" + box, "pair_style qnn /nonexistent/model.qnn", "cannot open model file");
  expect_lammps_error("units metal\natom_style atomic\n" + box, "pair_style qnn " + model + "\npair_coeff * * O C",
                      "element 'C' (atom type 2) is not in model");
  expect_lammps_error("units metal\natom_style atomic\n" + box, "pair_style qnn " + model + "\npair_coeff * * O",
                      "one element per atom type");
  expect_lammps_error("units metal\natom_style atomic\n" + box, "pair_style qnn " + model + " bogus 1", "unknown keyword 'bogus'");
  // A corrupt model file.
  const std::string bad = shared_tmp_name("bad") + ".qnn";
  if (g_rank == 0) {
    auto bytes = qnn::test::read_bytes(model);
    bytes[bytes.size() / 2] ^= 0x11;
    qnn::test::write_bytes(bad, bytes);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  expect_lammps_error("units metal\natom_style atomic\n" + box, "pair_style qnn " + bad, "checksum mismatch");
  if (g_rank == 0) std::remove(bad.c_str());
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  ::testing::InitGoogleTest(&argc, argv);
  const int any = qnn::test::run_all_tests_on_all_ranks();
  if (g_rank == 0) {
    std::remove(shared_model_path().c_str());
    std::remove(("/tmp/qnn_plugin_test_" + std::to_string(static_cast<int>(getpid())) + ".data").c_str());
  }
  MPI_Finalize();
  return any;
}
