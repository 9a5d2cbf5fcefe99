// `qnn`: the command-line tool (model info, training, evaluation, quantization, benchmarks).
#include <cstdio>
#include <exception>

#include "commands.hpp"
#include "qnn/error.hpp"

#ifndef QNN_VERSION
#define QNN_VERSION "unknown"
#endif

int main(int argc, char** argv) {
  CLI::App app{"qnn: quantized neural-network interatomic potentials (" QNN_VERSION ")"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("qnn ") + QNN_VERSION);
  qnn::cli::register_info(app);
  qnn::cli::register_eval(app);
  qnn::cli::register_bench(app);
  qnn::cli::register_quantize(app);
  qnn::cli::register_sweep(app);
  qnn::cli::register_repulsion(app);
  qnn::cli::register_model_devi(app);
#ifdef QNN_HAVE_HDF5
  qnn::cli::register_import(app);
#endif
#ifdef QNN_HAVE_TORCH
  qnn::cli::register_train(app);
  qnn::cli::register_qat(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const qnn::Error& e) {
    std::fprintf(stderr, "qnn: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qnn: unexpected error: %s\n", e.what());
    return 2;
  }
  return 0;
}
