// `qnn sweep FP32.qnn --data DIR... [options] [-o OUTDIR]`: bit-width sweep. For every bit
// width (default 2..16): weights only, activations only (weights at 16 bits) and both
// quantized; energy and force RMSE vs DFT and vs the FP32 model. Writes OUTDIR/sweep.csv and
// plots it to OUTDIR/sweep.png with scripts/plot_sweep.py (matplotlib).
// docs/quantization.md, "Post-training quantization".
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "qnn/engine/exact_engine.hpp"
#include "qnn/error.hpp"
#include "qnn/format/model.hpp"
#include "qnn/util/plot.hpp"
#include "qnn/quant/quantize.hpp"
#include "quant_flags.hpp"

namespace qnn::cli {
namespace {

struct SweepArgs {
  std::string model, out_dir = ".", plot_script;
  std::vector<std::string> data, calib_data;
  int frames = 16, calib_frames = 32;
  std::vector<int> bits;
  QuantFlags quant;
  bool no_plot = false;
};

void run_sweep_cmd(const SweepArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  ensure_kokkos_initialized(a.quant.threads);
  const Model fp32 = read_model(a.model);
  require_fp32_model(fp32, a.model, "the sweep needs the FP32 original");
  std::vector<int> bits = a.bits;
  if (bits.empty())
    for (int b = 2; b <= 16; ++b) bits.push_back(b);
  const QuantOptions opt = a.quant.options();

  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(a.out_dir, ec);
  if (!fs::is_directory(a.out_dir)) throw Error("-o " + a.out_dir + ": cannot create the output directory");

  const std::vector<std::string>& cdirs = a.calib_data.empty() ? a.data : a.calib_data;
  if (a.calib_data.empty())
    std::printf("note: no --calib-data; calibrating on the evaluation data (%s...)\n", a.data[0].c_str());
  const FrameSet calib = load_frames(cdirs, fp32, a.calib_frames);
  const FrameSet val = load_frames(a.data, fp32, a.frames);
  std::printf("model %s; calibration %zu frames, evaluation %zu frames; %s activation observer, %s weights\n",
              a.model.c_str(), calib.size(), val.size(), a.quant.observer.c_str(), a.quant.per_tensor ? "per-tensor" : "per-channel");
  const Calibration cal = calibrate(fp32, calib);
  const Prediction ref = predict_reference(fp32, val);
  std::printf("\n%-12s %5s %-12s %14s %14s %14s %14s\n", "variant", "bits", "mode", "E vs DFT", "F vs DFT",
              "E vs FP32", "F vs FP32");
  std::printf("%-12s %5s %-12s %14s %14s %14s %14s\n", "", "", "", "meV/atom", "meV/A", "meV/atom", "meV/A");
  const std::vector<SweepRow> rows = run_sweep(fp32, cal, opt, val, ref, bits, [](const SweepRow& r) {
    std::printf("%-12s %5d %-12s %14.4f %14.4f %14.5f %14.5f\n", r.variant.c_str(), r.bits, r.mode.c_str(), r.err.e_dft,
                r.err.f_dft, r.err.e_ref, r.err.f_ref);
    std::fflush(stdout);
  });
  const std::string csv = (fs::path(a.out_dir) / "sweep.csv").string();
  write_sweep_csv(rows, csv);
  std::printf("\nwrote %s (%.1f s)\n", csv.c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (a.no_plot) return;
  const std::string script = find_plot_script("plot_sweep.py", a.plot_script);
  const std::string png = (fs::path(a.out_dir) / "sweep.png").string();
  if (script.empty()) {
    std::fprintf(stderr,
                 "qnn: warning: scripts/plot_sweep.py not found (give --plot-script or set QNN_PLOT_SCRIPT); "
                 "plot with: python3 scripts/plot_sweep.py %s %s\n",
                 csv.c_str(), png.c_str());
    return;
  }
  const std::string py = find_python();
  if (py.empty()) {
    std::fprintf(stderr,
                 "qnn: warning: no python3 with matplotlib found (set QNN_PYTHON, or apt-get install "
                 "python3-matplotlib); the CSV is written; plot later with: python3 %s %s %s\n",
                 script.c_str(), csv.c_str(), png.c_str());
    return;
  }
  const std::vector<std::string> cmd{py, script, csv, png, "--title", "qnn sweep: " + fs::path(a.model).filename().string()};
  std::fflush(stdout);
  const int rc = run_program(cmd);
  if (rc != 0)
    std::fprintf(stderr, "qnn: warning: the plot command failed (exit %d): %s\n(needs python3 with matplotlib; the CSV is written)\n",
                 rc, command_line(cmd).c_str());
  else
    std::printf("wrote %s\n", png.c_str());
}

}  // namespace

void register_sweep(CLI::App& app) {
  auto a = std::make_shared<SweepArgs>();
  CLI::App* sub = app.add_subcommand(
      "sweep", "Bit-width sweep: RMSE vs DFT and vs FP32 for weights-only, activations-only and both, CSV + PNG");
  add_fp32_model_arg(sub, a->model);
  add_data_option(sub, "--data", a->data, "evaluation data (held-out DeePMD systems)")->required();
  sub->add_option("--frames", a->frames, "evaluation frames, evenly spaced (default 16)")->check(CLI::PositiveNumber);
  add_data_option(sub, "--calib-data", a->calib_data, "calibration data (default: the evaluation data)");
  sub->add_option("--calib-frames", a->calib_frames, "calibration frames (default 32)")->check(CLI::PositiveNumber);
  sub->add_option("--bits", a->bits, "bit widths to sweep (default 2..16)")->check(CLI::Range(2, 16));
  add_quant_flags(sub, a->quant);
  sub->add_option("-o,--output-dir", a->out_dir, "directory for sweep.csv and sweep.png (default .)");
  sub->add_flag("--no-plot", a->no_plot, "write the CSV only");
  sub->add_option("--plot-script", a->plot_script,
                  "path of plot_sweep.py (default: $QNN_PLOT_SCRIPT, else found next to the qnn executable)");
  sub->callback([a] { run_sweep_cmd(*a); });
}

}  // namespace qnn::cli
