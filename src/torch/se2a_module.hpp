// The qnn v1 se_e2_a network (docs/model.md eq. S, R, G, D, F, E) as a LibTorch module on an
// edge list, with forces from autograd. It is the reference the Kokkos engine is tested
// against and the network that training and quantization-aware training optimise.
//
// A batch is a disjoint union of frames. Periodic images are not atoms of the batch: every
// edge points at the owner atom j of the neighbour image and carries the image's shift, so
// x_ij = pos[j] + shift_ij − pos[i], and autograd forces on the owners come out folded.
#pragma once
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "qnn/graph.hpp"
#include "qnn/model.hpp"

namespace qnn::libtorch {

// Edge-list input of the module.
struct EdgeBatch {
  torch::Tensor positions;   // (N, 3) real, Å
  torch::Tensor species;     // (N) int64, model species index
  torch::Tensor edge_i;      // (E) int64, centre atom
  torch::Tensor edge_j;      // (E) int64, owner atom of the neighbour image
  torch::Tensor edge_shift;  // (E, 3) real, Å: image position minus owner position
  torch::Tensor frame;       // (N) int64, frame index of each atom
  std::int64_t nframes = 0;

  std::int64_t natoms() const { return positions.size(0); }
  std::int64_t nedges() const { return edge_i.size(0); }
  // The same batch with real tensors cast to `dtype`.
  EdgeBatch to(torch::Dtype dtype) const;
};

// Edges of one graph's local atoms: ghosts map to their owners (graph.ghost_owner) with the
// shift pos[ghost] − pos[owner]. Throws qnn::Error if a ghost has no owner.
EdgeBatch edges_from_graph(const NeighborGraph& graph, torch::Dtype dtype = torch::kFloat64);

// Edges of one periodic frame, built with build_periodic_graph.
EdgeBatch frame_edges(const Cell& cell, const std::vector<double>& positions, const std::vector<int>& species,
                      double rcut, torch::Dtype dtype = torch::kFloat64);

// Disjoint union of several batches (atom indices and frame ids offset).
EdgeBatch concat(const std::vector<const EdgeBatch*>& parts);

// One dense layer's tensors; the rule is docs/model.md eq. G / eq. F.
struct TorchLayer {
  torch::Tensor weight;  // (in, out)
  torch::Tensor bias;    // (out)
  torch::Tensor dt;      // (out) for Residual::Timestep, else undefined
  Activation activation = Activation::Tanh;
  Residual residual = Residual::None;
};

class Se2aModuleImpl : public torch::nn::Module {
 public:
  // Copies architecture, weights, statistics and bias of `model`; tensors have `dtype`
  // (torch::kFloat32 or torch::kFloat64). Quantization metadata is not represented.
  explicit Se2aModuleImpl(const Model& model, torch::Dtype dtype = torch::kFloat64);

  // Per-atom energies (N) in eV, eq. F. `positions` usually requires grad.
  torch::Tensor forward(const torch::Tensor& positions, const torch::Tensor& species, const torch::Tensor& edge_i,
                        const torch::Tensor& edge_j, const torch::Tensor& edge_shift);
  torch::Tensor forward(const EdgeBatch& batch);

  // A Model with this module's current weights, statistics and bias (other fields, such as
  // species names and provenance, from the model it was built from).
  Model to_model() const;
  // Overwrites weights, statistics and bias from a model of the same architecture.
  void load_model(const Model& model);
  // Sets the normalisation statistics (each (S, S), [centre][neighbour]) and energy bias (S).
  void set_statistics(const std::vector<double>& mean_s, const std::vector<double>& std_s,
                      const std::vector<double>& std_r);
  void set_energy_bias(const std::vector<double>& bias);

  const Model& architecture() const { return arch_; }
  torch::Dtype dtype() const { return dtype_; }

 private:
  torch::Tensor apply_net(const std::vector<TorchLayer>& net, torch::Tensor y) const;

  Model arch_;                                   // architecture and metadata; weights ignored
  torch::Dtype dtype_;
  std::vector<std::vector<TorchLayer>> embed_;   // (S) nets by neighbour species
  std::vector<std::vector<TorchLayer>> fit_;     // (S) nets by centre species
  torch::Tensor mean_s_, std_s_, std_r_;         // (S*S) buffers
  torch::Tensor energy_bias_;                    // (S) buffer, eV
};
TORCH_MODULE(Se2aModule);

// Energies and forces of a batch.
struct EnergyForces {
  torch::Tensor atom_energy;   // (N) eV
  torch::Tensor frame_energy;  // (nframes) eV
  torch::Tensor forces;        // (N, 3) eV/Å, −dE/dpos (folded onto owners)
};

// Evaluates the module on `batch` with forces by autograd. With create_graph the forces stay
// differentiable (for a force loss); otherwise the results are detached.
EnergyForces energy_and_forces(Se2aModule& module, const EdgeBatch& batch, bool create_graph);

}  // namespace qnn::libtorch
