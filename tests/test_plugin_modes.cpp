// The plugin's execution modes (pair_style qnn ... mode M), compute qnn/deviation and
// fix qnn/drift, through the LAMMPS library interface on any number of MPI ranks (this
// executable runs under mpirun -np 1, 2 and 4). Every expected number is computed here
// independently: by the core library on the same configuration, or from per-step values
// LAMMPS itself reports (thermo keywords collected by fix vector).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "lammps_util.hpp"
#include "qnn/engine/exact_engine.hpp"
#include "qnn/engine/evaluator.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"
#include "quant_test_util.hpp"
#include "test_plugin_util.hpp"
#include "test_util.hpp"

namespace {

int g_rank = 0, g_size = 1;

// A path the same on every rank (rank 0's process id), with a per-call counter.
std::string shared_tmp_name(const std::string& tag) {
  static int counter = 0;
  int pid = static_cast<int>(getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return "/tmp/qnn_plugin_modes_" + tag + "_" + std::to_string(pid) + "_" + std::to_string(counter++);
}

// Written by rank 0, visible to all ranks, removed at the end of the scope.
class SharedFile {
 public:
  explicit SharedFile(const std::string& tag, const std::string& suffix) : path_(shared_tmp_name(tag) + suffix) {}
  ~SharedFile() {
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0) std::remove(path_.c_str());
  }
  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

void write_on_rank0(const qnn::Model& m, const std::string& path) {
  if (g_rank == 0) qnn::write_model(m, path);
  MPI_Barrier(MPI_COMM_WORLD);
}

// The small random water model (FP32 file, stored in f64) and its weight-only quantization.
// Also an int8 file and a mixed one (int8 embedding nets, float fitting nets), calibrated
// (min/max) on one water frame with the integer engine's test helper.
struct Models {
  SharedFile fp{"fp", ".qnn"}, q{"q", ".qnn"}, other{"other", ".qnn"}, i8{"int8", ".qnn"}, mixed{"mixed", ".qnn"};
  Models() {
    qnn::Model m = qnn::test::small_water_model(11, 6.0);
    m.provenance["storage_dtype"] = "f64";
    write_on_rank0(m, fp.str());
    write_on_rank0(qnn::test::quantize_weight_only(m), q.str());
    const qnn::test::Frame f = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_0", 9);
    const auto g = qnn::build_periodic_graph(f.cell, f.pos, f.species, m.rcut);
    write_on_rank0(qnn::test::quantize_int8(m, {g}), i8.str());
    write_on_rank0(qnn::test::quantize_minmax(m, {g}, [](int fam, int, int) {
                     return fam == 0 ? std::make_pair(8, 8) : std::make_pair(0, 0);
                   }),
                   mixed.str());
    qnn::Model o = qnn::Model::make_random({"H", "O"}, 6.0, 0.5, {24, 12}, {4, 8}, 4, {12, 12}, true, 3);
    write_on_rank0(o, other.str());
  }
};

// Created on first use, removed in main() after all tests (collectively).
Models* g_models = nullptr;
SharedFile* g_data = nullptr;

const Models& models() {
  if (!g_models) g_models = new Models;
  return *g_models;
}

std::string shared_data_path(const qnn::test::Frame& f) {
  if (!g_data) g_data = new SharedFile("data", ".data");
  if (g_rank == 0) qnn::test::write_data_file(g_data->str(), f, {15.9994, 1.008});
  MPI_Barrier(MPI_COMM_WORLD);
  return g_data->str();
}

void* open_water(const std::string& data, const std::string& pair_args, const std::string& extra = "") {
  void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
  lammps_commands_string(lmp, ("units metal\natom_style atomic\natom_modify map array\n" + extra + "\nread_data " + data +
                               "\npair_style qnn " + pair_args + "\npair_coeff * * O H\n")
                                  .c_str());
  return lmp;
}

std::string last_error(void* lmp) { return qnn::test::lammps_error(lmp); }

// Expects `cmd` (after `setup`) to fail with a message containing every needle.
void expect_lammps_error(const std::string& setup, const std::string& cmd, const std::vector<std::string>& needles) {
  void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
  lammps_commands_string(lmp, setup.c_str());
  ASSERT_EQ(last_error(lmp), "") << "setup failed: " << setup;
  lammps_commands_string(lmp, cmd.c_str());
  const std::string msg = last_error(lmp);
  EXPECT_NE(msg, "") << "no error for: " << cmd;
  for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "expected '" << n << "' in: " << msg;
  lammps_close(lmp);
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// Energy and folded forces (natoms, 3) of `model` in `mode` on a frame, by the core library.
struct CoreResult {
  double energy = 0;
  std::vector<double> atom_energy, force;
};

CoreResult core_eval(const std::string& model, const qnn::test::Frame& f, qnn::Mode mode, bool fp64 = false) {
  const qnn::Model m = qnn::read_model(model);
  const auto g = qnn::build_periodic_graph(f.cell, f.pos, f.species, m.rcut);
  qnn::EvalResult r;
  if (fp64)
    qnn::Engine<double>(m, qnn::ExecSpace::Serial).compute(g, r);
  else
    qnn::make_evaluator(m, mode, qnn::ExecSpace::Serial)->compute(g, r);
  CoreResult c;
  c.energy = r.energy;
  c.atom_energy = r.atom_energy;
  c.force = qnn::fold_ghost_forces(g, r.force);
  return c;
}

double vec_value(void* lmp, const char* id, int k) {
  auto* v = static_cast<double*>(lammps_extract_compute(lmp, id, LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR));
  return v ? v[k] : NAN;
}

using qnn::test::fix_value;

// Row `r` of the global array of fix vector `id`.
std::vector<double> fix_array_row(void* lmp, const char* id, int r, int ncol) {
  std::vector<double> row(static_cast<std::size_t>(ncol));
  for (int c = 0; c < ncol; ++c) row[static_cast<std::size_t>(c)] = qnn::test::fix_global(lmp, id, LMP_TYPE_ARRAY, r, c);
  return row;
}

const char* kBox =
    "units metal\natom_style atomic\nregion b block 0 10 0 10 0 10\ncreate_box 2 b\ncreate_atoms 1 single 1 1 1\n"
    "create_atoms 2 single 2 1 1\nmass * 1.0\n";

}  // namespace

// ------------------------------------------------------------------------ pair_style ... mode

TEST(PluginModes, ModeKeywordParsedAndBadModesRejected) {
  const Models& M = models();
  const std::string box = kBox;
  expect_lammps_error(box, "pair_style qnn " + M.fp.str() + " mode bogus",
                      {"unknown execution mode 'bogus'", "fp32, weight-only, w8a16, int8, mixed, fp64"});
  expect_lammps_error(box, "pair_style qnn " + M.fp.str() + " mode", {"'mode' needs a value"});
  expect_lammps_error(box, "pair_style qnn " + M.fp.str() + " threads 1 colour red", {"unknown keyword 'colour'", "mode"});
  // An FP32 file cannot run the quantized modes: the message says why and what to do.
  for (const std::string mode : {"weight-only", "int8", "mixed"})
    expect_lammps_error(box, "pair_style qnn " + M.fp.str() + " mode " + mode,
                        {"cannot run in mode " + mode, "qnn quantize", "mode fp32"});
  // Every valid spelling is accepted where the file supports it.
  for (const std::string& args : {M.fp.str() + " mode fp32", M.fp.str() + " mode fp64 threads 1", M.q.str() + " mode weight-only",
                                 M.q.str() + " mode fp32", M.q.str()}) {
    void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
    lammps_commands_string(lmp, (std::string(kBox) + "pair_style qnn " + args + "\npair_coeff * * O H\nrun 0 post no").c_str());
    EXPECT_EQ(last_error(lmp), "") << args;
    lammps_close(lmp);
  }
}

TEST(PluginModes, DefaultModeIsTheFilesAndMatchesCoreEvaluator) {
  const Models& M = models();
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_0", 4);
  const std::string data = shared_data_path(frame);
  struct Case {
    std::string file, args;
    qnn::Mode mode;
  };
  // The FP32 file defaults to fp32, the quantized one to weight-only (its default_mode).
  const std::vector<Case> cases = {{M.fp.str(), "", qnn::Mode::FP32},
                                   {M.fp.str(), " mode fp32", qnn::Mode::FP32},
                                   {M.q.str(), "", qnn::Mode::WeightOnly},
                                   {M.q.str(), " mode weight-only", qnn::Mode::WeightOnly}};
  std::vector<std::vector<double>> forces;
  for (const Case& c : cases) {
    void* lmp = open_water(data, c.file + c.args);
    lammps_command(lmp, "run 0 post no");
    ASSERT_EQ(last_error(lmp), "") << c.args;
    const double pe = lammps_get_thermo(lmp, "pe");
    const auto f = qnn::test::gather_forces(lmp, frame.natoms());
    lammps_close(lmp);
    const CoreResult r = core_eval(c.file, frame, c.mode);
    // Single-precision network: the plugin's graph lists neighbours in LAMMPS's order, the
    // core's periodic graph in its own, so the float sums round differently: agreement to
    // some float ulps, not bit for bit (measured: |dE| <= 1e-6 eV of 3e4 eV, |dF| <= 3e-7 of
    // max |F|; the bounds leave a factor ~30).
    EXPECT_NEAR(pe, r.energy, 1e-9 * std::abs(r.energy)) << c.file << c.args;
    const double fs = max_abs(r.force);
    ASSERT_GT(fs, 0.0);
    for (std::size_t k = 0; k < f.size(); ++k) EXPECT_NEAR(f[k], r.force[k], 1e-5 * fs) << c.file << c.args << " component " << k;
    forces.push_back(f);
  }
  // Weight-only really runs the quantized weights: its forces differ from the FP32 file's by
  // far more than the single-precision tolerance above.
  std::vector<double> diff(forces[0].size());
  for (std::size_t k = 0; k < diff.size(); ++k) diff[k] = forces[2][k] - forces[0][k];
  EXPECT_GT(max_abs(diff), 1e-3 * max_abs(forces[0]));
  for (std::size_t k = 0; k < diff.size(); ++k) EXPECT_EQ(forces[2][k], forces[3][k]) << "default vs explicit weight-only";
}

TEST(PluginModes, IntegerModesMatchCoreEngineBitForBit) {
  // The integer engine rounds per-edge forces and per-atom energies to fixed-point grids, so
  // every later sum (graph folding, reverse communication, MPI reductions) is exact: LAMMPS on
  // any number of ranks must give the core's numbers exactly.
  const Models& M = models();
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_2", 4);
  const std::string data = shared_data_path(frame);
  struct Case {
    std::string args, extra;
    std::string file;
    qnn::Mode mode;
  };
  const std::vector<Case> cases = {{M.i8.str(), "", M.i8.str(), qnn::Mode::Int8},     // the file's default: int8
                                   {M.i8.str() + " mode int8", "newton off", M.i8.str(), qnn::Mode::Int8},
                                   {M.i8.str() + " mode mixed", "processors * 1 1", M.i8.str(), qnn::Mode::Mixed},
                                   {M.mixed.str(), "", M.mixed.str(), qnn::Mode::Mixed}};  // default: mixed
  for (const Case& c : cases) {
    void* lmp = open_water(data, c.args, c.extra);
    lammps_command(lmp, "run 0 post no");
    ASSERT_EQ(last_error(lmp), "") << c.args;
    const double pe = lammps_get_thermo(lmp, "pe");
    const auto f = qnn::test::gather_forces(lmp, frame.natoms());
    lammps_close(lmp);
    const CoreResult r = core_eval(c.file, frame, c.mode);
    EXPECT_EQ(pe, r.energy) << c.args << " " << c.extra;
    ASSERT_GT(max_abs(r.force), 0.0);
    int mismatches = 0;
    for (std::size_t k = 0; k < f.size(); ++k) mismatches += f[k] != r.force[k];
    EXPECT_EQ(mismatches, 0) << c.args << " " << c.extra;
  }
  // The mixed file has float fitting nets: it cannot run as int8, and says so.
  expect_lammps_error(kBox, "pair_style qnn " + M.mixed.str() + " mode int8", {"cannot run in mode int8", "mode mixed"});
}

TEST(PluginDeviation, Int8AgainstFP32ReferenceMatchesCoreEngine) {
  const Models& M = models();
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_1", 5);
  const std::string data = shared_data_path(frame);
  void* lmp = open_water(data, M.i8.str());
  lammps_commands_string(lmp, ("compute dev all qnn/deviation 1 ref " + M.fp.str() + " mode fp64\n"
                               "thermo_style custom step pe c_dev[*]\nrun 0 post no")
                                  .c_str());
  ASSERT_EQ(last_error(lmp), "");
  double got[3];
  for (int k = 0; k < 3; ++k) got[k] = vec_value(lmp, "dev", k);
  lammps_close(lmp);
  const CoreResult q = core_eval(M.i8.str(), frame, qnn::Mode::Int8);
  const CoreResult r = core_eval(M.fp.str(), frame, qnn::Mode::FP32, true);
  double sq = 0, mx = 0;
  for (int i = 0; i < frame.natoms(); ++i) {
    double d2 = 0;
    for (int d = 0; d < 3; ++d) d2 += std::pow(q.force[static_cast<std::size_t>(3 * i + d)] - r.force[static_cast<std::size_t>(3 * i + d)], 2);
    sq += d2;
    mx = std::max(mx, std::sqrt(d2));
  }
  const double de = (q.energy - r.energy) / frame.natoms(), rmse = std::sqrt(sq / (3.0 * frame.natoms()));
  ASSERT_GT(rmse, 0.0);
  EXPECT_NEAR(got[0], de, 1e-9 * std::abs(de) + 1e-12);
  EXPECT_NEAR(got[1], rmse, 1e-9 * rmse);
  EXPECT_NEAR(got[2], mx, 1e-9 * mx);
}

// -------------------------------------------------------------------- compute qnn/deviation

TEST(PluginDeviation, SameFileInSameModeGivesExactlyZero) {
  const Models& M = models();
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_1", 2);
  const std::string data = shared_data_path(frame);
  // Default reference: the pair's own file in mode fp32, the pair's mode here too; and an
  // explicit `ref` to the quantized file in its own mode.
  for (const std::string& setup : {M.fp.str() + "|compute dev all qnn/deviation 2",
                                   M.q.str() + " mode weight-only|compute dev all qnn/deviation 2 ref " + M.q.str() + " mode weight-only",
                                   M.q.str() + " mode fp64|compute dev all qnn/deviation 2 mode fp64"}) {
    const auto bar = setup.find('|');
    void* lmp = open_water(data, setup.substr(0, bar));
    lammps_commands_string(lmp, (setup.substr(bar + 1) +
                                 "\nvelocity all create 300 12345 loop geom\nfix nve all nve\ntimestep 0.0002\n"
                                 "thermo_style custom step pe c_dev[*]\nthermo 2\nrun 6")
                                    .c_str());
    ASSERT_EQ(last_error(lmp), "") << setup;
    for (int k = 0; k < 5; ++k) EXPECT_EQ(vec_value(lmp, "dev", k), 0.0) << setup << " element " << k + 1;
    EXPECT_EQ(vec_value(lmp, "dev", 5), 4.0) << "evaluations on steps 0, 2, 4, 6";
    lammps_close(lmp);
  }
}

TEST(PluginDeviation, MatchesCoreEngineOnTheSameConfiguration) {
  // Quantized weights (pair) against the original FP32 file (reference), both in double
  // precision so the comparison with the core library is tight; the O atoms as a group too.
  const Models& M = models();
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_2", 1);
  const std::string data = shared_data_path(frame);
  for (const char* newton : {"newton on", "newton off"}) {
    void* lmp = open_water(data, M.q.str() + " mode fp64", newton);
    lammps_commands_string(lmp, ("group oxygen type 1\n"
                                 "compute dev all qnn/deviation 1 ref " + M.fp.str() + " mode fp64\n"
                                 "compute devo oxygen qnn/deviation 1 ref " + M.fp.str() + " mode fp64\n"
                                 "thermo_style custom step pe c_dev[*] c_devo[*]\nrun 0 post no")
                                    .c_str());
    ASSERT_EQ(last_error(lmp), "") << newton;
    double got[2][6];
    for (int k = 0; k < 6; ++k) {
      got[0][k] = vec_value(lmp, "dev", k);
      got[1][k] = vec_value(lmp, "devo", k);
    }
    lammps_close(lmp);

    const CoreResult q = core_eval(M.q.str(), frame, qnn::Mode::FP32, true);
    const CoreResult r = core_eval(M.fp.str(), frame, qnn::Mode::FP32, true);
    for (int grp = 0; grp < 2; ++grp) {
      double de = 0, sq = 0, mx = 0;
      int n = 0;
      for (int i = 0; i < frame.natoms(); ++i) {
        if (grp == 1 && frame.species[static_cast<std::size_t>(i)] != 0) continue;
        de += q.atom_energy[static_cast<std::size_t>(i)] - r.atom_energy[static_cast<std::size_t>(i)];
        double d2 = 0;
        for (int d = 0; d < 3; ++d) {
          const double x = q.force[static_cast<std::size_t>(3 * i + d)] - r.force[static_cast<std::size_t>(3 * i + d)];
          d2 += x * x;
        }
        sq += d2;
        mx = std::max(mx, std::sqrt(d2));
        ++n;
      }
      const double de_atom = de / n, rmse = std::sqrt(sq / (3.0 * n));
      const std::string what = std::string(newton) + (grp ? " group oxygen" : " group all");
      ASSERT_GT(std::abs(de_atom), 0.0);
      ASSERT_GT(rmse, 0.0);
      EXPECT_NEAR(got[grp][0], de_atom, 1e-9 * std::abs(de_atom) + 1e-12) << what;
      EXPECT_NEAR(got[grp][1], rmse, 1e-9 * rmse) << what;
      EXPECT_NEAR(got[grp][2], mx, 1e-9 * mx) << what;
      EXPECT_NEAR(got[grp][3], de_atom, 1e-9 * std::abs(de_atom) + 1e-12) << what << " (average of one)";
      EXPECT_NEAR(got[grp][4], rmse, 1e-9 * rmse) << what << " (average of one)";
      EXPECT_EQ(got[grp][5], 1.0) << what;
    }
  }
}

TEST(PluginDeviation, EvaluatesEveryNStepsAndAveragesThoseEvaluations) {
  const Models& M = models();
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_0", 6);
  const std::string data = shared_data_path(frame);
  void* lmp = open_water(data, M.q.str());
  // fix vector records the compute's per-evaluation values on the steps it evaluates; thermo
  // every 5 reads it on other steps too (it then gives the last evaluation, and the average
  // must not count those reads).
  lammps_commands_string(lmp, ("compute dev all qnn/deviation 4 ref " + M.fp.str() +
                               "\nfix rec all vector 4 c_dev[1] c_dev[2] c_dev[4] c_dev[5] c_dev[6]\n"
                               "velocity all create 300 4928459 loop geom\nfix nve all nve\ntimestep 0.0002\n"
                               "thermo_style custom step pe c_dev[*]\nthermo 5\nrun 20")
                                  .c_str());
  ASSERT_EQ(last_error(lmp), "");
  const int nrow = 6;  // steps 0, 4, ..., 20
  double sum_de = 0, sum_rmse = 0;
  for (int r = 0; r < nrow; ++r) {
    const auto row = fix_array_row(lmp, "rec", r, 5);
    sum_de += row[0];
    sum_rmse += row[1];
    EXPECT_GT(row[1], 0.0) << "row " << r;
    EXPECT_EQ(row[4], r + 1.0) << "evaluation count at row " << r;
    EXPECT_NEAR(row[2], sum_de / (r + 1), 1e-12 * std::abs(sum_de)) << "running average of dE, row " << r;
    EXPECT_NEAR(row[3], sum_rmse / (r + 1), 1e-12 * sum_rmse) << "running average of the RMSE, row " << r;
  }
  EXPECT_EQ(vec_value(lmp, "dev", 5), 6.0);
  // A second run continues the averages; its setup re-evaluates step 20 without counting it twice.
  lammps_command(lmp, "run 4");
  ASSERT_EQ(last_error(lmp), "");
  EXPECT_EQ(vec_value(lmp, "dev", 5), 7.0);
  lammps_close(lmp);
}

TEST(PluginDeviation, ClearErrors) {
  const Models& M = models();
  const std::string box = kBox;
  const std::string pair = "pair_style qnn " + M.fp.str() + "\npair_coeff * * O H\n";
  expect_lammps_error(box + pair, "compute d all qnn/deviation 0", {"N (evaluate every N steps) must be >= 1"});
  expect_lammps_error(box + pair, "compute d all qnn/deviation", {"compute ID group qnn/deviation N"});
  expect_lammps_error(box + pair, "compute d all qnn/deviation 10 colour red", {"unknown keyword 'colour'"});
  expect_lammps_error(box + pair, "compute d all qnn/deviation 10 mode int9", {"unknown execution mode 'int9'"});
  expect_lammps_error(box + pair, "compute d all qnn/deviation 10 ref /nonexistent.qnn", {"cannot open model file"});
  expect_lammps_error(box + pair, "compute d all qnn/deviation 10 ref " + M.fp.str() + " mode weight-only",
                      {"cannot run in mode weight-only", "qnn quantize"});
  expect_lammps_error(box + pair, "compute d all qnn/deviation 10 ref " + M.other.str() + "\nrun 0",
                      {"same species in the same order"});
  expect_lammps_error(box + "pair_style zero 5.0\npair_coeff * *\n", "compute d all qnn/deviation 10\nrun 0",
                      {"needs pair_style qnn"});
}

// --------------------------------------------------------------------------- fix qnn/drift

// NVE: E = etotal; NVT (Nose-Hoover): E = econserve = etotal + the thermostat's energy.
// "nvt-defined-after": fix qnn/drift is defined before fix nvt, so at the run's setup the
// thermostat's energy is not valid yet (LAMMPS sets fixes up in definition order; FixNH's chain
// masses are uninitialised memory before its first setup): the fix must skip that sample.
// fix vector (the reference) is always defined after the integrator, for the same reason.
class PluginDrift : public ::testing::TestWithParam<const char*> {};

TEST_P(PluginDrift, SlopeAndFluctuationsMatchLeastSquaresOfThermoEnergies) {
  const Models& M = models();
  const qnn::test::Frame frame = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_1", 0);
  const std::string data = shared_data_path(frame);
  void* lmp = open_water(data, M.fp.str());
  const int every = 3, steps = 60;
  const std::string ensemble = GetParam();
  const bool nvt = ensemble != "nve", drift_first = ensemble == "nvt-defined-after";
  const std::string drift = "fix drift all qnn/drift every " + std::to_string(every) + "\n";
  const std::string md = nvt ? "fix md all nvt temp 300 300 0.01\n" : "fix md all nve\n";
  // LAMMPS's own etotal / econserve, ke and time on the sampling steps, via fix vector.
  lammps_commands_string(lmp, ((drift_first ? drift + md : md + drift) + "variable et equal " +
                               (nvt ? "econserve" : "etotal") +
                               "\nvariable ke equal ke\nvariable t equal time\n"
                               "fix rec all vector " + std::to_string(every) + " v_t v_et v_ke\n"
                               "velocity all create 300 4928459 loop geom\ntimestep 0.0005\n"
                               "thermo_style custom step pe ke etotal f_drift[*]\nthermo 10\n"
                               "run " + std::to_string(steps))
                                  .c_str());
  ASSERT_EQ(last_error(lmp), "");
  // The fix's samples: every row of fix vector, less the setup step when it is skipped.
  const int first = drift_first ? 1 : 0;
  const int n = steps / every + 1 - first;
  const double natoms = frame.natoms();
  std::vector<double> t(n), e(n), k(n);
  for (int r = 0; r < n; ++r) {
    const auto row = fix_array_row(lmp, "rec", r + first, 3);
    t[r] = row[0];
    e[r] = row[1] / natoms;
    k[r] = row[2] / natoms;
  }
  // Least squares by the textbook two-pass formulas.
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / static_cast<double>(v.size());
  };
  const double mt = mean(t), me = mean(e), mk = mean(k);
  double stt = 0, ste = 0, see = 0, skk = 0;
  for (int r = 0; r < n; ++r) {
    stt += (t[r] - mt) * (t[r] - mt);
    ste += (t[r] - mt) * (e[r] - me);
    see += (e[r] - me) * (e[r] - me);
    skk += (k[r] - mk) * (k[r] - mk);
  }
  const double slope = ste / stt;  // eV/atom/ps (metal: time in ps)
  const double ke_std = std::sqrt(skk / n), e_rms = std::sqrt(see / n);
  const double elapsed = t[n - 1] - t[0];
  // Non-fatal checks only until the collective "run 6" below: a rank that returned early
  // would leave the others waiting in it.
  EXPECT_NEAR(elapsed, (steps - first * every) * 0.0005, 1e-12);
  EXPECT_GT(e_rms, 0.0);

  EXPECT_NEAR(fix_value(lmp, "drift", 0), 1000.0 * slope, 1e-6 * std::abs(1000.0 * slope) + 1e-9);
  // the global scalar (NaN if the fix did not provide one, which fails the check)
  EXPECT_NEAR(qnn::test::fix_global(lmp, "drift", LMP_TYPE_SCALAR), 1000.0 * slope,
              1e-6 * std::abs(1000.0 * slope) + 1e-9) << "scalar";
  EXPECT_NEAR(fix_value(lmp, "drift", 1), slope * elapsed / ke_std, 1e-6 * std::abs(slope * elapsed / ke_std) + 1e-12);
  EXPECT_NEAR(fix_value(lmp, "drift", 2), 1000.0 * e_rms, 1e-6 * 1000.0 * e_rms);
  EXPECT_EQ(fix_value(lmp, "drift", 3), static_cast<double>(n));
  EXPECT_NEAR(fix_value(lmp, "drift", 4), elapsed, 1e-12);
  EXPECT_NEAR(fix_value(lmp, "drift", 5), 1000.0 * ke_std, 1e-6 * 1000.0 * ke_std);

  // A second run adds samples from its first new step on (its setup step was sampled already).
  lammps_command(lmp, "run 6");
  EXPECT_EQ(last_error(lmp), "");
  EXPECT_EQ(fix_value(lmp, "drift", 3), static_cast<double>(n + 2));
  if (nvt) {
    // The thermostat's energy is in E: without it the fluctuation would be much larger.
    EXPECT_GT(std::abs(lammps_get_thermo(lmp, "ecouple")), 100 * e_rms * natoms) << "thermostat exchanged too little";
  }
  lammps_close(lmp);
}

INSTANTIATE_TEST_SUITE_P(Ensembles, PluginDrift, ::testing::Values("nve", "nvt", "nvt-defined-after"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           std::string s = i.param;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

TEST(PluginDriftInput, ClearErrors) {
  const Models& M = models();
  const std::string pair = "pair_style qnn " + M.fp.str() + "\npair_coeff * * O H\n";
  expect_lammps_error(std::string(kBox) + pair + "group one id 1\n", "fix d one qnn/drift", {"use group 'all'"});
  expect_lammps_error(std::string(kBox) + pair, "fix d all qnn/drift every 0", {"'every' must be >= 1"});
  expect_lammps_error(std::string(kBox) + pair, "fix d all qnn/drift every", {"'every' needs a value"});
  expect_lammps_error(std::string(kBox) + pair, "fix d all qnn/drift often 3", {"unknown keyword 'often'"});
  std::string real_box = kBox;
  real_box.replace(real_box.find("metal"), 5, "real");
  expect_lammps_error(real_box + "pair_style zero 5.0\npair_coeff * *\n", "fix d all qnn/drift\nrun 0", {"needs 'units metal'"});
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  ::testing::InitGoogleTest(&argc, argv);
  const int any = qnn::test::run_all_tests_on_all_ranks();
  delete g_models;
  delete g_data;
  MPI_Finalize();
  return any;
}
