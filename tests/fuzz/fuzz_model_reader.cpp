// libFuzzer target for the .qnn reader (issue 16): qnn::parse_model must turn any bytes into a
// Model or a qnn::Error; anything else (a crash, another exception, a sanitizer report, a hang
// or an out-of-memory) is a finding.
//
// A byte-level fuzzer rarely gets past the CRC-32 and the JSON schema: the bugs of issue 16
// each needed several fields changed together. So a structure-aware mutator (below) edits the
// JSON header (numbers, types, nesting, sizes, offsets, dtypes, quantization fields) or the data
// section, then re-assembles a consistent file with a valid checksum (tests/qnn_file_util.hpp),
// most of the time with blob_bytes fixed up too. One input in eight gets plain byte mutation.
// Build and run: scripts/fuzz.sh (docs/format.md, "Fuzzing").
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qnn/error.hpp"
#include "qnn/format/model.hpp"
#include "qnn_file_util.hpp"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<char> bytes(reinterpret_cast<const char*>(data), reinterpret_cast<const char*>(data) + size);
  try {
    const qnn::Model m = qnn::parse_model(bytes, "fuzz.qnn");
    // What the front ends do next with an accepted model.
    (void)qnn::describe(m);
    (void)m.parameter_count();
  } catch (const qnn::Error&) {
    // the expected outcome for a bad file
  }
  return 0;
}

namespace {

using nlohmann::json;
using Rng = std::mt19937_64;

std::size_t pick(Rng& rng, std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng() % n); }

// Every value in the document, with its parent and key/index, in document order.
struct Slot {
  json* value;
  json* parent;  // nullptr for the root
  std::string key;
  std::size_t index;
};

void collect(json& v, json* parent, const std::string& key, std::size_t index, std::vector<Slot>& out) {
  out.push_back({&v, parent, key, index});
  if (v.is_object()) {
    for (auto it = v.begin(); it != v.end(); ++it) collect(it.value(), &v, it.key(), 0, out);
  } else if (v.is_array()) {
    for (std::size_t i = 0; i < v.size(); ++i) collect(v[i], &v, "", i, out);
  }
}

json interesting_number(Rng& rng, const json& old) {
  static const std::int64_t ints[] = {0, 1, -1, 2, 63, 64, 65, 127, 128, 255, 256, 1023, 1024, 1025, 4096, 65535, 65536,
                                      (1LL << 31) - 1, 1LL << 31, (1LL << 32) - 1, 1LL << 32, (1LL << 32) + 1,
                                      (1LL << 62), INT64_MAX, INT64_MIN, -64, -(1LL << 31)};
  static const double reals[] = {0.0, -0.0, 1e-300, -1e-300, 1e300, -1e300, 1e-45, 3.5e38, 1e-3, 0.999e-3, 1e3, 1e6,
                                 1.0000001e6, 20.0, 20.000001, 1000.0, 0.5, -0.5, 1e30};
  switch (pick(rng, 6)) {
    case 0: return ints[pick(rng, sizeof ints / sizeof ints[0])];
    case 1: return reals[pick(rng, sizeof reals / sizeof reals[0])];
    case 2: return std::uint64_t(UINT64_MAX - pick(rng, 70));
    default:
      if (old.is_number_integer()) {
        // Unsigned arithmetic: the mutator itself wraps around on purpose (no UB under UBSan).
        const std::uint64_t v = static_cast<std::uint64_t>(old.get<std::int64_t>());
        const std::uint64_t d[] = {1, ~std::uint64_t(0), 64, std::uint64_t(0) - 64, v, std::uint64_t(0) - 2 * v, 4096};
        return static_cast<std::int64_t>(v + d[pick(rng, 7)]);
      }
      if (old.is_number()) return old.get<double>() * (pick(rng, 2) ? 1e3 : 1e-3);
      return static_cast<std::int64_t>(pick(rng, 100)) - 10;
  }
}

json random_value(Rng& rng, const json& like) {
  static const char* strings[] = {"f32", "f64", "i8", "i16", "i32", "f16", "", "tanh", "linear", "relu", "none", "identity",
                                  "doubling", "timestep", "doubling_timestep", "per_channel", "per_tensor", "NULL", "O", "H", "qnn", "se_e2_a",
                                  "metal", "real", "int8", "mixed", "weight-only", "fp32", "embed.0.0", "fit.0.0",
                                  "embed.0.0.weight", "fit.1.2.bias", "std_s", "mean_s", "energy_bias"};
  switch (pick(rng, 8)) {
    case 0: return interesting_number(rng, like);
    case 1: return strings[pick(rng, sizeof strings / sizeof strings[0])];
    case 2: return json::array();
    case 3: return json::object();
    case 4: return nullptr;
    case 5: return pick(rng, 2) == 1;
    case 6: return json::array({interesting_number(rng, like), interesting_number(rng, like)});
    default: return like.is_array() && !like.empty() ? like[pick(rng, like.size())] : json(1.5);
  }
}

// A value to be replaced, in the dumped text, by itself nested `depth` arrays deep (building
// the nesting as JSON values would cost O(depth^2) copies).
struct Nesting {
  std::string token;
  std::size_t depth;
  std::string inner;
};

// One edit of the header document.
void mutate_header(Rng& rng, json& h, std::vector<Nesting>& nest) {
  std::vector<Slot> slots;
  collect(h, nullptr, "", 0, slots);
  Slot s = slots[pick(rng, slots.size())];
  // Bias towards the fields that decide sizes and layout.
  if (pick(rng, 2) == 0 && h.is_object()) {
    static const char* hot[] = {"tensors", "layers", "embed_widths", "fit_widths", "axis_neuron", "sel", "rcut",
                                "blob_bytes", "species", "neighbor_norm", "rcut_smth", "provenance"};
    const char* k = hot[pick(rng, sizeof hot / sizeof hot[0])];
    if (h.contains(k)) {
      std::vector<Slot> sub;
      collect(h[k], &h, k, 0, sub);
      s = sub[pick(rng, sub.size())];
    }
  }
  json& v = *s.value;
  switch (pick(rng, 10)) {
    case 0:
    case 1:
    case 2:  // a number edited
      v = v.is_number() || pick(rng, 4) == 0 ? interesting_number(rng, v) : random_value(rng, v);
      break;
    case 3:  // a type changed
      v = random_value(rng, v);
      break;
    case 4:  // removed
      if (s.parent && s.parent->is_object()) s.parent->erase(s.key);
      else if (s.parent && s.parent->is_array() && s.index < s.parent->size()) s.parent->erase(s.index);
      break;
    case 5:  // duplicated
      if (s.parent && s.parent->is_array()) s.parent->push_back(v);
      else if (v.is_array() && !v.empty()) v.push_back(v[pick(rng, v.size())]);
      break;
    case 6: {  // nested deeper (around the depth limit, or far past it)
      const std::size_t depth = pick(rng, 3) == 0 ? 60 + pick(rng, 10) : 1 + pick(rng, 5000);
      const std::string token = "@nest" + std::to_string(rng()) + "@";
      nest.push_back({token, depth, v.dump()});
      v = token;
      break;
    }
    case 7: {  // a tensor entry's layout changed
      if (!h.is_object() || !h.contains("tensors") || !h["tensors"].is_array() || h["tensors"].empty()) break;
      json& t = h["tensors"][pick(rng, h["tensors"].size())];
      if (!t.is_object()) break;
      static const char* fields[] = {"dtype", "offset", "nbytes", "shape", "name"};
      const char* f = fields[pick(rng, 5)];
      static const char* dtypes[] = {"f32", "f64", "i8", "i16", "i32", "f16"};
      if (std::string(f) == "dtype") t[f] = dtypes[pick(rng, 6)];
      else if (std::string(f) == "shape" && t[f].is_array() && !t[f].empty()) t[f][pick(rng, t[f].size())] = interesting_number(rng, t[f][0]);
      else if (std::string(f) == "name") t[f] = h["tensors"][pick(rng, h["tensors"].size())].value("name", json("x"));
      else t[f] = interesting_number(rng, t.value(f, json(0)));
      break;
    }
    case 8: {  // quantization metadata of a layer
      if (!h.is_object() || !h.contains("layers") || !h["layers"].is_array() || h["layers"].empty()) break;
      json& L = h["layers"][pick(rng, h["layers"].size())];
      if (!L.is_object()) break;
      static const char* fields[] = {"weight_bits", "act_bits", "act_scale", "act_zero_point", "out_scale",
                                     "weight_granularity", "weight_zero_point", "mode"};
      L["quant"][fields[pick(rng, 8)]] = pick(rng, 2) ? interesting_number(rng, 8) : random_value(rng, 8);
      break;
    }
    default: {  // architecture numbers changed together
      if (!h.is_object()) break;
      const std::int64_t w = static_cast<std::int64_t>(1) << pick(rng, 18);
      if (h.contains("embed_widths") && h["embed_widths"].is_array() && !h["embed_widths"].empty())
        h["embed_widths"].back() = w;
      h["axis_neuron"] = pick(rng, 2) ? w : static_cast<std::int64_t>(1) << pick(rng, 18);
      break;
    }
  }
}

// One edit of the data section: special values at a tensor's start, a byte-level mutation of
// a slice, or a size change.
void mutate_blob(Rng& rng, const json& h, std::vector<char>& blob) {
  switch (pick(rng, 3)) {
    case 0: {
      if (blob.size() < 8) break;
      std::size_t off = pick(rng, blob.size() - 7) / 8 * 8;
      if (h.is_object() && h.contains("tensors") && h["tensors"].is_array() && !h["tensors"].empty()) {
        const json& t = h["tensors"][pick(rng, h["tensors"].size())];
        if (t.is_object() && t.contains("offset") && t["offset"].is_number_unsigned() && t["offset"].get<std::uint64_t>() <= blob.size() - 8)  // no wrap: size >= 8
          off = static_cast<std::size_t>(t["offset"].get<std::uint64_t>());
      }
      const double d[] = {1e-300, 1e300, -1e300, 1e7, 0.0, -1.0, 5e5, 1e-4};
      const float f[] = {3e38f, 1e-38f, 1e7f, 5e5f, -1.0f};
      if (pick(rng, 2)) std::memcpy(blob.data() + off, &d[pick(rng, 8)], 8);
      else std::memcpy(blob.data() + off, &f[pick(rng, 5)], 4);
      break;
    }
    case 1: {
      if (blob.empty()) break;
      const std::size_t off = pick(rng, blob.size());
      const std::size_t len = std::min<std::size_t>(blob.size() - off, 1 + pick(rng, 64));
      LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(blob.data() + off), len, len);
      break;
    }
    default:
      blob.resize(pick(rng, 2) ? blob.size() + 64 * (1 + pick(rng, 4)) : blob.size() - pick(rng, blob.size() + 1));
      break;
  }
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  Rng rng(seed);
  qnn::test::QnnFile f;
  const std::vector<char> in(reinterpret_cast<char*>(data), reinterpret_cast<char*>(data) + size);
  if (pick(rng, 8) == 0 || !qnn::test::split_qnn(in, f)) return LLVMFuzzerMutate(data, size, max_size);
  json h = json::parse(f.header, nullptr, false);
  if (h.is_discarded()) {
    // Not JSON (any more): mutate its text, then re-assemble with a valid checksum.
    std::vector<char> text(f.header.begin(), f.header.end());
    text.resize(text.size() + 64);
    text.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(text.data()), text.size() - 64, text.size()));
    f.header.assign(text.begin(), text.end());
  } else {
    const std::size_t n = 1 + pick(rng, 3);
    std::vector<Nesting> nest;
    try {
      for (std::size_t i = 0; i < n; ++i) {
        if (pick(rng, 4) == 0) mutate_blob(rng, h, f.blob);
        else mutate_header(rng, h, nest);
      }
    } catch (const json::exception&) {
      // An edit that did not fit the document's (already mutated) shape: mutate bytes instead.
      return LLVMFuzzerMutate(data, size, max_size);
    }
    if (pick(rng, 16) == 0) f.flags = static_cast<std::uint32_t>(1u << pick(rng, 32));
    if (pick(rng, 10) != 0 && h.is_object()) h["blob_bytes"] = f.blob.size();
    f.header = h.dump(pick(rng, 2) ? 1 : -1);
    for (const Nesting& x : nest) {
      const std::size_t at = f.header.find("\"" + x.token + "\"");
      if (at != std::string::npos)
        f.header.replace(at, x.token.size() + 2, std::string(x.depth, '[') + x.inner + std::string(x.depth, ']'));
    }
  }
  const std::vector<char> out = qnn::test::assemble_qnn(f);
  if (out.size() > max_size) return LLVMFuzzerMutate(data, size, max_size);
  std::memcpy(data, out.data(), out.size());
  return out.size();
}
