// `qnn import` of DeePMD-kit se_e2_a models (issue 15): the imported files against the
// energies, forces and virials DeePMD-kit itself computed (tests/data/deepmd, made by
// scripts/make_deepmd_fixtures.sh; DeePMD-kit is not needed here), and every refusal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>

#include "qnn/engine/exact_engine.hpp"
#include "qnn/engine/compressed_engine.hpp"
#include "qnn/error.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/import/deepmd.hpp"
#include "qnn/format/model.hpp"
#include "test_util.hpp"

namespace qnn {
namespace {

std::string fixture(const std::string& name) { return std::string(QNN_TEST_DATA_DIR) + "/deepmd/" + name; }
std::string dp_file(bool one_side, const std::string& prec) {
  return fixture(std::string("se_e2_a-oneside_") + (one_side ? "true" : "false") + "-" + prec + ".dp");
}

struct RefFrame {
  Cell box{};
  std::vector<double> coord, force, virial, atom_energy;
  double energy = 0;
};
struct Reference {
  std::vector<int> type;
  std::vector<RefFrame> frames;
};

Reference load_reference(const std::string& dp) {
  const std::string path = dp.substr(0, dp.size() - 3) + ".json";
  std::ifstream f(path);
  if (!f) throw Error(path + ": missing fixture (scripts/make_deepmd_fixtures.sh)");
  const nlohmann::json j = nlohmann::json::parse(f);
  Reference r;
  r.type = j.at("type").get<std::vector<int>>();
  for (const auto& fr : j.at("frames")) {
    RefFrame x;
    const auto b = fr.at("box").get<std::vector<double>>();
    std::copy(b.begin(), b.end(), x.box.begin());
    x.coord = fr.at("coord").get<std::vector<double>>();
    x.force = fr.at("force").get<std::vector<double>>();
    x.virial = fr.at("virial").get<std::vector<double>>();
    x.atom_energy = fr.at("atom_energy").get<std::vector<double>>();
    x.energy = fr.at("energy").get<double>();
    r.frames.push_back(std::move(x));
  }
  return r;
}

// Largest deviations of one evaluation from DeePMD-kit's, each relative to the largest
// reference magnitude of its kind (energy: |E|; per-atom energy: max |E_i|).
struct Dev {
  double e = 0, ae = 0, f = 0, v = 0;        // relative
  double e_abs = 0, f_abs = 0, v_abs = 0;    // absolute (eV, eV/A, eV)
};

template <class Eng>
Dev compare(Eng& engine, const Model& m, const Reference& ref) {
  Dev d;
  for (const RefFrame& fr : ref.frames) {
    const NeighborGraph g = build_periodic_graph(fr.box, fr.coord, ref.type, m.rcut);
    EvalResult r;
    engine.compute(g, r);
    const std::vector<double> F = fold_ghost_forces(g, r.force);
    d.e_abs = std::max(d.e_abs, std::abs(r.energy - fr.energy));
    d.e = std::max(d.e, std::abs(r.energy - fr.energy) / std::abs(fr.energy));
    double fmax = 0, famax = 0, aemax = 0, ae = 0;
    for (std::size_t k = 0; k < F.size(); ++k) {
      fmax = std::max(fmax, std::abs(fr.force[k]));
      famax = std::max(famax, std::abs(F[k] - fr.force[k]));
    }
    for (std::size_t i = 0; i < fr.atom_energy.size(); ++i) {
      aemax = std::max(aemax, std::abs(fr.atom_energy[i]));
      ae = std::max(ae, std::abs(r.atom_energy.at(i) - fr.atom_energy[i]));
    }
    d.f_abs = std::max(d.f_abs, famax);
    d.f = std::max(d.f, famax / fmax);
    d.ae = std::max(d.ae, ae / aemax);
    // DeePMD-kit's virial is 3x3 row-major; qnn's xx yy zz xy xz yz (both −Σ x ⊗ ∂E/∂x).
    const int map[6] = {0, 4, 8, 1, 2, 5};
    double vmax = 0, vd = 0;
    for (int k = 0; k < 9; ++k) vmax = std::max(vmax, std::abs(fr.virial[static_cast<std::size_t>(k)]));
    for (int k = 0; k < 6; ++k) vd = std::max(vd, std::abs(r.virial[static_cast<std::size_t>(k)] - fr.virial[static_cast<std::size_t>(map[k])]));
    // the 3x3 reference is symmetric (what qnn's six components assume)
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < a; ++b) vd = std::max(vd, std::abs(fr.virial[static_cast<std::size_t>(3 * a + b)] - fr.virial[static_cast<std::size_t>(3 * b + a)]));
    d.v_abs = std::max(d.v_abs, vd);
    d.v = std::max(d.v, vd / vmax);
  }
  return d;
}

void print(const char* what, const std::string& file, const Dev& d) {
  std::printf("%s %s: rel E %.2e (%.2e eV), atom E %.2e, F %.2e (%.2e eV/A), virial %.2e (%.2e eV)\n", what,
              file.substr(file.rfind('/') + 1).c_str(), d.e, d.e_abs, d.ae, d.f, d.f_abs, d.v, d.v_abs);
}

// ------------------------------------------------------------------ agreement with DeePMD-kit

class Float64 : public ::testing::TestWithParam<bool> {};

TEST_P(Float64, Fp64EngineReproducesDeepmdKit) {
  const std::string path = dp_file(GetParam(), "float64");
  std::string report;
  const Model m = deepmd::import_dp(path, &report);
  EXPECT_EQ(m.type_one_side, GetParam());
  EXPECT_EQ(m.env_mat, "deepmd");
  EXPECT_EQ(m.provenance.value("storage_dtype", ""), "f64");
  const Reference ref = load_reference(path);
  Engine<double> e(m);
  const Dev d = compare(e, m, ref);
  print("fp64 engine vs DeePMD-kit float64", path, d);
  EXPECT_LE(d.e, 1e-10);
  EXPECT_LE(d.ae, 1e-10);
  EXPECT_LE(d.f, 1e-10);
  EXPECT_LE(d.v, 1e-10);
  // Through a .qnn file (f64 storage): the same numbers, bit for bit.
  test::TempPath p(".qnn");
  write_model(m, p.str());
  const Model back = read_model(p.str());
  Engine<double> e2(back);
  const Dev d2 = compare(e2, back, ref);
  EXPECT_EQ(d2.e_abs, d.e_abs);
  EXPECT_EQ(d2.f_abs, d.f_abs);
}

TEST_P(Float64, NegativeControlAnotherFrameDisagrees) {
  // The comparison can fail: the reference of frame 1 against frame 0's coordinates.
  const std::string path = dp_file(GetParam(), "float64");
  const Model m = deepmd::import_dp(path);
  Reference ref = load_reference(path);
  ref.frames[0].coord = ref.frames[1].coord;
  ref.frames.resize(1);
  Engine<double> e(m);
  const Dev d = compare(e, m, ref);
  EXPECT_GT(d.f, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(TypeOneSide, Float64, ::testing::Values(true, false));

class Float32 : public ::testing::TestWithParam<bool> {};

TEST_P(Float32, Fp32EnginesReproduceDeepmdKit) {
  const std::string path = dp_file(GetParam(), "float32");
  std::string report;
  const Model m = deepmd::import_dp(path, &report);
  EXPECT_NE(report.find("float32"), std::string::npos) << report;
  const Reference ref = load_reference(path);
  Engine<float> ef(m);
  const Dev df = compare(ef, m, ref);
  print("fp32 engine vs DeePMD-kit float32", path, df);
  EXPECT_LE(df.e, 1e-5);
  EXPECT_LE(df.f, 1e-5);
  EXPECT_LE(df.v, 1e-5);
  CompressedEngine v2(m);
  const Dev dc = compare(v2, m, ref);
  print("compressed fp32 engine vs DeePMD-kit float32", path, dc);
  EXPECT_LE(dc.e, 1e-5);
  EXPECT_LE(dc.f, 1e-5);
  EXPECT_LE(dc.v, 1e-5);
  Engine<double> ed(m);
  print("(fp64 engine on the float32 weights vs DeePMD-kit float32", path, compare(ed, m, ref));
}

INSTANTIATE_TEST_SUITE_P(TypeOneSide, Float32, ::testing::Values(true, false));

// The descriptor's resnet_dt: timesteps on the embedding layers, also the doubling one.
TEST(ImportDeepmd, DescriptorResnetDtReproducesDeepmdKit) {
  const std::string path = fixture("se_e2_a-oneside_false-float64-resnet_dt.dp");
  const Model m = deepmd::import_dp(path);
  ASSERT_EQ(m.embed[0].layers.size(), 3u);
  EXPECT_EQ(m.embed[0].layers[0].residual, Residual::None);              // 1 -> 4
  EXPECT_EQ(m.embed[0].layers[1].residual, Residual::DoublingTimestep);  // 4 -> 8
  EXPECT_EQ(m.embed[0].layers[2].residual, Residual::Timestep);          // 8 -> 8
  const Reference ref = load_reference(path);
  Engine<double> e(m);
  const Dev d = compare(e, m, ref);
  print("fp64 engine vs DeePMD-kit float64", path, d);
  EXPECT_LE(d.e, 1e-10);
  EXPECT_LE(d.f, 1e-10);
  EXPECT_LE(d.v, 1e-10);
  test::TempPath p(".qnn");  // the residual kind and dt through a file
  write_model(m, p.str());
  const Model back = read_model(p.str());
  EXPECT_EQ(back.embed[3].layers[1].residual, Residual::DoublingTimestep);
  EXPECT_EQ(back.embed[3].layers[1].dt, m.embed[3].layers[1].dt);
  CompressedEngine v2(m);
  const Dev dc = compare(v2, m, ref);
  print("compressed fp32 engine vs DeePMD-kit float64", path, dc);
  EXPECT_LE(dc.f, 1e-5);
  // negative control: the same file with the timesteps read as plain doubling differs
  Model plain = m;
  for (Net& n : plain.embed) {
    n.layers[1].residual = Residual::Doubling;
    n.layers[1].dt.clear();
  }
  Engine<double> ep(plain);
  EXPECT_GT(compare(ep, plain, ref).f, 1e-6);
}

TEST(ImportDeepmd, PrintsWhatItRead) {
  std::string report;
  const Model m = deepmd::import_dp(dp_file(false, "float64"), &report);
  std::printf("%s", report.c_str());
  for (const char* s : {"version 3.", "O (sel 24), H (sel 48)", "rcut 4 A, rcut_smth 1 A", "1 -> 4 -> 8 -> 8", "axis_neuron 4",
                        "type_one_side false (4 nets)", "32 -> 8 -> 8 -> 1", "float64"})
    EXPECT_NE(report.find(s), std::string::npos) << s << "\n" << report;
  EXPECT_EQ(m.species, (std::vector<std::string>{"O", "H"}));
  EXPECT_EQ(m.sel, (std::vector<int>{24, 48}));
  EXPECT_EQ(m.neighbor_norm, 72.0);
}

// ------------------------------------------------------------------ refusals

// Imports the float64 pair fixture with its JSON edited by `edit` (written to a temporary
// copy) and expects a qnn::Error naming the file and containing `needle`.
void expect_refused(const std::function<void(nlohmann::json&)>& edit, const std::string& needle) {
  const std::string src = dp_file(false, "float64");
  nlohmann::json j = deepmd::read_dp_json(src);
  edit(j);
  test::TempPath p(".dp");
  deepmd::rewrite_dp_json(src, p.str(), j);
  try {
    (void)deepmd::import_dp(p.str());
    ADD_FAILURE() << "imported; expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p.str()), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

nlohmann::json& descr(nlohmann::json& j) { return j["model"]["descriptor"]; }
nlohmann::json& fitting(nlohmann::json& j) { return j["model"]["fitting"]; }

TEST(ImportDeepmdRefuses, TheRewrittenCopyImportsUnchanged) {
  // the editing machinery itself does not break the file
  const std::string src = dp_file(false, "float64");
  test::TempPath p(".dp");
  deepmd::rewrite_dp_json(src, p.str(), deepmd::read_dp_json(src));
  EXPECT_NO_THROW((void)deepmd::import_dp(p.str()));
}
TEST(ImportDeepmdRefuses, OtherDescriptors) {
  expect_refused([](nlohmann::json& j) { descr(j)["type"] = "se_atten"; }, "the descriptor 'se_atten'");
  expect_refused([](nlohmann::json& j) { descr(j)["type"] = "dpa2"; }, "the descriptor 'dpa2'");
}
TEST(ImportDeepmdRefuses, OtherModelTypes) {
  expect_refused([](nlohmann::json& j) { j["model"]["type"] = "zbl"; }, "the model type 'zbl'");
  expect_refused([](nlohmann::json& j) { fitting(j)["type"] = "dipole"; }, "the fitting 'dipole'");
}
TEST(ImportDeepmdRefuses, Fparam) {
  expect_refused([](nlohmann::json& j) { fitting(j)["numb_fparam"] = 2; }, "frame parameters (fparam)");
}
TEST(ImportDeepmdRefuses, Aparam) {
  expect_refused([](nlohmann::json& j) { fitting(j)["numb_aparam"] = 1; }, "atomic parameters (aparam)");
}
TEST(ImportDeepmdRefuses, ExcludeTypes) {
  expect_refused([](nlohmann::json& j) { descr(j)["exclude_types"] = {{0, 1}}; }, "exclude_types in the descriptor");
  expect_refused([](nlohmann::json& j) { j["model"]["pair_exclude_types"] = {{0, 0}}; }, "pair_exclude_types");
  expect_refused([](nlohmann::json& j) { j["model"]["atom_exclude_types"] = {1}; }, "atom_exclude_types");
  expect_refused([](nlohmann::json& j) { fitting(j)["exclude_types"] = {1}; }, "exclude_types in the fitting");
}
TEST(ImportDeepmdRefuses, OtherActivations) {
  expect_refused([](nlohmann::json& j) { descr(j)["activation_function"] = "gelu"; }, "the activation function 'gelu'");
  expect_refused([](nlohmann::json& j) { descr(j)["embeddings"]["networks"][1]["layers"][0]["activation_function"] = "relu"; },
                 "the activation function 'relu'");
  expect_refused([](nlohmann::json& j) { fitting(j)["nets"]["networks"][0]["layers"][1]["activation_function"] = "softplus"; },
                 "the activation function 'softplus'");
}
TEST(ImportDeepmdRefuses, AtomEner) {
  expect_refused([](nlohmann::json& j) { fitting(j)["atom_ener"] = {0.0, 1.0}; }, "atom_ener");
}
TEST(ImportDeepmdRefuses, Spin) {
  expect_refused([](nlohmann::json& j) { descr(j)["spin"] = {{"use_spin", {true, false}}}; }, "spin");
}
TEST(ImportDeepmdRefuses, EnvProtection) {
  expect_refused([](nlohmann::json& j) { descr(j)["env_protection"] = 1.0; }, "env_protection");
  expect_refused([](nlohmann::json& j) { descr(j)["env_mat"]["use_exp_switch"] = true; }, "use_exp_switch");
}
TEST(ImportDeepmdRefuses, OtherPrecisions) {
  expect_refused([](nlohmann::json& j) { descr(j)["precision"] = "float16"; }, "precision 'float16'");
}
TEST(ImportDeepmdRefuses, TimestepWithoutResidual) {
  expect_refused(
      [](nlohmann::json& j) {
        auto& L = descr(j)["embeddings"]["networks"][0]["layers"][0];  // 1 -> 4: no residual
        L["use_timestep"] = true;
        L["@variables"]["idt"] = L["@variables"]["b"];
      },
      "a timestep (idt) on a layer without residual");
}
TEST(ImportDeepmdRefuses, UnknownKeys) {
  expect_refused([](nlohmann::json& j) { descr(j)["new_feature"] = 1; }, "the key 'new_feature'");
}
TEST(ImportDeepmdRefuses, DatasetShapeMismatch) {
  expect_refused([](nlohmann::json& j) { descr(j)["neuron"] = {4, 8, 16}; }, "neuron differs");
  expect_refused([](nlohmann::json& j) { descr(j)["sel"] = {20, 48}; }, "dataset '");
}
TEST(ImportDeepmdRefuses, MissingDataset) {
  expect_refused([](nlohmann::json& j) { fitting(j)["@variables"]["bias_atom_e"] = "/variable_9999"; }, "dataset '/variable_9999': missing");
  expect_refused([](nlohmann::json& j) { fitting(j)["@variables"]["bias_atom_e"] = "not/absolute"; }, "not a dataset reference");
}
TEST(ImportDeepmdRefuses, NonUniformStatistics) {
  // davg varying within a neighbour-type block: qnn has one mean per species pair.
  const std::string path = dp_file(false, "float64");
  const nlohmann::json j = deepmd::read_dp_json(path);
  const std::string davg = j["model"]["descriptor"]["@variables"]["davg"];
  for (int column : {0, 2}) {
    const deepmd::ArrayGetter base = deepmd::dp_array_getter(path);
    auto get = [&](const std::string& ref, const std::vector<long long>& expect) {
      deepmd::Array a = base(ref, expect);
      if (ref == davg) a.values[4 * 3 + static_cast<std::size_t>(column)] += 0.01;  // centre O, slot 3 (an O slot)
      return a;
    };
    try {
      (void)deepmd::model_from_json(j, get, path);
      ADD_FAILURE() << "accepted non-uniform davg";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(column == 0 ? "vary within a neighbour-type block" : "non-zero davg in the angular columns"), std::string::npos)
          << msg;
      EXPECT_NE(msg.find("centre type O, neighbour type O"), std::string::npos) << msg;
    }
  }
}

// ------------------------------------------------------------------ bad files

void expect_bad_file(const std::string& path, const std::string& needle) {
  try {
    (void)deepmd::import_dp(path);
    ADD_FAILURE() << path << " imported; expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

TEST(ImportDeepmdBadFile, Missing) { expect_bad_file("/nonexistent/model.dp", "no such file"); }
TEST(ImportDeepmdBadFile, Directory) { expect_bad_file("/tmp", "not a regular file"); }
TEST(ImportDeepmdBadFile, NotHdf5) {
  test::TempPath p(".dp");
  std::ofstream(p.str()) << "{\"model\": {}}";
  expect_bad_file(p.str(), "not an HDF5 file");
}
TEST(ImportDeepmdBadFile, TruncatedAtEveryEighth) {
  std::ifstream in(dp_file(true, "float64"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (int k = 1; k < 8; ++k) {
    test::TempPath p(".dp");
    std::ofstream(p.str(), std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() * k / 8));
    try {
      (void)deepmd::import_dp(p.str());
      ADD_FAILURE() << "a file truncated to " << k << "/8 imported";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(p.str()), std::string::npos) << e.what();
    }
  }
}
TEST(ImportDeepmdBadFile, CorruptBytesNeverCrash) {
  // flip bytes across the file: an error naming the file, or (a byte the reader never uses,
  // or a weight changed) a model that validates; never a crash.
  std::ifstream in(dp_file(false, "float32"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int refused = 0;
  for (std::size_t pos = 0; pos < bytes.size(); pos += bytes.size() / 61) {
    std::string b = bytes;
    b[pos] = static_cast<char>(b[pos] ^ 0x5a);
    test::TempPath p(".dp");
    std::ofstream(p.str(), std::ios::binary).write(b.data(), static_cast<std::streamsize>(b.size()));
    try {
      (void)deepmd::import_dp(p.str());
    } catch (const Error& e) {
      ++refused;
      EXPECT_NE(std::string(e.what()).find(p.str()), std::string::npos) << e.what();
    }
  }
  std::printf("corrupted copies refused: %d\n", refused);
}
TEST(ImportDeepmdBadFile, JsonNotJsonOrTooDeep) {
  const std::string src = dp_file(true, "float32");
  test::TempPath p(".dp");
  deepmd::rewrite_dp_json(src, p.str(), nlohmann::json("{not json"));  // a JSON string: not an object
  expect_bad_file(p.str(), "is not an object");
  nlohmann::json deep = nlohmann::json::array();
  for (int i = 0; i < 200; ++i) deep = nlohmann::json::array({deep});
  deepmd::rewrite_dp_json(src, p.str(), deep);
  expect_bad_file(p.str(), "nested deeper than");
}

}  // namespace
}  // namespace qnn
