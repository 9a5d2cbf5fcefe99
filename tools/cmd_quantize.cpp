// `qnn quantize FP32.qnn --data DIR... [options] [-o OUT.qnn]`: post-training quantization.
// Calibrates activation ranges of the FP32 network on DFT frames, quantizes the weights
// (symmetric, per channel or per tensor), and writes the plan into the .qnn quantization
// metadata. With --search it first chooses the bits of every layer (mixed precision) from
// per-layer sensitivities measured on validation frames. docs/quantization.md,
// "Post-training quantization".
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "qnn/engine/exact_engine.hpp"
#include "qnn/error.hpp"
#include "qnn/engine/evaluator.hpp"
#include "qnn/format/model.hpp"
#include "qnn/quant/quantize.hpp"
#include "quant_flags.hpp"

namespace qnn::cli {
namespace {

struct QuantizeArgs {
  std::string model, out, plan, pareto_out, save_plan;
  std::vector<std::string> data, val_data;
  int frames = 32, val_frames = 16, search_frames = 8;
  QuantFlags quant;
  int bits = 8, weight_bits = -1, act_bits = -1;
  bool quantize_embedding = false, no_energy_offset = false;
  // search
  bool search = false;
  std::vector<int> search_bits = {16, 8, 6, 4};
  double max_force_ratio = 1.03, max_force_dev = 0, max_size_ratio = 0;
  std::string objective = "cost";
  bool no_fp32_layers = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string default_output(const std::string& in, const std::string& mode) {
  std::string stem = in;
  if (stem.size() > 4 && stem.compare(stem.size() - 4, 4, ".qnn") == 0) stem.resize(stem.size() - 4);
  if (stem.size() > 5 && stem.compare(stem.size() - 5, 5, ".fp32") == 0) stem.resize(stem.size() - 5);
  return stem + "." + mode + ".qnn";
}

void run_quantize(const QuantizeArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  ensure_kokkos_initialized(a.quant.threads);
  const Model fp32 = read_model(a.model);
  require_fp32_model(fp32, a.model, "quantize its FP32 original instead");
  if (a.frames <= 0) throw Error("--frames must be positive");
  if (a.search && a.val_data.empty())
    throw Error("--search needs validation frames: give --val-data DIR... (held-out DeePMD systems)");
  if (!a.search && (a.max_force_dev > 0 || a.max_size_ratio > 0 || !a.pareto_out.empty()))
    throw Error("--max-force-dev, --max-size-ratio and --pareto apply to --search only");
  if (a.search && !a.plan.empty()) throw Error("--plan and --search exclude each other");
  // Output paths are checked before the work, not after it.
  if (!a.out.empty()) check_output_path(a.out, "-o " + a.out);
  else check_output_path(default_output(a.model, "int8"), "the default output beside " + a.model);
  if (!a.save_plan.empty()) check_output_path(a.save_plan, "--save-plan " + a.save_plan);
  if (!a.pareto_out.empty()) check_output_path(a.pareto_out, "--pareto " + a.pareto_out);
  {
    std::error_code ec0;
    if (!a.out.empty() && std::filesystem::equivalent(a.out, a.model, ec0))
      throw Error("-o " + a.out + " is the input model; choose another output file");
  }

  LayerBits defaults{a.bits, a.bits};
  if (a.weight_bits >= 0) defaults.weight_bits = a.weight_bits;
  if (a.act_bits >= 0) defaults.act_bits = a.act_bits;
  try {
    layer_mode(defaults);
  } catch (const Error& e) {
    throw Error(std::string("bad --bits/--weight-bits/--act-bits: ") + e.what());
  }
  const QuantOptions opt = a.quant.options();
  QuantPlan plan = a.plan.empty() ? uniform_plan(fp32, defaults) : read_plan(a.plan, fp32, defaults);
  if (a.plan.empty() && !a.quantize_embedding) {
    // Every mode tabulates the embedding nets from their stored weights, so quantizing them
    // buys no speed and only adds error (docs/quantization.md): they stay float unless asked.
    const std::vector<LayerRef> layers = list_layers(fp32);
    for (std::size_t i = 0; i < layers.size(); ++i)
      if (layers[i].family == 0) plan.layers[i] = {0, 0};
  }

  std::printf("model: %s (%zu parameters)\n", a.model.c_str(), fp32.parameter_count());
  const FrameSet calib = load_frames(a.data, fp32, a.frames);
  std::printf("calibrating on %zu frames (%s observer%s) ...\n", calib.size(), a.quant.observer.c_str(),
              opt.act_observer == ObserverKind::Percentile ? (", p = " + std::to_string(a.quant.percentile)).c_str() : "");
  std::fflush(stdout);
  const Calibration cal = calibrate(fp32, calib);
  std::printf("  done in %.1f s\n", seconds_since(t0));

  FrameSet val;
  Prediction ref;
  if (!a.val_data.empty()) {
    val = load_frames(a.val_data, fp32, a.val_frames);
    ref = predict_reference(fp32, val);
  }

  if (a.search) {
    SearchOptions so;
    so.bits = a.search_bits;
    so.allow_fp32 = !a.no_fp32_layers;
    so.max_force_ratio = a.max_force_ratio;
    so.max_force_dev = a.max_force_dev;
    so.max_size_ratio = a.max_size_ratio;
    so.objective_size = a.objective == "size";
    const FrameSet sval = load_frames(a.val_data, fp32, a.search_frames);
    const Prediction sref = predict_reference(fp32, sval);
    std::printf("mixed-precision search on %zu validation frames\n", sval.size());
    const SearchResult r = search_mixed(fp32, cal, opt, sval, sref, so, [](const std::string& s) {
      std::printf("  %s\n", s.c_str());
      std::fflush(stdout);
    });
    const std::string table = pareto_markdown(fp32, r);
    std::printf("\nplans tried (est. cost: relative arithmetic cost, FP32 = 1):\n%s\n", table.c_str());
    if (!a.pareto_out.empty()) {
      std::ofstream f(a.pareto_out);
      if (!f) throw Error(a.pareto_out + ": cannot write the Pareto table");
      f << "# Mixed-precision search: plans tried\n\n"
        << "Model `" << a.model << "`, " << sval.size() << " validation frames, budget: force RMSE vs DFT <= "
        << a.max_force_ratio << "x FP32's";
      if (a.max_force_dev > 0) f << ", force RMSE vs FP32 <= " << a.max_force_dev << " meV/Å";
      if (a.max_size_ratio > 0) f << ", parameter bytes <= " << a.max_size_ratio << "x FP32's";
      f << "; objective: " << a.objective << ".\n\n"
        << "Bits per layer: one entry per layer of each net (`8`: 8-bit weights and activations, `f`: float).\n\n"
        << table;
      std::printf("wrote %s\n", a.pareto_out.c_str());
    }
    if (r.chosen < 0)
      throw Error("no plan tried meets the budget (force RMSE vs DFT <= " + std::to_string(a.max_force_ratio) +
                  "x FP32's); loosen it (--max-force-ratio) or allow more bits (--search-bits)");
    plan = r.tried[static_cast<std::size_t>(r.chosen)].plan;
    std::printf("chosen: %s  %s\n", r.tried[static_cast<std::size_t>(r.chosen)].label.c_str(),
                plan_summary(fp32, plan).c_str());
  }

  if (!a.save_plan.empty()) {
    std::ofstream f(a.save_plan);
    if (!f) throw Error(a.save_plan + ": cannot write the plan file");
    f << plan_to_json(fp32, plan).dump(2) << "\n";
    if (!f) throw Error(a.save_plan + ": error writing the plan file");
    std::printf("wrote the plan to %s (reuse it with --plan)\n", a.save_plan.c_str());
  }
  Model q = apply_plan(fp32, plan, cal, opt);
  if (!a.no_energy_offset) {
    const double shift = correct_energy_offset(q, fp32, calib);
    std::printf("energy offset correction: %+.4f meV/atom on every species' energy bias (mean over the calibration frames)\n",
                1e3 * shift);
  }
  q.provenance["quantization"]["source_model"] = a.model;
  q.provenance["quantization"]["calibration_data"] = a.data;
  if (fp32.provenance.contains("code_version")) q.provenance["quantization"]["source_code_version"] = fp32.provenance["code_version"];
  if (a.search) q.provenance["quantization"]["search_validation_data"] = a.val_data;
  const std::string why = mode_unsupported_reason(q, default_mode(q));
  if (!why.empty()) throw Error("the quantized model cannot run in its mode " + q.default_mode + ": " + why);
  const std::string out = a.out.empty() ? default_output(a.model, q.default_mode) : a.out;
  std::error_code ec;
  if (std::filesystem::equivalent(out, a.model, ec))
    throw Error("-o " + out + " is the input model; choose another output file");
  write_model(q, out);

  const auto in_size = std::filesystem::file_size(a.model);
  const auto out_size = std::filesystem::file_size(out);
  std::printf("\nplan: %s\n", plan_summary(fp32, plan).c_str());
  std::printf("wrote %s: mode %s, %zu bytes (%.3fx the FP32 file's %zu)\n", out.c_str(), q.default_mode.c_str(),
              static_cast<std::size_t>(out_size), static_cast<double>(out_size) / static_cast<double>(in_size),
              static_cast<std::size_t>(in_size));
  std::printf("\n%-12s %6s %6s %-12s %12s %12s %12s\n", "layer", "w", "a", "mode", "w scale min", "w scale max",
              "act scale");
  for (const LayerRef& r : list_layers(q)) {
    const QuantSpec& s = layer_of(q, r).quant;
    const std::string mode = layer_mode(layer_bits(s));
    float mn = 0, mx = 0;
    if (!s.weight_scale.empty()) {
      mn = *std::min_element(s.weight_scale.begin(), s.weight_scale.end());
      mx = *std::max_element(s.weight_scale.begin(), s.weight_scale.end());
    }
    std::printf("%-12s %6d %6d %-12s %12.4g %12.4g %12.4g%s\n", r.name.c_str(), s.weight_bits, s.act_bits,
                mode.empty() ? "fp32" : mode.c_str(), mn, mx, s.act_scale,
                s.out_scale > 0 ? ("   out_scale " + std::to_string(s.out_scale)).c_str() : "");
  }
  if (!a.val_data.empty()) {
    const Model back = read_model(out);
    std::string engine;
    const Prediction p = predict_default(back, val, &engine);
    const Errors e = compare(p, ref, val);
    const Errors e0 = compare(ref, ref, val);
    std::printf("\nvalidation (%zu frames of %s...): engine %s\n", val.size(), a.val_data[0].c_str(), engine.c_str());
    std::printf("  %-10s %16s %16s %16s %16s\n", "", "E vs DFT", "F vs DFT", "E vs FP32", "F vs FP32");
    std::printf("  %-10s %16.3f %16.3f %16s %16s\n", "FP32", e0.e_dft, e0.f_dft, "-", "-");
    std::printf("  %-10s %16.3f %16.3f %16.4f %16.4f   (meV/atom, meV/A)\n", q.default_mode.c_str(), e.e_dft, e.f_dft,
                e.e_ref, e.f_ref);
    std::printf("  force RMSE vs DFT: %.4fx FP32's\n", e.f_dft / e0.f_dft);
  }
  std::printf("total %.1f s\n", seconds_since(t0));
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto a = std::make_shared<QuantizeArgs>();
  CLI::App* sub = app.add_subcommand(
      "quantize", "Post-training quantization: calibrate on DFT frames and write the plan into a .qnn file");
  add_fp32_model_arg(sub, a->model);
  add_data_option(sub, "--data", a->data, "calibration data: DeePMD system directories")->required();
  sub->add_option("--frames", a->frames, "calibration frames, evenly spaced over the data (default 32)");
  add_quant_flags(sub, a->quant);
  auto* ob = sub->add_option("--bits", a->bits, "weight and activation bits of every layer (default 8)")
                 ->check(CLI::Range(2, 16));
  sub->add_option("--weight-bits", a->weight_bits, "weight bits (2..16)")->check(CLI::Range(2, 16))->excludes(ob);
  sub->add_option("--act-bits", a->act_bits, "activation bits (2..16, 0 = float activations: weight-only)")
      ->check(CLI::Range(0, 16))
      ->excludes(ob);
  sub->add_flag("--quantize-embedding", a->quantize_embedding,
                "also quantize the embedding nets' weights (default: float; every mode tabulates them)");
  sub->add_flag("--no-energy-offset", a->no_energy_offset,
                "keep the energy bias as is (default: remove the mean per-atom energy shift on the calibration frames)");
  sub->add_option("--plan", a->plan, "per-layer plan (JSON, docs/quantization.md); unlisted layers get --bits")
      ->check(CLI::ExistingFile);
  sub->add_option("--save-plan", a->save_plan, "write the plan used (e.g. the searched one) as a --plan JSON file");
  sub->add_option("-o,--output", a->out, "output file (default: the input name with .<mode>.qnn)");
  add_data_option(sub, "--val-data", a->val_data, "validation data: report the written model's errors; needed by --search");
  sub->add_option("--val-frames", a->val_frames, "validation frames (default 16)")->check(CLI::PositiveNumber);
  sub->add_flag("--search", a->search, "choose each layer's bits (mixed precision) under a budget");
  sub->add_option("--search-frames", a->search_frames, "validation frames the search measures plans on (default 8)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--search-bits", a->search_bits, "candidate bit widths of the search (default 16 8 6 4)")
      ->check(CLI::Range(2, 16));
  sub->add_flag("--no-fp32-layers", a->no_fp32_layers, "the search may not leave a layer in float");
  sub->add_option("--max-force-ratio", a->max_force_ratio,
                  "search budget: force RMSE vs DFT <= this x FP32's (default 1.03)")
      ->check(CLI::Range(1.0, 1e9));
  sub->add_option("--max-force-dev", a->max_force_dev, "search budget: force RMSE vs FP32 <= this (meV/A)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-size-ratio", a->max_size_ratio, "search budget: parameter bytes <= this x FP32's")
      ->check(CLI::Range(1e-6, 1.0));
  sub->add_option("--objective", a->objective, "what the search minimises: cost (default) or size")
      ->check(CLI::IsMember({"cost", "size"}));
  sub->add_option("--pareto", a->pareto_out, "write the table of plans tried (Markdown) to this file");
  sub->callback([a] { run_quantize(*a); });
}

}  // namespace qnn::cli
