// See plan.hpp.
#include "qnn/quant/plan.hpp"

#include <fstream>
#include <sstream>

#include "qnn/error.hpp"

namespace qnn {

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

Model apply_plan(const Model& fp32, const QuantPlan& plan, const Calibration& cal, const QuantOptions& opt) {
  if (is_quantized(fp32))
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
    set_layer_bits(spec, b);
    if (b.weight_bits) {
      spec.weight_scale = weight_scales(L.weight, L.in, L.out, b.weight_bits, opt.per_channel, opt.weight_observer);
      quantize_weights(L.weight, L.in, L.out, b.weight_bits, spec.weight_scale);
    }
    if (b.act_bits) {
      spec.act_scale = range_scale(cal.inputs[i].range(opt.act_observer, b.act_bits, opt.percentile), b.act_bits);
    }
    const bool last_embed = layers[i].family == 0 &&
                            layers[i].layer + 1 == static_cast<int>(fp32.embed[static_cast<std::size_t>(layers[i].net)].layers.size());
    if (last_embed && b.act_bits && b.weight_bits <= 8 && b.act_bits <= 8) {
      // An int8 last embedding layer: G enters the descriptor as int8 (when every embedding
      // net has out_scale, the engine runs the integer descriptor).
      spec.out_scale =
          range_scale(cal.embed_out[static_cast<std::size_t>(layers[i].net)].range(opt.act_observer, 8, opt.percentile), 8);
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

}  // namespace qnn
