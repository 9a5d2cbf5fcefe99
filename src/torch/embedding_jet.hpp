// The embedding net with its derivative, fused for training (docs/training.md, "The embedding
// jet"). A force loss needs G(ŝ) and G'(ŝ) = dG/dŝ on every neighbour slot, and the gradient
// of the loss with respect to the net's parameters through both. Autograd obtains G' by a
// backward pass and the parameter gradient by differentiating that backward pass again; this
// function computes G and G' in one forward pass (the tangent rides along each layer) and the
// parameter gradient in one hand-written backward pass, with the net's GEMMs in LibTorch's BLAS
// and each layer's element-wise work in one loop. It is first-order only: its own backward is
// not differentiable, which the trainer's loss never asks for (se2a_module.cpp,
// energy_and_forces). The reference it is tested against is autograd on apply_net.
#pragma once
#include <vector>

#include <torch/torch.h>

#include "torch/se2a_module.hpp"

namespace qnn::libtorch {

// G (n, M1) and G' = dG/dŝ (n, M1) of the float embedding net `net` (eq. G, no fake
// quantization) at the inputs `shat` (n). Differentiable once with respect to the net's
// weights, biases and dt; `shat` is treated as a constant.
std::vector<torch::Tensor> embedding_jet(const std::vector<TorchLayer>& net, const torch::Tensor& shat);

// The slot contractions of the jet path (eq. J4), as loops over rows (jet_kernels.hpp):
// LibTorch's CPU bmm would run one small GEMM call per centre. The rows of centre b are
// offsets[b] .. offsets[b+1] − 1 (int64, nb + 1 entries); R̂ (rows, 4) is a constant.
//
// Σ_b = Σ_j G_j ⊗ R̂_j: (nb, M, 4) from G (rows, M). Differentiable once in G.
torch::Tensor slot_sum(const torch::Tensor& G, const torch::Tensor& R, const torch::Tensor& offsets);
// With gΣ = dE/dΣ (nb, M, 4): dE/dŝ through G, s_j = Σ_m (gΣ_b R̂_j)_m G'_jm (rows), and
// dE/dR̂_j = G_jᵀ gΣ_b (rows, 4). Differentiable once in gΣ, G and G'.
std::vector<torch::Tensor> slot_gradients(const torch::Tensor& gsum, const torch::Tensor& G, const torch::Tensor& Gp,
                                          const torch::Tensor& R, const torch::Tensor& offsets);

// The chain rule from the edge inputs to the edge vectors: dE/dx_e = gs_e dŝ/dx_e +
// Σ_k gR_ek dR̂_k/dx_e (E, 3). Differentiable once in gs (E) and gR (E, 4); the geometry's
// derivatives dŝ/dx (E, 3) and dR̂/dx (E, 4, 3) are constants.
torch::Tensor edge_chain(const torch::Tensor& gs, const torch::Tensor& gR, const torch::Tensor& dshat_dx,
                         const torch::Tensor& dR_dx);

// dE/dpos (N, 3) from dE/dx per edge (x = x_j − x_i): +gx onto j, −gx onto i, in edge order.
// Differentiable once in gx. The edge indices must lie in [0, N) (the module's own batches).
torch::Tensor edge_scatter(const torch::Tensor& gx, const torch::Tensor& edge_i, const torch::Tensor& edge_j,
                           std::int64_t N);

// Eq. D per atom, D = T T[:M2]ᵀ (nb, M1, M2) from T (nb, M1, 4), as loops; differentiable twice
// (the jet path's ∂E/∂T is differentiated again by the loss).
torch::Tensor descriptor(const torch::Tensor& T, std::int64_t M2);

}  // namespace qnn::libtorch
