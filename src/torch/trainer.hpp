// `qnn train`: fits an se_e2_a model (se2a_module.hpp) to DeePMD npy data with LibTorch.
// Energy + force loss with DeePMD-style prefactor schedules, Adam with staircase exponential
// learning-rate decay, a held-out validation split, checkpoints and resume, a CSV learning
// curve and its PNG plot. Deterministic for a fixed seed and thread count.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qnn/format/model.hpp"

namespace qnn::libtorch {

// Every key of the JSON config, with its default. Relative paths in `data` and `output.dir`
// are relative to the config file's directory; output file names are relative to output.dir.
struct TrainConfig {
  // "model": architecture (docs/model.md)
  std::vector<std::string> species;         // empty: the data's elements in order of appearance
  double rcut = 6.0;                        // Å
  double rcut_smth = 0.5;                   // Å
  std::vector<int> sel;                     // (S) required: neighbour capacity per species
  double neighbor_norm = 0.0;               // Nc of eq. D; 0: sum(sel)
  std::vector<int> embed_widths{25, 50, 100};
  int axis_neuron = 16;
  std::vector<int> fit_widths{240, 240, 240};
  bool resnet_dt = true;
  std::string env_mat = "deepmd";           // "deepmd" | "qnn": environment-matrix convention (model.hpp)
  std::string precision = "double";         // "float" | "double": training arithmetic
  // "data"
  std::vector<std::string> systems;         // required: DeePMD system directories
  std::vector<std::string> validation_systems;  // held-out systems; empty: use validation_fraction
  double validation_fraction = 0.1;         // of the training frames, drawn with the seed
  int stat_frames = 64;                     // frames used for the descriptor statistics
  // "learning_rate": lr(k) = start_lr · rate^floor(k / decay_steps), rate chosen so that
  // lr(steps) = stop_lr (DeePMD's "exp" schedule).
  double start_lr = 1e-3;
  double stop_lr = 3.51e-8;
  int decay_steps = 5000;
  // "loss": pref(k) = limit + (start − limit) · lr(k) / start_lr. The loss of a batch is
  // pref_e · mean_frames(ΔE² / N) + pref_f · mean_components(ΔF²) (DeePMD's normalisation).
  double start_pref_e = 0.02;
  double limit_pref_e = 1.0;
  double start_pref_f = 1000.0;
  double limit_pref_f = 1.0;
  // "training"
  int steps = 100000;                       // optimizer updates
  int batch_size = 1;                       // frames per update
  std::uint64_t seed = 1;
  int threads = 1;                          // LibTorch intra-op threads
  int disp_freq = 1000;                     // validation and learning-curve interval (steps)
  int checkpoint_freq = 10000;              // checkpoint interval (steps)
  int val_frames = 0;                       // validation frames per evaluation; 0: all
  int train_eval_frames = 32;               // training frames per evaluation; 0: all
  // Refit the per-species energy bias of the written model on the training frames: the
  // minimum-norm least-squares shift δ of counts · δ ≈ E_model − E_ref, subtracted from the
  // bias (what DeePMD-kit's `dp change-bias` does after training). It never changes the
  // optimisation; the learning curve reports the validation energy RMSE with and without it.
  bool refit_energy_bias = true;
  // "output"
  std::string output_dir = ".";
  std::string model_file = "model.qnn";
  std::string checkpoint_file = "checkpoint.pt";
  std::string lcurve_file = "lcurve.csv";
  std::string plot_file = "lcurve.png";     // "" disables the plot
  std::string storage_dtype = "auto";       // .qnn weight storage: "f32" | "f64" | "auto" (= precision)

  // Parses and validates a config; unknown keys, wrong types and out-of-range values throw
  // qnn::Error naming the key. `where` prefixes messages (usually the file name).
  static TrainConfig from_json(const nlohmann::json& j, const std::string& base_dir, const std::string& where);
  nlohmann::json to_json() const;            // every key, defaults filled in (paths absolute)
  // What a written model records: to_json() with every path relative to the config file's
  // directory (no machine paths), and "data_checksums": {system: dataset_checksum}.
  nlohmann::json provenance_json() const;
  std::string base_dir;                      // the config file's directory (from_json)
  std::string output_path(const std::string& file) const;  // output_dir / file
};

// Reads and validates a JSON config file.
TrainConfig read_train_config(const std::string& path);

// One row of the learning curve. RMSEs are in meV/atom (energy) and meV/Å (force); NaN where
// not measured (no validation set, or the loss before the first update).
struct CurvePoint {
  int step = 0;
  double lr = 0, pref_e = 0, pref_f = 0;
  double loss = 0;                     // mean training loss since the previous row
  double train_e_rmse = 0, train_f_rmse = 0;
  double val_e_rmse = 0, val_f_rmse = 0;
  double wall_s = 0;                   // training wall time so far
  // Validation energy RMSE after refitting the energy bias on the evaluated training frames
  // (TrainConfig::refit_energy_bias); NaN when off or not measured.
  double val_e_rmse_refit = 0;
};

struct TrainOptions {
  bool resume = false;                 // continue from output_dir/checkpoint_file
  std::ostream* log = nullptr;         // progress and report; nullptr: std::cout
  bool progress = true;                // progress bar / periodic lines
  bool plot = true;                    // call scripts/plot_learning_curve.py at the end
  int stop_at = -1;                    // >= 0: stop after this step (checkpoint and model so far);
                                       // a later run with resume continues the same schedule
};

struct TrainResult {
  Model model;                         // the trained model (also written to model_file)
  std::vector<CurvePoint> curve;
  double wall_s = 0;                   // this invocation's training time
};

// Runs the training described by `cfg`. Throws qnn::Error on bad data or config.
TrainResult train(const TrainConfig& cfg, const TrainOptions& opt = {});

}  // namespace qnn::libtorch
