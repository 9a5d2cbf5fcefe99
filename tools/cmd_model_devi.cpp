// `qnn model-devi -m m1.qnn m2.qnn ... -s SYSTEM [SYSTEM ...] -o model_devi.out [--mode M]`:
// DeePMD-kit's `dp model-devi` for qnn files: the model deviation of a committee on every frame
// of DeePMD npy systems (and of LAMMPS dump files: --dump FILE --type-map O H), in dp model-devi's file format (per system: a '#' line with the system
// path, a '#' line with the column names, then step, max/min/avg virial deviation, max/min/avg
// force deviation, devi_e, and with --atomic the per-atom force deviation). The definitions are
// qnn::devi's (src/qnn/committee/model_devi.hpp), shared with pair_style qnn. Each frame's
// neighbour graph is built once and serves every model.
//
// Unlike dp model-devi, which appends to an existing output file, the file is replaced, and
// only once every frame has been evaluated (no partial file on an error).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "commands.hpp"
#include "qnn/committee/model_devi.hpp"
#include "qnn/data/data.hpp"
#include "qnn/data/lammps_dump.hpp"
#include "qnn/engine/evaluator.hpp"
#include "qnn/error.hpp"
#include "qnn/format/model.hpp"

namespace qnn::cli {
namespace {

struct ModelDeviArgs {
  std::vector<std::string> models;
  std::vector<std::string> systems;
  std::vector<std::string> dumps;
  std::vector<std::string> type_map;
  std::string output = "model_devi.out";
  std::string mode = "auto";
  int frequency = 1;
  bool atomic = false;
  std::optional<double> relative, relative_v;
  int threads = -1;
};

// The systems below `root` as dp model-devi finds them (deepmd.common.expand_sys_str): every
// directory below it that holds a type.raw, then `root` itself if it holds one. dp model-devi
// takes the first part in file-system order; here it is sorted by path.
std::vector<std::string> expand_systems(const std::string& root) {
  namespace fs = std::filesystem;
  std::string base = root;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  std::error_code ec;
  if (!fs::is_directory(base, ec)) throw Error("-s " + root + ": not a directory");
  std::vector<std::string> found;
  for (fs::recursive_directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec) && fs::is_regular_file(it->path() / "type.raw", ec)) found.push_back(it->path().string());
  if (ec) throw Error("-s " + root + ": " + ec.message());
  std::sort(found.begin(), found.end());
  if (fs::is_regular_file(fs::path(base) / "type.raw", ec)) found.push_back(base);
  if (found.empty()) throw Error("-s " + root + ": no DeePMD system (a directory with type.raw) in it");
  return found;
}

void check_finite(const std::string& model, const std::string& frame, const EvalResult& r) {
  bool ok = std::isfinite(r.energy);
  for (double v : r.virial) ok = ok && std::isfinite(v);
  for (double f : r.force) ok = ok && std::isfinite(f);
  if (!ok)
    throw Error(model + " on frame " + frame + ": a non-finite energy, force or virial; the model or the "
                "configuration is outside the range the engine can represent");
}

void run_model_devi(const ModelDeviArgs& a) {
  if (a.models.size() < 2)
    throw Error("-m: a model deviation needs a committee of two or more models, got " +
                std::to_string(a.models.size()));
  if (a.frequency < 0) throw Error("-f/--frequency must be >= 0, got " + std::to_string(a.frequency));
  for (const auto& [name, level] : {std::pair{"--relative", a.relative}, std::pair{"--relative_v", a.relative_v}})
    if (level && !(*level > 0.0 && std::isfinite(*level)))
      throw Error(std::string(name) + " must be a positive level, got " + std::to_string(*level));
  if (a.systems.empty() && a.dumps.empty()) throw Error("give the frames: -s SYSTEM (DeePMD npy) or --dump FILE");
  if (!a.dumps.empty() && a.type_map.empty())
    throw Error("--dump needs --type-map: the element of each LAMMPS atom type, e.g. --type-map O H");
  check_output_path(a.output, "-o " + a.output);
  std::vector<std::string> dirs;
  for (const std::string& s : a.systems)
    for (std::string& d : expand_systems(s)) dirs.push_back(std::move(d));

  ensure_kokkos_initialized(a.threads);
  std::vector<Model> models;
  std::vector<std::unique_ptr<Evaluator>> evaluators;
  std::vector<std::string> modes;
  for (const std::string& path : a.models) {
    models.push_back(read_model(path));
    if (models.size() > 1) {
      const std::string why = devi::committee_mismatch(models.front(), a.models.front(), models.back(), path);
      if (!why.empty()) throw Error(why);
    }
  }
  for (std::size_t k = 0; k < models.size(); ++k) {
    const Mode mode = a.mode == "auto" ? default_mode(models[k]) : parse_mode(a.mode);
    const std::string why = mode_unsupported_reason(models[k], mode);
    if (!why.empty()) throw Error(a.models[k] + " cannot run in mode " + to_string(mode) + ": " + why);
    evaluators.push_back(make_evaluator(models[k], mode));
    modes.push_back(to_string(mode));
    std::printf("model %zu: %s (%s)\n", k + 1, a.models[k].c_str(), evaluators.back()->describe().c_str());
  }
  const Model& first = models.front();

  std::string text;
  const std::size_t nmodels = models.size();
  std::vector<EvalResult> results(nmodels);
  EvalOptions opt;
  opt.atom_energy = false;
  long long total_frames = 0;
  double worst = 0.0;
  // One system's frames: the header, then one line per frame (step = steps[f]).
  auto evaluate = [&](const System& sys, const std::vector<long long>& steps) {
    text += devi::dp_header(sys.path, a.atomic);
    const std::size_t natoms = static_cast<std::size_t>(sys.natoms);
    std::vector<std::vector<double>> forces(nmodels);
    std::vector<const double*> fptr(nmodels);
    std::vector<std::array<double, 9>> virials(nmodels);
    std::vector<double> energies(nmodels), atom_devi(natoms);
    for (int f = 0; f < sys.nframes; ++f) {
      const NeighborGraph g = build_periodic_graph(sys.cell(f), sys.positions(f), sys.species, first.rcut);
      for (std::size_t k = 0; k < nmodels; ++k) {
        evaluators[k]->compute(g, results[k], opt);
        check_finite(a.models[k], sys.frame_label(f), results[k]);
        forces[k] = fold_ghost_forces(g, results[k].force);
        fptr[k] = forces[k].data();
        virials[k] = devi::virial9(results[k].virial, static_cast<double>(natoms));
        energies[k] = results[k].energy / static_cast<double>(natoms);
      }
      devi::force_deviation(fptr, natoms, a.relative, atom_devi.data());
      const devi::Summary fs = devi::summarize(atom_devi.data(), natoms);
      const devi::Summary vs = devi::virial_deviation(virials, a.relative_v, devi::VirialRelative::TensorNorm);
      text += devi::dp_row(steps[static_cast<std::size_t>(f)], vs, fs, devi::energy_deviation(energies),
                           a.atomic ? atom_devi.data() : nullptr, natoms);
      worst = std::max(worst, fs.max);
    }
    std::printf("%s: %d frames\n", sys.path.c_str(), sys.nframes);
    total_frames += sys.nframes;
  };
  for (const std::string& dir : dirs) {
    const System sys = read_system(dir, first.species);
    std::vector<long long> steps(static_cast<std::size_t>(sys.nframes));
    for (int f = 0; f < sys.nframes; ++f) steps[static_cast<std::size_t>(f)] = static_cast<long long>(f) * a.frequency;
    evaluate(sys, steps);
  }
  for (const std::string& dump : a.dumps) {
    const DumpFrames d = read_lammps_dump(dump, a.type_map, first.species);
    evaluate(d.system, d.steps);
  }
  write_file_atomic(a.output, std::vector<char>(text.begin(), text.end()));
  std::printf("wrote %s: %lld frames of %zu systems, %zu models; largest max_devi_f %.6e eV/A\n", a.output.c_str(),
              total_frames, dirs.size() + a.dumps.size(), nmodels, worst);
}

}  // namespace

// Registers `qnn model-devi`.
void register_model_devi(CLI::App& app) {
  auto args = std::make_shared<ModelDeviArgs>();
  CLI::App* sub = app.add_subcommand(
      "model-devi", "Model deviation of a committee of models on DeePMD npy data (DeePMD-kit's dp model-devi)");
  sub->add_option("-m,--models", args->models, "the committee: two or more .qnn files (the same species and cutoff)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-s,--system", args->systems,
                  "DeePMD system directories; each is searched recursively for systems (directories with type.raw)");
  sub->add_option("--dump", args->dumps,
                  "LAMMPS text dump files (columns id type x y z or xu yu zu); the step column is the dump's timestep")
      ->check(CLI::ExistingFile);
  sub->add_option("--type-map", args->type_map, "with --dump: the element of LAMMPS atom type 1, 2, ... (e.g. O H)");
  sub->add_option("-o,--output", args->output, "the output file (default model_devi.out; replaced, not appended to)");
  sub->add_option("--mode", args->mode,
                  "execution mode of every model: auto (default: each file's own mode) or a mode of `pair_style qnn`");
  sub->add_option("-f,--frequency", args->frequency,
                  "steps between frames (the step column is frame index times this; default 1)");
  sub->add_flag("--atomic", args->atomic, "also write the force deviation of each atom");
  sub->add_option("--relative", args->relative, "relative force deviation with this level (eV/A)");
  sub->add_option("--relative_v", args->relative_v,
                  "relative virial deviation with this level (eV), normalised by the norm of the mean virial "
                  "per atom, as dp model-devi does");
  sub->add_option("--threads", args->threads, "OpenMP threads (default: Kokkos' default)");
  sub->callback([args] { run_model_devi(*args); });
}

}  // namespace qnn::cli
