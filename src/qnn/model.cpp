// qnn v1 model: architecture checks, random initialisation, and the .qnn file format
// (docs/format.md).
#include "qnn/model.hpp"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "qnn/error.hpp"

#ifndef QNN_VERSION
#define QNN_VERSION "unknown"
#endif

namespace qnn {

namespace {

constexpr char kMagic[8] = {'Q', 'N', 'N', 'M', 'O', 'D', 'E', 'L'};
constexpr std::size_t kPreamble = 24;  // magic(8) version(4) flags(4) header_len(8)
constexpr std::size_t kAlign = 64;

static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE-754 float/double required");

std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

std::size_t dtype_size(const std::string& dtype) {
  if (dtype == "f32" || dtype == "i32") return 4;
  if (dtype == "f64") return 8;
  if (dtype == "i8") return 1;
  if (dtype == "i16") return 2;
  return 0;
}

// One tensor in the blob area, as listed in the header.
struct TensorEntry {
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::size_t offset = 0;
  std::size_t nbytes = 0;
};

// Collects tensors for writing: converts to the storage dtype and records offsets.
class BlobWriter {
 public:
  void add(const std::string& name, const std::string& dtype, const std::vector<std::int64_t>& shape,
           const std::vector<double>& values) {
    std::size_t n = 1;
    for (auto s : shape) n *= static_cast<std::size_t>(s);
    if (n != values.size()) {
      throw Error("internal error writing tensor '" + name + "': shape does not match its data");
    }
    std::size_t offset = align_up(blob_.size());
    blob_.resize(offset + n * dtype_size(dtype), 0);
    char* dst = blob_.data() + offset;
    for (std::size_t i = 0; i < n; ++i) {
      if (dtype == "f32") {
        float v = static_cast<float>(values[i]);
        std::memcpy(dst + 4 * i, &v, 4);
      } else if (dtype == "f64") {
        std::memcpy(dst + 8 * i, &values[i], 8);
      } else if (dtype == "i8") {
        auto v = static_cast<std::int8_t>(values[i]);
        std::memcpy(dst + i, &v, 1);
      } else if (dtype == "i16") {
        auto v = static_cast<std::int16_t>(values[i]);
        std::memcpy(dst + 2 * i, &v, 2);
      } else if (dtype == "i32") {
        auto v = static_cast<std::int32_t>(values[i]);
        std::memcpy(dst + 4 * i, &v, 4);
      } else {
        throw Error("internal error: unknown dtype " + dtype);
      }
    }
    nlohmann::json t;
    t["name"] = name;
    t["dtype"] = dtype;
    t["shape"] = shape;
    t["offset"] = offset;
    t["nbytes"] = n * dtype_size(dtype);
    index_.push_back(t);
  }
  const std::vector<char>& blob() const { return blob_; }
  const nlohmann::json& index() const { return index_; }

 private:
  std::vector<char> blob_;
  nlohmann::json index_ = nlohmann::json::array();
};

// Reads tensors from the blob area with bounds and shape checks; errors name the file.
class BlobReader {
 public:
  BlobReader(std::string path, const char* blob, std::size_t size, const nlohmann::json& index)
      : path_(std::move(path)), blob_(blob), size_(size) {
    if (!index.is_array()) fail("'tensors' is not an array");
    for (const auto& t : index) {
      TensorEntry e;
      std::string name;
      try {
        name = t.at("name").get<std::string>();
        e.dtype = t.at("dtype").get<std::string>();
        e.shape = t.at("shape").get<std::vector<std::int64_t>>();
        e.offset = t.at("offset").get<std::size_t>();
        e.nbytes = t.at("nbytes").get<std::size_t>();
      } catch (const nlohmann::json::exception& ex) {
        fail(std::string("malformed tensor entry: ") + ex.what());
      }
      if (dtype_size(e.dtype) == 0) fail("tensor '" + name + "' has unknown dtype '" + e.dtype + "'");
      std::size_t n = 1;
      for (auto s : e.shape) {
        if (s < 0) fail("tensor '" + name + "' has a negative dimension");
        n *= static_cast<std::size_t>(s);
      }
      if (n * dtype_size(e.dtype) != e.nbytes) {
        fail("tensor '" + name + "' has nbytes " + std::to_string(e.nbytes) + " but its shape and dtype need " +
             std::to_string(n * dtype_size(e.dtype)));
      }
      if (e.offset > size_ || e.nbytes > size_ - e.offset) {
        fail("tensor '" + name + "' lies outside the data section (truncated or inconsistent file)");
      }
      if (!entries_.emplace(name, e).second) fail("tensor '" + name + "' is listed twice");
    }
  }

  bool has(const std::string& name) const { return entries_.count(name) != 0; }

  // Returns the tensor as doubles after checking its shape; rejects NaN/Inf.
  std::vector<double> get(const std::string& name, const std::vector<std::int64_t>& shape) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) fail("missing tensor '" + name + "'");
    const TensorEntry& e = it->second;
    if (e.shape != shape) {
      fail("tensor '" + name + "' has shape " + shape_str(e.shape) + ", the architecture needs " +
           shape_str(shape));
    }
    std::size_t n = e.nbytes / dtype_size(e.dtype);
    std::vector<double> out(n);
    const char* src = blob_ + e.offset;
    for (std::size_t i = 0; i < n; ++i) {
      if (e.dtype == "f32") {
        float v;
        std::memcpy(&v, src + 4 * i, 4);
        out[i] = v;
      } else if (e.dtype == "f64") {
        std::memcpy(&out[i], src + 8 * i, 8);
      } else if (e.dtype == "i8") {
        std::int8_t v;
        std::memcpy(&v, src + i, 1);
        out[i] = v;
      } else if (e.dtype == "i16") {
        std::int16_t v;
        std::memcpy(&v, src + 2 * i, 2);
        out[i] = v;
      } else {
        std::int32_t v;
        std::memcpy(&v, src + 4 * i, 4);
        out[i] = v;
      }
      if (!std::isfinite(out[i])) fail("tensor '" + name + "' contains NaN or Inf");
    }
    return out;
  }

  const std::string& dtype(const std::string& name) const { return entries_.at(name).dtype; }

  [[noreturn]] void fail(const std::string& msg) const { throw Error(path_ + ": " + msg); }

 private:
  static std::string shape_str(const std::vector<std::int64_t>& s) {
    std::string r = "(";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + ")";
  }
  std::string path_;
  const char* blob_;
  std::size_t size_;
  std::map<std::string, TensorEntry> entries_;
};

std::uint32_t crc32_of(const char* data, std::size_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (n > 0) {
    auto chunk = static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data), chunk);
    data += chunk;
    n -= chunk;
  }
  return static_cast<std::uint32_t>(crc);
}

// Residual kind implied by a layer's shape (docs/model.md eq. G, eq. F).
Residual residual_for(int in, int out, bool timestep) {
  if (out == in) return timestep ? Residual::Timestep : Residual::Identity;
  if (out == 2 * in) return Residual::Doubling;
  return Residual::None;
}

std::string layer_name(const std::string& net, int s, int l) {
  return net + "." + std::to_string(s) + "." + std::to_string(l);
}

}  // namespace

// ------------------------------------------------------------------------------ enums

const char* to_string(Activation a) { return a == Activation::Tanh ? "tanh" : "linear"; }

Activation activation_from_string(const std::string& s) {
  if (s == "tanh") return Activation::Tanh;
  if (s == "linear") return Activation::Linear;
  throw Error("unknown activation '" + s + "' (known: tanh, linear)");
}

const char* to_string(Residual r) {
  switch (r) {
    case Residual::None: return "none";
    case Residual::Identity: return "identity";
    case Residual::Doubling: return "doubling";
    case Residual::Timestep: return "timestep";
  }
  return "none";
}

static Residual residual_from_string(const std::string& s) {
  if (s == "none") return Residual::None;
  if (s == "identity") return Residual::Identity;
  if (s == "doubling") return Residual::Doubling;
  if (s == "timestep") return Residual::Timestep;
  throw Error("unknown residual kind '" + s + "' (known: none, identity, doubling, timestep)");
}

// ------------------------------------------------------------------------------ Model

std::size_t Net::parameter_count() const {
  std::size_t n = 0;
  for (const auto& l : layers) n += l.weight.size() + l.bias.size() + l.dt.size();
  return n;
}

std::size_t Model::parameter_count() const {
  std::size_t n = 0;
  for (const auto& net : embed) n += net.parameter_count();
  for (const auto& net : fit) n += net.parameter_count();
  return n;
}

int Model::species_index(const std::string& name) const {
  for (int i = 0; i < nspecies(); ++i) {
    if (species[static_cast<std::size_t>(i)] == name) return i;
  }
  return -1;
}

Model Model::make_random(const std::vector<std::string>& species, double rcut, double rcut_smth,
                         const std::vector<int>& sel, const std::vector<int>& embed_widths, int axis_neuron,
                         const std::vector<int>& fit_widths, bool resnet_dt, std::uint64_t seed) {
  Model m;
  m.species = species;
  m.rcut = rcut;
  m.rcut_smth = rcut_smth;
  m.sel = sel;
  m.neighbor_norm = 0;
  for (int s : sel) m.neighbor_norm += s;
  m.axis_neuron = axis_neuron;
  m.embed_widths = embed_widths;
  m.fit_widths = fit_widths;
  m.resnet_dt = resnet_dt;
  const int S = m.nspecies();
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);

  auto make_layer = [&](int in, int out, Activation act, Residual res) {
    DenseLayer l;
    l.in = in;
    l.out = out;
    l.activation = act;
    l.residual = res;
    l.weight.resize(static_cast<std::size_t>(in) * out);
    for (auto& w : l.weight) w = normal(rng) / std::sqrt(static_cast<double>(in + out));
    l.bias.resize(static_cast<std::size_t>(out));
    for (auto& b : l.bias) b = normal(rng);
    if (res == Residual::Timestep) {
      l.dt.resize(static_cast<std::size_t>(out));
      for (auto& d : l.dt) d = 0.1 + 0.001 * normal(rng);
    }
    return l;
  };

  for (int s = 0; s < S; ++s) {
    Net net;
    int in = 1;
    for (int w : embed_widths) {
      net.layers.push_back(make_layer(in, w, Activation::Tanh, residual_for(in, w, false)));
      in = w;
    }
    m.embed.push_back(std::move(net));
  }
  for (int s = 0; s < S; ++s) {
    Net net;
    int in = m.descriptor_dim();
    for (int w : fit_widths) {
      Residual r = (w == in) ? (resnet_dt ? Residual::Timestep : Residual::Identity) : Residual::None;
      net.layers.push_back(make_layer(in, w, Activation::Tanh, r));
      in = w;
    }
    net.layers.push_back(make_layer(in, 1, Activation::Linear, Residual::None));
    m.fit.push_back(std::move(net));
  }
  m.energy_bias.assign(static_cast<std::size_t>(S), 0.0);
  m.mean_s.assign(static_cast<std::size_t>(S * S), 0.0);
  m.std_s.assign(static_cast<std::size_t>(S * S), 1.0);
  m.std_r.assign(static_cast<std::size_t>(S * S), 1.0);
  m.provenance = {{"created_by", "Model::make_random"}, {"seed", seed}};
  m.validate("random model");
  return m;
}

void Model::validate(const std::string& what) const {
  auto fail = [&](const std::string& msg) { throw Error(what + ": " + msg); };
  if (type != "se_e2_a") fail("unknown model type '" + type + "' (this qnn runs se_e2_a)");
  if (units != "metal") fail("units are '" + units + "'; qnn models use LAMMPS 'metal' units");
  const int S = nspecies();
  if (S == 0) fail("no species");
  std::set<std::string> names(species.begin(), species.end());
  if (static_cast<int>(names.size()) != S) fail("duplicate species names");
  for (const auto& n : species) {
    if (n.empty()) fail("empty species name");
  }
  if (!(rcut > 0) || !(rcut_smth >= 0) || !(rcut_smth < rcut) || !std::isfinite(rcut)) {
    fail("cutoffs must satisfy 0 <= rcut_smth < rcut (got rcut_smth " + std::to_string(rcut_smth) + ", rcut " +
         std::to_string(rcut) + ")");
  }
  if (static_cast<int>(sel.size()) != S) fail("sel has " + std::to_string(sel.size()) + " entries for " + std::to_string(S) + " species");
  if (!(neighbor_norm > 0) || !std::isfinite(neighbor_norm)) fail("neighbor_norm must be positive");
  if (embed_widths.empty() || fit_widths.empty()) fail("empty embedding or fitting widths");
  for (int w : embed_widths) {
    if (w <= 0) fail("non-positive embedding width");
  }
  for (int w : fit_widths) {
    if (w <= 0) fail("non-positive fitting width");
  }
  if (axis_neuron <= 0 || axis_neuron > m1()) fail("axis_neuron must be in [1, M1=" + std::to_string(m1()) + "]");
  if (static_cast<int>(embed.size()) != S) fail("expected one embedding net per species (" + std::to_string(S) + "), found " + std::to_string(embed.size()));
  if (static_cast<int>(fit.size()) != S) fail("expected one fitting net per species (" + std::to_string(S) + "), found " + std::to_string(fit.size()));
  if (static_cast<int>(energy_bias.size()) != S) fail("energy_bias must have one entry per species");
  const auto SS = static_cast<std::size_t>(S * S);
  if (mean_s.size() != SS || std_s.size() != SS || std_r.size() != SS) fail("normalisation statistics must be (S, S)");
  for (std::size_t i = 0; i < SS; ++i) {
    if (!std::isfinite(mean_s[i]) || !(std_s[i] > 0) || !(std_r[i] > 0) || !std::isfinite(std_s[i]) ||
        !std::isfinite(std_r[i])) {
      fail("normalisation statistics must be finite with positive standard deviations");
    }
  }
  auto check_net = [&](const Net& net, const std::string& name, int in0, const std::vector<int>& widths,
                       bool has_output) {
    std::size_t expect = widths.size() + (has_output ? 1 : 0);
    if (net.layers.size() != expect) fail(name + " has " + std::to_string(net.layers.size()) + " layers, expected " + std::to_string(expect));
    int in = in0;
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
      const DenseLayer& L = net.layers[l];
      int out = l < widths.size() ? widths[l] : 1;
      std::string ln = name + " layer " + std::to_string(l);
      if (L.in != in || L.out != out) fail(ln + " is " + std::to_string(L.in) + "->" + std::to_string(L.out) + ", expected " + std::to_string(in) + "->" + std::to_string(out));
      if (L.weight.size() != static_cast<std::size_t>(in) * out || L.bias.size() != static_cast<std::size_t>(out)) fail(ln + ": weight/bias shape mismatch");
      if (L.residual == Residual::Timestep && L.dt.size() != static_cast<std::size_t>(out)) fail(ln + ": timestep residual needs dt of size out");
      if (L.residual != Residual::Timestep && !L.dt.empty()) fail(ln + ": dt given for a layer without timestep residual");
      if ((L.residual == Residual::Identity || L.residual == Residual::Timestep) && in != out) fail(ln + ": identity residual needs in == out");
      if (L.residual == Residual::Doubling && out != 2 * in) fail(ln + ": doubling residual needs out == 2*in");
      bool last = has_output && l + 1 == net.layers.size();
      if (last && (L.activation != Activation::Linear || L.residual != Residual::None)) fail(ln + ": the output layer must be linear without residual");
      for (double v : L.weight) {
        if (!std::isfinite(v)) fail(ln + ": weights contain NaN or Inf");
      }
      for (double v : L.bias) {
        if (!std::isfinite(v)) fail(ln + ": biases contain NaN or Inf");
      }
      const QuantSpec& q = L.quant;
      if (q.weight_bits != 0 && (q.weight_bits < 2 || q.weight_bits > 16)) fail(ln + ": weight_bits must be 0 (float) or 2..16");
      if (q.act_bits != 0 && (q.act_bits < 2 || q.act_bits > 16)) fail(ln + ": act_bits must be 0 (float) or 2..16");
      if (q.weight_bits != 0) {
        if (q.weight_scale.size() != 1 && q.weight_scale.size() != static_cast<std::size_t>(out)) fail(ln + ": weight_scale must be per tensor (1) or per channel (" + std::to_string(out) + ")");
        for (float s : q.weight_scale) {
          if (!(s > 0) || !std::isfinite(s)) fail(ln + ": weight scales must be positive and finite");
        }
        if (!q.weight_zero_point.empty() && q.weight_zero_point.size() != q.weight_scale.size()) fail(ln + ": weight_zero_point must match weight_scale in size");
      }
      if (q.act_bits != 0 && (!(q.act_scale > 0) || !std::isfinite(q.act_scale))) fail(ln + ": act_scale must be positive and finite");
      if (!(q.out_scale >= 0) || !std::isfinite(q.out_scale)) fail(ln + ": out_scale must be non-negative and finite");
      in = out;
    }
  };
  for (int s = 0; s < S; ++s) {
    check_net(embed[static_cast<std::size_t>(s)], "embedding net " + species[static_cast<std::size_t>(s)], 1, embed_widths, false);
    check_net(fit[static_cast<std::size_t>(s)], "fitting net " + species[static_cast<std::size_t>(s)], descriptor_dim(), fit_widths, true);
  }
  for (double b : energy_bias) {
    if (!std::isfinite(b)) fail("energy_bias contains NaN or Inf");
  }
}

// ------------------------------------------------------------------------------ writing

void write_model(const Model& model, const std::string& path) {
  model.validate(path);
  const std::string fdtype = model.provenance.value("storage_dtype", std::string("f32"));
  if (fdtype != "f32" && fdtype != "f64") throw Error(path + ": provenance.storage_dtype must be f32 or f64");
  BlobWriter blob;
  nlohmann::json layers = nlohmann::json::array();
  const int S = model.nspecies();
  auto emit = [&](const std::vector<Net>& nets, const std::string& kind) {
    for (int s = 0; s < S; ++s) {
      const Net& net = nets[static_cast<std::size_t>(s)];
      for (std::size_t l = 0; l < net.layers.size(); ++l) {
        const DenseLayer& L = net.layers[l];
        const std::string name = layer_name(kind, s, static_cast<int>(l));
        nlohmann::json j;
        j["name"] = name;
        j["in"] = L.in;
        j["out"] = L.out;
        j["activation"] = to_string(L.activation);
        j["residual"] = to_string(L.residual);
        const QuantSpec& q = L.quant;
        if (q.weight_bits != 0) {
          // Integer weights: store w / scale (exact integers) and the scales.
          const std::string idt = q.weight_bits <= 8 ? "i8" : "i16";
          std::vector<double> ints(L.weight.size());
          const std::size_t nch = q.weight_scale.size();
          for (std::size_t k = 0; k < L.weight.size(); ++k) {
            const std::size_t c = nch == 1 ? 0 : k % static_cast<std::size_t>(L.out);
            const double qv = L.weight[k] / static_cast<double>(q.weight_scale[c]);
            const double r = std::nearbyint(qv);
            if (std::abs(qv - r) > 1e-6 * std::max(1.0, std::abs(r))) {
              throw Error(path + ": layer " + name + " is marked " + std::to_string(q.weight_bits) +
                          "-bit but its weights are not integer multiples of the scales");
            }
            ints[k] = r;
          }
          blob.add(name + ".weight", idt, {L.in, L.out}, ints);
          std::vector<double> sc(q.weight_scale.begin(), q.weight_scale.end());
          blob.add(name + ".weight_scale", "f32", {static_cast<std::int64_t>(sc.size())}, sc);
        } else {
          blob.add(name + ".weight", fdtype, {L.in, L.out}, L.weight);
        }
        blob.add(name + ".bias", fdtype, {L.out}, L.bias);
        if (!L.dt.empty()) blob.add(name + ".dt", fdtype, {L.out}, L.dt);
        nlohmann::json qj = nlohmann::json::object();
        if (q.quantized() || !q.mode.empty()) {
          qj["weight_bits"] = q.weight_bits;
          qj["act_bits"] = q.act_bits;
          qj["mode"] = q.mode;
          qj["act_scale"] = q.act_scale;
          qj["act_zero_point"] = q.act_zero_point;
          if (q.out_scale != 0.0f) qj["out_scale"] = q.out_scale;
          qj["weight_granularity"] = q.weight_scale.size() == 1 ? "per_tensor" : "per_channel";
          if (!q.weight_zero_point.empty()) qj["weight_zero_point"] = q.weight_zero_point;
        }
        j["quant"] = qj;
        layers.push_back(j);
      }
    }
  };
  emit(model.embed, "embed");
  emit(model.fit, "fit");
  blob.add("energy_bias", "f64", {S}, model.energy_bias);
  blob.add("mean_s", "f64", {S, S}, model.mean_s);
  blob.add("std_s", "f64", {S, S}, model.std_s);
  blob.add("std_r", "f64", {S, S}, model.std_r);

  nlohmann::json h;
  h["format"] = "qnn";
  h["format_version"] = Model::kFormatVersion;
  h["type"] = model.type;
  h["units"] = model.units;
  h["species"] = model.species;
  h["rcut"] = model.rcut;
  h["rcut_smth"] = model.rcut_smth;
  h["sel"] = model.sel;
  h["neighbor_norm"] = model.neighbor_norm;
  h["axis_neuron"] = model.axis_neuron;
  h["embed_widths"] = model.embed_widths;
  h["fit_widths"] = model.fit_widths;
  h["resnet_dt"] = model.resnet_dt;
  h["default_mode"] = model.default_mode;
  h["layers"] = layers;
  h["tensors"] = blob.index();
  h["blob_bytes"] = blob.blob().size();
  nlohmann::json prov = model.provenance;
  if (!prov.contains("code_version")) prov["code_version"] = std::string("qnn ") + QNN_VERSION;
  h["provenance"] = prov;
  const std::string header = h.dump(1);

  std::vector<char> buf(kPreamble);
  std::memcpy(buf.data(), kMagic, 8);
  const std::uint32_t version = Model::kFormatVersion, flags = 0;
  const std::uint64_t hlen = header.size();
  std::memcpy(buf.data() + 8, &version, 4);
  std::memcpy(buf.data() + 12, &flags, 4);
  std::memcpy(buf.data() + 16, &hlen, 8);
  buf.insert(buf.end(), header.begin(), header.end());
  buf.resize(align_up(buf.size()), 0);
  buf.insert(buf.end(), blob.blob().begin(), blob.blob().end());
  const std::uint32_t crc = crc32_of(buf.data(), buf.size());
  buf.resize(buf.size() + 4);
  std::memcpy(buf.data() + buf.size() - 4, &crc, 4);

  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(path + ": cannot open for writing");
    f.write(buf.data(), static_cast<std::streamsize>(buf.size()));
    f.flush();
    if (!f) {
      std::remove(tmp.c_str());
      throw Error(path + ": write failed (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot move the written file into place");
  }
}

// ------------------------------------------------------------------------------ reading

std::vector<char> read_file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open model file (does it exist and is it readable?)");
  std::vector<char> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw Error(path + ": read error");
  return buf;
}

Model read_model(const std::string& path) { return parse_model(read_file_bytes(path), path); }

Model parse_model(const std::vector<char>& buf, const std::string& path) {
  auto fail = [&](const std::string& msg) -> void { throw Error(path + ": " + msg); };

  if (buf.size() < kPreamble + 4) {
    if (buf.size() >= 8 && std::memcmp(buf.data(), kMagic, 8) != 0) fail("not a qnn model file (bad magic)");
    fail("file is truncated (" + std::to_string(buf.size()) + " bytes)");
  }
  if (std::memcmp(buf.data(), kMagic, 8) != 0) fail("not a qnn model file (bad magic)");
  std::uint32_t version = 0;
  std::uint64_t hlen = 0;
  std::memcpy(&version, buf.data() + 8, 4);
  std::memcpy(&hlen, buf.data() + 16, 8);
  if (version != Model::kFormatVersion) {
    fail("unsupported format version " + std::to_string(version) + " (this qnn reads version " +
         std::to_string(Model::kFormatVersion) + ")");
  }
  if (hlen > buf.size() - kPreamble - 4) fail("file is truncated (header length exceeds the file)");
  const std::size_t blob_start = align_up(kPreamble + hlen);
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(buf.begin() + kPreamble, buf.begin() + static_cast<std::ptrdiff_t>(kPreamble + hlen));
  } catch (const nlohmann::json::exception& ex) {
    // A corrupt header is reported as such below if the checksum also fails.
    std::uint32_t stored;
    std::memcpy(&stored, buf.data() + buf.size() - 4, 4);
    if (crc32_of(buf.data(), buf.size() - 4) != stored) fail("checksum mismatch: the file is corrupt or truncated");
    fail(std::string("header is not valid JSON: ") + ex.what());
  }
  std::size_t blob_bytes = 0;
  try {
    blob_bytes = h.at("blob_bytes").get<std::size_t>();
  } catch (const nlohmann::json::exception&) {
    fail("header lacks 'blob_bytes'");
  }
  if (blob_start > buf.size() || blob_bytes + 4 != buf.size() - blob_start) {
    if (blob_start + blob_bytes + 4 > buf.size()) fail("file is truncated (data section shorter than the header says)");
    fail("file has " + std::to_string(buf.size() - blob_start - 4 - blob_bytes) + " unexpected trailing bytes");
  }
  std::uint32_t stored;
  std::memcpy(&stored, buf.data() + buf.size() - 4, 4);
  if (crc32_of(buf.data(), buf.size() - 4) != stored) fail("checksum mismatch: the file is corrupt");

  Model m;
  try {
    if (h.at("format").get<std::string>() != "qnn") fail("header 'format' is not 'qnn'");
    m.type = h.at("type").get<std::string>();
    m.units = h.at("units").get<std::string>();
    m.species = h.at("species").get<std::vector<std::string>>();
    m.rcut = h.at("rcut").get<double>();
    m.rcut_smth = h.at("rcut_smth").get<double>();
    m.sel = h.at("sel").get<std::vector<int>>();
    m.neighbor_norm = h.at("neighbor_norm").get<double>();
    m.axis_neuron = h.at("axis_neuron").get<int>();
    m.embed_widths = h.at("embed_widths").get<std::vector<int>>();
    m.fit_widths = h.at("fit_widths").get<std::vector<int>>();
    m.resnet_dt = h.at("resnet_dt").get<bool>();
    m.default_mode = h.value("default_mode", std::string("fp32"));
    m.provenance = h.value("provenance", nlohmann::json::object());
  } catch (const nlohmann::json::exception& ex) {
    fail(std::string("header is missing a key or has a wrong type: ") + ex.what());
  }
  const int S = m.nspecies();
  if (S == 0) fail("model lists no species");
  if (static_cast<int>(m.sel.size()) != S) fail("sel has " + std::to_string(m.sel.size()) + " entries but the model lists " + std::to_string(S) + " species");
  if (m.axis_neuron <= 0 || m.embed_widths.empty() || m.fit_widths.empty()) fail("inconsistent architecture (widths/axis_neuron)");

  BlobReader blobs(path, buf.data() + blob_start, blob_bytes, h.at("tensors"));
  std::map<std::string, nlohmann::json> layer_meta;
  try {
    for (const auto& L : h.at("layers")) layer_meta[L.at("name").get<std::string>()] = L;
  } catch (const nlohmann::json::exception& ex) {
    fail(std::string("malformed 'layers' list: ") + ex.what());
  }

  auto read_net = [&](const std::string& kind, int s, int in0, const std::vector<int>& widths, bool output) {
    Net net;
    int in = in0;
    const std::size_t nl = widths.size() + (output ? 1 : 0);
    for (std::size_t l = 0; l < nl; ++l) {
      const std::string name = layer_name(kind, s, static_cast<int>(l));
      auto it = layer_meta.find(name);
      if (it == layer_meta.end()) fail("missing layer '" + name + "' (species '" + m.species[static_cast<std::size_t>(s)] + "')");
      const nlohmann::json& j = it->second;
      DenseLayer L;
      try {
        L.in = j.at("in").get<int>();
        L.out = j.at("out").get<int>();
        L.activation = activation_from_string(j.at("activation").get<std::string>());
        L.residual = residual_from_string(j.at("residual").get<std::string>());
      } catch (const nlohmann::json::exception& ex) {
        fail("layer '" + name + "': " + ex.what());
      } catch (const Error& ex) {
        fail("layer '" + name + "': " + ex.what());
      }
      const int out = l < widths.size() ? widths[l] : 1;
      if (L.in != in || L.out != out) {
        fail("layer '" + name + "' is " + std::to_string(L.in) + "->" + std::to_string(L.out) +
             " but the architecture needs " + std::to_string(in) + "->" + std::to_string(out));
      }
      L.weight = blobs.get(name + ".weight", {in, out});
      L.bias = blobs.get(name + ".bias", {out});
      if (blobs.has(name + ".dt")) L.dt = blobs.get(name + ".dt", {out});
      const nlohmann::json q = j.value("quant", nlohmann::json::object());
      if (!q.empty()) {
        try {
          L.quant.weight_bits = q.value("weight_bits", 0);
          L.quant.act_bits = q.value("act_bits", 0);
          L.quant.mode = q.value("mode", std::string());
          L.quant.act_scale = q.value("act_scale", 0.0f);
          L.quant.act_zero_point = q.value("act_zero_point", 0);
          L.quant.out_scale = q.value("out_scale", 0.0f);
          if (q.contains("weight_zero_point")) L.quant.weight_zero_point = q.at("weight_zero_point").get<std::vector<std::int32_t>>();
        } catch (const nlohmann::json::exception& ex) {
          fail("layer '" + name + "' quantization metadata: " + ex.what());
        }
      }
      const std::string wdt = blobs.dtype(name + ".weight");
      const bool int_weights = wdt == "i8" || wdt == "i16";
      if (int_weights != (L.quant.weight_bits != 0)) {
        fail("layer '" + name + "': weight dtype " + wdt + " does not match weight_bits " + std::to_string(L.quant.weight_bits));
      }
      if (int_weights) {
        // Scales are per channel (out) or per tensor (1); the dequantised weight is q·scale.
        std::vector<double> sc;
        if (blobs.has(name + ".weight_scale")) {
          const bool per_tensor = q.value("weight_granularity", std::string("per_channel")) == "per_tensor";
          sc = blobs.get(name + ".weight_scale", {per_tensor ? 1 : out});
        } else {
          fail("layer '" + name + "' has integer weights but no weight_scale tensor");
        }
        const long lim = (1L << (L.quant.weight_bits - 1)) - 1;
        for (std::size_t k = 0; k < L.weight.size(); ++k) {
          if (std::abs(L.weight[k]) > static_cast<double>(lim)) fail("layer '" + name + "': integer weight outside the range of " + std::to_string(L.quant.weight_bits) + " bits");
          const std::size_t c = sc.size() == 1 ? 0 : k % static_cast<std::size_t>(out);
          L.weight[k] *= static_cast<double>(static_cast<float>(sc[c]));
        }
        L.quant.weight_scale.assign(sc.begin(), sc.end());
      }
      net.layers.push_back(std::move(L));
      in = out;
    }
    return net;
  };
  for (int s = 0; s < S; ++s) m.embed.push_back(read_net("embed", s, 1, m.embed_widths, false));
  for (int s = 0; s < S; ++s) m.fit.push_back(read_net("fit", s, m.m1() * m.axis_neuron, m.fit_widths, true));
  m.energy_bias = blobs.get("energy_bias", {S});
  m.mean_s = blobs.get("mean_s", {S, S});
  m.std_s = blobs.get("std_s", {S, S});
  m.std_r = blobs.get("std_r", {S, S});
  m.validate(path);
  return m;
}

// ------------------------------------------------------------------------------ describe

std::string describe(const Model& m) {
  std::ostringstream o;
  o << "model type      " << m.type << " (units " << m.units << ")\n";
  o << "species         ";
  for (int s = 0; s < m.nspecies(); ++s) o << (s ? ", " : "") << m.species[static_cast<std::size_t>(s)] << " (sel " << m.sel[static_cast<std::size_t>(s)] << ")";
  o << "\ncutoff          rcut " << m.rcut << " A, rcut_smth " << m.rcut_smth << " A\n";
  o << "embedding net   1";
  for (int w : m.embed_widths) o << " -> " << w;
  o << " (per neighbour species), axis_neuron " << m.axis_neuron << "\n";
  o << "fitting net     " << m.descriptor_dim();
  for (int w : m.fit_widths) o << " -> " << w;
  o << " -> 1 (per centre species)" << (m.resnet_dt ? ", resnet_dt" : "") << "\n";
  o << "parameters      " << m.parameter_count() << "\n";
  o << "default mode    " << m.default_mode << "\n";
  o << "layer precision\n";
  auto list = [&](const std::vector<Net>& nets, const char* kind) {
    for (int s = 0; s < m.nspecies(); ++s) {
      const Net& net = nets[static_cast<std::size_t>(s)];
      for (std::size_t l = 0; l < net.layers.size(); ++l) {
        const DenseLayer& L = net.layers[l];
        const QuantSpec& q = L.quant;
        o << "  " << kind << "." << m.species[static_cast<std::size_t>(s)] << "." << l << "  " << L.in << "->" << L.out << "  ";
        if (!q.quantized()) {
          o << "fp32";
        } else {
          o << (q.mode.empty() ? "quantized" : q.mode) << " (w" << q.weight_bits << (q.weight_scale.size() == 1 ? " per-tensor" : " per-channel");
          if (q.act_bits) o << ", a" << q.act_bits;
          o << ")";
        }
        o << "\n";
      }
    }
  };
  list(m.embed, "embed");
  list(m.fit, "fit");
  // Provenance, one line per key; the (long) training config is left to `qnn info --json`.
  for (auto it = m.provenance.begin(); it != m.provenance.end(); ++it) {
    if (it.key() == "config") continue;
    o << "provenance      " << it.key() << ": " << (it->is_string() ? it->get<std::string>() : it->dump()) << "\n";
  }
  return o.str();
}

}  // namespace qnn
