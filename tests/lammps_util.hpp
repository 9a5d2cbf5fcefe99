// Helpers for tests that drive LAMMPS through its C library interface (never by parsing logs).
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#define LAMMPS_LIB_MPI 1  // lammps_open() with an MPI communicator
#include "library.h"

namespace qnn::test {

// One configuration: cell rows (Å), positions (N, 3) Å, species ids (N).
struct Frame {
  std::array<double, 9> cell{};
  std::vector<double> pos;
  std::vector<int> species;
  int natoms() const { return static_cast<int>(species.size()); }
};

// Frame `k` of a DeePMD npy system directory (type.raw + set.000).
inline Frame load_water_frame(const std::string& sysdir, int k) {
  Frame f;
  auto box = xt::load_npy<float>(sysdir + "/set.000/box.npy");
  auto coord = xt::load_npy<float>(sysdir + "/set.000/coord.npy");
  for (int d = 0; d < 9; ++d) f.cell[d] = box(k, d);
  std::ifstream t(sysdir + "/type.raw");
  int s;
  while (t >> s) f.species.push_back(s);
  for (int i = 0; i < 3 * f.natoms(); ++i) f.pos.push_back(coord(k, i));
  return f;
}

// Writes a LAMMPS data file (atom_style atomic, orthorhombic or triclinic cell given as
// rows a=(ax,0,0), b=(bx,by,0), c=(cx,cy,cz)); types are species + 1.
inline void write_data_file(const std::string& path, const Frame& f, const std::vector<double>& masses) {
  std::FILE* o = std::fopen(path.c_str(), "w");
  std::fprintf(o, "qnn test configuration\n\n%d atoms\n%zu atom types\n\n", f.natoms(), masses.size());
  std::fprintf(o, "0 %.17g xlo xhi\n0 %.17g ylo yhi\n0 %.17g zlo zhi\n", f.cell[0], f.cell[4], f.cell[8]);
  if (f.cell[3] != 0 || f.cell[6] != 0 || f.cell[7] != 0)
    std::fprintf(o, "%.17g %.17g %.17g xy xz yz\n", f.cell[3], f.cell[6], f.cell[7]);
  std::fprintf(o, "\nMasses\n\n");
  for (std::size_t t = 0; t < masses.size(); ++t) std::fprintf(o, "%zu %.6f\n", t + 1, masses[t]);
  std::fprintf(o, "\nAtoms # atomic\n\n");
  for (int i = 0; i < f.natoms(); ++i)
    std::fprintf(o, "%d %d %.17g %.17g %.17g\n", i + 1, f.species[i] + 1, f.pos[3 * i], f.pos[3 * i + 1], f.pos[3 * i + 2]);
  std::fclose(o);
}

// A LAMMPS instance on `comm`, quiet, with the qnn plugin loaded.
inline void* open_lammps(MPI_Comm comm) {
  const char* args[] = {"lmp", "-log", "none", "-screen", "none", "-nocite"};
  void* lmp = lammps_open(6, const_cast<char**>(args), comm, nullptr);
  lammps_command(lmp, "plugin load " QNN_PLUGIN_PATH);
  return lmp;
}

// The last LAMMPS error on this rank ("" if none), cleared. An error raised on one rank only
// (error->one: ERROR_ABORT) leaves the other ranks inside the command's collectives, where
// no test can reach them: print it with the rank and abort the whole job, so the test fails
// with the message instead of hanging until the ctest timeout.
inline std::string lammps_error(void* lmp) {
  char msg[2048] = {0};
  const int kind = lammps_get_last_error_message(lmp, msg, sizeof msg);
  if (kind == 0) return "";
  if (kind == 2) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::fprintf(stderr, "[rank %d] LAMMPS error on this rank only (the others are still in the command): %s\n", rank, msg);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  return msg;
}

// A global value of fix `id` (LMP_TYPE_SCALAR, _VECTOR element i, or _ARRAY element (i, j)),
// NaN when the fix does not provide it; LAMMPS allocates the copy, freed here.
inline double fix_global(void* lmp, const char* id, int type, int i = 0, int j = 0) {
  auto* p = static_cast<double*>(lammps_extract_fix(lmp, id, LMP_STYLE_GLOBAL, type, i, j));
  if (!p) return NAN;
  const double v = *p;
  lammps_free(p);
  return v;
}

// Element k of the global vector of fix `id`.
inline double fix_value(void* lmp, const char* id, int k) { return fix_global(lmp, id, LMP_TYPE_VECTOR, k); }

// Forces (natoms, 3) ordered by atom ID, gathered onto every rank.
inline std::vector<double> gather_forces(void* lmp, int natoms) {
  std::vector<double> f(3 * static_cast<std::size_t>(natoms));
  lammps_gather_atoms(lmp, const_cast<char*>("f"), 1, 3, f.data());
  return f;
}

// The body of the MPI test mains (after MPI_Init and InitGoogleTest): runs every test on
// every rank, prints from rank 0 only (every rank with QNN_ALL_RANKS=1, to see a failure that
// happens on one rank), and returns nonzero when any rank failed.
inline int run_all_tests_on_all_ranks() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0 && !std::getenv("QNN_ALL_RANKS")) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS();
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return any;
}

}  // namespace qnn::test
