// `qnn import MODEL.dp -o OUT.qnn`: a DeePMD-kit se_e2_a energy model (the .dp file of
// `dp convert-backend frozen.pb model.dp`) as a .qnn file that computes what DeePMD-kit
// computes (docs/model.md, "Imported DeePMD-kit models").
#include <cstdio>
#include <memory>
#include <string>

#include "commands.hpp"
#include "qnn/import/deepmd.hpp"
#include "qnn/format/model.hpp"

namespace qnn::cli {

void register_import(CLI::App& app) {
  auto in = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("import", "Convert a DeePMD-kit se_e2_a model (.dp, from `dp convert-backend`) into a .qnn file");
  sub->add_option("model", *in, "DeePMD-kit model file (.dp, HDF5)")->required();
  sub->add_option("-o,--output", *out, "output .qnn file")->required();
  sub->callback([in, out] {
    check_output_path(*out, "-o " + *out);
    std::string report;
    const Model m = deepmd::import_dp(*in, &report);
    std::printf("%s: read\n%s", in->c_str(), report.c_str());
    write_model(m, *out);
    std::printf("wrote %s: env_mat deepmd, %s embedding nets; run it with pair_style qnn %s (mode fp64 reproduces a float64 "
                "DeePMD-kit model to rounding)\n",
                out->c_str(), m.type_one_side ? "one-side" : "pair", out->c_str());
  });
}

}  // namespace qnn::cli
