// `qnn info MODEL`: architecture, species, cutoff, parameter count and per-layer precision.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.hpp"
#include "qnn/format/model.hpp"

namespace qnn::cli {

void register_info(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand("info", "Print a .qnn model's architecture, species, cutoff and per-layer precision");
  sub->add_option("model", *path, "model file (.qnn)")->required();
  sub->add_flag("--json", *json, "print the file's header fields as JSON");
  sub->callback([path, json] {
    const Model m = read_model(*path);
    if (*json) {
      nlohmann::json j;
      j["species"] = m.species;
      j["rcut"] = m.rcut;
      j["rcut_smth"] = m.rcut_smth;
      j["sel"] = m.sel;
      j["embed_widths"] = m.embed_widths;
      j["axis_neuron"] = m.axis_neuron;
      j["fit_widths"] = m.fit_widths;
      j["type_one_side"] = m.type_one_side;
      j["env_mat"] = m.env_mat;
      j["parameters"] = m.parameter_count();
      j["default_mode"] = m.default_mode;
      j["provenance"] = m.provenance;
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("%s: %s", path->c_str(), ("\n" + describe(m)).c_str());
    }
  });
}

}  // namespace qnn::cli
