// The parts of `qnn train` (trainer.hpp) that `qnn qat` (qat.hpp) shares: the data set, the
// error evaluation, the parsing of the data / learning_rate / loss / training / output sections
// of the config, and the optimisation loop with its progress output, learning curve (CSV and
// PNG), checkpoints, resume and the final model file. Internal to src/torch.
#pragma once
#include <functional>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "qnn/format/model.hpp"
#include "torch/config_section.hpp"
#include "torch/se2a_module.hpp"
#include "torch/trainer.hpp"

namespace qnn::libtorch {

// One training or validation frame, ready for the module.
struct FrameData {
  EdgeBatch edges;          // real tensors in the training dtype
  torch::Tensor force_ref;  // (N, 3) eV/Å, training dtype
  double energy_ref = 0;    // eV
  int natoms = 0;
  std::vector<int> counts;  // (S) atoms per species
  std::string label;
};

// Training and validation frames: cfg.systems, and cfg.validation_systems or a seeded
// validation_fraction split of the training frames. Species must be set in cfg.species.
struct Dataset {
  std::vector<FrameData> frames;
  std::vector<int> train_idx, val_idx;  // indices into frames
};
Dataset load_dataset(const TrainConfig& cfg, torch::Dtype dtype, std::ostream& log);

// The module's errors over frames[which]: per-frame energy residuals and the force RMSE.
struct FrameErrors {
  std::vector<int> which;         // the frames (indices into the frame list)
  std::vector<double> residual;   // E_model − E_ref per frame, eV
  double f_rmse = 0;              // meV/Å over every force component; NaN when empty
  // Energy RMSE per atom (meV/atom) with the per-species shift delta (eV) subtracted from
  // the model's energies (empty: none); NaN when empty.
  double e_rmse(const std::vector<FrameData>& frames, const std::vector<double>& delta) const;
  // The minimum-norm least-squares per-species shift δ (eV) of counts · δ ≈ residual: what
  // the energy bias must lose for the model to be unbiased on these frames.
  std::vector<double> bias_shift(const std::vector<FrameData>& frames, int nspecies) const;
};
// Energies (and, with_forces, forces) of the module over frames[which].
FrameErrors evaluate_errors(Se2aModule& module, const std::vector<FrameData>& frames, const std::vector<int>& which,
                            bool with_forces = true);

// Energy (meV/atom) and force (meV/Å) RMSE of the module over frames[which]; NaN when empty.
std::pair<double, double> evaluate_rmse(Se2aModule& module, const std::vector<FrameData>& frames,
                                        const std::vector<int>& which);

// Learning rate of update k (DeePMD "exp", staircase).
double learning_rate(const TrainConfig& c, int k);

// The parts of a training config a checkpoint must agree with to be resumed (all but
// training.steps, disp_freq, checkpoint_freq and output).
nlohmann::json resume_signature(const TrainConfig& c);

// Reads the data, learning_rate, loss, training and output sections into `c` (everything
// but "model"); `root.finish()` is left to the caller.
void parse_training_sections(config::Section& root, TrainConfig& c, const std::string& base_dir);

// What differs between `qnn train` and `qnn qat` around the shared loop.
struct LoopSpec {
  std::string command = "qnn train";   // names the run in the log and the provenance
  // Optimised tensors in groups; each group's learning rate is lr(k) times its factor.
  std::vector<std::pair<std::vector<torch::Tensor>, double>> param_groups;
  nlohmann::json signature;             // a checkpoint resumes only with an equal signature
  nlohmann::json provenance;            // written into the model's provenance (plus steps, times, RMSEs)
  std::string storage_dtype = "f32";    // provenance.storage_dtype of the written model
  // The model to write at the end (from the module's current state).
  std::function<Model(Se2aModule&)> export_model;
  double setup_s = 0;                   // setup time before run_training, for the log
};

// Threads, seed and allocator settings at the start of a run.
void begin_run(const TrainConfig& cfg);

// Runs (or resumes, opt.resume) the optimisation of `module` on `data` as cfg describes and
// writes the learning curve, checkpoints, the model (spec.export_model) and the plot.
TrainResult run_training(const TrainConfig& cfg, const TrainOptions& opt, Se2aModule& module, const Dataset& data,
                         const LoopSpec& spec);

}  // namespace qnn::libtorch
