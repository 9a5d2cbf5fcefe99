// `qnn train config.json [--resume]`: trains an se_e2_a model with LibTorch (trainer.hpp).
#include <filesystem>
#include <memory>
#include <string>

#include "commands.hpp"
#include "qnn/error.hpp"
#include "run_flags.hpp"
#include "torch/trainer.hpp"

namespace qnn::cli {
namespace {

struct TrainArgs {
  std::string config;
  libtorch::TrainOptions run;  // --resume, --no-plot, --stop-at
  std::string output_dir;
};

}  // namespace

// Registers `qnn train`.
void register_train(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* sub = app.add_subcommand("train", "Train an se_e2_a model on DeePMD npy data (LibTorch)");
  sub->add_option("config", args->config, "training config (JSON); relative paths are relative to its directory")
      ->required()
      ->check(CLI::ExistingFile);
  add_run_flags(sub, args->run);
  sub->add_option("--output-dir", args->output_dir, "write the outputs here instead of the config's output.dir");
  sub->callback([args] {
    libtorch::TrainConfig cfg = libtorch::read_train_config(args->config);
    if (!args->output_dir.empty()) cfg.output_dir = std::filesystem::absolute(args->output_dir).lexically_normal().string();
    const std::string out = cfg.output_path(cfg.model_file);
    if (std::filesystem::is_directory(out)) throw Error("the output model " + out + " is a directory; give a file name");
    libtorch::train(cfg, args->run);
  });
}

}  // namespace qnn::cli
