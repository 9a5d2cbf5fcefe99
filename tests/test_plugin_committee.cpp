// pair_style qnn with a committee of models (issue 26), in LAMMPS, under MPI:
//  - the model-deviation file of four imported DeePMD-kit models (mode fp64) against the one
//    DeePMD-kit's own pair_style deepmd wrote on the same input (tests/data/committee, made by
//    scripts/make_committee_fixtures.sh): same header, same columns, every value to 1e-6;
//  - the same file on any number of ranks as on one, and with newton off as on;
//  - every refusal: one error naming the file and the difference, and no file written.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "lammps_util.hpp"
#include "qnn/format/model.hpp"
#include "qnn/import/deepmd.hpp"

namespace {

int g_rank = 0;
int g_size = 1;

std::string fixture(const std::string& name) { return std::string(QNN_TEST_DATA_DIR) + "/committee/" + name; }

// A path in /tmp chosen on rank 0, the same on every rank.
std::string shared_path(const std::string& name) {
  char buf[256];
  if (g_rank == 0)
    std::snprintf(buf, sizeof buf, "/tmp/qnn_plugin_committee_%d_%s", static_cast<int>(getpid()), name.c_str());
  MPI_Bcast(buf, sizeof buf, MPI_CHAR, 0, MPI_COMM_WORLD);
  return buf;
}

bool exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The committee m1..m4 imported from DeePMD-kit's files (rank 0 writes them once).
const std::vector<std::string>& committee() {
  static std::vector<std::string> files;
  if (files.empty()) {
    for (int k = 1; k <= 4; ++k) {
      files.push_back(shared_path("m" + std::to_string(k) + ".qnn"));
      if (g_rank == 0) qnn::write_model(qnn::deepmd::import_dp(fixture("m" + std::to_string(k) + ".dp")), files.back());
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  return files;
}

std::string committee_args() {
  std::string s;
  for (const std::string& f : committee()) s += " " + f;
  return s;
}

// 100 NVE steps of 0.5 fs of the fixture's water (192 atoms with velocities), as
// scripts/make_committee_fixtures.sh ran pair_style deepmd; `pair` is the pair_style line.
// Runs on `comm`; returns the LAMMPS error ("" if none).
std::string run_md(MPI_Comm comm, const std::string& pair, int steps = 100, const std::string& pre = "") {
  void* lmp = qnn::test::open_lammps(comm);
  const std::string input = pre + "units metal\natom_style atomic\natom_modify map array\nread_data " +
                            fixture("water-vel.data") + "\n" + pair + "\npair_coeff * * O H\ntimestep 0.0005\n" +
                            "fix 1 all nve\nthermo 10\nrun " + std::to_string(steps) + "\n";
  lammps_commands_string(lmp, input.c_str());
  const std::string err = qnn::test::lammps_error(lmp);
  lammps_close(lmp);
  return err;
}

struct Table {
  std::vector<std::string> header;         // the '#' lines
  std::vector<std::vector<double>> rows;   // every number of every other line
};

Table parse(const std::string& path) {
  std::ifstream f(path);
  Table t;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line[0] == '#') {
      t.header.push_back(line);
      continue;
    }
    std::istringstream in(line);
    std::vector<double> row;
    double x;
    while (in >> x) row.push_back(x);
    if (!row.empty()) t.rows.push_back(row);
  }
  return t;
}

// Largest relative difference of two tables of the same shape (and the shape checked).
double compare_tables(const Table& got, const Table& want) {
  EXPECT_EQ(got.header, want.header);
  EXPECT_EQ(got.rows.size(), want.rows.size());
  double worst = 0;
  for (std::size_t r = 0; r < std::min(got.rows.size(), want.rows.size()); ++r) {
    EXPECT_EQ(got.rows[r].size(), want.rows[r].size()) << "row " << r;
    EXPECT_EQ(got.rows[r].at(0), want.rows[r].at(0)) << "step of row " << r;
    for (std::size_t c = 1; c < std::min(got.rows[r].size(), want.rows[r].size()); ++c)
      worst = std::max(worst, std::abs(got.rows[r][c] - want.rows[r][c]) / std::abs(want.rows[r][c]));
  }
  return worst;
}

void check_against_deepmd(const std::string& keywords, const std::string& reference) {
  const std::string out = shared_path("md.out");
  ASSERT_EQ(run_md(MPI_COMM_WORLD, "pair_style qnn" + committee_args() + " mode fp64 out_freq 10 out_file " + out +
                                       keywords),
            "");
  if (g_rank == 0) {
    const Table want = parse(fixture(reference));
    ASSERT_EQ(want.rows.size(), 11u);
    const double worst = compare_tables(parse(out), want);
    std::printf("%s on %d rank(s): largest relative difference from DeePMD-kit's %s: %.2e\n", keywords.c_str(), g_size,
                reference.c_str(), worst);
    EXPECT_LE(worst, 1e-6);
    std::remove(out.c_str());
  }
}

TEST(Committee, FileEqualsPairStyleDeepmd) { check_against_deepmd("", "lmp.model_devi.out"); }

TEST(Committee, AtomicRelativeFileEqualsPairStyleDeepmd) {
  check_against_deepmd(" atomic relative 1.0 relative_v 1.0", "lmp.model_devi.atomic.out");
}

// Engine v2 (mode fp32) sums forces and virials in fixed point, and the file's per-atom values
// are gathered by atom ID: the file is the same, byte for byte, on any number of ranks (and
// with newton off); fp64 agrees to rounding.
TEST(Committee, SameFileOnOneRankAndWithNewtonOff) {
  for (const char* mode : {"fp32", "fp64"}) {
    const std::string many = shared_path("many.out"), one = shared_path("one.out"), off = shared_path("off.out");
    const std::string pair = "pair_style qnn" + committee_args() + " mode " + mode + " out_freq 5 atomic out_file ";
    ASSERT_EQ(run_md(MPI_COMM_WORLD, pair + many, 30), "");
    MPI_Comm self;
    MPI_Comm_split(MPI_COMM_WORLD, g_rank == 0 ? 0 : MPI_UNDEFINED, 0, &self);
    if (g_rank == 0) {
      EXPECT_EQ(run_md(self, pair + one, 30), "");
      EXPECT_EQ(run_md(self, pair + off, 30, "newton off\n"), "");
      MPI_Comm_free(&self);
      const std::string a = read_text(many), b = read_text(one), c = read_text(off);
      EXPECT_EQ(parse(one).rows.size(), 7u);
      if (std::string(mode) == "fp32") {
        EXPECT_EQ(a, b) << "mode fp32: the file of " << g_size << " ranks differs from one rank's";
        EXPECT_EQ(c, b) << "mode fp32: the file with newton off differs";
      } else {
        EXPECT_LE(compare_tables(parse(many), parse(one)), 1e-9);
        EXPECT_LE(compare_tables(parse(off), parse(one)), 1e-9);
      }
      for (const std::string& p : {many, one, off}) std::remove(p.c_str());
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

// The first model drives the dynamics: a committee run's trajectory is the first model's alone.
TEST(Committee, DynamicsAreTheFirstModels) {
  const std::string out = shared_path("dyn.out");
  auto final_positions = [&](const std::string& pair) {
    void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
    const std::string input = "units metal\natom_style atomic\natom_modify map array\nread_data " +
                              fixture("water-vel.data") + "\n" + pair +
                              "\npair_coeff * * O H\ntimestep 0.0005\nfix 1 all nve\nrun 20\n";
    lammps_commands_string(lmp, input.c_str());
    EXPECT_EQ(qnn::test::lammps_error(lmp), "");
    std::vector<double> x(3 * 192);
    lammps_gather_atoms(lmp, const_cast<char*>("x"), 1, 3, x.data());
    lammps_close(lmp);
    return x;
  };
  const auto alone = final_positions("pair_style qnn " + committee()[0] + " mode fp32");
  const auto four = final_positions("pair_style qnn" + committee_args() + " mode fp32 out_freq 3 out_file " + out);
  EXPECT_EQ(alone, four);
  if (g_rank == 0) std::remove(out.c_str());
}

// The two drivers of the same definitions agree: the model deviation pair_style qnn writes
// during a run (forces folded home by reverse communication) equals what `qnn model-devi --dump`
// computes afterwards from the dumped frames (a periodic graph of its own).
TEST(Committee, RunFileEqualsQnnModelDeviOnItsDump) {
  const std::string out = shared_path("run.out"), dump = shared_path("run.dump"), cli = shared_path("cli.out");
  ASSERT_EQ(run_md(MPI_COMM_WORLD, "pair_style qnn" + committee_args() + " mode fp64 out_freq 10 atomic relative 0.5 out_file " +
                                       out + "\ndump d all custom 10 " + dump +
                                       " id type x y z\ndump_modify d sort id format float %.17g",
                   30),
            "");
  if (g_rank == 0) {
    const std::string cmd = std::string(QNN_CLI_PATH) + " model-devi -m" + committee_args() + " --mode fp64 --atomic " +
                            "--relative 0.5 --dump " + dump + " --type-map O H -o " + cli + " > /dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const Table run = parse(out), offline = parse(cli);
    ASSERT_EQ(run.rows.size(), 4u);
    ASSERT_EQ(offline.rows.size(), 4u);
    double worst = 0;
    for (std::size_t r = 0; r < 4; ++r) {
      ASSERT_EQ(run.rows[r].size() + 1, offline.rows[r].size());  // dp's file has devi_e
      EXPECT_EQ(run.rows[r][0], offline.rows[r][0]);               // the step
      for (std::size_t c = 1; c < run.rows[r].size(); ++c) {
        const std::size_t oc = c <= 6 ? c : c + 1;                 // skip devi_e
        worst = std::max(worst, std::abs(run.rows[r][c] - offline.rows[r][oc]) / std::abs(offline.rows[r][oc]));
      }
    }
    std::printf("pair_style qnn's file against qnn model-devi --dump: largest relative difference %.2e\n", worst);
    EXPECT_LE(worst, 2e-6);  // the last printed digit
    for (const std::string& p : {out, dump, cli}) std::remove(p.c_str());
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// A refused committee: one error containing every needle, and no out_file.
void expect_refused(const std::string& pair, const std::vector<std::string>& needles, const std::string& out,
                    const std::string& coeff = "pair_coeff * * O H") {
  void* lmp = qnn::test::open_lammps(MPI_COMM_WORLD);
  const std::string input = "units metal\natom_style atomic\natom_modify map array\nread_data " +
                            fixture("water-vel.data") + "\n" + pair + "\n" + coeff + "\nrun 0\n";
  lammps_commands_string(lmp, input.c_str());
  const std::string msg = qnn::test::lammps_error(lmp);
  lammps_close(lmp);
  EXPECT_NE(msg, "") << "no error for: " << pair;
  for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "expected '" << n << "' in: " << msg;
  if (g_rank == 0) {
    EXPECT_FALSE(exists(out)) << out << " was written for a refused input: " << pair;
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Committee, RefusesBadInputWithOneErrorAndNoFile) {
  const auto& m = committee();
  const std::string out = shared_path("refused.out");
  const std::string swapped = shared_path("swapped.qnn"), other = shared_path("other.qnn"),
                    cut4 = shared_path("cut4.qnn");
  if (g_rank == 0) {
    qnn::Model a = qnn::read_model(m[1]);
    std::swap(a.species[0], a.species[1]);
    qnn::write_model(a, swapped);
    qnn::Model b = qnn::read_model(m[1]);
    b.species[1] = "C";
    qnn::write_model(b, other);
    // the import fixtures have rcut 4 A
    qnn::write_model(qnn::deepmd::import_dp(std::string(QNN_TEST_DATA_DIR) + "/deepmd/se_e2_a-oneside_true-float64.dp"),
                     cut4);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string ok = " out_file " + out;
  expect_refused("pair_style qnn " + m[0] + " " + swapped + ok,
                 {swapped + " lists its species in another order (H O) than " + m[0] + " (O H)"}, out);
  expect_refused("pair_style qnn " + m[0] + " " + other + ok,
                 {other + " has species O C but " + m[0] + " has species O H"}, out);
  expect_refused("pair_style qnn " + m[0] + " " + m[1] + " " + cut4 + ok,
                 {cut4 + " has cutoff 4 A but " + m[0] + " has cutoff 6 A"}, out);
  expect_refused("pair_style qnn " + m[0] + " /nonexistent/m2.qnn" + ok,
                 {"'/nonexistent/m2.qnn' is neither a model file (no such file) nor a keyword"}, out);
  expect_refused("pair_style qnn /nonexistent/m1.qnn " + m[1] + ok, {"/nonexistent/m1.qnn"}, out);
  expect_refused("pair_style qnn " + m[0] + " " + m[1] + " out_file /nonexistent/dir/md.out",
                 {"out_file /nonexistent/dir/md.out"}, "/nonexistent/dir/md.out");
  expect_refused("pair_style qnn " + m[0] + " " + m[1] + " out_file /tmp", {"out_file /tmp", "is a directory"}, out);
  expect_refused("pair_style qnn " + m[0] + " " + m[1] + " out_freq 0" + ok, {"'out_freq' must be >= 1", "got 0"}, out);
  expect_refused("pair_style qnn " + m[0] + " " + m[1] + " out_freq -5" + ok, {"'out_freq' must be >= 1", "got -5"}, out);
  expect_refused("pair_style qnn " + m[0] + " " + m[1] + " relative 0" + ok, {"'relative' must be a positive level"}, out);
  expect_refused("pair_style qnn " + m[0] + " " + m[1] + " relative_v" + ok, {"'relative_v' needs a value"}, out);
  expect_refused("pair_style qnn " + m[0] + " atomic" + ok, {"'atomic' needs a committee of two or more model files"},
                 out);
  expect_refused("pair_style qnn " + m[0] + " out_freq 10", {"'out_freq' needs a committee"}, out);
  expect_refused("pair_style qnn " + m[0] + " " + m[1] + " mode int8" + ok,
                 {m[0] + " cannot run in mode int8", "needs a quantized file"}, out);
  expect_refused("pair_style qnn " + m[0] + " " + m[1] + " fparam 1.0" + ok, {"'fparam' is neither a model file"}, out);
  // a committee accepted by pair_style but a pair_coeff refused: still no file
  expect_refused("pair_style qnn " + m[0] + " " + m[1] + ok, {"element 'X'"}, out, "pair_coeff * * O X");
  if (g_rank == 0) {
    for (const std::string& p : {swapped, other, cut4}) std::remove(p.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  ::testing::InitGoogleTest(&argc, argv);
  const int any = qnn::test::run_all_tests_on_all_ranks();
  if (g_rank == 0)
    for (const std::string& f : committee()) std::remove(f.c_str());
  MPI_Finalize();
  return any;
}
