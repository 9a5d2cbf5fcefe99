// The qnn v1 se_e2_a network (docs/model.md eq. S, R, G, D, F, E) as a LibTorch module on an
// edge list, with forces from autograd. It is the reference the Kokkos engine is tested
// against and the network that training and quantization-aware training optimise.
//
// A batch is a disjoint union of frames. Periodic images are not atoms of the batch: every
// edge points at the owner atom j of the neighbour image and carries the image's shift, so
// x_ij = pos[j] + shift_ij − pos[i], and autograd forces on the owners come out folded.
#pragma once
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"

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

// Fake quantization of one dense layer for quantization-aware training (qat.hpp): what the
// integer engine does to the layer (its QuantSpec), simulated in floating point. Bits 0 leave
// that part float. Scales are held as natural logarithms: parameters when learned, buffers
// when fixed. The gradient scales are LSQ's g (qat.hpp, fake_quant).
struct LayerFakeQuant {
  int weight_bits = 0;             // weights: W -> s_w · clamp(round(W / s_w), ±Q_w)
  int act_bits = 0;                // input:   x -> s_x · clamp(round(x / s_x), ±Q_x)
  int out_bits = 0;                // output (last embedding layer, G): quantized at s_out
  torch::Tensor log_weight_scale;  // (out) per channel or (1) per tensor
  torch::Tensor log_act_scale;     // (1)
  torch::Tensor log_out_scale;     // (1)
  double weight_grad_scale = 1.0, act_grad_scale = 1.0, out_grad_scale = 1.0;
};

// One dense layer's tensors; the rule is docs/model.md eq. G / eq. F.
struct TorchLayer {
  torch::Tensor weight;  // (in, out)
  torch::Tensor bias;    // (out)
  torch::Tensor dt;      // (out) for Residual::Timestep, else undefined
  Activation activation = Activation::Tanh;
  Residual residual = Residual::None;
  LayerFakeQuant fq;     // all zero bits unless fake quantization is enabled
};

// Which scales quantization-aware training learns (the others stay at the plan's values).
struct FakeQuantOptions {
  bool learn_weight_scales = true;
  bool learn_act_scales = true;   // input scales and the embedding output scales
};

class Se2aModuleImpl : public torch::nn::Module {
 public:
  // Copies architecture, weights, statistics and bias of `model`; tensors have `dtype`
  // (torch::kFloat32 or torch::kFloat64). Quantization metadata is ignored (see
  // enable_fake_quant).
  explicit Se2aModuleImpl(const Model& model, torch::Dtype dtype = torch::kFloat64);

  // Per-atom energies (N) in eV, eq. F. `positions` usually requires grad.
  torch::Tensor forward(const torch::Tensor& positions, const torch::Tensor& species, const torch::Tensor& edge_i,
                        const torch::Tensor& edge_j, const torch::Tensor& edge_shift);
  torch::Tensor forward(const EdgeBatch& batch);

  // The per-edge inputs of the network (eqs. S, R) and, with `derivatives`, their analytic
  // derivatives with respect to the edge vector x_ij = x_j + shift − x_i:
  //   shat (E), R (E, 4), dshat_dx (E, 3), dR_dx (E, 4, 3).
  // forward() = forward_env(geometry(...)); energy_and_forces computes the geometry without
  // autograd and contracts dE/dshat, dE/dR with these derivatives (the network alone is
  // differentiated twice in training).
  struct Geometry {
    torch::Tensor shat, R, dshat_dx, dR_dx;
  };
  Geometry geometry(const torch::Tensor& positions, const torch::Tensor& species, const torch::Tensor& edge_i,
                    const torch::Tensor& edge_j, const torch::Tensor& edge_shift, bool derivatives) const;
  // Per-atom energies from the edge inputs (eqs. G, D, F); R̂₀ is taken from R (with env_mat
  // "deepmd" equal to shat, but a separate input here).
  torch::Tensor forward_env(const torch::Tensor& shat, const torch::Tensor& R, const torch::Tensor& species,
                            const torch::Tensor& edge_i, const torch::Tensor& edge_j);

  // The constants of one batch for the jet path: its edge inputs with their derivatives and its
  // slot layout. They depend on the batch and the statistics only, so a trainer that visits a
  // frame many times can keep them (bytes() says what that costs).
  struct JetBlock {
    Geometry geo;           // of the block's rows: its filled slots, centre-major
    torch::Tensor offsets;  // (nb + 1) CSR offsets of each centre's rows
    torch::Tensor centres;  // (nb) atoms, or undefined: all N atoms in order
    int net = 0;
  };
  struct JetInput {
    torch::Tensor species;         // (N)
    torch::Tensor n_ia;            // (N, S) edges of each centre by neighbour species
    torch::Tensor frame;           // (N)
    torch::Tensor edge_i, edge_j;  // (E) the blocks' rows in order
    std::int64_t nframes = 0;
    std::vector<JetBlock> blocks;
    // The module's statistics it was computed with: set_statistics and load_model count as a
    // change; a torch::load of the module's buffers does not, so prepare after loading.
    std::int64_t stats_version = 0;
    std::size_t bytes() const;
  };
  JetInput prepare_jet(const EdgeBatch& batch) const;
  // Per-atom energies (N) and dE/dx per edge (E, 3, edges in the order of in.edge_i) by the embedding jet
  // (embedding_jet.hpp): the embedding nets give G and dG/dŝ in one pass, autograd
  // differentiates only eqs. D and F, and the chain rule down to the edges is written out, so a
  // force loss differentiates every embedding net once instead of twice. With create_graph both
  // results are differentiable with respect to the parameters; otherwise the embedding runs
  // without a graph. Only without fake quantization or an observer (jet_ready).
  std::pair<torch::Tensor, torch::Tensor> energy_and_edge_gradient(const JetInput& in, bool create_graph);
  bool jet_ready() const { return !fake_quant_ && !observer_; }

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

  // Switches on fake quantization with the plan of a quantized model of this architecture
  // (bits and initial scales from each layer's QuantSpec; its weights are not used). Adds the
  // log-scale tensors: parameters (learned) or buffers (fixed) as `opt` says. Once only. With
  // it off (the default) the module computes exactly the float network.
  void enable_fake_quant(const Model& plan, const FakeQuantOptions& opt = {});
  bool fake_quant() const { return fake_quant_; }
  // The learned log scales (empty unless fake quantization learns some).
  std::vector<torch::Tensor> scale_parameters() const;
  // Weights, biases and dt of every layer (what parameters() holds without fake quantization).
  std::vector<torch::Tensor> network_parameters() const;
  // Calibration hook: with an observer set, forward() calls it with the input of every layer
  // (family 0: embedding net of neighbour species `net`, 1: fitting net of centre species
  // `net`; rows: edges or atoms, (n, in)) and, as layer = number of layers, with the net's
  // output (G for an embedding net, before any output quantization). Detached tensors.
  using LayerObserver = std::function<void(int family, int net, int layer, const torch::Tensor& rows)>;
  void set_observer(LayerObserver observer) { observer_ = std::move(observer); }
  const std::vector<std::vector<TorchLayer>>& embed_layers() const { return embed_; }
  const std::vector<std::vector<TorchLayer>>& fit_layers() const { return fit_; }

 private:
  torch::Tensor apply_net(const std::vector<TorchLayer>& net, torch::Tensor y, int family, int index,
                          const torch::Tensor& rows) const;
  // The padded neighbour slots of eqs. G and D, by embedding net: `pad` holds nb·nmax edge
  // indices (E for an empty slot) of the centres `centres` (undefined: all N atoms in order).
  struct SlotBlock {
    torch::Tensor pad, centres;
    std::int64_t nb = 0, nmax = 0;
    int net = 0;
  };
  std::vector<SlotBlock> slot_blocks(const torch::Tensor& species, const torch::Tensor& edge_i,
                                     const torch::Tensor& aj) const;
  // Per-atom energies from Σ_slots G ⊗ R̂ (N, M1, 4): the empty-slot term, 1/Nc, eqs. D and F.
  // n_ia (N, S): the edges of each centre by neighbour species (edge_counts). `loops`: eq. D by
  // the jet's descriptor() instead of LibTorch element-wise products (the reference).
  torch::Tensor energy_from_slots(const torch::Tensor& slot_sum, const torch::Tensor& species,
                                  const torch::Tensor& n_ia, bool loops) const;
  torch::Tensor edge_counts(const torch::Tensor& species, const torch::Tensor& edge_i, const torch::Tensor& aj) const;

  Model arch_;                                   // architecture and metadata; weights ignored
  torch::Dtype dtype_;
  std::vector<std::vector<TorchLayer>> embed_;   // Model::embed: (S) by neighbour species, or (S*S) pairs
  std::vector<std::vector<TorchLayer>> fit_;     // (S) nets by centre species
  torch::Tensor mean_s_, std_s_, std_r_;         // (S*S) buffers
  torch::Tensor energy_bias_;                    // (S) buffer, eV
  std::int64_t stats_version_ = 0;               // bumped by every change of the statistics
  bool fake_quant_ = false;
  LayerObserver observer_;
};
TORCH_MODULE(Se2aModule);

// Energies and forces of a batch.
struct EnergyForces {
  torch::Tensor atom_energy;   // (N) eV
  torch::Tensor frame_energy;  // (nframes) eV
  torch::Tensor forces;        // (N, 3) eV/Å, −dE/dpos (folded onto owners)
};

// Evaluates the module on `batch` with forces. With create_graph the forces stay
// differentiable (for a force loss); otherwise the results are detached. The embedding jet
// computes them when the module allows (jet_ready); `autograd_only` takes the reference path,
// autograd through the whole network (twice, for a force loss), instead.
EnergyForces energy_and_forces(Se2aModule& module, const EdgeBatch& batch, bool create_graph,
                               bool autograd_only = false);
// The same by the jet path, on a batch prepared with prepare_jet.
EnergyForces energy_and_forces(Se2aModule& module, const Se2aModuleImpl::JetInput& in, bool create_graph);

// Frame energies (nframes) in eV of `batch`, without forces or autograd.
torch::Tensor frame_energies(Se2aModule& module, const EdgeBatch& batch);

}  // namespace qnn::libtorch
