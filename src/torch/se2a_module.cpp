// LibTorch se_e2_a module: docs/model.md, equation by equation, on an edge list.
#include "torch/se2a_module.hpp"

#include <cmath>
#include <optional>
#include <tuple>
#include <string>

#include "qnn/error.hpp"
#include "torch/embedding_jet.hpp"
#include "torch/qat.hpp"

namespace qnn::libtorch {
namespace {

using torch::indexing::Slice;

// A (n) int64 tensor from ints.
torch::Tensor long_tensor(const std::vector<std::int64_t>& v) {
  return torch::tensor(v, torch::TensorOptions().dtype(torch::kInt64));
}

// A double tensor of `shape` from values, cast to `dtype`.
torch::Tensor real_tensor(const std::vector<double>& v, std::vector<std::int64_t> shape, torch::Dtype dtype) {
  return torch::tensor(v, torch::TensorOptions().dtype(torch::kFloat64)).reshape(shape).to(dtype);
}

// A tensor's values as doubles (row-major).
std::vector<double> to_vector(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kFloat64).contiguous();
  const double* p = c.data_ptr<double>();
  return {p, p + c.numel()};
}

// Indices (int64) of the entries of a 1-D int64 tensor equal to `value`.
torch::Tensor where_equal(const torch::Tensor& t, std::int64_t value) {
  return torch::nonzero(t == value).squeeze(1);
}

// Padded slot layout per neighbour species. For species a the result is (N*nmax_a) edge
// indices, nmax_a the most neighbours of species a of any centre: slot i·nmax_a + k holds the
// k-th edge (in input order) from centre i to a neighbour of species a, or E when empty.
std::vector<torch::Tensor> padded_slots(const torch::Tensor& edge_i, const torch::Tensor& aj, std::int64_t N,
                                        std::int64_t S) {
  torch::NoGradGuard no_grad;
  const std::int64_t E = edge_i.size(0);
  const auto iopts = edge_i.options();
  std::vector<torch::Tensor> out(static_cast<std::size_t>(S));
  if (E == 0 || N == 0) {
    for (auto& t : out) t = torch::empty({0}, iopts);
    return out;
  }
  torch::Tensor key = edge_i * S + aj;                                             // (E) group id
  auto [sorted_key, order] = torch::sort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  torch::Tensor counts = torch::bincount(key, {}, N * S);                          // (N*S)
  torch::Tensor start = counts.cumsum(0) - counts;                                 // (N*S)
  torch::Tensor rank = torch::arange(E, iopts) - start.index_select(0, sorted_key);  // (E) in sorted order
  torch::Tensor nmax = std::get<0>(counts.view({N, S}).max(0));                    // (S)
  for (std::int64_t a = 0; a < S; ++a) {
    const std::int64_t m = nmax[a].item<std::int64_t>();
    if (m == 0) {
      out[static_cast<std::size_t>(a)] = torch::empty({0}, iopts);
      continue;
    }
    torch::Tensor sel = (sorted_key.remainder(S) == a);
    torch::Tensor centre = sorted_key.masked_select(sel).div(S, "floor");
    torch::Tensor flat = centre * m + rank.masked_select(sel);
    out[static_cast<std::size_t>(a)] = torch::full({N * m}, E, iopts).index_put_({flat}, order.masked_select(sel));
  }
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------ edge batches

// Casts the real tensors of a batch.
EdgeBatch EdgeBatch::to(torch::Dtype dtype) const {
  EdgeBatch b = *this;
  b.positions = positions.to(dtype);
  b.edge_shift = edge_shift.to(dtype);
  return b;
}

// Local atoms and their edges; ghosts become (owner, shift).
EdgeBatch edges_from_graph(const NeighborGraph& g, torch::Dtype dtype) {
  const int nlocal = g.nlocal;
  const int nghost = g.ntotal - g.nlocal;
  if (nghost > 0 && static_cast<int>(g.ghost_owner.size()) != nghost) {
    throw Error("edges_from_graph: the graph has " + std::to_string(nghost) +
                " ghost atoms but no ghost_owner map (build it with build_periodic_graph)");
  }
  const auto E = static_cast<std::size_t>(g.nedges());
  std::vector<std::int64_t> ei(E), ej(E);   // (E)
  std::vector<double> shift(3 * E, 0.0);   // (E, 3)
  for (int i = 0; i < nlocal; ++i) {
    for (int e = g.offsets[static_cast<std::size_t>(i)]; e < g.offsets[static_cast<std::size_t>(i) + 1]; ++e) {
      const auto ue = static_cast<std::size_t>(e);
      const int j = g.neighbors[ue];
      const int owner = j < nlocal ? j : g.ghost_owner[static_cast<std::size_t>(j - nlocal)];
      ei[ue] = i;
      ej[ue] = owner;
      for (int k = 0; k < 3; ++k) {
        shift[3 * ue + static_cast<std::size_t>(k)] =
            g.positions[3 * static_cast<std::size_t>(j) + static_cast<std::size_t>(k)] -
            g.positions[3 * static_cast<std::size_t>(owner) + static_cast<std::size_t>(k)];
      }
    }
  }
  EdgeBatch b;
  std::vector<double> pos(g.positions.begin(), g.positions.begin() + 3 * static_cast<std::ptrdiff_t>(nlocal));
  std::vector<std::int64_t> species(g.species.begin(), g.species.begin() + nlocal);
  b.positions = real_tensor(pos, {nlocal, 3}, dtype);
  b.species = long_tensor(species);
  b.edge_i = long_tensor(ei);
  b.edge_j = long_tensor(ej);
  b.edge_shift = real_tensor(shift, {static_cast<std::int64_t>(E), 3}, dtype);
  b.frame = torch::zeros({nlocal}, torch::TensorOptions().dtype(torch::kInt64));
  b.nframes = 1;
  return b;
}

// One periodic frame.
EdgeBatch frame_edges(const Cell& cell, const std::vector<double>& positions, const std::vector<int>& species,
                      double rcut, torch::Dtype dtype) {
  return edges_from_graph(build_periodic_graph(cell, positions, species, rcut), dtype);
}

// Disjoint union: atom indices shift by the atoms before, frame ids by the frames before.
EdgeBatch concat(const std::vector<const EdgeBatch*>& parts) {
  if (parts.empty()) throw Error("concat: no batches");
  if (parts.size() == 1) return *parts[0];
  std::vector<torch::Tensor> pos, spc, ei, ej, sh, fr;
  std::int64_t atom_offset = 0, frame_offset = 0;
  for (const EdgeBatch* p : parts) {
    pos.push_back(p->positions);
    spc.push_back(p->species);
    ei.push_back(p->edge_i + atom_offset);
    ej.push_back(p->edge_j + atom_offset);
    sh.push_back(p->edge_shift);
    fr.push_back(p->frame + frame_offset);
    atom_offset += p->natoms();
    frame_offset += p->nframes;
  }
  EdgeBatch b;
  b.positions = torch::cat(pos);
  b.species = torch::cat(spc);
  b.edge_i = torch::cat(ei);
  b.edge_j = torch::cat(ej);
  b.edge_shift = torch::cat(sh);
  b.frame = torch::cat(fr);
  b.nframes = frame_offset;
  return b;
}

// ------------------------------------------------------------------------------ module

// Registers one tensor per weight, bias and dt of every layer, and the statistics as buffers.
Se2aModuleImpl::Se2aModuleImpl(const Model& model, torch::Dtype dtype) : arch_(model), dtype_(dtype) {
  if (dtype != torch::kFloat32 && dtype != torch::kFloat64) throw Error("Se2aModule: dtype must be float32 or float64");
  model.validate("Se2aModule model");
  const int S = model.nspecies();
  auto make_net = [&](const Net& net, const std::string& prefix) {
    std::vector<TorchLayer> layers;
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
      const DenseLayer& L = net.layers[l];
      const std::string name = prefix + "_layer" + std::to_string(l);
      TorchLayer t;
      t.activation = L.activation;
      t.residual = L.residual;
      t.weight = register_parameter(name + "_weight", real_tensor(L.weight, {L.in, L.out}, dtype));
      t.bias = register_parameter(name + "_bias", real_tensor(L.bias, {L.out}, dtype));
      if (L.residual == Residual::Timestep || L.residual == Residual::DoublingTimestep) {
        t.dt = register_parameter(name + "_dt", real_tensor(L.dt, {L.out}, dtype));
      }
      layers.push_back(t);
    }
    return layers;
  };
  for (int s = 0; s < model.n_embed_nets(); ++s) embed_.push_back(make_net(model.embed[static_cast<std::size_t>(s)], "embed" + std::to_string(s)));
  for (int s = 0; s < S; ++s) fit_.push_back(make_net(model.fit[static_cast<std::size_t>(s)], "fit" + std::to_string(s)));
  mean_s_ = register_buffer("mean_s", real_tensor(model.mean_s, {S * S}, dtype));
  std_s_ = register_buffer("std_s", real_tensor(model.std_s, {S * S}, dtype));
  std_r_ = register_buffer("std_r", real_tensor(model.std_r, {S * S}, dtype));
  energy_bias_ = register_buffer("energy_bias", real_tensor(model.energy_bias, {S}, dtype));
}

// Dense layers in order: z = y·W + b, then the activation and residual rule of eq. G / eq. F.
// With fake quantization (qat.hpp) the layer's product takes its quantized input and weights,
// tanh is exact, and the residual adds the float input, as engine v2 computes them.
// The observer, when set, sees every layer's input and the net's output (before its
// quantization), restricted to `rows` when defined.
torch::Tensor Se2aModuleImpl::apply_net(const std::vector<TorchLayer>& net, torch::Tensor y, int family, int index,
                                        const torch::Tensor& rows) const {
  if (!fake_quant_ && !observer_) {
    for (const TorchLayer& L : net) {
      torch::Tensor z = torch::addmm(L.bias, y, L.weight);       // (n, out)
      torch::Tensor a = L.activation == Activation::Tanh ? torch::tanh(z) : z;
      switch (L.residual) {
        case Residual::None: y = a; break;
        case Residual::Identity: y = y + a; break;
        case Residual::Doubling: y = torch::cat({y, y}, 1) + a; break;
        case Residual::Timestep: y = y + L.dt * a; break;
        case Residual::DoublingTimestep: y = torch::cat({y, y}, 1) + L.dt * a; break;
      }
    }
    return y;
  }
  auto observe = [&](std::size_t layer, const torch::Tensor& t) {
    if (!observer_) return;
    torch::Tensor v = t.detach();
    observer_(family, index, static_cast<int>(layer), rows.defined() ? v.index_select(0, rows) : v);
  };
  for (std::size_t l = 0; l < net.size(); ++l) {
    const TorchLayer& L = net[l];
    const LayerFakeQuant& q = L.fq;
    observe(l, y);
    torch::Tensor x = q.act_bits != 0 ? libtorch::fake_quant(y, torch::exp(q.log_act_scale), q.act_bits, q.act_grad_scale, false) : y;
    torch::Tensor w = q.weight_bits != 0
                          ? libtorch::fake_quant(L.weight, torch::exp(q.log_weight_scale), q.weight_bits, q.weight_grad_scale)
                          : L.weight;
    torch::Tensor z = torch::addmm(L.bias, x, w);               // (n, out)
    // Engine v2 evaluates tanh in float to ~2 ulp in every mode: no table tanh to simulate.
    torch::Tensor a = L.activation == Activation::Tanh ? torch::tanh(z) : z;
    switch (L.residual) {  // engine v2 adds the layer's float input, not its quantized copy
      case Residual::None: y = a; break;
      case Residual::Identity: y = y + a; break;
      case Residual::Doubling: y = torch::cat({y, y}, 1) + a; break;
      case Residual::Timestep: y = y + L.dt * a; break;
      case Residual::DoublingTimestep: y = torch::cat({y, y}, 1) + L.dt * a; break;
    }
    if (l + 1 == net.size()) observe(net.size(), y);
    if (q.out_bits != 0) y = libtorch::fake_quant(y, torch::exp(q.log_out_scale), q.out_bits, q.out_grad_scale, false);
  }
  return y;
}

// Log-scale tensors of every quantized layer of the plan; see the header.
void Se2aModuleImpl::enable_fake_quant(const Model& plan, const FakeQuantOptions& opt) {
  if (fake_quant_) throw Error("Se2aModule::enable_fake_quant: fake quantization is already enabled");
  plan.validate("fake-quantization plan");
  if (plan.species != arch_.species || plan.embed_widths != arch_.embed_widths || plan.fit_widths != arch_.fit_widths ||
      plan.axis_neuron != arch_.axis_neuron || plan.resnet_dt != arch_.resnet_dt || plan.type_one_side != arch_.type_one_side) {
    throw Error("Se2aModule::enable_fake_quant: the plan's architecture differs from the module's");
  }
  auto scalar = [&](double v) { return torch::full({1}, std::log(v), torch::TensorOptions().dtype(dtype_)); };
  auto add = [&](const std::string& name, torch::Tensor t, bool learn) {
    return learn ? register_parameter(name, t) : register_buffer(name, t);
  };
  // G is quantized only when every embedding net has an output scale (the integer descriptor).
  bool all_out = true;
  for (const Net& net : plan.embed) all_out = all_out && net.layers.back().quant.out_scale > 0;
  auto setup = [&](const Net& net, std::vector<TorchLayer>& layers, const std::string& prefix, bool embed) {
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const DenseLayer& P = net.layers[l];
      const QuantSpec& qs = P.quant;
      const std::string name = prefix + "_layer" + std::to_string(l);
      LayerFakeQuant& q = layers[l].fq;
      for (std::int32_t zp : qs.weight_zero_point) {
        if (zp != 0) throw Error(name + ": asymmetric weights (zero point " + std::to_string(zp) + ") are not supported");
      }
      if (qs.act_zero_point != 0) throw Error(name + ": asymmetric activations (act_zero_point) are not supported");
      if (qs.out_scale > 0 && !(embed && l + 1 == layers.size())) {
        throw Error(name + ": out_scale is only defined for the last layer of an embedding net");
      }
      if (qs.weight_bits != 0) {
        q.weight_bits = qs.weight_bits;
        std::vector<double> ls;
        for (float v : qs.weight_scale) ls.push_back(std::log(static_cast<double>(v)));
        q.log_weight_scale = add(name + "_log_wscale", real_tensor(ls, {static_cast<std::int64_t>(ls.size())}, dtype_),
                                 opt.learn_weight_scales);
        const double per_scale = static_cast<double>(P.in) * (qs.weight_scale.size() == 1 ? P.out : 1);
        q.weight_grad_scale = lsq_grad_scale(per_scale, qs.weight_bits);
      }
      // Engine v2 tabulates the embedding nets from their (quantized) weights: their
      // activation bits and G's output scale have no effect there, so they are not simulated.
      // The output layer (one energy) runs in double on its input as computed: not simulated.
      if (qs.act_bits != 0 && !embed && l + 1 < layers.size()) {
        q.act_bits = qs.act_bits;
        q.log_act_scale = add(name + "_log_ascale", scalar(qs.act_scale), opt.learn_act_scales);
        q.act_grad_scale = lsq_grad_scale(P.in, qs.act_bits);
      }
      if (qs.act_bits != 0 && qs.weight_bits == 0) {
        throw Error(name + ": activations are quantized but the weights are float, which the integer engine cannot run");
      }
      if (qs.out_scale > 0 && all_out && !embed) {
        q.out_bits = kEmbedOutBits;
        q.log_out_scale = add(name + "_log_oscale", scalar(qs.out_scale), opt.learn_act_scales);
        q.out_grad_scale = lsq_grad_scale(P.out, kEmbedOutBits);
      }
    }
  };
  for (std::size_t s = 0; s < embed_.size(); ++s) setup(plan.embed[s], embed_[s], "embed" + std::to_string(s), true);
  for (std::size_t s = 0; s < fit_.size(); ++s) setup(plan.fit[s], fit_[s], "fit" + std::to_string(s), false);
  fake_quant_ = true;
}

// Learned log scales, in layer order.
std::vector<torch::Tensor> Se2aModuleImpl::scale_parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto* fam : {&embed_, &fit_}) {
    for (const auto& net : *fam) {
      for (const TorchLayer& L : net) {
        for (const torch::Tensor* t : {&L.fq.log_weight_scale, &L.fq.log_act_scale, &L.fq.log_out_scale}) {
          if (t->defined() && t->requires_grad()) out.push_back(*t);
        }
      }
    }
  }
  return out;
}

// Weights, biases and dt, in registration order.
std::vector<torch::Tensor> Se2aModuleImpl::network_parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto* fam : {&embed_, &fit_}) {
    for (const auto& net : *fam) {
      for (const TorchLayer& L : net) {
        out.push_back(L.weight);
        out.push_back(L.bias);
        if (L.dt.defined()) out.push_back(L.dt);
      }
    }
  }
  return out;
}

// The edge inputs of the network and, optionally, their derivatives (see the header).
Se2aModuleImpl::Geometry Se2aModuleImpl::geometry(const torch::Tensor& positions, const torch::Tensor& species,
                                                  const torch::Tensor& edge_i, const torch::Tensor& edge_j,
                                                  const torch::Tensor& edge_shift, bool derivatives) const {
  const std::int64_t S = arch_.nspecies();
  const double rc = arch_.rcut, rs = arch_.rcut_smth;

  // Edge vectors and lengths.
  torch::Tensor x = positions.index_select(0, edge_j) + edge_shift - positions.index_select(0, edge_i);  // (E, 3)
  torch::Tensor r = torch::sqrt((x * x).sum(1));                                                       // (E)

  // Eq. S: switching function.
  torch::Tensor u = (r - rs) / (rc - rs);
  torch::Tensor poly = u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0;
  torch::Tensor inv_r = 1.0 / r;
  torch::Tensor s = torch::where(r < rs, inv_r, torch::where(r < rc, poly * inv_r, torch::zeros_like(r)));  // (E)

  // Eq. R: normalised generalised coordinates and embedding input.
  torch::Tensor ci = species.index_select(0, edge_i);   // (E)
  torch::Tensor aj = species.index_select(0, edge_j);   // (E)
  torch::Tensor pair = ci * S + aj;                     // (E)
  torch::Tensor ms = mean_s_.index_select(0, pair);
  torch::Tensor ss = std_s_.index_select(0, pair);
  torch::Tensor sr = std_r_.index_select(0, pair);
  Geometry geo;
  geo.shat = (s - ms) / ss;                                                                      // (E)
  const bool deepmd = arch_.deepmd_env_mat();  // R̂₀ = ŝ, empty slots count (model.hpp)
  torch::Tensor q = s * inv_r / sr;                                                              // (E)
  geo.R = torch::cat({(deepmd ? geo.shat : s / ss).unsqueeze(1), x * q.unsqueeze(1)}, 1);          // (E, 4)
  if (!derivatives) return geo;
  // ds/dr of eq. S; then dŝ/dx = (ds/dr / std_s) e (also dR̂₀/dx, with either convention) and
  // dR̂_k/dx_d = q δ_kd + x_k (dq/dr) e_d, q = s / (r std_r).
  torch::Tensor dpoly = (-30.0 * u * u * u * u + 60.0 * u * u * u - 30.0 * u * u) / (rc - rs);
  torch::Tensor ds = torch::where(r < rs, -inv_r * inv_r,
                                  torch::where(r < rc, -inv_r * inv_r * poly + inv_r * dpoly, torch::zeros_like(r)));
  torch::Tensor e = x * inv_r.unsqueeze(1);                                                      // (E, 3)
  geo.dshat_dx = e * (ds / ss).unsqueeze(1);                                                     // (E, 3)
  torch::Tensor dq = (ds * inv_r - s * inv_r * inv_r) / sr;                                      // (E)
  torch::Tensor eye = torch::eye(3, x.options()).unsqueeze(0);                                   // (1, 3, 3)
  torch::Tensor dxyz = q.view({-1, 1, 1}) * eye + x.unsqueeze(2) * (dq.unsqueeze(1) * e).unsqueeze(1);  // (E, 3, 3)
  geo.dR_dx = torch::cat({geo.dshat_dx.unsqueeze(1), dxyz}, 1);                                  // (E, 4, 3)
  return geo;
}

// Per-atom energies; see the header for the edge convention.
torch::Tensor Se2aModuleImpl::forward(const torch::Tensor& positions, const torch::Tensor& species,
                                      const torch::Tensor& edge_i, const torch::Tensor& edge_j,
                                      const torch::Tensor& edge_shift) {
  const Geometry geo = geometry(positions, species, edge_i, edge_j, edge_shift, false);
  return forward_env(geo.shat, geo.R, species, edge_i, edge_j);
}

// The slot blocks of eqs. G and D; see the header.
std::vector<Se2aModuleImpl::SlotBlock> Se2aModuleImpl::slot_blocks(const torch::Tensor& species,
                                                                   const torch::Tensor& edge_i,
                                                                   const torch::Tensor& aj) const {
  const std::int64_t S = arch_.nspecies();
  const std::int64_t N = species.size(0);
  const std::vector<torch::Tensor> slots = padded_slots(edge_i, aj, N, S);   // (S) each (N*nmax_a)
  std::vector<torch::Tensor> centres_of;  // pair nets: the centres of each species
  if (!arch_.type_one_side) {
    for (std::int64_t c = 0; c < S; ++c) centres_of.push_back(where_equal(species, c));
  }
  std::vector<SlotBlock> out;
  for (std::int64_t a = 0; a < S; ++a) {
    const torch::Tensor& pad = slots[static_cast<std::size_t>(a)];
    if (pad.numel() == 0) continue;
    const std::int64_t nmax = pad.numel() / N;
    if (arch_.type_one_side) {
      out.push_back({pad, torch::Tensor(), N, nmax, static_cast<int>(a)});
      continue;
    }
    // Pair nets (type_one_side false): net c·S + a embeds the slots of the centres of species c.
    for (std::int64_t c = 0; c < S; ++c) {
      const torch::Tensor& idx = centres_of[static_cast<std::size_t>(c)];
      const std::int64_t nc = idx.numel();
      if (nc == 0) continue;
      out.push_back({pad.view({N, nmax}).index_select(0, idx).reshape({nc * nmax}), idx, nc, nmax,
                     static_cast<int>(c * S + a)});
    }
  }
  return out;
}

torch::Tensor Se2aModuleImpl::forward_env(const torch::Tensor& shat, const torch::Tensor& R,
                                          const torch::Tensor& species, const torch::Tensor& edge_i,
                                          const torch::Tensor& edge_j) {
  const std::int64_t N = species.size(0);
  const std::int64_t M1 = arch_.m1();
  const auto opts = R.options();
  torch::Tensor aj = species.index_select(0, edge_j);   // (E)

  // Eqs. G and D, padded per neighbour species: the edges of centre i with neighbour species a
  // fill the slots i·nmax_a + rank of an (N, nmax_a) layout; empty slots have R̂ = 0, so they add
  // exactly nothing to T_i = (1/Nc) Σ_j G_ij ⊗ R̂_ij and no gather/scatter of G is needed.
  torch::Tensor shat_ext = torch::cat({shat, torch::zeros({1}, opts)});      // (E+1), last: empty slot
  torch::Tensor R_ext = torch::cat({R, torch::zeros({1, 4}, opts)});         // (E+1, 4)
  torch::Tensor T = torch::zeros({N, M1, 4}, opts);                          // Σ_slots G ⊗ R̂
  for (const SlotBlock& b : slot_blocks(species, edge_i, aj)) {
    torch::Tensor in = shat_ext.index_select(0, b.pad).unsqueeze(1);                    // (nb*nmax, 1)
    torch::Tensor valid = observer_ ? torch::nonzero(b.pad < edge_i.size(0)).squeeze(1) : torch::Tensor();
    torch::Tensor G = apply_net(embed_[static_cast<std::size_t>(b.net)], in, 0, b.net, valid)
                          .view({b.nb, b.nmax, M1});                                   // (nb, nmax, M1)
    torch::Tensor Ra = R_ext.index_select(0, b.pad).view({b.nb, b.nmax, 4});           // (nb, nmax, 4)
    torch::Tensor t = torch::bmm(G.transpose(1, 2), Ra);                                // (nb, M1, 4)
    T = b.centres.defined() ? T.index_add(0, b.centres, t) : T + t;
  }
  return energy_from_slots(T, species, edge_counts(species, edge_i, aj), false);
}

torch::Tensor Se2aModuleImpl::edge_counts(const torch::Tensor& species, const torch::Tensor& edge_i,
                                          const torch::Tensor& aj) const {
  const std::int64_t S = arch_.nspecies();
  const std::int64_t N = species.size(0);
  return torch::bincount(edge_i * S + aj, {}, N * S).view({N, S}).to(dtype_);
}

torch::Tensor Se2aModuleImpl::energy_from_slots(const torch::Tensor& slot_sum, const torch::Tensor& species,
                                                const torch::Tensor& n_ia, bool loops) const {
  const std::int64_t S = arch_.nspecies();
  const std::int64_t N = species.size(0);
  const std::int64_t M1 = arch_.m1();
  const std::int64_t M2 = arch_.axis_neuron;
  const auto opts = slot_sum.options();
  torch::Tensor T = slot_sum;
  if (arch_.deepmd_env_mat() && N > 0) {
    // Empty slots (DeePMD convention): centre i has sel[a] − n_ia slots of species a that no
    // edge fills, each adding G_a(ŝ₀) ŝ₀ to column 0 of T_i, ŝ₀ = −mean_s/std_s of the pair.
    // An edge at r >= rcut has s = 0, so it adds exactly what an empty slot adds: n_ia counts
    // every edge of the list, whatever its length.
    torch::Tensor pad = torch::zeros({N, M1}, opts);
    for (std::int64_t a = 0; a < S; ++a) {
      torch::Tensor pairs = torch::arange(S, species.options()) * S + a;                 // (S) [centre][a]
      torch::Tensor s0 = -mean_s_.index_select(0, pairs) / std_s_.index_select(0, pairs);  // (S) per centre species
      torch::Tensor g0;                                                                  // (S, M1)
      if (arch_.type_one_side) {
        g0 = apply_net(embed_[static_cast<std::size_t>(a)], s0.unsqueeze(1), 0, static_cast<int>(a), torch::Tensor());
      } else {
        std::vector<torch::Tensor> rows;
        for (std::int64_t c = 0; c < S; ++c) {
          const int net = static_cast<int>(c * S + a);
          rows.push_back(apply_net(embed_[static_cast<std::size_t>(net)], s0.slice(0, c, c + 1).unsqueeze(1), 0, net, torch::Tensor()));
        }
        g0 = torch::cat(rows, 0);
      }
      torch::Tensor w = (static_cast<double>(arch_.sel[static_cast<std::size_t>(a)]) - n_ia.select(1, a)) *
                        s0.index_select(0, species);                                     // (N)
      pad = pad + g0.index_select(0, species) * w.unsqueeze(1);
    }
    T = T + torch::cat({pad.unsqueeze(2), torch::zeros({N, M1, 3}, opts)}, 2);
  }
  T = T / arch_.neighbor_norm;
  // Eq. D: D_i = T_i T_i[:M2]ᵀ, flattened row-major (m·M2 + n), as four outer products: the
  // contraction has length 4, and LibTorch's CPU bmm would make one GEMM call per atom.
  torch::Tensor D;  // (N, M1, M2)
  if (loops) {
    D = descriptor(T, M2);
  } else {
    torch::Tensor T2 = T.narrow(1, 0, M2);  // (N, M2, 4)
    D = T.select(2, 0).unsqueeze(2) * T2.select(2, 0).unsqueeze(1);
    for (std::int64_t k = 1; k < 4; ++k) D = D + T.select(2, k).unsqueeze(2) * T2.select(2, k).unsqueeze(1);
  }
  D = D.reshape({N, M1 * M2});

  // Eq. F: fitting net of the centre species plus the energy bias.
  torch::Tensor atom_e;  // (N)
  for (std::int64_t c = 0; c < S; ++c) {
    torch::Tensor idx = S == 1 ? torch::Tensor() : where_equal(species, c);
    if (idx.defined() && idx.numel() == 0) continue;
    torch::Tensor in = idx.defined() ? D.index_select(0, idx) : D;                      // (n, M1*M2)
    torch::Tensor e = apply_net(fit_[static_cast<std::size_t>(c)], in, 1, static_cast<int>(c), torch::Tensor()).squeeze(1) +
                      energy_bias_[c];  // (n)
    if (!idx.defined()) {
      atom_e = e;
    } else {
      if (!atom_e.defined()) atom_e = torch::zeros({N}, opts);
      atom_e = atom_e.index_copy(0, idx, e);
    }
  }
  if (!atom_e.defined()) atom_e = torch::zeros({N}, opts);
  return atom_e;
}

// The embedding-jet path; see the header. With Σ = Σ_slots G ⊗ R̂ (N, M1, 4) and gΣ = dE/dΣ
// (autograd through eqs. D and F only), each slot's gradients are dE/dG = R̂ gΣᵀ and
// dE/dR̂ = G gΣ, and dE/dŝ = (dE/dG) · G' (docs/training.md, eq. J4; slot_gradients).
Se2aModuleImpl::JetInput Se2aModuleImpl::prepare_jet(const EdgeBatch& batch) const {
  torch::NoGradGuard no_grad;
  JetInput in;
  in.species = batch.species;
  in.frame = batch.frame;
  in.nframes = batch.nframes;
  in.stats_version = stats_version_;
  const Geometry geo = geometry(batch.positions.detach().to(dtype_), batch.species, batch.edge_i, batch.edge_j,
                                batch.edge_shift.to(dtype_), true);
  const torch::Tensor aj = batch.species.index_select(0, batch.edge_j);
  in.n_ia = edge_counts(batch.species, batch.edge_i, aj);
  const std::int64_t E = batch.nedges();
  // Each block's filled slots only, in CSR order (centre-major): the jet skips empty slots, and
  // the block's geometry is gathered once, in the order the jet reads it.
  std::vector<torch::Tensor> ei, ej;
  for (const SlotBlock& b : slot_blocks(batch.species, batch.edge_i, aj)) {
    torch::Tensor filled = b.pad < E;  // (nb*nmax)
    torch::Tensor rows = b.pad.masked_select(filled);
    JetBlock j;
    j.geo = {geo.shat.index_select(0, rows), geo.R.index_select(0, rows), geo.dshat_dx.index_select(0, rows),
             geo.dR_dx.index_select(0, rows)};
    j.offsets = torch::cat({torch::zeros({1}, b.pad.options()), filled.view({b.nb, b.nmax}).sum(1).cumsum(0)});
    j.centres = b.centres;
    j.net = b.net;
    ei.push_back(batch.edge_i.index_select(0, rows));
    ej.push_back(batch.edge_j.index_select(0, rows));
    in.blocks.push_back(std::move(j));
  }
  in.edge_i = ei.empty() ? batch.edge_i.narrow(0, 0, 0) : torch::cat(ei);
  in.edge_j = ej.empty() ? batch.edge_j.narrow(0, 0, 0) : torch::cat(ej);
  return in;
}

std::size_t Se2aModuleImpl::JetInput::bytes() const {
  std::size_t n = 0;
  auto add = [&](const torch::Tensor& t) {
    if (t.defined()) n += static_cast<std::size_t>(t.numel()) * t.element_size();
  };
  for (const torch::Tensor* t : {&species, &n_ia, &frame, &edge_i, &edge_j}) add(*t);
  for (const JetBlock& b : blocks) {
    for (const torch::Tensor* t : {&b.geo.shat, &b.geo.R, &b.geo.dshat_dx, &b.geo.dR_dx, &b.offsets, &b.centres}) add(*t);
  }
  return n;
}

std::pair<torch::Tensor, torch::Tensor> Se2aModuleImpl::energy_and_edge_gradient(const JetInput& in, bool create_graph) {
  if (!jet_ready()) throw Error("energy_and_edge_gradient: not available with fake quantization or an observer");
  if (in.stats_version != stats_version_) {
    throw Error("energy_and_edge_gradient: the batch was prepared with other statistics (prepare it again)");
  }
  const std::int64_t N = in.species.size(0);
  const std::int64_t M1 = arch_.m1();
  const auto opts = in.n_ia.options();
  std::vector<std::vector<torch::Tensor>> jets;  // G, G' (n, M1) per block
  torch::Tensor T = torch::zeros({N, M1, 4}, opts);
  {
    std::optional<torch::NoGradGuard> no_grad;
    if (!create_graph) no_grad.emplace();
    for (const JetBlock& b : in.blocks) {
      jets.push_back(embedding_jet(embed_[static_cast<std::size_t>(b.net)], b.geo.shat));
      torch::Tensor t = slot_sum(jets.back()[0], b.geo.R, b.offsets);  // (nb, M1, 4)
      T = b.centres.defined() ? T.index_add(0, b.centres, t) : T + t;
    }
  }
  if (!T.requires_grad()) T = T.detach().requires_grad_(true);
  torch::Tensor atom_e = energy_from_slots(T, in.species, in.n_ia, true);
  torch::Tensor gT = torch::autograd::grad({atom_e.sum()}, {T}, {}, create_graph, create_graph, /*allow_unused=*/true)[0];
  std::optional<torch::NoGradGuard> no_grad;
  if (!create_graph) no_grad.emplace();
  if (!gT.defined()) gT = torch::zeros_like(T);
  std::vector<torch::Tensor> gx;  // (n, 3) per block
  for (std::size_t k = 0; k < in.blocks.size(); ++k) {
    const JetBlock& b = in.blocks[k];
    torch::Tensor gTb = b.centres.defined() ? gT.index_select(0, b.centres) : gT;  // (nb, M1, 4)
    const std::vector<torch::Tensor> sg = slot_gradients(gTb, jets[k][0], jets[k][1], b.geo.R, b.offsets);
    gx.push_back(edge_chain(sg[0], sg[1], b.geo.dshat_dx, b.geo.dR_dx));
  }
  return {atom_e, gx.empty() ? torch::zeros({0, 3}, opts) : gx.size() == 1 ? gx[0] : torch::cat(gx)};
}

// Convenience overload on a batch.
torch::Tensor Se2aModuleImpl::forward(const EdgeBatch& b) {
  return forward(b.positions, b.species, b.edge_i, b.edge_j, b.edge_shift);
}

// Writes the current tensors into a copy of the architecture model.
Model Se2aModuleImpl::to_model() const {
  Model m = arch_;
  auto store = [](Net& net, const std::vector<TorchLayer>& layers) {
    for (std::size_t l = 0; l < layers.size(); ++l) {
      net.layers[l].weight = to_vector(layers[l].weight);
      net.layers[l].bias = to_vector(layers[l].bias);
      if (layers[l].dt.defined()) net.layers[l].dt = to_vector(layers[l].dt);
      net.layers[l].quant = QuantSpec{};
    }
  };
  for (std::size_t s = 0; s < embed_.size(); ++s) store(m.embed[s], embed_[s]);
  for (std::size_t s = 0; s < fit_.size(); ++s) store(m.fit[s], fit_[s]);
  m.mean_s = to_vector(mean_s_);
  m.std_s = to_vector(std_s_);
  m.std_r = to_vector(std_r_);
  m.energy_bias = to_vector(energy_bias_);
  return m;
}

// Copies weights, statistics and bias of a model with the same architecture.
void Se2aModuleImpl::load_model(const Model& model) {
  model.validate("Se2aModule::load_model");
  if (model.species != arch_.species || model.embed_widths != arch_.embed_widths ||
      model.fit_widths != arch_.fit_widths || model.axis_neuron != arch_.axis_neuron ||
      model.resnet_dt != arch_.resnet_dt || model.type_one_side != arch_.type_one_side) {
    throw Error("Se2aModule::load_model: the model's architecture differs from the module's");
  }
  torch::NoGradGuard no_grad;
  auto load = [&](const Net& net, std::vector<TorchLayer>& layers) {
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const DenseLayer& L = net.layers[l];
      layers[l].weight.copy_(real_tensor(L.weight, {L.in, L.out}, dtype_));
      layers[l].bias.copy_(real_tensor(L.bias, {L.out}, dtype_));
      if (layers[l].dt.defined()) layers[l].dt.copy_(real_tensor(L.dt, {L.out}, dtype_));
    }
  };
  for (std::size_t s = 0; s < embed_.size(); ++s) load(model.embed[s], embed_[s]);
  for (std::size_t s = 0; s < fit_.size(); ++s) load(model.fit[s], fit_[s]);
  set_statistics(model.mean_s, model.std_s, model.std_r);
  set_energy_bias(model.energy_bias);
  arch_ = model;
}

// Normalisation statistics, each (S, S).
void Se2aModuleImpl::set_statistics(const std::vector<double>& mean_s, const std::vector<double>& std_s,
                                    const std::vector<double>& std_r) {
  const auto SS = static_cast<std::size_t>(arch_.nspecies() * arch_.nspecies());
  if (mean_s.size() != SS || std_s.size() != SS || std_r.size() != SS) {
    throw Error("Se2aModule::set_statistics: statistics must have S*S = " + std::to_string(SS) + " entries");
  }
  torch::NoGradGuard no_grad;
  const auto n = static_cast<std::int64_t>(SS);
  mean_s_.copy_(real_tensor(mean_s, {n}, dtype_));
  std_s_.copy_(real_tensor(std_s, {n}, dtype_));
  std_r_.copy_(real_tensor(std_r, {n}, dtype_));
  ++stats_version_;
}

// Per-species energy bias (S), eV.
void Se2aModuleImpl::set_energy_bias(const std::vector<double>& bias) {
  if (bias.size() != static_cast<std::size_t>(arch_.nspecies())) {
    throw Error("Se2aModule::set_energy_bias: expected one value per species");
  }
  torch::NoGradGuard no_grad;
  energy_bias_.copy_(real_tensor(bias, {arch_.nspecies()}, dtype_));
}

// ------------------------------------------------------------------------------ forces

namespace {

// Energies and forces from per-atom energies and dE/dx per edge (x_ij = x_j − x_i).
EnergyForces assemble(const torch::Tensor& atom_e, const torch::Tensor& gx, const torch::Tensor& frame,
                      std::int64_t nframes, const torch::Tensor& edge_i, const torch::Tensor& edge_j, bool create_graph) {
  const std::int64_t N = atom_e.size(0);
  torch::Tensor frame_e = torch::zeros({nframes}, atom_e.options()).index_add(0, frame, atom_e);
  torch::Tensor dE_dpos = edge_scatter(gx, edge_i, edge_j, N);
  EnergyForces out;
  if (create_graph) {
    out.atom_energy = atom_e;
    out.frame_energy = frame_e;
    out.forces = -dE_dpos;
  } else {
    out.atom_energy = atom_e.detach();
    out.frame_energy = frame_e.detach();
    out.forces = -dE_dpos.detach();
  }
  return out;
}

}  // namespace

// E per atom and frame, F = −dE/dpos. Reference path: autograd gives dE/dŝ and dE/dR̂ per edge
// (through the network only), contracted here with the analytic derivatives of the edge
// inputs; the jet path computes the same per edge (energy_and_edge_gradient).
EnergyForces energy_and_forces(Se2aModule& module, const EdgeBatch& batch, bool create_graph, bool autograd_only) {
  if (module->jet_ready() && !autograd_only) return energy_and_forces(module, module->prepare_jet(batch), create_graph);
  torch::Tensor pos = batch.positions.detach().to(module->dtype());
  torch::Tensor shift = batch.edge_shift.to(module->dtype());
  Se2aModuleImpl::Geometry geo;
  {
    torch::NoGradGuard no_grad;
    geo = module->geometry(pos, batch.species, batch.edge_i, batch.edge_j, shift, true);
  }
  torch::Tensor shat = geo.shat.requires_grad_(true);
  torch::Tensor R = geo.R.requires_grad_(true);
  torch::Tensor atom_e = module->forward_env(shat, R, batch.species, batch.edge_i, batch.edge_j);
  const auto g = torch::autograd::grad({atom_e.sum()}, {shat, R}, {}, create_graph, create_graph,
                                       /*allow_unused=*/true);
  torch::Tensor gx = torch::zeros({geo.R.size(0), 3}, pos.options());  // dE/dx_ij (E, 3)
  if (g[0].defined()) gx = gx + g[0].unsqueeze(1) * geo.dshat_dx;
  if (g[1].defined()) gx = gx + (g[1].unsqueeze(2) * geo.dR_dx).sum(1);
  return assemble(atom_e, gx, batch.frame, batch.nframes, batch.edge_i, batch.edge_j, create_graph);
}

EnergyForces energy_and_forces(Se2aModule& module, const Se2aModuleImpl::JetInput& in, bool create_graph) {
  const auto [atom_e, gx] = module->energy_and_edge_gradient(in, create_graph);
  return assemble(atom_e, gx, in.frame, in.nframes, in.edge_i, in.edge_j, create_graph);
}

torch::Tensor frame_energies(Se2aModule& module, const EdgeBatch& batch) {
  torch::NoGradGuard no_grad;
  const torch::Tensor atom_e = module->forward(batch.positions.to(module->dtype()), batch.species, batch.edge_i,
                                               batch.edge_j, batch.edge_shift.to(module->dtype()));
  return torch::zeros({batch.nframes}, atom_e.options()).index_add(0, batch.frame, atom_e);
}

}  // namespace qnn::libtorch
