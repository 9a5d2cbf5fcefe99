// pair_style qnn on imported DeePMD-kit models (issue 15), in LAMMPS, against the energies,
// forces and virials DeePMD-kit itself computed (tests/data/deepmd): mode fp64 reproduces a
// float64 model to rounding, mode fp32 (compressed engine) to float32. Runs under MPI.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "lammps_util.hpp"
#include "qnn/import/deepmd.hpp"
#include "qnn/format/model.hpp"

namespace {

int g_rank = 0;

struct Fixture {
  qnn::test::Frame frame;
  double energy = 0;
  std::vector<double> force, virial;  // (N, 3); 3x3 row-major
};

Fixture load(const std::string& stem) {
  std::ifstream in(std::string(QNN_TEST_DATA_DIR) + "/deepmd/" + stem + ".json");
  const nlohmann::json j = nlohmann::json::parse(in);
  const nlohmann::json& fr = j.at("frames").at(0);
  Fixture f;
  const auto box = fr.at("box").get<std::vector<double>>();
  std::copy(box.begin(), box.end(), f.frame.cell.begin());
  f.frame.pos = fr.at("coord").get<std::vector<double>>();
  f.frame.species = j.at("type").get<std::vector<int>>();
  f.energy = fr.at("energy").get<double>();
  f.force = fr.at("force").get<std::vector<double>>();
  f.virial = fr.at("virial").get<std::vector<double>>();
  return f;
}

// Rank 0 imports the .dp file and writes the .qnn and the data file; every rank gets the paths.
std::string shared_path(const std::string& name) {
  char buf[256];
  if (g_rank == 0) std::snprintf(buf, sizeof buf, "/tmp/qnn_plugin_import_%d_%s", static_cast<int>(getpid()), name.c_str());
  MPI_Bcast(buf, sizeof buf, MPI_CHAR, 0, MPI_COMM_WORLD);
  return buf;
}

struct Result {
  double pe = 0, fmax = 0, df = 0, dv = 0, vmax = 0;
};

Result run(const std::string& stem, const std::string& mode) {
  const Fixture fx = load(stem);
  const std::string qnn_file = shared_path(stem + ".qnn"), data = shared_path(stem + ".data");
  if (g_rank == 0) {
    qnn::write_model(qnn::deepmd::import_dp(std::string(QNN_TEST_DATA_DIR) + "/deepmd/" + stem + ".dp"), qnn_file);
    qnn::test::write_data_file(data, fx.frame, {15.999, 1.008});
  }
  MPI_Barrier(MPI_COMM_WORLD);
  void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
  for (const std::string& c : {std::string("units metal"), std::string("atom_style atomic"), std::string("atom_modify map array"),
                               "read_data " + data, "pair_style qnn " + qnn_file + " mode " + mode, std::string("pair_coeff * * O H"),
                               std::string("thermo_style custom pe pxx pyy pzz pxy pxz pyz vol"), std::string("run 0 post no")})
    lammps_command(lmp, c.c_str());
  EXPECT_EQ(qnn::test::lammps_error(lmp), "");
  Result r;
  r.pe = lammps_get_thermo(lmp, "pe");
  const std::vector<double> f = qnn::test::gather_forces(lmp, fx.frame.natoms());
  for (std::size_t k = 0; k < f.size(); ++k) {
    r.fmax = std::max(r.fmax, std::abs(fx.force[k]));
    r.df = std::max(r.df, std::abs(f[k] - fx.force[k]));
  }
  // No velocities: the pressure is the virial's, W / V · nktv2p (metal: 1.6021765e6 bar/(eV/Å³)).
  const double vol = lammps_get_thermo(lmp, "vol"), nktv2p = 1.6021765e6;
  const char* keys[6] = {"pxx", "pyy", "pzz", "pxy", "pxz", "pyz"};
  const int map[6] = {0, 4, 8, 1, 2, 5};
  for (int k = 0; k < 6; ++k) {
    const double w = lammps_get_thermo(lmp, keys[k]) * vol / nktv2p;
    r.vmax = std::max(r.vmax, std::abs(fx.virial[static_cast<std::size_t>(map[k])]));
    r.dv = std::max(r.dv, std::abs(w - fx.virial[static_cast<std::size_t>(map[k])]));
  }
  lammps_close(lmp);
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank == 0) {
    std::remove(qnn_file.c_str());
    std::remove(data.c_str());
  }
  if (g_rank == 0)
    std::printf("%s mode %s: |dE| %.3g eV of %.10g, max |dF| %.3g eV/A (%.3g of max |F|), max |dW| %.3g eV (%.3g of max |W|)\n",
                stem.c_str(), mode.c_str(), std::abs(r.pe - fx.energy), fx.energy, r.df, r.df / r.fmax, r.dv, r.dv / r.vmax);
  r.pe -= fx.energy;  // deviation
  return r;
}

class Float64 : public ::testing::TestWithParam<std::string> {};

TEST_P(Float64, Fp64ModeReproducesDeepmdKit) {
  const Result r = run(GetParam(), "fp64");
  EXPECT_LE(std::abs(r.pe), 1e-10 * 3e4);
  EXPECT_LE(r.df, 1e-10 * r.fmax);
  EXPECT_LE(r.dv, 1e-8 * r.vmax);  // through the printed pressure's arithmetic
}

TEST_P(Float64, Fp32ModeWithinFloatRounding) {
  const Result r = run(GetParam(), "fp32");
  EXPECT_LE(std::abs(r.pe), 1e-8 * 3e4);
  EXPECT_LE(r.df, 1e-5 * r.fmax);
  EXPECT_LE(r.dv, 1e-5 * r.vmax);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Float64,
                         ::testing::Values("se_e2_a-oneside_true-float64", "se_e2_a-oneside_false-float64",
                                           "se_e2_a-oneside_false-float64-resnet_dt"));

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  ::testing::InitGoogleTest(&argc, argv);
  const int any = qnn::test::run_all_tests_on_all_ranks();
  MPI_Finalize();
  return any;
}
