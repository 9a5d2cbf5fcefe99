// DeePMD-kit `.dp` import (see deepmd.hpp; the mapping is docs/model.md, "Imported DeePMD-kit
// models", and docs/format.md). HDF5 through its C API with a small RAII handle.
#include "qnn/import/deepmd.hpp"

#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>

#include "qnn/error.hpp"

namespace qnn::deepmd {
namespace {

constexpr long long kMaxElements = 1LL << 26;       // one dataset: 64 Mi values
constexpr std::size_t kMaxJsonBytes = 64u << 20;    // the json attribute
constexpr int kMaxJsonDepth = 64;

// ------------------------------------------------------------------ HDF5 handles
class H5 {
 public:
  H5() = default;
  H5(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  H5(const H5&) = delete;
  H5& operator=(const H5&) = delete;
  H5(H5&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  ~H5() {
    if (id_ >= 0 && close_) close_(id_);
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

void quiet_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

H5 open_file(const std::string& path) {
  quiet_hdf5();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(path + ": cannot open: no such file");
  if (!std::filesystem::is_regular_file(path, ec)) throw Error(path + ": is not a regular file");
  if (H5Fis_hdf5(path.c_str()) <= 0)
    throw Error(path + ": not an HDF5 file (a DeePMD-kit .dp file is HDF5: make one with `dp convert-backend frozen.pb model.dp`)");
  H5 f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!f.ok()) throw Error(path + ": cannot open the HDF5 file (corrupt?)");
  return f;
}

std::string read_string_attribute(hid_t obj, const char* name, const std::string& path) {
  if (H5Aexists(obj, name) <= 0) throw Error(path + ": no '" + name + "' attribute: not a DeePMD-kit .dp model file");
  H5 attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) throw Error(path + ": cannot open the '" + name + "' attribute");
  H5 type(H5Aget_type(attr.get()), H5Tclose);
  H5 space(H5Aget_space(attr.get()), H5Sclose);
  if (!type.ok() || !space.ok() || H5Tget_class(type.get()) != H5T_STRING)
    throw Error(path + ": the '" + std::string(name) + "' attribute is not a string");
  if (H5Sget_simple_extent_npoints(space.get()) != 1)
    throw Error(path + ": the '" + std::string(name) + "' attribute is not a single string");
  const htri_t var = H5Tis_variable_str(type.get());
  if (var < 0) throw Error(path + ": cannot read the '" + std::string(name) + "' attribute");
  H5 mem(H5Tcopy(H5T_C_S1), H5Tclose);
  if (var > 0) {
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    char* buf = nullptr;
    if (H5Aread(attr.get(), mem.get(), &buf) < 0 || !buf)
      throw Error(path + ": cannot read the '" + std::string(name) + "' attribute");
    std::string s(buf, strnlen(buf, kMaxJsonBytes + 1));
    H5free_memory(buf);
    if (s.size() > kMaxJsonBytes) throw Error(path + ": the '" + std::string(name) + "' attribute is larger than 64 MiB");
    return s;
  }
  const std::size_t n = H5Tget_size(type.get());
  if (n == 0 || n > kMaxJsonBytes) throw Error(path + ": the '" + std::string(name) + "' attribute has a bad size");
  H5Tset_size(mem.get(), n + 1);
  std::string s(n + 1, '\0');
  if (H5Aread(attr.get(), mem.get(), s.data()) < 0) throw Error(path + ": cannot read the '" + std::string(name) + "' attribute");
  s.resize(strnlen(s.data(), n));
  return s;
}

Array read_dataset(hid_t file, const std::string& ref, const std::vector<long long>& expect, const std::string& path) {
  auto fail = [&](const std::string& why) { throw Error(path + ": dataset '" + ref + "': " + why); };
  if (ref.empty() || ref[0] != '/' || ref.size() > 256) fail("not a dataset reference");
  if (H5Lexists(file, ref.c_str(), H5P_DEFAULT) <= 0) fail("missing");
  H5 ds(H5Dopen2(file, ref.c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) fail("cannot be opened as a dataset");
  H5 type(H5Dget_type(ds.get()), H5Tclose);
  H5 space(H5Dget_space(ds.get()), H5Sclose);
  if (!type.ok() || !space.ok()) fail("unreadable");
  if (H5Tget_class(type.get()) != H5T_FLOAT) fail("not a floating-point array");
  const std::size_t esize = H5Tget_size(type.get());
  if (esize != 4 && esize != 8) fail("floating-point size " + std::to_string(esize) + " bytes (float32 or float64 expected)");
  const int nd = H5Sget_simple_extent_ndims(space.get());
  if (nd < 0 || nd > 4) fail("unexpected rank");
  std::vector<hsize_t> dims(static_cast<std::size_t>(nd));
  if (nd > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  Array a;
  a.bytes = static_cast<int>(esize);
  long long n = 1;
  for (hsize_t d : dims) {
    if (d > static_cast<hsize_t>(kMaxElements)) fail("too large");
    a.shape.push_back(static_cast<long long>(d));
    n *= static_cast<long long>(d);
    if (n > kMaxElements) fail("too large");
  }
  // Expected shape (DeePMD-kit stores biases as (n,) and sometimes (1, n): compare the
  // element count when the ranks differ and the expectation is fully known).
  bool match = expect.size() == a.shape.size();
  for (std::size_t k = 0; match && k < expect.size(); ++k) match = expect[k] < 0 || expect[k] == a.shape[k];
  if (!match) {
    long long want = 1;
    bool known = true;
    for (long long e : expect) {
      known = known && e >= 0;
      want *= e;
    }
    if (!known || want != n) {
      std::ostringstream o;
      o << "shape (";
      for (std::size_t k = 0; k < a.shape.size(); ++k) o << (k ? ", " : "") << a.shape[k];
      o << "), expected (";
      for (std::size_t k = 0; k < expect.size(); ++k) o << (k ? ", " : "") << (expect[k] < 0 ? std::string("*") : std::to_string(expect[k]));
      o << ")";
      fail(o.str());
    }
    a.shape = expect;
  }
  a.values.resize(static_cast<std::size_t>(n));
  if (n > 0 && H5Dread(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.values.data()) < 0) fail("cannot be read");
  return a;
}

void check_json_depth(const std::string& s, const std::string& path) {
  int depth = 0;
  bool in_str = false, esc = false;
  for (char c : s) {
    if (in_str) {
      if (esc) esc = false;
      else if (c == '\\') esc = true;
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == '"') in_str = true;
    else if (c == '{' || c == '[') {
      if (++depth > kMaxJsonDepth) throw Error(path + ": the model JSON is nested deeper than " + std::to_string(kMaxJsonDepth));
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
}

nlohmann::json parse_json(const std::string& text, const std::string& path) {
  check_json_depth(text, path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": the model JSON attribute is not valid JSON (" + e.what() + ")");
  }
}

// ------------------------------------------------------------------ JSON access
struct Ctx {
  std::string path;
  [[noreturn]] void fail(const std::string& msg) const { throw Error(path + ": " + msg); }
  [[noreturn]] void unsupported(const std::string& feature) const {
    throw Error(path + ": " + feature + " is not supported by qnn import (it imports DeePMD-kit se_e2_a energy models: docs/model.md, \"Imported DeePMD-kit models\")");
  }
  const nlohmann::json& obj(const nlohmann::json& j, const std::string& key, const std::string& where) const {
    if (!j.is_object()) fail(where + " is not a JSON object");
    auto it = j.find(key);
    if (it == j.end()) fail("key '" + where + "." + key + "' is missing");
    return *it;
  }
  const nlohmann::json* opt(const nlohmann::json& j, const std::string& key) const {
    if (!j.is_object()) return nullptr;
    auto it = j.find(key);
    return it == j.end() ? nullptr : &*it;
  }
  std::string str(const nlohmann::json& j, const std::string& key, const std::string& where) const {
    const nlohmann::json& v = obj(j, key, where);
    if (!v.is_string()) fail("key '" + where + "." + key + "': expected a string");
    return v.get<std::string>();
  }
  double num(const nlohmann::json& j, const std::string& key, const std::string& where) const {
    const nlohmann::json& v = obj(j, key, where);
    if (!v.is_number()) fail("key '" + where + "." + key + "': expected a number");
    const double d = v.get<double>();
    if (!std::isfinite(d)) fail("key '" + where + "." + key + "': not finite");
    return d;
  }
  long long integer(const nlohmann::json& j, const std::string& key, const std::string& where, long long lo, long long hi) const {
    const nlohmann::json& v = obj(j, key, where);
    if (!v.is_number_integer()) fail("key '" + where + "." + key + "': expected an integer");
    const long long x = v.is_number_unsigned() ? static_cast<long long>(std::min<std::uint64_t>(v.get<std::uint64_t>(), 1ULL << 62)) : v.get<long long>();
    if (x < lo || x > hi) fail("key '" + where + "." + key + "': " + std::to_string(x) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }
  bool boolean(const nlohmann::json& j, const std::string& key, const std::string& where) const {
    const nlohmann::json& v = obj(j, key, where);
    if (!v.is_boolean()) fail("key '" + where + "." + key + "': expected true or false");
    return v.get<bool>();
  }
  std::vector<int> ints(const nlohmann::json& j, const std::string& key, const std::string& where, int lo, int hi, std::size_t max_n) const {
    const nlohmann::json& v = obj(j, key, where);
    if (!v.is_array() || v.size() > max_n) fail("key '" + where + "." + key + "': expected an array of at most " + std::to_string(max_n) + " integers");
    std::vector<int> out;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_number_integer()) fail("key '" + where + "." + key + "[" + std::to_string(i) + "]': expected an integer");
      const long long x = v[i].is_number_unsigned() ? static_cast<long long>(std::min<std::uint64_t>(v[i].get<std::uint64_t>(), 1ULL << 62)) : v[i].get<long long>();
      if (x < lo || x > hi) fail("key '" + where + "." + key + "[" + std::to_string(i) + "]': " + std::to_string(x) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
      out.push_back(static_cast<int>(x));
    }
    return out;
  }
  // An empty list, null or absent; anything else is the named unsupported feature.
  void require_empty(const nlohmann::json& j, const std::string& key, const std::string& feature) const {
    const nlohmann::json* v = opt(j, key);
    if (!v || v->is_null()) return;
    if ((v->is_array() || v->is_object()) && v->empty()) return;
    unsupported(feature + " (" + key + " = " + v->dump().substr(0, 80) + ")");
  }
  void only_keys(const nlohmann::json& j, const std::string& where, const std::set<std::string>& known) const {
    for (auto it = j.begin(); it != j.end(); ++it)
      if (!known.count(it.key())) unsupported("the key '" + it.key() + "' in " + where + " (unknown to this importer, written by a newer DeePMD-kit?)");
  }
};

std::string precision_of(const Ctx& c, const nlohmann::json& j, const std::string& where) {
  const std::string p = c.str(j, "precision", where);
  if (p == "float64" || p == "double") return "float64";
  if (p == "float32" || p == "float") return "float32";
  c.unsupported("precision '" + p + "' in " + where);
}

Activation activation_of(const Ctx& c, const std::string& a, const std::string& where) {
  std::string l = a;
  std::transform(l.begin(), l.end(), l.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (l == "tanh") return Activation::Tanh;
  if (l == "none" || l == "linear") return Activation::Linear;
  c.unsupported("the activation function '" + a + "' in " + where + " (qnn implements tanh)");
}

// One DeePMD-kit NativeLayer: y = r(x) + idt ⊙ act(x·W + b), r the identity / doubled input
// when `resnet` and the widths allow it (deepmd/dpmodel/utils/network.py).
DenseLayer read_layer(const Ctx& c, const nlohmann::json& L, const std::string& where, int in, int out,
                      const std::string& precision, const ArrayGetter& get) {
  if (!L.is_object()) c.fail(where + " is not a JSON object");
  c.only_keys(L, where, {"@class", "@version", "bias", "use_timestep", "activation_function", "resnet", "precision", "trainable", "@variables"});
  if (const nlohmann::json* cl = c.opt(L, "@class"); cl && *cl != "Layer") c.unsupported("layer class " + cl->dump() + " in " + where);
  if (precision_of(c, L, where) != precision) c.unsupported("mixed precisions (" + where + " differs from its network)");
  if (const nlohmann::json* b = c.opt(L, "bias"); b && *b != true) c.unsupported("a layer without bias (" + where + ")");
  const nlohmann::json& vars = c.obj(L, "@variables", where);
  c.only_keys(vars, where + ".@variables", {"w", "b", "idt"});
  const bool resnet = c.boolean(L, "resnet", where);
  const nlohmann::json* ts = c.opt(L, "use_timestep");
  const bool timestep = ts && ts->is_boolean() && ts->get<bool>();
  const nlohmann::json* idt = c.opt(vars, "idt");
  const bool has_idt = idt && !idt->is_null();
  DenseLayer d;
  d.in = in;
  d.out = out;
  d.activation = activation_of(c, c.str(L, "activation_function", where), where);
  auto ref = [&](const char* k) {
    const nlohmann::json& v = c.obj(vars, k, where + ".@variables");
    if (!v.is_string()) c.fail("key '" + where + ".@variables." + k + "': expected a dataset name");
    return v.get<std::string>();
  };
  d.weight = get(ref("w"), {in, out}).values;
  d.bias = get(ref("b"), {out}).values;
  if (has_idt != timestep && has_idt) c.fail(where + ": idt given but use_timestep is false");
  if (has_idt) d.dt = get(ref("idt"), {out}).values;
  if (resnet && out == in) {
    d.residual = has_idt ? Residual::Timestep : Residual::Identity;
  } else if (resnet && out == 2 * in) {
    d.residual = has_idt ? Residual::DoublingTimestep : Residual::Doubling;
  } else {
    if (has_idt) c.unsupported("a timestep (idt) on a layer without residual (" + where + ")");
    d.residual = Residual::None;
  }
  return d;
}

}  // namespace

// ------------------------------------------------------------------ JSON -> Model
Model model_from_json(const nlohmann::json& root, const ArrayGetter& get, const std::string& path, std::string* report) {
  const Ctx c{path};
  if (!root.is_object()) c.fail("the model JSON is not an object");
  std::ostringstream rep;
  const std::string version = root.contains("version") && root["version"].is_string() ? root["version"].get<std::string>() : "not recorded";
  const std::string backend = root.contains("backend") && root["backend"].is_string() ? root["backend"].get<std::string>() : "not recorded";
  if (const nlohmann::json* sw = c.opt(root, "software"); sw && *sw != "deepmd-kit") c.fail("written by " + sw->dump() + ", not deepmd-kit");
  const nlohmann::json& model = c.obj(root, "model", "");
  if (!model.is_object()) c.fail("key 'model' is not an object");
  if (const nlohmann::json* cl = c.opt(model, "@class"); cl && *cl != "Model") c.unsupported("model class " + cl->dump());
  const std::string mtype = c.str(model, "type", "model");
  if (mtype != "standard") c.unsupported("the model type '" + mtype + "' (linear, zbl, pairtab, spin, ... models)");
  c.only_keys(model, "model", {"@class", "type", "@version", "type_map", "descriptor", "fitting", "atom_exclude_types",
                               "pair_exclude_types", "rcond", "preset_out_bias", "@variables", "data_stat_protect"});
  c.require_empty(model, "atom_exclude_types", "atom_exclude_types");
  c.require_empty(model, "pair_exclude_types", "pair_exclude_types");

  // type_map -> species
  const nlohmann::json& tm = c.obj(model, "type_map", "model");
  if (!tm.is_array() || tm.empty() || tm.size() > static_cast<std::size_t>(limits::kMaxSpecies))
    c.fail("key 'model.type_map': expected 1 to " + std::to_string(limits::kMaxSpecies) + " element names");
  Model m;
  for (const auto& t : tm) {
    if (!t.is_string()) c.fail("key 'model.type_map': expected element names (strings)");
    m.species.push_back(t.get<std::string>());
  }
  const int S = m.nspecies();

  // ---- descriptor
  const nlohmann::json& d = c.obj(model, "descriptor", "model");
  if (!d.is_object()) c.fail("key 'model.descriptor' is not an object");
  const std::string dtype = c.str(d, "type", "descriptor");
  if (dtype != "se_e2_a" && dtype != "se_a") c.unsupported("the descriptor '" + dtype + "' (qnn runs se_e2_a)");
  c.only_keys(d, "the descriptor", {"@class", "type", "@version", "rcut", "rcut_smth", "sel", "neuron", "axis_neuron", "resnet_dt",
                                   "trainable", "type_one_side", "exclude_types", "env_protection", "set_davg_zero",
                                   "activation_function", "precision", "embeddings", "env_mat", "@variables", "type_map", "spin",
                                   "seed", "ntypes", "tebd_input_mode"});
  c.require_empty(d, "exclude_types", "exclude_types in the descriptor");
  c.require_empty(d, "spin", "spin");
  if (const nlohmann::json* ep = c.opt(d, "env_protection"); ep && !(ep->is_number() && ep->get<double>() == 0.0))
    c.unsupported("env_protection = " + ep->dump() + " (only 0)");
  if (const nlohmann::json* dtm = c.opt(d, "type_map"); dtm && !dtm->is_null() && *dtm != tm) c.fail("the descriptor's type_map differs from the model's");
  m.rcut = c.num(d, "rcut", "descriptor");
  m.rcut_smth = c.num(d, "rcut_smth", "descriptor");
  m.sel = c.ints(d, "sel", "descriptor", 0, limits::kMaxSel, static_cast<std::size_t>(limits::kMaxSpecies));
  if (static_cast<int>(m.sel.size()) != S) c.fail("descriptor.sel has " + std::to_string(m.sel.size()) + " entries for " + std::to_string(S) + " types");
  m.embed_widths = c.ints(d, "neuron", "descriptor", 1, limits::kMaxEmbedWidth, limits::kMaxLayers);
  if (m.embed_widths.empty()) c.fail("descriptor.neuron is empty");
  m.axis_neuron = static_cast<int>(c.integer(d, "axis_neuron", "descriptor", 1, limits::kMaxEmbedWidth));
  m.type_one_side = c.boolean(d, "type_one_side", "descriptor");
  const bool d_resnet_dt = c.boolean(d, "resnet_dt", "descriptor");
  const Activation d_act = activation_of(c, c.str(d, "activation_function", "descriptor"), "the descriptor");
  if (d_act != Activation::Tanh) c.unsupported("a linear embedding activation");
  const std::string d_prec = precision_of(c, d, "the descriptor");
  if (const nlohmann::json* em = c.opt(d, "env_mat"); em && !em->is_null()) {
    c.only_keys(*em, "descriptor.env_mat", {"rcut", "rcut_smth", "protection", "use_exp_switch"});
    if (const nlohmann::json* p = c.opt(*em, "protection"); p && !(p->is_number() && p->get<double>() == 0.0))
      c.unsupported("env_mat protection = " + p->dump() + " (only 0)");
    if (const nlohmann::json* u = c.opt(*em, "use_exp_switch"); u && *u != false) c.unsupported("use_exp_switch (the exponential switching function)");
    if (const nlohmann::json* r = c.opt(*em, "rcut"); r && !(r->is_number() && r->get<double>() == m.rcut)) c.fail("descriptor.env_mat.rcut differs from descriptor.rcut");
    if (const nlohmann::json* r = c.opt(*em, "rcut_smth"); r && !(r->is_number() && r->get<double>() == m.rcut_smth)) c.fail("descriptor.env_mat.rcut_smth differs from descriptor.rcut_smth");
  }
  if (!(m.rcut > 0) || !(m.rcut_smth >= 0) || !(m.rcut_smth < m.rcut) || m.rcut > limits::kMaxRcut)
    c.fail("cutoffs rcut_smth " + std::to_string(m.rcut_smth) + ", rcut " + std::to_string(m.rcut) + " are outside 0 <= rcut_smth < rcut <= " +
           std::to_string(limits::kMaxRcut));
  long long nnei = 0;
  for (int v : m.sel) nnei += v;
  if (nnei <= 0) c.fail("descriptor.sel sums to 0");
  m.neighbor_norm = static_cast<double>(nnei);
  m.env_mat = "deepmd";

  // embedding nets: NetworkCollection, index sum_k type_k * ntypes^k (network.py), so
  // (centre, neighbour) -> centre + neighbour*S for pair nets, neighbour for one side.
  const nlohmann::json& emb = c.obj(d, "embeddings", "descriptor");
  const int ndim = static_cast<int>(c.integer(emb, "ndim", "descriptor.embeddings", 0, 3));
  if (ndim != (m.type_one_side ? 1 : 2)) c.fail("descriptor.embeddings.ndim " + std::to_string(ndim) + " does not match type_one_side");
  if (c.integer(emb, "ntypes", "descriptor.embeddings", 0, limits::kMaxSpecies) != S) c.fail("descriptor.embeddings.ntypes differs from the type_map");
  const nlohmann::json& nets = c.obj(emb, "networks", "descriptor.embeddings");
  if (!nets.is_array() || static_cast<long long>(nets.size()) != static_cast<long long>(m.n_embed_nets()))
    c.fail("descriptor.embeddings.networks: expected " + std::to_string(m.n_embed_nets()) + " networks");
  m.embed.resize(static_cast<std::size_t>(m.n_embed_nets()));
  for (int n = 0; n < m.n_embed_nets(); ++n) {
    const int ctr = m.embed_centre(n), nb = m.embed_neighbour(n);
    const std::size_t dp_index = m.type_one_side ? static_cast<std::size_t>(nb) : static_cast<std::size_t>(ctr + nb * S);
    const nlohmann::json& net = nets[dp_index];
    const std::string where = "descriptor.embeddings.networks[" + std::to_string(dp_index) + "]";
    if (net.is_null()) c.unsupported("a missing embedding network (" + where + ", exclude_types?)");
    if (!net.is_object()) c.fail(where + " is not a JSON object");
    c.only_keys(net, where, {"@class", "@version", "in_dim", "neuron", "activation_function", "resnet_dt", "precision", "bias", "layers", "trainable"});
    if (c.integer(net, "in_dim", where, 0, 1 << 20) != 1) c.unsupported("an embedding input width other than 1 (" + where + ")");
    if (c.ints(net, "neuron", where, 1, limits::kMaxEmbedWidth, limits::kMaxLayers) != m.embed_widths) c.fail(where + ".neuron differs from descriptor.neuron");
    if (precision_of(c, net, where) != d_prec) c.unsupported("mixed precisions (" + where + ")");
    if (c.boolean(net, "resnet_dt", where) != d_resnet_dt) c.fail(where + ".resnet_dt differs from the descriptor's");
    activation_of(c, c.str(net, "activation_function", where), where);
    const nlohmann::json& layers = c.obj(net, "layers", where);
    if (!layers.is_array() || layers.size() != m.embed_widths.size()) c.fail(where + ".layers: expected " + std::to_string(m.embed_widths.size()) + " layers");
    int in = 1;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const int out = m.embed_widths[l];
      DenseLayer L = read_layer(c, layers[l], where + ".layers[" + std::to_string(l) + "]", in, out, d_prec, get);
      if (L.activation != Activation::Tanh) c.unsupported("a linear embedding layer (" + where + ")");
      m.embed[static_cast<std::size_t>(n)].layers.push_back(std::move(L));
      in = out;
    }
  }

  // davg / dstd: (S, nnei, 4) per centre type and slot -> mean_s, std_s, std_r per (centre,
  // neighbour) species, which qnn's model has; refused unless uniform within each block.
  const nlohmann::json& dvars = c.obj(d, "@variables", "descriptor");
  c.only_keys(dvars, "descriptor.@variables", {"davg", "dstd"});
  auto dref = [&](const char* k) {
    const nlohmann::json& v = c.obj(dvars, k, "descriptor.@variables");
    if (!v.is_string()) c.fail(std::string("key 'descriptor.@variables.") + k + "': expected a dataset name");
    return v.get<std::string>();
  };
  const Array davg = get(dref("davg"), {S, nnei, 4});
  const Array dstd = get(dref("dstd"), {S, nnei, 4});
  const std::size_t SS = static_cast<std::size_t>(S) * static_cast<std::size_t>(S);
  m.mean_s.assign(SS, 0.0);
  m.std_s.assign(SS, 1.0);
  m.std_r.assign(SS, 1.0);
  {
    auto at = [&](const Array& a, int ct, long long slot, int k) {
      return a.values[(static_cast<std::size_t>(ct) * static_cast<std::size_t>(nnei) + static_cast<std::size_t>(slot)) * 4 + static_cast<std::size_t>(k)];
    };
    for (int ct = 0; ct < S; ++ct) {
      long long s0 = 0;
      for (int a = 0; a < S; ++a) {
        const long long s1 = s0 + m.sel[static_cast<std::size_t>(a)];
        const std::size_t p = static_cast<std::size_t>(ct) * S + a;
        const std::string blk = " (centre type " + m.species[static_cast<std::size_t>(ct)] + ", neighbour type " + m.species[static_cast<std::size_t>(a)] + ")";
        if (s1 > s0) {
          const double mean = at(davg, ct, s0, 0), sd = at(dstd, ct, s0, 0), sr = at(dstd, ct, s0, 1);
          for (long long q = s0; q < s1; ++q) {
            if (at(davg, ct, q, 0) != mean || at(dstd, ct, q, 0) != sd)
              c.unsupported("descriptor statistics davg/dstd that vary within a neighbour-type block" + blk + " (qnn has one mean and deviation per species pair)");
            for (int k = 1; k < 4; ++k) {
              if (at(davg, ct, q, k) != 0.0) c.unsupported("a non-zero davg in the angular columns" + blk);
              if (at(dstd, ct, q, k) != sr) c.unsupported("dstd that differs between the angular columns or slots" + blk);
            }
          }
          if (!std::isfinite(mean) || !(sd > 0) || !(sr > 0) || !std::isfinite(sd) || !std::isfinite(sr))
            c.fail("descriptor statistics" + blk + " are not finite with positive deviations");
          m.mean_s[p] = mean;
          m.std_s[p] = sd;
          m.std_r[p] = sr;
        }
        s0 = s1;
      }
    }
  }

  // ---- fitting
  const nlohmann::json& f = c.obj(model, "fitting", "model");
  if (!f.is_object()) c.fail("key 'model.fitting' is not an object");
  const std::string ftype = c.str(f, "type", "fitting");
  if (ftype != "ener") c.unsupported("the fitting '" + ftype + "' (qnn imports energy models: fitting type 'ener')");
  c.only_keys(f, "the fitting", {"@class", "type", "@version", "var_name", "ntypes", "dim_descrpt", "mixed_types", "dim_out", "neuron",
                                "resnet_dt", "numb_fparam", "numb_aparam", "dim_case_embd", "default_fparam", "rcond", "tot_ener_zero",
                                "trainable", "atom_ener", "activation_function", "precision", "layer_name", "use_aparam_as_mask",
                                "spin", "exclude_types", "nets", "@variables", "type_map", "remove_vaccum_contribution", "seed"});
  if (const nlohmann::json* v = c.opt(f, "var_name"); v && *v != "energy") c.unsupported("fitting var_name " + v->dump());
  if (c.opt(f, "numb_fparam") && c.integer(f, "numb_fparam", "fitting", 0, 1 << 20) != 0) c.unsupported("frame parameters (fparam)");
  if (c.opt(f, "numb_aparam") && c.integer(f, "numb_aparam", "fitting", 0, 1 << 20) != 0) c.unsupported("atomic parameters (aparam)");
  if (c.opt(f, "dim_case_embd") && c.integer(f, "dim_case_embd", "fitting", 0, 1 << 20) != 0) c.unsupported("case embedding (dim_case_embd, multi-task)");
  if (c.opt(f, "dim_out") && c.integer(f, "dim_out", "fitting", 0, 1 << 20) != 1) c.unsupported("a fitting output width other than 1");
  c.require_empty(f, "atom_ener", "atom_ener");
  c.require_empty(f, "exclude_types", "exclude_types in the fitting");
  c.require_empty(f, "spin", "spin");
  c.require_empty(f, "layer_name", "shared fitting layers (layer_name)");
  c.require_empty(f, "remove_vaccum_contribution", "remove_vaccum_contribution");
  if (const nlohmann::json* u = c.opt(f, "use_aparam_as_mask"); u && *u != false) c.unsupported("use_aparam_as_mask");
  if (c.opt(f, "ntypes") && c.integer(f, "ntypes", "fitting", 0, limits::kMaxSpecies) != S) c.fail("fitting.ntypes differs from the type_map");
  const long long ddim = static_cast<long long>(m.embed_widths.back()) * m.axis_neuron;
  if (c.opt(f, "dim_descrpt") && c.integer(f, "dim_descrpt", "fitting", 0, 1LL << 40) != ddim) c.fail("fitting.dim_descrpt differs from neuron[-1]*axis_neuron");
  m.fit_widths = c.ints(f, "neuron", "fitting", 1, limits::kMaxFitWidth, limits::kMaxLayers);
  if (m.fit_widths.empty()) c.unsupported("a fitting net without hidden layers");
  m.resnet_dt = c.boolean(f, "resnet_dt", "fitting");
  const std::string f_prec = precision_of(c, f, "the fitting");
  if (activation_of(c, c.str(f, "activation_function", "fitting"), "the fitting") != Activation::Tanh) c.unsupported("a linear fitting activation");
  const bool mixed = c.opt(f, "mixed_types") && c.boolean(f, "mixed_types", "fitting");
  const nlohmann::json& fn = c.obj(f, "nets", "fitting");
  const int fndim = static_cast<int>(c.integer(fn, "ndim", "fitting.nets", 0, 3));
  if (fndim != (mixed ? 0 : 1)) c.fail("fitting.nets.ndim " + std::to_string(fndim) + " does not match mixed_types");
  const nlohmann::json& fnets = c.obj(fn, "networks", "fitting.nets");
  const std::size_t nfit = mixed ? 1 : static_cast<std::size_t>(S);
  if (!fnets.is_array() || fnets.size() != nfit) c.fail("fitting.nets.networks: expected " + std::to_string(nfit) + " networks");
  for (int s = 0; s < S; ++s) {
    const std::size_t k = mixed ? 0 : static_cast<std::size_t>(s);
    const nlohmann::json& net = fnets[k];
    const std::string where = "fitting.nets.networks[" + std::to_string(k) + "]";
    if (!net.is_object()) c.fail(where + " is not a JSON object");
    c.only_keys(net, where, {"@class", "@version", "in_dim", "out_dim", "neuron", "activation_function", "resnet_dt", "precision", "bias_out", "layers", "trainable"});
    if (c.integer(net, "in_dim", where, 0, 1LL << 40) != ddim) c.unsupported("a fitting input other than the descriptor (" + where + ")");
    if (c.integer(net, "out_dim", where, 0, 1 << 20) != 1) c.unsupported("a fitting output width other than 1");
    if (c.ints(net, "neuron", where, 1, limits::kMaxFitWidth, limits::kMaxLayers) != m.fit_widths) c.fail(where + ".neuron differs from fitting.neuron");
    if (precision_of(c, net, where) != f_prec) c.unsupported("mixed precisions (" + where + ")");
    if (const nlohmann::json* bo = c.opt(net, "bias_out"); bo && *bo != true) c.unsupported("a fitting output layer without bias");
    const nlohmann::json& layers = c.obj(net, "layers", where);
    if (!layers.is_array() || layers.size() != m.fit_widths.size() + 1) c.fail(where + ".layers: expected " + std::to_string(m.fit_widths.size() + 1) + " layers");
    Net out_net;
    int in = static_cast<int>(ddim);
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const bool last = l + 1 == layers.size();
      const int out = last ? 1 : m.fit_widths[l];
      const std::string lw = where + ".layers[" + std::to_string(l) + "]";
      DenseLayer L = read_layer(c, layers[l], lw, in, out, f_prec, get);
      if (last && (L.activation != Activation::Linear || L.residual != Residual::None)) c.unsupported("a non-linear or residual fitting output layer (" + lw + ")");
      if (!last && L.activation != Activation::Tanh) c.unsupported("a linear hidden fitting layer (" + lw + ")");
      if (!last && (L.residual == Residual::Doubling || L.residual == Residual::DoublingTimestep)) c.unsupported("a fitting layer that doubles its width with a residual (" + lw + ")");
      out_net.layers.push_back(std::move(L));
      in = out;
    }
    m.fit.push_back(std::move(out_net));
  }
  // energy bias: the fitting's bias_atom_e plus the atomic model's out_bias (both added to
  // the atomic energy; out_std does not scale energies in DeePMD-kit's apply_out_stat).
  const nlohmann::json& fvars = c.obj(f, "@variables", "fitting");
  for (auto it = fvars.begin(); it != fvars.end(); ++it) {
    if (it.key() == "bias_atom_e") continue;
    if (!it->is_null()) c.unsupported("the fitting variable '" + it.key() + "' (fparam/aparam statistics or case embedding)");
  }
  const nlohmann::json& be = c.obj(fvars, "bias_atom_e", "fitting.@variables");
  if (!be.is_string()) c.fail("key 'fitting.@variables.bias_atom_e': expected a dataset name");
  m.energy_bias = get(be.get<std::string>(), {S, 1}).values;
  if (const nlohmann::json* mv = c.opt(model, "@variables"); mv && !mv->is_null()) {
    c.only_keys(*mv, "model.@variables", {"out_bias", "out_std"});
    if (const nlohmann::json* ob = c.opt(*mv, "out_bias"); ob && !ob->is_null()) {
      if (!ob->is_string()) c.fail("key 'model.@variables.out_bias': expected a dataset name");
      const Array a = get(ob->get<std::string>(), {1, S, 1});
      for (int s = 0; s < S; ++s) m.energy_bias[static_cast<std::size_t>(s)] += a.values[static_cast<std::size_t>(s)];
    }
  }

  m.provenance = {{"imported_from", std::filesystem::path(path).filename().string()},
                  {"importer", "qnn import (DeePMD-kit .dp)"},
                  {"deepmd_kit_version", version},
                  {"deepmd_backend", backend},
                  {"deepmd_precision", d_prec == f_prec ? d_prec : d_prec + " (descriptor), " + f_prec + " (fitting)"}};
  if (d_prec == "float64" && f_prec == "float64") m.provenance["storage_dtype"] = "f64";
  // Bounds and architecture (refuses e.g. std below 1e-3 or weights beyond 1e6 by name).
  m.validate(path);

  rep << "DeePMD-kit model: version " << version << ", backend " << backend << "\n";
  rep << "species         ";
  for (int s = 0; s < S; ++s) rep << (s ? ", " : "") << m.species[static_cast<std::size_t>(s)] << " (sel " << m.sel[static_cast<std::size_t>(s)] << ")";
  rep << "\ndescriptor      se_e2_a, rcut " << m.rcut << " A, rcut_smth " << m.rcut_smth << " A, neighbour slots " << nnei << "\n";
  rep << "embedding net   1";
  for (int w : m.embed_widths) rep << " -> " << w;
  rep << ", axis_neuron " << m.axis_neuron << ", type_one_side " << (m.type_one_side ? "true" : "false") << " ("
      << m.n_embed_nets() << " nets), resnet_dt " << (d_resnet_dt ? "true" : "false") << "\n";
  rep << "fitting net     " << ddim;
  for (int w : m.fit_widths) rep << " -> " << w;
  rep << " -> 1, resnet_dt " << (m.resnet_dt ? "true" : "false") << (mixed ? ", one net for all types" : "") << "\n";
  rep << "precision       " << d_prec << " (descriptor), " << f_prec << " (fitting)\n";
  rep << "energy bias     ";
  for (int s = 0; s < S; ++s) rep << (s ? ", " : "") << m.species[static_cast<std::size_t>(s)] << " " << m.energy_bias[static_cast<std::size_t>(s)] << " eV";
  rep << "\nparameters      " << m.parameter_count() << "\n";
  if (report) *report = rep.str();
  return m;
}

nlohmann::json read_dp_json(const std::string& path) {
  const H5 f = open_file(path);
  return parse_json(read_string_attribute(f.get(), "json", path), path);
}

Model import_dp(const std::string& path, std::string* report) {
  const H5 f = open_file(path);
  const nlohmann::json j = parse_json(read_string_attribute(f.get(), "json", path), path);
  const hid_t fid = f.get();
  return model_from_json(j, [&](const std::string& ref, const std::vector<long long>& expect) { return read_dataset(fid, ref, expect, path); },
                         path, report);
}

ArrayGetter dp_array_getter(const std::string& path) {
  return [path](const std::string& ref, const std::vector<long long>& expect) {
    const H5 f = open_file(path);
    return read_dataset(f.get(), ref, expect, path);
  };
}

void rewrite_dp_json(const std::string& from, const std::string& to, const nlohmann::json& j) {
  std::error_code ec;
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) throw Error(to + ": cannot copy " + from + ": " + ec.message());
  quiet_hdf5();
  H5 f(H5Fopen(to.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
  if (!f.ok()) throw Error(to + ": cannot open for writing");
  if (H5Aexists(f.get(), "json") > 0) H5Adelete(f.get(), "json");
  const std::string text = j.dump();
  H5 type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  H5 space(H5Screate(H5S_SCALAR), H5Sclose);
  H5 attr(H5Acreate2(f.get(), "json", type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const char* p = text.c_str();
  if (!attr.ok() || H5Awrite(attr.get(), type.get(), &p) < 0) throw Error(to + ": cannot write the json attribute");
}

}  // namespace qnn::deepmd
