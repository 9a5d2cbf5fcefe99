// Post-training quantization (see quantize.hpp and docs/quantization.md).
#include "qnn/quant/quantize.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>

#include "qnn/data/data.hpp"
#include "qnn/engine/exact_engine.hpp"
#include "qnn/error.hpp"
#include "qnn/quant/calibration_forward.hpp"

namespace qnn {

// ============================================================================== layers
std::vector<LayerRef> list_layers(const Model& m) {
  std::vector<LayerRef> out;
  for (int fam = 0; fam < 2; ++fam) {
    const std::vector<Net>& nets = fam == 0 ? m.embed : m.fit;
    for (int s = 0; s < static_cast<int>(nets.size()); ++s)
      for (int l = 0; l < static_cast<int>(nets[static_cast<std::size_t>(s)].layers.size()); ++l)
        out.push_back({fam, s, l, (fam == 0 ? m.embed_name(s) : "fit." + std::to_string(s)) + "." + std::to_string(l)});
  }
  return out;
}

const DenseLayer& layer_of(const Model& m, const LayerRef& r) {
  const std::vector<Net>& nets = r.family == 0 ? m.embed : m.fit;
  return nets.at(static_cast<std::size_t>(r.net)).layers.at(static_cast<std::size_t>(r.layer));
}
DenseLayer& layer_of(Model& m, const LayerRef& r) {
  std::vector<Net>& nets = r.family == 0 ? m.embed : m.fit;
  return nets.at(static_cast<std::size_t>(r.net)).layers.at(static_cast<std::size_t>(r.layer));
}

// ============================================================================== plans
namespace {

void check_bits(int b, const std::string& what) {
  if (b != 0 && (b < 2 || b > 16))
    throw Error(what + ": bit width " + std::to_string(b) + " is outside 2..16 (0 = float)");
}

}  // namespace

std::string layer_mode(const LayerBits& b) {
  check_bits(b.weight_bits, "weight_bits");
  check_bits(b.act_bits, "act_bits");
  if (b.weight_bits == 0 && b.act_bits == 0) return "";
  if (b.weight_bits == 0)
    throw Error("act_bits " + std::to_string(b.act_bits) +
                " without weight_bits: integer activations need integer weights (give "
                "weight_bits too, e.g. 16)");
  if (b.act_bits == 0) return "weight-only";
  return (b.weight_bits <= 8 && b.act_bits <= 8) ? "int8" : "int16";
}

std::string bits_label(const LayerBits& b) {
  if (b.weight_bits == 0 && b.act_bits == 0) return "fp32";
  std::string s = "w" + std::to_string(b.weight_bits);
  if (b.act_bits) s += "a" + std::to_string(b.act_bits);
  return s;
}

QuantPlan uniform_plan(const Model& m, LayerBits b) {
  layer_mode(b);  // validates
  QuantPlan p;
  p.layers.assign(list_layers(m).size(), b);
  return p;
}

namespace {

// Parses one plan value (see parse_plan). `ctx` names the entry in errors.
LayerBits parse_plan_value(const nlohmann::json& v, LayerBits defaults, const std::string& ctx) {
  LayerBits b;
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "fp32") {
      b = {0, 0};
    } else if (s == "weight-only") {
      b = {defaults.weight_bits ? defaults.weight_bits : 8, 0};
    } else if (s == "int8") {
      b = {8, 8};
    } else if (s == "int16") {
      b = {16, 16};
    } else {
      throw Error(ctx + ": unknown precision \"" + s +
                  "\"; use \"fp32\", \"weight-only\", \"int8\", \"int16\" or {\"weight_bits\": B, \"act_bits\": B}");
    }
  } else if (v.is_object()) {
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (it.key() != "weight_bits" && it.key() != "act_bits")
        throw Error(ctx + ": unknown key \"" + it.key() + "\" (expected weight_bits, act_bits)");
      if (!it.value().is_number_integer())
        throw Error(ctx + ": " + it.key() + " must be an integer (0 = float, or 2..16), got " + it.value().dump());
    }
    b.weight_bits = v.value("weight_bits", 0);
    b.act_bits = v.value("act_bits", 0);
  } else {
    throw Error(ctx + ": expected a precision string or an object {\"weight_bits\": B, \"act_bits\": B}, got " +
                v.dump());
  }
  try {
    layer_mode(b);
  } catch (const Error& e) {
    throw Error(ctx + ": " + e.what());
  }
  return b;
}

// The index in list_layers() of a plan key like "embed.1.0", "fit.H.2" or, with pair
// embedding nets, "embed.O.H.1" (centre, neighbour); -1 when unknown.
int find_layer(const Model& m, const std::vector<LayerRef>& layers, const std::string& key) {
  std::vector<std::string> parts;
  for (std::size_t p = 0;;) {
    const auto d = key.find('.', p);
    parts.push_back(key.substr(p, d == std::string::npos ? std::string::npos : d - p));
    if (d == std::string::npos || parts.size() > 4) break;
    p = d + 1;
  }
  const std::string fam = parts.front(), ly = parts.back();
  if (fam != "embed" && fam != "fit") return -1;
  const std::size_t nsp = fam == "embed" && !m.type_one_side ? 2 : 1;
  if (parts.size() != nsp + 2) return -1;
  auto species_of = [&](const std::string& sp) {
    int s = m.species_index(sp);
    if (s < 0) {
      if (sp.empty() || sp.size() > 4 || sp.find_first_not_of("0123456789") != std::string::npos) return -1;
      s = std::stoi(sp);
    }
    return s < m.nspecies() ? s : -1;
  };
  int s = species_of(parts[1]);
  if (s < 0) return -1;
  if (nsp == 2) {
    const int a = species_of(parts[2]);
    if (a < 0) return -1;
    s = m.embed_index(s, a);
  }
  if (ly.empty() || ly.size() > 4 || ly.find_first_not_of("0123456789") != std::string::npos) return -1;
  const int l = std::stoi(ly);
  for (std::size_t i = 0; i < layers.size(); ++i)
    if (layers[i].family == (fam == "fit" ? 1 : 0) && layers[i].net == s && layers[i].layer == l)
      return static_cast<int>(i);
  return -1;
}

}  // namespace

QuantPlan parse_plan(const nlohmann::json& j, const Model& m, LayerBits defaults, const std::string& what) {
  if (!j.is_object())
    throw Error(what + ": a plan must be a JSON object mapping layer names to precisions");
  const std::vector<LayerRef> layers = list_layers(m);
  LayerBits def = defaults;
  if (j.contains("default")) def = parse_plan_value(j.at("default"), defaults, what + ": \"default\"");
  QuantPlan p;
  p.layers.assign(layers.size(), def);
  std::vector<std::string> set_by(layers.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "default") continue;
    const int idx = find_layer(m, layers, it.key());
    if (idx < 0) {
      std::string names;
      for (const LayerRef& r : layers) names += (names.empty() ? "" : ", ") + r.name;
      throw Error(what + ": unknown layer \"" + it.key() + "\"; this model's layers are " + names +
                  " (the species may be given by name, e.g. embed." + m.species.at(0) + ".0)");
    }
    const auto u = static_cast<std::size_t>(idx);
    if (!set_by[u].empty())
      throw Error(what + ": layer " + layers[u].name + " is given twice (\"" + set_by[u] + "\" and \"" + it.key() + "\")");
    set_by[u] = it.key();
    p.layers[u] = parse_plan_value(it.value(), def, what + ": layer \"" + it.key() + "\"");
  }
  return p;
}

QuantPlan read_plan(const std::string& path, const Model& m, LayerBits defaults) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open the plan file");
  nlohmann::json j;
  try {
    f >> j;
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": the plan file is not valid JSON (" + e.what() + ")");
  }
  return parse_plan(j, m, defaults, path);
}

nlohmann::json plan_to_json(const Model& m, const QuantPlan& p) {
  const std::vector<LayerRef> layers = list_layers(m);
  if (p.layers.size() != layers.size()) throw Error("plan does not match the model's layers");
  nlohmann::json j = nlohmann::json::object();
  for (std::size_t i = 0; i < layers.size(); ++i)
    j[layers[i].name] = {{"weight_bits", p.layers[i].weight_bits}, {"act_bits", p.layers[i].act_bits}};
  return j;
}

std::string plan_summary(const Model& m, const QuantPlan& p) {
  const std::vector<LayerRef> layers = list_layers(m);
  std::ostringstream o;
  for (std::size_t i = 0; i < layers.size() && i < p.layers.size(); ++i) {
    const LayerRef& r = layers[i];
    if (r.layer == 0) {
      if (i) o << "] ";
      o << (r.family == 0 ? m.embed_label(r.net) : "fit." + m.species.at(static_cast<std::size_t>(r.net))) << " [";
    } else {
      o << " ";
    }
    const LayerBits& b = p.layers[i];
    if (b.weight_bits == 0 && b.act_bits == 0) o << "f";
    else if (b.act_bits == 0) o << "w" << b.weight_bits;
    else if (b.act_bits == b.weight_bits) o << b.weight_bits;
    else o << "w" << b.weight_bits << "a" << b.act_bits;
  }
  o << "]";
  return o.str();
}

// ============================================================================== frames
FrameSet load_frames(const std::vector<std::string>& dirs, const Model& m, int max_frames) {
  const std::vector<System> systems = read_systems(dirs, m.species);
  std::vector<std::pair<std::size_t, int>> all;
  for (std::size_t s = 0; s < systems.size(); ++s)
    for (int f = 0; f < systems[s].nframes; ++f) all.emplace_back(s, f);
  if (all.empty()) throw Error("the data directories hold no frames");
  std::vector<std::size_t> pick;
  const std::size_t n = max_frames <= 0 ? all.size() : std::min(all.size(), static_cast<std::size_t>(max_frames));
  for (std::size_t k = 0; k < n; ++k) pick.push_back(k * all.size() / n);
  FrameSet fs;
  for (std::size_t k : pick) {
    const System& sys = systems[all[k].first];
    const int f = all[k].second;
    fs.graphs.push_back(build_periodic_graph(sys.cell(f), sys.positions(f), sys.species, m.rcut));
    fs.graphs.back().build_reverse_index();
    fs.natoms.push_back(sys.natoms);
    fs.energy.push_back(sys.energy[static_cast<std::size_t>(f)]);
    fs.force.push_back(sys.forces(f));
    fs.labels.push_back(sys.frame_label(f));
  }
  return fs;
}

// ============================================================================== calibration
namespace {

struct CalibrationTap final : LayerTap {
  Calibration* cal = nullptr;
  std::vector<std::vector<std::vector<int>>> index;  // [family][net][layer] -> observer
  void layer_input(int family, int net, int layer, const double* x, int n) override {
    cal->inputs.at(static_cast<std::size_t>(index.at(static_cast<std::size_t>(family))
                                                .at(static_cast<std::size_t>(net))
                                                .at(static_cast<std::size_t>(layer))))
        .observe(x, static_cast<std::size_t>(n));
  }
  void embed_output(int net, const double* g, int n) override {
    cal->embed_out.at(static_cast<std::size_t>(net)).observe(g, static_cast<std::size_t>(n));
  }
};

bool model_is_quantized(const Model& m) {
  for (const LayerRef& r : list_layers(m))
    if (layer_of(m, r).quant.quantized()) return true;
  return false;
}

}  // namespace

Calibration calibrate(const Model& fp32, const FrameSet& frames, std::size_t capacity) {
  if (model_is_quantized(fp32))
    throw Error("calibration needs the FP32 model; this one is already quantized");
  if (frames.size() == 0) throw Error("calibration needs at least one frame");
  const std::vector<LayerRef> layers = list_layers(fp32);
  Calibration cal;
  for (std::size_t i = 0; i < layers.size(); ++i) cal.inputs.emplace_back(capacity, 0x5eed + i);
  for (int s = 0; s < fp32.n_embed_nets(); ++s) cal.embed_out.emplace_back(capacity, 0xe3bd + static_cast<std::uint64_t>(s));
  CalibrationTap tap;
  tap.cal = &cal;
  tap.index.resize(2);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    auto& nets = tap.index[static_cast<std::size_t>(layers[i].family)];
    if (nets.size() <= static_cast<std::size_t>(layers[i].net)) nets.resize(static_cast<std::size_t>(layers[i].net) + 1);
    auto& ls = nets[static_cast<std::size_t>(layers[i].net)];
    if (ls.size() <= static_cast<std::size_t>(layers[i].layer)) ls.resize(static_cast<std::size_t>(layers[i].layer) + 1);
    ls[static_cast<std::size_t>(layers[i].layer)] = static_cast<int>(i);
  }
  EvalOptions opt;
  opt.atom_energy = false;
  for (const NeighborGraph& g : frames.graphs) {
    calibration_forward(fp32, g, &tap);
    ++cal.frames;
  }
  for (std::size_t i = 0; i < layers.size(); ++i)
    if (cal.inputs[i].count() == 0)
      throw Error("calibration saw no input of layer " + layers[i].name +
                  " (do the frames contain every species of the model?)");
  return cal;
}

Model apply_plan(const Model& fp32, const QuantPlan& plan, const Calibration& cal, const QuantOptions& opt) {
  if (model_is_quantized(fp32))
    throw Error("the model is already quantized; quantize its FP32 original instead");
  const std::vector<LayerRef> layers = list_layers(fp32);
  if (plan.layers.size() != layers.size())
    throw Error("the plan has " + std::to_string(plan.layers.size()) + " layers, the model " +
                std::to_string(layers.size()));
  if (cal.inputs.size() != layers.size() || cal.embed_out.size() != static_cast<std::size_t>(fp32.n_embed_nets()))
    throw Error("the calibration does not match the model's layers");
  Model q = fp32;
  bool all_int8 = true, all_wo = true, none = true;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LayerBits& b = plan.layers[i];
    DenseLayer& L = layer_of(q, layers[i]);
    QuantSpec spec;
    spec.mode = layer_mode(b);
    spec.weight_bits = b.weight_bits;
    spec.act_bits = b.act_bits;
    if (b.weight_bits) {
      spec.weight_scale = weight_scales(L.weight, L.in, L.out, b.weight_bits, opt.per_channel, opt.weight_observer);
      quantize_weights(L.weight, L.in, L.out, b.weight_bits, spec.weight_scale);
    }
    if (b.act_bits) {
      const double r = cal.inputs[i].range(opt.act_observer, b.act_bits, opt.percentile);
      const float s = static_cast<float>(r / qmax_of(b.act_bits));
      spec.act_scale = (s > 0 && std::isfinite(s)) ? s : 1.0f;
    }
    const bool last_embed = layers[i].family == 0 &&
                            layers[i].layer + 1 == static_cast<int>(fp32.embed[static_cast<std::size_t>(layers[i].net)].layers.size());
    if (last_embed && b.act_bits && b.weight_bits <= 8 && b.act_bits <= 8) {
      // An int8 last embedding layer: G enters the descriptor as int8 (when every embedding
      // net has out_scale, the engine runs the integer descriptor).
      const double r = cal.embed_out[static_cast<std::size_t>(layers[i].net)].range(opt.act_observer, 8, opt.percentile);
      const float s = static_cast<float>(r / qmax_of(8));
      spec.out_scale = (s > 0 && std::isfinite(s)) ? s : 1.0f;
    }
    L.quant = spec;
    if (b.weight_bits || b.act_bits) none = false;
    // The embedding nets are tabulated from their weights as stored in every mode (engine
    // v2), so the file's mode is the fitting nets': int8 when every fitting layer is integer
    // with at most 8 bits, whatever the embedding layers are.
    const bool fitting = layers[i].family == 1;
    if (fitting && !(b.act_bits && b.weight_bits <= 8 && b.act_bits <= 8)) all_int8 = false;
    if (fitting ? !(b.weight_bits && !b.act_bits) : b.act_bits != 0) all_wo = false;
  }
  q.default_mode = none ? "fp32" : all_int8 ? "int8" : all_wo ? "weight-only" : "mixed";
  q.provenance["quantization"] = {
      {"method", "post-training (qnn quantize)"},
      {"act_observer", to_string(opt.act_observer)},
      {"percentile", opt.percentile},
      {"weight_observer", to_string(opt.weight_observer)},
      {"weight_granularity", opt.per_channel ? "per_channel" : "per_tensor"},
      {"calibration_frames", cal.frames},
      {"plan", plan_summary(fp32, plan)},
  };
  return q;
}

// ============================================================================== evaluation
Prediction predict(Evaluator& ev, const FrameSet& frames) {
  Prediction p;
  EvalOptions opt;
  opt.atom_energy = false;
  EvalResult res;
  for (const NeighborGraph& g : frames.graphs) {
    ev.compute(g, res, opt);
    p.energy.push_back(res.energy);
    p.force.push_back(fold_ghost_forces(g, res.force));
  }
  return p;
}

Prediction predict_reference(const Model& fp32, const FrameSet& frames) {
  ensure_kokkos_initialized();
  return predict(*make_evaluator(fp32, Mode::FP64), frames);
}

Prediction predict_default(const Model& m, const FrameSet& frames, std::string* engine) {
  ensure_kokkos_initialized();
  std::unique_ptr<Evaluator> ev = make_evaluator(m, default_mode(m));
  if (engine) *engine = ev->describe();
  return predict(*ev, frames);
}

double correct_energy_offset(Model& q, const Model& fp32, const FrameSet& frames) {
  if (frames.size() == 0) throw Error("the energy offset correction needs at least one frame");
  const Prediction ref = predict_reference(fp32, frames);
  const Prediction got = predict_default(q, frames);
  double sum = 0;
  for (std::size_t k = 0; k < frames.size(); ++k)
    sum += (ref.energy[k] - got.energy[k]) / frames.natoms[k];
  const double shift = sum / static_cast<double>(frames.size());
  if (!std::isfinite(shift))
    throw Error("the energy offset correction is not finite; the quantized model overflows on "
                "the calibration frames");
  for (double& b : q.energy_bias) b += shift;
  q.provenance["quantization"]["energy_offset_eV_per_atom"] = shift;
  return shift;
}

Errors compare(const Prediction& p, const Prediction& ref, const FrameSet& fr) {
  if (p.energy.size() != fr.size() || ref.energy.size() != fr.size())
    throw Error("compare: predictions do not match the frames");
  double e_d = 0, e_r = 0, f_d = 0, f_r = 0;
  std::size_t nf = 0;
  for (std::size_t k = 0; k < fr.size(); ++k) {
    const double na = fr.natoms[k];
    const double a = (p.energy[k] - fr.energy[k]) / na, b = (p.energy[k] - ref.energy[k]) / na;
    e_d += a * a;
    e_r += b * b;
    for (std::size_t c = 0; c < fr.force[k].size(); ++c) {
      const double x = p.force[k][c] - fr.force[k][c], y = p.force[k][c] - ref.force[k][c];
      f_d += x * x;
      f_r += y * y;
    }
    nf += fr.force[k].size();
  }
  const double ne = static_cast<double>(fr.size());
  Errors e;
  e.e_dft = 1000 * std::sqrt(e_d / ne);
  e.e_ref = 1000 * std::sqrt(e_r / ne);
  e.f_dft = 1000 * std::sqrt(f_d / static_cast<double>(nf));
  e.f_ref = 1000 * std::sqrt(f_r / static_cast<double>(nf));
  return e;
}

std::size_t parameter_bytes(const Model& m, const QuantPlan& p) {
  const std::vector<LayerRef> layers = list_layers(m);
  if (p.layers.size() != layers.size()) throw Error("plan does not match the model's layers");
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const DenseLayer& L = layer_of(m, layers[i]);
    const int wb = p.layers[i].weight_bits;
    const std::size_t n = static_cast<std::size_t>(L.in) * static_cast<std::size_t>(L.out);
    bytes += n * (wb == 0 ? 4 : wb <= 8 ? 1 : 2);
    if (wb) bytes += 4 * static_cast<std::size_t>(L.out);  // per-channel scales
    bytes += 4 * (L.bias.size() + L.dt.size());
  }
  return bytes;
}

std::vector<double> layer_macs(const Model& m, const FrameSet& frames) {
  const std::vector<LayerRef> layers = list_layers(m);
  const int S = m.nspecies();
  std::vector<double> edges(static_cast<std::size_t>(m.n_embed_nets()), 0.0), atoms(static_cast<std::size_t>(S), 0.0);
  for (const NeighborGraph& g : frames.graphs) {
    for (int i = 0; i < g.nlocal; ++i) {
      atoms[static_cast<std::size_t>(g.species[static_cast<std::size_t>(i)])] += 1;
      for (int e = g.offsets[static_cast<std::size_t>(i)]; e < g.offsets[static_cast<std::size_t>(i) + 1]; ++e)
        edges[static_cast<std::size_t>(m.embed_index(g.species[static_cast<std::size_t>(i)], g.species[static_cast<std::size_t>(g.neighbors[static_cast<std::size_t>(e)])]))] += 1;
    }
  }
  const double nf = std::max<double>(1.0, static_cast<double>(frames.size()));
  std::vector<double> macs;
  for (const LayerRef& r : layers) {
    const DenseLayer& L = layer_of(m, r);
    const double rows = (r.family == 0 ? edges : atoms)[static_cast<std::size_t>(r.net)] / nf;
    macs.push_back(rows * L.in * L.out);
  }
  return macs;
}

namespace {
double mac_cost(const LayerBits& b) {
  if (b.act_bits == 0) return 4.0;  // float arithmetic (fp32 and weight-only)
  return (b.weight_bits <= 8 && b.act_bits <= 8) ? 1.0 : 2.0;
}
}  // namespace

double estimated_cost(const Model& m, const QuantPlan& p, const std::vector<double>& macs) {
  if (p.layers.size() != macs.size()) throw Error("plan does not match the model's layers");
  (void)m;
  double c = 0, c0 = 0;
  for (std::size_t i = 0; i < macs.size(); ++i) {
    c += macs[i] * mac_cost(p.layers[i]);
    c0 += macs[i] * 4.0;
  }
  return c0 > 0 ? c / c0 : 0.0;
}

// ============================================================================== sweep
std::vector<SweepRow> run_sweep(const Model& fp32, const Calibration& cal, const QuantOptions& opt,
                                const FrameSet& val, const Prediction& ref, const std::vector<int>& bits,
                                const std::function<void(const SweepRow&)>& progress) {
  std::vector<SweepRow> rows;
  auto emit = [&](SweepRow r) {
    if (progress) progress(r);
    rows.push_back(std::move(r));
  };
  {
    std::string engine;
    SweepRow r;
    r.variant = "fp32";
    r.bits = 32;
    r.mode = "fp32";
    r.err = compare(predict_default(fp32, val, &engine), ref, val);
    r.bytes = parameter_bytes(fp32, uniform_plan(fp32, {0, 0}));
    emit(r);
  }
  for (const char* variant : {"weights", "activations", "both"}) {
    for (int b : bits) {
      qmax_of(b);
      const std::string v = variant;
      const LayerBits lb = v == "weights" ? LayerBits{b, 0} : v == "activations" ? LayerBits{16, b} : LayerBits{b, b};
      const QuantPlan plan = uniform_plan(fp32, lb);
      const Model q = apply_plan(fp32, plan, cal, opt);
      SweepRow r;
      r.variant = v;
      r.bits = b;
      r.mode = q.default_mode;
      r.err = compare(predict_default(q, val), ref, val);
      r.bytes = parameter_bytes(fp32, plan);
      emit(r);
    }
  }
  return rows;
}

void write_sweep_csv(const std::vector<SweepRow>& rows, const std::string& path) {
  std::ofstream f(path);
  if (!f) throw Error(path + ": cannot write the sweep CSV");
  f << "variant,bits,mode,energy_rmse_dft_meV_atom,force_rmse_dft_meV_A,energy_rmse_fp32_meV_atom,"
       "force_rmse_fp32_meV_A,parameter_bytes\n";
  char buf[512];
  for (const SweepRow& r : rows) {
    std::snprintf(buf, sizeof buf, "%s,%d,%s,%.6g,%.6g,%.6g,%.6g,%zu\n", r.variant.c_str(), r.bits, r.mode.c_str(),
                  r.err.e_dft, r.err.f_dft, r.err.e_ref, r.err.f_ref, r.bytes);
    f << buf;
  }
  if (!f) throw Error(path + ": error writing the sweep CSV");
}

// ============================================================================== mixed search
namespace {

LayerBits level_bits(int level_bits_value) { return {level_bits_value, level_bits_value}; }

}  // namespace

SearchResult search_mixed(const Model& fp32, const Calibration& cal, const QuantOptions& opt, const FrameSet& val,
                          const Prediction& ref, const SearchOptions& so,
                          const std::function<void(const std::string&)>& log) {
  auto say = [&](const std::string& s) {
    if (log) log(s);
  };
  SearchResult R;
  R.layers = list_layers(fp32);
  const std::size_t NL = R.layers.size();
  if (so.allow_fp32) R.levels.push_back(0);
  {
    std::vector<int> b = so.bits;
    for (int x : b) qmax_of(x);
    std::sort(b.begin(), b.end(), std::greater<int>());
    b.erase(std::unique(b.begin(), b.end()), b.end());
    if (b.empty()) throw Error("the search needs at least one candidate bit width");
    R.levels.insert(R.levels.end(), b.begin(), b.end());
  }
  if (!(so.max_force_ratio >= 1.0) && so.max_force_dev <= 0)
    throw Error("the search needs a budget: a force-RMSE ratio >= 1 or a maximum deviation from FP32");
  const std::size_t NV = R.levels.size();
  R.macs = layer_macs(fp32, val);
  R.fp32 = compare(ref, ref, val);
  const std::size_t fp32_bytes = parameter_bytes(fp32, uniform_plan(fp32, {0, 0}));

  // Budget on the deviation from FP32 implied by the ratio: if the quantization error is
  // uncorrelated with the model's own error, RMSE_q^2 = RMSE_fp32^2 + dev^2.
  double dev_budget = std::numeric_limits<double>::infinity();
  if (so.max_force_ratio >= 1.0) dev_budget = std::sqrt(so.max_force_ratio * so.max_force_ratio - 1.0) * R.fp32.f_dft;
  if (so.max_force_dev > 0) dev_budget = std::min(dev_budget, so.max_force_dev);
  {
    char buf[256];
    std::snprintf(buf, sizeof buf, "FP32: force RMSE vs DFT %.3f meV/A; deviation budget %.3f meV/A", R.fp32.f_dft,
                  dev_budget);
    say(buf);
  }

  // 1. Sensitivities: one layer at a time.
  R.sensitivity.assign(NL, std::vector<Errors>(NV));
  for (std::size_t i = 0; i < NL; ++i) {
    std::string line = "sensitivity " + R.layers[i].name + ":";
    for (std::size_t v = 0; v < NV; ++v) {
      if (R.levels[v] == 0) {
        R.sensitivity[i][v] = R.fp32;  // the layer stays float: no deviation
        continue;
      }
      QuantPlan p = uniform_plan(fp32, {0, 0});
      p.layers[i] = level_bits(R.levels[v]);
      const Model q = apply_plan(fp32, p, cal, opt);
      R.sensitivity[i][v] = compare(predict_default(q, val), ref, val);
      char buf[64];
      std::snprintf(buf, sizeof buf, " %d-bit %.3f", R.levels[v], R.sensitivity[i][v].f_ref);
      line += buf;
    }
    say(line + " meV/A");
  }

  auto plan_of = [&](const std::vector<std::size_t>& lv) {
    QuantPlan p;
    for (std::size_t i = 0; i < NL; ++i) p.layers.push_back(level_bits(R.levels[lv[i]]));
    return p;
  };
  auto objective = [&](const QuantPlan& p) {
    return so.objective_size ? static_cast<double>(parameter_bytes(fp32, p)) : estimated_cost(fp32, p, R.macs);
  };
  auto dev2 = [&](std::size_t i, std::size_t v) {
    const double d = R.sensitivity[i][v].f_ref;
    return d * d;
  };

  // 2. Greedy path from the most precise plan: lower the layer whose move buys the most
  // objective per unit of predicted squared deviation, until every layer is at the bottom.
  std::vector<std::size_t> cur(NL, 0);
  struct PathPoint {
    std::vector<std::size_t> lv;
    double pred;
  };
  std::vector<PathPoint> path;
  auto pred_of = [&](const std::vector<std::size_t>& lv) {
    double s = 0;
    for (std::size_t i = 0; i < NL; ++i) s += dev2(i, lv[i]);
    return std::sqrt(s);
  };
  path.push_back({cur, pred_of(cur)});
  for (;;) {
    const double obj_cur = objective(plan_of(cur));
    double best = -1;
    std::size_t bi = NL, bv = 0;
    for (std::size_t i = 0; i < NL; ++i) {
      for (std::size_t v = cur[i] + 1; v < NV; ++v) {
        std::vector<std::size_t> nx = cur;
        nx[i] = v;
        const double gain = obj_cur - objective(plan_of(nx));
        if (gain <= 0) continue;
        const double dd = std::max(dev2(i, v) - dev2(i, cur[i]), 1e-12);
        const double score = gain / dd;
        if (score > best) best = score, bi = i, bv = v;
      }
    }
    if (bi == NL) break;
    cur[bi] = bv;
    path.push_back({cur, pred_of(cur)});
  }

  // 3. Measure: the uniform plans for reference, and the path points from a fifth of the
  // budget to twice it (predicted), the first one predicted beyond that, thinned to at most
  // 16 (the last point predicted within the budget and its successor always kept).
  auto add = [&](const std::string& label, const QuantPlan& p, double pred) {
    for (const PlanResult& t : R.tried)
      if (plan_summary(fp32, t.plan) == plan_summary(fp32, p)) return;
    PlanResult r;
    r.label = label;
    r.plan = p;
    r.bytes = parameter_bytes(fp32, p);
    r.cost = estimated_cost(fp32, p, R.macs);
    r.predicted_dev = pred;
    const Model q = apply_plan(fp32, p, cal, opt);
    r.err = compare(predict_default(q, val), ref, val);
    r.within_budget = (so.max_force_ratio < 1.0 || r.err.f_dft <= so.max_force_ratio * R.fp32.f_dft) &&
                      (so.max_force_dev <= 0 || r.err.f_ref <= so.max_force_dev) &&
                      (so.max_size_ratio <= 0 || static_cast<double>(r.bytes) <= so.max_size_ratio * static_cast<double>(fp32_bytes));
    char buf[256];
    std::snprintf(buf, sizeof buf, "plan %-10s size %8zu B  cost %.3f  F vs FP32 %.3f (predicted %.3f)  F vs DFT %.3f meV/A%s",
                  label.c_str(), r.bytes, r.cost, r.err.f_ref, pred, r.err.f_dft, r.within_budget ? "  within budget" : "");
    say(std::string(buf) + "  " + plan_summary(fp32, p));
    R.tried.push_back(std::move(r));
  };
  for (int b : R.levels) {
    if (b == 0) continue;
    std::vector<std::size_t> lv(NL, static_cast<std::size_t>(std::find(R.levels.begin(), R.levels.end(), b) - R.levels.begin()));
    add("all-" + std::to_string(b), plan_of(lv), pred_of(lv));
  }
  std::vector<std::size_t> measure;
  std::size_t last_in = 0;
  for (std::size_t k = 1; k < path.size(); ++k) {
    if (path[k].pred <= dev_budget) last_in = k;
    if (path[k].pred < 0.2 * dev_budget) continue;
    measure.push_back(k);
    if (path[k].pred > 2 * dev_budget) break;
  }
  const std::size_t cap = 16;
  if (measure.size() > cap) {
    std::vector<std::size_t> thinned;
    for (std::size_t k = 0; k < cap; ++k) thinned.push_back(measure[k * (measure.size() - 1) / (cap - 1)]);
    measure = thinned;
  }
  if (last_in > 0) measure.push_back(last_in);
  if (last_in + 1 < path.size()) measure.push_back(last_in + 1);
  if (path.size() > 1 && path.back().pred <= dev_budget) measure.push_back(path.size() - 1);
  std::sort(measure.begin(), measure.end());
  measure.erase(std::unique(measure.begin(), measure.end()), measure.end());
  for (std::size_t k : measure) add("greedy-" + std::to_string(k), plan_of(path[k].lv), path[k].pred);

  // 4. Choose and mark the Pareto front (objective vs force deviation from FP32).
  double best_obj = std::numeric_limits<double>::infinity();
  for (std::size_t t = 0; t < R.tried.size(); ++t) {
    const PlanResult& r = R.tried[t];
    if (!r.within_budget) continue;
    const double o = objective(r.plan);
    if (o < best_obj || (o == best_obj && R.chosen >= 0 && r.err.f_ref < R.tried[static_cast<std::size_t>(R.chosen)].err.f_ref))
      best_obj = o, R.chosen = static_cast<int>(t);
  }
  for (PlanResult& r : R.tried) {
    r.pareto = true;
    for (const PlanResult& o : R.tried) {
      const double a = objective(o.plan), b = objective(r.plan);
      if (&o != &r && a <= b && o.err.f_ref <= r.err.f_ref && (a < b || o.err.f_ref < r.err.f_ref)) {
        r.pareto = false;
        break;
      }
    }
  }
  return R;
}

std::string pareto_markdown(const Model& m, const SearchResult& r) {
  const std::size_t fp32_bytes = parameter_bytes(m, uniform_plan(m, {0, 0}));
  std::ostringstream o;
  char buf[512];
  std::snprintf(buf, sizeof buf, "FP32 reference: force RMSE vs DFT %.3f meV/Å, energy RMSE vs DFT %.3f meV/atom, %zu parameter bytes.\n\n",
                r.fp32.f_dft, r.fp32.e_dft, fp32_bytes);
  o << buf;
  o << "| plan | parameter bytes | size vs FP32 | est. cost | F RMSE vs FP32 (meV/Å) | predicted | F RMSE vs DFT (meV/Å) | vs FP32's | E RMSE vs FP32 (meV/atom) | E RMSE vs DFT (meV/atom) | budget | Pareto | bits per layer |\n";
  o << "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  std::vector<std::size_t> order(r.tried.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return r.tried[a].cost > r.tried[b].cost; });
  for (std::size_t k : order) {
    const PlanResult& t = r.tried[k];
    std::snprintf(buf, sizeof buf, "| %s%s | %zu | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f× | %.4f | %.3f | %s | %s | `%s` |\n",
                  t.label.c_str(), static_cast<int>(k) == r.chosen ? " (chosen)" : "", t.bytes,
                  static_cast<double>(t.bytes) / static_cast<double>(fp32_bytes), t.cost, t.err.f_ref, t.predicted_dev,
                  t.err.f_dft, t.err.f_dft / r.fp32.f_dft, t.err.e_ref, t.err.e_dft, t.within_budget ? "yes" : "no",
                  t.pareto ? "yes" : "", plan_summary(m, t.plan).c_str());
    o << buf;
  }
  // Per-layer sensitivities: force RMSE vs FP32 with only that layer quantized.
  o << "\nPer-layer sensitivity: force RMSE vs FP32 (meV/Å) when only that layer is quantized "
       "(weights and activations at the bits shown), measured; layer MACs per frame.\n\n| layer | MACs/frame |";
  for (int b : r.levels)
    if (b) o << " " << b << "-bit |";
  o << "\n|---|---|";
  for (int b : r.levels)
    if (b) o << "---|";
  o << "\n";
  for (std::size_t i = 0; i < r.layers.size(); ++i) {
    std::snprintf(buf, sizeof buf, "| %s | %.3g |", r.layers[i].name.c_str(), i < r.macs.size() ? r.macs[i] : 0.0);
    o << buf;
    for (std::size_t v = 0; v < r.levels.size(); ++v) {
      if (!r.levels[v]) continue;
      std::snprintf(buf, sizeof buf, " %.3f |", r.sensitivity[i][v].f_ref);
      o << buf;
    }
    o << "\n";
  }
  return o.str();
}

}  // namespace qnn
