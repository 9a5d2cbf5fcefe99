// The DeePMD npy reader (src/qnn/data/data.hpp) on the shipped water data, on synthetic systems
// written with xt::dump_npy (float32 and float64), and on every malformed case it must report.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "qnn/data/data.hpp"
#include "qnn/error.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;

namespace {

struct TempDir : qnn::test::TempDir {
  TempDir() : qnn::test::TempDir("data") {}
};

// Writes a text file.
void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p);
  f << text;
}

// The arrays of a synthetic system, frames (nframes) of natoms atoms in a cubic box.
struct Synthetic {
  int natoms = 5;
  std::vector<int> types{0, 1, 1, 0, 1};
  std::vector<std::size_t> frames{3, 2};   // frames per set
  xt::xarray<double> box[2], coord[2], energy[2], force[2];

  Synthetic() {
    std::mt19937_64 rng(42);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    for (int s = 0; s < 2; ++s) {
      const std::size_t nf = frames[static_cast<std::size_t>(s)];
      box[s] = xt::zeros<double>({nf, std::size_t{9}});
      coord[s] = xt::zeros<double>({nf, std::size_t(3 * natoms)});
      energy[s] = xt::zeros<double>({nf});
      force[s] = xt::zeros<double>({nf, std::size_t(3 * natoms)});
      for (std::size_t f = 0; f < nf; ++f) {
        const double L = 10.0 + 0.1 * static_cast<double>(f);
        box[s](f, 0) = L;
        box[s](f, 4) = L;
        box[s](f, 8) = L;
        for (int k = 0; k < 3 * natoms; ++k) {
          coord[s](f, static_cast<std::size_t>(k)) = 5.0 + 4.0 * u(rng);
          force[s](f, static_cast<std::size_t>(k)) = u(rng);
        }
        energy[s](f) = -100.0 + u(rng);
      }
    }
  }

  // Writes the system as float64 (or float32) npy files under `dir`.
  void write(const fs::path& dir, bool float32 = false) const {
    fs::create_directories(dir);
    write_text(dir / "type_map.raw", "O\nH\n");
    std::string t;
    for (int x : types) t += std::to_string(x) + "\n";
    write_text(dir / "type.raw", t);
    for (int s = 0; s < 2; ++s) {
      fs::path set = dir / ("set.00" + std::to_string(s));
      fs::create_directories(set);
      auto dump = [&](const std::string& name, const xt::xarray<double>& a) {
        if (float32) {
          xt::xarray<float> af = xt::cast<float>(a);
          xt::dump_npy((set / name).string(), af);
        } else {
          xt::dump_npy((set / name).string(), a);
        }
      };
      dump("box.npy", box[s]);
      dump("coord.npy", coord[s]);
      dump("energy.npy", energy[s]);
      dump("force.npy", force[s]);
    }
  }
};

// Expects read_system(dir, species) to throw qnn::Error whose message contains every needle.
void expect_error(const fs::path& dir, const std::vector<std::string>& needles,
                  const std::vector<std::string>& species = {"O", "H"}) {
  try {
    qnn::read_system(dir.string(), species);
    ADD_FAILURE() << "no error for " << dir;
  } catch (const qnn::Error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "message: " << msg << "\nmissing: " << n;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected qnn::Error, got: " << e.what();
  }
}

// ---------------------------------------------------------------------------- good data

TEST(Data, ReadsShippedWaterSystems) {
  const std::string root = QNN_WATER_DATA_DIR;
  if (!fs::exists(root + "/data_0/type.raw")) GTEST_SKIP() << "water data not found at " << root;
  auto systems = qnn::read_systems({root + "/data_0", root + "/data_1"}, {"O", "H"});
  ASSERT_EQ(systems.size(), 2u);
  EXPECT_EQ(systems[0].nframes, 80);
  EXPECT_EQ(systems[1].nframes, 160);  // set.000 and set.001
  EXPECT_EQ(systems[1].set_names, (std::vector<std::string>{"set.000", "set.001"}));
  EXPECT_EQ(systems[1].frame_set[80], 1);
  EXPECT_EQ(systems[1].frame_in_set[80], 0);
  for (const auto& s : systems) {
    ASSERT_EQ(s.natoms, 192);
    int no = 0, nh = 0;
    for (int sp : s.species) (sp == 0 ? no : nh)++;
    EXPECT_EQ(no, 64);
    EXPECT_EQ(nh, 128);
    EXPECT_EQ(s.coord.size(), static_cast<std::size_t>(s.nframes) * 192 * 3);
    EXPECT_EQ(s.force.size(), s.coord.size());
    EXPECT_EQ(s.box.size(), static_cast<std::size_t>(s.nframes) * 9);
    for (int f = 0; f < s.nframes; ++f) {
      qnn::Cell c = s.cell(f);
      EXPECT_NEAR(c[0], 12.44, 0.1);  // README: a box of about 12.44 Å
      EXPECT_LT(s.energy[static_cast<std::size_t>(f)], 0.0);
    }
  }
  EXPECT_EQ(qnn::collect_species({root + "/data_0"}), (std::vector<std::string>{"O", "H"}));
}

TEST(Data, Float64AndFloat32RoundTrip) {
  Synthetic syn;
  for (bool f32 : {false, true}) {
    TempDir tmp;
    syn.write(tmp.path() / "sys", f32);
    qnn::System s = qnn::read_system((tmp.path() / "sys").string(), {"O", "H"});
    ASSERT_EQ(s.natoms, 5);
    ASSERT_EQ(s.nframes, 5);
    EXPECT_EQ(s.species, syn.types);
    for (int set = 0, g = 0; set < 2; ++set) {
      for (std::size_t f = 0; f < syn.frames[static_cast<std::size_t>(set)]; ++f, ++g) {
        auto expect = [&](double want, double got) {
          if (f32) {
            EXPECT_EQ(static_cast<double>(static_cast<float>(want)), got);
          } else {
            EXPECT_EQ(want, got);
          }
        };
        const auto ug = static_cast<std::size_t>(g);
        expect(syn.energy[set](f), s.energy[ug]);
        for (std::size_t k = 0; k < 9; ++k) expect(syn.box[set](f, k), s.box[9 * ug + k]);
        for (std::size_t k = 0; k < 15; ++k) {
          expect(syn.coord[set](f, k), s.coord[15 * ug + k]);
          expect(syn.force[set](f, k), s.force[15 * ug + k]);
        }
        std::vector<double> pos = s.positions(g);
        EXPECT_EQ(pos[3], s.coord[15 * ug + 3]);
      }
    }
  }
}

TEST(Data, MapsSpeciesByName) {
  Synthetic syn;
  TempDir tmp;
  syn.write(tmp.path() / "sys");
  // The model lists H before O, plus an element the data does not use.
  qnn::System s = qnn::read_system((tmp.path() / "sys").string(), {"C", "H", "O"});
  EXPECT_EQ(s.species, (std::vector<int>{2, 1, 1, 2, 1}));
  // Without a species list, the system's own type map.
  qnn::System t = qnn::read_system((tmp.path() / "sys").string(), {});
  EXPECT_EQ(t.species, syn.types);
}

TEST(Data, AcceptsFrameShapedVariants) {
  // energy as (nframes, 1) and box as (nframes, 3, 3) are the same data.
  Synthetic syn;
  TempDir tmp;
  syn.write(tmp.path() / "sys");
  fs::path set = tmp.path() / "sys" / "set.000";
  xt::xarray<double> e = syn.energy[0];
  e.reshape({3, 1});
  xt::dump_npy((set / "energy.npy").string(), e);
  xt::xarray<double> b = syn.box[0];
  b.reshape({3, 3, 3});
  xt::dump_npy((set / "box.npy").string(), b);
  qnn::System s = qnn::read_system((tmp.path() / "sys").string(), {"O", "H"});
  EXPECT_EQ(s.energy[2], syn.energy[0](2));
  EXPECT_EQ(s.box[9 * 2 + 8], syn.box[0](2, 8));
}

// ---------------------------------------------------------------------------- malformed data

// Writes a good system, applies `corrupt` to it and checks the error.
void check_corrupt(const std::function<void(const fs::path& sys)>& corrupt, const std::vector<std::string>& needles,
                   const std::vector<std::string>& species = {"O", "H"}) {
  Synthetic syn;
  TempDir tmp;
  fs::path sys = tmp.path() / "sys";
  syn.write(sys);
  corrupt(sys);
  expect_error(sys, needles, species);
}

TEST(DataErrors, MissingFiles) {
  for (const std::string name : {"box.npy", "coord.npy", "energy.npy", "force.npy"}) {
    SCOPED_TRACE(name);
    check_corrupt([&](const fs::path& s) { fs::remove(s / "set.001" / name); }, {"set.001/" + name, "not found"});
  }
  check_corrupt([](const fs::path& s) { fs::remove(s / "type.raw"); }, {"type.raw", "not found"});
  check_corrupt([](const fs::path& s) { fs::remove(s / "type_map.raw"); }, {"type_map.raw", "not found"});
  check_corrupt(
      [](const fs::path& s) {
        fs::remove_all(s / "set.000");
        fs::remove_all(s / "set.001");
      },
      {"no set.* directories"});
  expect_error("/nonexistent/qnn/system", {"/nonexistent/qnn/system", "not a directory"});
}

TEST(DataErrors, WrongShapes) {
  // coord not (nframes, 3N): one atom short.
  check_corrupt([](const fs::path& s) { xt::dump_npy((s / "set.000/coord.npy").string(), xt::xarray<double>(xt::zeros<double>({3, 12}))); },
                {"set.000/coord.npy", "(3, 12)", "natoms = 5"});
  // coord with a 1-D shape.
  check_corrupt([](const fs::path& s) { xt::dump_npy((s / "set.000/coord.npy").string(), xt::xarray<double>(xt::zeros<double>({45}))); },
                {"set.000/coord.npy", "(45,)"});
  // box not (nframes, 9).
  check_corrupt([](const fs::path& s) { xt::dump_npy((s / "set.000/box.npy").string(), xt::xarray<double>(xt::ones<double>({3, 6}))); },
                {"set.000/box.npy", "(3, 6)", "(nframes, 9)"});
  // energy with a different frame count.
  check_corrupt([](const fs::path& s) { xt::dump_npy((s / "set.001/energy.npy").string(), xt::xarray<double>(xt::zeros<double>({3}))); },
                {"set.001/energy.npy", "(3,)", "nframes = 2"});
  // force with a different frame count.
  check_corrupt([](const fs::path& s) { xt::dump_npy((s / "set.001/force.npy").string(), xt::xarray<double>(xt::zeros<double>({1, 15}))); },
                {"set.001/force.npy", "(1, 15)"});
  // an empty set.
  check_corrupt(
      [](const fs::path& s) {
        for (const char* n : {"coord.npy", "force.npy"}) xt::dump_npy((s / "set.001" / n).string(), xt::xarray<double>(xt::zeros<double>({0, 15})));
        for (const char* n : {"energy.npy"}) xt::dump_npy((s / "set.001" / n).string(), xt::xarray<double>(xt::zeros<double>({0})));
        xt::dump_npy((s / "set.001/box.npy").string(), xt::xarray<double>(xt::zeros<double>({0, 9})));
      },
      {"set.001/coord.npy", "empty set"});
  // a degenerate cell.
  check_corrupt([](const fs::path& s) { xt::dump_npy((s / "set.000/box.npy").string(), xt::xarray<double>(xt::zeros<double>({3, 9}))); },
                {"set.000/box.npy", "degenerate cell"});
}

TEST(DataErrors, NonFiniteValues) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  Synthetic syn;
  check_corrupt(
      [&](const fs::path& s) {
        xt::xarray<double> c = syn.coord[0];
        c(1, 4) = nan;
        xt::dump_npy((s / "set.000/coord.npy").string(), c);
      },
      {"set.000/coord.npy", "NaN or Inf", "flat index 19"});
  check_corrupt(
      [&](const fs::path& s) {
        xt::xarray<float> f = xt::cast<float>(syn.force[1]);
        f(0, 0) = static_cast<float>(inf);
        xt::dump_npy((s / "set.001/force.npy").string(), f);
      },
      {"set.001/force.npy", "NaN or Inf"});
  check_corrupt(
      [&](const fs::path& s) {
        xt::xarray<double> e = syn.energy[1];
        e(1) = nan;
        xt::dump_npy((s / "set.001/energy.npy").string(), e);
      },
      {"set.001/energy.npy", "NaN or Inf"});
}

TEST(DataErrors, UnknownTypes) {
  // A type index beyond type_map.raw.
  check_corrupt([](const fs::path& s) { write_text(s / "type.raw", "0\n1\n2\n0\n1\n"); }, {"type.raw", "type index 2", "2 types"});
  // Not an integer.
  check_corrupt([](const fs::path& s) { write_text(s / "type.raw", "0\n1\nH\n0\n1\n"); }, {"type.raw", "'H' is not an integer"});
  // An element the model does not have.
  check_corrupt([](const fs::path&) {}, {"type.raw", "element 'H'", "not a species of the model [O, C]"}, {"O", "C"});
  // A type map listing an element twice.
  check_corrupt([](const fs::path& s) { write_text(s / "type_map.raw", "O\nO\n"); }, {"type_map.raw", "listed twice"});
  // Atom count disagrees with coord.npy.
  check_corrupt([](const fs::path& s) { write_text(s / "type.raw", "0\n1\n1\n0\n"); }, {"set.000/coord.npy", "natoms = 4"});
}

TEST(DataErrors, BadNpyFiles) {
  // Truncated: the last 40 bytes of data are missing.
  check_corrupt(
      [](const fs::path& s) {
        fs::path p = s / "set.000/force.npy";
        fs::resize_file(p, fs::file_size(p) - 40);
      },
      {"set.000/force.npy", "truncated"});
  // Not an npy file at all.
  check_corrupt([](const fs::path& s) { write_text(s / "set.000/box.npy", "this is not numpy"); }, {"set.000/box.npy", "not a readable npy file"});
  // An integer dtype.
  check_corrupt(
      [](const fs::path& s) { xt::dump_npy((s / "set.000/coord.npy").string(), xt::xarray<int>(xt::zeros<int>({3, 15}))); },
      {"set.000/coord.npy", "unsupported npy dtype"});
}

}  // namespace
