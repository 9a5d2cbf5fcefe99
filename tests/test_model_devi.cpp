// The committee's model deviation (src/qnn/committee/model_devi.hpp) against DeePMD-kit itself:
// its functions calc_model_devi_f / _v / _e on random arrays (tests/data/committee/
// devi_functions.json), and the headers of the files its LAMMPS pair style and `dp model-devi`
// wrote (tests/data/committee/*.out); all made by scripts/make_committee_fixtures.sh.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "qnn/committee/model_devi.hpp"
#include "qnn/data/data.hpp"
#include "qnn/data/lammps_dump.hpp"
#include "qnn/error.hpp"
#include "qnn/format/model.hpp"

namespace qnn {
namespace {

std::string fixture(const std::string& name) { return std::string(QNN_TEST_DATA_DIR) + "/committee/" + name; }

nlohmann::json load_functions() {
  std::ifstream f(fixture("devi_functions.json"));
  if (!f) throw Error("tests/data/committee/devi_functions.json missing (scripts/make_committee_fixtures.sh)");
  return nlohmann::json::parse(f);
}

void expect_rel(double got, double want, double tol, const std::string& what) {
  EXPECT_LE(std::abs(got - want), tol * std::max(std::abs(want), 1e-300)) << what << ": got " << got << ", DeePMD-kit "
                                                                          << want;
}

// The first `n` lines of a file.
std::vector<std::string> head(const std::string& path, int n) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  std::string line;
  while ((int)lines.size() < n && std::getline(f, line)) lines.push_back(line);
  return lines;
}

TEST(ModelDevi, ForceDeviationEqualsDeepmdKit) {
  const nlohmann::json j = load_functions();
  int checked = 0;
  for (const auto& c : j.at("cases")) {
    const auto fs = c.at("fs");  // (models, frames, atoms, 3)
    const std::size_t nm = fs.size(), nf = fs[0].size(), na = fs[0][0].size();
    for (const char* rel_key : {"f_rel_None", "f_rel_0.5"}) {
      const std::optional<double> rel = std::string(rel_key) == "f_rel_None" ? std::nullopt : std::optional<double>(0.5);
      const auto& want = c.at(rel_key);
      for (std::size_t f = 0; f < nf; ++f) {
        std::vector<std::vector<double>> flat(nm);
        std::vector<const double*> ptr(nm);
        for (std::size_t k = 0; k < nm; ++k) {
          for (std::size_t i = 0; i < na; ++i)
            for (int d = 0; d < 3; ++d) flat[k].push_back(fs[k][f][i][d].get<double>());
          ptr[k] = flat[k].data();
        }
        std::vector<double> atom(na);
        devi::force_deviation(ptr, na, rel, atom.data());
        for (std::size_t i = 0; i < na; ++i)
          expect_rel(atom[i], want.at("atomic")[f][i].get<double>(), 1e-12, std::string(rel_key) + " atom");
        const devi::Summary s = devi::summarize(atom.data(), na);
        expect_rel(s.max, want.at("max")[f].get<double>(), 1e-12, std::string(rel_key) + " max");
        expect_rel(s.min, want.at("min")[f].get<double>(), 1e-12, std::string(rel_key) + " min");
        expect_rel(s.avg, want.at("avg")[f].get<double>(), 1e-12, std::string(rel_key) + " avg");
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 10);
}

TEST(ModelDevi, VirialAndEnergyDeviationEqualDeepmdKit) {
  const nlohmann::json j = load_functions();
  int checked = 0;
  for (const auto& c : j.at("cases")) {
    const auto vs = c.at("vs");  // (models, frames, 9)
    const auto es = c.at("es");  // (models, frames, 1)
    const std::size_t nm = vs.size(), nf = vs[0].size();
    for (std::size_t f = 0; f < nf; ++f) {
      std::vector<std::array<double, 9>> v(nm);
      std::vector<double> e(nm);
      for (std::size_t k = 0; k < nm; ++k) {
        for (int q = 0; q < 9; ++q) v[k][q] = vs[k][f][q].get<double>();
        e[k] = es[k][f][0].get<double>();
      }
      for (const char* rel_key : {"v_rel_None", "v_rel_0.5"}) {
        if (!c.contains(rel_key)) continue;  // relative_v: one-frame cases only (DeePMD-kit's broadcast)
        const std::optional<double> rel =
            std::string(rel_key) == "v_rel_None" ? std::nullopt : std::optional<double>(0.5);
        const devi::Summary s = devi::virial_deviation(v, rel, devi::VirialRelative::TensorNorm);
        const auto& want = c.at(rel_key);
        expect_rel(s.max, want.at("max")[f].get<double>(), 1e-12, std::string(rel_key) + " max");
        expect_rel(s.min, want.at("min")[f].get<double>(), 1e-12, std::string(rel_key) + " min");
        expect_rel(s.avg, want.at("avg")[f].get<double>(), 1e-12, std::string(rel_key) + " avg");
        ++checked;
      }
      expect_rel(devi::energy_deviation(e), c.at("devi_e")[f].get<double>(), 1e-12, "devi_e");
    }
  }
  EXPECT_EQ(checked, 7);
}

// LAMMPS's pair_style deepmd normalises each component by its own mean (DeepPotModelDevi::
// compute_relative_std, stride 1): checked here on a case where that differs from the norm.
TEST(ModelDevi, PerComponentRelativeVirial) {
  std::vector<std::array<double, 9>> v(2);
  for (int q = 0; q < 9; ++q) {
    v[0][q] = 1.0 + q;
    v[1][q] = 1.0 + q + 0.2 * (q + 1);
  }
  const devi::Summary s = devi::virial_deviation(v, 0.5, devi::VirialRelative::PerComponent);
  // component q: std = 0.1 (q+1), mean = 1 + q + 0.1 (q+1)
  double sq = 0, mx = 0, mn = 1e300;
  for (int q = 0; q < 9; ++q) {
    const double e = 0.1 * (q + 1) / (1.0 + q + 0.1 * (q + 1) + 0.5);
    sq += e * e;
    mx = std::max(mx, e);
    mn = std::min(mn, e);
  }
  EXPECT_NEAR(s.max, mx, 1e-15);
  EXPECT_NEAR(s.min, mn, 1e-15);
  EXPECT_NEAR(s.avg, std::sqrt(sq / 9), 1e-15);
}

TEST(ModelDevi, SymmetricVirialAsNineComponents) {
  const std::array<double, 9> v = devi::virial9({1, 2, 3, 4, 5, 6}, 2.0);  // xx yy zz xy xz yz
  const std::array<double, 9> want = {0.5, 2.0, 2.5, 2.0, 1.0, 3.0, 2.5, 3.0, 1.5};
  for (int q = 0; q < 9; ++q) EXPECT_EQ(v[q], want[q]) << q;
}

TEST(ModelDevi, NeedsACommittee) {
  const double f[3] = {1, 2, 3};
  double out = 0;
  EXPECT_THROW(devi::force_deviation({f}, 1, std::nullopt, &out), Error);
  EXPECT_THROW(devi::virial_deviation({std::array<double, 9>{}}, std::nullopt, devi::VirialRelative::PerComponent),
               Error);
  EXPECT_THROW(devi::energy_deviation({1.0}), Error);
}

// The headers are DeePMD-kit's own lines from its files.
TEST(ModelDevi, HeadersEqualDeepmdKitFiles) {
  EXPECT_EQ(devi::lammps_header(false), head(fixture("lmp.model_devi.out"), 1).at(0) + "\n");
  EXPECT_EQ(devi::lammps_header(true), head(fixture("lmp.model_devi.atomic.out"), 1).at(0) + "\n");
  const auto dp = head(fixture("dp.model_devi.out"), 2);
  EXPECT_EQ(devi::dp_header("examples/data/water-deepmd/data_2", false), dp.at(0) + "\n" + dp.at(1) + "\n");
  const auto dpa = head(fixture("dp.model_devi.atomic.out"), 2);
  EXPECT_EQ(devi::dp_header("examples/data/water-deepmd/data_2", true), dpa.at(0) + "\n" + dpa.at(1) + "\n");
}

// A row re-printed from the values DeePMD-kit printed reproduces its line.
TEST(ModelDevi, RowsReproduceDeepmdKitLines) {
  auto check = [](const std::string& line, bool lammps, std::size_t ncols_fixed) {
    std::istringstream in(line);
    long long step = 0;
    in >> step;
    std::vector<double> x;
    double d;
    while (in >> d) x.push_back(d);
    ASSERT_GE(x.size(), ncols_fixed);
    const devi::Summary v{x[0], x[1], x[2]}, f{x[3], x[4], x[5]};
    const std::size_t natoms = x.size() - ncols_fixed;
    const double* atomic = natoms ? x.data() + ncols_fixed : nullptr;
    const std::string row = lammps ? devi::lammps_row(step, v, f, atomic, natoms)
                                   : devi::dp_row(step, v, f, x[6], atomic, natoms);
    EXPECT_EQ(row, line + "\n");
  };
  for (const char* name : {"lmp.model_devi.out", "lmp.model_devi.atomic.out"}) {
    const auto lines = head(fixture(name), 3);
    ASSERT_EQ(lines.size(), 3u) << name;
    check(lines[2], true, 6);
  }
  for (const char* name : {"dp.model_devi.out", "dp.model_devi.atomic.out"}) {
    const auto lines = head(fixture(name), 4);
    ASSERT_EQ(lines.size(), 4u) << name;
    check(lines[3], false, 7);
  }
}

TEST(ModelDevi, CommitteeMismatchNamesFilesAndDifference) {
  Model a;
  a.species = {"O", "H"};
  a.rcut = 6.0;
  Model b = a;
  EXPECT_EQ(devi::committee_mismatch(a, "a.qnn", b, "b.qnn"), "");
  b.species = {"H", "O"};
  EXPECT_EQ(devi::committee_mismatch(a, "a.qnn", b, "b.qnn"),
            "b.qnn lists its species in another order (H O) than a.qnn (O H); the models of a committee must have "
            "the same type map");
  b.species = {"O", "H", "C"};
  EXPECT_EQ(devi::committee_mismatch(a, "a.qnn", b, "b.qnn"),
            "b.qnn has species O H C but a.qnn has species O H; the models of a committee must have the same species");
  b = a;
  b.rcut = 5.5;
  EXPECT_EQ(devi::committee_mismatch(a, "a.qnn", b, "b.qnn"),
            "b.qnn has cutoff 5.5 A but a.qnn has cutoff 6 A; the models of a committee must have the same cutoff");
}

// ---- LAMMPS dump frames (qnn model-devi --dump)

std::string temp_file(const std::string& name, const std::string& text) {
  const std::string path = "/tmp/qnn_test_dump_" + std::to_string(getpid()) + "_" + name;
  std::ofstream(path) << text;
  return path;
}

std::string expect_error(const std::string& path, const std::vector<std::string>& type_map) {
  try {
    read_lammps_dump(path, type_map, {"O", "H"});
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Frames 0 and 1 of data_2 written as an orthogonal dump (atoms in reverse id order, box not
// at the origin) read back as the same cells and positions, in id order.
TEST(LammpsDump, OrthogonalFramesEqualTheNpyFrames) {
  const System sys = read_system(std::string(QNN_WATER_DATA_DIR) + "/data_2", {"O", "H"});
  std::ostringstream d;
  d.precision(17);
  for (int f = 0; f < 2; ++f) {
    const Cell c = sys.cell(f);
    const std::vector<double> x = sys.positions(f);
    d << "ITEM: TIMESTEP\n" << 10 * f << "\nITEM: NUMBER OF ATOMS\n" << sys.natoms
      << "\nITEM: BOX BOUNDS pp pp pp\n";
    for (int k = 0; k < 3; ++k) d << -1.5 << " " << c[4 * k] - 1.5 << "\n";
    d << "ITEM: ATOMS id type xu yu zu\n";
    for (int i = sys.natoms - 1; i >= 0; --i)
      d << i + 1 << " " << sys.types[i] + 1 << " " << x[3 * i] - 1.5 << " " << x[3 * i + 1] - 1.5 << " "
        << x[3 * i + 2] - 1.5 << "\n";
  }
  const std::string path = temp_file("ortho.dump", d.str());
  const DumpFrames got = read_lammps_dump(path, {"O", "H"}, {"O", "H"});
  std::remove(path.c_str());
  ASSERT_EQ(got.system.nframes, 2);
  EXPECT_EQ(got.steps, (std::vector<long long>{0, 10}));
  EXPECT_EQ(got.system.species, sys.species);
  for (int f = 0; f < 2; ++f) {
    const Cell a = got.system.cell(f), b = sys.cell(f);
    for (int k = 0; k < 9; ++k) EXPECT_NEAR(a[k], b[k], 1e-12) << "frame " << f << " cell " << k;
    const std::vector<double> xa = got.system.positions(f), xb = sys.positions(f);
    for (std::size_t q = 0; q < xa.size(); ++q) EXPECT_NEAR(xa[q], xb[q], 1e-12) << "frame " << f << " coord " << q;
  }
}

// A triclinic dump's bounding box (LAMMPS: xlo_bound = xlo + min(0, xy, xz, xy + xz), ...)
// back to the cell rows a = (lx, 0, 0), b = (xy, ly, 0), c = (xz, yz, lz).
TEST(LammpsDump, TriclinicBoundsGiveTheCell) {
  const std::string path = temp_file("tri.dump",
                                     "ITEM: TIMESTEP\n5\nITEM: NUMBER OF ATOMS\n2\nITEM: BOX BOUNDS xy xz yz pp pp pp\n"
                                     "-2 11 1\n0 9.5 -2\n0 8 0.5\nITEM: ATOMS id type x y z\n2 1 1 2 3\n1 2 4 5 6\n");
  const DumpFrames got = read_lammps_dump(path, {"O", "H"}, {"O", "H"});
  std::remove(path.c_str());
  const Cell c = got.system.cell(0);
  const Cell want = {10, 0, 0, 1, 9, 0, -2, 0.5, 8};
  for (int k = 0; k < 9; ++k) EXPECT_DOUBLE_EQ(c[k], want[k]) << k;
  EXPECT_EQ(got.system.species, (std::vector<int>{1, 0}));  // id 1 is type 2 (H)
  EXPECT_EQ(got.system.positions(0), (std::vector<double>{4, 5, 6, 1, 2, 3}));
}

TEST(LammpsDump, RefusesWhatItCannotEvaluate) {
  const std::string head = "ITEM: TIMESTEP\n0\nITEM: NUMBER OF ATOMS\n2\n";
  const std::string box = "ITEM: BOX BOUNDS pp pp pp\n0 10\n0 10\n0 10\n";
  const std::string atoms = "ITEM: ATOMS id type x y z\n1 1 1 1 1\n2 2 2 2 2\n";
  std::string p = temp_file("f.dump", head + "ITEM: BOX BOUNDS pp pp ff\n0 10\n0 10\n0 10\n" + atoms);
  EXPECT_NE(expect_error(p, {"O", "H"}).find("boundary 'ff'"), std::string::npos) << expect_error(p, {"O", "H"});
  p = temp_file("cols.dump", head + box + "ITEM: ATOMS id type xs ys zs\n1 1 .1 .1 .1\n2 2 .2 .2 .2\n");
  EXPECT_NE(expect_error(p, {"O", "H"}).find("needs the columns id, type and x y z (or xu yu zu); it has: id type xs ys zs"),
            std::string::npos)
      << expect_error(p, {"O", "H"});
  p = temp_file("types.dump", head + box + "ITEM: ATOMS id type x y z\n1 1 1 1 1\n2 3 2 2 2\n");
  EXPECT_NE(expect_error(p, {"O", "H"}).find("has atom type 3 but --type-map names 2 type(s)"), std::string::npos);
  p = temp_file("el.dump", head + box + atoms);
  EXPECT_NE(expect_error(p, {"O", "C"}).find("element C (atom type 2) is not a species of the model"),
            std::string::npos);
  p = temp_file("atoms.dump", head + box + atoms + "ITEM: TIMESTEP\n10\nITEM: NUMBER OF ATOMS\n2\n" + box +
                                  "ITEM: ATOMS id type x y z\n1 1 1 1 1\n3 2 2 2 2\n");
  EXPECT_NE(expect_error(p, {"O", "H"}).find("frame of timestep 10 has other atoms"), std::string::npos);
  p = temp_file("cut.dump", head + box + "ITEM: ATOMS id type x y z\n1 1 1 1 1\n");
  EXPECT_NE(expect_error(p, {"O", "H"}).find("the file ends inside a frame"), std::string::npos);
  for (const char* n : {"f.dump", "cols.dump", "types.dump", "el.dump", "atoms.dump", "cut.dump"})
    std::remove(("/tmp/qnn_test_dump_" + std::to_string(getpid()) + "_" + n).c_str());
}

}  // namespace
}  // namespace qnn
