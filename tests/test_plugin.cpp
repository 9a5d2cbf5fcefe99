// pair_style qnn inside LAMMPS, through the library interface, on any number of MPI ranks
// (this executable runs under mpirun -np 1 and -np 2): the plugin loads, runs, and gives the
// core engine's energy and forces on the same configuration.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>

#include "lammps_util.hpp"
#include "qnn/engine.hpp"
#include "qnn/graph.hpp"
#include "qnn/model.hpp"
#include "test_util.hpp"

namespace {

int g_rank = 0, g_size = 1;

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
  lammps_command(lmp, ("pair_style qnn " + model).c_str());
  lammps_command(lmp, "pair_coeff * * O H");
  lammps_command(lmp, "thermo_style custom step pe press");
  lammps_command(lmp, "run 0");
  ASSERT_FALSE(lammps_has_error(lmp)) << "LAMMPS error";
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

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  ::testing::InitGoogleTest(&argc, argv);
  if (g_rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS();
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (g_rank == 0) std::remove(shared_model_path().c_str());
  MPI_Finalize();
  return any;
}
