// `qnn import`: DeePMD-kit se_e2_a energy models (the backend-independent `.dp` file that
// `dp convert-backend frozen.pb model.dp` writes) into qnn's in-memory Model, which then
// computes what DeePMD-kit computes (docs/model.md, "Imported DeePMD-kit models").
//
// A `.dp` file is HDF5: a root attribute `json` describes the model, its arrays are datasets
// `/variable_NNNN` that the JSON names. Everything outside what qnn implements (other
// descriptors, fparam/aparam, exclude_types, activations other than tanh, atom_ener, spin,
// env_protection, ...) is refused with a qnn::Error that names the file and the feature.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qnn/format/model.hpp"

namespace qnn::deepmd {

// One array of the file: its shape and values (converted to double; `bytes` is the element
// size it was stored with: 4 for float32, 8 for float64).
struct Array {
  std::vector<long long> shape;
  std::vector<double> values;
  int bytes = 8;
};

// Fetches the dataset a JSON reference names (e.g. "/variable_0003"), refusing one whose
// shape differs from `expect` (-1: any extent). Throws qnn::Error.
using ArrayGetter = std::function<Array(const std::string& ref, const std::vector<long long>& expect)>;

// Maps the model JSON of a `.dp` file to a qnn Model; `path` names the file in errors. A line
// per fact read (species, cutoffs, sizes, precision, DeePMD-kit version) goes to `report`.
Model model_from_json(const nlohmann::json& j, const ArrayGetter& get, const std::string& path,
                      std::string* report = nullptr);

// Reads a `.dp` (HDF5) file; throws qnn::Error naming the file for a missing, non-HDF5,
// corrupt or unsupported one.
Model import_dp(const std::string& path, std::string* report = nullptr);

// A getter that reads the datasets of the `.dp` file at `path` (opening it on each call).
ArrayGetter dp_array_getter(const std::string& path);

// For tests: the JSON attribute of a `.dp` file, and a copy of it with the attribute replaced.
nlohmann::json read_dp_json(const std::string& path);
void rewrite_dp_json(const std::string& from, const std::string& to, const nlohmann::json& j);

}  // namespace qnn::deepmd
