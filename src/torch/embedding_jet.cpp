// The embedding jet: G and dG/dŝ of an embedding net in one pass, and its first-order backward
// (docs/training.md, "The embedding jet", eqs. J1–J4). The row loops are in jet_kernels.cpp.
#include "torch/embedding_jet.hpp"

#include <cstdint>
#include <string>

#include "qnn/engine/network_ops.hpp"
#include "qnn/error.hpp"
#include "torch/jet_kernels.hpp"

namespace qnn::libtorch {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool doubles(Residual r) { return r == Residual::Doubling || r == Residual::DoublingTimestep; }
bool has_dt(Residual r) { return r == Residual::Timestep || r == Residual::DoublingTimestep; }
jet::Res kernel_res(Residual r) {
  if (r == Residual::None) return jet::Res::None;
  return doubles(r) ? jet::Res::Doubling : jet::Res::Identity;
}

// The autograd node. Inputs: ŝ (n) and the parameters in layer order (W, b and, with a
// timestep, dt); `codes` holds per layer residual · 2 + (tanh ? 1 : 0). Every layer works on
// the stacked rows Y = [y; t] (2n, width): one GEMM Y·W serves the values and the tangents.
struct EmbeddingJetFunction : public torch::autograd::Function<EmbeddingJetFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& shat, torch::TensorList params,
                               const std::vector<std::int64_t>& codes) {
    const std::int64_t n = shat.size(0);
    torch::Tensor Y = torch::cat({shat.reshape({n, 1}), torch::ones({n, 1}, shat.options())}, 0);  // (2n, 1)
    std::vector<torch::Tensor> saved;  // per layer: Y (input), Z (a; u), W, dt
    std::size_t p = 0;
    for (const std::int64_t code : codes) {
      const auto res = static_cast<Residual>(code / 2);
      const bool tanh_act = (code % 2) != 0;
      const torch::Tensor& W = params[p++];
      const torch::Tensor b = params[p++].contiguous();
      const std::int64_t in = W.size(0), out = W.size(1);
      const torch::Tensor dt = has_dt(res) ? params[p++].contiguous() : torch::ones({out}, shat.options());
      torch::Tensor Z = torch::mm(Y, W);  // (2n, out): [y·W; t·W]
      torch::Tensor Y1 = torch::empty({2 * n, out}, shat.options());
      AT_DISPATCH_FLOATING_TYPES(shat.scalar_type(), "embedding_jet_forward", [&] {
        jet::layer_forward<scalar_t>(n, in, out, kernel_res(res), tanh_act, b.data_ptr<scalar_t>(),
                                     dt.data_ptr<scalar_t>(), Y.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(),
                                     Y1.data_ptr<scalar_t>());
      });
      saved.insert(saved.end(), {Y, Z, W, dt});
      Y = Y1;
    }
    ctx->save_for_backward(saved);
    ctx->saved_data["codes"] = codes;
    return {Y.narrow(0, 0, n), Y.narrow(0, n, n)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const std::vector<std::int64_t> codes = ctx->saved_data["codes"].toIntVector();
    const variable_list saved = ctx->get_saved_variables();
    const std::size_t L = codes.size();
    const torch::Tensor& last_Z = saved[4 * (L - 1) + 1];
    const std::int64_t n = last_Z.size(0) / 2;
    const auto opts = last_Z.options();
    // The gradients of the layer's outputs: values rows and tangent rows, separate tensors for
    // the net's output, then the stacked (2n, in) product of the layer above.
    torch::Tensor gy = grad_out[0].defined() ? grad_out[0].contiguous() : torch::zeros({n, last_Z.size(1)}, opts);
    torch::Tensor gt = grad_out[1].defined() ? grad_out[1].contiguous() : torch::zeros({n, last_Z.size(1)}, opts);
    torch::Tensor GY;                          // [gy; gt] stacked (2n, width), below the top layer
    std::vector<variable_list> per_layer(L);    // gW, gb[, gdt]
    for (std::size_t l = L; l-- > 0;) {
      const auto res = static_cast<Residual>(codes[l] / 2);
      const bool tanh_act = (codes[l] % 2) != 0;
      const torch::Tensor &Y = saved[4 * l], &Z = saved[4 * l + 1], &W = saved[4 * l + 2], &dt = saved[4 * l + 3];
      const std::int64_t in = W.size(0), out = W.size(1);
      torch::Tensor GZ = torch::empty_like(Z);
      // resᵀ([gy; gt]), the residual's part of the input gradient (not for the first layer, whose
      // input ŝ is a constant).
      torch::Tensor skip = l > 0 && res != Residual::None ? torch::empty({2 * n, in}, opts) : torch::Tensor();
      std::vector<double> gb(static_cast<std::size_t>(out), 0.0), gdt(has_dt(res) ? gb.size() : 0, 0.0);
      AT_DISPATCH_FLOATING_TYPES(Z.scalar_type(), "embedding_jet_backward", [&] {
        jet::layer_backward<scalar_t>(n, in, out, kernel_res(res), tanh_act, dt.data_ptr<scalar_t>(),
                                      gy.data_ptr<scalar_t>(), gt.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(),
                                      GZ.data_ptr<scalar_t>(), gb.data(), gdt.empty() ? nullptr : gdt.data(),
                                      skip.defined() ? skip.data_ptr<scalar_t>() : nullptr);
      });
      // Eq. J3, the products: gW = Yᵀ [gz; gu], and the inputs' gradient [gz; gu] Wᵀ + resᵀ([gy; gt]).
      auto to_tensor = [&](const std::vector<double>& v) {
        torch::Tensor t = torch::empty({static_cast<std::int64_t>(v.size())}, opts);
        AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "embedding_jet_sums", [&] {
          std::copy(v.begin(), v.end(), t.data_ptr<scalar_t>());
        });
        return t;
      };
      variable_list g{torch::mm(Y.t(), GZ), to_tensor(gb)};
      if (has_dt(res)) g.push_back(to_tensor(gdt));
      per_layer[l] = std::move(g);
      if (l == 0) break;  // ŝ is a constant: no gradient to its input
      GY = skip.defined() ? skip.addmm_(GZ, W.t()) : torch::mm(GZ, W.t());
      gy = GY.narrow(0, 0, n);
      gt = GY.narrow(0, n, n);
    }
    variable_list out{torch::Tensor()};  // ŝ
    for (auto& g : per_layer) out.insert(out.end(), g.begin(), g.end());
    out.push_back(torch::Tensor());  // `codes`: a non-tensor input still takes one slot
    return out;
  }
};

// Σ_b = Σ_j G_j ⊗ R̂_j over the CSR rows of each centre; backward gG_j = gΣ_b R̂_j.
struct SlotSumFunction : public torch::autograd::Function<SlotSumFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& G, const torch::Tensor& R,
                               const torch::Tensor& offsets) {
    const std::int64_t nb = offsets.size(0) - 1, M = G.size(1);
    torch::Tensor out = torch::empty({nb, M, 4}, G.options());
    AT_DISPATCH_FLOATING_TYPES(G.scalar_type(), "slot_sum", [&] {
      jet::slot_sum<scalar_t>(nb, M, offsets.data_ptr<std::int64_t>(), G.data_ptr<scalar_t>(), R.data_ptr<scalar_t>(),
                              out.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({R, offsets});
    ctx->saved_data["M"] = M;
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &R = saved[0], &offsets = saved[1];
    const std::int64_t nb = offsets.size(0) - 1, M = ctx->saved_data["M"].toInt();
    torch::Tensor gS = grad_out[0].contiguous();
    torch::Tensor gG = torch::empty({R.size(0), M}, gS.options());
    AT_DISPATCH_FLOATING_TYPES(gS.scalar_type(), "slot_sum_backward", [&] {
      jet::slot_sum_backward<scalar_t>(nb, M, offsets.data_ptr<std::int64_t>(), gS.data_ptr<scalar_t>(),
                                       R.data_ptr<scalar_t>(), gG.data_ptr<scalar_t>());
    });
    return {gG, torch::Tensor(), torch::Tensor()};
  }
};

// Eq. J4 per row (jet_kernels.hpp, slot_gradients), differentiable once in gΣ, G and G'.
struct SlotGradientsFunction : public torch::autograd::Function<SlotGradientsFunction> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& gsum, const torch::Tensor& G,
                               const torch::Tensor& Gp, const torch::Tensor& R, const torch::Tensor& offsets) {
    torch::Tensor gS = gsum.contiguous();
    const std::int64_t nb = offsets.size(0) - 1, rows = G.size(0), M = G.size(1);
    torch::Tensor s = torch::empty({rows}, G.options());
    torch::Tensor rho = torch::empty({rows, 4}, G.options());
    AT_DISPATCH_FLOATING_TYPES(G.scalar_type(), "slot_gradients", [&] {
      jet::slot_gradients<scalar_t>(nb, M, offsets.data_ptr<std::int64_t>(), gS.data_ptr<scalar_t>(),
                                    G.data_ptr<scalar_t>(), Gp.data_ptr<scalar_t>(), R.data_ptr<scalar_t>(),
                                    s.data_ptr<scalar_t>(), rho.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({gS, G, Gp, R, offsets});
    return {s, rho};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &gS = saved[0], &G = saved[1], &Gp = saved[2], &R = saved[3], &offsets = saved[4];
    const std::int64_t nb = offsets.size(0) - 1, rows = G.size(0), M = G.size(1);
    torch::Tensor gs = grad_out[0].defined() ? grad_out[0].contiguous() : torch::zeros({rows}, G.options());
    torch::Tensor grho = grad_out[1].defined() ? grad_out[1].contiguous() : torch::zeros({rows, 4}, G.options());
    torch::Tensor g_gS = torch::empty_like(gS), gG = torch::empty_like(G), gGp = torch::empty_like(Gp);
    AT_DISPATCH_FLOATING_TYPES(G.scalar_type(), "slot_gradients_backward", [&] {
      jet::slot_gradients_backward<scalar_t>(nb, M, offsets.data_ptr<std::int64_t>(), gS.data_ptr<scalar_t>(),
                                             G.data_ptr<scalar_t>(), Gp.data_ptr<scalar_t>(), R.data_ptr<scalar_t>(),
                                             gs.data_ptr<scalar_t>(), grho.data_ptr<scalar_t>(),
                                             g_gS.data_ptr<scalar_t>(), gG.data_ptr<scalar_t>(),
                                             gGp.data_ptr<scalar_t>());
    });
    return {g_gS, gG, gGp, torch::Tensor(), torch::Tensor()};
  }
};

// gx = gs dŝ/dx + Σ_k gR_k dR̂_k/dx per edge (jet_kernels.hpp, edge_chain); the geometry's
// derivatives are constants.
struct EdgeChainFunction : public torch::autograd::Function<EdgeChainFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& gs, const torch::Tensor& gR,
                               const torch::Tensor& dshat_dx, const torch::Tensor& dR_dx) {
    const std::int64_t E = gs.size(0);
    torch::Tensor gx = torch::empty({E, 3}, gs.options());
    AT_DISPATCH_FLOATING_TYPES(gs.scalar_type(), "edge_chain", [&] {
      jet::edge_chain<scalar_t>(E, gs.data_ptr<scalar_t>(), gR.data_ptr<scalar_t>(), dshat_dx.data_ptr<scalar_t>(),
                                dR_dx.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({dshat_dx, dR_dx});
    return gx;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &dshat_dx = saved[0], &dR_dx = saved[1];
    torch::Tensor g = grad_out[0].contiguous();
    const std::int64_t E = g.size(0);
    torch::Tensor g_gs = torch::empty({E}, g.options()), g_gR = torch::empty({E, 4}, g.options());
    AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "edge_chain_backward", [&] {
      jet::edge_chain_backward<scalar_t>(E, g.data_ptr<scalar_t>(), dshat_dx.data_ptr<scalar_t>(),
                                         dR_dx.data_ptr<scalar_t>(), g_gs.data_ptr<scalar_t>(),
                                         g_gR.data_ptr<scalar_t>());
    });
    return {g_gs, g_gR, torch::Tensor(), torch::Tensor()};
  }
};

// dE/dpos_n = Σ_{e: j_e = n} gx_e − Σ_{e: i_e = n} gx_e (x_e = x_j − x_i), in edge order; the
// backward gathers: g(gx)_e = g_{j_e} − g_{i_e}.
struct EdgeScatterFunction : public torch::autograd::Function<EdgeScatterFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& gx, const torch::Tensor& edge_i,
                               const torch::Tensor& edge_j, std::int64_t N) {
    torch::Tensor out = torch::zeros({N, 3}, gx.options());
    const std::int64_t E = gx.size(0);
    const std::int64_t* ei = edge_i.data_ptr<std::int64_t>();
    const std::int64_t* ej = edge_j.data_ptr<std::int64_t>();
    AT_DISPATCH_FLOATING_TYPES(gx.scalar_type(), "edge_scatter", [&] {
      const scalar_t* g = gx.data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      for (std::int64_t e = 0; e < E; ++e) {
        for (int d = 0; d < 3; ++d) {
          o[3 * ej[e] + d] += g[3 * e + d];
          o[3 * ei[e] + d] -= g[3 * e + d];
        }
      }
    });
    ctx->save_for_backward({edge_i, edge_j});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &edge_i = saved[0], &edge_j = saved[1];
    torch::Tensor g = grad_out[0].contiguous();
    const std::int64_t E = edge_i.size(0);
    torch::Tensor ggx = torch::empty({E, 3}, g.options());
    const std::int64_t* ei = edge_i.data_ptr<std::int64_t>();
    const std::int64_t* ej = edge_j.data_ptr<std::int64_t>();
    AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "edge_scatter_backward", [&] {
      const scalar_t* gp = g.data_ptr<scalar_t>();
      scalar_t* o = ggx.data_ptr<scalar_t>();
      for (std::int64_t e = 0; e < E; ++e) {
        for (int d = 0; d < 3; ++d) o[3 * e + d] = gp[3 * ej[e] + d] - gp[3 * ei[e] + d];
      }
    });
    return {ggx, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// gT from gD (eq. D's backward; qnn/engine/network_ops.hpp, descriptor_backward, as the engines
// compute it), itself differentiable
// once in gD and T: the loss differentiates ∂E/∂T again.
struct DescriptorBackwardFunction : public torch::autograd::Function<DescriptorBackwardFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& gd, const torch::Tensor& t, std::int64_t M2) {
    const std::int64_t nb = t.size(0), M1 = t.size(1);
    torch::Tensor g = gd.contiguous();
    torch::Tensor gt = torch::empty_like(t);
    AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "descriptor_backward", [&] {
      for (std::int64_t b = 0; b < nb; ++b) {
        qnn::descriptor_backward<scalar_t>(static_cast<int>(M1), static_cast<int>(M2), t.data_ptr<scalar_t>() + b * M1 * 4,
                                           g.data_ptr<scalar_t>() + b * M1 * M2, gt.data_ptr<scalar_t>() + b * M1 * 4);
      }
    });
    ctx->save_for_backward({g, t});
    ctx->saved_data["M2"] = M2;
    return gt;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &g = saved[0], &t = saved[1];
    const std::int64_t M2 = ctx->saved_data["M2"].toInt();
    const std::int64_t nb = t.size(0), M1 = t.size(1);
    torch::Tensor gg = grad_out[0].contiguous();
    torch::Tensor g_gd = torch::empty_like(g), g_t = torch::empty_like(t);
    AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "descriptor_backward_backward", [&] {
      for (std::int64_t b = 0; b < nb; ++b) {
        qnn::descriptor_backward_backward<scalar_t>(static_cast<int>(M1), static_cast<int>(M2),
                                                    t.data_ptr<scalar_t>() + b * M1 * 4,
                                                    g.data_ptr<scalar_t>() + b * M1 * M2,
                                                    gg.data_ptr<scalar_t>() + b * M1 * 4,
                                                    g_gd.data_ptr<scalar_t>() + b * M1 * M2,
                                                    g_t.data_ptr<scalar_t>() + b * M1 * 4);
      }
    });
    return {g_gd, g_t, torch::Tensor()};
  }
};

// Eq. D, D = T T[:M2]ᵀ per atom, with DescriptorBackwardFunction as its backward.
struct DescriptorFunction : public torch::autograd::Function<DescriptorFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& t, std::int64_t M2) {
    const std::int64_t nb = t.size(0), M1 = t.size(1);
    torch::Tensor d = torch::empty({nb, M1, M2}, t.options());
    AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "descriptor", [&] {
      for (std::int64_t b = 0; b < nb; ++b) {
        qnn::descriptor_from_T<scalar_t>(static_cast<int>(M1), static_cast<int>(M2), t.data_ptr<scalar_t>() + b * M1 * 4,
                                         d.data_ptr<scalar_t>() + b * M1 * M2);
      }
    });
    ctx->save_for_backward({t});
    ctx->saved_data["M2"] = M2;
    return d;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const torch::Tensor t = ctx->get_saved_variables()[0];
    return {DescriptorBackwardFunction::apply(grad_out[0], t, ctx->saved_data["M2"].toInt()), torch::Tensor()};
  }
};

// Checks shared by the slot functions.
void check_slots(const char* what, const torch::Tensor& G, const torch::Tensor& R, const torch::Tensor& offsets) {
  const bool ok = G.dim() == 2 && R.dim() == 2 && R.size(1) == 4 && R.size(0) == G.size(0) && offsets.dim() == 1 &&
                  offsets.size(0) >= 1 && offsets.scalar_type() == torch::kInt64 && R.scalar_type() == G.scalar_type();
  if (!ok) throw Error(std::string(what) + ": expected G (rows, M), R (rows, 4) and int64 offsets (nb + 1)");
  if (offsets[0].item<std::int64_t>() != 0 || offsets[-1].item<std::int64_t>() != G.size(0)) {
    throw Error(std::string(what) + ": the offsets do not span the rows");
  }
}

}  // namespace

std::vector<torch::Tensor> embedding_jet(const std::vector<TorchLayer>& net, const torch::Tensor& shat) {
  if (net.empty()) throw Error("embedding_jet: the net has no layers");
  if (shat.dim() != 1) throw Error("embedding_jet: ŝ must be one value per row");
  std::vector<torch::Tensor> params;
  std::vector<std::int64_t> codes;
  std::int64_t width = 1;
  for (const TorchLayer& L : net) {
    const std::int64_t in = L.weight.size(0), out = L.weight.size(1);
    const bool ok = in == width && (L.residual == Residual::None ||
                                    (doubles(L.residual) ? out == 2 * in : out == in));
    if (!ok) throw Error("embedding_jet: layer widths do not chain (" + std::to_string(in) + " -> " + std::to_string(out) + ")");
    if (L.fq.weight_bits != 0 || L.fq.act_bits != 0 || L.fq.out_bits != 0) {
      throw Error("embedding_jet: fake-quantized layers are not supported (use apply_net)");
    }
    params.push_back(L.weight);
    params.push_back(L.bias);
    if (has_dt(L.residual)) params.push_back(L.dt);
    codes.push_back(static_cast<std::int64_t>(L.residual) * 2 + (L.activation == Activation::Tanh ? 1 : 0));
    width = out;
  }
  return EmbeddingJetFunction::apply(shat.contiguous(), torch::TensorList(params), codes);
}

torch::Tensor slot_sum(const torch::Tensor& G, const torch::Tensor& R, const torch::Tensor& offsets) {
  check_slots("slot_sum", G, R, offsets);
  return SlotSumFunction::apply(G.contiguous(), R.contiguous(), offsets.contiguous());
}

std::vector<torch::Tensor> slot_gradients(const torch::Tensor& gsum, const torch::Tensor& G, const torch::Tensor& Gp,
                                          const torch::Tensor& R, const torch::Tensor& offsets) {
  check_slots("slot_gradients", G, R, offsets);
  const std::int64_t nb = offsets.size(0) - 1;
  if (gsum.dim() != 3 || gsum.size(0) != nb || gsum.size(1) != G.size(1) || gsum.size(2) != 4 || !Gp.sizes().equals(G.sizes())) {
    throw Error("slot_gradients: expected gΣ (nb, M, 4) and G' shaped like G");
  }
  return SlotGradientsFunction::apply(gsum, G.contiguous(), Gp.contiguous(), R.contiguous(), offsets.contiguous());
}

torch::Tensor edge_chain(const torch::Tensor& gs, const torch::Tensor& gR, const torch::Tensor& dshat_dx,
                         const torch::Tensor& dR_dx) {
  const std::int64_t E = gs.size(0);
  const bool ok = gs.dim() == 1 && gR.dim() == 2 && gR.size(0) == E && gR.size(1) == 4 && dshat_dx.dim() == 2 &&
                  dshat_dx.size(0) == E && dshat_dx.size(1) == 3 && dR_dx.dim() == 3 && dR_dx.size(0) == E &&
                  dR_dx.size(1) == 4 && dR_dx.size(2) == 3;
  if (!ok) throw Error("edge_chain: expected gs (E), gR (E, 4), dŝ/dx (E, 3) and dR̂/dx (E, 4, 3)");
  return EdgeChainFunction::apply(gs.contiguous(), gR.contiguous(), dshat_dx.contiguous(), dR_dx.contiguous());
}

torch::Tensor edge_scatter(const torch::Tensor& gx, const torch::Tensor& edge_i, const torch::Tensor& edge_j,
                           std::int64_t N) {
  const std::int64_t E = gx.size(0);
  const bool ok = gx.dim() == 2 && gx.size(1) == 3 && edge_i.dim() == 1 && edge_j.dim() == 1 && edge_i.size(0) == E &&
                  edge_j.size(0) == E && edge_i.scalar_type() == torch::kInt64 && edge_j.scalar_type() == torch::kInt64;
  if (!ok) throw Error("edge_scatter: expected gx (E, 3) and int64 edge_i, edge_j (E)");
  return EdgeScatterFunction::apply(gx.contiguous(), edge_i.contiguous(), edge_j.contiguous(), N);
}

torch::Tensor descriptor(const torch::Tensor& T, std::int64_t M2) {
  if (T.dim() != 3 || T.size(2) != 4 || M2 < 1 || M2 > T.size(1)) {
    throw Error("descriptor: expected T (nb, M1, 4) and 1 <= M2 <= M1");
  }
  return DescriptorFunction::apply(T.contiguous(), M2);
}

}  // namespace qnn::libtorch
