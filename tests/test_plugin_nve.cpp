// NVE energy conservation with pair_style qnn in weight-only mode: the shipped water potential
// (potentials/water-se2a.fp32.qnn), quantized here to 8-bit per-channel weights, on the
// 192-atom water box of examples/water, 200 velocity-Verlet steps of 0.25 fs, measured by
// fix qnn/drift. Runs under mpirun -np 2 (label slow; about a minute on 2 busy cores).
//
// The bound. Velocity Verlet with forces that are the exact gradient of the energy conserves
// a shadow Hamiltonian: the total energy shows no secular drift and fluctuates by
// O((omega dt)^2) of the energy in the fastest modes. For water these are the O-H stretches
// (~3700 cm^-1, period ~9 fs): at dt = 0.25 fs, (omega dt)^2 ~ 0.03, and the kinetic energy
// exchanged with the potential energy (sigma_KE) is carried largely by those modes, so the
// total-energy fluctuation and the drift over the run are expected at ~1% of sigma_KE or
// below. We require both |drift over the run| / sigma_KE and RMS(E_total) / sigma_KE to stay
// under 2%.
//
// The bound has teeth: the same run with forces that are 1.2 times the gradient (fix addforce
// adding 0.2 f, an error in the force of the kind a wrong derivative would make) conserves
// 1.2 PE + KE instead, so PE + KE moves by 0.2 of the potential-energy exchange, ~20% of
// sigma_KE; the test checks that this run fails the same bound.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "lammps_util.hpp"
#include "qnn/format/model.hpp"
#include "test_plugin_util.hpp"

namespace {

int g_rank = 0, g_size = 1;

struct Drift {
  double slope = NAN, ratio = NAN, e_rms = NAN, n = NAN, elapsed = NAN, ke_std = NAN;
  double dev[6] = {NAN, NAN, NAN, NAN, NAN, NAN};  // compute qnn/deviation vs the FP32 file
};

using qnn::test::fix_value;

Drift run_nve(const std::string& model, const std::string& extra) {
  void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
  lammps_commands_string(lmp, ("units metal\natom_style atomic\natom_modify map array\n"
                               "read_data " QNN_SOURCE_DIR "/examples/water/water.data\n"
                               "pair_style qnn " + model + " mode weight-only\npair_coeff * * O H\n"
                               "velocity all create 300.0 4928459 mom yes rot yes dist gaussian loop geom\n"
                               "timestep 0.00025\nfix integrate all nve\n" + extra +
                               "\nfix drift all qnn/drift every 1\n"
                               "compute dev all qnn/deviation 50 ref " QNN_SOURCE_DIR "/potentials/water-se2a.fp32.qnn\n"
                               "thermo_style custom step temp pe ke etotal f_drift[*]\nthermo 50\nrun 200")
                                  .c_str());
  Drift d;
  const std::string err = qnn::test::lammps_error(lmp);
  if (!err.empty()) {
    ADD_FAILURE() << "LAMMPS error: " << err;
  } else {
    d.slope = fix_value(lmp, "drift", 0);
    d.ratio = fix_value(lmp, "drift", 1);
    d.e_rms = fix_value(lmp, "drift", 2);
    d.n = fix_value(lmp, "drift", 3);
    d.elapsed = fix_value(lmp, "drift", 4);
    d.ke_std = fix_value(lmp, "drift", 5);
    auto* dev = static_cast<double*>(lammps_extract_compute(lmp, "dev", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR));
    for (int k = 0; k < 6 && dev; ++k) d.dev[k] = dev[k];
  }
  lammps_close(lmp);
  return d;
}

}  // namespace

TEST(PluginNVE, WeightOnlyConservesEnergy) {
  char path[256];
  if (g_rank == 0) {
    std::snprintf(path, sizeof path, "/tmp/qnn_plugin_nve_%d.qnn", static_cast<int>(getpid()));
    qnn::write_model(qnn::test::quantize_weight_only(qnn::read_model(QNN_SOURCE_DIR "/potentials/water-se2a.fp32.qnn")),
                     path);
  }
  MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
  const double bound = 0.02;

  const Drift good = run_nve(path, "");
  const Drift bad = run_nve(path, "variable fx atom 0.2*fx\nvariable fy atom 0.2*fy\nvariable fz atom 0.2*fz\n"
                                  "fix wrong all addforce v_fx v_fy v_fz");
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank == 0) std::remove(path);

  if (g_rank == 0) {
    std::printf("[ nve ] %d ranks, weight-only, 200 x 0.25 fs:      slope %.4g meV/atom/ps, drift/sigma_KE %.4g, "
                "RMS(Etot) %.4g meV/atom, sigma_KE %.4g meV/atom\n",
                g_size, good.slope, good.ratio, good.e_rms, good.ke_std);
    std::printf("[ nve ] %d ranks, forces 1.2 x gradient (control): slope %.4g meV/atom/ps, drift/sigma_KE %.4g, "
                "RMS(Etot) %.4g meV/atom, sigma_KE %.4g meV/atom\n",
                g_size, bad.slope, bad.ratio, bad.e_rms, bad.ke_std);
  }
  if (g_rank == 0)
    std::printf("[ nve ] weight-only vs FP32 file (fp32 mode), 5 evaluations: last dE %.3g meV/atom, F RMSE %.3g meV/A, "
                "max |dF| %.3g meV/A; averages dE %.3g meV/atom, F RMSE %.3g meV/A\n",
                1e3 * good.dev[0], 1e3 * good.dev[1], 1e3 * good.dev[2], 1e3 * good.dev[3], 1e3 * good.dev[4]);
  ASSERT_EQ(good.n, 201.0);
  EXPECT_EQ(good.dev[5], 5.0) << "deviation evaluations on steps 0, 50, ..., 200";
  EXPECT_GT(good.dev[1], 0.0) << "8-bit weights must differ from the FP32 file";
  EXPECT_NEAR(good.elapsed, 200 * 0.00025, 1e-12);
  ASSERT_GT(good.ke_std, 0.0);
  EXPECT_LT(std::abs(good.ratio), bound) << "drift over the run relative to sigma_KE";
  EXPECT_LT(good.e_rms / good.ke_std, bound) << "RMS of the total energy relative to sigma_KE";
  // The control run must fail the bound, or the bound proves nothing.
  EXPECT_GT(std::max(std::abs(bad.ratio), bad.e_rms / bad.ke_std), bound) << "the non-conservative control passed";
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  ::testing::InitGoogleTest(&argc, argv);
  const int any = qnn::test::run_all_tests_on_all_ranks();
  MPI_Finalize();
  return any;
}
