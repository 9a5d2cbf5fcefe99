// `qnn sweep FP32.qnn --data DIR... [options] [-o OUTDIR]`: bit-width sweep. For every bit
// width (default 2..16): weights only, activations only (weights at 16 bits) and both
// quantized; energy and force RMSE vs DFT and vs the FP32 model. Writes OUTDIR/sweep.csv and
// plots it to OUTDIR/sweep.png with scripts/plot_sweep.py (matplotlib).
// docs/quantization.md, "Post-training quantization".
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "commands.hpp"
#include "qnn/engine/exact_engine.hpp"
#include "qnn/error.hpp"
#include "qnn/format/model.hpp"
#include "qnn/quant/quantize.hpp"

#ifndef QNN_SOURCE_DIR
#define QNN_SOURCE_DIR ""
#endif

namespace qnn::cli {
namespace {

struct SweepArgs {
  std::string model, out_dir = ".", plot_script;
  std::vector<std::string> data, calib_data;
  int frames = 16, calib_frames = 32;
  std::vector<int> bits;
  std::string observer = "mse", weight_observer = "mse";
  double percentile = 99.99;
  bool per_tensor = false, no_plot = false;
  int threads = -1;
};

// The plot script: --plot-script, else the source tree's, else next to the executable.
std::string find_plot_script(const std::string& given) {
  namespace fs = std::filesystem;
  if (!given.empty()) {
    if (!fs::exists(given)) throw Error("--plot-script " + given + " does not exist");
    return given;
  }
  std::vector<fs::path> cands;
  if (std::string(QNN_SOURCE_DIR).size()) cands.emplace_back(fs::path(QNN_SOURCE_DIR) / "scripts" / "plot_sweep.py");
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) cands.push_back(exe.parent_path().parent_path() / "scripts" / "plot_sweep.py");
  for (const fs::path& p : cands)
    if (fs::exists(p)) return p.string();
  return "";
}

// A Python that has matplotlib: $QNN_PYTHON, else python3 on PATH, else /usr/bin/python3
// (Debian's python3-matplotlib lives there, and a pyenv python3 may shadow it). Empty if none.
std::string find_python();

// Single-quoted for the shell.
std::string shq(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return o + "'";
}

std::string find_python() {
  std::vector<std::string> cands;
  if (const char* e = std::getenv("QNN_PYTHON")) cands.emplace_back(e);
  cands.emplace_back("python3");
  cands.emplace_back("/usr/bin/python3");
  for (const std::string& c : cands)
    if (std::system((shq(c) + " -c 'import matplotlib' >/dev/null 2>&1").c_str()) == 0) return c;
  return "";
}

void run_sweep_cmd(const SweepArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  ensure_kokkos_initialized(a.threads);
  const Model fp32 = read_model(a.model);
  for (const LayerRef& r : list_layers(fp32))
    if (layer_of(fp32, r).quant.quantized())
      throw Error(a.model + " is already quantized (layer " + r.name + "); the sweep needs the FP32 original");
  std::vector<int> bits = a.bits;
  if (bits.empty())
    for (int b = 2; b <= 16; ++b) bits.push_back(b);
  QuantOptions opt;
  opt.act_observer = parse_observer(a.observer);
  opt.weight_observer = parse_observer(a.weight_observer);
  opt.percentile = a.percentile;
  opt.per_channel = !a.per_tensor;

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
              a.model.c_str(), calib.size(), val.size(), a.observer.c_str(), a.per_tensor ? "per-tensor" : "per-channel");
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
  const std::string script = find_plot_script(a.plot_script);
  const std::string png = (fs::path(a.out_dir) / "sweep.png").string();
  if (script.empty()) {
    std::fprintf(stderr, "qnn: warning: scripts/plot_sweep.py not found; plot with: python3 scripts/plot_sweep.py %s %s\n",
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
  const std::string cmd = shq(py) + " " + shq(script) + " " + shq(csv) + " " + shq(png) + " --title " +
                          shq("qnn sweep: " + fs::path(a.model).filename().string());
  std::fflush(stdout);
  const int rc = std::system(cmd.c_str());
  if (rc != 0)
    std::fprintf(stderr, "qnn: warning: the plot command failed (exit %d): %s\n(needs python3 with matplotlib; the CSV is written)\n",
                 rc, cmd.c_str());
  else
    std::printf("wrote %s\n", png.c_str());
}

}  // namespace

void register_sweep(CLI::App& app) {
  auto a = std::make_shared<SweepArgs>();
  CLI::App* sub = app.add_subcommand(
      "sweep", "Bit-width sweep: RMSE vs DFT and vs FP32 for weights-only, activations-only and both, CSV + PNG");
  sub->add_option("model", a->model, "the FP32 .qnn model")->required()->check(CLI::ExistingFile);
  sub->add_option("--data", a->data, "evaluation data (held-out DeePMD systems)")
      ->required()
      ->check(CLI::ExistingDirectory);
  sub->add_option("--frames", a->frames, "evaluation frames, evenly spaced (default 16)")->check(CLI::PositiveNumber);
  sub->add_option("--calib-data", a->calib_data, "calibration data (default: the evaluation data)")
      ->check(CLI::ExistingDirectory);
  sub->add_option("--calib-frames", a->calib_frames, "calibration frames (default 32)")->check(CLI::PositiveNumber);
  sub->add_option("--bits", a->bits, "bit widths to sweep (default 2..16)")->check(CLI::Range(2, 16));
  sub->add_option("--observer", a->observer, "activation range observer: minmax, percentile, mse (default)")
      ->check(CLI::IsMember({"minmax", "percentile", "mse"}));
  sub->add_option("--percentile", a->percentile, "percentile for --observer percentile (default 99.99)")
      ->check(CLI::Range(1e-9, 100.0));
  sub->add_option("--weight-observer", a->weight_observer, "weight range observer: minmax or mse (default)")
      ->check(CLI::IsMember({"minmax", "mse"}));
  sub->add_flag("--per-tensor", a->per_tensor, "one weight scale per layer (default: per output channel)");
  sub->add_option("-o,--output-dir", a->out_dir, "directory for sweep.csv and sweep.png (default .)");
  sub->add_flag("--no-plot", a->no_plot, "write the CSV only");
  sub->add_option("--plot-script", a->plot_script, "path of plot_sweep.py (default: the source tree's)");
  sub->add_option("--threads", a->threads, "OpenMP threads (default: Kokkos' default)");
  sub->callback([a] { run_sweep_cmd(*a); });
}

}  // namespace qnn::cli
