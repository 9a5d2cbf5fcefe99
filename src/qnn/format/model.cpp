// qnn v1 model: architecture checks, random initialisation, and the .qnn file format
// (docs/format.md).
#include "qnn/format/model.hpp"

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

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <climits>
#include <cstdint>
#include <filesystem>

#include "qnn/error.hpp"

#ifndef QNN_VERSION
#define QNN_VERSION "unknown"
#endif

namespace qnn {

std::string QuantSpec::label() const {
  if (!quantized()) return "";
  if (act_bits == 0) return "weight-only";
  return (weight_bits <= 8 && act_bits <= 8) ? "int8" : "int16";
}

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
  std::uint64_t offset = 0;
  std::uint64_t nbytes = 0;
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

// ---- typed access to the header JSON: every error names the file and the key, e.g.
// "FILE: key 'layers[3].quant.act_scale': expected a number".
class Header {
 public:
  explicit Header(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& msg) const { throw Error(path_ + ": " + msg); }
  [[noreturn]] void expected(const std::string& key, const std::string& what) const {
    fail("key '" + key + "': expected " + what);
  }

  // obj[key] (obj is known to be an object); nullptr when absent.
  static const nlohmann::json* find(const nlohmann::json& obj, const std::string& key) {
    auto it = obj.find(key);
    return it == obj.end() ? nullptr : &*it;
  }
  const nlohmann::json& req(const nlohmann::json& obj, const std::string& where, const std::string& key,
                            const std::string& what) const {
    const nlohmann::json* v = find(obj, key);
    if (!v) fail("key '" + join(where, key) + "' is missing (expected " + what + ")");
    return *v;
  }
  // Refuses keys outside `known` (what this reader cannot honour).
  void only_keys(const nlohmann::json& obj, const std::string& where, std::initializer_list<const char*> known) const {
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      bool ok = false;
      for (const char* k : known) ok = ok || it.key() == k;
      if (!ok) {
        std::string list;
        for (const char* k : known) list += std::string(list.empty() ? "" : ", ") + k;
        fail("unknown key '" + join(where, it.key()) + "' (known: " + list + ")");
      }
    }
  }

  std::string str(const nlohmann::json& v, const std::string& key, std::size_t max_len = 256) const {
    if (!v.is_string()) expected(key, "a string");
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > max_len) fail("key '" + key + "': string longer than " + std::to_string(max_len) + " characters");
    return s;
  }
  std::int64_t integer(const nlohmann::json& v, const std::string& key, std::int64_t lo, std::int64_t hi) const {
    std::int64_t x = 0;
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(hi)) out_of_range(key, std::to_string(u), lo, hi);
      x = static_cast<std::int64_t>(u);
    } else if (v.is_number_integer()) {
      x = v.get<std::int64_t>();
    } else {
      expected(key, "an integer");
    }
    if (x < lo || x > hi) out_of_range(key, std::to_string(x), lo, hi);
    return x;
  }
  double number(const nlohmann::json& v, const std::string& key) const {
    if (!v.is_number()) expected(key, "a number");
    const double x = v.get<double>();
    if (!std::isfinite(x)) expected(key, "a finite number");
    return x;
  }
  bool boolean(const nlohmann::json& v, const std::string& key) const {
    if (!v.is_boolean()) expected(key, "true or false");
    return v.get<bool>();
  }
  const nlohmann::json& array(const nlohmann::json& v, const std::string& key, std::size_t max_size) const {
    if (!v.is_array()) expected(key, "an array");
    if (v.size() > max_size) fail("key '" + key + "': more than " + std::to_string(max_size) + " entries");
    return v;
  }
  const nlohmann::json& object(const nlohmann::json& v, const std::string& key) const {
    if (!v.is_object()) expected(key, "an object");
    return v;
  }
  std::vector<int> int_list(const nlohmann::json& v, const std::string& key, std::size_t max_size, std::int64_t lo,
                            std::int64_t hi) const {
    std::vector<int> out;
    for (std::size_t i = 0; i < array(v, key, max_size).size(); ++i) {
      out.push_back(static_cast<int>(integer(v[i], key + "[" + std::to_string(i) + "]", lo, hi)));
    }
    return out;
  }

  static std::string join(const std::string& where, const std::string& key) { return where.empty() ? key : where + "." + key; }

 private:
  [[noreturn]] void out_of_range(const std::string& key, const std::string& v, std::int64_t lo, std::int64_t hi) const {
    fail("key '" + key + "': " + v + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  std::string path_;
};

// Depth of the deepest array/object in JSON text (strings skipped); stops counting past `limit`.
// Run before parsing, so that no parser recursion or destructor sees a deeper document.
int json_depth(const char* p, std::size_t n, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < n; ++i) {
    const char c = p[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

// Reads tensors from the blob area. Every entry is checked when the index is read: name, a
// known dtype, a shape of non-negative dimensions whose 64-bit element count matches nbytes,
// an aligned offset, and a byte range inside the data section, disjoint from every other
// tensor's, the whole section covered. get() then checks the shape and dtype the architecture
// needs; unused() lists what no get() asked for.
class BlobReader {
 public:
  BlobReader(const Header& hdr, const char* blob, std::uint64_t size, const nlohmann::json& index)
      : hdr_(hdr), blob_(blob) {
    // Every tensor holds at least one byte, so there cannot be more tensors than bytes.
    hdr.array(index, "tensors", static_cast<std::size_t>(std::min<std::uint64_t>(size, 1u << 20)));
    std::vector<std::pair<std::uint64_t, std::string>> by_offset;
    for (std::size_t i = 0; i < index.size(); ++i) {
      const std::string key = "tensors[" + std::to_string(i) + "]";
      const nlohmann::json& t = hdr.object(index[i], key);
      hdr.only_keys(t, key, {"name", "dtype", "shape", "offset", "nbytes"});
      TensorEntry e;
      const std::string name = hdr.str(hdr.req(t, key, "name", "a string"), key + ".name");
      e.dtype = hdr.str(hdr.req(t, key, "dtype", "a string"), key + ".dtype");
      const nlohmann::json& shape = hdr.array(hdr.req(t, key, "shape", "an array"), key + ".shape", 4);
      const std::int64_t max_i = static_cast<std::int64_t>(size);
      e.offset = static_cast<std::uint64_t>(hdr.integer(hdr.req(t, key, "offset", "an integer"), key + ".offset", 0, max_i));
      e.nbytes = static_cast<std::uint64_t>(hdr.integer(hdr.req(t, key, "nbytes", "an integer"), key + ".nbytes", 0, max_i));
      const std::uint64_t dsize = dtype_size(e.dtype);
      if (dsize == 0) hdr.fail("tensor '" + name + "' has unknown dtype '" + e.dtype + "' (known: f32, f64, i8, i16, i32)");
      // Element count in 64 bits, each factor bounded by the data section (no wrap-around).
      std::uint64_t n = 1;
      for (std::size_t d = 0; d < shape.size(); ++d) {
        const std::int64_t dim = hdr.integer(shape[d], key + ".shape[" + std::to_string(d) + "]", 0, max_i);
        e.shape.push_back(dim);
        n = dim == 0 ? 0 : (n > static_cast<std::uint64_t>(max_i) / static_cast<std::uint64_t>(dim) ? static_cast<std::uint64_t>(max_i) + 1 : n * static_cast<std::uint64_t>(dim));
      }
      if (n > size / dsize || n * dsize != e.nbytes) {
        hdr.fail("tensor '" + name + "' has nbytes " + std::to_string(e.nbytes) + " but its shape " + shape_str(e.shape) +
                 " and dtype " + e.dtype + " need " + (n > size / dsize ? "more than the data section holds" : std::to_string(n * dsize)));
      }
      if (e.nbytes > size - e.offset) {
        hdr.fail("tensor '" + name + "' (offset " + std::to_string(e.offset) + ", " + std::to_string(e.nbytes) +
                 " bytes) lies outside the data section of " + std::to_string(size) + " bytes");
      }
      if (e.offset % kAlign != 0) hdr.fail("tensor '" + name + "' has offset " + std::to_string(e.offset) + ", not a multiple of 64");
      if (!entries_.emplace(name, e).second) hdr.fail("tensor '" + name + "' is listed twice");
      by_offset.emplace_back(e.offset, name);
    }
    std::sort(by_offset.begin(), by_offset.end());
    std::uint64_t end = 0;
    std::string prev;
    for (const auto& [offset, name] : by_offset) {
      if (offset < end) hdr.fail("tensors '" + prev + "' and '" + name + "' overlap in the data section");
      end = offset + entries_.at(name).nbytes;
      prev = name;
    }
    if (end != size) {
      hdr.fail("the data section has " + std::to_string(size) + " bytes but its tensors end at byte " + std::to_string(end));
    }
  }

  bool has(const std::string& name) const { return entries_.count(name) != 0; }

  // The tensor as doubles, after checking its shape and that its dtype is one of `dtypes`;
  // rejects NaN/Inf.
  std::vector<double> get(const std::string& name, const std::vector<std::int64_t>& shape,
                          std::initializer_list<const char*> dtypes) {
    auto it = entries_.find(name);
    if (it == entries_.end()) hdr_.fail("missing tensor '" + name + "'");
    const TensorEntry& e = it->second;
    used_.insert(name);
    if (e.shape != shape) {
      hdr_.fail("tensor '" + name + "' has shape " + shape_str(e.shape) + ", the architecture needs " + shape_str(shape));
    }
    bool ok = false;
    std::string list;
    for (const char* d : dtypes) {
      ok = ok || e.dtype == d;
      list += std::string(list.empty() ? "" : " or ") + d;
    }
    if (!ok) hdr_.fail("tensor '" + name + "' has dtype " + e.dtype + ", expected " + list);
    const std::size_t n = static_cast<std::size_t>(e.nbytes / dtype_size(e.dtype));
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
      if (!std::isfinite(out[i])) hdr_.fail("tensor '" + name + "' contains NaN or Inf");
    }
    return out;
  }

  const std::string& dtype(const std::string& name) const { return entries_.at(name).dtype; }

  // A tensor no get() asked for, or "" when every tensor was used.
  std::string unused() const {
    for (const auto& [name, e] : entries_) {
      if (!used_.count(name)) return name;
    }
    return "";
  }

 private:
  static std::string shape_str(const std::vector<std::int64_t>& s) {
    std::string r = "(";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + ")";
  }
  const Header& hdr_;
  const char* blob_;
  std::map<std::string, TensorEntry> entries_;
  std::set<std::string> used_;
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
    case Residual::DoublingTimestep: return "doubling_timestep";
  }
  return "none";
}

static Residual residual_from_string(const std::string& s) {
  if (s == "none") return Residual::None;
  if (s == "identity") return Residual::Identity;
  if (s == "doubling") return Residual::Doubling;
  if (s == "timestep") return Residual::Timestep;
  if (s == "doubling_timestep") return Residual::DoublingTimestep;
  throw Error("unknown residual kind '" + s + "' (known: none, identity, doubling, timestep, doubling_timestep)");
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

std::string Model::embed_name(int n) const {
  const int c = embed_centre(n);
  return c < 0 ? "embed." + std::to_string(embed_neighbour(n)) : "embed." + std::to_string(c) + "." + std::to_string(embed_neighbour(n));
}

std::string Model::embed_label(int n) const {
  const int c = embed_centre(n);
  const std::string a = species.at(static_cast<std::size_t>(embed_neighbour(n)));
  return c < 0 ? "embed." + a : "embed." + species.at(static_cast<std::size_t>(c)) + "." + a;
}

int Model::species_index(const std::string& name) const {
  for (int i = 0; i < nspecies(); ++i) {
    if (species[static_cast<std::size_t>(i)] == name) return i;
  }
  return -1;
}

Model Model::make_random(const std::vector<std::string>& species, double rcut, double rcut_smth,
                         const std::vector<int>& sel, const std::vector<int>& embed_widths, int axis_neuron,
                         const std::vector<int>& fit_widths, bool resnet_dt, std::uint64_t seed,
                         bool type_one_side) {
  Model m;
  m.type_one_side = type_one_side;
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

  for (int s = 0; s < m.n_embed_nets(); ++s) {
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
  auto num = [](double v) {
    std::ostringstream o;
    o << v;
    return o.str();
  };
  if (type != "se_e2_a") fail("unknown model type '" + type + "' (this qnn runs se_e2_a)");
  if (units != "metal") fail("units are '" + units + "'; qnn models use LAMMPS 'metal' units");
  if (env_mat != "qnn" && env_mat != "deepmd") fail("unknown env_mat '" + env_mat + "' (known: qnn, deepmd)");
  const int S = nspecies();
  if (S == 0) fail("no species");
  if (species.size() > static_cast<std::size_t>(limits::kMaxSpecies)) fail("more than " + std::to_string(limits::kMaxSpecies) + " species");
  std::set<std::string> names(species.begin(), species.end());
  if (static_cast<int>(names.size()) != S) fail("duplicate species names");
  for (const auto& n : species) {
    if (n.empty()) fail("empty species name");
    if (n.size() > limits::kMaxSpeciesName) fail("species name longer than " + std::to_string(limits::kMaxSpeciesName) + " characters");
    if (n == "NULL") fail("'NULL' is not a valid species name (pair_coeff uses it for types qnn does not handle)");
    for (char c : n) {
      if (!std::isgraph(static_cast<unsigned char>(c))) fail("species name '" + n + "' contains a space or control character");
    }
  }
  if (!(rcut > 0) || !(rcut_smth >= 0) || !(rcut_smth < rcut) || !std::isfinite(rcut)) {
    fail("cutoffs must satisfy 0 <= rcut_smth < rcut (got rcut_smth " + std::to_string(rcut_smth) + ", rcut " +
         std::to_string(rcut) + ")");
  }
  if (rcut > limits::kMaxRcut) fail("rcut " + num(rcut) + " A exceeds the maximum of " + num(limits::kMaxRcut) + " A");
  if (static_cast<int>(sel.size()) != S) fail("sel has " + std::to_string(sel.size()) + " entries for " + std::to_string(S) + " species");
  for (int v : sel) {
    if (v < 0 || v > limits::kMaxSel) fail("sel " + std::to_string(v) + " is outside [0, " + std::to_string(limits::kMaxSel) + "]");
  }
  if (!(neighbor_norm > 0) || !std::isfinite(neighbor_norm)) fail("neighbor_norm must be positive");
  if (neighbor_norm < limits::kMinNeighborNorm || neighbor_norm > limits::kMaxNeighborNorm) {
    fail("neighbor_norm " + num(neighbor_norm) + " is outside [" + num(limits::kMinNeighborNorm) + ", " + num(limits::kMaxNeighborNorm) + "]");
  }
  if (embed_widths.empty() || fit_widths.empty()) fail("empty embedding or fitting widths");
  if (embed_widths.size() > static_cast<std::size_t>(limits::kMaxLayers) || fit_widths.size() > static_cast<std::size_t>(limits::kMaxLayers)) {
    fail("more than " + std::to_string(limits::kMaxLayers) + " embedding or fitting layers");
  }
  for (int w : embed_widths) {
    if (w <= 0) fail("non-positive embedding width");
    if (w > limits::kMaxEmbedWidth) fail("embedding width " + std::to_string(w) + " exceeds " + std::to_string(limits::kMaxEmbedWidth));
  }
  for (int w : fit_widths) {
    if (w <= 0) fail("non-positive fitting width");
    if (w > limits::kMaxFitWidth) fail("fitting width " + std::to_string(w) + " exceeds " + std::to_string(limits::kMaxFitWidth));
  }
  if (axis_neuron <= 0 || axis_neuron > m1()) fail("axis_neuron must be in [1, M1=" + std::to_string(m1()) + "]");
  if (static_cast<std::int64_t>(m1()) * axis_neuron > limits::kMaxDescriptorDim) {
    fail("descriptor dimension M1*axis_neuron = " + std::to_string(static_cast<std::int64_t>(m1()) * axis_neuron) + " exceeds " +
         std::to_string(limits::kMaxDescriptorDim));
  }
  if (static_cast<int>(embed.size()) != n_embed_nets()) {
    fail(std::string("expected ") + (type_one_side ? "one embedding net per species (" : "one embedding net per pair of species (") +
         std::to_string(n_embed_nets()) + "), found " + std::to_string(embed.size()));
  }
  if (static_cast<int>(fit.size()) != S) fail("expected one fitting net per species (" + std::to_string(S) + "), found " + std::to_string(fit.size()));
  if (static_cast<int>(energy_bias.size()) != S) fail("energy_bias must have one entry per species");
  const auto SS = static_cast<std::size_t>(S) * static_cast<std::size_t>(S);
  if (mean_s.size() != SS || std_s.size() != SS || std_r.size() != SS) fail("normalisation statistics must be (S, S)");
  for (std::size_t i = 0; i < SS; ++i) {
    if (!std::isfinite(mean_s[i]) || !(std_s[i] > 0) || !(std_r[i] > 0) || !std::isfinite(std_s[i]) ||
        !std::isfinite(std_r[i])) {
      fail("normalisation statistics must be finite with positive standard deviations");
    }
    const std::string at = "[" + species[i / static_cast<std::size_t>(S)] + "][" + species[i % static_cast<std::size_t>(S)] + "]";
    for (const auto& [name, v] : {std::pair<const char*, double>{"std_s", std_s[i]}, {"std_r", std_r[i]}}) {
      if (v < limits::kMinStd || v > limits::kMaxStd) {
        fail(std::string(name) + at + " = " + num(v) + " is outside [" + num(limits::kMinStd) + ", " + num(limits::kMaxStd) +
             "] (its inverse scales the descriptor)");
      }
    }
    if (std::abs(mean_s[i]) > limits::kMaxAbsMean) fail("mean_s" + at + " = " + num(mean_s[i]) + " exceeds " + num(limits::kMaxAbsMean) + " in magnitude");
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
      if (L.weight.size() != static_cast<std::size_t>(in) * static_cast<std::size_t>(out) || L.bias.size() != static_cast<std::size_t>(out)) fail(ln + ": weight/bias shape mismatch");
      const bool has_dt = L.residual == Residual::Timestep || L.residual == Residual::DoublingTimestep;
      if (has_dt && L.dt.size() != static_cast<std::size_t>(out)) fail(ln + ": timestep residual needs dt of size out");
      if (!has_dt && !L.dt.empty()) fail(ln + ": dt given for a layer without timestep residual");
      if ((L.residual == Residual::Identity || L.residual == Residual::Timestep) && in != out) fail(ln + ": identity residual needs in == out");
      if ((L.residual == Residual::Doubling || L.residual == Residual::DoublingTimestep) && out != 2 * in) fail(ln + ": doubling residual needs out == 2*in");
      bool last = has_output && l + 1 == net.layers.size();
      if (last && (L.activation != Activation::Linear || L.residual != Residual::None)) fail(ln + ": the output layer must be linear without residual");
      for (double v : L.weight) {
        if (!std::isfinite(v)) fail(ln + ": weights contain NaN or Inf");
      }
      for (double v : L.bias) {
        if (!std::isfinite(v)) fail(ln + ": biases contain NaN or Inf");
      }
      for (const auto* vec : {&L.weight, &L.bias, &L.dt}) {
        for (double v : *vec) {
          if (!std::isfinite(v)) fail(ln + ": dt contains NaN or Inf");
          if (std::abs(v) > limits::kMaxAbsParameter) {
            fail(ln + ": a " + (vec == &L.weight ? "weight" : vec == &L.bias ? "bias" : "dt") + " of magnitude " + num(std::abs(v)) +
                 " exceeds " + num(limits::kMaxAbsParameter));
          }
        }
      }
      const QuantSpec& q = L.quant;
      if (q.weight_bits != 0 && (q.weight_bits < 2 || q.weight_bits > 16)) fail(ln + ": weight_bits must be 0 (float) or 2..16");
      if (q.act_bits != 0 && (q.act_bits < 2 || q.act_bits > 16)) fail(ln + ": act_bits must be 0 (float) or 2..16");
      if (q.weight_bits != 0) {
        if (q.weight_scale.size() != 1 && q.weight_scale.size() != static_cast<std::size_t>(out)) fail(ln + ": weight_scale must be per tensor (1) or per channel (" + std::to_string(out) + ")");
        for (float s : q.weight_scale) {
          if (!(s > 0) || !std::isfinite(s)) fail(ln + ": weight scales must be positive and finite");
          if (s < limits::kMinScale || s > limits::kMaxScale) fail(ln + ": weight scale " + num(s) + " is outside [" + num(limits::kMinScale) + ", " + num(limits::kMaxScale) + "]");
        }
        if (!q.weight_zero_point.empty() && q.weight_zero_point.size() != q.weight_scale.size()) fail(ln + ": weight_zero_point must match weight_scale in size");
      } else if (!q.weight_scale.empty()) {
        fail(ln + ": weight scales given for float weights");
      }
      for (std::int32_t zp : q.weight_zero_point) {
        if (zp != 0) fail(ln + ": weight_zero_point " + std::to_string(zp) + " is not supported (weights are symmetric: 0)");
      }
      if (q.act_zero_point != 0) fail(ln + ": act_zero_point " + std::to_string(q.act_zero_point) + " is not supported (activations are symmetric: 0)");
      if (q.act_bits != 0 && (!(q.act_scale > 0) || !std::isfinite(q.act_scale))) fail(ln + ": act_scale must be positive and finite");
      if (!(q.act_scale >= 0) || !std::isfinite(q.act_scale)) fail(ln + ": act_scale must be non-negative and finite");
      if (q.act_scale != 0 && (q.act_scale < limits::kMinScale || q.act_scale > limits::kMaxScale)) fail(ln + ": act_scale " + num(q.act_scale) + " is outside [" + num(limits::kMinScale) + ", " + num(limits::kMaxScale) + "]");
      if (!(q.out_scale >= 0) || !std::isfinite(q.out_scale)) fail(ln + ": out_scale must be non-negative and finite");
      if (q.out_scale != 0 && (q.out_scale < limits::kMinScale || q.out_scale > limits::kMaxScale)) fail(ln + ": out_scale " + num(q.out_scale) + " is outside [" + num(limits::kMinScale) + ", " + num(limits::kMaxScale) + "]");
      in = out;
    }
  };
  for (int n = 0; n < n_embed_nets(); ++n) {
    check_net(embed[static_cast<std::size_t>(n)], "embedding net " + embed_label(n), 1, embed_widths, false);
  }
  for (int s = 0; s < S; ++s) {
    check_net(fit[static_cast<std::size_t>(s)], "fitting net " + species[static_cast<std::size_t>(s)], descriptor_dim(), fit_widths, true);
  }
  for (double b : energy_bias) {
    if (!std::isfinite(b)) fail("energy_bias contains NaN or Inf");
    if (std::abs(b) > limits::kMaxAbsEnergyBias) fail("energy_bias " + num(b) + " eV exceeds " + num(limits::kMaxAbsEnergyBias) + " in magnitude");
  }
  if (repulsion.enabled() || !repulsion.z.empty()) {
    const Repulsion& R = repulsion;
    if (R.pairs.empty()) fail("repulsion: no species pairs");
    if (R.z.size() != static_cast<std::size_t>(S)) fail("repulsion: expected one atomic number per species (" + std::to_string(S) + "), got " + std::to_string(R.z.size()));
    for (double z : R.z)
      if (!(z >= 1.0 && z <= 118.0) || z != std::floor(z)) fail("repulsion: atomic number " + num(z) + " is not an integer in 1..118");
    for (const auto& p : R.pairs)
      if (p[0] < 0 || p[0] >= S || p[1] < 0 || p[1] >= S) fail("repulsion: a pair names a species the model does not have");
    if (!(R.r_inner > 0.0 && R.r_inner < R.r_outer && R.r_outer <= rcut))
      fail("repulsion: expected 0 < r_inner < r_outer <= rcut, got r_inner " + num(R.r_inner) + ", r_outer " + num(R.r_outer) + ", rcut " + num(rcut));
    if (R.r_outer - R.r_inner < 0.05) fail("repulsion: the switching range r_outer - r_inner must be at least 0.05 A, got " + num(R.r_outer - R.r_inner));
  }
  check_range(what);
}

namespace {

// Per-channel bounds on |x| at the input of a dense layer -> bounds on |y| at its output
// (|tanh| <= 1, residual paths added), and bounds on |dE/dy| -> |dE/dx| (|act'| <= 1).
std::vector<double> forward_bound(const DenseLayer& L, const std::vector<double>& x) {
  std::vector<double> y(static_cast<std::size_t>(L.out), 0.0);
  for (int k = 0; k < L.in; ++k) {
    const double xk = x[static_cast<std::size_t>(k)];
    const double* w = L.weight.data() + static_cast<std::size_t>(k) * static_cast<std::size_t>(L.out);
    for (int o = 0; o < L.out; ++o) y[static_cast<std::size_t>(o)] += std::abs(w[o]) * xk;
  }
  for (int o = 0; o < L.out; ++o) {
    const auto uo = static_cast<std::size_t>(o);
    const double pre = y[uo] + std::abs(L.bias[uo]);
    double a = L.activation == Activation::Tanh ? std::min(1.0, pre) : pre;
    switch (L.residual) {
      case Residual::None: break;
      case Residual::Identity: a += x[uo]; break;
      case Residual::Timestep: a = x[uo] + std::abs(L.dt[uo]) * a; break;
      case Residual::Doubling: a += x[uo % static_cast<std::size_t>(L.in)]; break;
      case Residual::DoublingTimestep: a = x[uo % static_cast<std::size_t>(L.in)] + std::abs(L.dt[uo]) * a; break;
    }
    y[uo] = a;
  }
  return y;
}

double max_pre_activation(const DenseLayer& L, const std::vector<double>& x) {
  double m = 0;
  for (int o = 0; o < L.out; ++o) {
    double p = std::abs(L.bias[static_cast<std::size_t>(o)]);
    for (int k = 0; k < L.in; ++k) p += std::abs(L.weight[static_cast<std::size_t>(k) * static_cast<std::size_t>(L.out) + static_cast<std::size_t>(o)]) * x[static_cast<std::size_t>(k)];
    m = std::max(m, p);
  }
  return m;
}

std::vector<double> backward_bound(const DenseLayer& L, const std::vector<double>& gy) {
  std::vector<double> gx(static_cast<std::size_t>(L.in), 0.0);
  for (int k = 0; k < L.in; ++k) {
    const double* w = L.weight.data() + static_cast<std::size_t>(k) * static_cast<std::size_t>(L.out);
    double g = 0;
    for (int o = 0; o < L.out; ++o) {
      const auto uo = static_cast<std::size_t>(o);
      const double through = L.residual == Residual::Timestep || L.residual == Residual::DoublingTimestep ? std::abs(L.dt[uo]) * gy[uo] : gy[uo];
      g += std::abs(w[o]) * through;
    }
    gx[static_cast<std::size_t>(k)] = g;
  }
  for (int o = 0; o < L.out; ++o) {
    const auto uo = static_cast<std::size_t>(o);
    if (L.residual == Residual::Identity || L.residual == Residual::Timestep) gx[uo] += gy[uo];
    if (L.residual == Residual::Doubling || L.residual == Residual::DoublingTimestep) gx[uo % static_cast<std::size_t>(L.in)] += gy[uo];
  }
  return gx;
}

double max_of(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, x);
  return m;
}

}  // namespace

// Interval bounds (docs/format.md, "Limits"): s = 1/r up to 1/kRangeMinDistance, at most
// max(sum(sel), 1) neighbours, every weight at its magnitude. tanh saturates, so in a trained
// network only the descriptor, the first pre-activations and the gradients can grow large.
void Model::check_range(const std::string& what) const {
  const int S = nspecies();
  auto fail = [&](const std::string& msg) {
    throw Error(what + ": " + msg + "; the network would overflow float arithmetic (docs/format.md, \"Limits\")");
  };
  auto check = [&](double v, const std::string& name) {
    if (!(v <= limits::kMaxRangeBound)) {
      std::ostringstream o;
      o << name << " can reach " << v << " (more than " << limits::kMaxRangeBound << ")";
      fail(o.str());
    }
  };
  const double s_max = 1.0 / limits::kRangeMinDistance;
  double inv_std = 0, r_bound = 0;
  for (std::size_t p = 0; p < mean_s.size(); ++p) {
    inv_std = std::max({inv_std, 1.0 / std_s[p], 1.0 / std_r[p]});
    r_bound = std::max({r_bound, (s_max + std::abs(mean_s[p])) / std_s[p], s_max / std_r[p]});
  }
  long long nsel = 0;
  for (int v : sel) nsel += v;
  const double nb = static_cast<double>(std::max(nsel, 1LL)) / neighbor_norm;

  // Embedding nets: G (M1) and dG/ds_hat, over every neighbour species.
  std::vector<double> g_bound(static_cast<std::size_t>(m1()), 0.0);
  double dg_bound = 0;
  for (int s = 0; s < n_embed_nets(); ++s) {
    const Net& net = embed[static_cast<std::size_t>(s)];
    const std::string ln = "embedding net " + embed_label(s);
    std::vector<double> x(1, r_bound);
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
      check(max_pre_activation(net.layers[l], x), ln + " layer " + std::to_string(l) + " pre-activation");
      x = forward_bound(net.layers[l], x);
      check(max_of(x), ln + " layer " + std::to_string(l) + " output");
    }
    for (std::size_t m = 0; m < x.size(); ++m) g_bound[m] = std::max(g_bound[m], x[m]);
    std::vector<double> g(static_cast<std::size_t>(m1()), 1.0);
    for (std::size_t l = net.layers.size(); l-- > 0;) g = backward_bound(net.layers[l], g);
    dg_bound = std::max(dg_bound, g[0]);
    check(dg_bound, ln + " gradient");
  }
  // Descriptor: T (4, M1) = R~^T G / Nc, D = T^T T< (M1, M2).
  const double t_bound = nb * r_bound * max_of(g_bound);
  const double d_bound = 4.0 * t_bound * t_bound;
  check(t_bound, "the descriptor's T = R^T G / Nc");
  check(d_bound, "the descriptor");
  // Fitting nets: energy and dE/dD.
  double de_bound = 0;
  for (int s = 0; s < S; ++s) {
    const Net& net = fit[static_cast<std::size_t>(s)];
    const std::string ln = "fitting net " + species[static_cast<std::size_t>(s)];
    std::vector<double> x(static_cast<std::size_t>(descriptor_dim()), d_bound);
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
      check(max_pre_activation(net.layers[l], x), ln + " layer " + std::to_string(l) + " pre-activation");
      x = forward_bound(net.layers[l], x);
      check(max_of(x), ln + " layer " + std::to_string(l) + " output");
    }
    std::vector<double> g(1, 1.0);
    for (std::size_t l = net.layers.size(); l-- > 0;) g = backward_bound(net.layers[l], g);
    de_bound = std::max(de_bound, max_of(g));
    check(de_bound, ln + " gradient dE/dD");
  }
  // Force on one edge: dE/dD . dD/dT . dT/dr, with |ds/dr| <= s_max^2 and |d(s/std)/dr| <= s_max^2/std.
  const double dr_bound = s_max * s_max * inv_std;
  const double f_bound = de_bound * 8.0 * t_bound * nb * (r_bound * dg_bound * dr_bound + max_of(g_bound) * 2.0 * dr_bound);
  check(f_bound, "the force on one neighbour pair");
}

// ------------------------------------------------------------------------------ writing

void write_model(const Model& model, const std::string& path) {
  model.validate(path);
  if (!model.provenance.is_object()) throw Error(path + ": provenance must be a JSON object");
  const auto sd = model.provenance.find("storage_dtype");
  const std::string fdtype = sd == model.provenance.end() ? "f32" : sd->is_string() ? sd->get<std::string>() : "";
  if (fdtype != "f32" && fdtype != "f64") throw Error(path + ": provenance.storage_dtype must be f32 or f64");
  BlobWriter blob;
  nlohmann::json layers = nlohmann::json::array();
  const int S = model.nspecies();
  auto emit = [&](const std::vector<Net>& nets, const std::string& kind) {
    const bool emb = kind == "embed";
    for (int s = 0; s < (emb ? model.n_embed_nets() : S); ++s) {
      const Net& net = nets[static_cast<std::size_t>(s)];
      for (std::size_t l = 0; l < net.layers.size(); ++l) {
        const DenseLayer& L = net.layers[l];
        const std::string name = emb ? model.embed_name(s) + "." + std::to_string(l) : layer_name(kind, s, static_cast<int>(l));
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
        if (q.quantized()) {
          qj["weight_bits"] = q.weight_bits;
          qj["act_bits"] = q.act_bits;
          qj["mode"] = q.label();
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
  if (!model.type_one_side) h["type_one_side"] = false;  // absent: true (older readers refuse the key)
  if (model.env_mat != "qnn") h["env_mat"] = model.env_mat;  // absent: "qnn" (older readers refuse the key)
  if (model.repulsion.enabled()) {  // absent: none (older readers refuse the key)
    nlohmann::json pairs = nlohmann::json::array();
    for (const auto& p : model.repulsion.pairs)
      pairs.push_back({model.species[static_cast<std::size_t>(p[0])], model.species[static_cast<std::size_t>(p[1])]});
    h["repulsion"] = {{"type", "zbl"}, {"z", model.repulsion.z}, {"pairs", pairs},
                      {"r_inner", model.repulsion.r_inner}, {"r_outer", model.repulsion.r_outer}};
  }
  h["default_mode"] = model.default_mode;
  h["layers"] = layers;
  h["tensors"] = blob.index();
  h["blob_bytes"] = blob.blob().size();
  nlohmann::json prov = model.provenance;
  if (!prov.contains("code_version")) prov["code_version"] = std::string("qnn ") + QNN_VERSION;
  h["provenance"] = prov;
  const std::string header = h.dump(1);

  // preamble, header, zero padding to 64, data section, CRC-32 of everything before it
  const std::size_t blob_start = align_up(kPreamble + header.size());
  std::vector<char> buf(blob_start + blob.blob().size() + 4, 0);
  const std::uint32_t version = Model::kFormatVersion, flags = 0;
  const std::uint64_t hlen = header.size();
  std::memcpy(buf.data(), kMagic, 8);
  std::memcpy(buf.data() + 8, &version, 4);
  std::memcpy(buf.data() + 12, &flags, 4);
  std::memcpy(buf.data() + 16, &hlen, 8);
  std::memcpy(buf.data() + kPreamble, header.data(), header.size());
  if (!blob.blob().empty()) std::memcpy(buf.data() + blob_start, blob.blob().data(), blob.blob().size());
  const std::uint32_t crc = crc32_of(buf.data(), buf.size() - 4);
  std::memcpy(buf.data() + buf.size() - 4, &crc, 4);
  write_file_atomic(path, buf);
}

namespace {

volatile sig_atomic_t g_deferred_signal = 0;
extern "C" void defer_signal(int sig) { g_deferred_signal = sig; }

// SIGINT, SIGTERM and SIGHUP arriving while a file is being written are held until the
// write is complete (the new file renamed into place, no temporary left), then delivered
// with the action they had before. Process-wide (sigaction), so it holds whichever thread
// the signal lands on. A signal the process ignores stays ignored.
class DeferTerminationSignals {
 public:
  DeferTerminationSignals() {
    for (int k = 0; k < 3; ++k) {
      struct sigaction sa {};
      sa.sa_handler = defer_signal;
      sigemptyset(&sa.sa_mask);
      installed_[k] = ::sigaction(kSignals[k], nullptr, &old_[k]) == 0 && old_[k].sa_handler != SIG_IGN &&
                      ::sigaction(kSignals[k], &sa, nullptr) == 0;
    }
  }
  ~DeferTerminationSignals() {
    for (int k = 0; k < 3; ++k)
      if (installed_[k]) ::sigaction(kSignals[k], &old_[k], nullptr);
    const int sig = g_deferred_signal;
    g_deferred_signal = 0;
    if (sig != 0) ::raise(sig);
  }
  DeferTerminationSignals(const DeferTerminationSignals&) = delete;
  DeferTerminationSignals& operator=(const DeferTerminationSignals&) = delete;

 private:
  static constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};
  struct sigaction old_[3];
  bool installed_[3] = {false, false, false};
};

}  // namespace

void write_file_atomic(const std::string& path, const std::vector<char>& bytes) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) throw Error(path + ": is a directory; give a file name");
  const DeferTerminationSignals hold;  // no temporary file is left behind by Ctrl-C
  std::string tmpl = path + ".tmp.XXXXXX";
  const int fd = ::mkstemp(&tmpl[0]);
  if (fd < 0) throw Error(path + ": cannot create a file beside it (" + std::strerror(errno) + ")");
  auto give_up = [&](const std::string& what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmpl.c_str());
    throw Error(path + ": " + what + " (" + std::strerror(err) + ")");
  };
  // mkstemp creates 0600; give the file the usual permissions (0666 less the umask).
  const mode_t mask = ::umask(0);
  ::umask(mask);
  if (::fchmod(fd, 0666 & ~mask) != 0) give_up("cannot set the permissions of the new file");
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) give_up("write failed (disk full?)");
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) give_up("write failed (fsync)");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmpl.c_str());
    throw Error(path + ": write failed (" + std::strerror(err) + ")");
  }
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmpl.c_str());
    throw Error(path + ": cannot move the written file into place (" + std::strerror(err) + ")");
  }
  // The rename itself is durable once the directory is synced.
  const std::string dir = std::filesystem::path(path).parent_path().empty()
                              ? std::string(".")
                              : std::filesystem::path(path).parent_path().string();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void check_output_path(const std::string& path, const std::string& what) {
  if (path.empty()) throw Error(what + ": empty file name");
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) throw Error(what + ": " + path + " is a directory; give a file name");
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw Error(what + ": directory " + dir + " does not exist");
  if (::access(dir.c_str(), W_OK) != 0) throw Error(what + ": directory " + dir + " is not writable");
}

// ------------------------------------------------------------------------------ reading

std::vector<char> read_file_bytes(const std::string& path) {
  auto fail = [&](const std::string& msg) -> void { throw Error(path + ": " + msg); };
  // Only regular files: a FIFO would block the open, a directory or /dev/zero never ends.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    fail(std::string("cannot open model file (does it exist and is it readable?): ") + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) fail("is a directory, not a model file");
  if (!S_ISREG(st.st_mode)) fail("is not a regular file (a FIFO, device or socket); give a .qnn model file");
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail(std::string("cannot open model file (does it exist and is it readable?): ") + std::strerror(errno));
  std::vector<char> buf;
  std::string error;
  // Checked again on the open file: the path may have been replaced in between.
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    error = "is not a regular file";
  } else if (static_cast<std::uint64_t>(st.st_size) > limits::kMaxFileBytes) {
    error = "is " + std::to_string(st.st_size) + " bytes, more than the " + std::to_string(limits::kMaxFileBytes) +
            " a model file may have";
  } else {
    buf.resize(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (error.empty()) {
      if (done == buf.size()) {
        // The file may have grown since fstat: read on, up to the cap.
        if (buf.size() >= limits::kMaxFileBytes) {
          char extra;
          if (::read(fd, &extra, 1) > 0) error = "is larger than the " + std::to_string(limits::kMaxFileBytes) + " bytes a model file may have";
          break;
        }
        buf.resize(std::min<std::uint64_t>(limits::kMaxFileBytes, buf.size() + 65536));
      }
      const ssize_t n = ::read(fd, buf.data() + done, buf.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) error = std::string("read error: ") + std::strerror(errno);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    buf.resize(done);
  }
  ::close(fd);
  if (!error.empty()) fail(error);
  return buf;
}

Model read_model(const std::string& path) { return parse_model(read_file_bytes(path), path); }

Model parse_model(const std::vector<char>& buf, const std::string& path) {
  const Header hdr(path);
  auto fail = [&](const std::string& msg) -> void { hdr.fail(msg); };
  auto crc_ok = [&] {
    std::uint32_t stored;
    std::memcpy(&stored, buf.data() + buf.size() - 4, 4);
    return crc32_of(buf.data(), buf.size() - 4) == stored;
  };

  // ---- preamble, header, data section: every length checked against the file's size.
  if (buf.size() > limits::kMaxFileBytes) fail("file is larger than " + std::to_string(limits::kMaxFileBytes) + " bytes");
  if (buf.size() < kPreamble + 4) {
    if (buf.size() >= 8 && std::memcmp(buf.data(), kMagic, 8) != 0) fail("not a qnn model file (bad magic)");
    fail("file is truncated (" + std::to_string(buf.size()) + " bytes)");
  }
  if (std::memcmp(buf.data(), kMagic, 8) != 0) fail("not a qnn model file (bad magic)");
  std::uint32_t version = 0, flags = 0;
  std::uint64_t hlen = 0;
  std::memcpy(&version, buf.data() + 8, 4);
  std::memcpy(&flags, buf.data() + 12, 4);
  std::memcpy(&hlen, buf.data() + 16, 8);
  if (version != Model::kFormatVersion) {
    fail("unsupported format version " + std::to_string(version) + " (this qnn reads version " +
         std::to_string(Model::kFormatVersion) + ")");
  }
  if (hlen > buf.size() - kPreamble - 4) fail("file is truncated (header length exceeds the file)");
  if (flags != 0) {
    if (!crc_ok()) fail("checksum mismatch: the file is corrupt");
    fail("reserved flags are set (0x" + [&] { char h[16]; std::snprintf(h, sizeof h, "%x", flags); return std::string(h); }() +
         "); this qnn reads files with flags 0");
  }
  if (hlen > limits::kMaxHeaderBytes) {
    if (!crc_ok()) fail("checksum mismatch: the file is corrupt");
    fail("header of " + std::to_string(hlen) + " bytes exceeds the limit of " + std::to_string(limits::kMaxHeaderBytes));
  }
  const std::uint64_t blob_start = align_up(kPreamble + hlen);
  const char* htext = buf.data() + kPreamble;
  nlohmann::json h;
  if (json_depth(htext, hlen, limits::kMaxJsonDepth) > limits::kMaxJsonDepth) {
    if (!crc_ok()) fail("checksum mismatch: the file is corrupt");
    fail("header JSON is nested deeper than " + std::to_string(limits::kMaxJsonDepth) + " levels");
  }
  try {
    h = nlohmann::json::parse(htext, htext + hlen);
  } catch (const nlohmann::json::exception& ex) {
    // A corrupt header is reported as such if the checksum also fails.
    if (!crc_ok()) fail("checksum mismatch: the file is corrupt or truncated");
    fail(std::string("header is not valid JSON: ") + ex.what());
  }
  if (!h.is_object()) {
    if (!crc_ok()) fail("checksum mismatch: the file is corrupt");
    fail("header is not a JSON object");
  }
  const nlohmann::json* bb = Header::find(h, "blob_bytes");
  if (!bb || !bb->is_number_unsigned()) {
    if (!crc_ok()) fail("checksum mismatch: the file is corrupt");
    if (!bb) fail("key 'blob_bytes' is missing (expected a non-negative integer)");
    hdr.expected("blob_bytes", "a non-negative integer");
  }
  const std::uint64_t blob_bytes = bb->get<std::uint64_t>();
  const std::uint64_t avail = blob_start + 4 <= buf.size() ? buf.size() - 4 - blob_start : 0;
  if (blob_start + 4 > buf.size() || blob_bytes > avail) fail("file is truncated (data section shorter than the header says)");
  if (blob_bytes < avail) fail("file has " + std::to_string(avail - blob_bytes) + " unexpected trailing bytes");
  if (!crc_ok()) fail("checksum mismatch: the file is corrupt");

  // ---- header fields, each typed and bounded.
  hdr.only_keys(h, "", {"format", "format_version", "type", "units", "species", "rcut", "rcut_smth", "sel", "neighbor_norm",
                        "axis_neuron", "embed_widths", "fit_widths", "resnet_dt", "type_one_side", "env_mat", "repulsion", "default_mode", "layers", "tensors",
                        "blob_bytes", "provenance"});
  Model m;
  if (hdr.str(hdr.req(h, "", "format", "a string"), "format") != "qnn") fail("header 'format' is not 'qnn'");
  if (const nlohmann::json* fv = Header::find(h, "format_version")) {
    hdr.integer(*fv, "format_version", Model::kFormatVersion, Model::kFormatVersion);
  }
  m.type = hdr.str(hdr.req(h, "", "type", "a string"), "type");
  m.units = hdr.str(hdr.req(h, "", "units", "a string"), "units");
  const nlohmann::json& sp = hdr.array(hdr.req(h, "", "species", "an array of strings"), "species", limits::kMaxSpecies);
  for (std::size_t i = 0; i < sp.size(); ++i) m.species.push_back(hdr.str(sp[i], "species[" + std::to_string(i) + "]", limits::kMaxSpeciesName));
  m.rcut = hdr.number(hdr.req(h, "", "rcut", "a number"), "rcut");
  m.rcut_smth = hdr.number(hdr.req(h, "", "rcut_smth", "a number"), "rcut_smth");
  m.sel = hdr.int_list(hdr.req(h, "", "sel", "an array of integers"), "sel", limits::kMaxSpecies, 0, limits::kMaxSel);
  m.neighbor_norm = hdr.number(hdr.req(h, "", "neighbor_norm", "a number"), "neighbor_norm");
  m.axis_neuron = static_cast<int>(hdr.integer(hdr.req(h, "", "axis_neuron", "an integer"), "axis_neuron", 1, limits::kMaxEmbedWidth));
  m.embed_widths = hdr.int_list(hdr.req(h, "", "embed_widths", "an array of integers"), "embed_widths", limits::kMaxLayers, 1,
                                limits::kMaxEmbedWidth);
  m.fit_widths = hdr.int_list(hdr.req(h, "", "fit_widths", "an array of integers"), "fit_widths", limits::kMaxLayers, 1,
                              limits::kMaxFitWidth);
  m.resnet_dt = hdr.boolean(hdr.req(h, "", "resnet_dt", "true or false"), "resnet_dt");
  if (const nlohmann::json* os = Header::find(h, "type_one_side")) m.type_one_side = hdr.boolean(*os, "type_one_side");
  if (const nlohmann::json* em = Header::find(h, "env_mat")) m.env_mat = hdr.str(*em, "env_mat", 16);
  if (const nlohmann::json* rp = Header::find(h, "repulsion")) {
    const nlohmann::json& r = hdr.object(*rp, "repulsion");
    hdr.only_keys(r, "repulsion", {"type", "z", "pairs", "r_inner", "r_outer"});
    if (hdr.str(hdr.req(r, "repulsion", "type", "a string"), "repulsion.type", 16) != "zbl")
      fail("key 'repulsion.type': only \"zbl\" is known");
    const nlohmann::json& z = hdr.array(hdr.req(r, "repulsion", "z", "an array of numbers"), "repulsion.z", limits::kMaxSpecies);
    for (std::size_t i = 0; i < z.size(); ++i) m.repulsion.z.push_back(hdr.number(z[i], "repulsion.z[" + std::to_string(i) + "]"));
    const nlohmann::json& pairs =
        hdr.array(hdr.req(r, "repulsion", "pairs", "an array of species pairs"), "repulsion.pairs", 64);
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      const std::string key = "repulsion.pairs[" + std::to_string(i) + "]";
      const nlohmann::json& p = hdr.array(pairs[i], key, 2);
      if (p.size() != 2) fail("key '" + key + "': expected two species names");
      std::array<int, 2> ab{};
      for (int k = 0; k < 2; ++k) {
        const std::string name = hdr.str(p[static_cast<std::size_t>(k)], key, limits::kMaxSpeciesName);
        ab[static_cast<std::size_t>(k)] = m.species_index(name);
        if (ab[static_cast<std::size_t>(k)] < 0) fail("key '" + key + "': unknown species '" + name + "'");
      }
      m.repulsion.pairs.push_back(ab);
    }
    m.repulsion.r_inner = hdr.number(hdr.req(r, "repulsion", "r_inner", "a number"), "repulsion.r_inner");
    m.repulsion.r_outer = hdr.number(hdr.req(r, "repulsion", "r_outer", "a number"), "repulsion.r_outer");
  }
  if (const nlohmann::json* dm = Header::find(h, "default_mode")) m.default_mode = hdr.str(*dm, "default_mode", 32);
  if (const nlohmann::json* pv = Header::find(h, "provenance")) {
    m.provenance = hdr.object(*pv, "provenance");
    if (const nlohmann::json* sd = Header::find(m.provenance, "storage_dtype")) {
      const std::string d = hdr.str(*sd, "provenance.storage_dtype");
      if (d != "f32" && d != "f64") fail("key 'provenance.storage_dtype': expected \"f32\" or \"f64\", got \"" + d + "\"");
    }
  }
  // The writer stores every float weight, bias and dt in one dtype.
  const std::string fdtype = m.provenance.value("storage_dtype", std::string("f32"));
  const int S = m.nspecies();
  if (S == 0) fail("model lists no species");
  if (static_cast<int>(m.sel.size()) != S) fail("sel has " + std::to_string(m.sel.size()) + " entries but the model lists " + std::to_string(S) + " species");
  if (m.axis_neuron > m.m1()) fail("axis_neuron " + std::to_string(m.axis_neuron) + " exceeds M1 = " + std::to_string(m.m1()));
  if (static_cast<std::int64_t>(m.m1()) * m.axis_neuron > limits::kMaxDescriptorDim) {
    fail("descriptor dimension M1*axis_neuron = " + std::to_string(static_cast<std::int64_t>(m.m1()) * m.axis_neuron) +
         " exceeds " + std::to_string(limits::kMaxDescriptorDim));
  }

  BlobReader blobs(hdr, buf.data() + blob_start, blob_bytes, hdr.req(h, "", "tensors", "an array"));
  std::map<std::string, std::pair<std::size_t, const nlohmann::json*>> layer_meta;  // name -> (index, entry)
  const nlohmann::json& layers = hdr.array(hdr.req(h, "", "layers", "an array"), "layers",
                                           (static_cast<std::size_t>(limits::kMaxSpecies) + 1) * static_cast<std::size_t>(limits::kMaxSpecies) *
                                               (limits::kMaxLayers + 1));
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const std::string key = "layers[" + std::to_string(i) + "]";
    const nlohmann::json& L = hdr.object(layers[i], key);
    hdr.only_keys(L, key, {"name", "in", "out", "activation", "residual", "quant"});
    const std::string name = hdr.str(hdr.req(L, key, "name", "a string"), key + ".name");
    if (!layer_meta.emplace(name, std::make_pair(i, &L)).second) fail("layer '" + name + "' is listed twice");
  }

  std::size_t layers_used = 0;
  std::set<std::string> layer_names;  // every layer the architecture needs
  auto read_net = [&](const std::string& kind, int s, int in0, const std::vector<int>& widths, bool output) {
    Net net;
    int in = in0;
    const std::size_t nl = widths.size() + (output ? 1 : 0);
    const bool emb = kind == "embed";
    for (std::size_t l = 0; l < nl; ++l) {
      const std::string name = emb ? m.embed_name(s) + "." + std::to_string(l) : layer_name(kind, s, static_cast<int>(l));
      layer_names.insert(name);
      auto it = layer_meta.find(name);
      if (it == layer_meta.end()) {
        fail("missing layer '" + name + "' (" + (emb ? m.embed_label(s) : "species '" + m.species[static_cast<std::size_t>(s)] + "'") + ")");
      }
      ++layers_used;
      const std::string key = "layers[" + std::to_string(it->second.first) + "]";
      const nlohmann::json& j = *it->second.second;
      DenseLayer L;
      L.in = static_cast<int>(hdr.integer(hdr.req(j, key, "in", "an integer"), key + ".in", 1, limits::kMaxDescriptorDim));
      L.out = static_cast<int>(hdr.integer(hdr.req(j, key, "out", "an integer"), key + ".out", 1, limits::kMaxFitWidth));
      try {
        L.activation = activation_from_string(hdr.str(hdr.req(j, key, "activation", "a string"), key + ".activation"));
        L.residual = residual_from_string(hdr.str(hdr.req(j, key, "residual", "a string"), key + ".residual"));
      } catch (const Error& ex) {
        if (std::string(ex.what()).rfind(path + ": ", 0) == 0) throw;
        fail("layer '" + name + "': " + ex.what());
      }
      const int out = l < widths.size() ? widths[l] : 1;
      if (L.in != in || L.out != out) {
        fail("layer '" + name + "' is " + std::to_string(L.in) + "->" + std::to_string(L.out) +
             " but the architecture needs " + std::to_string(in) + "->" + std::to_string(out));
      }
      // Quantization metadata first: it decides the dtypes the tensors must have.
      std::string granularity = "per_channel";
      if (const nlohmann::json* qp = Header::find(j, "quant")) {
        const std::string qk = key + ".quant";
        const nlohmann::json& q = hdr.object(*qp, qk);
        hdr.only_keys(q, qk, {"weight_bits", "act_bits", "mode", "act_scale", "act_zero_point", "out_scale",
                              "weight_granularity", "weight_zero_point"});
        auto opt = [&](const char* k) { return Header::find(q, k); };
        if (auto* v = opt("weight_bits")) L.quant.weight_bits = static_cast<int>(hdr.integer(*v, qk + ".weight_bits", 0, 16));
        if (L.quant.weight_bits == 1) fail("key '" + qk + ".weight_bits': 1 is not supported (0 for float weights, or 2..16)");
        if (auto* v = opt("act_bits")) L.quant.act_bits = static_cast<int>(hdr.integer(*v, qk + ".act_bits", 0, 16));
        if (L.quant.act_bits == 1) fail("key '" + qk + ".act_bits': 1 is not supported (0 for float activations, or 2..16)");
        if (auto* v = opt("mode")) (void)hdr.str(*v, qk + ".mode", 32);  // informational: QuantSpec::label()
        if (auto* v = opt("act_scale")) L.quant.act_scale = static_cast<float>(hdr.number(*v, qk + ".act_scale"));
        if (auto* v = opt("out_scale")) L.quant.out_scale = static_cast<float>(hdr.number(*v, qk + ".out_scale"));
        if (auto* v = opt("act_zero_point")) {
          L.quant.act_zero_point = static_cast<std::int32_t>(hdr.integer(*v, qk + ".act_zero_point", INT32_MIN, INT32_MAX));
          if (L.quant.act_zero_point != 0) {
            fail("layer '" + name + "': act_zero_point " + std::to_string(L.quant.act_zero_point) +
                 " is not supported (activations are quantized symmetrically: 0)");
          }
        }
        if (auto* v = opt("weight_zero_point")) {
          const nlohmann::json& zp = hdr.array(*v, qk + ".weight_zero_point", static_cast<std::size_t>(out));
          for (std::size_t c = 0; c < zp.size(); ++c) {
            const auto z = hdr.integer(zp[c], qk + ".weight_zero_point[" + std::to_string(c) + "]", INT32_MIN, INT32_MAX);
            if (z != 0) {
              fail("layer '" + name + "': weight_zero_point " + std::to_string(z) +
                   " is not supported (weights are quantized symmetrically: 0)");
            }
            L.quant.weight_zero_point.push_back(0);
          }
        }
        if (auto* v = opt("weight_granularity")) {
          granularity = hdr.str(*v, qk + ".weight_granularity");
          if (granularity != "per_channel" && granularity != "per_tensor") {
            fail("key '" + qk + ".weight_granularity': expected \"per_channel\" or \"per_tensor\", got \"" + granularity + "\"");
          }
        }
      }
      const int bits = L.quant.weight_bits;
      if (bits == 0) {
        L.weight = blobs.get(name + ".weight", {in, out}, {fdtype.c_str()});
      } else {
        // Integer weights: i8 for 2..8 bits, i16 for 9..16, as the writer stores them.
        L.weight = blobs.get(name + ".weight", {in, out}, {bits <= 8 ? "i8" : "i16"});
        if (!blobs.has(name + ".weight_scale")) fail("layer '" + name + "' has integer weights but no weight_scale tensor");
        const std::vector<double> sc =
            blobs.get(name + ".weight_scale", {granularity == "per_tensor" ? 1 : out}, {"f32"});
        const std::int64_t lim = (std::int64_t(1) << (bits - 1)) - 1;  // bits in 2..16 here
        for (std::size_t k = 0; k < L.weight.size(); ++k) {
          if (std::abs(L.weight[k]) > static_cast<double>(lim)) {
            fail("layer '" + name + "': integer weight " + std::to_string(static_cast<long long>(L.weight[k])) +
                 " outside the range of " + std::to_string(bits) + " bits");
          }
          const std::size_t c = sc.size() == 1 ? 0 : k % static_cast<std::size_t>(out);
          L.weight[k] *= static_cast<double>(static_cast<float>(sc[c]));
        }
        L.quant.weight_scale.assign(sc.begin(), sc.end());
      }
      L.bias = blobs.get(name + ".bias", {out}, {fdtype.c_str()});
      if (blobs.has(name + ".dt")) L.dt = blobs.get(name + ".dt", {out}, {fdtype.c_str()});
      net.layers.push_back(std::move(L));
      in = out;
    }
    return net;
  };
  for (int s = 0; s < m.n_embed_nets(); ++s) m.embed.push_back(read_net("embed", s, 1, m.embed_widths, false));
  for (int s = 0; s < S; ++s) m.fit.push_back(read_net("fit", s, m.m1() * m.axis_neuron, m.fit_widths, true));
  if (layers_used != layer_meta.size()) {
    for (const auto& [name, entry] : layer_meta) {
      if (!layer_names.count(name)) fail("layer '" + name + "' is not part of the architecture");
    }
  }
  const std::int64_t S64 = S;
  m.energy_bias = blobs.get("energy_bias", {S64}, {"f64"});
  m.mean_s = blobs.get("mean_s", {S64, S64}, {"f64"});
  m.std_s = blobs.get("std_s", {S64, S64}, {"f64"});
  m.std_r = blobs.get("std_r", {S64, S64}, {"f64"});
  const std::string extra = blobs.unused();
  if (!extra.empty()) fail("tensor '" + extra + "' is not part of the model");
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
  o << "env_mat         " << m.env_mat << (m.deepmd_env_mat() ? " (DeePMD-kit: shifted first column, empty slots count)" : "") << "\n";
  if (m.repulsion.enabled()) {
    o << "repulsion       ZBL on";
    for (const auto& p : m.repulsion.pairs)
      o << " " << m.species[static_cast<std::size_t>(p[0])] << "-" << m.species[static_cast<std::size_t>(p[1])];
    o << ", switched off from " << m.repulsion.r_inner << " to " << m.repulsion.r_outer << " A (as pair_style zbl)\n";
  }
  o << "embedding net   1";
  for (int w : m.embed_widths) o << " -> " << w;
  o << (m.type_one_side ? " (per neighbour species)" : " (per centre and neighbour species pair)") << ", axis_neuron " << m.axis_neuron << "\n";
  o << "fitting net     " << m.descriptor_dim();
  for (int w : m.fit_widths) o << " -> " << w;
  o << " -> 1 (per centre species)" << (m.resnet_dt ? ", resnet_dt" : "") << "\n";
  o << "parameters      " << m.parameter_count() << "\n";
  o << "default mode    " << m.default_mode << "\n";
  o << "layer precision\n";
  auto list = [&](const std::vector<Net>& nets, const char* kind) {
    const bool emb = std::string(kind) == "embed";
    for (int s = 0; s < (emb ? m.n_embed_nets() : m.nspecies()); ++s) {
      const Net& net = nets[static_cast<std::size_t>(s)];
      for (std::size_t l = 0; l < net.layers.size(); ++l) {
        const DenseLayer& L = net.layers[l];
        const QuantSpec& q = L.quant;
        o << "  " << (emb ? m.embed_label(s) : std::string(kind) + "." + m.species[static_cast<std::size_t>(s)]) << "." << l << "  " << L.in << "->" << L.out << "  ";
        if (!q.quantized()) {
          o << "fp32";
        } else {
          o << q.label() << " (w" << q.weight_bits << (q.weight_scale.size() == 1 ? " per-tensor" : " per-channel");
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
  if (!m.provenance.is_object()) o << "provenance      " << m.provenance.dump() << "\n";
  for (auto it = m.provenance.begin(); m.provenance.is_object() && it != m.provenance.end(); ++it) {
    if (it.key() == "config") continue;
    o << "provenance      " << it.key() << ": " << (it->is_string() ? it->get<std::string>() : it->dump()) << "\n";
  }
  return o.str();
}

}  // namespace qnn
