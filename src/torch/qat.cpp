// Quantization-aware training: fake quantization, the quantized export, the min/max PTQ
// helper and `qnn qat` on top of the shared training loop (see qat.hpp).
#include "torch/qat.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "qnn/error.hpp"
#include "qnn/quant/common.hpp"
#include "qnn/quant/precision.hpp"
#include "torch/config_section.hpp"
#include "torch/train_loop.hpp"

#ifndef QNN_VERSION
#define QNN_VERSION "unknown"
#endif

namespace fs = std::filesystem;
using nlohmann::json;

namespace qnn::libtorch {

// ------------------------------------------------------------------------------ fake quantization

int quant_max(int bits) { return qmax_of(bits); }

// trunc(v ± 0.5) in the tensor's arithmetic, as the integer engine rounds (docs/quantization.md Q3).
torch::Tensor round_half_away(const torch::Tensor& v) {
  return torch::trunc(v + torch::copysign(torch::full({}, 0.5, v.options()), v));
}

torch::Tensor quant_index(const torch::Tensor& x, const torch::Tensor& scale, int bits) {
  const double Q = quant_max(bits);
  return torch::clamp(round_half_away(x.detach() * torch::reciprocal(scale.detach())), -Q, Q);
}

// The value is computed on detached tensors; the gradients come from terms that are exactly
// zero in value: (x − x)·mask (or without the mask) for the STE, and (s_g − s_g)·d for LSQ with
// d = r − x/s inside and r = ±Q where clamped, s_g having the value of s and the gradient g.
torch::Tensor fake_quant(const torch::Tensor& x, const torch::Tensor& scale, int bits, double grad_scale,
                         bool clip_gradient) {
  const double Q = quant_max(bits);
  torch::Tensor sd = scale.detach();
  torch::Tensor v = x.detach() * torch::reciprocal(sd);      // x / s
  torch::Tensor r = torch::clamp(round_half_away(v), -Q, Q);  // grid index
  torch::Tensor out = r * sd;
  if (!x.requires_grad() && !scale.requires_grad()) return out;
  torch::Tensor inside = v.abs() <= Q;
  if (x.requires_grad()) {
    out = clip_gradient ? out + (x - x.detach()) * inside.to(x.scalar_type()) : out + (x - x.detach());
  }
  if (scale.requires_grad()) {
    torch::Tensor sg = grad_scale == 1.0 ? scale : sd * (1.0 - grad_scale) + scale * grad_scale;
    out = out + (sg - sg.detach()) * torch::where(inside, r - v, r);
  }
  return out;
}

double lsq_grad_scale(double n, int bits) { return 1.0 / std::sqrt(n * quant_max(bits)); }

torch::Tensor table_tanh(const torch::Tensor& z) {
  torch::Tensor zr = torch::clamp(round_half_away(z.detach() * kTanhSteps), -kTanhHalf, kTanhHalf) / kTanhSteps;
  return torch::tanh(zr + (z - z.detach()));
}

// ------------------------------------------------------------------------------ models

namespace {

// Values of a tensor as doubles (row-major).
std::vector<double> values(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kFloat64).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

// A scale held as a logarithm, as the float32 the file stores.
std::vector<float> scales_f32(const torch::Tensor& log_scale) {
  torch::Tensor s = torch::exp(log_scale.detach()).to(torch::kFloat32).contiguous();
  return {s.data_ptr<float>(), s.data_ptr<float>() + s.numel()};
}

std::string layer_label(const Model& m, int family, std::size_t net, std::size_t layer) {
  return (family == 0 ? "embedding net " + m.embed_label(static_cast<int>(net)) : "fitting net " + m.species[net]) + " layer " +
         std::to_string(layer);
}

bool close(double a, double b, double rel) { return std::abs(a - b) <= rel * std::max(1.0, std::max(std::abs(a), std::abs(b))); }

}  // namespace

Model quantized_model(Se2aModuleImpl& module, const Model& plan) {
  if (!module.fake_quant()) throw Error("quantized_model: the module has no fake quantization enabled");
  Model m = module.to_model();
  m.default_mode = plan.default_mode;
  // The short-range repulsion is not part of the network QAT trains (it is switched off
  // below the data's closest pairs); the quantized starting point's carries over.
  m.repulsion = plan.repulsion;
  const std::array<const std::vector<std::vector<TorchLayer>>*, 2> families{&module.embed_layers(), &module.fit_layers()};
  for (int family = 0; family < 2; ++family) {
    std::vector<Net>& nets = family == 0 ? m.embed : m.fit;
    const std::vector<Net>& plan_nets = family == 0 ? plan.embed : plan.fit;
    for (std::size_t s = 0; s < nets.size(); ++s) {
      for (std::size_t l = 0; l < nets[s].layers.size(); ++l) {
        DenseLayer& L = nets[s].layers[l];
        const TorchLayer& T = (*families[static_cast<std::size_t>(family)])[s][l];
        QuantSpec qs = plan_nets[s].layers[l].quant;
        if (T.fq.weight_bits != 0) {
          // The grid index exactly as the module's forward computes it, times the float32 scale.
          torch::Tensor s_mod = torch::exp(T.fq.log_weight_scale.detach());
          const std::vector<double> r = values(quant_index(T.weight, s_mod, T.fq.weight_bits));
          qs.weight_scale = scales_f32(T.fq.log_weight_scale);
          const std::size_t nch = qs.weight_scale.size();
          for (std::size_t k = 0; k < L.weight.size(); ++k) {
            const std::size_t c = nch == 1 ? 0 : k % static_cast<std::size_t>(L.out);
            L.weight[k] = r[k] * static_cast<double>(qs.weight_scale[c]);
          }
        }
        if (T.fq.act_bits != 0) qs.act_scale = scales_f32(T.fq.log_act_scale)[0];
        if (T.fq.out_bits != 0) qs.out_scale = scales_f32(T.fq.log_out_scale)[0];
        L.quant = qs;
      }
    }
  }
  return m;
}

void check_plan_matches(const Model& fp32, const Model& plan, const std::string& fp32_name,
                        const std::string& plan_name) {
  if (is_quantized(fp32)) {
    throw Error(fp32_name + " is a quantized model; give the FP32 model the quantized file was made from");
  }
  if (!is_quantized(plan)) {
    throw Error(plan_name + " has no quantized layer; make a quantized starting point with `qnn quantize`");
  }
  const std::string differ = plan_name + " was not made from " + fp32_name + ": ";
  if (plan.species != fp32.species || plan.rcut != fp32.rcut || plan.rcut_smth != fp32.rcut_smth ||
      plan.sel != fp32.sel || plan.neighbor_norm != fp32.neighbor_norm || plan.embed_widths != fp32.embed_widths ||
      plan.fit_widths != fp32.fit_widths || plan.axis_neuron != fp32.axis_neuron || plan.resnet_dt != fp32.resnet_dt) {
    throw Error(differ + "the architectures differ (species, cutoffs, sel or widths)");
  }
  auto same_list = [&](const std::vector<double>& a, const std::vector<double>& b, const std::string& what) {
    for (std::size_t k = 0; k < a.size(); ++k) {
      if (!close(a[k], b[k], 1e-6)) throw Error(differ + what + " differ");
    }
  };
  same_list(plan.mean_s, fp32.mean_s, "the descriptor statistics (mean_s)");
  same_list(plan.std_s, fp32.std_s, "the descriptor statistics (std_s)");
  same_list(plan.std_r, fp32.std_r, "the descriptor statistics (std_r)");
  {
    // `qnn quantize` shifts every energy bias by one per-atom offset and records it.
    double offset = 0;
    const auto& prov = plan.provenance;
    if (prov.is_object() && prov.contains("quantization") && prov["quantization"].is_object() &&
        prov["quantization"].contains("energy_offset_eV_per_atom") &&
        prov["quantization"]["energy_offset_eV_per_atom"].is_number())
      offset = prov["quantization"]["energy_offset_eV_per_atom"].get<double>();
    std::vector<double> bias = plan.energy_bias;
    for (double& b : bias) b -= offset;
    same_list(bias, fp32.energy_bias, "the energy biases");
  }
  for (int family = 0; family < 2; ++family) {
    const std::vector<Net>& a = family == 0 ? fp32.embed : fp32.fit;
    const std::vector<Net>& b = family == 0 ? plan.embed : plan.fit;
    for (std::size_t s = 0; s < a.size(); ++s) {
      for (std::size_t l = 0; l < a[s].layers.size(); ++l) {
        const DenseLayer& F = a[s].layers[l];
        const DenseLayer& P = b[s].layers[l];
        const std::string name = layer_label(fp32, family, s, l);
        if (F.activation != P.activation || F.residual != P.residual) throw Error(differ + name + " differs in kind");
        if (P.quant.weight_bits == 0) {
          for (std::size_t k = 0; k < F.weight.size(); ++k) {
            if (!close(F.weight[k], P.weight[k], 1e-5)) throw Error(differ + name + " (float) has other weights");
          }
          continue;
        }
        // Quantized weights: almost all within half a step of the FP32 weights (clipping
        // calibrations may move a few outliers further).
        const std::size_t nch = P.quant.weight_scale.size();
        std::size_t near = 0;
        for (std::size_t k = 0; k < F.weight.size(); ++k) {
          const double sc = P.quant.weight_scale[nch == 1 ? 0 : k % static_cast<std::size_t>(P.out)];
          if (std::abs(F.weight[k] - P.weight[k]) <= 0.5 * sc * (1 + 1e-4) + 1e-12) ++near;
        }
        if (static_cast<double>(near) < 0.9 * static_cast<double>(F.weight.size())) {
          throw Error(differ + name + ": only " + std::to_string(near) + " of " + std::to_string(F.weight.size()) +
                      " quantized weights are within half a quantization step of the FP32 weights");
        }
      }
    }
  }
}

Model minmax_quantize(const Model& fp32, const std::vector<EdgeBatch>& calibration, const MinMaxOptions& opt) {
  if (is_quantized(fp32)) throw Error("minmax_quantize: the model is already quantized");
  if (calibration.empty()) throw Error("minmax_quantize: no calibration frames");
  // Validates the bits before the calibration pass.
  quant_max(opt.weight_bits);
  quant_max(opt.act_bits);
  // max |input| per layer ([family][net][layer]) and max |G| per embedding net (layer = size).
  std::vector<std::vector<std::vector<double>>> amax(2);
  for (int family = 0; family < 2; ++family) {
    for (const Net& n : family == 0 ? fp32.embed : fp32.fit) amax[family].emplace_back(n.layers.size() + 1, 0.0);
  }
  Se2aModule module(fp32, torch::kFloat64);
  module->set_observer([&](int family, int net, int layer, const torch::Tensor& rows) {
    if (rows.numel() == 0) return;
    double& a = amax[static_cast<std::size_t>(family)][static_cast<std::size_t>(net)][static_cast<std::size_t>(layer)];
    a = std::max(a, rows.abs().max().item<double>());
  });
  {
    torch::NoGradGuard no_grad;
    for (const EdgeBatch& b : calibration) module->forward(b.to(torch::kFloat64));
  }
  Model m = fp32;
  const bool int8 = opt.weight_bits <= 8 && opt.act_bits <= 8;
  m.default_mode = int8 && opt.out_scale ? "int8" : "mixed";
  for (int family = 0; family < 2; ++family) {
    std::vector<Net>& nets = family == 0 ? m.embed : m.fit;
    for (std::size_t s = 0; s < nets.size(); ++s) {
      for (std::size_t l = 0; l < nets[s].layers.size(); ++l) {
        DenseLayer& L = nets[s].layers[l];
        QuantSpec& q = L.quant;
        q = QuantSpec{};
        set_layer_bits(q, {opt.weight_bits, opt.act_bits});
        q.weight_scale = minmax_quantize_weights(L.weight, L.in, L.out, opt.weight_bits, opt.per_channel);
        q.weight_zero_point.assign(q.weight_scale.size(), 0);
        q.act_scale = range_scale(amax[static_cast<std::size_t>(family)][s][l], opt.act_bits);
        if (family == 0 && l + 1 == nets[s].layers.size() && opt.out_scale) {
          q.out_scale = range_scale(amax[0][s][l + 1], kEmbedOutBits);
        }
      }
    }
  }
  m.provenance = {{"created_by", "qnn::libtorch::minmax_quantize"},
                  {"weight_bits", opt.weight_bits},
                  {"act_bits", opt.act_bits},
                  {"per_channel", opt.per_channel},
                  {"out_scale", opt.out_scale},
                  {"calibration_frames", calibration.size()},
                  {"fp32_provenance", fp32.provenance},
                  {"storage_dtype", fp32.provenance.value("storage_dtype", std::string("f32"))}};
  return m;
}

// ------------------------------------------------------------------------------ config

QatConfig::QatConfig() {
  // Fine-tuning defaults: a short run at a small learning rate.
  train.start_lr = 1e-4;
  train.stop_lr = 1e-6;
  train.decay_steps = 500;
  train.steps = 5000;
  train.disp_freq = 500;
  train.checkpoint_freq = 1000;
  train.model_file = "model-qat.qnn";
}

QatConfig QatConfig::from_json(const json& j, const std::string& base_dir, const std::string& where) {
  QatConfig c;
  c.train.base_dir = base_dir;
  config::Section root(&j, "", where);
  config::Section m = root.section("model");
  c.fp32_model = m.string("fp32", "");
  c.init_model = m.string("init", "");
  if (c.fp32_model.empty()) m.fail_at("model.fp32", "is required (the FP32 .qnn to fine-tune)");
  if (c.init_model.empty()) m.fail_at("model.init", "is required (the quantized .qnn from `qnn quantize`: plan and initial scales)");
  c.fp32_model = config::resolve(base_dir, c.fp32_model);
  c.init_model = config::resolve(base_dir, c.init_model);
  c.precision = m.string("precision", c.precision, {"float", "double"});
  m.finish();
  config::Section q = root.section("quantization");
  c.learn_weight_scales = q.boolean("learn_weight_scales", c.learn_weight_scales);
  c.learn_act_scales = q.boolean("learn_act_scales", c.learn_act_scales);
  c.scale_lr_factor = q.number("scale_lr_factor", c.scale_lr_factor, 0.0, 1e6, "in [0, 1e6]");
  q.finish();
  if (j.contains("data") && j["data"].is_object() && j["data"].contains("stat_frames")) {
    throw Error(where + ": data.stat_frames does not apply to qnn qat (the statistics come from the FP32 model)");
  }
  parse_training_sections(root, c.train, base_dir);
  root.finish();
  c.train.precision = c.precision;
  return c;
}

json QatConfig::to_json() const {
  json j = train.to_json();
  j.erase("model");
  j["model"] = {{"fp32", fp32_model}, {"init", init_model}, {"precision", precision}};
  j["quantization"] = {{"learn_weight_scales", learn_weight_scales},
                       {"learn_act_scales", learn_act_scales},
                       {"scale_lr_factor", scale_lr_factor}};
  j["data"].erase("stat_frames");  // the statistics come from the FP32 model
  return j;
}

QatConfig read_qat_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open the QAT config");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::parse_error& e) {
    throw Error(path + ": not valid JSON (" + e.what() + ")");
  }
  return QatConfig::from_json(j, fs::absolute(path).parent_path().string(), path);
}

// ------------------------------------------------------------------------------ qnn qat

TrainResult qat(const QatConfig& cfg_in, const TrainOptions& opt) {
  using Clock = std::chrono::steady_clock;
  std::ostream& log = opt.log != nullptr ? *opt.log : std::cout;
  const auto t_setup = Clock::now();
  QatConfig cfg = cfg_in;
  cfg.train.precision = cfg.precision;
  if (cfg.fp32_model.empty() || cfg.init_model.empty()) {
    throw Error("qnn qat needs the FP32 model (model.fp32 / --fp32) and the quantized starting point (model.init / --init)");
  }
  begin_run(cfg.train);
  const torch::Dtype dtype = cfg.precision == "float" ? torch::kFloat32 : torch::kFloat64;

  const Model fp32 = read_model(cfg.fp32_model);
  const Model plan = read_model(cfg.init_model);
  check_plan_matches(fp32, plan, cfg.fp32_model, cfg.init_model);
  // The architecture fields of the training config, from the model (used by the data reader).
  cfg.train.species = fp32.species;
  cfg.train.rcut = fp32.rcut;
  cfg.train.rcut_smth = fp32.rcut_smth;
  cfg.train.sel = fp32.sel;
  cfg.train.neighbor_norm = fp32.neighbor_norm;
  cfg.train.embed_widths = fp32.embed_widths;
  cfg.train.axis_neuron = fp32.axis_neuron;
  cfg.train.fit_widths = fp32.fit_widths;
  cfg.train.resnet_dt = fp32.resnet_dt;

  log << "qnn qat " << QNN_VERSION << "\nconfig (defaults filled in):\n" << cfg.to_json().dump(2) << "\n";
  fs::create_directories(cfg.train.output_dir);
  {
    std::ofstream full(cfg.train.output_path("config.full.json"));
    full << cfg.to_json().dump(2) << "\n";
  }
  log << "fp32 model: " << cfg.fp32_model << " (" << fp32.parameter_count() << " parameters)\n";
  log << "starting point: " << cfg.init_model << " (default mode " << plan.default_mode << ")\n";
  const Dataset data = load_dataset(cfg.train, dtype, log);

  Se2aModule module(fp32, dtype);
  FakeQuantOptions fq;
  fq.learn_weight_scales = cfg.learn_weight_scales;
  fq.learn_act_scales = cfg.learn_act_scales;
  module->enable_fake_quant(plan, fq);
  const std::vector<torch::Tensor> scales = module->scale_parameters();
  std::int64_t nscale = 0;
  for (const auto& t : scales) nscale += t.numel();
  log << "learned scales: " << nscale << " (weights " << (cfg.learn_weight_scales ? "yes" : "no") << ", activations "
      << (cfg.learn_act_scales ? "yes" : "no") << "), precision " << cfg.precision << ", threads " << cfg.train.threads
      << "\n";

  LoopSpec spec;
  spec.command = "qnn qat";
  spec.param_groups.push_back({module->network_parameters(), 1.0});
  if (!scales.empty() && cfg.scale_lr_factor > 0) spec.param_groups.push_back({scales, cfg.scale_lr_factor});
  json sig = resume_signature(cfg.train);
  sig["qat"] = cfg.to_json()["model"];
  sig["qat"]["quantization"] = cfg.to_json()["quantization"];
  spec.signature = sig;
  json pconfig = cfg.train.provenance_json();
  pconfig.erase("model");
  pconfig["model"] = {{"fp32", config::relative_to(cfg.train.base_dir, cfg.fp32_model)},
                      {"init", config::relative_to(cfg.train.base_dir, cfg.init_model)},
                      {"precision", cfg.precision}};
  pconfig["quantization"] = cfg.to_json()["quantization"];
  pconfig["data"].erase("stat_frames");
  spec.provenance = {{"config", pconfig},
                     {"fp32_model", config::relative_to(cfg.train.base_dir, cfg.fp32_model)},
                     {"init_model", config::relative_to(cfg.train.base_dir, cfg.init_model)},
                     {"init_provenance", plan.provenance}};
  const std::string sd = plan.provenance.value("storage_dtype", std::string());
  spec.storage_dtype = cfg.train.storage_dtype != "auto" ? cfg.train.storage_dtype
                       : (sd == "f32" || sd == "f64")    ? sd
                       : (cfg.precision == "float" ? "f32" : "f64");
  spec.export_model = [&plan](Se2aModule& m) { return quantized_model(*m, plan); };
  spec.setup_s = std::chrono::duration<double>(Clock::now() - t_setup).count();
  return run_training(cfg.train, opt, module, data, spec);
}

}  // namespace qnn::libtorch
