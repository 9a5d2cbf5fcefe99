// `qnn qat [CONFIG.json] [--fp32 F --init P --data D... -o OUT.qnn ...]`: quantization-aware
// fine-tuning of an FP32 model from a post-training-quantized starting point (torch/qat.hpp).
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "run_flags.hpp"
#include "qnn/error.hpp"
#include "torch/qat.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace qnn::cli {
namespace {

struct QatArgs {
  std::string config;
  std::string fp32, init, output, output_dir, precision;
  std::vector<std::string> data, validation;
  int steps = -1, threads = -1;
  bool fixed_scales = false;
  libtorch::TrainOptions run;  // --resume, --no-plot, --stop-at
};

std::string absolute(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

// The config: the file (if any) with the command-line options written over it.
libtorch::QatConfig build_config(const QatArgs& a) {
  json j = json::object();
  std::string base = fs::current_path().string();
  std::string where = "command line";
  if (!a.config.empty()) {
    std::ifstream in(a.config);
    if (!in) throw Error(a.config + ": cannot open the QAT config");
    try {
      j = json::parse(in);
    } catch (const json::parse_error& e) {
      throw Error(a.config + ": not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object()) throw Error(a.config + ": the config must be a JSON object");
    base = fs::absolute(a.config).parent_path().string();
    where = a.config + " (with command-line options)";
  }
  auto section = [&](const char* key) -> json& {
    if (!j.contains(key)) j[key] = json::object();
    return j[key];
  };
  if (!a.fp32.empty()) section("model")["fp32"] = absolute(a.fp32);
  if (!a.init.empty()) section("model")["init"] = absolute(a.init);
  if (!a.precision.empty()) section("model")["precision"] = a.precision;
  if (!a.data.empty()) {
    json d = json::array();
    for (const auto& p : a.data) d.push_back(absolute(p));
    section("data")["systems"] = d;
  }
  if (!a.validation.empty()) {
    json d = json::array();
    for (const auto& p : a.validation) d.push_back(absolute(p));
    section("data")["validation_systems"] = d;
    section("data").erase("validation_fraction");
  }
  if (a.steps >= 0) section("training")["steps"] = a.steps;
  if (a.threads > 0) section("training")["threads"] = a.threads;
  if (a.fixed_scales) {
    section("quantization")["learn_weight_scales"] = false;
    section("quantization")["learn_act_scales"] = false;
  }
  if (!a.output.empty()) {
    section("output")["model"] = absolute(a.output);
    // Without a directory of its own, the run's files go next to the model: OUT.train/.
    if (a.output_dir.empty() && !section("output").contains("dir")) {
      fs::path out = absolute(a.output);
      section("output")["dir"] = (out.parent_path() / (out.stem().string() + ".train")).string();
    }
  }
  if (!a.output_dir.empty()) section("output")["dir"] = absolute(a.output_dir);
  return libtorch::QatConfig::from_json(j, base, where);
}

}  // namespace

// Registers `qnn qat`.
void register_qat(CLI::App& app) {
  auto a = std::make_shared<QatArgs>();
  CLI::App* sub = app.add_subcommand(
      "qat", "Quantization-aware fine-tuning of an FP32 model from a `qnn quantize` file (LibTorch)");
  sub->add_option("config", a->config, "QAT config (JSON); options below override its keys")->check(CLI::ExistingFile);
  sub->add_option("--fp32", a->fp32, "the FP32 model to fine-tune (model.fp32)")->check(CLI::ExistingFile);
  sub->add_option("--init", a->init, "the quantized starting point: plan and initial scales (model.init)")
      ->check(CLI::ExistingFile);
  sub->add_option("--data", a->data, "training systems (data.systems)")->check(CLI::ExistingDirectory);
  sub->add_option("--validation", a->validation, "validation systems (data.validation_systems)")
      ->check(CLI::ExistingDirectory);
  sub->add_option("-o,--output", a->output, "the quantized model to write (output.model); the run's other files go "
                                            "to OUT.train/ unless --output-dir or output.dir says otherwise");
  sub->add_option("--output-dir", a->output_dir, "directory of the learning curve, checkpoint and config (output.dir)");
  sub->add_option("--steps", a->steps, "optimizer updates (training.steps)")->check(CLI::NonNegativeNumber);
  sub->add_option("--threads", a->threads, "LibTorch threads (training.threads)")->check(CLI::PositiveNumber);
  sub->add_option("--precision", a->precision, "training arithmetic (model.precision)")
      ->check(CLI::IsMember({"float", "double"}));
  sub->add_flag("--fixed-scales", a->fixed_scales, "keep the starting point's scales (straight-through estimator only, no LSQ)");
  add_run_flags(sub, a->run);
  sub->callback([a] {
    if (a->config.empty() && (a->fp32.empty() || a->init.empty() || a->data.empty())) {
      throw Error("qnn qat: give a config file, or at least --fp32, --init and --data (see `qnn qat --help`)");
    }
    libtorch::QatConfig cfg = build_config(*a);
    const std::string out = cfg.train.output_path(cfg.train.model_file);
    if (fs::is_directory(out)) throw Error("the output model " + out + " is a directory; give a file name");
    libtorch::qat(cfg, a->run);
  });
}

}  // namespace qnn::cli
