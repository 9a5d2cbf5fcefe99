// Post-training quantization: observers, weight quantization, plans, file round trips, and
// (through the integer engine) calibration, the sweep and the mixed-precision search.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "qnn/engine/exact_engine.hpp"
#include "qnn/error.hpp"
#include "qnn/engine/evaluator.hpp"
#include "qnn/format/model.hpp"
#include "qnn/quant/observer.hpp"
#include "qnn/quant/quantize.hpp"
#include "qnn/quant/calibration_forward.hpp"
#include "test_util.hpp"

namespace qnn {
namespace {

using test::TempPath;

// ------------------------------------------------------------------------------ observers
TEST(Observer, QmaxAndRounding) {
  EXPECT_EQ(qmax_of(2), 1);
  EXPECT_EQ(qmax_of(8), 127);
  EXPECT_EQ(qmax_of(16), 32767);
  EXPECT_THROW(qmax_of(1), Error);
  EXPECT_THROW(qmax_of(17), Error);
  // Ties round away from zero; values beyond the range clamp to ±qmax (never -qmax-1).
  EXPECT_EQ(quantize_symmetric(0.5, 1.0, 8), 1);
  EXPECT_EQ(quantize_symmetric(-0.5, 1.0, 8), -1);
  EXPECT_EQ(quantize_symmetric(2.5, 1.0, 8), 3);
  EXPECT_EQ(quantize_symmetric(-2.5, 1.0, 8), -3);
  EXPECT_EQ(quantize_symmetric(1000.0, 1.0, 8), 127);
  EXPECT_EQ(quantize_symmetric(-1000.0, 1.0, 8), -127);
  EXPECT_EQ(quantize_symmetric(5.0, 1.0, 3), 3);
  EXPECT_DOUBLE_EQ(fake_quantize(0.26, 0.1, 8), 0.30000000000000004);
  EXPECT_THROW(parse_observer("max"), Error);
  EXPECT_EQ(parse_observer("mse"), ObserverKind::MSE);
}

TEST(Observer, PercentileOfKnownSample) {
  // x_k = k for k = 0..1000 (shuffled, signs mixed): with linear interpolation between order
  // statistics the p-th percentile of |x| is p/100 * 1000.
  std::vector<double> v(1001);
  std::iota(v.begin(), v.end(), 0.0);
  std::mt19937 rng(3);
  std::shuffle(v.begin(), v.end(), rng);
  for (std::size_t k = 0; k < v.size(); k += 2) v[k] = -v[k];
  std::vector<double> a(v.size());
  std::transform(v.begin(), v.end(), a.begin(), [](double x) { return std::abs(x); });
  EXPECT_NEAR(percentile_of(a, 99.99), 999.9, 1e-9);
  EXPECT_NEAR(percentile_of(a, 50), 500.0, 1e-9);
  EXPECT_NEAR(percentile_of(a, 12.34), 123.4, 1e-9);
  EXPECT_DOUBLE_EQ(percentile_of(a, 100), 1000.0);
  EXPECT_THROW(percentile_of(a, 0), Error);
  EXPECT_THROW(percentile_of(a, 100.5), Error);

  // The streaming observer holds the whole tensor when it fits: the same numbers.
  TensorObserver obs(4096);
  obs.observe(v.data(), 400);
  obs.observe(v.data() + 400, v.size() - 400);
  EXPECT_TRUE(obs.exact());
  EXPECT_EQ(obs.count(), 1001u);
  EXPECT_DOUBLE_EQ(obs.absmax(), 1000.0);
  EXPECT_NEAR(obs.range(ObserverKind::Percentile, 8, 99.99), 999.9, 1e-9);
  EXPECT_DOUBLE_EQ(obs.range(ObserverKind::MinMax, 8, 99.99), 1000.0);
}

TEST(Observer, ReservoirSampleOfLargeTensor) {
  // 2,000,000 values uniform in [-1, 1) through a 2^16 sample: max exact, the 99th percentile
  // of |x| (0.99 for this distribution) within sampling error (sd about 4e-4).
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> chunk(10000);
  TensorObserver obs(1 << 16);
  double mx = 0;
  for (int c = 0; c < 200; ++c) {
    for (double& x : chunk) {
      x = u(rng);
      mx = std::max(mx, std::abs(x));
    }
    obs.observe(chunk.data(), chunk.size());
  }
  EXPECT_FALSE(obs.exact());
  EXPECT_EQ(obs.count(), 2000000u);
  EXPECT_EQ(obs.sample().size(), std::size_t{1} << 16);
  EXPECT_DOUBLE_EQ(obs.absmax(), mx);
  EXPECT_NEAR(obs.range(ObserverKind::Percentile, 8, 99.0), 0.99, 0.003);
  EXPECT_NEAR(obs.range(ObserverKind::Percentile, 8, 50.0), 0.50, 0.01);
  const double nan = std::nan("");
  EXPECT_THROW(obs.observe(&nan, 1), Error);
}

// Mean squared error of a b-bit symmetric quantizer clipping at c, computed here directly.
double brute_mse(const std::vector<double>& x, double c, int bits) {
  const double q = std::pow(2.0, bits - 1) - 1, s = c / q;
  double e = 0;
  for (double v : x) {
    double k = std::round(v / s);
    k = std::min(std::max(k, -q), q);
    e += (v - k * s) * (v - k * s);
  }
  return e / static_cast<double>(x.size());
}

TEST(Observer, MseOptimalRangeOfUniformTensor) {
  // x uniform on [-1, 1] (a dense even grid). Clip error (1-c)^3/3 plus rounding error
  // c^3/(12 q^2) is minimal where (1-c)^2 = c^2/(4 q^2): c* = 2q/(2q+1), the grid of 2q+1
  // equal cells covering [-1, 1].
  const int n = 50000;
  std::vector<double> x(n), a(n);
  for (int i = 0; i < n; ++i) x[i] = -1.0 + (i + 0.5) * 2.0 / n;
  std::transform(x.begin(), x.end(), a.begin(), [](double v) { return std::abs(v); });
  for (int bits : {2, 3, 4, 6, 8}) {
    const double q = std::pow(2.0, bits - 1) - 1;
    const double analytic = 2 * q / (2 * q + 1);
    const double c = mse_optimal_range(a, bits);
    EXPECT_NEAR(c, analytic, 0.0012 * analytic) << bits << " bits";
    // Brute force over a fine grid of clipping values, on the signed data.
    double best = 1e300;
    for (int k = 500; k <= 1000; ++k) best = std::min(best, brute_mse(x, k / 1000.0, bits));
    EXPECT_LE(brute_mse(x, c, bits), best * 1.002) << bits << " bits";
    EXPECT_NEAR(quantization_mse(a, c, bits), brute_mse(x, c, bits), 1e-12);
    // MSE clipping beats plain min/max for a uniform tensor (strictly, for few bits).
    if (bits <= 4) {
      EXPECT_LT(brute_mse(x, c, bits), 0.99 * brute_mse(x, 1.0, bits)) << bits << " bits";
    }
  }
  // The observer's range is the one of its (exact) sample.
  TensorObserver obs(n);
  obs.observe(x.data(), x.size());
  EXPECT_NEAR(obs.range(ObserverKind::MSE, 4, 0), 14.0 / 15.0, 0.002);
}

TEST(Observer, MseClipsTheTailsOfAGaussian) {
  // For a Gaussian tensor at 4 bits the MSE range clips well inside max |x| and beats min/max;
  // it is the brute-force optimum. The percentile range lies below the max too.
  std::mt19937_64 rng(5);
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<double> x(50000), a(50000);
  for (std::size_t k = 0; k < x.size(); ++k) a[k] = std::abs(x[k] = g(rng));
  const double mx = observe_range(ObserverKind::MinMax, a, 4, 99.99);
  EXPECT_DOUBLE_EQ(mx, *std::max_element(a.begin(), a.end()));
  const double c = observe_range(ObserverKind::MSE, a, 4, 99.99);
  EXPECT_LT(c, 0.8 * mx);
  EXPECT_LT(brute_mse(x, c, 4), 0.8 * brute_mse(x, mx, 4));
  double best = 1e300;
  for (int k = 1; k <= 1000; ++k) best = std::min(best, brute_mse(x, mx * k / 1000.0, 4));
  EXPECT_LE(brute_mse(x, c, 4), best * 1.002);
  EXPECT_LT(observe_range(ObserverKind::Percentile, a, 4, 99.9), mx);
}

// ------------------------------------------------------------------------------ weights
TEST(WeightQuant, RoundTripErrorAtMostHalfAStep) {
  std::mt19937_64 rng(9);
  std::normal_distribution<double> g(0.0, 0.3);
  const int in = 13, out = 7;
  std::vector<double> w0(in * out);
  for (double& v : w0) v = g(rng);
  for (int c = 0; c < in; ++c) w0[c * out + 3] *= 20;  // one channel much larger
  for (int bits = 2; bits <= 16; ++bits) {
    for (bool per_channel : {true, false}) {
      std::vector<double> w = w0;
      const std::vector<float> sc = weight_scales(w, in, out, bits, per_channel, ObserverKind::MinMax);
      ASSERT_EQ(sc.size(), per_channel ? std::size_t(out) : std::size_t(1));
      const std::vector<std::int32_t> q = quantize_weights(w, in, out, bits, sc);
      const int qmax = (1 << (bits - 1)) - 1;
      double worst = 0;
      for (std::size_t k = 0; k < w.size(); ++k) {
        const double s = sc[per_channel ? k % out : 0];
        EXPECT_LE(std::abs(q[k]), qmax);
        EXPECT_EQ(w[k], q[k] * s);  // exactly q * (double)(float)scale
        // The float scale may be a hair below max/qmax, which clips the max by < 1 ulp.
        EXPECT_LE(std::abs(w[k] - w0[k]), s / 2 * (1 + 1e-6)) << bits << " bits, k " << k;
        worst = std::max(worst, std::abs(w[k] - w0[k]) / s);
      }
      EXPECT_GT(worst, 0.3);  // the bound is not vacuous
    }
  }
  // Per-channel scales follow each channel's max.
  const std::vector<float> pc = weight_scales(w0, in, out, 8, true, ObserverKind::MinMax);
  for (int c = 0; c < out; ++c) {
    double mx = 0;
    for (int i = 0; i < in; ++i) mx = std::max(mx, std::abs(w0[i * out + c]));
    EXPECT_FLOAT_EQ(pc[c], static_cast<float>(mx / 127));
  }
  // A zero channel gets a positive scale and zero integers.
  std::vector<double> wz(in * out, 0.0);
  const std::vector<float> sz = weight_scales(wz, in, out, 8, true, ObserverKind::MSE);
  for (float s : sz) EXPECT_GT(s, 0.0f);
}

// ------------------------------------------------------------------------------ plans
Calibration synthetic_calibration(const Model& m) {
  // Observers fed with known data: layer i sees values up to (i + 1), net outputs up to 2.
  Calibration cal;
  const std::vector<LayerRef> layers = list_layers(m);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    cal.inputs.emplace_back(1 << 12);
    std::vector<double> x(1000);
    for (int k = 0; k < 1000; ++k) x[k] = (i + 1.0) * (k - 500) / 500.0;
    cal.inputs.back().observe(x.data(), x.size());
  }
  for (int s = 0; s < m.nspecies(); ++s) {
    cal.embed_out.emplace_back(1 << 12);
    std::vector<double> g(100);
    for (int k = 0; k < 100; ++k) g[k] = 2.0 * k / 99.0;
    cal.embed_out.back().observe(g.data(), g.size());
  }
  cal.frames = 1;
  return cal;
}

TEST(Plan, ParsesLayerNamesSpeciesNamesDefaultsAndStrings) {
  const Model m = test::small_water_model();
  const std::vector<LayerRef> layers = list_layers(m);
  ASSERT_EQ(layers.size(), 2u * m.embed_widths.size() + 2u * (m.fit_widths.size() + 1));
  EXPECT_EQ(layers.front().name, "embed.0.0");
  EXPECT_EQ(layers.back().name, "fit.1." + std::to_string(m.fit_widths.size()));
  const nlohmann::json j = {
      {"embed.H.1", {{"weight_bits", 12}, {"act_bits", 10}}},
      {"fit.0.0", "fp32"},
      {"fit.O.1", "weight-only"},
      {"fit.1.2", {{"weight_bits", 6}}},
      {"embed.0.0", "int16"},
  };
  const QuantPlan p = parse_plan(j, m, {8, 8}, "plan.json");
  auto at = [&](const std::string& name) {
    for (std::size_t i = 0; i < layers.size(); ++i)
      if (layers[i].name == name) return p.layers[i];
    ADD_FAILURE() << name;
    return LayerBits{};
  };
  EXPECT_EQ(at("embed.1.1"), (LayerBits{12, 10}));
  EXPECT_EQ(at("fit.0.0"), (LayerBits{0, 0}));
  EXPECT_EQ(at("fit.0.1"), (LayerBits{8, 0}));
  EXPECT_EQ(at("fit.1.2"), (LayerBits{6, 0}));
  EXPECT_EQ(at("embed.0.0"), (LayerBits{16, 16}));
  EXPECT_EQ(at("embed.0.1"), (LayerBits{8, 8}));  // unlisted: the defaults
  // "default" overrides the command line's defaults for unlisted layers.
  const QuantPlan p2 = parse_plan({{"default", "fp32"}, {"fit.1.0", "int8"}}, m, {8, 8}, "p");
  int quantized = 0;
  for (const LayerBits& b : p2.layers) quantized += b.weight_bits != 0;
  EXPECT_EQ(quantized, 1);
  // Round trip through plan_to_json.
  const QuantPlan p3 = parse_plan(plan_to_json(m, p), m, {0, 0}, "p3");
  for (std::size_t i = 0; i < layers.size(); ++i) EXPECT_EQ(p3.layers[i], p.layers[i]) << layers[i].name;
  EXPECT_EQ(layer_mode({8, 8}), "int8");
  EXPECT_EQ(layer_mode({8, 12}), "int16");
  EXPECT_EQ(layer_mode({16, 0}), "weight-only");
  EXPECT_EQ(layer_mode({0, 0}), "");
}

void expect_plan_error(const nlohmann::json& j, const std::string& needle) {
  const Model m = test::small_water_model();
  try {
    parse_plan(j, m, {8, 8}, "myplan.json");
    ADD_FAILURE() << "no error for " << j.dump();
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("myplan.json"), std::string::npos) << w;
    EXPECT_NE(w.find(needle), std::string::npos) << "'" << needle << "' not in: " << w;
  }
}

TEST(Plan, ErrorsNameTheFileAndTheProblem) {
  expect_plan_error(nlohmann::json::array({1, 2}), "must be a JSON object");
  expect_plan_error({{"embed.2.0", "int8"}}, "unknown layer \"embed.2.0\"");
  expect_plan_error({{"embed.Na.0", "int8"}}, "unknown layer");
  expect_plan_error({{"fit.0.9", "int8"}}, "unknown layer");
  expect_plan_error({{"conv.0.0", "int8"}}, "unknown layer");
  expect_plan_error({{"fit.0.0", "int4"}}, "unknown precision \"int4\"");
  expect_plan_error({{"fit.0.0", {{"weight_bits", 17}}}}, "outside 2..16");
  expect_plan_error({{"fit.0.0", {{"weight_bits", 8}, {"act_bits", 1}}}}, "outside 2..16");
  expect_plan_error({{"fit.0.0", {{"weight_bits", 8}, {"bits", 8}}}}, "unknown key \"bits\"");
  expect_plan_error({{"fit.0.0", {{"weight_bits", "8"}}}}, "must be an integer");
  expect_plan_error({{"fit.0.0", {{"weight_bits", 8.5}}}}, "must be an integer");
  expect_plan_error({{"fit.0.0", {{"act_bits", 8}}}}, "integer activations need integer weights");
  expect_plan_error({{"fit.0.0", 8}}, "expected a precision string");
  expect_plan_error({{"embed.0.0", "int8"}, {"embed.O.0", "fp32"}}, "given twice");
  expect_plan_error({{"default", "int3"}}, "\"default\"");

  const Model m = test::small_water_model();
  TempPath bad(".json");
  {
    std::ofstream f(bad.str());
    f << "{\"fit.0.0\": ";
  }
  try {
    read_plan(bad.str(), m, {8, 8});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_plan("/nonexistent/plan.json", m, {8, 8}), Error);
}

// ------------------------------------------------------------------------------ apply + file
TEST(ApplyPlan, ScalesModesAndExactFileRoundTrip) {
  const Model m = test::small_water_model();
  const Calibration cal = synthetic_calibration(m);
  const std::vector<LayerRef> layers = list_layers(m);
  QuantPlan plan = uniform_plan(m, {8, 8});
  plan.layers[0] = {12, 16};  // embed.0.0 at int16
  plan.layers.back() = {6, 0};  // fit.1.last weight-only
  QuantOptions opt;
  const Model q = apply_plan(m, plan, cal, opt);
  EXPECT_EQ(q.default_mode, "mixed");
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const DenseLayer& L = layer_of(q, layers[i]);
    const DenseLayer& L0 = layer_of(m, layers[i]);
    const QuantSpec& s = L.quant;
    EXPECT_EQ(s.weight_bits, plan.layers[i].weight_bits);
    EXPECT_EQ(s.act_bits, plan.layers[i].act_bits);
    EXPECT_EQ(s.label(), layer_mode(plan.layers[i]));
    ASSERT_EQ(s.weight_scale.size(), static_cast<std::size_t>(L.out));  // per channel
    if (s.act_bits) {
      // minmax: the observer saw values up to i + 1.
      EXPECT_FLOAT_EQ(s.act_scale, static_cast<float>((i + 1.0) / qmax_of(s.act_bits))) << layers[i].name;
    } else {
      EXPECT_EQ(s.act_scale, 0.0f);
    }
    const bool last_embed = layers[i].family == 0 && layers[i].layer + 1 == static_cast<int>(m.embed_widths.size());
    if (last_embed) EXPECT_FLOAT_EQ(s.out_scale, 2.0f / 127) << layers[i].name;
    else EXPECT_EQ(s.out_scale, 0.0f);
    const double step_bound = 0.5 * (1 + 1e-6);
    for (std::size_t k = 0; k < L.weight.size(); ++k) {
      const double sc = s.weight_scale[k % L.out];
      EXPECT_LE(std::abs(L.weight[k] - L0.weight[k]), step_bound * sc);
      EXPECT_EQ(L.weight[k], std::round(L.weight[k] / sc) * sc);
    }
    EXPECT_EQ(L.bias, L0.bias);
  }

  // Per-channel scales, integers and activation scales survive write_model/read_model exactly.
  TempPath f(".qnn");
  write_model(q, f.str());
  const Model r = read_model(f.str());
  EXPECT_EQ(r.default_mode, "mixed");
  EXPECT_TRUE(r.provenance.contains("quantization"));
  for (const LayerRef& ref : layers) {
    const QuantSpec& a = layer_of(q, ref).quant;
    const QuantSpec& b = layer_of(r, ref).quant;
    EXPECT_EQ(a.weight_scale, b.weight_scale) << ref.name;
    EXPECT_EQ(a.act_scale, b.act_scale) << ref.name;
    EXPECT_EQ(a.out_scale, b.out_scale) << ref.name;
    EXPECT_EQ(a.label(), b.label()) << ref.name;
    EXPECT_EQ(layer_of(q, ref).weight, layer_of(r, ref).weight) << ref.name;
  }

  // Uniform plans set the file's default mode; per-tensor gives one scale per layer.
  opt.per_channel = false;
  const Model q8 = apply_plan(m, uniform_plan(m, {8, 8}), cal, opt);
  EXPECT_EQ(q8.default_mode, "int8");
  for (const LayerRef& ref : layers) EXPECT_EQ(layer_of(q8, ref).quant.weight_scale.size(), 1u);
  TempPath f8(".qnn");
  write_model(q8, f8.str());
  const Model r8 = read_model(f8.str());
  for (const LayerRef& ref : layers) EXPECT_EQ(layer_of(r8, ref).quant.weight_scale, layer_of(q8, ref).quant.weight_scale);
  EXPECT_EQ(apply_plan(m, uniform_plan(m, {8, 0}), cal, opt).default_mode, "weight-only");
  // The embedding nets are tabulated in every mode, so a file whose embedding is float and
  // whose fitting layers are all w8a8 is an int8 file (and weight-only fitting layers behind
  // a float embedding a weight-only one).
  QuantPlan fe8 = uniform_plan(m, {8, 8}), fe_wo = uniform_plan(m, {8, 0});
  for (std::size_t i = 0; i < layers.size(); ++i)
    if (layers[i].family == 0) fe8.layers[i] = fe_wo.layers[i] = {0, 0};
  const Model qfe8 = apply_plan(m, fe8, cal, opt);
  EXPECT_EQ(qfe8.default_mode, "int8");
  EXPECT_EQ(mode_unsupported_reason(qfe8, Mode::Int8), "");
  EXPECT_EQ(apply_plan(m, fe_wo, cal, opt).default_mode, "weight-only");
  // ... but an int16 fitting layer still keeps a file out of int8.
  fe8.layers.back() = {16, 16};
  const Model qfe16 = apply_plan(m, fe8, cal, opt);
  EXPECT_EQ(qfe16.default_mode, "mixed");
  EXPECT_NE(mode_unsupported_reason(qfe16, Mode::Int8).find("16-bit"), std::string::npos)
      << mode_unsupported_reason(qfe16, Mode::Int8);
  // G enters the descriptor as int8 only behind an int8 last embedding layer.
  const Model q16 = apply_plan(m, uniform_plan(m, {16, 16}), cal, opt);
  for (const LayerRef& ref : layers) EXPECT_EQ(layer_of(q16, ref).quant.out_scale, 0.0f) << ref.name;
  EXPECT_EQ(apply_plan(m, uniform_plan(m, {16, 16}), cal, opt).default_mode, "mixed");
  // The int8 file is about a quarter of the float32 one (weights only; tiny model, so loose).
  EXPECT_LT(parameter_bytes(m, uniform_plan(m, {8, 8})), parameter_bytes(m, uniform_plan(m, {0, 0})));

  // Errors: an already quantized model, a plan of the wrong size.
  EXPECT_THROW(apply_plan(q8, uniform_plan(m, {8, 8}), cal, opt), Error);
  QuantPlan shortp;
  shortp.layers.resize(3);
  EXPECT_THROW(apply_plan(m, shortp, cal, opt), Error);
}

// ------------------------------------------------------------------------------ with the engine
// These run calibration (calibration_forward with a LayerTap) and the engines.
struct SmallSetup {
  Model m = test::small_water_model(7, 4.0);
  FrameSet val, calib;
  SmallSetup() {
    ensure_kokkos_initialized(2);
    calib = load_frames({std::string(QNN_WATER_DATA_DIR) + "/data_0"}, m, 3);
    val = load_frames({std::string(QNN_WATER_DATA_DIR) + "/data_2"}, m, 2);
  }
};

// The calibration forward (written from docs/model.md, no code shared with the engines)
// computes the network the exact fp64 engine computes: same energy on water frames, for
// both environment-matrix conventions and for pair embedding nets.
TEST(Calibrate, ForwardComputesTheEnergyOfTheExactEngine) {
  ensure_kokkos_initialized(2);
  Model deepmd = test::small_water_model(5, 4.0);
  deepmd.env_mat = "deepmd";
  for (const Model& m : {test::small_water_model(7, 4.0), deepmd, test::small_pair_model(7, 4.0, {30, 60})}) {
    const FrameSet fr = load_frames({std::string(QNN_WATER_DATA_DIR) + "/data_0"}, m, 2);
    auto ev = make_evaluator(m, Mode::FP64);
    for (const NeighborGraph& g : fr.graphs) {
      EvalResult r;
      ev->compute(g, r);
      const double e = calibration_forward(m, g, nullptr);
      EXPECT_NEAR(e, r.energy, 1e-10 * std::abs(r.energy)) << m.env_mat << (m.type_one_side ? "" : " pair nets");
    }
  }
}

TEST(Calibrate, ObservesEveryLayerInputAndEmbeddingOutput) {
  SmallSetup s;
  const Calibration cal = calibrate(s.m, s.calib);
  EXPECT_EQ(cal.frames, 3);
  const std::vector<LayerRef> layers = list_layers(s.m);
  ASSERT_EQ(cal.inputs.size(), layers.size());
  std::size_t edges = 0, atoms = 0;
  for (const NeighborGraph& g : s.calib.graphs) edges += g.nedges(), atoms += g.nlocal;
  std::size_t embed0 = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const DenseLayer& L = layer_of(s.m, layers[i]);
    EXPECT_GT(cal.inputs[i].absmax(), 0.0) << layers[i].name;
    if (layers[i].family == 0 && layers[i].layer == 0) embed0 += cal.inputs[i].count();
    if (layers[i].family == 1 && layers[i].layer == 0) {
      // The descriptor is a sum of squares on its diagonal blocks; the count is atoms x width.
      EXPECT_EQ(cal.inputs[i].count() % static_cast<std::size_t>(L.in), 0u);
    }
  }
  EXPECT_EQ(embed0, edges);  // one scalar input per edge, over both neighbour species
  std::size_t g_count = 0;
  for (const TensorObserver& o : cal.embed_out) g_count += o.count();
  EXPECT_EQ(g_count, edges * static_cast<std::size_t>(s.m.m1()));
  // An already quantized model cannot be calibrated.
  const Model q = apply_plan(s.m, uniform_plan(s.m, {8, 8}), cal, {});
  EXPECT_THROW(calibrate(q, s.calib), Error);
  (void)atoms;
}

// Pair embedding nets (type_one_side false): S*S nets named embed.<centre>.<neighbour>.<layer>,
// one embedding-output observer per net, and a plan applies to them.
TEST(Plan, PairEmbeddingNetsAreNamedByCentreAndNeighbour) {
  const Model m = test::small_pair_model(7, 4.0, {30, 60});
  const std::vector<LayerRef> layers = list_layers(m);
  ASSERT_EQ(layers.size(), 4u * m.embed_widths.size() + 2u * (m.fit_widths.size() + 1));
  EXPECT_EQ(layers.front().name, "embed.0.0.0");
  EXPECT_EQ(layers[m.embed_widths.size()].name, "embed.0.1.0");
  const QuantPlan p = parse_plan({{"embed.H.O.1", "int16"}}, m, {8, 8}, "plan.json");
  for (std::size_t i = 0; i < layers.size(); ++i)
    EXPECT_EQ(p.layers[i], layers[i].name == "embed.1.0.1" ? (LayerBits{16, 16}) : (LayerBits{8, 8})) << layers[i].name;
  EXPECT_THROW(parse_plan({{"embed.O.1", "int16"}}, m, {8, 8}, "plan.json"), Error);  // one-side name
  EXPECT_THROW(parse_plan({{"embed.O.X.1", "int16"}}, m, {8, 8}, "plan.json"), Error);
}

TEST(Calibrate, PairEmbeddingNetsObserveEachNet) {
  const Model m = test::small_pair_model(7, 4.0, {30, 60});
  ensure_kokkos_initialized(2);
  const FrameSet calib = load_frames({std::string(QNN_WATER_DATA_DIR) + "/data_0"}, m, 2);
  const Calibration cal = calibrate(m, calib);
  ASSERT_EQ(cal.embed_out.size(), 4u);
  for (const TensorObserver& o : cal.embed_out) EXPECT_GT(o.count(), 0u);
  const Model q = apply_plan(m, uniform_plan(m, {8, 8}), cal, {});
  EXPECT_FALSE(q.type_one_side);
  for (const Net& n : q.embed) EXPECT_GT(n.layers.back().quant.out_scale, 0.0f);
  TempPath f(".qnn");
  write_model(q, f.str());
  EXPECT_EQ(read_model(f.str()).embed.size(), 4u);
}

TEST(Sweep, EightBitsBeatFourBitsAndSixteenAreNearExact) {
  SmallSetup s;
  const Calibration cal = calibrate(s.m, s.calib);
  const Prediction ref = predict_reference(s.m, s.val);
  const std::vector<SweepRow> rows = run_sweep(s.m, cal, {}, s.val, ref, {4, 8, 16});
  ASSERT_EQ(rows.size(), 1u + 3 * 3);
  auto get = [&](const std::string& v, int b) {
    for (const SweepRow& r : rows)
      if (r.variant == v && r.bits == b) return r;
    ADD_FAILURE() << v << b;
    return SweepRow{};
  };
  // Force scale of this model on these frames, to put the deviations in proportion.
  double f2 = 0;
  std::size_t n = 0;
  for (const auto& f : ref.force)
    for (double v : f) f2 += v * v, ++n;
  const double frms = 1000 * std::sqrt(f2 / n);
  for (const char* v : {"weights", "activations", "both"}) {
    EXPECT_LT(get(v, 8).err.f_ref, get(v, 4).err.f_ref) << v;
    EXPECT_LT(get(v, 8).err.e_ref, get(v, 4).err.e_ref) << v;
    EXPECT_LT(get(v, 16).err.f_ref, get(v, 8).err.f_ref) << v;
    EXPECT_LT(get(v, 8).err.f_ref, 0.1 * frms) << v;
  }
  EXPECT_EQ(get("both", 8).mode, "int8");
  EXPECT_EQ(get("both", 16).mode, "mixed");
  EXPECT_EQ(get("weights", 8).mode, "weight-only");
  EXPECT_EQ(rows[0].variant, "fp32");
  EXPECT_LT(rows[0].err.f_ref, 1e-3 * frms);  // float engine vs double reference
  TempPath csv(".csv");
  write_sweep_csv(rows, csv.str());
  std::ifstream in(csv.str());
  std::string header;
  std::getline(in, header);
  EXPECT_EQ(header.rfind("variant,bits,mode,", 0), 0u);
  int lines = 0;
  for (std::string l; std::getline(in, l);) ++lines;
  EXPECT_EQ(lines, 10);
}

TEST(Int8Model, RunsInTheIntegerEngineCloseToFp32) {
  SmallSetup s;
  const Calibration cal = calibrate(s.m, s.calib);
  const Model q = apply_plan(s.m, uniform_plan(s.m, {8, 8}), cal, {});
  TempPath f(".qnn");
  write_model(q, f.str());
  const Model r = read_model(f.str());
  std::string engine;
  const Prediction p = predict_default(r, s.val, &engine);
  EXPECT_EQ(engine.rfind("int8", 0), 0u) << engine;
  const Prediction ref = predict_reference(s.m, s.val);
  const Errors e = compare(p, ref, s.val);
  const Errors e4 = compare(predict_default(apply_plan(s.m, uniform_plan(s.m, {4, 4}), cal, {}), s.val), ref, s.val);
  EXPECT_LT(e.f_ref, e4.f_ref);
  EXPECT_GT(e.f_ref, 0.0);
  // The same file runs in fp32 mode too (on the dequantized weights).
  auto ev = make_evaluator(r, Mode::FP32);
  const Errors ef = compare(predict(*ev, s.val), ref, s.val);
  EXPECT_LT(ef.f_ref, e4.f_ref);
}

// The energy offset correction moves the mean per-atom energy of the quantized model onto
// the FP32 one on the frames it is given, and changes no force.
TEST(Int8Model, EnergyOffsetCorrectionCentresTheEnergyAndKeepsForces) {
  SmallSetup s;
  const Calibration cal = calibrate(s.m, s.calib);
  Model q = apply_plan(s.m, uniform_plan(s.m, {6, 6}), cal, {});
  const Prediction before = predict_default(q, s.calib);
  const Prediction ref = predict_reference(s.m, s.calib);
  double mean_before = 0;
  for (std::size_t k = 0; k < s.calib.size(); ++k)
    mean_before += (ref.energy[k] - before.energy[k]) / s.calib.natoms[k];
  mean_before /= static_cast<double>(s.calib.size());
  const double shift = correct_energy_offset(q, s.m, s.calib);
  EXPECT_NEAR(shift, mean_before, 1e-12);
  EXPECT_GT(std::abs(shift), 1e-6);  // 6-bit rounding does shift this model's energy
  EXPECT_DOUBLE_EQ(q.provenance["quantization"]["energy_offset_eV_per_atom"].get<double>(), shift);
  const Prediction after = predict_default(q, s.calib);
  double mean_after = 0;
  for (std::size_t k = 0; k < s.calib.size(); ++k) {
    mean_after += (ref.energy[k] - after.energy[k]) / s.calib.natoms[k];
    EXPECT_EQ(after.force[k], before.force[k]) << "frame " << k;
  }
  // Not exactly 0: the engine sums energies on a fixed-point grid (docs/model.md).
  EXPECT_NEAR(mean_after / static_cast<double>(s.calib.size()), 0.0, 1e-7);
  EXPECT_LT(std::abs(mean_after / static_cast<double>(s.calib.size())), 1e-3 * std::abs(shift));
  FrameSet none;
  EXPECT_THROW(correct_energy_offset(q, s.m, none), Error);
}

TEST(Search, ChoosesAPlanWithinBudgetAndMarksTheParetoFront) {
  SmallSetup s;
  const Calibration cal = calibrate(s.m, s.calib);
  const Prediction ref = predict_reference(s.m, s.val);
  // The "DFT" labels of these frames are the FP32 model's own predictions plus noise, so the
  // ratio budget has a meaningful scale.
  FrameSet val = s.val;
  std::mt19937_64 rng(1);
  std::normal_distribution<double> g(0.0, 1.0);
  double f2 = 0;
  std::size_t n = 0;
  for (std::size_t k = 0; k < val.size(); ++k) {
    val.energy[k] = ref.energy[k] + 0.01 * val.natoms[k] * g(rng);
    for (std::size_t c = 0; c < val.force[k].size(); ++c) {
      f2 += ref.force[k][c] * ref.force[k][c], ++n;
    }
  }
  const double frms = std::sqrt(f2 / n);
  for (std::size_t k = 0; k < val.size(); ++k)
    for (std::size_t c = 0; c < val.force[k].size(); ++c) val.force[k][c] = ref.force[k][c] + 0.2 * frms * g(rng);
  SearchOptions so;
  so.bits = {8, 4};
  so.max_force_ratio = 1.01;
  const SearchResult r = search_mixed(s.m, cal, {}, val, ref, so);
  ASSERT_EQ(r.sensitivity.size(), list_layers(s.m).size());
  ASSERT_EQ(r.levels, (std::vector<int>{0, 8, 4}));
  ASSERT_FALSE(r.tried.empty());
  ASSERT_GE(r.chosen, 0);
  const PlanResult& c = r.tried[static_cast<std::size_t>(r.chosen)];
  EXPECT_TRUE(c.within_budget);
  EXPECT_LE(c.err.f_dft, 1.01 * r.fp32.f_dft);
  for (const PlanResult& t : r.tried) {
    if (t.within_budget) {
      EXPECT_GE(t.cost, c.cost) << t.label;
    }
    // Every plan off the front is dominated by one on it.
    if (!t.pareto) {
      bool dominated = false;
      for (const PlanResult& o : r.tried)
        dominated = dominated || (o.pareto && o.cost <= t.cost && o.err.f_ref <= t.err.f_ref);
      EXPECT_TRUE(dominated) << t.label;
    }
  }
  // 4-bit layers are more sensitive than 8-bit ones, up to the fp32 engine's own deviation
  // from the reference (5%): a layer whose quantization is exact at both widths (the
  // first embedding layer has one weight per output channel, and engine v2 tabulates the
  // embedding, so its activation bits have no effect) differs only by that noise.
  for (std::size_t i = 0; i < r.sensitivity.size(); ++i)
    EXPECT_LE(r.sensitivity[i][1].f_ref, 1.05 * r.sensitivity[i][2].f_ref) << r.layers[i].name;
  const std::string md = pareto_markdown(s.m, r);
  EXPECT_NE(md.find("(chosen)"), std::string::npos);
}

// ------------------------------------------------------------------------------ shared helpers
TEST(QuantCommon, RangeScale) {
  EXPECT_FLOAT_EQ(range_scale(127.0, 8), 1.0f);
  EXPECT_FLOAT_EQ(range_scale(2.0, 16), static_cast<float>(2.0 / 32767));
  // Nothing seen (range 0), or a scale no float holds: scale 1.
  EXPECT_EQ(range_scale(0.0, 8), 1.0f);
  EXPECT_EQ(range_scale(1e-300, 8), 1.0f);
  EXPECT_EQ(range_scale(std::numeric_limits<double>::infinity(), 8), 1.0f);
  EXPECT_THROW(range_scale(1.0, 1), Error);
}

TEST(QuantCommon, MinMaxQuantizerMatchesTheObserverPath) {
  std::mt19937 rng(11);
  std::normal_distribution<double> g(0.0, 0.3);
  const int in = 7, out = 5;
  std::vector<double> w(static_cast<std::size_t>(in * out));
  for (double& x : w) x = g(rng);
  for (bool per_channel : {true, false}) {
    for (int bits : {4, 8, 16}) {
      std::vector<double> a = w, b = w;
      const std::vector<float> sa = minmax_quantize_weights(a, in, out, bits, per_channel);
      const std::vector<float> sb = weight_scales(b, in, out, bits, per_channel, ObserverKind::MinMax);
      quantize_weights(b, in, out, bits, sb);
      EXPECT_EQ(sa, sb);
      EXPECT_EQ(a, b);
      ASSERT_EQ(sa.size(), per_channel ? static_cast<std::size_t>(out) : 1u);
      // scale = max |w| / qmax of the channel; the largest weight lands on the grid's end.
      for (std::size_t c = 0; c < sa.size(); ++c) {
        double mx = 0;
        for (std::size_t k = 0; k < w.size(); ++k)
          if (!per_channel || k % static_cast<std::size_t>(out) == c) mx = std::max(mx, std::abs(w[k]));
        EXPECT_FLOAT_EQ(sa[c], static_cast<float>(mx / qmax_of(bits)));
      }
    }
  }
}

TEST(QuantCommon, IsQuantizedNamesTheFirstQuantizedLayer) {
  Model m = test::small_water_model();
  EXPECT_FALSE(is_quantized(m));
  EXPECT_FALSE(first_quantized_layer(m).has_value());
  const std::vector<LayerRef> layers = list_layers(m);
  const LayerRef& r = layers.back();
  layer_of(m, r).quant.weight_bits = 8;
  EXPECT_TRUE(is_quantized(m));
  ASSERT_TRUE(first_quantized_layer(m).has_value());
  EXPECT_EQ(first_quantized_layer(m)->name, r.name);
}

TEST(QuantCommon, RmsErrorSumsOneAtATimeOrInParts) {
  RmsError a, b;
  EXPECT_TRUE(std::isnan(a.rms()));
  for (double d : {0.001, -0.002, 0.003, 0.0}) a.add(d);
  b.add(0.001);
  b.add_squares(0.002 * 0.002 + 0.003 * 0.003 + 0.0, 3);
  EXPECT_EQ(a.count(), 4);
  EXPECT_EQ(b.count(), 4);
  EXPECT_DOUBLE_EQ(a.rms(1000), 1000 * std::sqrt((1e-6 + 4e-6 + 9e-6) / 4));
  EXPECT_DOUBLE_EQ(b.rms(1000), a.rms(1000));
}

TEST(Precision, SetLayerBitsGivesTheDerivedModeName) {
  QuantSpec q;
  set_layer_bits(q, {8, 8});
  EXPECT_EQ(q.label(), "int8");
  EXPECT_EQ(layer_bits(q), (LayerBits{8, 8}));
  set_layer_bits(q, {16, 0});
  EXPECT_EQ(q.label(), "weight-only");
  set_layer_bits(q, {0, 0});
  EXPECT_EQ(q.label(), "");
  EXPECT_FALSE(q.quantized());
  EXPECT_THROW(set_layer_bits(q, {0, 8}), Error);
}

}  // namespace
}  // namespace qnn
