// `qnn eval model.qnn DATA_DIR... [--mode M] [--json out.json]`: errors of a model against
// DeePMD data, computed by the core engines (no LibTorch needed): the float Kokkos engine in
// mode fp32, qnn::make_evaluator otherwise (weight-only: float engine on the dequantized
// weights; int8 / mixed: the integer engine). By default a file runs in the mode it was made
// for (its default_mode). The report names the engine that ran. Energy errors are per atom
// (meV/atom), force errors per Cartesian component (meV/Å); predicted minus reference.
#include <functional>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "qnn/data/data.hpp"
#include "qnn/engine/exact_engine.hpp"
#include "qnn/error.hpp"
#include "qnn/engine/evaluator.hpp"
#include "qnn/format/model.hpp"
#include "qnn/quant/common.hpp"

namespace qnn::cli {
namespace {

struct EvalArgs {
  std::string model;
  std::vector<std::string> data;
  std::string json_out;
  std::string reference;  // optional: a model whose predictions the errors are also measured against
  std::string precision;  // fp32 mode only: double (default) or float
  std::string mode = "auto";
  int threads = -1;
  int worst = 5;
};

// Error sums of one group of frames (a system, or everything).
struct ErrorSums {
  RmsError e, f;            // ΔE/N (eV/atom) per frame, ΔF (eV/Å) per component
  double e1 = 0, f1 = 0;    // Σ |ΔE/N|, Σ |ΔF|

  void add_frame(double de_per_atom) {
    e.add(de_per_atom);
    e1 += std::abs(de_per_atom);
  }
  void add_force(double df) {
    f.add(df);
    f1 += std::abs(df);
  }
  long long nframes() const { return static_cast<long long>(e.count()); }
  long long ncomp() const { return static_cast<long long>(f.count()); }
  double e_rmse() const { return e.rms(1000); }
  double e_mae() const { return nframes() ? 1000 * e1 / nframes() : NAN; }
  double f_rmse() const { return f.rms(1000); }
  double f_mae() const { return ncomp() ? 1000 * f1 / ncomp() : NAN; }
};

struct FrameError {
  std::string label;
  double e_err = 0;   // meV/atom, signed
  double f_rmse = 0;  // meV/Å
};

// A JSON number, or null for NaN.
nlohmann::json num(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

using ComputeFn = std::function<void(const NeighborGraph&, EvalResult&, const EvalOptions&)>;

// No silent NaN: a non-finite energy or force stops the evaluation, naming the frame and atom.
void check_finite(const std::string& model, const std::string& mode, const std::string& frame, double energy,
                  const std::vector<double>& force) {
  const std::string where = model + " (mode " + mode + ") on frame " + frame;
  if (!std::isfinite(energy)) {
    throw Error(where + ": the predicted energy is " + std::to_string(energy) +
                "; the model or the configuration is outside the range the engine can represent");
  }
  for (std::size_t k = 0; k < force.size(); ++k) {
    if (!std::isfinite(force[k])) {
      throw Error(where + ": the predicted force on atom " + std::to_string(k / 3 + 1) + " is " + std::to_string(force[k]) +
                  "; the model or the configuration is outside the range the engine can represent");
    }
  }
}

// Evaluates every frame in the requested mode and prints/writes the report.
void run_eval(const EvalArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!a.json_out.empty()) check_output_path(a.json_out, "--json " + a.json_out);
  ensure_kokkos_initialized(a.threads);
  Model model = read_model(a.model);
  const Mode mode = a.mode == "auto" ? default_mode(model) : parse_mode(a.mode);
  if (!a.precision.empty() && mode != Mode::FP32)
    throw Error("--precision applies to mode fp32 only (this run is mode " + std::string(to_string(mode)) + ")");
  std::vector<System> systems = read_systems(a.data, model.species);
  // Mode fp32 runs the float engine in double (mode fp64) unless --precision float; every
  // mode goes through make_evaluator, which refuses a file that cannot run it (with the reason).
  const Mode run_mode = mode == Mode::FP32 && a.precision != "float" ? Mode::FP64 : mode;
  std::unique_ptr<Evaluator> evaluator = make_evaluator(model, run_mode);
  const ComputeFn compute = [&](const NeighborGraph& g, EvalResult& r, const EvalOptions& o) {
    evaluator->compute(g, r, o);
  };
  const std::string engine_desc = evaluator->describe();
  const int S = model.nspecies();
  // --reference: that model's predictions (float engine, double precision) on every frame.
  std::unique_ptr<Model> ref_model;
  std::unique_ptr<Engine<double>> ref_engine;
  if (!a.reference.empty()) {
    ref_model = std::make_unique<Model>(read_model(a.reference));
    if (ref_model->species != model.species || ref_model->rcut != model.rcut)
      throw Error("--reference " + a.reference + " has other species or another cutoff than " + a.model);
    ref_engine = std::make_unique<Engine<double>>(*ref_model);
  }
  ErrorSums vs_ref;
  EvalResult ref_res;

  ErrorSums total;
  std::vector<ErrorSums> by_species(static_cast<std::size_t>(S));
  std::vector<ErrorSums> by_system(systems.size());
  std::vector<FrameError> frames;
  EvalResult res;
  EvalOptions eopt;
  eopt.atom_energy = false;
  for (std::size_t si = 0; si < systems.size(); ++si) {
    const System& sys = systems[si];
    for (int f = 0; f < sys.nframes; ++f) {
      NeighborGraph g = build_periodic_graph(sys.cell(f), sys.positions(f), sys.species, model.rcut);
      compute(g, res, eopt);
      std::vector<double> force = fold_ghost_forces(g, res.force);  // (natoms, 3)
      check_finite(a.model, to_string(mode), sys.frame_label(f), res.energy, force);
      const std::vector<double> fref = sys.forces(f);                 // (natoms, 3)
      const double de = (res.energy - sys.energy[static_cast<std::size_t>(f)]) / sys.natoms;
      total.add_frame(de);
      by_system[si].add_frame(de);
      ErrorSums frame_sums;
      for (int i = 0; i < sys.natoms; ++i) {
        for (int k = 0; k < 3; ++k) {
          const auto idx = 3 * static_cast<std::size_t>(i) + static_cast<std::size_t>(k);
          const double df = force[idx] - fref[idx];
          total.add_force(df);
          by_system[si].add_force(df);
          by_species[static_cast<std::size_t>(sys.species[static_cast<std::size_t>(i)])].add_force(df);
          frame_sums.add_force(df);
        }
      }
      frames.push_back({sys.frame_label(f), 1000 * de, frame_sums.f_rmse()});
      if (ref_engine) {
        ref_engine->compute(g, ref_res, eopt);
        const std::vector<double> fr = fold_ghost_forces(g, ref_res.force);
        check_finite(a.reference, "fp64", sys.frame_label(f), ref_res.energy, fr);
        vs_ref.add_frame((res.energy - ref_res.energy) / sys.natoms);
        for (std::size_t k = 0; k < fr.size(); ++k) vs_ref.add_force(force[k] - fr[k]);
      }
    }
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Table.
  std::printf("model: %s (mode %s, file default %s)\nengine: %s\n", a.model.c_str(), to_string(mode),
              model.default_mode.c_str(), engine_desc.c_str());
  std::printf("frames: %lld, wall time %.1f s\n\n", total.nframes(), wall);
  int w = 6;
  for (const System& sys : systems) w = std::max(w, static_cast<int>(sys.path.size()));
  std::printf("%-*s %8s %12s %12s %12s %12s\n", w, "system", "frames", "E RMSE", "E MAE", "F RMSE", "F MAE");
  std::printf("%-*s %8s %12s %12s %12s %12s\n", w, "", "", "meV/atom", "meV/atom", "meV/A", "meV/A");
  for (std::size_t si = 0; si < systems.size(); ++si) {
    const ErrorSums& e = by_system[si];
    std::printf("%-*s %8lld %12.3f %12.3f %12.2f %12.2f\n", w, systems[si].path.c_str(), e.nframes(), e.e_rmse(),
                e.e_mae(), e.f_rmse(), e.f_mae());
  }
  std::printf("%-*s %8lld %12.3f %12.3f %12.2f %12.2f\n\n", w, "all", total.nframes(), total.e_rmse(), total.e_mae(),
              total.f_rmse(), total.f_mae());
  if (ref_engine)
    std::printf("vs reference %s (float engine, double precision): E RMSE %.4f meV/atom, F RMSE %.4f meV/A, F MAE %.4f meV/A\n\n",
                a.reference.c_str(), vs_ref.e_rmse(), vs_ref.f_rmse(), vs_ref.f_mae());
  std::printf("%-10s %12s %12s\n", "species", "F RMSE", "F MAE");
  for (int s = 0; s < S; ++s) {
    const ErrorSums& e = by_species[static_cast<std::size_t>(s)];
    if (e.ncomp() == 0) continue;
    std::printf("%-10s %12.2f %12.2f\n", model.species[static_cast<std::size_t>(s)].c_str(), e.f_rmse(), e.f_mae());
  }
  std::vector<FrameError> worst = frames;
  std::sort(worst.begin(), worst.end(), [](const FrameError& x, const FrameError& y) {
    return x.f_rmse != y.f_rmse ? x.f_rmse > y.f_rmse : x.label < y.label;
  });
  worst.resize(std::min(worst.size(), static_cast<std::size_t>(std::max(0, a.worst))));
  if (!worst.empty()) {
    int lw = 5;
    for (const FrameError& f : worst) lw = std::max(lw, static_cast<int>(f.label.size()));
    std::printf("\nworst frames by force RMSE:\n%-*s %14s %14s\n", lw, "frame", "dE meV/atom", "F RMSE meV/A");
    for (const FrameError& f : worst) std::printf("%-*s %14.3f %14.2f\n", lw, f.label.c_str(), f.e_err, f.f_rmse);
  }

  // JSON.
  if (!a.json_out.empty()) {
    nlohmann::json j;
    j["model"] = a.model;
    j["mode"] = to_string(mode);
    j["engine"] = engine_desc;
    if (mode == Mode::FP32) j["engine_precision"] = a.precision.empty() ? "double" : a.precision;
    j["data"] = a.data;
    j["frames"] = total.nframes();
    j["wall_s"] = wall;
    j["energy"] = {{"rmse_meV_atom", num(total.e_rmse())}, {"mae_meV_atom", num(total.e_mae())}};
    j["force"] = {{"rmse_meV_A", num(total.f_rmse())}, {"mae_meV_A", num(total.f_mae())}};
    if (ref_engine)
      j["vs_reference"] = {{"model", a.reference},
                           {"energy_rmse_meV_atom", num(vs_ref.e_rmse())},
                           {"force_rmse_meV_A", num(vs_ref.f_rmse())},
                           {"force_mae_meV_A", num(vs_ref.f_mae())}};
    j["force_by_species"] = nlohmann::json::object();
    for (int s = 0; s < S; ++s) {
      const ErrorSums& e = by_species[static_cast<std::size_t>(s)];
      if (e.ncomp() == 0) continue;
      j["force_by_species"][model.species[static_cast<std::size_t>(s)]] = {
          {"rmse_meV_A", num(e.f_rmse())}, {"mae_meV_A", num(e.f_mae())}, {"components", e.ncomp()}};
    }
    j["systems"] = nlohmann::json::array();
    for (std::size_t si = 0; si < systems.size(); ++si) {
      const ErrorSums& e = by_system[si];
      j["systems"].push_back({{"path", systems[si].path},
                              {"frames", e.nframes()},
                              {"energy_rmse_meV_atom", num(e.e_rmse())},
                              {"energy_mae_meV_atom", num(e.e_mae())},
                              {"force_rmse_meV_A", num(e.f_rmse())},
                              {"force_mae_meV_A", num(e.f_mae())}});
    }
    auto frame_json = [](const FrameError& f) {
      return nlohmann::json{{"frame", f.label}, {"energy_error_meV_atom", f.e_err}, {"force_rmse_meV_A", f.f_rmse}};
    };
    j["worst_frames"] = nlohmann::json::array();
    for (const FrameError& w : worst) j["worst_frames"].push_back(frame_json(w));
    j["per_frame"] = nlohmann::json::array();
    for (const FrameError& f : frames) j["per_frame"].push_back(frame_json(f));
    const std::string text = j.dump(2) + "\n";
    write_file_atomic(a.json_out, std::vector<char>(text.begin(), text.end()));
    std::printf("\nwrote %s\n", a.json_out.c_str());
  }
}

}  // namespace

// Registers `qnn eval`.
void register_eval(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* sub = app.add_subcommand("eval", "Energy and force errors of a model on DeePMD npy data, in any execution mode");
  sub->add_option("model", args->model, "the .qnn model")->required()->check(CLI::ExistingFile);
  sub->add_option("data", args->data, "DeePMD system directories (type.raw, type_map.raw, set.*/)")
      ->required()
      ->check(CLI::ExistingDirectory);
  sub->add_option("--json", args->json_out, "also write the report as JSON to this file");
  sub->add_option("--mode", args->mode,
                  "execution mode: auto (default: the file's own mode), fp32, weight-only, w8a16, int8, mixed")
      ->check(CLI::IsMember({"auto", "fp32", "weight-only", "w8a16", "int8", "mixed"}));
  sub->add_option("--precision", args->precision, "mode fp32 only: engine arithmetic double (default) or float")
      ->check(CLI::IsMember({"double", "float"}));
  sub->add_option("--threads", args->threads, "OpenMP threads (default: Kokkos' default)");
  sub->add_option("--reference", args->reference,
                  "also report the deviation from this model (e.g. the FP32 original of a quantized file)")
      ->check(CLI::ExistingFile);
  sub->add_option("--worst", args->worst, "number of worst frames to list (default 5)")->check(CLI::NonNegativeNumber);
  sub->callback([args] { run_eval(*args); });
}

}  // namespace qnn::cli
