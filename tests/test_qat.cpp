// Quantization-aware training (src/torch/qat.hpp): the fake quantizer against an independent
// round/clamp, its straight-through and LSQ gradients against their definitions, the quantized
// export read back from disk, config and starting-point validation, and QAT beating PTQ on a
// small water model quantized to 4 bits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "qnn/data/data.hpp"
#include "qnn/engine/exact_engine.hpp"
#include "qnn/error.hpp"
#include "qnn/engine/evaluator.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"
#include "qnn/quant/common.hpp"
#include "test_util.hpp"
#include "water_subset.hpp"
#include "torch/qat.hpp"
#include "torch/se2a_module.hpp"
#include "torch/trainer.hpp"

namespace fs = std::filesystem;
namespace lt = qnn::libtorch;
using nlohmann::json;

namespace {

struct TempDir : qnn::test::TempDir {
  TempDir() : qnn::test::TempDir("qat") {}
};

using qnn::test::water_dir;

using qnn::test::write_water_subset;

// Independent reference of the quantizer (docs/quantization.md Q3, as the engine computes it):
// s · round_half_away(clamp(x · (1/s), ±(2^(b−1)−1))), round_half_away(v) = trunc(v ± 0.5).
double ref_quant(double x, double s, int bits) {
  const double Q = std::pow(2.0, bits - 1) - 1;
  const double v = std::min(Q, std::max(-Q, x * (1.0 / s)));
  return s * std::trunc(v + std::copysign(0.5, v));
}

torch::Tensor dtensor(const std::vector<double>& v) { return torch::tensor(v, torch::kFloat64); }

// ---------------------------------------------------------------------------- the quantizer
TEST(FakeQuant, QuantMaxIsTheCoresQmax) {
  for (int b = 2; b <= 16; ++b) EXPECT_EQ(lt::quant_max(b), qnn::qmax_of(b)) << b;
  EXPECT_THROW(lt::quant_max(1), qnn::Error);
  EXPECT_THROW(lt::quant_max(17), qnn::Error);
}


TEST(FakeQuant, ForwardEqualsIndependentRoundClamp) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd(0.0, 1.0);
  for (int bits : {2, 4, 8, 16}) {
    const double s = 0.37 / std::pow(2.0, bits - 4);
    std::vector<double> x;
    for (int k = 0; k < 500; ++k) x.push_back(nd(rng) * s * std::pow(2.0, bits - 1) * 0.8);  // some clamp
    for (int k = -6; k <= 6; ++k) x.push_back((k + 0.5) * s);                                // exact ties
    x.push_back(0.0);
    torch::Tensor xt = dtensor(x).requires_grad_(true);
    torch::Tensor st = dtensor({s}).requires_grad_(true);
    for (bool learned : {false, true}) {
      torch::Tensor y = lt::fake_quant(xt, learned ? st : st.detach(), bits, 0.1).contiguous();
      for (std::size_t k = 0; k < x.size(); ++k) {
        ASSERT_EQ(y.data_ptr<double>()[k], ref_quant(x[k], s, bits)) << "bits " << bits << " x " << x[k];
      }
    }
  }
  // Ties round away from zero, not to even (torch::round).
  torch::Tensor y = lt::fake_quant(dtensor({0.5, 1.5, 2.5, -0.5, -2.5}), dtensor({1.0}), 8);
  EXPECT_TRUE(torch::equal(y, dtensor({1.0, 2.0, 3.0, -1.0, -3.0})));

  // Per-channel scales broadcast over the rows of a (in, out) weight matrix.
  torch::Tensor W = torch::randn({5, 3}, torch::kFloat64);
  std::vector<double> sc = {0.01, 0.2, 0.05};
  torch::Tensor Wq = lt::fake_quant(W, dtensor(sc), 4).contiguous();
  torch::Tensor Wc = W.contiguous();
  for (int i = 0; i < 5; ++i) {
    for (int o = 0; o < 3; ++o) {
      EXPECT_EQ(Wq.data_ptr<double>()[i * 3 + o], ref_quant(Wc.data_ptr<double>()[i * 3 + o], sc[o], 4));
    }
  }
  EXPECT_THROW(lt::fake_quant(W, dtensor({1.0}), 1), qnn::Error);
  EXPECT_THROW(lt::fake_quant(W, dtensor({1.0}), 17), qnn::Error);
}

TEST(FakeQuant, SteGradientIsIdentityInsideAndZeroOutside) {
  const int bits = 4;  // Q = 7
  const double s = 0.25;
  // x/s: inside the range (some at the boundary ±7) and outside.
  const std::vector<double> v = {-9.3, -7.6, -7.0, -6.6, -2.5, -0.2, 0.0, 0.4, 3.5, 6.9, 7.0, 7.2, 12.0};
  std::vector<double> x;
  for (double e : v) x.push_back(e * s);
  const std::vector<double> c = {0.3, -1.1, 2.0, 0.7, 1.3, -0.4, 0.9, 1.7, -2.2, 0.5, 0.8, 1.9, -0.6};
  for (bool clip : {true, false}) {
    for (bool learned : {false, true}) {
      torch::Tensor xt = dtensor(x).requires_grad_(true);
      torch::Tensor st = dtensor({s}).requires_grad_(learned);
      torch::Tensor loss = (lt::fake_quant(xt, st, bits, 0.3, clip) * dtensor(c)).sum();
      torch::Tensor gx = torch::autograd::grad({loss}, {xt})[0].contiguous();
      for (std::size_t k = 0; k < x.size(); ++k) {
        // Without clipping (the activations' variant, as the engine's backward) the identity.
        const double expect = std::abs(v[k]) <= 7.0 || !clip ? c[k] : 0.0;
        EXPECT_EQ(gx.data_ptr<double>()[k], expect)
            << "x/s = " << v[k] << (learned ? " (learned scale)" : "") << (clip ? "" : " (no clipping)");
      }
    }
  }
}

TEST(FakeQuant, LsqScaleGradientMatchesThePaper) {
  // LSQ (Esser et al. 2020, eq. 3): ∂x̂/∂s = −x/s + round(x/s) for −Q < x/s < Q, −Q at or below
  // −Q, +Q at or above Q; times the gradient scale g.
  const int bits = 3;  // Q = 3
  const double s = 0.8, g = 1.0 / std::sqrt(6.0 * 3.0);
  const std::vector<double> x = {-4.1, -2.35, -1.0, -0.3, 0.05, 0.9, 1.25, 2.2, 2.7, 3.9};
  const std::vector<double> c = {0.5, -1.5, 2.0, 1.0, -0.7, 0.3, 1.1, -2.4, 0.6, 1.8};
  double expect = 0;
  for (std::size_t k = 0; k < x.size(); ++k) {
    const double v = x[k] / s;
    const double d = v <= -3 ? -3.0 : v >= 3 ? 3.0 : std::round(v) - v;
    expect += c[k] * g * d;
  }
  EXPECT_NE(expect, 0.0);
  for (bool clip : {true, false}) {  // the scale's gradient is the same in both variants
    torch::Tensor xt = dtensor(x).requires_grad_(true);
    torch::Tensor st = dtensor({s}).requires_grad_(true);
    torch::Tensor loss = (lt::fake_quant(xt, st, bits, g, clip) * dtensor(c)).sum();
    const double got = torch::autograd::grad({loss}, {st})[0].item<double>();
    EXPECT_NEAR(got, expect, 1e-14 * std::max(1.0, std::abs(expect)));
  }
  // lsq_grad_scale is 1/sqrt(n·Q).
  EXPECT_DOUBLE_EQ(lt::lsq_grad_scale(6.0, 3), g);
}

TEST(FakeQuant, DerivativeWrtInputDoesNotDependOnTheScale) {
  // Forces differentiate the network once more; the STE derivative (a 0/1 mask) must send the
  // scale no gradient, so a force loss trains the scales only through the quantized values.
  torch::Tensor xt = torch::randn({40}, torch::kFloat64).mul_(2.0).requires_grad_(true);
  torch::Tensor st = dtensor({0.3}).requires_grad_(true);
  torch::Tensor c = torch::randn({40}, torch::kFloat64);
  torch::Tensor y = lt::fake_quant(xt, st, 4, 0.2);
  torch::Tensor gx = torch::autograd::grad({(y * c).sum()}, {xt}, {}, true, true)[0];  // c · mask
  EXPECT_TRUE(torch::equal(gx, c * ((xt.detach() / 0.3).abs() <= 7).to(torch::kFloat64)));
  if (gx.requires_grad()) {
    torch::Tensor gs = torch::autograd::grad({gx.sum()}, {st}, {}, true, false, true)[0];
    EXPECT_TRUE(!gs.defined() || gs.abs().max().item<double>() == 0.0);
  }
}

TEST(FakeQuant, TableTanhMatchesTheEnginesTable) {
  const std::vector<double> z = {-9.0, -8.0, -3.14159, -0.00195, 0.0, 0.001953125, 0.5, 0.75003, 2.0, 7.999, 11.0};
  torch::Tensor zt = dtensor(z).requires_grad_(true);
  torch::Tensor t = lt::table_tanh(zt);
  torch::Tensor g = torch::autograd::grad({t.sum()}, {zt})[0].contiguous();
  torch::Tensor tc = t.detach().contiguous();
  for (std::size_t k = 0; k < z.size(); ++k) {
    const double zr = std::min(2048.0, std::max(-2048.0, std::round(z[k] * 256.0))) / 256.0;
    EXPECT_EQ(tc.data_ptr<double>()[k], std::tanh(zr)) << z[k];
    EXPECT_NEAR(g.data_ptr<double>()[k], 1.0 - std::tanh(zr) * std::tanh(zr), 1e-15) << z[k];
  }
}

// ---------------------------------------------------------------------------- models

// A min/max-quantized copy of a small random model, calibrated on one water frame.
struct SmallQuantized {
  qnn::Model fp32, q;
  std::vector<lt::EdgeBatch> frames;
  explicit SmallQuantized(int wbits = 8, int abits = 8, bool per_channel = true) {
    fp32 = qnn::test::small_water_model(11);
    const qnn::System w = qnn::read_system(water_dir() + "/data_0", fp32.species);
    frames.push_back(lt::frame_edges(w.cell(0), w.positions(0), w.species, fp32.rcut));
    lt::MinMaxOptions o;
    o.weight_bits = wbits;
    o.act_bits = abits;
    o.per_channel = per_channel;
    q = lt::minmax_quantize(fp32, frames, o);
  }
};

TEST(QatModule, FakeQuantIsOffByDefaultAndBitsOfThePlanAreUsed) {
  SmallQuantized sq(8, 8);
  lt::Se2aModule plain(sq.fp32, torch::kFloat64);
  lt::Se2aModule fq(sq.fp32, torch::kFloat64);
  const auto n_plain = plain->parameters().size();
  EXPECT_FALSE(fq->fake_quant());
  fq->enable_fake_quant(sq.q);
  EXPECT_TRUE(fq->fake_quant());
  EXPECT_THROW(fq->enable_fake_quant(sq.q), qnn::Error);
  // Learned log scales are extra parameters; the network's are unchanged.
  EXPECT_EQ(fq->network_parameters().size(), n_plain);
  std::size_t nscale = 0;
  // Engine v2: embedding nets simulate their weight grids only (the table is built from the
  // weights); fitting nets weights and activations, except the output layer's input.
  for (const qnn::Net* n : {&sq.q.embed[0], &sq.q.embed[1]}) nscale += n->layers.size();
  for (const qnn::Net* n : {&sq.q.fit[0], &sq.q.fit[1]}) nscale += 2 * n->layers.size() - 1;
  EXPECT_EQ(fq->scale_parameters().size(), nscale);
  EXPECT_EQ(fq->parameters().size(), n_plain + nscale);

  // 8-bit fake quantization changes the energies a little; the plain module is untouched.
  const lt::EnergyForces a = lt::energy_and_forces(plain, sq.frames[0], false);
  const lt::EnergyForces b = lt::energy_and_forces(fq, sq.frames[0], false);
  const double ea = a.frame_energy[0].item<double>(), eb = b.frame_energy[0].item<double>();
  EXPECT_NE(ea, eb);
  const torch::Tensor sp = sq.frames[0].species;
  double bias = 0;
  for (std::int64_t i = 0; i < sp.size(0); ++i) bias += sq.fp32.energy_bias[static_cast<std::size_t>(sp[i].item<std::int64_t>())];
  EXPECT_NEAR(ea, eb, 0.05 * std::abs(ea - bias));  // within 5% of the network's share
  lt::Se2aModule again(sq.fp32, torch::kFloat64);
  EXPECT_EQ(lt::energy_and_forces(again, sq.frames[0], false).frame_energy[0].item<double>(), ea);

  // Fixed scales are buffers, not parameters.
  lt::Se2aModule fixed(sq.fp32, torch::kFloat64);
  lt::FakeQuantOptions fo;
  fo.learn_weight_scales = false;
  fo.learn_act_scales = false;
  fixed->enable_fake_quant(sq.q, fo);
  EXPECT_TRUE(fixed->scale_parameters().empty());
  EXPECT_EQ(fixed->parameters().size(), n_plain);
  EXPECT_EQ(lt::energy_and_forces(fixed, sq.frames[0], false).frame_energy[0].item<double>(), eb);
}

TEST(QatModule, ExportPutsWeightsOnTheGridAndReadsBack) {
  SmallQuantized sq(4, 6, true);
  lt::Se2aModule m(sq.fp32, torch::kFloat64);
  m->enable_fake_quant(sq.q);
  {
    // Move weights and scales away from the starting point, as training would.
    torch::NoGradGuard ng;
    for (auto& p : m->network_parameters()) p.add_(0.01 * torch::randn_like(p));
    for (auto& p : m->scale_parameters()) p.add_(0.05 * torch::randn_like(p));
  }
  qnn::Model out = lt::quantized_model(*m, sq.q);
  TempDir dir;
  const std::string path = (dir.path() / "qat.qnn").string();
  out.provenance["storage_dtype"] = "f64";
  qnn::write_model(out, path);
  const qnn::Model back = qnn::read_model(path);
  EXPECT_EQ(back.default_mode, sq.q.default_mode);
  const auto& E = m->embed_layers();
  const auto& F = m->fit_layers();
  for (int family = 0; family < 2; ++family) {
    const auto& nets = family == 0 ? back.embed : back.fit;
    const auto& plan = family == 0 ? sq.q.embed : sq.q.fit;
    const auto& tl = family == 0 ? E : F;
    for (std::size_t s = 0; s < nets.size(); ++s) {
      for (std::size_t l = 0; l < nets[s].layers.size(); ++l) {
        const qnn::DenseLayer& L = nets[s].layers[l];
        const qnn::QuantSpec& p = plan[s].layers[l].quant;
        const lt::TorchLayer& T = tl[s][l];
        // The same plan.
        EXPECT_EQ(L.quant.weight_bits, p.weight_bits);
        EXPECT_EQ(L.quant.act_bits, p.act_bits);
        EXPECT_EQ(L.quant.label(), p.label());
        EXPECT_EQ(L.quant.weight_scale.size(), p.weight_scale.size());
        // The learned scales, as float32.
        torch::Tensor ws = torch::exp(T.fq.log_weight_scale.detach()).to(torch::kFloat32).contiguous();
        for (std::size_t c = 0; c < L.quant.weight_scale.size(); ++c) {
          EXPECT_EQ(L.quant.weight_scale[c], ws.data_ptr<float>()[c]);
          EXPECT_NE(L.quant.weight_scale[c], p.weight_scale[c]);
        }
        if (T.fq.act_bits != 0) {  // simulated (fitting layers but the output one): learned
          EXPECT_EQ(L.quant.act_scale, static_cast<float>(std::exp(T.fq.log_act_scale.item<double>())));
        } else {  // not simulated by engine v2: the plan's scale is kept
          EXPECT_EQ(L.quant.act_scale, p.act_scale);
        }
        if (T.fq.out_bits != 0) {
          EXPECT_EQ(L.quant.out_scale, static_cast<float>(std::exp(T.fq.log_out_scale.item<double>())));
        } else {
          EXPECT_EQ(L.quant.out_scale, p.out_scale);
        }
        // Weights: integers within the bit range times the float scale, equal to the module's
        // fake-quantized weights, and biases equal to the module's.
        const int Q = lt::quant_max(L.quant.weight_bits);
        torch::Tensor wq = lt::fake_quant(T.weight.detach(), torch::exp(T.fq.log_weight_scale.detach()), L.quant.weight_bits)
                               .contiguous();
        torch::Tensor r = lt::quant_index(T.weight, torch::exp(T.fq.log_weight_scale.detach()), L.quant.weight_bits)
                              .contiguous();
        for (std::size_t k = 0; k < L.weight.size(); ++k) {
          const double sc = L.quant.weight_scale[k % static_cast<std::size_t>(L.out)];
          const double qv = L.weight[k] / sc;
          EXPECT_EQ(qv, r.data_ptr<double>()[k]);  // the module's grid index, exactly
          EXPECT_LE(std::abs(qv), Q);
          EXPECT_NEAR(L.weight[k], wq.data_ptr<double>()[k], 1e-6 * sc);  // scale rounded to float32
        }
        torch::Tensor b = T.bias.detach().contiguous();
        for (std::size_t k = 0; k < L.bias.size(); ++k) EXPECT_EQ(L.bias[k], b.data_ptr<double>()[k]);
      }
    }
  }
}

TEST(QatModule, StartingPointMustMatchTheFp32Model) {
  SmallQuantized sq(8, 8);
  EXPECT_NO_THROW(lt::check_plan_matches(sq.fp32, sq.q, "fp32", "ptq"));
  auto expect_error = [](const qnn::Model& a, const qnn::Model& b, const std::string& needle) {
    try {
      lt::check_plan_matches(a, b, "A.qnn", "B.qnn");
      ADD_FAILURE() << "no error, expected: " << needle;
    } catch (const qnn::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(sq.q, sq.q, "A.qnn is a quantized model");
  expect_error(sq.fp32, sq.fp32, "B.qnn has no quantized layer");
  // A plan made from another FP32 model of the same architecture.
  qnn::Model other = qnn::test::small_water_model(12);
  other.mean_s = sq.fp32.mean_s;
  other.std_s = sq.fp32.std_s;
  other.std_r = sq.fp32.std_r;
  expect_error(other, sq.q, "quantized weights are within half a quantization step");
  qnn::Model stats = sq.fp32;
  stats.std_r[0] *= 1.1;
  expect_error(stats, sq.q, "std_r");
  qnn::Model arch = qnn::Model::make_random({"O", "H"}, 4.0, 0.5, {12, 24}, {4, 8}, 4, {8, 8}, true, 3);
  expect_error(arch, sq.q, "architectures differ");
}

TEST(QatConfig, ParsingAndErrors) {
  const json good = {{"model", {{"fp32", "a.qnn"}, {"init", "b.qnn"}}}, {"data", {{"systems", {"d"}}}}};
  lt::QatConfig c = lt::QatConfig::from_json(good, "/base", "q.json");
  EXPECT_EQ(c.fp32_model, "/base/a.qnn");
  EXPECT_EQ(c.init_model, "/base/b.qnn");
  EXPECT_EQ(c.train.systems, std::vector<std::string>{"/base/d"});
  EXPECT_DOUBLE_EQ(c.train.start_lr, 1e-4);  // fine-tuning defaults
  EXPECT_EQ(c.train.steps, 5000);
  EXPECT_TRUE(c.learn_weight_scales && c.learn_act_scales);
  lt::QatConfig d = lt::QatConfig::from_json(c.to_json(), "/elsewhere", "q.json");
  EXPECT_EQ(d.to_json(), c.to_json());

  auto expect_error = [](const json& j, const std::string& needle) {
    try {
      lt::QatConfig::from_json(j, "/base", "q.json");
      ADD_FAILURE() << "no error for " << j.dump();
    } catch (const qnn::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  json j = good;
  j["model"].erase("fp32");
  expect_error(j, "model.fp32 is required");
  j = good;
  j["model"].erase("init");
  expect_error(j, "model.init is required");
  j = good;
  j["model"]["sel"] = {1, 2};
  expect_error(j, "unknown key 'model.sel'");
  j = good;
  j["quantization"]["lsq"] = true;
  expect_error(j, "unknown key 'quantization.lsq'");
  j = good;
  j["quantization"]["scale_lr_factor"] = -1;
  expect_error(j, "quantization.scale_lr_factor must be in [0, 1e6]");
  j = good;
  j["data"]["stat_frames"] = 4;
  expect_error(j, "stat_frames does not apply");
  j = good;
  j["training"]["steps"] = "x";
  expect_error(j, "training.steps must be an integer");
}

// ---------------------------------------------------------------------------- QAT vs PTQ

// Energy (meV/atom) and force (meV/Å) RMSE of a model file against DFT frames, as the file
// executes: the integer engine in mode mixed for a quantized file, the float engine for FP32.
struct Errors {
  double e = 0, f = 0;
};
Errors rmse(const qnn::Model& m, const qnn::System& sys) {
  qnn::ensure_kokkos_initialized(2);
  const bool quantized = m.default_mode != "fp32";
  std::unique_ptr<qnn::Evaluator> ev = qnn::make_evaluator(m, quantized ? qnn::Mode::Mixed : qnn::Mode::FP32);
  double se = 0, sf = 0;
  std::size_t nf = 0;
  for (int f = 0; f < sys.nframes; ++f) {
    const qnn::NeighborGraph g = qnn::build_periodic_graph(sys.cell(f), sys.positions(f), sys.species, m.rcut);
    qnn::EvalResult res;
    ev->compute(g, res);
    const std::vector<double> force = qnn::fold_ghost_forces(g, res.force);
    for (std::size_t k = 0; k < force.size(); ++k) {
      const double d = force[k] - sys.force[static_cast<std::size_t>(f) * force.size() + k];
      sf += d * d;
      ++nf;
    }
    const double de = (res.energy - sys.energy[static_cast<std::size_t>(f)]) / sys.natoms;
    se += de * de;
  }
  return {1000 * std::sqrt(se / sys.nframes), 1000 * std::sqrt(sf / static_cast<double>(nf))};
}

TEST(Qat, ImprovesOverPtqAtFourBitsAndResumes) {
  TempDir dir;
  write_water_subset(dir.path() / "train", 0, 3);
  write_water_subset(dir.path() / "val", 40, 2);
  const qnn::System train_sys = qnn::read_system((dir.path() / "train").string(), {"O", "H"});
  const qnn::System val_sys = qnn::read_system((dir.path() / "val").string(), {"O", "H"});

  // 1. A small FP32 model, trained briefly on three frames.
  std::ostringstream log;
  const json tcfg = {
      {"model",
       {{"rcut", 4.0}, {"rcut_smth", 0.5}, {"sel", {20, 40}}, {"embed_widths", {8, 16}}, {"axis_neuron", 4},
        {"fit_widths", {24, 24}}, {"precision", "double"}}},
      {"data", {{"systems", {(dir.path() / "train").string()}}, {"validation_systems", {(dir.path() / "val").string()}}}},
      {"learning_rate", {{"start_lr", 0.01}, {"stop_lr", 0.001}, {"decay_steps", 50}}},
      {"loss", {{"start_pref_e", 0.02}, {"limit_pref_e", 1.0}, {"start_pref_f", 100.0}, {"limit_pref_f", 10.0}}},
      {"training", {{"steps", 300}, {"batch_size", 1}, {"seed", 3}, {"threads", 1}, {"disp_freq", 300},
                    {"checkpoint_freq", 1000}, {"train_eval_frames", 0}}},
      {"output", {{"dir", (dir.path() / "fp32").string()}, {"model", "fp32.qnn"}}}};
  lt::TrainOptions topt;
  topt.log = &log;
  topt.progress = false;
  topt.plot = false;
  lt::train(lt::TrainConfig::from_json(tcfg, "", "fp32 config"), topt);
  const std::string fp32_path = (dir.path() / "fp32/fp32.qnn").string();
  const qnn::Model fp32 = qnn::read_model(fp32_path);

  // 2. PTQ: 4-bit weights (per channel) and activations, min/max scales on the training frames.
  std::vector<lt::EdgeBatch> calib;
  for (int f = 0; f < train_sys.nframes; ++f) {
    calib.push_back(lt::frame_edges(train_sys.cell(f), train_sys.positions(f), train_sys.species, fp32.rcut));
  }
  lt::MinMaxOptions mo;
  mo.weight_bits = 4;
  mo.act_bits = 4;
  qnn::Model ptq = lt::minmax_quantize(fp32, calib, mo);
  const std::string ptq_path = (dir.path() / "ptq.qnn").string();
  qnn::write_model(ptq, ptq_path);
  ptq = qnn::read_model(ptq_path);

  // 3. QAT from the PTQ starting point.
  const json qcfg = {
      {"model", {{"fp32", fp32_path}, {"init", ptq_path}, {"precision", "double"}}},
      {"data", {{"systems", {(dir.path() / "train").string()}}, {"validation_systems", {(dir.path() / "val").string()}}}},
      {"learning_rate", {{"start_lr", 0.003}, {"stop_lr", 0.0003}, {"decay_steps", 50}}},
      {"loss", {{"start_pref_e", 0.02}, {"limit_pref_e", 1.0}, {"start_pref_f", 100.0}, {"limit_pref_f", 10.0}}},
      {"training", {{"steps", 200}, {"seed", 4}, {"threads", 1}, {"disp_freq", 100}, {"checkpoint_freq", 1000},
                    {"train_eval_frames", 0}}},
      {"output", {{"dir", (dir.path() / "qat").string()}, {"model", "qat.qnn"}}}};
  std::ostringstream qlog;
  lt::TrainOptions qopt = topt;
  qopt.log = &qlog;
  const lt::TrainResult r = lt::qat(lt::QatConfig::from_json(qcfg, "", "qat config"), qopt);
  const qnn::Model qat = qnn::read_model((dir.path() / "qat/qat.qnn").string());
  ASSERT_EQ(r.curve.size(), 3u) << qlog.str();
  EXPECT_TRUE(fs::exists(dir.path() / "qat/lcurve.csv"));
  EXPECT_TRUE(fs::exists(dir.path() / "qat/checkpoint.pt"));
  EXPECT_EQ(qat.provenance.value("created_by", ""), "qnn qat");
  EXPECT_EQ(qat.default_mode, ptq.default_mode);

  // 4. The same evaluation of both files by the integer engine: QAT beats PTQ on the training
  // and on the held-out frames.
  const Errors fp_val = rmse(fp32, val_sys);
  const Errors ptq_train = rmse(ptq, train_sys);
  const Errors qat_train = rmse(qat, train_sys);
  const Errors ptq_val = rmse(ptq, val_sys);
  const Errors qat_val = rmse(qat, val_sys);
  std::printf("force RMSE (meV/A): fp32 val %.1f | PTQ train %.1f val %.1f | QAT train %.1f val %.1f\n", fp_val.f,
              ptq_train.f, ptq_val.f, qat_train.f, qat_val.f);
  std::printf("energy RMSE (meV/atom): fp32 val %.2f | PTQ train %.2f val %.2f | QAT train %.2f val %.2f\n", fp_val.e,
              ptq_train.e, ptq_val.e, qat_train.e, qat_val.e);
  std::printf("energy RMSE as simulated by the fake-quantized module: PTQ val %.2f, QAT val %.2f\n",
              r.curve.front().val_e_rmse, r.curve.back().val_e_rmse);
  if (std::getenv("QNN_TEST_VERBOSE") != nullptr) std::printf("%s\n%s\n", log.str().c_str(), qlog.str().c_str());
  // Engine v2's int8 keeps the embedding exact (tabulated), so PTQ's force penalty is small
  // (about 10% over FP32 here) and QAT's gain is mostly in the energy.
  EXPECT_LT(qat_train.f, ptq_train.f);
  EXPECT_LT(qat_val.f, ptq_val.f);
  EXPECT_LT(qat_train.e, 0.5 * ptq_train.e);
  EXPECT_LT(qat_val.e, 0.5 * ptq_val.e);
  // The trainer's learning curve is the fake-quantized module: its first row is the PTQ model
  // as simulated, its last the QAT model; both agree with the engine (which also quantizes the
  // gradients of its backward pass, not simulated) to 1% in the forces and 0.1% in the energy.
  EXPECT_NEAR(r.curve.front().val_f_rmse, ptq_val.f, 0.01 * ptq_val.f);
  EXPECT_NEAR(r.curve.back().val_f_rmse, qat_val.f, 0.01 * qat_val.f);
  // The energies too (the module's residuals add the float input, as the engine's do). The
  // written QAT file carries the energy bias refit on the training frames (all of them are
  // evaluated here, train_eval_frames 0), which the curve reports as val_e_rmse_refit.
  EXPECT_NEAR(r.curve.front().val_e_rmse, ptq_val.e, 1e-3 * ptq_val.e);
  EXPECT_NEAR(r.curve.back().val_e_rmse_refit, qat_val.e, 1e-3 * qat_val.e);

  // 5. Stopping after 100 updates and resuming gives the same file as the straight run
  // (weights, biases and learned scales live in the checkpoint).
  json split = qcfg;
  split["output"]["dir"] = (dir.path() / "qat2").string();
  std::ostringstream l1, l2;
  lt::TrainOptions o1 = topt, o2 = topt;
  o1.log = &l1;
  o1.stop_at = 100;
  o2.log = &l2;
  o2.resume = true;
  lt::qat(lt::QatConfig::from_json(split, "", "qat config"), o1);
  lt::qat(lt::QatConfig::from_json(split, "", "qat config"), o2);
  EXPECT_NE(l2.str().find("resumed from"), std::string::npos) << l2.str();
  const qnn::Model resumed = qnn::read_model((dir.path() / "qat2/qat.qnn").string());
  for (int family = 0; family < 2; ++family) {
    const auto& a = family == 0 ? qat.embed : qat.fit;
    const auto& b = family == 0 ? resumed.embed : resumed.fit;
    for (std::size_t n = 0; n < a.size(); ++n) {
      for (std::size_t l = 0; l < a[n].layers.size(); ++l) {
        EXPECT_EQ(a[n].layers[l].weight, b[n].layers[l].weight);
        EXPECT_EQ(a[n].layers[l].bias, b[n].layers[l].bias);
        EXPECT_EQ(a[n].layers[l].quant.weight_scale, b[n].layers[l].quant.weight_scale);
        EXPECT_EQ(a[n].layers[l].quant.act_scale, b[n].layers[l].quant.act_scale);
        EXPECT_EQ(a[n].layers[l].quant.out_scale, b[n].layers[l].quant.out_scale);
      }
    }
  }
  // A checkpoint does not resume under other quantization settings.
  split["quantization"]["learn_act_scales"] = false;
  std::ostringstream l3;
  lt::TrainOptions o3 = o2;
  o3.log = &l3;
  EXPECT_THROW(lt::qat(lt::QatConfig::from_json(split, "", "qat config"), o3), qnn::Error);
}

}  // namespace
