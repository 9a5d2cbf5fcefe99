// The run-control flags `qnn train` and `qnn qat` share, bound to libtorch::TrainOptions.
#pragma once
#include <CLI/CLI.hpp>

#include "torch/trainer.hpp"

namespace qnn::cli {

inline void add_run_flags(CLI::App* sub, libtorch::TrainOptions& opt) {
  sub->add_flag("--resume", opt.resume, "continue from the checkpoint in the output directory");
  sub->add_flag("--no-plot{false}", opt.plot, "do not render the learning-curve PNG");
  sub->add_option("--stop-at", opt.stop_at, "stop after this step (with a checkpoint); continue later with --resume")
      ->check(CLI::NonNegativeNumber);
}

}  // namespace qnn::cli
