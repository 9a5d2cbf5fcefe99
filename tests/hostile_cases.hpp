// The crafted .qnn files of issue 16 ("hostile inputs"): each one is a valid small model with
// a few fields changed together and the checksum recomputed as the writer does, so that only
// the reader's own checks can refuse it. Each case names the text its error must contain
// (after the file name). Used by test_hostile_inputs (the reader) and test_plugin_hostile
// (pair_style qnn).
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qnn/format/model.hpp"
#include "qnn_file_util.hpp"
#include "test_plugin_util.hpp"
#include "test_util.hpp"

namespace qnn::test {

struct HostileCase {
  std::string name;
  std::vector<char> bytes;
  std::string needle;  // the error must contain this
};

// The bytes qnn::write_model writes for `m`.
inline std::vector<char> model_bytes(const Model& m) {
  TempPath p(".qnn");
  write_model(m, p.str());
  return read_bytes(p.str());
}

// JSON text nested `depth` arrays deep.
inline std::string nested_arrays(std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

inline std::vector<HostileCase> hostile_cases() {
  using nlohmann::json;
  const Model fp = small_water_model(7, 6.0);
  const std::vector<char> fp_bytes = model_bytes(fp);
  const std::vector<char> q_bytes = model_bytes(quantize_weight_only(fp));
  QnnFile base, qbase;
  split_qnn(fp_bytes, base);
  split_qnn(q_bytes, qbase);
  const json h0 = header_json(base), qh0 = header_json(qbase);

  std::vector<HostileCase> cases;
  // A case from an edit of the FP32 (or quantized) file's header and data section.
  auto edit = [&](const std::string& name, const std::string& needle, const std::function<void(json&, QnnFile&)>& fn,
                  bool quantized = false) {
    QnnFile f = quantized ? qbase : base;
    json h = quantized ? qh0 : h0;
    fn(h, f);
    set_header(f, h);
    cases.push_back({name, assemble_qnn(f), needle});
  };
  auto tensor = [](json& h, const std::string& name) -> json& { return h["tensors"][static_cast<std::size_t>(tensor_index(h, name))]; };
  auto layer = [](json& h, const std::string& name) -> json& { return h["layers"][static_cast<std::size_t>(layer_index(h, name))]; };
  auto put_f64 = [](QnnFile& f, std::uint64_t offset, double v) { std::memcpy(f.blob.data() + offset, &v, 8); };
  const std::string tix = std::to_string(tensor_index(h0, "fit.0.0.weight"));

  // ---- offsets and lengths outside the data section (crashed: SIGSEGV)
  edit("offset_negative", "key 'tensors[" + tix + "].offset': -64 is outside [0, ",
       [&](json& h, QnnFile&) { tensor(h, "fit.0.0.weight")["offset"] = -64; });
  edit("offset_beyond_data", "key 'tensors[" + tix + "].offset': " + std::to_string(base.blob.size() + 6400) + " is outside [0, " +
                                 std::to_string(base.blob.size()) + "]",
       [&](json& h, QnnFile& f) { tensor(h, "fit.0.0.weight")["offset"] = f.blob.size() + 6400; });
  edit("tensor_runs_past_data", "tensor 'fit.0.0.weight' (offset ", [&](json& h, QnnFile& f) {
    tensor(h, "fit.0.0.weight")["offset"] = (f.blob.size() - 1) / 64 * 64;
  });
  edit("nbytes_negative", "key 'tensors[" + tix + "].nbytes': -4 is outside",
       [&](json& h, QnnFile&) { tensor(h, "fit.0.0.weight")["nbytes"] = -4; });
  edit("nbytes_huge", "key 'tensors[" + tix + "].nbytes': 9223372036854775808 is outside",
       [&](json& h, QnnFile&) { tensor(h, "fit.0.0.weight")["nbytes"] = std::uint64_t(1) << 63; });
  edit("shape_wraps", "key 'tensors[" + tix + "].shape[0]': 4294967328 is outside", [&](json& h, QnnFile&) {
    tensor(h, "fit.0.0.weight")["shape"] = json::array({(std::uint64_t(1) << 32) + 32, 12});
  });
  edit("blob_bytes_wraps", "file is truncated (data section shorter than the header says)",
       [&](json& h, QnnFile&) { h["blob_bytes"] = std::numeric_limits<std::uint64_t>::max(); });
  edit("tensors_overlap", "overlap in the data section",
       [&](json& h, QnnFile&) { tensor(h, "fit.0.1.bias")["offset"] = tensor(h, "fit.0.1.weight")["offset"]; });

  // ---- layer sizes whose product M1*M2 wraps in 32 bits (crashed LAMMPS on the first step)
  edit("m1_m2_wraps_int32", "key 'axis_neuron': 65536 is outside [1, 1024]", [&](json& h, QnnFile&) {
    h["embed_widths"] = json::array({4, 65536});
    h["axis_neuron"] = 65536;
  });
  edit("descriptor_too_large", "descriptor dimension M1*axis_neuron = 1048576 exceeds 65536", [&](json& h, QnnFile&) {
    h["embed_widths"] = json::array({4, 1024});
    h["axis_neuron"] = 1024;
  });

  // ---- deeply nested JSON (stack overflow in the parser)
  for (std::size_t depth : {std::size_t(10000), std::size_t(1000000)}) {
    QnnFile f = base;
    f.header = nested_arrays(depth);
    cases.push_back({"deep_json_" + std::to_string(depth), assemble_qnn(f), "header JSON is nested deeper than 64 levels"});
  }
  {
    json h = h0;
    h["provenance"]["deep"] = "DEEP";
    QnnFile f = base;
    f.header = h.dump(1);
    f.header.replace(f.header.find("\"DEEP\""), 6, nested_arrays(100000));
    cases.push_back({"deep_json_in_provenance", assemble_qnn(f), "header JSON is nested deeper than 64 levels"});
  }

  // ---- missing keys and wrong types (escaped as raw json exceptions)
  edit("missing_tensors", "key 'tensors' is missing (expected an array)", [&](json& h, QnnFile&) { h.erase("tensors"); });
  edit("tensors_object", "key 'tensors': expected an array", [&](json& h, QnnFile&) { h["tensors"] = json::object(); });
  edit("granularity_number", ".quant.weight_granularity': expected a string",
       [&](json& h, QnnFile&) { layer(h, "fit.0.1")["quant"]["weight_granularity"] = 3; }, true);
  edit("provenance_array", "key 'provenance': expected an object", [&](json& h, QnnFile&) { h["provenance"] = json::array({1, 2}); });
  edit("species_number", "key 'species': expected an array", [&](json& h, QnnFile&) { h["species"] = 5; });
  edit("rcut_string", "key 'rcut': expected a number", [&](json& h, QnnFile&) { h["rcut"] = "6.0"; });
  edit("layer_in_string", ".in': expected an integer", [&](json& h, QnnFile&) { layer(h, "embed.0.0")["in"] = "1"; });
  edit("fit_width_float", "key 'fit_widths[0]': expected an integer", [&](json& h, QnnFile&) { h["fit_widths"][0] = 12.5; });
  edit("blob_bytes_string", "key 'blob_bytes': expected a non-negative integer", [&](json& h, QnnFile&) { h["blob_bytes"] = "1"; });
  edit("storage_dtype_number", "key 'provenance.storage_dtype': expected a string",
       [&](json& h, QnnFile&) { h["provenance"]["storage_dtype"] = 32; });
  edit("unknown_key", "unknown key 'colour'", [&](json& h, QnnFile&) { h["colour"] = "red"; });
  edit("env_mat_unknown", "unknown env_mat 'dp'", [&](json& h, QnnFile&) { h["env_mat"] = "dp"; });
  edit("env_mat_number", "key 'env_mat': expected a string", [&](json& h, QnnFile&) { h["env_mat"] = 1; });
  edit("quant_unknown_key", "unknown key 'layers[" + std::to_string(layer_index(qh0, "fit.0.1")) + "].quant.zero'",
       [&](json& h, QnnFile&) { layer(h, "fit.0.1")["quant"]["zero"] = 1; }, true);
  {
    QnnFile f = base;
    f.header = "[1, 2]";
    cases.push_back({"header_not_object", assemble_qnn(f), "header is not a JSON object"});
  }

  // ---- silent wrong numbers: huge std-inverse, weights that overflow, dtype vs blob
  edit("std_inverse_huge", "std_s[O][O] = 1e-300 is outside [0.001, 1000]",
       [&](json& h, QnnFile& f) { put_f64(f, tensor(h, "std_s")["offset"].get<std::uint64_t>(), 1e-300); });
  edit("mean_huge", "mean_s[O][H] = 1e+10 exceeds 1000",
       [&](json& h, QnnFile& f) { put_f64(f, tensor(h, "mean_s")["offset"].get<std::uint64_t>() + 8, 1e10); });
  edit("energy_bias_huge", "energy_bias 1e+300 eV exceeds", [&](json& h, QnnFile& f) {
    put_f64(f, tensor(h, "energy_bias")["offset"].get<std::uint64_t>(), 1e300);
  });
  edit("weights_overflow", "would overflow float arithmetic", [&](json& h, QnnFile& f) {
    // Linear hidden layers with weights of 5e5: finite, within the parameter bound, but the
    // product through the network overflows float.
    for (const char* name : {"fit.0.0", "fit.0.1", "fit.1.0", "fit.1.1"}) {
      layer(h, name)["activation"] = "linear";
      const json& t = tensor(h, std::string(name) + ".weight");
      const float w = 5e5f;
      for (std::uint64_t k = 0; k < t["nbytes"].get<std::uint64_t>() / 4; ++k)
        std::memcpy(f.blob.data() + t["offset"].get<std::uint64_t>() + 4 * k, &w, 4);
    }
  });
  edit("dtype_i32_for_f32", "tensor 'embed.0.0.weight' has dtype i32, expected f32",
       [&](json& h, QnnFile&) { tensor(h, "embed.0.0.weight")["dtype"] = "i32"; });
  edit("dtype_f64_same_nbytes", "tensor 'embed.0.0.weight' has nbytes 16 but its shape (1, 4) and dtype f64 need 32",
       [&](json& h, QnnFile&) { tensor(h, "embed.0.0.weight")["dtype"] = "f64"; });
  edit("dtype_f64_nbytes_doubled", "tensor 'embed.0.0.weight' has dtype f64, expected f32", [&](json& h, QnnFile&) {
    tensor(h, "embed.0.0.weight")["dtype"] = "f64";
    tensor(h, "embed.0.0.weight")["nbytes"] = 32;
  });
  edit("dtype_unknown", "tensor 'embed.0.0.weight' has unknown dtype 'f16'",
       [&](json& h, QnnFile&) { tensor(h, "embed.0.0.weight")["dtype"] = "f16"; });
  edit("stats_f32", "tensor 'std_r' has dtype f32, expected f64", [&](json& h, QnnFile& f) {
    // The last tensor, std_r, stored as float: values converted, size and blob_bytes updated.
    json& t = tensor(h, "std_r");
    const std::uint64_t off = t["offset"].get<std::uint64_t>();
    for (int k = 0; k < 4; ++k) {
      double d;
      std::memcpy(&d, f.blob.data() + off + 8 * k, 8);
      const float x = static_cast<float>(d);
      std::memcpy(f.blob.data() + off + 4 * k, &x, 4);
    }
    f.blob.resize(off + 16);
    t["dtype"] = "f32";
    t["nbytes"] = 16;
    h["blob_bytes"] = f.blob.size();
  });
  edit("int_weights_wrong_width", "tensor 'fit.0.1.weight' has dtype i8, expected i16",
       [&](json& h, QnnFile&) { layer(h, "fit.0.1")["quant"]["weight_bits"] = 12; }, true);

  // ---- rcut 1000 (hung qnn eval and LAMMPS)
  edit("rcut_1000", "rcut 1000 A exceeds the maximum of 20 A", [&](json& h, QnnFile&) { h["rcut"] = 1000.0; });

  // ---- weight_bits out of range before any shift (UBSan: 1L << 99)
  const std::string qix = std::to_string(layer_index(qh0, "fit.0.1"));
  edit("weight_bits_100", "key 'layers[" + qix + "].quant.weight_bits': 100 is outside [0, 16]",
       [&](json& h, QnnFile&) { layer(h, "fit.0.1")["quant"]["weight_bits"] = 100; }, true);
  edit("weight_bits_negative", "key 'layers[" + qix + "].quant.weight_bits': -1 is outside [0, 16]",
       [&](json& h, QnnFile&) { layer(h, "fit.0.1")["quant"]["weight_bits"] = -1; }, true);

  // ---- accepted although not honoured
  edit("act_zero_point", "layer 'fit.0.1': act_zero_point 3 is not supported",
       [&](json& h, QnnFile&) { layer(h, "fit.0.1")["quant"]["act_zero_point"] = 3; }, true);
  edit("weight_zero_point", "layer 'fit.0.1': weight_zero_point 1 is not supported", [&](json& h, QnnFile&) {
    json zp = json::array();
    for (int c = 0; c < 12; ++c) zp.push_back(c == 5 ? 1 : 0);
    layer(h, "fit.0.1")["quant"]["weight_zero_point"] = zp;
  }, true);
  {
    QnnFile f = base;
    f.flags = 1;
    cases.push_back({"reserved_flags", assemble_qnn(f), "reserved flags are set (0x1)"});
  }
  edit("duplicate_layer", "layer 'embed.0.0' is listed twice", [&](json& h, QnnFile&) { h["layers"].push_back(h["layers"][0]); });
  edit("duplicate_tensor", "tensor 'embed.0.0.weight' is listed twice",
       [&](json& h, QnnFile&) { h["tensors"].push_back(h["tensors"][0]); });
  edit("negative_sel", "key 'sel[0]': -5 is outside [0, 10000]", [&](json& h, QnnFile&) { h["sel"][0] = -5; });
  edit("extra_layer", "layer 'fit.5.0' is not part of the architecture", [&](json& h, QnnFile&) {
    json L = h["layers"][0];
    L["name"] = "fit.5.0";
    h["layers"].push_back(L);
  });
  edit("extra_tensor", "tensor 'extra' is not part of the model", [&](json& h, QnnFile& f) {
    const std::uint64_t off = (f.blob.size() + 63) / 64 * 64;
    f.blob.resize(off + 8, 0);
    h["tensors"].push_back({{"name", "extra"}, {"dtype", "f64"}, {"shape", {1}}, {"offset", off}, {"nbytes", 8}});
    h["blob_bytes"] = f.blob.size();
  });
  edit("species_null", "'NULL' is not a valid species name", [&](json& h, QnnFile&) { h["species"][1] = "NULL"; });
  edit("format_version_mismatch", "key 'format_version': 2 is outside [1, 1]", [&](json& h, QnnFile&) { h["format_version"] = 2; });
  return cases;
}

}  // namespace qnn::test
