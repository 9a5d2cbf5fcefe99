// Subcommands of the `qnn` tool. Each registers itself on the CLI11 app; the callback runs
// the command and throws qnn::Error on bad input (reported once, in main).
#pragma once
#include <CLI/CLI.hpp>

namespace qnn::cli {

void register_info(CLI::App& app);
void register_eval(CLI::App& app);
void register_bench(CLI::App& app);
void register_quantize(CLI::App& app);
void register_sweep(CLI::App& app);
void register_repulsion(CLI::App& app);
void register_model_devi(CLI::App& app);
#ifdef QNN_HAVE_HDF5
void register_import(CLI::App& app);
#endif
#ifdef QNN_HAVE_TORCH
void register_train(CLI::App& app);
void register_qat(CLI::App& app);
#endif

}  // namespace qnn::cli
