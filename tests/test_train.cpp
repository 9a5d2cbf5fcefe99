// The trainer (src/torch/trainer.hpp): a tiny run on a few water frames reduces the loss and
// the errors, is reproducible for a fixed seed, resumes exactly from a checkpoint, and writes
// a .qnn whose Kokkos-engine predictions match the training module; config validation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "qnn/data/data.hpp"
#include "qnn/engine/exact_engine.hpp"
#include "qnn/error.hpp"
#include "test_util.hpp"
#include "water_subset.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"
#include "torch/se2a_module.hpp"
#include "torch/trainer.hpp"

namespace fs = std::filesystem;
namespace lt = qnn::libtorch;
using nlohmann::json;

namespace {

struct TempDir : qnn::test::TempDir {
  TempDir() : qnn::test::TempDir("train") {}
};

using qnn::test::water_dir;

using qnn::test::write_water_subset;

// Shared data: 6 training and 2 validation frames.
class TrainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new TempDir();
    write_water_subset(data_->path() / "train", 0, 6);
    write_water_subset(data_->path() / "val", 40, 2);
  }
  static void TearDownTestSuite() {
    delete data_;
    data_ = nullptr;
  }

  // A small, fast config: rcut 4 Å, embedding 1->8->16, fitting 128->32->32->1, double.
  static json tiny_config(const fs::path& out) {
    return json{
        {"model",
         {{"rcut", 4.0}, {"rcut_smth", 0.5}, {"sel", {20, 40}}, {"embed_widths", {8, 16}}, {"axis_neuron", 8},
          {"fit_widths", {32, 32}}, {"precision", "double"}}},
        {"data", {{"systems", {(data_->path() / "train").string()}}, {"validation_systems", {(data_->path() / "val").string()}}}},
        {"learning_rate", {{"start_lr", 0.01}, {"stop_lr", 0.002}, {"decay_steps", 10}}},
        // Constant prefactors, so the loss values of different steps are comparable.
        {"loss", {{"start_pref_e", 0.02}, {"limit_pref_e", 0.02}, {"start_pref_f", 100.0}, {"limit_pref_f", 100.0}}},
        {"training", {{"steps", 40}, {"batch_size", 2}, {"seed", 5}, {"threads", 1}, {"disp_freq", 10}, {"checkpoint_freq", 20}}},
        {"output", {{"dir", out.string()}}}};
  }

  static lt::TrainResult run(const json& j, std::ostringstream& log, bool resume = false, int stop_at = -1,
                             bool plot = false) {
    lt::TrainConfig cfg = lt::TrainConfig::from_json(j, "", "test config");
    lt::TrainOptions opt;
    opt.log = &log;
    opt.progress = false;
    opt.plot = plot;
    opt.resume = resume;
    opt.stop_at = stop_at;
    return lt::train(cfg, opt);
  }

  static TempDir* data_;
};
TempDir* TrainTest::data_ = nullptr;

// Equal values, NaN equal to NaN (the loss column before the first update).
bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

// All weights of a model, flattened.
std::vector<double> flat_weights(const qnn::Model& m) {
  std::vector<double> out;
  for (const auto* nets : {&m.embed, &m.fit}) {
    for (const qnn::Net& net : *nets) {
      for (const qnn::DenseLayer& l : net.layers) {
        out.insert(out.end(), l.weight.begin(), l.weight.end());
        out.insert(out.end(), l.bias.begin(), l.bias.end());
        out.insert(out.end(), l.dt.begin(), l.dt.end());
      }
    }
  }
  return out;
}

bool have_matplotlib() { return std::system("/usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1") == 0; }

// ---------------------------------------------------------------------------- training

TEST_F(TrainTest, LossAndErrorsDecrease) {
  TempDir out;
  std::ostringstream log;
  json j = tiny_config(out.path());
  j["training"]["steps"] = 60;
  lt::TrainResult r = run(j, log, false, -1, true);
  ASSERT_EQ(r.curve.size(), 7u) << log.str();  // steps 0, 10, ..., 60
  const lt::CurvePoint& first = r.curve.front();
  const lt::CurvePoint& last = r.curve.back();
  EXPECT_EQ(first.step, 0);
  EXPECT_EQ(last.step, 60);
  // Mean training loss over steps 51..60 below that of steps 1..10 (constant prefactors), and
  // the force errors down by more than 5% on both splits.
  EXPECT_LT(last.loss, 0.9 * r.curve[1].loss) << log.str();
  EXPECT_LT(last.train_f_rmse, 0.95 * first.train_f_rmse) << log.str();
  EXPECT_LT(last.val_f_rmse, 0.95 * first.val_f_rmse) << log.str();
  // Outputs: model, checkpoint, CSV with a header and one row per curve point, plot.
  EXPECT_TRUE(fs::exists(out.path() / "model.qnn"));
  EXPECT_TRUE(fs::exists(out.path() / "checkpoint.pt"));
  EXPECT_TRUE(fs::exists(out.path() / "config.full.json"));
  std::ifstream csv(out.path() / "lcurve.csv");
  std::string line;
  int lines = 0;
  while (std::getline(csv, line)) ++lines;
  EXPECT_EQ(lines, 8);
  if (have_matplotlib()) {
    EXPECT_TRUE(fs::exists(out.path() / "lcurve.png")) << log.str();
  }
  // The log carries the full config with defaults.
  EXPECT_NE(log.str().find("\"train_eval_frames\": 32"), std::string::npos);
}

TEST_F(TrainTest, SameSeedSameResultOtherSeedDiffers) {
  TempDir out1, out2, out3;
  std::ostringstream log1, log2, log3;
  json j = tiny_config(out1.path());
  j["training"]["steps"] = 15;
  lt::TrainResult a = run(j, log1);
  j["output"]["dir"] = out2.path().string();
  lt::TrainResult b = run(j, log2);
  EXPECT_EQ(flat_weights(a.model), flat_weights(b.model));
  ASSERT_EQ(a.curve.size(), b.curve.size());
  for (std::size_t k = 0; k < a.curve.size(); ++k) {
    EXPECT_TRUE(same(a.curve[k].loss, b.curve[k].loss)) << k;
    EXPECT_EQ(a.curve[k].val_f_rmse, b.curve[k].val_f_rmse) << k;
  }
  j["output"]["dir"] = out3.path().string();
  j["training"]["seed"] = 6;
  lt::TrainResult c = run(j, log3);
  EXPECT_NE(flat_weights(a.model), flat_weights(c.model));
}

TEST_F(TrainTest, ResumeContinuesExactly) {
  TempDir straight, split;
  std::ostringstream l1, l2, l3;
  json j = tiny_config(straight.path());
  j["training"]["steps"] = 16;
  j["training"]["checkpoint_freq"] = 100;
  lt::TrainResult a = run(j, l1);
  j["output"]["dir"] = split.path().string();
  run(j, l2, false, 7);  // stops after update 7 (mid-epoch, between display rows)
  lt::TrainResult b = run(j, l3, true);
  EXPECT_NE(l3.str().find("resumed from"), std::string::npos);
  EXPECT_EQ(flat_weights(a.model), flat_weights(b.model));
  ASSERT_EQ(a.curve.size(), b.curve.size());
  for (std::size_t k = 0; k < a.curve.size(); ++k) EXPECT_EQ(a.curve[k].val_f_rmse, b.curve[k].val_f_rmse) << k;

  // A changed architecture cannot resume from that checkpoint.
  j["model"]["fit_widths"] = {8, 8};
  std::ostringstream l4;
  EXPECT_THROW(run(j, l4, true), qnn::Error);
}

TEST_F(TrainTest, SavedModelMatchesTrainingModule) {
  TempDir out;
  std::ostringstream log;
  json j = tiny_config(out.path());
  j["training"]["steps"] = 10;
  lt::TrainResult r = run(j, log);
  const qnn::Model saved = qnn::read_model((out.path() / "model.qnn").string());
  EXPECT_EQ(flat_weights(saved), flat_weights(r.model));  // f64 storage for a double run
  EXPECT_EQ(saved.mean_s, r.model.mean_s);
  EXPECT_EQ(saved.energy_bias, r.model.energy_bias);

  // Kokkos engine on the saved file vs the LibTorch module of the training result.
  qnn::ensure_kokkos_initialized(2);
  qnn::Engine<double> engine(saved);
  lt::Se2aModule module(r.model, torch::kFloat64);
  const qnn::System val = qnn::read_system((data_->path() / "val").string(), saved.species);
  double se = 0, sf = 0;
  std::size_t nf = 0;
  for (int f = 0; f < val.nframes; ++f) {
    const qnn::NeighborGraph g = qnn::build_periodic_graph(val.cell(f), val.positions(f), val.species, saved.rcut);
    qnn::EvalResult res;
    engine.compute(g, res);
    const std::vector<double> force = qnn::fold_ghost_forces(g, res.force);
    lt::EnergyForces ef = lt::energy_and_forces(module, lt::edges_from_graph(g), false);
    const double e_t = ef.frame_energy[0].item<double>();
    EXPECT_NEAR(res.energy, e_t, 1e-10 * std::abs(e_t));
    torch::Tensor ft = ef.forces.contiguous();
    double fmax = 0, dmax = 0;
    for (std::size_t k = 0; k < force.size(); ++k) {
      fmax = std::max(fmax, std::abs(force[k]));
      dmax = std::max(dmax, std::abs(force[k] - ft.data_ptr<double>()[k]));
      const double d = force[k] - val.force[static_cast<std::size_t>(f) * force.size() + k];
      sf += d * d;
      ++nf;
    }
    EXPECT_LE(dmax, 1e-10 * fmax);
    const double de = (res.energy - val.energy[static_cast<std::size_t>(f)]) / val.natoms;
    se += de * de;
  }
  // The trainer's own validation errors at the last step agree with the engine's. The saved
  // model carries the energy bias refit on the training frames, which the curve reports as
  // val_e_rmse_refit (the evaluated training frames are all 6 here, as in the export).
  const lt::CurvePoint& last = r.curve.back();
  EXPECT_NEAR(1000 * std::sqrt(se / val.nframes), last.val_e_rmse_refit, 1e-8 * last.val_e_rmse_refit);
  EXPECT_NEAR(1000 * std::sqrt(sf / static_cast<double>(nf)), last.val_f_rmse, 1e-8 * last.val_f_rmse);
}

// Mean energy error per atom (eV) of a model over a system, by the Kokkos engine (no LibTorch).
double engine_mean_energy_error(const qnn::Model& m, const fs::path& dir) {
  qnn::ensure_kokkos_initialized(2);
  qnn::Engine<double> engine(m);
  const qnn::System sys = qnn::read_system(dir.string(), m.species);
  double sum = 0;
  for (int f = 0; f < sys.nframes; ++f) {
    const qnn::NeighborGraph g = qnn::build_periodic_graph(sys.cell(f), sys.positions(f), sys.species, m.rcut);
    qnn::EvalResult res;
    engine.compute(g, res);
    sum += res.energy - sys.energy[static_cast<std::size_t>(f)];
  }
  return sum / (static_cast<double>(sys.nframes) * sys.natoms);
}

TEST_F(TrainTest, EnergyBiasRefitRemovesTheMeanTrainingErrorAndNothingElse) {
  TempDir with, without;
  std::ostringstream l1, l2;
  json j = tiny_config(with.path());
  j["training"]["steps"] = 10;
  const lt::TrainResult a = run(j, l1);
  j["output"]["dir"] = without.path().string();
  j["training"]["refit_energy_bias"] = false;
  const lt::TrainResult b = run(j, l2);

  // The optimisation is the same; only the written energy bias differs.
  EXPECT_EQ(flat_weights(a.model), flat_weights(b.model));
  ASSERT_EQ(a.curve.size(), b.curve.size());
  EXPECT_EQ(a.curve.back().val_e_rmse, b.curve.back().val_e_rmse);
  EXPECT_TRUE(std::isnan(b.curve.back().val_e_rmse_refit));
  EXPECT_NE(a.model.energy_bias, b.model.energy_bias);

  // Every frame has the same composition, so the least-squares refit makes the mean energy
  // error on the training frames zero; the engine (not the trainer) measures it.
  const double mean_a = engine_mean_energy_error(qnn::read_model((with.path() / "model.qnn").string()), data_->path() / "train");
  const double mean_b = engine_mean_energy_error(qnn::read_model((without.path() / "model.qnn").string()), data_->path() / "train");
  EXPECT_LT(std::abs(mean_a), 1e-9) << "eV/atom";
  EXPECT_GT(std::abs(mean_b), 1e-5) << "eV/atom: the negative control (no refit) should carry an offset";
  // The shift the refit subtracted is that offset: per atom, bias_b − bias_a averaged over the
  // composition equals mean_b.
  const qnn::System train = qnn::read_system((data_->path() / "train").string(), a.model.species);
  double per_atom_shift = 0;
  for (std::size_t i = 0; i < train.species.size(); ++i) {
    const auto s = static_cast<std::size_t>(train.species[i]);
    per_atom_shift += b.model.energy_bias[s] - a.model.energy_bias[s];
  }
  per_atom_shift /= static_cast<double>(train.species.size());
  EXPECT_NEAR(per_atom_shift, mean_b, 1e-9);

  // The model records what was done; the log says it.
  const qnn::Model saved = qnn::read_model((with.path() / "model.qnn").string());
  ASSERT_TRUE(saved.provenance.contains("energy_bias_refit"));
  EXPECT_EQ(saved.provenance["energy_bias_refit"]["frames"].get<int>(), 6);
  EXPECT_FALSE(qnn::read_model((without.path() / "model.qnn").string()).provenance.contains("energy_bias_refit"));
  EXPECT_NE(l1.str().find("energy bias refit on 6 training frames"), std::string::npos);
}

// A diverged run ends in a clear error, writes no model and keeps its checkpoint.
TEST_F(TrainTest, DivergedTrainingIsReportedNotWrittenWithANaNBias) {
  TempDir out;
  std::ostringstream log;
  json j = tiny_config(out.path());
  j["learning_rate"] = {{"start_lr", 10.0}, {"stop_lr", 10.0}, {"decay_steps", 10}};
  j["training"]["steps"] = 30;
  try {
    const lt::TrainResult r = run(j, log);
    // The run must diverge, or this test checks nothing; its written file would be finite.
    for (double b : r.model.energy_bias) EXPECT_TRUE(std::isfinite(b));
    ADD_FAILURE() << "lr 10 did not make this run diverge: the test needs a stronger push";
  } catch (const qnn::Error& e) {
    // The writer's validation refuses the weights or a non-finite (refit) bias, naming the cause.
    const std::string msg = e.what();
    EXPECT_TRUE(msg.find("NaN or Inf") != std::string::npos || msg.find("overflow") != std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(out.path() / "model.qnn"));
    EXPECT_TRUE(fs::exists(out.path() / "checkpoint.pt"));  // nothing else lost
  }
}

// ---------------------------------------------------------------------------- config validation

// Expects from_json to throw qnn::Error mentioning `needle`.
void expect_config_error(const json& j, const std::string& needle) {
  try {
    lt::TrainConfig::from_json(j, "/base", "cfg.json");
    ADD_FAILURE() << "no error for " << j.dump();
  } catch (const qnn::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Issue 17: a written model records paths relative to the config and a checksum of each data
// set, not the machine's absolute paths.
TEST_F(TrainTest, ProvenanceRecordsRelativePathsAndDataChecksums) {
  json j = tiny_config(data_->path() / "out");
  j["data"]["systems"] = {"train"};
  j["data"]["validation_systems"] = {"val"};
  j["output"]["dir"] = "out";
  const lt::TrainConfig cfg = lt::TrainConfig::from_json(j, data_->path().string(), "cfg.json");
  EXPECT_EQ(cfg.systems.front(), (data_->path() / "train").lexically_normal().string());  // used absolute
  const json p = cfg.provenance_json();
  EXPECT_EQ(p["data"]["systems"], json::array({"train"}));
  EXPECT_EQ(p["data"]["validation_systems"], json::array({"val"}));
  EXPECT_EQ(p["output"]["dir"], "out");
  const std::string dump = p.dump();
  EXPECT_EQ(dump.find(data_->path().string()), std::string::npos) << dump;
  const std::string ck = p["data_checksums"]["train"].get<std::string>();
  EXPECT_EQ(ck.rfind("crc32:", 0), 0u) << ck;
  EXPECT_EQ(ck, qnn::dataset_checksum((data_->path() / "train").string()));
  EXPECT_NE(ck, p["data_checksums"]["val"].get<std::string>());
  // The checksum follows the content, not the path: a copy has it, a changed byte does not.
  TempDir copy;
  std::filesystem::copy(data_->path() / "train", copy.path() / "train", std::filesystem::copy_options::recursive);
  EXPECT_EQ(qnn::dataset_checksum((copy.path() / "train").string()), ck);
  {
    std::fstream f(copy.path() / "train" / "type.raw", std::ios::in | std::ios::out | std::ios::binary);
    char c = 0;
    f.read(&c, 1);
    f.seekp(0);
    c = static_cast<char>(c == '0' ? '1' : '0');
    f.write(&c, 1);
  }
  EXPECT_NE(qnn::dataset_checksum((copy.path() / "train").string()), ck);
  EXPECT_THROW(qnn::dataset_checksum((copy.path() / "missing").string()), qnn::Error);
}

TEST(TrainConfig, DefaultsAndPaths) {
  const json j = {{"model", {{"sel", {46, 92}}}}, {"data", {{"systems", {"data/a", "/abs/b"}}}}, {"_comment", "ignored"}};
  lt::TrainConfig c = lt::TrainConfig::from_json(j, "/base", "cfg.json");
  EXPECT_EQ(c.systems, (std::vector<std::string>{"/base/data/a", "/abs/b"}));
  EXPECT_EQ(c.output_dir, "/base");
  EXPECT_EQ(c.output_path("model.qnn"), "/base/model.qnn");
  EXPECT_EQ(c.embed_widths, (std::vector<int>{25, 50, 100}));
  EXPECT_DOUBLE_EQ(c.validation_fraction, 0.1);
  // to_json round-trips every key.
  lt::TrainConfig d = lt::TrainConfig::from_json(c.to_json(), "/elsewhere", "cfg.json");
  EXPECT_EQ(d.to_json(), c.to_json());
}

TEST(TrainConfig, RejectsBadKeysTypesAndRanges) {
  const json good = {{"model", {{"sel", {46, 92}}}}, {"data", {{"systems", {"a"}}}}};
  json j = good;
  j["model"]["rcutt"] = 6.0;
  expect_config_error(j, "unknown key 'model.rcutt'");
  j = good;
  j["trainig"] = json::object();
  expect_config_error(j, "unknown key 'trainig'");
  j = good;
  j["training"]["steps"] = "many";
  expect_config_error(j, "training.steps must be an integer");
  j = good;
  j["training"]["steps"] = 1.5;
  expect_config_error(j, "training.steps must be an integer");
  j = good;
  j["training"]["batch_size"] = 0;
  expect_config_error(j, "training.batch_size must be in [1, 4096]");
  j = good;
  j["training"]["refit_energy_bias"] = "yes";
  expect_config_error(j, "training.refit_energy_bias must be true or false");
  j = good;
  j["model"]["rcut_smth"] = 7.0;
  expect_config_error(j, "model.rcut_smth must be smaller than model.rcut");
  j = good;
  j["model"]["embed_widths"] = {25, -50};
  expect_config_error(j, "model.embed_widths entries must be integers >= 1");
  j = good;
  j["model"]["precision"] = "half";
  expect_config_error(j, "model.precision must be one of \"float\", \"double\"");
  j = good;
  j["learning_rate"]["stop_lr"] = 0.1;
  expect_config_error(j, "stop_lr must not exceed start_lr");
  j = good;
  j["model"].erase("sel");
  expect_config_error(j, "model.sel is required");
  j = good;
  j["data"]["validation_systems"] = {"v"};
  j["data"]["validation_fraction"] = 0.2;
  expect_config_error(j, "cannot be combined");
  j = good;
  j["model"]["resnet_dt"] = 1;
  expect_config_error(j, "model.resnet_dt must be true or false");
  j = good;
  j["model"]["species"] = {"O", "H", "C"};
  expect_config_error(j, "model.sel has 2 entries for 3 species");
  j = good;
  j["loss"] = {{"start_pref_e", 0}, {"limit_pref_e", 0}, {"start_pref_f", 0}, {"limit_pref_f", 0}};
  expect_config_error(j, "prefactors are all zero");
  expect_config_error(json::array(), "must be a JSON object");
}

}  // namespace
