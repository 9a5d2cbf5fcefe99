// The command-line options the quantizer commands share (`qnn quantize`, `qnn sweep`, and the
// --threads / --data options of `qnn bench`), declared once, bound to QuantFlags; like
// run_flags.hpp does for `qnn train` and `qnn qat`.
#pragma once
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "qnn/error.hpp"
#include "qnn/format/model.hpp"
#include "qnn/quant/calibrate.hpp"
#include "qnn/quant/common.hpp"
#include "qnn/quant/observer.hpp"

namespace qnn::cli {

// How ranges and scales are chosen (QuantOptions) and the threads the commands run on.
struct QuantFlags {
  std::string observer = "mse", weight_observer = "mse";
  double percentile = 99.99;
  bool per_tensor = false;
  int threads = -1;

  // The QuantOptions these flags ask for; throws qnn::Error on a combination no quantizer runs.
  QuantOptions options() const {
    QuantOptions opt;
    opt.act_observer = parse_observer(observer);
    opt.weight_observer = parse_observer(weight_observer);
    if (opt.weight_observer == ObserverKind::Percentile)
      throw Error("--weight-observer must be minmax or mse (percentile clipping is for activations)");
    opt.percentile = percentile;
    opt.per_channel = !per_tensor;
    return opt;
  }
};

// The FP32 model positional argument of `qnn quantize` and `qnn sweep`.
inline CLI::Option* add_fp32_model_arg(CLI::App* sub, std::string& model) {
  return sub->add_option("model", model, "the FP32 .qnn model")->required()->check(CLI::ExistingFile);
}

// A data option: DeePMD system directories (one or several, by the type of `dirs`).
template <typename T>
CLI::Option* add_data_option(CLI::App* sub, const std::string& name, T& dirs, const std::string& help) {
  return sub->add_option(name, dirs, help)->check(CLI::ExistingDirectory);
}

// --threads (-1: Kokkos' default).
inline CLI::Option* add_threads_option(CLI::App* sub, int& threads,
                                       const std::string& help = "OpenMP threads (default: Kokkos' default)") {
  return sub->add_option("--threads", threads, help);
}

// --observer, --percentile, --weight-observer, --per-tensor and --threads.
inline void add_quant_flags(CLI::App* sub, QuantFlags& f) {
  sub->add_option("--observer", f.observer, "activation range observer: minmax, percentile, mse (default)")
      ->check(CLI::IsMember({"minmax", "percentile", "mse"}));
  sub->add_option("--percentile", f.percentile, "percentile of |x| for --observer percentile (default 99.99)")
      ->check(CLI::Range(1e-9, 100.0));
  sub->add_option("--weight-observer", f.weight_observer, "weight range observer: minmax or mse (default)")
      ->check(CLI::IsMember({"minmax", "mse"}));
  sub->add_flag("--per-tensor", f.per_tensor, "one weight scale per layer (default: one per output channel)");
  add_threads_option(sub, f.threads);
}

// Throws qnn::Error when `m` (read from `path`) is already quantized, naming the first
// quantized layer; `advice` ends the message.
inline void require_fp32_model(const Model& m, const std::string& path, const std::string& advice) {
  if (const auto r = first_quantized_layer(m))
    throw Error(path + " is already quantized (layer " + r->name + "); " + advice);
}

}  // namespace qnn::cli
