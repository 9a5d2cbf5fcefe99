// Issue 16 in LAMMPS: every crafted file of hostile_cases.hpp, and every model path that is not
// a regular file, stops `pair_style qnn` with one LAMMPS error that names the file and the
// problem (no crash, no raw json exception, no hang); a failed pair_style leaves nothing that
// can run; a re-defined pair_style qnn maps the last pair_coeff's elements onto the new
// model's species, or demands a new pair_coeff. Runs under mpirun -np 1 and 2.
#include <gtest/gtest.h>
#include <mpi.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "hostile_cases.hpp"
#include "lammps_util.hpp"
#include "qnn/format/model.hpp"
#include "test_util.hpp"

namespace {

int g_rank = 0;

// A path the same on every rank (rank 0's process id), removed by rank 0 at the end.
std::string shared_path(const std::string& tag) {
  int pid = static_cast<int>(getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return "/tmp/qnn_hostile_" + std::to_string(pid) + "_" + tag;
}

const char* kBox =
    "units metal\natom_style atomic\natom_modify map array\nregion b block 0 10 0 10 0 10\ncreate_box 2 b\n"
    "create_atoms 1 single 1 1 1\ncreate_atoms 2 single 2 1 1\nmass * 1.0\n";

// `cmd` (after kBox) must fail with a message containing every needle.
void expect_lammps_error(const std::string& cmd, const std::vector<std::string>& needles) {
  void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
  lammps_commands_string(lmp, kBox);
  ASSERT_EQ(qnn::test::lammps_error(lmp), "");
  lammps_commands_string(lmp, cmd.c_str());
  const std::string msg = qnn::test::lammps_error(lmp);
  EXPECT_NE(msg, "") << "no error for: " << cmd;
  EXPECT_EQ(msg.find("json.exception"), std::string::npos) << msg;
  for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "expected '" << n << "' in: " << msg;
  lammps_close(lmp);
}

// The water frame's data file (types 1 = O, 2 = H), shared by all ranks.
std::string water_data() {
  static std::string path;
  if (path.empty()) {
    path = shared_path("water.data");
    if (g_rank == 0) {
      const qnn::test::Frame f = qnn::test::load_water_frame(QNN_WATER_DATA_DIR "/data_0", 0);
      qnn::test::write_data_file(path, f, {15.9994, 1.008});
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  return path;
}

// `m` with its species reordered: new species i is old species perm[i] (the same potential).
qnn::Model permute_species(const qnn::Model& m, const std::vector<int>& perm) {
  qnn::Model p = m;
  const auto S = static_cast<std::size_t>(m.nspecies());
  for (std::size_t i = 0; i < S; ++i) {
    const auto o = static_cast<std::size_t>(perm[i]);
    p.species[i] = m.species[o];
    p.sel[i] = m.sel[o];
    p.embed[i] = m.embed[o];
    p.fit[i] = m.fit[o];
    p.energy_bias[i] = m.energy_bias[o];
    for (std::size_t j = 0; j < S; ++j) {
      const auto oj = static_cast<std::size_t>(perm[j]);
      p.mean_s[i * S + j] = m.mean_s[o * S + oj];
      p.std_s[i * S + j] = m.std_s[o * S + oj];
      p.std_r[i * S + j] = m.std_r[o * S + oj];
    }
  }
  return p;
}

void write_shared(const qnn::Model& m, const std::string& path) {
  if (g_rank == 0) qnn::write_model(m, path);
  MPI_Barrier(MPI_COMM_WORLD);
}

double run0_pe(void* lmp) {
  lammps_command(lmp, "run 0 post no");
  const std::string err = qnn::test::lammps_error(lmp);
  if (!err.empty()) {
    ADD_FAILURE() << "LAMMPS error: " << err;
    return NAN;
  }
  return lammps_get_thermo(lmp, "pe");
}

class Crafted : public ::testing::TestWithParam<std::size_t> {};

const std::vector<qnn::test::HostileCase>& cases() {
  static const std::vector<qnn::test::HostileCase> c = qnn::test::hostile_cases();
  return c;
}

}  // namespace

TEST_P(Crafted, PairStyleGivesOneErrorNamingTheFile) {
  const qnn::test::HostileCase& c = cases()[GetParam()];
  const std::string path = shared_path(c.name + ".qnn");
  if (g_rank == 0) qnn::test::write_bytes(path, c.bytes);
  MPI_Barrier(MPI_COMM_WORLD);
  expect_lammps_error("pair_style qnn " + path, {"pair_style qnn: " + path + ": ", c.needle});
  if (g_rank == 0) std::remove(path.c_str());
}

INSTANTIATE_TEST_SUITE_P(PluginHostile, Crafted, ::testing::Range<std::size_t>(0, cases().size()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) { return cases()[info.param].name; });

TEST(PluginHostile, PathsThatAreNotModelFiles) {
  const std::string dir = shared_path("dir"), fifo = shared_path("fifo");
  if (g_rank == 0) {
    std::filesystem::create_directories(dir);
    mkfifo(fifo.c_str(), 0600);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  expect_lammps_error("pair_style qnn " + dir, {"pair_style qnn: " + dir + ": is a directory"});
  expect_lammps_error("pair_style qnn " + fifo, {"pair_style qnn: " + fifo + ": is not a regular file"});
  expect_lammps_error("pair_style qnn /dev/zero", {"pair_style qnn: /dev/zero: is not a regular file"});
  const std::string good = shared_path("ref_good.qnn");
  write_shared(qnn::test::small_water_model(11, 6.0), good);
  expect_lammps_error("pair_style qnn " + good + "\npair_coeff * * O H\ncompute d all qnn/deviation 10 ref " + dir,
                      {dir + ": is a directory"});
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank == 0) {
    std::filesystem::remove(dir);
    std::filesystem::remove(fifo);
    std::filesystem::remove(good);
  }
}

// After a failed pair_style qnn the old model is gone: a run stops with a message instead of
// running without a model.
TEST(PluginHostile, FailedRedefinitionLeavesNothingToRun) {
  const std::string good = shared_path("good.qnn"), bad = shared_path("bad.qnn");
  write_shared(qnn::test::small_water_model(11, 6.0), good);
  if (g_rank == 0) qnn::test::write_bytes(bad, cases().front().bytes);
  MPI_Barrier(MPI_COMM_WORLD);
  void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
  lammps_commands_string(lmp, kBox);
  lammps_commands_string(lmp, ("pair_style qnn " + good + "\npair_coeff * * O H").c_str());
  ASSERT_EQ(qnn::test::lammps_error(lmp), "");
  lammps_command(lmp, ("pair_style qnn " + bad).c_str());
  EXPECT_NE(qnn::test::lammps_error(lmp).find(bad), std::string::npos);
  lammps_command(lmp, "run 0");
  EXPECT_NE(qnn::test::lammps_error(lmp).find("the last 'pair_style qnn' command failed"), std::string::npos);
  lammps_close(lmp);
  if (g_rank == 0) {
    std::remove(good.c_str());
    std::remove(bad.c_str());
  }
}

// Re-defining pair_style qnn with a model whose species order differs, without a new
// pair_coeff, gives the same energy as the first model (it used to keep the old indices).
TEST(PluginHostile, RedefinitionRemapsSpecies) {
  const qnn::Model oh = qnn::test::small_water_model(11, 6.0);
  const std::string a = shared_path("oh.qnn"), b = shared_path("ho.qnn");
  write_shared(oh, a);
  write_shared(permute_species(oh, {1, 0}), b);
  void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
  lammps_commands_string(lmp, ("units metal\natom_style atomic\natom_modify map array\nread_data " + water_data() +
                               "\npair_style qnn " + a + " mode fp64\npair_coeff * * O H\nthermo_style custom step pe")
                                  .c_str());
  ASSERT_EQ(qnn::test::lammps_error(lmp), "");
  const double pe_a = run0_pe(lmp);
  lammps_command(lmp, ("pair_style qnn " + b + " mode fp64").c_str());
  ASSERT_EQ(qnn::test::lammps_error(lmp), "");
  const double pe_b = run0_pe(lmp);
  lammps_close(lmp);
  ASSERT_TRUE(std::isfinite(pe_a));
  EXPECT_NEAR(pe_b, pe_a, 1e-9 * std::abs(pe_a)) << "the type -> species mapping was not re-resolved";
  if (g_rank == 0) {
    std::remove(a.c_str());
    std::remove(b.c_str());
  }
}

// A new model without the elements of the last pair_coeff: the run demands a new pair_coeff,
// and runs once it is given.
TEST(PluginHostile, RedefinitionWithOtherElementsDemandsPairCoeff) {
  qnn::Model other = qnn::test::small_water_model(11, 6.0);
  other.species = {"Si", "C"};
  const std::string a = shared_path("oh2.qnn"), b = shared_path("sic.qnn");
  write_shared(qnn::test::small_water_model(11, 6.0), a);
  write_shared(other, b);
  void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
  lammps_commands_string(lmp, ("units metal\natom_style atomic\natom_modify map array\nread_data " + water_data() +
                               "\npair_style qnn " + a + "\npair_coeff * * O H\nthermo_style custom step pe")
                                  .c_str());
  ASSERT_EQ(qnn::test::lammps_error(lmp), "");
  lammps_command(lmp, ("pair_style qnn " + b).c_str());
  ASSERT_EQ(qnn::test::lammps_error(lmp), "");
  lammps_command(lmp, "run 0 post no");
  const std::string err = qnn::test::lammps_error(lmp);
  EXPECT_NE(err.find("pair coeffs are not set"), std::string::npos) << err;  // LAMMPS checks this itself
  lammps_command(lmp, "pair_coeff * * Si C");
  EXPECT_TRUE(std::isfinite(run0_pe(lmp)));
  lammps_close(lmp);
  if (g_rank == 0) {
    std::remove(a.c_str());
    std::remove(b.c_str());
  }
}

// `device`: cpu runs as without the keyword; an unknown device, and cuda in a plugin built
// without CUDA, stop pair_style with one error saying so. A plugin built with
// -DQNN_ENABLE_CUDA=ON (compile this test with QNN_PLUGIN_HAS_CUDA there) loads the model on
// the device, or says why no device is usable.
TEST(PluginHostile, DeviceKeyword) {
  const std::string good = shared_path("device.qnn");
  write_shared(qnn::test::small_water_model(11, 6.0), good);
  expect_lammps_error("pair_style qnn " + good + " device xyz",
                      {"pair_style qnn: unknown device 'xyz'", "valid devices: cpu, cuda"});
  expect_lammps_error("pair_style qnn " + good + " device", {"'device' needs a value (cpu or cuda)"});
#ifndef QNN_PLUGIN_HAS_CUDA
  expect_lammps_error("pair_style qnn " + good + " mode fp32 device cuda",
                      {"pair_style qnn: device cuda: this qnnplugin.so was built without CUDA: rebuild with "
                       "-DQNN_ENABLE_CUDA=ON"});
#else
  {
    void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
    lammps_commands_string(lmp, kBox);
    lammps_commands_string(lmp, ("pair_style qnn " + good + " mode fp32 device cuda").c_str());
    const std::string msg = qnn::test::lammps_error(lmp);
    EXPECT_TRUE(msg.empty() || msg.find("pair_style qnn: device cuda: no usable CUDA device on rank") != std::string::npos)
        << msg;
    lammps_close(lmp);
  }
#endif
  double pe[2] = {NAN, NAN};
  const char* style[2] = {"", " device cpu"};
  for (int k = 0; k < 2; ++k) {
    void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
    lammps_commands_string(lmp, ("units metal\natom_style atomic\natom_modify map array\nread_data " + water_data() +
                                 "\npair_style qnn " + good + " mode fp32" + style[k] +
                                 "\npair_coeff * * O H\nthermo_style custom step pe")
                                    .c_str());
    EXPECT_EQ(qnn::test::lammps_error(lmp), "");
    pe[k] = run0_pe(lmp);
    lammps_close(lmp);
  }
  EXPECT_TRUE(std::isfinite(pe[1]));
  EXPECT_EQ(pe[1], pe[0]) << "device cpu is the default";
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank == 0) std::remove(good.c_str());
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  ::testing::InitGoogleTest(&argc, argv);
  const int any = qnn::test::run_all_tests_on_all_ranks();
  if (g_rank == 0) std::remove(water_data().c_str());
  MPI_Finalize();
  return any;
}
